//! A keystore's identity: its own RSA key pair and self-signed certificate, made on first
//! use, the private half sealed under the keystore key. Keys wrapped to the certificate (an
//! export, a key-server answer) open only here.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::file::{lock, read_file, write_file, KeystoreFile, StoredIdentity};
use super::{HostIdentity, Keystore, KeystoreError, FILE};
use crate::crypto::{self, PrivateKey};

const IDENTITY_AAD: &[u8] = b"coffer/v1/host-identity";
/// RSA size of a keystore's identity key.
const IDENTITY_BITS: usize = 3072;

impl Keystore {
    /// This keystore's identity, made (RSA-3072, about a second) on first use.
    pub fn identity(&self) -> Result<HostIdentity, KeystoreError> {
        if let Some(id) = self.load_identity(&read_file(&self.dir)?)? {
            return Ok(id);
        }
        let _lock = lock(&self.dir)?;
        let mut file = read_file(&self.dir)?;
        if let Some(id) = self.load_identity(&file)? {
            return Ok(id);
        }
        let fail = |e: &dyn std::fmt::Display| KeystoreError::Damaged {
            path: self.dir.clone(),
            message: format!("cannot make the host identity: {e}"),
        };
        let private = PrivateKey::generate(IDENTITY_BITS).map_err(|e| fail(&e))?;
        let host = hostname();
        let certificate =
            crate::keys::certificate::self_signed(&private, &format!("coffer keystore on {host}"))
                .map_err(|e| fail(&e))?;
        let fingerprint = private.public().fingerprint().map_err(|e| fail(&e))?;
        let der = private.to_der().map_err(|e| fail(&e))?;
        file.identity = Some(StoredIdentity {
            private_key: B64.encode(crypto::seal_vec(self.key.secret(), IDENTITY_AAD, &der)),
            certificate: certificate.clone(),
            fingerprint: fingerprint.clone(),
        });
        write_file(&self.dir, &file)?;
        self.audit.record_with(
            "identity-create",
            None,
            None,
            Some(&fingerprint),
            "ok",
            None,
        )?;
        Ok(HostIdentity {
            private,
            certificate,
            fingerprint,
        })
    }

    /// The identity's fingerprint if one was made, without unsealing anything.
    pub fn identity_fingerprint(&self) -> Result<Option<String>, KeystoreError> {
        Ok(read_file(&self.dir)?.identity.map(|i| i.fingerprint))
    }

    fn load_identity(&self, file: &KeystoreFile) -> Result<Option<HostIdentity>, KeystoreError> {
        let Some(id) = &file.identity else {
            return Ok(None);
        };
        let damaged = || KeystoreError::Damaged {
            path: self.dir.join(FILE),
            message: "host identity is damaged".into(),
        };
        let sealed = B64.decode(&id.private_key).map_err(|_| damaged())?;
        let der = zeroize::Zeroizing::new(
            crypto::open_vec(self.key.secret(), IDENTITY_AAD, &sealed).map_err(|_| damaged())?,
        );
        let private = PrivateKey::from_der(&der).map_err(|_| damaged())?;
        if private.public().fingerprint().ok().as_deref() != Some(id.fingerprint.as_str()) {
            return Err(damaged());
        }
        Ok(Some(HostIdentity {
            private,
            certificate: id.certificate.clone(),
            fingerprint: id.fingerprint.clone(),
        }))
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "this host".into())
}
