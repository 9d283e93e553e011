//! Master-key versions: rotation (a local store's new key goes into this keystore; a kms
//! store's is made by the KMS), KMS sync (adopting a version the KMS made by its own policy),
//! and locate (a store's keys in the KMS).
//!
//! A rotation makes version n+1, re-wraps the store's private key, name key and write key
//! under it (the descriptor changes; no data, batch key or catalog record does), re-seals the
//! recovery record to the same certificate, and only after the new descriptor is durable takes
//! version n out of service. Before anything is made anywhere, the descriptor must verify
//! under the current key (format 2), so a planted recovery record is never sealed to.

use std::path::Path;

use super::kms::{KeyInfo, KeyLabels, KeyState, KmsClient, KmsError, KmsProvider};
use super::recovery::{key_entry, reseal as reseal_recovery};
use super::{AuditLog, Chain, KeyError, Refusal, Target};
use crate::crypto::MasterKey;
use crate::progress::Progress;
use crate::store::{self, Descriptor, KeyHome, KeyRecordsLock};

/// What a rotation did.
pub struct Rotated {
    pub store_id: String,
    pub from_version: u32,
    pub version: u32,
    pub key_id: String,
    /// The new KMS UID, for a kms store.
    pub uid: Option<String>,
    /// A local store: the keystore that keeps both versions.
    pub kept_in: Option<std::path::PathBuf>,
    /// A kms store: the old version's UID, and whether revoking it failed (the rotation
    /// itself is done; `coffer keys sync` retries the revocation).
    pub old_uid: Option<String>,
    pub revoke_failed: Option<KmsError>,
}

/// Write the rotated descriptor, with the recovery copy sealed to the new key as well (the
/// old copy would restore a key that no longer opens the store).
fn save_rotated(
    root: &Path,
    mut next: Descriptor,
    new_key: &MasterKey,
    audit: &AuditLog,
) -> Result<Descriptor, KeyError> {
    next.recovery = reseal_recovery(&next, new_key, audit)?;
    // The recovery record changed under this process's own hand: seal the result.
    store::reseal(&mut next, new_key)?;
    next.save(root)?;
    Ok(next)
}

/// Rotate the store's master key, by where its keys are made.
pub fn rotate(chain: &Chain, root: &Path) -> Result<Rotated, KeyError> {
    // Say "not a store" before anything else; read the descriptor again under the lock.
    Descriptor::load(root)?;
    let _lock = KeyRecordsLock::acquire(root)?;
    let desc = Descriptor::load(root)?;
    super::unlock::check_format(chain, &desc)?;
    let current = chain.master(&Target::current(&desc))?;
    match desc.provider {
        // rewrap checks the descriptor before the new key is kept anywhere.
        KeyHome::Local => rotate_local(chain, root, &desc, &current),
        KeyHome::Kms => {
            // Refuse a descriptor that does not verify before the KMS makes anything.
            store::check_for_rotation(&desc, &current)?;
            rotate_kms(chain, root, &desc, &current)
        }
    }
}

fn rotate_local(
    chain: &Chain,
    root: &Path,
    desc: &Descriptor,
    current: &MasterKey,
) -> Result<Rotated, KeyError> {
    let ks = chain.keystore()?;
    let cur = desc.current_master();
    let version = cur.version + 1;
    let new_key = MasterKey::random();
    let next = store::rewrap(desc, current, &new_key, version, None)?;
    let new_id = next.current_master().key_id.clone();
    // The new key is in the keystore before any descriptor refers to it; the old one stays,
    // for copies of the store made before this rotation.
    ks.add(
        key_entry(desc, version, &new_id, "created (rotation)"),
        &new_key,
    )?;
    save_rotated(root, next, &new_key, ks.audit())?;
    ks.audit().record(
        "rotate",
        Some(&new_id),
        Some(&desc.store_id),
        "ok",
        Some(&format!("version {} -> {version}", cur.version)),
    )?;
    Ok(Rotated {
        store_id: desc.store_id.clone(),
        from_version: cur.version,
        version,
        key_id: new_id,
        uid: None,
        kept_in: Some(ks.dir().to_path_buf()),
        old_uid: None,
        revoke_failed: None,
    })
}

/// The KMS's labels for version `version` of `desc`'s master key.
fn labels(desc: &Descriptor, version: u32) -> KeyLabels {
    KeyLabels {
        store_id: desc.store_id.clone(),
        version,
        policy: desc.policy.clone(),
        copy: desc.copy.clone(),
    }
}

