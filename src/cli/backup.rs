//! `coffer backup` and `coffer restore`: trees into and out of a store without a mount. This
//! file parses, unlocks, shows progress and prints the summary; the walk is src/backup.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;

use super::progress::{Bar, Sample};
use super::unlock::unlock_store;
use super::{CliResult, Failure, KeyOpts};
use crate::backup::{self, Counters, Filter, Options, Report, Summary, Totals};
use crate::fs::direct::Tree;
use crate::store::{OpenStore, StoreLock, DESCRIPTOR};

/// What backup and restore share.
#[derive(Args)]
pub struct RunOpts {
    #[command(flatten)]
    pub keys: KeyOpts,
    /// Files copied at once [default: 4 per CPU, from 4 to 32: enough requests in flight to
    /// keep a cold disk busy, few enough not to crowd the CPUs (docs/backup.md)]
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: Option<u16>,
    /// Show what would be copied or deleted, change nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Leave out what matches PATTERN (rsync's rules: `*.tmp` anywhere, `/var/cache` from the
    /// top, `tmp/` directories only, `**` across directories); repeatable
    #[arg(long, value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// Patterns to leave out, one a line (# starts a comment); repeatable
    #[arg(long, value_name = "FILE")]
    pub exclude_from: Vec<PathBuf>,
    /// One JSON summary on stdout at the end, and no progress bar
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct BackupArgs {
    /// Files and directories to back up; a trailing slash copies a directory's contents
    #[arg(required = true, value_name = "SOURCE")]
    pub sources: Vec<PathBuf>,
    /// The store, and a directory in it (made as needed): STORE or STORE:PATH
    #[arg(value_name = "STORE[:PATH]")]
    pub dest: String,
    #[command(flatten)]
    pub run: RunOpts,
    /// Remove from the store's directory what the sources no longer have (after the walk,
    /// and none at all when that is more than half of what the store holds there)
    #[arg(long)]
    pub delete: bool,
    /// With --delete: remove at most N entries, keep the rest and exit 25 (rsync's meaning);
    /// given, it replaces the more-than-half refusal
    #[arg(long, value_name = "N", requires = "delete")]
    pub max_delete: Option<u64>,
    /// Compare content, not size and modification time, to find what changed
    #[arg(long, short = 'c')]
    pub checksum: bool,
    /// When no key provider gives the master key: `backup-only` goes on with this keystore's
    /// backup credential (new files can be written), `none` refuses [default: the
    /// configuration's `fallback`, else none]
    #[arg(long, env = "COFFER_FALLBACK", value_name = "none|backup-only")]
    pub fallback: Option<String>,
}

#[derive(Args)]
pub struct RestoreArgs {
    /// What to restore: STORE:PATH (a trailing slash restores a directory's contents)
    #[arg(value_name = "STORE:PATH")]
    pub from: String,
    /// Where to put it (made if absent)
    #[arg(value_name = "TARGET")]
    pub to: PathBuf,
    #[command(flatten)]
    pub run: RunOpts,
    /// From a store before format 3, whose owners, modes and file types nothing
    /// authenticates: restore owners, set-user-ID and set-group-ID bits and device nodes as
    /// it says them anyway (without this, files get the restoring user's owner and no set-ID
    /// bit, and device nodes are not made). Better: `coffer upgrade` the store you wrote
    #[arg(long)]
    pub trust_store_metadata: bool,
}

/// Split STORE[:PATH] at the first colon that ends a store's directory.
fn store_path(arg: &str) -> Result<(PathBuf, PathBuf), Failure> {
    let is_store = |p: &str| !p.is_empty() && Path::new(p).join(DESCRIPTOR).is_file();
    for (i, _) in arg.match_indices(':') {
        if is_store(&arg[..i]) {
            return Ok((PathBuf::from(&arg[..i]), PathBuf::from(&arg[i + 1..])));
        }
    }
    if is_store(arg) {
        return Ok((PathBuf::from(arg), PathBuf::new()));
    }
    Err(Failure::from(format!(
        "{arg} names no store: give STORE:PATH, where STORE is a directory holding {DESCRIPTOR}"
    )))
}

/// Prints what a run reports, above the progress bar when there is one. With `--json`,
/// stdout holds the summary alone: a dry run's "would" lines go to stderr.
struct Printer<'a> {
    bar: Option<&'a Bar>,
    json: bool,
}

impl Printer<'_> {
    fn say(&self, line: String, err: bool) {
        match (&self.bar, err) {
            (Some(b), _) => b.println(&line, err),
            (None, true) => eprintln!("{line}"),
            (None, false) => println!("{line}"),
        }
    }
}

