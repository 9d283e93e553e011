//! What Linux does to a file's privileges when someone who may not keep them writes it,
//! truncates it or gives it away. With FUSE_HANDLE_KILLPRIV_V2 the kernel leaves this to the
//! filesystem, and then shows what the filesystem did only once it learns the new mode.

use std::ffi::OsStr;
use std::os::fd::AsRawFd;

use fuser::{Errno, FileType, INodeNo};

use super::{sys, CofferFs};

/// Who changes the file: the request's user, group and process.
pub(super) struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

impl Caller {
    pub(super) fn of(req: &fuser::Request) -> Caller {
        Caller {
            uid: req.uid(),
            gid: req.gid(),
            pid: req.pid(),
        }
    }

    /// Whether the caller may keep a set-group-ID bit that its group cannot execute on: root
    /// (CAP_FSETID), or a member of group `gid` (by its primary or a supplementary group).
    fn keeps_sgid_of(&self, gid: u32) -> bool {
        self.uid == 0 || self.in_group(gid)
    }

    /// Whether the caller is of group `gid` (by its primary or a supplementary group).
    pub(super) fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || sys::supplementary_groups(self.pid).contains(&gid)
    }
}

impl CofferFs {
    /// Set-user-ID off (when `suid`), set-group-ID off when the group may execute or the
    /// caller is not of the file's group (as setattr_should_drop_sgid decides), and the file
    /// capability gone. Only regular files lose them.
    pub(super) fn kill_privs(&self, ino: INodeNo, suid: bool, who: &Caller) -> Result<(), Errno> {
        if self.store.records().is_some() {
            return self.kill_recorded_privs(ino, suid, who);
        }
        // An open file's own descriptor spares a lookup by name (tar's fchown).
        match self.open_file_of(ino) {
            Some(f) if suid => drop_suid(f.backing(), who)?,
            Some(_) => {}
            None => {
                let n = self.xnode(ino)?;
                if n.kind != FileType::RegularFile {
                    return Ok(());
                }
                if suid {
                    drop_suid(n.fd.as_ref(), who)?;
                }
            }
        }
        match self.removexattr(ino, OsStr::new("security.capability")) {
            Err(e) if e == Errno::ENODATA => Ok(()),
            r => r,
        }
    }
}

impl CofferFs {
    /// The same in format 3, on the inode's record (its mode, not the backing inode's), for
    /// every kind but a directory, as Linux's notify_change does for a chown.
    fn kill_recorded_privs(&self, ino: INodeNo, suid: bool, who: &Caller) -> Result<(), Errno> {
        use crate::format::inode::RecordKind;
        let rec = self.record(ino)?;
        if rec.kind == RecordKind::Dir {
            return Ok(());
        }
        let mode = dropped(rec.mode as u32, rec.gid, who);
        if suid && mode != rec.mode as u32 {
            let n = self.xnode(ino)?;
            self.change_record(ino, n.fd.as_ref(), |r| r.mode = mode as u16)?;
        }
        if rec.xattrs.is_empty() || rec.kind != RecordKind::File {
            return Ok(());
        }
        match self.removexattr(ino, OsStr::new("security.capability")) {
            Err(e) if e == Errno::ENODATA => Ok(()),
            r => r,
        }
    }
}

/// `mode` (12 bits) without set-user-ID, and without set-group-ID when the group may execute
/// or the caller is not of group `gid`.
fn dropped(mode: u32, gid: u32, who: &Caller) -> u32 {
    let mut m = mode & !libc::S_ISUID;
    if m & libc::S_ISGID != 0 && (m & libc::S_IXGRP != 0 || !who.keeps_sgid_of(gid)) {
        m &= !libc::S_ISGID;
    }
    m
}

fn drop_suid(fd: &impl AsRawFd, who: &Caller) -> Result<(), Errno> {
    let st = sys::stat_fd(fd)?;
    let old = st.st_mode & 0o7777;
    let mode = dropped(old, st.st_gid, who);
    if mode != old {
        sys::chmod_fd(fd, mode)?;
    }
    Ok(())
}
