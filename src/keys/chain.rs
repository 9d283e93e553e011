//! The provider chain: one way to find a store's master key, for every store and command.
//!
//! The providers are asked in the configured order (local, hierarchy, kms by default; see
//! config.rs): this host's keystore, then each configured key server, then the KMS when the
//! descriptor names a UID for the key. Each answers found, not here, or failed; a failed
//! provider does not stop the chain, because every key is checked against the descriptor's
//! key id (a stale or foreign key cannot be used), and a site that put its keys in a second
//! place wants that place used. When nothing is found, the error names each provider asked
//! and why it gave nothing, in one line.
//!
//! The keystore is opened at most once per command (one Argon2id run, at most one prompt):
//! the chain holds it, and every later step of the command (adding a rotated key, the audit
//! log, this host's identity for a key server) uses the same one. It is opened only when it
//! lists the key asked for (read without the passphrase), or when a key server needs this
//! host's identity.

use std::cell::OnceCell;
use std::path::Path;

use super::config::{ChainSettings, Provider};
use super::hierarchy::HierarchyProvider;
use super::kms::{KmsConfig, KmsError, KmsProvider};
use super::{
    AuditLog, HostIdentity, KeyError, KeyProvider, Keystore, KeystoreError, Listing, Lookup,
    Secrets, Target,
};
use crate::crypto::MasterKey;

/// What one provider said, for the one-line account of a lookup.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// "keystore /var/lib/coffer/keystore", "key server https://keys-b:7443", "kms".
    pub provider: String,
    pub said: Said,
}

#[derive(Debug, Clone)]
pub enum Said {
    NotHere,
    /// Not asked, and why (no KMS configuration here, no keystore yet).
    NotAsked(String),
    /// Failed, with the provider's own one-line message.
    Failed(String),
}

/// Every attempt of one lookup, shown as "local: not here; key server ...: ...".
#[derive(Debug, Clone, Default)]
pub struct Attempts(pub Vec<Attempt>);

impl Attempts {
    /// Whether some provider failed (rather than not holding the key).
    pub fn any_failed(&self) -> bool {
        self.0.iter().any(|a| matches!(a.said, Said::Failed(_)))
    }
}

impl std::fmt::Display for Attempts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return write!(f, "no provider was asked");
        }
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            match &a.said {
                Said::NotHere => write!(f, "{}: not here", a.provider)?,
                Said::NotAsked(why) => write!(f, "{}: {why}", a.provider)?,
                // Provider messages already name their server; keep them as they are.
                Said::Failed(msg) => write!(f, "{msg}")?,
            }
        }
        Ok(())
    }
}

/// A key the chain found, where it came from, and what failed on the way.
pub struct Resolved {
    pub key: MasterKey,
    pub provider: Provider,
    pub from: String,
    /// Providers asked before the one that answered that failed (for a warning).
    pub failed: Attempts,
}

pub struct Chain {
    settings: ChainSettings,
    secrets: Box<dyn Secrets>,
    keystore: OnceCell<Keystore>,
    identity: OnceCell<HostIdentity>,
    kms: OnceCell<KmsProvider>,
}

impl Chain {
    pub fn new(settings: ChainSettings, secrets: Box<dyn Secrets>) -> Chain {
        Chain {
            settings,
            secrets,
            keystore: OnceCell::new(),
            identity: OnceCell::new(),
            kms: OnceCell::new(),
        }
    }

    pub fn settings(&self) -> &ChainSettings {
        &self.settings
    }

    pub fn keystore_dir(&self) -> &Path {
        &self.settings.keystore_dir
    }

    /// What the keystore holds, read without the passphrase; None when there is none. Read
    /// afresh each time: a command may add keys between two lookups (a rotation, then an
    /// export in the same program).
    pub fn listing(&self) -> Option<Listing> {
        Keystore::public_listing(self.keystore_dir()).ok()
    }

    pub fn keystore_exists(&self) -> bool {
        Keystore::exists(self.keystore_dir())
    }

    /// This host's keystore, opened once per command; an error when there is none.
    pub fn keystore(&self) -> Result<&Keystore, KeystoreError> {
        if let Some(ks) = self.keystore.get() {
            return Ok(ks);
        }
        let dir = self.keystore_dir();
        if !Keystore::exists(dir) {
            return Err(KeystoreError::Absent(dir.to_path_buf()));
        }
        let pass = self.secrets.keystore_passphrase(dir, false)?;
        let ks = Keystore::open(dir, &pass)?;
        Ok(self.keystore.get_or_init(|| ks))
    }

    /// The same, creating the keystore on first use (the passphrase is then asked twice at a
    /// prompt).
    pub fn keystore_or_create(&self) -> Result<&Keystore, KeystoreError> {
        if self.keystore.get().is_some() || self.keystore_exists() {
            return self.keystore();
        }
        let dir = self.keystore_dir();
        let pass = self.secrets.keystore_passphrase(dir, true)?;
        let ks = Keystore::open_or_create(dir, &pass)?;
        Ok(self.keystore.get_or_init(|| ks))
    }

    /// This keystore's identity (its certificate's key pair), unsealed once.
    pub fn identity(&self) -> Result<&HostIdentity, KeystoreError> {
        if let Some(id) = self.identity.get() {
            return Ok(id);
        }
        let id = self.keystore_or_create()?.identity()?;
        Ok(self.identity.get_or_init(|| id))
    }

    /// The audit log beside the keystore, also on hosts whose keys all live in a KMS (the
    /// directory is made 0700 for it; no keystore file is created).
    pub fn audit(&self) -> Result<AuditLog, KmsError> {
        match self.keystore.get() {
            Some(ks) => Ok(ks.audit().clone()),
            None => super::kms::audit_log(self.keystore_dir()),
        }
    }

