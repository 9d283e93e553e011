//! The local keystore: a directory (mode 0700) holding `keystore.json` (0600), its lock file
//! and the audit log. Master keys are sealed (AES-256-GCM-SIV) under a key derived from the
//! passphrase with Argon2id; nothing in the file is a usable secret without the passphrase.
//!
//! Writers take an exclusive flock on `keystore.lock`, re-read the file, change it, and
//! replace it atomically (write to a temporary file, fsync, rename, fsync the directory), so
//! a CLI command and a key server can share one keystore.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::credentials::{CredentialEntry, StoredCredential};
use super::{AuditLog, KeyError, KeyProvider, Lookup};
use crate::crypto::{self, KdfParams, KeystoreKey, MasterKey, PrivateKey};

pub(super) const FILE: &str = "keystore.json";
const LOCK: &str = "keystore.lock";
const AUDIT: &str = "audit.log";
const FORMAT: &str = "coffer-keystore";
const VERSION: u32 = 1;
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
}

#[derive(Serialize, Deserialize)]
struct KdfRecord {
    alg: String,
    #[serde(flatten)]
    params: KdfParams,
    salt: String,
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
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    #[serde(flatten)]
    entry: KeyEntry,
    wrapped: String,
}

/// This keystore's own key pair: its identity when keys are wrapped to it.
#[derive(Serialize, Deserialize)]
struct StoredIdentity {
    /// Sealed PKCS#8 DER of the private key; base64.
    private_key: String,
    /// PEM X.509 certificate (public).
    certificate: String,
    fingerprint: String,
}

#[derive(Serialize, Deserialize)]
pub(super) struct KeystoreFile {
    format: String,
    version: u32,
    kdf: KdfRecord,
    verifier: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    identity: Option<StoredIdentity>,
    keys: Vec<StoredKey>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) credentials: Vec<StoredCredential>,
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