fn rotate_kms(
    chain: &Chain,
    root: &Path,
    desc: &Descriptor,
    current: &MasterKey,
) -> Result<Rotated, KeyError> {
    let cur = desc.current_master().clone();
    let old_uid = cur.uid.clone().ok_or_else(|| KeyError::NoUid {
        store_id: desc.store_id.clone(),
        key_id: cur.key_id.clone(),
        provider: desc.provider.as_str(),
    })?;
    let kms = chain.kms()?;
    let (client, audit) = (kms.client()?, kms.audit());
    let endpoint = kms.config().endpoint();
    let version = cur.version + 1;
    let new_uid = client.create_master(&labels(desc, version))?;
    let detail = format!("uid {new_uid} at {endpoint}, version {version}");
    audit.record(
        "kms-create",
        None,
        Some(&desc.store_id),
        "ok",
        Some(&detail),
    )?;
    let activated = std::cell::Cell::new(false);
    let done = (|| -> Result<Descriptor, KeyError> {
        let new_key = client.get_master(&new_uid)?;
        client.activate(&new_uid)?;
        activated.set(true);
        let next = store::rewrap(desc, current, &new_key, version, Some(new_uid.clone()))?;
        save_rotated(root, next, &new_key, audit)
    })();
    let next = match done {
        Ok(n) => n,
        Err(e) => {
            return Err(undo_kms_key(
                kms,
                &desc.store_id,
                &new_uid,
                activated.get(),
                e,
                &detail,
            ))
        }
    };
    let new_id = next.current_master().key_id.clone();
    audit.record(
        "rotate",
        Some(&new_id),
        Some(&desc.store_id),
        "ok",
        Some(&detail),
    )?;
    // Only now, with the new wrap durable, is the old version taken out of service. It stays
    // readable (Get), so copies of the store made before still open.
    let revoked = client.revoke(&old_uid, false);
    audit.record(
        "kms-revoke",
        Some(&cur.key_id),
        Some(&desc.store_id),
        if revoked.is_ok() { "ok" } else { "failed" },
        Some(&format!(
            "uid {old_uid} at {endpoint}: cessation of operation"
        )),
    )?;
    Ok(Rotated {
        store_id: desc.store_id.clone(),
        from_version: cur.version,
        version,
        key_id: new_id,
        uid: Some(new_uid),
        kept_in: None,
        old_uid: Some(old_uid),
        revoke_failed: revoked.err(),
    })
}

/// A rotation or init that failed after the KMS made a key: the descriptor does not name the
/// key, so it is taken out of the KMS again (audited as kms-destroy). The error says whether
/// that worked.
pub(super) fn undo_kms_key(
    kms: &KmsProvider,
    store_id: &str,
    uid: &str,
    activated: bool,
    error: KeyError,
    detail: &str,
) -> KeyError {
    let undone = kms.client().and_then(|c| c.discard(uid, activated));
    let outcome = match &undone {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("failed: {e}"),
    };
    kms.audit().refusal(
        "kms-destroy",
        None,
        Some(store_id),
        None,
        &outcome,
        Some(&format!("{detail}: the operation failed: {error}")),
    );
    KeyError::Undone {
        error: Box::new(error),
        uid: uid.to_string(),
        cleanup: undone.err(),
    }
}

/// A store's keys in the KMS, newest version first.
pub fn store_versions(
    client: &KmsClient,
    store_id: &str,
    progress: &Progress,
) -> Result<Vec<KeyInfo>, KmsError> {
    let mut out = Vec::new();
    let uids = client.locate_store(store_id)?;
    progress.add_total(uids.len() as u64);
    for uid in uids {
        progress.step(0);
        let info = client.info(&uid)?;
        if info.store_id.as_deref() == Some(store_id) {
            out.push(info);
        }
    }
    out.sort_by_key(|i| std::cmp::Reverse(i.version.unwrap_or(0)));
    Ok(out)
}

