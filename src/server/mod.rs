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
pub mod console;
pub mod console_auth;
mod error;
mod heartbeat;
mod keys;
mod metrics;
mod peers;
pub mod request;
mod serve;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

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
    /// Client certificate fingerprint -> rights (changed from the console, so behind a lock).
    grants: RwLock<HashMap<String, Rights>>,
    /// Fingerprint -> the name shown beside it.
    names: RwLock<HashMap<String, String>>,
    parent: Option<Client>,
    /// The parent's certificate key (--parent-cert); the client pins its fingerprint.
    parent_key: Option<PublicKey>,
    hierarchy: AtomicBool,
    /// Time between heartbeats, in milliseconds.
    heartbeat_ms: AtomicU64,
    audit: AuditLog,
    metrics: metrics::Metrics,
    peers: peers::Peers,
    /// The configuration file changes from the console are saved to.
    config: Option<PathBuf>,
    console: Option<console::Console>,
}

/// A key server's settings, once its configuration and flags are read.
pub struct Settings {
    pub ks: Keystore,
    pub grants: HashMap<String, Rights>,
    pub parent: Option<String>,
    pub parent_key: Option<PublicKey>,
    pub hierarchy: bool,
    pub heartbeat: Duration,
    pub timeout: Duration,
    pub audit: AuditLog,
    pub names: HashMap<String, String>,
    /// The configuration file, if the server has one (the console saves its changes there).
    pub config: Option<PathBuf>,
    /// The console's users, when the console is on.
    pub console: Option<BTreeMap<String, console_auth::ConsoleUser>>,
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
            grants: RwLock::new(set.grants),
            names: RwLock::new(set.names),
            parent,
            parent_key: set.parent_key,
            hierarchy: AtomicBool::new(set.hierarchy),
            heartbeat_ms: AtomicU64::new(
                set.heartbeat.as_millis().clamp(1, u64::MAX as u128) as u64
            ),
            audit: set.audit,
            metrics: metrics::Metrics::new(),
            peers: peers::Peers::default(),
            config: set.config,
            console: set.console.map(console::Console::new),
        })
    }

    pub fn fingerprint(&self) -> &str {
        &self.identity.fingerprint
    }

    pub fn identity(&self) -> &HostIdentity {
        &self.identity
    }

    /// Whether the hierarchy option is on.
    pub fn hierarchy(&self) -> bool {
        self.hierarchy.load(Ordering::Relaxed)
    }

    /// Whether a parent is configured (the heartbeat runs; it pushes while the hierarchy is on).
    pub fn parent_configured(&self) -> bool {
        self.parent.is_some()
    }

    pub fn has_parent(&self) -> bool {
        self.hierarchy() && self.parent.is_some()
    }

    /// Set the hierarchy option and the heartbeat (from the console); the heartbeat thread
    /// reads both afresh before each beat.
    pub fn set_hierarchy(&self, on: bool, every: Duration) {
        self.hierarchy.store(on, Ordering::Relaxed);
        let ms = every.as_millis().clamp(1, u64::MAX as u128) as u64;
        self.heartbeat_ms.store(ms, Ordering::Relaxed);
    }

    /// The time between heartbeats.
    pub fn heartbeat_every(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed))
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
            Route::Chain(peer_fp) => {
                self.peers.child_seen(peer_fp, req);
                self.chain(&via)
            }
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
