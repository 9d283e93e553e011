//! The write path of an open file: which blocks a write changes (WritePlan), the old
//! plaintext it does not cover, the new blocks sealed (in parallel when large), and the write
//! itself, with the overwritten bytes put back if an extending write fails half way.

use std::collections::HashMap;
use std::os::unix::fs::FileExt;

use fuser::Errno;
use rayon::prelude::*;

use super::{FileState, OpenFile, PARALLEL_BYTES, TASK_BYTES};
use crate::format::{
    blocks_for, cipher_len_for, seal_block_in_place, BlockGeometry, BlockPos, BLOCK_OVERHEAD,
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
        let sparse = st.header.sparse();
        let lead = match sparse {
            true => Some(self.lead(plan.g, plan.start)?),
            false => None,
        };
        let next = match sparse {
            true => self.successor(st, &plan)?,
            false => None,
        };
        let (out, holes, tail) = self.seal_blocks(st, &plan, &old, data, lead)?;
        let resealed = match next {
            Some(n) => self.reseal_successor(st, &plan, n, &holes, lead)?,
            None => None,
        };
        self.forget_hints();
        let one_block = undo.as_ref().is_some_and(|u| u.len() <= plan.stride);
        let put = match one_block && !holes.contains(&true) && resealed.is_none() {
            // A growing write that changes only the old final block, whose bytes it keeps:
            // one write, put back if it fails (a full disk included), not two.
            true => self.file.write_all_at(&out, plan.c0).map_err(|e| (e, true)),
            false => self.put_blocks(&plan, &out, &holes, resealed, lead),
        };
        if let Err((e, touched)) = put {
            tracing::warn!("{}: write failed: {e}", self.label);
            match (undo, touched) {
                (Some(b), true) => self.put_back(&b, &plan),
                _ if plan.new_size > plan.old_size => self.cut_back(&plan),
                _ => {}
            }
            return Err(Errno::from(e));
        }
        if let (Some((lo, hi)), Ok(mut h)) = (
            super::sparse::trailing_data(plan.start, &holes),
            self.hints.lock(),
        ) {
            h.note_data(lo, hi);
            // The next write, which starts at this one's last block, need not look back.
            if let Some(BlockPos {
                idx,
                holes_before: Some(n),
                ..
            }) = tail
            {
                h.note_run(idx - n, idx);
            }
        }
        // Only a new length goes to the catalog: an in-place write leaves it untouched.
        st.len_dirty |= plan.new_size != plan.old_size;
        st.size = plan.new_size;
        Ok(())
    }

    /// Write the sealed blocks: data blocks as they are, hole blocks as holes (punched where
    /// the old file had bytes, left unwritten past its end), then a resealed successor. What
    /// lies past the old end goes first: a full disk stops the write there, before a byte of
    /// the old file has changed (the error says whether one had: `true`).
    fn put_blocks(
        &self,
        p: &WritePlan,
        out: &[u8],
        holes: &[bool],
        resealed: Option<(u64, Vec<u8>)>,
        lead: Option<u64>,
    ) -> Result<(), (std::io::Error, bool)> {
        let split = p.old_clen.clamp(p.c0, p.c0 + out.len() as u64);
        let beyond = |at: u64, len: usize| (at.max(split), (at + len as u64).max(split));
        let within = |at: u64, len: usize| (at.min(split), (at + len as u64).min(split));
        self.put_part(p, out, holes, lead.unwrap_or(0), beyond)
            .map_err(|e| (e, false))?;
        // Blocks of the old file may be holes this write fills: their space is reserved
        // first, so that a full disk refuses the write before it has changed anything (a
        // write stopped half way would leave the blocks after it counting the wrong holes).
        // An extending write rewrites only the old final block here, which is on disk.
        // Nor need blocks that are all holes now (out-of-order writeback fills them): a
        // write stopped half way punches them again. Reserving them would place them on disk
        // ahead of the data still in the page cache around them, fragmenting the file (954
        // extents for a 1 GiB dd instead of 10, and a cold read 12-16 % slower).
        let only_final = p.new_size > p.old_size && p.start + 1 == blocks_for(p.g, p.old_size);
        let refill = split > p.c0 && !only_final && lead.is_some() && self.only_holes(p);
        if split > p.c0 && !only_final && !refill {
            crate::holes::reserve(&self.file, p.c0, split - p.c0).map_err(|e| (e, false))?;
        }
        if let Err(e) = self.put_part(p, out, holes, lead.unwrap_or(0), within) {
            let from = crate::holes::hole_start(p.c0, lead.unwrap_or(0));
            let undone = refill && crate::holes::punch(&self.file, from, split - from).is_ok();
            return Err((e, !undone));
        }
        if let Some((at, b)) = resealed {
            self.file.write_all_at(&b, at).map_err(|e| (e, true))?;
        }
        Ok(())
    }

    /// Whether every block an in-place write of a format 2 file covers is a hole now: then
    /// punching them again puts the file back as it was.
    fn only_holes(&self, p: &WritePlan) -> bool {
        let old_final = blocks_for(p.g, p.old_size).saturating_sub(1);
        p.last < old_final
            && matches!(
                crate::holes::next_data_block(&self.file, p.g, p.start, old_final),
                Ok(d) if d > p.last
            )
    }

    /// The part of `out` that `clip` keeps of each run of data blocks or holes.
    fn put_part(
        &self,
        p: &WritePlan,
        out: &[u8],
        holes: &[bool],
        lead: u64,
        clip: impl Fn(u64, usize) -> (u64, u64),
    ) -> std::io::Result<()> {
        let mut i = 0;
        while i < holes.len() {
            let h = holes[i];
            let j = (i..holes.len())
                .find(|&k| holes[k] != h)
                .unwrap_or(holes.len());
            let (s, e) = (i * p.stride, (j * p.stride).min(out.len()));
            let (a, b) = clip(p.c0 + s as u64, e - s);
            if a < b && !h {
                let from = (a - p.c0) as usize;
                self.file
                    .write_all_at(&out[from..from + (b - a) as usize], a)?;
            } else if a < b && a < p.old_clen {
                // A run right after earlier holes takes their shared 4 KiB with it.
                let from = match i == 0 && a == p.c0 {
                    true => crate::holes::hole_start(a, lead),
                    false => a,
                };
                crate::holes::punch(&self.file, from, b - from)?;
            }
            i = j;
        }
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
                Some(u) if !st.header.sparse() => {
                    let at = (g.block_to_cipher_off(idx) - p.c0) as usize;
                    self.open_copy(st, g, idx, &u[at..(at + p.stride).min(u.len())])?
                }
                _ => self.block_plain(st, g, idx)?,
            };
            old.insert(idx, plain);
        }
        Ok(old)
    }

    /// The new ciphertext of blocks `start..=last`: old plaintext where the write does not
    /// reach, `data` where it does, each block sealed under its position. In a format 2 file
    /// (`lead` is the count of holes before `start`) a full non-final block of zeros becomes
    /// a hole: zero ciphertext, flagged in the returned list.
    fn seal_blocks(
        &self,
        st: &FileState,
        p: &WritePlan,
        old: &HashMap<u64, Vec<u8>>,
        data: &[u8],
        lead: Option<u64>,
    ) -> Result<Sealed, Errno> {
        let mut out = vec![0u8; (p.c1 - p.c0) as usize];
        let fill = |(i, chunk): (usize, &mut [u8])| {
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
            lead.is_some() && idx != p.new_n - 1 && crate::format::is_hole(plain)
        };
        let big = out.len() >= PARALLEL_BYTES;
        let min = (TASK_BYTES / p.stride).max(1);
        let holes: Vec<bool> = match big {
            true => out
                .par_chunks_mut(p.stride)
                .with_min_len(min)
                .enumerate()
                .map(fill)
                .collect(),
            false => out.chunks_mut(p.stride).enumerate().map(fill).collect(),
        };
        let pos = positions(p, &holes, lead);
        let id = st.header.file_id;
        let cipher = self.cipher(st)?;
        let seal = |(i, chunk): (usize, &mut [u8])| match pos[i] {
            Some(at) => seal_block_in_place(cipher, &id, at, chunk),
            None => chunk.fill(0),
        };
        match big {
            true => out
                .par_chunks_mut(p.stride)
                .with_min_len(min)
                .enumerate()
                .for_each(seal),
            false => out.chunks_mut(p.stride).enumerate().for_each(seal),
        }
        let tail = pos.iter().rev().flatten().next().copied();
        Ok((out, holes, tail))
    }

    /// An in-place write of a format 2 file may end, or stop ending, a run of holes: the
    /// first data block after it (`d`) then counts a different number of holes before it.
    /// Found before the write: `d` and the count it was sealed with.
    fn successor(&self, st: &FileState, p: &WritePlan) -> Result<Option<(u64, u64)>, Errno> {
        if p.last + 1 >= p.new_n {
            return Ok(None);
        }
        let final_idx = blocks_for(p.g, st.size) - 1;
        let d = crate::holes::next_data_block(&self.file, p.g, p.last + 1, final_idx)
            .map_err(|e| self.io_fail("scan for data", e))?;
        let before = crate::holes::holes_before(&self.file, p.g, p.last + 1)
            .map_err(|e| self.io_fail("scan for holes", e))?;
        Ok(Some((d, d - (p.last + 1) + before)))
    }

    /// Block `d` sealed again when the holes before it changed count: (offset, ciphertext).
    fn reseal_successor(
        &self,
        st: &FileState,
        p: &WritePlan,
        (d, old_count): (u64, u64),
        holes: &[bool],
        lead: Option<u64>,
    ) -> Result<Option<(u64, Vec<u8>)>, Errno> {
        let trailing = holes.iter().rev().take_while(|&&h| h).count() as u64;
        let all = trailing == holes.len() as u64;
        let new_count = d - (p.last + 1) + trailing + if all { lead.unwrap_or(0) } else { 0 };
        if new_count == old_count {
            return Ok(None);
        }
        let final_idx = blocks_for(p.g, st.size) - 1;
        let c0 = p.g.block_to_cipher_off(d);
        let c1 = match d == final_idx {
            true => cipher_len_for(p.g, st.size),
            false => c0 + p.stride as u64,
        };
        let mut b = vec![0u8; (c1 - c0) as usize];
        self.file
            .read_exact_at(&mut b, c0)
            .map_err(|e| self.io_fail("read", e))?;
        let at = |h| BlockPos {
            idx: d,
            last: d == final_idx,
            holes_before: Some(h),
        };
        let cipher = self.cipher(st)?;
        let id = st.header.file_id;
        let plain = crate::format::open_block(cipher, &id, at(old_count), &mut b)
            .map_err(|e| {
                tracing::warn!("{}: {e} (tampered or damaged ciphertext)", self.label);
                Errno::EIO
            })?
            .to_vec();
        let mut out = vec![0u8; plain.len() + BLOCK_OVERHEAD];
        crate::format::seal_block(cipher, &id, at(new_count), &plain, &mut out);
        Ok(Some((c0, out)))
    }

    /// After an extending write that failed before it changed the old file: the old length.
    fn cut_back(&self, p: &WritePlan) {
        if let Err(r) = self.file.set_len(p.old_clen) {
            tracing::error!(
                "{}: could not cut a failed write back off ({r}); run coffer fsck",
                self.label
            );
        }
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

/// Sealed blocks at stride, which of them are holes, and the last data block's position.
type Sealed = (Vec<u8>, Vec<bool>, Option<BlockPos>);

/// Each rewritten block's position: None for a hole, else its index, finality and (format
/// 2) the holes right before it, counted on from `lead` before the first.
fn positions(p: &WritePlan, holes: &[bool], lead: Option<u64>) -> Vec<Option<BlockPos>> {
    let mut run = lead;
    holes
        .iter()
        .enumerate()
        .map(|(i, &h)| {
            let idx = p.start + i as u64;
            if h {
                run = run.map(|r| r + 1);
                return None;
            }
            let at = BlockPos {
                idx,
                last: idx == p.new_n - 1,
                holes_before: run,
            };
            run = run.map(|_| 0);
            Some(at)
        })
        .collect()
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