/// What a sync did.
pub struct Synced {
    pub store_id: String,
    pub endpoint: String,
    /// The version it adopted (version, UID), or None when the store had the newest.
    pub adopted: Option<(u32, String)>,
    pub current_version: u32,
    /// Newer versions passed over, with their state (pre-active, compromised, ...).
    pub skipped: Vec<(u32, String, &'static str)>,
    /// Superseded versions it revoked (version, UID).
    pub revoked: Vec<(u32, String)>,
    pub revoke_failed: Option<KmsError>,
}

/// Bring a kms store up to the newest active master-key version in the KMS, and take older
/// versions that are still active out of service.
pub fn sync(chain: &Chain, root: &Path, progress: &Progress) -> Result<Synced, KeyError> {
    Descriptor::load(root)?;
    let _lock = KeyRecordsLock::acquire(root)?;
    let desc = Descriptor::load(root)?;
    super::unlock::check_format(chain, &desc)?;
    if desc.provider != KeyHome::Kms {
        return Err(KeyError::Refused(Refusal::NotKms(desc.store_id.clone())));
    }
    // The descriptor must verify under its current key before anything is adopted (a
    // descriptor rewritten to an earlier format is refused here).
    store::check_for_rotation(&desc, &chain.master(&Target::current(&desc))?)?;
    let cur = desc.current_master().clone();
    let kms = chain.kms()?;
    let (client, audit) = (kms.client()?, kms.audit());
    let endpoint = kms.config().endpoint();
    let versions = store_versions(client, &desc.store_id, progress)?;
    let mut out = Synced {
        store_id: desc.store_id.clone(),
        endpoint: endpoint.clone(),
        adopted: None,
        current_version: cur.version,
        skipped: Vec::new(),
        revoked: Vec::new(),
        revoke_failed: None,
    };
    let newer = versions
        .iter()
        .filter(|i| i.version.unwrap_or(0) > cur.version);
    let mut newest = None;
    for i in newer {
        match i.state {
            KeyState::Active if newest.is_none() => newest = Some(i),
            KeyState::Active => {}
            s => out
                .skipped
                .push((i.version.unwrap_or(0), i.uid.clone(), s.as_str())),
        }
    }
    let mut current_uid = cur.uid.clone();
    match newest {
        None => audit.record(
            "kms-sync",
            Some(&cur.key_id),
            Some(&desc.store_id),
            "ok",
            Some("nothing new"),
        )?,
        Some(info) => {
            adopt(chain, root, &desc, kms, info)?;
            current_uid = Some(info.uid.clone());
            out.current_version = info.version.unwrap_or(0);
            out.adopted = Some((out.current_version, info.uid.clone()));
        }
    }
    revoke_superseded(kms, &desc, &versions, &current_uid, &mut out, progress)?;
    Ok(out)
}

/// Re-wrap the store under the KMS's version `info`.
fn adopt(
    chain: &Chain,
    root: &Path,
    desc: &Descriptor,
    kms: &KmsProvider,
    info: &KeyInfo,
) -> Result<(), KeyError> {
    let version = info.version.unwrap_or(0);
    let cur = desc.current_master();
    let current = chain.master(&Target::current(desc))?;
    let new_key = kms.client()?.get_master(&info.uid)?;
    let next = store::rewrap(desc, &current, &new_key, version, Some(info.uid.clone()))?;
    let next = save_rotated(root, next, &new_key, kms.audit())?;
    kms.audit().record(
        "kms-sync",
        Some(&next.current_master().key_id),
        Some(&desc.store_id),
        "ok",
        Some(&format!(
            "uid {} at {}: version {} -> {version}",
            info.uid,
            kms.config().endpoint(),
            cur.version
        )),
    )?;
    Ok(())
}

/// Older versions still active (a rotation whose revoke failed) go out of service; they stay
/// readable for older copies of the store.
fn revoke_superseded(
    kms: &KmsProvider,
    desc: &Descriptor,
    versions: &[KeyInfo],
    current_uid: &Option<String>,
    out: &mut Synced,
    progress: &Progress,
) -> Result<(), KeyError> {
    for i in versions {
        let v = i.version.unwrap_or(0);
        if v >= out.current_version
            || i.state != KeyState::Active
            || Some(&i.uid) == current_uid.as_ref()
        {
            continue;
        }
        progress.add_total(1);
        progress.step(0);
        let r = kms.client()?.revoke(&i.uid, false);
        kms.audit().record(
            "kms-revoke",
            None,
            Some(&desc.store_id),
            if r.is_ok() { "ok" } else { "failed" },
            Some(&format!(
                "uid {} at {}: superseded version {v}",
                i.uid, out.endpoint
            )),
        )?;
        match r {
            Ok(()) => out.revoked.push((v, i.uid.clone())),
            Err(e) => out.revoke_failed = Some(e),
        }
    }
    Ok(())
}

/// A store's master keys in the KMS (audited), newest version first.
pub fn locate(
    chain: &Chain,
    store_id: &str,
    progress: &Progress,
) -> Result<(String, Vec<KeyInfo>), KeyError> {
    let kms = chain.kms()?;
    let endpoint = kms.config().endpoint();
    let versions = store_versions(kms.client()?, store_id, progress)?;
    kms.audit().record(
        "kms-locate",
        None,
        Some(store_id),
        "ok",
        Some(&format!("{} key(s) at {endpoint}", versions.len())),
    )?;
    Ok((endpoint, versions))
}
