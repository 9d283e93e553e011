//! `coffer backup` and `coffer restore`: trees copied into and out of a store without a
//! mount. The store is served in-process (fs::direct), so names, keys, attributes, holes and
//! links are written exactly as a mount writes them, and read as it reads them; only the
//! kernel's round trips are gone, and files are copied by a pool of workers at once.
//!
//! Owns: the walk of both trees, rsync's quick check (size and mtime) and `--checksum`,
//! `--delete`, hard links, what is counted, and what an interrupted run leaves: a file new
//! to a format-3 store is written unnamed and linked into place whole; any other is written
//! under a temporary name and renamed into place whole. No reader ever sees half of one; a
//! rerun removes the leftovers and finishes the job.

mod content;
mod delete;
mod filter;
mod links;
pub mod local;
mod put;
mod put_file;
mod restore;
mod scan;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

pub use filter::{Filter, FilterError};
pub use put::backup;
pub use restore::restore;
pub use scan::{scan, Totals};

/// The plaintext name prefix of a file being written; what an interrupted run leaves under
/// it is removed by the next run into that directory.
pub const PARTIAL: &str = ".coffer-partial.";

/// How a run behaves.
pub struct Options {
    /// Worker threads copying files at once.
    pub jobs: usize,
    /// Say what would be done, change nothing.
    pub dry_run: bool,
    /// Remove from the destination what the source no longer has (backup only).
    pub delete: bool,
    /// At most this many entries removed by `delete`; None: none at all when that would be
    /// more than half of what the store holds under the target.
    pub max_delete: Option<u64>,
    /// Compare content, not size and mtime, to decide whether a file changed.
    pub checksum: bool,
    pub filter: Filter,
    /// The last run on the store did not finish: files it may have placed without their
    /// catalog records committed get them again (from their headers) when found unchanged.
    pub recheck: bool,
    /// Restore owners, set-user-ID and set-group-ID bits and device nodes from a store whose
    /// metadata is not authenticated (before format 3) as it says them.
    pub trust_metadata: bool,
}

/// Run `f` on every item with up to `jobs` workers of the current pool taking them in turn,
/// so that the items in flight are neighbours in the list (entries in inode order: neighbours
/// on disk, which a cold disk reads far faster), where rayon's splitting would send each
/// worker to a different part of it. A worker that meets a directory fills it the same way
/// (a nested scope, whose waiting worker helps with other work).
fn in_turn<T: Sync>(items: &[T], jobs: usize, f: impl Fn(&T) + Sync) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let workers = jobs.min(items.len());
    if workers <= 1 {
        return items.iter().for_each(f);
    }
    rayon::scope(|s| {
        for _ in 0..workers {
            s.spawn(|_| {
                while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
                    f(item);
                }
            });
        }
    });
}

/// What a run did so far; read by a progress display while it runs.
#[derive(Default)]
pub struct Counters {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    pub unchanged: AtomicU64,
    pub deleted: AtomicU64,
    pub failed: AtomicU64,
    pub dirs: AtomicU64,
    /// Entries --delete kept back (delete.rs).
    pub deletes_refused: AtomicU64,
    /// Failures for want of space where the run writes (the first one stops the run).
    pub full: AtomicU64,
    /// Set to stop the run (a signal handler may hold it): workers drop the file in hand
    /// and start no other.
    pub stop: Arc<AtomicBool>,
}

/// The end of a run, for a person or `--json`.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Summary {
    /// Files, symlinks, links and special files written (new or changed).
    pub files_written: u64,
    pub bytes_written: u64,
    pub unchanged: u64,
    pub deleted: u64,
    pub failed: u64,
    pub directories: u64,
    /// Of `failed`, those for want of space where the run writes (which stopped it).
    pub out_of_space: u64,
    /// Entries --delete would have removed but kept, for --max-delete or its default.
    pub deletes_refused: u64,
    pub interrupted: bool,
    pub dry_run: bool,
    pub seconds: f64,
    /// What the administrator should know or do (`coffer upgrade`, say).
    pub warnings: Vec<String>,
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Whether failure `e` is for want of space where the run writes: ENOSPC or EDQUOT, or
    /// EIO or E2BIG while `full` says that filesystem is full (the store's layers say EIO for
    /// a block they could not write). The first stops the run, as a full disk does not empty
    /// itself; the caller reports that one and counts the rest.
    pub fn out_of_space(&self, e: &std::io::Error, full: impl FnOnce() -> bool) -> Space {
        let plain = matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT));
        let vague = matches!(e.raw_os_error(), Some(libc::EIO | libc::E2BIG));
        if !(plain || vague && full()) {
            return Space::Other;
        }
        self.stop.store(true, Ordering::Relaxed);
        match self.full.fetch_add(1, Ordering::Relaxed) {
            0 => Space::First,
            _ => Space::Again,
        }
    }

    /// Whether failure `e` is a file in hand dropped because the run was stopped (a signal,
    /// a full disk): the run says it stopped; the file is not a failure of its own.
    pub fn dropped(&self, e: &std::io::Error) -> bool {
        e.kind() == std::io::ErrorKind::Interrupted && self.stopped()
    }

    pub fn summary(&self, seconds: f64, dry_run: bool) -> Summary {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Summary {
            files_written: g(&self.files),
            bytes_written: g(&self.bytes),
            unchanged: g(&self.unchanged),
            deleted: g(&self.deleted),
            failed: g(&self.failed),
            directories: g(&self.dirs),
            out_of_space: g(&self.full),
            deletes_refused: g(&self.deletes_refused),
            interrupted: self.stopped() && g(&self.full) == 0,
            dry_run,
            seconds,
            warnings: Vec::new(),
        }
    }
}

/// What a failure was, as to space (Counters::out_of_space).
#[derive(Debug, PartialEq, Eq)]
pub enum Space {
    /// Not for want of space: reported.
    Other,
    /// The first for want of space: reported, and the run stops.
    First,
    /// Another: counted, not reported again.
    Again,
}

/// Where a run tells of a path it could not copy (and goes on), and of what it does in a dry
/// run. Paths are the plaintext paths the user named: for the user's terminal, never a log.
pub trait Report: Sync {
    fn failed(&self, path: &Path, what: &str, e: &std::io::Error);
    fn would(&self, action: &str, path: &Path);
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}: {1}")]
    Source(PathBuf, std::io::Error),
    #[error("{path} in the store: {e}")]
    Store { path: PathBuf, e: std::io::Error },
    #[error("{0} in the store is not a directory")]
    NotADir(PathBuf),
    #[error("cannot start {0} workers: {1}")]
    Pool(usize, String),
    #[error(
        "this host holds no private key for the store (a backup credential, or a backup-only \
         fallback): files written before cannot be restored here; restore on a host that has \
         the store's key"
    )]
    NoReadKey,
    #[error("the store could not be made durable: {0}")]
    Sync(std::io::Error),
}
