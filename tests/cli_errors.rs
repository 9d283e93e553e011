//! Operational errors: one line on stderr, exit code 2, nothing changed or mounted.

mod common;

use std::fs;

use common::{require_fuse, Env};

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_one_line_exit2(o: &std::process::Output, needle: &str) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "exit code for: {e}");
    assert_eq!(e.trim_end().lines().count(), 1, "one line: {e:?}");
    assert!(e.contains(needle), "expected {needle:?} in {e:?}");
}

fn is_mounted(env: &Env) -> bool {
    fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .contains(env.mnt.to_str().expect("utf8"))
}

#[test]
fn wrong_passphrase_fails_before_mounting_and_changes_nothing() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let before: Vec<_> = Env::all_bytes(env.dir.path());
    fs::write(&env.pass, "not the passphrase\n").expect("write");
    let s = env.store.to_str().expect("utf8");
    let o = env.coffer(&["mount", s, env.mnt.to_str().expect("utf8")]);
    assert_one_line_exit2(&o, "wrong passphrase");
    assert!(!is_mounted(&env));
    let o = env.coffer(&["fsck", s]);
    assert_one_line_exit2(&o, "wrong passphrase");
    // Nothing in the store or keystore changed (the audit log may record the refusal).
    let after: Vec<_> = Env::all_bytes(env.dir.path());
    let strip = |v: Vec<(std::path::PathBuf, Vec<u8>)>| -> Vec<_> {
        v.into_iter()
            .filter(|(p, _)| {
                !p.ends_with("audit.log") && !p.ends_with("pass") && !p.ends_with("lock")
            })
            .collect()
    };
    assert_eq!(strip(before), strip(after));
    let audit = fs::read_to_string(env.keystore.join("audit.log")).expect("audit log");
    assert!(
        audit.contains("\"outcome\":\"refused\""),
        "refusal audited: {audit}"
    );
}

#[test]
fn bad_stores_mount_points_and_keys_say_so() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    let s = env.store.to_str().expect("utf8");
    let m = env.mnt.to_str().expect("utf8");
    // Not a store.
    fs::create_dir(&env.store).expect("mkdir");
    assert_one_line_exit2(&env.coffer(&["mount", s, m]), "is not a coffer store");
    assert_one_line_exit2(&env.coffer(&["info", s]), "is not a coffer store");
    // init refuses a non-empty directory and leaves it alone.
    fs::write(env.store.join("precious"), b"keep me").expect("write");
    assert_one_line_exit2(&env.coffer(&["init", s]), "is not empty");
    assert_eq!(
        fs::read(env.store.join("precious")).expect("kept"),
        b"keep me"
    );
    fs::remove_file(env.store.join("precious")).expect("rm");
    env.init();
    // Missing and non-directory mount points.
    let missing = env.path("nowhere");
    assert_one_line_exit2(
        &env.coffer(&["mount", s, missing.to_str().expect("utf8")]),
        "does not exist",
    );
    fs::write(env.path("afile"), b"").expect("write");
    assert_one_line_exit2(
        &env.coffer(&["mount", s, env.path("afile").to_str().expect("utf8")]),
        "is not a directory",
    );
    // A second mount of the same store, or on a busy mount point, is refused.
    let mounted = env.mount();
    fs::create_dir(env.path("mnt2")).expect("mkdir");
    assert_one_line_exit2(
        &env.coffer(&["mount", s, env.path("mnt2").to_str().expect("utf8")]),
        "is in use",
    );
    assert_one_line_exit2(&env.coffer(&["mount", s, m]), "already a mount point");
    assert_one_line_exit2(&env.coffer(&["fsck", s]), "is in use");
    // umount of a busy mount says so and leaves it mounted.
    let held = fs::File::open(mounted.p(".")).expect("hold the root open");
    let o = env.coffer(&["umount", m]);
    drop(held);
    if o.status.success() {
        panic!("umount of a busy mount succeeded");
    }
    assert!(stderr(&o).contains("busy"), "{}", stderr(&o));
    mounted.umount();
    assert_one_line_exit2(&env.coffer(&["umount", m]), "is not a mounted coffer store");
    // A keystore that lacks the store's key names the key id and the way to get it.
    let other = Env::new();
    let o = std::process::Command::new(common::bin())
        .args([
            "init",
            other.store.to_str().expect("utf8"),
            "--rsa-bits",
            "2048",
        ])
        .env("COFFER_KEYSTORE", &other.keystore)
        .env("COFFER_PASSPHRASE_FILE", &other.pass)
        .output()
        .expect("init other");
    assert!(o.status.success());
    let o = std::process::Command::new(common::bin())
        .args(["mount", s, m])
        .env("COFFER_KEYSTORE", &other.keystore)
        .env("COFFER_PASSPHRASE_FILE", &other.pass)
        .output()
        .expect("mount");
    let info = env.coffer_ok(&["info", s, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&info).expect("json");
    let key_id = v["master_keys"][0]["key_id"]
        .as_str()
        .expect("key id")
        .to_string();
    assert_one_line_exit2(&o, &key_id);
    assert!(stderr(&o).contains("coffer keys import"));
    // No passphrase source and no terminal: refuse instead of hanging.
    let o = std::process::Command::new(common::bin())
        .args(["mount", s, m])
        .env("COFFER_KEYSTORE", &env.keystore)
        .env_remove("COFFER_PASSPHRASE_FILE")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("mount");
    assert_one_line_exit2(&o, "no passphrase");
    assert!(!is_mounted(&env));
}

