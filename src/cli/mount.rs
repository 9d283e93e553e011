//! `coffer mount STORE MOUNTPOINT`: unlock, check, then serve the filesystem from a daemon.
//!
//! Everything that can fail for a reason the user can fix (a wrong passphrase, a missing key,
//! a damaged catalog, a busy mount point) fails here, before the fork, with exit 2. The
//! daemon reports through a pipe once the kernel has accepted the mount, so `coffer mount`
//! returns only when the filesystem is serving.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use super::unlock::chain_with;
use super::{init_logging, CliResult, Failure, KeyOpts};
use crate::fs::{CofferFs, MountConfig};
use crate::keys::{
    self,
    unlock::{BackupOnlyWhy, Unlocked},
};
use crate::store::{Descriptor, OpenStore, StoreKeys, StoreLock};

#[derive(Args)]
pub struct MountArgs {
    /// The store directory
    pub store: PathBuf,
    /// An existing, empty directory to mount on
    pub mountpoint: PathBuf,
    #[command(flatten)]
    pub keys: KeyOpts,
    /// Stay in the foreground (log to stderr unless --log is given)
    #[arg(long)]
    pub foreground: bool,
    /// Mount read-only (for restores and checks)
    #[arg(long)]
    pub read_only: bool,
    /// Log file [default: /var/log/coffer/STORE-ID.log for root, else
    /// ~/.local/state/coffer/STORE-ID.log]. Logs name ciphertext paths only.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Let other users use the mount, with the kernel checking file permissions
    /// (default_permissions), so a restore can run as the files' owners
    #[arg(long)]
    pub allow_other: bool,
    /// FUSE worker threads
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub threads: u16,
    /// Backup-only: write new backups with the store's public key alone. Listing, creating,
    /// writing new files, truncating to zero, renames, links and metadata work; reading the
    /// content of a file written before this mount fails with EACCES (this host holds no
    /// private key), as does changing such a file in place. Files written during this mount
    /// can be read back until it ends (tar --verify works). Chosen automatically when this
    /// keystore holds only a backup credential for the store.
    #[arg(long)]
    pub backup_only: bool,
    /// What to do when no key provider gives the master key (a KMS or key server down):
    /// `backup-only` mounts with this keystore's backup credential for the store, so new
    /// backups go on (old files read EACCES), and says which providers failed; `none`
    /// refuses [default: the configuration's `fallback`, else none]
    #[arg(long, env = "COFFER_FALLBACK", value_name = "none|backup-only")]
    pub fallback: Option<String>,
    /// Turn off the kernel's writeback cache. With it off, each close and rename costs one
    /// SETATTR less (rsync of a tree about 8 % faster), but large sequential writes lose the
    /// kernel's pipelining (1 GiB with dd: 180 against 276 MB/s; docs/benchmarks.md)
    #[arg(long)]
    pub no_writeback_cache: bool,
}

fn default_log(store_id: &str) -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from(format!("/var/log/coffer/{store_id}.log"));
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into()))
                .join(".local/state")
        });
    base.join(format!("coffer/{store_id}.log"))
}

/// Refuse mount points that cannot work, with the reason.
fn check_mountpoint(mnt: &Path) -> Result<PathBuf, Failure> {
    let meta = match std::fs::metadata(mnt) {
        Ok(m) => m,
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            return Err(Failure::from(format!(
                "{} has a stale mount whose daemon is gone: run `coffer umount {}` first",
                mnt.display(),
                mnt.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Failure::from(format!(
                "mount point {} does not exist",
                mnt.display()
            )))
        }
        Err(e) => return Err(Failure::from(format!("mount point {}: {e}", mnt.display()))),
    };
    if !meta.is_dir() {
        return Err(Failure::from(format!(
            "mount point {} is not a directory",
            mnt.display()
        )));
    }
    let abs = mnt.canonicalize()?;
    if super::umount::find_mount(&abs).is_some() || is_mountpoint(&abs) {
        return Err(Failure::from(format!(
            "{} is already a mount point",
            abs.display()
        )));
    }
    if !Path::new("/dev/fuse").exists() {
        return Err(Failure::from(
            "/dev/fuse is missing: load the fuse kernel module (modprobe fuse)",
        ));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 && which("fusermount3").is_none() {
        return Err(Failure::from(
            "fusermount3 is not installed (apt-get install fuse3)",
        ));
    }
    Ok(abs)
}

fn is_mountpoint(p: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(a), Some(Ok(b))) = (std::fs::metadata(p), p.parent().map(std::fs::metadata)) else {
        return false;
    };
    a.dev() != b.dev()
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.is_file())
}

