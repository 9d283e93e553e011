//! Every store format version that was ever released must still open: each fixture under
//! tests/fixtures/store-vN (made by tools/make-fixture.sh; from format 3 a tar, store-vN.tar,
//! which keeps the store's extended attributes and hard links) is mounted and compared with
//! its manifest, then checked by fsck.

mod common;

use std::path::Path;

use common::{manifest_of, require_fuse, sh_ok};

#[test]
fn every_fixture_store_still_opens() {
    if !require_fuse() {
        return;
    }
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut seen = 0;
    for e in std::fs::read_dir(&fixtures).expect("fixtures dir") {
        let src = e.expect("entry").path();
        if !src
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("store-v"))
        {
            continue;
        }
        seen += 1;
        check_fixture(&src);
    }
    assert!(
        seen >= 3,
        "no fixture stores found in {}",
        fixtures.display()
    );
}

/// Mount a copy of fixture store `src` read-only, compare what it reads with its manifest,
/// and fsck it.
fn check_fixture(src: &Path) {
    // Work on a copy: mounting records a lock file and fsck may write.
    let work = tempfile::tempdir().expect("tempdir");
    let tar = src.extension().is_some_and(|e| e == "tar");
    sh_ok(&match tar {
        true => format!(
            "tar --xattrs --xattrs-include='*' -xpf '{}' -C '{}'",
            src.display(),
            work.path().display()
        ),
        false => format!("cp -a '{}/.' '{}/'", src.display(), work.path().display()),
    });
    let mnt = work.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let run = |args: &[&str]| {
        std::process::Command::new(common::bin())
            .args(args)
            .env("COFFER_KEYSTORE", work.path().join("keystore"))
            .env("COFFER_PASSPHRASE_FILE", work.path().join("passphrase"))
            .output()
            .expect("coffer")
    };
    let store = work.path().join("store");
    let (s, m) = (store.to_str().expect("utf8"), mnt.to_str().expect("utf8"));
    let o = run(&[
        "mount",
        s,
        m,
        "--read-only",
        "--log",
        work.path().join("log").to_str().expect("utf8"),
    ]);
    assert!(
        o.status.success(),
        "{}: mount: {}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    // Git stores no hard links: in a clone of a directory fixture, the two names of one
    // ciphertext file are two identical copies, which must both still read. A tar
    // fixture keeps the link, which its sealed record names twice.
    let got = std::panic::catch_unwind(|| {
        if tar {
            use std::os::unix::fs::MetadataExt;
            let (a, b) = (mnt.join("size-65537"), mnt.join("dir/hardlink"));
            let (a, b) = (
                std::fs::metadata(a).expect("a"),
                std::fs::metadata(b).expect("b"),
            );
            assert_eq!((a.ino(), a.nlink()), (b.ino(), 2), "one inode, two names");
        }
        manifest_of(&mnt)
    });
    let u = run(&["umount", m]);
    let got = got.expect("reading the fixture mount");
    assert!(u.status.success());
    let want = std::fs::read_to_string(work.path().join("manifest")).expect("manifest");
    assert_eq!(
        got,
        want,
        "{} content differs from its manifest",
        src.display()
    );
    let o = run(&["fsck", s]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "fsck of {}: {}",
        src.display(),
        String::from_utf8_lossy(&o.stdout)
    );
}