    /// The KMS of this host's configuration, connected on first use.
    pub fn kms(&self) -> Result<&KmsProvider, KmsError> {
        if let Some(k) = self.kms.get() {
            return Ok(k);
        }
        let config = KmsConfig::load(&self.settings.kms_config)?;
        let p = KmsProvider::new(config, self.audit()?);
        Ok(self.kms.get_or_init(|| p))
    }

    /// Ask the providers, in order, for `target`. A keystore that cannot be opened (a wrong
    /// passphrase, no passphrase to be had) stops the chain: that is the operator's to fix,
    /// not a provider that is down.
    pub fn resolve(&self, target: &Target<'_>) -> Result<Resolved, KeyError> {
        let mut attempts = Attempts::default();
        for p in self.settings.providers.clone() {
            let found = match p {
                Provider::Local => self.ask_local(target, &mut attempts)?,
                Provider::Hierarchy => self.ask_key_servers(target, &mut attempts)?,
                Provider::Kms => self.ask_kms(target, &mut attempts),
            };
            if let Some((key, from)) = found {
                let failed = Attempts(
                    attempts
                        .0
                        .into_iter()
                        .filter(|a| matches!(a.said, Said::Failed(_)))
                        .collect(),
                );
                return Ok(Resolved {
                    key,
                    provider: p,
                    from,
                    failed,
                });
            }
        }
        Err(KeyError::NotFound {
            key_id: target.key_id.to_string(),
            store_id: target.store_id.to_string(),
            attempts,
        })
    }

    /// The key alone, for commands that need not say where it came from.
    pub fn master(&self, target: &Target<'_>) -> Result<MasterKey, KeyError> {
        Ok(self.resolve(target)?.key)
    }

    fn ask_local(
        &self,
        target: &Target<'_>,
        attempts: &mut Attempts,
    ) -> Result<Option<(MasterKey, String)>, KeyError> {
        let who = format!("keystore {}", self.keystore_dir().display());
        let listed = match &self.listing() {
            None => {
                attempts.0.push(Attempt {
                    provider: who,
                    said: Said::NotAsked("there is no keystore there yet".into()),
                });
                return Ok(None);
            }
            Some(l) => l.keys.iter().any(|k| k.key_id == target.key_id),
        };
        // Not listed: no passphrase is asked for a key that is not here.
        if listed {
            if let Lookup::Found(k) = self.keystore()?.lookup(target)? {
                return Ok(Some((k, who)));
            }
        }
        attempts.0.push(Attempt {
            provider: who,
            said: Said::NotHere,
        });
        Ok(None)
    }

    fn ask_key_servers(
        &self,
        target: &Target<'_>,
        attempts: &mut Attempts,
    ) -> Result<Option<(MasterKey, String)>, KeyError> {
        if self.settings.key_servers.is_empty() {
            return Ok(None);
        }
        let identity = self.identity()?;
        for ks in &self.settings.key_servers {
            let answer = HierarchyProvider::new(
                &ks.url,
                &ks.pin,
                self.settings.key_server_timeout,
                identity,
            )
            .map_err(KeyError::from)
            .and_then(|p| p.lookup(target).map(|l| (l, p.describe())));
            match answer {
                Ok((Lookup::Found(k), who)) => return Ok(Some((k, who))),
                Ok((Lookup::NotHere, who)) => attempts.0.push(Attempt {
                    provider: who,
                    said: Said::NotHere,
                }),
                Err(e) => attempts.0.push(Attempt {
                    provider: format!("key server {}", ks.url),
                    said: Said::Failed(e.to_string()),
                }),
            }
        }
        Ok(None)
    }

    fn ask_kms(&self, target: &Target<'_>, attempts: &mut Attempts) -> Option<(MasterKey, String)> {
        // A store whose descriptor names no UID for this key has nothing in a KMS to ask for.
        target.uid?;
        let path = &self.settings.kms_config;
        let absent = matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
        if absent {
            attempts.0.push(Attempt {
                provider: "kms".into(),
                said: Said::NotAsked(format!("no KMS configuration at {}", path.display())),
            });
            return None;
        }
        let answer = self
            .kms()
            .map_err(KeyError::from)
            .and_then(|p| p.lookup(target).map(|l| (l, p.describe())));
        match answer {
            Ok((Lookup::Found(k), who)) => Some((k, who)),
            Ok((Lookup::NotHere, who)) => {
                attempts.0.push(Attempt {
                    provider: who,
                    said: Said::NotHere,
                });
                None
            }
            Err(e) => {
                attempts.0.push(Attempt {
                    provider: "kms".into(),
                    said: Said::Failed(e.to_string()),
                });
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_read_as_one_line() {
        let a = Attempts(vec![
            Attempt {
                provider: "keystore /k".into(),
                said: Said::NotHere,
            },
            Attempt {
                provider: "key server https://b:7443".into(),
                said: Said::Failed(
                    "key server https://b:7443 is unreachable: did not answer within 1 s".into(),
                ),
            },
            Attempt {
                provider: "kms".into(),
                said: Said::NotAsked("no KMS configuration at /etc/coffer/kms.toml".into()),
            },
        ]);
        assert!(a.any_failed());
        assert_eq!(
            a.to_string(),
            "keystore /k: not here; key server https://b:7443 is unreachable: did not answer \
             within 1 s; kms: no KMS configuration at /etc/coffer/kms.toml"
        );
        assert!(!a.to_string().contains('\n'));
    }
}
