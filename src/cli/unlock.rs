//! Resolving a store's keys from the command line's key options: the provider chain.
//!
//! A local store: this keystore, then the key server when one is given. A kms store: this
//! keystore when it holds the key (an imported export; checked without the passphrase), else
//! the KMS by the UID the descriptor records.

use std::path::{Path, PathBuf};

use super::{Failure, KeyOpts};
use crate::crypto::MasterKey;
use crate::keys::kms::{self, KmsConfig, KmsProvider};
use crate::keys::{self, read_passphrase, Keystore};
use crate::store::{self, Descriptor, StoreKeys};

/// The provider chain of a local store: this keystore first, then the key server when one
/// is given.
pub fn resolve_master(
    ks: &Keystore,
    opts: &KeyOpts,
    key_id: &str,
    store_id: &str,
) -> Result<MasterKey, Failure> {
    let Some(url) = &opts.key_server else {
        return Ok(keys::resolve(&[ks], key_id, store_id)?);
    };
    // Only ask the server (and make this keystore's certificate) when the key is not here.
    if let Some(k) = ks.get(key_id)? {
        return Ok(k);
    }
    let Some(cert) = opts.key_server_cert.as_deref() else {
        return Err(Failure::from(format!(
            "--key-server {url} needs the server pinned: give --key-server-cert with its \
             certificate or its SHA256: fingerprint (or set COFFER_KEY_SERVER_CERT)"
        )));
    };
    let pin = crate::server::grant_fingerprint(cert)?;
    let server = crate::server::provider::HierarchyProvider::new(url, Some(pin), ks.identity()?)?;
    Ok(keys::resolve(&[ks, &server], key_id, store_id)?)
}

pub fn keystore_dir(opts: &KeyOpts) -> PathBuf {
    opts.keystore.clone().unwrap_or_else(Keystore::default_dir)
}

pub fn kms_config(opts: &KeyOpts) -> Result<KmsConfig, Failure> {
    Ok(KmsConfig::load(&opts.kms_config)?)
}

/// Whether this host's keystore holds `key_id`, read without the passphrase.
pub fn keystore_holds(dir: &Path, key_id: &str) -> bool {
    Keystore::exists(dir)
        && Keystore::public_listing(dir)
            .map(|l| l.keys.iter().any(|k| k.key_id == key_id))
            .unwrap_or(false)
}

/// The current master key of a kms store.
pub fn kms_master(desc: &Descriptor, opts: &KeyOpts) -> Result<MasterKey, Failure> {
    if let Some(k) = keystore_master(desc, opts)? {
        return Ok(k);
    }
    let config = kms_config(opts)?;
    let audit = kms::audit_log(&keystore_dir(opts))?;
    kms_fetch(desc, &KmsProvider::new(&config, desc, &audit))
}

/// The same, through a provider the caller keeps (and whose KMS connection it goes on
/// using): a rotation or sync connects once.
pub fn kms_master_via(
    desc: &Descriptor,
    opts: &KeyOpts,
    provider: &KmsProvider<'_>,
) -> Result<MasterKey, Failure> {
    match keystore_master(desc, opts)? {
        Some(k) => Ok(k),
        None => kms_fetch(desc, provider),
    }
}

/// Local first: the key from this keystore when it lists it (an imported export).
fn keystore_master(desc: &Descriptor, opts: &KeyOpts) -> Result<Option<MasterKey>, Failure> {
    let current = desc.current_master();
    if !keystore_holds(&keystore_dir(opts), &current.key_id) {
        return Ok(None);
    }
    let ks = open_keystore(opts, false)?;
    Ok(Some(keys::resolve(
        &[&ks],
        &current.key_id,
        &desc.store_id,
    )?))
}

fn kms_fetch(desc: &Descriptor, provider: &KmsProvider<'_>) -> Result<MasterKey, Failure> {
    let current = desc.current_master();
    if current.uid.is_none() {
        return Err(Failure::from(format!(
            "store {} uses key provider 'kms' but its descriptor records no KMS UID for key {}",
            desc.store_id, current.key_id
        )));
    }
    Ok(keys::resolve(&[provider], &current.key_id, &desc.store_id)?)
}

/// Open this host's keystore; with `create`, make it on first use (asking twice at a prompt).
pub fn open_keystore(opts: &KeyOpts, create: bool) -> Result<Keystore, Failure> {
    let dir = keystore_dir(opts);
    let exists = Keystore::exists(&dir);
    if !exists && !create {
        return Err(Failure::from(format!(
            "no keystore at {}: this host holds no coffer keys (give --keystore, or import the store's keys)",
            dir.display()
        )));
    }
    let pass = read_passphrase(
        opts.passphrase_file.as_ref(),
        "Keystore passphrase",
        !exists,
    )?;
    Ok(Keystore::open_or_create(&dir, &pass)?)
}

