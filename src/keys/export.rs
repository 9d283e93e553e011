//! Keys travelling by hand: exports of a store's master keys (to a certificate or under a
//! password), their import, backup credentials for backup-only hosts, and this keystore's
//! certificate. Exporting takes the store's keys (the Read right: this keystore's passphrase,
//! or a provider that grants them); importing takes the Write right (the passphrase of the
//! keystore they go into). Every one is audited before anything leaves.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::recovery::key_entry;
use super::transport::{self, BackupCredential, Contents, ExportedKey, Protection, TransportError};
use super::{Added, Chain, KeyEntry, KeyError, Keystore, Target};
use crate::crypto::{KdfParams, PublicKey};
use crate::store::Descriptor;

/// How an export is protected.
pub enum Wrap<'a> {
    /// Wrapped to a recipient's certificate (its public key).
    Recipient(&'a PublicKey),
    /// Under a password (Argon2id); a lost password cannot be recovered.
    Password(&'a [u8]),
}

/// What an export wrote.
pub struct Exported {
    /// (key id, store id, version) of each key in the file.
    pub keys: Vec<(String, String, u32)>,
    /// The recipient's fingerprint, or None for a password.
    pub recipient: Option<String>,
}

/// Create `path` (never overwrite) with `mode`, write `bytes` and fsync.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let write = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => KeyError::Exists {
                path: path.to_path_buf(),
            },
            _ => write(e),
        })?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(write)
}

