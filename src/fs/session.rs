//! Serving a mount: the FUSE session over an open store, its options, the signals that
//! unmount it cleanly, the readahead the kernel would otherwise cap, and the descriptor limit
//! the inode table needs. The binary decides whether this runs in a daemon (cli/daemon.rs).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fuser::Errno;

use super::{CofferFs, MountConfig};
use crate::store::OpenStore;

/// Why a mount did not serve, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot start the catalog writer: {0}")]
    CatalogWriter(std::io::Error),
    #[error("cannot open the store's data directory: {0:?}")]
    DataDir(Errno),
    #[error("cannot mount on {}: {source}{hint}", mnt.display())]
    Mount {
        mnt: PathBuf,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("FUSE session ended with an error: {0}")]
    Session(std::io::Error),
    #[error(
        "unmounted, but the catalog could not be flushed (a full disk?): the next mount or \
         backup of this store records again what it finds"
    )]
    CatalogBehind,
}

/// Serve `store` on `mnt` until it is unmounted (by umount, or SIGTERM, SIGINT or SIGHUP to
/// this process). `serving` is called once the kernel has accepted the mount.
pub fn serve(
    store: OpenStore,
    mnt: &Path,
    cfg: MountConfig,
    serving: impl FnOnce(),
) -> Result<(), ServeError> {
    store
        .start_catalog_writer()
        .map_err(ServeError::CatalogWriter)?;
    raise_fd_limit();
    let source = format!("coffer:{}", store.root.display());
    let store = Arc::new(store);
    let fs = CofferFs::new(store.clone(), cfg.clone()).map_err(ServeError::DataDir)?;
    let notifier = fs.notifier_slot();
    let io = fs.io_counters();
    let mut session = match fuser::Session::new(fs, mnt, &fuser_config(source, &cfg)) {
        Ok(s) => s,
        Err(e) => {
            let hint = match e.kind() == std::io::ErrorKind::PermissionDenied && cfg.allow_other {
                true => " (--allow-other needs user_allow_other in /etc/fuse.conf)",
                false => "",
            };
            // Nothing was written through a mount that never served; the mount error is the one
            // to report.
            let _ = store.catalog_close();
            return Err(ServeError::Mount {
                mnt: mnt.to_path_buf(),
                source: e,
                hint,
            });
        }
    };
    let _ = notifier.set(session.notifier());
    tracing::info!(
        "serving {} on {} through {}",
        store.root.display(),
        mnt.display(),
        session.transport()
    );
    raise_readahead(mnt);
    // `coffer stats`: a mount that cannot offer it serves all the same.
    let _stats = super::stats::serve(&store, io, mnt)
        .map_err(|e| tracing::warn!("coffer stats will not answer: {e}"))
        .ok();
    serving();
    unmount_on_signals(session.unmount_callable(), mnt.to_path_buf());
    // io_uring workers are pinned to their CPUs, and a thread inherits its creator's CPUs:
    // rayon's pool must exist before the first request, or a worker creates it, and every
    // block of every read and write then runs on that worker's one CPU.
    let _ = rayon::current_num_threads();
    let over_ring = session.io_uring_requests();
    let result = session.run();
    if let Some(n) = over_ring {
        let n = n.load(std::sync::atomic::Ordering::Relaxed);
        tracing::info!("{n} requests came over io_uring");
    }
    let behind = store.catalog_behind();
    drop(store);
    result.map_err(ServeError::Session)?;
    match behind {
        true => Err(ServeError::CatalogBehind),
        false => Ok(()),
    }
}

fn fuser_config(source: String, cfg: &MountConfig) -> fuser::Config {
    let mut options = vec![
        fuser::MountOption::FSName(source),
        fuser::MountOption::Subtype("coffer".into()),
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
    ];
    // With other users in, the kernel checks modes and ACLs for each (default_permissions).
    // A mount for its owner alone has one user, the daemon's own, whose backing files say
    // what it may do: the kernel need not ask for a directory's attributes again at every
    // path walk after a create or rename (one GETATTR a file for rsync and tar).
    if cfg.allow_other {
        options.push(fuser::MountOption::DefaultPermissions);
    }
    if cfg.read_only {
        options.push(fuser::MountOption::RO);
    }
    if cfg.noexec {
        options.push(fuser::MountOption::NoExec);
    }
    if cfg.noatime {
        options.push(fuser::MountOption::NoAtime);
    }
    let mut config = fuser::Config::default();
    config.mount_options = options;
    config.acl = match cfg.allow_other {
        true => fuser::SessionACL::All,
        false => fuser::SessionACL::Owner,
    };
    config.n_threads = Some(cfg.threads);
    config.clone_fd = true;
    // Each io_uring worker answers one request at a time, as each /dev/fuse thread does.
    config.io_uring_workers = cfg.io_uring.then_some(cfg.threads);
    config
}

/// SIGTERM, SIGINT and SIGHUP unmount cleanly: the session loop then ends and the
/// filesystem's destroy() flushes the catalog.
fn unmount_on_signals(mut unmounter: fuser::SessionUnmounter, mnt: PathBuf) {
    match signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT, libc::SIGHUP]) {
        Ok(mut signals) => {
            let _ = std::thread::Builder::new()
                .name("coffer-signals".into())
                .spawn(move || {
                    if let Some(sig) = signals.forever().next() {
                        tracing::info!("signal {sig}: unmounting {}", mnt.display());
                        if let Err(e) = unmounter.unmount() {
                            tracing::warn!("unmount failed ({e}); detaching lazily");
                            lazy_unmount(&mnt);
                        }
                    }
                });
        }
        Err(e) => tracing::warn!("cannot install signal handlers: {e}"),
    }
}

/// Readahead for the mount, in KiB: the kernel gives FUSE mounts 128 KiB and caps what the
/// filesystem asks for in init() at that, so only the mount's sysfs entry can raise it. With
/// 1 MiB, cold sequential reads arrive as 1 MiB requests that the pool decrypts in parallel:
/// 1,830 against 1,359 MB/s here (docs/benchmarks.md). Needs root; otherwise the default stays.
const READAHEAD_KB: u32 = 1024;

fn raise_readahead(mnt: &Path) {
    // The device comes from mountinfo: a stat() of the mount point would be a FUSE request,
    // and the session loop that answers it has not started yet.
    let Some(dev) = crate::mountinfo::mounts()
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

impl CofferFs {
    /// What the mount asks of the kernel at init.
    pub(super) fn kernel_caps(&self) -> fuser::InitFlags {
        use fuser::InitFlags;
        // ATOMIC_O_TRUNC: open() sees O_TRUNC, so a backup-only mount can refuse, at open time,
        // to write into an old file it cannot read, and accept truncate-and-rewrite.
        // READDIRPLUS_AUTO: the kernel uses readdirplus when it expects the attributes to be
        // wanted (the first listing of a directory, and `ls -l`-like patterns), readdir
        // otherwise.
        // POSIX_ACL: the kernel enforces ACLs (with default_permissions) and hands ACLs to
        // getxattr/setxattr; DONT_MASK: the umask comes to create/mkdir/mknod unapplied, since
        // a directory's default ACL replaces it.
        // POSIX_ACL turns default_permissions on, so only a mount with other users asks for it;
        // without it ACLs are kept and listed as the attributes they are, not enforced.
        let mut caps = InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_DONT_MASK
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        if self.cfg.allow_other {
            caps |= InitFlags::FUSE_POSIX_ACL;
        }
        if self.cfg.writeback_cache && !self.cfg.read_only {
            caps |= InitFlags::FUSE_WRITEBACK_CACHE;
        }
        caps
    }
}
