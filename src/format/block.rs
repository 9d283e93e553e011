//! Block codec and offset arithmetic.
//!
//! A file's body is a sequence of blocks, each `nonce[12] | ciphertext | tag[16]`. Every block
//! but the last holds exactly `block_size` plaintext bytes; the last holds 0..=block_size and
//! is sealed with the final flag set. An empty file is one empty final block, so a file cut
//! at any block boundary, even down to its header, lacks its final block and fails to open.
//!
//! Format 2 files (header version 2) may have holes: a block other than the final one whose
//! whole ciphertext (nonce, body and tag) is zero bytes is a hole and reads as zeros. Which
//! blocks are holes is itself authenticated: every data block's AAD carries `holes_before`,
//! the number of hole blocks immediately before it, so a data block zeroed out by someone
//! without the key makes the next data block fail to open. Format 1 files have no holes and
//! no such field.
//!
//! Offsets come in two kinds that must never be mixed: plaintext offsets (what the user sees)
//! and ciphertext offsets (bytes in the backing file). Functions here take and return `u64`
//! but name which kind in their names.

use super::{FormatError, HEADER_LEN};
use crate::crypto::BlockCipher;

/// nonce + tag.
pub const BLOCK_OVERHEAD: usize = 12 + 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockGeometry {
    pub shift: u8,
}

impl BlockGeometry {
    pub fn new(shift: u8) -> Self {
        BlockGeometry { shift }
    }
    pub fn block_size(self) -> u64 {
        1u64 << self.shift
    }
    /// Plaintext offset to the index of the block that holds it.
    pub fn plain_off_to_block(self, plain_off: u64) -> u64 {
        plain_off >> self.shift
    }
    /// Ciphertext offset at which block `idx` starts.
    pub fn block_to_cipher_off(self, idx: u64) -> u64 {
        HEADER_LEN as u64 + idx * (self.block_size() + BLOCK_OVERHEAD as u64)
    }
    /// Plaintext offset at which block `idx` starts.
    pub fn block_to_plain_off(self, idx: u64) -> u64 {
        idx << self.shift
    }
}

/// Number of blocks a file of `plain_len` bytes has (at least one: the final block).
pub fn blocks_for(g: BlockGeometry, plain_len: u64) -> u64 {
    if plain_len == 0 {
        1
    } else {
        plain_len.div_ceil(g.block_size())
    }
}

/// Exact ciphertext file length for a plaintext length.
pub fn cipher_len_for(g: BlockGeometry, plain_len: u64) -> u64 {
    let n = blocks_for(g, plain_len);
    let last = plain_len - (n - 1) * g.block_size();
    g.block_to_cipher_off(n - 1) + last + BLOCK_OVERHEAD as u64
}

/// Plaintext length from a ciphertext file length, or an error if no valid file has that
/// length (a cut inside the overhead of a block, or a header without blocks).
pub fn plain_len_from_cipher(g: BlockGeometry, cipher_len: u64) -> Result<u64, FormatError> {
    let bad = FormatError::Length(cipher_len);
    let body = cipher_len
        .checked_sub(HEADER_LEN as u64)
        .ok_or_else(|| bad.clone())?;
    let full = g.block_size() + BLOCK_OVERHEAD as u64;
    if body < BLOCK_OVERHEAD as u64 {
        return Err(bad);
    }
    let n = body.div_ceil(full);
    let last = body - (n - 1) * full;
    if last < BLOCK_OVERHEAD as u64 || (n > 1 && last == BLOCK_OVERHEAD as u64) {
        return Err(bad);
    }
    Ok((n - 1) * g.block_size() + last - BLOCK_OVERHEAD as u64)
}

/// Where a block sits, as its AAD binds it: its index, whether it is the final block, and in
/// format 2 files the number of hole blocks right before it (None in format 1 files).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockPos {
    pub idx: u64,
    pub last: bool,
    pub holes_before: Option<u64>,
}

impl BlockPos {
    /// A block of a format 1 file (no holes).
    pub fn dense(idx: u64, last: bool) -> BlockPos {
        BlockPos {
            idx,
            last,
            holes_before: None,
        }
    }
}

fn aad(file_id: &[u8; 16], pos: BlockPos) -> ([u8; 33], usize) {
    let mut a = [0u8; 33];
    a[..16].copy_from_slice(file_id);
    a[16..24].copy_from_slice(&pos.idx.to_le_bytes());
    a[24] = pos.last as u8;
    match pos.holes_before {
        None => (a, 25),
        Some(h) => {
            a[25..33].copy_from_slice(&h.to_le_bytes());
            (a, 33)
        }
    }
}

