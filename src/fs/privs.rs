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
        self.uid == 0 || self.gid == gid || sys::supplementary_groups(self.pid).contains(&gid)
    }
}

impl CofferFs {
    /// Set-user-ID off (when `suid`), set-group-ID off when the group may execute or the
    /// caller is not of the file's group (as setattr_should_drop_sgid decides), and the file
    /// capability gone. Only regular files lose them.
    pub(super) fn kill_privs(&self, ino: INodeNo, suid: bool, who: &Caller) -> Result<(), Errno> {
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

fn drop_suid(fd: &impl AsRawFd, who: &Caller) -> Result<(), Errno> {
    let st = sys::stat_fd(fd)?;
    let old = st.st_mode & 0o7777;
    let mut mode = old & !libc::S_ISUID;
    if mode & libc::S_ISGID != 0 && (mode & libc::S_IXGRP != 0 || !who.keeps_sgid_of(st.st_gid)) {
        mode &= !libc::S_ISGID;
    }
    if mode != old {
        sys::chmod_fd(fd, mode)?;
    }
    Ok(())
}
