//! Entry points for the fuzzer (fuzz/, tools/fuzz.sh): each takes hostile bytes as one kind
//! of input coffer reads from disk or from another host, and runs the same code a real input
//! takes. None may panic, whatever the bytes; a crash the fuzzer finds becomes a regression
//! test (tests/fuzz_regressions.rs). Not a stable API.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::catalog::{BatchRecord, FileRecord};
use crate::crypto::{MasterKey, NameKey, PrivateKey};
use crate::format::{decode_symlink, Header, NameCodec, DIRIV_LEN, HEADER_LEN};
use crate::store::{self, Descriptor, FirstMaster, InitOptions, OpenStore};

/// A real store in a temporary directory, made once per fuzzing process, with one real file
/// whose header the ciphertext target can put in front of hostile blocks.
struct Fixture {
    _dir: tempfile::TempDir,
    store: OpenStore,
    header: [u8; HEADER_LEN],
    file: PathBuf,
}

fn fixture() -> Option<&'static Fixture> {
    static F: OnceLock<Option<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().ok()?;
        let root = dir.path().join("store");
        let opts = InitOptions {
            rsa_bits: 2048,
            block_shift: 12,
            policy: None,
            copy: None,
            provider: crate::store::KeyHome::Local,
            kms: None,
        };
        let first = FirstMaster::random();
        let master = first.key.duplicate();
        let desc = store::init(
            &root,
            &opts,
            first,
            Box::new(|_, _| Ok(())),
            Box::new(|_, _| Ok(None)),
        )
        .ok()?;
        let keys = store::unlock_keys(&desc, &master).ok()?;
        let store = OpenStore::open(&root, desc, keys).ok()?;
        let (header, _key) = store.new_file().ok()?;
        Some(Fixture {
            file: root.join("data").join("fuzzed"),
            header: header.encode(),
            store,
            _dir: dir,
        })
    })
    .as_ref()
}

/// A whole ciphertext file: its header (the store's own real header when the first byte is
/// odd, so the blocks behind it are reached), then blocks, checked as fsck checks them.
pub fn ciphertext_file(bytes: &[u8]) {
    let Some(f) = fixture() else { return };
    let Some((&first, rest)) = bytes.split_first() else {
        return;
    };
    let mut file = Vec::with_capacity(bytes.len() + HEADER_LEN);
    if first & 1 == 1 {
        file.extend_from_slice(&f.header);
    }
    file.extend_from_slice(rest);
    if std::fs::write(&f.file, &file).is_ok() {
        let _ = crate::fsck::verify_file(&f.store, &f.file);
    }
}

/// One sealed block: the first 9 bytes choose its index and whether it is the last.
pub fn block(bytes: &[u8]) {
    static CIPHER: OnceLock<crate::crypto::BlockCipher> = OnceLock::new();
    let cipher = CIPHER.get_or_init(|| {
        crate::crypto::BlockCipher::new(&crate::crypto::Secret32::from_array([1; 32]))
    });
    if bytes.len() < 9 {
        return;
    }
    let mut idx = [0u8; 8];
    idx.copy_from_slice(&bytes[1..9]);
    let mut sealed = bytes[9..].to_vec();
    let _ = crate::format::open_block(
        cipher,
        &[2; 16],
        crate::format::BlockPos {
            idx: u64::from_le_bytes(idx),
            last: bytes[0] & 1 == 1,
            holes_before: (bytes[0] & 2 == 2).then_some(u64::from(bytes[0] >> 2)),
        },
        &mut sealed,
    );
}

/// A file header alone.
pub fn header(bytes: &[u8]) {
    if let Ok(h) = Header::decode(bytes) {
        let _ = h.encode();
        let _ = h.block_size();
    }
}

/// An encrypted file name (as a directory entry) and an encrypted symlink target.
pub fn name(bytes: &[u8]) {
    static CODEC: OnceLock<NameCodec> = OnceLock::new();
    let codec = CODEC.get_or_init(|| {
        NameCodec::new(&NameKey::from_secret(crate::crypto::Secret32::from_array(
            [3; 32],
        )))
    });
    let iv = [9u8; DIRIV_LEN];
    if let Ok(s) = std::str::from_utf8(bytes) {
        let _ = codec.decrypt(&iv, s);
    }
    let _ = decode_symlink(codec, bytes);
}

/// A catalog record, as redb hands its value bytes back.
pub fn catalog_record(bytes: &[u8]) {
    let _ = postcard::from_bytes::<FileRecord>(bytes);
    let _ = postcard::from_bytes::<BatchRecord>(bytes);
}

/// A key export file or backup credential, as `coffer keys import` reads it.
pub fn export_file(bytes: &[u8]) {
    // A fixed identity: generating an RSA key under the fuzzer's instrumentation takes
    // longer than its timeout. A throwaway key, used by nothing else.
    static ID: OnceLock<Option<PrivateKey>> = OnceLock::new();
    let _ = crate::keys::transport::protection(bytes);
    let pem = include_str!("../tests/fixtures/fuzz-identity.pem");
    if let Some(id) = ID.get_or_init(|| PrivateKey::from_pem(pem).ok()) {
        let _ = crate::keys::transport::open_with_identity(bytes, id);
    }
}

/// A store descriptor (coffer.store), then unlocking it with some master key.
pub fn descriptor(bytes: &[u8]) {
    if let Ok(d) = Descriptor::from_bytes(bytes, Path::new("coffer.store")) {
        let _ = d.current_master();
        let _ = d.public_key_der();
        let _ = store::unlock_keys(
            &d,
            &MasterKey::from_secret(crate::crypto::Secret32::from_array([5; 32])),
        );
    }
}

/// A keystore file, without its passphrase.
pub fn keystore(bytes: &[u8]) {
    let _ = crate::keys::check_keystore_bytes(bytes);
}

/// What a key server reads from a client, and a client from a key server: the HTTP head and
/// body, bounded.
pub fn keyserver_http(bytes: &[u8]) {
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let input = bytes.to_vec();
    rt.block_on(async move {
        // The bytes arrive as a client's request, through hyper's parser with the limits the
        // server sets, into the conversion and parsing that coffer does itself.
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let svc =
            hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                use crate::server::request;
                let mut head = request::Request::head_of(&req);
                let _ = request::via_list(head.header("X-Coffer-Via"));
                head.body = http_body_util::Limited::new(req.into_body(), request::MAX_BODY)
                    .collect()
                    .await
                    .map(|b| b.to_bytes().to_vec())
                    .unwrap_or_default();
                let _ = request::export_of(&head.body);
                // The console's forms and query strings.
                let _ = crate::server::console::fields(&head.body);
                let _ = crate::server::console::fields(head.query.as_bytes());
                Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                    hyper::body::Bytes::new(),
                )))
            });
        tokio::spawn(async move {
            let _ = client.write_all(&input).await;
            let _ = client.shutdown().await;
            let mut sink = Vec::new();
            let _ = client.read_to_end(&mut sink).await;
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .max_buf_size(16 * 1024)
            .keep_alive(false)
            .serve_connection(hyper_util::rt::TokioIo::new(server), svc);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), conn).await;
    });
}