/// True when `sealed` (a block's whole ciphertext) is a hole: every byte zero. Real data
/// fails on its first 16 bytes (the nonce), so only holes are read to the end.
pub fn is_hole(sealed: &[u8]) -> bool {
    let mut words = sealed.chunks_exact(16);
    let zero = words
        .by_ref()
        .all(|w| u128::from_ne_bytes(w.try_into().unwrap_or([1; 16])) == 0);
    zero && words.remainder().iter().all(|&b| b == 0)
}

/// Seal `plain` as the block at `pos` into `out`, which must be `plain.len() + BLOCK_OVERHEAD` long.
pub fn seal_block(
    cipher: &BlockCipher,
    file_id: &[u8; 16],
    pos: BlockPos,
    plain: &[u8],
    out: &mut [u8],
) {
    debug_assert_eq!(out.len(), plain.len() + BLOCK_OVERHEAD);
    let (nonce_out, rest) = out.split_at_mut(12);
    let (body, tag_out) = rest.split_at_mut(plain.len());
    body.copy_from_slice(plain);
    let (a, n) = aad(file_id, pos);
    let (nonce, tag) = cipher.seal_in_place(&a[..n], body);
    nonce_out.copy_from_slice(&nonce);
    tag_out.copy_from_slice(&tag);
}

/// Seal block `idx` in place: `buf` is `nonce | plaintext | tag-space`, the plaintext already
/// in position (saves a copy on the write path).
pub fn seal_block_in_place(
    cipher: &BlockCipher,
    file_id: &[u8; 16],
    pos: BlockPos,
    buf: &mut [u8],
) {
    debug_assert!(buf.len() >= BLOCK_OVERHEAD);
    let body_len = buf.len() - BLOCK_OVERHEAD;
    let (nonce_out, rest) = buf.split_at_mut(12);
    let (body, tag_out) = rest.split_at_mut(body_len);
    let (a, n) = aad(file_id, pos);
    let (nonce, tag) = cipher.seal_in_place(&a[..n], body);
    nonce_out.copy_from_slice(&nonce);
    tag_out.copy_from_slice(&tag);
}

