//! The plain side of a backup or restore: a directory tree on this host, reached one
//! component at a time from a directory descriptor, never following a symlink (a source tree
//! may be changed under a running backup, and a restore target may hold someone's symlinks).

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::time::{SystemTime, UNIX_EPOCH};

fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn ok(r: libc::c_int) -> io::Result<()> {
    match r {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// `/proc/self/fd/N/name`: the entry `name` of directory `dir`, for the l*xattr calls, which
/// have no *at form (and do not follow the last component).
fn entry_path(dir: &impl AsRawFd, name: &OsStr) -> io::Result<CString> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.as_bytes());
    cstr(&p)
}

/// lstat of `name` in `dir`.
pub fn stat_at(dir: &impl AsRawFd, name: &OsStr) -> io::Result<libc::stat> {
    let n = cstr(name.as_bytes())?;
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: n is NUL-terminated; st is writable memory of the right size.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            n.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    ok(r)?;
    // SAFETY: fstatat returned 0, so it filled st.
    Ok(unsafe { st.assume_init() })
}

pub fn stat_fd(fd: &impl AsRawFd) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: st is writable memory of the right size.
    ok(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat returned 0, so it filled st.
    Ok(unsafe { st.assume_init() })
}

pub use crate::fs::time;

fn timespec(t: SystemTime) -> libc::timespec {
    let (sec, nsec) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos() as i64),
        Err(e) => {
            let d = e.duration();
            match d.subsec_nanos() {
                0 => (-(d.as_secs() as i64), 0),
                n => (-(d.as_secs() as i64) - 1, 1_000_000_000 - n as i64),
            }
        }
    };
    libc::timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

/// The names in an open directory ("." and ".." left out), in inode order: about the order
/// of their places on disk, so a walk in it reads a cold tree mostly forward, where the
/// directory's own order (a hash, on ext4) jumps about.
pub fn names(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    use std::os::unix::fs::DirEntryExt;
    let path = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let mut out = Vec::new();
    for e in std::fs::read_dir(path)? {
        let e = e?;
        out.push((e.ino(), e.file_name()));
    }
    out.sort_unstable_by_key(|e| e.0);
    Ok(out.into_iter().map(|(_, n)| n).collect())
}

/// A directory by the path given on the command line (symlinks in it are the caller's).
pub fn open_root(path: &std::path::Path) -> io::Result<OwnedFd> {
    crate::within::open_root(path)
}

pub fn open_dir_at(dir: &impl AsRawFd, name: &OsStr) -> io::Result<OwnedFd> {
    crate::within::open_dir_at(dir, name)
}

/// The regular file `name` in `dir` for reading, and its attributes: one openat that refuses
/// a symlink (O_NOFOLLOW) and cannot block on a FIFO put there since it was listed
/// (O_NONBLOCK), then an fstat that refuses anything but a regular file. O_NOATIME where the
/// kernel allows it (the file's owner, or root), so a backup does not move atimes.
pub fn open_file_at(dir: &impl AsRawFd, name: &OsStr) -> io::Result<(File, libc::stat)> {
    let n = cstr(name.as_bytes())?;
    let flags =
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    let open = |f: i32| {
        // SAFETY: n is NUL-terminated; the result is checked by the caller.
        unsafe { libc::openat(dir.as_raw_fd(), n.as_ptr(), f) }
    };
    let mut fd = open(flags | libc::O_NOATIME);
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
        fd = open(flags);
    }
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    let f = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let st = stat_fd(&f)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(io::Error::other("not a regular file any more"));
    }
    Ok((f, st))
}

pub fn readlink_at(dir: &impl AsRawFd, name: &OsStr) -> io::Result<Vec<u8>> {
    crate::within::readlink_at(dir, name)
}

