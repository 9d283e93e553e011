//! An open regular file: plaintext reads, writes and truncation over its ciphertext.
//!
//! One `OpenFile` is shared by every handle of an inode, so all of them agree on the size and
//! the key. Writes re-encrypt only the blocks they touch (plus, when a file grows past a full
//! final block, that block again with its final flag cleared). Large writes seal their blocks
//! in parallel with rayon. Reads use pread, never a memory map: a concurrent truncate of the
//! backing file would raise SIGBUS on a mapped page.

mod grow;
mod sparse;
mod write;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::RwLock;

use fuser::Errno;
use rayon::prelude::*;

use crate::catalog::{CatalogOp, FileRecord};
use crate::crypto::BlockCipher;
use crate::format::{
    blocks_for, cipher_len_for, open_block, plain_len_from_cipher, seal_block, BlockGeometry,
    BlockPos, Header, BLOCK_OVERHEAD, HEADER_LEN,
};
use crate::store::OpenStore;

/// Blocks per write at which sealing moves to rayon's pool.
/// Runs of ciphertext at least this long are sealed and opened on the rayon pool. Shorter
/// runs (the kernel's 128 KiB readahead requests, for one) stay on the FUSE worker thread:
/// four workers already overlap requests, and waking a pool thread for a few blocks cost
/// more than it saved (perf: a quarter of the read path in context switches).
const PARALLEL_BYTES: usize = 256 << 10;
/// The least work handed to one rayon task.
const TASK_BYTES: usize = 64 << 10;
/// Largest zero run written at once when a file is extended.
const ZERO_CHUNK: u64 = 8 << 20;

pub struct OpenFile {
    file: File,
    /// Backing path relative to the store, for log lines (never a plaintext name).
    label: String,
    st: RwLock<FileState>,
    /// What reads of a format 2 file learned of its holes (sparse.rs).
    hints: std::sync::Mutex<sparse::HoleHints>,
}

struct FileState {
    header: Header,
    /// None when the file's key cannot be had here (a backup-only mount and a file written
    /// before it): the file can be listed, renamed, removed or truncated to zero, not read.
    cipher: Option<BlockCipher>,
    size: u64,
    len_dirty: bool,
}

fn eio() -> Errno {
    Errno::EIO
}

impl OpenFile {
    /// Open an existing ciphertext file: read and check its header, unwrap its key. In a
    /// format-3 store `expect` is the file id its record names: a header that says another
    /// is another file's content, put under this one's record, and reads as EIO.
    pub fn open(
        store: &OpenStore,
        file: File,
        label: String,
        expect: Option<[u8; 16]>,
    ) -> Result<OpenFile, Errno> {
        let mut hb = [0u8; HEADER_LEN];
        if let Err(e) = file.read_exact_at(&mut hb, 0) {
            tracing::warn!("{label}: cannot read header: {e}");
            return Err(eio());
        }
        let header = Header::decode(&hb).map_err(|e| {
            tracing::warn!("{label}: bad header: {e}");
            eio()
        })?;
        if header.block_shift != store.block_shift() {
            tracing::warn!("{label}: header block size differs from the store's");
            return Err(eio());
        }
        if expect.is_some_and(|id| id != header.file_id) {
            tracing::warn!(
                "{label}: its content is another file's (the header's file id is not the one \
                 its sealed record names)"
            );
            return Err(eio());
        }
        let cipher = match store.file_key(&header) {
            Ok(key) => Some(BlockCipher::new(key.secret())),
            // Backup-only: the handle opens (so O_TRUNC and rewriting work); reads refuse.
            Err(crate::store::StoreError::NoPrivateKey) => None,
            Err(e) => {
                tracing::warn!("{label}: cannot unwrap file key: {e}");
                return Err(eio());
            }
        };
        let clen = file.metadata().map_err(Errno::from)?.len();
        let g = BlockGeometry::new(header.block_shift);
        let size = plain_len_from_cipher(g, clen).map_err(|e| {
            tracing::warn!("{label}: {e}");
            eio()
        })?;
        Ok(OpenFile {
            file,
            label,
            st: RwLock::new(FileState {
                header,
                cipher,
                size,
                len_dirty: false,
            }),
            hints: Default::default(),
        })
    }

