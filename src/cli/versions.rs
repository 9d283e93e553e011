//! `coffer keys rotate | sync | locate`: master-key versions.
//!
//! A rotation makes master-key version n+1, re-wraps the store's private key and name key
//! under it (the descriptor changes; no data, batch key or catalog record does), and only
//! after the new descriptor is durable takes version n out of service. Sync adopts a version
//! that a KMS made by its own rotation policy. Locate lists a store's keys in a KMS.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use super::init::{key_entry, seal_recovery};
use super::unlock::{keystore_dir, kms_config, kms_master_via, open_keystore};
use super::{CliResult, Failure, KeyOpts};
use crate::crypto::MasterKey;
use crate::keys::kms::{self, KeyInfo, KeyLabels, KeyState, KmsClient, KmsProvider};
use crate::keys::AuditLog;
use crate::store::{self, Descriptor, KeyRecordsLock};

#[derive(Args)]
pub struct RotateArgs {
    /// The store whose master key to rotate (it may be mounted: a mount keeps the keys it
    /// holds, and the next mount uses the new version)
    pub store: PathBuf,
    #[command(flatten)]
    pub keys: KeyOpts,
}

#[derive(Args)]
pub struct SyncArgs {
    /// The kms store to bring up to the newest master-key version in the KMS
    pub store: PathBuf,
    #[command(flatten)]
    pub keys: KeyOpts,
}

