//! The kms provider against a real KMIP server (PyKMIP on loopback, tools/kms-dev.sh): a
//! store whose master key lives only in the KMS mounts, rotates, syncs a version the KMS made
//! itself, is found by its store id, and fails clearly (exit 2, nothing changed) when the KMS
//! is down, distrusts us, forgets the UID, or marks the key compromised. Acts on the KMS
//! from its own side with PyKMIP's client (tools/kms-admin.py), not with coffer's.
//!
//! tools/test.sh starts the server and sets COFFER_TEST_KMS_CONFIG. Run alone, the suite
//! starts it through tools/kms-dev.sh (and leaves it running: `tools/kms-dev.sh stop`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{pattern, require_fuse, s, sh_ok, store_bytes_but_descriptor, Env, Host, MountGuard};

use common::kms::{admin, python, root, shared as kms, PrivateKms};

/// Run coffer as a host whose master keys live in the KMS that `config` names.
fn run(env: &Env, config: &Path, args: &[&str]) -> Output {
    Command::new(common::bin())
        .args(args)
        .env("COFFER_KEYSTORE", &env.keystore)
        .env("COFFER_KMS_CONFIG", config)
        .env_remove("COFFER_PASSPHRASE_FILE")
        .env_remove("COFFER_LOG")
        .output()
        .expect("run coffer")
}

fn ok(env: &Env, config: &Path, args: &[&str]) -> String {
    let o = run(env, config, args);
    assert!(
        o.status.success(),
        "coffer {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Exit 2 and one line on stderr that contains `want`.
fn fails(env: &Env, config: &Path, args: &[&str], want: &str) -> String {
    let o = run(env, config, args);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "coffer {args:?}: {err}");
    assert!(
        err.contains(want),
        "coffer {args:?}: wanted '{want}' in: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

fn init_kms(env: &Env, config: &Path) -> String {
    ok(
        env,
        config,
        &[
            "init",
            s(&env.store),
            "--provider",
            "kms",
            "--rsa-bits",
            "2048",
            "--policy",
            "daily",
            "--copy",
            "primary",
        ],
    )
    .trim()
    .to_string()
}

fn mount(env: &Env, config: &Path, mnt: &Path) -> MountGuard {
    ok(
        env,
        config,
        &["mount", s(&env.store), s(mnt), "--log", s(&env.log)],
    );
    MountGuard(mnt.to_path_buf())
}

fn umount(env: &Env, guard: MountGuard) {
    ok(env, kms(), &["umount", s(&guard.0)]);
}

fn descriptor(env: &Env) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(env.store.join("coffer.store")).expect("read"))
        .expect("json")
}

fn uid_of(env: &Env) -> String {
    descriptor(env)["master_keys"][0]["uid"]
        .as_str()
        .expect("a uid")
        .to_string()
}

fn write_tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for (i, len) in [0usize, 1, 4095, 4096, 70_000, 1 << 20].iter().enumerate() {
        files.insert(format!("f{i}"), pattern(i as u64 + 7, *len));
    }
    for i in 0..40 {
        files.insert(
            format!("sub/d{}/small-{i}", i % 4),
            pattern(1000 + i, 300 + i as usize),
        );
    }
    for (rel, bytes) in &files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, bytes).expect("write");
    }
    files
}

