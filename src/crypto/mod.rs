//! Key types and primitives: the only module that touches cipher crates directly.
//!
//! Owns: zeroizing key newtypes, AEAD sealing of keys and blocks, RSA-OAEP wrapping of batch
//! keys, the Argon2id passphrase KDF and BLAKE3 derivations. Does not own: where any of these
//! bytes are stored (format, catalog, keys) or policy (when to rotate, what to cache).

mod aead;
mod kdf;
mod rsa_wrap;
mod secret;

pub use aead::{open_key, open_vec, seal_key, seal_vec, BlockCipher, TAG_LEN, WRAPPED_KEY_LEN};
pub use kdf::{derive_passphrase_key, KdfParams, MAX_M_COST, MAX_T_COST};
pub use rsa_wrap::{PrivateKey, PublicKey};
pub use secret::{BatchKey, FileKey, KeystoreKey, MasterKey, NameKey, Secret32, WriteKey};

/// Crypto failures. Deliberately coarse: which check failed is logged by the caller where it
/// helps an operator, never returned in a form that could serve as a decryption oracle.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("authentication failed")]
    Auth,
    #[error("malformed key material")]
    Malformed,
    #[error("RSA operation failed: {0}")]
    Rsa(String),
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

/// Fill `buf` from the operating system's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) {
    use rand_core::RngCore;
    rand_core::OsRng.fill_bytes(buf);
}

/// Seed aws-lc's own random generator now. RSA-OAEP draws from it (padding and blinding),
/// and its first use seeds it from CPU-jitter entropy, about 20 ms of CPU here; a mount does
/// this before it serves, so that cost is not paid by the first file a backup creates.
pub fn warm_rng() {
    let mut b = [0u8; 1];
    if aws_lc_rs::rand::fill(&mut b).is_err() {
        tracing::debug!("aws-lc's random generator is not available yet");
    }
}

pub fn random_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    random_bytes(&mut id);
    id
}

/// A key id names a master key without revealing it: a BLAKE3 derivation, one-way.
pub fn master_key_id(key: &MasterKey) -> String {
    let d = blake3::derive_key("coffer 2026-11 master key id", key.expose());
    hex::encode(&d[..16])
}

/// Derive a purpose-specific sub-key so one master key never encrypts two kinds of thing.
pub fn derive_subkey(context: &'static str, key: &Secret32) -> Secret32 {
    Secret32::from_array(blake3::derive_key(context, key.expose()))
}

/// A 32-byte MAC: keyed BLAKE3 under `derive_key(context, key)` over `parts`, each part
/// prefixed by its length (u64 LE) so that no two lists of parts hash alike.
pub fn mac(context: &'static str, key: &Secret32, parts: &[&[u8]]) -> [u8; 32] {
    keyed_mac(&derive_subkey(context, key), parts)
}

/// The same MAC under a key already derived for its purpose (for a MAC computed often, as on
/// every lookup: the derivation is done once).
pub fn keyed_mac(key: &Secret32, parts: &[&[u8]]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_keyed(key.expose());
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    *h.finalize().as_bytes()
}

/// Constant-time equality for MACs and commitments.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut acc = 0u8;
    for (x, y) in a.iter().zip(b) {
        acc |= x ^ y;
    }
    // black_box keeps the optimiser from turning the fold into an early exit.
    std::hint::black_box(acc) == 0
}
