//! The master keys in a keystore: listing, adding (one or all-or-none), and getting one,
//! each sealed under the keystore key with its key id as associated data. Every get and add
//! is audited.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::file::{lock, read_file, write_file, StoredKey};
use super::{Added, KeyEntry, Keystore, KeystoreError, FILE};
use crate::crypto::{self, MasterKey};
use crate::keys::{KeyError, KeyProvider, Lookup, Target};

impl Keystore {
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
            .record("key-add", Some(&kid), Some(&sid), "ok", None)?;
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
                        self.audit.refusal(
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
            self.audit.record_with(
                op,
                Some(&entry.key_id),
                Some(&entry.store_id),
                fingerprint,
                what,
                None,
            )?;
        }
        Ok(outcomes)
    }

    /// Fetch a master key by id (audited).
    pub fn get(&self, key_id: &str) -> Result<Option<MasterKey>, KeystoreError> {
        let file = read_file(&self.dir)?;
        let Some(stored) = file.keys.iter().find(|k| k.entry.key_id == key_id) else {
            self.audit
                .refusal("key-get", Some(key_id), None, None, "not-found", None);
            return Ok(None);
        };
        let key = self.unseal(stored);
        let outcome = if key.is_ok() { "ok" } else { "damaged" };
        self.audit.record(
            "key-get",
            Some(key_id),
            Some(&stored.entry.store_id),
            outcome,
            None,
        )?;
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
    fn lookup(&self, target: &Target<'_>) -> Result<Lookup, KeyError> {
        Ok(match self.get(target.key_id)? {
            Some(k) => Lookup::Found(k),
            None => Lookup::NotHere,
        })
    }
}
