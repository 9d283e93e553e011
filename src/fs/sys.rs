//! Thin, safe wrappers over the *at() system calls the filesystem needs. Every inode is held
//! as an O_PATH descriptor, so operations never depend on a path that a rename may change.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use fuser::Errno;

fn cstr(name: &OsStr) -> Result<CString, Errno> {
    CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)
}

fn last() -> Errno {
    Errno::from(std::io::Error::last_os_error())
}

/// "/proc/self/fd/N": reopens an O_PATH descriptor with real access modes.
pub fn proc_path(fd: &impl AsRawFd) -> CString {
    // A formatted integer never contains NUL.
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

pub fn stat_fd(fd: &impl AsRawFd) -> Result<libc::stat, Errno> {
    stat_at_raw(
        fd.as_raw_fd(),
        c"",
        libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
    )
}

pub fn stat_at(dir: &OwnedFd, name: &OsStr) -> Result<libc::stat, Errno> {
    stat_at_raw(dir.as_raw_fd(), &cstr(name)?, libc::AT_SYMLINK_NOFOLLOW)
}

fn stat_at_raw(dir: RawFd, name: &std::ffi::CStr, flags: i32) -> Result<libc::stat, Errno> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: name is NUL-terminated; st points to writable memory of the right size.
    let r = unsafe { libc::fstatat(dir, name.as_ptr(), st.as_mut_ptr(), flags) };
    if r != 0 {
        return Err(last());
    }
    // SAFETY: fstatat returned 0, so it filled st.
    Ok(unsafe { st.assume_init() })
}

/// O_PATH descriptor of `name` in `dir`, not following a final symlink.
pub fn open_path(dir: &OwnedFd, name: &OsStr) -> Result<OwnedFd, Errno> {
    let n = cstr(name)?;
    // SAFETY: n is NUL-terminated; the returned fd is checked and then owned.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            n.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(last());
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reopen an inode for I/O. O_NOATIME: the daemon's own reads of the ciphertext must not
/// move the atime that the plaintext file shows (`touch -a`, `rsync -aU` set it); where the
/// kernel refuses it (a daemon that does not own the backing file), the open goes on without.
pub fn reopen(fd: &impl AsRawFd, flags: i32) -> Result<File, Errno> {
    let p = proc_path(fd);
    // SAFETY: p is NUL-terminated; the returned fd is checked and then owned.
    let mut r = unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOATIME) };
    if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
        // SAFETY: as above.
        r = unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC) };
    }
    if r < 0 {
        return Err(last());
    }
    // SAFETY: r is a fresh descriptor owned by nobody else.
    Ok(unsafe { File::from_raw_fd(r) })
}

/// Create a new file exclusively in `dir`.
pub fn create_at(dir: &OwnedFd, name: &OsStr, mode: u32) -> Result<File, Errno> {
    let n = cstr(name)?;
    let flags = libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: n is NUL-terminated; the returned fd is checked and then owned.
    let r = unsafe { libc::openat(dir.as_raw_fd(), n.as_ptr(), flags, mode as libc::c_uint) };
    if r < 0 {
        return Err(last());
    }
    // SAFETY: r is a fresh descriptor owned by nobody else.
    Ok(unsafe { File::from_raw_fd(r) })
}

/// A new regular file in `dir` that no name shows yet, so that it appears only when it is
/// whole (its record and header written): an O_TMPFILE file, or where the backing filesystem
/// has none, a file under a temporary name (`.tmp-new-*`, which `fsck --repair` removes if a
/// crash leaves it). Returns it and its temporary name, if it has one; [`name_new`] names it.
pub fn create_unnamed(dir: &OwnedFd, mode: u32) -> Result<(File, Option<OsString>), Errno> {
    let flags = libc::O_TMPFILE | libc::O_RDWR | libc::O_CLOEXEC;
    // SAFETY: "." is NUL-terminated; the returned fd is checked and then owned.
    let r = unsafe { libc::openat(dir.as_raw_fd(), c".".as_ptr(), flags, mode as libc::c_uint) };
    if r >= 0 {
        // SAFETY: r is a fresh descriptor owned by nobody else.
        return Ok((unsafe { File::from_raw_fd(r) }, None));
    }
    match last() {
        e if e == Errno::EOPNOTSUPP || e == Errno::EISDIR || e == Errno::EINVAL => {
            let tmp = crate::format::temp_name(OsStr::new("new"));
            Ok((create_at(dir, &tmp, mode)?, Some(tmp)))
        }
        e => Err(e),
    }
}

