//! The key server: a hierarchy node. It serves its keystore's keys to authorised clients
//! (wrapped to the client's certificate), accepts keys pushed by children, and, with the
//! hierarchy option on, pushes its keys up at each heartbeat and asks its parent on a miss.
//!
//! API (HTTPS, JSON; see docs/keyserver.md): `GET /healthz`, `GET /v1/chain`,
//! `GET /v1/keys` (ids held), `POST /v1/keys` (push), `GET /v1/keys/{key_id}` (fetch).
//! Rights per client certificate fingerprint: `use` fetch, `read` list/export, `write` push.
//! The server never decrypts anything for a client: it only unwraps what was wrapped to it.

pub mod client;
pub(crate) mod http;
pub mod provider;
pub mod tls;

use std::collections::{BTreeMap, HashMap};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::crypto::PublicKey;
use crate::keys::transport::{self, Contents, ExportedKey};
use crate::keys::{AuditLog, HostIdentity, KeyEntry, Keystore};
use client::Client;

/// The on-disk configuration (TOML); every field can also be given as a flag.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: Option<String>,
    pub keystore: Option<PathBuf>,
    pub passphrase_file: Option<PathBuf>,
    pub parent: Option<String>,
    pub parent_cert: Option<PathBuf>,
    #[serde(default)]
    pub hierarchy: bool,
    pub heartbeat: Option<String>,
    pub timeout: Option<String>,
    pub audit_log: Option<PathBuf>,
    /// Client certificate fingerprint (or certificate file) -> rights.
    #[serde(default)]
    pub grants: BTreeMap<String, Vec<String>>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))
    }

    pub fn save(&self, path: &Path) -> Result<(), String> {
        let text = toml::to_string_pretty(self).map_err(|e| e.to_string())?;
        crate::atomic_write(path, text.as_bytes(), 0o600)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rights {
    pub use_: bool,
    pub read: bool,
    pub write: bool,
}

impl Rights {
    pub fn parse(list: &[String]) -> Result<Rights, String> {
        let mut r = Rights::default();
        for item in list.iter().flat_map(|s| s.split(',')) {
            match item.trim() {
                "use" => r.use_ = true,
                "read" => r.read = true,
                "write" => r.write = true,
                "" => {}
                other => return Err(format!("unknown right '{other}' (use, read, write)")),
            }
        }
        Ok(r)
    }
}

/// A grant's subject: a fingerprint as `coffer keys cert` prints it, or a certificate file.
pub fn grant_fingerprint(cert: &str) -> Result<String, String> {
    if cert.starts_with("SHA256:") {
        return Ok(cert.to_string());
    }
    let (pk, _) = crate::keys::certificate::read(Path::new(cert)).map_err(|e| e.to_string())?;
    pk.fingerprint().map_err(|e| e.to_string())
}

/// "60s", "5m", "1h", "500ms" or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let bad = || format!("'{s}' is not a duration (60s, 5m, 1h, 500ms)");
    let (num, unit) = t
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| t.split_at(i))
        .unwrap_or((t, "s"));
    let n: u64 = num.parse().map_err(|_| bad())?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(bad()),
    })
}

pub struct KeyServer {
    pub ks: Keystore,
    pub identity: HostIdentity,
    pub grants: HashMap<String, Rights>,
    pub parent: Option<Client>,
    /// The parent's certificate key, when pinned by --parent-cert.
    pub parent_key: Option<PublicKey>,
    pub hierarchy: bool,
    pub audit: AuditLog,
}

const VIA: &str = "X-Coffer-Via";

fn error(status: u16, msg: impl Into<String>) -> (u16, serde_json::Value) {
    (status, json!({ "error": msg.into() }))
}

