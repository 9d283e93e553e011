//! Key export files: master keys travelling by hand, sealed under a password or to a
//! recipient's certificate. Versioned and self-describing (docs/format.md):
//!
//! ```text
//! magic "COFFERKX" | version u8 = 1 | kind u8 (1 password, 2 recipient) | reserved u16 = 0
//! kind 1: m_cost u32 | t_cost u32 | p_cost u32 | salt[16] | verifier[44]
//! kind 2: fingerprint[32] | wrapped_len u16 | RSA-OAEP(SHA-256) of the file key
//! payload_len u32 | payload: AES-256-GCM-SIV seal of JSON, AAD = every byte before it
//! checksum[32]: BLAKE3 of every byte before it
//! ```
//!
//! The checksum tells a truncated or damaged file apart from a wrong password; the AEAD's
//! associated data makes any change to the header fail authentication; the verifier (a seal of
//! a constant under the password-derived key) says "wrong password" before the payload is
//! tried. Nothing in the header is secret.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::KeyEntry;
use crate::crypto::{
    self, KdfParams, MasterKey, NameKey, PrivateKey, PublicKey, Secret32, WriteKey,
};

const MAGIC: &[u8; 8] = b"COFFERKX";
const VERSION: u8 = 1;
const KIND_PASSWORD: u8 = 1;
const KIND_RECIPIENT: u8 = 2;
const VERIFIER_AAD: &[u8] = b"coffer/v1/export-verifier";
const VERIFIER_PLAIN: &[u8; 16] = b"coffer-export-ok";
/// Largest payload accepted: a hostile file must not make us allocate without bound.
const MAX_PAYLOAD: usize = 16 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransportError {
    #[error("not a coffer key export file")]
    NotAnExport,
    #[error("key export format version {0} is not supported by this coffer")]
    Version(u8),
    #[error("the key export file is truncated or damaged (checksum mismatch)")]
    Damaged,
    #[error("wrong password")]
    WrongPassword,
    #[error("the key export file was altered (authentication failed)")]
    Altered,
    #[error("this export is password-protected: give --password-file")]
    NeedsPassword,
    #[error("this export is wrapped to a certificate, not a password (drop --password-file)")]
    NeedsIdentity,
    #[error("this export was made for the keystore with certificate fingerprint {made_for}; this keystore's is {ours}")]
    WrongRecipient { made_for: String, ours: String },
    #[error("cannot seal the export: {0}")]
    Seal(String),
    #[error("this file holds {0}, not what this command takes")]
    Unexpected(&'static str),
    #[error("the key export file asks for {0}; refused before any work")]
    KdfLimits(String),
}

/// One master key with what the keystore knows about it.
pub struct ExportedKey {
    pub entry: KeyEntry,
    pub key: MasterKey,
}

/// What kind of protection a file has, read from its header alone.
#[derive(Debug, PartialEq, Eq)]
pub enum Protection {
    Password,
    Recipient { fingerprint: String },
}

/// A backup credential: what a backup-only host needs to write new files into a store and no
/// more. The store's public key (to wrap new batch keys) and its name key (to name files);
/// never a master key, the private key or a batch key, so nothing written before can be read.
pub struct BackupCredential {
    pub store_id: String,
    /// SubjectPublicKeyInfo DER of the store's RSA public key.
    pub public_key: Vec<u8>,
    pub name_key: NameKey,
    /// The store's write key (format 2): lets the host tag the batches it makes.
    pub write_key: Option<WriteKey>,
    pub policy: Option<String>,
    pub copy: Option<String>,
    /// The store format it was made for (absent in credentials made before format 3).
    pub format: Option<u32>,
}

/// What an export file carries.
pub enum Contents {
    Keys(Vec<ExportedKey>),
    Credential(BackupCredential),
}

impl Contents {
    /// The master keys, or an error if the file holds something else.
    pub fn into_keys(self) -> Result<Vec<ExportedKey>, TransportError> {
        match self {
            Contents::Keys(k) => Ok(k),
            Contents::Credential(_) => Err(TransportError::Unexpected("a backup credential")),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct PayloadKey {
    #[serde(flatten)]
    entry: KeyEntry,
    key: String,
}

#[derive(Serialize, Deserialize)]
struct PayloadCredential {
    store_id: String,
    public_key: String,
    name_key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    write_key: Option<String>,
    policy: Option<String>,
    copy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    format: Option<u32>,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    format: String,
    created: u64,
    #[serde(default)]
    keys: Vec<PayloadKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    credential: Option<PayloadCredential>,
}

impl Drop for Payload {
    fn drop(&mut self) {
        for k in &mut self.keys {
            k.key.zeroize();
        }
        if let Some(c) = &mut self.credential {
            c.name_key.zeroize();
            c.write_key.zeroize();
        }
    }
}

const FORMAT_KEYS: &str = "coffer-keys";
const FORMAT_CREDENTIAL: &str = "coffer-backup-credential";

fn payload_bytes(contents: &Contents) -> Result<Zeroizing<Vec<u8>>, TransportError> {
    let p = match contents {
        Contents::Keys(keys) => Payload {
            format: FORMAT_KEYS.into(),
            created: crate::unix_now(),
            keys: keys
                .iter()
                .map(|k| PayloadKey {
                    entry: k.entry.clone(),
                    key: B64.encode(k.key.expose()),
                })
                .collect(),
            credential: None,
        },
        Contents::Credential(c) => Payload {
            format: FORMAT_CREDENTIAL.into(),
            created: crate::unix_now(),
            keys: Vec::new(),
            credential: Some(PayloadCredential {
                store_id: c.store_id.clone(),
                public_key: B64.encode(&c.public_key),
                name_key: B64.encode(c.name_key.expose()),
                write_key: c.write_key.as_ref().map(|w| B64.encode(w.expose())),
                policy: c.policy.clone(),
                copy: c.copy.clone(),
                format: c.format,
            }),
        },
    };
    serde_json::to_vec(&p)
        .map(Zeroizing::new)
        .map_err(|e| TransportError::Seal(e.to_string()))
}

fn finish(
    mut header: Vec<u8>,
    file_key: &Secret32,
    contents: &Contents,
) -> Result<Vec<u8>, TransportError> {
    let plain = payload_bytes(contents)?;
    let mut aad = header.clone();
    let sealed_len = (plain.len() + 28) as u32;
    aad.extend_from_slice(&sealed_len.to_le_bytes());
    let sealed = crypto::seal_vec(file_key, &aad, &plain);
    header = aad;
    header.extend_from_slice(&sealed);
    let sum = blake3::hash(&header);
    header.extend_from_slice(sum.as_bytes());
    Ok(header)
}

fn header(kind: u8) -> Vec<u8> {
    let mut h = MAGIC.to_vec();
    h.extend_from_slice(&[VERSION, kind, 0, 0]);
    h
}

/// Seal keys under a password (Argon2id, parameters in the file).
pub fn seal_with_password(
    contents: &Contents,
    password: &[u8],
    params: &KdfParams,
) -> Result<Vec<u8>, TransportError> {
    let mut salt = [0u8; 16];
    crypto::random_bytes(&mut salt);
    let kk = crypto::derive_passphrase_key(password, &salt, params)
        .map_err(|e| TransportError::Seal(e.to_string()))?;
    let mut h = header(KIND_PASSWORD);
    for v in [params.m_cost, params.t_cost, params.p_cost] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h.extend_from_slice(&salt);
    let mut vaad = VERIFIER_AAD.to_vec();
    vaad.extend_from_slice(&h);
    h.extend_from_slice(&crypto::seal_vec(kk.secret(), &vaad, VERIFIER_PLAIN));
    finish(h, kk.secret(), contents)
}

/// Seal keys to a recipient's public key: only the matching private key opens them.
pub fn seal_to_recipient(
    contents: &Contents,
    recipient: &PublicKey,
) -> Result<Vec<u8>, TransportError> {
    let fp = fingerprint_bytes(recipient)?;
    let file_key = Secret32::random();
    let wrapped = recipient
        .wrap_secret(&file_key)
        .map_err(|e| TransportError::Seal(e.to_string()))?;
    let mut h = header(KIND_RECIPIENT);
    h.extend_from_slice(&fp);
    h.extend_from_slice(&(wrapped.len() as u16).to_le_bytes());
    h.extend_from_slice(&wrapped);
    finish(h, &file_key, contents)
}

fn fingerprint_bytes(k: &PublicKey) -> Result<[u8; 32], TransportError> {
    use sha2::Digest;
    let der = k
        .to_der()
        .map_err(|e| TransportError::Seal(e.to_string()))?;
    Ok(sha2::Sha256::digest(der).into())
}

/// A cursor over the file's bytes that reports a short file as damage.
struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TransportError> {
        let end = self.at.checked_add(n).ok_or(TransportError::Damaged)?;
        let s = self.b.get(self.at..end).ok_or(TransportError::Damaged)?;
        self.at = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, TransportError> {
        Ok(u16::from_le_bytes(
            self.take(2)?
                .try_into()
                .map_err(|_| TransportError::Damaged)?,
        ))
    }
    fn u32(&mut self) -> Result<u32, TransportError> {
        Ok(u32::from_le_bytes(
            self.take(4)?
                .try_into()
                .map_err(|_| TransportError::Damaged)?,
        ))
    }
}

/// The checked body (without the checksum) and its kind.
fn check(file: &[u8]) -> Result<(&[u8], u8), TransportError> {
    if file.len() < MAGIC.len() || &file[..MAGIC.len()] != MAGIC {
        return Err(TransportError::NotAnExport);
    }
    if file.len() < 12 + 32 {
        return Err(TransportError::Damaged);
    }
    let (body, sum) = file.split_at(file.len() - 32);
    if !crypto::ct_eq(blake3::hash(body).as_bytes(), sum) {
        return Err(TransportError::Damaged);
    }
    if body[8] != VERSION {
        return Err(TransportError::Version(body[8]));
    }
    if !matches!(body[9], KIND_PASSWORD | KIND_RECIPIENT) || body[10] != 0 || body[11] != 0 {
        return Err(TransportError::Damaged);
    }
    Ok((body, body[9]))
}

pub fn protection(file: &[u8]) -> Result<Protection, TransportError> {
    let (body, kind) = check(file)?;
    if kind == KIND_PASSWORD {
        return Ok(Protection::Password);
    }
    let mut r = Reader { b: body, at: 12 };
    Ok(Protection::Recipient {
        fingerprint: format!("SHA256:{}", hex::encode(r.take(32)?)),
    })
}

fn open_payload(
    body: &[u8],
    r: &mut Reader<'_>,
    file_key: &Secret32,
) -> Result<Contents, TransportError> {
    let len = r.u32()? as usize;
    if len > MAX_PAYLOAD {
        return Err(TransportError::Damaged);
    }
    let aad = &body[..r.at];
    let sealed = r.take(len)?;
    if r.at != body.len() {
        return Err(TransportError::Damaged);
    }
    let plain = Zeroizing::new(
        crypto::open_vec(file_key, aad, sealed).map_err(|_| TransportError::Altered)?,
    );
    let payload: Payload = serde_json::from_slice(&plain).map_err(|_| TransportError::Altered)?;
    let decode = |s: &str| {
        B64.decode(s)
            .map(Zeroizing::new)
            .map_err(|_| TransportError::Altered)
    };
    match payload.format.as_str() {
        FORMAT_KEYS => {
            let mut out = Vec::new();
            for k in &payload.keys {
                let key = MasterKey::from_slice(&decode(&k.key)?).ok_or(TransportError::Altered)?;
                if crypto::master_key_id(&key) != k.entry.key_id {
                    return Err(TransportError::Altered);
                }
                out.push(ExportedKey {
                    entry: k.entry.clone(),
                    key,
                });
            }
            Ok(Contents::Keys(out))
        }
        FORMAT_CREDENTIAL => {
            let c = payload.credential.as_ref().ok_or(TransportError::Altered)?;
            let public_key = decode(&c.public_key)?.to_vec();
            PublicKey::from_der(&public_key).map_err(|_| TransportError::Altered)?;
            Ok(Contents::Credential(BackupCredential {
                store_id: c.store_id.clone(),
                public_key,
                name_key: NameKey::from_slice(&decode(&c.name_key)?)
                    .ok_or(TransportError::Altered)?,
                write_key: c
                    .write_key
                    .as_deref()
                    .map(|w| WriteKey::from_slice(&decode(w)?).ok_or(TransportError::Altered))
                    .transpose()?,
                policy: c.policy.clone(),
                copy: c.copy.clone(),
                format: c.format,
            }))
        }
        _ => Err(TransportError::Altered),
    }
}

pub fn open_with_password(file: &[u8], password: &[u8]) -> Result<Contents, TransportError> {
    let (body, kind) = check(file)?;
    if kind != KIND_PASSWORD {
        return Err(TransportError::NeedsIdentity);
    }
    let mut r = Reader { b: body, at: 12 };
    let params = KdfParams {
        m_cost: r.u32()?,
        t_cost: r.u32()?,
        p_cost: r.u32()?,
    };
    let salt = r.take(16)?;
    params.check().map_err(|e| match e {
        crypto::CryptoError::Kdf(why) => TransportError::KdfLimits(
            why.replace("Argon2 parameters out of range ", "Argon2 parameters "),
        ),
        _ => TransportError::Damaged,
    })?;
    let mut vaad = VERIFIER_AAD.to_vec();
    vaad.extend_from_slice(&body[..r.at]);
    let verifier = r.take(44)?;
    let kk = crypto::derive_passphrase_key(password, salt, &params)
        .map_err(|_| TransportError::Damaged)?;
    match crypto::open_vec(kk.secret(), &vaad, verifier) {
        Ok(v) if v == VERIFIER_PLAIN => {}
        _ => return Err(TransportError::WrongPassword),
    }
    open_payload(body, &mut r, kk.secret())
}

pub fn open_with_identity(file: &[u8], identity: &PrivateKey) -> Result<Contents, TransportError> {
    let (body, kind) = check(file)?;
    if kind != KIND_RECIPIENT {
        return Err(TransportError::NeedsPassword);
    }
    let mut r = Reader { b: body, at: 12 };
    let made_for = r.take(32)?;
    let ours = fingerprint_bytes(&identity.public())?;
    if made_for != ours {
        return Err(TransportError::WrongRecipient {
            made_for: format!("SHA256:{}", hex::encode(made_for)),
            ours: format!("SHA256:{}", hex::encode(ours)),
        });
    }
    let n = r.u16()? as usize;
    let wrapped = r.take(n)?;
    let file_key = identity
        .unwrap_secret(wrapped)
        .map_err(|_| TransportError::Altered)?;
    open_payload(body, &mut r, &file_key)
}

#[cfg(test)]
#[path = "transport_tests.rs"]
mod tests;
