//! Resolving a store's keys from the command line's key options.

use std::path::{Path, PathBuf};

use super::{Failure, KeyOpts};
use crate::crypto::{NameKey, PrivateKey};
use crate::keys::{self, read_passphrase, Keystore};
use crate::store::{self, Descriptor};

/// The provider chain: this keystore first, then the key server when one is given.
pub fn resolve_master(
    ks: &Keystore,
    opts: &KeyOpts,
    key_id: &str,
    store_id: &str,
) -> Result<crate::crypto::MasterKey, Failure> {
    let Some(url) = &opts.key_server else {
        return Ok(keys::resolve(&[ks], key_id, store_id)?);
    };
    // Only ask the server (and make this keystore's certificate) when the key is not here.
    if let Some(k) = ks.get(key_id)? {
        return Ok(k);
    }
    let pin = opts
        .key_server_cert
        .as_deref()
        .map(keys::certificate::read)
        .transpose()?
        .map(|(k, _)| k.fingerprint())
        .transpose()?;
    let server = crate::server::provider::HierarchyProvider::new(url, pin, ks.identity()?)?;
    Ok(keys::resolve(&[ks, &server], key_id, store_id)?)
}

pub fn keystore_dir(opts: &KeyOpts) -> PathBuf {
    opts.keystore.clone().unwrap_or_else(Keystore::default_dir)
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

/// Load the descriptor and unlock the store's private key and name key.
pub fn unlock(root: &Path, opts: &KeyOpts) -> Result<(Descriptor, PrivateKey, NameKey), Failure> {
    let desc = Descriptor::load(root)?;
    if desc.provider != "local" {
        return Err(Failure::from(format!(
            "store {} uses key provider '{}', which this build of coffer cannot use",
            desc.store_id, desc.provider
        )));
    }
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
    let master = keys::resolve(&[&ks], &current.key_id, &desc.store_id)?;
    let (private, names) = store::unlock_keys(&desc, &master)?;
    Ok((desc, private, names))
}

/// What this host can open a store with.
pub enum Unlocked {
    /// The master key: read and write everything.
    Full(Descriptor, PrivateKey, NameKey),
    /// A backup credential (or a full key with --backup-only): write new files, read none of
    /// the old ones.
    BackupOnly(Descriptor, NameKey),
}

/// Unlock for a mount or fsck. Without the master key, a backup credential for the store
/// gives backup-only access; `backup_only` asks for it even when the master key is here.
pub fn unlock_any(root: &Path, opts: &KeyOpts, backup_only: bool) -> Result<Unlocked, Failure> {
    let desc = Descriptor::load(root)?;
    let dir = keystore_dir(opts);
    let current = desc.current_master().key_id.clone();
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
    if let Some(c) = ks.credential(&desc.store_id)? {
        if c.public_key != desc.public_key_der()? {
            return Err(Failure::from(format!(
                "the backup credential for store {} does not match the store's public key; \
                 ask for a new one (coffer keys backup-credential)",
                desc.store_id
            )));
        }
        let has_master = ks.get(&current)?.is_some();
        if backup_only || !has_master {
            return Ok(Unlocked::BackupOnly(desc, c.name_key));
        }
    }
    if desc.provider != "local" {
        return Err(Failure::from(format!(
            "store {} uses key provider '{}', which this build of coffer cannot use",
            desc.store_id, desc.provider
        )));
    }
    let master = resolve_master(&ks, opts, &current, &desc.store_id)?;
    let (private, names) = store::unlock_keys(&desc, &master)?;
    if backup_only {
        return Ok(Unlocked::BackupOnly(desc, names));
    }
    Ok(Unlocked::Full(desc, private, names))
}
