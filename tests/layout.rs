//! How a backup lies on the backing disk. The kernel writes a file back through the mount
//! in pieces, several at once and out of order, so most of a large copy fills holes that an
//! earlier piece left. On ext4, whose delayed allocation lays out what is written together in
//! one place, those fills must stay plain writes: space reserved for them ahead of time
//! (fallocate) is placed at once, apart from the data still in the page cache around it, and
//! a 1 GiB copy then lay in 954 pieces instead of 10 and read back 12-16 % slower.

mod common;

use std::fs::{self, File};
use std::os::unix::fs::FileExt;

use common::{pattern, require_fuse, sh_ok, Env};

const MIB: usize = 1 << 20;

/// Extents of `p` as filefrag counts them.
fn extents(p: &std::path::Path) -> usize {
    let out = sh_ok(&format!("filefrag '{}'", p.display()));
    // "<path>: N extents found" (or "1 extent found")
    out.rsplit(": ")
        .next()
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("filefrag said: {out}"))
}

#[test]
fn a_file_written_out_of_order_lies_in_few_extents() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    let fstype = sh_ok(&format!("stat -f -c %T '{}'", env.path("").display()));
    if fstype.trim() != "ext2/ext3" {
        // stat -f names ext4 "ext2/ext3". Other filesystems allocate differently.
        eprintln!(
            "NOT RUN: the test directory is on {} and this test measures ext4's layout",
            fstype.trim()
        );
        return;
    }
    env.init();
    let m = env.mount();
    // 48 pieces of 1 MiB, written last first: every write after the first fills a hole.
    let n = 48;
    let f = File::create(m.p("image")).expect("create");
    for i in (0..n).rev() {
        f.write_all_at(&pattern(i as u64, MIB), (i * MIB) as u64)
            .expect("write");
    }
    f.sync_all().expect("fsync");
    drop(f);
    m.umount();
    let backing = common::attacker::ciphertext_files(&env.store)
        .into_iter()
        .max_by_key(|p| fs::metadata(p).expect("stat").len())
        .expect("a ciphertext file");
    let got = extents(&backing);
    // One extent per piece is what reserving each fill gives; ext4 caps an extent at
    // 128 MiB, so a file laid out together is one to a few.
    assert!(
        got <= n / 4,
        "{} extents for {n} MiB written out of order",
        got
    );
    let m = env.mount();
    for i in [0, n / 2, n - 1] {
        let mut b = vec![0u8; MIB];
        File::open(m.p("image"))
            .expect("open")
            .read_exact_at(&mut b, (i * MIB) as u64)
            .expect("read");
        assert!(b == pattern(i as u64, MIB), "piece {i}");
    }
    m.umount();
}
