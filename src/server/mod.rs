//! The key server: a hierarchy node. It serves its keystore's keys to authorised clients
//! (wrapped to the client's certificate), accepts keys pushed by children, and, with the
//! hierarchy option on, pushes its keys up at each heartbeat and asks its parent on a miss.
//!
//! API (HTTPS, JSON; see docs/keyserver.md): `GET /healthz`, `GET /v1/chain`,
//! `GET /v1/keys` (ids held), `POST /v1/keys` (push), `GET /v1/keys/{key_id}` (fetch).
//! Rights per client certificate fingerprint: `use` fetch, `read` list/export, `write` push,
//! `relay` ask for a client of its own; each limited to named stores or keys. A request
//! relayed up the tree names its original requester, and every hop authorises that
//! requester as well as the relaying server. The server never decrypts anything for a
//! client: it only unwraps what was wrapped to it.

mod authorize;
pub mod client;
mod config;
mod heartbeat;
pub mod provider;
pub mod request;
mod serve;
pub mod tls;

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::json;

use authorize::{Caller, Route};
pub use config::{grant_fingerprint, parse_duration, Config, ConfigError, Rights};
pub use request::Request;
pub use serve::serve;

use crate::crypto::PublicKey;
use crate::keys::transport::{self, Contents, ExportedKey};
use crate::keys::{AuditLog, HostIdentity, KeyEntry, Keystore};
use client::Client;

pub struct KeyServer {
    ks: Keystore,
    identity: HostIdentity,
    grants: HashMap<String, Rights>,
    parent: Option<Client>,
    /// The parent's certificate key (--parent-cert); the client pins its fingerprint.
    parent_key: Option<PublicKey>,
    hierarchy: bool,
    audit: AuditLog,
}

/// A key server's settings, once its configuration and flags are read.
pub struct Settings {
    pub ks: Keystore,
    pub grants: HashMap<String, Rights>,
    pub parent: Option<String>,
    pub parent_key: Option<PublicKey>,
    pub hierarchy: bool,
    pub timeout: std::time::Duration,
    pub audit: AuditLog,
}

/// The fingerprints a request travelled through on its way up.
const VIA: &str = "X-Coffer-Via";
/// The fingerprint of the client a relayed request is for.
const FOR: &str = "X-Coffer-For";

fn error(status: u16, msg: impl Into<String>) -> (u16, serde_json::Value) {
    (status, json!({ "error": msg.into() }))
}

impl KeyServer {
    /// A key server. With the hierarchy on and a parent, the parent's certificate must be
    /// pinned: keys are pushed only to it.
    pub fn new(set: Settings) -> Result<KeyServer, ConfigError> {
        if set.hierarchy && set.parent.is_some() && set.parent_key.is_none() {
            return Err(ConfigError::ParentPin);
        }
        let identity = set
            .ks
            .identity()
            .map_err(|e| ConfigError::Subject("this server".into(), e.to_string()))?;
        let pin = set
            .parent_key
            .as_ref()
            .map(|k| k.fingerprint())
            .transpose()
            .map_err(|e| ConfigError::Subject("--parent-cert".into(), e.to_string()))?;
        let parent = set
            .parent
            .as_deref()
            .map(|u| Client::new(u, pin, set.timeout))
            .transpose()
            .map_err(|e| ConfigError::Subject("--parent".into(), e))?;
        Ok(KeyServer {
            ks: set.ks,
            identity,
            grants: set.grants,
            parent,
            parent_key: set.parent_key,
            hierarchy: set.hierarchy,
            audit: set.audit,
        })
    }

    pub fn fingerprint(&self) -> &str {
        &self.identity.fingerprint
    }

    pub fn identity(&self) -> &HostIdentity {
        &self.identity
    }

    pub fn has_parent(&self) -> bool {
        self.hierarchy && self.parent.is_some()
    }

