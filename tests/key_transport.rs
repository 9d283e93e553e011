//! Moving keys between hosts by hand: certificate and password exports, imports, the
//! recovery key, and an auxiliary copy (rsync of the store) mounted on another "host" (its own
//! keystore). Key bytes never appear in audit logs, export headers or messages.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

use base64::Engine;
use common::{pattern, require_fuse, s, sh_ok, Env, Host, MountGuard as Guard};

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn mount(host: &Host, store: &Path, mnt: &Path, log: &mut Vec<u8>) {
    host.ok_into(&["mount", s(store), s(mnt)], log);
}

fn umount(host: &Host, mnt: &Path, log: &mut Vec<u8>) {
    host.ok_into(&["umount", s(mnt)], log);
}

fn assert_same(a: &Path, b: &Path) {
    let out = sh_ok(&format!(
        "rsync -aHc --dry-run -i --delete '{}/' '{}/'",
        a.display(),
        b.display()
    ));
    assert!(out.trim().is_empty(), "trees differ:\n{out}");
}

#[test]
fn auxiliary_copy_mounts_on_another_host_after_a_certificate_import() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    let (a, b) = (Host::new(&env, "a"), Host::new(&env, "b"));
    let mut log = Vec::new();
    let (store, copy) = (env.path("store"), env.path("copy"));
    let (mnt_a, mnt_b) = (env.path("mnt-a"), env.path("mnt-b"));
    fs::create_dir_all(&mnt_a).expect("mkdir");
    fs::create_dir_all(&mnt_b).expect("mkdir");
    let _g = (Guard(mnt_a.clone()), Guard(mnt_b.clone()));
    let src = env.path("src");
    for i in 0..40u64 {
        fs::create_dir_all(src.join(format!("d{}", i % 4))).expect("mkdir");
        fs::write(
            src.join(format!("d{}/f{i}", i % 4)),
            pattern(i, 3000 * i as usize),
        )
        .expect("write");
    }
    // 1. init on A, rsync a tree in, unmount.
    a.ok_into(&["init", s(&store), "--rsa-bits", "2048"], &mut log);
    mount(&a, &store, &mnt_a, &mut log);
    sh_ok(&format!(
        "rsync -a '{}/' '{}/'",
        src.display(),
        mnt_a.join("data").display()
    ));
    umount(&a, &mnt_a, &mut log);
    // 2. rsync the store to a copy; B cannot mount it yet, and is told which key and how.
    sh_ok(&format!(
        "rsync -aHXS '{}/' '{}/'",
        store.display(),
        copy.display()
    ));
    let key_id = a.key_ids().pop().expect("A holds the key");
    let o = b.run_into(&["mount", s(&copy), s(&mnt_b)], &mut log);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains(&key_id) && e.contains("coffer keys import"),
        "{e}"
    );
    // 3. B's certificate goes to A, A exports to it, B imports; the copy mounts on B.
    let fp = b
        .ok_into(&["keys", "cert", "--out", s(&env.path("b.pem"))], &mut log)
        .trim()
        .to_string();
    assert!(fp.starts_with("SHA256:"), "{fp}");
    let out = a.ok_into(
        &[
            "keys",
            "export",
            s(&store),
            "--recipient",
            s(&env.path("b.pem")),
            "--out",
            s(&env.path("for-b.keys")),
        ],
        &mut log,
    );
    assert!(out.contains(&fp), "{out}");
    let out = b.ok_into(&["keys", "import", s(&env.path("for-b.keys"))], &mut log);
    assert!(out.contains(&format!("imported key {key_id}")), "{out}");
    assert_eq!(b.key_ids(), vec![key_id.clone()]);
    mount(&b, &copy, &mnt_b, &mut log);
    assert_same(&src, &mnt_b.join("data"));
    umount(&b, &mnt_b, &mut log);
    // 4. Change files through A's mount, rsync the store again, remount on B: the change shows.
    mount(&a, &store, &mnt_a, &mut log);
    fs::write(mnt_a.join("data/d1/f1"), b"changed on A").expect("write");
    fs::write(src.join("d1/f1"), b"changed on A").expect("write");
    fs::write(mnt_a.join("data/new-on-A"), pattern(99, 70_000)).expect("write");
    fs::write(src.join("new-on-A"), pattern(99, 70_000)).expect("write");
    umount(&a, &mnt_a, &mut log);
    sh_ok(&format!(
        "rsync -aHXS --delete '{}/' '{}/'",
        store.display(),
        copy.display()
    ));
    mount(&b, &copy, &mnt_b, &mut log);
    assert_same(&src, &mnt_b.join("data"));
    umount(&b, &mnt_b, &mut log);
    // Every export and import is in the audit logs, with the fingerprint.
    let audit_a = fs::read_to_string(a.keystore.join("audit.log")).expect("audit");
    let audit_b = fs::read_to_string(b.keystore.join("audit.log")).expect("audit");
    assert!(audit_a
        .lines()
        .any(|l| l.contains("\"op\":\"export\"") && l.contains(&key_id) && l.contains(&fp)));
    assert!(audit_b
        .lines()
        .any(|l| l.contains("\"op\":\"import\"") && l.contains(&key_id) && l.contains(&fp)));
    assert_no_key_bytes(
        &a,
        &key_id,
        &[
            a.keystore.join("audit.log"),
            b.keystore.join("audit.log"),
            env.path("for-b.keys"),
        ],
        &log,
    );
}

