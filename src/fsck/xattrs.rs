//! fsck's check of extended attributes: every attribute of ours on an inode must open under
//! that inode's identity (a file's id, a directory's IV, a symlink's or special file's id
//! attribute) and under its own name; one moved from another inode, renamed or altered is
//! reported. Nothing is repaired: an attribute is the user's, and fsck does not guess which.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::Walk;
use crate::format::xattr::{ID_ATTR, PREFIX_TRUSTED, PREFIX_USER, SEALED_MAX};

fn cpath(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// The attribute names of `p` itself (a symlink's own, never its target's).
pub(super) fn list(p: &Path) -> std::io::Result<Vec<String>> {
    let c = cpath(p)?;
    let mut buf = vec![0u8; 64 << 10];
    // SAFETY: c is NUL-terminated; buf is writable for buf.len() bytes.
    let r = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(buf[..r as usize]
        .split(|b| *b == 0)
        .filter_map(|s| String::from_utf8(s.to_vec()).ok())
        .filter(|s| !s.is_empty())
        .collect())
}

/// Attribute `name` of `p` itself (never a symlink's target): a small buffer first, since
/// most values (an inode record above all) are well under 512 bytes.
pub(super) fn get(p: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    let (c, n) = (cpath(p)?, CString::new(name)?);
    let mut buf = vec![0u8; 512];
    loop {
        // SAFETY: c and n are NUL-terminated; buf is writable for buf.len() bytes.
        let r =
            unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            buf.truncate(r as usize);
            return Ok(buf);
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) || buf.len() >= SEALED_MAX {
            return Err(e);
        }
        buf.resize(SEALED_MAX, 0);
    }
}

/// Remove attribute `name` of `p` itself.
pub(super) fn remove(p: &Path, name: &str) -> std::io::Result<()> {
    let (c, n) = (cpath(p)?, CString::new(name)?);
    // SAFETY: c and n are NUL-terminated.
    if unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl Walk<'_> {
    /// Check the attributes of a regular file or directory known by `id`.
    pub(super) fn attrs(&mut self, path: &Path, crel: &Path, plain: &str, id: &[u8; 16]) {
        self.attrs_with(path, crel, plain, Some(*id), PREFIX_USER);
    }

    /// Check the attributes of a symlink or special file (known by its id attribute).
    pub(super) fn special_attrs(&mut self, path: &Path, crel: &Path, plain: &str) {
        let id = match get(path, ID_ATTR) {
            Ok(v) => match <[u8; 16]>::try_from(v.as_slice()) {
                Ok(id) => Some(id),
                Err(_) => return self.problem(crel, plain, "its attribute id is malformed"),
            },
            Err(_) => None,
        };
        self.attrs_with(path, crel, plain, id, PREFIX_TRUSTED);
    }

    fn attrs_with(
        &mut self,
        path: &Path,
        crel: &Path,
        plain: &str,
        id: Option<[u8; 16]>,
        prefix: &str,
    ) {
        let names = match list(path) {
            Ok(n) => n,
            Err(e) => return self.problem(crel, plain, format!("cannot list its attributes: {e}")),
        };
        for b in names.iter().filter(|n| n.starts_with(prefix)) {
            let Some(id) = id else {
                self.problem(crel, plain, "an attribute without the id it is bound to");
                continue;
            };
            let opened = get(path, b)
                .map_err(|e| e.to_string())
                .and_then(|sealed| {
                    self.store
                        .xattrs
                        .open(&id, &sealed)
                        .map_err(|e| e.to_string())
                })
                .and_then(|(name, _)| {
                    let want = self.store.xattrs.backing_name(&id, &name);
                    match b[prefix.len()..] == want {
                        true => Ok(()),
                        false => {
                            Err("extended attribute sits under another attribute's name".into())
                        }
                    }
                });
            match opened {
                Ok(()) => self.report.xattrs += 1,
                Err(why) => self.problem(crel, plain, why),
            }
        }
    }
}
