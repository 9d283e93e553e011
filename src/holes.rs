//! Holes in ciphertext files, as the backing filesystem keeps them: where the next data is
//! (SEEK_DATA), punching a range out (FALLOCATE_PUNCH_HOLE), and whether a block of a
//! format 2 file is a hole (format/block.rs says what one is). What the backing filesystem
//! reports only saves reading: a block counts as a hole because its bytes are zero, never
//! because the filesystem says so, and its being one is checked against the next data
//! block's AAD by whoever reads it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use crate::format::{is_hole, BlockGeometry, BLOCK_OVERHEAD};

/// The offset of the first data at or after `off`, or None when only a hole (or the end)
/// follows. Filesystems without hole support report all of the file as data.
pub fn next_data(f: &File, off: u64) -> std::io::Result<Option<u64>> {
    // SAFETY: the fd is open for the life of `f`; lseek has no memory effects.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off as libc::off_t, libc::SEEK_DATA) };
    if r >= 0 {
        return Ok(Some(r as u64));
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENXIO) => Ok(None),
        // No SEEK_DATA here: everything is data.
        Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) => Ok(Some(off)),
        _ => Err(e),
    }
}

/// The offset of the first hole at or after `off` (the end of the file counts as one).
pub fn next_hole(f: &File, off: u64) -> std::io::Result<u64> {
    // SAFETY: as in next_data.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off as libc::off_t, libc::SEEK_HOLE) };
    if r >= 0 {
        return Ok(r as u64);
    }
    Err(std::io::Error::last_os_error())
}

/// Deallocate `len` bytes at `off`, keeping the file's length: they read as zeros after.
pub fn punch(f: &File, off: u64, len: u64) -> std::io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    match fallocate(
        f,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        off,
        len,
    ) {
        // A filesystem that cannot punch gets the zeros written instead: still a hole to us.
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => write_zeros(f, off, len),
        r => r,
    }
}

/// Allocate `len` bytes at `off` without changing the file's length or contents, so that
/// writing them cannot fail for want of space. A filesystem without fallocate is left to it.
pub fn reserve(f: &File, off: u64, len: u64) -> std::io::Result<()> {
    match fallocate(f, libc::FALLOC_FL_KEEP_SIZE, off, len) {
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
        r => r,
    }
}

/// fallocate(2) of `len` bytes at `off` with `mode`.
pub fn fallocate(f: &File, mode: i32, off: u64, len: u64) -> std::io::Result<()> {
    // SAFETY: the fd is open for the life of `f`.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, off as libc::off_t, len as libc::off_t) };
    match r {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

fn write_zeros(f: &File, off: u64, len: u64) -> std::io::Result<()> {
    let chunk = vec![0u8; len.min(1 << 20) as usize];
    let mut at = off;
    while at < off + len {
        let n = (off + len - at).min(chunk.len() as u64) as usize;
        f.write_all_at(&chunk[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

/// Where punching a hole that starts at ciphertext offset `c` may begin: the start of the
/// filesystem block (4 KiB) holding `c` when the block before is a hole too (`lead` > 0), so
/// no partly zero filesystem block stays allocated between two holes.
pub fn hole_start(c: u64, lead: u64) -> u64 {
    match lead {
        0 => c,
        _ => (c / 4096 * 4096).max(crate::format::HEADER_LEN as u64),
    }
}

/// Ciphertext range of block `idx` (a full block: callers never ask this of the final one).
pub fn block_range(g: BlockGeometry, idx: u64) -> (u64, u64) {
    let c0 = g.block_to_cipher_off(idx);
    (c0, c0 + g.block_size() + BLOCK_OVERHEAD as u64)
}

/// Whether full block `idx` is a hole: lies wholly in a backing hole, or reads as zeros.
pub fn block_is_hole(f: &File, g: BlockGeometry, idx: u64) -> std::io::Result<bool> {
    let (c0, c1) = block_range(g, idx);
    match next_data(f, c0)? {
        None => return Ok(true),
        Some(d) if d >= c1 => return Ok(true),
        Some(_) => {}
    }
    // A data block's nonce is never zero: its first 16 bytes settle it.
    let mut head = [0u8; 16];
    f.read_exact_at(&mut head, c0)?;
    if !is_hole(&head) {
        return Ok(false);
    }
    let mut b = vec![0u8; (c1 - c0) as usize];
    f.read_exact_at(&mut b, c0)?;
    Ok(is_hole(&b))
}

/// The first block at or after `from` (and before `final_idx`) that is not a hole, or
/// `final_idx` (the final block is always data). Backing holes are skipped without reading.
pub fn next_data_block(
    f: &File,
    g: BlockGeometry,
    from: u64,
    final_idx: u64,
) -> std::io::Result<u64> {
    let stride = g.block_size() + BLOCK_OVERHEAD as u64;
    let mut k = from;
    while k < final_idx {
        let (c0, _) = block_range(g, k);
        let skip_to = match next_data(f, c0)? {
            None => return Ok(final_idx),
            // Blocks whose whole range lies before the next data are holes.
            Some(d) => (d.saturating_sub(g.block_to_cipher_off(0)) / stride).max(k),
        };
        if skip_to > k {
            k = skip_to.min(final_idx);
            continue;
        }
        if !block_is_hole(f, g, k)? {
            return Ok(k);
        }
        k += 1;
    }
    Ok(final_idx)
}

/// How many hole blocks lie immediately before block `idx`. Blocks wholly inside backing
/// holes are found by a binary search over SEEK_DATA (a run of any length costs a few dozen
/// seeks); only blocks with bytes on disk are read, to see whether those bytes are zero.
pub fn holes_before(f: &File, g: BlockGeometry, idx: u64) -> std::io::Result<u64> {
    let mut k = idx;
    while k > 0 {
        let ck = g.block_to_cipher_off(k);
        // The first m such that nothing in [c(m), c(k)) is on disk.
        let (mut lo, mut hi) = (0u64, k);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match next_data(f, g.block_to_cipher_off(mid))? {
                Some(d) if d < ck => lo = mid + 1,
                _ => hi = mid,
            }
        }
        if lo < k {
            k = lo;
        } else if block_is_hole(f, g, k - 1)? {
            k -= 1;
        } else {
            break;
        }
    }
    Ok(idx - k)
}
