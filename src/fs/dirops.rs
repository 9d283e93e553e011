//! Operations that change or list a directory's entries, one method each, returning
//! `Result<_, Errno>`: create, mknod, mkdir, unlink, rmdir, symlink, rename, link, and the
//! listing (opendir). Each name goes through the store's name codec; long names keep their
//! sidecar beside them.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt};
use std::sync::Arc;

use fuser::{Errno, FileAttr, FileType, INodeNo};

use super::inodes::Known;
use super::{lock, sys, CofferFs, DirEntry, Handle, OpenFile};
use crate::catalog::CatalogOp;
use crate::format::{
    classify, encode_symlink, long_link_blob, StoredLink, StoredName, DIRIV_NAME, FILE_ID_OFF,
    SIDECAR_MAX,
};

fn sidecar_of(stored: &StoredName) -> Option<(&OsStr, &[u8])> {
    match stored {
        StoredName::Long {
            sidecar, encoded, ..
        } => Some((OsStr::new(sidecar), encoded.as_bytes())),
        StoredName::Short(_) => None,
    }
}

/// What goes with an entry when its last name goes.
enum Dying {
    /// A regular file: its catalog record.
    File([u8; 16]),
    /// A long symlink: its target blob.
    Link(Vec<u8>),
}

impl CofferFs {
    pub(super) fn chown_new(&self, fd: &impl AsRawFd, uid: u32, gid: u32) {
        // Root's own entries already belong to root.
        if self.as_root && (uid, gid) != (0, 0) {
            if let Err(e) = sys::chown_fd(fd, Some(uid), Some(gid)) {
                tracing::warn!("cannot set owner of a new entry: {e:?}");
            }
        }
    }

    /// Write the long-name sidecar (if any) before the entry it names.
    pub(super) fn put_sidecar(&self, pfd: &OwnedFd, stored: &StoredName) -> Result<(), Errno> {
        if let Some((sidecar, encoded)) = sidecar_of(stored) {
            sys::write_small_at(pfd, sidecar, encoded)?;
        }
        Ok(())
    }

    pub(super) fn drop_sidecar(&self, pfd: &OwnedFd, stored: &StoredName) {
        if let Some((sidecar, _)) = sidecar_of(stored) {
            let _ = sys::unlink_at(pfd, sidecar, 0);
        }
    }

