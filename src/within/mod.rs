//! Opening files inside a store without ever leaving it.
//!
//! A host that can write the store can put a symlink, a FIFO or a device node where coffer
//! expects one of its own files (`lock -> /etc/shadow`, `.diriv -> /dev/zero`). Everything
//! here opens the store's root by the path the administrator gave, then each component below
//! it with O_NOFOLLOW, checks that the result is a regular file (or a directory) before any
//! read or write, caps what it reads, and creates temporary files O_CREAT|O_EXCL under random
//! names. The mount's own *at() calls (fs/sys.rs) follow the same rules.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

mod xattr;
pub use xattr::{set_xattr_at, set_xattr_fd, xattr_at, xattr_fd, xattr_names};

fn cstr(name: &OsStr) -> std::io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

fn check(r: libc::c_int) -> std::io::Result<OwnedFd> {
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: r is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

fn invalid(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

/// A directory by the path the administrator gave (symlinks in it are the administrator's).
pub fn open_root(path: &Path) -> std::io::Result<OwnedFd> {
    let p = cstr(path.as_os_str())?;
    // SAFETY: p is NUL-terminated; the result is checked.
    check(unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })
}

/// The directory `name` in `dir`, refusing a symlink.
pub fn open_dir_at(dir: &impl AsRawFd, name: &OsStr) -> std::io::Result<OwnedFd> {
    let n = cstr(name)?;
    // SAFETY: n is NUL-terminated; the result is checked.
    check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            n.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })
}

/// A path-only descriptor (O_PATH) of the entry `name` in `dir` itself, whatever it is (a
/// symlink's own inode, never its target): for its attributes, never for I/O.
pub fn open_node_at(dir: &impl AsRawFd, name: &OsStr) -> std::io::Result<OwnedFd> {
    let n = cstr(name)?;
    // SAFETY: n is NUL-terminated; the result is checked.
    check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            n.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })
}

/// The parent directory of `rel` below `root` (each component refusing a symlink), and the
/// last component's name.
fn parent_of<'a>(root: &Path, rel: &'a Path) -> std::io::Result<(OwnedFd, &'a OsStr)> {
    let mut parts: Vec<&OsStr> = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => parts.push(n),
            _ => {
                return Err(invalid(format!(
                    "{} is not inside the store",
                    rel.display()
                )))
            }
        }
    }
    let name = parts
        .pop()
        .ok_or_else(|| invalid("empty path in the store".into()))?;
    let mut dir = open_root(root)?;
    for p in parts {
        dir = open_dir_at(&dir, p)?;
    }
    Ok((dir, name))
}

/// A directory below the store's root, refusing symlinks on the way.
pub fn open_dir(root: &Path, rel: &Path) -> std::io::Result<OwnedFd> {
    let (dir, name) = parent_of(root, rel)?;
    open_dir_at(&dir, name)
}

/// The directory `name` in `dir`, made (with `mode`) if it is absent; a symlink or anything
/// but a directory there is refused.
pub fn make_dir_at(dir: &impl AsRawFd, name: &OsStr, mode: u32) -> std::io::Result<OwnedFd> {
    let n = cstr(name)?;
    // SAFETY: n is NUL-terminated.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), n.as_ptr(), mode as libc::mode_t) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    open_dir_at(dir, name)
}

