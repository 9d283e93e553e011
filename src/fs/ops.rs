//! Filesystem operations on inodes and open files, one method each, returning
//! `Result<_, Errno>`: lookup, attributes, links' targets, open, read, write, fsync, statfs.
//! Operations that change a directory's entries are in dirops.rs.

use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use fuser::{Errno, FileAttr, FileType, INodeNo, TimeOrNow};

use super::{lock, sys, CofferFs, Handle, OpenFile};
use crate::format::{decode_long_link, decode_symlink, long_link_blob};

fn timespec(t: Option<TimeOrNow>) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(TimeOrNow::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(TimeOrNow::SpecificTime(t)) => match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => libc::timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: d.subsec_nanos() as i64,
            },
            Err(e) => {
                let d = e.duration();
                let (mut s, mut ns) = (-(d.as_secs() as i64), -(d.subsec_nanos() as i64));
                if ns < 0 {
                    s -= 1;
                    ns += 1_000_000_000;
                }
                libc::timespec {
                    tv_sec: s,
                    tv_nsec: ns,
                }
            }
        },
    }
}

impl CofferFs {
    pub(super) fn writable(&self) -> Result<(), Errno> {
        if self.cfg.read_only {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }

    pub(super) fn lookup(&self, parent: INodeNo, name: &OsStr) -> Result<FileAttr, Errno> {
        let stored = self.stored_name(parent, name)?;
        let attr = self.remember(parent, OsStr::new(stored.entry()), name)?;
        // Not while the disk is full: a catalog write then fails, and may leave the catalog
        // for `fsck --repair`; the next mount with room records the file.
        let recheck = self.cfg.recheck && !self.cfg.read_only;
        if recheck && attr.kind == FileType::RegularFile && !self.full() {
            if let Ok(of) = self.open_file(attr.ino) {
                of.republish(&self.store);
            }
        }
        Ok(attr)
    }

    pub(super) fn getattr(&self, ino: INodeNo, fh: Option<u64>) -> Result<FileAttr, Errno> {
        let open = self.open_of(ino, fh)?;
        let st = match &open {
            Some(f) => sys::stat_fd(f.backing())?,
            None => self.stat_ino(ino)?,
        };
        self.attr(ino.0, &st, open.as_deref())
    }

    /// The open state of an inode, if a handle has it open.
    fn open_of(&self, ino: INodeNo, fh: Option<u64>) -> Result<Option<Arc<OpenFile>>, Errno> {
        if let Some(Ok(f)) = fh.map(|fh| self.file_handle(fh)) {
            return Ok(Some(f));
        }
        Ok(lock(&self.inodes)?
            .get(&ino.0)
            .and_then(|n| n.open.upgrade()))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn setattr(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<u64>,
    ) -> Result<FileAttr, Errno> {
        self.writable()?;
        let kind = lock(&self.inodes)?
            .get(&ino.0)
            .map(|n| n.kind)
            .ok_or(Errno::ESTALE)?;
        let times_only = (mode, uid, gid, size, atime) == (None, None, None, None, None);
        if let (true, Some(TimeOrNow::SpecificTime(t))) = (times_only, mtime) {
            if let Some(a) = self.mtime_already(ino, kind, fh, t)? {
                return Ok(a);
            }
        }
        if let Some(size) = size {
            if kind != FileType::RegularFile {
                return Err(Errno::EINVAL);
            }
            let of = match self.open_of(ino, fh)? {
                Some(f) => f,
                None => self.open_file(ino)?,
            };
            self.truncate_keeping_xattrs(ino, &of, size)?;
            of.publish_len(&self.store);
        }
        // An open file is changed through its own descriptor: it may have no name left.
        let open = self.open_of(ino, fh)?;
        let path_fd = match &open {
            Some(_) => None,
            None => Some(self.node(ino)?.0),
        };
        let raw: std::os::fd::RawFd = match (&open, &path_fd) {
            (Some(f), _) => f.backing().as_raw_fd(),
            (None, Some(fd)) => fd.as_raw_fd(),
            (None, None) => return Err(Errno::ESTALE),
        };
        // SAFETY: `raw` stays open for this call: `open` or `path_fd` holds it.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
        self.set_owner_mode(ino, kind, &fd, mode, (uid, gid))?;
        if atime.is_some() || mtime.is_some() {
            let times = [timespec(atime), timespec(mtime)];
            if kind == FileType::Symlink {
                // Symlink times need the parent and the name: /proc links would follow.
                let (parent, entry) = self.first_name(ino.0).ok_or(Errno::ESTALE)?;
                let (pfd, _) = self.node(INodeNo(parent))?;
                sys::utimens(
                    pfd.as_raw_fd(),
                    &sys::name_cstr(&entry)?,
                    &times,
                    libc::AT_SYMLINK_NOFOLLOW,
                )?;
            } else {
                sys::utimens(libc::AT_FDCWD, &sys::proc_path(&fd), &times, 0)?;
            }
        }
        // The descriptor in hand already names the file: no second lookup by name.
        let st = sys::stat_fd(&fd)?;
        self.attr(ino.0, &st, open.as_deref())
    }

    /// chmod and chown: in format 3 into the inode's record (one write for both), before
    /// onto the backing inode. An access ACL follows a new mode.
    fn set_owner_mode(
        &self,
        ino: INodeNo,
        kind: FileType,
        fd: &std::os::fd::BorrowedFd<'_>,
        mode: Option<u32>,
        (uid, gid): (Option<u32>, Option<u32>),
    ) -> Result<(), Errno> {
        let mode = mode.filter(|_| kind != FileType::Symlink);
        if self.store.records().is_some() {
            if mode.is_some() || uid.is_some() || gid.is_some() {
                self.change_record(ino, fd, |r| {
                    if let Some(m) = mode {
                        r.mode = (m & 0o7777) as u16;
                    }
                    r.uid = uid.unwrap_or(r.uid);
                    r.gid = gid.unwrap_or(r.gid);
                })?;
            }
        } else {
            if let Some(m) = mode {
                sys::chmod_fd(fd, m & 0o7777)?;
            }
            if uid.is_some() || gid.is_some() {
                sys::chown_fd(fd, uid, gid)?;
            }
        }
        match mode {
            Some(m) => self.acl_follow_chmod(ino, m),
            None => Ok(()),
        }
    }

    /// The attributes, if a file's modification time is already `t`. With the writeback
    /// cache the kernel sends its cached times back after every rename (the ctime moved) and
    /// at close: the first usually changes nothing, and answering it from one fstatat spares
    /// an open, a utimensat and a second stat (rsync: one per file).
    fn mtime_already(
        &self,
        ino: INodeNo,
        kind: FileType,
        fh: Option<u64>,
        t: std::time::SystemTime,
    ) -> Result<Option<FileAttr>, Errno> {
        if kind == FileType::Symlink {
            return Ok(None);
        }
        let open = self.open_of(ino, fh)?;
        let st = match &open {
            Some(f) => sys::stat_fd(f.backing())?,
            None => self.stat_ino(ino)?,
        };
        if super::time(st.st_mtime, st.st_mtime_nsec) != t {
            return Ok(None);
        }
        self.attr(ino.0, &st, open.as_deref()).map(Some)
    }

    pub(super) fn readlink(&self, ino: INodeNo) -> Result<Vec<u8>, Errno> {
        let (fd, _) = self.node(ino)?;
        let stored = sys::readlink_fd(&fd)?;
        // Format 3: the target must be the one sealed for this very symlink (a sealed
        // target copied from another symlink opens, but is not this one's).
        if self.store.records().is_some() {
            let rec = self.record(ino)?;
            if rec.target != Some(crate::format::inode::target_hash(&stored)) {
                tracing::warn!(
                    "{}: symlink target is not the one its sealed record names",
                    self.label(ino.0)
                );
                return Err(Errno::EIO);
            }
        }
        let target = match long_link_blob(&stored) {
            None => decode_symlink(&self.store.names, &stored),
            Some(name) => {
                let blob = crate::store::links::read_blob(&self.store.root, name).map_err(|e| {
                    tracing::warn!("{}: {e}", self.label(ino.0));
                    Errno::EIO
                })?;
                decode_long_link(&self.store.names, name, &blob)
            }
        };
        target.map_err(|_| {
            tracing::warn!(
                "{}: symlink target failed authentication",
                self.label(ino.0)
            );
            Errno::EIO
        })
    }

    pub(super) fn open(&self, ino: INodeNo, flags: i32) -> Result<u64, Errno> {
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            self.writable()?;
        }
        let of = self.open_file(ino)?;
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            if flags & libc::O_TRUNC != 0 {
                self.truncate_keeping_xattrs(ino, &of, 0)?;
                of.publish_len(&self.store);
            } else if of.is_sealed() {
                tracing::warn!(
                    "{}: permission denied: open for writing an old file in a backup-only mount \
                     (no private key); open it with O_TRUNC to rewrite it",
                    self.label(ino.0)
                );
                return Err(Errno::EACCES);
            }
        }
        self.new_handle(Handle::File(of))
    }

