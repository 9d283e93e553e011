//! A real tree in with rsync -aH, unmount, remount, rsync -aH out: every byte and every piece
//! of metadata rsync preserves must come back.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{drop_caches, pattern, require_fuse, sh, sh_ok, Env};

/// A tree with the shapes backups meet: sizes around block boundaries, empty files and
/// directories, deep paths, long and non-ASCII names, symlinks, hard links, modes, old mtimes.
fn build_tree(root: &Path) {
    fs::create_dir_all(root.join("deep/a/b/c/d/e")).expect("mkdir");
    fs::create_dir_all(root.join("empty-dir")).expect("mkdir");
    for (i, len) in [0usize, 1, 4095, 65535, 65536, 65537, 1 << 20, (3 << 20) + 5]
        .iter()
        .enumerate()
    {
        fs::write(
            root.join(format!("size-{len}")),
            pattern(i as u64 + 100, *len),
        )
        .expect("write");
    }
    for i in 0..300 {
        let d = root.join(format!("many/{:02}", i % 10));
        fs::create_dir_all(&d).expect("mkdir");
        fs::write(
            d.join(format!("small-{i}.txt")),
            pattern(i, 100 + i as usize * 37),
        )
        .expect("write");
    }
    fs::write(root.join("deep/a/b/c/d/e/leaf"), b"deep leaf").expect("write");
    fs::write(root.join("Grüße, 世界 — ünïcödé.txt"), b"unicode").expect("write");
    fs::write(root.join("name with spaces & $pecial 'chars'"), b"special").expect("write");
    fs::write(root.join("x".repeat(200)), b"200-byte name").expect("write");
    fs::write(root.join("y".repeat(255)), b"255-byte name").expect("write");
    std::os::unix::fs::symlink("size-1", root.join("link-rel")).expect("symlink");
    std::os::unix::fs::symlink("/etc/hostname", root.join("link-abs")).expect("symlink");
    std::os::unix::fs::symlink("does/not/exist", root.join("link-dangling")).expect("symlink");
    fs::hard_link(root.join("size-65537"), root.join("deep/hardlink")).expect("link");
    fs::set_permissions(root.join("size-1"), fs::Permissions::from_mode(0o600)).expect("chmod");
    fs::set_permissions(root.join("size-0"), fs::Permissions::from_mode(0o755)).expect("chmod");
    fs::set_permissions(root.join("deep/a"), fs::Permissions::from_mode(0o750)).expect("chmod");
    std::os::unix::fs::chown(root.join("size-4095"), Some(1000), Some(100)).expect("chown");
    sh_ok(&format!(
        "touch -d '2010-05-06 07:08:09' '{}'",
        root.join("size-65536").display()
    ));
}

/// rsync's own verdict: with --checksum and --dry-run it lists every file whose content or
/// metadata differs. Nothing listed means identical.
fn assert_same(a: &Path, b: &Path) {
    let out = sh_ok(&format!(
        "rsync -aHc --dry-run -i --delete '{}/' '{}/'",
        a.display(),
        b.display()
    ));
    assert!(out.trim().is_empty(), "trees differ:\n{out}");
    let d = sh(&format!(
        "diff -r --no-dereference '{}' '{}'",
        a.display(),
        b.display()
    ));
    assert!(
        d.status.success(),
        "diff -r: {}",
        String::from_utf8_lossy(&d.stdout)
    );
}

#[test]
fn rsync_in_remount_rsync_out_is_identical() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    build_tree(&src);
    let m = env.mount();
    sh_ok(&format!(
        "rsync -aH '{}/' '{}/'",
        src.display(),
        env.mnt.join("backup").display()
    ));
    m.umount();
    drop_caches();
    let m = env.mount();
    let out = env.path("restore");
    sh_ok(&format!(
        "rsync -aH '{}/' '{}/'",
        env.mnt.join("backup").display(),
        out.display()
    ));
    assert_same(&src, &out);
    // An incremental run after changes moves only what changed and still matches.
    fs::write(src.join("size-1"), b"Z").expect("change");
    fs::write(src.join("many/03/new-file"), pattern(77, 5000)).expect("add");
    fs::remove_file(src.join("size-4095")).expect("remove");
    sh_ok(&format!(
        "rsync -aH --delete '{}/' '{}/'",
        src.display(),
        env.mnt.join("backup").display()
    ));
    // --inplace rewrites files in the middle rather than renaming new copies over them.
    let mut big = pattern(5, (3 << 20) + 5);
    big[1_000_000..1_000_010].copy_from_slice(b"0123456789");
    fs::write(src.join("size-3145733"), &big).expect("change");
    sh_ok(&format!(
        "rsync -aH --inplace --no-whole-file '{}/' '{}/'",
        src.display(),
        env.mnt.join("backup").display()
    ));
    m.umount();
    drop_caches();
    let m = env.mount();
    let out2 = env.path("restore2");
    sh_ok(&format!(
        "rsync -aH '{}/' '{}/'",
        env.mnt.join("backup").display(),
        out2.display()
    ));
    assert_same(&src, &out2);
    m.umount();
    let o = env.coffer(&["fsck", env.store.to_str().expect("utf8")]);
    assert!(
        o.status.success(),
        "fsck: {}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn tar_and_cp_round_trip() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    build_tree(&src);
    let m = env.mount();
    // cp first: the untar then sets the mount root's times last, as in the source.
    sh_ok(&format!(
        "cp -a '{}' '{}'",
        src.display(),
        env.mnt.join("cp-copy").display()
    ));
    sh_ok(&format!(
        "cd '{}' && tar cf - . | (cd '{}' && tar xpf -)",
        src.display(),
        env.mnt.display()
    ));
    m.umount();
    drop_caches();
    let m = env.mount();
    let out = env.path("untar");
    fs::create_dir(&out).expect("mkdir");
    sh_ok(&format!(
        "cd '{}' && tar cf - --exclude=./cp-copy . | (cd '{}' && tar xpf -)",
        env.mnt.display(),
        out.display()
    ));
    assert_same(&src, &out);
    let out2 = env.path("cp-back");
    sh_ok(&format!(
        "cp -a '{}' '{}'",
        env.mnt.join("cp-copy").display(),
        out2.display()
    ));
    assert_same(&src, &out2);
    m.umount();
}
