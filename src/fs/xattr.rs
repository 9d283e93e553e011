//! Extended attributes through the mount: user, trusted and security attributes and POSIX
//! ACLs, sealed and bound to their inode (format/xattr.rs). What a Linux filesystem does
//! around ACLs (inheritance, chmod) is in acl.rs.
//!
//! In format 3 the inode's record lists the backing names of its attributes: one that is
//! not listed does not exist (ENODATA without a system call), and one that is listed but
//! gone from the backing inode (deleted by a host without the key: an ACL, a file
//! capability) makes the inode's attributes unreadable (EIO), never silently fewer. An
//! attribute is set on the backing inode before the record lists it, and taken out of the
//! record before it is removed, so a crash leaves at most an attribute nothing lists.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use fuser::{Errno, FileType, INodeNo};

use super::inodes::Known;
use super::{lock, sys, CofferFs};
use crate::format::acl::{self, Acl};
use crate::format::xattr::{XattrError, ID_ATTR, PREFIX_TRUSTED, PREFIX_USER};
use crate::format::FILE_ID_OFF;

/// An attribute as found: its backing name, and the (name, value) it opened to.
type Opened = (String, (Vec<u8>, Vec<u8>));

/// The backing inode an attribute call acts on, and its kind.
pub(super) struct XNode {
    pub(super) fd: Arc<OwnedFd>,
    pub(super) kind: FileType,
}

fn prefix(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile | FileType::Directory => PREFIX_USER,
        _ => PREFIX_TRUSTED,
    }
}

/// Which attribute names coffer keeps: the namespaces Linux filesystems keep, and POSIX ACLs.
fn supported(name: &[u8]) -> bool {
    [&b"user."[..], b"trusted.", b"security."]
        .iter()
        .any(|p| name.starts_with(p) && name.len() > p.len())
        || name == acl::ACCESS.as_bytes()
        || name == acl::DEFAULT.as_bytes()
}

fn forged(what: &str, e: XattrError) -> Errno {
    tracing::warn!("{what}: {e}");
    Errno::EIO
}

impl CofferFs {
    /// The open state of inode `ino`, if a handle has it open.
    pub(super) fn open_file_of(&self, ino: INodeNo) -> Option<Arc<super::OpenFile>> {
        super::lock(&self.inodes)
            .ok()?
            .get(&ino.0)
            .and_then(|n| n.open.upgrade())
    }

    pub(super) fn xnode(&self, ino: INodeNo) -> Result<XNode, Errno> {
        match self.node(ino) {
            Ok((fd, kind)) => Ok(XNode { fd, kind }),
            // A file open but without a name left: its own descriptor.
            Err(e) => {
                let f = self.open_file_of(ino).ok_or(e)?;
                let fd = f.backing().try_clone().map_err(Errno::from)?;
                Ok(XNode {
                    fd: Arc::new(OwnedFd::from(fd)),
                    kind: FileType::RegularFile,
                })
            }
        }
    }

    /// What inode `ino` is known by (format/xattr.rs); None for a symlink or special file
    /// that has no attribute yet (and `create` is false).
    fn xattr_id(&self, ino: INodeNo, n: &XNode, create: bool) -> Result<Option<[u8; 16]>, Errno> {
        if self.store.records().is_some() {
            return self.record(ino).map(|r| Some(r.id));
        }
        match n.kind {
            FileType::Directory => self.diriv(ino).map(Some),
            FileType::RegularFile => {
                if let Some(f) = self.open_file_of(ino) {
                    return f.file_id().map(Some);
                }
                let f = sys::reopen(n.fd.as_ref(), libc::O_RDONLY)?;
                let mut id = [0u8; 16];
                f.read_exact_at(&mut id, FILE_ID_OFF as u64)
                    .map_err(|_| Errno::EIO)?;
                Ok(Some(id))
            }
            _ => self.special_id(n, create),
        }
    }