impl Report for Printer<'_> {
    fn failed(&self, path: &Path, what: &str, e: &std::io::Error) {
        self.say(format!("coffer: {}: {what}: {e}", path.display()), true);
    }

    fn would(&self, action: &str, path: &Path) {
        self.say(format!("would {action} {}", path.display()), self.json);
    }
}

fn options(r: &RunOpts, delete: bool, checksum: bool, trust: bool) -> Result<Options, Failure> {
    let jobs = r.jobs.map(usize::from).unwrap_or_else(|| {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        (cpus * 4).clamp(4, 32)
    });
    Ok(Options {
        jobs,
        dry_run: r.dry_run,
        delete,
        checksum,
        filter: Filter::new(&r.exclude, &r.exclude_from)?,
        recheck: false,
        trust_metadata: trust,
        max_delete: None,
    })
}

/// An opened store: its tree, its lock, whether the last holder of the store was killed, and
/// what the administrator should be told (a store before format 3 names `coffer upgrade`).
struct Opened {
    tree: Tree,
    lock: StoreLock,
    killed: bool,
    warnings: Vec<String>,
}

/// Unlock, lock and serve the store in-process.
fn open(
    root: &Path,
    r: &RunOpts,
    fallback: Option<String>,
    doing: &str,
    write: bool,
) -> Result<Opened, Failure> {
    let root = root
        .canonicalize()
        .map_err(|_| crate::store::StoreError::NotAStore(root.to_path_buf()))?;
    let (desc, keys, _) = unlock_store(&root, &r.keys, fallback, false, doing)?;
    let mut warnings = Vec::new();
    if !desc.has_records() {
        let w = crate::store::upgrade_advice(&root, desc.version);
        eprintln!("coffer: warning: {w}");
        warnings.push(w);
    }
    let lock = match write {
        true => StoreLock::acquire(&root)?,
        false => StoreLock::acquire_for_reading(&root)?,
    };
    if let Some(why) = lock.unlocked() {
        eprintln!("coffer: note: {why}");
    }
    // A clean release empties the record: one left behind is a holder that was killed.
    let killed = StoreLock::holder_mode(&root).filter(|(pid, _, _)| *pid != std::process::id());
    if let (Some((pid, _, mode)), true) = (&killed, write) {
        eprintln!(
            "coffer: note: the last holder of this store (pid {pid}, {mode}) did not finish; \
             files it left are checked as they are met"
        );
    }
    // Only a writer records itself: readers share the lock, and a read-only mount's record
    // (which `coffer umount` reads) stays its own.
    if write {
        lock.record(std::process::id(), "", doing);
    }
    let store = OpenStore::open(&root, desc, keys)?;
    let tree = Tree::new(store, !write || r.dry_run)?;
    Ok(Opened {
        tree,
        lock,
        killed: killed.is_some(),
        warnings,
    })
}

/// Ctrl-C (and SIGTERM, SIGHUP) stop the run: the file in hand is finished or dropped, the
/// store is left consistent, and the summary says the run was interrupted.
fn stop_on_signals(counters: &Arc<Counters>) -> Result<(), Failure> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        signal_hook::flag::register(sig, counters.stop.clone())?;
    }
    Ok(())
}

/// A progress bar on a terminal (nothing otherwise), fed from the counters.
fn progress(counters: &Arc<Counters>, totals: Option<Arc<Totals>>, json: bool) -> Option<Bar> {
    let c = counters.clone();
    Bar::start(json, "files", move || {
        let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        Sample {
            done: g(&c.files) + g(&c.unchanged) + g(&c.failed),
            total: totals.as_ref().map(|t| g(&t.files)),
            bytes: Some(g(&c.bytes)),
        }
    })
}