#[test]
fn help_has_examples_and_info_has_no_secrets() {
    let env = Env::new();
    for cmd in [
        vec!["--help"],
        vec!["init", "--help"],
        vec!["mount", "--help"],
        vec!["fsck", "--help"],
        vec!["upgrade", "--help"],
    ] {
        let o = env.coffer(&cmd);
        assert!(o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("coffer "),
            "{cmd:?} shows examples"
        );
    }
    let o = env.coffer(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2), "usage error exits 2");
    env.init();
    let info = env.coffer_ok(&["info", env.store.to_str().expect("utf8"), "--json"]);
    let v: serde_json::Value = serde_json::from_str(&info).expect("json");
    assert_eq!(v["format_version"], 3);
    assert_eq!(v["provider"], "local");
    assert_eq!(v["files"], 0);
    assert!(
        !info.contains("private_key") && !info.contains("name_key"),
        "{info}"
    );
}

/// A mistyped or unknown subcommand was taken for the mount helper's call form
/// (`coffer STORE MOUNTPOINT -o ...`) and answered "unknown mount flag --json". A bare word
/// that names nothing is a subcommand clap does not know; a path still goes to the helper.
#[test]
fn an_unknown_subcommand_is_called_one() {
    let env = Env::new();
    let o = env.coffer(&["snapshot", "STORE", "--json"]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("unrecognized subcommand 'snapshot'"), "{e}");
    assert!(!e.contains("mount flag"), "{e}");
    let o = env.coffer(&["/nowhere/store", "/mnt/x", "--json"]);
    assert!(
        stderr(&o).contains("unknown mount flag --json"),
        "{}",
        stderr(&o)
    );
}

/// `init` with the key in this host's keystore says that every backup now depends on that
/// keystore and its passphrase, and names --recovery-cert.
#[test]
fn init_says_what_the_backups_now_depend_on() {
    let env = Env::new();
    let o = env.coffer(&[
        "init",
        env.store.to_str().expect("utf8"),
        "--rsa-bits",
        "2048",
    ]);
    let e = stderr(&o);
    assert!(o.status.success(), "{e}");
    assert!(
        e.contains("now depends on this host's keystore")
            && e.contains(env.keystore.to_str().expect("utf8"))
            && e.contains("--recovery-cert"),
        "{e}"
    );
}