fn assert_tree(dir: &Path, files: &BTreeMap<String, Vec<u8>>) {
    for (rel, bytes) in files {
        let got = std::fs::read(dir.join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"));
        assert!(got == *bytes, "{rel} differs after the round trip");
    }
}

/// A new kms store with a tree copied in through a mount; its id and the tree.
fn filled_kms_store(env: &Env) -> (String, BTreeMap<String, Vec<u8>>) {
    let id = init_kms(env, kms());
    let src = env.path("src");
    let files = write_tree(&src);
    let g = mount(env, kms(), &env.mnt);
    sh_ok(&format!(
        "cp -a '{}/.' '{}/'",
        src.display(),
        env.mnt.display()
    ));
    umount(env, g);
    (id, files)
}

#[test]
fn round_trip_through_rsync_with_the_key_only_in_the_kms() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    let id = init_kms(&env, kms());
    let d = descriptor(&env);
    assert_eq!(d["provider"], "kms");
    assert_eq!(d["store_id"], id.as_str());
    assert!(d["kms"]
        .as_str()
        .expect("kms endpoint")
        .starts_with("127.0.0.1:"));
    assert_eq!(admin(kms(), &["state", &uid_of(&env)]), "ACTIVE");
    // Nothing of the key is on this host: no keystore file was made, and no passphrase asked.
    assert!(!env.keystore.join("keystore.json").exists());

    let src = env.path("src");
    let files = write_tree(&src);
    let mnt = env.mnt.clone();
    let g = mount(&env, kms(), &mnt);
    sh_ok(&format!(
        "rsync -a '{}/' '{}/'",
        src.display(),
        mnt.display()
    ));
    umount(&env, g);
    common::drop_caches();
    let g = mount(&env, kms(), &mnt);
    assert_tree(&mnt, &files);
    let restored = env.path("restored");
    sh_ok(&format!(
        "rsync -a '{}/' '{}/'",
        mnt.display(),
        restored.display()
    ));
    umount(&env, g);
    assert_tree(&restored, &files);
    sh_ok(&format!(
        "diff -r '{}' '{}'",
        src.display(),
        restored.display()
    ));

    // fsck gets the key by UID too, and every key operation is in the audit log.
    ok(&env, kms(), &["fsck", s(&env.store)]);
    let audit = std::fs::read_to_string(env.keystore.join("audit.log")).expect("audit log");
    for op in ["\"kms-create\"", "\"kms-activate\"", "\"kms-get\""] {
        assert!(audit.contains(op), "{op} missing from the audit log");
    }
    let info = ok(&env, kms(), &["info", s(&env.store), "--json"]);
    assert!(info.contains("\"kms\""), "{info}");

    // The key itself, as the KMS holds it, is nowhere on this host's disk: not in the store,
    // the audit log or the mount's log.
    let key = hex::decode(admin(kms(), &["get", &uid_of(&env)])).expect("hex key");
    assert_eq!(key.len(), 32);
    let mut hay: Vec<(PathBuf, Vec<u8>)> = Env::all_bytes(&env.store);
    hay.push((env.log.clone(), std::fs::read(&env.log).unwrap_or_default()));
    hay.push(("audit.log".into(), audit.into_bytes()));
    hay.push(("info".into(), info.into_bytes()));
    for form in [
        key.clone(),
        hex::encode(&key).into_bytes(),
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &key).into_bytes(),
    ] {
        for (p, bytes) in &hay {
            assert!(
                !bytes.windows(form.len()).any(|w| w == form.as_slice()),
                "the master key is in {}",
                p.display()
            );
        }
    }
}

#[test]
fn rotate_rewraps_without_changing_a_byte_of_ciphertext() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    let (id, files) = filled_kms_store(&env);
    let old_uid = uid_of(&env);
    let mnt = env.mnt.clone();
    let before = store_bytes_but_descriptor(&env.store);
    let old_descriptor = std::fs::read(env.store.join("coffer.store")).expect("read");

    let out = ok(&env, kms(), &["keys", "rotate", s(&env.store)]);
    assert!(out.contains("rotated to version 2"), "{out}");

    let after = store_bytes_but_descriptor(&env.store);
    assert_eq!(before.len(), after.len());
    for (p, bytes) in &before {
        assert!(
            after.get(p) == Some(bytes),
            "{} changed in a rotation",
            p.display()
        );
    }
    let d = descriptor(&env);
    let new_uid = uid_of(&env);
    assert_ne!(new_uid, old_uid);
    assert_eq!(d["master_keys"].as_array().expect("records").len(), 1);
    assert_eq!(d["master_keys"][0]["version"], 2);
    assert_eq!(admin(kms(), &["state", &old_uid]), "DEACTIVATED");
    assert_eq!(admin(kms(), &["state", &new_uid]), "ACTIVE");

    let g = mount(&env, kms(), &mnt);
    assert_tree(&mnt, &files);
    umount(&env, g);

    // The old version stays readable: a copy of the store made before the rotation (its old
    // descriptor) still opens, with the revoked key.
    let copy = env.path("copy");
    sh_ok(&format!(
        "cp -a '{}' '{}'",
        env.store.display(),
        copy.display()
    ));
    std::fs::write(copy.join("coffer.store"), &old_descriptor).expect("write");
    let mnt2 = env.path("mnt2");
    std::fs::create_dir(&mnt2).expect("mkdir");
    ok(&env, kms(), &["mount", s(&copy), s(&mnt2)]);
    let g2 = MountGuard(mnt2.clone());
    assert_tree(&mnt2, &files);
    umount(&env, g2);

    let located = ok(
        &env,
        kms(),
        &["keys", "locate", "--store-id", &id, "--json"],
    );
    let v: serde_json::Value = serde_json::from_str(&located).expect("json");
    let states: Vec<(u64, String)> = v
        .as_array()
        .expect("list")
        .iter()
        .map(|k| {
            (
                k["version"].as_u64().expect("v"),
                k["state"].as_str().expect("s").into(),
            )
        })
        .collect();
    assert_eq!(
        states,
        vec![(2, "active".into()), (1, "deactivated".into())]
    );
    let audit = std::fs::read_to_string(env.keystore.join("audit.log")).expect("audit log");
    assert!(audit.contains("\"rotate\"") && audit.contains("\"kms-revoke\""));
}

