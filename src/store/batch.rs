//! Batch records: how a batch key is recorded (RSA-wrapped, and in format 2 tagged under the
//! write key) and how a recorded one is checked before its RSA wrap is ever opened.
//!
//! The tag is what stops a host that holds only the store's bytes and its public key from
//! planting content: it can wrap a batch key of its own to the public key, but it cannot tag
//! the record, so no file under that batch reads.

use std::path::Path;

use super::StoreError;
use crate::crypto::{self, WriteKey};
use crate::format::{encode_adopted_batch, encode_batch, BatchBlob, BATCH_MAX_LEN};

const BATCH_CONTEXT: &str = "coffer 2026-12 batch seal";
/// An adopted batch's tag: no written batch's tag can be passed off as one, or back.
const ADOPTED_CONTEXT: &str = "coffer 2026-12 batch adopted by upgrade";

fn tag(
    writer: &WriteKey,
    store_id: &[u8; 16],
    id: &[u8; 16],
    wrapped: &[u8],
    adopted: bool,
) -> [u8; 32] {
    let context = if adopted {
        ADOPTED_CONTEXT
    } else {
        BATCH_CONTEXT
    };
    crypto::mac(context, writer.secret(), &[store_id, id, wrapped])
}

/// The record of a new batch: tagged under the write key in a format-2 store, the bare wrap
/// in a format-1 store (which has no write key).
pub fn seal_record(
    writer: Option<&WriteKey>,
    store_id: &[u8; 16],
    id: &[u8; 16],
    wrapped: &[u8],
) -> Vec<u8> {
    match writer {
        Some(w) => encode_batch(wrapped, &tag(w, store_id, id, wrapped, false)),
        None => wrapped.to_vec(),
    }
}

/// The record of a format-1 batch that `coffer upgrade` vouches for (its wrap opened under
/// the private key, which is all format 1 can show): tagged, and marked as adopted.
pub fn adopt_record(
    writer: &WriteKey,
    store_id: &[u8; 16],
    id: &[u8; 16],
    wrapped: &[u8],
) -> Vec<u8> {
    encode_adopted_batch(wrapped, &tag(writer, store_id, id, wrapped, true))
}

/// Whether a recorded batch is one an upgrade adopted (the frame says so; only a record
/// that also authenticates is believed at all).
pub fn is_adopted(record: &[u8]) -> bool {
    matches!(
        BatchBlob::decode(record),
        Ok(BatchBlob::Tagged { adopted: true, .. })
    )
}

/// The RSA wrap inside a recorded batch, once the record is believed: in a format-2 store
/// (`writer` given) only a record tagged under the write key; in a format-1 store either form
/// (a format-1 store whose upgrade was interrupted holds both).
pub fn open_record<'a>(
    writer: Option<&WriteKey>,
    store_id: &[u8; 16],
    id: &[u8; 16],
    record: &'a [u8],
) -> Result<&'a [u8], StoreError> {
    let forged = || StoreError::BatchForged(hex::encode(id));
    let blob = BatchBlob::decode(record).map_err(|_| forged())?;
    match (writer, blob) {
        (None, b) => Ok(b.wrapped()),
        (
            Some(w),
            BatchBlob::Tagged {
                wrapped,
                tag: t,
                adopted,
            },
        ) => {
            if crypto::ct_eq(t, &tag(w, store_id, id, wrapped, adopted)) {
                Ok(wrapped)
            } else {
                Err(forged())
            }
        }
        (Some(_), BatchBlob::Bare(_)) => Err(forged()),
    }
}

/// The record of batch `id`: the catalog's copy, else the one in `batches/` (which keeps a
/// copy of every record). Not yet believed: see [`open_record`].
pub fn recorded(
    catalog: &crate::catalog::Catalog,
    root: &Path,
    id: &[u8; 16],
) -> Result<Vec<u8>, StoreError> {
    match catalog.batch(id) {
        Ok(Some(rec)) => Ok(rec.wrapped),
        _ => read_file(root, id),
    }
}

/// `batches/<hex id>` of the store at `root`, read without following symlinks, capped.
pub fn read_file(root: &Path, id: &[u8; 16]) -> Result<Vec<u8>, StoreError> {
    let rel = Path::new(super::BATCHES).join(hex::encode(id));
    crate::within::read(root, &rel, BATCH_MAX_LEN).map_err(|e| StoreError::Io(root.join(rel), e))
}

/// Write `batches/<hex id>` durably.
pub fn write_file(root: &Path, id: &[u8; 16], record: &[u8]) -> Result<(), StoreError> {
    let rel = Path::new(super::BATCHES).join(hex::encode(id));
    crate::within::write_atomic(root, &rel, record, 0o600)
        .map_err(|e| StoreError::Io(root.join(rel), e))
}

/// The ids of every record in `batches/` (names that are not a 32-digit hex id are not
/// records), listed through a descriptor opened without following a symlink.
pub fn ids_on_disk(root: &Path) -> Result<Vec<[u8; 16]>, StoreError> {
    use std::os::unix::ffi::OsStrExt;
    let dir = root.join(super::BATCHES);
    let fd = crate::within::open_dir(root, Path::new(super::BATCHES))
        .map_err(|e| StoreError::Io(dir.clone(), e))?;
    let listing = std::fs::read_dir(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    ))
    .map_err(|e| StoreError::Io(dir, e))?;
    Ok(listing
        .flatten()
        .filter_map(|e| {
            hex::decode(e.file_name().as_bytes())
                .ok()
                .and_then(|v| <[u8; 16]>::try_from(v).ok())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_record_tagged_under_the_write_key_opens_in_format_2() {
        let w = WriteKey::random();
        let (sid, id) = ([1u8; 16], [2u8; 16]);
        let wrapped = vec![5u8; 384];
        let rec = seal_record(Some(&w), &sid, &id, &wrapped);
        assert_eq!(
            open_record(Some(&w), &sid, &id, &rec).expect("open"),
            &wrapped[..]
        );
        // Another key, another batch id, another store, a bare wrap: all refused.
        assert!(open_record(Some(&WriteKey::random()), &sid, &id, &rec).is_err());
        assert!(open_record(Some(&w), &sid, &[3; 16], &rec).is_err());
        assert!(open_record(Some(&w), &[9; 16], &id, &rec).is_err());
        assert!(matches!(
            open_record(Some(&w), &sid, &id, &wrapped),
            Err(StoreError::BatchForged(_))
        ));
        // An adopted record opens as adopted, and a tag moved between the frames does not.
        let adopted = adopt_record(&w, &sid, &id, &wrapped);
        assert!(is_adopted(&adopted) && !is_adopted(&rec));
        assert!(open_record(Some(&w), &sid, &id, &adopted).is_ok());
        let mut swapped = adopted.clone();
        swapped[..4].copy_from_slice(b"CFB2");
        assert!(open_record(Some(&w), &sid, &id, &swapped).is_err());
        // Format 1 takes either form.
        assert_eq!(
            open_record(None, &sid, &id, &wrapped).expect("bare"),
            &wrapped[..]
        );
        assert_eq!(
            open_record(None, &sid, &id, &rec).expect("tagged"),
            &wrapped[..]
        );
    }
}
