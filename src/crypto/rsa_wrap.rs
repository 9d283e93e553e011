//! The store key pair. Batch keys are wrapped with RSA-OAEP (SHA-256) under the public key;
//! the private key is needed only to read, and only once per batch per mount.
//!
//! The `rsa` crate carries RUSTSEC-2023-0071 (Marvin timing side channel) with no fixed
//! release. coffer keeps RSA decryption local and rare and never offers it over a network;
//! see docs/dependencies.md.

use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use zeroize::Zeroizing;

use super::{BatchKey, CryptoError, Secret32};

pub struct StorePublicKey(RsaPublicKey);
/// The private half; `rsa` zeroizes its limbs on drop.
pub struct StorePrivateKey(RsaPrivateKey);

impl StorePrivateKey {
    pub fn generate(bits: usize) -> Result<Self, CryptoError> {
        RsaPrivateKey::new(&mut rand_core::OsRng, bits)
            .map(StorePrivateKey)
            .map_err(|e| CryptoError::Rsa(e.to_string()))
    }
    pub fn public(&self) -> StorePublicKey {
        StorePublicKey(self.0.to_public_key())
    }
    pub fn to_der(&self) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let doc = self
            .0
            .to_pkcs8_der()
            .map_err(|e| CryptoError::Rsa(e.to_string()))?;
        Ok(Zeroizing::new(doc.as_bytes().to_vec()))
    }
    pub fn from_der(der: &[u8]) -> Result<Self, CryptoError> {
        RsaPrivateKey::from_pkcs8_der(der)
            .map(StorePrivateKey)
            .map_err(|_| CryptoError::Malformed)
    }
    pub fn unwrap_batch_key(&self, wrapped: &[u8]) -> Result<BatchKey, CryptoError> {
        let mut plain = self
            .0
            .decrypt(Oaep::new::<sha2::Sha256>(), wrapped)
            .map_err(|_| CryptoError::Auth)?;
        let k = Secret32::from_slice(&plain).ok_or(CryptoError::Malformed);
        zeroize::Zeroize::zeroize(&mut plain);
        k.map(BatchKey::from_secret)
    }
}

impl StorePublicKey {
    pub fn to_der(&self) -> Result<Vec<u8>, CryptoError> {
        self.0
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .map_err(|e| CryptoError::Rsa(e.to_string()))
    }
    pub fn from_der(der: &[u8]) -> Result<Self, CryptoError> {
        RsaPublicKey::from_public_key_der(der)
            .map(StorePublicKey)
            .map_err(|_| CryptoError::Malformed)
    }
    pub fn bits(&self) -> usize {
        self.0.size() * 8
    }
    pub fn wrap_batch_key(&self, key: &BatchKey) -> Result<Vec<u8>, CryptoError> {
        self.0
            .encrypt(
                &mut rand_core::OsRng,
                Oaep::new::<sha2::Sha256>(),
                key.expose(),
            )
            .map_err(|e| CryptoError::Rsa(e.to_string()))
    }
    pub fn same_as(&self, other: &StorePublicKey) -> bool {
        self.0 == other.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_key_wrap_round_trip() {
        let sk = StorePrivateKey::generate(2048).expect("keygen");
        let pk = StorePublicKey::from_der(&sk.public().to_der().expect("der")).expect("parse");
        let bk = BatchKey::random();
        let w = pk.wrap_batch_key(&bk).expect("wrap");
        assert_eq!(w.len(), 256);
        let back = sk.unwrap_batch_key(&w).expect("unwrap");
        assert_eq!(back.expose(), bk.expose());
        let mut bad = w.clone();
        bad[10] ^= 0x40;
        assert!(sk.unwrap_batch_key(&bad).is_err());
        let sk2 = StorePrivateKey::from_der(&sk.to_der().expect("der")).expect("parse");
        assert!(sk2.public().same_as(&pk));
    }
}