    pub(super) fn read(&self, fh: u64, off: u64, size: u32) -> Result<super::file::Plain, Errno> {
        let plain = self.file_handle(fh)?.read(off, size)?;
        self.io
            .read
            .fetch_add(plain.len() as u64, Ordering::Relaxed);
        Ok(plain)
    }

    pub(super) fn write(&self, fh: u64, off: u64, data: &[u8]) -> Result<u32, Errno> {
        self.writable()?;
        let n = self.file_handle(fh)?.write(off, data)?;
        self.io.written.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n as u32)
    }

    pub(super) fn release(&self, fh: u64) {
        let h = self.handles.lock().ok().and_then(|mut h| h.remove(&fh));
        if let Some(Handle::File(f)) = h {
            f.publish_len(&self.store);
        }
    }

    pub(super) fn fsync(&self, fh: u64, datasync: bool) -> Result<(), Errno> {
        let f = self.file_handle(fh)?;
        f.fsync(datasync)?;
        f.publish_len(&self.store);
        self.store.catalog_sync().map_err(super::sys::commit_errno)
    }

    pub(super) fn statfs(&self) -> Result<libc::statvfs, Errno> {
        let (fd, _) = self.node(INodeNo::ROOT)?;
        sys::statvfs_fd(&fd)
    }

    /// Whether the backing filesystem is full for this process: fewer than 16 blocks or no
    /// inode left (root may use the blocks ext4 reserves for it).
    pub(super) fn full(&self) -> bool {
        let Ok(st) = self.statfs() else {
            return false;
        };
        // SAFETY: geteuid has no preconditions.
        let blocks = match unsafe { libc::geteuid() } {
            0 => st.f_bfree,
            _ => st.f_bavail,
        };
        blocks < 16 || (st.f_files > 0 && st.f_favail == 0)
    }

    /// fallocate: mode 0 and KEEP_SIZE reserve space (mode 0 also grows the file),
    /// PUNCH_HOLE|KEEP_SIZE makes holes; any other mode is refused with nothing changed.
    pub(super) fn fallocate(&self, fh: u64, off: u64, len: u64, mode: i32) -> Result<(), Errno> {
        self.writable()?;
        let f = self.file_handle(fh)?;
        let r = match mode {
            0 => f.allocate(off, len, false),
            libc::FALLOC_FL_KEEP_SIZE => f.allocate(off, len, true),
            m if m == libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE => {
                f.punch_hole(off, len)
            }
            _ => Err(Errno::EOPNOTSUPP),
        };
        f.publish_len(&self.store);
        r
    }

    /// lseek with SEEK_DATA or SEEK_HOLE (the kernel answers the other whences itself).
    pub(super) fn seek(&self, fh: u64, off: i64, whence: i32) -> Result<i64, Errno> {
        let f = self.file_handle(fh)?;
        let off = u64::try_from(off).map_err(|_| Errno::ENXIO)?;
        let to = match whence {
            libc::SEEK_DATA => f.seek(off, true)?,
            libc::SEEK_HOLE => f.seek(off, false)?,
            _ => return Err(Errno::EINVAL),
        };
        i64::try_from(to).map_err(|_| Errno::EOVERFLOW)
    }
}
