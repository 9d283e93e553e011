//! The store holds against a host that can write it but holds no key (DESIGN.md's second
//! actor). Each test does what that host would do, writing the store's files directly with no
//! key but the public one, on a real store and a real mount, and checks that it fails to reach
//! its aim: the planted file reads EIO and is never adopted, the rotation refuses and changes
//! nothing, the file outside the store is untouched.

mod common;

use std::fs;
use std::path::Path;

use common::attacker::{self, Framing};
use common::{pattern, require_fuse, s, Env};

fn eio(p: &Path) -> bool {
    fs::read(p).err().and_then(|e| e.raw_os_error()) == Some(libc::EIO)
}

/// A store with one file, `etc/shadow`, and the ciphertext file that holds it.
fn store_with_shadow(env: &Env) -> (Vec<u8>, std::path::PathBuf) {
    env.init();
    let genuine = pattern(7, 5000);
    let m = env.mount();
    fs::create_dir(m.p("etc")).expect("mkdir");
    fs::write(m.p("etc/shadow"), &genuine).expect("write");
    m.umount();
    let files = attacker::ciphertext_files(&env.store);
    assert_eq!(files.len(), 1, "one ciphertext file");
    (genuine, files[0].clone())
}

#[test]
fn planted_content_under_an_existing_name_reads_eio_and_is_never_adopted() {
    if !require_fuse() {
        return;
    }
    for framing in [Framing::Bare, Framing::MadeUpTag] {
        let env = Env::new();
        let (_, target) = store_with_shadow(&env);
        let evil = b"root::0:0:99999:7:::\n".repeat(100);
        let batch = attacker::plant(&env.store, &target, &evil, framing);

        let m = env.mount();
        assert!(eio(&m.p("etc/shadow")), "a planted file must read EIO");
        m.umount();
        assert!(
            env.log_text().contains(&hex::encode(batch)),
            "the mount log names the batch that does not authenticate"
        );

        let o = env.coffer(&["fsck", s(&env.store)]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "{out}");
        assert!(
            out.contains(&format!(
                "batch {} does not authenticate",
                hex::encode(batch)
            )),
            "{out}"
        );
        // Repair reports it and adopts nothing: the file still reads EIO, fsck still fails.
        let o = env.coffer(&["fsck", s(&env.store), "--repair"]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "{out}");
        assert!(out.contains("not adopted"), "{out}");
        assert_eq!(env.coffer(&["fsck", s(&env.store)]).status.code(), Some(1));
        let m = env.mount();
        assert!(eio(&m.p("etc/shadow")));
        m.umount();
    }
}

#[test]
fn a_planted_batch_also_fails_on_a_backup_only_check() {
    // A backup host's fsck has no private key, but it has the write key: it can tell.
    let env = Env::new();
    if !require_fuse() {
        return;
    }
    let (_, target) = store_with_shadow(&env);
    let backup = common::Host::new(&env, "backup");
    backup.ok(&["keys", "cert", "--out", s(&env.path("b.pem"))]);
    env.coffer_ok(&[
        "keys",
        "backup-credential",
        s(&env.store),
        "--recipient",
        s(&env.path("b.pem")),
        "--out",
        s(&env.path("b.cred")),
    ]);
    backup.ok(&["keys", "import", s(&env.path("b.cred"))]);
    assert_eq!(backup.run(&["fsck", s(&env.store)]).status.code(), Some(0));
    let batch = attacker::plant(&env.store, &target, b"planted", Framing::Bare);
    let o = backup.run(&["fsck", s(&env.store)]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains(&hex::encode(batch)), "{out}");
}

/// `keys recovery-key` into PREFIX.pem and PREFIX.key.
fn recovery_pair(env: &Env, prefix: &str) -> (String, String) {
    let p = env.path(prefix);
    env.coffer_ok(&["keys", "recovery-key", "--out", s(&p)]);
    (
        format!("{}.pem", p.display()),
        format!("{}.key", p.display()),
    )
}

