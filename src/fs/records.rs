//! Inode records through the mount (store format 3, format/inode.rs): read and opened at the
//! place a lookup reaches an inode by, written where a create, chmod, chown, link, rename or
//! attribute change makes them, and held in the inode table. The backing inode's own mode,
//! owner and type say nothing here: a host that can write the store sets those at will.
//!
//! Every record change is crash-safe in the same direction: a name is added to a record
//! before the backing entry appears there, and taken out only after it is gone, so a crash
//! leaves at most a record that names one place too many (as an older copy of the store
//! would), never an entry that its record does not name.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use fuser::{Errno, INodeNo};

use super::{lock, CofferFs};
use crate::format::inode::{InodeRecord, Place, RecordError, RecordKind, RECORD_MAX};

/// How many locks record changes are spread over (by inode number).
pub(super) const LOCK_STRIPES: usize = 64;

/// The errno for a record that the filesystem cannot hold (too many names or attributes).
fn too_large(e: std::io::Error) -> Errno {
    match e.raw_os_error() {
        Some(libc::E2BIG) | Some(libc::ENOSPC) | Some(libc::ERANGE) => Errno::E2BIG,
        _ => Errno::from(e),
    }
}

impl CofferFs {
    /// The place `name` in directory `parent`.
    pub(super) fn place_of(&self, parent: INodeNo, name: &OsStr) -> Result<Place, Errno> {
        let codec = self.store.records().ok_or(Errno::EIO)?;
        Ok(codec.place(&self.diriv(parent)?, name.as_bytes()))
    }

