//! Reading a format 2 file, which may have holes (format/block.rs): which blocks of a run
//! are holes, how many holes precede each data block (its AAD says), and the check that
//! makes a hole believable: the data block after it opens with the run's length in its AAD.
//! What a read learns is kept in `HoleHints` until the file next changes, so sequential
//! reads do not look back, and a hole is checked once.

use std::os::unix::fs::FileExt;

use fuser::Errno;

use super::{FileState, OpenFile};
use crate::format::{is_hole, open_block, BlockGeometry, BlockPos, BLOCK_OVERHEAD};
use crate::holes;

/// What reads have established about a file's holes since it last changed.
#[derive(Default)]
pub(super) struct HoleHints {
    /// Hole runs [a, b) whose data block b opened with b - a holes before it.
    verified: Vec<(u64, u64)>,
    /// Consecutive blocks lo..=hi known to be data (the last a read or write saw).
    data: Option<(u64, u64)>,
}

impl HoleHints {
    /// Holes right before block `idx`, if these hints know without I/O.
    fn lead(&self, idx: u64) -> Option<u64> {
        if idx == 0
            || self
                .data
                .is_some_and(|(lo, hi)| (lo..=hi).contains(&(idx - 1)))
        {
            return Some(0);
        }
        self.verified
            .iter()
            .find(|&&(_, b)| b == idx)
            .map(|&(a, b)| b - a)
    }

    fn covers(&self, a: u64, b: u64) -> bool {
        self.verified.iter().any(|&(va, vb)| va == a && vb >= b)
    }

    /// Blocks lo..=hi are data.
    pub(super) fn note_data(&mut self, lo: u64, hi: u64) {
        self.data = Some((lo, hi));
    }

    /// Block b is data with b - a holes right before it.
    pub(super) fn note_run(&mut self, a: u64, b: u64) {
        if self.verified.len() >= 64 {
            self.verified.remove(0);
        }
        self.verified.push((a, b));
    }
}

fn eio() -> Errno {
    Errno::EIO
}

impl OpenFile {
    /// Holes immediately before block `idx`: from the hints, else counted on disk.
    pub(super) fn lead(&self, g: BlockGeometry, idx: u64) -> Result<u64, Errno> {
        if let Some(n) = self.hints.lock().map_err(|_| eio())?.lead(idx) {
            return Ok(n);
        }
        holes::holes_before(&self.file, g, idx).map_err(|e| self.io_fail("scan for holes", e))
    }

    pub(super) fn io_fail(&self, what: &str, e: std::io::Error) -> Errno {
        tracing::warn!("{}: {what}: {e}", self.label);
        Errno::from(e)
    }

    /// Open the blocks of `buf` (blocks first.. of a format 2 file, at stride) in place:
    /// holes stay zero (checked against the data block after them), data blocks open under
    /// their position and the holes before them.
    pub(super) fn open_sparse(
        &self,
        st: &FileState,
        g: BlockGeometry,
        first: u64,
        final_idx: u64,
        buf: &mut [u8],
    ) -> Result<(), Errno> {
        let stride = g.block_size() as usize + BLOCK_OVERHEAD;
        let hole: Vec<bool> = buf
            .chunks(stride)
            .enumerate()
            .map(|(i, c)| first + i as u64 != final_idx && is_hole(c))
            .collect();
        let last = first + hole.len() as u64 - 1;
        let cipher = self.cipher(st)?;
        let id = st.header.file_id;
        // The leading count: known, or (for a data block) guessed 0 and checked by opening.
        let mut run = if hole[0] {
            self.lead(g, first)?
        } else {
            let n = stride.min(buf.len());
            self.open_first(st, g, first, final_idx, &mut buf[..n])?
        };
        let mut pos: Vec<Option<BlockPos>> = Vec::with_capacity(hole.len());
        let mut runs = Vec::new();
        for (i, &h) in hole.iter().enumerate() {
            let idx = first + i as u64;
            if i == 0 && !h {
                pos.push(None); // opened by open_first
                run = 0;
            } else if h {
                run += 1;
                pos.push(None);
            } else {
                if run > 0 {
                    runs.push((idx - run, idx));
                }
                pos.push(Some(BlockPos {
                    idx,
                    last: idx == final_idx,
                    holes_before: Some(run),
                }));
                run = 0;
            }
        }
        self.open_all(buf, stride, |(i, chunk)| match pos[i] {
            Some(p) => open_block(cipher, &id, p, chunk).map(|_| ()),
            None => Ok(()),
        })?;
        if run > 0 {
            self.check_trailing_run(st, g, last + 1 - run, last, final_idx)?;
        }
        let mut hints = self.hints.lock().map_err(|_| eio())?;
        for (a, b) in runs {
            hints.note_run(a, b);
        }
        if let Some((lo, hi)) = trailing_data(first, &hole) {
            hints.note_data(lo, hi);
        }
        Ok(())
    }

