//! Micro-benchmarks: block seal and open (MB/s) through aws-lc-rs and, for comparison, the
//! RustCrypto aes-gcm-siv crate; file-key wrap and unwrap; RSA-3072 batch-key wrap and unwrap;
//! catalog inserts and lookups.
//! Run with `cargo bench`; `cargo test --all-targets` runs each once.

use coffer::catalog::{Catalog, CatalogOp, FileRecord};
use coffer::crypto::{BatchKey, BlockCipher, FileKey, PrivateKey, Secret32};
use coffer::format::{open_block, seal_block, BlockPos, Header, BLOCK_OVERHEAD};
use divan::counter::{BytesCount, ItemsCount};
use divan::Bencher;

fn main() {
    divan::main();
}

#[divan::bench(args = [4096, 65536, 1 << 20])]
fn block_seal(b: Bencher, size: usize) {
    let c = BlockCipher::new(&Secret32::random());
    let plain = vec![7u8; size];
    let mut out = vec![0u8; size + BLOCK_OVERHEAD];
    b.counter(BytesCount::new(size))
        .bench_local(|| seal_block(&c, &[1; 16], BlockPos::dense(3, false), &plain, &mut out));
}

#[divan::bench(args = [4096, 65536, 1 << 20])]
fn block_open(b: Bencher, size: usize) {
    let c = BlockCipher::new(&Secret32::random());
    let plain = vec![7u8; size];
    let mut sealed = vec![0u8; size + BLOCK_OVERHEAD];
    seal_block(&c, &[1; 16], BlockPos::dense(3, false), &plain, &mut sealed);
    b.counter(BytesCount::new(size))
        .with_inputs(|| sealed.clone())
        .bench_local_refs(|s| {
            open_block(&c, &[1; 16], BlockPos::dense(3, false), s)
                .map(|p| p.len())
                .unwrap_or(0)
        });
}

/// The same seal through the RustCrypto aes-gcm-siv crate (0.11, a dev-dependency): the
/// implementation coffer used before aws-lc-rs, kept here so the choice can be re-measured.
#[divan::bench(args = [4096, 65536, 1 << 20])]
fn block_seal_rustcrypto(b: Bencher, size: usize) {
    use aes_gcm_siv::aead::{AeadInPlace, KeyInit};
    let key = Secret32::random();
    let c = aes_gcm_siv::Aes256GcmSiv::new(key.expose().into());
    let mut buf = vec![7u8; size];
    b.counter(BytesCount::new(size)).bench_local(|| {
        c.encrypt_in_place_detached((&[3u8; 12]).into(), b"aad", &mut buf)
            .map(|t| t[0])
            .unwrap_or(0)
    });
}

#[divan::bench]
fn file_key_wrap(b: Bencher) {
    let batch = BatchKey::random();
    b.counter(ItemsCount::new(1usize))
        .bench_local(|| Header::new(&[0; 16], 16, [1; 16], &batch, &FileKey::random()));
}

#[divan::bench]
fn file_key_unwrap(b: Bencher) {
    let batch = BatchKey::random();
    let h = Header::new(&[0; 16], 16, [1; 16], &batch, &FileKey::random());
    b.counter(ItemsCount::new(1usize))
        .bench_local(|| h.unwrap_key(&[0; 16], &batch).is_ok());
}

/// One RSA-3072 key for the batch-key benches (key generation is not what is measured).
fn rsa_key() -> &'static PrivateKey {
    static KEY: std::sync::OnceLock<PrivateKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| PrivateKey::generate(3072).expect("keygen"))
}

/// RSA-OAEP (SHA-256) wrap of a batch key: once per batch when writing.
#[divan::bench]
fn batch_key_wrap_rsa3072(b: Bencher) {
    let public = rsa_key().public();
    let batch = BatchKey::random();
    b.counter(ItemsCount::new(1usize))
        .bench_local(|| public.wrap_batch_key(&batch).map(|w| w.len()).unwrap_or(0));
}

/// RSA-OAEP unwrap of a batch key: once per batch per mount when reading.
#[divan::bench]
fn batch_key_unwrap_rsa3072(b: Bencher) {
    let wrapped = rsa_key()
        .public()
        .wrap_batch_key(&BatchKey::random())
        .expect("wrap");
    b.counter(ItemsCount::new(1usize))
        .bench_local(|| rsa_key().unwrap_batch_key(&wrapped).is_ok());
}

fn record(i: u64) -> ([u8; 16], FileRecord) {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&i.to_le_bytes());
    (
        id,
        FileRecord {
            batch_id: [2; 16],
            wrapped_key: vec![3; 60],
            plain_len: i,
        },
    )
}

/// Inserts in groups of 1,000 per transaction, as the mount's catalog writer does.
#[divan::bench(sample_count = 10)]
fn catalog_insert_1000(b: Bencher) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cat = Catalog::create(&dir.path().join("catalog"), &[0; 16]).expect("catalog");
    let mut next = 0u64;
    b.counter(ItemsCount::new(1000usize)).bench_local(|| {
        let ops: Vec<_> = (next..next + 1000)
            .map(|i| {
                let (id, r) = record(i);
                CatalogOp::Put(id, r)
            })
            .collect();
        next += 1000;
        cat.apply(&ops, false).expect("apply");
    });
}

#[divan::bench]
fn catalog_lookup(b: Bencher) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cat = Catalog::create(&dir.path().join("catalog"), &[0; 16]).expect("catalog");
    let ops: Vec<_> = (0..10_000)
        .map(|i| {
            let (id, r) = record(i);
            CatalogOp::Put(id, r)
        })
        .collect();
    cat.apply(&ops, true).expect("apply");
    let mut i = 0u64;
    b.counter(ItemsCount::new(1usize)).bench_local(|| {
        i = (i + 7919) % 10_000;
        cat.file(&record(i).0).ok().flatten().is_some()
    });
}
