//! `coffer backup` and `coffer restore` when things go wrong: a backup killed with SIGKILL at
//! moments spread over the run and run again (the rerun finishes the job, nothing is lost or
//! torn, no temporary file is left, fsck finds the store clean); one stopped with Ctrl-C; a
//! restore of a store whose ciphertext was tampered with.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::trees::dump;
use common::{pattern, require_fuse, s, sh_ok, Env};

fn entries_under(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            n += 1;
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    n
}

fn tree(src: &Path) {
    for i in 0..2000u64 {
        let d = src.join(format!("d{:02}", i % 25));
        fs::create_dir_all(&d).expect("mkdir");
        fs::write(
            d.join(format!("f{i}")),
            pattern(i, 1000 + (i as usize * 37) % 9000),
        )
        .expect("write");
    }
    fs::write(src.join("large"), pattern(99, 48 << 20)).expect("write");
    sh_ok(&format!(
        "cd '{}' && ln d00/f0 hard-a && ln d00/f0 d01/hard-b && ln -s d02/f2 link",
        s(src)
    ));
}

/// Start a backup of `src/` into `dest`, its output kept.
fn start_backup(env: &Env, src_arg: &str, dest: &str, extra: &[&str]) -> Child {
    Command::new(common::bin())
        .args([&["backup", src_arg, dest][..], extra].concat())
        .env("COFFER_KEYSTORE", &env.keystore)
        .env("COFFER_PASSPHRASE_FILE", &env.pass)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn")
}

