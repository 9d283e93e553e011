//! The inode table.
//!
//! A FUSE inode number is its backing file's inode number, so numbers survive remounts and
//! hard links share one. The table does not hold a descriptor per inode: the kernel may keep
//! millions of inodes cached, far more than the descriptor limit (20,000 on the reference
//! machine, and root could not raise it). Instead each inode remembers the names it is known
//! by, as (parent inode, ciphertext entry), and is opened on demand as an O_PATH descriptor
//! relative to its parent, checked against its inode number. Directories, which have one name
//! and are the parents of everything, cache their descriptor up to a budget, so resolving a
//! path rarely walks more than one step. An open file keeps its own descriptor (OpenFile), so
//! it still works after its last name is gone.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use fuser::{Errno, FileAttr, FileType, INodeNo};

use super::{kind_of, lock, sys, CofferFs, OpenFile};
use crate::format::acl::Acl;
use crate::format::inode::InodeRecord;
use crate::format::DIRIV_LEN;

pub(super) struct Inode {
    pub kind: FileType,
    pub nlookup: u64,
    /// The names it is known by: (parent inode, ciphertext entry). A directory has one.
    pub names: Vec<(u64, OsString)>,
    /// Cached O_PATH descriptor: the root always, other directories within the budget.
    pub fd: Option<Arc<OwnedFd>>,
    pub diriv: Option<[u8; DIRIV_LEN]>,
    pub open: Weak<OpenFile>,
    /// Whether the inode has attributes of ours: the kernel asks for `security.capability`
    /// at every file's first write and at every chown, and most inodes have none.
    pub xattrs: Known,
    /// A directory's default ACL, once read (None inside: it has none).
    pub default_acl: Option<Option<Acl>>,
    /// Its sealed record (format 3), opened at one of its names: what its type, mode, owner,
    /// device, identity, names and attributes are. The backing inode's own say nothing.
    pub rec: Option<InodeRecord>,
}

/// What this mount knows of something about an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Known {
    Unknown,
    Absent,
    Present,
}

impl Inode {
    pub fn root(fd: OwnedFd, rec: Option<InodeRecord>) -> Inode {
        Inode {
            kind: FileType::Directory,
            nlookup: u64::MAX / 2,
            names: Vec::new(),
            fd: Some(Arc::new(fd)),
            diriv: rec.as_ref().map(|r| r.id),
            open: Weak::new(),
            xattrs: Known::Unknown,
            default_acl: None,
            rec,
        }
    }
}

/// How many directory descriptors to cache: a quarter of the soft limit, at most 8192.
pub(super) fn dir_fd_budget() -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: r is a valid rlimit for getrlimit to fill.
    let cur = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 {
        r.rlim_cur
    } else {
        1024
    };
    (cur / 4).clamp(64, 8192)
}