    /// Write a new, empty ciphertext file into `file` (header + empty final block) under
    /// `header` and `key` (from `OpenStore::new_file`). The catalog learns of it when the
    /// caller `republish`es it: once it has a name.
    pub fn create(
        file: File,
        label: String,
        header: crate::format::Header,
        key: crate::crypto::FileKey,
    ) -> Result<OpenFile, Errno> {
        let st = FileState {
            cipher: Some(BlockCipher::new(key.secret())),
            header,
            size: 0,
            len_dirty: false,
        };
        let of = OpenFile {
            file,
            label,
            st: RwLock::new(st),
            hints: Default::default(),
        };
        {
            let st = of.read_state()?;
            // create_at made the file (O_EXCL), so the write alone gives it its length.
            of.write_empty(&st, false)?;
        }
        Ok(of)
    }

    /// The backing file (an ordinary descriptor: valid after the last name is gone).
    pub fn backing(&self) -> &File {
        &self.file
    }

    /// True when this mount holds no key for the file (backup-only, an old file).
    pub fn is_sealed(&self) -> bool {
        self.st.read().map(|st| st.cipher.is_none()).unwrap_or(true)
    }

    pub fn size(&self) -> Result<u64, Errno> {
        Ok(self.read_state()?.size)
    }

    pub fn file_id(&self) -> Result<[u8; 16], Errno> {
        Ok(self.read_state()?.header.file_id)
    }