#[derive(Args)]
pub struct LocateArgs {
    #[command(flatten)]
    pub keys: KeyOpts,
    /// The store id (`coffer info STORE` prints it)
    #[arg(long, value_name = "ID")]
    pub store_id: String,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

fn audit_failure(e: std::io::Error) -> Failure {
    Failure::from(format!("cannot write the audit log: {e}"))
}

/// Write the rotated descriptor, with the recovery copy sealed to the new key as well (the
/// old copy would restore a key that no longer opens the store).
fn save_rotated(
    root: &std::path::Path,
    mut next: Descriptor,
    new_key: &MasterKey,
    audit: &AuditLog,
) -> Result<Descriptor, Failure> {
    if let Some(rec) = &next.recovery {
        let pk = crate::keys::certificate::public_key_of(&rec.certificate, "recovery certificate")?;
        let pem = rec.certificate.clone();
        next.recovery = Some(seal_recovery(&next, new_key, &pk, &pem, audit)?);
    }
    // The recovery record changed under this process's own hand: seal the result.
    store::reseal(&mut next, new_key)?;
    next.save(root)?;
    Ok(next)
}

pub fn rotate(a: RotateArgs) -> CliResult {
    // Say "not a store" before anything else; read the descriptor again under the lock.
    Descriptor::load(&a.store)?;
    let _lock = KeyRecordsLock::acquire(&a.store)?;
    let desc = Descriptor::load(&a.store)?;
    match desc.provider.as_str() {
        "kms" => rotate_kms(&a, &desc),
        "local" => rotate_local(&a, &desc),
        p => Err(Failure::from(format!(
            "store {} uses key provider '{p}', which this build of coffer cannot rotate",
            desc.store_id
        ))),
    }
}

fn rotate_local(a: &RotateArgs, desc: &Descriptor) -> CliResult {
    let ks = open_keystore(&a.keys, false)?;
    let cur = desc.current_master();
    let current = crate::keys::resolve(&[&ks], &cur.key_id, &desc.store_id)?;
    let version = cur.version + 1;
    let new_key = MasterKey::random();
    let next = store::rewrap(desc, &current, &new_key, version, None)?;
    let new_id = next.current_master().key_id.clone();
    // The new key is in the keystore before any descriptor refers to it; the old one stays,
    // for copies of the store made before this rotation.
    ks.add(
        key_entry(desc, version, &new_id, "created (rotation)"),
        &new_key,
    )?;
    save_rotated(&a.store, next, &new_key, ks.audit())?;
    ks.audit()
        .record(
            "rotate",
            Some(&new_id),
            Some(&desc.store_id),
            "ok",
            Some(&format!("version {} -> {version}", cur.version)),
        )
        .map_err(audit_failure)?;
    println!(
        "store {}: master key rotated to version {version} (key {new_id}); the private key is \
         re-wrapped, no data changed; version {} stays in {} for older copies of the store",
        desc.store_id,
        cur.version,
        ks.dir().display()
    );
    Ok(0)
}

fn rotate_kms(a: &RotateArgs, desc: &Descriptor) -> CliResult {
    let cur = desc.current_master().clone();
    let Some(old_uid) = cur.uid.clone() else {
        return Err(Failure::from(format!(
            "store {} records no KMS UID for its master key",
            desc.store_id
        )));
    };
    let config = kms_config(&a.keys)?;
    let audit = kms::audit_log(&keystore_dir(&a.keys))?;
    let provider = KmsProvider::new(&config, desc, &audit);
    let current = kms_master_via(desc, &a.keys, &provider)?;
    // Refuse a descriptor that does not verify before the KMS is asked to make anything.
    store::check_for_rotation(desc, &current)?;
    let client = provider.client()?;
    let endpoint = config.endpoint();
    let version = cur.version + 1;
    let labels = KeyLabels {
        store_id: desc.store_id.clone(),
        version,
        policy: desc.policy.clone(),
        copy: desc.copy.clone(),
    };
    let new_uid = client.create_master(&labels)?;
    let detail = format!("uid {new_uid} at {endpoint}, version {version}");
    audit
        .record(
            "kms-create",
            None,
            Some(&desc.store_id),
            "ok",
            Some(&detail),
        )
        .map_err(audit_failure)?;
    let activated = std::cell::Cell::new(false);
    let done = (|| -> Result<Descriptor, Failure> {
        let new_key = client.get_master(&new_uid)?;
        client.activate(&new_uid)?;
        activated.set(true);
        let next = store::rewrap(desc, &current, &new_key, version, Some(new_uid.clone()))?;
        save_rotated(&a.store, next, &new_key, &audit)
    })();
    let next = match done {
        Ok(n) => n,
        Err(f) => {
            // The descriptor still names the old version: take the new key out again.
            let undone = client.discard(&new_uid, activated.get());
            let _ = audit.record(
                "rotate",
                None,
                Some(&desc.store_id),
                &format!("failed: {}", f.message),
                Some(&detail),
            );
            return Err(match undone {
                Ok(()) => Failure::from(format!("{}; nothing was changed", f.message)),
                Err(e) => Failure::from(format!(
                    "{}; the store is unchanged, but the new KMS key {new_uid} could not be \
                     removed ({e})",
                    f.message
                )),
            });
        }
    };
    let new_id = next.current_master().key_id.clone();
    audit
        .record(
            "rotate",
            Some(&new_id),
            Some(&desc.store_id),
            "ok",
            Some(&detail),
        )
        .map_err(audit_failure)?;
    // Only now, with the new wrap durable, is the old version taken out of service. It stays
    // readable (Get), so copies of the store made before still open.
    let revoked = client.revoke(&old_uid, false);
    audit
        .record(
            "kms-revoke",
            Some(&cur.key_id),
            Some(&desc.store_id),
            if revoked.is_ok() { "ok" } else { "failed" },
            Some(&format!(
                "uid {old_uid} at {endpoint}: cessation of operation"
            )),
        )
        .map_err(audit_failure)?;
    println!(
        "store {}: master key rotated to version {version} (KMS UID {new_uid}); the private \
         key is re-wrapped, no data changed",
        desc.store_id
    );
    if let Err(e) = revoked {
        return Err(Failure::from(format!(
            "the rotation is done, but revoking the old version (UID {old_uid}) failed: {e}; \
             `coffer keys sync` retries it"
        )));
    }
    println!("version {} (KMS UID {old_uid}) is revoked (cessation of operation); it stays readable for older copies", cur.version);
    Ok(0)
}

/// A store's keys in the KMS, newest version first.
fn store_versions(client: &KmsClient, store_id: &str) -> Result<Vec<KeyInfo>, Failure> {
    let mut out = Vec::new();
    for uid in client.locate_store(store_id)? {
        let info = client.info(&uid)?;
        if info.store_id.as_deref() == Some(store_id) {
            out.push(info);
        }
    }
    out.sort_by_key(|i| std::cmp::Reverse(i.version.unwrap_or(0)));
    Ok(out)
}

pub fn sync(a: SyncArgs) -> CliResult {
    Descriptor::load(&a.store)?;
    let _lock = KeyRecordsLock::acquire(&a.store)?;
    let desc = Descriptor::load(&a.store)?;
    if desc.provider != "kms" {
        return Err(Failure::from(format!(
            "store {} keeps its master key in the '{}' provider; only kms stores have versions \
             to sync (rotate it with `coffer keys rotate`)",
            desc.store_id, desc.provider
        )));
    }
    let cur = desc.current_master().clone();
    let config = kms_config(&a.keys)?;
    let audit = kms::audit_log(&keystore_dir(&a.keys))?;
    let provider = KmsProvider::new(&config, &desc, &audit);
    let client = provider.client()?;
    let endpoint = config.endpoint();
    let versions = store_versions(client, &desc.store_id)?;
    let mut notes = Vec::new();
    let newest = versions.iter().find(|i| {
        let v = i.version.unwrap_or(0);
        if v <= cur.version {
            return false;
        }
        match i.state {
            KeyState::Active => true,
            s => {
                notes.push(format!(
                    "version {v} (UID {}) is {}: skipped",
                    i.uid,
                    s.as_str()
                ));
                false
            }
        }
    });
    for n in &notes {
        eprintln!("coffer: {n}");
    }
    let mut current_uid = cur.uid.clone();
    let mut current_version = cur.version;
    match newest {
        None => {
            audit
                .record(
                    "kms-sync",
                    Some(&cur.key_id),
                    Some(&desc.store_id),
                    "ok",
                    Some("nothing new"),
                )
                .map_err(audit_failure)?;
            println!(
                "store {}: version {} is the newest active master key in the KMS at {endpoint}; \
                 nothing to do",
                desc.store_id, cur.version
            );
        }
        Some(info) => {
            let version = info.version.unwrap_or(0);
            let current = kms_master_via(&desc, &a.keys, &provider)?;
            let new_key = client.get_master(&info.uid)?;
            let next = store::rewrap(&desc, &current, &new_key, version, Some(info.uid.clone()))?;
            let next = save_rotated(&a.store, next, &new_key, &audit)?;
            let new_id = next.current_master().key_id.clone();
            audit
                .record(
                    "kms-sync",
                    Some(&new_id),
                    Some(&desc.store_id),
                    "ok",
                    Some(&format!(
                        "uid {} at {endpoint}: version {} -> {version}",
                        info.uid, cur.version
                    )),
                )
                .map_err(audit_failure)?;
            println!(
                "store {}: adopted master-key version {version} (KMS UID {}); the private key is \
                 re-wrapped, no data changed",
                desc.store_id, info.uid
            );
            current_uid = Some(info.uid.clone());
            current_version = version;
        }
    }
    // Older versions still active (a rotation whose revoke failed) are taken out of service;
    // they stay readable for older copies of the store.
    let mut failed = None;
    for i in &versions {
        let v = i.version.unwrap_or(0);
        if v >= current_version
            || i.state != KeyState::Active
            || Some(&i.uid) == current_uid.as_ref()
        {
            continue;
        }
        let r = client.revoke(&i.uid, false);
        let _ = audit.record(
            "kms-revoke",
            None,
            Some(&desc.store_id),
            if r.is_ok() { "ok" } else { "failed" },
            Some(&format!(
                "uid {} at {endpoint}: superseded version {v}",
                i.uid
            )),
        );
        match r {
            Ok(()) => println!(
                "revoked superseded version {v} (KMS UID {}) (cessation of operation)",
                i.uid
            ),
            Err(e) => failed = Some(e),
        }
    }
    if let Some(e) = failed {
        return Err(Failure::from(format!(
            "revoking a superseded version failed: {e}"
        )));
    }
    Ok(0)
}

#[derive(Serialize)]
struct Located {
    uid: String,
    name: Option<String>,
    state: &'static str,
    version: Option<u32>,
    policy: Option<String>,
    copy: Option<String>,
}

pub fn locate(a: LocateArgs) -> CliResult {
    let id = a.store_id.trim().to_ascii_lowercase();
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Failure::from(format!(
            "'{}' is not a store id (32 hex digits; `coffer info STORE` prints it)",
            a.store_id
        )));
    }
    let config = kms_config(&a.keys)?;
    let audit = kms::audit_log(&keystore_dir(&a.keys))?;
    let client = KmsClient::connect(&config)?;
    let versions = store_versions(&client, &id)?;
    audit
        .record(
            "kms-locate",
            None,
            Some(&id),
            "ok",
            Some(&format!(
                "{} key(s) at {}",
                versions.len(),
                config.endpoint()
            )),
        )
        .map_err(audit_failure)?;
    let rows: Vec<Located> = versions
        .into_iter()
        .map(|i| Located {
            uid: i.uid,
            name: i.name,
            state: i.state.as_str(),
            version: i.version,
            policy: i.policy,
            copy: i.copy,
        })
        .collect();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    if rows.is_empty() {
        println!("no keys of store {id} in the KMS at {}", config.endpoint());
        return Ok(0);
    }
    for r in &rows {
        let mut labels = Vec::new();
        if let Some(p) = &r.policy {
            labels.push(format!("policy {p}"));
        }
        if let Some(c) = &r.copy {
            labels.push(format!("copy {c}"));
        }
        println!(
            "{}  version {}  {}  {}{}",
            r.uid,
            r.version
                .map(|v| v.to_string())
                .unwrap_or_else(|| "?".into()),
            r.state,
            r.name.as_deref().unwrap_or("-"),
            if labels.is_empty() {
                String::new()
            } else {
                format!("  ({})", labels.join(", "))
            }
        );
    }
    Ok(0)
}
