use super::*;
use crate::crypto::MasterKey;

fn fast() -> KdfParams {
    KdfParams {
        m_cost: 8 * 1024,
        t_cost: 1,
        p_cost: 1,
    }
}

#[test]
fn keystore_round_trip_wrong_passphrase_and_conflict() {
    let d = tempfile::tempdir().expect("tempdir");
    let dir = d.path().join("ks");
    let ks = Keystore::create(&dir, b"right", fast()).expect("create");
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join(FILE)), 0o600);
    let mk = MasterKey::random();
    let entry = KeyEntry {
        key_id: crypto::master_key_id(&mk),
        store_id: "s1".into(),
        version: 1,
        policy: Some("daily".into()),
        copy: None,
        origin: "created".into(),
        created: 1,
        format: None,
    };
    assert!(ks.add(entry.clone(), &mk).expect("add"));
    assert!(!ks.add(entry.clone(), &mk).expect("re-add is a no-op"));
    assert!(matches!(
        ks.add(entry.clone(), &MasterKey::random()),
        Err(KeystoreError::Conflict(_))
    ));
    let ks2 = Keystore::open(&dir, b"right").expect("open");
    let got = ks2.get(&entry.key_id).expect("get").expect("present");
    assert_eq!(got.expose(), mk.expose());
    assert!(ks2.get("nope").expect("get").is_none());
    assert!(matches!(
        Keystore::open(&dir, b"wrong"),
        Err(KeystoreError::WrongPassphrase(_))
    ));
    // The key's bytes are nowhere in the keystore directory.
    for f in std::fs::read_dir(&dir).expect("ls") {
        let bytes = std::fs::read(f.expect("entry").path()).expect("read");
        assert!(!bytes.windows(32).any(|w| w == mk.expose()));
        assert!(!String::from_utf8_lossy(&bytes).contains(&hex::encode(mk.expose())));
    }
    assert_eq!(mode(&dir.join(AUDIT)), 0o600);
}

#[test]
fn add_all_is_all_or_nothing() {
    let d = tempfile::tempdir().expect("tempdir");
    let ks = Keystore::create(&d.path().join("ks"), b"pw", fast()).expect("create");
    let entry = |k: &MasterKey| KeyEntry {
        key_id: crypto::master_key_id(k),
        store_id: "s".into(),
        version: 1,
        policy: None,
        copy: None,
        origin: "import".into(),
        created: 1,
        format: None,
    };
    let (k1, k2) = (MasterKey::random(), MasterKey::random());
    assert!(ks.add(entry(&k1), &k1).expect("add"));
    // A batch with one conflicting entry (k1's id, other bytes) adds nothing at all.
    let forged = KeyEntry {
        key_id: crypto::master_key_id(&k1),
        ..entry(&k2)
    };
    let r = ks.add_all(&[(entry(&k2), &k2), (forged, &k2)], "import", None);
    assert!(matches!(r, Err(KeystoreError::Conflict(_))));
    assert_eq!(ks.entries().expect("list").len(), 1, "k2 was not added");
    assert_eq!(
        ks.get(&crypto::master_key_id(&k1))
            .expect("get")
            .expect("k1")
            .expose(),
        k1.expose()
    );
    let r = ks
        .add_all(&[(entry(&k1), &k1), (entry(&k2), &k2)], "import", None)
        .expect("add");
    assert_eq!(r, vec![Added::AlreadyPresent, Added::New]);
}

#[test]
fn damaged_keystore_is_a_clear_error() {
    let d = tempfile::tempdir().expect("tempdir");
    let dir = d.path().join("ks");
    Keystore::create(&dir, b"pw", fast()).expect("create");
    let p = dir.join(FILE);
    let bytes = std::fs::read(&p).expect("read");
    std::fs::write(&p, &bytes[..bytes.len() / 2]).expect("truncate");
    let e = Keystore::open(&dir, b"pw")
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("not a valid keystore file (truncated)"), "{e}");
    // Parameters that would cost 4 GiB are refused before Argon2 runs.
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    v["kdf"]["m_cost"] = (4u32 * 1024 * 1024).into();
    std::fs::write(&p, serde_json::to_vec(&v).expect("json")).expect("write");
    let e = Keystore::open(&dir, b"pw")
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("Argon2 parameters out of range"), "{e}");
}
