//! What an interrupted operation leaves in a backing directory, removed for a run after a
//! holder that was killed (`coffer backup`'s in-process tree), as `fsck --repair` does.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;

use fuser::{Errno, INodeNo};

use super::{sys, CofferFs};

fn io(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e.code())
}

impl CofferFs {
    /// Remove what an interrupted operation left in directory `dir`'s backing directory
    /// (`.tmp-*`: a mkdir's directory before its rename, an atomic write's file), as
    /// `fsck --repair` does; for a run after a holder that was killed. Never follows a
    /// symlink, and leaves a directory that holds more than files. Returns how many went.
    pub(super) fn remove_leftovers(&self, dir: INodeNo) -> io::Result<u64> {
        use crate::format::{classify, Entry};
        use std::os::fd::AsRawFd;
        let (fd, _) = self.node(dir).map_err(io)?;
        let names = |d: &std::os::fd::OwnedFd| -> io::Result<Vec<OsString>> {
            let listing = std::fs::read_dir(format!("/proc/self/fd/{}", d.as_raw_fd()))?;
            listing.map(|e| e.map(|e| e.file_name())).collect()
        };
        let mut n = 0;
        for name in names(&fd)? {
            if classify(name.as_bytes()) != Entry::Temporary {
                continue;
            }
            let st = sys::stat_at(&fd, &name).map_err(io)?;
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                let sub = crate::within::open_dir_at(&*fd, &name)?;
                for inner in names(&sub)? {
                    sys::unlink_at(&sub, &inner, 0).map_err(io)?;
                }
                sys::unlink_at(&fd, &name, libc::AT_REMOVEDIR).map_err(io)?;
            } else {
                sys::unlink_at(&fd, &name, 0).map_err(io)?;
            }
            n += 1;
        }
        Ok(n)
    }
}
