//! What `coffer fsck` shows of a long check: a progress bar on a terminal and nothing of it
//! otherwise, and `--json` with every finding and count, on a clean store and a damaged one,
//! whose damaged file it names by its plaintext path beside its ciphertext path.

mod common;

use std::fs;

use common::{pattern, s, Env};

/// A store of 3000 small files, written without a mount.
fn filled() -> Env {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    for i in 0..3000u64 {
        let d = src.join(format!("d{}", i % 10));
        fs::create_dir_all(&d).expect("mkdir");
        fs::write(d.join(format!("f{i}")), pattern(i, 700)).expect("write");
    }
    env.coffer_ok(&[
        "backup",
        &format!("{}/", s(&src)),
        &format!("{}:a", s(&env.store)),
    ]);
    env
}

fn json(env: &Env) -> (i32, serde_json::Value) {
    let o = env.coffer(&["fsck", s(&env.store), "--json"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.lines().count(), 1, "one JSON object: {out}");
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v = serde_json::from_str(&out).expect("JSON");
    (o.status.code().expect("exit"), v)
}

#[test]
fn fsck_json_has_every_finding_and_count() {
    let env = filled();
    let (code, v) = json(&env);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["clean"], true);
    assert_eq!(v["files"], 3000);
    assert_eq!(v["dirs"], 11);
    assert_eq!(v["plain_bytes"], 3000 * 700);
    assert_eq!(v["problems"], serde_json::json!([]));
    assert_eq!(v["store"], s(&env.store));

    // One ciphertext file damaged: a problem that names it by its ciphertext path only.
    let victim = common::sh_ok(&format!(
        "find {}/data -type f ! -name .diriv | sort | head -n 1",
        s(&env.store)
    ));
    let victim = victim.trim();
    let mut bytes = fs::read(victim).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(victim, bytes).expect("write");
    let (code, v) = json(&env);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["clean"], false);
    let problems = v["problems"].as_array().expect("problems");
    let name = std::path::Path::new(victim)
        .file_name()
        .expect("name")
        .to_string_lossy();
    assert!(
        problems.iter().any(|p| p
            .as_str()
            .is_some_and(|p| p.contains(name.as_ref()) && p.contains("failed authentication"))),
        "{v}"
    );
    // Named by its plaintext path too (the name key is here), and counted with its bytes.
    let p = problems[0].as_str().expect("text");
    let plain = p
        .split_once(" (")
        .and_then(|(_, r)| r.split_once(')'))
        .map(|(n, _)| n)
        .expect("a plaintext path in parentheses");
    assert!(plain.starts_with("/a/d") && plain.contains("/f"), "{plain}");
    assert_eq!(
        fs::read(env.path("src").join(&plain[3..]))
            .expect("that file")
            .len(),
        700
    );
    assert_eq!(v["damaged_files"], 1, "{v}");
    assert_eq!(v["damaged_bytes"], last as u64 + 1, "{v}");
    // Reported once: the damaged file is there, so its catalog record is not "gone" too.
    assert_eq!(problems.len(), 1, "{v}");
    assert!(!v.to_string().contains("whose file is gone"), "{v}");
    // --no-names: a report to send elsewhere holds no plaintext path.
    let o = env.coffer(&["fsck", s(&env.store), "--no-names"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        !out.contains(plain) && out.contains("(1 damaged files,"),
        "{out}"
    );
}

#[test]
fn fsck_shows_a_bar_on_a_terminal_and_none_elsewhere() {
    let env = filled();
    // script(1) gives the check a terminal.
    let o = common::on_terminal(&env, &format!("fsck '{}'", s(&env.store)));
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{shown}");
    assert!(
        shown.contains("files") && shown.contains("ETA"),
        "a bar was drawn: {shown}"
    );
    assert!(shown.contains("3000 files"), "{shown}");

    let o = env.coffer(&["fsck", s(&env.store)]);
    assert!(o.status.success());
    assert!(
        o.stderr.is_empty(),
        "no bar: {:?}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.lines().count(), 1, "the summary alone: {out}");
    assert!(out.contains("3000 files"), "{out}");
}
