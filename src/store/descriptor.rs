//! `coffer.store`: the store descriptor (JSON). It holds no usable secret: the private key and
//! the name key are sealed under sub-keys of each master-key version, and the seal binds the
//! store id, the version and a hash of the public key, so a swapped public key is detected
//! when the store is unlocked.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::StoreError;

pub const DESCRIPTOR: &str = "coffer.store";
const FORMAT: &str = "coffer-store";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MasterKeyRecord {
    pub version: u32,
    pub key_id: String,
    /// Provider-specific reference (a KMS UID); None for the local keystore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// PKCS#8 DER of the RSA private key, sealed; base64.
    pub private_key: String,
    /// The name key, sealed; base64.
    pub name_key: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Descriptor {
    pub format: String,
    pub version: u32,
    pub store_id: String,
    pub created: u64,
    pub block_shift: u8,
    pub provider: String,
    /// The KMS (host:port) where a kms store's master keys were made; a hint for messages and
    /// `coffer info`: the host's own kms.toml says where to connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms: Option<String>,
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default)]
    pub copy: Option<String>,
    pub rsa_bits: usize,
    /// SubjectPublicKeyInfo DER of the store's RSA public key; base64.
    pub public_key: String,
    pub master_keys: Vec<MasterKeyRecord>,
    /// The master keys sealed to an organisation's recovery key (password-loss protection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryRecord>,
}

/// A key export (recipient kind, docs/format.md) of the store's master keys, made for a
/// recovery certificate, kept in the store so that `coffer recover` can restore the keys when
/// every keystore is lost. Holds nothing usable without the recovery private key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RecoveryRecord {
    pub fingerprint: String,
    /// PEM certificate of the recovery key, so that later master-key versions can be sealed
    /// to it too.
    pub certificate: String,
    /// The export file's bytes; base64.
    pub export: String,
}

impl Descriptor {
    pub fn new_format() -> (String, u32) {
        (FORMAT.into(), crate::format::FORMAT_VERSION as u32)
    }

    pub fn load(store: &Path) -> Result<Descriptor, StoreError> {
        let p = store.join(DESCRIPTOR);
        let bytes = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotAStore(store.to_path_buf()));
            }
            Err(e) => return Err(StoreError::Io(p, e)),
        };
        Self::from_bytes(&bytes, &p)
    }

    /// Parse and check a descriptor's bytes; `p` names it in messages.
    pub fn from_bytes(bytes: &[u8], p: &Path) -> Result<Descriptor, StoreError> {
        let d: Descriptor = serde_json::from_slice(bytes)
            .map_err(|_| StoreError::Damaged(format!("descriptor {} is not valid", p.display())))?;
        if d.format != FORMAT {
            return Err(StoreError::Damaged(format!(
                "descriptor {} is not a coffer store",
                p.display()
            )));
        }
        if d.version != crate::format::FORMAT_VERSION as u32 {
            return Err(StoreError::Damaged(format!(
                "store format version {} is not supported by this coffer (it reads version {})",
                d.version,
                crate::format::FORMAT_VERSION
            )));
        }
        if !(12..=20).contains(&d.block_shift)
            || d.master_keys.is_empty()
            || d.store_id_bytes().is_err()
        {
            return Err(StoreError::Damaged(format!(
                "descriptor {} is inconsistent",
                p.display()
            )));
        }
        Ok(d)
    }

    pub fn save(&self, store: &Path) -> Result<(), StoreError> {
        let bytes =
            serde_json::to_vec_pretty(self).map_err(|e| StoreError::Damaged(e.to_string()))?;
        let p = store.join(DESCRIPTOR);
        crate::atomic_write(&p, &bytes, 0o600).map_err(|e| StoreError::Io(p, e))
    }

    pub fn store_id_bytes(&self) -> Result<[u8; 16], StoreError> {
        let v =
            hex::decode(&self.store_id).map_err(|_| StoreError::Damaged("bad store id".into()))?;
        v.try_into()
            .map_err(|_| StoreError::Damaged("bad store id".into()))
    }

    pub fn public_key_der(&self) -> Result<Vec<u8>, StoreError> {
        B64.decode(&self.public_key)
            .map_err(|_| StoreError::Damaged("bad public key encoding".into()))
    }

    /// The newest master-key version, used for new wraps.
    pub fn current_master(&self) -> &MasterKeyRecord {
        // load() refuses a descriptor without master keys, and versions only grow.
        self.master_keys
            .iter()
            .max_by_key(|m| m.version)
            .unwrap_or(&self.master_keys[0])
    }
}

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

pub fn unb64(s: &str) -> Result<Vec<u8>, StoreError> {
    B64.decode(s)
        .map_err(|_| StoreError::Damaged("bad base64 in descriptor".into()))
}
