//! Encrypted file names and symlink targets.
//!
//! Names are encrypted deterministically per directory: AES-256-GCM-SIV under a sub-key of
//! the store's name key, with the directory's random 16-byte IV (kept in `.diriv` inside each
//! ciphertext directory) as nonce and associated data. Lookups then need no decryption: the
//! name is encrypted and looked up directly. Plaintext is padded with NUL bytes to a multiple
//! of 16 (names cannot contain NUL) and encoded base64url without padding.
//!
//! An encoded name longer than 255 bytes is stored as `.L<hash>`, with its full encoding in a
//! sidecar file `.N<hash>` beside it. Encodings never start with '.', so these cannot collide.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;

use crate::crypto::{self, BlockCipher, NameKey, Secret32};

pub const DIRIV_NAME: &str = ".diriv";
pub const DIRIV_LEN: usize = 16;
pub const LONG_PREFIX: &str = ".L";
pub const LONG_SIDECAR_PREFIX: &str = ".N";
/// Temporary files and directories of atomic writes: `.tmp-<what>-<random hex>`.
pub const TMP_PREFIX: &str = ".tmp-";
/// No long-name sidecar is larger (an encoded name of 255 plaintext bytes is under 400).
pub const SIDECAR_MAX: usize = 4096;
const NAME_MAX: usize = 255;
/// Longest plaintext name accepted: Linux's NAME_MAX.
const PLAIN_NAME_MAX: usize = 255;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("name too long")]
    TooLong,
    #[error("name is not valid for a file")]
    Invalid,
    #[error("encrypted name failed to decode or authenticate")]
    Undecryptable,
    /// Authentic, so written by a holder of the name key (a backup host, say), but not a name
    /// any file can have: it holds '/' or NUL, is '.' or '..', or is padded non-canonically.
    #[error("decrypted name is not a valid file name ('/' or NUL in it, '.' or '..', or padded non-canonically)")]
    Unsafe,
    #[error("long-name sidecar does not hash to its entry's name")]
    SidecarMismatch,
}

/// What a name in a ciphertext directory is. Every reader of a ciphertext directory (the
/// mount, fsck, `coffer info`) sorts entries with this one function.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry<'a> {
    /// The directory's IV.
    DirIv,
    /// A long name's sidecar `.N<hash>`, which belongs to entry `.L<hash>` (`entry`).
    Sidecar { entry: Vec<u8> },
    /// An atomic write's temporary, left behind only by a crash.
    Temporary,
    /// A plaintext entry whose encoded name is the entry's own name.
    Short(&'a [u8]),
    /// A plaintext entry `.L<hash>` whose encoded name is in the sidecar `sidecar`, and must
    /// hash to `hash`.
    Long { sidecar: Vec<u8>, hash: &'a [u8] },
}

impl Entry<'_> {
    /// coffer's own files, never entries of the plaintext directory.
    pub fn is_internal(&self) -> bool {
        matches!(
            self,
            Entry::DirIv | Entry::Sidecar { .. } | Entry::Temporary
        )
    }
}

/// Sort a ciphertext directory's entry name.
pub fn classify(name: &[u8]) -> Entry<'_> {
    if name == DIRIV_NAME.as_bytes() {
        return Entry::DirIv;
    }
    if name.starts_with(TMP_PREFIX.as_bytes()) {
        return Entry::Temporary;
    }
    if let Some(hash) = name.strip_prefix(LONG_SIDECAR_PREFIX.as_bytes()) {
        return Entry::Sidecar {
            entry: [LONG_PREFIX.as_bytes(), hash].concat(),
        };
    }
    match sidecar_of_entry(name) {
        Some((sidecar, hash)) => Entry::Long { sidecar, hash },
        None => Entry::Short(name),
    }
}

/// A fresh temporary name for an atomic write of `what`: `.tmp-<what>-<16 random hex>`.
pub fn temp_name(what: &OsStr) -> OsString {
    let mut tag = [0u8; 8];
    crypto::random_bytes(&mut tag);
    let mut tmp = OsString::from(TMP_PREFIX);
    tmp.push(what);
    tmp.push(format!("-{}", hex::encode(tag)));
    tmp
}

/// Why an entry's plaintext name cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    #[error("long name has lost its sidecar: the name cannot be read ({0})")]
    NoSidecar(std::io::Error),
    #[error("{0}")]
    Name(#[from] NameError),
}

/// For a long-name entry `.L<hash>`: the name of its sidecar `.N<hash>`, and the hash.
pub fn sidecar_of_entry(entry: &[u8]) -> Option<(Vec<u8>, &[u8])> {
    let hash = entry.strip_prefix(LONG_PREFIX.as_bytes())?;
    Some(([LONG_SIDECAR_PREFIX.as_bytes(), hash].concat(), hash))
}

