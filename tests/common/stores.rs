//! Stores as a test starts from them: as an earlier coffer left them (formats 1 and 2, and
//! the fixtures under tests/fixtures), their keys opened in the test's own process, and a
//! backup host given its credential.

use std::path::Path;
use std::process::Output;

use super::{attacker, s, sh_ok, Env, Host, PASS};

/// `env`'s store's master key and the keys it unlocks, read from its keystore as a host
/// that holds them does.
pub fn store_keys(env: &Env) -> (coffer::crypto::MasterKey, coffer::store::StoreKeys) {
    let ks = coffer::keys::Keystore::open(&env.keystore, PASS.as_bytes()).expect("keystore");
    let desc = coffer::store::Descriptor::load(&env.store).expect("descriptor");
    let master = ks
        .get(&desc.current_master().key_id)
        .expect("get")
        .expect("master");
    let keys = coffer::store::unlock_keys(&desc, &master).expect("unlock");
    (master, keys)
}

/// Make `store` what an earlier coffer would have written (format `version`, 1 or 2), as a
/// store made before format 3 is: its descriptor rewritten with the master key (from a
/// password export made with `run`, which runs coffer as a host that holds the key), and the
/// format the keystore `keystore` remembers for it forgotten, as an earlier keystore had none.
/// The store's keys stay the same.
pub fn as_older_format(
    run: &dyn Fn(&[&str]) -> Output,
    store: &Path,
    keystore: &Path,
    version: u32,
) {
    let dir = tempfile::tempdir().expect("tmp");
    let (pw, out) = (dir.path().join("pw"), dir.path().join("keys"));
    std::fs::write(&pw, "older\n").expect("write");
    let o = run(&[
        "keys",
        "export",
        s(store),
        "--password-file",
        s(&pw),
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bytes = std::fs::read(&out).expect("export");
    let keys = coffer::keys::transport::open_with_password(&bytes, b"older")
        .and_then(|c| c.into_keys())
        .expect("the export opens");
    let desc = attacker::descriptor_json(store);
    let id = desc["master_keys"][0]["key_id"].as_str().expect("id");
    let master = &keys
        .iter()
        .find(|k| k.entry.key_id == id)
        .expect("the key")
        .key;
    coffer::store::legacy::rewrite_as(store, master, version).expect("rewritten");
    forget_format(keystore, store);
}

/// What the keystore `keystore` remembers of `store`'s format forgotten, as a keystore made
/// before format 3 had nothing of it.
pub fn forget_format(keystore: &Path, store: &Path) {
    let desc = attacker::descriptor_json(store);
    let ks = keystore.join("keystore.json");
    let Ok(bytes) = std::fs::read(&ks) else {
        return; // no keystore here (a kms store's key is in the KMS): nothing remembers
    };
    let mut k: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    for list in ["keys", "credentials"] {
        if let Some(a) = k.get_mut(list).and_then(|l| l.as_array_mut()) {
            for e in a.iter_mut().filter(|e| e["store_id"] == desc["store_id"]) {
                e.as_object_mut().expect("entry").remove("format");
            }
        }
    }
    std::fs::write(&ks, serde_json::to_vec_pretty(&k).expect("json")).expect("write");
}

/// A working copy of tests/fixtures/NAME (a store of an earlier format, its keystore and
/// passphrase) in a temporary directory of its own, with a mount point `mnt` in it.
pub fn fixture_copy(name: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("coffer-test-")
        .tempdir()
        .expect("tmp");
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    sh_ok(&format!(
        "cp -a '{}/.' '{}/'",
        src.display(),
        dir.path().display()
    ));
    std::fs::create_dir_all(dir.path().join("mnt")).expect("mkdir");
    dir
}

/// Give `backup` a backup credential for `store` from `key` (which holds its master key),
/// through a certificate, as docs/backup-only.md does it.
pub fn give_credential(env: &Env, key: &Host, backup: &Host, store: &Path) {
    let (pem, cred) = (
        env.path(&format!("{}.pem", backup.name)),
        env.path("store.bcred"),
    );
    backup.ok(&["keys", "cert", "--out", s(&pem)]);
    let _ = std::fs::remove_file(&cred);
    key.ok(&[
        "keys",
        "backup-credential",
        s(store),
        "--recipient",
        s(&pem),
        "--out",
        s(&cred),
    ]);
    backup.ok(&["keys", "import", s(&cred)]);
}
