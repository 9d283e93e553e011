//! On-disk bytes only: the ciphertext file header, the block codec and its offset arithmetic,
//! and the encoding of encrypted names. No I/O policy lives here; see docs/format.md.

mod block;
mod header;
mod names;

pub use block::{
    blocks_for, cipher_len_for, open_block, plain_len_from_cipher, seal_block, seal_block_in_place,
    BlockGeometry, BLOCK_OVERHEAD,
};
pub use header::{Header, HEADER_LEN, MAGIC};
pub use names::{
    decode_symlink, encode_symlink, symlink_plain_len, NameCodec, NameError, StoredName, DIRIV_LEN,
    DIRIV_NAME, LONG_PREFIX, LONG_SIDECAR_PREFIX,
};

/// Version of the ciphertext file format and the store layout.
pub const FORMAT_VERSION: u8 = 1;

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
}
