//! Holes made on purpose in a format 2 file: growing it (a write past the end, truncate up,
//! fallocate), punching a range out, and where data and holes are (SEEK_DATA, SEEK_HOLE).

use std::os::unix::fs::FileExt;

use fuser::Errno;

use super::{FileState, OpenFile, ZERO_CHUNK};
use crate::format::{
    blocks_for, cipher_len_for, seal_block, BlockGeometry, BlockPos, BLOCK_OVERHEAD, HEADER_LEN,
};
use crate::holes;

/// The largest plaintext length whose ciphertext length fits in an off_t.
pub fn max_plain_len(g: BlockGeometry) -> u64 {
    let stride = g.block_size() + BLOCK_OVERHEAD as u64;
    let blocks = (i64::MAX as u64 - HEADER_LEN as u64) / stride;
    (blocks - 1) * g.block_size()
}

impl OpenFile {
    /// Grow a format 2 file to `to` bytes: the old final block filled out with zeros (and
    /// sealed as a full, non-final block; an empty file's becomes a hole), holes up to the
    /// new final block, and that block, zeros, sealed with the holes before it.
    pub(super) fn grow_sparse(&self, st: &mut FileState, to: u64) -> Result<(), Errno> {
        let g = BlockGeometry::new(st.header.block_shift);
        if to > max_plain_len(g) {
            return Err(Errno::EFBIG);
        }
        let bs = g.block_size();
        if st.size == 0 && to > bs {
            return self.grow_empty(st, g, to);
        }
        let edge = st.size.next_multiple_of(bs);
        if st.size < edge || st.size == 0 {
            let fill = (edge.max(bs).min(to) - st.size) as usize;
            self.write_locked(st, st.size, &vec![0u8; fill])?;
        }
        if to <= st.size {
            return Ok(());
        }
        let old_final = blocks_for(g, st.size) - 1;
        let f = (to - 1) / bs;
        let old_clen = cipher_len_for(g, st.size);
        let cipher = self.cipher(st)?;
        let id = st.header.file_id;
        // The old final block, now full, loses its final flag.
        let plain = self.block_plain(st, g, old_final)?;
        let mut old_out = vec![0u8; plain.len() + BLOCK_OVERHEAD];
        let lead = self.lead(g, old_final)?;
        let at = |idx, last, h| BlockPos {
            idx,
            last,
            holes_before: Some(h),
        };
        // A block of zeros is a hole like the ones after it.
        let zero = crate::format::is_hole(&plain);
        if !zero {
            seal_block(
                cipher,
                &id,
                at(old_final, false, lead),
                &plain,
                &mut old_out,
            );
        }
        let before = match zero {
            true => lead + f - old_final,
            false => f - old_final - 1,
        };
        let tail = vec![0u8; (to - f * bs) as usize];
        let mut new_out = vec![0u8; tail.len() + BLOCK_OVERHEAD];
        seal_block(cipher, &id, at(f, true, before), &tail, &mut new_out);
        self.forget_hints();
        let old = (old_final, old_clen, (!zero).then_some(&old_out[..]), lead);
        self.put_grown(g, old, f, &new_out)?;
        st.size = to;
        st.len_dirty = true;
        self.note_final(f, before);
        Ok(())
    }

    /// Write a grown file: what needs new space first (the new final block `f`, the old
    /// final block's new tail), so that a full disk cuts the file back as it was, none of its
    /// bytes changed; then the old final block re-sealed (`old_out`), or punched when it held
    /// only zeros (None).
    fn put_grown(
        &self,
        g: BlockGeometry,
        (old_final, old_clen, old_out, lead): (u64, u64, Option<&[u8]>, u64),
        f: u64,
        new_out: &[u8],
    ) -> Result<(), Errno> {
        let c = g.block_to_cipher_off(old_final);
        let keep = (old_clen - c) as usize;
        let grown = self
            .file
            .write_all_at(new_out, g.block_to_cipher_off(f))
            .and_then(|_| match old_out {
                None => Ok(()),
                Some(o) => self.file.write_all_at(&o[keep..], old_clen),
            });
        if let Err(e) = grown {
            let _ = self.file.set_len(old_clen);
            return Err(self.io_fail("grow", e));
        }
        let stride = g.block_size() + BLOCK_OVERHEAD as u64;
        let done = match old_out {
            None => {
                let from = holes::hole_start(c, lead);
                holes::punch(&self.file, from, c + stride - from)
            }
            Some(o) => self.file.write_all_at(&o[..keep], c),
        };
        done.map_err(|e| {
            tracing::error!(
                "{}: a failed write left block {old_final} half sealed ({e}); run coffer fsck",
                self.label
            );
            self.io_fail("grow", e)
        })
    }