/// Poll until the store's data holds `n` more entries than `start`, or the child ended.
fn wait_for_entries(child: &mut Child, data: &Path, start: usize, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().expect("wait").is_none()
        && entries_under(data) < start + n
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn ctrl_c_stops_a_backup_cleanly_and_a_rerun_finishes_it() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    tree(&src);
    let (src_arg, dest) = (format!("{}/", s(&src)), format!("{}:x", s(&env.store)));
    let data = env.store.join("data");
    let start = entries_under(&data);
    let mut child = start_backup(&env, &src_arg, &dest, &["--json", "--jobs", "1"]);
    wait_for_entries(&mut child, &data, start, 30);
    // SAFETY: kill has no memory effects; the pid is our child's, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let o = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(20), "{err}");
    assert!(
        err.contains("interrupted: run the same command again to finish"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["interrupted"], true);
    assert!(v["files_written"].as_u64().expect("n") < 2004, "{v}");
    // The file in hand is dropped, not a failure (it was counted and named as one).
    assert_eq!(v["failed"], 0, "{v}");
    assert!(!err.contains("cannot back up"), "{err}");

    let again = env.coffer(&["backup", &src_arg, &dest]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(
        !said.contains("did not finish"),
        "a clean stop leaves no stale record: {said}"
    );
    env.assert_fsck_clean();
    let out = env.path("out");
    env.coffer_ok(&["restore", &format!("{}:x/", s(&env.store)), s(&out)]);
    assert_eq!(dump(&out), dump(&src));
}

#[test]
fn a_restore_of_tampered_ciphertext_names_the_file_and_restores_the_rest() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("victim"), pattern(5, 300_000)).expect("write");
    fs::write(src.join("other"), pattern(6, 1000)).expect("write");
    env.coffer_ok(&[
        "backup",
        &format!("{}/", s(&src)),
        &format!("{}:t", s(&env.store)),
    ]);
    let victim = Env::all_bytes(&env.store.join("data"))
        .into_iter()
        .max_by_key(|(_, b)| b.len())
        .map(|(p, _)| p)
        .expect("a ciphertext file");
    let mut bytes = fs::read(&victim).expect("read");
    bytes[150_000] ^= 1;
    fs::write(&victim, bytes).expect("tamper");

    let out = env.path("out");
    let o = env.coffer(&["restore", &format!("{}:t/", s(&env.store)), s(&out)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(23), "{err}");
    let named = format!(
        "{}: cannot restore: Input/output error",
        out.join("victim").display()
    );
    assert!(err.contains(&named), "{err}");
    assert!(
        err.contains("tampered or damaged ciphertext"),
        "the log line says why: {err}"
    );
    let log_lines = err.lines().filter(|l| !l.starts_with("coffer: "));
    assert!(
        log_lines.clone().count() > 0 && log_lines.clone().all(|l| !l.contains("victim")),
        "log lines name ciphertext paths only: {err}"
    );
    assert_eq!(
        fs::read(out.join("other")).expect("restored"),
        pattern(6, 1000)
    );
    let left = sh_ok(&format!("ls -A '{}'", s(&out)));
    assert_eq!(left, "other\n", "nothing half-written is left");
}

#[test]
fn a_backup_killed_at_moments_through_the_run_finishes_on_the_next() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    tree(&src);
    let want = dump(&src);
    let dest = format!("{}:x", s(&env.store));
    let src_arg = format!("{}/", s(&src));
    let data = env.store.join("data");
    let (mut killed, mut last_killed) = (0, false);
    for grow in [40usize, 400, 300] {
        let start = entries_under(&data);
        let mut child = start_backup(&env, &src_arg, &dest, &["--jobs", "2"]);
        wait_for_entries(&mut child, &data, start, grow);
        last_killed = child.try_wait().expect("wait").is_none();
        if last_killed {
            child.kill().expect("SIGKILL");
            killed += 1;
        }
        child.wait().expect("reaped");
    }
    assert!(killed >= 2, "the runs were killed part way ({killed} of 3)");

    let o = env.coffer(&["backup", &src_arg, &dest, "--json"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let said = String::from_utf8_lossy(&o.stderr);
    if last_killed {
        assert!(
            said.contains("did not finish"),
            "the rerun says what it found: {said}"
        );
    }
    env.assert_fsck_clean();
    let again = env.coffer_ok(&["backup", &src_arg, &dest, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&again).expect("json");
    assert_eq!(v["files_written"], 0, "the job was finished: {v}");

    let m = env.mount_with(&["--read-only"]);
    assert_eq!(dump(&m.p("x")), want, "nothing lost, nothing torn");
    let left = sh_ok(&format!("find '{}' -name '.coffer-partial.*'", s(&env.mnt)));
    assert_eq!(left, "", "no temporary file is left");
    m.umount();
}

#[test]
fn a_restore_never_writes_through_a_symlink_planted_in_its_target() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("etc")).expect("mkdir");
    fs::write(src.join("etc/passwd"), b"from the backup").expect("write");
    fs::write(src.join("motd"), b"from the backup").expect("write");
    env.coffer_ok(&[
        "backup",
        &format!("{}/", s(&src)),
        &format!("{}:t", s(&env.store)),
    ]);

    // Someone who can write the target plants symlinks where the restore will write.
    let (victim_dir, victim_file) = (env.path("victim-dir"), env.path("victim-file"));
    fs::create_dir_all(&victim_dir).expect("mkdir");
    fs::write(&victim_file, b"untouched").expect("write");
    let out = env.path("out");
    fs::create_dir_all(&out).expect("mkdir");
    std::os::unix::fs::symlink(&victim_dir, out.join("etc")).expect("symlink");
    std::os::unix::fs::symlink(&victim_file, out.join("motd")).expect("symlink");

    let o = env.coffer(&["restore", &format!("{}:t/", s(&env.store)), s(&out)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(23),
        "the planted directory is refused: {err}"
    );
    assert!(
        err.contains(&format!("{}: cannot restore", out.join("etc").display())),
        "{err}"
    );
    assert_eq!(
        fs::read_dir(&victim_dir).expect("ls").count(),
        0,
        "nothing written through it"
    );
    assert_eq!(fs::read(&victim_file).expect("read"), b"untouched");
    let motd = out.join("motd");
    assert!(
        !motd
            .symlink_metadata()
            .expect("stat")
            .file_type()
            .is_symlink(),
        "replaced, not followed"
    );
    assert_eq!(fs::read(&motd).expect("read"), b"from the backup");

    // The TARGET named on the command line is resolved as the shell and rsync resolve it:
    // a symlink to a directory is that directory (docs/backup.md says so).
    let real = env.path("real");
    fs::create_dir(&real).expect("mkdir");
    let via = env.path("via");
    std::os::unix::fs::symlink(&real, &via).expect("symlink");
    let o = env.coffer(&["restore", &format!("{}:t/", s(&env.store)), s(&via)]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(via
        .symlink_metadata()
        .expect("stat")
        .file_type()
        .is_symlink());
    assert_eq!(
        fs::read(real.join("motd")).expect("read"),
        b"from the backup"
    );
}

#[test]
fn a_store_on_read_only_media_restores() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("a"), pattern(8, 9000)).expect("write");
    env.coffer_ok(&[
        "backup",
        &format!("{}/", s(&src)),
        &format!("{}:t", s(&env.store)),
    ]);
    let out = env.path("out");
    // A mount namespace of its own, where the store is a read-only bind mount.
    let script = format!(
        "set -e; mount --make-rprivate /; mount --bind '{store}' '{store}'
         mount -o remount,bind,ro '{store}'; ! touch '{store}/probe' 2>/dev/null
         COFFER_KEYSTORE='{ks}' COFFER_PASSPHRASE_FILE='{pass}' {bin} restore '{store}:t/' '{out}'",
        store = s(&env.store),
        ks = s(&env.keystore),
        pass = s(&env.pass),
        bin = common::bin(),
        out = s(&out)
    );
    let o = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .expect("unshare");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fs::read(out.join("a")).expect("restored"), pattern(8, 9000));
}

