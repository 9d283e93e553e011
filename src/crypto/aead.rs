//! AES-256-GCM-SIV for key wrapping and for file blocks.
//!
//! GCM-SIV is nonce-misuse resistant, so a repeated random nonce degrades to revealing equal
//! plaintexts instead of breaking the key. Every seal binds associated data (AAD) that names
//! what the bytes are and where they belong.

use aes_gcm_siv::aead::{AeadInPlace, KeyInit};
use aes_gcm_siv::{Aes256GcmSiv, Nonce, Tag};

use super::{random_bytes, CryptoError, Secret32};

pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
/// A wrapped 256-bit key: nonce | ciphertext | tag.
pub const WRAPPED_KEY_LEN: usize = NONCE_LEN + 32 + TAG_LEN;

/// Seal a 32-byte key under `kek`, bound to `aad`.
pub fn seal_key(kek: &Secret32, aad: &[u8], key: &Secret32) -> [u8; WRAPPED_KEY_LEN] {
    let mut out = [0u8; WRAPPED_KEY_LEN];
    let v = seal_vec(kek, aad, key.expose());
    out.copy_from_slice(&v);
    out
}

/// Open a key sealed by [`seal_key`].
pub fn open_key(kek: &Secret32, aad: &[u8], wrapped: &[u8]) -> Result<Secret32, CryptoError> {
    if wrapped.len() != WRAPPED_KEY_LEN {
        return Err(CryptoError::Malformed);
    }
    let mut plain = open_vec(kek, aad, wrapped)?;
    let key = Secret32::from_slice(&plain).ok_or(CryptoError::Malformed);
    zeroize::Zeroize::zeroize(&mut plain);
    key
}

/// Seal arbitrary bytes: nonce | ciphertext | tag.
pub fn seal_vec(kek: &Secret32, aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let cipher = Aes256GcmSiv::new(kek.expose().into());
    let mut out = vec![0u8; NONCE_LEN + plain.len() + TAG_LEN];
    random_bytes(&mut out[..NONCE_LEN]);
    let (nonce, rest) = out.split_at_mut(NONCE_LEN);
    let (body, tag_out) = rest.split_at_mut(plain.len());
    body.copy_from_slice(plain);
    // Encryption cannot fail for inputs under 2^36 bytes; keys and names are far below that.
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(nonce), aad, body)
        .unwrap_or_default();
    tag_out.copy_from_slice(&tag);
    out
}

/// Open bytes sealed by [`seal_vec`]. The caller zeroizes the result if it is secret.
pub fn open_vec(kek: &Secret32, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(CryptoError::Malformed);
    }
    let cipher = Aes256GcmSiv::new(kek.expose().into());
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
    let mut buf = body.to_vec();
    cipher
        .decrypt_in_place_detached(
            Nonce::from_slice(nonce),
            aad,
            &mut buf,
            Tag::from_slice(tag),
        )
        .map_err(|_| CryptoError::Auth)?;
    Ok(buf)
}

/// The per-file block cipher: a key schedule computed once per open file and shared by
/// the threads that encrypt its blocks.
pub struct BlockCipher(Aes256GcmSiv);

impl BlockCipher {
    pub fn new(key: &Secret32) -> Self {
        BlockCipher(Aes256GcmSiv::new(key.expose().into()))
    }

    /// Encrypt `buf` in place with a fresh random nonce; returns (nonce, tag).
    pub fn seal_in_place(&self, aad: &[u8], buf: &mut [u8]) -> ([u8; NONCE_LEN], [u8; TAG_LEN]) {
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce);
        let tag = self
            .0
            .encrypt_in_place_detached(Nonce::from_slice(&nonce), aad, buf)
            .unwrap_or_default();
        (nonce, tag.into())
    }

    /// Deterministic encryption with a caller-chosen nonce (file names: equal names in one
    /// directory must encrypt equally). Returns the tag.
    pub fn seal_with_nonce(&self, nonce: &[u8], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        self.0
            .encrypt_in_place_detached(Nonce::from_slice(nonce), aad, buf)
            .unwrap_or_default()
            .into()
    }

    pub fn open_in_place(
        &self,
        nonce: &[u8],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8],
    ) -> Result<(), CryptoError> {
        if nonce.len() != NONCE_LEN || tag.len() != TAG_LEN {
            return Err(CryptoError::Malformed);
        }
        self.0
            .decrypt_in_place_detached(Nonce::from_slice(nonce), aad, buf, Tag::from_slice(tag))
            .map_err(|_| CryptoError::Auth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_wrap_round_trip_and_binding() {
        let kek = Secret32::random();
        let key = Secret32::random();
        let w = seal_key(&kek, b"file 1", &key);
        let back = open_key(&kek, b"file 1", &w).expect("opens");
        assert_eq!(back.expose(), key.expose());
        // Wrong AAD, wrong KEK, a flipped bit and a short input are all refused.
        assert!(matches!(
            open_key(&kek, b"file 2", &w),
            Err(CryptoError::Auth)
        ));
        assert!(matches!(
            open_key(&Secret32::random(), b"file 1", &w),
            Err(CryptoError::Auth)
        ));
        let mut bad = w;
        bad[20] ^= 1;
        assert!(matches!(
            open_key(&kek, b"file 1", &bad),
            Err(CryptoError::Auth)
        ));
        assert!(matches!(
            open_key(&kek, b"file 1", &w[..59]),
            Err(CryptoError::Malformed)
        ));
    }

    #[test]
    fn block_cipher_round_trip() {
        let c = BlockCipher::new(&Secret32::random());
        let mut buf = b"hello block".to_vec();
        let (n, t) = c.seal_in_place(b"aad", &mut buf);
        assert_ne!(&buf, b"hello block");
        c.open_in_place(&n, b"aad", &mut buf, &t).expect("opens");
        assert_eq!(&buf, b"hello block");
    }
}
