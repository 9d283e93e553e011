//! TLS for key servers and their clients (rustls, ring provider). Each side's identity is its
//! keystore's certificate. Trust is by fingerprint, not by CA: a server accepts any client
//! certificate at the TLS layer (so that a request without one can be refused and audited),
//! and authorises the request by the certificate's fingerprint; a client pins the server's
//! fingerprint when it was given a certificate for it.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use x509_cert::der::{DecodePem, Encode};

use crate::crypto::PublicKey;
use crate::keys::HostIdentity;

/// What can go wrong setting TLS up for a key server or its client.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("bad certificate: {0}")]
    Certificate(String),
    #[error("the certificate does not hold an RSA key")]
    NotRsa,
    #[error("cannot use the keystore's key for TLS: {0}")]
    Key(#[from] crate::crypto::CryptoError),
    #[error("TLS set-up failed: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// DER of a PEM certificate.
pub fn cert_der(pem: &str) -> Result<CertificateDer<'static>, TlsError> {
    let bad = |e: x509_cert::der::Error| TlsError::Certificate(e.to_string());
    let c = x509_cert::Certificate::from_pem(pem.as_bytes()).map_err(bad)?;
    Ok(CertificateDer::from(c.to_der().map_err(bad)?))
}

/// The RSA public key and fingerprint of a DER certificate.
pub fn cert_key(der: &[u8]) -> Result<(PublicKey, String), TlsError> {
    use x509_cert::der::Decode;
    let bad = |e: x509_cert::der::Error| TlsError::Certificate(e.to_string());
    let c = x509_cert::Certificate::from_der(der).map_err(bad)?;
    let spki = c
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(bad)?;
    let pk = PublicKey::from_der(&spki).map_err(|_| TlsError::NotRsa)?;
    let fp = pk.fingerprint()?;
    Ok((pk, fp))
}

fn key_der(id: &HostIdentity) -> Result<PrivateKeyDer<'static>, TlsError> {
    let der = id.private.to_der()?;
    Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.to_vec())))
}

#[derive(Debug)]
struct AnyClientCert(Arc<CryptoProvider>);

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Authorisation is by fingerprint, per request; the handshake below proves the
        // client holds the certificate's private key.
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub fn server_config(id: &HostIdentity) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let p = provider();
    let cfg = rustls::ServerConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(AnyClientCert(p)))
        .with_single_cert(vec![cert_der(&id.certificate)?], key_der(id)?)?;
    Ok(Arc::new(cfg))
}

/// Verifies the server by pinned fingerprint when one is given, and records the certificate
/// it saw (the key a push must be wrapped to).
#[derive(Debug)]
struct PinnedServer {
    provider: Arc<CryptoProvider>,
    pin: Option<String>,
    seen: Seen,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let (_, fp) = cert_key(end_entity).map_err(|e| rustls::Error::General(e.to_string()))?;
        if let Some(pin) = &self.pin {
            if *pin != fp {
                return Err(rustls::Error::General(format!(
                    "server certificate is {fp}, expected {pin}"
                )));
            }
        }
        if let Ok(mut s) = self.seen.lock() {
            *s = Some(end_entity.to_vec());
        }
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(m, c, d, &self.provider.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(m, c, d, &self.provider.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Where a client records the certificate the server showed.
pub type Seen = Arc<Mutex<Option<Vec<u8>>>>;

/// A client configuration presenting `id` (when given) and pinning `pin` (when given).
/// Returns the slot where the server's certificate is recorded.
pub fn client_config(
    id: Option<&HostIdentity>,
    pin: Option<String>,
) -> Result<(Arc<rustls::ClientConfig>, Seen), TlsError> {
    let p = provider();
    let seen = Arc::new(Mutex::new(None));
    let b = rustls::ClientConfig::builder_with_provider(p.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedServer {
            provider: p,
            pin,
            seen: seen.clone(),
        }));
    let cfg = match id {
        Some(id) => b.with_client_auth_cert(vec![cert_der(&id.certificate)?], key_der(id)?)?,
        None => b.with_no_client_auth(),
    };
    Ok((Arc::new(cfg), seen))
}
