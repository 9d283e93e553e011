//! `fsck --repair` of a file with blocks that fail authentication: what a crash leaves when it
//! cuts a write short (a block half old and half new, or a tail half written), or what
//! tampering leaves. Every block that still authenticates is kept, under the file's own key
//! and header; a damaged block inside the file becomes zeros, so the blocks after it keep
//! their offsets; a damaged last block is cut off. The caller reports exactly which plaintext
//! bytes were lost. Nothing that could be read before is changed.

use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::crypto::BlockCipher;
use crate::format::{
    is_hole, open_block, seal_block, BlockGeometry, BlockPos, Header, BLOCK_OVERHEAD, HEADER_LEN,
};
use crate::store::OpenStore;

pub struct Salvaged {
    pub header: Header,
    pub plain_len: u64,
    /// Plaintext byte ranges that could not be read and are now zeros.
    pub zeroed: Vec<(u64, u64)>,
    /// Ciphertext bytes cut off the end: blocks that did not authenticate, or bytes after
    /// the real last block.
    pub cut: u64,
}

impl Salvaged {
    /// One line for fsck's report.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.zeroed.is_empty() {
            let ranges: Vec<String> = self
                .zeroed
                .iter()
                .map(|(a, b)| format!("{a}..{b}"))
                .collect();
            parts.push(format!(
                "bytes {} could not be read and are now zeros",
                ranges.join(", ")
            ));
        }
        if self.cut > 0 {
            parts.push(format!(
                "{} bytes of damaged ciphertext at its end were cut off",
                self.cut
            ));
        }
        if parts.is_empty() {
            parts.push("block flags re-sealed".into());
        }
        format!(
            "salvaged (a write cut short by a crash, or tampering): {}; {} bytes kept",
            parts.join("; "),
            self.plain_len
        )
    }
}

/// A block as found: its plaintext and the position it opened at (a hole: zeros, no position).
struct Got {
    plain: Vec<u8>,
    at: Option<BlockPos>,
}

/// A file being salvaged: its blocks' ciphertext sizes, and each block's plaintext and
/// position where it authenticates (final or not; after the holes before it, in format 2).
struct Salvage {
    f: std::fs::File,
    header: Header,
    cipher: BlockCipher,
    g: BlockGeometry,
    sizes: Vec<u64>,
    plains: Vec<Option<Got>>,
    /// Bytes cut off the end.
    cut: u64,
}

/// Keep every block that still authenticates, cut a damaged end, turn a damaged block inside
/// the file into zeros, and re-seal final flags where the file now ends.
pub fn salvage_file(store: &OpenStore, path: &Path) -> Result<Salvaged, String> {
    let mut s = Salvage::open(store, path)?;
    s.read_blocks()?;
    s.trim_damaged_end()?;
    s.reseal()
}

impl Salvage {
    fn open(store: &OpenStore, path: &Path) -> Result<Salvage, String> {
        let f = super::open_in_store(store, path, libc::O_RDWR)?;
        let header = super::read_header(store, &f)?;
        let key = store
            .file_key(&header)
            .map_err(|e| format!("cannot salvage: the file key does not unwrap ({e})"))?;
        let g = BlockGeometry::new(header.block_shift);
        let stride = g.block_size() + BLOCK_OVERHEAD as u64;
        let clen = f.metadata().map_err(|e| e.to_string())?.len();
        let body = clen.saturating_sub(HEADER_LEN as u64);
        // The ciphertext size of each block present; a tail too short to be a block goes
        // (it held no plaintext: it was shorter than a block's overhead).
        let mut sizes = vec![stride; (body / stride) as usize];
        let tail = body % stride;
        if tail > BLOCK_OVERHEAD as u64 || (tail == BLOCK_OVERHEAD as u64 && sizes.is_empty()) {
            sizes.push(tail);
        }
        Ok(Salvage {
            f,
            cipher: BlockCipher::new(key.secret()),
            header,
            g,
            sizes,
            plains: Vec::new(),
            cut: 0,
        })
    }

    fn read_block(&self, idx: u64, len: u64) -> Result<Vec<u8>, String> {
        let mut buf = vec![0u8; len as usize];
        self.f
            .read_exact_at(&mut buf, self.g.block_to_cipher_off(idx))
            .map_err(|e| format!("read failed: {e}"))?;
        Ok(buf)
    }