    fn audit(
        &self,
        op: &str,
        key_id: Option<&str>,
        fp: Option<&str>,
        outcome: &str,
        detail: Option<&str>,
    ) {
        if let Err(e) = self
            .audit
            .record_with(op, key_id, None, fp, outcome, detail)
        {
            tracing::error!("cannot write the audit log: {e}");
        }
    }

    /// Answer one request from a client presenting `peer` (public key, fingerprint).
    pub fn handle(
        &self,
        req: &Request,
        peer: Option<&(PublicKey, String)>,
    ) -> (u16, serde_json::Value) {
        let via = request::via_list(req.header(VIA));
        match self.route(req, peer) {
            Err(r) => r,
            Ok(Route::Health) => (
                200,
                json!({ "status": "ok", "fingerprint": self.identity.fingerprint }),
            ),
            Ok(Route::Chain) => self.chain(&via),
            Ok(Route::List(caller)) => match self.ks.entries() {
                Ok(e) => (
                    200,
                    json!({ "keys": e
                        .iter()
                        .filter(|k| caller.covers(&k.store_id, &k.key_id))
                        .map(|k| k.key_id.clone())
                        .collect::<Vec<_>>() }),
                ),
                Err(e) => error(500, e.to_string()),
            },
            Ok(Route::Push(caller)) => self.push(&req.body, &caller),
            Ok(Route::Fetch(key_id, peer_key, caller)) => {
                self.fetch(key_id, peer_key, &caller, &via)
            }
        }
    }

    fn cycle(&self, via: &[String]) -> bool {
        via.contains(&self.identity.fingerprint)
    }

    /// This server's fingerprint and its ancestors', top last.
    fn chain(&self, via: &[String]) -> (u16, serde_json::Value) {
        if self.cycle(via) {
            return error(
                409,
                format!(
                    "the key-server tree has a cycle through {}",
                    self.identity.fingerprint
                ),
            );
        }
        let mut chain = vec![self.identity.fingerprint.clone()];
        if let (true, Some(parent)) = (self.hierarchy, &self.parent) {
            let mut v = via.to_vec();
            v.push(self.identity.fingerprint.clone());
            match parent.request(
                Some(&self.identity),
                "GET",
                "/v1/chain",
                &[(VIA, v.join(","))],
                None,
            ) {
                Ok(r) if r.status == 200 => {
                    if let Some(up) = r.body["chain"].as_array() {
                        chain.extend(up.iter().filter_map(|x| x.as_str().map(String::from)));
                    }
                }
                Ok(r) if r.status == 409 => return (409, r.body),
                Ok(r) => return (502, json!({ "error": parent.refusal(&r).to_string() })),
                Err(e) => return error(502, e.to_string()),
            }
        }
        (200, json!({ "chain": chain }))
    }

    fn push(&self, body: &[u8], caller: &Caller<'_>) -> (u16, serde_json::Value) {
        let fp = caller.requester_fp;
        let blob = match request::export_of(body) {
            Some(b) => b,
            None => return error(400, "expected {\"export\": base64}"),
        };
        let keys = match transport::open_with_identity(&blob, &self.identity.private)
            .and_then(Contents::into_keys)
        {
            Ok(k) => k,
            Err(e) => {
                self.audit("push", None, Some(fp), "refused", Some(&e.to_string()));
                return error(400, e.to_string());
            }
        };
        if let Some(k) = keys
            .iter()
            .find(|k| !caller.covers(&k.entry.store_id, &k.entry.key_id))
        {
            let why = format!(
                "certificate {fp} may not push key {} (store {}): outside its grant",
                k.entry.key_id, k.entry.store_id
            );
            self.audit(
                "push",
                Some(&k.entry.key_id),
                Some(fp),
                "refused",
                Some(&why),
            );
            return error(403, why);
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
        match self.ks.add_all(&entries, "push", Some(fp)) {
            Ok(outcomes) => {
                let new = outcomes
                    .iter()
                    .filter(|o| **o == crate::keys::Added::New)
                    .count();
                (
                    200,
                    json!({ "imported": new, "present": outcomes.len() - new }),
                )
            }
            Err(e) => error(409, e.to_string()),
        }
    }

    /// This keystore's key `key_id` (with its entry), if held.
    fn local_key(&self, key_id: &str) -> Result<Option<ExportedKey>, String> {
        let Some(key) = self.ks.get(key_id).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let entry = self
            .ks
            .entries()
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|e| e.key_id == key_id);
        Ok(entry.map(|entry| ExportedKey { entry, key }))
    }