    /// Open data block `idx` (the first of a read) under the holes before it: 0 when the
    /// hints say so or when that opens, else the count on disk.
    fn open_first(
        &self,
        st: &FileState,
        g: BlockGeometry,
        idx: u64,
        final_idx: u64,
        chunk: &mut [u8],
    ) -> Result<u64, Errno> {
        let cipher = self.cipher(st)?;
        let id = st.header.file_id;
        let at = |h| BlockPos {
            idx,
            last: idx == final_idx,
            holes_before: Some(h),
        };
        let known = self.hints.lock().map_err(|_| eio())?.lead(idx);
        let guess = known.unwrap_or(0);
        let copy = if known.is_none() {
            Some(chunk.to_vec())
        } else {
            None
        };
        if open_block(cipher, &id, at(guess), chunk).is_ok() {
            return Ok(0);
        }
        let fail = || {
            tracing::warn!(
                "{}: block {idx} failed authentication (tampered or damaged ciphertext)",
                self.label
            );
            eio()
        };
        let Some(copy) = copy else {
            return Err(fail());
        };
        chunk.copy_from_slice(&copy);
        let lead = holes::holes_before(&self.file, g, idx).map_err(|e| self.io_fail("scan", e))?;
        if lead == 0 || open_block(cipher, &id, at(lead), chunk).is_err() {
            return Err(fail());
        }
        self.hints
            .lock()
            .map_err(|_| eio())?
            .note_run(idx - lead, idx);
        Ok(0)
    }

    /// A read ending in holes a..=last: the data block after them must open with the whole
    /// run's length before it, or the holes are not the file's.
    fn check_trailing_run(
        &self,
        st: &FileState,
        g: BlockGeometry,
        a: u64,
        last: u64,
        final_idx: u64,
    ) -> Result<(), Errno> {
        if self.hints.lock().map_err(|_| eio())?.covers(a, last + 1) {
            return Ok(());
        }
        let d = holes::next_data_block(&self.file, g, last + 1, final_idx)
            .map_err(|e| self.io_fail("scan for data", e))?;
        self.check_run(st, g, a, d, final_idx)
    }

    /// Check that blocks a..d are holes of this file: data block d opens with d - a before it.
    pub(super) fn check_run(
        &self,
        st: &FileState,
        g: BlockGeometry,
        a: u64,
        d: u64,
        final_idx: u64,
    ) -> Result<(), Errno> {
        let c0 = g.block_to_cipher_off(d);
        let c1 = match d == final_idx {
            true => crate::format::cipher_len_for(g, st.size),
            false => c0 + g.block_size() + BLOCK_OVERHEAD as u64,
        };
        let mut b = vec![0u8; (c1 - c0) as usize];
        self.file
            .read_exact_at(&mut b, c0)
            .map_err(|e| self.io_fail("read", e))?;
        let pos = BlockPos {
            idx: d,
            last: d == final_idx,
            holes_before: Some(d - a),
        };
        if open_block(self.cipher(st)?, &st.header.file_id, pos, &mut b).is_err() {
            tracing::warn!(
                "{}: blocks {a}..{d} read as holes the file does not have (zeroed ciphertext)",
                self.label
            );
            return Err(eio());
        }
        self.hints.lock().map_err(|_| eio())?.note_run(a, d);
        Ok(())
    }

    /// Forget what reads established: the file changed.
    pub(super) fn forget_hints(&self) {
        if let Ok(mut h) = self.hints.lock() {
            *h = HoleHints::default();
        }
    }
}

/// The last run of data blocks among blocks first.. (`hole` says which are holes).
pub(super) fn trailing_data(first: u64, hole: &[bool]) -> Option<(u64, u64)> {
    let hi = hole.iter().rposition(|&h| !h)?;
    let lo = hole[..hi].iter().rposition(|&h| h).map_or(0, |k| k + 1);
    Some((first + lo as u64, first + hi as u64))
}
