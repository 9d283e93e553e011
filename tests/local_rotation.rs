//! `coffer keys rotate` on a store whose master key is in the local keystore: a new version in
//! the keystore, the private key re-wrapped, no byte of data changed, the old version kept
//! for copies made before, and the recovery copy sealed to the new version (so `recover`
//! still opens the store after a rotation).

mod common;

use common::{pattern, require_fuse, s, store_bytes_but_descriptor as data_bytes, Env};

#[test]
fn rotate_a_local_store_and_recover_it_afterwards() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.coffer_ok(&[
        "keys",
        "recovery-key",
        "--out",
        s(&env.path("org")),
        "--bits",
        "3072",
    ]);
    env.init_with(&["--recovery-cert", s(&env.path("org.pem"))]);
    let m = env.mount();
    std::fs::write(m.p("a"), pattern(1, 123_456)).expect("write");
    std::fs::create_dir(m.p("d")).expect("mkdir");
    std::fs::write(m.p("d/b"), pattern(2, 10)).expect("write");
    m.umount();
    let before = data_bytes(&env.store);
    let old: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.store.join("coffer.store")).expect("read"))
            .expect("json");
    let old_id = old["master_keys"][0]["key_id"]
        .as_str()
        .expect("id")
        .to_string();

    let out = env.coffer_ok(&["keys", "rotate", s(&env.store)]);
    assert!(out.contains("rotated to version 2"), "{out}");
    assert_eq!(before, data_bytes(&env.store), "a rotation changed data");
    let new: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.store.join("coffer.store")).expect("read"))
            .expect("json");
    let new_id = new["master_keys"][0]["key_id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_ne!(new_id, old_id);
    assert_eq!(new["master_keys"][0]["version"], 2);
    assert_ne!(new["recovery"]["export"], old["recovery"]["export"]);
    let listed = env.coffer_ok(&["keys", "list"]);
    assert!(
        listed.contains(&old_id) && listed.contains(&new_id),
        "{listed}"
    );

    let m = env.mount();
    assert_eq!(std::fs::read(m.p("a")).expect("read"), pattern(1, 123_456));
    assert_eq!(std::fs::read(m.p("d/b")).expect("read"), pattern(2, 10));
    m.umount();

    // Every keystore lost: the recovery copy made at the rotation opens the rotated store.
    std::fs::remove_dir_all(&env.keystore).expect("rm keystore");
    let o = env.coffer(&["mount", s(&env.store), s(&env.mnt)]);
    assert_eq!(o.status.code(), Some(2));
    let out = env.coffer_ok(&[
        "recover",
        s(&env.store),
        "--recovery-key",
        s(&env.path("org.key")),
    ]);
    assert!(out.contains(&format!("imported key {new_id}")), "{out}");
    let m = env.mount();
    assert_eq!(std::fs::read(m.p("a")).expect("read"), pattern(1, 123_456));
    m.umount();

    // sync is for kms stores only.
    let o = env.coffer(&["keys", "sync", s(&env.store)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("only kms stores"));
}