    /// Look a key up here, then (hierarchy on) up the chain; answer it wrapped to the client.
    fn fetch(
        &self,
        key_id: &str,
        client: &PublicKey,
        caller: &Caller<'_>,
        via: &[String],
    ) -> (u16, serde_json::Value) {
        let fp = caller.requester_fp;
        if self.cycle(via) {
            return error(
                409,
                format!(
                    "the key-server tree has a cycle through {}",
                    self.identity.fingerprint
                ),
            );
        }
        let found = match self.local_key(key_id) {
            Ok(Some(k)) => Some((k, "local")),
            Ok(None) => match self.fetch_from_parent(key_id, via, fp) {
                Ok(k) => k.map(|k| (k, "parent")),
                Err((status, msg)) => {
                    self.audit("fetch", Some(key_id), Some(fp), "failed", Some(&msg));
                    return error(status, msg);
                }
            },
            Err(e) => return error(500, e),
        };
        let Some((key, from)) = found else {
            self.audit("fetch", Some(key_id), Some(fp), "not-found", None);
            return error(
                404,
                format!("key {key_id} is not known here or up the chain"),
            );
        };
        // Whether the requester (and a relaying peer) may have this store's key is decided
        // here, at every hop, once the key's store is known.
        if !caller.covers(&key.entry.store_id, key_id) {
            let why = format!("certificate {fp} has no grant for key {key_id}");
            self.audit("fetch", Some(key_id), Some(fp), "refused", Some(&why));
            return error(403, why);
        }
        let from = if caller.peer_fp == fp {
            from.to_string()
        } else {
            format!("{from}, relayed by {}", caller.peer_fp)
        };
        match transport::seal_to_recipient(&Contents::Keys(vec![key]), client) {
            Ok(blob) => {
                self.audit("fetch", Some(key_id), Some(fp), "ok", Some(&from));
                (200, json!({ "export": B64.encode(blob) }))
            }
            Err(e) => error(500, e.to_string()),
        }
    }

    /// Ask the parent for `key_id` on behalf of `requester` (the original client), whom the
    /// parent authorises too.
    fn fetch_from_parent(
        &self,
        key_id: &str,
        via: &[String],
        requester: &str,
    ) -> Result<Option<ExportedKey>, (u16, String)> {
        let (true, Some(parent)) = (self.hierarchy, &self.parent) else {
            return Ok(None);
        };
        let mut v = via.to_vec();
        v.push(self.identity.fingerprint.clone());
        let r = parent
            .request(
                Some(&self.identity),
                "GET",
                &format!("/v1/keys/{key_id}"),
                &[(VIA, v.join(",")), (FOR, requester.to_string())],
                None,
            )
            .map_err(|e| (502, e.to_string()))?;
        match r.status {
            200 => {
                let blob = r.body["export"]
                    .as_str()
                    .and_then(|s| B64.decode(s).ok())
                    .ok_or((502, "malformed answer from the parent".to_string()))?;
                let keys = transport::open_with_identity(&blob, &self.identity.private)
                    .and_then(Contents::into_keys)
                    .map_err(|e| (502, e.to_string()))?;
                Ok(keys.into_iter().find(|k| k.entry.key_id == key_id))
            }
            404 => Ok(None),
            403 | 409 => Err((r.status, parent.refusal(&r).to_string())),
            _ => Err((502, parent.refusal(&r).to_string())),
        }
    }
}
