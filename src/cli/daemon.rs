//! Running the mount as a daemon: fork, detach, and report back through a pipe, so that
//! `coffer mount` returns only once the filesystem serves (exit 0), or with the reason it did
//! not (exit 2). Everything that can fail for a reason the user can fix fails before the fork.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use super::{CliResult, Failure};

/// What the daemon's body returns when it fails: the report pipe if it still holds it, and
/// the message.
pub type DaemonFailure = (Option<std::fs::File>, String);

/// Fork; the parent waits for the child's report and returns it, the child detaches, runs
/// `body` with the report pipe, and exits (never returning here).
pub fn run(log: &Path, body: impl FnOnce(std::fs::File) -> Result<(), DaemonFailure>) -> CliResult {
    let mut fds = [0; 2];
    // SAFETY: fds is an array of two ints, as pipe2 requires.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Failure::from(std::io::Error::last_os_error()));
    }
    // SAFETY: pipe2 returned two fresh descriptors that nothing else owns.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no other thread exists yet in this process (the catalog writer, rayon and the
    // FUSE workers all start in the child), so the child inherits a consistent state.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Failure::from(std::io::Error::last_os_error()));
    }
    if pid > 0 {
        drop(wr);
        return wait_for_report(rd, log);
    }
    drop(rd);
    daemonize();
    let code = match body(std::fs::File::from(wr)) {
        Ok(()) => 0,
        Err((report, msg)) => {
            failed(report, &msg);
            tracing::error!("{msg}");
            2
        }
    };
    std::process::exit(code);
}

/// The parent: the child's "ok", or its error, or its silence.
fn wait_for_report(rd: OwnedFd, log: &Path) -> CliResult {
    let mut msg = String::new();
    let _ = std::fs::File::from(rd).read_to_string(&mut msg);
    // The parent leaves without running destructors: the child owns the store now.
    match msg.strip_prefix("ok") {
        Some(_) => Ok(0),
        None if msg.is_empty() => Err(Failure::from(format!(
            "the mount daemon exited before mounting; see {}",
            log.display()
        ))),
        None => Err(Failure::from(
            msg.trim_start_matches("error: ").trim().to_string(),
        )),
    }
}

/// Tell `coffer mount` the filesystem serves.
pub fn ready(report: Option<std::fs::File>) {
    if let Some(mut r) = report {
        let _ = r.write_all(b"ok");
    }
}

/// Tell `coffer mount` why it does not.
pub fn failed(report: Option<std::fs::File>, msg: &str) {
    if let Some(mut r) = report {
        let _ = write!(r, "error: {msg}");
    }
}

/// Detach from the terminal: new session, standard streams to /dev/null, exact modes.
fn daemonize() {
    // SAFETY: setsid, umask, open and dup2 have no memory-safety preconditions here.
    unsafe {
        libc::setsid();
        libc::umask(0);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        }
    }
}
