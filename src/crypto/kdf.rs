//! Argon2id passphrase derivation. Parameters are stored beside every salt so that they can be
//! raised later without breaking old keystores or export files.

use serde::{Deserialize, Serialize};

use super::{CryptoError, KeystoreKey, Secret32};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes: about 0.2 s on one core of the reference machine; OWASP's Argon2id
    /// guidance asks for at least 19 MiB and 2 passes.
    fn default() -> Self {
        KdfParams {
            m_cost: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

impl KdfParams {
    /// Refuse parameters that would make a hostile file cost unbounded memory or time.
    pub fn check(&self) -> Result<(), CryptoError> {
        if self.m_cost < 8 * 1024
            || self.m_cost > 4 * 1024 * 1024
            || self.t_cost == 0
            || self.t_cost > 64
            || self.p_cost == 0
            || self.p_cost > 16
        {
            return Err(CryptoError::Kdf("KDF parameters out of range".into()));
        }
        Ok(())
    }
}

pub fn derive_passphrase_key(
    passphrase: &[u8],
    salt: &[u8],
    params: &KdfParams,
) -> Result<KeystoreKey, CryptoError> {
    params.check()?;
    let p = argon2::Params::new(params.m_cost, params.t_cost, params.p_cost, Some(32))
        .map_err(|e| CryptoError::Kdf(e.to_string()))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
    let mut out = [0u8; 32];
    a.hash_password_into(passphrase, salt, &mut out)
        .map_err(|e| CryptoError::Kdf(e.to_string()))?;
    Ok(KeystoreKey::from_secret(Secret32::from_array(out)))
}