    fn read_state(&self) -> Result<std::sync::RwLockReadGuard<'_, FileState>, Errno> {
        self.st.read().map_err(|_| eio())
    }

    fn write_state(&self) -> Result<std::sync::RwLockWriteGuard<'_, FileState>, Errno> {
        self.st.write().map_err(|_| eio())
    }

    /// The block cipher, or EACCES (and why, in the log) when this mount holds no key for
    /// the file.
    fn cipher<'a>(&self, st: &'a FileState) -> Result<&'a BlockCipher, Errno> {
        st.cipher.as_ref().ok_or_else(|| {
            tracing::warn!(
                "{}: permission denied: this backup-only mount holds no private key, so content \
                 written before it can be neither read nor changed in place (truncate the file to \
                 zero to rewrite it)",
                self.label
            );
            Errno::EACCES
        })
    }

    /// Write the header and an empty final block; `cut` also cuts off what followed them.
    fn write_empty(&self, st: &FileState, cut: bool) -> Result<(), Errno> {
        let mut buf = vec![0u8; HEADER_LEN + BLOCK_OVERHEAD];
        buf[..HEADER_LEN].copy_from_slice(&st.header.encode());
        seal_block(
            self.cipher(st)?,
            &st.header.file_id,
            final_pos(&st.header, 0, Some(0)),
            &[],
            &mut buf[HEADER_LEN..],
        );
        self.file.write_all_at(&buf, 0).map_err(Errno::from)?;
        if cut {
            self.file.set_len(buf.len() as u64).map_err(Errno::from)?;
        }
        Ok(())
    }

    /// Read up to `len` plaintext bytes at `off`: the decrypted blocks, and which bytes of
    /// them were asked for (the reply sends those without gathering them first).
    pub fn read(&self, off: u64, len: u32) -> Result<Plain, Errno> {
        let st = self.read_state()?;
        if off >= st.size || len == 0 {
            return Ok(Plain::default());
        }
        let end = st.size.min(off + len as u64);
        let g = BlockGeometry::new(st.header.block_shift);
        let first = g.plain_off_to_block(off);
        let last = g.plain_off_to_block(end - 1);
        let buf = self.read_blocks(&st, g, first, last)?;
        // Blocks are now plaintext in place at stride block+overhead: nonce, text, tag.
        let stride = g.block_size() as usize + BLOCK_OVERHEAD;
        let mut ranges = Vec::with_capacity((last - first + 1) as usize);
        for (i, chunk) in buf.chunks(stride).enumerate() {
            let bstart = g.block_to_plain_off(first + i as u64);
            let at = i * stride + 12;
            let plain_len = chunk.len() - BLOCK_OVERHEAD;
            let from = (off.max(bstart) - bstart) as usize;
            let to = ((end - bstart) as usize).min(plain_len);
            ranges.push(at + from..at + to);
        }
        Ok(Plain { buf, ranges })
    }

    /// Read and decrypt blocks first..=last in place; returns the buffer at block stride.
    fn read_blocks(
        &self,
        st: &FileState,
        g: BlockGeometry,
        first: u64,
        last: u64,
    ) -> Result<Vec<u8>, Errno> {
        let final_idx = blocks_for(g, st.size) - 1;
        let c0 = g.block_to_cipher_off(first);
        let c1 = if last == final_idx {
            cipher_len_for(g, st.size)
        } else {
            g.block_to_cipher_off(last + 1)
        };
        let mut buf = vec![0u8; (c1 - c0) as usize];
        if let Err(e) = self.file.read_exact_at(&mut buf, c0) {
            tracing::warn!(
                "{}: short ciphertext at blocks {first}..={last}: {e}",
                self.label
            );
            return Err(eio());
        }
        if st.header.sparse() {
            self.open_sparse(st, g, first, final_idx, &mut buf)?;
            return Ok(buf);
        }
        let stride = g.block_size() as usize + BLOCK_OVERHEAD;
        let id = st.header.file_id;
        let cipher = self.cipher(st)?;
        self.open_all(&mut buf, stride, |(i, chunk)| {
            let idx = first + i as u64;
            open_block(cipher, &id, BlockPos::dense(idx, idx == final_idx), chunk).map(|_| ())
        })?;
        Ok(buf)
    }

    /// Open each block of `buf` (`stride` bytes apart) in place with `open`, in parallel when
    /// large. A block that does not open makes the whole read EIO.
    fn open_all<E: std::fmt::Display + Send>(
        &self,
        buf: &mut [u8],
        stride: usize,
        open: impl Fn((usize, &mut [u8])) -> Result<(), E> + Sync + Send,
    ) -> Result<(), Errno> {
        let result = if buf.len() >= PARALLEL_BYTES {
            buf.par_chunks_mut(stride)
                .with_min_len((TASK_BYTES / stride).max(1))
                .enumerate()
                .try_for_each(open)
        } else {
            buf.chunks_mut(stride).enumerate().try_for_each(open)
        };
        result.map_err(|e| {
            tracing::warn!("{}: {e} (tampered or damaged ciphertext)", self.label);
            eio()
        })
    }

    /// Decrypt one block and return its plaintext.
    /// The plaintext of block `idx` from a copy of its ciphertext already in memory.
    fn open_copy(
        &self,
        st: &FileState,
        g: BlockGeometry,
        idx: u64,
        sealed: &[u8],
    ) -> Result<Vec<u8>, Errno> {
        let mut b = sealed.to_vec();
        let last = idx == blocks_for(g, st.size) - 1;
        let pos = BlockPos::dense(idx, last);
        open_block(self.cipher(st)?, &st.header.file_id, pos, &mut b).map_err(|e| {
            tracing::warn!("{}: {e} (tampered or damaged ciphertext)", self.label);
            eio()
        })?;
        b.truncate(b.len() - 16);
        b.drain(..12);
        Ok(b)
    }

    fn block_plain(&self, st: &FileState, g: BlockGeometry, idx: u64) -> Result<Vec<u8>, Errno> {
        let mut b = self.read_blocks(st, g, idx, idx)?;
        b.truncate(b.len() - 16);
        b.drain(..12);
        Ok(b)
    }

    /// Write `data` at plaintext offset `off`; a gap past the end reads as zeros (a hole, in
    /// a format 2 file).
    pub fn write(&self, off: u64, data: &[u8]) -> Result<usize, Errno> {
        let mut st = self.write_state()?;
        if off > st.size {
            self.grow_locked(&mut st, off)?;
        }
        self.write_locked(&mut st, off, data)?;
        Ok(data.len())
    }

    /// Grow the file to `to` bytes of zeros: a hole in a format 2 file, written zeros in a
    /// format 1 file.
    fn grow_locked(&self, st: &mut FileState, to: u64) -> Result<(), Errno> {
        match st.header.sparse() {
            true => self.grow_sparse(st, to),
            false => self.extend_locked(st, to),
        }
    }

    fn extend_locked(&self, st: &mut FileState, to: u64) -> Result<(), Errno> {
        while st.size < to {
            let n = (to - st.size).min(ZERO_CHUNK);
            let zeros = vec![0u8; n as usize];
            let at = st.size;
            self.write_locked(st, at, &zeros)?;
        }
        Ok(())
    }

    /// Set the plaintext size. Truncation to zero starts the file afresh with a new key.
    pub fn truncate(&self, store: &OpenStore, new_size: u64) -> Result<(), Errno> {
        let mut st = self.write_state()?;
        // A keyless file truncated to zero is started afresh even if it was empty.
        if new_size == st.size && (st.cipher.is_some() || new_size != 0) {
            return Ok(());
        }
        self.forget_hints();
        if new_size > st.size {
            return self.grow_locked(&mut st, new_size);
        }
        if new_size == 0 {
            // A format-3 file keeps its id: its record and attributes are bound to it.
            let keep = store.records().map(|_| st.header.file_id);
            let fresh = fresh_state(store, &self.label, keep)?;
            let old_id = st.header.file_id;
            self.write_empty(&fresh, true)?;
            *st = fresh;
            store.catalog_op(CatalogOp::Remove(old_id));
            store_catalog_put(store, &st);
            return Ok(());
        }
        let g = BlockGeometry::new(st.header.block_shift);
        let k = g.plain_off_to_block(new_size - 1);
        let mut plain = self.block_plain(&st, g, k)?;
        plain.truncate((new_size - g.block_to_plain_off(k)) as usize);
        let lead = match st.header.sparse() {
            true => Some(self.lead(g, k)?),
            false => None,
        };
        let mut out = vec![0u8; plain.len() + BLOCK_OVERHEAD];
        let pos = final_pos(&st.header, k, lead);
        seal_block(self.cipher(&st)?, &st.header.file_id, pos, &plain, &mut out);
        self.file
            .write_all_at(&out, g.block_to_cipher_off(k))
            .map_err(Errno::from)?;
        self.file
            .set_len(cipher_len_for(g, new_size))
            .map_err(Errno::from)?;
        st.size = new_size;
        st.len_dirty = true;
        Ok(())
    }

    pub fn fsync(&self, datasync: bool) -> Result<(), Errno> {
        if datasync {
            self.file.sync_data()
        } else {
            self.file.sync_all()
        }
        .map_err(Errno::from)
    }

    /// Send the catalog this file's whole record again (after a run that was killed before
    /// its catalog updates were committed; the header holds everything the record says).
    pub fn republish(&self, store: &OpenStore) {
        if let Ok(st) = self.st.read() {
            store_catalog_put(store, &st);
        }
    }

    /// Send the catalog its new length if it changed since the last call.
    pub fn publish_len(&self, store: &OpenStore) {
        if let Ok(mut st) = self.st.write() {
            if st.len_dirty {
                st.len_dirty = false;
                store.catalog_op(CatalogOp::SetLen(st.header.file_id, st.size));
            }
        }
    }
}