    /// The new final block `f` has `before` holes right before it: the next write need not
    /// look back for them.
    fn note_final(&self, f: u64, before: u64) {
        if let Ok(mut h) = self.hints.lock() {
            h.note_data(f, f);
            h.note_run(f - before, f);
        }
    }

    /// An empty file grown past its first block: every block but the new final one is a
    /// hole, the empty final block's 28 bytes included.
    fn grow_empty(&self, st: &mut FileState, g: BlockGeometry, to: u64) -> Result<(), Errno> {
        let bs = g.block_size();
        let f = (to - 1) / bs;
        let tail = vec![0u8; (to - f * bs) as usize];
        let mut out = vec![0u8; tail.len() + BLOCK_OVERHEAD];
        let at = BlockPos {
            idx: f,
            last: true,
            holes_before: Some(f),
        };
        seal_block(self.cipher(st)?, &st.header.file_id, at, &tail, &mut out);
        self.forget_hints();
        let old_clen = cipher_len_for(g, 0);
        if let Err(e) = self.file.write_all_at(&out, g.block_to_cipher_off(f)) {
            let _ = self.file.set_len(old_clen);
            return Err(self.io_fail("grow", e));
        }
        let (c0, _) = holes::block_range(g, 0);
        holes::punch(&self.file, c0, BLOCK_OVERHEAD as u64).map_err(|e| self.io_fail("grow", e))?;
        st.size = to;
        st.len_dirty = true;
        self.note_final(f, f);
        Ok(())
    }

    /// Zeros over `off..off + len` (clipped to the file): whole blocks become holes, the
    /// edges are written as zeros. Format 1 files cannot hold holes: EOPNOTSUPP.
    pub fn punch_hole(&self, off: u64, len: u64) -> Result<(), Errno> {
        let mut st = self.write_state()?;
        if !st.header.sparse() {
            return Err(Errno::EOPNOTSUPP);
        }
        let end = off.saturating_add(len).min(st.size);
        let mut at = off;
        while at < end {
            let n = (end - at).min(ZERO_CHUNK);
            self.write_locked(&mut st, at, &vec![0u8; n as usize])?;
            at += n;
        }
        Ok(())
    }

    /// fallocate without PUNCH_HOLE: space for `off..off + len` reserved in the backing file
    /// first (so that a filesystem that cannot leaves everything as it was), then, unless
    /// `keep_size`, the file grown to cover it.
    pub fn allocate(&self, off: u64, len: u64, keep_size: bool) -> Result<(), Errno> {
        let mut st = self.write_state()?;
        let g = BlockGeometry::new(st.header.block_shift);
        let end = off.checked_add(len).ok_or(Errno::EFBIG)?;
        if end > max_plain_len(g) {
            return Err(Errno::EFBIG);
        }
        let c0 = g.block_to_cipher_off(g.plain_off_to_block(off));
        let c1 = cipher_len_for(g, end.max(st.size));
        holes::fallocate(&self.file, libc::FALLOC_FL_KEEP_SIZE, c0, c1 - c0)
            .map_err(Errno::from)?;
        if !keep_size && end > st.size {
            self.grow_locked(&mut st, end)?;
        }
        Ok(())
    }

    /// SEEK_DATA (`data`) or SEEK_HOLE from plaintext offset `off`: ENXIO at or past the end;
    /// the end itself is the hole after the last data.
    pub fn seek(&self, off: u64, data: bool) -> Result<u64, Errno> {
        let st = self.read_state()?;
        if off >= st.size {
            return Err(Errno::ENXIO);
        }
        if !st.header.sparse() {
            return Ok(if data { off } else { st.size });
        }
        let g = BlockGeometry::new(st.header.block_shift);
        let final_idx = blocks_for(g, st.size) - 1;
        let b = g.plain_off_to_block(off);
        let scan = |e| self.io_fail("seek", e);
        if data {
            let d = holes::next_data_block(&self.file, g, b, final_idx).map_err(scan)?;
            return Ok(off.max(g.block_to_plain_off(d)));
        }
        let stride = g.block_size() + BLOCK_OVERHEAD as u64;
        let mut k = b;
        while k < final_idx {
            // No block that ends before the backing file's next hole can be a hole.
            let h = holes::next_hole(&self.file, g.block_to_cipher_off(k)).map_err(scan)?;
            let first_possible = (h - HEADER_LEN as u64) / stride;
            if first_possible > k {
                k = first_possible;
                continue;
            }
            if holes::block_is_hole(&self.file, g, k).map_err(scan)? {
                return Ok(off.max(g.block_to_plain_off(k)));
            }
            k += 1;
        }
        Ok(st.size)
    }
}
