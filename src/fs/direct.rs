//! The tree without the kernel: the mount's own operations called in-process, for `coffer
//! backup` and `coffer restore` (src/backup). Every name, key, attribute and link goes
//! through the same code as through a mount, so what one writes the other reads; only the
//! kernel's round trips are gone, and many threads may call at once.
//!
//! A `lookup`, `create`, `mkdir`, `symlink`, `mknod` or `link` holds the inode it returns in
//! the inode table until `forget`, as the kernel's lookup count does.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{Errno, FileAttr, FileType, INodeNo, TimeOrNow};

use super::{CofferFs, MountConfig};
use crate::store::OpenStore;
use crate::within::Ahead;

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    Char,
    Block,
}

impl Kind {
    fn of(t: FileType) -> Kind {
        match t {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            FileType::NamedPipe => Kind::Fifo,
            FileType::Socket => Kind::Socket,
            FileType::CharDevice => Kind::Char,
            FileType::BlockDevice => Kind::Block,
        }
    }

    /// The kind of a stat mode.
    pub fn of_mode(mode: u32) -> Kind {
        Kind::of(super::kind_of(mode))
    }
}

/// An entry's plaintext attributes.
#[derive(Clone, Debug)]
pub struct Stat {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub nlink: u32,
    pub rdev: u32,
}

impl Stat {
    fn of(a: &FileAttr) -> Stat {
        Stat {
            ino: a.ino.0,
            kind: Kind::of(a.kind),
            size: a.size,
            perm: a.perm as u32,
            uid: a.uid,
            gid: a.gid,
            atime: a.atime,
            mtime: a.mtime,
            nlink: a.nlink,
            rdev: a.rdev,
        }
    }
}

/// Attributes to set; None leaves one as it is.
#[derive(Clone, Debug, Default)]
pub struct SetAttrs {
    pub perm: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime: Option<SystemTime>,
    pub mtime: Option<SystemTime>,
}

/// An open regular file.
#[derive(Debug)]
pub struct Handle {
    fh: u64,
    ino: u64,
}

fn io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.code())
}

/// A store's tree, served to this process alone.
pub struct Tree {
    fs: CofferFs,
}

impl Tree {
    /// The root directory's inode.
    pub const ROOT: u64 = 1;

    /// Serve `store` in-process. `read_only` refuses every change, as a read-only mount.
    pub fn new(store: OpenStore, read_only: bool) -> io::Result<Tree> {
        store.start_catalog_writer()?;
        let cfg = MountConfig {
            read_only,
            backup_only: !store.can_read(),
            ..MountConfig::default()
        };
        let fs = CofferFs::new(Arc::new(store), cfg).map_err(io)?;
        Ok(Tree { fs })
    }

    /// Whether old content can be read here (false on a backup-only host).
    pub fn can_read(&self) -> bool {
        self.fs.store.can_read()
    }

    /// Whether every type, mode, owner, device, link and place the walk sees is sealed under
    /// the store's keys (format 3). Before, they are what the store's own inodes say, which
    /// a host that can write the store chooses.
    pub fn authenticated_metadata(&self) -> bool {
        self.fs.store.records().is_some()
    }