#[test]
fn sync_adopts_a_version_the_kms_made_and_is_idle_otherwise() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    let (id, files) = filled_kms_store(&env);
    let v1 = uid_of(&env);
    let mnt = env.mnt.clone();

    // Nothing new yet: the descriptor is left byte for byte.
    let d0 = std::fs::read(env.store.join("coffer.store")).expect("read");
    let out = ok(&env, kms(), &["keys", "sync", s(&env.store)]);
    assert!(out.contains("nothing to do"), "{out}");
    assert_eq!(
        std::fs::read(env.store.join("coffer.store")).expect("read"),
        d0
    );

    // The KMS rotates by its own policy; a pre-active key beside it is not adopted.
    let pre = admin(
        kms(),
        &[
            "create",
            "--store-id",
            &id,
            "--version",
            "3",
            "--pre-active",
        ],
    );
    let v2 = admin(
        kms(),
        &[
            "create",
            "--store-id",
            &id,
            "--version",
            "2",
            "--policy",
            "daily",
        ],
    );
    let o = run(&env, kms(), &["keys", "sync", s(&env.store)]);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{err}");
    assert!(out.contains("adopted master-key version 2"), "{out}");
    assert!(
        err.contains(&format!("version 3 (UID {pre}) is pre-active: skipped")),
        "{err}"
    );
    assert_eq!(uid_of(&env), v2);
    assert_eq!(descriptor(&env)["master_keys"][0]["version"], 2);
    // The superseded version is taken out of service, and stays readable.
    assert_eq!(admin(kms(), &["state", &v1]), "DEACTIVATED");

    let g = mount(&env, kms(), &mnt);
    assert_tree(&mnt, &files);
    umount(&env, g);
    let d1 = std::fs::read(env.store.join("coffer.store")).expect("read");
    let out = ok(&env, kms(), &["keys", "sync", s(&env.store)]);
    assert!(out.contains("version 2 is the newest"), "{out}");
    assert_eq!(
        std::fs::read(env.store.join("coffer.store")).expect("read"),
        d1
    );
}

#[test]
fn locate_finds_a_stores_keys_by_its_id() {
    let (a, b) = (Env::new(), Env::new());
    let id_a = init_kms(&a, kms());
    let id_b = init_kms(&b, kms());
    let out = ok(&a, kms(), &["keys", "locate", "--store-id", &id_a]);
    assert!(out.contains(&uid_of(&a)), "{out}");
    assert!(!out.contains(&id_b), "{out}");
    assert!(out.contains("version 1  active"), "{out}");
    assert!(out.contains("policy daily, copy primary"), "{out}");
    let v: serde_json::Value = serde_json::from_str(&ok(
        &a,
        kms(),
        &["keys", "locate", "--store-id", &id_b, "--json"],
    ))
    .expect("json");
    assert_eq!(v.as_array().expect("list").len(), 1);
    assert_eq!(v[0]["uid"], uid_of(&b).as_str());
    assert_eq!(v[0]["name"], format!("coffer-{id_b}-v1").as_str());
    let none = ok(
        &a,
        kms(),
        &["keys", "locate", "--store-id", &"0".repeat(32)],
    );
    assert!(none.contains("no keys of store"), "{none}");
    fails(
        &a,
        kms(),
        &["keys", "locate", "--store-id", "nope"],
        "is not a store id",
    );
}

