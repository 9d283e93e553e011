//! RSA key pairs: the store's (batch keys are wrapped with RSA-OAEP (SHA-256) under its public
//! key; the private key is needed only to read, once per batch per mount), each keystore's
//! host identity, and recovery keys (both receive keys wrapped to their public key).
//!
//! Everything goes through aws-lc-rs, whose RSA private-key operations are constant-time and
//! blinded (the `rsa` crate's were not: RUSTSEC-2023-0071). Keys are read and written as the
//! same PKCS#8 and SubjectPublicKeyInfo DER as before, so every existing store, keystore and
//! export opens unchanged; a public key keeps the exact DER it was read from, so fingerprints
//! and the descriptor's public-key hash do not move.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{
    KeySize, OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey,
    PublicEncryptingKey, OAEP_SHA256_MGF1SHA256,
};
use zeroize::Zeroizing;

use super::{BatchKey, CryptoError, Secret32};

pub struct PublicKey {
    key: PublicEncryptingKey,
    /// The SubjectPublicKeyInfo DER it was read from (or made as).
    der: Vec<u8>,
}

/// The private half. aws-lc holds it in its own memory, which it wipes when the key is freed.
pub struct PrivateKey(PrivateDecryptingKey);

const PEM_LABEL: &str = "PRIVATE KEY";

impl PrivateKey {
    /// A new key of 2048, 3072 or 4096 bits.
    pub fn generate(bits: usize) -> Result<Self, CryptoError> {
        let size = match bits {
            2048 => KeySize::Rsa2048,
            3072 => KeySize::Rsa3072,
            4096 => KeySize::Rsa4096,
            _ => {
                return Err(CryptoError::Rsa(format!(
                    "{bits}-bit RSA keys are not supported (2048, 3072 or 4096)"
                )))
            }
        };
        PrivateDecryptingKey::generate(size)
            .map(PrivateKey)
            .map_err(|_| CryptoError::Rsa("key generation failed".into()))
    }

    pub fn public(&self) -> PublicKey {
        let key = self.0.public_key();
        let der = key
            .as_der()
            .map(|d| d.as_ref().to_vec())
            .unwrap_or_default();
        PublicKey { key, der }
    }

    /// PKCS#8 v1 DER.
    pub fn to_der(&self) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        let doc = self
            .0
            .as_der()
            .map_err(|_| CryptoError::Rsa("cannot encode the private key".into()))?;
        Ok(Zeroizing::new(doc.as_ref().to_vec()))
    }

    pub fn from_der(der: &[u8]) -> Result<Self, CryptoError> {
        PrivateDecryptingKey::from_pkcs8(der)
            .map(PrivateKey)
            .map_err(|_| CryptoError::Malformed)
    }

    pub fn unwrap_batch_key(&self, wrapped: &[u8]) -> Result<BatchKey, CryptoError> {
        self.unwrap_secret(wrapped).map(BatchKey::from_secret)
    }

    /// Unwrap a 32-byte secret wrapped to this key with [`PublicKey::wrap_secret`].
    pub fn unwrap_secret(&self, wrapped: &[u8]) -> Result<Secret32, CryptoError> {
        let key =
            OaepPrivateDecryptingKey::new(self.0.clone()).map_err(|_| CryptoError::Malformed)?;
        let mut plain = Zeroizing::new(vec![0u8; key.min_output_size()]);
        let out = key
            .decrypt(&OAEP_SHA256_MGF1SHA256, wrapped, &mut plain, None)
            .map_err(|_| CryptoError::Auth)?;
        Secret32::from_slice(out).ok_or(CryptoError::Malformed)
    }

    /// PKCS#8 PEM ("PRIVATE KEY").
    pub fn to_pem(&self) -> Result<Zeroizing<String>, CryptoError> {
        let der = self.to_der()?;
        x509_cert::der::pem::encode_string(PEM_LABEL, x509_cert::der::pem::LineEnding::LF, &der)
            .map(Zeroizing::new)
            .map_err(|e| CryptoError::Rsa(e.to_string()))
    }

    pub fn from_pem(pem: &str) -> Result<Self, CryptoError> {
        let (label, der) =
            x509_cert::der::pem::decode_vec(pem.as_bytes()).map_err(|_| CryptoError::Malformed)?;
        let der = Zeroizing::new(der);
        if label != PEM_LABEL {
            return Err(CryptoError::Malformed);
        }
        Self::from_der(&der)
    }

    /// An RSA PKCS#1 v1.5 SHA-256 signature of `msg` (self-signed certificates).
    pub fn sign_pkcs1_sha256(&self, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let der = self.to_der()?;
        let pair = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&der)
            .map_err(|_| CryptoError::Malformed)?;
        let mut sig = vec![0u8; pair.public_modulus_len()];
        pair.sign(
            &aws_lc_rs::signature::RSA_PKCS1_SHA256,
            &aws_lc_rs::rand::SystemRandom::new(),
            msg,
            &mut sig,
        )
        .map_err(|_| CryptoError::Rsa("signing failed".into()))?;
        Ok(sig)
    }
}

