//! What a Linux filesystem does around POSIX ACLs: a new inode inherits its directory's
//! default ACL, chmod and an access ACL keep each other in step (in format 3 through the
//! inode's record, which holds its mode), and an ACL that says no more than the mode bits is
//! not kept (as ext4 does).

use std::ffi::OsStr;

use fuser::{Errno, FileType, INodeNo};

use super::inodes::Known;
use super::xattr::XNode;
use super::{lock, sys, CofferFs};
use crate::format::acl::{self, Acl};

impl CofferFs {
    /// An access ACL sets the mode's permission bits too; one that says no more than the mode
    /// is not kept (as ext4 does).
    pub(super) fn set_access_acl(
        &self,
        ino: INodeNo,
        n: &XNode,
        acl: &Acl,
        flags: i32,
    ) -> Result<(), Errno> {
        if n.kind != FileType::Symlink {
            match self.store.records() {
                Some(_) => {
                    let bits = acl.mode_bits() as u16;
                    self.change_record(ino, n.fd.as_ref(), |r| r.mode = (r.mode & 0o7000) | bits)?;
                }
                None => {
                    let st = sys::stat_fd(n.fd.as_ref())?;
                    let mode = (st.st_mode & 0o7000) | acl.mode_bits();
                    sys::chmod_fd(n.fd.as_ref(), mode)?;
                }
            }
        }
        if !acl.is_minimal() {
            return self.put_attr(ino, n, acl::ACCESS.as_bytes(), &acl.encode(), flags);
        }
        match self.removexattr(ino, OsStr::new(acl::ACCESS)) {
            Err(e) if e == Errno::ENODATA => Ok(()),
            r => r,
        }
    }

    /// After chmod: an access ACL's owner, group-class and other entries follow the new mode.
    /// A file without any attribute of ours costs one listxattr.
    pub(super) fn acl_follow_chmod(&self, ino: INodeNo, mode: u32) -> Result<(), Errno> {
        if self.known(ino) == Known::Absent {
            return Ok(());
        }
        let n = self.xnode(ino)?;
        if n.kind == FileType::Symlink || !self.has_attrs(ino, &n)? {
            return Ok(());
        }
        let access = OsStr::new(acl::ACCESS);
        let mut acl = match self.getxattr(ino, access) {
            Ok(v) => Acl::parse(&v).map_err(|_| Errno::EIO)?,
            Err(e) if e == Errno::ENODATA => return Ok(()),
            Err(e) => return Err(e),
        };
        acl.chmod(mode);
        self.put_attr(ino, &n, acl::ACCESS.as_bytes(), &acl.encode(), 0)
    }

    /// The default ACL of directory `parent`, if it has one: a new inode in it inherits it.
    pub(super) fn default_acl(&self, parent: INodeNo) -> Result<Option<Acl>, Errno> {
        let cached = lock(&self.inodes)?
            .get(&parent.0)
            .and_then(|n| n.default_acl.clone());
        if let Some(d) = cached {
            return Ok(d);
        }
        let d = match self.getxattr(parent, OsStr::new(acl::DEFAULT)) {
            Ok(v) => Some(Acl::parse(&v).map_err(|_| Errno::EIO)?),
            Err(e) if e == Errno::ENODATA => None,
            Err(e) => return Err(e),
        };
        if let Some(n) = lock(&self.inodes)?.get_mut(&parent.0) {
            n.default_acl = Some(d.clone());
        }
        Ok(d)
    }

    /// A new inode's ACLs from its directory's default ACL: its access ACL (the mode has been
    /// limited by it already) and, for a directory, the default ACL itself.
    pub(super) fn inherit_acls(
        &self,
        ino: INodeNo,
        default: &Acl,
        access: Option<&Acl>,
    ) -> Result<(), Errno> {
        let n = self.xnode(ino)?;
        if let Some(a) = access {
            self.put_attr(ino, &n, acl::ACCESS.as_bytes(), &a.encode(), 0)?;
        }
        if n.kind == FileType::Directory {
            self.put_attr(ino, &n, acl::DEFAULT.as_bytes(), &default.encode(), 0)?;
        }
        Ok(())
    }

    /// The mode a new inode in `parent` is made with, and what it inherits: without a default
    /// ACL in the directory the umask applies; with one, the ACL limits the mode instead.
    pub(super) fn creation(
        &self,
        parent: INodeNo,
        mode: u32,
        umask: u32,
    ) -> Result<Creation, Errno> {
        Ok(match self.default_acl(parent)? {
            None => Creation {
                mode: mode & !(umask & 0o777),
                inherit: None,
            },
            Some(d) => {
                let (access, mode) = d.inherit(mode);
                Creation {
                    mode,
                    inherit: Some((d, access)),
                }
            }
        })
    }

    /// Give a new inode the ACLs it inherits. Its mode is already limited by them, so one that
    /// cannot be set leaves it with no more access than the ACL would give: logged, not fatal.
    pub(super) fn created(&self, ino: INodeNo, c: &Creation) {
        if let Some((d, access)) = &c.inherit {
            if let Err(e) = self.inherit_acls(ino, d, access.as_ref()) {
                tracing::warn!("{}: inherited ACL not set: {e:?}", self.label(ino.0));
            }
        }
    }
}

/// How a new inode is made: its mode, and the (default, access) ACLs it inherits.
pub(super) struct Creation {
    pub mode: u32,
    inherit: Option<(Acl, Option<Acl>)>,
}
