//! Where a passphrase comes from: a file (flag or COFFER_PASSPHRASE_FILE), or a prompt when
//! standard input is a terminal. With neither, the command refuses rather than hang.

use std::io::IsTerminal;
use std::path::PathBuf;

use zeroize::Zeroizing;

use super::KeystoreError;

pub enum PassphraseSource {
    File(PathBuf),
    Prompt,
}

/// Read the passphrase. `confirm` asks twice at a prompt (for a new keystore).
pub fn read_passphrase(
    file: Option<&PathBuf>,
    what: &str,
    confirm: bool,
) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
    let mut p = match file {
        Some(path) => {
            let bytes = std::fs::read(path).map_err(|e| {
                KeystoreError::Passphrase(format!(
                    "cannot read passphrase file {}: {e}",
                    path.display()
                ))
            })?;
            Zeroizing::new(bytes)
        }
        None => {
            if !std::io::stdin().is_terminal() {
                return Err(KeystoreError::Passphrase(
                    "no passphrase: give --passphrase-file or set COFFER_PASSPHRASE_FILE \
                     (no terminal to prompt on)"
                        .into(),
                ));
            }
            let first = Zeroizing::new(
                rpassword::prompt_password(format!("{what}: ")).map_err(|e| {
                    KeystoreError::Passphrase(format!("cannot read passphrase: {e}"))
                })?,
            );
            if confirm {
                let again = Zeroizing::new(
                    rpassword::prompt_password(format!("{what} (again): ")).map_err(|e| {
                        KeystoreError::Passphrase(format!("cannot read passphrase: {e}"))
                    })?,
                );
                if *first != *again {
                    return Err(KeystoreError::Passphrase("the passphrases differ".into()));
                }
            }
            Zeroizing::new(first.as_bytes().to_vec())
        }
    };
    // A trailing newline from `echo pw > file` is not part of the passphrase.
    while matches!(p.last(), Some(b'\n') | Some(b'\r')) {
        p.pop();
    }
    if p.is_empty() {
        return Err(KeystoreError::Passphrase("the passphrase is empty".into()));
    }
    Ok(p)
}
