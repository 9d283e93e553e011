//! Extended attributes on disk: each plaintext attribute is one backing attribute of the same
//! backing inode, its name a MAC and its value sealed, both bound to the inode's identity.
//!
//! ```text
//! backing name  = PREFIX | base64url(first 16 bytes of
//!                   mac("coffer 2026-12 xattr names", name key, [id, name]))
//! backing value = seal under derive_key("coffer 2026-12 xattr values", name key),
//!                 AAD "coffer/v2/xattr" | id, of  name_len u8 | name | value
//! ```
//!
//! `id` is what the inode is known by: a regular file's file id (from its header), a
//! directory's IV (`.diriv`), and for a symlink or a special file a random 16 bytes kept in
//! the backing attribute `trusted.coffer-id`. An attribute moved to another inode, or renamed
//! to another attribute's backing name, does not open (the AAD, and the name inside the
//! value, must match). PREFIX is `user.cf.` on regular files and directories and
//! `trusted.cf.` on symlinks and special files, which Linux allows no `user.` attributes.
//! The name key (not the master key) seals them: a backup-only host, which holds the name key,
//! keeps attributes on the files it writes and sees those of older files, as it sees their
//! names, modes and owners.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;

use crate::crypto::{self, NameKey, Secret32};

/// Linux's limits (XATTR_NAME_MAX, XATTR_SIZE_MAX).
pub const XATTR_NAME_MAX: usize = 255;
pub const XATTR_SIZE_MAX: usize = 65536;
/// Backing attributes of regular files and directories.
pub const PREFIX_USER: &str = "user.cf.";
/// Backing attributes of symlinks and special files.
pub const PREFIX_TRUSTED: &str = "trusted.cf.";
/// The backing attribute holding a symlink's or special file's identity.
pub const ID_ATTR: &str = "trusted.coffer-id";
const AAD: &[u8] = b"coffer/v2/xattr";
/// Largest sealed value: a name, a length byte and the largest value, sealed.
pub const SEALED_MAX: usize = 1 + XATTR_NAME_MAX + XATTR_SIZE_MAX + 28;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XattrError {
    #[error("extended attribute fails authentication (moved, renamed or altered)")]
    Forged,
    #[error("extended attribute name is empty or longer than 255 bytes")]
    BadName,
    #[error("extended attribute value is larger than 64 KiB")]
    TooLarge,
}

/// Seals and opens a store's attributes (one per mount).
pub struct XattrCodec {
    names: Secret32,
    values: Secret32,
}

impl XattrCodec {
    pub fn new(key: &NameKey) -> XattrCodec {
        XattrCodec {
            names: crypto::derive_subkey("coffer 2026-12 xattr names", key.secret()),
            values: crypto::derive_subkey("coffer 2026-12 xattr values", key.secret()),
        }
    }

    /// The backing name (after its prefix) of attribute `name` of inode `id`.
    pub fn backing_name(&self, id: &[u8; 16], name: &[u8]) -> String {
        B64.encode(self.backing_mac(id, name))
    }

    /// The 16 bytes a backing name encodes: what an inode record (format/inode.rs) lists.
    pub fn backing_mac(&self, id: &[u8; 16], name: &[u8]) -> [u8; 16] {
        let m = crypto::mac("coffer 2026-12 xattr names", &self.names, &[id, name]);
        let mut out = [0u8; 16];
        out.copy_from_slice(&m[..16]);
        out
    }

    /// The backing value of attribute `name` = `value` of inode `id`.
    pub fn seal(&self, id: &[u8; 16], name: &[u8], value: &[u8]) -> Result<Vec<u8>, XattrError> {
        if name.is_empty() || name.len() > XATTR_NAME_MAX {
            return Err(XattrError::BadName);
        }
        if value.len() > XATTR_SIZE_MAX {
            return Err(XattrError::TooLarge);
        }
        let mut plain = Vec::with_capacity(1 + name.len() + value.len());
        plain.push(name.len() as u8);
        plain.extend_from_slice(name);
        plain.extend_from_slice(value);
        Ok(crypto::seal_vec(&self.values, &aad(id), &plain))
    }

    /// The name and value a backing value of inode `id` holds.
    pub fn open(&self, id: &[u8; 16], sealed: &[u8]) -> Result<(Vec<u8>, Vec<u8>), XattrError> {
        if sealed.len() > SEALED_MAX {
            return Err(XattrError::Forged);
        }
        let plain =
            crypto::open_vec(&self.values, &aad(id), sealed).map_err(|_| XattrError::Forged)?;
        let n = *plain.first().ok_or(XattrError::Forged)? as usize;
        if n == 0 || plain.len() < 1 + n {
            return Err(XattrError::Forged);
        }
        Ok((plain[1..1 + n].to_vec(), plain[1 + n..].to_vec()))
    }

    /// Open the backing value found under `backing` (a name after its prefix) as attribute
    /// `name`: the value must be sealed for this inode, and for this very name.
    pub fn open_as(
        &self,
        id: &[u8; 16],
        name: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, XattrError> {
        let (n, v) = self.open(id, sealed)?;
        if !crypto::ct_eq(&n, name) {
            return Err(XattrError::Forged);
        }
        Ok(v)
    }
}

/// The backing name (after its prefix) of a backing MAC, and back.
pub fn encode_backing(mac: &[u8; 16]) -> String {
    B64.encode(mac)
}

pub fn decode_backing(name: &str) -> Option<[u8; 16]> {
    B64.decode(name).ok()?.try_into().ok()
}

fn aad(id: &[u8; 16]) -> Vec<u8> {
    [AAD, &id[..]].concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_bound_to_their_inode_and_name() {
        let c = XattrCodec::new(&NameKey::random());
        let (a, b) = ([1u8; 16], [2u8; 16]);
        let sealed = c.seal(&a, b"user.comment", b"hello").expect("seal");
        assert!(!sealed.windows(5).any(|w| w == b"hello"));
        assert_eq!(
            c.open_as(&a, b"user.comment", &sealed).expect("open"),
            b"hello"
        );
        assert_eq!(c.open(&a, &sealed).expect("open").0, b"user.comment");
        // Moved to another inode, or to another name's backing slot: refused.
        assert_eq!(c.open(&b, &sealed), Err(XattrError::Forged));
        assert_eq!(
            c.open_as(&a, b"user.other", &sealed),
            Err(XattrError::Forged)
        );
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert_eq!(c.open(&a, &bad), Err(XattrError::Forged));
        // Backing names differ per inode and per name, and say nothing of the name.
        let n = c.backing_name(&a, b"user.comment");
        assert_ne!(n, c.backing_name(&b, b"user.comment"));
        assert_ne!(n, c.backing_name(&a, b"user.comments"));
        assert_eq!(n.len(), 22);
        assert!(c.seal(&a, b"", b"x").is_err());
        assert_eq!(c.seal(&a, &[b'a'; 256], b"x"), Err(XattrError::BadName));
        assert_eq!(
            c.seal(&a, b"user.x", &vec![0; XATTR_SIZE_MAX + 1]),
            Err(XattrError::TooLarge)
        );
        assert!(c.seal(&a, &[b'a'; 255], &vec![0; XATTR_SIZE_MAX]).is_ok());
    }
}
