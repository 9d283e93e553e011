//! `coffer recover STORE --recovery-key KEY`: put a store's master keys back into this
//! keystore from the copy sealed to the organisation's recovery key at `init`.

use std::path::PathBuf;

use base64::Engine;
use clap::Args;

use super::keys::add_keys;
use super::unlock::open_keystore;
use super::{CliResult, Failure, KeyOpts};
use crate::crypto::PrivateKey;
use crate::keys::transport;
use crate::store::Descriptor;

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
    let desc = Descriptor::load(&a.store)?;
    let Some(rec) = &desc.recovery else {
        return Err(Failure::from(format!(
            "store {} has no recovery key (it was made without --recovery-cert)",
            desc.store_id
        )));
    };
    let pem =
        zeroize::Zeroizing::new(std::fs::read_to_string(&a.recovery_key).map_err(|e| {
            Failure::from(format!("cannot read {}: {e}", a.recovery_key.display()))
        })?);
    let key = PrivateKey::from_pem(&pem).map_err(|_| {
        Failure::from(format!(
            "{} is not a recovery private key (PKCS#8 PEM)",
            a.recovery_key.display()
        ))
    })?;
    let fp = key.public().fingerprint()?;
    if fp != rec.fingerprint {
        return Err(Failure::from(format!(
            "{} is the recovery key {fp}, but store {} was sealed to {}",
            a.recovery_key.display(),
            desc.store_id,
            rec.fingerprint
        )));
    }
    let blob = base64::engine::general_purpose::STANDARD
        .decode(&rec.export)
        .map_err(|_| Failure::from("the store's recovery record is damaged"))?;
    let keys = transport::open_with_identity(&blob, &key)
        .map_err(|e| Failure::from(format!("the store's recovery record does not open: {e}")))?;
    let ks = open_keystore(&a.keys, true)?;
    add_keys(&ks, keys.into_keys()?, "recovery", "recover", Some(&fp))
}
