//! A copy of a regular file that is the same file to the store: its header, file id and key,
//! its ciphertext and its attributes (bound to the file id) copied as they are, so that
//! writing the copy re-encrypts only the blocks written. `coffer backup` changes a file so:
//! the copy is written where the source changed and renamed over the original, which a
//! reader sees whole or not at all, and an rsync of the store moves only the changed blocks.
//!
//! Until the rename two backing files carry one file id; the rename then drops the
//! original's catalog record, which is the copy's too, so the caller records the copy again.
//! In format 3 the copy gets the original's record for its own (temporary) place, and the
//! rename carries it to the original's.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use fuser::{Errno, FileAttr, FileType, INodeNo};

use super::inodes::Known;
use super::{sys, CofferFs, OpenFile};
use crate::format::inode::InodeRecord;
use crate::format::xattr::{PREFIX_TRUSTED, PREFIX_USER};

impl CofferFs {
    /// Copy regular file `ino` to `name` in `parent` (which must not exist) and open the copy
    /// for writing; returns its attributes and handle. In format 3 its record names the place
    /// `to` in `parent` too, where the copy is renamed once written.
    pub(super) fn clone_file(
        &self,
        ino: INodeNo,
        (parent, name): (INodeNo, &OsStr),
        to: &OsStr,
    ) -> Result<(FileAttr, u64), Errno> {
        self.writable()?;
        let (sfd, kind) = self.node(ino)?;
        if kind != FileType::RegularFile {
            return Err(Errno::EINVAL);
        }
        let src = sys::reopen(&sfd, libc::O_RDONLY)?;
        let st = sys::stat_fd(&src)?;
        let stored = self.stored_name(parent, name)?;
        let (pfd, _) = self.node(parent)?;
        let entry = OsStr::new(stored.entry());
        // Format 3: the original's record, for the copy's own place and the one it goes to.
        let rec = match self.store.records() {
            Some(_) => Some(InodeRecord {
                places: vec![self.place_of(parent, name)?, self.place_of(parent, to)?],
                ..self.record(ino)?
            }),
            None => None,
        };
        self.put_sidecar(&pfd, &stored)?;
        let label = format!("{}/{}", self.label(parent.0), stored.entry());
        // Format 3: the copy is made unnamed, with its record, and named once whole.
        let (dst, tmp) = match &rec {
            Some(_) => sys::create_unnamed(&pfd, 0o600)?,
            None => (sys::create_at(&pfd, entry, 0o600)?, None),
        };
        let of = (|| {
            match &rec {
                Some(r) => self.put_record(&dst, r)?,
                None => {
                    self.chown_new(&dst, st.st_uid, st.st_gid);
                    sys::chmod_fd(&dst, st.st_mode & 0o7777)?;
                }
            }
            copy_data(&src, &dst, st.st_size as u64)?;
            copy_attrs(&src, &dst)?;
            let of = OpenFile::open(&self.store, dst, label, rec.as_ref().map(|r| r.id))?;
            if rec.is_some() {
                sys::name_new(of.backing(), tmp.as_deref(), &pfd, entry)?;
            }
            Ok(of)
        })();
        let of = match of {
            Ok(of) => Arc::new(of),
            Err(e) => {
                if rec.is_none() {
                    let _ = sys::unlink_at(&pfd, entry, 0);
                }
                if e != Errno::EEXIST {
                    self.drop_sidecar(&pfd, &stored);
                }
                return Err(e);
            }
        };
        self.opened_new(parent, entry, name, of, Known::Unknown, rec)
    }
}

/// The whole of `src` into `dst` in the kernel (a reflink where the filesystem has them).
fn copy_data(src: &File, dst: &File, len: u64) -> Result<(), Errno> {
    let mut done = 0u64;
    while done < len {
        let want = (len - done).min(1 << 30) as usize;
        // SAFETY: both descriptors are open; null offsets use and advance the file offsets.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                std::ptr::null_mut(),
                dst.as_raw_fd(),
                std::ptr::null_mut(),
                want,
                0,
            )
        };
        match n {
            n if n > 0 => done += n as u64,
            0 => return Err(Errno::EIO), // the original shrank under us
            _ => return Err(Errno::from(std::io::Error::last_os_error())),
        }
    }
    Ok(())
}

/// The backing attributes of coffer's own namespaces, as they are (sealed to the file id,
/// which the copy shares); not the record, which the copy has for its own place.
fn copy_attrs(src: &File, dst: &File) -> Result<(), Errno> {
    for name in sys::list_xattrs(src)? {
        if name.starts_with(PREFIX_USER) || name.starts_with(PREFIX_TRUSTED) {
            let v = sys::get_xattr(src, &name)?;
            sys::set_xattr(dst, &name, &v, 0)?;
        }
    }
    Ok(())
}