#[test]
fn an_unknown_uid_and_a_compromised_key_are_refused() {
    let env = Env::new();
    init_kms(&env, kms());
    let uid = uid_of(&env);
    let desc_path = env.store.join("coffer.store");
    let good = std::fs::read_to_string(&desc_path).expect("read");

    std::fs::write(
        &desc_path,
        good.replace(&format!("\"{uid}\""), "\"999999\""),
    )
    .expect("write");
    fails(
        &env,
        kms(),
        &["fsck", s(&env.store)],
        "has no key with UID 999999",
    );
    std::fs::write(&desc_path, &good).expect("write");

    admin(kms(), &["revoke", &uid, "--compromise"]);
    fails(
        &env,
        kms(),
        &["fsck", s(&env.store)],
        &format!("marks key {uid} as compromised"),
    );
    let mnt = env.mnt.clone();
    fails(
        &env,
        kms(),
        &["mount", s(&env.store), s(&mnt)],
        "compromised",
    );
    fails(
        &env,
        kms(),
        &["keys", "rotate", s(&env.store)],
        "compromised",
    );
    assert_eq!(std::fs::read_to_string(&desc_path).expect("read"), good);
}

/// A client certificate that the KMS's CA never signed, and a CA that did not sign the KMS.
#[test]
fn a_wrong_client_certificate_or_ca_is_refused() {
    let env = Env::new();
    init_kms(&env, kms());
    let rogue = env.path("rogue");
    std::fs::create_dir(&rogue).expect("mkdir");
    let r = rogue.display();
    sh_ok(&format!(
        "cd {r} && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null \
         && openssl req -x509 -new -key ca.key -subj /CN=rogue-ca -days 2 -out ca.pem 2>/dev/null \
         && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out c.key 2>/dev/null \
         && openssl req -new -key c.key -subj /CN=coffer -out c.csr 2>/dev/null \
         && printf 'extendedKeyUsage=clientAuth\\n' > ext \
         && openssl x509 -req -in c.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext -out c.pem 2>/dev/null"
    ));
    let good = std::fs::read_to_string(kms()).expect("read kms.toml");
    let field = |name: &str| {
        good.lines()
            .find(|l| l.starts_with(&format!("{name} =")))
            .expect("field")
            .to_string()
    };
    let write = |name: &str, cert: &str, key: &str, ca: &str| {
        let p = rogue.join(name);
        std::fs::write(
            &p,
            format!(
                "{}\n{}\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\ntimeout = \"5s\"\n",
                field("host"),
                field("port")
            ),
        )
        .expect("write");
        p
    };
    let pki = Path::new(
        good.lines()
            .find(|l| l.starts_with("ca ="))
            .and_then(|l| l.split('"').nth(1))
            .expect("ca path"),
    )
    .parent()
    .expect("pki dir")
    .to_path_buf();
    let p = |f: &str| pki.join(f).display().to_string();
    let wrong_client = write(
        "client.toml",
        &format!("{r}/c.pem"),
        &format!("{r}/c.key"),
        &p("ca.pem"),
    );
    let wrong_ca = write(
        "ca.toml",
        &p("client.pem"),
        &p("client.key"),
        &format!("{r}/ca.pem"),
    );
    let before = std::fs::read(env.store.join("coffer.store")).expect("read");
    let mnt = env.mnt.clone();
    fails(
        &env,
        &wrong_client,
        &["mount", s(&env.store), s(&mnt)],
        "TLS with the KMS at 127.0.0.1:",
    );
    fails(
        &env,
        &wrong_ca,
        &["fsck", s(&env.store)],
        "invalid peer certificate",
    );
    fails(
        &env,
        &wrong_client,
        &["keys", "rotate", s(&env.store)],
        "TLS with the KMS",
    );
    assert_eq!(
        std::fs::read(env.store.join("coffer.store")).expect("read"),
        before
    );
    assert!(!common::sh(&format!(
        "grep -qs ' {} ' /proc/self/mountinfo",
        mnt.display()
    ))
    .status
    .success());
}