    /// A new inode's record: in `parent` as `name`, with the mode and owner asked for, and
    /// a set-group-ID directory's group (and, for a directory, its bit), as Linux gives them.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new_record(
        &self,
        parent: INodeNo,
        name: &OsStr,
        kind: RecordKind,
        id: [u8; 16],
        mode: u32,
        owner: (u32, u32),
        rdev: u32,
        target: Option<[u8; 16]>,
    ) -> Result<InodeRecord, Errno> {
        let dir = self.record(parent)?;
        let mut mode = (mode & 0o7777) as u16;
        let mut gid = owner.1;
        if dir.mode & libc::S_ISGID as u16 != 0 {
            gid = dir.gid;
            if kind == RecordKind::Dir {
                mode |= libc::S_ISGID as u16;
            }
        }
        Ok(InodeRecord {
            id,
            kind,
            mode,
            uid: owner.0,
            gid,
            rdev,
            target,
            places: vec![self.place_of(parent, name)?],
            xattrs: Vec::new(),
            adopted: false,
        })
    }

    /// Read and open the record of `entry` in directory `parent` (`pfd`), reached by its
    /// plaintext `name`, whose backing stat is `st`. Anything that does not hold (no record,
    /// one that does not open here, a type or device that is not the record's) is logged
    /// with the ciphertext path and is EIO.
    pub(super) fn load_record(
        &self,
        pfd: &OwnedFd,
        entry: &OsStr,
        parent: INodeNo,
        name: &OsStr,
        st: &libc::stat,
    ) -> Result<InodeRecord, Errno> {
        let codec = self.store.records().ok_or(Errno::EIO)?;
        let label = || format!("{}/{}", self.label(parent.0), entry.to_string_lossy());
        let refuse = |why: &dyn std::fmt::Display| {
            tracing::warn!("{}: refused: {why}", label());
            Errno::EIO
        };
        let Some(kind) = RecordKind::of_mode(st.st_mode) else {
            return Err(refuse(&"not a kind of file coffer keeps"));
        };
        let sealed = match crate::within::xattr_at(pfd, entry, kind.record_attr(), RECORD_MAX) {
            Ok(Some(v)) => v,
            Ok(None) => return Err(refuse(&"it has no sealed record (planted by a host without the key, or its attributes were lost in a copy without rsync -X)")),
            Err(e) => return Err(refuse(&format!("its sealed record cannot be read: {e}"))),
        };
        let at = codec.place(&self.diriv(parent)?, name.as_bytes());
        let rec = codec.open(&sealed, &at).map_err(|e| refuse(&e))?;
        if rec.kind != kind {
            return Err(refuse(&format!(
                "its sealed record is a {:?}'s, the backing inode a {kind:?}'s",
                rec.kind
            )));
        }
        if matches!(kind, RecordKind::Char | RecordKind::Block) && rec.rdev != st.st_rdev as u32 {
            return Err(refuse(&"its device numbers are not its sealed record's"));
        }
        Ok(rec)
    }

    /// Seal `rec` onto the backing inode `fd` (any descriptor, O_PATH included). E2BIG when
    /// the backing filesystem cannot hold it (too many names or attributes for one inode).
    pub(super) fn put_record(&self, fd: &impl AsRawFd, rec: &InodeRecord) -> Result<(), Errno> {
        self.write_record(rec, |attr, v| crate::within::set_xattr_fd(fd, attr, v, 0))
    }

    /// The same onto the entry `entry` of directory `dir` (half the cost of going through
    /// an O_PATH descriptor of the inode, on a kernel with setxattrat).
    pub(super) fn put_record_at(
        &self,
        dir: &OwnedFd,
        entry: &OsStr,
        rec: &InodeRecord,
    ) -> Result<(), Errno> {
        self.write_record(rec, |attr, v| {
            crate::within::set_xattr_at(dir, entry, attr, v)
        })
    }

    fn write_record(
        &self,
        rec: &InodeRecord,
        set: impl FnOnce(&str, &[u8]) -> std::io::Result<()>,
    ) -> Result<(), Errno> {
        let codec = self.store.records().ok_or(Errno::EIO)?;
        let sealed = codec.seal(rec).map_err(|e| match e {
            RecordError::TooLarge => Errno::E2BIG,
            _ => Errno::EIO,
        })?;
        match set(rec.kind.record_attr(), &sealed) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                tracing::warn!(
                    "cannot keep a symlink's or special file's sealed record: a daemon that is \
                     not root may not set trusted.* attributes"
                );
                Err(Errno::EPERM)
            }
            Err(e) => Err(too_large(e)),
        }
    }

    /// The record this mount holds for `ino` (format 3).
    pub(super) fn record(&self, ino: INodeNo) -> Result<InodeRecord, Errno> {
        lock(&self.inodes)?
            .get(&ino.0)
            .and_then(|n| n.rec.clone())
            .ok_or(Errno::EIO)
    }

    /// Keep `rec` as `ino`'s record.
    pub(super) fn keep_record(&self, ino: u64, rec: InodeRecord) {
        if let Ok(mut t) = lock(&self.inodes) {
            if let Some(n) = t.get_mut(&ino) {
                n.rec = Some(rec);
            }
        }
    }

    /// The lock that serialises changes to `ino`'s record.
    pub(super) fn rec_lock(&self, ino: u64) -> Result<std::sync::MutexGuard<'_, ()>, Errno> {
        lock(&self.rec_locks[(ino as usize) % LOCK_STRIPES])
    }

    /// Change `ino`'s record with `f`, write it through `fd` (its backing inode), and keep
    /// it. Returns the new record. Nothing is written when `f` changes nothing.
    pub(super) fn change_record(
        &self,
        ino: INodeNo,
        fd: &impl AsRawFd,
        f: impl FnOnce(&mut InodeRecord),
    ) -> Result<InodeRecord, Errno> {
        let _g = self.rec_lock(ino.0)?;
        let old = self.record(ino)?;
        let mut rec = old.clone();
        f(&mut rec);
        if rec != old {
            // By one of its names where it has one (its lock keeps the name its own).
            let named = self.first_name(ino.0).and_then(|(p, e)| {
                let (pfd, _) = self.node(INodeNo(p)).ok()?;
                Some(self.put_record_at(&pfd, &e, &rec))
            });
            named.unwrap_or_else(|| self.put_record(fd, &rec))?;
            self.keep_record(ino.0, rec.clone());
        }
        Ok(rec)
    }

    /// access(2), asked only of a mount without --allow-other: the backing file answers
    /// before format 3; in format 3 the sealed mode and owner, as the kernel's permission
    /// check would: root may read and write anything and execute what has an x bit (or is a
    /// directory); anyone else by the owner's, group's or others' bits.
    pub(super) fn access(
        &self,
        ino: INodeNo,
        mask: i32,
        who: &super::privs::Caller,
    ) -> Result<(), Errno> {
        if self.store.records().is_none() {
            let (fd, _) = self.node(ino)?;
            return super::sys::access_fd(&fd, mask);
        }
        let rec = self.record(ino)?;
        let want = (mask & (libc::R_OK | libc::W_OK | libc::X_OK)) as u16;
        let m = rec.mode;
        let ok = if who.uid == 0 {
            want & libc::X_OK as u16 == 0 || rec.kind == RecordKind::Dir || m & 0o111 != 0
        } else {
            let bits = if who.uid == rec.uid {
                m >> 6
            } else if who.in_group(rec.gid) {
                m >> 3
            } else {
                m
            };
            bits & want == want
        };
        if ok {
            Ok(())
        } else {
            Err(Errno::EACCES)
        }
    }

    /// The record of the inode `entry` names in `parent` (plaintext `name`): the one this
    /// mount holds if it knows the inode by this name, else read and opened there.
    pub(super) fn record_at(
        &self,
        pfd: &OwnedFd,
        parent: INodeNo,
        entry: &OsStr,
        name: &OsStr,
    ) -> Result<(u64, InodeRecord), Errno> {
        self.record_of(pfd, (parent, entry, name), None)
    }

    /// The same when the caller knows which inode `entry` names now (`ino`, from a stat of
    /// its own): no second stat when this mount knows the inode by this name.
    pub(super) fn record_of(
        &self,
        pfd: &OwnedFd,
        (parent, entry, name): (INodeNo, &OsStr, &OsStr),
        ino: Option<u64>,
    ) -> Result<(u64, InodeRecord), Errno> {
        let at = (parent.0, entry.to_os_string());
        let known = |ino: u64| -> Result<Option<InodeRecord>, Errno> {
            Ok(lock(&self.inodes)?
                .get(&ino)
                .filter(|n| n.names.contains(&at))
                .and_then(|n| n.rec.clone()))
        };
        if let Some(i) = ino {
            if let Some(r) = known(i)? {
                return Ok((i, r));
            }
        }
        let st = super::sys::stat_at(pfd, entry)?;
        let ino = self.to_fuse(st.st_ino);
        match known(ino)? {
            Some(r) => Ok((ino, r)),
            None => Ok((ino, self.load_record(pfd, entry, parent, name, &st)?)),
        }
    }
}

/// `rec` with place `p` added (a name about to appear).
pub(super) fn with_place(rec: &InodeRecord, p: Place) -> InodeRecord {
    let mut r = rec.clone();
    if !r.places.contains(&p) {
        r.places.push(p);
    }
    r
}

/// `rec` without place `p` (a name gone), unless it is the last one.
pub(super) fn without_place(rec: &InodeRecord, p: &Place) -> InodeRecord {
    let mut r = rec.clone();
    if r.places.len() > 1 {
        r.places.retain(|q| q != p);
    }
    r
}

/// A name-only inode to make: its kind, mode, device and (symlinks) target's hash.
pub(super) struct Node {
    pub kind: RecordKind,
    pub mode: u32,
    pub rdev: u32,
    pub target: Option<[u8; 16]>,
}
