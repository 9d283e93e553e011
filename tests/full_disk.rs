//! A full disk under the store: writes in the mount fail with ENOSPC (never EIO on a read,
//! never a panic), what was fsynced before stays readable byte for byte, the store stays
//! mountable and checkable, and after space is freed, backups go on.
//!
//! The store lives on a small tmpfs of the test's own (mounting it needs root, as every mount
//! test here does).

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::{pattern, require_fuse, s, sh, Env};

struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = sh(&format!("umount -l '{}'", self.0.display()));
    }
}

fn tmpfs(dir: &Path, size: &str) -> Tmpfs {
    fs::create_dir_all(dir).expect("mkdir");
    let o = sh(&format!(
        "mount -t tmpfs -o size={size},mode=0700 tmpfs '{}'",
        dir.display()
    ));
    assert!(
        o.status.success(),
        "this test mounts a tmpfs (needs root): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Tmpfs(dir.to_path_buf())
}

const HOLEY_LEN: u64 = 2_000_000;
/// Where the fill starts: on a block boundary, so that each 4 KiB it covers is one block.
const HOLEY_FILL_AT: u64 = 120 * 4096;

/// After a failed fill of `holey`'s holes, remounted: it reads without error, its tail as
/// written, and each 4 KiB of the fill either as the hole it was or as the fill.
fn assert_holes_or_fill(env: &Env, tail: &[u8], fill: &[u8]) {
    let m = env.mount();
    let got = fs::read(m.p("holey")).unwrap_or_else(|e| panic!("holey: {e}\n{}", env.log_text()));
    // Still full: this mount records again what it looks up, which may not fit either.
    umount_while_full(env, m);
    assert_eq!(got.len() as u64, HOLEY_LEN);
    assert!(
        got[got.len() - tail.len()..] == tail[..],
        "the tail changed"
    );
    let at = HOLEY_FILL_AT as usize;
    for (i, (g, w)) in got[at..at + fill.len()]
        .chunks(4096)
        .zip(fill.chunks(4096))
        .enumerate()
    {
        assert!(
            g == w || g.iter().all(|&b| b == 0),
            "fill chunk {i} is neither"
        );
    }
    assert!(
        got[..at].iter().all(|&b| b == 0),
        "a hole before the fill changed"
    );
}

#[test]
fn a_full_disk_fails_writes_with_enospc_and_loses_nothing_fsynced() {
    if !require_fuse() {
        return;
    }
    let mut env = Env::new();
    let _fs = tmpfs(&env.path("small"), "6m");
    env.store = env.path("small/store");
    env.init();
    let m = env.mount();

    // Backed up and fsynced while there is room.
    let kept = pattern(1, 1_500_000);
    let mut f = fs::File::create(m.p("kept")).expect("create");
    f.write_all(&kept).expect("write");
    f.sync_all().expect("fsync");
    drop(f);

    // A sparse file: 2 MB of holes and a tail of data.
    let holey_tail = pattern(5, 4_000);
    let f = fs::File::create(m.p("holey")).expect("create");
    f.write_all_at(&holey_tail, HOLEY_LEN - 4_000)
        .expect("write");
    f.sync_all().expect("fsync");
    drop(f);

    // Fill the disk: the write (or its fsync, or its close) fails with ENOSPC.
    let mut errno = None;
    let mut f = fs::File::create(m.p("filler")).expect("create");
    for i in 0..64 {
        if let Err(e) = f.write_all(&pattern(100 + i, 256 * 1024)) {
            errno = e.raw_os_error();
            break;
        }
    }
    if errno.is_none() {
        errno = f.sync_all().err().and_then(|e| e.raw_os_error());
    }
    drop(f);
    assert_eq!(
        errno,
        Some(libc::ENOSPC),
        "a full disk is ENOSPC: {}",
        env.log_text()
    );
    // More small files also fail cleanly, or succeed; reading never breaks.
    for i in 0..5 {
        let r = fs::write(m.p(&format!("small-{i}")), pattern(200 + i, 50_000));
        if let Err(e) = r {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "small-{i}: {e}");
        }
    }
    assert_eq!(fs::read(m.p("kept")).expect("read while full"), kept);
    // Appending to a backed-up file on the full disk fails, and must not damage what the
    // file held: a write that stops half way would otherwise leave its old last block
    // replaced by a successor that is not sealed as final.
    let tail = pattern(4, 200_000);
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(m.p("kept"))
        .expect("open");
    let r = f.write_all(&tail).and_then(|_| f.sync_all());
    assert_eq!(r.err().and_then(|e| e.raw_os_error()), Some(libc::ENOSPC));
    drop(f);
    // Filling the holes on the full disk fails, and must not damage what the file held: a
    // fill stopped half way would leave the tail counting the wrong number of holes (EIO).
    let fill = pattern(6, 300_000);
    let f = fs::OpenOptions::new()
        .write(true)
        .open(m.p("holey"))
        .expect("open");
    let r = f
        .write_all_at(&fill, HOLEY_FILL_AT)
        .and_then(|_| f.sync_all());
    if let Err(e) = r {
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "holey: {e}");
    }
    drop(f);
    umount_while_full(&env, m);
    assert_holes_or_fill(&env, &holey_tail, &fill);

    // Remounted while still full: what was fsynced reads back, followed by as much of the
    // failed append as did fit (all of it, when only the catalog's commit found no room).
    let m = env.mount();
    let got = fs::read(m.p("kept")).expect("read after remount");
    assert!(
        got.len() >= kept.len() && got.len() <= kept.len() + tail.len(),
        "kept is {} bytes after a failed append of {} to {}:\n{}",
        got.len(),
        tail.len(),
        kept.len(),
        env.log_text()
    );
    assert!(got[..kept.len()] == kept[..], "the fsynced bytes changed");
    assert!(
        got[kept.len()..] == tail[..got.len() - kept.len()],
        "not a prefix of the append"
    );
    if got.len() > kept.len() {
        fs::OpenOptions::new()
            .write(true)
            .open(m.p("kept"))
            .expect("open")
            .set_len(kept.len() as u64)
            .expect("truncate");
    }
    // Free the space; backups go on.
    fs::remove_file(m.p("filler")).expect("rm filler");
    for i in 0..5 {
        let _ = fs::remove_file(m.p(&format!("small-{i}")));
    }
    let more = pattern(3, 1_000_000);
    fs::write(m.p("after"), &more).expect("write after freeing space");
    m.umount();
    let m = env.mount();
    assert_eq!(fs::read(m.p("after")).expect("read"), more);
    assert_eq!(fs::read(m.p("kept")).expect("read"), kept);
    m.umount();
    // The store checks clean, or repairs to clean (a catalog commit may have failed while
    // the disk was full; the headers carry what the repair needs).
    let st = s(&env.store);
    if env.coffer(&["fsck", st]).status.code() != Some(0) {
        env.coffer(&["fsck", st, "--repair"]);
        env.assert_fsck_clean();
    }
}