    fn special_id(&self, n: &XNode, create: bool) -> Result<Option<[u8; 16]>, Errno> {
        let no_trusted = |e: Errno| match e {
            // Only a daemon running as root may keep trusted attributes.
            e if e == Errno::EPERM => Errno::EOPNOTSUPP,
            e => e,
        };
        match sys::get_xattr(n.fd.as_ref(), ID_ATTR) {
            Ok(v) => v.try_into().map(Some).map_err(|_| Errno::EIO),
            Err(e) if e == Errno::ENODATA && create => {
                let id = crate::crypto::random_id();
                sys::set_xattr(n.fd.as_ref(), ID_ATTR, &id, libc::XATTR_CREATE)
                    .map_err(no_trusted)?;
                Ok(Some(id))
            }
            Err(e) if e == Errno::ENODATA => Ok(None),
            Err(e) => Err(no_trusted(e)),
        }
    }

    pub(super) fn known(&self, ino: INodeNo) -> Known {
        lock(&self.inodes)
            .ok()
            .and_then(|t| t.get(&ino.0).map(|n| n.xattrs))
            .unwrap_or(Known::Unknown)
    }

    pub(super) fn set_known(&self, ino: INodeNo, k: Known) {
        if let Ok(mut t) = lock(&self.inodes) {
            if let Some(n) = t.get_mut(&ino.0) {
                n.xattrs = k;
                // An inode known to have no attributes has no default ACL either.
                n.default_acl = match k {
                    Known::Absent => Some(None),
                    _ => None,
                };
            }
        }
    }

    /// Whether the inode has attributes of ours: from what this mount knows, else one
    /// listxattr of the backing inode.
    pub(super) fn has_attrs(&self, ino: INodeNo, n: &XNode) -> Result<bool, Errno> {
        if self.store.records().is_some() {
            return self.record(ino).map(|r| !r.xattrs.is_empty());
        }
        match self.known(ino) {
            Known::Absent => return Ok(false),
            Known::Present => return Ok(true),
            Known::Unknown => {}
        }
        let any = sys::list_xattrs(n.fd.as_ref())?
            .iter()
            .any(|b| b.starts_with(prefix(n.kind)));
        self.set_known(ino, if any { Known::Present } else { Known::Absent });
        Ok(any)
    }

    fn backing_attr(&self, id: &[u8; 16], kind: FileType, name: &[u8]) -> String {
        format!(
            "{}{}",
            prefix(kind),
            self.store.xattrs.backing_name(id, name)
        )
    }

    /// The value of attribute `name`.
    pub(super) fn getxattr(&self, ino: INodeNo, name: &OsStr) -> Result<Vec<u8>, Errno> {
        let name = name.as_bytes();
        if !supported(name) {
            return Err(Errno::ENODATA);
        }
        // Format 3: an inode whose record lists no attribute has none (the kernel asks for
        // security.capability at every file's first write).
        if self.store.records().is_some() && self.record(ino)?.xattrs.is_empty() {
            return Err(Errno::ENODATA);
        }
        if self.known(ino) == Known::Absent {
            return Err(Errno::ENODATA);
        }
        let n = self.xnode(ino)?;
        if !self.has_attrs(ino, &n)? {
            return Err(Errno::ENODATA);
        }
        let id = self.xattr_id(ino, &n, false)?.ok_or(Errno::ENODATA)?;
        let listed = self.listed(ino, &id, name)?;
        let sealed = match sys::get_xattr(n.fd.as_ref(), &self.backing_attr(&id, n.kind, name)) {
            Err(e) if e == Errno::ENODATA && listed == Some(true) => {
                return Err(self.lost_attr(ino));
            }
            r => r?,
        };
        self.store
            .xattrs
            .open_as(&id, name, &sealed)
            .map_err(|e| forged(&self.label(ino.0), e))
    }

    /// Format 3: whether `ino`'s record lists attribute `name` (ENODATA when it does not:
    /// nothing else is asked); None before format 3.
    fn listed(&self, ino: INodeNo, id: &[u8; 16], name: &[u8]) -> Result<Option<bool>, Errno> {
        if self.store.records().is_none() {
            return Ok(None);
        }
        let mac = self.store.xattrs.backing_mac(id, name);
        match self.record(ino)?.xattrs.binary_search(&mac) {
            Ok(_) => Ok(Some(true)),
            Err(_) => Err(Errno::ENODATA),
        }
    }

