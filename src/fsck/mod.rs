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

mod salvage;

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::catalog::{BatchRecord, Catalog, CatalogOp, FileRecord};
use crate::crypto::BlockCipher;
use crate::format::{
    blocks_for, decode_symlink, open_block, plain_len_from_cipher, BlockGeometry, Header,
    BLOCK_OVERHEAD, DIRIV_LEN, DIRIV_NAME, HEADER_LEN, LONG_PREFIX, LONG_SIDECAR_PREFIX,
};
use crate::store::{OpenStore, BATCHES, CATALOG, DATA};

#[derive(Default, Debug)]
pub struct Report {
    pub problems: Vec<String>,
    pub repaired: Vec<String>,
    /// Checks that could not run here, and why.
    pub skipped: Vec<String>,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub plain_bytes: u64,
}

impl Report {
    pub fn unrepaired(&self) -> usize {
        self.problems.len()
    }
}

pub struct Options {
    pub repair: bool,
    pub show_names: bool,
    /// No private key (a backup credential): check headers, lengths, names and the catalog,
    /// and skip what needs file keys (block authentication, key unwrap).
    pub keyless: bool,
}

struct Walk<'a> {
    store: &'a OpenStore,
    opts: &'a Options,
    report: Report,
    seen_inodes: HashSet<u64>,
    files: HashMap<[u8; 16], FileRecord>,
}

/// The catalog for a check: the store's own, or (when it will not open) a rebuilt one with
/// `repair`, or a scratch one so that the walk can still run.
pub enum CatalogState {
    Good(Catalog),
    Bad(String),
}

pub fn open_catalog(root: &Path, store_id: &[u8; 16]) -> CatalogState {
    match Catalog::open(&root.join(CATALOG), store_id) {
        Ok(mut c) => match c.check_integrity() {
            Ok(true) => CatalogState::Good(c),
            Ok(false) => CatalogState::Bad("catalog failed its integrity check".into()),
            Err(e) => CatalogState::Bad(e.to_string()),
        },
        Err(e) => CatalogState::Bad(e.to_string()),
    }
}