#[test]
fn the_run_after_a_killed_holder_removes_what_its_interrupted_operations_left() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).expect("mkdir");
    fs::write(src.join("d/f"), b"f").expect("write");
    let dest = format!("{}:x", s(&env.store));
    env.coffer_ok(&["backup", &format!("{}/", s(&src)), &dest]);
    // What a holder killed inside a mkdir leaves: the new directory under its temporary name
    // (with its IV), and the holder's lock record.
    let data = env.store.join("data");
    let x = fs::read_dir(&data)
        .expect("ls")
        .flatten()
        .find(|e| e.path().is_dir())
        .expect("x")
        .path();
    let left = x.join(".tmp-mkdir-0123456789abcdef");
    fs::create_dir(&left).expect("mkdir");
    fs::write(left.join(".diriv"), [7u8; 16]).expect("write");
    fs::write(env.store.join("lock"), "999999\n\nbacking up\n").expect("record");
    let o = env.coffer(&["backup", &format!("{}/", s(&src)), &dest]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("pid 999999, backing up) did not finish"),
        "{err}"
    );
    assert!(!left.exists(), "the leftover is gone");
    env.assert_fsck_clean();
}

/// Give `f` the largest `user.` attribute its filesystem takes; its length.
fn largest_xattr(f: &Path) -> usize {
    let set = |n: usize| {
        let c = std::ffi::CString::new(s(f)).expect("path");
        let v = vec![b'a'; n];
        // SAFETY: c and v outlive the call; the name is NUL-terminated.
        unsafe { libc::setxattr(c.as_ptr(), c"user.big".as_ptr(), v.as_ptr().cast(), n, 0) == 0 }
    };
    let (mut lo, mut hi) = (1usize, 65536usize);
    assert!(set(lo), "this filesystem keeps user attributes");
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        match set(mid) {
            true => lo = mid,
            false => hi = mid - 1,
        }
    }
    assert!(set(lo));
    lo
}

/// A file that cannot be stored whole (here: an attribute that the store's filesystem, the
/// source's own, cannot hold once sealed) is reported, and leaves nothing behind: not its
/// name, not a temporary one, not a catalog record. The rest of the tree is backed up, and
/// the next run says the same. In format 3 the file is made unnamed and linked only once
/// whole; in format 2 it is written under a temporary name that the failure removes.
#[test]
fn a_file_that_cannot_be_stored_whole_leaves_nothing_behind() {
    for format in [3, 2] {
        if format == 2 && !require_fuse() {
            return;
        }
        let env = Env::new();
        env.init();
        if format == 2 {
            env.older_format(2);
        }
        let src = env.path("src");
        fs::create_dir_all(&src).expect("mkdir");
        fs::write(src.join("kept"), b"kept").expect("write");
        fs::write(src.join("big-attr"), pattern(7, 100_000)).expect("write");
        let n = largest_xattr(&src.join("big-attr"));
        let data = env.store.join("data");
        let before = entries_under(&data);
        let (src_arg, dest) = (format!("{}/", s(&src)), format!("{}:x", s(&env.store)));
        for _ in 0..2 {
            let o = env.coffer(&["backup", &src_arg, &dest]);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(
                o.status.code(),
                Some(23),
                "format {format}, {n}-byte attribute: {err}"
            );
            let said = format!("big-attr: cannot back up: an extended attribute of {n} bytes does not fit in the store once sealed");
            assert!(err.contains(&said), "{err}");
            assert!(err.contains("1 failed"), "{err}");
            // The directory x, its .diriv and the one file: nothing else, hidden or not.
            let listing = sh_ok(&format!(
                "find '{}' -mindepth 1 -printf '%P %s\\n'",
                s(&data)
            ));
            assert_eq!(
                entries_under(&data),
                before + 3,
                "format {format}: {listing}"
            );
            env.assert_fsck_clean();
        }
        let out = env.path("out");
        env.coffer_ok(&["restore", &format!("{}:x/", s(&env.store)), s(&out)]);
        assert_eq!(sh_ok(&format!("ls -A '{}'", s(&out))), "kept\n");
    }
}
