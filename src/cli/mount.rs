//! `coffer mount STORE MOUNTPOINT`: unlock, check, then serve the filesystem from a daemon.
//!
//! Everything that can fail for a reason the user can fix (a wrong passphrase, a missing key,
//! a damaged catalog, a busy mount point) fails here, before the fork, with exit 2. The
//! daemon reports through a pipe once the kernel has accepted the mount, so `coffer mount`
//! returns only when the filesystem is serving.

use std::path::{Path, PathBuf};

use clap::Args;

use super::daemon;
use super::unlock::unlock_store;
use super::{init_logging, CliResult, Failure, KeyOpts};
use crate::fs::MountConfig;
use crate::store::{OpenStore, StoreLock};

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
    /// Mount read-only (for restores and checks). Works on a store that cannot be written
    /// (read-only media, a snapshot, a user without write access), without a lock in it
    #[arg(long)]
    pub read_only: bool,
    /// Mount even over a directory that holds files. They are hidden while the store is
    /// mounted, and anything a script writes there while it is not is hidden by the next mount
    #[arg(long)]
    pub nonempty: bool,
    /// Log file [default: /var/log/coffer/STORE-ID.log for root, else
    /// ~/.local/state/coffer/STORE-ID.log]. Logs name ciphertext paths only.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,
    /// Let other users use the mount, with the kernel checking file permissions
    /// (default_permissions), so a restore can run as the files' owners
    #[arg(long)]
    pub allow_other: bool,
    /// Do not let programs be run from the mount (the kernel's noexec). It is always nosuid
    /// and nodev: a backup holds other hosts' setuid programs and device nodes
    #[arg(long)]
    pub noexec: bool,
    /// Do not update access times (the kernel's noatime)
    #[arg(long)]
    pub noatime: bool,
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
    /// Serve through /dev/fuse even when the kernel offers FUSE over io_uring (Linux 6.14 or
    /// later with the fuse module's enable_uring parameter set; coffer uses it by default
    /// then, one worker per CPU queue and --threads per queue)
    #[arg(long)]
    pub no_io_uring: bool,
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
fn check_mountpoint(mnt: &Path, nonempty: bool) -> Result<PathBuf, Failure> {
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
    // A mount over files hides them: a backup script that wrote into the bare directory while
    // the store was not mounted would lose sight of what it wrote.
    let has_entries = std::fs::read_dir(&abs).map(|mut d| d.next().is_some());
    if !nonempty && has_entries.unwrap_or(false) {
        return Err(Failure::from(format!(
            "mount point {} is not empty: a mount would hide its files (move them away, or \
             give --nonempty to mount over them anyway)",
            abs.display()
        )));
    }
    check_dev_fuse()?;
    Ok(abs)
}

/// /dev/fuse must be there, and (as root, who opens it directly) open for reading and writing;
/// a user goes through fusermount3, which opens it on the user's behalf.
fn check_dev_fuse() -> Result<(), Failure> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = match std::fs::metadata("/dev/fuse") {
        Ok(m) => m,
        Err(_) => {
            return Err(Failure::from(
                "/dev/fuse is missing (in a container, pass it in; on a host, modprobe fuse); \
                 `coffer backup` and `coffer restore` need no mount",
            ))
        }
    };
    // The FUSE device is character device 10:229; anything else there cannot serve a mount.
    if !meta.file_type().is_char_device() || meta.rdev() != libc::makedev(10, 229) {
        return Err(Failure::from(
            "/dev/fuse is not the FUSE device (character device 10:229): recreate it with \
             mknod /dev/fuse c 10 229, or pass the real device into the container",
        ));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        if which("fusermount3").is_none() {
            return Err(Failure::from(
                "fusermount3 is not installed (apt-get install fuse3)",
            ));
        }
        return Ok(());
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(_) => Ok(()),
        Err(e) => Err(Failure::from(format!(
            "cannot open /dev/fuse: {e} (in a container, pass the device in: \
             --device /dev/fuse, and allow it in the device cgroup)"
        ))),
    }
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

