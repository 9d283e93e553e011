//! From the command line's key options to the library's provider chain: the flags become
//! `KeyFlags` (merged over coffer.toml by the library), and passphrases come from a file or a
//! prompt on the terminal. The chain itself, and every decision about keys, is in `keys`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{Failure, KeyOpts};
use crate::keys::unlock::{BackupOnlyWhy, Unlocked};
use crate::keys::{self, Chain, ChainSettings, KeyFlags, KeystoreError, Secrets};
use crate::store::{Descriptor, StoreKeys};

/// A passphrase from a file, else a prompt on the terminal, else a refusal (never a hang).
pub fn read_passphrase(
    file: Option<&PathBuf>,
    what: &str,
    confirm: bool,
) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
    if let Some(path) = file {
        return keys::passphrase_from_file(path);
    }
    if !std::io::stdin().is_terminal() {
        return Err(KeystoreError::Passphrase(
            "no passphrase: give --passphrase-file or set COFFER_PASSPHRASE_FILE (no terminal \
             to prompt on)"
                .into(),
        ));
    }
    let ask = |prompt: String| {
        rpassword::prompt_password(prompt)
            .map(Zeroizing::new)
            .map_err(|e| KeystoreError::Passphrase(format!("cannot read passphrase: {e}")))
    };
    let first = ask(format!("{what}: "))?;
    if confirm && *ask(format!("{what} (again): "))? != *first {
        return Err(KeystoreError::Passphrase("the passphrases differ".into()));
    }
    keys::passphrase::trimmed(Zeroizing::new(first.as_bytes().to_vec()))
}

/// The keystore passphrase from --passphrase-file (or the configuration's), else a prompt.
struct CliSecrets {
    file: Option<PathBuf>,
}

impl Secrets for CliSecrets {
    fn keystore_passphrase(
        &self,
        _dir: &Path,
        new: bool,
    ) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
        read_passphrase(self.file.as_ref(), "Keystore passphrase", new)
    }
}

impl KeyOpts {
    pub fn flags(&self) -> KeyFlags {
        KeyFlags {
            config: self.config.clone(),
            keystore: self.keystore.clone(),
            passphrase_file: self.passphrase_file.clone(),
            providers: self.providers.clone().map(|p| vec![p]),
            key_server: self.key_server.clone(),
            key_server_cert: self.key_server_cert.clone(),
            key_server_timeout: self.key_server_timeout.clone(),
            kms_config: self.kms_config.clone(),
            fallback: None,
        }
    }
}

/// The provider chain for this command's key options.
pub fn chain(opts: &KeyOpts) -> Result<Chain, Failure> {
    chain_with(opts.flags())
}

/// The same, with flags a command added (a mount's --fallback).
pub fn chain_with(flags: KeyFlags) -> Result<Chain, Failure> {
    let settings = ChainSettings::resolve(&flags)?;
    let file = settings.passphrase_file.clone();
    Ok(Chain::new(settings, Box::new(CliSecrets { file })))
}

/// Unlock the store as the provider chain and the fallback decide, and say on stderr what a
/// backup-only run or a failed provider means. Returns the keys and a line for the log.
pub fn unlock_store(
    root: &Path,
    opts: &KeyOpts,
    fallback: Option<String>,
    backup_only: bool,
    doing: &str,
) -> Result<(Descriptor, StoreKeys, Option<String>), Failure> {
    let mut flags = opts.flags();
    flags.fallback = fallback;
    let chain = chain_with(flags)?;
    let (desc, keys, note) = match keys::unlock::unlock(&chain, root, backup_only)? {
        Unlocked::Full {
            desc,
            keys,
            failed,
            from,
        } => {
            let note = (!failed.0.is_empty())
                .then(|| format!("the master key came from {from}; on the way: {failed}"));
            (desc, keys, note)
        }
        Unlocked::BackupOnly { desc, keys, why } => {
            let note = match why {
                BackupOnlyWhy::Asked => None,
                BackupOnlyWhy::OnlyCredential => Some(format!(
                    "{doing} backup-only: this keystore holds a backup credential for store {}, \
                     not its key: new files can be written, old ones cannot be read",
                    desc.store_id
                )),
                BackupOnlyWhy::Fallback(failed) => Some(format!(
                    "{doing} backup-only (fallback): no key provider gave the master key of store \
                     {} ({failed}); new backups can be written, old files cannot be read until \
                     a provider answers",
                    desc.store_id
                )),
            };
            (desc, keys, note)
        }
    };
    if let Some(n) = &note {
        eprintln!("coffer: {n}");
    }
    Ok((desc, keys, note))
}
