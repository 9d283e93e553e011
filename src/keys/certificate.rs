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
    let signer = key.signing_key();
    // A self-signed end-entity certificate (issuer = subject) for key encipherment: what an
    // "encryption certificate" is, and usable later as a TLS identity.
    let profile = Profile::Leaf {
        issuer: subject.clone(),
        enable_key_agreement: false,
        enable_key_encipherment: true,
    };
    let builder = CertificateBuilder::new(profile, serial, validity, subject, spki, &signer)
        .map_err(|e| build(&e))?;
    let cert = builder
        .build::<rsa::pkcs1v15::Signature>()
        .map_err(|e| build(&e))?;
    cert.to_pem(x509_cert::der::pem::LineEnding::LF)
        .map_err(|e| build(&e))
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