/// The final block `idx`'s position: with the holes before it in a format 2 file.
fn final_pos(h: &Header, idx: u64, lead: Option<u64>) -> BlockPos {
    BlockPos {
        idx,
        last: true,
        holes_before: if h.sparse() { lead } else { None },
    }
}

fn fresh_state(store: &OpenStore, label: &str, keep: Option<[u8; 16]>) -> Result<FileState, Errno> {
    let made = match keep {
        Some(id) => store.new_file_as(id),
        None => store.new_file(),
    };
    let (header, key) = made.map_err(|e| {
        tracing::error!("{label}: cannot make a file key: {e}");
        eio()
    })?;
    Ok(FileState {
        cipher: Some(BlockCipher::new(key.secret())),
        header,
        size: 0,
        len_dirty: false,
    })
}

fn store_catalog_put(store: &OpenStore, st: &FileState) {
    store.catalog_op(CatalogOp::Put(
        st.header.file_id,
        FileRecord {
            batch_id: st.header.batch_id,
            wrapped_key: st.header.wrapped_key.to_vec(),
            plain_len: st.size,
        },
    ));
}

/// Plaintext a read produced: decrypted blocks at their ciphertext stride, and the ranges of
/// them that make up the read, in order.
#[derive(Default)]
pub struct Plain {
    buf: Vec<u8>,
    ranges: Vec<std::ops::Range<usize>>,
}

impl Plain {
    /// The read's bytes, one slice a block (at most 257 for a 1 MiB read of 4 KiB blocks,
    /// well inside writev's 1024).
    pub fn slices(&self) -> Vec<std::io::IoSlice<'_>> {
        let ranges = self.ranges.iter().filter(|r| !r.is_empty());
        ranges
            .map(|r| std::io::IoSlice::new(&self.buf[r.clone()]))
            .collect()
    }

    /// How many plaintext bytes the read returns.
    pub fn len(&self) -> usize {
        self.ranges.iter().map(|r| r.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
