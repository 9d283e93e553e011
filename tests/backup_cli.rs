//! What a person sees of `coffer backup` and `coffer restore`: a progress bar on a terminal
//! and nothing of it otherwise, `--help` with examples, and one clear line for each mistake
//! (no store at the path, a bad pattern, a missing source, a store that is mounted).

mod common;

use std::fs;

use common::{pattern, require_fuse, s, Env};

fn tree(env: &Env) -> std::path::PathBuf {
    let src = env.path("src");
    for i in 0..3000u64 {
        let d = src.join(format!("d{}", i % 10));
        fs::create_dir_all(&d).expect("mkdir");
        fs::write(d.join(format!("f{i}")), pattern(i, 700)).expect("write");
    }
    src
}

#[test]
fn a_progress_bar_on_a_terminal_and_none_elsewhere() {
    let env = Env::new();
    env.init();
    let src = tree(&env);
    // script(1) gives the run a terminal; one worker makes it last long enough to draw.
    let o = common::on_terminal(
        &env,
        &format!("backup -j 1 '{}/' '{}:a'", s(&src), s(&env.store)),
    );
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{shown}");
    assert!(
        shown.contains("files") && shown.contains("ETA"),
        "a bar was drawn: {shown}"
    );
    assert!(shown.contains("backed up 3000 files"), "{shown}");

    let o = env.coffer(&[
        "backup",
        "-j",
        "1",
        &format!("{}/", s(&src)),
        &format!("{}:b", s(&env.store)),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert_eq!(err.lines().count(), 1, "no bar, one summary line: {err:?}");
    assert!(
        err.starts_with("coffer: backed up 3000 files") && !err.contains('\r'),
        "{err:?}"
    );
}

#[test]
fn help_shows_examples() {
    let env = Env::new();
    for cmd in ["backup", "restore"] {
        let out = String::from_utf8_lossy(&env.coffer(&[cmd, "--help"]).stdout).into_owned();
        assert!(
            out.contains("Examples:") && out.contains(&format!("coffer {cmd} ")),
            "{out}"
        );
        assert!(out.contains("--exclude") && out.contains("--dry-run") && out.contains("--json"));
    }
}

#[test]
fn each_mistake_gets_one_clear_line() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let store = s(&env.store).to_string();
    let cases: [(Vec<String>, String); 4] = [
        (
            vec![
                "backup".into(),
                s(&src).into(),
                format!("{}/nothere:x", s(env.dir.path())),
            ],
            "names no store: give STORE:PATH".into(),
        ),
        (
            vec![
                "backup".into(),
                s(&src).into(),
                format!("{store}:x"),
                "--exclude".into(),
                "a[".into(),
            ],
            "bad exclude pattern \"a[\"".into(),
        ),
        (
            vec![
                "backup".into(),
                s(&env.path("missing")).into(),
                format!("{store}:x"),
            ],
            "missing: No such file or directory".into(),
        ),
        (
            vec![
                "restore".into(),
                format!("{store}:not/there"),
                s(&env.path("out")).into(),
            ],
            "not/there in the store: No such file or directory".into(),
        ),
    ];
    for (args, want) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = env.coffer(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(&want), "{args:?}: {err}");
    }
}

#[test]
fn a_mounted_store_is_refused_with_where_it_is_mounted() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    let m = env.mount();
    for args in [
        vec!["backup", s(&src), &format!("{}:x", s(&env.store))],
        vec![
            "restore",
            &format!("{}:", s(&env.store)),
            s(&env.path("out")),
        ],
    ] {
        let args: Vec<&str> = args.iter().map(|a| a.as_ref()).collect();
        let o = env.coffer(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains(&format!("is in use (mounted at {}", s(&env.mnt))),
            "{err}"
        );
    }
    m.umount();
}

/// `--delete` from a source that is empty (an unmounted disk, say) removed the whole backup
/// and exited 0. Now it keeps what is more than half of what the store holds under the
/// target, says so in one line and exits 25; `--max-delete N` lets N go (and keeps the rest,
/// as rsync's does); a dry run says what it would delete on stderr under --json.
#[test]
fn delete_from_an_empty_source_keeps_the_backup_unless_max_delete_allows_it() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    for d in ["a", "b", "c", "d"] {
        fs::create_dir_all(src.join(d)).expect("mkdir");
        fs::write(src.join(d).join("f"), d).expect("write");
    }
    let (src_arg, dest) = (format!("{}/", s(&src)), format!("{}:t", s(&env.store)));
    env.coffer_ok(&["backup", &src_arg, &dest]);
    let restored = |n: &str| -> String {
        let out = env.path(n);
        env.coffer_ok(&["restore", &format!("{dest}/"), s(&out)]);
        common::sh_ok(&format!("cd '{}' && ls", s(&out)))
    };

    // One of four gone: deleted as ever.
    fs::remove_dir_all(src.join("d")).expect("rm");
    let o = env.coffer(&["backup", "--delete", &src_arg, &dest, "--json"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(
        (v["deleted"].as_u64(), v["deletes_refused"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(restored("r1"), "a\nb\nc\n");

    // The source emptied (as an unmounted disk's mount point is): nothing deleted.
    for d in ["a", "b", "c"] {
        fs::remove_dir_all(src.join(d)).expect("rm");
    }
    let o = env.coffer(&["backup", "--delete", &src_arg, &dest]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(25), "{err}");
    let said: Vec<_> = err
        .lines()
        .filter(|l| l.contains("--delete kept 3 entries"))
        .collect();
    assert_eq!(said.len(), 1, "one line says so: {err}");
    assert!(said[0].contains("--max-delete N"), "{err}");
    assert_eq!(restored("r2"), "a\nb\nc\n", "the backup is whole");

    // --max-delete 2: two go, one is kept, exit 25; then --max-delete 5 lets the last go.
    let o = env.coffer(&["backup", "--delete", "--max-delete", "2", &src_arg, &dest]);
    assert_eq!(
        o.status.code(),
        Some(25),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(restored("r3").lines().count(), 1);
    let o = env.coffer(&["backup", "--delete", "--max-delete", "5", &src_arg, &dest]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(restored("r4"), "");
}

/// A read-only mount, fsck without --repair and a restore only read: they share the store's
/// lock and run side by side (a read-only mount blocked fsck and restore). A writer still
/// waits for them, and one mount at a time keeps the store.
#[test]
fn a_read_only_mount_lets_fsck_and_restore_run_beside_it() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("a"), b"kept").expect("write");
    env.coffer_ok(&[
        "backup",
        &format!("{}/", s(&src)),
        &format!("{}:x", s(&env.store)),
    ]);
    let m = env.mount_with(&["--read-only"]);
    let out = env.path("out");
    env.coffer_ok(&["restore", &format!("{}:x/", s(&env.store)), s(&out)]);
    assert_eq!(fs::read(out.join("a")).expect("restored"), b"kept");
    env.assert_fsck_clean();
    let o = env.coffer(&[
        "backup",
        &format!("{}/", s(&src)),
        &format!("{}:y", s(&env.store)),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("is in use (mounted at {}", s(&env.mnt))),
        "{err}"
    );
    let mnt2 = env.path("mnt2");
    fs::create_dir(&mnt2).expect("mkdir");
    let o = env.coffer(&["mount", s(&env.store), s(&mnt2), "--read-only"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    m.umount();
}
