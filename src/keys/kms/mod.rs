//! The kms provider: master keys that live only in a KMIP key management server.
//!
//! Owns: `kms.toml` (config), the KMIP client over rustls (client), and the provider that a
//! mount's chain asks by key id (this file). The store's descriptor records each master-key
//! version's KMS UID; the KMS keeps coffer's labels with the key (store id, version, policy,
//! copy) so that an operator finds them from the KMS console, and `coffer keys locate` from
//! here. Does not own: re-wrapping the store's private key on rotation (store), or when to
//! rotate (the KMS's policy, or `coffer keys rotate`).

mod answer;
mod client;
mod config;
#[doc(hidden)]
pub mod fuzz;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

pub use client::{KeyInfo, KeyLabels, KeyState, KmsClient};
pub use config::{KmsConfig, DEFAULT_PATH};

use super::{AuditLog, KeyError, KeyProvider, Lookup};
use crate::crypto::MasterKey;
use crate::store::Descriptor;

/// Everything that can go wrong with a KMS, each naming the server (host:port) or the UID,
/// never a key.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    #[error("KMS configuration {path}: {detail}")]
    Config { path: String, detail: String },
    #[error("cannot reach the KMS at {endpoint}: {detail}")]
    Unreachable { endpoint: String, detail: String },
    #[error("the KMS at {endpoint} did not answer within {}", secs(*after))]
    Timeout { endpoint: String, after: Duration },
    #[error(
        "TLS with the KMS at {endpoint} failed: {detail} (check the CA certificate, and that the \
         KMS trusts this host's client certificate)"
    )]
    Tls { endpoint: String, detail: String },
    #[error("the KMS at {endpoint} has no key with UID {uid} (or this client may not see it)")]
    UnknownUid { endpoint: String, uid: String },
    #[error(
        "the KMS at {endpoint} marks key {uid} as compromised (revoked for key compromise); \
         coffer refuses to use a compromised key"
    )]
    Compromised { endpoint: String, uid: String },
    #[error("the KMS at {endpoint} has destroyed key {uid}")]
    Destroyed { endpoint: String, uid: String },
    #[error("the KMS at {endpoint} refused {op}: {detail}")]
    Refused {
        endpoint: String,
        op: &'static str,
        detail: String,
    },
    #[error("the connection to the KMS at {endpoint} failed during {op}: {detail}")]
    Connection {
        endpoint: String,
        op: &'static str,
        detail: String,
    },
    #[error("the KMS at {endpoint} gave an answer to {op} that coffer cannot use: {detail}")]
    Protocol {
        endpoint: String,
        op: &'static str,
        detail: String,
    },
    #[error(
        "the KMS at {endpoint} returned, for UID {uid}, a key that is not master key {key_id} \
         of this store"
    )]
    WrongKey {
        endpoint: String,
        uid: String,
        key_id: String,
    },
}

fn secs(d: Duration) -> String {
    if d.is_zero() {
        "the configured timeout".into()
    } else if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// The audit log beside this host's keystore, also for hosts whose keys all live in a KMS
/// (the directory is made 0700 for it; no keystore file is created).
pub fn audit_log(keystore_dir: &Path) -> Result<AuditLog, KmsError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(keystore_dir)
        .map_err(|e| KmsError::Config {
            path: keystore_dir.display().to_string(),
            detail: format!("cannot make the audit log's directory: {e}"),
        })?;
    Ok(AuditLog::new(&keystore_dir.join("audit.log")))
}

/// Fetch a store's master keys by the UIDs its descriptor records.
pub struct KmsProvider<'a> {
    config: &'a KmsConfig,
    store_id: String,
    /// key id -> UID, from the descriptor.
    uids: HashMap<String, String>,
    audit: &'a AuditLog,
    client: std::cell::OnceCell<KmsClient>,
}

impl<'a> KmsProvider<'a> {
    pub fn new(config: &'a KmsConfig, desc: &Descriptor, audit: &'a AuditLog) -> Self {
        KmsProvider {
            config,
            store_id: desc.store_id.clone(),
            uids: desc
                .master_keys
                .iter()
                .filter_map(|m| m.uid.clone().map(|u| (m.key_id.clone(), u)))
                .collect(),
            audit,
            client: std::cell::OnceCell::new(),
        }
    }

    /// One connection for every request of this command.
    pub fn client(&self) -> Result<&KmsClient, KmsError> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let c = KmsClient::connect(self.config)?;
        Ok(self.client.get_or_init(|| c))
    }

    /// Get the key `uid` and check that it is master key `key_id`; audited either way.
    pub fn fetch(&self, key_id: &str, uid: &str) -> Result<MasterKey, KmsError> {
        let got = self.client().and_then(|c| {
            let k = c.get_master(uid)?;
            if crate::crypto::master_key_id(&k) != key_id {
                return Err(KmsError::WrongKey {
                    endpoint: c.endpoint().into(),
                    uid: uid.into(),
                    key_id: key_id.into(),
                });
            }
            Ok(k)
        });
        let detail = format!("uid {uid} at {}", self.config.endpoint());
        let outcome = match &got {
            Ok(_) => "ok".to_string(),
            Err(e) => format!("failed: {e}"),
        };
        self.audit
            .record(
                "kms-get",
                Some(key_id),
                Some(&self.store_id),
                &outcome,
                Some(&detail),
            )
            .map_err(|e| KmsError::Config {
                path: self.audit.path().display().to_string(),
                detail: format!("cannot write the audit log: {e}"),
            })?;
        got
    }
}

impl KeyProvider for KmsProvider<'_> {
    fn describe(&self) -> String {
        format!("the KMS at {}", self.config.endpoint())
    }

    fn lookup(&self, key_id: &str) -> Result<Lookup, KeyError> {
        let Some(uid) = self.uids.get(key_id) else {
            return Ok(Lookup::NotHere);
        };
        Ok(Lookup::Found(self.fetch(key_id, uid)?))
    }
}
