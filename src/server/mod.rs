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
mod config;
pub mod console_auth;
mod error;
mod heartbeat;
mod keys;
mod metrics;
pub mod request;
mod serve;

use std::collections::HashMap;

use serde_json::json;

use authorize::Route;
pub use config::{grant_fingerprint, parse_duration, Config, ConfigError, Rights};
pub use error::ApiError;
pub use request::Request;
pub use serve::serve;

use crate::crypto::PublicKey;
use crate::keys::hierarchy::client::Client;
use crate::keys::{AuditLog, HostIdentity, Keystore};

pub struct KeyServer {
    ks: Keystore,
    identity: HostIdentity,
    grants: HashMap<String, Rights>,
    parent: Option<Client>,
    /// The parent's certificate key (--parent-cert); the client pins its fingerprint.
    parent_key: Option<PublicKey>,
    hierarchy: bool,
    audit: AuditLog,
    metrics: metrics::Metrics,
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
            .map_err(|e| ConfigError::Subject("--parent".into(), e.to_string()))?;
        Ok(KeyServer {
            ks: set.ks,
            identity,
            grants: set.grants,
            parent,
            parent_key: set.parent_key,
            hierarchy: set.hierarchy,
            audit: set.audit,
            metrics: metrics::Metrics::new(),
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

    /// Answer one request from a client presenting `peer` (public key, fingerprint): a
    /// status and a JSON body.
    pub fn handle(
        &self,
        req: &Request,
        peer: Option<&(PublicKey, String)>,
    ) -> (u16, serde_json::Value) {
        let endpoint = metrics::endpoint(&req.method, &req.path);
        match self.answer(req, peer) {
            Ok(body) => {
                self.metrics.request(endpoint, 200, None);
                (200, body)
            }
            Err(e) => {
                self.metrics.request(endpoint, e.status(), Some(&e));
                (e.status(), e.body())
            }
        }
    }

    /// `GET /metrics`: the counters as Prometheus text (server/metrics.rs).
    pub fn metrics_text(&self) -> String {
        self.metrics.request("metrics", 200, None);
        let held = self.ks.entries().ok().map(|e| e.len());
        self.metrics.render(held, self.has_parent())
    }

    /// Count an answer the serving layer gave itself (a body too large, say).
    pub fn count(&self, req: &Request, status: u16) {
        let endpoint = metrics::endpoint(&req.method, &req.path);
        self.metrics.request(endpoint, status, None);
    }

    fn answer(
        &self,
        req: &Request,
        peer: Option<&(PublicKey, String)>,
    ) -> Result<serde_json::Value, ApiError> {
        let via = request::via_list(req.header(VIA));
        match self.route(req, peer)? {
            Route::Health => {
                Ok(json!({ "status": "ok", "fingerprint": self.identity.fingerprint }))
            }
            Route::Chain => self.chain(&via),
            Route::List(caller) => Ok(json!({ "keys": self
                .ks
                .entries()?
                .iter()
                .filter(|k| caller.covers(&k.store_id, &k.key_id))
                .map(|k| k.key_id.clone())
                .collect::<Vec<_>>() })),
            Route::Push(caller) => self.push(&req.body, &caller),
            Route::Fetch(key_id, peer_key, caller) => self.fetch(key_id, peer_key, &caller, &via),
        }
    }

    fn cycle(&self, via: &[String]) -> Result<(), ApiError> {
        match via.contains(&self.identity.fingerprint) {
            true => Err(ApiError::Cycle(self.identity.fingerprint.clone())),
            false => Ok(()),
        }
    }
}