#[test]
fn password_exports_refuse_wrong_passwords_and_damaged_files() {
    let env = Env::new();
    let (a, c) = (Host::new(&env, "a"), Host::new(&env, "c"));
    let mut log = Vec::new();
    let store = env.path("store");
    a.ok_into(&["init", s(&store), "--rsa-bits", "2048"], &mut log);
    fs::write(env.path("pw"), "export password\n").expect("write");
    fs::write(env.path("wrong"), "not the password\n").expect("write");
    let file = env.path("pw.keys");
    let out = a.ok_into(
        &[
            "keys",
            "export",
            s(&store),
            "--password-file",
            s(&env.path("pw")),
            "--out",
            s(&file),
        ],
        &mut log,
    );
    assert!(out.contains("a lost password cannot be recovered"), "{out}");
    // Help is wrapped to the terminal's width: compare its words, not its lines.
    let help = a.ok_into(&["keys", "export", "--help"], &mut log);
    let words = help.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        words.contains("lost password cannot be recovered"),
        "{help}"
    );
    let import = |f: &Path, pw: &str, log: &mut Vec<u8>| {
        c.run_into(
            &["keys", "import", s(f), "--password-file", s(&env.path(pw))],
            log,
        )
    };
    // Wrong password: refused, nothing imported.
    let o = import(&file, "wrong", &mut log);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("wrong password") && stderr(&o).contains("nothing was imported"),
        "{}",
        stderr(&o)
    );
    assert!(c.key_ids().is_empty());
    // Truncated and altered files: a clear error, nothing imported.
    let bytes = fs::read(&file).expect("read");
    for (name, damaged) in [
        ("truncated", bytes[..bytes.len() - 10].to_vec()),
        ("half", bytes[..bytes.len() / 2].to_vec()),
        ("flipped", {
            let mut b = bytes.clone();
            b[bytes.len() / 2] ^= 0x01;
            b
        }),
    ] {
        let p = env.path(name);
        fs::write(&p, damaged).expect("write");
        let o = import(&p, "pw", &mut log);
        assert_eq!(o.status.code(), Some(2), "{name}");
        assert!(
            stderr(&o).contains("truncated or damaged"),
            "{name}: {}",
            stderr(&o)
        );
        assert_eq!(stderr(&o).trim_end().lines().count(), 1);
    }
    fs::write(env.path("garbage"), b"this is not an export").expect("write");
    assert!(stderr(&import(&env.path("garbage"), "pw", &mut log))
        .contains("not a coffer key export file"));
    assert!(c.key_ids().is_empty(), "nothing was imported");
    // The right password imports; again is a harmless no-op.
    let out = String::from_utf8_lossy(&import(&file, "pw", &mut log).stdout).into_owned();
    assert!(out.contains("imported key"), "{out}");
    let o = import(&file, "pw", &mut log);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("already in this keystore: nothing to do"));
    assert_eq!(c.key_ids(), a.key_ids());
    let key_id = a.key_ids().pop().expect("key");
    assert_no_key_bytes(&a, &key_id, &[file, c.keystore.join("audit.log")], &log);
}

#[test]
fn an_export_for_another_keystore_is_refused_by_name() {
    let env = Env::new();
    let (a, b, c) = (
        Host::new(&env, "a"),
        Host::new(&env, "b"),
        Host::new(&env, "c"),
    );
    let mut log = Vec::new();
    let store = env.path("store");
    a.ok_into(&["init", s(&store), "--rsa-bits", "2048"], &mut log);
    let fp_b = b
        .ok_into(&["keys", "cert", "--out", s(&env.path("b.pem"))], &mut log)
        .trim()
        .to_string();
    let fp_c = c
        .ok_into(&["keys", "cert", "--out", s(&env.path("c.pem"))], &mut log)
        .trim()
        .to_string();
    a.ok_into(
        &[
            "keys",
            "export",
            s(&store),
            "--recipient",
            s(&env.path("b.pem")),
            "--out",
            s(&env.path("for-b.keys")),
        ],
        &mut log,
    );
    let o = c.run_into(&["keys", "import", s(&env.path("for-b.keys"))], &mut log);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains(&fp_b) && e.contains(&fp_c) && e.contains("nothing was imported"),
        "{e}"
    );
    assert!(c.key_ids().is_empty());
    let audit = fs::read_to_string(c.keystore.join("audit.log")).expect("audit");
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"op\":\"import\"") && l.contains("\"outcome\":\"refused\"")),
        "{audit}"
    );
    // The certificate stays the same across calls (one identity per keystore).
    let again = b
        .ok_into(&["keys", "cert", "--out", s(&env.path("b2.pem"))], &mut log)
        .trim()
        .to_string();
    assert_eq!(again, fp_b);
    // Importing into the right keystore works, and a second time is a no-op.
    b.ok_into(&["keys", "import", s(&env.path("for-b.keys"))], &mut log);
    let o = b.run_into(&["keys", "import", s(&env.path("for-b.keys"))], &mut log);
    assert!(String::from_utf8_lossy(&o.stdout).contains("nothing to do"));
}