/// Every extended attribute of `name` in `dir` (not following a symlink): ACLs come as
/// system.posix_acl_access and system.posix_acl_default.
pub fn xattrs_at(dir: &impl AsRawFd, name: &OsStr) -> io::Result<Vec<(OsString, Vec<u8>)>> {
    let p = entry_path(dir, name)?;
    let list = grow(|buf| {
        // SAFETY: p is NUL-terminated; buf is writable for its length.
        unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
    });
    let list = match list {
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(Vec::new()),
        r => r?,
    };
    let mut out = Vec::new();
    for n in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let cn = cstr(n)?;
        let v = grow(|buf| {
            // SAFETY: p and cn are NUL-terminated; buf is writable for its length.
            unsafe { libc::lgetxattr(p.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
        });
        match v {
            Ok(v) => out.push((OsString::from_vec(n.to_vec()), v)),
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => {} // removed meanwhile
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

/// Call `f` with a buffer until it fits (ERANGE: larger), up to 16 MiB.
fn grow(mut f: impl FnMut(&mut [u8]) -> isize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    loop {
        let r = f(&mut buf);
        if r >= 0 {
            buf.truncate(r as usize);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) || buf.len() >= 16 << 20 {
            return Err(e);
        }
        let len = buf.len();
        buf.resize(len * 4, 0);
    }
}

pub fn set_xattr_at(
    dir: &impl AsRawFd,
    name: &OsStr,
    attr: &OsStr,
    value: &[u8],
) -> io::Result<()> {
    let p = entry_path(dir, name)?;
    let a = cstr(attr.as_bytes())?;
    // SAFETY: p and a are NUL-terminated; value is readable for its length.
    ok(unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            a.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

pub fn mkdir_at(dir: &impl AsRawFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let n = cstr(name.as_bytes())?;
    // SAFETY: n is NUL-terminated.
    ok(unsafe { libc::mkdirat(dir.as_raw_fd(), n.as_ptr(), mode) })
}

/// A new regular file, created exclusively (nothing can be slipped in under its name).
pub fn create_at(dir: &impl AsRawFd, name: &OsStr) -> io::Result<File> {
    let n = cstr(name.as_bytes())?;
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: n is NUL-terminated; the result is checked.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), n.as_ptr(), flags, 0o600 as libc::c_uint) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

pub fn symlink_at(target: &[u8], dir: &impl AsRawFd, name: &OsStr) -> io::Result<()> {
    let (t, n) = (cstr(target)?, cstr(name.as_bytes())?);
    // SAFETY: t and n are NUL-terminated.
    ok(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), n.as_ptr()) })
}

pub fn mknod_at(dir: &impl AsRawFd, name: &OsStr, mode: u32, rdev: u64) -> io::Result<()> {
    let n = cstr(name.as_bytes())?;
    // SAFETY: n is NUL-terminated.
    ok(unsafe { libc::mknodat(dir.as_raw_fd(), n.as_ptr(), mode, rdev) })
}

/// Owner (when given) and mode (when given) of `name` in `dir`, never following it: as
/// restore sets them before the attributes (a chown drops security.capability).
pub fn owner_mode_at(
    dir: &impl AsRawFd,
    name: &OsStr,
    owner: Option<(u32, u32)>,
    perm: Option<u32>,
) -> io::Result<()> {
    let n = cstr(name.as_bytes())?;
    let d = dir.as_raw_fd();
    if let Some((uid, gid)) = owner {
        // SAFETY: n is NUL-terminated.
        ok(unsafe { libc::fchownat(d, n.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })?;
    }
    if let Some(perm) = perm {
        // Never through a symlink swapped in under the name: glibc refuses one (EOPNOTSUPP)
        // with AT_SYMLINK_NOFOLLOW.
        // SAFETY: as above.
        ok(unsafe { libc::fchmodat(d, n.as_ptr(), perm, libc::AT_SYMLINK_NOFOLLOW) })?;
    }
    Ok(())
}

/// Access and modification times of `name` in `dir`, never following it.
pub fn times_at(
    dir: &impl AsRawFd,
    name: &OsStr,
    atime: SystemTime,
    mtime: SystemTime,
) -> io::Result<()> {
    let n = cstr(name.as_bytes())?;
    let times = [timespec(atime), timespec(mtime)];
    // SAFETY: n is NUL-terminated; times is two timespecs.
    ok(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            n.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// Owner (when given), mode, attributes, then times of an open file, through its
/// descriptor: no lookup by name, in a directory other workers are filling.
pub fn set_meta_fd(
    f: &impl AsRawFd,
    owner: Option<(u32, u32)>,
    perm: u32,
    xattrs: &[(OsString, Vec<u8>)],
    atime: SystemTime,
    mtime: SystemTime,
) -> io::Result<()> {
    let fd = f.as_raw_fd();
    if let Some((uid, gid)) = owner {
        // SAFETY: fd is open for the call.
        ok(unsafe { libc::fchown(fd, uid, gid) })?;
    }
    // SAFETY: as above.
    ok(unsafe { libc::fchmod(fd, perm) })?;
    for (n, v) in xattrs {
        let n = cstr(n.as_bytes())?;
        // SAFETY: n is NUL-terminated; v is readable for its length.
        ok(unsafe { libc::fsetxattr(fd, n.as_ptr(), v.as_ptr().cast(), v.len(), 0) })?;
    }
    let times = [timespec(atime), timespec(mtime)];
    // SAFETY: times is two timespecs; fd is open.
    ok(unsafe { libc::futimens(fd, times.as_ptr()) })
}

pub fn rename_at(dir: &impl AsRawFd, from: &OsStr, to: &OsStr) -> io::Result<()> {
    let (f, t) = (cstr(from.as_bytes())?, cstr(to.as_bytes())?);
    let d = dir.as_raw_fd();
    // SAFETY: f and t are NUL-terminated.
    ok(unsafe { libc::renameat(d, f.as_ptr(), d, t.as_ptr()) })
}

pub fn unlink_at(dir: &impl AsRawFd, name: &OsStr, dir_too: bool) -> io::Result<()> {
    let n = cstr(name.as_bytes())?;
    let flags = if dir_too { libc::AT_REMOVEDIR } else { 0 };
    // SAFETY: n is NUL-terminated.
    ok(unsafe { libc::unlinkat(dir.as_raw_fd(), n.as_ptr(), flags) })
}

/// A hard link `to` in `to_dir` of `from` in `from_dir` (never following `from`).
pub fn link_at(
    from_dir: &impl AsRawFd,
    from: &OsStr,
    to_dir: &impl AsRawFd,
    to: &OsStr,
) -> io::Result<()> {
    let (f, t) = (cstr(from.as_bytes())?, cstr(to.as_bytes())?);
    // SAFETY: f and t are NUL-terminated.
    ok(unsafe {
        libc::linkat(
            from_dir.as_raw_fd(),
            f.as_ptr(),
            to_dir.as_raw_fd(),
            t.as_ptr(),
            0,
        )
    })
}
