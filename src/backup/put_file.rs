//! One non-directory entry into the store: left alone when rsync's quick check (or
//! `--checksum`) finds it unchanged; else, where nothing is in its place in a format-3
//! store, written unnamed, given its attributes and record and linked as its name (nothing to
//! clean up if the run dies); else written under a temporary name, given its attributes and
//! renamed over the old one. A reader sees the old file or the new, whole.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;

use super::content::{changed_under_us, compare, copy_in, patch};
use super::local;
use super::put::{Here, Run};
use super::{Counters, PARTIAL};
use crate::fs::direct::{Handle, Kind, SetAttrs, Stat};

/// A fresh temporary name for a file being written: random per process, then counted (it
/// is created exclusively, so it need not be unguessable, only unused).
pub(super) fn partial_name() -> OsString {
    static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut r = [0u8; 4];
        crate::crypto::random_bytes(&mut r);
        hex::encode(r)
    });
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    OsString::from(format!("{PARTIAL}{prefix}{n:08x}"))
}

/// The attributes coffer keeps: the namespaces Linux filesystems keep, and POSIX ACLs.
fn kept(name: &OsStr) -> bool {
    let n = name.as_encoded_bytes();
    [&b"user."[..], b"trusted.", b"security."]
        .iter()
        .any(|p| n.starts_with(p))
        || n == b"system.posix_acl_access"
        || n == b"system.posix_acl_default"
}

fn as_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // SAFETY: geteuid has no preconditions and cannot fail.
    *ROOT.get_or_init(|| unsafe { libc::geteuid() == 0 })
}

/// The source file `name` in `sdir` for reading, if it is still the one `st` describes.
fn open_source(sdir: &OwnedFd, name: &OsStr, st: &libc::stat) -> io::Result<File> {
    let (src, now) = local::open_file_at(sdir, name)?;
    if now.st_ino != st.st_ino {
        return Err(changed_under_us());
    }
    Ok(src)
}

