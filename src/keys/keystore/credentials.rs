//! Backup credentials kept in a keystore: the store's public key, its name key and (format 2)
//! its write key, the last two sealed under the keystore key. What a backup-only host holds.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::file::{lock, read_file, write_file};
use super::{Added, Keystore, KeystoreError};
use crate::crypto::{self, NameKey, WriteKey};
use crate::keys::transport::BackupCredential;

/// What the keystore knows about a backup credential, without its keys.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct CredentialEntry {
    pub store_id: String,
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default)]
    pub copy: Option<String>,
    pub origin: String,
    pub created: u64,
    /// The newest store format the credential was made for or seen to open (as a key
    /// entry's `format`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<u32>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct StoredCredential {
    #[serde(flatten)]
    pub(super) entry: CredentialEntry,
    /// SubjectPublicKeyInfo DER of the store's public key; base64.
    public_key: String,
    /// The name key sealed under the keystore key, AAD "coffer/v1/credential" | store id.
    name_key: String,
    /// The write key sealed under the keystore key, AAD "coffer/v2/credential-write" | store
    /// id; absent in credentials of format-1 stores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    write_key: Option<String>,
}

fn aad(label: &[u8], store_id: &str) -> Vec<u8> {
    [label, store_id.as_bytes()].concat()
}
const NAME_AAD: &[u8] = b"coffer/v1/credential";
const WRITE_AAD: &[u8] = b"coffer/v2/credential-write";

impl Keystore {
    fn seal_credential(&self, c: &BackupCredential, origin: &str) -> StoredCredential {
        let seal = |label, k: &crypto::Secret32| {
            B64.encode(crypto::seal_key(
                self.key.secret(),
                &aad(label, &c.store_id),
                k,
            ))
        };
        StoredCredential {
            entry: CredentialEntry {
                store_id: c.store_id.clone(),
                policy: c.policy.clone(),
                copy: c.copy.clone(),
                origin: origin.to_string(),
                created: crate::unix_now(),
                format: c.format,
            },
            public_key: B64.encode(&c.public_key),
            name_key: seal(NAME_AAD, c.name_key.secret()),
            write_key: c.write_key.as_ref().map(|w| seal(WRITE_AAD, w.secret())),
        }
    }

    /// Keep a backup credential. The same credential again is a no-op; one that adds a write
    /// key to the same public and name keys (issued after the store's upgrade to format 2)
    /// replaces the old one; a different one for the same store is refused.
    pub fn add_credential(
        &self,
        c: &BackupCredential,
        origin: &str,
        fingerprint: Option<&str>,
    ) -> Result<Added, KeystoreError> {
        let _lock = lock(&self.dir)?;
        let mut file = read_file(&self.dir)?;
        let at = file
            .credentials
            .iter()
            .position(|s| s.entry.store_id == c.store_id);
        let outcome = match at {
            Some(i) => {
                let old = self.unseal_credential(&file.credentials[i])?;
                let same_store_keys = old.public_key == c.public_key
                    && crypto::ct_eq(old.name_key.expose(), c.name_key.expose());
                let same_write = match (&old.write_key, &c.write_key) {
                    (None, None) => true,
                    (Some(a), Some(b)) => crypto::ct_eq(a.expose(), b.expose()),
                    _ => false,
                };
                if !same_store_keys || (old.write_key.is_some() && !same_write) {
                    self.audit.refusal(
                        "credential-import",
                        None,
                        Some(&c.store_id),
                        fingerprint,
                        "refused",
                        Some("a different credential for this store is present"),
                    );
                    return Err(KeystoreError::Conflict(format!(
                        "backup credential of store {}",
                        c.store_id
                    )));
                }
                if same_write {
                    Added::AlreadyPresent
                } else {
                    file.credentials[i] = self.seal_credential(c, origin);
                    write_file(&self.dir, &file)?;
                    Added::New
                }
            }
            None => {
                file.credentials.push(self.seal_credential(c, origin));
                write_file(&self.dir, &file)?;
                Added::New
            }
        };
        let what = if outcome == Added::New {
            "ok"
        } else {
            "already-present"
        };
        self.audit.record_with(
            "credential-import",
            None,
            Some(&c.store_id),
            fingerprint,
            what,
            None,
        )?;
        Ok(outcome)
    }

    /// The backup credential for a store, if this keystore holds one (audited).
    pub fn credential(&self, store_id: &str) -> Result<Option<BackupCredential>, KeystoreError> {
        let file = read_file(&self.dir)?;
        let Some(stored) = file
            .credentials
            .iter()
            .find(|s| s.entry.store_id == store_id)
        else {
            return Ok(None);
        };
        let c = self.unseal_credential(stored)?;
        self.audit
            .record_with("credential-get", None, Some(store_id), None, "ok", None)?;
        Ok(Some(c))
    }

    fn unseal_credential(
        &self,
        stored: &StoredCredential,
    ) -> Result<BackupCredential, KeystoreError> {
        let sid = &stored.entry.store_id;
        let damaged = || KeystoreError::Damaged {
            path: self.dir.join(super::FILE),
            message: format!("backup credential of store {sid} is damaged"),
        };
        let open = |label, s: &str| {
            let sealed = B64.decode(s).map_err(|_| damaged())?;
            crypto::open_key(self.key.secret(), &aad(label, sid), &sealed).map_err(|_| damaged())
        };
        Ok(BackupCredential {
            store_id: sid.clone(),
            public_key: B64.decode(&stored.public_key).map_err(|_| damaged())?,
            name_key: NameKey::from_secret(open(NAME_AAD, &stored.name_key)?),
            write_key: stored
                .write_key
                .as_deref()
                .map(|w| open(WRITE_AAD, w).map(WriteKey::from_secret))
                .transpose()?,
            policy: stored.entry.policy.clone(),
            copy: stored.entry.copy.clone(),
            format: stored.entry.format,
        })
    }
}
