//! `coffer stats MOUNTPOINT`: a running mount's counters, asked of its daemon, each one
//! checked against what the test did through the mount.

mod common;

use std::fs;

use common::{drop_caches, pattern, require_fuse, s, Env};

fn stats(env: &Env) -> serde_json::Value {
    let out = env.coffer_ok(&["stats", s(&env.mnt), "--json"]);
    serde_json::from_str(&out).expect("JSON")
}

#[test]
fn stats_count_what_went_through_the_mount() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    {
        let m = env.mount();
        fs::write(m.p("old"), pattern(1, 300_000)).expect("write");
        m.umount();
    }
    let m = env.mount();
    let data = pattern(2, 1_000_000);
    fs::write(m.p("new"), &data).expect("write");
    fs::create_dir(m.p("d")).expect("mkdir");
    fs::write(m.p("d/x"), b"x").expect("write");
    let e = fs::remove_dir(m.p("d")).expect_err("not empty");
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY));
    drop_caches();
    assert_eq!(fs::read(m.p("old")).expect("read"), pattern(1, 300_000));
    let v = stats(&env);
    assert_eq!(v["bytes_written"], 1_000_001, "{v}");
    assert!(
        v["bytes_read"].as_u64().is_some_and(|n| n >= 300_000),
        "{v}"
    );
    assert_eq!(v["errors"]["ENOTEMPTY"], 1, "{v}");
    assert!(
        v["operations"]["write"].as_u64().is_some_and(|n| n >= 1),
        "{v}"
    );
    assert_eq!(v["operations"]["mkdir"], 1, "{v}");
    assert_eq!(v["operations"]["rmdir"], 1, "{v}");
    assert!(v["catalog_commits"].as_u64().is_some_and(|n| n >= 1), "{v}");
    assert_eq!(v["batch_key_unwraps"], 1, "the old file's batch, once: {v}");
    assert_eq!(v["mountpoint"], s(&env.mnt));
    assert!(
        !v.to_string().contains("old") && !v.to_string().contains("\"d/x"),
        "no names: {v}"
    );

    // The text form says the same.
    let text = env.coffer_ok(&["stats", s(&env.mnt)]);
    assert!(
        text.contains("ENOTEMPTY 1") && text.contains("batch keys opened: 1"),
        "{text}"
    );
    m.umount();
    // Unmounted: nothing to ask, one line.
    let o = env.coffer(&["stats", s(&env.mnt)]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("is not a mounted coffer store") && err.lines().count() == 1,
        "{err}"
    );
}
