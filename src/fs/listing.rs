//! Listing a directory: its entries' plaintext names (opendir, readdir) and, for
//! readdirplus, their attributes, each entry looked up as a lookup would (in format 3 its
//! record opened at its place). An entry whose name fails authentication is left out and
//! logged; one whose record does not hold is left out of readdirplus and reads as EIO.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirEntryExt;
use std::sync::Arc;

use fuser::{Errno, FileType, INodeNo};

use super::{lock, sys, CofferFs, DirEntry, Handle};
use crate::format::{classify, SIDECAR_MAX};

impl CofferFs {
    pub(super) fn opendir(&self, ino: INodeNo) -> Result<u64, Errno> {
        let (entries, _) = self.list_dir(ino)?;
        self.new_handle(Handle::Dir(Arc::new(entries)))
    }

    /// Directory `ino`'s entries ("." and ".." first), and how many were left out because
    /// their names fail authentication or are unsafe (each logged).
    pub(super) fn list_dir(&self, ino: INodeNo) -> Result<(Vec<DirEntry>, usize), Errno> {
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
        let mut refused = 0;
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
                Err(e) => {
                    refused += 1;
                    tracing::warn!(
                        "{}: entry {:?} has a name that fails authentication or is unsafe ({e}); skipped",
                        self.label(ino.0),
                        cname
                    )
                }
            }
        }
        Ok((entries, refused))
    }

    pub(super) fn dir_entries(&self, fh: u64) -> Result<Arc<Vec<DirEntry>>, Errno> {
        match lock(&self.handles)?.get(&fh) {
            Some(Handle::Dir(d)) => Ok(d.clone()),
            _ => Err(Errno::EBADF),
        }
    }

    /// readdirplus: each entry with its attributes, a lookup counted for each the kernel keeps.
    pub(super) fn list_plus(
        &self,
        ino: INodeNo,
        fh: u64,
        offset: u64,
        mut reply: fuser::ReplyDirectoryPlus,
    ) {
        let entries = match self.dir_entries(fh) {
            Ok(e) => e,
            Err(e) => return reply.error(e),
        };
        for (i, e) in entries.iter().enumerate().skip(offset as usize) {
            let next = (i + 1) as u64;
            if e.stored.is_empty() {
                // "." and "..": the kernel links no dentry for them and counts no lookup.
                let attr = match self.getattr(INodeNo(e.ino), None) {
                    Ok(a) => a,
                    Err(_) => continue,
                };
                if reply.add(
                    INodeNo(e.ino),
                    next,
                    &e.name,
                    &self.ttl,
                    &attr,
                    fuser::Generation(0),
                ) {
                    break;
                }
                continue;
            }
            // An entry gone since opendir is left out, as readdir would list a stale name.
            let Ok(attr) = self.remember(ino, &e.stored, &e.name) else {
                continue;
            };
            if reply.add(
                attr.ino,
                next,
                &e.name,
                &self.ttl,
                &attr,
                fuser::Generation(0),
            ) {
                // Did not fit: the kernel never saw it, so the lookup is not counted.
                self.forget(attr.ino.0, 1);
                break;
            }
        }
        reply.ok();
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
