//! Consistency check and repair of a store (the `coffer fsck` command's logic).
//!
//! Walks the ciphertext tree and checks every directory IV, every name, every header, every
//! block's authentication and every length; then cross-checks the catalog. With `repair` it
//! rebuilds a missing or damaged catalog from the file headers and the batches/ directory,
//! adds missing records, drops orphans, gives an empty directory a lost IV back, and removes
//! leftovers of interrupted operations. It never rewrites file content: a damaged file is
//! reported, not "fixed".
//!
//! Problems name ciphertext paths (relative to the store); plaintext names are printed only
//! when the caller asks for them (`--names`), since reports end up in mail and tickets.

mod files;
mod links;
mod records;
mod salvage;
mod xattrs;

pub use records::{open_catalog, rebuild_catalog, CatalogState};

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::catalog::{Catalog, FileRecord};
use crate::crypto::BlockCipher;
use crate::format::{
    blocks_for, classify, is_hole, open_block, plain_len_from_cipher, BlockGeometry, BlockPos,
    Entry, EntryError, Header, NameError, BLOCK_OVERHEAD, DIRIV_LEN, DIRIV_NAME, HEADER_LEN,
    SIDECAR_MAX,
};
use crate::store::{OpenStore, DATA};

#[derive(Default, Debug, serde::Serialize)]
pub struct Report {
    pub problems: Vec<String>,
    pub repaired: Vec<String>,
    /// Checks that could not run here, and why.
    pub skipped: Vec<String>,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Extended attributes checked.
    pub xattrs: u64,
    pub plain_bytes: u64,
}

impl Report {
    pub fn unrepaired(&self) -> usize {
        self.problems.len()
    }
}

#[derive(Default)]
pub struct Options {
    pub repair: bool,
    pub show_names: bool,
    /// No private key (a backup credential): check headers, lengths, names and the catalog,
    /// and skip what needs file keys (block authentication, key unwrap).
    pub keyless: bool,
    /// Counted as the walk goes, for a progress bar.
    pub progress: Option<Arc<Progress>>,
}

/// Files and ciphertext bytes checked so far, and how many files there are (`count`).
pub use crate::progress::Progress;

/// Count the store's ciphertext files into `p`'s total (for an ETA): a walk of names and
/// types alone, never following a symlink. Run beside the check; only an estimate.
pub fn count_files(root: &Path, p: &Progress) {
    let mut dirs = vec![root.join(DATA)];
    while let Some(d) = dirs.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => dirs.push(e.path()),
                Ok(t) if t.is_file() && e.file_name() != DIRIV_NAME => p.add_total(1),
                _ => {}
            }
        }
    }
}

struct Walk<'a> {
    store: &'a OpenStore,
    opts: &'a Options,
    report: Report,
    seen_inodes: HashSet<u64>,
    files: HashMap<[u8; 16], FileRecord>,
    /// Files that are there but damaged (reported already): their records are not "gone".
    damaged: HashSet<[u8; 16]>,
    /// Per batch id: None when its record authenticates, else why not.
    batches: HashMap<[u8; 16], Option<String>>,
    /// Blobs of long symlink targets that symlinks name.
    link_blobs: HashSet<Vec<u8>>,
}

/// How fsck marks a file it will not adopt: its batch is not a key holder's.
const FORGED: &str = "not adopted";

/// Check (and with `repair`, mend) the store. `catalog_bad` says the caller found the
/// catalog damaged (and, with repair, already rebuilt it).
pub fn check(store: &OpenStore, opts: &Options, catalog_bad: Option<String>) -> Report {
    let mut w = Walk {
        store,
        opts,
        report: Report::default(),
        seen_inodes: HashSet::new(),
        files: HashMap::new(),
        damaged: HashSet::new(),
        batches: HashMap::new(),
        link_blobs: HashSet::new(),
    };
    if let Some(why) = &catalog_bad {
        if opts.repair {
            w.report
                .repaired
                .push(format!("catalog: {why}; rebuilt from the file headers"));
        } else {
            w.report
                .problems
                .push(format!("catalog: {why} (fsck --repair rebuilds it)"));
        }
    }
    let data = store.root.join(DATA);
    if !std::fs::symlink_metadata(&data).is_ok_and(|m| m.is_dir()) {
        // A symlink there would take the walk (and repairs) outside the store.
        w.report.problems.push(format!(
            "{DATA}: not a directory (a symlink?): nothing under it was checked"
        ));
        return w.report;
    }
    w.dir(&data, Path::new(DATA), "");
    w.report.dirs -= 1; // the store's root is not one of the user's directories
    if catalog_bad.is_none() || opts.repair {
        w.cross_check();
    }
    w.leftovers();
    w.orphan_link_blobs();
    if opts.keyless {
        w.report.skipped.push(format!(
            "block authentication and file-key checks of {} files: this host holds a backup \
             credential, not the store's private key",
            w.report.files
        ));
    }
    if opts.repair && store.catalog_sync().is_err() {
        w.report
            .problems
            .push("catalog: final commit failed".into());
    }
    w.report
}