impl Run<'_> {
    /// A file, symlink, FIFO, socket or device into store directory `parent`; returns its
    /// inode in the store, held (None in a dry run that would write it).
    pub(super) fn put_one(
        &self,
        sdir: &OwnedFd,
        name: &OsStr,
        here: &Here,
        parent: u64,
        existing: Option<Stat>,
        st: &libc::stat,
    ) -> io::Result<Option<u64>> {
        if let Some(e) = &existing {
            if self.unchanged(sdir, name, e, st)? {
                if !self.opts.dry_run {
                    if self.opts.recheck && e.kind == Kind::File {
                        self.tree.record(e.ino)?;
                    }
                    self.sync_meta(e.ino, sdir, name, st, Some(e), None)?;
                }
                Counters::add(&self.counters.unchanged, 1);
                return Ok(Some(e.ino));
            }
        }
        if self.opts.dry_run {
            self.report.would("write", &here.shown);
            self.count_written(st);
            return Ok(existing.map(|e| e.ino));
        }
        if let Some(e) = existing.as_ref().filter(|e| self.patchable(e, st)) {
            let ino = self.update(sdir, name, parent, e, st)?;
            self.tree.forget(e.ino);
            Counters::add(&self.counters.files, 1);
            return Ok(Some(ino));
        }
        let free = match existing {
            None => true,
            Some(e) => {
                self.tree.forget(e.ino);
                if e.kind == Kind::Dir {
                    let n = self.remove(parent, name)?;
                    Counters::add(&self.counters.deleted, n);
                }
                e.kind == Kind::Dir
            }
        };
        let fresh = st.st_mode & libc::S_IFMT == libc::S_IFREG && free;
        if fresh && self.tree.authenticated_metadata() {
            if let Some(ino) = self.write_fresh(sdir, name, parent, st)? {
                Counters::add(&self.counters.files, 1);
                return Ok(Some(ino));
            }
        }
        let tmp = partial_name();
        let ino = self.make(sdir, name, parent, &tmp, st)?;
        // A regular file was given its attributes through its handle (write_file).
        let placed = match st.st_mode & libc::S_IFMT == libc::S_IFREG {
            true => Ok(()),
            false => self.sync_meta(ino, sdir, name, st, None, None),
        }
        .and_then(|_| self.tree.rename(parent, &tmp, parent, name));
        if let Err(e) = placed {
            return Err(self.discard(ino, parent, &tmp, e));
        }
        Counters::add(&self.counters.files, 1);
        Ok(Some(ino))
    }

    /// Whether a changed file is changed block by block (else written afresh): a regular file
    /// on both sides, with one name in the store, and content this host can read.
    fn patchable(&self, e: &Stat, st: &libc::stat) -> bool {
        e.kind == Kind::File
            && st.st_mode & libc::S_IFMT == libc::S_IFREG
            && e.nlink == 1
            && e.size > 0
            && st.st_size > 0
            && self.tree.can_read()
    }

    /// A changed file: a copy of the store's (fs/clone.rs) with the blocks that differ from
    /// the source's written, renamed over the original whole. Returns the copy's inode, held.
    fn update(
        &self,
        sdir: &OwnedFd,
        name: &OsStr,
        parent: u64,
        e: &Stat,
        st: &libc::stat,
    ) -> io::Result<u64> {
        let src = open_source(sdir, name, st)?;
        let tmp = partial_name();
        let (made, h) = self.tree.clone_file(e.ino, (parent, &tmp), name)?;
        let patched = patch(
            (self.tree, self.counters),
            &src,
            &h,
            (e.size, st.st_size as u64),
        )
        .and_then(|_| self.sync_meta(made.ino, sdir, name, st, Some(e), Some(&h)));
        self.tree.close(h);
        let placed = patched
            .and_then(|_| self.tree.rename(parent, &tmp, parent, name))
            // The rename dropped the original's catalog record, which was the copy's too.
            .and_then(|_| self.tree.record(made.ino));
        if let Err(err) = placed {
            return Err(self.discard(made.ino, parent, &tmp, err));
        }
        Ok(made.ino)
    }

    /// Let go of held inode `ino`, made under the temporary name `tmp` by a step that then
    /// failed with `e`, and remove it; returns `e`.
    fn discard(&self, ino: u64, parent: u64, tmp: &OsStr, e: io::Error) -> io::Error {
        self.tree.forget(ino);
        let _ = self.tree.unlink(parent, tmp);
        e
    }

    fn count_written(&self, st: &libc::stat) {
        Counters::add(&self.counters.files, 1);
        if st.st_mode & libc::S_IFMT == libc::S_IFREG {
            Counters::add(&self.counters.bytes, st.st_size as u64);
        }
    }

    /// Whether the store's entry `e` already holds what the source's does.
    fn unchanged(
        &self,
        sdir: &OwnedFd,
        name: &OsStr,
        e: &Stat,
        st: &libc::stat,
    ) -> io::Result<bool> {
        let kind = Kind::of_mode(st.st_mode);
        if e.kind != kind {
            return Ok(false);
        }
        match kind {
            Kind::File if e.size != st.st_size as u64 => Ok(false),
            Kind::File if self.opts.checksum => self.same_content(e.ino, sdir, name),
            Kind::File => Ok(e.mtime == local::time(st.st_mtime, st.st_mtime_nsec)),
            Kind::Symlink => Ok(self.tree.readlink(e.ino)? == local::readlink_at(sdir, name)?),
            _ => Ok(e.rdev == st.st_rdev as u32),
        }
    }

    /// `--checksum`: the store's plaintext against the source's, byte for byte. A file this
    /// host cannot read (backup-only) counts as changed.
    fn same_content(&self, ino: u64, sdir: &OwnedFd, name: &OsStr) -> io::Result<bool> {
        if !self.tree.can_read() {
            return Ok(false);
        }
        let (src, _) = local::open_file_at(sdir, name)?;
        let h = self.tree.open(ino, false)?;
        let r = compare(self.tree, &h, &src);
        self.tree.close(h);
        r
    }

    /// Make the entry under the temporary name `tmp`; returns its inode, held.
    fn make(
        &self,
        sdir: &OwnedFd,
        name: &OsStr,
        parent: u64,
        tmp: &OsStr,
        st: &libc::stat,
    ) -> io::Result<u64> {
        let owner = (st.st_uid, st.st_gid);
        match Kind::of_mode(st.st_mode) {
            Kind::File => self.write_file(sdir, name, parent, tmp, st),
            Kind::Symlink => {
                let target = local::readlink_at(sdir, name)?;
                Ok(self.tree.symlink(parent, tmp, &target, owner)?.ino)
            }
            _ => {
                let mode = st.st_mode & (libc::S_IFMT | 0o7777);
                Ok(self
                    .tree
                    .mknod(parent, tmp, mode, st.st_rdev as u32, owner)?
                    .ino)
            }
        }
    }

    fn write_file(
        &self,
        sdir: &OwnedFd,
        name: &OsStr,
        parent: u64,
        tmp: &OsStr,
        st: &libc::stat,
    ) -> io::Result<u64> {
        let src = open_source(sdir, name, st)?;
        // Sealed (format 3), the mode means nothing until the file is renamed into place, and
        // given now it costs no second record write; before, the backing file is kept 0600
        // while it is written.
        let perm = match self.tree.authenticated_metadata() {
            true => st.st_mode & 0o7777,
            false => 0o600,
        };
        let owner = (st.st_uid, st.st_gid);
        let (made, h) = self.tree.create_to(parent, tmp, Some(name), perm, owner)?;
        let r = copy_in((self.tree, self.counters), &src, &h, st.st_size as u64)
            .and_then(|_| self.sync_meta(made.ino, sdir, name, st, None, Some(&h)));
        self.tree.close(h);
        match r {
            Ok(()) => Ok(made.ino),
            Err(e) => Err(self.discard(made.ino, parent, tmp, e)),
        }
    }

    /// A new regular file where the store has none, written unnamed and linked as `name`
    /// once whole (fs/fresh.rs); None where the store's filesystem cannot make unnamed files.
    fn write_fresh(
        &self,
        sdir: &OwnedFd,
        name: &OsStr,
        parent: u64,
        st: &libc::stat,
    ) -> io::Result<Option<u64>> {
        let src = open_source(sdir, name, st)?;
        let owner = (st.st_uid, st.st_gid);
        let perm = st.st_mode & 0o7777;
        let Some((made, h)) = self.tree.create_fresh((parent, name), perm, owner)? else {
            return Ok(None);
        };
        let r = copy_in((self.tree, self.counters), &src, &h, st.st_size as u64)
            .and_then(|_| self.sync_meta(made.ino, sdir, name, st, None, Some(&h)))
            .and_then(|_| self.tree.name_fresh(&h, (parent, name)));
        self.tree.close(h);
        if let Err(e) = r {
            // Unnamed, it goes when it is let go.
            self.tree.forget(made.ino);
            return Err(e);
        }
        Ok(Some(made.ino))
    }

    /// The store entry `ino` given the source's attributes: extended attributes and ACLs,
    /// then owner (as root), mode and times. With `cur` (an entry that was there), only what
    /// differs is set, so an unchanged tree is not written.
    pub(super) fn sync_meta(
        &self,
        ino: u64,
        sdir: &OwnedFd,
        name: &OsStr,
        st: &libc::stat,
        cur: Option<&Stat>,
        open: Option<&Handle>,
    ) -> io::Result<()> {
        let src: BTreeMap<OsString, Vec<u8>> = local::xattrs_at(sdir, name)?
            .into_iter()
            .filter(|(n, _)| kept(n))
            .collect();
        let dst: BTreeMap<OsString, Vec<u8>> = match cur {
            None => BTreeMap::new(),
            Some(_) => self.tree.xattrs(ino)?.into_iter().collect(),
        };
        for (n, v) in &src {
            if dst.get(n) != Some(v) {
                self.tree
                    .set_xattr(ino, n, v)
                    .map_err(|e| too_large(e, v.len()))?;
            }
        }
        for n in dst.keys().filter(|n| !src.contains_key(*n)) {
            self.tree.remove_xattr(ino, n)?;
        }
        let cur = match (cur, src == dst) {
            (Some(c), true) => Some(c.clone()),
            (Some(_), false) => Some(self.tree.stat(ino)?),
            (None, _) => None,
        };
        let want = wanted(st, cur.as_ref());
        match open {
            Some(h) => self.tree.set_attrs_open(h, &want),
            None => self.tree.set_attrs(ino, &want),
        }
    }

    /// Put store directory `dir`'s times back as `before` had them: for a change made in it
    /// after the walk finished it (a link, a deletion), which would otherwise move them.
    pub(super) fn times_back(&self, dir: u64, before: &Stat) -> io::Result<()> {
        let times = SetAttrs {
            atime: Some(before.atime),
            mtime: Some(before.mtime),
            ..SetAttrs::default()
        };
        self.tree.set_attrs(dir, &times)
    }

    /// Another name of a hard-linked file already in the store as `first`.
    pub(super) fn link_to(
        &self,
        first: Option<u64>,
        (parent, name, existing, here): (u64, OsString, Option<u64>, Here),
    ) -> io::Result<()> {
        if let Some(e) = existing {
            self.tree.forget(e);
        }
        if self.opts.dry_run {
            match existing.is_some() && existing == first {
                true => Counters::add(&self.counters.unchanged, 1),
                false => {
                    self.report.would("link", &here.shown);
                    Counters::add(&self.counters.files, 1);
                }
            }
            return Ok(());
        }
        let Some(first) = first else {
            return Err(io::Error::other("its first name could not be backed up"));
        };
        if existing == Some(first) {
            Counters::add(&self.counters.unchanged, 1);
            return Ok(());
        }
        // A link made after its directory was finished would move the directory's times:
        // they are put back as they were (while it is still being filled, its own turn sets
        // them later anyway).
        let before = self.tree.stat(parent)?;
        let tmp = partial_name();
        let made = self.tree.link(first, parent, &tmp)?;
        self.tree.forget(made.ino);
        let renamed = self.tree.rename(parent, &tmp, parent, &name);
        self.times_back(parent, &before)?;
        if let Err(e) = renamed {
            let _ = self.tree.unlink(parent, &tmp);
            if e.raw_os_error() != Some(libc::EISDIR) {
                return Err(e);
            }
            self.remove(parent, &name)?;
            return self.link_to(Some(first), (parent, name, None, here));
        }
        // `name` was another name of `first` already (a run killed part way): the rename
        // did nothing, and the temporary name goes.
        let left = match existing {
            Some(_) => self.tree.lookup(parent, &tmp)?,
            None => None,
        };
        if let Some(left) = left {
            self.tree.forget(left.ino);
            self.tree.unlink(parent, &tmp)?;
        }
        Counters::add(&self.counters.files, 1);
        Ok(())
    }
}

