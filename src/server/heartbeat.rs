//! The tree as this server sees it: its chain of ancestors (refusing a cycle), and the
//! heartbeat of a server with the hierarchy on, which pushes every key the (pinned) parent
//! lacks, wrapped to the parent's certificate.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::json;

use super::{ApiError, KeyServer, VIA};
use crate::keys::transport::{self, Contents};

impl KeyServer {
    /// This server's fingerprint and its ancestors', top last.
    pub(super) fn chain(&self, via: &[String]) -> Result<serde_json::Value, ApiError> {
        self.cycle(via)?;
        let mut chain = vec![self.identity.fingerprint.clone()];
        if let (true, Some(parent)) = (self.hierarchy, &self.parent) {
            let mut v = via.to_vec();
            v.push(self.identity.fingerprint.clone());
            let r = parent.request(
                Some(&self.identity),
                "GET",
                "/v1/chain",
                &[(VIA, v.join(","))],
                None,
            )?;
            match r.status {
                200 => {
                    if let Some(up) = r.body["chain"].as_array() {
                        chain.extend(up.iter().filter_map(|x| x.as_str().map(String::from)));
                    }
                }
                status => {
                    return Err(ApiError::ParentRefused {
                        status: if status == 409 { 409 } else { 502 },
                        error: parent.refusal(&r),
                    })
                }
            }
        }
        Ok(json!({ "chain": chain }))
    }

    /// One heartbeat: refuse a cycle, then push every key the parent lacks. Returns how many
    /// were pushed.
    pub fn heartbeat(&self) -> Result<usize, ApiError> {
        let (Some(parent), Some(parent_key)) = (&self.parent, &self.parent_key) else {
            // KeyServer::new refuses a parent without its pinned certificate.
            return Ok(0);
        };
        let own = &self.identity.fingerprint;
        let refused = |r: &crate::keys::hierarchy::client::Response| ApiError::ParentRefused {
            status: 502,
            error: parent.refusal(r),
        };
        let r = parent.request(
            Some(&self.identity),
            "GET",
            "/v1/chain",
            &[(VIA, own.clone())],
            None,
        )?;
        if r.status != 200 {
            return Err(refused(&r));
        }
        if r.body["chain"]
            .as_array()
            .is_some_and(|c| c.iter().any(|x| x.as_str() == Some(own)))
        {
            return Err(ApiError::Cycle(own.clone()));
        }
        let r = parent.request(Some(&self.identity), "GET", "/v1/keys", &[], None)?;
        if r.status != 200 {
            return Err(refused(&r));
        }
        let theirs: Vec<&str> = r.body["keys"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        let mut missing = Vec::new();
        for e in self.ks.entries()? {
            if !theirs.contains(&e.key_id.as_str()) {
                missing.extend(self.local_key(&e.key_id)?);
            }
        }
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
            .and_then(|r| {
                if r.status == 200 {
                    Ok(())
                } else {
                    Err(refused(&r))
                }
            });
        if let Err(e) = pushed {
            for (id, store) in &ids {
                let why = e.to_string();
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
}