    /// An attribute the record lists is gone from the backing inode.
    fn lost_attr(&self, ino: INodeNo) -> Errno {
        tracing::warn!(
            "{}: an attribute its sealed record lists is gone (deleted by a host without the key)",
            self.label(ino.0)
        );
        Errno::EIO
    }

    /// The names of the inode's attributes, each followed by NUL. One that does not open is
    /// left out (and logged), as a name that does not decrypt is left out of a listing.
    pub(super) fn listxattr(&self, ino: INodeNo) -> Result<Vec<u8>, Errno> {
        if self.known(ino) == Known::Absent {
            return Ok(Vec::new());
        }
        let n = self.xnode(ino)?;
        if !self.has_attrs(ino, &n)? {
            return Ok(Vec::new());
        }
        let Some(id) = self.xattr_id(ino, &n, false)? else {
            return Ok(Vec::new());
        };
        if self.store.records().is_some() {
            return self.list_recorded(ino, &n, &id);
        }
        let mut out = Vec::new();
        for b in sys::list_xattrs(n.fd.as_ref())? {
            if !b.starts_with(prefix(n.kind)) {
                continue;
            }
            let opened = sys::get_xattr(n.fd.as_ref(), &b)
                .map_err(|_| XattrError::Forged)
                .and_then(|s| self.store.xattrs.open(&id, &s));
            match opened {
                Ok((name, _)) => {
                    out.extend_from_slice(&name);
                    out.push(0);
                }
                Err(e) => tracing::warn!("{}: attribute {b} skipped: {e}", self.label(ino.0)),
            }
        }
        Ok(out)
    }

    /// Format 3: the names of the attributes `ino`'s record lists, each opened; one that is
    /// gone or does not open makes the listing EIO (a restore then names the file).
    fn list_recorded(&self, ino: INodeNo, n: &XNode, id: &[u8; 16]) -> Result<Vec<u8>, Errno> {
        let mut out = Vec::new();
        for mac in self.record(ino)?.xattrs {
            let b = format!(
                "{}{}",
                prefix(n.kind),
                crate::format::xattr::encode_backing(&mac)
            );
            let sealed = match sys::get_xattr(n.fd.as_ref(), &b) {
                Err(e) if e == Errno::ENODATA => return Err(self.lost_attr(ino)),
                r => r?,
            };
            let (name, _) = self
                .store
                .xattrs
                .open(id, &sealed)
                .map_err(|e| forged(&self.label(ino.0), e))?;
            if self.store.xattrs.backing_mac(id, &name) != mac {
                return Err(forged(&self.label(ino.0), XattrError::Forged));
            }
            out.extend_from_slice(&name);
            out.push(0);
        }
        Ok(out)
    }

    /// Set attribute `name` (flags XATTR_CREATE, XATTR_REPLACE or 0, as setxattr(2)).
    pub(super) fn setxattr(
        &self,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
    ) -> Result<(), Errno> {
        self.writable()?;
        let name = name.as_bytes();
        if !supported(name) {
            return Err(Errno::EOPNOTSUPP);
        }
        let n = self.xnode(ino)?;
        if name == acl::DEFAULT.as_bytes() && n.kind != FileType::Directory {
            return Err(Errno::EACCES);
        }
        if name == acl::ACCESS.as_bytes() || name == acl::DEFAULT.as_bytes() {
            let acl = Acl::parse(value).map_err(|_| Errno::EINVAL)?;
            if name == acl::ACCESS.as_bytes() {
                return self.set_access_acl(ino, &n, &acl, flags);
            }
        }
        self.put_attr(ino, &n, name, value, flags)
    }

