//! The key requests: a push from a child (keys wrapped to this server, kept in its
//! keystore), and a fetch (a key from here or up the chain, wrapped to the client). Whether a
//! caller may have a key is decided at every hop, once the key's store is known. A key leaves
//! only once its audit record is written; refusals are recorded as well as they can be.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::json;

use super::authorize::Caller;
use super::{request, ApiError, KeyServer, FOR, VIA};
use crate::crypto::PublicKey;
use crate::keys::hierarchy::open_answer;
use crate::keys::transport::{self, Contents, ExportedKey};
use crate::keys::{Added, KeyEntry};

impl KeyServer {
    /// Record a refusal or failure of `op` (the policy in keys/audit.rs).
    pub(super) fn refused(&self, op: &str, key: Option<&str>, fp: Option<&str>, e: &ApiError) {
        self.audit
            .refusal(op, key, None, fp, "refused", Some(&e.to_string()));
    }

    pub(super) fn push(
        &self,
        body: &[u8],
        caller: &Caller<'_>,
    ) -> Result<serde_json::Value, ApiError> {
        let fp = caller.requester_fp;
        let blob = request::export_of(body).ok_or(ApiError::NotAPush)?;
        let keys = transport::open_with_identity(&blob, &self.identity.private)
            .and_then(Contents::into_keys)
            .map_err(|e| {
                let e = ApiError::from(e);
                self.refused("push", None, Some(fp), &e);
                e
            })?;
        if let Some(k) = keys
            .iter()
            .find(|k| !caller.covers(&k.entry.store_id, &k.entry.key_id))
        {
            let e = ApiError::PushOutsideGrant {
                peer: fp.to_string(),
                key_id: k.entry.key_id.clone(),
                store_id: k.entry.store_id.clone(),
            };
            self.refused("push", Some(&k.entry.key_id), Some(fp), &e);
            return Err(e);
        }
        let origin = format!("pushed by {fp}");
        let entries: Vec<(KeyEntry, &crate::crypto::MasterKey)> = keys
            .iter()
            .map(|k| {
                (
                    KeyEntry {
                        origin: origin.clone(),
                        ..k.entry.clone()
                    },
                    &k.key,
                )
            })
            .collect();
        let outcomes = self.ks.add_all(&entries, "push", Some(fp))?;
        let new = outcomes.iter().filter(|o| **o == Added::New).count();
        self.peers.pushed_by(caller.peer_fp, new);
        Ok(json!({ "imported": new, "present": outcomes.len() - new }))
    }

    /// This keystore's key `key_id` (with its entry), if held.
    pub(super) fn local_key(&self, key_id: &str) -> Result<Option<ExportedKey>, ApiError> {
        let Some(key) = self.ks.get(key_id)? else {
            return Ok(None);
        };
        let entry = self.ks.entries()?.into_iter().find(|e| e.key_id == key_id);
        Ok(entry.map(|entry| ExportedKey { entry, key }))
    }

    /// Look a key up here, then (hierarchy on) up the chain; answer it wrapped to the client.
    pub(super) fn fetch(
        &self,
        key_id: &str,
        client: &PublicKey,
        caller: &Caller<'_>,
        via: &[String],
    ) -> Result<serde_json::Value, ApiError> {
        let fp = caller.requester_fp;
        let found = self
            .cycle(via)
            .and_then(|()| match self.local_key(key_id)? {
                Some(k) => Ok(Some((k, "local"))),
                None => Ok(self
                    .fetch_from_parent(key_id, via, fp)?
                    .map(|k| (k, "parent"))),
            });
        let (key, from) = match found {
            Ok(Some(k)) => k,
            Ok(None) => {
                let e = ApiError::NotFound(key_id.to_string());
                self.audit
                    .refusal("fetch", Some(key_id), None, Some(fp), "not-found", None);
                return Err(e);
            }
            Err(e) => {
                self.refused("fetch", Some(key_id), Some(fp), &e);
                return Err(e);
            }
        };
        // Whether the requester (and a relaying peer) may have this store's key is decided
        // here, at every hop, once the key's store is known.
        if !caller.covers(&key.entry.store_id, key_id) {
            let e = ApiError::NoGrant {
                peer: fp.to_string(),
                key_id: key_id.to_string(),
            };
            self.refused("fetch", Some(key_id), Some(fp), &e);
            return Err(e);
        }
        let from = match caller.peer_fp == fp {
            true => from.to_string(),
            false => format!("{from}, relayed by {}", caller.peer_fp),
        };
        let store_id = key.entry.store_id.clone();
        let blob = transport::seal_to_recipient(&Contents::Keys(vec![key]), client)?;
        // The key leaves only once the record is written.
        self.audit.record_with(
            "fetch",
            Some(key_id),
            Some(&store_id),
            Some(fp),
            "ok",
            Some(&from),
        )?;
        Ok(json!({ "export": B64.encode(blob) }))
    }

    /// Ask the parent for `key_id` on behalf of `requester` (the original client), whom the
    /// parent authorises too.
    fn fetch_from_parent(
        &self,
        key_id: &str,
        via: &[String],
        requester: &str,
    ) -> Result<Option<ExportedKey>, ApiError> {
        let (true, Some(parent)) = (self.hierarchy(), &self.parent) else {
            return Ok(None);
        };
        let mut v = via.to_vec();
        v.push(self.identity.fingerprint.clone());
        let r = parent.request(
            Some(&self.identity),
            "GET",
            &format!("/v1/keys/{key_id}"),
            &[(VIA, v.join(",")), (FOR, requester.to_string())],
            None,
        )?;
        match r.status {
            200 => {
                open_answer(&r.body, &self.identity, key_id).map_err(|_| ApiError::ParentMalformed)
            }
            404 => Ok(None),
            status @ (403 | 409) => Err(ApiError::ParentRefused {
                status,
                error: parent.refusal(&r),
            }),
            _ => Err(ApiError::ParentRefused {
                status: 502,
                error: parent.refusal(&r),
            }),
        }
    }
}