/// Unlock the store as the provider chain and the fallback decide, and say on stderr what a
/// backup-only mount or a failed provider means. Returns the keys and a line for the log.
fn unlock(root: &Path, a: &MountArgs) -> Result<(Descriptor, StoreKeys, Option<String>), Failure> {
    let mut flags = a.keys.flags();
    flags.fallback = a.fallback.clone();
    let chain = chain_with(flags)?;
    let (desc, keys, note) = match keys::unlock::unlock(&chain, root, a.backup_only)? {
        Unlocked::Full {
            desc,
            keys,
            failed,
            from,
        } => {
            let note = (!failed.0.is_empty())
                .then(|| format!("the master key came from {from}; on the way: {failed}"));
            (desc, keys, note)
        }
        Unlocked::BackupOnly { desc, keys, why } => {
            let note = match why {
                BackupOnlyWhy::Asked => None,
                BackupOnlyWhy::OnlyCredential => Some(format!(
                    "mounting backup-only: this keystore holds a backup credential for store {}, \
                     not its key: new files can be written, old ones cannot be read",
                    desc.store_id
                )),
                BackupOnlyWhy::Fallback(failed) => Some(format!(
                    "mounting backup-only (fallback): no key provider gave the master key of store \
                     {} ({failed}); new backups can be written, old files cannot be read until \
                     a provider answers and the store is mounted again",
                    desc.store_id
                )),
            };
            (desc, keys, note)
        }
    };
    if let Some(n) = &note {
        eprintln!("coffer: {n}");
    }
    Ok((desc, keys, note))
}

pub fn run(a: MountArgs) -> CliResult {
    let mnt = check_mountpoint(&a.mountpoint)?;
    let root = a
        .store
        .canonicalize()
        .map_err(|_| crate::store::StoreError::NotAStore(a.store.clone()))?;
    let (desc, keys, note) = unlock(&root, &a)?;
    if !desc.authenticated() {
        eprintln!("{}", super::upgrade::v1_warning(&a.store));
    }
    let backup_only = keys.private.is_none();
    let lock = StoreLock::acquire(&root)?;
    let store = OpenStore::open(&root, desc, keys)?;
    let log = a
        .log
        .clone()
        .unwrap_or_else(|| default_log(&store.desc.store_id));
    let cfg = MountConfig {
        read_only: a.read_only,
        allow_other: a.allow_other,
        threads: a.threads as usize,
        writeback_cache: !a.no_writeback_cache,
        backup_only,
    };
    let mode = if backup_only {
        "backup-only"
    } else {
        "read-write"
    };
    let mode = if a.read_only { "read-only" } else { mode };
    if a.foreground {
        init_logging(a.log.as_deref(), "info")?;
        if let Some(n) = &note {
            tracing::warn!("{n}");
        }
        lock.record(std::process::id(), &mnt.display().to_string(), mode);
        return serve(store, &mnt, cfg, None).map(|_| 0);
    }
    // Logging for the daemon is set up after the fork, in the child.
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
        let mut msg = String::new();
        let _ = std::fs::File::from(rd).read_to_string(&mut msg);
        // The parent leaves without running destructors: the child owns the store now.
        return match msg.strip_prefix("ok") {
            Some(_) => Ok(0),
            None if msg.is_empty() => Err(Failure::from(format!(
                "the mount daemon exited before mounting; see {}",
                log.display()
            ))),
            None => Err(Failure::from(
                msg.trim_start_matches("error: ").trim().to_string(),
            )),
        };
    }
    drop(rd);
    daemonize();
    let mut report = std::fs::File::from(wr);
    if let Err(e) = init_logging(Some(&log), "info") {
        let _ = write!(report, "error: cannot open log {}: {e}", log.display());
        // SAFETY: _exit ends the child without running the parent's destructors.
        unsafe { libc::_exit(2) };
    }
    if let Some(n) = &note {
        tracing::warn!("{n}");
    }
    lock.record(std::process::id(), &mnt.display().to_string(), mode);
    let code = match serve(store, &mnt, cfg, Some(report)) {
        Ok(()) => 0,
        Err(f) => {
            tracing::error!("{}", f.message);
            2
        }
    };
    drop(lock);
    std::process::exit(code);
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

