//! Operations that make, remove or list a directory's entries, one method each, returning
//! `Result<_, Errno>`: create, mknod, mkdir, unlink, rmdir, symlink, and the listing
//! (opendir); rename and link are in links.rs. Each name goes through the store's name codec;
//! long names keep their sidecar beside them. In format 3 each new inode gets its sealed
//! record before anything can be read from it (records.rs).

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use fuser::{Errno, FileAttr, INodeNo};

use super::inodes::Known;
use super::records::Node;
use super::{sys, CofferFs, OpenFile};
use crate::catalog::CatalogOp;
use crate::format::inode::{target_hash, InodeRecord, RecordKind};
use crate::format::{
    encode_symlink, long_link_blob, StoredLink, StoredName, DIRIV_NAME, FILE_ID_OFF,
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
pub(super) enum Dying {
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
    pub(super) fn dying(&self, pfd: &OwnedFd, entry: &OsStr) -> Option<Dying> {
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
    pub(super) fn bury(&self, dying: Option<Dying>) {
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
        self.create_to(parent, name, None, mode, (uid, gid))
    }

    /// The same for a file that is renamed to `to` in the same directory once written
    /// (`coffer backup`): in format 3 its record names that place from the start, so the
    /// rename writes the record once, not twice.
    pub(super) fn create_to(
        &self,
        parent: INodeNo,
        name: &OsStr,
        to: Option<&OsStr>,
        mode: u32,
        (uid, gid): (u32, u32),
    ) -> Result<(FileAttr, u64), Errno> {
        self.writable()?;
        let stored = self.stored_name(parent, name)?;
        let (pfd, _) = self.node(parent)?;
        let entry = OsStr::new(stored.entry());
        self.put_sidecar(&pfd, &stored)?;
        let label = format!("{}/{}", self.label(parent.0), stored.entry());
        let made = match self.store.records() {
            // Format 3: made unnamed, given its record and header, then named: no entry is
            // ever seen without its record, whenever a crash comes. The backing inode's own
            // mode and owner mean nothing: only the daemon's.
            Some(_) => sys::create_unnamed(&pfd, 0o600).and_then(|(file, tmp)| {
                let at = (parent, name, to);
                let (h, k, rec) = self.new_file_in(at, &file, mode, (uid, gid), &label)?;
                let of = OpenFile::create(file, label, h, k)?;
                sys::name_new(of.backing(), tmp.as_deref(), &pfd, entry)?;
                of.republish(&self.store);
                Ok((of, rec))
            }),
            None => sys::create_at(&pfd, entry, mode & 0o7777).and_then(|file| {
                let made = self.new_file_in((parent, name, to), &file, mode, (uid, gid), &label);
                let r = made.and_then(|(h, k, _)| OpenFile::create(file, label, h, k));
                match r {
                    Ok(of) => {
                        of.republish(&self.store);
                        Ok((of, None))
                    }
                    Err(e) => {
                        let _ = sys::unlink_at(&pfd, entry, 0);
                        Err(e)
                    }
                }
            }),
        };
        let (of, rec) = match made {
            Ok(m) => m,
            Err(e) => {
                if e != Errno::EEXIST {
                    self.drop_sidecar(&pfd, &stored);
                }
                return Err(e);
            }
        };
        let sealed = rec.is_some();
        let (attr, fh) = self.opened_new(parent, entry, name, Arc::new(of), Known::Absent, rec)?;
        let attr = if self.as_root && !sealed {
            FileAttr { uid, gid, ..attr }
        } else {
            attr
        };
        Ok((attr, fh))
    }

    /// A new file's header and key, and in format 3 its record, sealed onto `file` before a
    /// byte of its content is written (so a crash never leaves content without a record).
    pub(super) fn new_file_in(
        &self,
        (parent, name, to): (INodeNo, &OsStr, Option<&OsStr>),
        file: &std::fs::File,
        mode: u32,
        owner: (u32, u32),
        label: &str,
    ) -> Result<
        (
            crate::format::Header,
            crate::crypto::FileKey,
            Option<InodeRecord>,
        ),
        Errno,
    > {
        let (header, key) = self.store.new_file().map_err(|e| {
            tracing::error!("{label}: cannot make a file key: {e}");
            Errno::EIO
        })?;
        if self.store.records().is_none() {
            self.chown_new(file, owner.0, owner.1);
            return Ok((header, key, None));
        }
        let mut rec = self.new_record(
            parent,
            name,
            RecordKind::File,
            header.file_id,
            mode,
            owner,
            0,
            None,
        )?;
        if let Some(to) = to {
            rec.places.push(self.place_of(parent, to)?);
        }
        self.put_record(file, &rec)?;
        Ok((header, key, Some(rec)))
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
        let kind = RecordKind::of_mode(mode).ok_or(Errno::EINVAL)?;
        let node = Node {
            kind,
            mode,
            rdev,
            target: None,
        };
        self.new_entry(parent, name, (uid, gid), node, |pfd, entry, sealed| {
            let mode = match sealed {
                true => (mode & libc::S_IFMT) | 0o600,
                false => mode,
            };
            sys::mknod_at(pfd, entry, mode, rdev)
        })
    }

    /// Make a name-only entry (symlink, FIFO, device) with `make`, its long-name sidecar
    /// first and removed again if `make` fails; then give it to the caller's uid and gid. In
    /// format 3 it is made under a temporary name, given its record, and renamed into place,
    /// so that no entry is ever seen without one.
    fn new_entry(
        &self,
        parent: INodeNo,
        name: &OsStr,
        owner: (u32, u32),
        node: Node,
        make: impl FnOnce(&OwnedFd, &OsStr, bool) -> Result<(), Errno>,
    ) -> Result<FileAttr, Errno> {
        let stored = self.stored_name(parent, name)?;
        let (pfd, _) = self.node(parent)?;
        let entry = OsStr::new(stored.entry());
        self.put_sidecar(&pfd, &stored)?;
        if self.store.records().is_some() {
            return self.new_sealed_entry(parent, name, &pfd, &stored, owner, node, make);
        }
        if let Err(e) = make(&pfd, entry, false) {
            if e != Errno::EEXIST {
                self.drop_sidecar(&pfd, &stored);
            }
            return Err(e);
        }
        self.chown_new(&sys::open_path(&pfd, entry)?, owner.0, owner.1);
        let attr = self.remember(parent, entry, name)?;
        self.set_known(attr.ino, Known::Absent);
        Ok(attr)
    }

    #[allow(clippy::too_many_arguments)]
    fn new_sealed_entry(
        &self,
        parent: INodeNo,
        name: &OsStr,
        pfd: &OwnedFd,
        stored: &StoredName,
        owner: (u32, u32),
        node: Node,
        make: impl FnOnce(&OwnedFd, &OsStr, bool) -> Result<(), Errno>,
    ) -> Result<FileAttr, Errno> {
        let entry = OsStr::new(stored.entry());
        let tmp = crate::format::temp_name(OsStr::new("node"));
        let placed = make(pfd, &tmp, true).and_then(|_| {
            let rec = self.new_record(
                parent,
                name,
                node.kind,
                crate::crypto::random_id(),
                node.mode,
                owner,
                node.rdev,
                node.target,
            );
            let r = rec.and_then(|rec| {
                self.put_record_at(pfd, &tmp, &rec)?;
                sys::rename_at(pfd, &tmp, pfd, entry, libc::RENAME_NOREPLACE)?;
                Ok(rec)
            });
            if r.is_err() {
                let _ = sys::unlink_at(pfd, &tmp, 0);
            }
            r
        });
        let rec = match placed {
            Ok(rec) => rec,
            Err(e) => {
                if e != Errno::EEXIST {
                    self.drop_sidecar(pfd, stored);
                }
                return Err(e);
            }
        };
        let attr = self.remember_as(parent, entry, name, Some(rec))?;
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
            let rec = match self.store.records() {
                Some(_) => {
                    let k = RecordKind::Dir;
                    let rec = self.new_record(parent, name, k, iv, mode, (uid, gid), 0, None)?;
                    self.put_record_at(&pfd, &tmp, &rec)?;
                    Some(rec)
                }
                None => {
                    sys::chmod_fd(&dfd, mode & 0o7777)?;
                    self.chown_new(&dfd, uid, gid);
                    None
                }
            };
            self.put_sidecar(&pfd, &stored)?;
            sys::rename_at(&pfd, &tmp, &pfd, entry, libc::RENAME_NOREPLACE)?;
            Ok(rec)
        })();
        let rec = match built {
            Ok(rec) => rec,
            Err(e) => {
                let _ = sys::unlink_at(&sys::open_path(&pfd, &tmp)?, OsStr::new(DIRIV_NAME), 0);
                let _ = sys::unlink_at(&pfd, &tmp, libc::AT_REMOVEDIR);
                return Err(e);
            }
        };
        let attr = self.remember_as(parent, entry, name, rec)?;
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
        // Format 3: the record of an inode that keeps other names is read and written again
        // under its lock.
        let _g = match (ino, self.store.records()) {
            (Some(i), Some(_)) => Some(self.rec_lock(i)?),
            _ => None,
        };
        let others = self.other_names(&pfd, parent, entry, name);
        sys::unlink_at(&pfd, entry, 0)?;
        self.drop_sidecar(&pfd, &stored);
        if let Some(ino) = ino {
            self.drop_name(ino, parent, entry);
        }
        self.bury(dying);
        // The name is gone first, then from the record: a crash between leaves a record
        // naming one place too many, never an entry its record does not name.
        if let Some((fd, ino, rec)) = others {
            let place = self.place_of(parent, name)?;
            let rec = super::records::without_place(&rec, &place);
            self.put_record(&fd, &rec)?;
            self.keep_record(ino, rec);
        }
        Ok(())
    }

    /// In format 3, for an entry whose inode has other names: its descriptor and record, so
    /// that the name about to go can be taken out of the record after. A record that does
    /// not open there (something planted) is left as it is: removing the entry is allowed.
    pub(super) fn other_names(
        &self,
        pfd: &OwnedFd,
        parent: INodeNo,
        entry: &OsStr,
        name: &OsStr,
    ) -> Option<(OwnedFd, u64, InodeRecord)> {
        self.store.records()?;
        let st = sys::stat_at(pfd, entry).ok()?;
        if st.st_nlink < 2 || st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            return None;
        }
        let (ino, rec) = self.record_at(pfd, parent, entry, name).ok()?;
        (rec.places.len() > 1).then_some((sys::open_path(pfd, entry).ok()?, ino, rec))
    }

    /// Remove an empty ciphertext directory (its IV is its only entry).
    pub(super) fn remove_empty_dir(&self, pfd: &OwnedFd, entry: &OsStr) -> Result<(), Errno> {
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
        let node = Node {
            kind: RecordKind::Symlink,
            mode: 0o777,
            rdev: 0,
            target: Some(target_hash(backing.as_bytes())),
        };
        self.new_entry(parent, name, (uid, gid), node, |pfd, entry, _| {
            sys::symlink_at(backing.as_bytes(), pfd, entry)
        })
    }
}
