//! The ciphertext file header (132 bytes). Version 1 files have no holes; version 2 files
//! (written since store format 2's sparse files) may, and their blocks' AAD says where
//! (block.rs):
//!
//! ```text
//! magic "CFR1" | version u8 | block_shift u8 | reserved u16 = 0
//! file_id [16] | batch_id [16] | wrapped file key [60] | key commitment [32]
//! ```
//!
//! The wrapped file key is a redundant copy of the catalog's record, so that `fsck --repair`
//! can rebuild a lost catalog. The commitment (keyed BLAKE3 of the file id under the file key)
//! ties the ciphertext to exactly one key.

use super::FormatError;
use crate::crypto::{self, BatchKey, CryptoError, FileKey, WRAPPED_KEY_LEN};

pub const MAGIC: &[u8; 4] = b"CFR1";
pub const HEADER_LEN: usize = 4 + 4 + 16 + 16 + WRAPPED_KEY_LEN + 32;
/// Where the file id lies in the header (after magic, version, block shift and reserved).
pub const FILE_ID_OFF: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub block_shift: u8,
    pub file_id: [u8; 16],
    pub batch_id: [u8; 16],
    pub wrapped_key: [u8; WRAPPED_KEY_LEN],
    pub commitment: [u8; 32],
}

/// Smallest and largest block sizes a header may declare: 4 KiB to 1 MiB.
pub const MIN_BLOCK_SHIFT: u8 = 12;
pub const MAX_BLOCK_SHIFT: u8 = 20;

impl Header {
    /// A header for a new file whose key is wrapped under `batch`.
    pub fn new(
        store_id: &[u8; 16],
        block_shift: u8,
        batch_id: [u8; 16],
        batch: &BatchKey,
        file_key: &FileKey,
    ) -> Header {
        Self::with_id(
            store_id,
            block_shift,
            batch_id,
            batch,
            file_key,
            crypto::random_id(),
        )
    }

    /// The same for a file that keeps its id `file_id` (a file cut to zero in a format-3
    /// store, whose inode record is bound to the id).
    pub fn with_id(
        store_id: &[u8; 16],
        block_shift: u8,
        batch_id: [u8; 16],
        batch: &BatchKey,
        file_key: &FileKey,
        file_id: [u8; 16],
    ) -> Header {
        let aad = key_aad(store_id, &batch_id, &file_id);
        Header {
            version: super::FORMAT_VERSION,
            block_shift,
            file_id,
            batch_id,
            wrapped_key: crypto::seal_key(batch.secret(), &aad, file_key.secret()),
            commitment: commitment(file_key, &file_id),
        }
    }

    /// Unwrap this file's key with its batch key and check the commitment.
    pub fn unwrap_key(
        &self,
        store_id: &[u8; 16],
        batch: &BatchKey,
    ) -> Result<FileKey, CryptoError> {
        let aad = key_aad(store_id, &self.batch_id, &self.file_id);
        let key = FileKey::from_secret(crypto::open_key(batch.secret(), &aad, &self.wrapped_key)?);
        if !crypto::ct_eq(&commitment(&key, &self.file_id), &self.commitment) {
            return Err(CryptoError::Auth);
        }
        Ok(key)
    }

    /// Whether this file may have holes (version 2), so its blocks carry `holes_before`.
    pub fn sparse(&self) -> bool {
        self.version >= 2
    }

    pub fn block_size(&self) -> usize {
        1usize << self.block_shift
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..4].copy_from_slice(MAGIC);
        b[4] = self.version;
        b[5] = self.block_shift;
        let mut o = FILE_ID_OFF;
        for part in [
            &self.file_id[..],
            &self.batch_id,
            &self.wrapped_key,
            &self.commitment,
        ] {
            b[o..o + part.len()].copy_from_slice(part);
            o += part.len();
        }
        b
    }

    pub fn decode(b: &[u8]) -> Result<Header, FormatError> {
        if b.len() < HEADER_LEN {
            return Err(FormatError::Header);
        }
        if &b[..4] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        if b[4] != super::FORMAT_VERSION && b[4] != super::FORMAT_VERSION_DENSE {
            return Err(FormatError::Version(b[4]));
        }
        let block_shift = b[5];
        if !(MIN_BLOCK_SHIFT..=MAX_BLOCK_SHIFT).contains(&block_shift) || b[6] != 0 || b[7] != 0 {
            return Err(FormatError::Header);
        }
        let take = |o: usize, n: usize| &b[o..o + n];
        let mut h = Header {
            version: b[4],
            block_shift,
            file_id: [0; 16],
            batch_id: [0; 16],
            wrapped_key: [0; WRAPPED_KEY_LEN],
            commitment: [0; 32],
        };
        h.file_id.copy_from_slice(take(FILE_ID_OFF, 16));
        h.batch_id.copy_from_slice(take(24, 16));
        h.wrapped_key.copy_from_slice(take(40, WRAPPED_KEY_LEN));
        h.commitment.copy_from_slice(take(40 + WRAPPED_KEY_LEN, 32));
        Ok(h)
    }
}

fn key_aad(store_id: &[u8; 16], batch_id: &[u8; 16], file_id: &[u8; 16]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(64);
    aad.extend_from_slice(b"coffer/v1/file-key");
    aad.extend_from_slice(store_id);
    aad.extend_from_slice(batch_id);
    aad.extend_from_slice(file_id);
    aad
}

fn commitment(key: &FileKey, file_id: &[u8; 16]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(key.expose());
    h.update(b"coffer/v1/key-commitment");
    h.update(file_id);
    *h.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_key() {
        let store = [7u8; 16];
        let batch = BatchKey::random();
        let fk = FileKey::random();
        let h = Header::new(&store, 16, [1; 16], &batch, &fk);
        let enc = h.encode();
        let d = Header::decode(&enc).expect("decodes");
        assert_eq!(d, h);
        assert_eq!(
            d.unwrap_key(&store, &batch).expect("unwraps").expose(),
            fk.expose()
        );
        // Another store id, another batch key, a changed commitment: all refused.
        assert!(d.unwrap_key(&[8u8; 16], &batch).is_err());
        assert!(d.unwrap_key(&store, &BatchKey::random()).is_err());
        let mut c = d.clone();
        c.commitment[0] ^= 1;
        assert!(c.unwrap_key(&store, &batch).is_err());
    }

    #[test]
    fn header_rejects_garbage() {
        let h = Header::new(
            &[0; 16],
            16,
            [1; 16],
            &BatchKey::random(),
            &FileKey::random(),
        );
        let enc = h.encode();
        let mut m = enc;
        m[0] = b'X';
        assert_eq!(Header::decode(&m), Err(FormatError::BadMagic));
        let mut v = enc;
        v[4] = 9;
        assert_eq!(Header::decode(&v), Err(FormatError::Version(9)));
        let mut s = enc;
        s[5] = 40;
        assert_eq!(Header::decode(&s), Err(FormatError::Header));
        assert_eq!(Header::decode(&enc[..100]), Err(FormatError::Header));
    }
}
