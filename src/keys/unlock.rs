//! Opening a store with what this host has: the master key through the provider chain, or,
//! when no provider gives it, this keystore's backup credential for the store.
//!
//! The policy, in order:
//! 1. `--backup-only` (asked): the credential if this keystore holds one, else the master key
//!    with its private half dropped.
//! 2. The chain. A key it finds opens the store fully.
//! 3. Nothing found, and this keystore holds a credential for the store:
//!    - no provider *failed* (each said "not here", or was not configured): this is a backup
//!      host by design, and the mount is backup-only, as it always was;
//!    - some provider failed (a KMS or key server down) and the fallback is `backup-only`: the
//!      mount is backup-only, and says which providers failed;
//!    - some provider failed and no fallback was asked for: refused, naming each provider and
//!      saying that `--fallback backup-only` would keep backups running.

use std::path::Path;

use super::chain::Attempts;
use super::config::Fallback;
use super::{Chain, KeyError, Target};
use crate::store::{self, Descriptor, StoreKeys};

/// Why a store was opened backup-only.
#[derive(Debug)]
pub enum BackupOnlyWhy {
    /// The caller asked (`mount --backup-only`).
    Asked,
    /// No provider holds the master key for this host: it holds a backup credential only.
    OnlyCredential,
    /// These providers failed, and the configured fallback is backup-only.
    Fallback(Attempts),
}

/// What this host can open a store with.
pub enum Unlocked {
    /// The master key: read and write everything. `failed` lists providers asked before the
    /// one that answered that failed (for a warning).
    Full {
        desc: Descriptor,
        keys: StoreKeys,
        from: String,
        failed: Attempts,
    },
    /// Write new files, read none of the old ones: the keys hold no private key.
    BackupOnly {
        desc: Descriptor,
        keys: StoreKeys,
        why: BackupOnlyWhy,
    },
}

/// The keys this keystore's backup credential for the store gives, checked against the
/// descriptor (its public key, and its writer seal for format 2).
pub fn credential_keys(chain: &Chain, desc: &Descriptor) -> Result<Option<StoreKeys>, KeyError> {
    let held = chain
        .listing()
        .is_some_and(|l| l.credentials.iter().any(|c| c.store_id == desc.store_id));
    if !held {
        return Ok(None);
    }
    let Some(c) = chain.keystore()?.credential(&desc.store_id)? else {
        return Ok(None);
    };
    if c.public_key != desc.public_key_der()? {
        return Err(KeyError::CredentialMismatch(desc.store_id.clone()));
    }
    Ok(Some(store::credential_keys(desc, c.name_key, c.write_key)?))
}

/// Refuse a descriptor that says an earlier format than this host's keystore remembers for
/// the store (in its key entries and its backup credential): it was put there so that fewer
/// checks would be made. Nothing is acted on.
pub fn check_format(chain: &Chain, desc: &Descriptor) -> Result<(), KeyError> {
    let Some(l) = chain.listing() else {
        return Ok(());
    };
    let mine = |sid: &str| sid == desc.store_id;
    let keys = l
        .keys
        .iter()
        .filter(|k| mine(&k.store_id))
        .filter_map(|k| k.format);
    let creds = l.credentials.iter().filter(|c| mine(&c.store_id));
    match keys.chain(creds.filter_map(|c| c.format)).max() {
        Some(was) if was > desc.version => Err(store::StoreError::Downgraded {
            says: desc.version,
            was,
        }
        .into()),
        _ => Ok(()),
    }
}

/// Remember the format of a descriptor that verified under the store's keys, so that an
/// earlier one is refused from now on (an older copy of coffer.store put back, say).
pub fn remember_format(chain: &Chain, desc: &Descriptor) {
    if !desc.authenticated() {
        return;
    }
    let dir = chain.keystore_dir();
    if let Err(e) = super::Keystore::remember_format(dir, &desc.store_id, desc.version) {
        tracing::warn!(
            "cannot note format {} of store {}: {e}",
            desc.version,
            desc.store_id
        );
    }
}

/// Load the descriptor and open the store with its master key alone (export, rotation,
/// upgrade, a backup credential for another host).
pub fn unlock_full(chain: &Chain, root: &Path) -> Result<(Descriptor, StoreKeys), KeyError> {
    let desc = Descriptor::load(root)?;
    check_format(chain, &desc)?;
    let master = chain.master(&Target::current(&desc))?;
    let keys = store::unlock_keys(&desc, &master)?;
    remember_format(chain, &desc);
    Ok((desc, keys))
}

/// Open the store for a mount or fsck, by the policy above.
pub fn unlock(chain: &Chain, root: &Path, backup_only: bool) -> Result<Unlocked, KeyError> {
    let desc = Descriptor::load(root)?;
    check_format(chain, &desc)?;
    let unlocked = unlock_checked(chain, desc, backup_only)?;
    match &unlocked {
        Unlocked::Full { desc, .. } | Unlocked::BackupOnly { desc, .. } => {
            remember_format(chain, desc)
        }
    }
    Ok(unlocked)
}

fn unlock_checked(
    chain: &Chain,
    desc: Descriptor,
    backup_only: bool,
) -> Result<Unlocked, KeyError> {
    if backup_only {
        if let Some(keys) = credential_keys(chain, &desc)? {
            return Ok(backup(desc, keys, BackupOnlyWhy::Asked));
        }
    }
    let attempts = match chain.resolve(&Target::current(&desc)) {
        Ok(r) => {
            let mut keys = store::unlock_keys(&desc, &r.key)?;
            if backup_only {
                keys.private = None;
                return Ok(backup(desc, keys, BackupOnlyWhy::Asked));
            }
            return Ok(Unlocked::Full {
                desc,
                keys,
                from: r.from,
                failed: r.failed,
            });
        }
        Err(KeyError::NotFound { attempts, .. }) => attempts,
        Err(e) => return Err(e),
    };
    let fallback = chain.settings().fallback;
    let credential = credential_keys(chain, &desc)?;
    match credential {
        Some(keys) if !attempts.any_failed() => {
            Ok(backup(desc, keys, BackupOnlyWhy::OnlyCredential))
        }
        Some(keys) if fallback == Fallback::BackupOnly => {
            Ok(backup(desc, keys, BackupOnlyWhy::Fallback(attempts)))
        }
        Some(_) => Err(KeyError::FallbackAvailable {
            store_id: desc.store_id.clone(),
            attempts,
        }),
        None if fallback == Fallback::BackupOnly => Err(KeyError::NoCredential {
            store_id: desc.store_id.clone(),
            attempts,
        }),
        None => {
            let t = Target::current(&desc);
            Err(KeyError::NotFound {
                key_id: t.key_id.to_string(),
                store_id: t.store_id.to_string(),
                attempts,
            })
        }
    }
}

fn backup(desc: Descriptor, keys: StoreKeys, why: BackupOnlyWhy) -> Unlocked {
    Unlocked::BackupOnly { desc, keys, why }
}
