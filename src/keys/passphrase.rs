//! Where the keystore's passphrase comes from, as the library sees it: a [`Secrets`] that the
//! binary hands in (a file, or a prompt on a terminal), asked at most once per command by the
//! chain. Reading a passphrase file is here; prompting is the binary's.

use std::path::Path;

use zeroize::Zeroizing;

use super::KeystoreError;

/// The passphrases a command may need. The chain asks for the keystore's at most once.
pub trait Secrets {
    /// The passphrase of the keystore in `dir`; `new` when it is about to be created (a
    /// prompt then asks twice).
    fn keystore_passphrase(
        &self,
        dir: &Path,
        new: bool,
    ) -> Result<Zeroizing<Vec<u8>>, KeystoreError>;
}

/// A passphrase from a file: a trailing newline (from `echo pw > file`) is not part of it,
/// and an empty one is refused.
pub fn passphrase_from_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
    let bytes = std::fs::read(path).map_err(|e| {
        KeystoreError::Passphrase(format!(
            "cannot read passphrase file {}: {e}",
            path.display()
        ))
    })?;
    trimmed(Zeroizing::new(bytes))
}

/// Drop a trailing newline; refuse an empty passphrase.
pub fn trimmed(mut p: Zeroizing<Vec<u8>>) -> Result<Zeroizing<Vec<u8>>, KeystoreError> {
    while matches!(p.last(), Some(b'\n') | Some(b'\r')) {
        p.pop();
    }
    if p.is_empty() {
        return Err(KeystoreError::Passphrase("the passphrase is empty".into()));
    }
    Ok(p)
}