/// Give a file from [`create_unnamed`] the name `name` in `dir`: EEXIST, and nothing replaced,
/// when the name is taken (the temporary name is then removed).
pub fn name_new(
    file: &File,
    tmp: Option<&OsStr>,
    dir: &OwnedFd,
    name: &OsStr,
) -> Result<(), Errno> {
    let r = match tmp {
        None => link_open(file, dir, name).or_else(|e| match e {
            // No CAP_DAC_READ_SEARCH for AT_EMPTY_PATH (a daemon that is not root).
            e if e == Errno::ENOENT || e == Errno::EPERM => link_at(file, dir, name),
            e => Err(e),
        }),
        Some(t) => rename_at(dir, t, dir, name, libc::RENAME_NOREPLACE),
    };
    if let (Err(_), Some(t)) = (&r, tmp) {
        let _ = unlink_at(dir, t, 0);
    }
    r
}

/// Write a small file in `dir` (long-name sidecars), replacing any old one: never through a
/// symlink, and never into a FIFO or device planted under its name (crate::within).
pub fn write_small_at(dir: &OwnedFd, name: &OsStr, bytes: &[u8]) -> Result<(), Errno> {
    use std::io::Write;
    let flags = libc::O_CREAT | libc::O_TRUNC | libc::O_WRONLY;
    let mut f = crate::within::open_at(dir, name, flags, 0o600).map_err(Errno::from)?;
    f.write_all(bytes).map_err(Errno::from)
}

/// A small file in `dir` (a directory IV, a long-name sidecar): a regular file of at most
/// `max` bytes, never a symlink, FIFO or device (crate::within).
pub fn read_small_at(dir: &OwnedFd, name: &OsStr, max: usize) -> Result<Vec<u8>, Errno> {
    crate::within::read_at(dir, name, max).map_err(Errno::from)
}

pub fn mkdir_at(dir: &OwnedFd, name: &OsStr, mode: u32) -> Result<(), Errno> {
    let n = cstr(name)?;
    // SAFETY: n is NUL-terminated.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), n.as_ptr(), mode as libc::mode_t) } != 0 {
        return Err(last());
    }
    Ok(())
}

pub fn mknod_at(dir: &OwnedFd, name: &OsStr, mode: u32, rdev: u32) -> Result<(), Errno> {
    let n = cstr(name)?;
    // SAFETY: n is NUL-terminated.
    if unsafe {
        libc::mknodat(
            dir.as_raw_fd(),
            n.as_ptr(),
            mode as libc::mode_t,
            rdev as libc::dev_t,
        )
    } != 0
    {
        return Err(last());
    }
    Ok(())
}

pub fn unlink_at(dir: &OwnedFd, name: &OsStr, flags: i32) -> Result<(), Errno> {
    let n = cstr(name)?;
    // SAFETY: n is NUL-terminated.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), n.as_ptr(), flags) } != 0 {
        return Err(last());
    }
    Ok(())
}

pub fn rename_at(
    dir: &OwnedFd,
    name: &OsStr,
    newdir: &OwnedFd,
    newname: &OsStr,
    flags: u32,
) -> Result<(), Errno> {
    let (a, b) = (cstr(name)?, cstr(newname)?);
    // SAFETY: both names are NUL-terminated.
    let r = unsafe {
        libc::renameat2(
            dir.as_raw_fd(),
            a.as_ptr(),
            newdir.as_raw_fd(),
            b.as_ptr(),
            flags,
        )
    };
    if r != 0 {
        return Err(last());
    }
    Ok(())
}

/// Link an open file (an O_TMPFILE one) under `newname` by its descriptor itself
/// (AT_EMPTY_PATH: a fifth of the cost of going through its /proc link, but it needs
/// CAP_DAC_READ_SEARCH).
fn link_open(file: &File, newdir: &OwnedFd, newname: &OsStr) -> Result<(), Errno> {
    let n = cstr(newname)?;
    // SAFETY: the empty path and n are NUL-terminated; both descriptors are open.
    let r = unsafe {
        libc::linkat(
            file.as_raw_fd(),
            c"".as_ptr(),
            newdir.as_raw_fd(),
            n.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if r != 0 {
        return Err(last());
    }
    Ok(())
}

/// Hard link an inode (held as O_PATH, or open) under a new name.
pub fn link_at(fd: &impl AsRawFd, newdir: &OwnedFd, newname: &OsStr) -> Result<(), Errno> {
    let (p, n) = (proc_path(fd), cstr(newname)?);
    // SAFETY: both paths are NUL-terminated. AT_SYMLINK_FOLLOW resolves the /proc magic link
    // to the inode itself (no CAP_DAC_READ_SEARCH needed, unlike AT_EMPTY_PATH).
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            p.as_ptr(),
            newdir.as_raw_fd(),
            n.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r != 0 {
        return Err(last());
    }
    Ok(())
}

pub fn symlink_at(target: &[u8], dir: &OwnedFd, name: &OsStr) -> Result<(), Errno> {
    let t = CString::new(target).map_err(|_| Errno::EINVAL)?;
    let n = cstr(name)?;
    // SAFETY: both strings are NUL-terminated.
    if unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), n.as_ptr()) } != 0 {
        return Err(last());
    }
    Ok(())
}