/// A listener that accepts and never answers: coffer gives up after the configured timeout.
#[test]
fn a_silent_kms_times_out_with_its_address() {
    let env = Env::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // The connection is held, unanswered, until coffer has given up.
    let (done, given_up) = std::sync::mpsc::channel::<()>();
    let hold = std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(1).collect();
        let _ = given_up.recv();
        drop(held);
    });
    let good = std::fs::read_to_string(kms()).expect("read kms.toml");
    let cfg = env.path("silent.toml");
    let body: String = good
        .lines()
        .filter(|l| !l.starts_with("port") && !l.starts_with("timeout"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&cfg, format!("{body}port = {port}\ntimeout = \"1s\"\n")).expect("write");
    fails(
        &env,
        &cfg,
        &[
            "init",
            s(&env.store),
            "--provider",
            "kms",
            "--rsa-bits",
            "2048",
        ],
        &format!("the KMS at 127.0.0.1:{port} did not answer within 1 s"),
    );
    assert!(!env.store.exists(), "a failed init left a store behind");
    let _ = done.send(());
    hold.join().expect("listener");
}

/// A KMS of this test's own (the shared one must keep serving the other tests), stopped under
/// a live mount: the mount keeps serving with the key it holds; new mounts, rotations and
/// inits fail with the KMS's address and change nothing.
#[test]
fn a_stopped_kms_fails_clearly_and_a_live_mount_keeps_serving() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    let k = PrivateKms::start(env.path("kms"), common::kms::private_port(0));
    let (port, cfg) = (k.port, k.config.clone());

    init_kms(&env, &cfg);
    let mnt = env.mnt.clone();
    let g = mount(&env, &cfg, &mnt);
    std::fs::write(mnt.join("before"), pattern(1, 100_000)).expect("write");
    k.stop();

    // The live mount: reads and writes as before.
    std::fs::write(mnt.join("after"), pattern(2, 300_000)).expect("write");
    common::drop_caches();
    assert_eq!(
        std::fs::read(mnt.join("before")).expect("read"),
        pattern(1, 100_000)
    );
    assert_eq!(
        std::fs::read(mnt.join("after")).expect("read"),
        pattern(2, 300_000)
    );

    let unreachable = format!("cannot reach the KMS at 127.0.0.1:{port}");
    let before = std::fs::read(env.store.join("coffer.store")).expect("read");
    fails(&env, &cfg, &["keys", "rotate", s(&env.store)], &unreachable);
    fails(&env, &cfg, &["keys", "sync", s(&env.store)], &unreachable);
    assert_eq!(
        std::fs::read(env.store.join("coffer.store")).expect("read"),
        before
    );
    let other = Env::new();
    fails(
        &other,
        &cfg,
        &["init", s(&other.store), "--provider", "kms"],
        &unreachable,
    );
    assert!(!other.store.exists());
    umount(&env, g);
    fails(&env, &cfg, &["mount", s(&env.store), s(&mnt)], &unreachable);

    k.restart();
    let g = mount(&env, &cfg, &mnt);
    assert_eq!(
        std::fs::read(mnt.join("after")).expect("read"),
        pattern(2, 300_000)
    );
    umount(&env, g);
}