/// Open sealed block `idx` in place; returns the plaintext sub-slice.
pub fn open_block<'a>(
    cipher: &BlockCipher,
    file_id: &[u8; 16],
    pos: BlockPos,
    sealed: &'a mut [u8],
) -> Result<&'a mut [u8], FormatError> {
    if sealed.len() < BLOCK_OVERHEAD {
        return Err(FormatError::BlockShape(pos.idx));
    }
    let (nonce, rest) = sealed.split_at_mut(12);
    let (a, an) = aad(file_id, pos);
    let n = cipher
        .open_in_place(nonce, &a[..an], rest)
        .map_err(|_| FormatError::BlockAuth(pos.idx))?;
    Ok(&mut rest[..n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Secret32;
    use proptest::prelude::*;

    const G: BlockGeometry = BlockGeometry { shift: 12 };

    proptest! {
        #[test]
        fn cipher_len_inverts(plain_len in 0u64..(1u64 << 40)) {
            for shift in [12u8, 16, 20] {
                let g = BlockGeometry::new(shift);
                let c = cipher_len_for(g, plain_len);
                prop_assert_eq!(plain_len_from_cipher(g, c), Ok(plain_len));
                // One byte less is never the same plaintext length (a cut is visible).
                prop_assert_ne!(plain_len_from_cipher(g, c - 1), Ok(plain_len));
            }
        }

        #[test]
        fn offsets_are_consistent(off in 0u64..(1u64 << 40)) {
            let g = BlockGeometry::new(16);
            let b = g.plain_off_to_block(off);
            prop_assert!(g.block_to_plain_off(b) <= off);
            prop_assert!(off < g.block_to_plain_off(b + 1));
            prop_assert_eq!(g.block_to_cipher_off(b + 1) - g.block_to_cipher_off(b),
                g.block_size() + BLOCK_OVERHEAD as u64);
        }

        #[test]
        fn block_round_trip_any_content(data in proptest::collection::vec(any::<u8>(), 0..5000),
                                        idx in 0u64..1000, last in any::<bool>()) {
            let c = BlockCipher::new(&Secret32::random());
            let id = [3u8; 16];
            let mut out = vec![0u8; data.len() + BLOCK_OVERHEAD];
            seal_block(&c, &id, BlockPos::dense(idx, last), &data, &mut out);
            let mut copy = out.clone();
            prop_assert_eq!(open_block(&c, &id, BlockPos::dense(idx, last), &mut copy).map(|p| p.to_vec()), Ok(data.clone()));
            // Another position, another finality, another file: refused.
            let mut copy = out.clone();
            prop_assert!(open_block(&c, &id, BlockPos::dense(idx + 1, last), &mut copy).is_err());
            let mut copy = out.clone();
            prop_assert!(open_block(&c, &id, BlockPos::dense(idx, !last), &mut copy).is_err());
            let mut copy = out.clone();
            prop_assert!(open_block(&c, &[4u8; 16], BlockPos::dense(idx, last), &mut copy).is_err());
        }
    }

    #[test]
    fn edge_lengths() {
        let b = G.block_size();
        let h = HEADER_LEN as u64;
        let o = BLOCK_OVERHEAD as u64;
        for (plain, cipher) in [
            (0, h + o),
            (1, h + 1 + o),
            (b - 1, h + b - 1 + o),
            (b, h + b + o),
            (b + 1, h + b + o + 1 + o),
            (5 << 20, h + (5 << 20) / b * (b + o)),
        ] {
            assert_eq!(cipher_len_for(G, plain), cipher, "plain {plain}");
            assert_eq!(plain_len_from_cipher(G, cipher), Ok(plain));
        }
        // A header alone, or a cut inside a block's overhead, is no valid file.
        assert!(plain_len_from_cipher(G, h).is_err());
        assert!(plain_len_from_cipher(G, h + 5).is_err());
        assert!(plain_len_from_cipher(G, h + b + o + 3).is_err());
        assert!(plain_len_from_cipher(G, 3).is_err());
    }

    /// Seal `data` block by block as the fs layer does, into one ciphertext body.
    fn seal_all(c: &BlockCipher, id: &[u8; 16], data: &[u8]) -> Vec<Vec<u8>> {
        let bs = G.block_size() as usize;
        let n = blocks_for(G, data.len() as u64) as usize;
        let chunks: Vec<&[u8]> = if data.is_empty() {
            vec![&[][..]]
        } else {
            data.chunks(bs).collect()
        };
        chunks
            .iter()
            .enumerate()
            .map(|(i, chunk)| {
                let mut out = vec![0u8; chunk.len() + BLOCK_OVERHEAD];
                seal_block(
                    c,
                    id,
                    BlockPos::dense(i as u64, i + 1 == n),
                    chunk,
                    &mut out,
                );
                out
            })
            .collect()
    }

    fn open_all(c: &BlockCipher, id: &[u8; 16], sealed: &mut [Vec<u8>]) -> Option<Vec<u8>> {
        let n = sealed.len();
        let mut back = Vec::new();
        for (i, s) in sealed.iter_mut().enumerate() {
            back.extend_from_slice(
                open_block(c, id, BlockPos::dense(i as u64, i + 1 == n), s).ok()?,
            );
        }
        Some(back)
    }

    #[test]
    fn round_trips_at_block_edges_and_several_mib() {
        let c = BlockCipher::new(&Secret32::random());
        let id = [9u8; 16];
        let b = G.block_size() as usize;
        for len in [0, 1, b - 1, b, b + 1, (3 << 20) + 77] {
            let data: Vec<u8> = (0..len as u32).map(|i| (i * 31 % 251) as u8).collect();
            let mut sealed = seal_all(&c, &id, &data);
            let total: usize = sealed.iter().map(Vec::len).sum();
            assert_eq!(
                HEADER_LEN as u64 + total as u64,
                cipher_len_for(G, len as u64),
                "length {len}"
            );
            assert_eq!(
                open_all(&c, &id, &mut sealed),
                Some(data),
                "round trip of {len} bytes"
            );
        }
        // Swapping two blocks, or dropping the final one, is detected.
        let data = vec![5u8; 3 * b];
        let mut sealed = seal_all(&c, &id, &data);
        sealed.swap(0, 1);
        assert_eq!(open_all(&c, &id, &mut sealed), None);
        let mut sealed = seal_all(&c, &id, &data);
        sealed.pop();
        assert_eq!(open_all(&c, &id, &mut sealed), None);
    }

    #[test]
    fn holes_before_is_bound_and_zeros_are_holes() {
        let c = BlockCipher::new(&Secret32::random());
        let id = [9u8; 16];
        let at = |h| BlockPos {
            idx: 5,
            last: false,
            holes_before: Some(h),
        };
        let mut out = vec![0u8; 100 + BLOCK_OVERHEAD];
        seal_block(&c, &id, at(2), &[7u8; 100], &mut out);
        assert!(!is_hole(&out));
        let mut copy = out.clone();
        assert!(open_block(&c, &id, at(2), &mut copy).is_ok());
        // Another count of holes before it, or the format 1 AAD: refused.
        for other in [at(1), at(3), BlockPos::dense(5, false)] {
            let mut copy = out.clone();
            assert!(open_block(&c, &id, other, &mut copy).is_err(), "{other:?}");
        }
        assert!(is_hole(&[0u8; 4096 + BLOCK_OVERHEAD]));
        let mut almost = vec![0u8; 4096 + BLOCK_OVERHEAD];
        almost[4096 + BLOCK_OVERHEAD - 1] = 1;
        assert!(!is_hole(&almost));
    }
}
