//! `coffer keys backup-credential`: what a backup-only host needs to write new backups into a
//! store (public key, name key, write key), wrapped to that host's certificate.

use std::path::PathBuf;

use clap::Args;

use super::keys::write_new;
use super::unlock::keystore_dir;
use super::{CliResult, Failure, KeyOpts};
use crate::keys::transport::{self, Contents};
use crate::keys::{certificate, kms};

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
}

pub fn backup_credential(a: BackupCredentialArgs) -> CliResult {
    if a.out.exists() {
        return Err(Failure::from(format!(
            "{} exists; choose another name or remove it",
            a.out.display()
        )));
    }
    let (recipient, _) = certificate::read(&a.recipient)?;
    let (desc, keys) = super::unlock::unlock(&a.store, &a.keys)?;
    let cred = transport::BackupCredential {
        store_id: desc.store_id.clone(),
        public_key: desc.public_key_der()?,
        name_key: keys.names,
        write_key: keys.writer,
        policy: desc.policy.clone(),
        copy: desc.copy.clone(),
    };
    let bytes = transport::seal_to_recipient(&Contents::Credential(cred), &recipient)?;
    write_new(&a.out, &bytes, 0o600)?;
    let fp = recipient.fingerprint()?;
    // The audit log beside the keystore; a kms store's host may have no keystore file.
    kms::audit_log(&keystore_dir(&a.keys))?
        .record_with(
            "backup-credential-export",
            None,
            Some(&desc.store_id),
            Some(&fp),
            "ok",
            Some(&a.out.display().to_string()),
        )
        .map_err(|e| Failure::from(format!("cannot write the audit log: {e}")))?;
    println!(
        "wrote a backup credential for store {} to {} for certificate {fp}: it can write new \
         backups and never read old ones",
        desc.store_id,
        a.out.display()
    );
    Ok(0)
}