/// Print the summary; the exit code: 0, 23 when some paths failed (as rsync), 20 when stopped.
fn finish(s: &Summary, json: bool, verb: &str) -> CliResult {
    if json {
        println!("{}", serde_json::to_string(s)?);
    } else {
        let dry = if s.dry_run {
            " (dry run: nothing changed)"
        } else {
            ""
        };
        eprintln!(
            "coffer: {verb} {} files ({}), {} unchanged, {} deleted, {} failed, {} directories in {:.1} s{dry}",
            s.files_written,
            indicatif::HumanBytes(s.bytes_written),
            s.unchanged,
            s.deleted,
            s.failed,
            s.directories,
            s.seconds
        );
    }
    if s.deletes_refused > 0 {
        eprintln!(
            "coffer: --delete kept {} entries that the sources no longer have: more than \
             --max-delete allows or, without it, more than half of what the store holds there \
             (an empty or unmounted source?); give --max-delete N to allow N",
            s.deletes_refused
        );
    }
    if s.out_of_space > 0 {
        let (place, verb) = match verb {
            "restored" => ("the restore's target", "restored"),
            _ => ("the store", "backed up"),
        };
        let n = match s.failed {
            1 => "1 file".to_string(),
            n => format!("{n} files (the first is named above)"),
        };
        eprintln!(
            "coffer: {place} is full: {n} could not be {verb}, and the run stopped; free space \
             there, then run the same command again to finish"
        );
        return Ok(2);
    }
    Ok(match (s.interrupted, s.failed) {
        (true, _) => {
            eprintln!("coffer: interrupted: run the same command again to finish");
            20
        }
        (false, 0) if s.deletes_refused > 0 => 25,
        (false, 0) => 0,
        (false, _) => 23,
    })
}

/// Run `job` with the counters, a progress bar, and signals that stop it; then the summary.
fn with_progress(
    r: &RunOpts,
    totals: Option<Arc<Totals>>,
    (verb, warnings): (&str, Vec<String>),
    job: impl FnOnce(&Counters, &Printer) -> Result<(), Failure>,
) -> CliResult {
    let counters = Arc::new(Counters::default());
    stop_on_signals(&counters)?;
    let start = Instant::now();
    let bar = progress(&counters, totals, r.json);
    let printer = Printer {
        bar: bar.as_ref(),
        json: r.json,
    };
    let result = job(&counters, &printer);
    if let Some(b) = bar {
        b.finish();
    }
    let mut s = counters.summary(start.elapsed().as_secs_f64(), r.dry_run);
    // A full disk that also kept the catalog from being flushed is told once, as full.
    if let Err(f) = result {
        if s.out_of_space == 0 {
            return Err(f);
        }
    }
    s.warnings = warnings;
    finish(&s, r.json, verb)
}

pub fn run_backup(a: BackupArgs) -> CliResult {
    // What the store layer logs (a damaged file, say) goes to stderr; it names ciphertext
    // paths only.
    super::init_logging(None, "warn")?;
    let (root, dest) = store_path(&a.dest)?;
    let mut opts = options(&a.run, a.delete, a.checksum, false)?;
    opts.max_delete = a.max_delete;
    for s in &a.sources {
        std::fs::symlink_metadata(s).map_err(|e| format!("{}: {e}", s.display()))?;
    }
    let o = open(&root, &a.run, a.fallback.clone(), "backing up", true)?;
    let tree = o.tree;
    opts.recheck = o.killed;
    let totals = (!a.run.json && std::io::stderr().is_terminal()).then(|| {
        let t = Arc::new(Totals::default());
        let (t2, srcs, ex, exf) = (
            t.clone(),
            a.sources.clone(),
            a.run.exclude.clone(),
            a.run.exclude_from.clone(),
        );
        std::thread::spawn(move || {
            if let Ok(f) = Filter::new(&ex, &exf) {
                backup::scan(&srcs, &f, &t2);
            }
        });
        t
    });
    let code = with_progress(&a.run, totals, ("backed up", o.warnings), |c, p| {
        let r = backup::backup(&tree, &a.sources, &dest, &opts, c, p);
        let closed = tree.finish();
        r?;
        closed.map_err(|e| Failure::from(format!("the store could not be made durable: {e}")))
    });
    // The catalog may be behind what the run placed (a full disk, an unflushed catalog): the
    // lock record stays, so that the next run records again what it finds.
    if !matches!(code, Ok(0 | 20 | 23)) {
        o.lock.leave_unfinished();
    }
    code
}

pub fn run_restore(a: RestoreArgs) -> CliResult {
    super::init_logging(None, "warn")?;
    let (root, from) = store_path(&a.from)?;
    let opts = options(&a.run, false, false, a.trust_store_metadata)?;
    let o = open(&root, &a.run, None, "restoring", false)?;
    let (tree, mut warnings) = (o.tree, o.warnings);
    if !tree.authenticated_metadata() && !a.trust_store_metadata {
        let w = "restoring without owners (files get the restoring user's), set-user-ID or \
                 set-group-ID bits or device nodes, which this store does not authenticate; \
                 --trust-store-metadata restores them as it says them"
            .to_string();
        eprintln!("coffer: warning: {w}");
        warnings.push(w);
    }
    with_progress(&a.run, None, ("restored", warnings), |c, p| {
        let r = backup::restore(&tree, &from, &a.to, &opts, c, p);
        let _ = tree.finish();
        r.map_err(Failure::from)
    })
}