pub fn readlink_fd(fd: &OwnedFd) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; 8192];
    // SAFETY: buf is writable for buf.len() bytes; an empty path reads the O_PATH fd's link.
    let r = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if r < 0 {
        return Err(last());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

pub fn chmod_fd(fd: &impl AsRawFd, mode: u32) -> Result<(), Errno> {
    let p = proc_path(fd);
    // SAFETY: p is NUL-terminated.
    if unsafe { libc::chmod(p.as_ptr(), mode as libc::mode_t) } != 0 {
        return Err(last());
    }
    Ok(())
}

pub fn chown_fd(fd: &impl AsRawFd, uid: Option<u32>, gid: Option<u32>) -> Result<(), Errno> {
    let u = uid.unwrap_or(u32::MAX);
    let g = gid.unwrap_or(u32::MAX);
    // SAFETY: an empty path with AT_EMPTY_PATH acts on the fd itself (symlinks included).
    let r = unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            u,
            g,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(last());
    }
    Ok(())
}

pub fn utimens(
    dir: RawFd,
    path: &std::ffi::CStr,
    times: &[libc::timespec; 2],
    flags: i32,
) -> Result<(), Errno> {
    // SAFETY: path is NUL-terminated and times points to two timespecs.
    if unsafe { libc::utimensat(dir, path.as_ptr(), times.as_ptr(), flags) } != 0 {
        return Err(last());
    }
    Ok(())
}

pub fn statvfs_fd(fd: &OwnedFd) -> Result<libc::statvfs, Errno> {
    let p = proc_path(fd);
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: p is NUL-terminated; st is writable memory of the right size.
    if unsafe { libc::statvfs(p.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(last());
    }
    // SAFETY: statvfs returned 0, so it filled st.
    Ok(unsafe { st.assume_init() })
}

pub fn name_cstr(name: &OsStr) -> Result<CString, Errno> {
    cstr(name)
}

/// The errno a caller of fsync sees when the catalog could not be made durable: a full disk
/// stays ENOSPC (and a quota EDQUOT) all the way up; anything else is EIO.
pub fn commit_errno(f: crate::catalog::CommitFailure) -> Errno {
    use crate::catalog::CommitFailure;
    match f {
        CommitFailure::Full => Errno::ENOSPC,
        CommitFailure::Quota => Errno::EDQUOT,
        CommitFailure::Failed | CommitFailure::Stopped => Errno::EIO,
    }
}

/// An extended attribute of the inode `fd` refers to (any kind of descriptor, O_PATH included:
/// through /proc/self/fd the call reaches the inode itself, a symlink too, never its target).
pub fn get_xattr(fd: &impl AsRawFd, name: &str) -> Result<Vec<u8>, Errno> {
    crate::within::xattr_fd(fd, name, crate::format::xattr::SEALED_MAX)
        .map_err(Errno::from)?
        .ok_or(Errno::ENODATA)
}

/// Set an extended attribute (`flags`: XATTR_CREATE, XATTR_REPLACE or 0).
pub fn set_xattr(fd: &impl AsRawFd, name: &str, value: &[u8], flags: i32) -> Result<(), Errno> {
    crate::within::set_xattr_fd(fd, name, value, flags).map_err(Errno::from)
}

pub fn remove_xattr(fd: &impl AsRawFd, name: &str) -> Result<(), Errno> {
    let p = proc_path(fd);
    let n = CString::new(name).map_err(|_| Errno::EINVAL)?;
    // SAFETY: p and n are NUL-terminated.
    if unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) } != 0 {
        return Err(last());
    }
    Ok(())
}

/// The names of the inode's extended attributes.
pub fn list_xattrs(fd: &impl AsRawFd) -> Result<Vec<String>, Errno> {
    crate::within::xattr_names(fd).map_err(Errno::from)
}

/// The supplementary groups of process `pid` (its Groups: line in /proc), or none if it is
/// gone or cannot be read.
pub fn supplementary_groups(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

/// access(2) of the file `fd` (an O_PATH descriptor) for this process, as faccessat2 with
/// AT_EMPTY_PATH answers it.
pub fn access_fd(fd: &impl AsRawFd, mask: i32) -> Result<(), Errno> {
    // SAFETY: the path is a NUL-terminated empty string; fd is open for the call.
    let r = unsafe { libc::faccessat(fd.as_raw_fd(), c"".as_ptr(), mask, libc::AT_EMPTY_PATH) };
    match r {
        0 => Ok(()),
        _ => Err(Errno::from(std::io::Error::last_os_error())),
    }
}
