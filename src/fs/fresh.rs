//! A file made before it has a name (`coffer backup` into a format 3 store): made unnamed
//! (O_TMPFILE) with its record naming the one place it will have, written, given its
//! attributes, and only then linked there. The name never shows a part-written file, there
//! is no temporary name to rename away (one directory operation and one record write fewer
//! than write-then-rename), and a failure or a crash before the link leaves nothing behind.

use std::ffi::OsStr;
use std::sync::{Arc, Weak};

use fuser::{Errno, FileAttr, FileType, INodeNo};

use super::inodes::{Inode, Known};
use super::{lock, sys, CofferFs, Handle, OpenFile};

impl CofferFs {
    /// A new regular file meant for `name` in `parent`, open (the handle) and held (one
    /// lookup), with no name yet: `name_fresh` gives it one. EOPNOTSUPP where this cannot be
    /// done: a store before format 3, or a filesystem without O_TMPFILE.
    pub(super) fn create_fresh(
        &self,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        owner: (u32, u32),
    ) -> Result<(FileAttr, u64), Errno> {
        self.writable()?;
        if self.store.records().is_none() {
            return Err(Errno::EOPNOTSUPP);
        }
        let stored = self.stored_name(parent, name)?;
        let (pfd, _) = self.node(parent)?;
        let (file, tmp) = sys::create_unnamed(&pfd, 0o600)?;
        if let Some(t) = tmp {
            // A named stand-in would be a temporary name after all: the caller's own way.
            let _ = sys::unlink_at(&pfd, &t, 0);
            return Err(Errno::EOPNOTSUPP);
        }
        let label = format!("{}/{}", self.label(parent.0), stored.entry());
        let (h, k, rec) = self.new_file_in((parent, name, None), &file, mode, owner, &label)?;
        let of = Arc::new(OpenFile::create(file, label, h, k)?);
        let st = sys::stat_fd(of.backing())?;
        let ino = self.to_fuse(st.st_ino);
        {
            let mut t = lock(&self.inodes)?;
            let n = t.entry(ino).or_insert_with(|| Inode {
                kind: FileType::RegularFile,
                nlookup: 0,
                names: Vec::new(),
                fd: None,
                diriv: None,
                open: Weak::new(),
                xattrs: Known::Absent,
                default_acl: None,
                rec: None,
            });
            // A brand-new backing inode: whatever was remembered under its number had its
            // last name removed, so none of those names is this file's.
            n.kind = FileType::RegularFile;
            n.nlookup += 1;
            n.names.clear();
            n.open = Arc::downgrade(&of);
            n.xattrs = Known::Absent;
            n.rec = rec.clone();
        }
        let attr = self.attr_with(ino, &st, Some(&of), rec.as_ref());
        let fh = self.new_handle(Handle::File(of))?;
        Ok((attr, fh))
    }

    /// Link the file of `fh` (from `create_fresh`) as `name` in `parent`, the place its
    /// record names: EEXIST, and nothing replaced, when the name is taken; EINVAL anywhere
    /// else (the record would not vouch for it there).
    pub(super) fn name_fresh(
        &self,
        fh: u64,
        ino: INodeNo,
        parent: INodeNo,
        name: &OsStr,
    ) -> Result<(), Errno> {
        self.writable()?;
        let of = self.file_handle(fh)?;
        let place = self.place_of(parent, name)?;
        let meant = lock(&self.inodes)?
            .get(&ino.0)
            .filter(|n| Weak::ptr_eq(&n.open, &Arc::downgrade(&of)))
            .and_then(|n| n.rec.as_ref().map(|r| r.places == [place]));
        if meant != Some(true) {
            return Err(Errno::EINVAL);
        }
        let stored = self.stored_name(parent, name)?;
        let (pfd, _) = self.node(parent)?;
        let entry = OsStr::new(stored.entry());
        self.put_sidecar(&pfd, &stored)?;
        if let Err(e) = sys::name_new(of.backing(), None, &pfd, entry) {
            if e != Errno::EEXIST {
                self.drop_sidecar(&pfd, &stored);
            }
            return Err(e);
        }
        if let Some(n) = lock(&self.inodes)?.get_mut(&ino.0) {
            n.names.push((parent.0, entry.to_os_string()));
        }
        of.republish(&self.store);
        Ok(())
    }
}
