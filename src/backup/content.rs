//! The bytes of one file between a source tree and the store: copied in hole for hole,
//! patched block by block where a changed file differs, and compared for `--checksum`.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::Counters;
use crate::fs::direct::{Handle, Tree};

/// Plaintext read and written at once per file.
const CHUNK: u64 = 4 << 20;

pub(super) fn changed_under_us() -> io::Error {
    io::Error::other("changed while being read (it is retried by the next run)")
}

/// Make open copy `h` (`old` bytes) hold the source's `new` bytes, writing only the runs
/// of blocks that differ, then what was appended, then the new length.
pub(super) fn patch(
    (tree, counters): (&Tree, &Counters),
    src: &File,
    h: &Handle,
    (old, new): (u64, u64),
) -> io::Result<()> {
    let bs = tree.block_size() as usize;
    let step = (CHUNK as usize / bs).max(1) * bs;
    let (mut ours, mut theirs) = (vec![0u8; step], Vec::with_capacity(step));
    let mut off = 0u64;
    while off < new {
        if counters.stopped() {
            return Err(io::Error::from_raw_os_error(libc::EINTR));
        }
        let n = (new - off).min(step as u64) as usize;
        if read_full(src, &mut ours[..n], off)? < n {
            return Err(changed_under_us());
        }
        theirs.clear();
        if off < old {
            tree.read(h, off, n as u32, &mut theirs)?;
        }
        for run in differing(&ours[..n], &theirs, bs) {
            tree.write(h, off + run.start as u64, &ours[run.clone()])?;
            Counters::add(&counters.bytes, run.len() as u64);
        }
        off += n as u64;
    }
    if new != old {
        tree.set_len(h, new)?;
    }
    Ok(())
}

/// The source's data, hole for hole: only its data ranges are read and written, and the
/// length is set at the end (a trailing hole).
pub(super) fn copy_in(
    (tree, counters): (&Tree, &Counters),
    src: &File,
    h: &Handle,
    size: u64,
) -> io::Result<()> {
    let mut buf = vec![0u8; size.min(CHUNK) as usize];
    let mut off = 0;
    while off < size {
        let Some(data) = crate::holes::next_data(src, off)? else {
            break;
        };
        let end = crate::holes::next_hole(src, data)?.min(size);
        let mut at = data;
        while at < end {
            if counters.stopped() {
                return Err(io::Error::from_raw_os_error(libc::EINTR));
            }
            let n = (end - at).min(CHUNK) as usize;
            let got = read_full(src, &mut buf[..n], at)?;
            if got < n {
                return Err(changed_under_us());
            }
            tree.write(h, at, &buf[..n])?;
            Counters::add(&counters.bytes, n as u64);
            at += n as u64;
        }
        off = end.max(data + 1);
    }
    if off < size {
        tree.set_len(h, size)?;
    }
    Ok(())
}

/// The runs of `bs`-byte blocks where `ours` differs from `theirs`, as byte ranges of
/// `ours`. `theirs` may be shorter: past its end a block of zeros is left out (it becomes a
/// hole when the length is set), and any other differs.
fn differing(ours: &[u8], theirs: &[u8], bs: usize) -> Vec<std::ops::Range<usize>> {
    let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
    for (i, block) in ours.chunks(bs).enumerate() {
        let at = i * bs;
        let same = match theirs.get(at..at + block.len()) {
            Some(t) => t == block,
            None => at >= theirs.len() && block.iter().all(|b| *b == 0),
        };
        match (same, runs.last_mut()) {
            (true, _) => {}
            (false, Some(r)) if r.end == at => r.end = at + block.len(),
            (false, _) => runs.push(at..at + block.len()),
        }
    }
    runs
}

/// pread until `buf` is full or the file ends; how much was read.
fn read_full(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], off + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Whether the open store file and the source file hold the same bytes.
pub(super) fn compare(tree: &Tree, h: &Handle, src: &File) -> io::Result<bool> {
    let mut off = 0u64;
    let mut theirs = Vec::new();
    let mut ours = vec![0u8; 1 << 20];
    loop {
        theirs.clear();
        tree.read(h, off, 1 << 20, &mut theirs)?;
        let got = read_full(src, &mut ours, off)?;
        if got != theirs.len() || ours[..got] != theirs[..] {
            return Ok(false);
        }
        if got == 0 {
            return Ok(true);
        }
        off += got as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::differing;

    #[test]
    fn differing_blocks_come_in_runs() {
        let ours = [1u8, 1, 2, 2, 3, 3, 4, 4, 5];
        assert!(differing(&ours, &ours, 2).is_empty());
        let theirs = [1u8, 1, 0, 2, 0, 3, 4, 4];
        assert_eq!(differing(&ours, &theirs, 2), vec![2..6, 8..9]);
        assert_eq!(differing(&ours, &[], 4), vec![0..9]);
        let grown = [1u8, 1, 0, 0, 0, 0, 7];
        assert_eq!(differing(&grown, &[1, 1, 0], 2), vec![2..4, 6..7]);
    }
}