/// A kms store's key leaves the KMS only as an export (the KMS's Read right is its client
/// certificate); a host without KMS access imports it and mounts from its own keystore.
#[test]
fn an_export_from_the_kms_opens_the_store_where_there_is_no_kms() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    let (_, files) = filled_kms_store(&env);

    let pw = env.path("pw");
    std::fs::write(&pw, "export password\n").expect("write");
    let out = env.path("store.keys");
    ok(
        &env,
        kms(),
        &[
            "keys",
            "export",
            s(&env.store),
            "--password-file",
            s(&pw),
            "--out",
            s(&out),
        ],
    );

    let far = Host::new(&env, "far");
    let copy = env.path("copy");
    sh_ok(&format!(
        "rsync -aHXS '{}/' '{}/'",
        env.store.display(),
        copy.display()
    ));
    far.ok(&["keys", "import", s(&out), "--password-file", s(&pw)]);
    let mnt2 = env.path("mnt2");
    std::fs::create_dir(&mnt2).expect("mkdir");
    let o = Command::new(common::bin())
        .args(["mount", s(&copy), s(&mnt2)])
        .env("COFFER_KEYSTORE", &far.keystore)
        .env("COFFER_PASSPHRASE_FILE", &far.pass)
        .env("COFFER_KMS_CONFIG", env.path("no-kms-here.toml"))
        .output()
        .expect("mount");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let g2 = MountGuard(mnt2.clone());
    assert_tree(&mnt2, &files);
    drop(g2);
    let audit = std::fs::read_to_string(env.keystore.join("audit.log")).expect("audit");
    assert!(audit.contains("\"export\""), "{audit}");
}

/// The KMS makes the key before the store exists; when making the store then fails (here the
/// path runs through a regular file; a full disk would do the same), the key is removed from
/// the KMS again and no store is left behind.
#[test]
fn an_init_that_fails_after_the_kms_made_its_key_removes_the_key() {
    let env = Env::new();
    let file = env.path("a-file");
    std::fs::write(&file, b"not a directory").expect("write");
    let store = file.join("store");
    fails(
        &env,
        kms(),
        &["init", s(&store), "--provider", "kms", "--rsa-bits", "2048"],
        "Not a directory",
    );
    let audit = std::fs::read_to_string(env.keystore.join("audit.log")).expect("audit log");
    let line = audit
        .lines()
        .find(|l| l.contains("\"kms-destroy\""))
        .unwrap_or_else(|| panic!("no kms-destroy in {audit}"));
    assert!(line.contains("\"outcome\":\"ok\""), "{line}");
    let uid = line
        .split("\"detail\":\"uid ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .expect("uid in the detail");
    let o = Command::new(python())
        .arg(root().join("tools/kms-admin.py"))
        .arg(kms())
        .args(["state", uid])
        .output()
        .expect("kms-admin");
    let state = String::from_utf8_lossy(&o.stdout);
    assert!(
        !o.status.success() || state.trim() == "DESTROYED",
        "key {uid} is still in the KMS: {state}"
    );
    assert_eq!(std::fs::read(&file).expect("read"), b"not a directory");
}

/// A backup host of a kms store holds a backup credential (made from the KMS's key), never
/// the key, and needs no KMS: it writes new backups and reads no old ones (EACCES).
#[test]
fn a_backup_host_of_a_kms_store_writes_without_the_kms_and_reads_nothing_old() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    let (_, files) = filled_kms_store(&env);
    let backup = Host::new(&env, "backup");
    let cert = env.path("backup.pem");
    backup.ok(&["keys", "cert", "--out", s(&cert)]);
    let cred = env.path("store.bcred");
    ok(
        &env,
        kms(),
        &[
            "keys",
            "backup-credential",
            s(&env.store),
            "--recipient",
            s(&cert),
            "--out",
            s(&cred),
        ],
    );
    backup.ok(&["keys", "import", s(&cred)]);
    let mnt = env.path("mnt-b");
    std::fs::create_dir(&mnt).expect("mkdir");
    let o = Command::new(common::bin())
        .args(["mount", s(&env.store), s(&mnt)])
        .env("COFFER_KEYSTORE", &backup.keystore)
        .env("COFFER_PASSPHRASE_FILE", &backup.pass)
        .env("COFFER_KMS_CONFIG", env.path("no-kms-here.toml"))
        .output()
        .expect("mount");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let g = MountGuard(mnt.clone());
    let (old, _) = files
        .iter()
        .find(|(_, b)| !b.is_empty())
        .expect("a non-empty file");
    let e = std::fs::read(mnt.join(old)).expect_err("an old file must not read");
    assert_eq!(e.raw_os_error(), Some(libc::EACCES));
    std::fs::write(mnt.join("new-backup"), pattern(77, 50_000)).expect("write");
    drop(g);
    // The key holder reads the new backup.
    let g = mount(&env, kms(), &env.mnt);
    assert_eq!(
        std::fs::read(env.mnt.join("new-backup")).expect("read"),
        pattern(77, 50_000)
    );
    assert_tree(&env.mnt, &files);
    umount(&env, g);
}

