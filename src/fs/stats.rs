//! A mount's counters, and how `coffer stats MOUNTPOINT` reads them: requests by operation and
//! errors by errno (counted by the FUSE layer, fuser::stats), plaintext bytes read and
//! written, catalog commits and batch keys unwrapped. The daemon answers each connection to
//! a Unix socket with one JSON snapshot; the socket lives in a 0700 directory of the daemon's
//! user (/run/coffer for root), named by its mount point, so only that user can read it.
//! Counts only: no name, path or key.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store::OpenStore;

/// Plaintext bytes through the mount's reads and writes.
#[derive(Default)]
pub struct Io {
    pub read: AtomicU64,
    pub written: AtomicU64,
}

/// What `coffer stats` shows.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
pub struct Snapshot {
    pub store_id: String,
    pub mountpoint: PathBuf,
    pub seconds: u64,
    /// Requests answered, by FUSE operation (lookup, read, write, ...).
    pub operations: BTreeMap<String, u64>,
    /// Error replies, by errno name (ENOENT, EIO, EACCES, ...).
    pub errors: BTreeMap<String, u64>,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub catalog_commits: u64,
    pub batch_key_unwraps: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    #[error("cannot make {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("cannot listen on {0}: {1}")]
    Listen(PathBuf, std::io::Error),
    #[error(
        "no statistics socket for the mount at {0} ({1}); is it mounted by coffer, as this user?"
    )]
    Connect(PathBuf, std::io::Error),
    #[error("the mount's daemon sent an unreadable answer: {0}")]
    Answer(String),
}

/// The directory of this user's statistics sockets: /run/coffer for root, else
/// $XDG_RUNTIME_DIR/coffer (or /tmp/coffer-UID).
pub fn socket_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        return PathBuf::from("/run/coffer");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => PathBuf::from(d).join("coffer"),
        None => PathBuf::from(format!("/tmp/coffer-{uid}")),
    }
}

/// The socket of the mount at `mnt` (canonical), named by a hash of that path: `coffer
/// stats` finds it from the mount point alone, reading nothing from the store.
pub fn socket_path(mnt: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let h = blake3::hash(mnt.as_os_str().as_bytes());
    socket_dir().join(format!("mount-{}.sock", &h.to_hex()[..32]))
}

/// Answers `coffer stats` while the mount serves; the socket goes when this is dropped.
pub struct StatsServer {
    path: PathBuf,
}

impl Drop for StatsServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Listen for `coffer stats` on the store's socket, answering from a thread of its own. The
/// thread holds the store weakly: the mount's end closes it as before.
pub fn serve(store: &Arc<OpenStore>, io: Arc<Io>, mnt: &Path) -> Result<StatsServer, StatsError> {
    let dir = socket_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| StatsError::Dir(dir.clone(), e))?;
    // An existing directory keeps its mode: make sure no one else can reach the socket.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| StatsError::Dir(dir.clone(), e))?;
    let path = socket_path(mnt);
    // A socket a killed daemon left (the kernel let this mount on that point, so no one
    // else serves it).
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(|e| StatsError::Listen(path.clone(), e))?;
    let (mnt, start, store) = (mnt.to_path_buf(), Instant::now(), Arc::downgrade(store));
    std::thread::Builder::new()
        .name("coffer-stats".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let Some(store) = store.upgrade() else {
                    return;
                };
                answer(conn, &snapshot(&store, &io, &mnt, start));
            }
        })
        .map_err(|e| StatsError::Listen(path.clone(), e))?;
    Ok(StatsServer { path })
}

fn answer(mut conn: UnixStream, snap: &Snapshot) {
    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
    if let Ok(bytes) = serde_json::to_vec(snap) {
        let _ = conn.write_all(&bytes);
    }
}

fn snapshot(store: &OpenStore, io: &Io, mnt: &Path, start: Instant) -> Snapshot {
    Snapshot {
        store_id: store.desc.store_id.clone(),
        mountpoint: mnt.to_path_buf(),
        seconds: start.elapsed().as_secs(),
        operations: fuser::stats::requests_by_opcode()
            .into_iter()
            .map(|(op, n)| (op_name(op), n))
            .collect(),
        errors: fuser::stats::errors_by_errno()
            .into_iter()
            .map(|(e, n)| (errno_name(e), n))
            .collect(),
        bytes_read: io.read.load(Ordering::Relaxed),
        bytes_written: io.written.load(Ordering::Relaxed),
        catalog_commits: store.catalog.commits(),
        batch_key_unwraps: store.batch_unwraps(),
    }
}

