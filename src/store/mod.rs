//! A store on disk: its layout, its descriptor, and the unlocked key context that the mount
//! and fsck work with.
//!
//! Owns: `init` (create a store), `unlock` (master key -> private key and name key), batch
//! keys (made per writer session, RSA-wrapped, recorded durably before any file uses them),
//! and the batch-key cache for reading. Does not own: where the master key comes from (keys).

mod batch;
mod descriptor;
mod init;
mod keys;
#[doc(hidden)]
pub mod legacy;
pub mod links;
mod lock;
mod open;
pub mod summary;
pub mod upgrade;
mod upgrade_tree;

use std::path::PathBuf;

pub use batch::{
    ids_on_disk as batch_ids_on_disk, read_file as read_batch_file, write_file as write_batch_file,
};
pub use descriptor::{Descriptor, KeyHome, MasterKeyRecord, RecoveryRecord, DESCRIPTOR};
pub use init::{
    init, write_diriv, write_diriv_as, write_root_record, CallerError, FirstMaster, InitOptions,
    SaveMaster, SealRecovery,
};
pub use keys::{check_for_rotation, credential_keys, reseal, rewrap, unlock_keys, StoreKeys};
pub use lock::{KeyRecordsLock, StoreLock};
pub use open::OpenStore;

use crate::catalog::CatalogError;

/// The one line that says what a store before format 3 lacks, and the command that mends it.
pub fn upgrade_advice(root: &std::path::Path, version: u32) -> String {
    let planted = match version {
        1 => "plant files that read as genuine, and ",
        _ => "",
    };
    format!(
        "{} is a format-{version} store: a host that can write it could {planted}choose the \
         modes, owners, types, devices, links and places of its files; run `coffer upgrade {}` \
         (needs the master key)",
        root.display(),
        root.display()
    )
}
use crate::crypto::CryptoError;

pub const CATALOG: &str = "catalog";
pub const DATA: &str = "data";
pub const BATCHES: &str = "batches";
pub const LOCK: &str = "lock";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} is not a coffer store (no coffer.store in it)")]
    NotAStore(PathBuf),
    #[error("{0} is not empty: coffer init needs an absent or empty directory")]
    NotEmpty(PathBuf),
    #[error("store is damaged: {0}")]
    Damaged(String),
    #[error(
        "{path} cannot be written ({e}: read-only media, a snapshot, or no write access): mount \
         it with --read-only, or restore or fsck from it as it is; writing to it needs it writable",
        path = .0.display(),
        e = .1
    )]
    NotWritable(PathBuf, std::io::Error),
    /// What a caller's step of init or upgrade (keeping the key, sealing a recovery record)
    /// failed with.
    #[error("{0}")]
    Caller(Box<dyn std::error::Error + Send + Sync>),
    #[error("master-key version {version} is not newer than the store's version {current}")]
    NotNewer { version: u32, current: u32 },
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("catalog {0} is missing or damaged ({1}); run `coffer fsck --repair` on the store to rebuild it")]
    Catalog(PathBuf, CatalogError),
    #[error("the master key does not open this store (key id {0})")]
    WrongKey(String),
    #[error("cannot read: this mount holds no private key")]
    NoPrivateKey,
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("store {0} is in use{1}; unmount it first")]
    Busy(PathBuf, String),
    #[error(
        "batch {0} does not authenticate: it was not written by a holder of this store's keys"
    )]
    BatchForged(String),
    #[error(
        "coffer.store was changed or damaged: its {0} does not verify under its own master key; \
         nothing was acted on; restore coffer.store from a copy of the store"
    )]
    SealBroken(String),
    #[error(
        "this store is format 2, and the key this host holds for it carries no write key \
         (a backup credential made before the store's upgrade); ask for a new one with \
         `coffer keys backup-credential`"
    )]
    NoWriteKey,
    #[error(
        "coffer.store holds a recovery record for certificate {0}, and format 1 cannot show \
         that it is yours: give --recovery-cert with that certificate to keep it (it is sealed \
         afresh), or --drop-recovery; nothing was changed"
    )]
    RecoveryUnconfirmed(String),
    /// The descriptor claims an earlier format than this store had: its keys were sealed for
    /// `was`, or this host's keystore or backup credential remembers `was`.
    #[error(
        "coffer.store says format {says}, but this store was format {was}: the descriptor was \
         replaced; nothing was acted on"
    )]
    Downgraded { says: u32, was: u32 },
    /// A format-3 store whose root directory carries no record that opens.
    #[error(
        "{0}: the store's root directory has no sealed record that opens ({1}); was the store \
         copied without its extended attributes (rsync needs -X)? nothing was acted on"
    )]
    RootRecord(PathBuf, String),
    #[error(
        "store {0} is format 1, whose descriptor fields (its recovery record above all) nothing \
         authenticates; run `coffer upgrade` on it first; nothing was changed"
    )]
    NeedsUpgrade(String),
}
