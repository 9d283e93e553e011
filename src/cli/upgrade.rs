//! `coffer upgrade STORE`: a store of format 1 or 2 to format 3 (authenticated batches,
//! descriptor, and every inode's type, mode, owner, device, links and place), in place, with
//! its master key. The policy is in `store::upgrade`.

use std::path::PathBuf;

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
    let bar = super::progress::Bar::of(a.json, "entries", &progress);
    let report = crate::keys::upgrade::upgrade(&chain, &a.store, recovery, &progress);
    if let Some(b) = bar {
        b.finish();
    }
    let report = report?;
    let store_id = crate::store::Descriptor::load(&a.store)?.store_id;
    let code = match report.refused.is_empty() && report.problems.is_empty() {
        true => 0,
        false => 1,
    };
    if a.json {
        let mut v = serde_json::to_value(&report)?;
        v["store_id"] = store_id.into();
        v["format"] = crate::format::STORE_VERSION.into();
        println!("{v}");
        return Ok(code);
    }
    if report.already {
        println!(
            "store {store_id} is already format {}; nothing changed",
            report.from
        );
        return Ok(0);
    }
    print_report(&store_id, &report);
    Ok(code)
}

/// What an upgrade did, and what it vouched for, for a person.
fn print_report(store_id: &str, r: &crate::store::upgrade::UpgradeReport) {
    for id in &r.refused {
        println!(
            "problem: batch {id} does not open under the store's private key; left untagged \
             (its files will read as EIO; `coffer fsck` lists them)"
        );
    }
    for p in &r.problems {
        println!("problem: {p}");
    }
    for p in &r.privileged {
        println!("vouched for: {p}: a set-user-ID or set-group-ID file");
    }
    for d in &r.devices {
        println!("vouched for: {d}: a device node");
    }
    let batches = match r.from {
        1 => format!(
            "{} batches adopted under a new write key (their files could have been written by \
             anyone who could write the store; `coffer fsck` lists them), ",
            r.batches
        ),
        _ => String::new(),
    };
    println!(
        "store {store_id}: upgraded from format {} to format 3: {batches}{} inodes sealed with \
         the type, mode, owner, device, links and place found in place, descriptor sealed; no \
         data was re-encrypted. The upgrade vouches for all it found: upgrade the store you \
         wrote, not a copy that passed through hands you do not trust.{}",
        r.from,
        r.entries,
        match r.from {
            1 => " Backup-only hosts need a new credential (`coffer keys backup-credential`).",
            _ => "",
        }
    );
}