fn serve(
    store: OpenStore,
    mnt: &Path,
    cfg: MountConfig,
    mut ready: Option<std::fs::File>,
) -> Result<(), Failure> {
    let fail = |ready: &mut Option<std::fs::File>, msg: String| {
        if let Some(r) = ready.as_mut() {
            let _ = write!(r, "error: {msg}");
        }
        Failure::from(msg)
    };
    if let Err(e) = store.start_catalog_writer() {
        return Err(fail(
            &mut ready,
            format!("cannot start the catalog writer: {e}"),
        ));
    }
    raise_fd_limit();
    let source = format!("coffer:{}", store.root.display());
    let store = Arc::new(store);
    let fs = match CofferFs::new(store.clone(), cfg.clone()) {
        Ok(fs) => fs,
        Err(e) => {
            return Err(fail(
                &mut ready,
                format!("cannot open the store's data directory: {e:?}"),
            ))
        }
    };
    let mut options = vec![
        fuser::MountOption::FSName(source),
        fuser::MountOption::Subtype("coffer".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
    ];
    if cfg.read_only {
        options.push(fuser::MountOption::RO);
    }
    let mut config = fuser::Config::default();
    config.mount_options = options;
    config.acl = if cfg.allow_other {
        fuser::SessionACL::All
    } else {
        fuser::SessionACL::Owner
    };
    config.n_threads = Some(cfg.threads);
    config.clone_fd = true;
    let mut session = match fuser::Session::new(fs, mnt, &config) {
        Ok(s) => s,
        Err(e) => {
            let hint = if e.kind() == std::io::ErrorKind::PermissionDenied && cfg.allow_other {
                " (--allow-other needs user_allow_other in /etc/fuse.conf)"
            } else {
                ""
            };
            // Nothing was written through a mount that never served; the mount error is the one
            // to report.
            let _ = store.catalog_close();
            return Err(fail(
                &mut ready,
                format!("cannot mount on {}: {e}{hint}", mnt.display()),
            ));
        }
    };
    tracing::info!("serving {} on {}", store.root.display(), mnt.display());
    raise_readahead(mnt);
    if let Some(mut r) = ready.take() {
        let _ = r.write_all(b"ok");
    }
    // SIGTERM, SIGINT and SIGHUP unmount cleanly: the session loop then ends and the
    // filesystem's destroy() flushes the catalog.
    let mut unmounter = session.unmount_callable();
    let mnt_owned = mnt.to_path_buf();
    match signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT, libc::SIGHUP]) {
        Ok(mut signals) => {
            let _ = std::thread::Builder::new()
                .name("coffer-signals".into())
                .spawn(move || {
                    if let Some(sig) = signals.forever().next() {
                        tracing::info!("signal {sig}: unmounting {}", mnt_owned.display());
                        if let Err(e) = unmounter.unmount() {
                            tracing::warn!("unmount failed ({e}); detaching lazily");
                            lazy_unmount(&mnt_owned);
                        }
                    }
                });
        }
        Err(e) => tracing::warn!("cannot install signal handlers: {e}"),
    }
    let result = session.run();
    drop(store);
    result.map_err(|e| Failure::from(format!("FUSE session ended with an error: {e}")))
}

/// Readahead for the mount, in KiB: the kernel gives FUSE mounts 128 KiB and caps what the
/// filesystem asks for in init() at that, so only the mount's sysfs entry can raise it. With
/// 1 MiB, cold sequential reads arrive as 1 MiB requests that the pool decrypts in parallel:
/// 1,830 against 1,359 MB/s here (docs/benchmarks.md). Needs root; otherwise the default stays.
const READAHEAD_KB: u32 = 1024;

fn raise_readahead(mnt: &Path) {
    // The device comes from mountinfo: a stat() of the mount point would be a FUSE request,
    // and the session loop that answers it has not started yet.
    let Some(dev) = super::mountinfo::mounts()
        .into_iter()
        .rev()
        .find(|m| m.point == mnt)
        .map(|m| m.device)
    else {
        tracing::info!("readahead stays at the kernel's default (mount not in mountinfo)");
        return;
    };
    let bdi = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    match std::fs::write(&bdi, READAHEAD_KB.to_string()) {
        Ok(()) => tracing::debug!("readahead {READAHEAD_KB} KiB via {bdi}"),
        Err(e) => tracing::info!("readahead stays at the kernel's default ({bdi}: {e})"),
    }
}

fn lazy_unmount(mnt: &Path) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(c) = std::ffi::CString::new(mnt.as_os_str().as_bytes()) {
        // SAFETY: c is NUL-terminated.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
            let _ = std::process::Command::new("fusermount3")
                .arg("-uz")
                .arg(mnt)
                .status();
        }
    }
}

/// Directory descriptors are cached up to a quarter of the soft limit: raise it to the hard
/// limit. Files hold no descriptor unless open, so the hard limit itself is left alone.
fn raise_fd_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: r is a valid rlimit to fill and then to pass back.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}
