//! `coffer recover STORE --recovery-key KEY`: put a store's master keys back into this
//! keystore from the copy sealed to the organisation's recovery key at `init`.

use std::path::PathBuf;

use clap::Args;

use super::keys::print_added;
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
}

pub fn run(a: RecoverArgs) -> CliResult {
    let chain = chain(&a.keys)?;
    let done = keys::recovery::recover(&chain, &a.store, &a.recovery_key)?;
    print_added(&done.keys, &chain.keystore_dir().display().to_string());
    Ok(0)
}
