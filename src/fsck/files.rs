//! fsck's check of one ciphertext file: its shape, its batch (which must authenticate, or
//! the file is never adopted), its id against its inode record (format 3), every block, and
//! with --repair the salvage of a damaged file or of one whose creation a crash cut short.

use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{salvage, Walk};
use std::fs::File;

use crate::catalog::FileRecord;
use crate::crypto::BlockCipher;
use crate::format::inode::InodeRecord;
use crate::format::{
    blocks_for, is_hole, open_block, plain_len_from_cipher, BlockGeometry, BlockPos, BLOCK_OVERHEAD,
};
use crate::format::{Header, HEADER_LEN};
use crate::store::OpenStore;

impl Walk<'_> {
    /// Record a checked file for the catalog cross-check.
    fn adopt(&mut self, h: &Header, plain_len: u64) {
        self.report.plain_bytes += plain_len;
        self.files.insert(
            h.file_id,
            FileRecord {
                batch_id: h.batch_id,
                wrapped_key: h.wrapped_key.to_vec(),
                plain_len,
            },
        );
    }

    pub(super) fn file(
        &mut self,
        path: &Path,
        crel: &Path,
        plain: &str,
        len: u64,
        rec: Option<&InodeRecord>,
    ) {
        self.report.files += 1;
        if let Some(p) = &self.opts.progress {
            p.step(len);
        }
        // Shorter than a header: a create that a crash cut short, before the header (and so
        // before any content) was written. Nothing in it can ever be read; repair makes it
        // the empty file it was when created.
        if self.opts.repair && len < HEADER_LEN as u64 {
            return self.cut_short(path, crel, plain, rec.map(|r| r.id));
        }
        // A header whose batch does not authenticate was not written by a key holder:
        // reported, never salvaged, never adopted into the catalog.
        let shape = verify_shape(self.store, path);
        if let Some(why) = shape
            .as_ref()
            .ok()
            .and_then(|(h, _)| self.batch_problem(&h.batch_id))
        {
            return self.damaged_file(crel, plain, len, why);
        }
        if let Ok((h, _)) = &shape {
            if rec.is_some_and(|r| r.id != h.file_id) {
                let why = "its content is another file's (the header's file id is not the one \
                           its sealed record names): it reads as EIO";
                return self.damaged_file(crel, plain, len, why);
            }
            // Whatever is found wrong below, the file is there: its record is not orphaned.
            self.damaged.insert(h.file_id);
            self.count_adopted(&h.batch_id);
        }
        let checked = if self.opts.keyless {
            shape
        } else {
            verify_file(self.store, path)
        };
        match checked {
            Ok((h, len)) => {
                match rec {
                    Some(r) => self.recorded_attrs(path, crel, plain, r),
                    None => self.attrs(path, crel, plain, &h.file_id),
                }
                self.adopt(&h, len)
            }
            Err(why) if self.opts.repair && !self.opts.keyless => {
                match salvage::salvage_file(self.store, path) {
                    Ok(s) => {
                        self.adopt(&s.header, s.plain_len);
                        let what = format!("{why}; {}", s.describe());
                        tracing::warn!("{}: {what}", crel.display());
                        self.fixed(crel, what);
                    }
                    Err(not) => self.damaged_file(crel, plain, len, format!("{why} ({not})")),
                }
            }
            Err(why) => self.damaged_file(crel, plain, len, why),
        }
    }

    /// A file that does not read whole: reported, and counted with its stored length (its
    /// plaintext length cannot be trusted), so that the summary says what was damaged.
    fn damaged_file(&mut self, crel: &Path, plain: &str, len: u64, why: impl std::fmt::Display) {
        self.report.damaged_files += 1;
        self.report.damaged_bytes += len;
        self.problem(crel, plain, why);
    }

    /// Make a file cut short before its header the empty file it was, in place (so it keeps
    /// its inode, mode, owner and times, and in format 3 the id its record names).
    fn cut_short(&mut self, path: &Path, crel: &Path, plain: &str, id: Option<[u8; 16]>) {
        let made = self
            .store
            .empty_file(id)
            .map_err(|e| e.to_string())
            .and_then(|(h, b)| {
                let f = open_in_store(self.store, path, libc::O_WRONLY)?;
                (|| {
                    f.write_all_at(&b, 0)?;
                    f.set_len(b.len() as u64)?;
                    f.sync_all()
                })()
                .map(|_| h)
                .map_err(|e| e.to_string())
            });
        match made {
            Ok(h) => {
                self.adopt(&h, 0);
                self.fixed(
                    crel,
                    "its creation was cut short before its header: now an empty file",
                );
            }
            Err(why) => self.problem(crel, plain, why),
        }
    }
}

