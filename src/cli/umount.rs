//! `coffer umount MOUNTPOINT`: unmount (which ends the daemon's FUSE session and makes it
//! flush the catalog), then wait until the daemon has exited.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;

use super::{CliResult, Failure};
use crate::store::StoreLock;

#[derive(Args)]
pub struct UmountArgs {
    /// Where the store is mounted
    pub mountpoint: PathBuf,
    /// Seconds to wait for the daemon to finish flushing
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

/// A mount of coffer's in /proc/self/mountinfo: (mount point, store path).
pub fn find_mount(mnt: &Path) -> Option<(PathBuf, PathBuf)> {
    crate::mountinfo::mounts().into_iter().find_map(|m| {
        let store = m.source.strip_prefix("coffer:")?;
        (m.point == mnt && m.fstype.starts_with("fuse")).then(|| (m.point.clone(), store.into()))
    })
}

/// How long a busy mount point is given to become free before umount says it is busy.
const BUSY_GRACE: Duration = Duration::from_secs(3);

fn alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

pub fn run(a: UmountArgs) -> CliResult {
    // A stale mount (daemon killed) cannot be canonicalized: use the path as given.
    let mnt = a
        .mountpoint
        .canonicalize()
        .unwrap_or_else(|_| std::path::absolute(&a.mountpoint).unwrap_or(a.mountpoint.clone()));
    let Some((_, store)) = find_mount(&mnt) else {
        return Err(Failure::from(format!(
            "{} is not a mounted coffer store",
            mnt.display()
        )));
    };
    let daemon = StoreLock::holder(&store)
        .map(|(pid, _)| pid)
        .filter(|p| alive(*p) && *p != std::process::id());
    unmount(&mnt)?;
    if let Some(pid) = daemon {
        let deadline = Instant::now() + Duration::from_secs(a.timeout);
        while alive(pid) && !is_zombie(pid) {
            if Instant::now() > deadline {
                return Err(Failure::from(format!(
                    "{} is unmounted, but its daemon (pid {pid}) has not exited after {} s",
                    mnt.display(),
                    a.timeout
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // A daemon that flushed its catalog empties its lock record as it exits.
        if StoreLock::holder(&store).is_some_and(|(p, _)| p == pid) {
            return Err(Failure::from(format!(
                "{} is unmounted, but its daemon (pid {pid}) could not flush the store's \
                 catalog (a full disk? see the mount's log); free space, then the next mount \
                 or backup of {} records again what it finds",
                mnt.display(),
                store.display()
            )));
        }
    }
    Ok(0)
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn unmount(mnt: &Path) -> Result<(), Failure> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(mnt.as_os_str().as_bytes())?;
    // SAFETY: geteuid has no preconditions; c is NUL-terminated.
    if unsafe { libc::geteuid() } == 0 {
        // Files that a process had open when it exited are released by the kernel a moment
        // later (delayed fput), so `tar ...; coffer umount` can find the mount busy for a few
        // milliseconds: try again for a short while before calling it busy.
        let deadline = Instant::now() + BUSY_GRACE;
        let e = loop {
            // SAFETY: c is NUL-terminated.
            if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
                return Ok(());
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EBUSY) || Instant::now() > deadline {
                break e;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        return Err(match e.raw_os_error() {
            Some(libc::EBUSY) => Failure::from(format!(
                "{} is busy: files or directories in it are still open (see `fuser -vm {}`)",
                mnt.display(),
                mnt.display()
            )),
            _ => Failure::from(format!("cannot unmount {}: {e}", mnt.display())),
        });
    }
    let out = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg(mnt)
        .output()
        .map_err(|e| {
            Failure::from(format!(
                "cannot run fusermount3 (apt-get install fuse3): {e}"
            ))
        })?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    Err(Failure::from(format!(
        "cannot unmount {}: {}",
        mnt.display(),
        err.trim()
    )))
}
