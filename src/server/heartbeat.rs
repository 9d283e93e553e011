//! The tree as this server sees it: its chain of ancestors (refusing a cycle), and the
//! heartbeat of a server with the hierarchy on, which pushes every key the (pinned) parent
//! lacks, wrapped to the parent's certificate.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::json;

use super::peers::{HEARTBEAT, HELD};
use super::{ApiError, KeyServer, VIA};
use crate::keys::hierarchy::client::{Client, Response};
use crate::keys::transport::{self, Contents, ExportedKey};

impl KeyServer {
    /// This server's fingerprint and its ancestors', top last. A cycle is refused (409). When
    /// the parent cannot be reached or refuses for another reason, the chain stops here and
    /// says `complete: false`: a stopped server high in the tree must not stop the pushes
    /// below it, and a cycle through a server that cannot be reached carries nothing round.
    pub(super) fn chain(&self, via: &[String]) -> Result<serde_json::Value, ApiError> {
        self.cycle(via)?;
        let mut chain = vec![self.identity.fingerprint.clone()];
        let mut complete = true;
        if let (true, Some(parent)) = (self.hierarchy(), &self.parent) {
            let mut v = via.to_vec();
            v.push(self.identity.fingerprint.clone());
            let asked = parent.request(
                Some(&self.identity),
                "GET",
                "/v1/chain",
                &[(VIA, v.join(","))],
                None,
            );
            match asked {
                Ok(r) if r.status == 200 => {
                    if let Some(up) = r.body["chain"].as_array() {
                        chain.extend(up.iter().filter_map(|x| x.as_str().map(String::from)));
                    }
                    complete = r.body["complete"].as_bool() != Some(false);
                }
                Ok(r) if r.status == 409 => {
                    return Err(ApiError::ParentRefused {
                        status: 409,
                        error: parent.refusal(&r),
                    })
                }
                Ok(r) => {
                    tracing::debug!("chain: the parent refused: {}", parent.refusal(&r));
                    complete = false;
                }
                Err(e) => {
                    tracing::debug!("chain: {e}");
                    complete = false;
                }
            }
        }
        Ok(json!({ "chain": chain, "complete": complete, "hierarchy": self.hierarchy() }))
    }

    /// One heartbeat: refuse a cycle, then push every key the parent lacks. Returns how many
    /// were pushed.
    pub fn heartbeat(&self) -> Result<usize, ApiError> {
        let (Some(parent), Some(parent_key)) = (&self.parent, &self.parent_key) else {
            // KeyServer::new refuses a parent without its pinned certificate.
            return Ok(0);
        };
        let missing = self.missing_up(parent)?;
        self.peers.parent_lacks(missing.len());
        if missing.is_empty() {
            return Ok(0);
        }
        let ids: Vec<(String, String)> = missing
            .iter()
            .map(|k| (k.entry.key_id.clone(), k.entry.store_id.clone()))
            .collect();
        let parent_fp = parent_key.fingerprint().ok();
        // Each key leaves only once its record is written.
        for (id, store) in &ids {
            self.audit.record_with(
                "push-up",
                Some(id),
                Some(store),
                parent_fp.as_deref(),
                "ok",
                Some(parent.url()),
            )?;
        }
        let blob = transport::seal_to_recipient(&Contents::Keys(missing), parent_key)?;
        let body = json!({ "export": B64.encode(blob) });
        let pushed = parent
            .request(Some(&self.identity), "POST", "/v1/keys", &[], Some(&body))
            .map_err(ApiError::from)
            .and_then(|r| ok_or_refused(parent, &r).map(|_| ()));
        if let Err(e) = pushed {
            let why = e.to_string();
            for (id, store) in &ids {
                self.audit.refusal(
                    "push-up",
                    Some(id),
                    Some(store),
                    parent_fp.as_deref(),
                    "failed",
                    Some(&why),
                );
            }
            return Err(e);
        }
        Ok(ids.len())
    }

    /// The keys of this keystore that the parent lacks, once the parent's chain is shown not
    /// to hold this server (a push into a tree containing itself is refused).
    fn missing_up(&self, parent: &Client) -> Result<Vec<ExportedKey>, ApiError> {
        let own = &self.identity.fingerprint;
        let held = self.ks.entries()?.len();
        // What the parent's console shows of this child: its heartbeat and how many keys it holds.
        let via = [
            (VIA, own.clone()),
            (
                HEARTBEAT,
                self.heartbeat_every().as_secs().max(1).to_string(),
            ),
            (HELD, held.to_string()),
        ];
        let r = parent.request(Some(&self.identity), "GET", "/v1/chain", &via, None)?;
        let chain = ok_or_refused(parent, &r)?;
        self.peers.parent_chain(chain);
        if chain["chain"]
            .as_array()
            .is_some_and(|c| c.iter().any(|x| x.as_str() == Some(own)))
        {
            return Err(ApiError::Cycle(own.clone()));
        }
        let r = parent.request(Some(&self.identity), "GET", "/v1/keys", &[], None)?;
        let theirs: Vec<String> = ok_or_refused(parent, &r)?["keys"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let mut missing = Vec::new();
        for e in self.ks.entries()? {
            if !theirs.contains(&e.key_id) {
                missing.extend(self.local_key(&e.key_id)?);
            }
        }
        Ok(missing)
    }
}

/// The body of a 200 answer, or the parent's refusal.
fn ok_or_refused<'a>(parent: &Client, r: &'a Response) -> Result<&'a serde_json::Value, ApiError> {
    match r.status {
        200 => Ok(&r.body),
        _ => Err(ApiError::ParentRefused {
            status: 502,
            error: parent.refusal(r),
        }),
    }
}