#[test]
fn recovery_key_restores_a_store_after_the_keystore_is_lost() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    let a = Host::new(&env, "a");
    let mut log = Vec::new();
    let store = env.path("store");
    let mnt = env.path("mnt-r");
    fs::create_dir_all(&mnt).expect("mkdir");
    let _g = Guard(mnt.clone());
    let fp = a
        .ok_into(
            &[
                "keys",
                "recovery-key",
                "--out",
                s(&env.path("org-recovery")),
                "--bits",
                "3072",
            ],
            &mut log,
        )
        .trim()
        .to_string();
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &fs::metadata(env.path("org-recovery.key"))
            .expect("key")
            .permissions(),
    );
    assert_eq!(key_mode & 0o777, 0o600);
    a.ok_into(
        &[
            "init",
            s(&store),
            "--rsa-bits",
            "2048",
            "--recovery-cert",
            s(&env.path("org-recovery.pem")),
        ],
        &mut log,
    );
    let info: serde_json::Value =
        serde_json::from_str(&a.ok_into(&["info", s(&store), "--json"], &mut log)).expect("json");
    let key_id = info["master_keys"][0]["key_id"]
        .as_str()
        .expect("id")
        .to_string();
    mount(&a, &store, &mnt, &mut log);
    let data = pattern(5, 300_000);
    fs::write(mnt.join("precious"), &data).expect("write");
    umount(&a, &mnt, &mut log);
    // Keep A's key bytes for the leak check, then lose the keystore entirely.
    let master = master_key_of(&a, &key_id);
    fs::remove_dir_all(&a.keystore).expect("rm keystore");
    let o = a.run_into(&["mount", s(&store), s(&mnt)], &mut log);
    assert_eq!(o.status.code(), Some(2));
    // A wrong recovery key is refused by fingerprint.
    a.ok_into(
        &["keys", "recovery-key", "--out", s(&env.path("other"))],
        &mut log,
    );
    let o = a.run_into(
        &[
            "recover",
            s(&store),
            "--recovery-key",
            s(&env.path("other.key")),
        ],
        &mut log,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains(&fp), "{}", stderr(&o));
    let out = a.ok_into(
        &[
            "recover",
            s(&store),
            "--recovery-key",
            s(&env.path("org-recovery.key")),
        ],
        &mut log,
    );
    assert!(out.contains(&format!("imported key {key_id}")), "{out}");
    mount(&a, &store, &mnt, &mut log);
    assert_eq!(fs::read(mnt.join("precious")).expect("read"), data);
    umount(&a, &mnt, &mut log);
    let desc = fs::read(store.join("coffer.store")).expect("descriptor");
    for form in key_forms(&master) {
        assert!(!contains(&desc, &form), "master key in the descriptor");
        assert!(!contains(&log, &form), "master key in output");
    }
}

/// The master key's bytes, read through the library with the host's passphrase.
fn master_key_of(host: &Host, key_id: &str) -> Vec<u8> {
    let pass = fs::read_to_string(&host.pass).expect("pass");
    let ks = coffer::keys::Keystore::open(&host.keystore, pass.trim_end().as_bytes())
        .expect("open keystore");
    ks.get(key_id)
        .expect("get")
        .expect("present")
        .expose()
        .to_vec()
}

fn key_forms(key: &[u8]) -> Vec<Vec<u8>> {
    vec![
        key.to_vec(),
        hex::encode(key).into_bytes(),
        base64::engine::general_purpose::STANDARD
            .encode(key)
            .into_bytes(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(key)
            .into_bytes(),
    ]
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn assert_no_key_bytes(host: &Host, key_id: &str, files: &[PathBuf], output: &[u8]) {
    let key = master_key_of(host, key_id);
    for form in key_forms(&key) {
        for f in files {
            let bytes = fs::read(f).expect("read");
            assert!(!contains(&bytes, &form), "key bytes in {}", f.display());
        }
        assert!(!contains(output, &form), "key bytes in command output");
    }
}
