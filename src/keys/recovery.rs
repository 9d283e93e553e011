//! Recovery records: a store's current master key sealed to an organisation's recovery
//! certificate and kept in its descriptor (password-loss protection), and `recover`, which
//! puts the keys back into a keystore with the recovery private key.

use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use super::transport::{self, Contents, ExportedKey};
use super::{Added, AuditLog, Chain, KeyEntry, KeyError, Refusal};
use crate::crypto::{MasterKey, PrivateKey, PublicKey};
use crate::store::{Descriptor, RecoveryRecord};

/// The keystore entry that describes master-key version `version` of `desc`.
pub fn key_entry(desc: &Descriptor, version: u32, key_id: &str, origin: &str) -> KeyEntry {
    KeyEntry {
        key_id: key_id.to_string(),
        store_id: desc.store_id.clone(),
        version,
        policy: desc.policy.clone(),
        copy: desc.copy.clone(),
        origin: origin.into(),
        created: crate::unix_now(),
        format: Some(desc.version),
    }
}

/// Seal the store's current master key to a recovery certificate (audited before the record
/// is handed back).
pub fn seal(
    desc: &Descriptor,
    master: &MasterKey,
    recipient: &PublicKey,
    pem: &str,
    audit: &AuditLog,
) -> Result<RecoveryRecord, KeyError> {
    let rec = desc.current_master();
    let key = ExportedKey {
        entry: key_entry(desc, rec.version, &rec.key_id, "created"),
        key: master.duplicate(),
    };
    let blob = transport::seal_to_recipient(&Contents::Keys(vec![key]), recipient)?;
    let fingerprint = recipient.fingerprint()?;
    audit.record_with(
        "recovery-seal",
        Some(&rec.key_id),
        Some(&desc.store_id),
        Some(&fingerprint),
        "ok",
        None,
    )?;
    Ok(RecoveryRecord {
        fingerprint,
        certificate: pem.to_string(),
        export: B64.encode(blob),
    })
}

/// The same for the certificate a descriptor's recovery record already names (a rotation
/// seals the new key to it). The caller has verified the descriptor's seal.
pub fn reseal(
    desc: &Descriptor,
    master: &MasterKey,
    audit: &AuditLog,
) -> Result<Option<RecoveryRecord>, KeyError> {
    let Some(rec) = &desc.recovery else {
        return Ok(None);
    };
    let pk = super::certificate::public_key_of(&rec.certificate, "recovery certificate")?;
    seal(desc, master, &pk, &rec.certificate, audit).map(Some)
}

/// What `recover` put back.
pub struct Recovered {
    pub fingerprint: String,
    pub keys: Vec<(KeyEntry, Added)>,
}

/// Put a store's master keys back into this host's keystore (made if absent) from the copy
/// sealed to the recovery key in `key_file`.
pub fn recover(chain: &Chain, root: &Path, key_file: &Path) -> Result<Recovered, KeyError> {
    let desc = Descriptor::load(root)?;
    super::unlock::check_format(chain, &desc)?;
    let Some(rec) = &desc.recovery else {
        return Err(KeyError::Refused(Refusal::NoRecovery(
            desc.store_id.clone(),
        )));
    };
    let name = key_file.display().to_string();
    let pem = zeroize::Zeroizing::new(std::fs::read_to_string(key_file).map_err(|e| {
        KeyError::Certificate(super::certificate::CertError::Read(name.clone(), e))
    })?);
    let key = PrivateKey::from_pem(&pem)
        .map_err(|_| KeyError::Refused(Refusal::NotARecoveryKey(name.clone())))?;
    let fingerprint = key.public().fingerprint()?;
    if fingerprint != rec.fingerprint {
        return Err(KeyError::Refused(Refusal::WrongRecoveryKey {
            file: name,
            fingerprint,
            store_id: desc.store_id.clone(),
            sealed_to: rec.fingerprint.clone(),
        }));
    }
    let blob = B64
        .decode(&rec.export)
        .map_err(|_| KeyError::Refused(Refusal::RecoveryDamaged))?;
    let keys = transport::open_with_identity(&blob, &key)
        .and_then(Contents::into_keys)
        .map_err(|e| KeyError::Refused(Refusal::RecoveryUnopened(e)))?;
    // Check first, import after: the key must open this very descriptor (and its seals, from
    // format 2 on), and it is kept with the descriptor's labels, not the ones the record
    // claims. Nothing else the record holds is imported.
    let cur = desc.current_master();
    let found = keys.into_iter().find(|k| k.entry.key_id == cur.key_id);
    let Some(master) = found else {
        return Err(KeyError::Refused(Refusal::RecoveryForeign(
            desc.store_id.clone(),
        )));
    };
    crate::store::unlock_keys(&desc, &master.key)?;
    let verified = ExportedKey {
        entry: key_entry(&desc, cur.version, &cur.key_id, "recovery"),
        key: master.key,
    };
    let ks = chain.keystore_or_create()?;
    let keys = super::export::add_keys(
        ks,
        vec![verified],
        "recovery",
        "recover",
        Some(&fingerprint),
    )?;
    super::unlock::remember_format(chain, &desc);
    Ok(Recovered { fingerprint, keys })
}
