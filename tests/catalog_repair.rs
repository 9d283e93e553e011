//! Losing or damaging the catalog loses no data: mount refuses with a clear message, fsck
//! reports it, fsck --repair rebuilds it from the file headers, and every byte reads back.

mod common;

use std::fs;

use common::{pattern, require_fuse, Env};

fn fill(env: &Env) -> Vec<(String, Vec<u8>)> {
    let m = env.mount();
    let mut files = Vec::new();
    fs::create_dir_all(m.p("x/y")).expect("mkdir");
    for i in 0..30u64 {
        let name = format!("x/{}f{i}", if i % 2 == 0 { "y/" } else { "" });
        let data = pattern(i, (i as usize) * 9000);
        fs::write(m.p(&name), &data).expect("write");
        files.push((name, data));
    }
    m.umount();
    files
}

fn damage_and_repair(env: &Env, damage: impl Fn(&std::path::Path)) {
    let files = fill(env);
    let s = env.store.to_str().expect("utf8");
    assert_eq!(
        env.coffer(&["fsck", s]).status.code(),
        Some(0),
        "clean before"
    );
    damage(&env.store.join("catalog"));
    let o = env.coffer(&["mount", s, env.mnt.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("catalog") && e.contains("coffer fsck --repair"),
        "{e}"
    );
    let o = env.coffer(&["fsck", s]);
    assert_eq!(o.status.code(), Some(1), "fsck reports the catalog");
    assert!(String::from_utf8_lossy(&o.stdout).contains("problem: catalog"));
    let o = env.coffer(&["fsck", s, "--repair"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "repair: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_eq!(
        env.coffer(&["fsck", s]).status.code(),
        Some(0),
        "clean after repair"
    );
    let m = env.mount();
    for (name, data) in &files {
        assert_eq!(&fs::read(m.p(name)).expect("read"), data, "{name}");
    }
    m.umount();
    let info = env.coffer_ok(&["info", s, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&info).expect("json");
    assert_eq!(v["catalog_records"], 30);
}

#[test]
fn deleted_catalog_is_rebuilt() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    damage_and_repair(&env, |p| fs::remove_file(p).expect("rm catalog"));
}

#[test]
fn garbled_catalog_is_rebuilt() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    damage_and_repair(&env, |p| {
        let mut b = fs::read(p).expect("read");
        for x in b.iter_mut().take(4096) {
            *x ^= 0x5a;
        }
        fs::write(p, b).expect("write");
    });
}

#[test]
fn truncated_catalog_is_rebuilt() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    damage_and_repair(&env, |p| {
        fs::OpenOptions::new()
            .write(true)
            .open(p)
            .expect("open")
            .set_len(1000)
            .expect("truncate")
    });
}

/// A create that a crash cut short leaves a ciphertext file shorter than a header (the
/// crash test found one): fsck reports it, and --repair makes it the empty file it was.
#[test]
fn a_file_cut_before_its_header_is_repaired_to_empty() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let m = env.mount();
    fs::write(m.p("cut-short"), b"").expect("create");
    fs::write(m.p("other"), pattern(8, 10_000)).expect("write");
    m.umount();
    let data = env.store.join("data");
    let cut = fs::read_dir(&data)
        .expect("ls")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.len() == 132 + 28)
                .unwrap_or(false)
        })
        .expect("the empty file's ciphertext");
    fs::OpenOptions::new()
        .write(true)
        .open(&cut)
        .expect("open")
        .set_len(40)
        .expect("cut into the header");
    let s = env.store.to_str().expect("utf8");
    let o = env.coffer(&["fsck", s]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("header is truncated"));
    let o = env.coffer(&["fsck", s, "--repair"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("now an empty file"), "{out}");
    env.assert_fsck_clean();
    let m = env.mount();
    assert_eq!(fs::read(m.p("cut-short")).expect("read"), b"");
    assert_eq!(fs::read(m.p("other")).expect("read"), pattern(8, 10_000));
    m.umount();
}