    /// What goes with an entry that is about to lose its last name: a regular file's catalog
    /// record, or a long symlink's target blob.
    fn dying(&self, pfd: &OwnedFd, entry: &OsStr) -> Option<Dying> {
        let st = sys::stat_at(pfd, entry).ok()?;
        if st.st_nlink != 1 {
            return None;
        }
        match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => {
                let f = sys::reopen(&sys::open_path(pfd, entry).ok()?, libc::O_RDONLY).ok()?;
                let mut id = [0u8; 16];
                f.read_exact_at(&mut id, FILE_ID_OFF as u64).ok()?;
                Some(Dying::File(id))
            }
            libc::S_IFLNK => {
                let stored = sys::readlink_fd(&sys::open_path(pfd, entry).ok()?).ok()?;
                long_link_blob(&stored).map(|b| Dying::Link(b.to_vec()))
            }
            _ => None,
        }
    }

    /// Drop what went with an entry whose last name is gone.
    fn bury(&self, dying: Option<Dying>) {
        match dying {
            Some(Dying::File(id)) => self.store.catalog_op(CatalogOp::Remove(id)),
            Some(Dying::Link(blob)) => {
                if let Err(e) = crate::store::links::remove_blob(&self.store.root, &blob) {
                    tracing::warn!("a long symlink's target blob stays behind: {e}");
                }
            }
            None => {}
        }
    }

    pub(super) fn create(
        &self,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(FileAttr, u64), Errno> {
        self.writable()?;
        let stored = self.stored_name(parent, name)?;
        let (pfd, _) = self.node(parent)?;
        let entry = OsStr::new(stored.entry());
        self.put_sidecar(&pfd, &stored)?;
        let file = sys::create_at(&pfd, entry, mode & 0o7777)?;
        self.chown_new(&file, uid, gid);
        let label = format!("{}/{}", self.label(parent.0), stored.entry());
        let of = match OpenFile::create(&self.store, file, label) {
            Ok(of) => Arc::new(of),
            Err(e) => {
                let _ = sys::unlink_at(&pfd, entry, 0);
                self.drop_sidecar(&pfd, &stored);
                return Err(e);
            }
        };
        let (attr, fh) = self.opened_new(parent, entry, of, Known::Absent)?;
        let attr = if self.as_root {
            FileAttr { uid, gid, ..attr }
        } else {
            attr
        };
        Ok((attr, fh))
    }

    pub(super) fn mknod(
        &self,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        rdev: u32,
        uid: u32,
        gid: u32,
    ) -> Result<FileAttr, Errno> {
        self.writable()?;
        if mode & libc::S_IFMT == libc::S_IFREG || mode & libc::S_IFMT == 0 {
            let (attr, fh) = self.create(parent, name, mode, uid, gid)?;
            self.release(fh);
            return Ok(attr);
        }
        self.new_entry(parent, name, uid, gid, |pfd, entry| {
            sys::mknod_at(pfd, entry, mode, rdev)
        })
    }

    /// Make a name-only entry (symlink, FIFO, device) with `make`, its long-name sidecar
    /// first and removed again if `make` fails; then give it to the caller's uid and gid.
    fn new_entry(
        &self,
        parent: INodeNo,
        name: &OsStr,
        uid: u32,
        gid: u32,
        make: impl FnOnce(&OwnedFd, &OsStr) -> Result<(), Errno>,
    ) -> Result<FileAttr, Errno> {
        let stored = self.stored_name(parent, name)?;
        let (pfd, _) = self.node(parent)?;
        let entry = OsStr::new(stored.entry());
        self.put_sidecar(&pfd, &stored)?;
        if let Err(e) = make(&pfd, entry) {
            if e != Errno::EEXIST {
                self.drop_sidecar(&pfd, &stored);
            }
            return Err(e);
        }
        self.chown_new(&sys::open_path(&pfd, entry)?, uid, gid);
        let attr = self.remember(parent, entry)?;
        self.set_known(attr.ino, Known::Absent);
        Ok(attr)
    }

    pub(super) fn mkdir(
        &self,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<FileAttr, Errno> {
        self.writable()?;
        let stored = self.stored_name(parent, name)?;
        let (pfd, _) = self.node(parent)?;
        let entry = OsStr::new(stored.entry());
        // Build the directory, IV included, under a temporary name and rename it into place,
        // so that a crash never leaves a directory without its IV.
        let tmp = crate::format::temp_name(OsStr::new("mkdir"));
        sys::mkdir_at(&pfd, &tmp, 0o700)?;
        let built = (|| {
            let dfd = sys::open_path(&pfd, &tmp)?;
            let mut iv = [0u8; crate::format::DIRIV_LEN];
            crate::crypto::random_bytes(&mut iv);
            sys::write_small_at(&dfd, OsStr::new(DIRIV_NAME), &iv)?;
            sys::chmod_fd(&dfd, mode & 0o7777)?;
            self.chown_new(&dfd, uid, gid);
            self.put_sidecar(&pfd, &stored)?;
            sys::rename_at(&pfd, &tmp, &pfd, entry, libc::RENAME_NOREPLACE)
        })();
        if let Err(e) = built {
            let _ = sys::unlink_at(&sys::open_path(&pfd, &tmp)?, OsStr::new(DIRIV_NAME), 0);
            let _ = sys::unlink_at(&pfd, &tmp, libc::AT_REMOVEDIR);
            return Err(e);
        }
        let attr = self.remember(parent, entry)?;
        self.set_known(attr.ino, Known::Absent);
        Ok(attr)
    }

    pub(super) fn unlink(&self, parent: INodeNo, name: &OsStr) -> Result<(), Errno> {
        self.writable()?;
        let stored = self.stored_name(parent, name)?;
        let (pfd, _) = self.node(parent)?;
        let entry = OsStr::new(stored.entry());
        let dying = self.dying(&pfd, entry);
        let ino = self.ino_at(&pfd, entry);
        sys::unlink_at(&pfd, entry, 0)?;
        self.drop_sidecar(&pfd, &stored);
        if let Some(ino) = ino {
            self.drop_name(ino, parent, entry);
        }
        self.bury(dying);
        Ok(())
    }

    /// Remove an empty ciphertext directory (its IV is its only entry).
    fn remove_empty_dir(&self, pfd: &OwnedFd, entry: &OsStr) -> Result<(), Errno> {
        let dfd = sys::open_path(pfd, entry)?;
        let listing =
            std::fs::read_dir(sys::proc_path(&dfd).to_str().unwrap_or("")).map_err(Errno::from)?;
        for e in listing {
            if e.map_err(Errno::from)?.file_name() != DIRIV_NAME {
                return Err(Errno::ENOTEMPTY);
            }
        }
        let iv = sys::read_small_at(&dfd, OsStr::new(DIRIV_NAME), crate::format::DIRIV_LEN).ok();
        let _ = sys::unlink_at(&dfd, OsStr::new(DIRIV_NAME), 0);
        if let Err(e) = sys::unlink_at(pfd, entry, libc::AT_REMOVEDIR) {
            if let Some(iv) = iv {
                let _ = sys::write_small_at(&dfd, OsStr::new(DIRIV_NAME), &iv);
            }
            return Err(e);
        }
        Ok(())
    }

    pub(super) fn rmdir(&self, parent: INodeNo, name: &OsStr) -> Result<(), Errno> {
        self.writable()?;
        let stored = self.stored_name(parent, name)?;
        let (pfd, _) = self.node(parent)?;
        let entry = OsStr::new(stored.entry());
        let st = sys::stat_at(&pfd, entry)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(Errno::ENOTDIR);
        }
        let ino = self.to_fuse(st.st_ino);
        self.remove_empty_dir(&pfd, entry)?;
        self.drop_sidecar(&pfd, &stored);
        self.drop_name(ino, parent, entry);
        Ok(())
    }

    pub(super) fn symlink(
        &self,
        parent: INodeNo,
        name: &OsStr,
        target: &[u8],
        uid: u32,
        gid: u32,
    ) -> Result<FileAttr, Errno> {
        self.writable()?;
        let enc = encode_symlink(&self.store.names, target).map_err(|_| Errno::ENAMETOOLONG)?;
        // A long target's blob is durable before a symlink names it.
        if let StoredLink::Long { blob_name, blob } = &enc {
            crate::store::links::write_blob(&self.store.root, blob_name, blob).map_err(|e| {
                tracing::warn!("cannot keep a long symlink target: {e}");
                Errno::EIO
            })?;
        }
        let backing = enc.backing_target();
        self.new_entry(parent, name, uid, gid, |pfd, entry| {
            sys::symlink_at(backing.as_bytes(), pfd, entry)
        })
    }

    pub(super) fn rename(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: u32,
    ) -> Result<(), Errno> {
        self.writable()?;
        let old = self.stored_name(parent, name)?;
        let new = self.stored_name(newparent, newname)?;
        let (pfd, _) = self.node(parent)?;
        let (npfd, _) = self.node(newparent)?;
        let (oe, ne) = (OsStr::new(old.entry()), OsStr::new(new.entry()));
        if parent == newparent && oe == ne {
            return Ok(());
        }
        let src = self.ino_at(&pfd, oe).ok_or(Errno::ENOENT)?;
        let dst = self.ino_at(&npfd, ne);
        if flags & libc::RENAME_EXCHANGE != 0 {
            // Names stay where they are, so the sidecars do too.
            sys::rename_at(&pfd, oe, &npfd, ne, flags)?;
            self.drop_name(src, parent, oe);
            self.add_name(src, newparent, ne);
            if let Some(dst) = dst {
                self.drop_name(dst, newparent, ne);
                self.add_name(dst, parent, oe);
            }
            return Ok(());
        }
        let target = sys::stat_at(&npfd, ne).ok();
        let mut dying = None;
        if let Some(t) = &target {
            if flags & libc::RENAME_NOREPLACE != 0 {
                return Err(Errno::EEXIST);
            }
            if t.st_mode & libc::S_IFMT == libc::S_IFDIR {
                let src = sys::stat_at(&pfd, oe)?;
                if src.st_mode & libc::S_IFMT != libc::S_IFDIR {
                    return Err(Errno::EISDIR);
                }
                // An empty plaintext directory still holds its IV; remove it first.
                self.remove_empty_dir(&npfd, ne)?;
            } else {
                dying = self.dying(&npfd, ne);
            }
        }
        self.put_sidecar(&npfd, &new)?;
        if let Err(e) = sys::rename_at(&pfd, oe, &npfd, ne, flags) {
            if target.is_none() {
                self.drop_sidecar(&npfd, &new);
            }
            return Err(e);
        }
        self.drop_sidecar(&pfd, &old);
        self.bury(dying);
        if let Some(dst) = dst.filter(|d| *d != src) {
            self.drop_name(dst, newparent, ne);
        }
        self.drop_name(src, parent, oe);
        self.add_name(src, newparent, ne);
        Ok(())
    }

    pub(super) fn link(
        &self,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
    ) -> Result<FileAttr, Errno> {
        self.writable()?;
        let stored = self.stored_name(newparent, newname)?;
        let (fd, _) = self.node(ino)?;
        let (npfd, _) = self.node(newparent)?;
        let entry = OsStr::new(stored.entry());
        self.put_sidecar(&npfd, &stored)?;
        if let Err(e) = sys::link_at(&fd, &npfd, entry) {
            if sys::stat_at(&npfd, entry).is_err() {
                self.drop_sidecar(&npfd, &stored);
            }
            return Err(e);
        }
        self.remember(newparent, entry)
    }

    pub(super) fn opendir(&self, ino: INodeNo) -> Result<u64, Errno> {
        let (fd, kind) = self.node(ino)?;
        if kind != FileType::Directory {
            return Err(Errno::ENOTDIR);
        }
        let iv = self.diriv(ino)?;
        let dot = |name: &str| DirEntry {
            ino: ino.0,
            kind: FileType::Directory,
            name: OsString::from(name),
            stored: OsString::new(),
        };
        let mut entries = vec![dot("."), dot("..")];
        let listing =
            std::fs::read_dir(sys::proc_path(&fd).to_str().unwrap_or("")).map_err(Errno::from)?;
        for e in listing {
            let e = e.map_err(Errno::from)?;
            let cname = e.file_name();
            let entry = classify(cname.as_bytes());
            if entry.is_internal() {
                continue;
            }
            let read_sidecar = |side: &OsStr| {
                sys::read_small_at(&fd, side, SIDECAR_MAX)
                    .map_err(|e| std::io::Error::from_raw_os_error(e.code()))
            };
            match self.store.names.decode_entry(&iv, &entry, read_sidecar) {
                Ok(plain) => {
                    let kind = e
                        .file_type()
                        .map(|t| super::kind_of(file_type_mode(&t)))
                        .unwrap_or(FileType::RegularFile);
                    entries.push(DirEntry {
                        ino: self.to_fuse(e.ino()),
                        kind,
                        name: plain,
                        stored: cname.clone(),
                    });
                }
                Err(e) => tracing::warn!(
                    "{}: entry {:?} has a name that fails authentication or is unsafe ({e}); skipped",
                    self.label(ino.0),
                    cname
                ),
            }
        }
        self.new_handle(Handle::Dir(Arc::new(entries)))
    }

    pub(super) fn dir_entries(&self, fh: u64) -> Result<Arc<Vec<DirEntry>>, Errno> {
        match lock(&self.handles)?.get(&fh) {
            Some(Handle::Dir(d)) => Ok(d.clone()),
            _ => Err(Errno::EBADF),
        }
    }
}

fn file_type_mode(t: &std::fs::FileType) -> u32 {
    use std::os::unix::fs::FileTypeExt;
    if t.is_dir() {
        libc::S_IFDIR
    } else if t.is_symlink() {
        libc::S_IFLNK
    } else if t.is_fifo() {
        libc::S_IFIFO
    } else if t.is_socket() {
        libc::S_IFSOCK
    } else if t.is_char_device() {
        libc::S_IFCHR
    } else if t.is_block_device() {
        libc::S_IFBLK
    } else {
        libc::S_IFREG
    }
}
