//! Extended attributes of the store's inodes (an inode record, a sealed attribute), read and
//! set without following a symlink: by directory and name with the kernel's getxattrat and
//! setxattrat (Linux 6.13), which cost half what a walk through /proc/self/fd does (a lookup
//! reads a record every time), else through "/proc/self/fd/DIR/NAME"; and by descriptor,
//! fsetxattr on an open file, else through the /proc link of an O_PATH descriptor.

use std::ffi::{CString, OsStr};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicBool, Ordering};

/// The kernel lacks getxattrat and setxattrat (before Linux 6.13): go through /proc.
static NO_AT_CALLS: AtomicBool = AtomicBool::new(false);
const SYS_SETXATTRAT: libc::c_long = 463;
const SYS_GETXATTRAT: libc::c_long = 464;

/// The kernel's `struct xattr_args`.
#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

fn cstring(b: &[u8]) -> std::io::Result<CString> {
    CString::new(b).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

/// "/proc/self/fd/N", then "/NAME" when a name is given: the inode the descriptor refers to
/// (O_PATH included), or the entry NAME of directory N.
fn proc_path(fd: &impl AsRawFd, name: Option<&OsStr>) -> std::io::Result<CString> {
    let mut p = format!("/proc/self/fd/{}", fd.as_raw_fd()).into_bytes();
    if let Some(n) = name {
        p.push(b'/');
        p.extend_from_slice(n.as_bytes());
    }
    cstring(&p)
}

/// getxattrat or setxattrat (`nr`) of attribute `attr` of entry `name` of `dir`, never
/// following it, with the value at `value` of `size` bytes; None when the kernel has no such
/// call (and then it is never tried again).
fn at_call(
    nr: libc::c_long,
    (dir, name): (&impl AsRawFd, &CString),
    attr: &CString,
    (value, size): (*mut u8, usize),
) -> Option<isize> {
    if NO_AT_CALLS.load(Ordering::Relaxed) {
        return None;
    }
    let args = XattrArgs {
        value: value as u64,
        size: size as u32,
        flags: 0,
    };
    // SAFETY: name and attr are NUL-terminated; args points at `size` bytes the caller
    // keeps valid (writable for a get) for the call.
    let r = unsafe {
        libc::syscall(
            nr,
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
            attr.as_ptr(),
            &args as *const XattrArgs,
            std::mem::size_of::<XattrArgs>(),
        )
    };
    if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        NO_AT_CALLS.store(true, Ordering::Relaxed);
        return None;
    }
    Some(r as isize)
}

/// A value of at most `cap` bytes through `get` (the value's length, or -1 and errno), from
/// a small buffer up; None when the inode has no such attribute.
fn read_value(
    get: &dyn Fn(&mut [u8]) -> Option<isize>,
    cap: usize,
) -> Option<std::io::Result<Option<Vec<u8>>>> {
    let mut buf = vec![0u8; 256.min(cap)];
    loop {
        let r = get(&mut buf)?;
        if r >= 0 {
            buf.truncate(r as usize);
            return Some(Ok(Some(buf)));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENODATA) => return Some(Ok(None)),
            Some(libc::ERANGE) if buf.len() < cap => buf.resize(cap, 0),
            _ => return Some(Err(e)),
        }
    }
}

/// Attribute `attr` of the entry `name` of `dir` itself (a symlink's own, never its
/// target's), at most `cap` bytes (more is an error); None when it has none.
pub fn xattr_at(
    dir: &impl AsRawFd,
    name: &OsStr,
    attr: &str,
    cap: usize,
) -> std::io::Result<Option<Vec<u8>>> {
    let (n, a) = (cstring(name.as_bytes())?, cstring(attr.as_bytes())?);
    let at = |buf: &mut [u8]| at_call(SYS_GETXATTRAT, (dir, &n), &a, (buf.as_mut_ptr(), buf.len()));
    if let Some(r) = read_value(&at, cap) {
        return r;
    }
    let p = proc_path(dir, Some(name))?;
    // SAFETY: p and a are NUL-terminated; buf is writable for its length.
    let get = |buf: &mut [u8]| {
        Some(unsafe { libc::lgetxattr(p.as_ptr(), a.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
    };
    read_value(&get, cap).unwrap_or(Ok(None))
}

/// Attribute `attr` of the inode `fd` refers to (any descriptor, O_PATH included), at most
/// `cap` bytes; None when it has none.
pub fn xattr_fd(fd: &impl AsRawFd, attr: &str, cap: usize) -> std::io::Result<Option<Vec<u8>>> {
    let (p, a) = (proc_path(fd, None)?, cstring(attr.as_bytes())?);
    // SAFETY: p and a are NUL-terminated; buf is writable for its length.
    let get = |buf: &mut [u8]| {
        Some(unsafe { libc::getxattr(p.as_ptr(), a.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })
    };
    read_value(&get, cap).unwrap_or(Ok(None))
}

/// The names of the attributes of the inode `fd` refers to (any descriptor, O_PATH
/// included; a symlink's own).
pub fn xattr_names(fd: &impl AsRawFd) -> std::io::Result<Vec<String>> {
    let p = proc_path(fd, None)?;
    let mut buf = vec![0u8; 4096];
    let n = loop {
        // SAFETY: p is NUL-terminated; buf is writable for buf.len() bytes.
        let r = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if r >= 0 {
            break r as usize;
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ERANGE) || buf.len() >= 1 << 20 {
            return Err(e);
        }
        let len = buf.len();
        buf.resize(len * 4, 0);
    };
    Ok(buf[..n]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| String::from_utf8(s.to_vec()).ok())
        .collect())
}

fn done(r: isize) -> std::io::Result<()> {
    match r {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// Set attribute `attr` of the entry `name` of `dir` itself (never a symlink's target).
pub fn set_xattr_at(
    dir: &impl AsRawFd,
    name: &OsStr,
    attr: &str,
    value: &[u8],
) -> std::io::Result<()> {
    let (n, a) = (cstring(name.as_bytes())?, cstring(attr.as_bytes())?);
    let v = (value.as_ptr() as *mut u8, value.len());
    if let Some(r) = at_call(SYS_SETXATTRAT, (dir, &n), &a, v) {
        return done(r);
    }
    let p = proc_path(dir, Some(name))?;
    // SAFETY: p and a are NUL-terminated; value is readable for value.len() bytes.
    done(unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            a.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    } as isize)
}

/// Set attribute `attr` of the inode `fd` refers to (`flags`: XATTR_CREATE, XATTR_REPLACE or
/// 0): fsetxattr on an open file, else (an O_PATH descriptor) through its /proc link, which
/// reaches the inode itself, never a symlink's target.
pub fn set_xattr_fd(
    fd: &impl AsRawFd,
    attr: &str,
    value: &[u8],
    flags: i32,
) -> std::io::Result<()> {
    let a = cstring(attr.as_bytes())?;
    let (v, len) = (value.as_ptr().cast(), value.len());
    // SAFETY: a is NUL-terminated; value is readable for value.len() bytes.
    let r = unsafe { libc::fsetxattr(fd.as_raw_fd(), a.as_ptr(), v, len, flags) };
    if r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EBADF) {
        return done(r as isize);
    }
    let p = proc_path(fd, None)?;
    // SAFETY: p and a are NUL-terminated; value is readable for value.len() bytes.
    done(unsafe { libc::setxattr(p.as_ptr(), a.as_ptr(), v, len, flags) } as isize)
}
