//! fsck's checks of records: the catalog against the file headers, every batch in use
//! against both of its copies (and its authentication), and leftovers of interrupted
//! operations; and opening or rebuilding the catalog itself.

use std::collections::{HashMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{Walk, FORGED};
use crate::catalog::{BatchRecord, Catalog, CatalogOp, FileRecord, Integrity};
use crate::store::{BATCHES, CATALOG, DATA};

/// The catalog for a check: the store's own, or (when it will not open) a rebuilt one with
/// `repair`, or a scratch one so that the walk can still run.
pub enum CatalogState {
    Good(Catalog),
    /// Readable, but redb's integrity check could not run (a store that cannot be written).
    Unchecked(Catalog, String),
    Bad(String),
}

pub fn open_catalog(root: &Path, store_id: &[u8; 16]) -> CatalogState {
    match Catalog::open(&root.join(CATALOG), store_id) {
        Ok(mut c) => match c.check_integrity() {
            Ok(Integrity::Good) => CatalogState::Good(c),
            Ok(Integrity::NotChecked(why)) => CatalogState::Unchecked(c, why),
            Ok(Integrity::Bad) => CatalogState::Bad("catalog failed its integrity check".into()),
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
    for id in crate::store::batch_ids_on_disk(root).map_err(|e| e.to_string())? {
        let wrapped = crate::store::read_batch_file(root, &id).map_err(|e| e.to_string())?;
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

impl Walk<'_> {
    /// Why the batch `id` is not to be believed, if it is not: its record (catalog first, then
    /// batches/) must authenticate as a read would check it. Remembered per batch.
    pub(super) fn batch_problem(&mut self, id: &[u8; 16]) -> Option<String> {
        if let Some(r) = self.batches.get(id) {
            return r.clone();
        }
        // Only a record that is there and does not authenticate is flagged here; a lost one
        // is the key check's and the cross-check's to report.
        let r = match self.store.check_batch(id) {
            Err(e @ crate::store::StoreError::BatchForged(_)) => Some(format!("{e}; {FORGED}")),
            _ => None,
        };
        if r.is_none() && self.store.batch_adopted(id) {
            self.adopted.insert(*id, 0);
        }
        self.batches.insert(*id, r.clone());
        r
    }

    /// One more file in batch `id`, if it is one an upgrade adopted.
    pub(super) fn count_adopted(&mut self, id: &[u8; 16]) {
        if let Some(n) = self.adopted.get_mut(id) {
            *n += 1;
        }
    }

    /// What fsck says of the batches an upgrade adopted.
    pub(super) fn report_adopted(&mut self) {
        let mut v: Vec<_> = std::mem::take(&mut self.adopted).into_iter().collect();
        v.sort_unstable();
        for (id, n) in v {
            self.report.adopted_batches.push(format!(
                "batch {} ({n} files) was adopted by coffer upgrade from a format-1 store: \
                 nothing shows who wrote it",
                hex::encode(id)
            ));
        }
    }

    /// The catalog against the files found: every file recorded as its header says, no
    /// record without its file, and every batch in use recorded both in the catalog and in
    /// batches/.
    pub(super) fn cross_check(&mut self) {
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
        self.file_records(&files, &records);
        // Every batch in use must be recorded in both places.
        let used: HashSet<[u8; 16]> = files.values().map(|r| r.batch_id).collect();
        for b in used {
            self.batch_records(&catalog, b);
        }
    }

    fn file_records(
        &mut self,
        files: &HashMap<[u8; 16], FileRecord>,
        records: &HashMap<[u8; 16], FileRecord>,
    ) {
        let cat = Path::new(CATALOG);
        for (id, rec) in files {
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
        // A file that is there but damaged was reported as such; its record stays.
        let damaged = std::mem::take(&mut self.damaged);
        let present = |id: &[u8; 16]| files.contains_key(id) || damaged.contains(id);
        for id in records.keys().filter(|id| !present(id)) {
            let msg = format!("record for file {} whose file is gone", hex::encode(id));
            if self.opts.repair {
                self.store.catalog_op(CatalogOp::Remove(*id));
                self.fixed(cat, format!("{msg}; removed"));
            } else {
                self.problem(cat, "", msg);
            }
        }
    }

    /// Batch `b`, in use: recorded in the catalog and in batches/, or restored from the one
    /// to the other (with repair), or reported.
    fn batch_records(&mut self, catalog: &Catalog, b: [u8; 16]) {
        let cat = Path::new(CATALOG);
        let root = self.store.root.clone();
        let name = hex::encode(b);
        let in_cat = matches!(catalog.batch(&b), Ok(Some(_)));
        let on_disk = std::fs::symlink_metadata(root.join(BATCHES).join(&name)).is_ok();
        match (in_cat, on_disk) {
            (true, true) => {}
            (false, true) if self.opts.repair => {
                let ok = crate::store::read_batch_file(&root, &b)
                    .ok()
                    .is_some_and(|wrapped| {
                        let rec = BatchRecord {
                            wrapped,
                            created: crate::unix_now(),
                        };
                        catalog.put_batch(&b, &rec).is_ok()
                    });
                if ok {
                    self.fixed(cat, format!("batch {name} restored from batches/"));
                }
            }
            (true, false) if self.opts.repair => {
                let ok = matches!(catalog.batch(&b), Ok(Some(r))
                    if crate::store::write_batch_file(&root, &b, &r.wrapped).is_ok());
                if ok {
                    let why = format!("batch {name} restored from the catalog");
                    self.fixed(Path::new(BATCHES), why);
                }
            }
            (false, false) => {
                let why = format!("batch {name} is lost: its files cannot be read");
                self.problem(cat, "", why)
            }
            _ => {
                let why = format!("batch {name} is recorded in one place only");
                self.problem(cat, "", why)
            }
        }
    }

    /// Remove temporary names left by interrupted operations (only with repair).
    pub(super) fn leftovers(&mut self) {
        let mut stack = vec![self.store.root.join(DATA)];
        while let Some(d) = stack.pop() {
            let Ok(it) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in it.flatten() {
                let name = e.file_name();
                let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
                if crate::format::classify(name.as_bytes()) == crate::format::Entry::Temporary {
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
