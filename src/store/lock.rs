//! The store's locks: the lock file a mount's daemon (or fsck, or an upgrade) holds for its
//! lifetime, and the flock on the store directory that key rotations and syncs take.
//!
//! The lock file is opened without following a symlink and must be a regular file, so a host
//! that can write the store cannot make a mount write its record into a file elsewhere.

use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::{StoreError, LOCK};
use crate::within;

/// An exclusive lock on a store: held by a mount's daemon for its lifetime, and by fsck.
/// The lock file records the holder's pid and mount point (no secrets).
pub struct StoreLock {
    /// None: a read-only holder that could not take a lock (see `unlocked`).
    file: Option<std::fs::File>,
    /// Why a read-only holder runs without a lock in the store.
    unlocked: Option<String>,
    /// The process that wrote the record, 0 if none. A mount's parent process hands the lock
    /// to the daemon it forks; only the daemon may clear the record.
    recorded_by: std::sync::atomic::AtomicU32,
}

/// The lock record is three short lines; anything longer is not ours.
const LOCK_MAX: usize = 8192;

impl StoreLock {
    pub fn acquire(root: &Path) -> Result<StoreLock, StoreError> {
        let p = root.join(LOCK);
        let io = |e| StoreError::Io(p.clone(), e);
        let dir = within::open_root(root).map_err(io)?;
        let file = within::open_at(&dir, OsStr::new(LOCK), libc::O_RDWR | libc::O_CREAT, 0o600)
            .map_err(|e| match read_only_cause(&e) {
                true => StoreError::NotWritable(root.to_path_buf(), e),
                false => io(e),
            })?;
        Self::lock(root, file, false)
    }

    /// For a holder that only reads (a read-only mount, fsck without --repair, a restore): a
    /// shared lock where it can be had, so that readers run side by side and a writer waits
    /// for them all. On a store that cannot be written (read-only media, a snapshot, a
    /// user without write access) an existing lock file is locked through a read-only
    /// descriptor, and where there is none the holder goes on without one; `unlocked` then
    /// says why, for the holder to tell the user.
    pub fn acquire_for_reading(root: &Path) -> Result<StoreLock, StoreError> {
        let p = root.join(LOCK);
        let io = |e| StoreError::Io(p.clone(), e);
        let dir = within::open_root(root).map_err(io)?;
        let name = OsStr::new(LOCK);
        let err = match within::open_at(&dir, name, libc::O_RDWR | libc::O_CREAT, 0o600) {
            Ok(file) => return Self::lock(root, file, true),
            Err(e) if read_only_cause(&e) => e,
            Err(e) => return Err(io(e)),
        };
        match within::open_at(&dir, name, libc::O_RDONLY, 0) {
            Ok(file) => Self::lock(root, file, true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StoreLock {
                file: None,
                unlocked: Some(format!(
                    "cannot take the store's lock ({}: {err}): nothing in the store keeps another \
                     host from changing it while this reads",
                    p.display()
                )),
                recorded_by: std::sync::atomic::AtomicU32::new(0),
            }),
            Err(e) => Err(io(e)),
        }
    }

    /// flock the lock file: shared for holders that only read (a read-only mount, fsck
    /// without --repair, a restore), which may run side by side; exclusive for a writer.
    fn lock(root: &Path, file: std::fs::File, shared: bool) -> Result<StoreLock, StoreError> {
        let how = match shared {
            true => libc::LOCK_SH,
            false => libc::LOCK_EX,
        };
        // SAFETY: the fd is owned by `file` and open.
        if unsafe { libc::flock(file.as_raw_fd(), how | libc::LOCK_NB) } != 0 {
            let holder = match Self::holder(root) {
                Some((pid, mnt)) if !mnt.is_empty() => format!(" (mounted at {mnt} by pid {pid})"),
                Some((pid, _)) => format!(" (by pid {pid})"),
                None => String::new(),
            };
            return Err(StoreError::Busy(root.to_path_buf(), holder));
        }
        Ok(StoreLock {
            file: Some(file),
            unlocked: None,
            recorded_by: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// Why this holder runs without a lock in the store, if it does.
    pub fn unlocked(&self) -> Option<&str> {
        self.unlocked.as_deref()
    }

    /// Record who holds the lock, where, and in which mode.
    pub fn record(&self, pid: u32, mountpoint: &str, mode: &str) {
        use std::io::{Seek, Write};
        let Some(mut f) = self.file.as_ref() else {
            return;
        };
        let _ = f.set_len(0);
        let _ = f.seek(std::io::SeekFrom::Start(0));
        let _ = write!(f, "{pid}\n{mountpoint}\n{mode}\n");
        self.recorded_by
            .store(std::process::id(), std::sync::atomic::Ordering::SeqCst);
    }

    /// Leave the record behind at release, as a killed holder does: for a run that could not
    /// finish its catalog (a full disk), so that the next one knows to record again what it
    /// finds. Writes nothing (on a full disk a write may fail).
    pub fn leave_unfinished(&self) {
        self.recorded_by
            .store(0, std::sync::atomic::Ordering::SeqCst);
    }

    /// (pid, mount point) of the holder, if recorded and not yet released.
    pub fn holder(root: &Path) -> Option<(u32, String)> {
        Self::holder_mode(root).map(|(pid, mnt, _)| (pid, mnt))
    }

    /// (pid, mount point, mode) of the last holder, if recorded.
    pub fn holder_mode(root: &Path) -> Option<(u32, String, String)> {
        let bytes = within::read(root, Path::new(LOCK), LOCK_MAX).ok()?;
        let s = String::from_utf8(bytes).ok()?;
        let mut lines = s.lines();
        let pid = lines.next()?.trim().parse().ok()?;
        let mnt = lines.next().unwrap_or("").to_string();
        Some((pid, mnt, lines.next().unwrap_or("read-write").to_string()))
    }
}

/// A clean release empties the record, so a store at rest has the same bytes after every
/// mount (an auxiliary rsync copy then has nothing to resend). A killed holder leaves its
/// record behind, which helps whoever finds the stale lock.
impl Drop for StoreLock {
    fn drop(&mut self) {
        if *self.recorded_by.get_mut() == std::process::id() {
            if let Some(f) = &self.file {
                let _ = f.set_len(0);
            }
        }
    }
}

/// Whether an open for writing failed because the store cannot be written, rather than
/// because something is wrong with it.
fn read_only_cause(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM)
    )
}

const BUSY_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// An exclusive lock on a store's key records (its descriptor) for a rotation, sync or
/// upgrade: flock on the store directory itself, so no file is added to the store.
pub struct KeyRecordsLock {
    _dir: std::os::fd::OwnedFd,
}

impl KeyRecordsLock {
    /// A lock released a moment ago may still be held for a few milliseconds by a child that
    /// another thread forked meanwhile (its copy of the descriptor lasts until its exec), so
    /// a taken lock is asked again for up to BUSY_GRACE before the store is called busy.
    pub fn acquire(root: &Path) -> Result<KeyRecordsLock, StoreError> {
        let d = within::open_root(root).map_err(|e| StoreError::Io(root.to_path_buf(), e))?;
        let give_up = std::time::Instant::now() + BUSY_GRACE;
        // SAFETY: the fd is owned by `d` and open.
        while unsafe { libc::flock(d.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            if std::time::Instant::now() >= give_up {
                return Err(StoreError::Busy(
                    root.to_path_buf(),
                    " (another key rotation, sync or upgrade is running)".into(),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(KeyRecordsLock { _dir: d })
    }
}