#[test]
fn a_planted_recovery_record_makes_rotation_refuse_and_changes_nothing() {
    let env = Env::new();
    let (org_pem, _) = recovery_pair(&env, "org");
    env.init_with(&["--recovery-cert", &org_pem]);
    // The attacker's own store, made with its own coffer for its own recovery certificate.
    let evil = Env::new();
    let (evil_pem, evil_key) = recovery_pair(&evil, "evil");
    evil.init_with(&["--recovery-cert", &evil_pem]);
    let mut v = attacker::descriptor_json(&env.store);
    v["recovery"] = attacker::descriptor_json(&evil.store)["recovery"].clone();
    attacker::write_descriptor_json(&env.store, &v);
    let planted = fs::read(env.store.join("coffer.store")).expect("read");
    let keystore = fs::read(env.keystore.join("keystore.json")).expect("read");

    // Rotation refuses; so does every other command that acts on the descriptor.
    for args in [
        vec!["keys", "rotate", s(&env.store)],
        vec!["fsck", s(&env.store)],
        vec!["upgrade", s(&env.store)],
        vec!["mount", s(&env.store), s(&env.mnt)],
    ] {
        let o = env.coffer(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains("coffer.store was changed or damaged")
                && err.contains("does not verify under its own master key"),
            "{err}"
        );
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    assert_eq!(
        fs::read(env.store.join("coffer.store")).expect("read"),
        planted
    );
    assert_eq!(
        fs::read(env.keystore.join("keystore.json")).expect("read"),
        keystore,
        "no new master key was made"
    );
    // The attacker's recovery key opens nothing of this store, and `recover` checks that
    // before it imports anything: the attacker's keystore gains no key.
    let before = fs::read(evil.keystore.join("keystore.json")).expect("read");
    let o = evil.coffer(&["recover", s(&env.store), "--recovery-key", &evil_key]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("nothing was imported"), "{err}");
    assert_eq!(
        fs::read(evil.keystore.join("keystore.json")).expect("read"),
        before,
        "nothing was imported"
    );
}

#[test]
fn a_changed_label_block_size_or_uid_is_refused_before_use() {
    let env = Env::new();
    env.init_with(&["--policy", "daily"]);
    let good = attacker::descriptor_json(&env.store);
    type Edit = fn(&mut serde_json::Value);
    let edits: [(&str, Edit); 4] = [
        ("policy", |v| v["policy"] = "never".into()),
        ("block_shift", |v| v["block_shift"] = 16.into()),
        ("uid", |v| {
            v["master_keys"][0]["uid"] = "attacker-uid".into()
        }),
        ("provider", |v| v["provider"] = "kms".into()),
    ];
    for (what, edit) in edits {
        let mut v = good.clone();
        edit(&mut v);
        attacker::write_descriptor_json(&env.store, &v);
        let o = env.coffer(&["fsck", s(&env.store)]);
        let err = String::from_utf8_lossy(&o.stderr);
        if what == "provider" {
            // A kms store is asked of the KMS, which holds no key for it: refused either way.
            assert_eq!(o.status.code(), Some(2), "{what}: {err}");
            continue;
        }
        assert_eq!(o.status.code(), Some(2), "{what}: {err}");
        assert!(
            err.contains("coffer.store was changed or damaged"),
            "{what}: {err}"
        );
    }
    attacker::write_descriptor_json(&env.store, &good);
    env.assert_fsck_clean();
}

#[test]
fn nothing_outside_the_store_is_opened_through_it() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let outside = env.path("outside");
    let keep = b"a file of the mounting host\n";
    let check_outside = || assert_eq!(fs::read(&outside).expect("outside"), keep);
    fs::write(&outside, keep).expect("write");
    let swap_for_link = |name: &str| {
        let p = env.store.join(name);
        let saved = env.path(&format!("saved-{name}"));
        fs::rename(&p, &saved).expect("move aside");
        std::os::unix::fs::symlink(&outside, &p).expect("symlink");
        saved
    };
    // lock -> outside: the mount refuses instead of writing its record there.
    let _ = fs::remove_file(env.store.join("lock"));
    std::os::unix::fs::symlink(&outside, env.store.join("lock")).expect("symlink");
    let o = env.coffer(&["mount", s(&env.store), s(&env.mnt)]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("symbolic links"));
    assert_eq!(env.coffer(&["fsck", s(&env.store)]).status.code(), Some(2));
    check_outside();
    fs::remove_file(env.store.join("lock")).expect("rm");
    // coffer.store -> outside: every command refuses, nothing is read or written there.
    let saved = swap_for_link("coffer.store");
    for args in [
        vec!["mount", s(&env.store), s(&env.mnt)],
        vec!["fsck", s(&env.store), "--repair"],
        vec!["keys", "rotate", s(&env.store)],
        vec!["upgrade", s(&env.store)],
    ] {
        let o = env.coffer(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?} must refuse");
        check_outside();
    }
    fs::remove_file(env.store.join("coffer.store")).expect("rm");
    fs::rename(&saved, env.store.join("coffer.store")).expect("restore");
    // catalog -> outside: the mount refuses; repair replaces the link with a real catalog.
    let saved = swap_for_link("catalog");
    let o = env.coffer(&["mount", s(&env.store), s(&env.mnt)]);
    assert_eq!(o.status.code(), Some(2));
    check_outside();
    env.coffer(&["fsck", s(&env.store), "--repair"]);
    check_outside();
    assert!(fs::symlink_metadata(env.store.join("catalog"))
        .expect("catalog")
        .is_file());
    fs::remove_file(env.store.join("catalog")).expect("rm");
    fs::rename(&saved, env.store.join("catalog")).expect("restore");
    // batches -> a directory outside: a new file's batch is not written there.
    let out_dir = env.path("outside-dir");
    fs::create_dir(&out_dir).expect("mkdir");
    fs::remove_dir(env.store.join("batches")).expect("rmdir");
    std::os::unix::fs::symlink(&out_dir, env.store.join("batches")).expect("symlink");
    let m = env.mount();
    assert!(
        fs::write(m.p("new"), b"x").is_err(),
        "no batch can be recorded"
    );
    m.umount();
    assert_eq!(fs::read_dir(&out_dir).expect("ls").count(), 0);
    fs::remove_file(env.store.join("batches")).expect("rm");
    fs::create_dir(env.store.join("batches")).expect("mkdir");
    // data -> an empty directory outside: fsck --repair neither walks nor writes there.
    let saved = env.path("saved-data");
    fs::rename(env.store.join("data"), &saved).expect("move");
    let out_data = env.path("outside-data");
    fs::create_dir(&out_data).expect("mkdir");
    std::os::unix::fs::symlink(&out_data, env.store.join("data")).expect("symlink");
    let o = env.coffer(&["fsck", s(&env.store), "--repair"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("not a directory"), "{out}");
    assert_eq!(fs::read_dir(&out_data).expect("ls").count(), 0);
    let o = env.coffer(&["mount", s(&env.store), s(&env.mnt)]);
    assert_eq!(o.status.code(), Some(2));
    fs::remove_file(env.store.join("data")).expect("rm");
    fs::rename(&saved, env.store.join("data")).expect("restore");
    // A rotation writes its temporary file under a random name, O_EXCL: a planted link with
    // the old predictable name is left alone and the outside file unchanged.
    let pid_guess = env.store.join(".tmp-coffer.store-1");
    std::os::unix::fs::symlink(&outside, &pid_guess).expect("symlink");
    env.coffer_ok(&["keys", "rotate", s(&env.store)]);
    check_outside();
    assert!(fs::symlink_metadata(&pid_guess).expect("link").is_symlink());
}

#[test]
fn fsck_reads_directory_ivs_and_sidecars_with_caps_and_never_blocks() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let long = "n".repeat(250);
    let m = env.mount();
    fs::create_dir(m.p("d")).expect("mkdir");
    fs::write(m.p("d").join(&long), b"long").expect("write");
    fs::create_dir(m.p("e")).expect("mkdir");
    m.umount();
    env.assert_fsck_clean();
    let data = env.store.join("data");
    let dirs: Vec<_> = fs::read_dir(&data)
        .expect("ls")
        .flatten()
        .filter(|e| e.file_type().expect("t").is_dir())
        .map(|e| e.path())
        .collect();
    assert_eq!(dirs.len(), 2);
    // One directory's IV becomes /dev/zero, the other's a FIFO; the long name's sidecar
    // becomes /dev/zero. fsck finishes (no hang, no unbounded read) and reports each.
    let (with_long, other) = if fs::read_dir(&dirs[0])
        .expect("ls")
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with(".N"))
    {
        (&dirs[0], &dirs[1])
    } else {
        (&dirs[1], &dirs[0])
    };
    let sidecar = fs::read_dir(with_long)
        .expect("ls")
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with(".N"))
        .expect("sidecar")
        .path();
    fs::remove_file(&sidecar).expect("rm");
    std::os::unix::fs::symlink("/dev/zero", &sidecar).expect("symlink");
    fs::remove_file(other.join(".diriv")).expect("rm");
    common::sh_ok(&format!("mkfifo '{}'", other.join(".diriv").display()));
    let o = env.coffer(&["fsck", s(&env.store)]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("long name has lost its sidecar"), "{out}");
    assert!(out.contains("directory IV is missing or damaged"), "{out}");
    // The mount does not hang either. It never reads a `.diriv` (a directory's IV is its
    // sealed record's), so both directories list; the long name whose sidecar is /dev/zero
    // is left out.
    let m = env.mount();
    let d = fs::read_dir(&env.mnt).expect("ls").count();
    assert_eq!(d, 2);
    let names: Vec<_> = ["d", "e"]
        .iter()
        .map(|n| {
            fs::read_dir(m.p(n))
                .map(|it| it.count())
                .map_err(|e| e.raw_os_error())
        })
        .collect();
    assert_eq!(names, vec![Ok(0), Ok(0)]);
    m.umount();
}

