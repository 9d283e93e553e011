//! The write path of an open file: which blocks a write changes (WritePlan), the old
//! plaintext it does not cover, the new blocks sealed (in parallel when large), and the write
//! itself, with the overwritten bytes put back if an extending write fails half way.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;

use fuser::Errno;
use rayon::prelude::*;

use super::{FileState, OpenFile, PARALLEL_BYTES, TASK_BYTES};
use crate::format::{
    blocks_for, cipher_len_for, seal_block_in_place, BlockGeometry, BLOCK_OVERHEAD,
};

impl OpenFile {
    /// Write `data` at `off` (at most the current size): plan which blocks change, read what
    /// the write does not cover, seal the new blocks (in parallel when large), then write
    /// them, putting the file back as it was if that fails.
    pub(super) fn write_locked(
        &self,
        st: &mut FileState,
        off: u64,
        data: &[u8],
    ) -> Result<(), Errno> {
        if data.is_empty() {
            return Ok(());
        }
        debug_assert!(off <= st.size);
        let plan = WritePlan::new(
            BlockGeometry::new(st.header.block_shift),
            st.size,
            off,
            data,
        );
        let undo = self.read_undo(&plan)?;
        let old = self.partial_blocks(st, &plan, undo.as_deref())?;
        let out = self.seal_blocks(st, &plan, &old, data)?;
        if let Err(e) = self.file.write_all_at(&out, plan.c0) {
            tracing::warn!("{}: write failed: {e}", self.label);
            if let Some(b) = undo {
                self.put_back(&b, &plan);
            }
            return Err(Errno::from(e));
        }
        // Only a new length goes to the catalog: an in-place write leaves it untouched.
        st.len_dirty |= plan.new_size != plan.old_size;
        st.size = plan.new_size;
        Ok(())
    }

    /// A write that grows the file needs new space, and on a full disk it can stop half way,
    /// after it has replaced the old last block (sealed as final) with its non-final
    /// successor. Keep the bytes it overwrites, to put the file back as it was; the old blocks
    /// it covers in part are then opened from this copy, not read again.
    fn read_undo(&self, p: &WritePlan) -> Result<Option<Vec<u8>>, Errno> {
        if p.new_size <= p.old_size || p.c0 >= p.old_clen {
            return Ok(None);
        }
        let mut b = vec![0u8; (p.old_clen - p.c0) as usize];
        self.file.read_exact_at(&mut b, p.c0).map_err(|e| {
            tracing::warn!("{}: read before an extending write failed: {e}", self.label);
            Errno::from(e)
        })?;
        Ok(Some(b))
    }

    /// Old plaintext of the blocks that the write covers only in part.
    fn partial_blocks(
        &self,
        st: &FileState,
        p: &WritePlan,
        undo: Option<&[u8]>,
    ) -> Result<HashMap<u64, Vec<u8>>, Errno> {
        let (g, bs) = (p.g, p.g.block_size());
        let mut old = HashMap::new();
        for idx in p.start..=p.last {
            let b0 = g.block_to_plain_off(idx);
            let b1 = (b0 + bs).min(p.new_size);
            let covered = p.off <= b0 && p.end >= b1;
            if covered || b0 >= p.old_size {
                continue;
            }
            let plain = match undo {
                Some(u) => {
                    let at = (g.block_to_cipher_off(idx) - p.c0) as usize;
                    self.open_copy(st, g, idx, &u[at..(at + p.stride).min(u.len())])?
                }
                None => self.block_plain(st, g, idx)?,
            };
            old.insert(idx, plain);
        }
        Ok(old)
    }

    /// The new ciphertext of blocks `start..=last`: old plaintext where the write does not
    /// reach, `data` where it does, each block sealed under its index and final flag.
    fn seal_blocks(
        &self,
        st: &FileState,
        p: &WritePlan,
        old: &HashMap<u64, Vec<u8>>,
        data: &[u8],
    ) -> Result<Vec<u8>, Errno> {
        let mut out = vec![0u8; (p.c1 - p.c0) as usize];
        let id = st.header.file_id;
        let cipher = self.cipher(st)?;
        let seal = |(i, chunk): (usize, &mut [u8])| {
            let idx = p.start + i as u64;
            let b0 = p.g.block_to_plain_off(idx);
            let plen = chunk.len() - BLOCK_OVERHEAD;
            let plain = &mut chunk[12..12 + plen];
            if let Some(o) = old.get(&idx) {
                let n = o.len().min(plen);
                plain[..n].copy_from_slice(&o[..n]);
            }
            // Overlay the part of `data` that falls in this block.
            let s = p.off.max(b0);
            let e = p.end.min(b0 + plen as u64);
            if s < e {
                plain[(s - b0) as usize..(e - b0) as usize]
                    .copy_from_slice(&data[(s - p.off) as usize..(e - p.off) as usize]);
            }
            seal_block_in_place(cipher, &id, idx, idx == p.new_n - 1, chunk);
        };
        if out.len() >= PARALLEL_BYTES {
            out.par_chunks_mut(p.stride)
                .with_min_len((TASK_BYTES / p.stride).max(1))
                .enumerate()
                .for_each(seal);
        } else {
            out.chunks_mut(p.stride).enumerate().for_each(seal);
        }
        Ok(out)
    }

    /// After a failed extending write: the overwritten bytes back, and the old length.
    fn put_back(&self, undo: &[u8], p: &WritePlan) {
        let restored = self
            .file
            .write_all_at(undo, p.c0)
            .and_then(|_| self.file.set_len(p.old_clen));
        if let Err(r) = restored {
            tracing::error!(
                "{}: could not put the file back after a failed write ({r}); its end may read \
                 as EIO: run coffer fsck",
                self.label
            );
        }
    }
}

/// Which blocks a write of `len` bytes at `off` into a file of `old_size` bytes changes, and
/// where they lie in the ciphertext.
struct WritePlan {
    g: BlockGeometry,
    off: u64,
    end: u64,
    old_size: u64,
    new_size: u64,
    /// Blocks after the write.
    new_n: u64,
    /// The first and last block rewritten.
    start: u64,
    last: u64,
    /// Ciphertext offsets of the rewritten range, and of the old file's end.
    c0: u64,
    c1: u64,
    old_clen: u64,
    /// Ciphertext bytes per full block.
    stride: usize,
}

impl WritePlan {
    fn new(g: BlockGeometry, old_size: u64, off: u64, data: &[u8]) -> WritePlan {
        let end = off + data.len() as u64;
        let new_size = old_size.max(end);
        let old_n = blocks_for(g, old_size);
        let new_n = blocks_for(g, new_size);
        let first = g.plain_off_to_block(off);
        let last = g.plain_off_to_block(end - 1);
        // A full final block that the write does not touch loses its final flag.
        let start = match new_n > old_n && old_n - 1 < first {
            true => old_n - 1,
            false => first,
        };
        let c0 = g.block_to_cipher_off(start);
        WritePlan {
            g,
            off,
            end,
            old_size,
            new_size,
            new_n,
            start,
            last,
            c0,
            c1: cipher_len_for(g, new_size).min(g.block_to_cipher_off(last + 1)),
            old_clen: cipher_len_for(g, old_size),
            stride: g.block_size() as usize + BLOCK_OVERHEAD,
        }
    }
}