/// Refuse an output path that exists, before any passphrase is asked or key fetched.
pub fn check_new(path: &Path) -> Result<(), KeyError> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(KeyError::Exists {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// The store's master keys this keystore holds (every version it has, newest first); when it
/// holds none, the current one through the rest of the chain.
fn store_keys(chain: &Chain, desc: &Descriptor) -> Result<Vec<ExportedKey>, KeyError> {
    let listed: Vec<KeyEntry> = chain
        .listing()
        .map(|l| {
            l.keys
                .iter()
                .filter(|k| desc.master_keys.iter().any(|m| m.key_id == k.key_id))
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    if !listed.is_empty() {
        let ks = chain.keystore()?;
        let mut records: Vec<_> = desc.master_keys.iter().collect();
        records.sort_by_key(|r| std::cmp::Reverse(r.version));
        for rec in records {
            let Some(entry) = listed.iter().find(|e| e.key_id == rec.key_id) else {
                continue;
            };
            if let Some(key) = ks.get(&rec.key_id)? {
                out.push(ExportedKey {
                    entry: entry.clone(),
                    key,
                });
            }
        }
    }
    if out.is_empty() {
        let r = chain.resolve(&Target::current(desc))?;
        let cur = desc.current_master();
        let origin = format!("exported from {}", r.from);
        out.push(ExportedKey {
            entry: key_entry(desc, cur.version, &cur.key_id, &origin),
            key: r.key,
        });
    }
    Ok(out)
}

/// Export the store's master keys to a new file `out`. If the audit log cannot be written the
/// file is removed again and the export refused.
pub fn export(
    chain: &Chain,
    root: &Path,
    wrap: Wrap<'_>,
    out: &Path,
) -> Result<Exported, KeyError> {
    check_new(out)?;
    let desc = Descriptor::load(root)?;
    let keys = store_keys(chain, &desc)?;
    let ids: Vec<(String, String, u32)> = keys
        .iter()
        .map(|k| {
            (
                k.entry.key_id.clone(),
                k.entry.store_id.clone(),
                k.entry.version,
            )
        })
        .collect();
    let contents = Contents::Keys(keys);
    let (bytes, recipient) = match wrap {
        Wrap::Recipient(pk) => (
            transport::seal_to_recipient(&contents, pk)?,
            Some(pk.fingerprint()?),
        ),
        Wrap::Password(pw) => (
            transport::seal_with_password(&contents, pw, &KdfParams::default())?,
            None,
        ),
    };
    write_new(out, &bytes, 0o600)?;
    let audit = chain.audit()?;
    let fp = recipient.as_deref().unwrap_or("password");
    for (key_id, store_id, _) in &ids {
        let r = audit.record_with(
            "export",
            Some(key_id),
            Some(store_id),
            Some(fp),
            "ok",
            Some(&out.display().to_string()),
        );
        if let Err(e) = r {
            let _ = std::fs::remove_file(out);
            return Err(e.into());
        }
    }
    Ok(Exported {
        keys: ids,
        recipient,
    })
}

/// What an import did.
pub enum Imported {
    Keys(Vec<(KeyEntry, Added)>),
    Credential { store_id: String, added: Added },
}

/// Put keys into the keystore (all or none) with `origin`, audited as `op`.
pub fn add_keys(
    ks: &Keystore,
    keys: Vec<ExportedKey>,
    origin: &str,
    op: &str,
    fingerprint: Option<&str>,
) -> Result<Vec<(KeyEntry, Added)>, KeyError> {
    let entries: Vec<(KeyEntry, &crate::crypto::MasterKey)> = keys
        .iter()
        .map(|k| {
            (
                KeyEntry {
                    origin: origin.to_string(),
                    created: crate::unix_now(),
                    ..k.entry.clone()
                },
                &k.key,
            )
        })
        .collect();
    let outcomes = ks.add_all(&entries, op, fingerprint)?;
    Ok(entries.into_iter().map(|(e, _)| e).zip(outcomes).collect())
}

/// Import an export file's keys or backup credential into this keystore (made if absent).
/// `password` is asked only for a password-protected file.
pub fn import(
    chain: &Chain,
    bytes: &[u8],
    password: &dyn Fn() -> Result<zeroize::Zeroizing<Vec<u8>>, KeyError>,
    password_given: bool,
) -> Result<Imported, KeyError> {
    let protection = transport::protection(bytes)?;
    // A password is asked for (or found missing) before the keystore is opened or made.
    let pw = match protection {
        Protection::Password => Some(password()?),
        Protection::Recipient { .. } if password_given => {
            return Err(TransportError::NeedsIdentity.into())
        }
        Protection::Recipient { .. } => None,
    };
    let ks = chain.keystore_or_create()?;
    let refuse = |e: TransportError, fp: Option<&str>| {
        ks.audit()
            .refusal("import", None, None, fp, "refused", Some(&e.to_string()));
        KeyError::Transport(e)
    };
    let (contents, origin, fingerprint) = match protection {
        Protection::Password => {
            let pw = pw.unwrap_or_default();
            let c = transport::open_with_password(bytes, &pw).map_err(|e| refuse(e, None))?;
            (c, "import (password)".to_string(), None)
        }
        Protection::Recipient { fingerprint } => {
            let ours = ks.identity_fingerprint()?;
            if ours.as_deref() != Some(fingerprint.as_str()) {
                let e = TransportError::WrongRecipient {
                    made_for: fingerprint.clone(),
                    ours: ours.unwrap_or_else(|| "none yet (`coffer keys cert` makes it)".into()),
                };
                return Err(refuse(e, Some(&fingerprint)));
            }
            let id = chain.identity()?;
            let c = transport::open_with_identity(bytes, &id.private)
                .map_err(|e| refuse(e, Some(&fingerprint)))?;
            (
                c,
                format!("import (certificate {fingerprint})"),
                Some(fingerprint),
            )
        }
    };
    match contents {
        Contents::Keys(keys) => Ok(Imported::Keys(add_keys(
            ks,
            keys,
            &origin,
            "import",
            fingerprint.as_deref(),
        )?)),
        Contents::Credential(c) => {
            let added = ks.add_credential(&c, &origin, fingerprint.as_deref())?;
            Ok(Imported::Credential {
                store_id: c.store_id,
                added,
            })
        }
    }
}

/// The credential a backup-only host needs for this store (public, name and write keys).
pub fn credential_of(
    desc: &Descriptor,
    keys: crate::store::StoreKeys,
) -> Result<BackupCredential, KeyError> {
    Ok(BackupCredential {
        store_id: desc.store_id.clone(),
        public_key: desc.public_key_der()?,
        name_key: keys.names,
        write_key: keys.writer,
        policy: desc.policy.clone(),
        copy: desc.copy.clone(),
        format: Some(desc.version),
    })
}

/// Write a backup credential for the store, wrapped to `recipient`, to the new file `out`.
/// Returns the recipient's fingerprint.
pub fn backup_credential(
    chain: &Chain,
    root: &Path,
    recipient: &PublicKey,
    out: &Path,
) -> Result<(String, String), KeyError> {
    check_new(out)?;
    let (desc, keys) = super::unlock::unlock_full(chain, root)?;
    let cred = credential_of(&desc, keys)?;
    let bytes = transport::seal_to_recipient(&Contents::Credential(cred), recipient)?;
    let fp = recipient.fingerprint()?;
    write_new(out, &bytes, 0o600)?;
    let r = chain.audit()?.record_with(
        "backup-credential-export",
        None,
        Some(&desc.store_id),
        Some(&fp),
        "ok",
        Some(&out.display().to_string()),
    );
    if let Err(e) = r {
        let _ = std::fs::remove_file(out);
        return Err(e.into());
    }
    Ok((desc.store_id, fp))
}

/// This keystore's certificate (made on first use), audited; returns (PEM, fingerprint).
pub fn certificate(chain: &Chain) -> Result<(String, String), KeyError> {
    let id = chain.identity()?;
    chain
        .keystore()?
        .audit()
        .record_with("cert", None, None, Some(&id.fingerprint), "ok", None)?;
    Ok((id.certificate.clone(), id.fingerprint.clone()))
}

/// Where a new recovery key pair goes: PREFIX.pem and PREFIX.key.
pub fn recovery_paths(prefix: &Path) -> (PathBuf, PathBuf) {
    (
        PathBuf::from(format!("{}.pem", prefix.display())),
        PathBuf::from(format!("{}.key", prefix.display())),
    )
}

/// Make an organisation recovery key pair: the private key (PEM, 0600) and its certificate
/// (0644), both new files; audited in this keystore's log when there is one. Returns the
/// fingerprint.
pub fn recovery_key(chain: &Chain, prefix: &Path, bits: usize) -> Result<String, KeyError> {
    let (pem_path, key_path) = recovery_paths(prefix);
    check_new(&pem_path)?;
    check_new(&key_path)?;
    let key = crate::crypto::PrivateKey::generate(bits)?;
    let cert = super::certificate::self_signed(&key, "coffer recovery key")?;
    let fp = key.public().fingerprint()?;
    if chain.keystore_exists() {
        chain.audit()?.record_with(
            "recovery-key-create",
            None,
            None,
            Some(&fp),
            "ok",
            Some(&pem_path.display().to_string()),
        )?;
    }
    write_new(&key_path, key.to_pem()?.as_bytes(), 0o600)?;
    write_new(&pem_path, cert.as_bytes(), 0o644)?;
    Ok(fp)
}