    pub(super) fn put_attr(
        &self,
        ino: INodeNo,
        n: &XNode,
        name: &[u8],
        value: &[u8],
        flags: i32,
    ) -> Result<(), Errno> {
        let id = self.xattr_id(ino, n, true)?.ok_or(Errno::EOPNOTSUPP)?;
        let sealed = self
            .store
            .xattrs
            .seal(&id, name, value)
            .map_err(|e| match e {
                XattrError::TooLarge => Errno::E2BIG,
                _ => Errno::ERANGE,
            })?;
        if self.store.records().is_some() {
            // setxattr's flags against what the record lists, not what the backing holds.
            let listed = self.listed(ino, &id, name).is_ok();
            if flags & libc::XATTR_CREATE != 0 && listed {
                return Err(Errno::EEXIST);
            }
            if flags & libc::XATTR_REPLACE != 0 && !listed {
                return Err(Errno::ENODATA);
            }
        }
        let b = self.backing_attr(&id, n.kind, name);
        let flags = match self.store.records() {
            Some(_) => 0,
            None => flags,
        };
        sys::set_xattr(n.fd.as_ref(), &b, &sealed, flags)?;
        if self.store.records().is_some() {
            let mac = self.store.xattrs.backing_mac(&id, name);
            self.change_record(ino, n.fd.as_ref(), |r| {
                if let Err(at) = r.xattrs.binary_search(&mac) {
                    r.xattrs.insert(at, mac);
                }
            })?;
        }
        self.set_known(ino, Known::Present);
        Ok(())
    }

    pub(super) fn removexattr(&self, ino: INodeNo, name: &OsStr) -> Result<(), Errno> {
        self.writable()?;
        let name = name.as_bytes();
        if !supported(name) {
            return Err(Errno::ENODATA);
        }
        if self.known(ino) == Known::Absent {
            return Err(Errno::ENODATA);
        }
        let n = self.xnode(ino)?;
        let id = self.xattr_id(ino, &n, false)?.ok_or(Errno::ENODATA)?;
        let b = self.backing_attr(&id, n.kind, name);
        if self.listed(ino, &id, name)?.is_some() {
            // Out of the record first: a crash then leaves an attribute nothing lists.
            let mac = self.store.xattrs.backing_mac(&id, name);
            self.change_record(ino, n.fd.as_ref(), |r| r.xattrs.retain(|m| *m != mac))?;
            return match sys::remove_xattr(n.fd.as_ref(), &b) {
                Err(e) if e == Errno::ENODATA => Ok(()),
                r => r,
            };
        }
        sys::remove_xattr(n.fd.as_ref(), &b)?;
        // Whether any is left is learnt again when it is next asked.
        self.set_known(ino, Known::Unknown);
        Ok(())
    }

    /// Truncate an open file. Cut to zero it starts afresh under a new file id, and its
    /// attributes, bound to the old one, are sealed again to the new.
    pub(super) fn truncate_keeping_xattrs(
        &self,
        ino: INodeNo,
        of: &super::OpenFile,
        size: u64,
    ) -> Result<(), Errno> {
        let old = of.file_id()?;
        let keep = match self.known(ino) {
            Known::Absent => Vec::new(),
            _ => self.opened_attrs(ino, &old)?,
        };
        of.truncate(&self.store, size)?;
        let new = of.file_id()?;
        if new == old || keep.is_empty() {
            return Ok(());
        }
        let n = self.xnode(ino)?;
        for (backing, _) in &keep {
            let _ = sys::remove_xattr(n.fd.as_ref(), backing);
        }
        for (_, (name, value)) in &keep {
            self.put_attr(ino, &n, name, value, 0)?;
        }
        Ok(())
    }

    /// Every attribute of ours on the inode, opened under `id`.
    fn opened_attrs(&self, ino: INodeNo, id: &[u8; 16]) -> Result<Vec<Opened>, Errno> {
        let n = self.xnode(ino)?;
        let mut out = Vec::new();
        for b in sys::list_xattrs(n.fd.as_ref())? {
            if !b.starts_with(prefix(n.kind)) {
                continue;
            }
            let sealed = sys::get_xattr(n.fd.as_ref(), &b)?;
            match self.store.xattrs.open(id, &sealed) {
                Ok(nv) => out.push((b, nv)),
                Err(e) => tracing::warn!("{}: attribute {b} dropped: {e}", self.label(ino.0)),
            }
        }
        Ok(out)
    }
}

/// getxattr and listxattr: a size query (size 0) gets the length, a buffer too small ERANGE.
pub(super) fn reply_xattr(r: Result<Vec<u8>, Errno>, size: u32, reply: fuser::ReplyXattr) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::ERANGE),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(e),
    }
}