impl PublicKey {
    /// SubjectPublicKeyInfo DER.
    pub fn to_der(&self) -> Result<Vec<u8>, CryptoError> {
        if self.der.is_empty() {
            return Err(CryptoError::Rsa("cannot encode the public key".into()));
        }
        Ok(self.der.clone())
    }

    pub fn from_der(der: &[u8]) -> Result<Self, CryptoError> {
        let key = PublicEncryptingKey::from_der(der).map_err(|_| CryptoError::Malformed)?;
        Ok(PublicKey {
            key,
            der: der.to_vec(),
        })
    }

    pub fn bits(&self) -> usize {
        self.key.key_size_bits()
    }

    pub fn wrap_batch_key(&self, key: &BatchKey) -> Result<Vec<u8>, CryptoError> {
        self.wrap_secret(key.secret())
    }

    /// RSA-OAEP (SHA-256) of a 32-byte secret.
    pub fn wrap_secret(&self, key: &Secret32) -> Result<Vec<u8>, CryptoError> {
        let enc =
            OaepPublicEncryptingKey::new(self.key.clone()).map_err(|_| CryptoError::Malformed)?;
        let mut out = vec![0u8; enc.ciphertext_size()];
        let n = enc
            .encrypt(&OAEP_SHA256_MGF1SHA256, key.expose(), &mut out, None)
            .map_err(|_| CryptoError::Rsa("RSA-OAEP wrap failed".into()))?
            .len();
        out.truncate(n);
        Ok(out)
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

    /// The same key: compared by its canonical encoding, whatever DER it was read from.
    pub fn same_as(&self, other: &PublicKey) -> bool {
        match (self.key.as_der(), other.key.as_der()) {
            (Ok(a), Ok(b)) => a.as_ref() == b.as_ref(),
            _ => false,
        }
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
        let sk3 = PrivateKey::from_pem(&sk.to_pem().expect("pem")).expect("pem");
        assert!(sk3.public().same_as(&pk));
        assert!(PrivateKey::generate(1024).is_err());
    }

    /// Keys made by the `rsa` crate (every store, keystore and export made before this
    /// change) open, and what they wrapped unwraps: the fixture store's private key is
    /// checked by tests/backward_compatibility.rs; here a PKCS#8 and a wrap made by that
    /// crate, kept as test vectors.
    #[test]
    fn keys_and_wraps_made_by_the_rsa_crate_still_open() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rsa-crate");
        let pem = std::fs::read_to_string(dir.join("key.pem")).expect("key.pem");
        let sk = PrivateKey::from_pem(&pem).expect("an rsa-crate PKCS#8 key opens");
        let wrapped = std::fs::read(dir.join("wrapped.bin")).expect("wrapped.bin");
        let secret = std::fs::read(dir.join("secret.bin")).expect("secret.bin");
        assert_eq!(
            sk.unwrap_secret(&wrapped).expect("unwrap").expose()[..],
            secret[..]
        );
        let spki = std::fs::read(dir.join("public.der")).expect("public.der");
        let pk = PublicKey::from_der(&spki).expect("spki");
        assert_eq!(
            pk.to_der().expect("der"),
            spki,
            "the DER read is the DER kept"
        );
        assert!(sk.public().same_as(&pk));
        assert_eq!(
            sk.public().to_der().expect("der"),
            spki,
            "same SPKI encoding"
        );
    }
}
