//! `coffer keys rotate | sync | locate`: master-key versions. The work is in
//! `keys::versions`; this prints what it did.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use super::unlock::chain;
use super::{CliResult, Failure, KeyOpts};
use crate::keys::versions;

#[derive(Args)]
pub struct RotateArgs {
    /// The store whose master key to rotate (it may be mounted: a mount keeps the keys it
    /// holds, and the next mount uses the new version)
    pub store: PathBuf,
    #[command(flatten)]
    pub keys: KeyOpts,
    /// Print what was done as one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct SyncArgs {
    /// The kms store to bring up to the newest master-key version in the KMS
    pub store: PathBuf,
    #[command(flatten)]
    pub keys: KeyOpts,
    /// Print what was done as one JSON object
    #[arg(long)]
    pub json: bool,
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

pub fn rotate(a: RotateArgs) -> CliResult {
    let r = versions::rotate(&chain(&a.keys)?, &a.store)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "store_id": r.store_id, "from_version": r.from_version, "version": r.version,
                "key_id": r.key_id, "kms_uid": r.uid, "kept_in": r.kept_in,
                "revoked_uid": r.old_uid.as_ref().filter(|_| r.revoke_failed.is_none()),
                "revoke_failed": r.revoke_failed.as_ref().map(|e| e.to_string()),
            })
        );
        return Ok(if r.revoke_failed.is_some() { 2 } else { 0 });
    }
    match (&r.uid, &r.kept_in) {
        (Some(uid), _) => println!(
            "store {}: master key rotated to version {} (KMS UID {uid}); the private key is \
             re-wrapped, no data changed",
            r.store_id, r.version
        ),
        (None, kept) => println!(
            "store {}: master key rotated to version {} (key {}); the private key is \
             re-wrapped, no data changed; version {} stays in {} for older copies of the store",
            r.store_id,
            r.version,
            r.key_id,
            r.from_version,
            kept.as_deref()
                .map(|d| d.display().to_string())
                .unwrap_or_default()
        ),
    }
    let Some(old_uid) = &r.old_uid else {
        return Ok(0);
    };
    if let Some(e) = &r.revoke_failed {
        return Err(Failure::from(format!(
            "the rotation is done, but revoking the old version (UID {old_uid}) failed: {e}; \
             `coffer keys sync` retries it"
        )));
    }
    println!(
        "version {} (KMS UID {old_uid}) is revoked (cessation of operation); it stays readable \
         for older copies",
        r.from_version
    );
    Ok(0)
}

pub fn sync(a: SyncArgs) -> CliResult {
    let chain = chain(&a.keys)?;
    let progress = std::sync::Arc::new(crate::progress::Progress::default());
    let bar = super::progress::Bar::of(a.json, "KMS versions", &progress);
    let r = versions::sync(&chain, &a.store, &progress);
    if let Some(b) = bar {
        b.finish();
    }
    let r = r?;
    if a.json {
        let skipped: Vec<_> = r
            .skipped
            .iter()
            .map(|(v, uid, state)| serde_json::json!({"version": v, "uid": uid, "state": state}))
            .collect();
        let revoked: Vec<_> = r
            .revoked
            .iter()
            .map(|(v, uid)| serde_json::json!({"version": v, "uid": uid}))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "store_id": r.store_id, "kms": r.endpoint, "current_version": r.current_version,
                "adopted": r.adopted.as_ref().map(|(v, uid)| serde_json::json!({"version": v, "uid": uid})),
                "skipped": skipped, "revoked": revoked,
                "revoke_failed": r.revoke_failed.as_ref().map(|e| e.to_string()),
            })
        );
        return Ok(if r.revoke_failed.is_some() { 2 } else { 0 });
    }
    for (v, uid, state) in &r.skipped {
        eprintln!("coffer: version {v} (UID {uid}) is {state}: skipped");
    }
    match &r.adopted {
        None => println!(
            "store {}: version {} is the newest active master key in the KMS at {}; nothing \
             to do",
            r.store_id, r.current_version, r.endpoint
        ),
        Some((v, uid)) => println!(
            "store {}: adopted master-key version {v} (KMS UID {uid}); the private key is \
             re-wrapped, no data changed",
            r.store_id
        ),
    }
    for (v, uid) in &r.revoked {
        println!("revoked superseded version {v} (KMS UID {uid}) (cessation of operation)");
    }
    if let Some(e) = &r.revoke_failed {
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
    let chain = chain(&a.keys)?;
    let progress = std::sync::Arc::new(crate::progress::Progress::default());
    let bar = super::progress::Bar::of(a.json, "KMS versions", &progress);
    let located = versions::locate(&chain, &id, &progress);
    if let Some(b) = bar {
        b.finish();
    }
    let (endpoint, versions) = located?;
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
        println!("no keys of store {id} in the KMS at {endpoint}");
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
