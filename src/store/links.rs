//! Blobs of long symlink targets: `links/<name>` below the store's root holds the sealed target
//! of a symlink whose target is longer than a backing symlink can carry (format/names.rs);
//! `<name>` is base64url of BLAKE3 of the blob, so a blob cannot be swapped for another.
//! Every access goes through `within`: no link is followed, nothing but a regular file of at
//! most LINK_BLOB_MAX bytes is read.

use std::ffi::OsStr;
use std::path::Path;

use super::StoreError;
use crate::format::LINK_BLOB_MAX;
use crate::within;

pub const LINKS: &str = "links";

/// A blob name as the format makes it: 43 base64url characters. Anything else (a path, a
/// "..") is refused before it reaches the filesystem.
fn checked(name: &[u8]) -> Result<&OsStr, StoreError> {
    let ok = name.len() == 43
        && name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_');
    if !ok {
        return Err(StoreError::Damaged(
            "a symlink names a target blob that cannot be one".into(),
        ));
    }
    Ok(std::os::unix::ffi::OsStrExt::from_bytes(name))
}

fn io(root: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io(root.join(LINKS), e)
}

/// Keep a long symlink's blob (durably, mode 0400), making `links/` on first use.
pub fn write_blob(root: &Path, name: &str, blob: &[u8]) -> Result<(), StoreError> {
    let n = checked(name.as_bytes())?;
    let r = within::open_root(root).map_err(|e| io(root, e))?;
    let d = within::make_dir_at(&r, OsStr::new(LINKS), 0o700).map_err(|e| io(root, e))?;
    within::write_atomic_at(&d, n, blob, 0o400).map_err(|e| io(root, e))
}

/// A long symlink's blob.
pub fn read_blob(root: &Path, name: &[u8]) -> Result<Vec<u8>, StoreError> {
    let rel = Path::new(LINKS).join(checked(name)?);
    within::read(root, &rel, LINK_BLOB_MAX).map_err(|e| io(root, e))
}

/// The length of a long symlink's blob (for `stat`), without reading it.
pub fn blob_len(root: &Path, name: &[u8]) -> Result<u64, StoreError> {
    let rel = Path::new(LINKS).join(checked(name)?);
    let f = within::open(root, &rel, libc::O_RDONLY, 0).map_err(|e| io(root, e))?;
    Ok(f.metadata().map_err(|e| io(root, e))?.len())
}

/// Remove a blob whose symlink is gone (a missing blob is not an error).
pub fn remove_blob(root: &Path, name: &[u8]) -> Result<(), StoreError> {
    let n = checked(name)?;
    let r = within::open_root(root).map_err(|e| io(root, e))?;
    let d = match within::open_dir_at(&r, OsStr::new(LINKS)) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(root, e)),
    };
    match within::unlink_at(&d, n) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(root, e)),
        _ => Ok(()),
    }
}

/// The names in `links/` (fsck's inventory); none when there is no such directory.
pub fn blob_names(root: &Path) -> Result<Vec<Vec<u8>>, StoreError> {
    let r = within::open_root(root).map_err(|e| io(root, e))?;
    let d = match within::open_dir_at(&r, OsStr::new(LINKS)) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(root, e)),
    };
    let listing = std::fs::read_dir(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&d)
    ))
    .map_err(|e| io(root, e))?;
    let mut out = Vec::new();
    for e in listing {
        let e = e.map_err(|e| io(root, e))?;
        out.push(std::os::unix::ffi::OsStrExt::as_bytes(e.file_name().as_os_str()).to_vec());
    }
    Ok(out)
}
