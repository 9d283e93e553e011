//! `coffer.store`: the store descriptor (JSON). It holds no usable secret: the private key, the
//! name key and the write key are sealed under sub-keys of each master-key version, and the
//! seal binds the store id, the version and a hash of the public key.
//!
//! Format 2 adds two MACs over every other field (docs/format.md): `seal`, under the master
//! key, which readers and rotations check before acting on any field (the recovery record
//! above all), and `writer_seal`, under the write key, which a backup-only host checks.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::StoreError;

pub const DESCRIPTOR: &str = "coffer.store";
const FORMAT: &str = "coffer-store";

/// Where a store's master keys are made and kept: this host's keystore, or a KMIP server (its
/// descriptor then records each version's UID). Any provider of the chain may still hold a
/// copy (an import, a key server); this says which one rotates it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyHome {
    Local,
    Kms,
}

impl KeyHome {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyHome::Local => "local",
            KeyHome::Kms => "kms",
        }
    }
}

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
    /// The write key, sealed; base64 (format 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_key: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Descriptor {
    pub format: String,
    pub version: u32,
    pub store_id: String,
    pub created: u64,
    pub block_shift: u8,
    /// Where the master keys are made (the field is named for format 1 compatibility).
    pub provider: KeyHome,
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
    /// Format 2: MAC of every other field under the master key; base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<String>,
    /// Format 2: the same MAC under the write key, for backup-only hosts; base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer_seal: Option<String>,
}

/// Context strings of the two descriptor MACs.
const SEAL_CONTEXT: &str = "coffer 2026-12 descriptor seal";
const WRITER_SEAL_CONTEXT: &str = "coffer 2026-12 descriptor writer seal";
/// No descriptor is larger; a bigger file is not ours.
const DESCRIPTOR_MAX: usize = 1 << 20;

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

/// The parts the descriptor MACs cover, in order: each field's name, then `[0]` when it is
/// absent or `[1] | value` (numbers in decimal). `crypto::mac` length-prefixes every part.
fn opt(parts: &mut Vec<Vec<u8>>, name: &str, v: Option<&str>) {
    parts.push(name.as_bytes().to_vec());
    parts.push(match v {
        None => vec![0],
        Some(s) => [&[1u8][..], s.as_bytes()].concat(),
    });
}

impl Descriptor {
    pub fn new_format() -> (String, u32) {
        (FORMAT.into(), crate::format::STORE_VERSION)
    }

    /// Format 2 or later: batches and the descriptor are authenticated.
    pub fn authenticated(&self) -> bool {
        self.version >= 2
    }

    /// Format 3 or later: every inode carries a sealed record (format/inode.rs), and what a
    /// restore acts on comes from it, not from the backing inode.
    pub fn has_records(&self) -> bool {
        self.version >= crate::format::RECORDS_VERSION
    }

    fn sealed_parts(&self) -> Vec<Vec<u8>> {
        let mut p = vec![b"coffer/v2/descriptor".to_vec()];
        let n = |x: u64| Some(x.to_string());
        opt(&mut p, "format", Some(&self.format));
        opt(&mut p, "version", n(self.version.into()).as_deref());
        opt(&mut p, "store_id", Some(&self.store_id));
        opt(&mut p, "created", n(self.created).as_deref());
        opt(&mut p, "block_shift", n(self.block_shift.into()).as_deref());
        opt(&mut p, "provider", Some(self.provider.as_str()));
        opt(&mut p, "kms", self.kms.as_deref());
        opt(&mut p, "policy", self.policy.as_deref());
        opt(&mut p, "copy", self.copy.as_deref());
        opt(&mut p, "rsa_bits", n(self.rsa_bits as u64).as_deref());
        opt(&mut p, "public_key", Some(&self.public_key));
        opt(
            &mut p,
            "master_keys",
            n(self.master_keys.len() as u64).as_deref(),
        );
        for m in &self.master_keys {
            opt(&mut p, "version", n(m.version.into()).as_deref());
            opt(&mut p, "key_id", Some(&m.key_id));
            opt(&mut p, "uid", m.uid.as_deref());
            opt(&mut p, "private_key", Some(&m.private_key));
            opt(&mut p, "name_key", Some(&m.name_key));
            opt(&mut p, "write_key", m.write_key.as_deref());
        }
        let r = self.recovery.as_ref();
        opt(&mut p, "recovery", r.map(|_| ""));
        opt(&mut p, "fingerprint", r.map(|r| r.fingerprint.as_str()));
        opt(&mut p, "certificate", r.map(|r| r.certificate.as_str()));
        opt(&mut p, "export", r.map(|r| r.export.as_str()));
        p
    }

    fn mac(&self, context: &'static str, key: &crate::crypto::Secret32) -> [u8; 32] {
        let parts = self.sealed_parts();
        let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        crate::crypto::mac(context, key, &refs)
    }

    /// Set both seals over the current fields.
    pub fn seal(&mut self, master: &crate::crypto::MasterKey, writer: &crate::crypto::WriteKey) {
        self.seal = Some(b64(&self.mac(SEAL_CONTEXT, master.secret())));
        self.writer_seal = Some(b64(&self.mac(WRITER_SEAL_CONTEXT, writer.secret())));
    }

    fn verify(
        &self,
        sealed: Option<&str>,
        context: &'static str,
        key: &crate::crypto::Secret32,
    ) -> bool {
        let Some(tag) = sealed.and_then(|s| B64.decode(s).ok()) else {
            return false;
        };
        crate::crypto::ct_eq(&tag, &self.mac(context, key))
    }

    /// Whether `seal` holds under `master`.
    pub fn verify_master_seal(&self, master: &crate::crypto::MasterKey) -> bool {
        self.verify(self.seal.as_deref(), SEAL_CONTEXT, master.secret())
    }

    /// Whether `writer_seal` holds under the write key (what a backup-only host can check).
    pub fn verify_writer_seal(&self, writer: &crate::crypto::WriteKey) -> bool {
        self.verify(
            self.writer_seal.as_deref(),
            WRITER_SEAL_CONTEXT,
            writer.secret(),
        )
    }

    pub fn load(store: &Path) -> Result<Descriptor, StoreError> {
        let p = store.join(DESCRIPTOR);
        let bytes = match crate::within::read(store, Path::new(DESCRIPTOR), DESCRIPTOR_MAX) {
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
        if !(1..=crate::format::STORE_VERSION).contains(&d.version) {
            return Err(StoreError::Damaged(format!(
                "store format version {} is not supported by this coffer (it reads versions 1 to {})",
                d.version,
                crate::format::STORE_VERSION
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
        crate::within::write_atomic(store, Path::new(DESCRIPTOR), &bytes, 0o600)
            .map_err(|e| StoreError::Io(store.join(DESCRIPTOR), e))
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
