//! Key providers and the chain that resolves a store's master key.
//!
//! Owns: the provider trait (which says "found", "not here" or "failed", apart), the local
//! passphrase-protected keystore, the audit log beside it, and passphrase input. The
//! hierarchy (key servers, in `server`) and kms (KMIP, in `kms`) providers plug into the same
//! trait.

mod audit;
pub mod certificate;
mod credentials;
mod keystore;
pub mod kms;
mod passphrase;
pub mod transport;

pub use audit::{AuditLog, AuditRecord};
pub use credentials::CredentialEntry;
pub use keystore::{
    check_file_bytes as check_keystore_bytes, Added, HostIdentity, KeyEntry, Keystore,
    KeystoreError, Listing,
};
pub use passphrase::{read_passphrase, PassphraseSource};

use crate::crypto::MasterKey;

/// What one provider says about a key id.
pub enum Lookup {
    Found(MasterKey),
    NotHere,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "master key {key_id} of store {store_id} is not in {tried}; import an export of it \
         (coffer keys import) or use a key server that has it"
    )]
    NotFound {
        key_id: String,
        store_id: String,
        tried: String,
    },
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    #[error(transparent)]
    Kms(#[from] kms::KmsError),
    #[error("key provider {provider} failed: {message}")]
    Provider { provider: String, message: String },
}

pub trait KeyProvider {
    /// Where this provider looks, for messages ("keystore /var/lib/coffer/keystore").
    fn describe(&self) -> String;
    fn lookup(&self, key_id: &str) -> Result<Lookup, KeyError>;
}

/// Ask each provider in order; the first that has the key wins. A provider that fails stops
/// the chain: a silent fall-through could hide a broken provider behind a stale key.
pub fn resolve(
    providers: &[&dyn KeyProvider],
    key_id: &str,
    store_id: &str,
) -> Result<MasterKey, KeyError> {
    for p in providers {
        if let Lookup::Found(k) = p.lookup(key_id)? {
            return Ok(k);
        }
    }
    let tried = providers
        .iter()
        .map(|p| p.describe())
        .collect::<Vec<_>>()
        .join(", ");
    Err(KeyError::NotFound {
        key_id: key_id.into(),
        store_id: store_id.into(),
        tried,
    })
}
