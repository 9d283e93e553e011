//! The format only moves forward. A host that can write the store rewrites `coffer.store` to
//! say an earlier format (whose checks are fewer), as the attacker of the issue did: no
//! command of a host that holds the store's keys, nor of a backup-only host, opens it. Each
//! refuses with one line naming what happened, exit 2, and changes nothing: the key seals of
//! a format-3 store bind the format, and the keystore entry and the backup credential
//! remember the newest format they saw.

mod common;

use common::attacker::{descriptor_json, make_format_1, write_descriptor_json};
use common::{require_fuse, s, Env, Host};
use std::fs;

fn refused(o: &std::process::Output, says: u32, was: u32) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let want = format!(
        "coffer.store says format {says}, but this store was format {was}: the descriptor was \
         replaced; nothing was acted on"
    );
    assert!(err.contains(&want), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

/// Every command that opens a store, against `store` (whose keys `env` holds).
fn every_command(env: &Env, key: &str) -> Vec<Vec<String>> {
    let (st, m) = (s(&env.store).to_string(), s(&env.mnt).to_string());
    let (src, out) = (env.path("src"), env.path("out"));
    fs::create_dir_all(&src).expect("mkdir");
    let args: &[&[&str]] = &[
        &["mount", &st, &m],
        &["backup", s(&src), &st],
        &["restore", &format!("{st}:/"), s(&out)],
        &["fsck", &st],
        &["fsck", &st, "--repair"],
        &["upgrade", &st],
        &["keys", "rotate", &st],
        &["keys", "sync", &st],
        &["recover", &st, "--recovery-key", key],
    ];
    args.iter()
        .map(|a| a.iter().map(|x| x.to_string()).collect())
        .collect()
}

fn run_all(env: &Env, key: &str, says: u32, was: u32) {
    let before = common::store_bytes_but_descriptor(&env.store);
    let desc = fs::read(env.store.join("coffer.store")).expect("read");
    // Without a memory of the format, `keys sync` of a local store refuses for what it is
    // (not a kms store) before it asks for a key; tests/kms.rs refuses a kms one's.
    let remembered = fs::read_to_string(env.keystore.join("keystore.json"))
        .expect("keystore")
        .contains("\"format\": 3");
    for args in every_command(env, key) {
        if !remembered && args[1] == "sync" {
            continue;
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = env.coffer(&a);
        refused(&o, says, was);
    }
    assert_eq!(common::store_bytes_but_descriptor(&env.store), before);
    assert_eq!(
        fs::read(env.store.join("coffer.store")).expect("read"),
        desc
    );
    assert!(!env.path("out").exists(), "nothing was restored");
}

/// A format-3 store with a recovery record, a file in it, and the recovery key's path.
fn store_with_recovery(env: &Env) -> String {
    let p = env.path("org");
    env.coffer_ok(&["keys", "recovery-key", "--out", s(&p)]);
    env.init_with(&["--recovery-cert", &format!("{}.pem", p.display())]);
    let src = env.path("tree");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("passwd"), b"root:x:0:0::/root:/bin/sh\n").expect("write");
    env.coffer_ok(&["backup", s(&src), s(&env.store)]);
    format!("{}.key", p.display())
}

#[test]
fn a_format_3_store_rewritten_to_say_format_1_or_2_is_refused_by_every_command() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    let key = store_with_recovery(&env);
    let genuine = descriptor_json(&env.store);
    assert_eq!(genuine["version"], 3);
    // As the attacker: version 1, and the write key and both seals dropped.
    make_format_1(&env.store);
    run_all(&env, &key, 1, 3);
    // Version 2, everything else as it was.
    let mut v = genuine.clone();
    v["version"] = 2.into();
    write_descriptor_json(&env.store, &v);
    run_all(&env, &key, 2, 3);
    // A host whose keystore remembers nothing (its entry from before format 3 was noted):
    // the seals alone refuse it.
    let ks = env.keystore.join("keystore.json");
    let mut k: serde_json::Value =
        serde_json::from_slice(&fs::read(&ks).expect("read")).expect("json");
    for e in k["keys"].as_array_mut().expect("keys") {
        e.as_object_mut().expect("entry").remove("format");
    }
    fs::write(&ks, serde_json::to_vec(&k).expect("json")).expect("write");
    make_format_1(&env.store);
    run_all(&env, &key, 1, 3);
    // And the genuine descriptor back: everything opens again.
    write_descriptor_json(&env.store, &genuine);
    env.assert_fsck_clean();
}

#[test]
fn a_backup_only_host_refuses_a_descriptor_older_than_its_credential() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    let (key_host, backup_host) = (Host::new(&env, "key"), Host::new(&env, "backup"));
    key_host.ok(&["init", s(&env.store), "--rsa-bits", "2048"]);
    common::stores::give_credential(&env, &key_host, &backup_host, &env.store);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("f"), b"new backup").expect("write");
    let batches = || fs::read_dir(env.store.join("batches")).expect("ls").count();
    let before = batches();
    for (says, edit) in [(1u32, 0), (2, 1)] {
        match edit {
            0 => make_format_1(&env.store),
            _ => {
                let mut v = descriptor_json(&env.store);
                v["version"] = 2.into();
                write_descriptor_json(&env.store, &v);
            }
        }
        for args in [
            vec!["backup", s(&src), s(&env.store)],
            vec!["mount", s(&env.store), s(&env.mnt), "--backup-only"],
            vec!["fsck", s(&env.store)],
        ] {
            refused(&backup_host.run(&args), says, 3);
        }
    }
    assert_eq!(batches(), before, "no batch was written");
}

/// A working copy of a fixture store of an earlier format, and a host holding its key.
fn fixture(name: &str) -> (tempfile::TempDir, Host) {
    let dir = common::stores::fixture_copy(name);
    let host = Host {
        name: name.into(),
        keystore: dir.path().join("keystore"),
        pass: dir.path().join("passphrase"),
    };
    (dir, host)
}

#[test]
fn a_format_2_store_this_host_opened_is_never_opened_as_format_1() {
    if !require_fuse() {
        return;
    }
    let (dir, host) = fixture("store-v2");
    let store = dir.path().join("store");
    // Opened once here (a check), as it is: the keystore notes format 2.
    let o = host.run(&["fsck", s(&store)]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let ks = fs::read_to_string(dir.path().join("keystore/keystore.json")).expect("read");
    assert!(ks.contains("\"format\": 2"), "{ks}");
    // A backup-only host with a credential for it (format 2: it holds the write key).
    let env = Env::new();
    let backup = Host::new(&env, "backup");
    common::stores::give_credential(&env, &host, &backup, &store);
    // The downgrade: format 2's seals do not bind the format, but this host recalls,
    // and the backup host's credential (with its write key) refuses format 1 too.
    make_format_1(&store);
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    refused(&backup.run(&["backup", s(&src), s(&store)]), 1, 2);
    let mnt = dir.path().join("mnt");
    for args in [
        vec!["mount", s(&store), s(&mnt)],
        vec!["fsck", s(&store)],
        vec![
            "restore",
            &format!("{}:/", s(&store)),
            s(&dir.path().join("out")),
        ],
        vec!["upgrade", s(&store)],
        vec!["keys", "rotate", s(&store)],
    ] {
        refused(&host.run(&args), 1, 2);
    }
}
