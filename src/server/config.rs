//! A key server's configuration and the rights it grants: the TOML file, the grant syntax
//! (`use`, `read`, `write`, `relay`, and `store:ID` / `key:ID` scopes), durations.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What can go wrong setting a key server up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Parse(PathBuf, String),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, String),
    #[error("unknown right '{0}' (use, read, write, relay, store:ID, key:ID)")]
    Right(String),
    #[error("'{0}' is not a duration (60s, 5m, 1h, 500ms)")]
    Duration(String),
    #[error("grant subject {0}: {1}")]
    Subject(String, String),
    #[error(
        "--hierarchy with --parent needs the parent's certificate (--parent-cert FILE): keys \
         are pushed only to a pinned parent, never to whoever answers at its address"
    )]
    ParentPin,
}

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
    /// Client certificate fingerprint (or certificate file) -> rights and scopes.
    #[serde(default)]
    pub grants: BTreeMap<String, Vec<String>>,
    /// A name shown beside each grant's fingerprint (the web console's rights page).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub grant_names: BTreeMap<String, String>,
    /// Serve the web console at /console on the server's TLS port.
    #[serde(default)]
    pub console: bool,
    /// Web console users (`coffer keyserver user add`): name -> role and passphrase hash.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub console_users: BTreeMap<String, super::console_auth::ConsoleUser>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_path_buf(), e))?;
        toml::from_str(&text)
            .map_err(|e| ConfigError::Parse(path.to_path_buf(), e.message().into()))
    }

    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let w = |e: String| ConfigError::Write(path.to_path_buf(), e);
        let text = toml::to_string_pretty(self).map_err(|e| w(e.to_string()))?;
        crate::atomic_write(path, text.as_bytes(), 0o600).map_err(|e| w(e.to_string()))
    }
}

/// What one client certificate may do, and for which stores or keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rights {
    /// Fetch keys (to mount).
    pub use_: bool,
    /// List keys (and export).
    pub read: bool,
    /// Push keys (a child server).
    pub write: bool,
    /// Ask on behalf of its own clients (a child server): the original requester is then
    /// authorised here too, not only the server that relays the request.
    pub relay: bool,
    /// Store ids the rights are limited to; empty: every store.
    pub stores: Vec<String>,
    /// Master-key ids the rights are limited to; empty: every key.
    pub keys: Vec<String>,
}

impl Rights {
    pub fn parse(list: &[String]) -> Result<Rights, ConfigError> {
        let mut r = Rights::default();
        for item in list.iter().flat_map(|s| s.split(',')) {
            let item = item.trim();
            let hex_id = |s: &str| {
                (s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()))
                    .then(|| s.to_ascii_lowercase())
                    .ok_or_else(|| ConfigError::Right(item.to_string()))
            };
            match item {
                "use" => r.use_ = true,
                "read" => r.read = true,
                "write" => r.write = true,
                "relay" => r.relay = true,
                "" => {}
                s if s.starts_with("store:") => r.stores.push(hex_id(&s[6..])?),
                s if s.starts_with("key:") => r.keys.push(hex_id(&s[4..])?),
                other => return Err(ConfigError::Right(other.to_string())),
            }
        }
        Ok(r)
    }

    /// Whether these rights reach master key `key_id` of store `store_id`.
    pub fn covers(&self, store_id: &str, key_id: &str) -> bool {
        (self.stores.is_empty() || self.stores.iter().any(|s| s == store_id))
            && (self.keys.is_empty() || self.keys.iter().any(|k| k == key_id))
    }

    /// The rights as a grant lists them: `use`, `read`, ..., `store:ID`, `key:ID`.
    pub fn to_list(&self) -> Vec<String> {
        let flags = [
            (self.use_, "use"),
            (self.read, "read"),
            (self.write, "write"),
            (self.relay, "relay"),
        ];
        let mut v: Vec<String> = flags
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| n.to_string())
            .collect();
        v.extend(self.stores.iter().map(|s| format!("store:{s}")));
        v.extend(self.keys.iter().map(|k| format!("key:{k}")));
        v
    }

    /// Whether these rights are limited to named stores or keys (the normal form).
    pub fn scoped(&self) -> bool {
        !self.stores.is_empty() || !self.keys.is_empty()
    }
}

/// A grant's subject: a fingerprint as `coffer keys cert` prints it, or a certificate file.
pub fn grant_fingerprint(cert: &str) -> Result<String, ConfigError> {
    crate::keys::certificate::pin_of(cert)
        .map_err(|e| ConfigError::Subject(cert.into(), e.to_string()))
}

/// "60s", "5m", "1h", "500ms" or plain seconds (the same syntax as every coffer duration).
pub fn parse_duration(s: &str) -> Result<Duration, ConfigError> {
    crate::keys::parse_duration(s).map_err(|_| ConfigError::Duration(s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_and_scopes() {
        let sid = "ab".repeat(16);
        let r = Rights::parse(&[format!("use,relay,store:{}", sid.to_uppercase())]).expect("ok");
        assert!(r.use_ && r.relay && !r.read && !r.write && r.scoped());
        assert!(r.covers(&sid, "whatever"));
        assert!(!r.covers(&"cd".repeat(16), "whatever"));
        let all = Rights::parse(&["use".into()]).expect("ok");
        assert!(!all.scoped() && all.covers(&sid, "k"));
        let k = Rights::parse(&[format!("use,key:{}", "01".repeat(16))]).expect("ok");
        assert!(k.covers(&sid, &"01".repeat(16)) && !k.covers(&sid, &"02".repeat(16)));
        assert_eq!(Rights::parse(&r.to_list()).expect("again"), r);
        for bad in ["fly", "store:xyz", "store:", "key:0123"] {
            assert!(Rights::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
        assert_eq!(
            parse_duration("500ms").expect("ms"),
            Duration::from_millis(500)
        );
        assert!(parse_duration("5y").is_err());
    }
}
