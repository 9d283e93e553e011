//! Unit tests of key export files (src/keys/transport.rs).

use super::*;

fn fast() -> KdfParams {
    KdfParams {
        m_cost: 8 * 1024,
        t_cost: 1,
        p_cost: 1,
    }
}

fn sample() -> (Vec<u8>, KeyEntry, Contents) {
    let key = MasterKey::random();
    let entry = KeyEntry {
        key_id: crypto::master_key_id(&key),
        store_id: "ab".repeat(16),
        version: 1,
        policy: Some("daily".into()),
        copy: None,
        origin: "created".into(),
        created: 7,
        format: None,
    };
    let raw = key.expose().to_vec();
    (
        raw,
        entry.clone(),
        Contents::Keys(vec![ExportedKey { entry, key }]),
    )
}

#[test]
fn hostile_argon2_parameters_are_refused_before_any_work() {
    let (_, _, contents) = sample();
    let file = seal_with_password(&contents, b"pw", &fast()).expect("seal");
    // A checksum is no authentication: anyone can rewrite the parameters and fix it.
    for (at, value) in [(12, 4u32 * 1024 * 1024), (16, 64)] {
        let mut f = file.clone();
        f[at..at + 4].copy_from_slice(&value.to_le_bytes());
        let n = f.len() - 32;
        let sum = *blake3::hash(&f[..n]).as_bytes();
        f[n..].copy_from_slice(&sum);
        let e = open_with_password(&f, b"pw").err().expect("refused");
        assert!(matches!(e, TransportError::KdfLimits(_)), "{e}");
        assert!(e.to_string().contains("at most 1 GiB, 10 passes"), "{e}");
    }
}

#[test]
fn password_export_round_trip_and_failures() {
    let (raw, entry, contents) = sample();
    let file = seal_with_password(&contents, b"pw", &fast()).expect("seal");
    assert_eq!(protection(&file), Ok(Protection::Password));
    let back = open_with_password(&file, b"pw")
        .expect("open")
        .into_keys()
        .expect("keys");
    assert_eq!(back[0].key.expose().to_vec(), raw);
    assert_eq!(back[0].entry, entry);
    assert!(matches!(
        open_with_password(&file, b"wrong"),
        Err(TransportError::WrongPassword)
    ));
    // Every truncation and every flipped byte is refused, never mistaken for a key.
    for cut in [0, 5, 12, 40, file.len() / 2, file.len() - 1] {
        assert!(
            open_with_password(&file[..cut], b"pw").is_err(),
            "cut at {cut}"
        );
    }
    for i in (0..file.len()).step_by(7) {
        let mut bad = file.clone();
        bad[i] ^= 0x10;
        assert!(
            open_with_password(&bad, b"pw").is_err(),
            "flip at {i} accepted"
        );
    }
    // No key material in the clear.
    assert!(!file.windows(32).any(|w| w == raw.as_slice()));
    assert!(!String::from_utf8_lossy(&file).contains(&B64.encode(&raw)));
}

#[test]
fn recipient_export_only_opens_for_its_recipient() {
    let (raw, _, contents) = sample();
    let dest = PrivateKey::generate(2048).expect("keygen");
    let other = PrivateKey::generate(2048).expect("keygen");
    let file = seal_to_recipient(&contents, &dest.public()).expect("seal");
    let fp = dest.public().fingerprint().expect("fp");
    assert_eq!(
        protection(&file),
        Ok(Protection::Recipient {
            fingerprint: fp.clone()
        })
    );
    let back = open_with_identity(&file, &dest)
        .expect("open")
        .into_keys()
        .expect("keys");
    assert_eq!(back[0].key.expose().to_vec(), raw);
    match open_with_identity(&file, &other) {
        Err(TransportError::WrongRecipient { made_for, .. }) => assert_eq!(made_for, fp),
        _ => panic!("another keystore must be refused"),
    }
    assert!(matches!(
        open_with_password(&file, b"x"),
        Err(TransportError::NeedsIdentity)
    ));
    let mut bad = file.clone();
    let n = bad.len();
    bad[n - 40] ^= 1;
    assert!(matches!(
        open_with_identity(&bad, &dest),
        Err(TransportError::Damaged)
    ));
}

#[test]
fn backup_credential_round_trip_carries_no_master_key() {
    let store = PrivateKey::generate(2048).expect("keygen");
    let names = NameKey::random();
    let write = WriteKey::random();
    let cred = Contents::Credential(BackupCredential {
        store_id: "cd".repeat(16),
        public_key: store.public().to_der().expect("der"),
        name_key: names.duplicate(),
        write_key: Some(write.duplicate()),
        policy: None,
        copy: Some("offsite".into()),
        format: Some(3),
    });
    let host = PrivateKey::generate(2048).expect("keygen");
    let file = seal_to_recipient(&cred, &host.public()).expect("seal");
    match open_with_identity(&file, &host).expect("open") {
        Contents::Credential(c) => {
            assert_eq!(c.name_key.expose(), names.expose());
            assert_eq!(c.write_key.expect("write key").expose(), write.expose());
            assert!(PublicKey::from_der(&c.public_key)
                .expect("pk")
                .same_as(&store.public()));
            assert_eq!(c.copy.as_deref(), Some("offsite"));
        }
        Contents::Keys(_) => panic!("a credential must not open as keys"),
    }
    let again = open_with_identity(&file, &host).expect("open");
    assert!(matches!(
        again.into_keys(),
        Err(TransportError::Unexpected(_))
    ));
}
