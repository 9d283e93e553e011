//! X.509 certificates of RSA public keys: a keystore's host identity ("encryption
//! certificate") and organisation recovery keys. Self-signed: trust comes from comparing the
//! fingerprint out of band, not from a CA. Keys wrapped to a certificate are RSA-OAEP.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::{DecodePem, Encode, EncodePem};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::Validity;

use crate::crypto::{PrivateKey, PublicKey};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read certificate {0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0} is not a PEM X.509 certificate")]
    NotACertificate(String),
    #[error("certificate {0} does not hold an RSA public key")]
    NotRsa(String),
    #[error("cannot make a certificate: {0}")]
    Build(String),
}

/// A self-signed certificate for `key`, PEM, valid for 30 years.
pub fn self_signed(key: &PrivateKey, common_name: &str) -> Result<String, CertError> {
    let build = |e: &dyn std::fmt::Display| CertError::Build(e.to_string());
    let spki_der = key.public().to_der().map_err(|e| build(&e))?;
    let spki = SubjectPublicKeyInfoOwned::try_from(spki_der.as_slice()).map_err(|e| build(&e))?;
    let mut serial = [0u8; 16];
    crate::crypto::random_bytes(&mut serial);
    serial[0] &= 0x7f; // a positive INTEGER
    let serial = SerialNumber::new(&serial).map_err(|e| build(&e))?;
    let validity =
        Validity::from_now(Duration::from_secs(30 * 365 * 86400)).map_err(|e| build(&e))?;
    let subject = Name::from_str(&format!("CN={common_name},O=coffer")).map_err(|e| build(&e))?;
    let signer = SpkiSigner(spki_der.clone());
    // A self-signed end-entity certificate (issuer = subject) for key encipherment: what an
    // "encryption certificate" is, and usable later as a TLS identity.
    let profile = Profile::Leaf {
        issuer: subject.clone(),
        enable_key_agreement: false,
        enable_key_encipherment: true,
    };
    let mut builder = CertificateBuilder::new(profile, serial, validity, subject, spki, &signer)
        .map_err(|e| build(&e))?;
    // The builder hands out the to-be-signed bytes; aws-lc-rs signs them (constant-time RSA).
    let tbs = builder.finalize().map_err(|e| build(&e))?;
    let sig = key.sign_pkcs1_sha256(&tbs).map_err(|e| build(&e))?;
    let sig = x509_cert::der::asn1::BitString::from_bytes(&sig).map_err(|e| build(&e))?;
    let cert = builder.assemble(sig).map_err(|e| build(&e))?;
    cert.to_pem(x509_cert::der::pem::LineEnding::LF)
        .map_err(|e| build(&e))
}

/// What x509-cert's builder asks of a signer before signing: the issuer's public key and the
/// signature algorithm (sha256WithRSAEncryption). The signing itself is done by the caller.
struct SpkiSigner(Vec<u8>);

#[derive(Clone)]
struct SpkiDer(Vec<u8>);

impl x509_cert::spki::EncodePublicKey for SpkiDer {
    fn to_public_key_der(&self) -> x509_cert::spki::Result<x509_cert::der::Document> {
        Ok(x509_cert::der::Document::try_from(self.0.as_slice())?)
    }
}

impl signature::Keypair for SpkiSigner {
    type VerifyingKey = SpkiDer;
    fn verifying_key(&self) -> SpkiDer {
        SpkiDer(self.0.clone())
    }
}

impl x509_cert::spki::DynSignatureAlgorithmIdentifier for SpkiSigner {
    fn signature_algorithm_identifier(
        &self,
    ) -> x509_cert::spki::Result<x509_cert::spki::AlgorithmIdentifierOwned> {
        Ok(x509_cert::spki::AlgorithmIdentifierOwned {
            // sha256WithRSAEncryption (RFC 4055), with NULL parameters.
            oid: x509_cert::der::oid::ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11"),
            parameters: Some(x509_cert::der::asn1::Null.into()),
        })
    }
}

/// The RSA public key in a PEM certificate.
pub fn public_key_of(pem: &str, what: &str) -> Result<PublicKey, CertError> {
    let cert = x509_cert::Certificate::from_pem(pem.as_bytes())
        .map_err(|_| CertError::NotACertificate(what.into()))?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|_| CertError::NotACertificate(what.into()))?;
    PublicKey::from_der(&spki).map_err(|_| CertError::NotRsa(what.into()))
}

/// Read a certificate file: its public key and its PEM text.
pub fn read(path: &Path) -> Result<(PublicKey, String), CertError> {
    let name = path.display().to_string();
    let pem = std::fs::read_to_string(path).map_err(|e| CertError::Read(name.clone(), e))?;
    Ok((public_key_of(&pem, &name)?, pem))
}

/// The fingerprint a peer is pinned to: `SHA256:...` as given, or that of a certificate file.
pub fn pin_of(cert: &str) -> Result<String, CertError> {
    if cert.starts_with("SHA256:") {
        return Ok(cert.to_string());
    }
    let (pk, _) = read(Path::new(cert))?;
    pk.fingerprint()
        .map_err(|_| CertError::NotRsa(cert.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_round_trip_and_refusals() {
        let key = PrivateKey::generate(2048).expect("keygen");
        let pem = self_signed(&key, "test host").expect("cert");
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let pk = public_key_of(&pem, "test").expect("parse");
        assert!(pk.same_as(&key.public()));
        assert_eq!(
            pk.fingerprint().expect("fp"),
            key.public().fingerprint().expect("fp")
        );
        assert!(matches!(
            public_key_of("not a cert", "x"),
            Err(CertError::NotACertificate(_))
        ));
        let openssl = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-subject"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn();
        if let Ok(mut child) = openssl {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(pem.as_bytes())
                .expect("write");
            let out = child.wait_with_output().expect("openssl");
            assert!(
                String::from_utf8_lossy(&out.stdout).contains("test host"),
                "openssl reads it"
            );
        }
    }
}
