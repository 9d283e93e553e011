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
mod types;

use std::path::Path;
use std::time::Duration;

pub use client::KmsClient;
pub use config::{KmsConfig, DEFAULT_PATH};
pub use types::{KeyInfo, KeyLabels, KeyState};

use super::{AuditError, AuditLog, KeyError, KeyProvider, Lookup, Target};
use crate::crypto::MasterKey;

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
    #[error(transparent)]
    Audit(#[from] AuditError),
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

/// The KMS as a key provider: fetches a store's master key by the UID its descriptor records,
/// and checks that what comes back is that key. One connection for every request of a
/// command (a rotation creates, gets, activates and revokes over it).
pub struct KmsProvider {
    config: KmsConfig,
    audit: AuditLog,
    client: std::cell::OnceCell<KmsClient>,
}

impl KmsProvider {
    pub fn new(config: KmsConfig, audit: AuditLog) -> Self {
        KmsProvider {
            config,
            audit,
            client: std::cell::OnceCell::new(),
        }
    }

    pub fn config(&self) -> &KmsConfig {
        &self.config
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// The connection, made on first use.
    pub fn client(&self) -> Result<&KmsClient, KmsError> {
        if let Some(c) = self.client.get() {
            return Ok(c);
        }
        let c = KmsClient::connect(&self.config)?;
        Ok(self.client.get_or_init(|| c))
    }

    /// Get the key `uid` and check that it is master key `key_id`; audited either way, and
    /// the key is returned only once its record is written.
    pub fn fetch(&self, store_id: &str, key_id: &str, uid: &str) -> Result<MasterKey, KmsError> {
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
        match &got {
            Ok(_) => {
                self.audit
                    .record("kms-get", Some(key_id), Some(store_id), "ok", Some(&detail))?
            }
            Err(e) => self.audit.refusal(
                "kms-get",
                Some(key_id),
                Some(store_id),
                None,
                &format!("failed: {e}"),
                Some(&detail),
            ),
        }
        got
    }
}

impl KeyProvider for KmsProvider {
    fn describe(&self) -> String {
        format!("the KMS at {}", self.config.endpoint())
    }

    fn lookup(&self, target: &Target<'_>) -> Result<Lookup, KeyError> {
        let Some(uid) = target.uid else {
            return Ok(Lookup::NotHere);
        };
        Ok(Lookup::Found(self.fetch(
            target.store_id,
            target.key_id,
            uid,
        )?))
    }
}