    /// `name` in directory `parent`, if there is one (held until `forget`).
    pub fn lookup(&self, parent: u64, name: &OsStr) -> io::Result<Option<Stat>> {
        match self.fs.lookup(INodeNo(parent), name) {
            Ok(a) => Ok(Some(Stat::of(&a))),
            Err(e) if e == Errno::ENOENT => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    /// Let go of one hold on `ino`.
    pub fn forget(&self, ino: u64) {
        self.fs.forget(ino, 1);
    }

    /// The attributes of a held inode.
    pub fn stat(&self, ino: u64) -> io::Result<Stat> {
        self.fs
            .getattr(INodeNo(ino), None)
            .map(|a| Stat::of(&a))
            .map_err(io)
    }

    /// A directory's entries: plaintext name and kind ("." and ".." left out), in the order
    /// of their backing inodes, which is about the order of their places on disk (a walk in
    /// it reads a cold store mostly forward). An entry whose name does not authenticate is
    /// left out and logged, as in a mount's listing.
    pub fn list(&self, dir: u64) -> io::Result<Vec<(OsString, Kind)>> {
        self.list_counted(dir).map(|(l, _)| l)
    }

    /// The same, and how many entries were left out (names that fail authentication).
    pub fn list_counted(&self, dir: u64) -> io::Result<(Vec<(OsString, Kind)>, usize)> {
        let (entries, refused) = self.fs.list_dir(INodeNo(dir)).map_err(io)?;
        let mut out: Vec<_> = entries
            .iter()
            .filter(|e| !e.stored.is_empty())
            .map(|e| (e.ino, e.name.clone(), Kind::of(e.kind)))
            .collect();
        out.sort_unstable_by_key(|e| e.0);
        Ok((out.into_iter().map(|(_, n, k)| (n, k)).collect(), refused))
    }

    /// Remove what an interrupted operation left in directory `dir`'s backing directory
    /// (leftovers.rs); returns how many went.
    pub fn remove_leftovers(&self, dir: u64) -> io::Result<u64> {
        self.fs.remove_leftovers(INodeNo(dir))
    }

    /// Whether the store's filesystem is full (a failure the store's layers call EIO may be
    /// that).
    pub fn store_full(&self) -> bool {
        self.fs.full()
    }

    /// Ask the kernel to read directory `dir`'s backing entries ahead (within::read_ahead_dir),
    /// for a walk that opens or looks them up next. Only a hint: what fails is skipped.
    pub fn prefetch(&self, dir: u64, what: Ahead) {
        if let Ok((fd, _)) = self.fs.node(INodeNo(dir)) {
            crate::within::read_ahead_dir(&*fd, what);
        }
    }

    pub fn mkdir(
        &self,
        parent: u64,
        name: &OsStr,
        perm: u32,
        uid: u32,
        gid: u32,
    ) -> io::Result<Stat> {
        let a = self.fs.mkdir(INodeNo(parent), name, perm, uid, gid);
        a.map(|a| Stat::of(&a)).map_err(io)
    }

    /// A new, empty regular file, open for writing.
    pub fn create(
        &self,
        parent: u64,
        name: &OsStr,
        perm: u32,
        owner: (u32, u32),
    ) -> io::Result<(Stat, Handle)> {
        self.create_to(parent, name, None, perm, owner)
    }

    /// The same for a file that is renamed to `to` in `parent` once written: its record names
    /// that place from the start, so the rename costs one record write, not two.
    pub fn create_to(
        &self,
        parent: u64,
        name: &OsStr,
        to: Option<&OsStr>,
        perm: u32,
        owner: (u32, u32),
    ) -> io::Result<(Stat, Handle)> {
        let mode = libc::S_IFREG | (perm & 0o7777);
        let (a, fh) = self
            .fs
            .create_to(INodeNo(parent), name, to, mode, owner)
            .map_err(io)?;
        Ok((Stat::of(&a), Handle { fh, ino: a.ino.0 }))
    }

    /// A new file meant for `name` in `parent`, open for writing with no name yet; `name_fresh`
    /// links it there once written, and forgetting it unnamed leaves nothing behind
    /// (fs/fresh.rs). None where the store or its filesystem cannot (then `create_to`).
    pub fn create_fresh(
        &self,
        (parent, name): (u64, &OsStr),
        perm: u32,
        owner: (u32, u32),
    ) -> io::Result<Option<(Stat, Handle)>> {
        let mode = libc::S_IFREG | (perm & 0o7777);
        match self.fs.create_fresh(INodeNo(parent), name, mode, owner) {
            Ok((a, fh)) => Ok(Some((Stat::of(&a), Handle { fh, ino: a.ino.0 }))),
            Err(e) if e == Errno::EOPNOTSUPP => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    /// Link the open file `h` from `create_fresh` as `name` in `parent` (EEXIST if taken).
    pub fn name_fresh(&self, h: &Handle, (parent, name): (u64, &OsStr)) -> io::Result<()> {
        let (ino, parent) = (INodeNo(h.ino), INodeNo(parent));
        self.fs.name_fresh(h.fh, ino, parent, name).map_err(io)
    }

    /// A copy of held regular file `ino` as `name` in `parent`, open for writing: the same
    /// file to the store (header, key, ciphertext, attributes), so writing it re-encrypts only
    /// the blocks written. Rename it over the original (`to` in `parent`), then `record` it
    /// (fs/clone.rs).
    pub fn clone_file(
        &self,
        ino: u64,
        (parent, name): (u64, &OsStr),
        to: &OsStr,
    ) -> io::Result<(Stat, Handle)> {
        let (a, fh) = self
            .fs
            .clone_file(INodeNo(ino), (INodeNo(parent), name), to)
            .map_err(io)?;
        Ok((Stat::of(&a), Handle { fh, ino: a.ino.0 }))
    }

    /// The store's block size: the unit in which a changed file is re-encrypted.
    pub fn block_size(&self) -> u64 {
        1 << self.fs.store.block_shift()
    }

    /// Open a held regular file, for writing (in place) or for reading.
    pub fn open(&self, ino: u64, write: bool) -> io::Result<Handle> {
        let flags = if write { libc::O_RDWR } else { libc::O_RDONLY };
        let fh = self.fs.open(INodeNo(ino), flags).map_err(io)?;
        Ok(Handle { fh, ino })
    }

    pub fn write(&self, h: &Handle, off: u64, data: &[u8]) -> io::Result<()> {
        self.fs.write(h.fh, off, data).map(|_| ()).map_err(io)
    }

    /// Up to `len` plaintext bytes at `off`, appended to `out`.
    pub fn read(&self, h: &Handle, off: u64, len: u32, out: &mut Vec<u8>) -> io::Result<()> {
        let plain = self.fs.read(h.fh, off, len).map_err(io)?;
        for s in plain.slices() {
            out.extend_from_slice(&s);
        }
        Ok(())
    }

    /// The next offset at or after `off` holding data (None: only a hole or the end follows).
    pub fn next_data(&self, h: &Handle, off: u64) -> io::Result<Option<u64>> {
        match self.fs.seek(h.fh, off as i64, libc::SEEK_DATA) {
            Ok(to) => Ok(Some(to as u64)),
            Err(e) if e == Errno::ENXIO => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    /// The next hole at or after `off` (the end of the file counts as one).
    pub fn next_hole(&self, h: &Handle, off: u64) -> io::Result<u64> {
        let to = self
            .fs
            .seek(h.fh, off as i64, libc::SEEK_HOLE)
            .map_err(io)?;
        Ok(to as u64)
    }

    /// Cut or extend (with a hole) an open file to `len` bytes.
    pub fn set_len(&self, h: &Handle, len: u64) -> io::Result<()> {
        let ino = INodeNo(h.ino);
        let a = self
            .fs
            .setattr(ino, None, None, None, Some(len), None, None, Some(h.fh));
        a.map(|_| ()).map_err(io)
    }

    /// Record held regular file `ino` in the catalog again, from its header: for a run after
    /// one that was killed before its catalog updates were committed.
    pub fn record(&self, ino: u64) -> io::Result<()> {
        let of = self.fs.open_file(INodeNo(ino)).map_err(io)?;
        of.republish(&self.fs.store);
        Ok(())
    }

    /// Close a handle: the catalog learns the file's length.
    pub fn close(&self, h: Handle) {
        self.fs.release(h.fh);
    }

    /// Set owner, then mode, then times (in that order: a chown clears set-ID bits).
    pub fn set_attrs(&self, ino: u64, s: &SetAttrs) -> io::Result<()> {
        self.set_attrs_fh(ino, None, s)
    }

    /// The same through an open handle's own descriptor (no lookup by name).
    pub fn set_attrs_open(&self, h: &Handle, s: &SetAttrs) -> io::Result<()> {
        self.set_attrs_fh(h.ino, Some(h.fh), s)
    }

    fn set_attrs_fh(&self, ino: u64, fh: Option<u64>, s: &SetAttrs) -> io::Result<()> {
        let ino = INodeNo(ino);
        if s.uid.is_some() || s.gid.is_some() {
            let a = self
                .fs
                .setattr(ino, None, s.uid, s.gid, None, None, None, fh);
            a.map_err(io)?;
        }
        let at = |t: Option<SystemTime>| t.map(TimeOrNow::SpecificTime);
        if s.perm.is_some() || s.atime.is_some() || s.mtime.is_some() {
            let (atime, mtime) = (at(s.atime), at(s.mtime));
            let a = self
                .fs
                .setattr(ino, s.perm, None, None, None, atime, mtime, fh);
            a.map_err(io)?;
        }
        Ok(())
    }

    pub fn symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &[u8],
        owner: (u32, u32),
    ) -> io::Result<Stat> {
        let a = self
            .fs
            .symlink(INodeNo(parent), name, target, owner.0, owner.1);
        a.map(|a| Stat::of(&a)).map_err(io)
    }

    /// A FIFO, socket or device node (`mode` with its file type bits).
    pub fn mknod(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u32,
        owner: (u32, u32),
    ) -> io::Result<Stat> {
        let a = self
            .fs
            .mknod(INodeNo(parent), name, mode, rdev, owner.0, owner.1);
        a.map(|a| Stat::of(&a)).map_err(io)
    }

    /// A new name for held inode `ino`.
    pub fn link(&self, ino: u64, parent: u64, name: &OsStr) -> io::Result<Stat> {
        let a = self.fs.link(INodeNo(ino), INodeNo(parent), name);
        a.map(|a| Stat::of(&a)).map_err(io)
    }

    /// Rename, replacing what `to` named (as rename(2)).
    pub fn rename(&self, parent: u64, name: &OsStr, to_parent: u64, to: &OsStr) -> io::Result<()> {
        self.fs
            .rename(INodeNo(parent), name, INodeNo(to_parent), to, 0)
            .map_err(io)
    }

    pub fn unlink(&self, parent: u64, name: &OsStr) -> io::Result<()> {
        self.fs.unlink(INodeNo(parent), name).map_err(io)
    }

    pub fn rmdir(&self, parent: u64, name: &OsStr) -> io::Result<()> {
        self.fs.rmdir(INodeNo(parent), name).map_err(io)
    }

    pub fn readlink(&self, ino: u64) -> io::Result<Vec<u8>> {
        self.fs.readlink(INodeNo(ino)).map_err(io)
    }

    /// Every extended attribute (ACLs included, as system.posix_acl_*), by name.
    pub fn xattrs(&self, ino: u64) -> io::Result<Vec<(OsString, Vec<u8>)>> {
        let names = self.fs.listxattr(INodeNo(ino)).map_err(io)?;
        let mut out = Vec::new();
        for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
            let name = OsStr::from_bytes(name);
            match self.fs.getxattr(INodeNo(ino), name) {
                Ok(v) => out.push((name.to_os_string(), v)),
                Err(e) if e == Errno::ENODATA => {}
                Err(e) => return Err(io(e)),
            }
        }
        Ok(out)
    }

    pub fn set_xattr(&self, ino: u64, name: &OsStr, value: &[u8]) -> io::Result<()> {
        self.fs.setxattr(INodeNo(ino), name, value, 0).map_err(io)
    }

    pub fn remove_xattr(&self, ino: u64, name: &OsStr) -> io::Result<()> {
        self.fs.removexattr(INodeNo(ino), name).map_err(io)
    }

    /// Make everything written so far durable: the backing files (one syncfs of the store's
    /// filesystem), then the catalog.
    pub fn sync(&self) -> io::Result<()> {
        if self.fs.cfg.read_only {
            return Ok(()); // nothing was written (and the store may be on read-only media)
        }
        let (fd, _) = self.fs.node(INodeNo::ROOT).map_err(io)?;
        // SAFETY: fd is an open descriptor for the call's duration.
        if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&*fd)) } != 0 {
            return Err(io::Error::last_os_error());
        }
        self.fs
            .store
            .catalog_sync()
            .map_err(|f| io(super::sys::commit_errno(f)))
    }

    /// Sync, then flush and close the catalog.
    pub fn finish(self) -> io::Result<()> {
        let synced = self.sync();
        let closed = self.fs.store.catalog_close();
        synced?;
        closed.map_err(|f| io(super::sys::commit_errno(f)))
    }
}
