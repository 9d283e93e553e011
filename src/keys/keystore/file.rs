//! The keystore file: `keystore.json` (JSON, 0600), its format and version, the lock that
//! serialises writers, and its atomic replacement. Nothing here holds an unsealed secret.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::credentials::StoredCredential;
use super::{io_err, KeyEntry, KeystoreError, FILE};
use crate::crypto::{self, KdfParams};

const LOCK: &str = "keystore.lock";
pub(super) const FORMAT: &str = "coffer-keystore";
pub(super) const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
pub(super) struct KdfRecord {
    pub(super) alg: String,
    #[serde(flatten)]
    pub(super) params: KdfParams,
    pub(super) salt: String,
}

#[derive(Serialize, Deserialize)]
pub(super) struct StoredKey {
    #[serde(flatten)]
    pub(super) entry: KeyEntry,
    pub(super) wrapped: String,
}

/// This keystore's own key pair: its identity when keys are wrapped to it.
#[derive(Serialize, Deserialize)]
pub(super) struct StoredIdentity {
    /// Sealed PKCS#8 DER of the private key; base64.
    pub(super) private_key: String,
    /// PEM X.509 certificate (public).
    pub(super) certificate: String,
    pub(super) fingerprint: String,
}

#[derive(Serialize, Deserialize)]
pub(super) struct KeystoreFile {
    pub(super) format: String,
    pub(super) version: u32,
    pub(super) kdf: KdfRecord,
    pub(super) verifier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) identity: Option<StoredIdentity>,
    pub(super) keys: Vec<StoredKey>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) credentials: Vec<StoredCredential>,
}

pub(super) struct LockGuard(File);

impl Drop for LockGuard {
    fn drop(&mut self) {
        // SAFETY: the fd is owned by self.0 and open.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

pub(super) fn lock(dir: &Path) -> Result<LockGuard, KeystoreError> {
    let p = dir.join(LOCK);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&p)
        .map_err(io_err(&p))?;
    // SAFETY: the fd is owned by f and open; flock blocks until the lock is ours.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io_err(&p)(std::io::Error::last_os_error()));
    }
    Ok(LockGuard(f))
}

pub(super) fn read_file(dir: &Path) -> Result<KeystoreFile, KeystoreError> {
    let p = dir.join(FILE);
    let bytes = std::fs::read(&p).map_err(io_err(&p))?;
    parse_file(&bytes, p)
}

/// Check a keystore file's bytes the way opening one does (for the fuzzer), without a
/// passphrase: its JSON, format and version.
pub fn check_file_bytes(bytes: &[u8]) -> Result<(), KeystoreError> {
    let file = parse_file(bytes, PathBuf::from(FILE))?;
    // What opening then does with each sealed entry, under some key: decode and open.
    let key = crate::crypto::Secret32::from_array([7; 32]);
    for k in &file.keys {
        if let Ok(w) = B64.decode(&k.wrapped) {
            let _ = crypto::open_key(&key, k.entry.key_id.as_bytes(), &w);
        }
    }
    Ok(())
}

fn parse_file(bytes: &[u8], p: PathBuf) -> Result<KeystoreFile, KeystoreError> {
    let file: KeystoreFile = serde_json::from_slice(bytes).map_err(|e| KeystoreError::Damaged {
        path: p.clone(),
        message: format!("not a valid keystore file ({})", e.classify_name()),
    })?;
    if file.format != FORMAT || file.version != VERSION {
        return Err(KeystoreError::Damaged {
            path: p,
            message: "unsupported keystore format".into(),
        });
    }
    Ok(file)
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}
impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "unexpected data",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

pub(super) fn write_file(dir: &Path, file: &KeystoreFile) -> Result<(), KeystoreError> {
    let bytes = serde_json::to_vec_pretty(file).map_err(|e| KeystoreError::Damaged {
        path: dir.join(FILE),
        message: e.to_string(),
    })?;
    crate::atomic_write(&dir.join(FILE), &bytes, 0o600).map_err(io_err(dir))
}