impl CofferFs {
    /// An O_PATH descriptor of inode `ino`, and its kind.
    pub(super) fn node(&self, ino: INodeNo) -> Result<(Arc<OwnedFd>, FileType), Errno> {
        let (kind, names) = {
            let t = lock(&self.inodes)?;
            let n = t.get(&ino.0).ok_or(Errno::ESTALE)?;
            if let Some(fd) = &n.fd {
                return Ok((fd.clone(), n.kind));
            }
            (n.kind, n.names.clone())
        };
        for (parent, entry) in names {
            let Ok((pfd, _)) = self.node(INodeNo(parent)) else {
                continue;
            };
            let Ok(fd) = sys::open_path(&pfd, &entry) else {
                continue;
            };
            match sys::stat_fd(&fd) {
                Ok(st) if self.to_fuse(st.st_ino) == ino.0 => {}
                _ => continue, // the name now belongs to another file
            }
            let fd = Arc::new(fd);
            if kind == FileType::Directory
                && self.dir_fds.load(Ordering::Relaxed) < self.dir_fd_budget
            {
                if let Some(n) = lock(&self.inodes)?.get_mut(&ino.0) {
                    if n.fd.is_none() {
                        n.fd = Some(fd.clone());
                        self.dir_fds.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            return Ok((fd, kind));
        }
        Err(Errno::ESTALE)
    }

    /// The backing file's attributes without opening it: a directory through its cached
    /// descriptor, anything else by fstatat on a name it is known by, checked against its
    /// inode number. One system call where `node` and fstat take three.
    pub(super) fn stat_ino(&self, ino: INodeNo) -> Result<libc::stat, Errno> {
        let names = {
            let t = lock(&self.inodes)?;
            let n = t.get(&ino.0).ok_or(Errno::ESTALE)?;
            if let Some(fd) = &n.fd {
                return sys::stat_fd(&**fd);
            }
            n.names.clone()
        };
        for (parent, entry) in names {
            let Ok((pfd, _)) = self.node(INodeNo(parent)) else {
                continue;
            };
            match sys::stat_at(&pfd, &entry) {
                Ok(st) if self.to_fuse(st.st_ino) == ino.0 => return Ok(st),
                _ => continue, // gone, or the name now belongs to another file
            }
        }
        Err(Errno::ESTALE)
    }

    /// Record one more kernel reference to `entry` in `parent` (plaintext `name`) and return
    /// its attributes. In format 3 its record must open at this place, unless this name of
    /// it is already known here.
    pub(super) fn remember(
        &self,
        parent: INodeNo,
        entry: &OsStr,
        name: &OsStr,
    ) -> Result<FileAttr, Errno> {
        self.remember_as(parent, entry, name, None)
    }

    /// The same for an inode this mount has just made, whose record is `made` (no need to
    /// read back what was just written).
    pub(super) fn remember_as(
        &self,
        parent: INodeNo,
        entry: &OsStr,
        name: &OsStr,
        made: Option<InodeRecord>,
    ) -> Result<FileAttr, Errno> {
        let (pfd, _) = self.node(parent)?;
        let st = sys::stat_at(&pfd, entry)?;
        let ino = self.to_fuse(st.st_ino);
        let at = (parent.0, entry.to_os_string());
        let rec = match (made, self.store.records()) {
            (_, None) => None,
            (Some(r), Some(_)) => Some(r),
            (None, Some(_)) => {
                let known = lock(&self.inodes)?
                    .get(&ino)
                    .filter(|n| n.names.contains(&at))
                    .and_then(|n| n.rec.clone());
                match known {
                    Some(r) => Some(r),
                    None => Some(self.load_record(&pfd, entry, parent, name, &st)?),
                }
            }
        };
        let kind = kind_of(st.st_mode);
        let (open, rec) = {
            let mut t = lock(&self.inodes)?;
            let n = t.entry(ino).or_insert_with(|| Inode {
                kind,
                nlookup: 0,
                names: Vec::new(),
                fd: None,
                diriv: None,
                open: Weak::new(),
                xattrs: Known::Unknown,
                default_acl: None,
                rec: None,
            });
            n.nlookup += 1;
            if kind == FileType::Directory {
                n.names = vec![at];
            } else if !n.names.contains(&at) {
                n.names.push(at);
            }
            if let Some(r) = rec {
                if kind == FileType::Directory {
                    n.diriv = Some(r.id);
                }
                n.rec = Some(r);
            }
            (n.open.upgrade(), n.rec.clone())
        };
        Ok(self.attr_with(ino, &st, open.as_deref(), rec.as_ref()))
    }

    pub(super) fn forget(&self, ino: u64, count: u64) {
        if let Ok(mut t) = self.inodes.lock() {
            if let Some(n) = t.get_mut(&ino) {
                n.nlookup = n.nlookup.saturating_sub(count);
                if n.nlookup == 0 && ino != 1 {
                    if let Some(n) = t.remove(&ino) {
                        if n.fd.is_some() {
                            self.dir_fds.fetch_sub(1, Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    }

    /// The inode number that `entry` in `parent` names now, if any.
    pub(super) fn ino_at(&self, pfd: &OwnedFd, entry: &OsStr) -> Option<u64> {
        sys::stat_at(pfd, entry)
            .ok()
            .map(|st| self.to_fuse(st.st_ino))
    }

    /// `ino` lost the name (parent, entry): unlinked, or renamed away, or replaced.
    pub(super) fn drop_name(&self, ino: u64, parent: INodeNo, entry: &OsStr) {
        if let Ok(mut t) = self.inodes.lock() {
            if let Some(n) = t.get_mut(&ino) {
                n.names.retain(|(p, e)| !(*p == parent.0 && e == entry));
            }
        }
    }

    /// `ino` is now known as (parent, entry) too.
    pub(super) fn add_name(&self, ino: u64, parent: INodeNo, entry: &OsStr) {
        if let Ok(mut t) = self.inodes.lock() {
            if let Some(n) = t.get_mut(&ino) {
                let name = (parent.0, entry.to_os_string());
                if n.kind == FileType::Directory {
                    n.names = vec![name];
                } else if !n.names.contains(&name) {
                    n.names.push(name);
                }
            }
        }
    }

    /// (parent, entry) of an inode's first known name.
    pub(super) fn first_name(&self, ino: u64) -> Option<(u64, OsString)> {
        self.inodes.lock().ok()?.get(&ino)?.names.first().cloned()
    }

    /// The ciphertext path of an inode relative to the store, for log lines.
    pub(super) fn label(&self, ino: u64) -> String {
        let mut parts = Vec::new();
        let mut cur = ino;
        for _ in 0..4096 {
            if cur == 1 {
                parts.push(OsString::from(crate::store::DATA));
                parts.reverse();
                let p: std::path::PathBuf = parts.iter().collect();
                return p.display().to_string();
            }
            match self.first_name(cur) {
                Some((parent, entry)) => {
                    parts.push(entry);
                    cur = parent;
                }
                None => break,
            }
        }
        format!("inode {ino}")
    }
}
