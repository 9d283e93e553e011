//! `coffer upgrade STORE`: a format-1 store to format 2 (authenticated batches and
//! descriptor), in place, with its master key. The policy is in `store::upgrade`.

use std::path::{Path, PathBuf};

use clap::Args;

use super::unlock::chain;
use super::{CliResult, KeyOpts};
use crate::keys::upgrade::Recovery;

#[derive(Args)]
pub struct UpgradeArgs {
    /// The store to upgrade (not mounted)
    pub store: PathBuf,
    #[command(flatten)]
    pub keys: KeyOpts,
    /// The organisation's recovery certificate: the store's recovery record must be for it,
    /// and is sealed afresh to it (format 1 cannot show that the record there is yours)
    #[arg(long, value_name = "PEM", conflicts_with = "drop_recovery")]
    pub recovery_cert: Option<PathBuf>,
    /// Remove the store's recovery record instead
    #[arg(long)]
    pub drop_recovery: bool,
    /// Print what was done as one JSON object
    #[arg(long)]
    pub json: bool,
}

/// The one line a mount of a format-1 store prints.
pub fn v1_warning(store: &Path) -> String {
    format!(
        "coffer: warning: {} is a format-1 store: a host that can write it could plant files \
         that read as genuine; run `coffer upgrade {}` (needs the master key)",
        store.display(),
        store.display()
    )
}

pub fn run(a: UpgradeArgs) -> CliResult {
    let cert = a
        .recovery_cert
        .as_deref()
        .map(crate::keys::certificate::read)
        .transpose()?;
    let recovery = match &cert {
        Some((pk, pem)) => Recovery::Reseal(pk, pem),
        None if a.drop_recovery => Recovery::Drop,
        None => Recovery::Refuse,
    };
    let chain = chain(&a.keys)?;
    let progress = std::sync::Arc::new(crate::progress::Progress::default());
    let bar = super::progress::Bar::of(a.json, "batches", &progress);
    let report = crate::keys::upgrade::upgrade(&chain, &a.store, recovery, &progress);
    if let Some(b) = bar {
        b.finish();
    }
    let report = report?;
    let store_id = crate::store::Descriptor::load(&a.store)?.store_id;
    let code = if report.refused.is_empty() { 0 } else { 1 };
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "store_id": store_id, "already_format_2": report.already,
                "batches_authenticated": report.batches, "batches_refused": report.refused,
            })
        );
        return Ok(code);
    }
    if report.already {
        println!("store {store_id} is already format 2; nothing changed");
        return Ok(0);
    }
    for id in &report.refused {
        println!(
            "problem: batch {id} does not open under the store's private key; left untagged \
             (its files will read as EIO; `coffer fsck` lists them)"
        );
    }
    println!(
        "store {store_id}: upgraded to format 2: {} batch records authenticated under a new \
         write key, descriptor sealed; no data was re-encrypted. Backup-only hosts need a new \
         credential (`coffer keys backup-credential`).",
        report.batches
    );
    Ok(code)
}
