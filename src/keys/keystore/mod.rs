//! The local keystore: a directory (mode 0700) holding `keystore.json` (0600), its lock file
//! and the audit log. Master keys are sealed (AES-256-GCM-SIV) under a key derived from the
//! passphrase with Argon2id; nothing in the file is a usable secret without the passphrase.
//!
//! Writers take an exclusive flock on `keystore.lock`, re-read the file, change it, and
//! replace it atomically (write to a temporary file, fsync, rename, fsync the directory), so
//! a CLI command and a key server can share one keystore.

mod credentials;
mod file;
mod identity;
mod keys;
#[cfg(test)]
mod tests;

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

pub use credentials::CredentialEntry;
pub use file::check_file_bytes;
use file::{lock, read_file, write_file, KdfRecord, KeystoreFile, FORMAT, VERSION};

use super::AuditLog;
use crate::crypto::{self, KdfParams, KeystoreKey, PrivateKey};

pub(crate) const FILE: &str = "keystore.json";
const AUDIT: &str = "audit.log";
const VERIFIER_AAD: &[u8] = b"coffer/v1/keystore-verifier";
const VERIFIER_PLAIN: &[u8] = b"coffer keystore passphrase check";

#[derive(Debug, thiserror::Error)]
pub enum KeystoreError {
    #[error("wrong passphrase for keystore {0}")]
    WrongPassphrase(PathBuf),
    #[error("{0}")]
    Passphrase(String),
    #[error("keystore {path}: {message}")]
    Damaged { path: PathBuf, message: String },
    #[error("keystore {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("keystore already holds a different key under id {0}")]
    Conflict(String),
    #[error(
        "no keystore at {}: this host holds no coffer keys (give --keystore, or import the \
         store's keys)",
        .0.display()
    )]
    Absent(PathBuf),
    #[error(transparent)]
    Audit(#[from] crate::keys::AuditError),
}

/// What the keystore knows about one master key, without the key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyEntry {
    pub key_id: String,
    pub store_id: String,
    pub version: u32,
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default)]
    pub copy: Option<String>,
    /// "created" here, or how it arrived ("import", ...).
    pub origin: String,
    pub created: u64,
    /// The newest store format this key was made for or seen to open: a descriptor that
    /// says an earlier one was put there to be believed with fewer checks, and is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<u32>,
}

/// What `keys list` shows: no secrets.
#[derive(Serialize)]
pub struct Listing {
    pub certificate_fingerprint: Option<String>,
    pub keys: Vec<KeyEntry>,
    pub credentials: Vec<CredentialEntry>,
}

/// A keystore's identity, unsealed.
pub struct HostIdentity {
    pub private: PrivateKey,
    pub certificate: String,
    pub fingerprint: String,
}

/// What adding a key did.
#[derive(Debug, PartialEq, Eq)]
pub enum Added {
    New,
    AlreadyPresent,
}

