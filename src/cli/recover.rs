//! `coffer recover STORE --recovery-key KEY`: put a store's master keys back into this
//! keystore from the copy sealed to the organisation's recovery key at `init`.

use std::path::PathBuf;

use clap::Args;

use super::keys::{added_json, print_added};
use super::unlock::chain;
use super::{CliResult, KeyOpts};
use crate::keys;

#[derive(Args)]
pub struct RecoverArgs {
    /// The store whose keys to recover
    pub store: PathBuf,
    #[command(flatten)]
    pub keys: KeyOpts,
    /// The recovery private key (PREFIX.key from `coffer keys recovery-key`)
    #[arg(long, value_name = "FILE")]
    pub recovery_key: PathBuf,
    /// Print what was done as one JSON object
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: RecoverArgs) -> CliResult {
    let chain = chain(&a.keys)?;
    let done = keys::recovery::recover(&chain, &a.store, &a.recovery_key)?;
    let dir = chain.keystore_dir().display().to_string();
    match a.json {
        true => println!("{}", added_json(&done.keys, &dir)),
        false => print_added(&done.keys, &dir),
    }
    Ok(0)
}