/// Remove the file `name` from `dir` (never following a symlink: unlinkat removes the link).
pub fn unlink_at(dir: &impl AsRawFd, name: &OsStr) -> std::io::Result<()> {
    let n = cstr(name)?;
    // SAFETY: n is NUL-terminated.
    if unsafe { libc::unlinkat(dir.as_raw_fd(), n.as_ptr(), 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Open the regular file `name` in `dir` with `flags` (O_RDONLY, O_RDWR, ...; O_CREAT with
/// `mode`). The name is first opened as a path only (O_PATH|O_NOFOLLOW) and checked: a symlink
/// fails with ELOOP, and a FIFO, socket or device is refused before it is ever opened for I/O
/// (opening a device can have effects of its own; opening a FIFO can block).
pub fn open_at(dir: &impl AsRawFd, name: &OsStr, flags: i32, mode: u32) -> std::io::Result<File> {
    let n = cstr(name)?;
    // SAFETY: n is NUL-terminated; the result is checked.
    let path = check(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            n.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    });
    let path = match path {
        Ok(p) => p,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) && flags & libc::O_CREAT != 0 => {
            // Absent: create it exclusively, so nothing can be slipped in between.
            let f = flags | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
            // SAFETY: n is NUL-terminated; the result is checked.
            let fd = check(unsafe {
                libc::openat(dir.as_raw_fd(), n.as_ptr(), f, mode as libc::c_uint)
            })?;
            return Ok(File::from(fd));
        }
        Err(e) => return Err(e),
    };
    if flags & libc::O_EXCL != 0 {
        return Err(std::io::Error::from_raw_os_error(libc::EEXIST));
    }
    let st = File::from(path.try_clone()?).metadata()?;
    if st.file_type().is_symlink() {
        return Err(std::io::Error::from_raw_os_error(libc::ELOOP));
    }
    if !st.file_type().is_file() {
        return Err(invalid(format!(
            "{} is not a regular file",
            Path::new(name).display()
        )));
    }
    // The checked inode itself, reopened for I/O through its descriptor (never by name).
    // O_NOATIME: reading the store (fsck, a mount) must not move the atime a plaintext file
    // shows; the kernel allows it only to the file's owner (or CAP_FOWNER), else it goes without.
    let proc = CString::new(format!("/proc/self/fd/{}", path.as_raw_fd()))
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let f = flags & !(libc::O_CREAT | libc::O_EXCL) | libc::O_CLOEXEC;
    // SAFETY: proc is NUL-terminated; the result is checked.
    match check(unsafe { libc::open(proc.as_ptr(), f | libc::O_NOATIME) }) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
            // SAFETY: as above.
            check(unsafe { libc::open(proc.as_ptr(), f) }).map(File::from)
        }
        r => r.map(File::from),
    }
}

/// Open the regular file `rel` below `root` (see [`open_at`]).
pub fn open(root: &Path, rel: &Path, flags: i32, mode: u32) -> std::io::Result<File> {
    let (dir, name) = parent_of(root, rel)?;
    open_at(&dir, name, flags, mode)
}

/// Read a whole regular file, refusing one larger than `cap` bytes.
pub fn read_file(mut f: File, cap: usize, what: &Path) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    (&mut f).take(cap as u64 + 1).read_to_end(&mut out)?;
    if out.len() > cap {
        return Err(invalid(format!(
            "{} is larger than {cap} bytes",
            what.display()
        )));
    }
    Ok(out)
}

/// Read `name` in `dir`: a regular file of at most `cap` bytes.
pub fn read_at(dir: &impl AsRawFd, name: &OsStr, cap: usize) -> std::io::Result<Vec<u8>> {
    read_file(open_at(dir, name, libc::O_RDONLY, 0)?, cap, Path::new(name))
}

/// Read `rel` below `root`: a regular file of at most `cap` bytes.
pub fn read(root: &Path, rel: &Path, cap: usize) -> std::io::Result<Vec<u8>> {
    read_file(open(root, rel, libc::O_RDONLY, 0)?, cap, rel)
}