/// The encoded name a sidecar holds, once it hashes to the `hash` its entry is named by (a
/// sidecar swapped in from another entry, or rewritten, is refused before decryption).
pub fn sidecar_encoding(hash: &[u8], content: Vec<u8>) -> Result<String, NameError> {
    let s = String::from_utf8(content).map_err(|_| NameError::SidecarMismatch)?;
    let want = B64.encode(blake3::hash(s.as_bytes()).as_bytes());
    if !crypto::ct_eq(want.as_bytes(), hash) {
        return Err(NameError::SidecarMismatch);
    }
    Ok(s)
}

/// How an encrypted name is stored in the ciphertext directory.
#[derive(Debug, PartialEq, Eq)]
pub enum StoredName {
    /// The encoding itself is the entry name.
    Short(String),
    /// The entry is `entry`; `sidecar` holds `encoded`.
    Long {
        entry: String,
        sidecar: String,
        encoded: String,
    },
}

impl StoredName {
    pub fn entry(&self) -> &str {
        match self {
            StoredName::Short(s) => s,
            StoredName::Long { entry, .. } => entry,
        }
    }
}

pub struct NameCodec {
    names: BlockCipher,
    links: Secret32,
}

impl NameCodec {
    pub fn new(key: &NameKey) -> Self {
        let names = crypto::derive_subkey("coffer 2026-11 file names", key.secret());
        let links = crypto::derive_subkey("coffer 2026-11 symlink targets", key.secret());
        NameCodec {
            names: BlockCipher::new(&names),
            links,
        }
    }

    pub fn encrypt(&self, dir_iv: &[u8; DIRIV_LEN], name: &OsStr) -> Result<StoredName, NameError> {
        let plain = name.as_bytes();
        if plain.is_empty()
            || plain == b"."
            || plain == b".."
            || plain.contains(&0)
            || plain.contains(&b'/')
        {
            return Err(NameError::Invalid);
        }
        if plain.len() > PLAIN_NAME_MAX {
            return Err(NameError::TooLong);
        }
        let padded_len = plain.len().div_ceil(16) * 16;
        let mut buf = vec![0u8; padded_len];
        buf[..plain.len()].copy_from_slice(plain);
        let tag = self.names.seal_with_nonce(&dir_iv[..12], dir_iv, &mut buf);
        buf.extend_from_slice(&tag);
        let encoded = B64.encode(&buf);
        if encoded.len() <= NAME_MAX {
            return Ok(StoredName::Short(encoded));
        }
        let hash = B64.encode(blake3::hash(encoded.as_bytes()).as_bytes());
        Ok(StoredName::Long {
            entry: format!("{LONG_PREFIX}{hash}"),
            sidecar: format!("{LONG_SIDECAR_PREFIX}{hash}"),
            encoded,
        })
    }

    /// Decrypt an encoded name (the entry itself, or a long name's sidecar content).
    pub fn decrypt(&self, dir_iv: &[u8; DIRIV_LEN], encoded: &str) -> Result<OsString, NameError> {
        let mut buf = B64
            .decode(encoded.as_bytes())
            .map_err(|_| NameError::Undecryptable)?;
        if buf.len() < 32 || (buf.len() - 16) % 16 != 0 {
            return Err(NameError::Undecryptable);
        }
        let n = self
            .names
            .open_in_place(&dir_iv[..12], dir_iv, &mut buf)
            .map_err(|_| NameError::Undecryptable)?;
        buf.truncate(n);
        while buf.last() == Some(&0) {
            buf.pop();
        }
        // encrypt() pads to the next multiple of 16 and no further; anything else is a second
        // encoding of a name, which a lookup would never find.
        let canonical = buf.len().div_ceil(16) * 16 == n;
        if buf.is_empty()
            || !canonical
            || buf.len() > PLAIN_NAME_MAX
            || buf == b"."
            || buf == b".."
            || buf.contains(&0)
            || buf.contains(&b'/')
        {
            return Err(NameError::Unsafe);
        }
        Ok(OsString::from_vec(buf))
    }