/// `coffer backup` into a store whose filesystem fills up (the case: hundreds of
/// lines, the catalog left behind the data, and a rerun that said nothing while fsck found
/// every file unrecorded): it stops at the first file that does not fit, names that one, says
/// in one line that the store is full and what to do, and exits 2. Once there is room, the
/// same command finishes the job, catalog included: fsck is clean without --repair.
#[test]
fn a_backup_into_a_full_store_stops_says_so_once_and_the_rerun_finishes_it() {
    let (env, small, _fs) = small_store();
    let src = source(&env);
    let (src_arg, dest) = (format!("{}/", s(&src)), format!("{}:x", s(&env.store)));

    let o = env.coffer(&["backup", &src_arg, &dest, "--jobs", "2"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let full = err
        .lines()
        .filter(|l| l.starts_with("coffer: the store is full: "))
        .collect::<Vec<_>>();
    assert_eq!(full.len(), 1, "one line says the store is full: {err}");
    assert!(
        full[0].contains("run the same command again to finish"),
        "{err}"
    );
    assert!(
        !err.contains('\u{1b}'),
        "log lines to a pipe carry no colour codes: {err:?}"
    );
    let named = err.matches("No space left on device").count();
    // One per worker at most from the store's log (a block write that failed), one for the
    // catalog, one for the file named: never one per file.
    assert!(
        err.lines().count() <= 9 && named <= 6 && !err.contains("Interrupted"),
        "no line per file that did not fit: {err}"
    );

    sh(&format!("mount -o remount,size=64m '{}'", small.display()));
    let o = env.coffer(&["backup", &src_arg, &dest]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("did not finish"),
        "the rerun says what it found: {err}"
    );
    assert_whole(&env, &src);
}

/// Unmount while the store's disk is full: the catalog's last commit may find no room, and
/// then `coffer umount` must say so (exit 2), where it said nothing.
fn umount_while_full(env: &Env, m: common::Mounted) {
    std::mem::forget(m);
    let o = env.coffer(&["umount", s(&env.mnt)]);
    let err = String::from_utf8_lossy(&o.stderr);
    match o.status.code() {
        Some(0) => assert!(err.is_empty(), "{err}"),
        _ => assert!(
            o.status.code() == Some(2) && err.contains("could not flush the store's catalog"),
            "{err}"
        ),
    }
}

/// fsck is clean without --repair, and the store's `x` restores as `src` byte for byte.
fn assert_whole(env: &Env, src: &Path) {
    env.assert_fsck_clean();
    let out = env.path("out");
    env.coffer_ok(&["restore", &format!("{}:x/", s(&env.store)), s(&out)]);
    let diff = sh(&format!("diff -r '{}' '{}'", s(src), s(&out)));
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
}

/// An env whose store lives on an 8 MB tmpfs of its own (its path, and the guard that
/// unmounts it).
fn small_store() -> (Env, std::path::PathBuf, Tmpfs) {
    let mut env = Env::new();
    let small = env.path("small");
    let fs = tmpfs(&small, "8m");
    env.store = env.path("small/store");
    env.init();
    (env, small, fs)
}

/// 600 files of 20 to 38 KB in 12 directories (17 MB): more than an 8 MB store holds.
fn source(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    for i in 0..600u64 {
        let d = src.join(format!("d{}", i % 12));
        fs::create_dir_all(&d).expect("mkdir");
        fs::write(
            d.join(format!("f{i}")),
            pattern(i, 20_000 + (i as usize % 7) * 3000),
        )
        .expect("write");
    }
    src
}

/// rsync into a mount whose store fills up: rsync fails (as it must); if the daemon cannot
/// flush the catalog at unmount, `coffer umount` says so and exits non-zero (it said nothing
/// and exited 0, and fsck then found hundreds of files unrecorded). Once there is room, the
/// next mount says what it found, the same rsync finishes the job, catalog included, and
/// fsck is clean without --repair.
#[test]
fn rsync_into_a_mount_on_a_full_store_is_told_at_umount_and_the_rerun_finishes_it() {
    if !require_fuse() {
        return;
    }
    let (env, small, _fs) = small_store();
    let src = source(&env);
    let rsync = |m: &common::Mounted| sh(&format!("rsync -a '{}/' '{}/'", s(&src), s(&m.p("x"))));
    let m = env.mount();
    let o = rsync(&m);
    assert!(!o.status.success(), "rsync into a full store fails");
    std::mem::forget(m);
    let o = env.coffer(&["umount", s(&env.mnt)]);
    let err = String::from_utf8_lossy(&o.stderr);
    match o.status.code() {
        Some(0) => {
            eprintln!("the catalog was flushed before the disk filled: fsck must be clean");
            env.assert_fsck_clean();
        }
        _ => assert!(
            err.contains("could not flush the store's catalog") && err.lines().count() == 1,
            "{err}"
        ),
    }

    sh(&format!("mount -o remount,size=64m '{}'", small.display()));
    let m = env.mount();
    let o = rsync(&m);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    m.umount();
    assert_whole(&env, &src);
}

/// A restore into a target that fills up stops at the first file that does not fit, says in
/// one line that the target is full and what to do, exits 2; once there is room the same
/// command finishes the job, and the tree is whole.
#[test]
fn a_restore_into_a_full_target_stops_says_so_once_and_the_rerun_finishes_it() {
    let env = Env::new();
    env.init();
    let src = source(&env);
    env.coffer_ok(&[
        "backup",
        &format!("{}/", s(&src)),
        &format!("{}:x", s(&env.store)),
    ]);
    let small = env.path("small");
    let _fs = tmpfs(&small, "8m");
    let (from, to) = (format!("{}:x/", s(&env.store)), small.join("out"));
    let o = env.coffer(&["restore", &from, s(&to), "--jobs", "2"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let full: Vec<_> = err
        .lines()
        .filter(|l| l.starts_with("coffer: the restore's target is full: "))
        .collect();
    assert_eq!(full.len(), 1, "{err}");
    assert!(
        err.lines().count() <= 4 && !err.contains("Interrupted"),
        "no line per file that did not fit: {err}"
    );

    sh(&format!("mount -o remount,size=64m '{}'", small.display()));
    env.coffer_ok(&["restore", &from, s(&to)]);
    let diff = sh(&format!("diff -r '{}' '{}'", s(&src), s(&to)));
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stdout)
    );
}