/// Check what can be checked without keys: the header parses and matches the store, and the
/// length is one a valid file can have.
pub fn verify_shape(store: &OpenStore, path: &Path) -> Result<(Header, u64), String> {
    let (_, header, _, len) = read_shape(store, path)?;
    Ok((header, len))
}

/// A ciphertext file's header, checked against the store.
pub(super) fn read_header(store: &OpenStore, f: &File) -> Result<Header, String> {
    let mut hb = [0u8; HEADER_LEN];
    f.read_exact_at(&mut hb, 0)
        .map_err(|_| "header is truncated".to_string())?;
    let header = Header::decode(&hb).map_err(|e| e.to_string())?;
    if header.block_shift != store.block_shift() {
        return Err("header block size differs from the store's".into());
    }
    Ok(header)
}

/// A file below the store's root, opened without following a symlink on the way (a regular
/// file only).
pub(super) fn open_in_store(store: &OpenStore, path: &Path, flags: i32) -> Result<File, String> {
    let rel = path
        .strip_prefix(&store.root)
        .map_err(|_| "not inside the store".to_string())?;
    crate::within::open(&store.root, rel, flags, 0).map_err(|e| format!("cannot open: {e}"))
}

/// The open file, its header, its ciphertext length and its plaintext length.
fn read_shape(store: &OpenStore, path: &Path) -> Result<(File, Header, u64, u64), String> {
    let f = open_in_store(store, path, libc::O_RDONLY)?;
    let header = read_header(store, &f)?;
    let clen = f.metadata().map_err(|e| e.to_string())?.len();
    let len = plain_len_from_cipher(BlockGeometry::new(header.block_shift), clen)
        .map_err(|e| e.to_string())?;
    Ok((f, header, clen, len))
}

/// Read and authenticate every block of one ciphertext file; returns its header and length.
/// In a format 2 file a zero block is a hole, and the data block after a run of holes must
/// open with the run's length in its AAD; runs the backing filesystem keeps as holes are
/// counted without being read.
pub fn verify_file(store: &OpenStore, path: &Path) -> Result<(Header, u64), String> {
    let (f, header, clen, len) = read_shape(store, path)?;
    let key = store
        .file_key(&header)
        .map_err(|e| format!("file key does not unwrap ({e})"))?;
    let cipher = BlockCipher::new(key.secret());
    let g = BlockGeometry::new(header.block_shift);
    let n = blocks_for(g, len);
    let stride = g.block_size() as usize + BLOCK_OVERHEAD;
    // Read about 1 MiB at a time and authenticate it in parallel, at least 64 KiB per task
    // (one task per 4 KiB block costs more in scheduling than it saves).
    let run_len = ((1usize << 20) / stride).max(1) as u64;
    let per_task = ((64usize << 10) / stride).max(1);
    let sparse = header.sparse();
    let mut holes = 0u64;
    let mut idx = 0;
    while idx < n {
        if sparse {
            let skip = skip_backing_hole(&f, g, idx, n - 1)?;
            holes += skip;
            idx += skip;
        }
        let end = (idx + run_len).min(n);
        let c0 = g.block_to_cipher_off(idx);
        let c1 = if end == n {
            clen
        } else {
            g.block_to_cipher_off(end)
        };
        let mut buf = vec![0u8; (c1 - c0) as usize];
        f.read_exact_at(&mut buf, c0)
            .map_err(|e| format!("read failed: {e}"))?;
        let pos: Vec<Option<BlockPos>> = buf
            .chunks(stride)
            .enumerate()
            .map(|(i, c)| {
                let b = idx + i as u64;
                if sparse && b != n - 1 && is_hole(c) {
                    holes += 1;
                    return None;
                }
                let at = BlockPos {
                    idx: b,
                    last: b == n - 1,
                    holes_before: sparse.then_some(holes),
                };
                holes = 0;
                Some(at)
            })
            .collect();
        use rayon::prelude::*;
        buf.par_chunks_mut(stride)
            .with_min_len(per_task)
            .zip(pos.par_iter())
            .try_for_each(|(chunk, at)| match at {
                Some(at) => open_block(&cipher, &header.file_id, *at, chunk).map(|_| ()),
                None => Ok(()),
            })
            .map_err(|e| format!("{e}: the file is damaged or was tampered with"))?;
        idx = end;
    }
    Ok((header, len))
}

/// How many blocks from `idx` on (before the final one) lie wholly in a backing hole.
fn skip_backing_hole(f: &File, g: BlockGeometry, idx: u64, final_idx: u64) -> Result<u64, String> {
    let c0 = g.block_to_cipher_off(idx);
    let stride = g.block_size() + BLOCK_OVERHEAD as u64;
    let d = crate::holes::next_data(f, c0).map_err(|e| format!("seek failed: {e}"))?;
    let first_data = match d {
        None => final_idx,
        Some(d) => ((d - HEADER_LEN as u64) / stride).min(final_idx),
    };
    Ok(first_data.saturating_sub(idx))
}