/// Replace `name` in `dir` with `bytes`, atomically and durably: a temporary file with a
/// random name, created exclusively with `mode`, written, fsynced, renamed over `name` (a
/// symlink there is replaced, never followed), then the directory fsynced.
pub fn write_atomic_at(
    dir: &impl AsRawFd,
    name: &OsStr,
    bytes: &[u8],
    mode: u32,
) -> std::io::Result<()> {
    let tmp = crate::format::temp_name(name);
    let t = cstr(&tmp)?;
    let n = cstr(name)?;
    let result = (|| {
        let mut f = open_at(
            dir,
            &tmp,
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
            mode,
        )?;
        f.write_all(bytes)?;
        f.sync_all()?;
        // SAFETY: both names are NUL-terminated; both descriptors are open.
        if unsafe { libc::renameat(dir.as_raw_fd(), t.as_ptr(), dir.as_raw_fd(), n.as_ptr()) } != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fsync on an open descriptor.
        if unsafe { libc::fsync(dir.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    })();
    if result.is_err() {
        // SAFETY: t is NUL-terminated; removing our own temporary name.
        unsafe { libc::unlinkat(dir.as_raw_fd(), t.as_ptr(), 0) };
    }
    result
}

/// Replace `rel` below `root` (see [`write_atomic_at`]).
pub fn write_atomic(root: &Path, rel: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let (dir, name) = parent_of(root, rel)?;
    write_atomic_at(&dir, name, bytes, mode)
}

/// lstat of `name` in `dir`, or of `dir` itself when `name` is None.
pub fn stat_at(dir: &impl AsRawFd, name: Option<&OsStr>) -> std::io::Result<libc::stat> {
    let n = cstr(name.unwrap_or_default())?;
    let flags = match name {
        Some(_) => libc::AT_SYMLINK_NOFOLLOW,
        None => libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH,
    };
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: n is NUL-terminated; st is writable memory of the right size.
    if unsafe { libc::fstatat(dir.as_raw_fd(), n.as_ptr(), st.as_mut_ptr(), flags) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fstatat returned 0, so it filled st.
    Ok(unsafe { st.assume_init() })
}

/// The target of the symlink `name` in `dir` (at most 8 KiB).
pub fn readlink_at(dir: &impl AsRawFd, name: &OsStr) -> std::io::Result<Vec<u8>> {
    let n = cstr(name)?;
    let mut buf = vec![0u8; 8192];
    // SAFETY: n is NUL-terminated; buf is writable for its length.
    let r = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            n.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

/// What `read_ahead_dir` asks the kernel to read ahead.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ahead {
    /// Each regular file's inode and first 64 KiB: for a walk that reads the files.
    Data,
    /// Each entry's inode only: for a walk that compares attributes (an incremental backup,
    /// where reading every file's data ahead would be read for nothing).
    Inodes,
}

/// Ask the kernel to read the entries of directory `dir` ahead, in inode order (about their
/// order on disk), for a walk whose workers open or stat them next: a cold tree is otherwise
/// read at the pace of each file's reads in turn. Files are opened O_NOFOLLOW|O_NONBLOCK (a
/// symlink or a FIFO put there since the listing is skipped or not waited on) and closed at
/// once; only a hint, so whatever fails is skipped.
pub fn read_ahead_dir(dir: &impl AsRawFd, what: Ahead) {
    use std::os::unix::fs::DirEntryExt;
    let Ok(listing) = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd())) else {
        return;
    };
    let mut entries: Vec<(u64, std::ffi::OsString)> = listing
        .flatten()
        .filter(|e| what == Ahead::Inodes || e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| (e.ino(), e.file_name()))
        .collect();
    entries.sort_unstable();
    let flags =
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
    for (_, name) in entries {
        let Ok(n) = cstr(&name) else {
            continue;
        };
        if what == Ahead::Inodes {
            // SAFETY: n is NUL-terminated; st is written by the call and only dropped.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: as above; AT_SYMLINK_NOFOLLOW never follows a link.
            unsafe {
                libc::fstatat(
                    dir.as_raw_fd(),
                    n.as_ptr(),
                    &mut st,
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
            continue;
        }
        // SAFETY: n is NUL-terminated; the descriptor is checked, then owned and closed.
        let f =
            check(unsafe { libc::openat(dir.as_raw_fd(), n.as_ptr(), flags | libc::O_NOATIME) });
        if let Ok(f) = f {
            // SAFETY: f is open; readahead only queues reads into the page cache.
            unsafe { libc::readahead(f.as_raw_fd(), 0, 64 << 10) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_fifos_and_large_files_are_refused() {
        let d = tempfile::tempdir().expect("tmp");
        let outside = d.path().join("outside");
        std::fs::write(&outside, b"keep").expect("write");
        let store = d.path().join("store");
        std::fs::create_dir_all(store.join("sub")).expect("mkdir");
        std::os::unix::fs::symlink(&outside, store.join("link")).expect("symlink");
        std::os::unix::fs::symlink(d.path(), store.join("dirlink")).expect("symlink");
        let e = read(&store, Path::new("link"), 100).expect_err("symlink");
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        let e = read(&store, Path::new("dirlink/outside"), 100).expect_err("dir symlink");
        assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR));
        let e = read(&store, Path::new("../outside"), 100).expect_err("dotdot");
        assert!(e.to_string().contains("not inside the store"), "{e}");
        let fifo = CString::new(store.join("fifo").as_os_str().as_bytes()).expect("c");
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        let e = read(&store, Path::new("fifo"), 100).expect_err("fifo");
        assert!(e.to_string().contains("not a regular file"), "{e}");
        std::fs::write(store.join("sub/big"), vec![1u8; 101]).expect("write");
        let e = read(&store, Path::new("sub/big"), 100).expect_err("cap");
        assert!(e.to_string().contains("larger than 100 bytes"), "{e}");
        assert_eq!(
            read(&store, Path::new("sub/big"), 101).expect("read").len(),
            101
        );
        // An atomic write over a symlink replaces the link and leaves its target alone.
        write_atomic(&store, Path::new("link"), b"new", 0o600).expect("write");
        assert_eq!(std::fs::read(&outside).expect("read"), b"keep");
        assert_eq!(std::fs::read(store.join("link")).expect("read"), b"new");
        let e = write_atomic(&store, Path::new("dirlink/x"), b"new", 0o600).expect_err("dir");
        assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR));
        assert!(!d.path().join("x").exists());
    }
}