/// ENOSPC or E2BIG from setting a `len`-byte attribute, said for what it is.
fn too_large(e: io::Error, len: usize) -> io::Error {
    match e.raw_os_error() {
        Some(libc::ENOSPC | libc::E2BIG) => io::Error::new(
            e.kind(),
            format!(
                "an extended attribute of {len} bytes does not fit in the store once sealed ({e})"
            ),
        ),
        _ => e,
    }
}

/// What to set so that the store's entry shows the source's `st`; `cur` what it shows now.
fn wanted(st: &libc::stat, cur: Option<&Stat>) -> SetAttrs {
    let mtime = local::time(st.st_mtime, st.st_mtime_nsec);
    let atime = local::time(st.st_atime, st.st_atime_nsec);
    let perm = st.st_mode & 0o7777;
    let symlink = st.st_mode & libc::S_IFMT == libc::S_IFLNK;
    let differs = |f: &dyn Fn(&Stat) -> bool| cur.is_none_or(|c| !f(c));
    let owner = as_root() && differs(&|c| c.uid == st.st_uid && c.gid == st.st_gid);
    SetAttrs {
        uid: owner.then_some(st.st_uid),
        gid: owner.then_some(st.st_gid),
        perm: (!symlink && differs(&|c| c.perm == perm)).then_some(perm),
        atime: differs(&|c| c.mtime == mtime).then_some(atime),
        mtime: differs(&|c| c.mtime == mtime).then_some(mtime),
    }
}
