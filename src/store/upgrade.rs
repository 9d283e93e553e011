//! `coffer upgrade`: a store of format 1 or 2 becomes format 3 in place, without
//! re-encrypting data.
//!
//! A format-1 store first gets what format 2 added: a new write key, and every batch record
//! whose RSA wrap opens under the store's private key tagged under it (marked as adopted, so
//! fsck can say which batches the upgrade vouched for). Then every inode gets a sealed
//! record of what it is now: type, mode, owner, device, identity, names and attributes
//! (upgrade_tree.rs). The descriptor is written last: version 3, its keys sealed for
//! format 3, both seals set. Below format 3 nothing reads the records, and a format-1 reader
//! takes tagged and bare batch records alike, so an interrupted upgrade leaves a store of its
//! old format that reads as before; running the command again starts over.
//!
//! What it cannot do: tell what a host without keys changed before the upgrade from what a
//! key holder wrote. A format-1 store cannot show who wrote a batch, and no store before
//! format 3 can show who set a mode or an owner or made a device node: the upgrade vouches
//! for all of it, and says so. Upgrade the store you wrote, not a copy that passed through
//! hands you do not trust.

use std::collections::BTreeSet;
use std::path::Path;

use super::{batch, keys, Descriptor, KeyRecordsLock, StoreError, StoreKeys, StoreLock};
use crate::catalog::{BatchRecord, Catalog};
use crate::crypto::{MasterKey, WriteKey};
use crate::format::inode::RecordCodec;
use crate::format::{RECORDS_VERSION, STORE_VERSION};
use crate::progress::Progress;

#[derive(Debug, Default, serde::Serialize)]
pub struct UpgradeReport {
    /// The store was already of the current format; nothing was written.
    pub already: bool,
    /// The format it was.
    pub from: u32,
    /// Batch records of a format-1 store tagged (adopted) under the new write key.
    pub batches: usize,
    /// Batches whose wrap does not open under the private key: left untagged, so their
    /// files read as EIO and fsck reports them.
    pub refused: Vec<String>,
    /// Inodes given a sealed record.
    pub entries: u64,
    /// Set-user-ID or set-group-ID files and directories the upgrade vouched for (ciphertext
    /// paths): what a host without keys would have made, so worth a look.
    pub privileged: Vec<String>,
    /// Device nodes it vouched for (ciphertext paths).
    pub devices: Vec<String>,
    /// Entries left without a record, and why (they read as EIO afterwards, as they could
    /// not be read before either).
    pub problems: Vec<String>,
}

/// What to do with the store's recovery record. In format 1 nothing authenticates it: a host
/// that can write the store may have put its own there, to be sent the master key at every
/// rotation. In format 2 it is sealed with the descriptor and is kept unless dropped.
pub enum RecoveryPlan<'a> {
    /// Format 1: there must be none (else the upgrade refuses, naming its fingerprint).
    /// Format 2: keep it.
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
    let mut report = UpgradeReport {
        from: desc.version,
        ..UpgradeReport::default()
    };
    if desc.version >= STORE_VERSION {
        report.already = true;
        return Ok(report);
    }
    match (&desc.recovery, &recovery, desc.authenticated()) {
        (Some(r), RecoveryPlan::Refuse, false) => {
            return Err(StoreError::RecoveryUnconfirmed(r.fingerprint.clone()))
        }
        (Some(r), RecoveryPlan::Reseal(fp, _), _) if *fp != r.fingerprint => {
            return Err(StoreError::RecoveryUnconfirmed(r.fingerprint.clone()))
        }
        _ => {}
    }
    let store_id = desc.store_id_bytes()?;
    let writer = match &keys.writer {
        Some(w) => w.duplicate(),
        None => {
            let w = WriteKey::random();
            adopt_batches(root, &keys, &store_id, &w, progress, &mut report)?;
            w
        }
    };
    let codec = RecordCodec::new(&writer, store_id);
    super::upgrade_tree::record_tree(root, &keys.names, &codec, progress, &mut report)?;
    let next = upgraded_descriptor(&desc, keys, writer, master, recovery)?;
    next.save(root)?;
    Ok(report)
}

/// Format 1: tag every batch record whose wrap opens under the private key (in batches/ and
/// in the catalog), marked as adopted.
fn adopt_batches(
    root: &Path,
    keys: &StoreKeys,
    store_id: &[u8; 16],
    writer: &WriteKey,
    progress: &Progress,
    report: &mut UpgradeReport,
) -> Result<(), StoreError> {
    let catalog_path = root.join(super::CATALOG);
    let catalog = Catalog::open(&catalog_path, store_id)
        .map_err(|e| StoreError::Catalog(catalog_path.clone(), e))?;
    let ids = batch_ids(root, &catalog)?;
    progress.set_total(ids.len() as u64);
    let private = keys.private.as_ref().ok_or(StoreError::NoPrivateKey)?;
    for id in ids {
        progress.step(0);
        let record = batch::recorded(&catalog, root, &id)?;
        let wrapped = batch::open_record(None, store_id, &id, &record)?;
        if private.unwrap_batch_key(wrapped).is_err() {
            report.refused.push(hex::encode(id));
            continue;
        }
        let tagged = batch::adopt_record(writer, store_id, &id, wrapped);
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
    Ok(())
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

/// The format-3 descriptor: the current master-key record sealed again for format 3 with the
/// write key in it, the recovery record as planned, then both seals over every field.
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
        RECORDS_VERSION,
        &desc.store_id_bytes()?,
        current.version,
        &desc.public_key_der()?,
        &keys,
        master,
        current.uid.clone(),
    )?;
    let mut next = desc.clone();
    next.version = RECORDS_VERSION;
    next.master_keys = vec![record];
    next.recovery = match recovery {
        // Format 2's record is authenticated: it stays (format 1's was refused above).
        RecoveryPlan::Refuse => desc.recovery.clone().filter(|_| desc.authenticated()),
        RecoveryPlan::Drop => None,
        RecoveryPlan::Reseal(_, seal) => seal(&next, master).map_err(StoreError::Caller)?,
    };
    if let Some(w) = &keys.writer {
        next.seal(master, w);
    }
    // Prove it opens before it replaces the old one.
    keys::unlock_keys(&next, master)?;
    Ok(next)
}