    /// Plaintext of every block and where it opened; None where it does not authenticate
    /// as final or not (after the holes counted before it, in a format 2 file).
    fn read_blocks(&mut self) -> Result<(), String> {
        let id = self.header.file_id;
        let sparse = self.header.sparse();
        let mut run = 0u64;
        for (i, &size) in self.sizes.iter().enumerate() {
            let idx = i as u64;
            let last = i + 1 == self.sizes.len();
            let buf = self.read_block(idx, size)?;
            if sparse && !last && is_hole(&buf) {
                let plain = vec![0u8; buf.len() - BLOCK_OVERHEAD];
                self.plains.push(Some(Got { plain, at: None }));
                run += 1;
                continue;
            }
            let holes_before = sparse.then_some(run);
            // Sealed with the other flag: an old final block followed by appended blocks,
            // or a block that was to be final.
            let got = [last, !last].into_iter().find_map(|l| {
                let at = BlockPos {
                    idx,
                    last: l,
                    holes_before,
                };
                let mut b = buf.clone();
                open_block(&self.cipher, &id, at, &mut b).ok().map(|p| Got {
                    plain: p.to_vec(),
                    at: Some(at),
                })
            });
            self.plains.push(got);
            run = 0;
        }
        Ok(())
    }

    /// Holes (as found) right before block `i`.
    fn run_before(&self, i: usize) -> u64 {
        let holes = self.plains[..i].iter().rev();
        holes
            .take_while(|p| p.as_ref().is_some_and(|g| g.at.is_none()))
            .count() as u64
    }

    /// A damaged end: the real last block may sit in front of bytes appended after it (try it
    /// at every shorter length, as a final block); else it is cut off, not made zeros.
    fn trim_damaged_end(&mut self) -> Result<(), String> {
        let id = self.header.file_id;
        while self.plains.last().is_some_and(|p| p.is_none()) {
            let i = self.sizes.len() - 1;
            let idx = i as u64;
            let buf = self.read_block(idx, self.sizes[i])?;
            let at = BlockPos {
                idx,
                last: true,
                holes_before: self.header.sparse().then(|| self.run_before(i)),
            };
            let found = (BLOCK_OVERHEAD..buf.len()).rev().find_map(|l| {
                let mut b = buf[..l].to_vec();
                open_block(&self.cipher, &id, at, &mut b)
                    .ok()
                    .map(|p| p.to_vec())
            });
            let Some(p) = found else {
                // Cut off, and try the block before it; with none left the file is empty.
                self.cut += self.sizes.pop().unwrap_or(0);
                self.plains.pop();
                continue;
            };
            self.cut += self.sizes[i] - (p.len() + BLOCK_OVERHEAD) as u64;
            self.sizes[i] = (p.len() + BLOCK_OVERHEAD) as u64;
            self.plains[i] = Some(Got {
                plain: p,
                at: Some(at),
            });
            break;
        }
        Ok(())
    }

    /// Re-seal each block that does not read (as zeros) or whose position is wrong for where
    /// the file now ends (its final flag, the holes before it); cut the file there and make
    /// it durable. Holes stay holes, but for a new final block.
    fn reseal(self) -> Result<Salvaged, String> {
        let (g, id, n) = (self.g, self.header.file_id, self.sizes.len());
        let bs = g.block_size();
        let write = |at: BlockPos, data: &[u8], size: usize| {
            let mut out = vec![0u8; size];
            seal_block(&self.cipher, &id, at, data, &mut out);
            self.f
                .write_all_at(&out, g.block_to_cipher_off(at.idx))
                .map_err(|e| format!("write failed: {e}"))
        };
        let sparse = self.header.sparse();
        let mut zeroed = Vec::new();
        let mut plain_len = 0;
        let mut run = 0u64;
        for (i, (size, got)) in self.sizes.iter().zip(&self.plains).enumerate() {
            let (idx, last) = (i as u64, i + 1 == n);
            let len = size - BLOCK_OVERHEAD as u64;
            plain_len += len;
            let is_hole = got.as_ref().is_some_and(|g| g.at.is_none());
            if is_hole && !last {
                run += 1;
                continue;
            }
            let at = BlockPos {
                idx,
                last,
                holes_before: sparse.then_some(run),
            };
            run = 0;
            match got {
                Some(g) if g.at == Some(at) => {}
                Some(g) => write(at, &g.plain, *size as usize)?,
                None => {
                    zeroed.push((idx * bs, idx * bs + len));
                    write(at, &vec![0u8; len as usize], *size as usize)?;
                }
            }
        }
        if n == 0 {
            // Only a header: give it its empty final block.
            let at = BlockPos {
                idx: 0,
                last: true,
                holes_before: sparse.then_some(0),
            };
            write(at, &[], BLOCK_OVERHEAD)?;
        }
        let blocks = self.sizes.iter().sum::<u64>().max(BLOCK_OVERHEAD as u64);
        let f = &self.f;
        f.set_len(HEADER_LEN as u64 + blocks)
            .map_err(|e| format!("cannot cut: {e}"))?;
        f.sync_all().map_err(|e| format!("cannot sync: {e}"))?;
        Ok(Salvaged {
            header: self.header,
            plain_len,
            zeroed,
            cut: self.cut,
        })
    }
}
