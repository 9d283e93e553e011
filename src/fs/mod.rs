//! The FUSE filesystem over an unlocked store.
//!
//! Owns: the inode table (each inode held as an O_PATH descriptor of its backing file, its
//! number the backing file's, so numbers survive remounts and hard links share one), name
//! encryption on the way in and out, and the shared open-file state. `adapter.rs` is the thin
//! fuser front; everything here returns `Result<_, Errno>`.

mod acl;
mod adapter;
mod clone;
pub mod direct;
mod dirops;
mod file;
mod fresh;
mod inodes;
mod leftovers;
mod links;
mod listing;
mod ops;
mod privs;
mod records;
mod session;
pub mod stats;
mod sys;
mod xattr;

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo};

pub use file::OpenFile;
use inodes::Inode;
pub use session::{serve, ServeError};

use crate::format::{
    plain_len_from_cipher, symlink_plain_len, BlockGeometry, StoredName, DIRIV_LEN, DIRIV_NAME,
};
use crate::store::OpenStore;

/// Mount behaviour chosen on the command line.
#[derive(Clone, Debug)]
pub struct MountConfig {
    pub read_only: bool,
    pub allow_other: bool,
    pub threads: usize,
    pub writeback_cache: bool,
    /// Serve requests over io_uring when the kernel offers it (the fuse module's enable_uring
    /// parameter); through /dev/fuse otherwise.
    pub io_uring: bool,
    /// No private key: old files cannot be read (for the log; the store enforces it).
    pub backup_only: bool,
    /// The kernel's noexec and noatime mount flags (nosuid and nodev are always set).
    pub noexec: bool,
    pub noatime: bool,
    /// The last holder of the store did not finish (killed, or its catalog could not be
    /// flushed): each regular file looked up is recorded in the catalog again.
    pub recheck: bool,
}

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig {
            read_only: false,
            allow_other: false,
            threads: 4,
            writeback_cache: true,
            io_uring: true,
            backup_only: false,
            noexec: false,
            noatime: false,
            recheck: false,
        }
    }
}

enum Handle {
    File(Arc<OpenFile>),
    Dir(Arc<Vec<DirEntry>>),
}

/// One entry of an open directory's listing: inode, type, plaintext name, and the entry's
/// name in the backing directory (empty for "." and "..").
pub(crate) struct DirEntry {
    pub ino: u64,
    pub kind: FileType,
    pub name: OsString,
    pub stored: OsString,
}

/// How long the kernel may keep entries (negative ones too) and attributes without asking.
/// The store is this mount's alone (its lock), so nothing changes the backing files behind
/// the kernel: what changes through the mount, the kernel updates or drops itself, and what
/// the daemon changes on its own (privileges dropped by a write) it tells the kernel of
/// (attrs_changed). With 5 s, rsync's generator, which runs ahead of its receiver, saw its
/// negative entries expire before the receiver renamed each file into place.
const CACHE_TTL: Duration = Duration::from_secs(3600);

