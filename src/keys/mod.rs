//! Key providers, the chain that resolves a store's master key, and every key operation built
//! on it.
//!
//! Owns: the provider trait (which says "found", "not here" or "failed", apart), the providers
//! (the local passphrase-protected keystore, the key-server hierarchy's client, the KMIP
//! client), the one chain that asks them (chain.rs), the audit log and its policy, and the
//! key operations a command runs: creating a store with its first key (init.rs), unlocking it
//! (unlock.rs), rotation and KMS sync (versions.rs), recovery records (recovery.rs), exports,
//! imports and backup credentials (export.rs). Does not own the store's bytes (store) or the
//! key server daemon (server), and never prompts or prints: the binary hands in a
//! [`Secrets`] and shows what these functions return.

mod audit;
pub mod certificate;
pub mod chain;
pub mod config;

pub mod export;
pub mod hierarchy;
pub mod init;
mod keystore;
pub mod kms;
pub mod passphrase;
pub mod recovery;
pub mod transport;
pub mod unlock;
pub mod upgrade;
pub mod versions;

pub use audit::{AuditError, AuditLog, AuditRecord};
pub use chain::{Attempt, Chain, Resolved, Said};
pub use config::{parse_duration, ChainSettings, Fallback, KeyFlags, Provider};
pub use keystore::CredentialEntry;
pub use keystore::{
    check_file_bytes as check_keystore_bytes, Added, HostIdentity, KeyEntry, Keystore,
    KeystoreError, Listing,
};
pub use passphrase::{passphrase_from_file, Secrets};

use crate::crypto::MasterKey;
use crate::store::Descriptor;

/// The master key a command asks for: its id, its store, and where a KMS keeps it.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub store_id: &'a str,
    pub key_id: &'a str,
    /// The KMS UID the descriptor records for this key, if any.
    pub uid: Option<&'a str>,
}

impl<'a> Target<'a> {
    /// The store's current master key.
    pub fn current(desc: &'a Descriptor) -> Target<'a> {
        let m = desc.current_master();
        Target {
            store_id: &desc.store_id,
            key_id: &m.key_id,
            uid: m.uid.as_deref(),
        }
    }
}

/// What one provider says about a key id.
pub enum Lookup {
    Found(MasterKey),
    NotHere,
}

/// A provider's "failed", and every other failure of a key operation. Each names the file,
/// server or key it concerns; none carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "master key {key_id} of store {store_id} was found by no key provider: {attempts}; \
         import an export of it (coffer keys import), or name a key server or KMS that has it"
    )]
    NotFound {
        key_id: String,
        store_id: String,
        attempts: chain::Attempts,
    },
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    #[error(transparent)]
    Kms(#[from] kms::KmsError),
    #[error(transparent)]
    KeyServer(#[from] hierarchy::client::ClientError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
    #[error(transparent)]
    Certificate(#[from] certificate::CertError),
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
    #[error("key provider {provider} failed: {message}")]
    Provider { provider: String, message: String },
    #[error(
        "store {store_id} records no KMS UID for its master key {key_id}: its key lives in \
         the '{provider}' provider"
    )]
    NoUid {
        store_id: String,
        key_id: String,
        provider: &'static str,
    },
    #[error(
        "the backup credential for store {0} does not match the store's public key; ask for a \
         new one (coffer keys backup-credential)"
    )]
    CredentialMismatch(String),
    #[error(
        "store {store_id}: no key provider gave its master key ({attempts}), and this keystore \
         holds no backup credential for it to fall back to"
    )]
    NoCredential {
        store_id: String,
        attempts: chain::Attempts,
    },
    #[error(
        "store {store_id}: no key provider gave its master key ({attempts}); this keystore \
         holds a backup credential for it: `--fallback backup-only` mounts it backup-only \
         (new backups are written, old ones cannot be read)"
    )]
    FallbackAvailable {
        store_id: String,
        attempts: chain::Attempts,
    },
    #[error("{}", undone(error, uid, cleanup.as_ref()))]
    Undone {
        error: Box<KeyError>,
        uid: String,
        cleanup: Option<kms::KmsError>,
    },
    #[error("{path} exists; choose another name or remove it")]
    Exists { path: std::path::PathBuf },
    #[error("cannot write {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(Refusal),
}

/// A key operation refused for a reason of its own (each a sentence for the user).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "store {0} keeps its master key in this host's keystore; only kms stores have versions \
         to sync (rotate it with `coffer keys rotate`)"
    )]
    NotKms(String),
    #[error("store {0} has no recovery key (it was made without --recovery-cert)")]
    NoRecovery(String),
    #[error(
        "{file} is the recovery key {fingerprint}, but store {store_id} was sealed to {sealed_to}"
    )]
    WrongRecoveryKey {
        file: String,
        fingerprint: String,
        store_id: String,
        sealed_to: String,
    },
    #[error("the store's recovery record is damaged")]
    RecoveryDamaged,
    #[error("the store's recovery record does not open: {0}")]
    RecoveryUnopened(transport::TransportError),
    #[error(
        "the store's recovery record holds no key for store {0}'s current master key: it was \
         not made for this store; nothing was imported"
    )]
    RecoveryForeign(String),
    #[error("{0} is not a recovery private key (PKCS#8 PEM)")]
    NotARecoveryKey(String),
}

/// A KMS key made for a rotation or init that then failed: was it taken out again?
fn undone(error: &KeyError, uid: &str, cleanup: Option<&kms::KmsError>) -> String {
    match cleanup {
        None => format!("{error}; nothing was changed (the new KMS key {uid} was removed again)"),
        Some(e) => format!(
            "{error}; the store is unchanged, but the new KMS key {uid} could not be removed \
             ({e}): destroy it from the KMS console"
        ),
    }
}

pub trait KeyProvider {
    /// Where this provider looks, for messages ("keystore /var/lib/coffer/keystore").
    fn describe(&self) -> String;
    /// Found, not here, or failed (Err).
    fn lookup(&self, target: &Target<'_>) -> Result<Lookup, KeyError>;
}
