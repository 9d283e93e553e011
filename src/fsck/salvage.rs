//! `fsck --repair` of a file with blocks that fail authentication: what a crash leaves when it
//! cuts a write short (a block half old and half new, or a tail half written), or what
//! tampering leaves. Every block that still authenticates is kept, under the file's own key
//! and header; a damaged block inside the file becomes zeros, so the blocks after it keep
//! their offsets; a damaged last block is cut off. The caller reports exactly which plaintext
//! bytes were lost. Nothing that could be read before is changed.

use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::crypto::BlockCipher;
use crate::format::{open_block, seal_block, BlockGeometry, Header, BLOCK_OVERHEAD, HEADER_LEN};
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

pub fn salvage_file(store: &OpenStore, path: &Path) -> Result<Salvaged, String> {
    let f = super::open_in_store(store, path, libc::O_RDWR)?;
    let header = super::read_header(store, &f)?;
    let key = store
        .file_key(&header)
        .map_err(|e| format!("cannot salvage: the file key does not unwrap ({e})"))?;
    let cipher = BlockCipher::new(key.secret());
    let g = BlockGeometry::new(header.block_shift);
    let bs = g.block_size();
    let stride = bs + BLOCK_OVERHEAD as u64;
    let clen = f.metadata().map_err(|e| e.to_string())?.len();
    let body = clen.saturating_sub(HEADER_LEN as u64);
    // The ciphertext size of each block present; a tail too short to be a block goes.
    let mut sizes = vec![stride; (body / stride) as usize];
    let tail = body % stride;
    if tail > BLOCK_OVERHEAD as u64 || (tail == BLOCK_OVERHEAD as u64 && sizes.is_empty()) {
        sizes.push(tail);
    }
    // A dropped tail held no plaintext (it was shorter than a block's overhead).
    let mut cut = 0;

    // Plaintext of every block and whether it was sealed as final; None where it does not
    // authenticate either way.
    let mut plains: Vec<Option<(Vec<u8>, bool)>> = Vec::with_capacity(sizes.len());
    for (i, &size) in sizes.iter().enumerate() {
        let idx = i as u64;
        let last = i + 1 == sizes.len();
        let mut buf = vec![0u8; size as usize];
        f.read_exact_at(&mut buf, g.block_to_cipher_off(idx))
            .map_err(|e| format!("read failed: {e}"))?;
        let mut copy = buf.clone();
        let got = match open_block(&cipher, &header.file_id, idx, last, &mut buf) {
            Ok(p) => Some((p.to_vec(), last)),
            // Sealed with the other flag: an old final block followed by appended blocks,
            // or a block that was to be final.
            Err(_) => open_block(&cipher, &header.file_id, idx, !last, &mut copy)
                .ok()
                .map(|p| (p.to_vec(), !last)),
        };
        plains.push(got);
    }
    // A damaged end: the real last block may sit in front of bytes appended after it (try
    // it at every shorter length, as a final block); else it is cut off, not made zeros.
    while plains.last().is_some_and(|p| p.is_none()) {
        let i = sizes.len() - 1;
        let idx = i as u64;
        let mut buf = vec![0u8; sizes[i] as usize];
        f.read_exact_at(&mut buf, g.block_to_cipher_off(idx))
            .map_err(|e| format!("read failed: {e}"))?;
        let found = (BLOCK_OVERHEAD..buf.len()).rev().find_map(|l| {
            let mut b = buf[..l].to_vec();
            open_block(&cipher, &header.file_id, idx, true, &mut b)
                .ok()
                .map(|p| p.to_vec())
        });
        match found {
            Some(p) => {
                cut += sizes[i] - (p.len() + BLOCK_OVERHEAD) as u64;
                sizes[i] = (p.len() + BLOCK_OVERHEAD) as u64;
                plains[i] = Some((p, true));
                break;
            }
            None => {
                // Cut off, and try the block before it; with none left the file is empty.
                cut += sizes.pop().unwrap_or(0);
                plains.pop();
            }
        }
    }
    let n = sizes.len();
    let mut zeroed = Vec::new();
    let mut plain_len = 0;
    for (i, (size, plain)) in sizes.iter().zip(&plains).enumerate() {
        let idx = i as u64;
        let last = i + 1 == n;
        let len = size - BLOCK_OVERHEAD as u64;
        // Re-sealed where it does not read, or where its final flag is wrong for where the
        // file now ends.
        let rewrite = match plain {
            Some((_, sealed_last)) => *sealed_last != last,
            None => true,
        };
        if rewrite {
            let data = match plain {
                Some((p, _)) => p.clone(),
                None => {
                    zeroed.push((idx * bs, idx * bs + len));
                    vec![0u8; len as usize]
                }
            };
            let mut out = vec![0u8; *size as usize];
            seal_block(&cipher, &header.file_id, idx, last, &data, &mut out);
            f.write_all_at(&out, g.block_to_cipher_off(idx))
                .map_err(|e| format!("write failed: {e}"))?;
        }
        plain_len += len;
    }
    if n == 0 {
        // Only a header: give it its empty final block.
        let mut out = vec![0u8; BLOCK_OVERHEAD];
        seal_block(&cipher, &header.file_id, 0, true, &[], &mut out);
        f.write_all_at(&out, HEADER_LEN as u64)
            .map_err(|e| format!("write failed: {e}"))?;
    }
    let new_len = HEADER_LEN as u64 + sizes.iter().sum::<u64>().max(BLOCK_OVERHEAD as u64);
    f.set_len(new_len).map_err(|e| format!("cannot cut: {e}"))?;
    f.sync_all().map_err(|e| format!("cannot sync: {e}"))?;
    Ok(Salvaged {
        header,
        plain_len,
        zeroed,
        cut,
    })
}