pub struct CofferFs {
    store: Arc<OpenStore>,
    cfg: MountConfig,
    root_backing: u64,
    inodes: Mutex<HashMap<u64, Inode>>,
    /// Directory descriptors cached so far, and how many may be (see inodes.rs).
    dir_fds: AtomicU64,
    dir_fd_budget: u64,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: AtomicU64,
    as_root: bool,
    ttl: Duration,
    /// How the mount tells the kernel what changed behind its cache; set once serving.
    notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
    /// Plaintext bytes read and written (`coffer stats`).
    io: Arc<stats::Io>,
    /// Held while an inode's record is read, changed and written again (records.rs), by
    /// inode number modulo their count.
    rec_locks: Vec<Mutex<()>>,
}

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>, Errno> {
    m.lock().map_err(|_| Errno::EIO)
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

/// A stat time (seconds and nanoseconds) as a SystemTime, before 1970 too.
pub fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

impl CofferFs {
    pub fn new(store: Arc<OpenStore>, cfg: MountConfig) -> Result<CofferFs, Errno> {
        // Writing wraps batch keys and reading unwraps them, both with RSA, which draws
        // from aws-lc's generator: seed it before serving, not on the first file.
        crate::crypto::warm_rng();
        let root_fd =
            crate::within::open_dir(&store.root, std::path::Path::new(crate::store::DATA))
                .map_err(Errno::from)?;
        let st = sys::stat_fd(&root_fd)?;
        let root_rec = store.root_record().map_err(|e| {
            tracing::error!("{e}");
            Errno::EIO
        })?;
        let mut inodes = HashMap::new();
        inodes.insert(1, Inode::root(root_fd, root_rec));
        Ok(CofferFs {
            store,
            cfg,
            root_backing: st.st_ino,
            inodes: Mutex::new(inodes),
            dir_fds: AtomicU64::new(0),
            dir_fd_budget: inodes::dir_fd_budget(),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            // SAFETY: geteuid has no preconditions and cannot fail.
            as_root: unsafe { libc::geteuid() } == 0,
            ttl: CACHE_TTL,
            notifier: Arc::default(),
            io: Arc::default(),
            rec_locks: (0..records::LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
        })
    }

    /// The byte counters, for the statistics socket (stats.rs).
    pub(crate) fn io_counters(&self) -> Arc<stats::Io> {
        self.io.clone()
    }

    /// Where the session's notifier goes once the session exists (session.rs).
    pub(crate) fn notifier_slot(&self) -> Arc<std::sync::OnceLock<fuser::Notifier>> {
        self.notifier.clone()
    }

    /// The kernel's cached attributes of `ino` are stale: ask it to fetch them again.
    pub(super) fn attrs_changed(&self, ino: INodeNo) {
        if let Some(n) = self.notifier.get() {
            if let Err(e) = n.inval_inode(ino, -1, 0) {
                tracing::debug!("attribute invalidation of inode {} failed: {e}", ino.0);
            }
        }
    }

    pub fn store(&self) -> &Arc<OpenStore> {
        &self.store
    }

    /// Backing inode number to FUSE inode number: the store root is 1, and whatever backing
    /// inode is numbered 1 takes the root's number, so the map stays one to one.
    fn to_fuse(&self, backing: u64) -> u64 {
        if backing == self.root_backing {
            1
        } else if backing == 1 {
            self.root_backing
        } else {
            backing
        }
    }

    fn diriv(&self, dir: INodeNo) -> Result<[u8; DIRIV_LEN], Errno> {
        {
            let t = lock(&self.inodes)?;
            let n = t.get(&dir.0).ok_or(Errno::ESTALE)?;
            if n.kind != FileType::Directory {
                return Err(Errno::ENOTDIR);
            }
            if let Some(iv) = n.diriv {
                return Ok(iv);
            }
            // In format 3 a directory's IV is its record's id, never what `.diriv` says.
            if self.store.records().is_some() {
                return Err(Errno::EIO);
            }
        }
        let (fd, _) = self.node(dir)?;
        let bytes = sys::read_small_at(&fd, OsStr::new(DIRIV_NAME), DIRIV_LEN).map_err(|e| {
            tracing::warn!("{}: directory IV unreadable: {e:?}", self.label(dir.0));
            Errno::EIO
        })?;
        let iv: [u8; DIRIV_LEN] = bytes.as_slice().try_into().map_err(|_| {
            tracing::warn!("{}: directory IV has the wrong length", self.label(dir.0));
            Errno::EIO
        })?;
        if let Some(n) = lock(&self.inodes)?.get_mut(&dir.0) {
            n.diriv = Some(iv);
        }
        Ok(iv)
    }

    fn stored_name(&self, parent: INodeNo, name: &OsStr) -> Result<StoredName, Errno> {
        let iv = self.diriv(parent)?;
        self.store.names.encrypt(&iv, name).map_err(|e| match e {
            crate::format::NameError::TooLong => Errno::ENAMETOOLONG,
            _ => Errno::EINVAL,
        })
    }

    /// The attributes of inode `ino` from its backing `st`: in format 3 its type, mode,
    /// owner and device from the record this mount holds for it (EIO when it holds none).
    fn attr(&self, ino: u64, st: &libc::stat, open: Option<&OpenFile>) -> Result<FileAttr, Errno> {
        if self.store.records().is_none() {
            return Ok(self.attr_with(ino, st, open, None));
        }
        let rec = lock(&self.inodes)?.get(&ino).and_then(|n| n.rec.clone());
        match rec {
            Some(r) => Ok(self.attr_with(ino, st, open, Some(&r))),
            None => {
                tracing::warn!("{}: no sealed record is known for it", self.label(ino));
                Err(Errno::EIO)
            }
        }
    }

    /// The attributes from `st` and, when given, the record (which wins for everything a
    /// restore or a permission check acts on; sizes and times are the backing inode's).
    fn attr_with(
        &self,
        ino: u64,
        st: &libc::stat,
        open: Option<&OpenFile>,
        rec: Option<&crate::format::inode::InodeRecord>,
    ) -> FileAttr {
        let kind = match rec {
            Some(r) => kind_of(r.kind.mode_bits()),
            None => kind_of(st.st_mode),
        };
        let size = match kind {
            FileType::RegularFile => match open.map(|f| f.size()) {
                Some(Ok(s)) => s,
                _ => plain_len_from_cipher(
                    BlockGeometry::new(self.store.block_shift()),
                    st.st_size as u64,
                )
                .unwrap_or(0),
            },
            FileType::Symlink => self.symlink_size(ino, st.st_size as u64),
            _ => st.st_size as u64,
        };
        let (perm, uid, gid, rdev, nlink) = match rec {
            Some(r) => {
                // A directory's count is its backing one's (subdirectories); anything else
                // has as many names as its record allows and its backing inode keeps.
                let nlink = match kind {
                    FileType::Directory => st.st_nlink as u32,
                    _ => (st.st_nlink as u32).min(r.places.len() as u32),
                };
                (r.mode, r.uid, r.gid, r.rdev, nlink)
            }
            None => (
                (st.st_mode & 0o7777) as u16,
                st.st_uid,
                st.st_gid,
                st.st_rdev as u32,
                st.st_nlink as u32,
            ),
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: st.st_blocks as u64,
            atime: time(st.st_atime, st.st_atime_nsec),
            mtime: time(st.st_mtime, st.st_mtime_nsec),
            ctime: time(st.st_ctime, st.st_ctime_nsec),
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink,
            uid,
            gid,
            rdev,
            blksize: 4096,
            flags: 0,
        }
    }

    fn new_handle(&self, h: Handle) -> Result<u64, Errno> {
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        lock(&self.handles)?.insert(fh, h);
        Ok(fh)
    }

    fn file_handle(&self, fh: u64) -> Result<Arc<OpenFile>, Errno> {
        match lock(&self.handles)?.get(&fh) {
            Some(Handle::File(f)) => Ok(f.clone()),
            _ => Err(Errno::EBADF),
        }
    }

    /// The shared open state of a regular file, opening it if no handle has it yet.
    fn open_file(&self, ino: INodeNo) -> Result<Arc<OpenFile>, Errno> {
        let expect = {
            let t = lock(&self.inodes)?;
            let n = t.get(&ino.0).ok_or(Errno::ESTALE)?;
            if n.kind != FileType::RegularFile {
                return Err(Errno::EINVAL);
            }
            if let Some(f) = n.open.upgrade() {
                return Ok(f);
            }
            n.rec.as_ref().map(|r| r.id)
        };
        if self.store.records().is_some() && expect.is_none() {
            return Err(Errno::EIO);
        }
        let (fd, _) = self.node(ino)?;
        let mode = if self.cfg.read_only {
            libc::O_RDONLY
        } else {
            libc::O_RDWR
        };
        let file = sys::reopen(&fd, mode)?;
        let of = Arc::new(OpenFile::open(
            &self.store,
            file,
            self.label(ino.0),
            expect,
        )?);
        let mut t = lock(&self.inodes)?;
        let n = t.get_mut(&ino.0).ok_or(Errno::ESTALE)?;
        // Another thread may have opened it meanwhile: keep one shared state.
        if let Some(f) = n.open.upgrade() {
            return Ok(f);
        }
        n.open = Arc::downgrade(&of);
        Ok(of)
    }

    /// A new regular file just made as `entry` in `parent`, open as `of`: counted as a lookup,
    /// known to its inode as open (with what is known of its attributes), and given a handle.
    fn opened_new(
        &self,
        parent: INodeNo,
        entry: &OsStr,
        name: &OsStr,
        of: Arc<OpenFile>,
        xattrs: inodes::Known,
        rec: Option<crate::format::inode::InodeRecord>,
    ) -> Result<(FileAttr, u64), Errno> {
        let attr = self.remember_as(parent, entry, name, rec)?;
        if let Some(n) = lock(&self.inodes)?.get_mut(&attr.ino.0) {
            n.open = Arc::downgrade(&of);
            n.xattrs = xattrs;
        }
        let fh = self.new_handle(Handle::File(of))?;
        Ok((attr, fh))
    }

    /// Flush the catalog (on unmount).
    pub fn shutdown(&self) {
        if let Ok(h) = self.handles.lock() {
            for f in h.values() {
                if let Handle::File(f) = f {
                    f.publish_len(&self.store);
                }
            }
        }
        match self.store.catalog_close() {
            Ok(()) => tracing::info!("unmounted; catalog flushed"),
            Err(e) => {
                self.store.mark_catalog_behind();
                tracing::error!("the catalog could not be flushed at unmount ({e:?})");
            }
        }
    }
}

/// The length of a long symlink's backing target: ".S" and 43 base64url characters.
const LONG_LINK_TARGET_LEN: u64 = 45;

/// The attributes of a negative lookup reply: inode 0 tells the kernel "no such entry".
fn negative_entry() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

impl CofferFs {
    /// A symlink's plaintext target length: from the backing target's length, or, for a long
    /// target (a backing target of exactly the marker's length), from its blob's.
    fn symlink_size(&self, ino: u64, stored_len: u64) -> u64 {
        if stored_len != LONG_LINK_TARGET_LEN {
            return symlink_plain_len(stored_len);
        }
        let long = self.node(INodeNo(ino)).ok().and_then(|(fd, _)| {
            let stored = sys::readlink_fd(&fd).ok()?;
            let name = crate::format::long_link_blob(&stored)?;
            crate::store::links::blob_len(&self.store.root, name).ok()
        });
        match long {
            Some(n) => crate::format::long_link_plain_len(n),
            None => symlink_plain_len(stored_len),
        }
    }

    /// Say in the log what this mount may do.
    fn log_mounted(&self) {
        let mode = match (self.cfg.read_only, self.cfg.backup_only) {
            (true, _) => "read-only",
            (false, true) => "backup-only",
            (false, false) => "read-write",
        };
        tracing::info!("mounted store {} in {mode} mode", self.store.desc.store_id);
        if self.cfg.backup_only {
            tracing::info!(
                "backup-only: new files can be written; files written before this mount cannot be \
                 read or changed in place (EACCES), since this host holds no private key"
            );
        }
    }
}
