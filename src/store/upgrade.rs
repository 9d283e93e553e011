//! `coffer upgrade`: a format-1 store becomes format 2 in place, without re-encrypting data.
//!
//! A new write key is made; every batch record whose RSA wrap opens under the store's private
//! key is tagged under it (in batches/ and in the catalog); then the descriptor is written
//! last, at format 2, with the write key sealed under the master key and both seals set. Every
//! step is atomic and a format-1 reader takes tagged and bare records alike, so an
//! interrupted upgrade leaves a format-1 store that reads as before, and running it again
//! starts over with a fresh write key.
//!
//! What it cannot do: tell a batch planted in a format-1 store by a host without keys from a
//! genuine one (format 1 has nothing to tell them apart by). Upgrade the store you wrote, not
//! a copy that passed through hands you do not trust.

use std::collections::BTreeSet;
use std::path::Path;

use super::{batch, keys, Descriptor, KeyRecordsLock, StoreError, StoreKeys, StoreLock};
use crate::catalog::{BatchRecord, Catalog};
use crate::crypto::{MasterKey, WriteKey};
use crate::progress::Progress;

#[derive(Debug, Default)]
pub struct UpgradeReport {
    /// The store was already format 2; nothing was written.
    pub already: bool,
    /// Batch records tagged under the new write key.
    pub batches: usize,
    /// Batches whose wrap does not open under the private key: left untagged, so their
    /// files read as EIO and fsck reports them.
    pub refused: Vec<String>,
}

/// What to do with a format-1 recovery record, which nothing authenticates: a host that can
/// write the store may have put its own there, to be sent the master key at every rotation.
pub enum RecoveryPlan<'a> {
    /// There must be no recovery record (else the upgrade refuses, naming its fingerprint).
    Refuse,
    /// Remove it.
    Drop,
    /// Seal the master key afresh to this certificate, whose fingerprint the administrator
    /// gave; a record for another certificate makes the upgrade refuse.
    Reseal(String, super::SealRecovery<'a>),
}

/// Upgrade the store at `root` with its current master key. The store must not be mounted.
/// Nothing is written unless the recovery record is settled first.
pub fn upgrade(
    root: &Path,
    master: &MasterKey,
    recovery: RecoveryPlan<'_>,
    progress: &Progress,
) -> Result<UpgradeReport, StoreError> {
    let _lock = StoreLock::acquire(root)?;
    let _records = KeyRecordsLock::acquire(root)?;
    let desc = Descriptor::load(root)?;
    let keys = keys::unlock_keys(&desc, master)?;
    let key_id = crate::crypto::master_key_id(master);
    if key_id != desc.current_master().key_id {
        return Err(StoreError::WrongKey(key_id));
    }
    if desc.authenticated() {
        return Ok(UpgradeReport {
            already: true,
            ..UpgradeReport::default()
        });
    }
    match (&desc.recovery, &recovery) {
        (Some(r), RecoveryPlan::Refuse) => {
            return Err(StoreError::RecoveryUnconfirmed(r.fingerprint.clone()))
        }
        (Some(r), RecoveryPlan::Reseal(fp, _)) if *fp != r.fingerprint => {
            return Err(StoreError::RecoveryUnconfirmed(r.fingerprint.clone()))
        }
        _ => {}
    }
    let store_id = desc.store_id_bytes()?;
    let catalog_path = root.join(super::CATALOG);
    let catalog = Catalog::open(&catalog_path, &store_id)
        .map_err(|e| StoreError::Catalog(catalog_path.clone(), e))?;
    let writer = WriteKey::random();
    let mut report = UpgradeReport::default();
    let ids = batch_ids(root, &catalog)?;
    progress.set_total(ids.len() as u64);
    for id in ids {
        progress.step(0);
        let record = batch::recorded(&catalog, root, &id)?;
        let wrapped = batch::open_record(None, &store_id, &id, &record)?;
        let private = keys.private.as_ref().ok_or(StoreError::NoPrivateKey)?;
        if private.unwrap_batch_key(wrapped).is_err() {
            report.refused.push(hex::encode(id));
            continue;
        }
        let tagged = batch::seal_record(Some(&writer), &store_id, &id, wrapped);
        batch::write_file(root, &id, &tagged)?;
        catalog
            .put_batch(
                &id,
                &BatchRecord {
                    wrapped: tagged,
                    created: crate::unix_now(),
                },
            )
            .map_err(|e| StoreError::Catalog(catalog_path.clone(), e))?;
        report.batches += 1;
    }
    drop(catalog);
    let next = upgraded_descriptor(&desc, keys, writer, master, recovery)?;
    next.save(root)?;
    Ok(report)
}

/// Every batch id the catalog or batches/ knows.
fn batch_ids(root: &Path, catalog: &Catalog) -> Result<BTreeSet<[u8; 16]>, StoreError> {
    let mut ids: BTreeSet<[u8; 16]> = catalog
        .batches()
        .map_err(|e| StoreError::Catalog(root.join(super::CATALOG), e))?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    ids.extend(batch::ids_on_disk(root)?);
    Ok(ids)
}

/// The format-2 descriptor: the current master-key record sealed again with the write key
/// added, then both seals over every field.
fn upgraded_descriptor(
    desc: &Descriptor,
    keys: StoreKeys,
    writer: WriteKey,
    master: &MasterKey,
    recovery: RecoveryPlan<'_>,
) -> Result<Descriptor, StoreError> {
    let current = desc.current_master();
    let keys = StoreKeys {
        writer: Some(writer),
        ..keys
    };
    let record = keys::seal_master_record(
        &desc.store_id_bytes()?,
        current.version,
        &desc.public_key_der()?,
        &keys,
        master,
        current.uid.clone(),
    )?;
    let mut next = desc.clone();
    next.version = 2;
    next.master_keys = vec![record];
    next.recovery = match recovery {
        RecoveryPlan::Refuse | RecoveryPlan::Drop => None,
        RecoveryPlan::Reseal(_, seal) => seal(&next, master).map_err(StoreError::Caller)?,
    };
    if let Some(w) = &keys.writer {
        next.seal(master, w);
    }
    // Prove it opens before it replaces the old one.
    keys::unlock_keys(&next, master)?;
    Ok(next)
}
