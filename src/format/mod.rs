//! On-disk bytes only: the ciphertext file header, the block codec and its offset arithmetic,
//! and the encoding of encrypted names. No I/O policy lives here; see docs/format.md.

pub mod acl;
mod batch;
mod block;
mod header;
pub mod inode;
mod names;
pub mod xattr;

pub use batch::{encode_adopted_batch, encode_batch, BatchBlob, BATCH_MAX_LEN, BATCH_TAG_LEN};
pub use block::{
    blocks_for, cipher_len_for, is_hole, open_block, plain_len_from_cipher, seal_block,
    seal_block_in_place, BlockGeometry, BlockPos, BLOCK_OVERHEAD,
};
pub use header::{Header, FILE_ID_OFF, HEADER_LEN, MAGIC};
pub use names::{
    classify, decode_long_link, decode_symlink, encode_symlink, long_link_blob,
    long_link_plain_len, symlink_plain_len, temp_name, Entry, EntryError, NameCodec, NameError,
    StoredLink, StoredName, DIRIV_LEN, DIRIV_NAME, LINK_BLOB_MAX, SIDECAR_MAX,
};

/// Version of the ciphertext file header that new files get: 2 may have holes (block.rs).
pub const FORMAT_VERSION: u8 = 2;
/// Files written before holes: they still open, read and take writes, without holes.
pub const FORMAT_VERSION_DENSE: u8 = 1;
/// Version of the store format that new stores get: 2 authenticates batches and the
/// descriptor, 3 also every inode's type, mode, owner, device, link target, names and
/// attributes, and binds the key seals to the format (docs/format.md). Stores of versions 1
/// and 2 still open and read, and `coffer upgrade` brings them to 3.
pub const STORE_VERSION: u32 = 3;
/// The first store format whose inodes carry sealed records (format/inode.rs).
pub const RECORDS_VERSION: u32 = 3;

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("not a coffer file (bad magic)")]
    BadMagic,
    #[error("unsupported format version {0}")]
    Version(u8),
    #[error("malformed header")]
    Header,
    #[error("block {0} failed authentication")]
    BlockAuth(u64),
    #[error("block {0} is malformed")]
    BlockShape(u64),
    #[error("ciphertext length {0} is not a valid coffer file")]
    Length(u64),
    #[error("malformed batch record")]
    Batch,
}