fn unsupported(desc: &Descriptor) -> Failure {
    Failure::from(format!(
        "store {} uses key provider '{}', which this build of coffer cannot use",
        desc.store_id, desc.provider
    ))
}

/// The current master key of a local store, from this keystore alone.
fn local_master(desc: &Descriptor, opts: &KeyOpts) -> Result<MasterKey, Failure> {
    let current = desc.current_master();
    let dir = keystore_dir(opts);
    if !Keystore::exists(&dir) {
        return Err(Failure::from(keys::KeyError::NotFound {
            key_id: current.key_id.clone(),
            store_id: desc.store_id.clone(),
            tried: format!(
                "keystore {} (there is no keystore there yet)",
                dir.display()
            ),
        }));
    }
    let ks = open_keystore(opts, false)?;
    Ok(keys::resolve(&[&ks], &current.key_id, &desc.store_id)?)
}

/// The current master key of any store, through its provider chain.
pub fn store_master(desc: &Descriptor, opts: &KeyOpts) -> Result<MasterKey, Failure> {
    match desc.provider.as_str() {
        "local" => local_master(desc, opts),
        "kms" => kms_master(desc, opts),
        _ => Err(unsupported(desc)),
    }
}

/// Load the descriptor and unlock the store's keys with its master key.
pub fn unlock(root: &Path, opts: &KeyOpts) -> Result<(Descriptor, StoreKeys), Failure> {
    let desc = Descriptor::load(root)?;
    let master = store_master(&desc, opts)?;
    let keys = store::unlock_keys(&desc, &master)?;
    Ok((desc, keys))
}

/// What this host can open a store with.
pub enum Unlocked {
    /// The master key: read and write everything.
    Full(Descriptor, StoreKeys),
    /// A backup credential (or a full key with --backup-only): write new files, read none of
    /// the old ones. The keys hold no private key.
    BackupOnly(Descriptor, StoreKeys),
}

/// A backup credential for this store in this keystore, when the master key is not here too
/// (or `backup_only` asks for it anyway).
fn credential(
    ks: &Keystore,
    desc: &Descriptor,
    backup_only: bool,
) -> Result<Option<StoreKeys>, Failure> {
    let Some(c) = ks.credential(&desc.store_id)? else {
        return Ok(None);
    };
    if c.public_key != desc.public_key_der()? {
        return Err(Failure::from(format!(
            "the backup credential for store {} does not match the store's public key; \
             ask for a new one (coffer keys backup-credential)",
            desc.store_id
        )));
    }
    let has_master = ks.get(&desc.current_master().key_id)?.is_some();
    if has_master && !backup_only {
        return Ok(None);
    }
    Ok(Some(store::credential_keys(desc, c.name_key, c.write_key)?))
}

/// Unlock for a mount or fsck. Without the master key, a backup credential for the store
/// gives backup-only access; `backup_only` asks for it even when the master key is here.
pub fn unlock_any(root: &Path, opts: &KeyOpts, backup_only: bool) -> Result<Unlocked, Failure> {
    let desc = Descriptor::load(root)?;
    let dir = keystore_dir(opts);
    let current = desc.current_master().key_id.clone();
    let master = match desc.provider.as_str() {
        "kms" => {
            // A backup host of a kms store holds a credential, not the KMS's trust.
            let has_credential = Keystore::exists(&dir)
                && Keystore::public_listing(&dir)
                    .map(|l| l.credentials.iter().any(|c| c.store_id == desc.store_id))
                    .unwrap_or(false);
            if has_credential {
                let ks = open_keystore(opts, false)?;
                if let Some(keys) = credential(&ks, &desc, backup_only)? {
                    return Ok(Unlocked::BackupOnly(desc, keys));
                }
            }
            kms_master(&desc, opts)?
        }
        "local" => {
            if !Keystore::exists(&dir) && opts.key_server.is_none() {
                return Err(Failure::from(keys::KeyError::NotFound {
                    key_id: current,
                    store_id: desc.store_id.clone(),
                    tried: format!(
                        "keystore {} (there is no keystore there yet)",
                        dir.display()
                    ),
                }));
            }
            let ks = open_keystore(opts, opts.key_server.is_some())?;
            if let Some(keys) = credential(&ks, &desc, backup_only)? {
                return Ok(Unlocked::BackupOnly(desc, keys));
            }
            resolve_master(&ks, opts, &current, &desc.store_id)?
        }
        _ => return Err(unsupported(&desc)),
    };
    let mut keys = store::unlock_keys(&desc, &master)?;
    if backup_only {
        keys.private = None;
        return Ok(Unlocked::BackupOnly(desc, keys));
    }
    Ok(Unlocked::Full(desc, keys))
}