/// Move a damaged catalog aside and create a fresh one holding every batch in batches/.
pub fn rebuild_catalog(root: &Path, store_id: &[u8; 16]) -> Result<Catalog, String> {
    let p = root.join(CATALOG);
    if p.exists() {
        let aside = root.join(format!("catalog.damaged-{}", crate::unix_now()));
        std::fs::rename(&p, &aside)
            .map_err(|e| format!("cannot move the damaged catalog aside: {e}"))?;
    }
    let c =
        Catalog::create(&p, store_id).map_err(|e| format!("cannot create a new catalog: {e}"))?;
    let dir = root.join(BATCHES);
    let listing = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for e in listing.flatten() {
        let name = e.file_name();
        let Some(id) = hex::decode(name.as_bytes())
            .ok()
            .and_then(|v| <[u8; 16]>::try_from(v).ok())
        else {
            continue;
        };
        let wrapped = std::fs::read(e.path()).map_err(|e| format!("batch file: {e}"))?;
        c.put_batch(
            &id,
            &BatchRecord {
                wrapped,
                created: crate::unix_now(),
            },
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(c)
}

/// Check (and with `repair`, mend) the store. `catalog_bad` says the caller found the
/// catalog damaged (and, with repair, already rebuilt it).
pub fn check(store: &OpenStore, opts: &Options, catalog_bad: Option<String>) -> Report {
    let mut w = Walk {
        store,
        opts,
        report: Report::default(),
        seen_inodes: HashSet::new(),
        files: HashMap::new(),
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
    w.dir(&data, Path::new(DATA), "");
    w.report.dirs -= 1; // the store's root is not one of the user's directories
    if catalog_bad.is_none() || opts.repair {
        w.cross_check();
    }
    w.leftovers();
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
        let iv = match std::fs::read(path.join(DIRIV_NAME)) {
            Ok(v) if v.len() == DIRIV_LEN => {
                let mut iv = [0u8; DIRIV_LEN];
                iv.copy_from_slice(&v);
                Some(iv)
            }
            _ => None,
        };
        let entries: Vec<_> = match std::fs::read_dir(path) {
            Ok(it) => it.flatten().collect(),
            Err(e) => return self.problem(rel, plain, format!("cannot list: {e}")),
        };
        let Some(iv) = iv else {
            let only_internal = entries.iter().all(|e| e.file_name() == DIRIV_NAME);
            if self.opts.repair && only_internal {
                match crate::store::write_diriv(path) {
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
            return;
        };
        for e in entries {
            let cname = e.file_name();
            let b = cname.as_bytes();
            let crel = rel.join(&cname);
            if b == DIRIV_NAME.as_bytes() || b.starts_with(b".tmp-") {
                continue;
            }
            if let Some(rest) = b.strip_prefix(LONG_SIDECAR_PREFIX.as_bytes()) {
                let mut entry = LONG_PREFIX.as_bytes().to_vec();
                entry.extend_from_slice(rest);
                if !path.join(OsStr::from_bytes(&entry)).exists() {
                    if self.opts.repair && std::fs::remove_file(e.path()).is_ok() {
                        self.fixed(&crel, "removed a long-name sidecar without its entry");
                    } else {
                        self.problem(&crel, "", "long-name sidecar without its entry");
                    }
                }
                continue;
            }
            let encoded = if let Some(rest) = b.strip_prefix(LONG_PREFIX.as_bytes()) {
                let mut side = LONG_SIDECAR_PREFIX.as_bytes().to_vec();
                side.extend_from_slice(rest);
                match std::fs::read(path.join(OsStr::from_bytes(&side))) {
                    Ok(v) => String::from_utf8_lossy(&v).into_owned(),
                    Err(_) => {
                        self.problem(
                            &crel,
                            "",
                            "long name has lost its sidecar: the name cannot be read",
                        );
                        continue;
                    }
                }
            } else {
                String::from_utf8_lossy(b).into_owned()
            };
            let child_plain = match self.store.names.decrypt(&iv, &encoded) {
                Ok(n) => format!("{plain}/{}", n.to_string_lossy()),
                Err(_) => {
                    self.problem(
                        &crel,
                        "",
                        "name fails authentication (tampered, or not made by this store)",
                    );
                    String::new()
                }
            };
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                self.dir(&e.path(), &crel, &child_plain);
            } else if ft.is_symlink() {
                self.report.symlinks += 1;
                match std::fs::read_link(e.path()) {
                    Ok(t)
                        if decode_symlink(&self.store.names, t.as_os_str().as_bytes()).is_ok() => {}
                    _ => self.problem(&crel, &child_plain, "symlink target fails authentication"),
                }
            } else if ft.is_file() {
                if !self.seen_inodes.insert(meta.ino()) {
                    continue; // another name of a file already checked
                }
                self.report.files += 1;
                // Shorter than a header: a create that a crash cut short, before the header
                // (and so before any content) was written. Nothing in it can ever be read;
                // repair makes it the empty file it was when created.
                if self.opts.repair && meta.len() < HEADER_LEN as u64 {
                    match self
                        .store
                        .empty_file()
                        .map_err(|e| e.to_string())
                        .and_then(|(h, b)| {
                            // In place, so the file keeps its inode, mode, owner and times.
                            std::fs::OpenOptions::new()
                                .write(true)
                                .open(e.path())
                                .and_then(|f| {
                                    f.write_all_at(&b, 0)?;
                                    f.set_len(b.len() as u64)?;
                                    f.sync_all()
                                })
                                .map(|_| h)
                                .map_err(|e| e.to_string())
                        }) {
                        Ok(h) => {
                            self.files.insert(
                                h.file_id,
                                FileRecord {
                                    batch_id: h.batch_id,
                                    wrapped_key: h.wrapped_key.to_vec(),
                                    plain_len: 0,
                                },
                            );
                            self.fixed(
                                &crel,
                                "its creation was cut short before its header: now an empty file",
                            );
                        }
                        Err(why) => self.problem(&crel, &child_plain, why),
                    }
                    continue;
                }
                let checked = if self.opts.keyless {
                    verify_shape(self.store, &e.path())
                } else {
                    verify_file(self.store, &e.path())
                };
                match checked {
                    Ok((h, len)) => {
                        self.report.plain_bytes += len;
                        self.files.insert(
                            h.file_id,
                            FileRecord {
                                batch_id: h.batch_id,
                                wrapped_key: h.wrapped_key.to_vec(),
                                plain_len: len,
                            },
                        );
                    }
                    Err(why) if self.opts.repair && !self.opts.keyless => {
                        match salvage::salvage_file(self.store, &e.path()) {
                            Ok(s) => {
                                self.report.plain_bytes += s.plain_len;
                                self.files.insert(
                                    s.header.file_id,
                                    FileRecord {
                                        batch_id: s.header.batch_id,
                                        wrapped_key: s.header.wrapped_key.to_vec(),
                                        plain_len: s.plain_len,
                                    },
                                );
                                let what = format!("{why}; {}", s.describe());
                                tracing::warn!("{}: {what}", crel.display());
                                self.fixed(&crel, what);
                            }
                            Err(not) => self.problem(&crel, &child_plain, format!("{why} ({not})")),
                        }
                    }
                    Err(why) => self.problem(&crel, &child_plain, why),
                }
            }
        }
    }

    fn cross_check(&mut self) {
        let catalog = self.store.catalog.clone();
        let records: HashMap<[u8; 16], FileRecord> = match catalog.files() {
            Ok(v) => v.into_iter().collect(),
            Err(e) => {
                self.report
                    .problems
                    .push(format!("catalog: cannot list files: {e}"));
                return;
            }
        };
        let files = std::mem::take(&mut self.files);
        let cat = Path::new(CATALOG);
        for (id, rec) in &files {
            let what = match records.get(id) {
                None => "has no record",
                Some(r) if r != rec => "record differs from the file header or length",
                Some(_) => continue,
            };
            let msg = format!("file {} {what}", hex::encode(id));
            if self.opts.repair {
                self.store.catalog_op(CatalogOp::Put(*id, rec.clone()));
                self.fixed(cat, format!("{msg}; record rewritten"));
            } else {
                self.problem(cat, "", msg);
            }
        }
        for id in records.keys().filter(|id| !files.contains_key(*id)) {
            let msg = format!("record for file {} whose file is gone", hex::encode(id));
            if self.opts.repair {
                self.store.catalog_op(CatalogOp::Remove(*id));
                self.fixed(cat, format!("{msg}; removed"));
            } else {
                self.problem(cat, "", msg);
            }
        }
        // Every batch in use must be recorded in both places.
        let used: HashSet<[u8; 16]> = files.values().map(|r| r.batch_id).collect();
        for b in used {
            let in_cat = matches!(catalog.batch(&b), Ok(Some(_)));
            let file = self.store.root.join(BATCHES).join(hex::encode(b));
            let on_disk = file.exists();
            match (in_cat, on_disk) {
                (true, true) => {}
                (false, true) if self.opts.repair => {
                    let ok = std::fs::read(&file).ok().is_some_and(|wrapped| {
                        catalog
                            .put_batch(
                                &b,
                                &BatchRecord {
                                    wrapped,
                                    created: crate::unix_now(),
                                },
                            )
                            .is_ok()
                    });
                    if ok {
                        self.fixed(
                            cat,
                            format!("batch {} restored from batches/", hex::encode(b)),
                        );
                    }
                }
                (true, false) if self.opts.repair => {
                    let ok = matches!(catalog.batch(&b), Ok(Some(r)) if crate::atomic_write(&file, &r.wrapped, 0o600).is_ok());
                    if ok {
                        self.fixed(
                            Path::new(BATCHES),
                            format!("batch {} restored from the catalog", hex::encode(b)),
                        );
                    }
                }
                (false, false) => self.problem(
                    cat,
                    "",
                    format!("batch {} is lost: its files cannot be read", hex::encode(b)),
                ),
                _ => self.problem(
                    cat,
                    "",
                    format!("batch {} is recorded in one place only", hex::encode(b)),
                ),
            }
        }
    }

    /// Remove temporary names left by interrupted operations (only with repair).
    fn leftovers(&mut self) {
        let mut stack = vec![self.store.root.join(DATA)];
        while let Some(d) = stack.pop() {
            let Ok(it) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in it.flatten() {
                let name = e.file_name();
                let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
                if name.as_bytes().starts_with(b".tmp-") {
                    let rel = e
                        .path()
                        .strip_prefix(&self.store.root)
                        .map(Path::to_path_buf)
                        .unwrap_or_default();
                    if self.opts.repair {
                        let r = if is_dir {
                            std::fs::remove_dir_all(e.path())
                        } else {
                            std::fs::remove_file(e.path())
                        };
                        if r.is_ok() {
                            self.fixed(&rel, "removed a leftover of an interrupted operation");
                        }
                    } else {
                        self.problem(&rel, "", "leftover of an interrupted operation");
                    }
                } else if is_dir {
                    stack.push(e.path());
                }
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

/// The open file, its header, its ciphertext length and its plaintext length.
fn read_shape(store: &OpenStore, path: &Path) -> Result<(File, Header, u64, u64), String> {
    let f = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let header = read_header(store, &f)?;
    let clen = f.metadata().map_err(|e| e.to_string())?.len();
    let len = plain_len_from_cipher(BlockGeometry::new(header.block_shift), clen)
        .map_err(|e| e.to_string())?;
    Ok((f, header, clen, len))
}

/// Read and authenticate every block of one ciphertext file; returns its header and length.
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
    let run = ((1usize << 20) / stride).max(1) as u64;
    let per_task = ((64usize << 10) / stride).max(1);
    let mut idx = 0;
    while idx < n {
        let end = (idx + run).min(n);
        let c0 = g.block_to_cipher_off(idx);
        let c1 = if end == n {
            clen
        } else {
            g.block_to_cipher_off(end)
        };
        let mut buf = vec![0u8; (c1 - c0) as usize];
        f.read_exact_at(&mut buf, c0)
            .map_err(|e| format!("read failed: {e}"))?;
        use rayon::prelude::*;
        buf.par_chunks_mut(stride)
            .with_min_len(per_task)
            .enumerate()
            .try_for_each(|(i, chunk)| {
                let b = idx + i as u64;
                open_block(&cipher, &header.file_id, b, b == n - 1, chunk).map(|_| ())
            })
            .map_err(|e| format!("{e}: the file is damaged or was tampered with"))?;
        idx = end;
    }
    Ok((header, len))
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