pub struct Keystore {
    pub(super) dir: PathBuf,
    pub(super) key: KeystoreKey,
    pub(super) audit: AuditLog,
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeystoreError + '_ {
    move |source| KeystoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Keystore {
    /// The default keystore directory: /var/lib/coffer/keystore for root, else under the
    /// user's XDG data directory.
    pub fn default_dir() -> PathBuf {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            return PathBuf::from("/var/lib/coffer/keystore");
        }
        if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
            return PathBuf::from(d).join("coffer/keystore");
        }
        let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
        PathBuf::from(home).join(".local/share/coffer/keystore")
    }

    pub fn exists(dir: &Path) -> bool {
        dir.join(FILE).is_file()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// Create a new, empty keystore in `dir` (created 0700 if missing).
    pub fn create(
        dir: &Path,
        passphrase: &[u8],
        params: KdfParams,
    ) -> Result<Keystore, KeystoreError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
        let _lock = lock(dir)?;
        if Self::exists(dir) {
            return Err(KeystoreError::Damaged {
                path: dir.to_path_buf(),
                message: "a keystore already exists here".into(),
            });
        }
        let mut salt = [0u8; 16];
        crypto::random_bytes(&mut salt);
        let key = crypto::derive_passphrase_key(passphrase, &salt, &params)
            .map_err(|e| KeystoreError::Passphrase(e.to_string()))?;
        let file = KeystoreFile {
            format: FORMAT.into(),
            version: VERSION,
            kdf: KdfRecord {
                alg: "argon2id".into(),
                params,
                salt: B64.encode(salt),
            },
            verifier: B64.encode(crypto::seal_vec(key.secret(), VERIFIER_AAD, VERIFIER_PLAIN)),
            identity: None,
            keys: Vec::new(),
            credentials: Vec::new(),
        };
        write_file(dir, &file)?;
        let ks = Keystore {
            dir: dir.to_path_buf(),
            key,
            audit: AuditLog::new(&dir.join(AUDIT)),
        };
        // A keystore nobody can account for is not left behind.
        if let Err(e) = ks.audit.record("keystore-create", None, None, "ok", None) {
            let _ = std::fs::remove_file(dir.join(FILE));
            return Err(e.into());
        }
        Ok(ks)
    }

    /// Open an existing keystore; a wrong passphrase is refused here, before anything else.
    pub fn open(dir: &Path, passphrase: &[u8]) -> Result<Keystore, KeystoreError> {
        let file = read_file(dir)?;
        let damaged = |m: &str| KeystoreError::Damaged {
            path: dir.join(FILE),
            message: m.into(),
        };
        if file.kdf.alg != "argon2id" {
            return Err(damaged("unknown KDF"));
        }
        let salt = B64
            .decode(&file.kdf.salt)
            .map_err(|_| damaged("bad salt"))?;
        let key = crypto::derive_passphrase_key(passphrase, &salt, &file.kdf.params)
            .map_err(|e| damaged(&e.to_string()))?;
        let verifier = B64
            .decode(&file.verifier)
            .map_err(|_| damaged("bad verifier"))?;
        let audit = AuditLog::new(&dir.join(AUDIT));
        match crypto::open_vec(key.secret(), VERIFIER_AAD, &verifier) {
            Ok(v) if v == VERIFIER_PLAIN => {}
            _ => {
                audit.refusal(
                    "keystore-open",
                    None,
                    None,
                    None,
                    "refused",
                    Some("wrong passphrase"),
                );
                return Err(KeystoreError::WrongPassphrase(dir.to_path_buf()));
            }
        }
        Ok(Keystore {
            dir: dir.to_path_buf(),
            key,
            audit,
        })
    }

    /// Open the keystore, creating it on first use.
    pub fn open_or_create(dir: &Path, passphrase: &[u8]) -> Result<Keystore, KeystoreError> {
        if Self::exists(dir) {
            Self::open(dir, passphrase)
        } else {
            Self::create(dir, passphrase, KdfParams::default())
        }
    }

    /// Remember that store `store_id` was seen at format `format`: every key and credential
    /// entry of the store that remembers less is raised to it (never lowered). Needs no
    /// passphrase: the entries' keys stay sealed as they are. Returns whether anything
    /// changed.
    pub fn remember_format(dir: &Path, store_id: &str, format: u32) -> Result<bool, KeystoreError> {
        if !Self::exists(dir) {
            return Ok(false);
        }
        let _lock = lock(dir)?;
        let mut file = read_file(dir)?;
        let mut changed = false;
        let mut raise = |f: &mut Option<u32>| {
            if f.unwrap_or(1) < format {
                *f = Some(format);
                changed = true;
            }
        };
        file.keys
            .iter_mut()
            .filter(|k| k.entry.store_id == store_id)
            .for_each(|k| raise(&mut k.entry.format));
        file.credentials
            .iter_mut()
            .filter(|c| c.entry.store_id == store_id)
            .for_each(|c| raise(&mut c.entry.format));
        if changed {
            write_file(dir, &file)?;
            AuditLog::new(&dir.join(AUDIT)).record(
                "format-seen",
                None,
                Some(store_id),
                "ok",
                Some(&format!("format {format}")),
            )?;
        }
        Ok(changed)
    }

    /// What a keystore holds, read without the passphrase: key metadata and the identity's
    /// fingerprint are not secret (the keys themselves stay sealed).
    pub fn public_listing(dir: &Path) -> Result<Listing, KeystoreError> {
        if !Self::exists(dir) {
            return Err(KeystoreError::Damaged {
                path: dir.to_path_buf(),
                message: "no keystore here".into(),
            });
        }
        let file = read_file(dir)?;
        Ok(Listing {
            certificate_fingerprint: file.identity.as_ref().map(|i| i.fingerprint.clone()),
            keys: file.keys.iter().map(|k| k.entry.clone()).collect(),
            credentials: file.credentials.iter().map(|c| c.entry.clone()).collect(),
        })
    }
}
