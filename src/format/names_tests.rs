//! Unit tests of names.rs: name, symlink and long-link codecs, entry classification.

use super::*;

fn codec() -> NameCodec {
    NameCodec::new(&NameKey::random())
}

#[test]
fn names_round_trip_and_are_deterministic_per_dir() {
    let c = codec();
    let iv = [5u8; 16];
    let a = c.encrypt(&iv, OsStr::new("report.pdf")).expect("enc");
    assert_eq!(a, c.encrypt(&iv, OsStr::new("report.pdf")).expect("enc"));
    assert_ne!(
        a,
        c.encrypt(&[6u8; 16], OsStr::new("report.pdf"))
            .expect("enc")
    );
    let StoredName::Short(s) = &a else {
        panic!("short name expected")
    };
    assert!(!s.contains("report"));
    assert!(!s.starts_with('.'));
    assert_eq!(
        c.decrypt(&iv, s).expect("dec"),
        OsString::from("report.pdf")
    );
    assert_eq!(c.decrypt(&[6u8; 16], s), Err(NameError::Undecryptable));
}

#[test]
fn long_names_use_a_sidecar() {
    let c = codec();
    let iv = [1u8; 16];
    let name = "n".repeat(255);
    let s = c.encrypt(&iv, OsStr::new(&name)).expect("enc");
    let StoredName::Long {
        entry,
        sidecar,
        encoded,
    } = s
    else {
        panic!("long name expected")
    };
    assert!(entry.len() <= 255 && entry.starts_with(LONG_PREFIX));
    assert!(sidecar.starts_with(LONG_SIDECAR_PREFIX));
    assert_eq!(c.decrypt(&iv, &encoded).expect("dec"), OsString::from(name));
    assert_eq!(
        c.encrypt(&iv, OsStr::new(&"n".repeat(256))),
        Err(NameError::TooLong)
    );
}

/// What a holder of the name key (a backup host) could seal: authentic, and refused.
fn sealed(c: &NameCodec, iv: &[u8; 16], padded: &[u8]) -> String {
    let mut buf = padded.to_vec();
    let tag = c.names.seal_with_nonce(&iv[..12], iv, &mut buf);
    buf.extend_from_slice(&tag);
    B64.encode(&buf)
}

#[test]
fn authentic_but_unsafe_names_are_refused() {
    let c = codec();
    let iv = [3u8; 16];
    let pad = |s: &[u8], to: usize| {
        let mut v = s.to_vec();
        v.resize(to, 0);
        v
    };
    for bad in [
        pad(b"../../etc/passwd", 16),
        pad(b"a/b", 16),
        pad(b".", 16),
        pad(b"..", 16),
        pad(b"a\0b", 16),
        pad(b"ok", 32), // padded one block too far
    ] {
        assert_eq!(
            c.decrypt(&iv, &sealed(&c, &iv, &bad)),
            Err(NameError::Unsafe)
        );
    }
    assert_eq!(
        c.decrypt(&iv, &sealed(&c, &iv, &pad(b"ok", 16)))
            .expect("ok"),
        OsString::from("ok")
    );
}

#[test]
fn a_sidecar_must_hash_to_its_entry() {
    let c = codec();
    let iv = [1u8; 16];
    let StoredName::Long { entry, encoded, .. } =
        c.encrypt(&iv, OsStr::new(&"x".repeat(240))).expect("enc")
    else {
        panic!("long name expected")
    };
    let (side, hash) = sidecar_of_entry(entry.as_bytes()).expect("long entry");
    assert!(side.starts_with(LONG_SIDECAR_PREFIX.as_bytes()));
    assert_eq!(
        sidecar_encoding(hash, encoded.clone().into_bytes()).expect("ok"),
        encoded
    );
    let other = match c.encrypt(&iv, OsStr::new(&"y".repeat(240))).expect("enc") {
        StoredName::Long { encoded, .. } => encoded,
        StoredName::Short(_) => panic!("long name expected"),
    };
    assert_eq!(
        sidecar_encoding(hash, other.into_bytes()),
        Err(NameError::SidecarMismatch)
    );
    assert!(sidecar_of_entry(b"abc").is_none());
}

#[test]
fn invalid_names_and_symlinks() {
    let c = codec();
    for bad in ["", ".", ".."] {
        assert_eq!(
            c.encrypt(&[0; 16], OsStr::new(bad)),
            Err(NameError::Invalid)
        );
    }
    let StoredLink::Inline(t) = encode_symlink(&c, b"../some/target").expect("enc") else {
        panic!("a short target is inline");
    };
    assert!(!t.contains("target"));
    assert_eq!(symlink_plain_len(t.len() as u64), 14);
    assert_eq!(
        decode_symlink(&c, t.as_bytes()).expect("dec"),
        b"../some/target"
    );
    let mut bad = t.into_bytes();
    bad[3] = if bad[3] == b'A' { b'B' } else { b'A' };
    assert!(decode_symlink(&c, &bad).is_err());
}

#[test]
fn long_symlink_targets_go_to_a_blob_named_by_its_hash() {
    let c = codec();
    let inline = vec![b'a'; INLINE_LINK_MAX];
    assert!(matches!(encode_symlink(&c, &inline), Ok(StoredLink::Inline(s)) if s.len() < LINK_MAX));
    let target = vec![b'x'; LINK_MAX];
    let stored = encode_symlink(&c, &target).expect("a 4095-byte target");
    let StoredLink::Long { blob_name, blob } = &stored else {
        panic!("a long target goes to a blob");
    };
    assert!(blob.len() <= LINK_BLOB_MAX);
    assert_eq!(long_link_plain_len(blob.len() as u64), LINK_MAX as u64);
    let backing = stored.backing_target();
    assert!(backing.len() < 64 && backing.starts_with(LONG_LINK_PREFIX));
    let name = long_link_blob(backing.as_bytes()).expect("a long link");
    assert_eq!(name, blob_name.as_bytes());
    assert_eq!(decode_long_link(&c, name, blob).expect("opens"), target);
    // A blob swapped in from another link does not hash to this name.
    let StoredLink::Long { blob: other, .. } = encode_symlink(&c, &target).expect("enc") else {
        panic!("long");
    };
    assert!(decode_long_link(&c, name, &other).is_err());
    assert!(long_link_blob(b"QUJD").is_none());
    assert_eq!(
        encode_symlink(&c, &vec![b'x'; LINK_MAX + 1]),
        Err(NameError::TooLong)
    );
}
