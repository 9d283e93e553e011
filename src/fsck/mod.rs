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

use files::{open_in_store, read_header};
pub use files::{verify_file, verify_shape};
mod inodes;
mod links;
mod records;
mod salvage;
mod xattrs;

pub use records::{open_catalog, rebuild_catalog, CatalogState};

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::catalog::{Catalog, FileRecord};
use crate::format::inode::InodeRecord;
use crate::format::{classify, Entry, EntryError, NameError, DIRIV_LEN, DIRIV_NAME, SIDECAR_MAX};
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
    /// Files found damaged (each a problem above), and their stored bytes.
    pub damaged_files: u64,
    pub damaged_bytes: u64,
    /// Format 3: inode records that `coffer upgrade` wrote from what it found in place.
    pub adopted_records: u64,
    /// Batches that `coffer upgrade` adopted from a format-1 store (hex ids), with how many
    /// files they hold: nothing shows who wrote them.
    pub adopted_batches: Vec<String>,
    /// What the administrator should do next (`coffer upgrade`, say), if anything.
    pub advice: Vec<String>,
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
    /// Batches an upgrade adopted, and how many files of each were found.
    adopted: HashMap<[u8; 16], u64>,
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
        adopted: HashMap::new(),
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
    let root_rec = w.root_record();
    if w.store.records().is_none() || root_rec.is_some() {
        w.dir(&data, Path::new(DATA), "", root_rec.as_ref());
    }
    w.report.dirs -= 1; // the store's root is not one of the user's directories
    if catalog_bad.is_none() || opts.repair {
        w.cross_check();
    }
    w.leftovers();
    w.orphan_link_blobs();
    w.report_adopted();
    if !store.desc.has_records() {
        w.report.advice.push(crate::store::upgrade_advice(
            &store.root,
            store.desc.version,
        ));
    }
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

    fn dir(&mut self, path: &Path, rel: &Path, plain: &str, rec: Option<&InodeRecord>) {
        self.report.dirs += 1;
        let entries: Vec<_> = match std::fs::read_dir(path) {
            Ok(it) => it.flatten().collect(),
            Err(e) => return self.problem(rel, plain, format!("cannot list: {e}")),
        };
        let Some(iv) = self.dir_iv(rel, plain, &entries, rec) else {
            return;
        };
        match rec {
            Some(r) => self.recorded_attrs(path, rel, plain, r),
            None if self.store.records().is_none() => self.attrs(path, rel, plain, &iv),
            None => {}
        }
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
            let Some((child_plain, name)) = self.plain_name(&iv, &entry, rel, &crel, plain) else {
                continue;
            };
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            self.entry(&e.path(), &crel, &child_plain, (&iv, &name), &meta);
        }
    }

    /// One entry of a directory known by `at.0`, named `at.1` there.
    fn entry(
        &mut self,
        path: &Path,
        crel: &Path,
        plain: &str,
        at: (&[u8; DIRIV_LEN], &OsStr),
        meta: &std::fs::Metadata,
    ) {
        let rec = self.inode_record(path, crel, plain, at, meta);
        let sealed = self.store.records().is_some();
        let ft = meta.file_type();
        if ft.is_dir() {
            // Walked even when its record does not hold: what is under it is reported too.
            self.dir(path, crel, plain, rec.as_ref());
            return;
        }
        if sealed && rec.is_none() {
            // Not to be read, but there: its catalog record is not an orphan's.
            if ft.is_file() {
                if let Ok((h, _)) = verify_shape(self.store, path) {
                    self.damaged.insert(h.file_id);
                }
            }
            return;
        }
        if ft.is_symlink() {
            self.symlink(path, crel, plain);
            if let Some(r) = &rec {
                self.check_target(path, crel, plain, r);
            }
        }
        if ft.is_file() && self.seen_inodes.insert(meta.ino()) {
            // (A second name of a file already checked is checked for its place only.)
            self.file(path, crel, plain, meta.len(), rec.as_ref());
        } else if !ft.is_file() {
            match &rec {
                Some(r) => self.recorded_attrs(path, crel, plain, r),
                None => self.special_attrs(path, crel, plain),
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
        rec: Option<&InodeRecord>,
    ) -> Option<[u8; DIRIV_LEN]> {
        let found = crate::within::read(&self.store.root, &rel.join(DIRIV_NAME), DIRIV_LEN)
            .ok()
            .and_then(|v| <[u8; DIRIV_LEN]>::try_from(v.as_slice()).ok());
        // Format 3: the IV is the record's id; `.diriv` is a copy that must agree.
        if let Some(r) = rec {
            match found {
                Some(iv) if iv != r.id => {
                    let why = ".diriv is not the IV its sealed record names (replaced by a \
                               host without the key); the record's is used";
                    self.problem(rel, plain, why);
                }
                Some(_) => {}
                None if self.opts.repair => {
                    match crate::store::write_diriv_as(&self.store.root, rel, r.id) {
                        Ok(()) => self.fixed(rel, ".diriv written again from the sealed record"),
                        Err(e) => self.problem(rel, plain, format!("cannot write .diriv: {e}")),
                    }
                }
                None => {
                    let why = "directory IV is missing or damaged in .diriv (the sealed record \
                               holds it: the names still read; fsck --repair writes .diriv again)";
                    self.problem(rel, plain, why);
                }
            }
            return Some(r.id);
        }
        if let Some(iv) = found {
            return Some(iv);
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

    /// The entry's plaintext path (for reports with --names) and name, through the same
    /// decoding as the mount's; a name that cannot be read (a lost or swapped sidecar, a name
    /// that fails authentication or is not one a file can have) is a problem, and None.
    fn plain_name(
        &mut self,
        iv: &[u8; DIRIV_LEN],
        entry: &Entry<'_>,
        rel: &Path,
        crel: &Path,
        plain: &str,
    ) -> Option<(String, std::ffi::OsString)> {
        let root = self.store.root.clone();
        let read = |side: &OsStr| crate::within::read(&root, &rel.join(side), SIDECAR_MAX);
        match self.store.names.decode_entry(iv, entry, read) {
            Ok(n) => Some((format!("{plain}/{}", n.to_string_lossy()), n)),
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