impl KeyServer {
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
        req: &http::Request,
        peer: Option<(PublicKey, String)>,
    ) -> (u16, serde_json::Value) {
        if req.method == "GET" && req.path == "/healthz" {
            return (
                200,
                json!({ "status": "ok", "fingerprint": self.identity.fingerprint }),
            );
        }
        let Some((peer_key, fp)) = peer else {
            self.audit(
                "request",
                None,
                None,
                "refused",
                Some(&format!(
                    "{} {}: no client certificate",
                    req.method, req.path
                )),
            );
            return error(401, "a client certificate is required");
        };
        let Some(rights) = self.grants.get(&fp).copied() else {
            self.audit(
                "request",
                None,
                Some(&fp),
                "refused",
                Some(&format!("{} {}: unknown certificate", req.method, req.path)),
            );
            return error(
                403,
                format!("certificate {fp} has no rights on this key server"),
            );
        };
        let via: Vec<String> = req
            .header(VIA)
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let need = |ok: bool, right: &str, key: Option<&str>| -> Option<(u16, serde_json::Value)> {
            if ok {
                return None;
            }
            self.audit(
                "request",
                key,
                Some(&fp),
                "refused",
                Some(&format!(
                    "{} {}: lacks the {right} right",
                    req.method, req.path
                )),
            );
            Some(error(
                403,
                format!("certificate {fp} lacks the {right} right"),
            ))
        };
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/v1/chain") => self.chain(&via),
            ("GET", "/v1/keys") => {
                if let Some(r) = need(rights.read || rights.write, "read", None) {
                    return r;
                }
                match self.ks.entries() {
                    Ok(e) => (
                        200,
                        json!({ "keys": e.iter().map(|k| k.key_id.clone()).collect::<Vec<_>>() }),
                    ),
                    Err(e) => error(500, e.to_string()),
                }
            }
            ("POST", "/v1/keys") => {
                if let Some(r) = need(rights.write, "write", None) {
                    return r;
                }
                self.push(&req.body, &fp)
            }
            ("GET", p) if p.starts_with("/v1/keys/") => {
                let key_id = &p["/v1/keys/".len()..];
                if let Some(r) = need(rights.use_, "use", Some(key_id)) {
                    return r;
                }
                self.fetch(key_id, &peer_key, &fp, &via)
            }
            _ => error(404, "no such endpoint"),
        }
    }

    fn cycle(&self, via: &[String]) -> bool {
        via.iter().any(|v| *v == self.identity.fingerprint)
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

    fn push(&self, body: &[u8], fp: &str) -> (u16, serde_json::Value) {
        let blob = match serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["export"].as_str().and_then(|s| B64.decode(s).ok()))
        {
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
        fp: &str,
        via: &[String],
    ) -> (u16, serde_json::Value) {
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
            Ok(None) => match self.fetch_from_parent(key_id, via) {
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
        match transport::seal_to_recipient(&Contents::Keys(vec![key]), client) {
            Ok(blob) => {
                self.audit("fetch", Some(key_id), Some(fp), "ok", Some(from));
                (200, json!({ "export": B64.encode(blob) }))
            }
            Err(e) => error(500, e.to_string()),
        }
    }

    fn fetch_from_parent(
        &self,
        key_id: &str,
        via: &[String],
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
                &[(VIA, v.join(","))],
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
            409 => Err((409, parent.refusal(&r).to_string())),
            _ => Err((502, parent.refusal(&r).to_string())),
        }
    }

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
        let parent_key = match (&self.parent_key, client::seen_key(&r)) {
            (Some(k), _) => PublicKey::from_der(&k.to_der().map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?,
            (None, Some(k)) => k,
            (None, None) => return Err("no parent certificate".into()),
        };
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
        let blob = transport::seal_to_recipient(&Contents::Keys(missing), &parent_key)
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

/// Serve until the process ends: one thread per connection, and the heartbeat.
pub fn serve(server: Arc<KeyServer>, listen: &str, heartbeat: Duration) -> Result<(), String> {
    let listener =
        TcpListener::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let cfg = tls::server_config(&server.identity)?;
    if server.hierarchy && server.parent.is_some() {
        let s = server.clone();
        std::thread::Builder::new()
            .name("coffer-heartbeat".into())
            .spawn(move || loop {
                match s.heartbeat() {
                    Ok(0) => tracing::debug!("heartbeat: parent has every key"),
                    Ok(n) => tracing::info!("heartbeat: pushed {n} key(s) to the parent"),
                    Err(e) => {
                        tracing::warn!("heartbeat: {e}");
                        s.audit("heartbeat", None, None, "failed", Some(&e));
                    }
                }
                std::thread::sleep(heartbeat);
            })
            .map_err(|e| e.to_string())?;
    }
    for conn in listener.incoming() {
        let Ok(sock) = conn else { continue };
        let (s, cfg) = (server.clone(), cfg.clone());
        let _ = std::thread::Builder::new()
            .name("coffer-conn".into())
            .spawn(move || {
                if let Err(e) = connection(&s, cfg, sock) {
                    tracing::debug!("connection: {e}");
                }
            });
    }
    Ok(())
}

fn connection(
    server: &KeyServer,
    cfg: Arc<rustls::ServerConfig>,
    sock: TcpStream,
) -> Result<(), String> {
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    sock.set_write_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let conn = rustls::ServerConnection::new(cfg).map_err(|e| e.to_string())?;
    let mut stream = rustls::StreamOwned::new(conn, sock);
    let req = http::read_request(&mut stream).map_err(|e| e.to_string())?;
    let peer = stream
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| tls::cert_key(c).ok());
    let (status, body) = server.handle(&req, peer);
    http::write_response(&mut stream, status, &body).map_err(|e| e.to_string())?;
    stream.conn.send_close_notify();
    let _ = std::io::Write::flush(&mut stream);
    Ok(())
}
