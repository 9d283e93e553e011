//! A write re-encrypts only the blocks it touches: a small in-place change to a large file
//! changes one block of ciphertext and no other file of the store, which is what keeps an
//! rsync of the store cheap. Checked for the default 4 KiB blocks and for 64 KiB ones.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::{pattern, require_fuse, Env};

const H: usize = 132;
const O: usize = 28;

fn only_data_file(store: &Path) -> PathBuf {
    let files: Vec<_> = Env::all_bytes(&store.join("data"))
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    assert_eq!(files.len(), 1);
    files.into_iter().next().expect("one file")
}

/// Byte ranges where two buffers differ, merged.
fn changed_ranges(a: &[u8], b: &[u8]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for i in 0..a.len().max(b.len()) {
        if a.get(i) != b.get(i) {
            match out.last_mut() {
                Some(r) if r.1 + 64 >= i => r.1 = i + 1,
                _ => out.push((i, i + 1)),
            }
        }
    }
    out
}

#[test]
fn small_in_place_write_changes_one_block_of_4k() {
    if require_fuse() {
        in_place_write_changes_one_block(4096, 0);
    }
}

#[test]
fn small_in_place_write_changes_one_block_of_64k() {
    if require_fuse() {
        in_place_write_changes_one_block(65536, 1000);
    }
}

/// The store's files other than data/, with their bytes.
fn store_files_outside_data(store: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    Env::all_bytes(store)
        .into_iter()
        .filter(|(p, _)| p.is_file() && !p.starts_with(store.join("data")))
        .collect()
}

/// Write 4 KiB at `skew` bytes into block 5 of a 16-block file.
fn in_place_write_changes_one_block(b: usize, skew: usize) {
    let env = Env::new();
    let size = format!("{}K", b / 1024);
    env.init_with(&["--block-size", &size]);
    let m = env.mount();
    fs::write(m.p("big"), pattern(1, 16 * b)).expect("write");
    m.umount();
    let file = only_data_file(&env.store);
    let before = fs::read(&file).expect("read");
    let others_before = store_files_outside_data(&env.store);

    let m = env.mount();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(m.p("big"))
        .expect("open");
    f.write_all_at(&[0xAB; 4096], (5 * b + skew) as u64)
        .expect("write 4 KiB in block 5");
    drop(f);
    m.umount();
    let after = fs::read(&file).expect("read");
    assert_eq!(before.len(), after.len());
    // Nothing else in the store changed: not the catalog, the descriptor, the batch keys,
    // nor the lock file, which a clean unmount empties.
    assert!(
        store_files_outside_data(&env.store) == others_before,
        "an in-place write changed store files outside data/"
    );
    let block5 = (H + 5 * (b + O), H + 6 * (b + O));
    let ranges = changed_ranges(&before, &after);
    assert!(!ranges.is_empty());
    for (s, e) in &ranges {
        assert!(
            *s >= block5.0 && *e <= block5.1,
            "bytes {s}..{e} changed outside block 5 {block5:?}"
        );
    }

    // Appending past a full final block re-seals that block (final flag) and adds one.
    let m = env.mount();
    let f = fs::OpenOptions::new()
        .append(true)
        .open(m.p("big"))
        .expect("open");
    f.write_all_at(b"tail", (16 * b) as u64).expect("append");
    drop(f);
    m.umount();
    let appended = fs::read(&file).expect("read");
    let ranges = changed_ranges(&after, &appended);
    let block15 = H + 15 * (b + O);
    for (s, _) in &ranges {
        assert!(
            *s >= block15,
            "append changed bytes at {s}, before the old final block"
        );
    }
}