const IDENTITY_AAD: &[u8] = b"coffer/v1/host-identity";
/// RSA size of a keystore's identity key.
const IDENTITY_BITS: usize = 3072;

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
        let _ = ks.audit.record("keystore-create", None, None, "ok", None);
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
                let _ = audit.record(
                    "keystore-open",
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

    pub fn entries(&self) -> Result<Vec<KeyEntry>, KeystoreError> {
        Ok(read_file(&self.dir)?
            .keys
            .into_iter()
            .map(|k| k.entry)
            .collect())
    }

    /// Add a master key. The same key under the same id is a no-op (returns false); a
    /// different key under an id already present is refused.
    pub fn add(&self, entry: KeyEntry, key: &MasterKey) -> Result<bool, KeystoreError> {
        let _lock = lock(&self.dir)?;
        let mut file = read_file(&self.dir)?;
        if let Some(existing) = file.keys.iter().find(|k| k.entry.key_id == entry.key_id) {
            let same = self
                .unseal(existing)
                .map(|k| crypto::ct_eq(k.expose(), key.expose()));
            return match same {
                Ok(true) => Ok(false),
                _ => Err(KeystoreError::Conflict(entry.key_id)),
            };
        }
        let wrapped = crypto::seal_key(self.key.secret(), entry.key_id.as_bytes(), key.secret());
        let (kid, sid) = (entry.key_id.clone(), entry.store_id.clone());
        file.keys.push(StoredKey {
            entry,
            wrapped: B64.encode(wrapped),
        });
        write_file(&self.dir, &file)?;
        self.audit
            .record("key-add", Some(&kid), Some(&sid), "ok", None)
            .map_err(io_err(self.audit.path()))?;
        Ok(true)
    }

    /// Add several keys, all or none: if any id already holds a different key, nothing is
    /// written. `how` describes their origin for the audit log and `keys list`.
    pub fn add_all(
        &self,
        keys: &[(KeyEntry, &MasterKey)],
        op: &str,
        fingerprint: Option<&str>,
    ) -> Result<Vec<Added>, KeystoreError> {
        let _lock = lock(&self.dir)?;
        let mut file = read_file(&self.dir)?;
        let mut outcomes = Vec::new();
        for (entry, key) in keys {
            match file.keys.iter().find(|k| k.entry.key_id == entry.key_id) {
                Some(existing) => {
                    let same = self
                        .unseal(existing)
                        .map(|k| crypto::ct_eq(k.expose(), key.expose()));
                    if !matches!(same, Ok(true)) {
                        let _ = self.audit.record_with(
                            op,
                            Some(&entry.key_id),
                            Some(&entry.store_id),
                            fingerprint,
                            "refused",
                            Some("a different key has this id"),
                        );
                        return Err(KeystoreError::Conflict(entry.key_id.clone()));
                    }
                    outcomes.push(Added::AlreadyPresent);
                }
                None => outcomes.push(Added::New),
            }
        }
        for ((entry, key), outcome) in keys.iter().zip(&outcomes) {
            if *outcome == Added::New {
                let wrapped =
                    crypto::seal_key(self.key.secret(), entry.key_id.as_bytes(), key.secret());
                file.keys.push(StoredKey {
                    entry: entry.clone(),
                    wrapped: B64.encode(wrapped),
                });
            }
        }
        if outcomes.contains(&Added::New) {
            write_file(&self.dir, &file)?;
        }
        for ((entry, _), outcome) in keys.iter().zip(&outcomes) {
            let what = if *outcome == Added::New {
                "ok"
            } else {
                "already-present"
            };
            self.audit
                .record_with(
                    op,
                    Some(&entry.key_id),
                    Some(&entry.store_id),
                    fingerprint,
                    what,
                    None,
                )
                .map_err(io_err(self.audit.path()))?;
        }
        Ok(outcomes)
    }

    /// This keystore's identity, made (RSA-3072, about a second) on first use.
    pub fn identity(&self) -> Result<HostIdentity, KeystoreError> {
        if let Some(id) = self.load_identity(&read_file(&self.dir)?)? {
            return Ok(id);
        }
        let _lock = lock(&self.dir)?;
        let mut file = read_file(&self.dir)?;
        if let Some(id) = self.load_identity(&file)? {
            return Ok(id);
        }
        let fail = |e: &dyn std::fmt::Display| KeystoreError::Damaged {
            path: self.dir.clone(),
            message: format!("cannot make the host identity: {e}"),
        };
        let private = PrivateKey::generate(IDENTITY_BITS).map_err(|e| fail(&e))?;
        let host = hostname();
        let certificate =
            super::certificate::self_signed(&private, &format!("coffer keystore on {host}"))
                .map_err(|e| fail(&e))?;
        let fingerprint = private.public().fingerprint().map_err(|e| fail(&e))?;
        let der = private.to_der().map_err(|e| fail(&e))?;
        file.identity = Some(StoredIdentity {
            private_key: B64.encode(crypto::seal_vec(self.key.secret(), IDENTITY_AAD, &der)),
            certificate: certificate.clone(),
            fingerprint: fingerprint.clone(),
        });
        write_file(&self.dir, &file)?;
        self.audit
            .record_with(
                "identity-create",
                None,
                None,
                Some(&fingerprint),
                "ok",
                None,
            )
            .map_err(io_err(self.audit.path()))?;
        Ok(HostIdentity {
            private,
            certificate,
            fingerprint,
        })
    }

    /// The identity's fingerprint if one was made, without unsealing anything.
    pub fn identity_fingerprint(&self) -> Result<Option<String>, KeystoreError> {
        Ok(read_file(&self.dir)?.identity.map(|i| i.fingerprint))
    }

    fn load_identity(&self, file: &KeystoreFile) -> Result<Option<HostIdentity>, KeystoreError> {
        let Some(id) = &file.identity else {
            return Ok(None);
        };
        let damaged = || KeystoreError::Damaged {
            path: self.dir.join(FILE),
            message: "host identity is damaged".into(),
        };
        let sealed = B64.decode(&id.private_key).map_err(|_| damaged())?;
        let der = zeroize::Zeroizing::new(
            crypto::open_vec(self.key.secret(), IDENTITY_AAD, &sealed).map_err(|_| damaged())?,
        );
        let private = PrivateKey::from_der(&der).map_err(|_| damaged())?;
        if private.public().fingerprint().ok().as_deref() != Some(id.fingerprint.as_str()) {
            return Err(damaged());
        }
        Ok(Some(HostIdentity {
            private,
            certificate: id.certificate.clone(),
            fingerprint: id.fingerprint.clone(),
        }))
    }

    /// Fetch a master key by id (audited).
    pub fn get(&self, key_id: &str) -> Result<Option<MasterKey>, KeystoreError> {
        let file = read_file(&self.dir)?;
        let Some(stored) = file.keys.iter().find(|k| k.entry.key_id == key_id) else {
            let _ = self
                .audit
                .record("key-get", Some(key_id), None, "not-found", None);
            return Ok(None);
        };
        let key = self.unseal(stored);
        let outcome = if key.is_ok() { "ok" } else { "damaged" };
        self.audit
            .record(
                "key-get",
                Some(key_id),
                Some(&stored.entry.store_id),
                outcome,
                None,
            )
            .map_err(io_err(self.audit.path()))?;
        key.map(Some)
    }

    fn unseal(&self, stored: &StoredKey) -> Result<MasterKey, KeystoreError> {
        let damaged = || KeystoreError::Damaged {
            path: self.dir.join(FILE),
            message: format!("entry {} is damaged", stored.entry.key_id),
        };
        let w = B64.decode(&stored.wrapped).map_err(|_| damaged())?;
        crypto::open_key(self.key.secret(), stored.entry.key_id.as_bytes(), &w)
            .map(MasterKey::from_secret)
            .map_err(|_| damaged())
    }
}