impl Walk<'_> {
    fn problem(&mut self, rel: &Path, plain: &str, what: impl std::fmt::Display) {
        let name = if self.opts.show_names && !plain.is_empty() {
            format!(" ({plain})")
        } else {
            String::new()
        };
        self.report
            .problems
            .push(format!("{}{name}: {what}", rel.display()));
    }

    fn fixed(&mut self, rel: &Path, what: impl std::fmt::Display) {
        self.report
            .repaired
            .push(format!("{}: {what}", rel.display()));
    }

    fn dir(&mut self, path: &Path, rel: &Path, plain: &str) {
        self.report.dirs += 1;
        let entries: Vec<_> = match std::fs::read_dir(path) {
            Ok(it) => it.flatten().collect(),
            Err(e) => return self.problem(rel, plain, format!("cannot list: {e}")),
        };
        let Some(iv) = self.dir_iv(rel, plain, &entries) else {
            return;
        };
        self.attrs(path, rel, plain, &iv);
        for e in entries {
            let cname = e.file_name();
            let crel = rel.join(&cname);
            let entry = classify(cname.as_bytes());
            match &entry {
                Entry::DirIv | Entry::Temporary => continue,
                Entry::Sidecar { entry } => {
                    self.sidecar(path, &e, &crel, entry);
                    continue;
                }
                Entry::Short(_) | Entry::Long { .. } => {}
            }
            let Some(child_plain) = self.plain_name(&iv, &entry, rel, &crel, plain) else {
                continue;
            };
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                self.dir(&e.path(), &crel, &child_plain);
            } else if ft.is_symlink() {
                self.symlink(&e.path(), &crel, &child_plain);
                self.special_attrs(&e.path(), &crel, &child_plain);
            } else if ft.is_file() && self.seen_inodes.insert(meta.ino()) {
                // (A second name of a file already checked is skipped.)
                self.file(&e.path(), &crel, &child_plain, meta.len());
            } else if !ft.is_file() {
                self.special_attrs(&e.path(), &crel, &child_plain);
            }
        }
    }

    /// The directory's IV; without one, a problem (or, repairing an empty directory, a new
    /// IV, and nothing to walk).
    fn dir_iv(
        &mut self,
        rel: &Path,
        plain: &str,
        entries: &[std::fs::DirEntry],
    ) -> Option<[u8; DIRIV_LEN]> {
        if let Ok(v) = crate::within::read(&self.store.root, &rel.join(DIRIV_NAME), DIRIV_LEN) {
            if let Ok(iv) = <[u8; DIRIV_LEN]>::try_from(v.as_slice()) {
                return Some(iv);
            }
        }
        let only_internal = entries.iter().all(|e| e.file_name() == DIRIV_NAME);
        if self.opts.repair && only_internal {
            match crate::store::write_diriv(&self.store.root, rel) {
                Ok(_) => self.fixed(rel, "empty directory had no IV; wrote a new one"),
                Err(e) => self.problem(rel, plain, format!("cannot write a directory IV: {e}")),
            }
        } else {
            self.problem(
                rel,
                plain,
                "directory IV is missing or damaged: the names in it cannot be read",
            );
        }
        None
    }

    /// A long-name sidecar (checked here: it must have its entry).
    fn sidecar(&mut self, dir: &Path, e: &std::fs::DirEntry, crel: &Path, entry: &[u8]) {
        if std::fs::symlink_metadata(dir.join(OsStr::from_bytes(entry))).is_ok() {
            return;
        }
        if self.opts.repair && std::fs::remove_file(e.path()).is_ok() {
            self.fixed(crel, "removed a long-name sidecar without its entry");
        } else {
            self.problem(crel, "", "long-name sidecar without its entry");
        }
    }

    /// The entry's plaintext path (for reports with --names), through the same decoding as
    /// the mount's; a name that cannot be read (a lost or swapped sidecar, a name that fails
    /// authentication or is not one a file can have) is a problem, and None.
    fn plain_name(
        &mut self,
        iv: &[u8; DIRIV_LEN],
        entry: &Entry<'_>,
        rel: &Path,
        crel: &Path,
        plain: &str,
    ) -> Option<String> {
        let root = self.store.root.clone();
        let read = |side: &OsStr| crate::within::read(&root, &rel.join(side), SIDECAR_MAX);
        match self.store.names.decode_entry(iv, entry, read) {
            Ok(n) => Some(format!("{plain}/{}", n.to_string_lossy())),
            Err(EntryError::Name(NameError::Unsafe)) => {
                let why = format!("{}; the entry is not listed", NameError::Unsafe);
                self.problem(crel, "", why);
                None
            }
            Err(EntryError::Name(NameError::Undecryptable | NameError::Invalid)) => {
                let why = "name fails authentication (tampered, or not made by this store)";
                self.problem(crel, "", why);
                None
            }
            Err(e @ EntryError::NoSidecar(_)) => {
                self.problem(crel, "", e);
                None
            }
            Err(e) => {
                self.problem(crel, "", format!("{e}: the name cannot be read"));
                None
            }
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
fn read_header(store: &OpenStore, f: &File) -> Result<Header, String> {
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
fn open_in_store(store: &OpenStore, path: &Path, flags: i32) -> Result<File, String> {
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

/// Used by `coffer info` and fsck: an OpenStore over a catalog that may be scratch.
pub fn scratch_catalog(store_id: &[u8; 16]) -> Result<(tempfile::TempDir, Arc<Catalog>), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let c = Catalog::create(&dir.path().join("catalog"), store_id).map_err(|e| e.to_string())?;
    Ok((dir, Arc::new(c)))
}

pub fn relative(root: &Path, p: &Path) -> PathBuf {
    p.strip_prefix(root)
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| p.to_path_buf())
}
