//! Tampered ciphertext never reads as other bytes: a flipped bit, swapped blocks (within and
//! between files), a file cut at a block boundary, a damaged header. Each read gives EIO, and
//! the log names the ciphertext file and the block.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::{pattern, require_fuse, Env};

/// The default block size.
const B: u64 = 4096;
const H: u64 = 132;
const O: u64 = 28;

fn cipher_len(plain: u64) -> u64 {
    let n = if plain == 0 { 1 } else { plain.div_ceil(B) };
    H + (n - 1) * (B + O) + (plain - (n - 1) * B) + O
}

/// The ciphertext file of a given length (the tests give each file a distinct length).
fn backing_of_len(store: &Path, len: u64) -> PathBuf {
    let found: Vec<_> = Env::all_bytes(&store.join("data"))
        .into_iter()
        .filter(|(p, b)| {
            p.is_file() && fs::metadata(p).map(|m| m.len()).ok() == Some(len) && !b.is_empty()
        })
        .map(|(p, _)| p)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one ciphertext file of length {len}"
    );
    found.into_iter().next().expect("one")
}

fn block_off(i: u64) -> u64 {
    H + i * (B + O)
}

fn read_err(p: &Path) -> Option<i32> {
    fs::read(p).err().and_then(|e| e.raw_os_error())
}

fn setup() -> (Env, Vec<u8>, Vec<u8>) {
    let env = Env::new();
    env.init();
    let a = pattern(1, 3 * B as usize + 100);
    let b = pattern(2, 3 * B as usize + 200);
    let m = env.mount();
    fs::write(m.p("a"), &a).expect("write");
    fs::write(m.p("b"), &b).expect("write");
    fs::write(m.p("c"), pattern(3, 3 * B as usize + 100 + 1)).expect("write");
    m.umount();
    (env, a, b)
}

fn swap(p: &Path, q: &Path, off_p: u64, off_q: u64, len: u64) {
    let (fp, fq) = (
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .expect("open"),
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(q)
            .expect("open"),
    );
    let (mut x, mut y) = (vec![0u8; len as usize], vec![0u8; len as usize]);
    fp.read_exact_at(&mut x, off_p).expect("read");
    fq.read_exact_at(&mut y, off_q).expect("read");
    fp.write_all_at(&y, off_p).expect("write");
    fq.write_all_at(&x, off_q).expect("write");
}

#[test]
fn flipped_bit_in_a_block_is_eio_and_logged() {
    if !require_fuse() {
        return;
    }
    let (env, a, _) = setup();
    let file = backing_of_len(&env.store, cipher_len(a.len() as u64));
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .expect("open");
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, block_off(1) + 500)
        .expect("read");
    f.write_all_at(&[byte[0] ^ 0x04], block_off(1) + 500)
        .expect("write");
    let m = env.mount();
    assert_eq!(read_err(&m.p("a")), Some(libc::EIO));
    // The untouched block before it still reads.
    let mut first = vec![0u8; 1000];
    fs::File::open(m.p("a"))
        .expect("open")
        .read_exact_at(&mut first, 0)
        .expect("block 0 reads");
    assert_eq!(first, a[..1000]);
    m.umount();
    let log = env.log_text();
    let rel = file
        .strip_prefix(&env.store)
        .expect("in store")
        .display()
        .to_string();
    assert!(
        log.contains(&rel) && log.contains("block 1 failed authentication"),
        "log must name file and block:\n{log}"
    );
}

#[test]
fn blocks_swapped_within_and_between_files_are_eio() {
    if !require_fuse() {
        return;
    }
    let (env, a, b) = setup();
    let fa = backing_of_len(&env.store, cipher_len(a.len() as u64));
    let fb = backing_of_len(&env.store, cipher_len(b.len() as u64));
    swap(&fa, &fa, block_off(0), block_off(1), B + O);
    swap(&fb, &fb, block_off(2), block_off(2), 0); // no-op keeps b intact
    let m = env.mount();
    assert_eq!(
        read_err(&m.p("a")),
        Some(libc::EIO),
        "blocks swapped within a file"
    );
    assert_eq!(fs::read(m.p("b")).expect("b untouched"), b);
    m.umount();
    let fc = backing_of_len(&env.store, cipher_len(a.len() as u64 + 1));
    swap(&fb, &fc, block_off(1), block_off(1), B + O);
    let m = env.mount();
    assert_eq!(
        read_err(&m.p("b")),
        Some(libc::EIO),
        "block grafted from another file"
    );
    assert_eq!(
        read_err(&m.p("c")),
        Some(libc::EIO),
        "block grafted from another file"
    );
    m.umount();
}

#[test]
fn files_cut_at_a_block_boundary_or_with_a_bad_header_are_eio() {
    if !require_fuse() {
        return;
    }
    let (env, a, b) = setup();
    let fa = backing_of_len(&env.store, cipher_len(a.len() as u64));
    let fb = backing_of_len(&env.store, cipher_len(b.len() as u64));
    // Cut after block 1: the remaining last block was not sealed as final.
    fs::OpenOptions::new()
        .write(true)
        .open(&fa)
        .expect("open")
        .set_len(block_off(2))
        .expect("cut");
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fb)
        .expect("open");
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, 30).expect("read");
    f.write_all_at(&[byte[0] ^ 1], 30)
        .expect("flip a header byte (the batch id)");
    let m = env.mount();
    assert_eq!(
        read_err(&m.p("a")),
        Some(libc::EIO),
        "cut at a block boundary"
    );
    assert_eq!(read_err(&m.p("b")), Some(libc::EIO), "damaged header");
    m.umount();
    // fsck reports both, exit code 1.
    let o = env.coffer(&["fsck", env.store.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("block 2 failed authentication")
            || out.contains("block 1 failed authentication"),
        "{out}"
    );
    assert!(out.contains("file key does not unwrap"), "{out}");
}
