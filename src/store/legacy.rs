//! What an earlier coffer wrote, for the tests of old stores: a store's descriptor rewritten
//! as the format-1 or format-2 descriptor that coffer would have made for the same keys (its
//! key seals without the format in them; format 1 without a write key or seals). The tree is
//! left as it is: an earlier reader ignores inode records, and format 1 takes tagged batch
//! records as an interrupted upgrade leaves them. Needs the master key, so it can do nothing
//! a key holder could not; not a stable API, and no command calls it.

use std::path::Path;

use super::{keys, Descriptor, StoreError, StoreKeys};
use crate::crypto::MasterKey;

/// Rewrite the descriptor of the store at `root` as format `version` (1 or 2).
pub fn rewrite_as(root: &Path, master: &MasterKey, version: u32) -> Result<(), StoreError> {
    let desc = Descriptor::load(root)?;
    let k = keys::unlock_keys(&desc, master)?;
    let writer = match version {
        1 => None,
        _ => k.writer,
    };
    let keys = StoreKeys {
        private: k.private,
        names: k.names,
        writer,
    };
    let cur = desc.current_master();
    let record = keys::seal_master_record(
        version,
        &desc.store_id_bytes()?,
        cur.version,
        &desc.public_key_der()?,
        &keys,
        master,
        cur.uid.clone(),
    )?;
    let mut old = desc.clone();
    old.version = version;
    old.master_keys = vec![record];
    old.seal = None;
    old.writer_seal = None;
    if let Some(w) = &keys.writer {
        old.seal(master, w);
    }
    old.save(root)
}