    /// The plaintext name of a named entry (`Entry::Short` or `Entry::Long`); `read_sidecar`
    /// reads a long name's sidecar (capped at SIDECAR_MAX, never following a link).
    pub fn decode_entry(
        &self,
        dir_iv: &[u8; DIRIV_LEN],
        entry: &Entry<'_>,
        read_sidecar: impl FnOnce(&OsStr) -> std::io::Result<Vec<u8>>,
    ) -> Result<OsString, EntryError> {
        let encoded = match entry {
            Entry::Short(b) => {
                String::from_utf8(b.to_vec()).map_err(|_| NameError::Undecryptable)?
            }
            Entry::Long { sidecar, hash } => {
                let content =
                    read_sidecar(OsStr::from_bytes(sidecar)).map_err(EntryError::NoSidecar)?;
                sidecar_encoding(hash, content)?
            }
            _ => return Err(NameError::Invalid.into()),
        };
        Ok(self.decrypt(dir_iv, &encoded)?)
    }

    pub fn link_key(&self) -> &Secret32 {
        &self.links
    }
}

/// The longest symlink target stored in the backing symlink itself; longer ones (up to
/// Linux's 4095) go to a blob of the store's (`links/`): base64 of a sealed 4095-byte target
/// would not fit in a backing symlink.
pub const INLINE_LINK_MAX: usize = 3000;
/// Linux's longest symlink target (PATH_MAX less its NUL).
pub const LINK_MAX: usize = 4095;
/// The backing target of a long symlink: this prefix and its blob's name. base64url never
/// starts with '.', so an inline target cannot be taken for one.
pub const LONG_LINK_PREFIX: &str = ".S";
/// No link blob is larger (a sealed 4095-byte target is 4123 bytes).
pub const LINK_BLOB_MAX: usize = 8192;
const LINK_AAD: &[u8] = b"coffer/v1/symlink";

/// How a symlink target is stored.
#[derive(Debug, PartialEq, Eq)]
pub enum StoredLink {
    /// In the backing symlink's target: base64url of the sealed target.
    Inline(String),
    /// The backing target is `.S<blob_name>`; the blob `links/<blob_name>` holds the sealed
    /// target, and `blob_name` is base64url of BLAKE3(blob).
    Long { blob_name: String, blob: Vec<u8> },
}

impl StoredLink {
    /// What the backing symlink points to.
    pub fn backing_target(&self) -> String {
        match self {
            StoredLink::Inline(s) => s.clone(),
            StoredLink::Long { blob_name, .. } => format!("{LONG_LINK_PREFIX}{blob_name}"),
        }
    }
}

/// Seal a symlink target (1 to 4095 bytes) with a random nonce.
pub fn encode_symlink(codec: &NameCodec, target: &[u8]) -> Result<StoredLink, NameError> {
    if target.is_empty() || target.len() > LINK_MAX {
        return Err(NameError::TooLong);
    }
    let sealed = crypto::seal_vec(codec.link_key(), LINK_AAD, target);
    if target.len() <= INLINE_LINK_MAX {
        return Ok(StoredLink::Inline(B64.encode(sealed)));
    }
    let blob_name = B64.encode(blake3::hash(&sealed).as_bytes());
    Ok(StoredLink::Long {
        blob_name,
        blob: sealed,
    })
}

/// The blob name of a long symlink's backing target, or None for an inline one.
pub fn long_link_blob(stored: &[u8]) -> Option<&[u8]> {
    stored.strip_prefix(LONG_LINK_PREFIX.as_bytes())
}

/// Open an inline symlink target.
pub fn decode_symlink(codec: &NameCodec, stored: &[u8]) -> Result<Vec<u8>, NameError> {
    let sealed = B64.decode(stored).map_err(|_| NameError::Undecryptable)?;
    crypto::open_vec(codec.link_key(), LINK_AAD, &sealed).map_err(|_| NameError::Undecryptable)
}

/// Open a long symlink's blob, which must hash to its name (a blob swapped in for another
/// is refused before decryption).
pub fn decode_long_link(
    codec: &NameCodec,
    blob_name: &[u8],
    blob: &[u8],
) -> Result<Vec<u8>, NameError> {
    let want = B64.encode(blake3::hash(blob).as_bytes());
    if !crypto::ct_eq(want.as_bytes(), blob_name) {
        return Err(NameError::Undecryptable);
    }
    crypto::open_vec(codec.link_key(), LINK_AAD, blob).map_err(|_| NameError::Undecryptable)
}

/// Plaintext length of an inline symlink target from the stored target's length.
pub fn symlink_plain_len(stored_len: u64) -> u64 {
    (stored_len * 3 / 4).saturating_sub(28)
}

/// Plaintext length of a long symlink target from its blob's length.
pub fn long_link_plain_len(blob_len: u64) -> u64 {
    blob_len.saturating_sub(28)
}

#[cfg(test)]
#[path = "names_tests.rs"]
mod tests;
