//! RSA key pairs: the store's (batch keys are wrapped with RSA-OAEP (SHA-256) under its public
//! key; the private key is needed only to read, once per batch per mount), each keystore's
//! host identity, and recovery keys (both receive keys wrapped to their public key).
//!
//! The `rsa` crate carries RUSTSEC-2023-0071 (Marvin timing side channel) with no fixed
//! release. coffer keeps RSA decryption local and rare and never offers it over a network;
//! see docs/dependencies.md.

use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use zeroize::Zeroizing;

use super::{BatchKey, CryptoError, Secret32};

pub struct PublicKey(RsaPublicKey);
/// The private half; `rsa` zeroizes its limbs on drop.
pub struct PrivateKey(RsaPrivateKey);

fn unwrap_with(key: &RsaPrivateKey, wrapped: &[u8]) -> Result<Secret32, CryptoError> {
    let mut plain = key
        .decrypt(Oaep::new::<sha2::Sha256>(), wrapped)
        .map_err(|_| CryptoError::Auth)?;
    let k = Secret32::from_slice(&plain).ok_or(CryptoError::Malformed);
    zeroize::Zeroize::zeroize(&mut plain);
    k
}

impl PrivateKey {
    pub fn generate(bits: usize) -> Result<Self, CryptoError> {
        RsaPrivateKey::new(&mut rand_core::OsRng, bits)
            .map(PrivateKey)
            .map_err(|e| CryptoError::Rsa(e.to_string()))
    }
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.to_public_key())
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
            .map(PrivateKey)
            .map_err(|_| CryptoError::Malformed)
    }
    pub fn unwrap_batch_key(&self, wrapped: &[u8]) -> Result<BatchKey, CryptoError> {
        unwrap_with(&self.0, wrapped).map(BatchKey::from_secret)
    }

    /// Unwrap a 32-byte secret wrapped to this key with [`PublicKey::wrap_secret`].
    pub fn unwrap_secret(&self, wrapped: &[u8]) -> Result<Secret32, CryptoError> {
        unwrap_with(&self.0, wrapped)
    }

    pub fn to_pem(&self) -> Result<Zeroizing<String>, CryptoError> {
        self.0
            .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
            .map(|s| Zeroizing::new(s.to_string()))
            .map_err(|e| CryptoError::Rsa(e.to_string()))
    }

    pub fn from_pem(pem: &str) -> Result<Self, CryptoError> {
        RsaPrivateKey::from_pkcs8_pem(pem)
            .map(PrivateKey)
            .map_err(|_| CryptoError::Malformed)
    }

    /// A PKCS#1 v1.5 SHA-256 signer (for self-signed certificates).
    pub fn signing_key(&self) -> rsa::pkcs1v15::SigningKey<sha2::Sha256> {
        rsa::pkcs1v15::SigningKey::new(self.0.clone())
    }
}

impl PublicKey {
    pub fn to_der(&self) -> Result<Vec<u8>, CryptoError> {
        self.0
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .map_err(|e| CryptoError::Rsa(e.to_string()))
    }
    pub fn from_der(der: &[u8]) -> Result<Self, CryptoError> {
        RsaPublicKey::from_public_key_der(der)
            .map(PublicKey)
            .map_err(|_| CryptoError::Malformed)
    }
    pub fn bits(&self) -> usize {
        self.0.size() * 8
    }
    pub fn wrap_batch_key(&self, key: &BatchKey) -> Result<Vec<u8>, CryptoError> {
        self.wrap_secret(key.secret())
    }

    /// RSA-OAEP (SHA-256) of a 32-byte secret.
    pub fn wrap_secret(&self, key: &Secret32) -> Result<Vec<u8>, CryptoError> {
        self.0
            .encrypt(
                &mut rand_core::OsRng,
                Oaep::new::<sha2::Sha256>(),
                key.expose(),
            )
            .map_err(|e| CryptoError::Rsa(e.to_string()))
    }

    /// "SHA256:" and the hex SHA-256 of the SubjectPublicKeyInfo: stable across re-issued
    /// certificates of the same key, and what `coffer keys cert` prints.
    pub fn fingerprint(&self) -> Result<String, CryptoError> {
        use sha2::Digest;
        Ok(format!(
            "SHA256:{}",
            hex::encode(sha2::Sha256::digest(self.to_der()?))
        ))
    }
    pub fn same_as(&self, other: &PublicKey) -> bool {
        self.0 == other.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_key_wrap_round_trip() {
        let sk = PrivateKey::generate(2048).expect("keygen");
        let pk = PublicKey::from_der(&sk.public().to_der().expect("der")).expect("parse");
        let bk = BatchKey::random();
        let w = pk.wrap_batch_key(&bk).expect("wrap");
        assert_eq!(w.len(), 256);
        let back = sk.unwrap_batch_key(&w).expect("unwrap");
        assert_eq!(back.expose(), bk.expose());
        let mut bad = w.clone();
        bad[10] ^= 0x40;
        assert!(sk.unwrap_batch_key(&bad).is_err());
        let sk2 = PrivateKey::from_der(&sk.to_der().expect("der")).expect("parse");
        assert!(sk2.public().same_as(&pk));
    }
}
