//! The heartbeat of a server with the hierarchy on: refuse to push into a tree that
//! contains this server, then push every key the (pinned) parent lacks.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::json;

use super::{ConfigError, KeyServer, VIA};
use crate::keys::transport::{self, Contents};

impl KeyServer {
    /// One heartbeat: refuse a cycle, then push every key the parent lacks.
    pub fn heartbeat(&self) -> Result<usize, String> {
        let Some(parent) = &self.parent else {
            return Ok(0);
        };
        let own = &self.identity.fingerprint;
        let r = parent
            .request(
                Some(&self.identity),
                "GET",
                "/v1/chain",
                &[(VIA, own.clone())],
                None,
            )
            .map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(parent.refusal(&r).to_string());
        }
        if r.body["chain"]
            .as_array()
            .is_some_and(|c| c.iter().any(|x| x.as_str() == Some(own)))
        {
            return Err(format!(
                "the key-server tree has a cycle through this server ({own})"
            ));
        }
        // Pinned at start-up (KeyServer::new); the client checked the handshake against it.
        let parent_key = self
            .parent_key
            .as_ref()
            .ok_or_else(|| ConfigError::ParentPin.to_string())?;
        let r = parent
            .request(Some(&self.identity), "GET", "/v1/keys", &[], None)
            .map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(parent.refusal(&r).to_string());
        }
        let theirs: Vec<String> = r.body["keys"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let mut missing = Vec::new();
        for e in self.ks.entries().map_err(|e| e.to_string())? {
            if !theirs.contains(&e.key_id) {
                if let Some(k) = self.local_key(&e.key_id)? {
                    missing.push(k);
                }
            }
        }
        if missing.is_empty() {
            return Ok(0);
        }
        let n = missing.len();
        let ids: Vec<String> = missing.iter().map(|k| k.entry.key_id.clone()).collect();
        let blob = transport::seal_to_recipient(&Contents::Keys(missing), parent_key)
            .map_err(|e| e.to_string())?;
        let r = parent
            .request(
                Some(&self.identity),
                "POST",
                "/v1/keys",
                &[],
                Some(&json!({ "export": B64.encode(blob) })),
            )
            .map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(parent.refusal(&r).to_string());
        }
        let parent_fp = parent_key.fingerprint().ok();
        for id in &ids {
            self.audit(
                "push-up",
                Some(id),
                parent_fp.as_deref(),
                "ok",
                Some(parent.url()),
            );
        }
        Ok(n)
    }
}