pub fn run(a: MountArgs) -> CliResult {
    let mnt = check_mountpoint(&a.mountpoint, a.nonempty)?;
    let root = a
        .store
        .canonicalize()
        .map_err(|_| crate::store::StoreError::NotAStore(a.store.clone()))?;
    let (desc, keys, note) = unlock_store(
        &root,
        &a.keys,
        a.fallback.clone(),
        a.backup_only,
        "mounting",
    )?;
    // A store before format 3: said on stderr, and in the log (a mount from fstab or a unit
    // leaves only the log).
    let advice =
        (!desc.has_records()).then(|| crate::store::upgrade_advice(&a.store, desc.version));
    if let Some(w) = &advice {
        eprintln!("coffer: warning: {w}");
    }
    let note = match (note, advice) {
        (Some(n), Some(w)) => Some(format!("{n}; {w}")),
        (n, w) => n.or(w),
    };
    let backup_only = keys.private.is_none();
    let lock = match a.read_only {
        true => StoreLock::acquire_for_reading(&root)?,
        false => StoreLock::acquire(&root)?,
    };
    // Readers share the lock, but one mount at a time records itself in it (for umount).
    if let Some((pid, mnt)) = StoreLock::holder(&root).filter(|(p, _)| *p != std::process::id()) {
        // SAFETY: kill with signal 0 only checks that the process exists.
        if a.read_only && !mnt.is_empty() && unsafe { libc::kill(pid as i32, 0) } == 0 {
            let at = format!(" (mounted at {mnt} by pid {pid})");
            return Err(crate::store::StoreError::Busy(root.clone(), at).into());
        }
    }
    if let Some(why) = lock.unlocked() {
        eprintln!("coffer: note: {why}");
    }
    // A clean release empties the record: one left behind is a holder that did not finish.
    let unfinished = StoreLock::holder_mode(&root)
        .filter(|(pid, _, _)| *pid != std::process::id())
        .filter(|_| !a.read_only);
    if let Some((pid, _, mode)) = &unfinished {
        eprintln!(
            "coffer: note: the last holder of this store (pid {pid}, {mode}) did not finish; \
             files are recorded in the catalog again as they are looked up"
        );
    }
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
        io_uring: !a.no_io_uring,
        backup_only,
        noexec: a.noexec,
        noatime: a.noatime,
        recheck: unfinished.is_some(),
    };
    let mode = match (a.read_only, backup_only) {
        (true, _) => "read-only",
        (false, true) => "backup-only",
        (false, false) => "read-write",
    };
    let note = match (note, lock.unlocked()) {
        (Some(n), Some(u)) => Some(format!("{n}; {u}")),
        (n, u) => n.or(u.map(String::from)),
    };
    let mount = Daemon {
        store,
        mnt,
        cfg,
        lock,
        mode,
        note,
    };
    match a.foreground {
        true => {
            init_logging(a.log.as_deref(), "info")?;
            mount.serve(None).map(|_| 0)
        }
        false => daemon::run(&log, |report| {
            if let Err(e) = init_logging(Some(&log), "info") {
                return Err((
                    Some(report),
                    format!("cannot open log {}: {e}", log.display()),
                ));
            }
            mount.serve(Some(report)).map_err(|f| (None, f.message))
        }),
    }
}

/// What the mount daemon serves, and how it says so.
struct Daemon {
    store: OpenStore,
    mnt: PathBuf,
    cfg: MountConfig,
    lock: StoreLock,
    mode: &'static str,
    note: Option<String>,
}

impl Daemon {
    /// Serve until unmounted; `report` (the pipe to `coffer mount`) hears "ok" once the
    /// kernel accepted the mount, or the error that stopped it before.
    fn serve(self, report: Option<std::fs::File>) -> Result<(), Failure> {
        if let Some(n) = &self.note {
            tracing::warn!("{n}");
        }
        let point = self.mnt.display().to_string();
        self.lock.record(std::process::id(), &point, self.mode);
        let report = std::cell::RefCell::new(report);
        let serving = || daemon::ready(report.borrow_mut().take());
        let served = crate::fs::serve(self.store, &self.mnt, self.cfg, serving);
        // The catalog may be behind the data: the lock record stays, for `coffer umount` to
        // report and for the next holder to record again what it finds.
        if matches!(served, Err(crate::fs::ServeError::CatalogBehind)) {
            self.lock.leave_unfinished();
        }
        drop(self.lock);
        served.map_err(|e| {
            daemon::failed(report.borrow_mut().take(), &e.to_string());
            Failure::from(e)
        })
    }
}
