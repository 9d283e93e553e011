//! `coffer fsck STORE`: check, and with --repair mend, a store that is not mounted.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::progress::Bar;
use super::unlock::chain;
use super::{CliResult, Failure, KeyOpts};
use crate::fsck::{self, CatalogState, Options};
use crate::keys::{self, unlock::Unlocked};
use crate::store::{OpenStore, StoreLock};

#[derive(Args)]
pub struct FsckArgs {
    /// The store directory
    pub store: PathBuf,
    #[command(flatten)]
    pub keys: KeyOpts,
    /// Rebuild a lost or damaged catalog, fix records, remove leftovers of interrupted
    /// operations. File content is never rewritten.
    #[arg(long)]
    pub repair: bool,
    /// Name each damaged file by its plaintext path beside its ciphertext path (the default;
    /// kept for scripts that give it)
    #[arg(long, hide = true)]
    pub names: bool,
    /// Leave plaintext paths out of the report (for a report to be sent elsewhere)
    #[arg(long, conflicts_with = "names")]
    pub no_names: bool,
    /// Print the findings and counts as one JSON object on stdout (and no progress bar)
    #[arg(long)]
    pub json: bool,
}

/// What `--json` prints.
#[derive(serde::Serialize)]
struct JsonReport<'a> {
    store: &'a std::path::Path,
    #[serde(flatten)]
    report: &'a fsck::Report,
    clean: bool,
}

pub fn run(a: FsckArgs) -> CliResult {
    let acquire = match a.repair {
        true => StoreLock::acquire,
        false => StoreLock::acquire_for_reading,
    };
    let lock = acquire(&a.store).map_err(|e| match e {
        crate::store::StoreError::Io(_, e) if e.kind() == std::io::ErrorKind::NotFound => {
            Failure::from(crate::store::StoreError::NotAStore(a.store.clone()))
        }
        e => Failure::from(e),
    })?;
    if let Some(why) = lock.unlocked() {
        eprintln!("coffer: note: {why}");
    }
    let (desc, keys) = match keys::unlock::unlock(&chain(&a.keys)?, &a.store, false)? {
        Unlocked::Full { desc, keys, .. } | Unlocked::BackupOnly { desc, keys, .. } => (desc, keys),
    };
    let keyless = keys.private.is_none();
    let sid = desc.store_id_bytes()?;
    let mut _scratch = None;
    let mut unchecked = None;
    let (catalog, bad) = match fsck::open_catalog(&a.store, &sid) {
        CatalogState::Good(c) => (Arc::new(c), None),
        CatalogState::Unchecked(c, why) => {
            unchecked = Some(why);
            (Arc::new(c), None)
        }
        CatalogState::Bad(why) if a.repair => {
            (Arc::new(fsck::rebuild_catalog(&a.store, &sid)?), Some(why))
        }
        CatalogState::Bad(why) => {
            let (dir, c) = fsck::scratch_catalog(&sid)?;
            _scratch = Some(dir);
            (c, Some(why))
        }
    };
    let store = OpenStore::with_catalog(&a.store, desc, keys, catalog)?;
    let progress = Arc::new(fsck::Progress::default());
    let (p, root) = (progress.clone(), a.store.clone());
    std::thread::spawn(move || fsck::count_files(&root, &p));
    let bar = Bar::of(a.json, "files", &progress);
    let opts = Options {
        repair: a.repair,
        show_names: !a.no_names,
        keyless,
        progress: Some(progress),
    };
    let mut report = fsck::check(&store, &opts, bad);
    if let Some(b) = bar {
        b.finish();
    }
    if let Some(why) = unchecked {
        report.skipped.push(format!("the catalog database's own integrity check, which needs it writable ({why}); its records were read and checked"));
    }
    let code = if report.unrepaired() > 0 { 1 } else { 0 };
    print(&a, &report, code)?;
    Ok(code)
}

/// The report: a line per finding and a summary, or one JSON object.
fn print(a: &FsckArgs, report: &fsck::Report, code: i32) -> Result<(), Failure> {
    if a.json {
        let j = JsonReport {
            store: &a.store,
            report,
            clean: code == 0,
        };
        println!("{}", serde_json::to_string(&j)?);
        return Ok(());
    }
    for p in &report.problems {
        println!("problem: {p}");
    }
    for r in &report.repaired {
        println!("repaired: {r}");
    }
    for s in &report.skipped {
        println!("skipped: {s}");
    }
    for b in &report.adopted_batches {
        println!("note: {b}");
    }
    if report.adopted_records > 0 {
        println!(
            "note: {} inodes carry the type, mode and owner that coffer upgrade found in place \
             and vouched for",
            report.adopted_records
        );
    }
    for w in &report.advice {
        eprintln!("coffer: warning: {w}");
    }
    let damaged = match report.damaged_files {
        0 => String::new(),
        n => format!(
            " ({n} damaged files, {} bytes stored)",
            report.damaged_bytes
        ),
    };
    println!(
        "{}: {} files ({} bytes), {} directories, {} symlinks, {} extended attributes checked; \
         {} problems{damaged}, {} repaired",
        a.store.display(),
        report.files,
        report.plain_bytes,
        report.dirs,
        report.symlinks,
        report.xattrs,
        report.problems.len(),
        report.repaired.len()
    );
    Ok(())
}