#[test]
fn the_store_holds_no_key_in_the_clear() {
    if !require_fuse() {
        return;
    }
    use base64::Engine;
    let env = Env::new();
    let _ = store_with_shadow(&env);
    let (master, keys) = common::stores::store_keys(&env);
    let private = keys.private.expect("private");
    let mut secrets: Vec<Vec<u8>> = vec![
        master.expose().to_vec(),
        keys.names.expose().to_vec(),
        keys.writer
            .expect("a format-2 store has a write key")
            .expose()
            .to_vec(),
        private.to_der().expect("der")[..64].to_vec(),
    ];
    for e in fs::read_dir(env.store.join("batches"))
        .expect("ls")
        .flatten()
    {
        let rec = fs::read(e.path()).expect("batch");
        let blob = coffer::format::BatchBlob::decode(&rec).expect("record");
        let bk = private.unwrap_batch_key(blob.wrapped()).expect("unwrap");
        secrets.push(bk.expose().to_vec());
    }
    assert!(secrets.len() >= 5);
    let store_bytes: Vec<u8> = Env::all_bytes(&env.store)
        .into_iter()
        .flat_map(|(_, b)| b)
        .collect();
    for k in &secrets {
        let probe = &k[..32];
        for form in [
            probe.to_vec(),
            hex::encode(probe).into_bytes(),
            base64::engine::general_purpose::STANDARD
                .encode(probe)
                .into_bytes(),
        ] {
            assert!(
                !store_bytes
                    .windows(form.len())
                    .any(|w| w == form.as_slice()),
                "a key is in the store in the clear"
            );
        }
    }
}