#[test]
fn a_planted_recovery_record_makes_a_kms_rotation_refuse_before_the_kms_makes_a_key() {
    let env = Env::new();
    let id = init_kms(&env, kms());
    // The attacker's recovery record, from a store it made itself for its own certificate.
    let evil = Env::new();
    let pem = evil.path("evil");
    evil.coffer_ok(&["keys", "recovery-key", "--out", s(&pem)]);
    evil.init_with(&["--recovery-cert", &format!("{}.pem", pem.display())]);
    let mut d = descriptor(&env);
    d["recovery"] = serde_json::from_slice::<serde_json::Value>(
        &std::fs::read(evil.store.join("coffer.store")).expect("read"),
    )
    .expect("json")["recovery"]
        .clone();
    std::fs::write(
        env.store.join("coffer.store"),
        serde_json::to_vec_pretty(&d).expect("json"),
    )
    .expect("plant");
    let planted = std::fs::read(env.store.join("coffer.store")).expect("read");
    for cmd in ["rotate", "sync"] {
        let o = run(&env, kms(), &["keys", cmd, s(&env.store)]);
        let err = String::from_utf8_lossy(&o.stderr);
        if cmd == "sync" && o.status.success() {
            // Nothing newer in the KMS: sync has nothing to seal and writes nothing.
            assert_eq!(
                std::fs::read(env.store.join("coffer.store")).expect("read"),
                planted
            );
            continue;
        }
        assert_eq!(o.status.code(), Some(2), "{cmd}: {err}");
        assert!(
            err.contains("coffer.store was changed or damaged"),
            "{cmd}: {err}"
        );
    }
    assert_eq!(
        std::fs::read(env.store.join("coffer.store")).expect("read"),
        planted
    );
    let v: serde_json::Value = serde_json::from_str(&ok(
        &env,
        kms(),
        &["keys", "locate", "--store-id", &id, "--json"],
    ))
    .expect("json");
    assert_eq!(
        v.as_array().expect("list").len(),
        1,
        "the KMS made no key for the refused rotation: {v}"
    );
}

#[test]
fn a_format_1_kms_store_upgrades_with_its_key_from_the_kms() {
    let env = Env::new();
    init_kms(&env, kms());
    let uid = uid_of(&env);
    let with_key = |a: &[&str]| {
        Command::new(common::bin())
            .args(a)
            .env("COFFER_KEYSTORE", &env.keystore)
            .env("COFFER_KMS_CONFIG", kms())
            .env("COFFER_PASSPHRASE_FILE", &env.pass)
            .output()
            .expect("run coffer")
    };
    common::stores::as_older_format(&with_key, &env.store, &env.keystore, 1);
    assert_eq!(descriptor(&env)["version"], 1);
    fails(
        &env,
        kms(),
        &["keys", "rotate", s(&env.store)],
        "run `coffer upgrade` on it first",
    );
    let out = ok(&env, kms(), &["upgrade", s(&env.store)]);
    assert!(out.contains("upgraded from format 1 to format 3"), "{out}");
    let d = descriptor(&env);
    assert_eq!(d["version"], 3);
    assert_eq!(
        d["master_keys"][0]["uid"],
        uid.as_str(),
        "the KMS UID is kept"
    );
    ok(&env, kms(), &["fsck", s(&env.store)]);
    ok(&env, kms(), &["keys", "rotate", s(&env.store)]);
}

#[test]
fn a_kms_store_rewritten_to_an_earlier_format_is_refused_before_the_kms_is_asked_for_more() {
    let env = Env::new();
    init_kms(&env, kms());
    // This host keeps no keystore entry for a kms store: the seals alone refuse it.
    common::attacker::make_format_1(&env.store);
    let want = "coffer.store says format 1, but this store was format 3: the descriptor was \
                replaced; nothing was acted on";
    for args in [
        vec!["keys", "sync", s(&env.store)],
        vec!["keys", "rotate", s(&env.store)],
        vec!["fsck", s(&env.store)],
    ] {
        fails(&env, kms(), &args, want);
    }
}
