//! From the command line's key options to the library's provider chain: the flags become
//! `KeyFlags` (merged over coffer.toml by the library), and passphrases come from a file or a
//! prompt on the terminal. The chain itself, and every decision about keys, is in `keys`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::{Failure, KeyOpts};
use crate::keys::{self, Chain, ChainSettings, KeyFlags, KeystoreError, Secrets};

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
