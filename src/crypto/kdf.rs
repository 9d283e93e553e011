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

/// The most memory (KiB) and passes a stored parameter set may ask for: a hostile export file
/// or keystore must not make coffer allocate gigabytes or spin for minutes. 1 GiB and 10
/// passes are far above the default (64 MiB, 3 passes).
pub const MAX_M_COST: u32 = 1024 * 1024;
pub const MAX_T_COST: u32 = 10;
const MAX_P_COST: u32 = 16;

impl KdfParams {
    /// Refuse parameters that would make a hostile file cost unbounded memory or time; called
    /// before any work is done with them.
    pub fn check(&self) -> Result<(), CryptoError> {
        if self.m_cost < 8 * 1024
            || self.m_cost > MAX_M_COST
            || self.t_cost == 0
            || self.t_cost > MAX_T_COST
            || self.p_cost == 0
            || self.p_cost > MAX_P_COST
        {
            return Err(CryptoError::Kdf(format!(
                "Argon2 parameters out of range ({} KiB, {} passes, {} lanes; at most 1 GiB, \
                 {MAX_T_COST} passes, {MAX_P_COST} lanes)",
                self.m_cost, self.t_cost, self.p_cost
            )));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_parameters_are_refused_before_any_work() {
        let p = |m, t, l| KdfParams {
            m_cost: m,
            t_cost: t,
            p_cost: l,
        };
        assert!(KdfParams::default().check().is_ok());
        assert!(p(MAX_M_COST, MAX_T_COST, 1).check().is_ok());
        for bad in [
            p(MAX_M_COST + 1, 1, 1),
            p(4 * 1024 * 1024, 3, 1),
            p(64 * 1024, MAX_T_COST + 1, 1),
            p(64 * 1024, 64, 1),
            p(64 * 1024, 0, 1),
            p(1024, 3, 1),
            p(64 * 1024, 3, 0),
        ] {
            // 4 GiB would take seconds and gigabytes if it were tried: it must not be.
            let e = derive_passphrase_key(b"pw", &[0; 16], &bad).expect_err("refused");
            assert!(
                e.to_string().contains("Argon2 parameters out of range"),
                "{e}"
            );
        }
    }
}
