//! `coffer keys backup-credential`: what a backup-only host needs to write new backups into a
//! store (public key, name key, write key), wrapped to that host's certificate.

use std::path::PathBuf;

use clap::Args;

use super::unlock::chain;
use super::{CliResult, KeyOpts};
use crate::keys::{certificate, export};

#[derive(Args)]
pub struct BackupCredentialArgs {
    /// The store
    pub store: PathBuf,
    #[command(flatten)]
    pub keys: KeyOpts,
    /// The backup host's certificate (`coffer keys cert` there)
    #[arg(long, value_name = "PEM")]
    pub recipient: PathBuf,
    /// The credential file to write (it must not exist)
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Print what was done as one JSON object
    #[arg(long)]
    pub json: bool,
}

pub fn backup_credential(a: BackupCredentialArgs) -> CliResult {
    export::check_new(&a.out)?;
    let (recipient, _) = certificate::read(&a.recipient)?;
    let (store_id, fp) = export::backup_credential(&chain(&a.keys)?, &a.store, &recipient, &a.out)?;
    if a.json {
        let out = serde_json::json!({"store_id": store_id, "file": a.out, "recipient": fp});
        println!("{out}");
        return Ok(0);
    }
    println!(
        "wrote a backup credential for store {store_id} to {} for certificate {fp}: it can \
         write new backups and never read old ones",
        a.out.display()
    );
    Ok(0)
}