/// The snapshot of the mount at `mnt` (canonical), from its daemon.
pub fn read(mnt: &Path) -> Result<Snapshot, StatsError> {
    let path = socket_path(mnt);
    let conn = UnixStream::connect(&path).map_err(|e| StatsError::Connect(mnt.to_path_buf(), e))?;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut bytes = Vec::new();
    conn.take(1 << 20)
        .read_to_end(&mut bytes)
        .map_err(|e| StatsError::Answer(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| StatsError::Answer(e.to_string()))
}

/// The FUSE operation an opcode names (include/uapi/linux/fuse.h).
fn op_name(op: u32) -> String {
    const NAMES: &[(u32, &str)] = &[
        (1, "lookup"),
        (2, "forget"),
        (3, "getattr"),
        (4, "setattr"),
        (5, "readlink"),
        (6, "symlink"),
        (8, "mknod"),
        (9, "mkdir"),
        (10, "unlink"),
        (11, "rmdir"),
        (12, "rename"),
        (13, "link"),
        (14, "open"),
        (15, "read"),
        (16, "write"),
        (17, "statfs"),
        (18, "release"),
        (20, "fsync"),
        (21, "setxattr"),
        (22, "getxattr"),
        (23, "listxattr"),
        (24, "removexattr"),
        (25, "flush"),
        (26, "init"),
        (27, "opendir"),
        (28, "readdir"),
        (29, "releasedir"),
        (30, "fsyncdir"),
        (31, "getlk"),
        (32, "setlk"),
        (33, "setlkw"),
        (34, "access"),
        (35, "create"),
        (36, "interrupt"),
        (37, "bmap"),
        (38, "destroy"),
        (39, "ioctl"),
        (40, "poll"),
        (41, "notify_reply"),
        (42, "batch_forget"),
        (43, "fallocate"),
        (44, "readdirplus"),
        (45, "rename2"),
        (46, "lseek"),
        (47, "copy_file_range"),
        (50, "syncfs"),
        (51, "tmpfile"),
        (52, "statx"),
    ];
    NAMES
        .iter()
        .find(|(n, _)| *n == op)
        .map(|(_, name)| name.to_string())
        .unwrap_or_else(|| format!("opcode_{op}"))
}

fn errno_name(e: i32) -> String {
    const NAMES: &[(i32, &str)] = &[
        (libc::EPERM, "EPERM"),
        (libc::ENOENT, "ENOENT"),
        (libc::EIO, "EIO"),
        (libc::EBADF, "EBADF"),
        (libc::EAGAIN, "EAGAIN"),
        (libc::ENOMEM, "ENOMEM"),
        (libc::EACCES, "EACCES"),
        (libc::EEXIST, "EEXIST"),
        (libc::EXDEV, "EXDEV"),
        (libc::ENOTDIR, "ENOTDIR"),
        (libc::EISDIR, "EISDIR"),
        (libc::EINVAL, "EINVAL"),
        (libc::EFBIG, "EFBIG"),
        (libc::ENOSPC, "ENOSPC"),
        (libc::EROFS, "EROFS"),
        (libc::EMLINK, "EMLINK"),
        (libc::ERANGE, "ERANGE"),
        (libc::ENAMETOOLONG, "ENAMETOOLONG"),
        (libc::ENOSYS, "ENOSYS"),
        (libc::ENOTEMPTY, "ENOTEMPTY"),
        (libc::ELOOP, "ELOOP"),
        (libc::ENODATA, "ENODATA"),
        (libc::EOPNOTSUPP, "EOPNOTSUPP"),
        (libc::ESTALE, "ESTALE"),
        (libc::EINTR, "EINTR"),
        (libc::ENXIO, "ENXIO"),
        (libc::EDQUOT, "EDQUOT"),
    ];
    NAMES
        .iter()
        .find(|(n, _)| *n == e)
        .map(|(_, name)| name.to_string())
        .unwrap_or_else(|| format!("errno_{e}"))
}