impl KeyProvider for Keystore {
    fn describe(&self) -> String {
        format!("keystore {}", self.dir.display())
    }
    fn lookup(&self, key_id: &str) -> Result<Lookup, KeyError> {
        Ok(match self.get(key_id)? {
            Some(k) => Lookup::Found(k),
            None => Lookup::NotHere,
        })
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "this host".into())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> KdfParams {
        KdfParams {
            m_cost: 8 * 1024,
            t_cost: 1,
            p_cost: 1,
        }
    }

    #[test]
    fn keystore_round_trip_wrong_passphrase_and_conflict() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path().join("ks");
        let ks = Keystore::create(&dir, b"right", fast()).expect("create");
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(FILE)), 0o600);
        let mk = MasterKey::random();
        let entry = KeyEntry {
            key_id: crypto::master_key_id(&mk),
            store_id: "s1".into(),
            version: 1,
            policy: Some("daily".into()),
            copy: None,
            origin: "created".into(),
            created: 1,
        };
        assert!(ks.add(entry.clone(), &mk).expect("add"));
        assert!(!ks.add(entry.clone(), &mk).expect("re-add is a no-op"));
        assert!(matches!(
            ks.add(entry.clone(), &MasterKey::random()),
            Err(KeystoreError::Conflict(_))
        ));
        let ks2 = Keystore::open(&dir, b"right").expect("open");
        let got = ks2.get(&entry.key_id).expect("get").expect("present");
        assert_eq!(got.expose(), mk.expose());
        assert!(ks2.get("nope").expect("get").is_none());
        assert!(matches!(
            Keystore::open(&dir, b"wrong"),
            Err(KeystoreError::WrongPassphrase(_))
        ));
        // The key's bytes are nowhere in the keystore directory.
        for f in std::fs::read_dir(&dir).expect("ls") {
            let bytes = std::fs::read(f.expect("entry").path()).expect("read");
            assert!(!bytes.windows(32).any(|w| w == mk.expose()));
            assert!(!String::from_utf8_lossy(&bytes).contains(&hex::encode(mk.expose())));
        }
        assert_eq!(mode(&dir.join(AUDIT)), 0o600);
    }

    #[test]
    fn add_all_is_all_or_nothing() {
        let d = tempfile::tempdir().expect("tempdir");
        let ks = Keystore::create(&d.path().join("ks"), b"pw", fast()).expect("create");
        let entry = |k: &MasterKey| KeyEntry {
            key_id: crypto::master_key_id(k),
            store_id: "s".into(),
            version: 1,
            policy: None,
            copy: None,
            origin: "import".into(),
            created: 1,
        };
        let (k1, k2) = (MasterKey::random(), MasterKey::random());
        assert!(ks.add(entry(&k1), &k1).expect("add"));
        // A batch with one conflicting entry (k1's id, other bytes) adds nothing at all.
        let forged = KeyEntry {
            key_id: crypto::master_key_id(&k1),
            ..entry(&k2)
        };
        let r = ks.add_all(&[(entry(&k2), &k2), (forged, &k2)], "import", None);
        assert!(matches!(r, Err(KeystoreError::Conflict(_))));
        assert_eq!(ks.entries().expect("list").len(), 1, "k2 was not added");
        assert_eq!(
            ks.get(&crypto::master_key_id(&k1))
                .expect("get")
                .expect("k1")
                .expose(),
            k1.expose()
        );
        let r = ks
            .add_all(&[(entry(&k1), &k1), (entry(&k2), &k2)], "import", None)
            .expect("add");
        assert_eq!(r, vec![Added::AlreadyPresent, Added::New]);
    }

    #[test]
    fn damaged_keystore_is_a_clear_error() {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path().join("ks");
        Keystore::create(&dir, b"pw", fast()).expect("create");
        let p = dir.join(FILE);
        let bytes = std::fs::read(&p).expect("read");
        std::fs::write(&p, &bytes[..bytes.len() / 2]).expect("truncate");
        let e = Keystore::open(&dir, b"pw")
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("not a valid keystore file (truncated)"), "{e}");
        // Parameters that would cost 4 GiB are refused before Argon2 runs.
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        v["kdf"]["m_cost"] = (4u32 * 1024 * 1024).into();
        std::fs::write(&p, serde_json::to_vec(&v).expect("json")).expect("write");
        let e = Keystore::open(&dir, b"pw")
            .err()
            .expect("refused")
            .to_string();
        assert!(e.contains("Argon2 parameters out of range"), "{e}");
    }
}
