//! `coffer init STORE`: create a store and its first master key, in this host's keystore
//! (`--provider local`, the default) or in a KMIP key management server (`--provider kms`).

use std::path::PathBuf;

use clap::Args;

use super::unlock::chain;
use super::{CliResult, KeyOpts};
use crate::keys::{self, init::CredentialKept, init::NewStore};
use crate::store::{InitOptions, KeyHome};

#[derive(Args)]
pub struct InitArgs {
    /// Directory for the new store (absent or empty)
    pub store: PathBuf,
    #[command(flatten)]
    pub keys: KeyOpts,
    /// Where the store's master key lives: "local" (this host's keystore) or "kms" (a KMIP
    /// server named by --kms-config; the key never leaves it except to unlock the store)
    #[arg(long, default_value = "local", value_parser = parse_home)]
    pub provider: KeyHome,
    /// Size of the store's RSA key in bits (2048, 3072 or 4096)
    #[arg(long, default_value_t = 3072, value_parser = parse_rsa_bits)]
    pub rsa_bits: usize,
    /// Plaintext bytes per encrypted block, a power of two from 4K to 1M. 4K keeps what an
    /// auxiliary rsync copy resends after a small change to the size of that change; larger
    /// blocks write and read slightly faster (docs/benchmarks.md)
    #[arg(long, default_value = "4K", value_parser = parse_block_size)]
    pub block_size: u8,
    /// Policy label kept with the key (as backup suites name storage policies)
    #[arg(long, value_name = "NAME")]
    pub policy: Option<String>,
    /// Copy label kept with the key ("primary", "offsite", ...)
    #[arg(long, value_name = "NAME")]
    pub copy: Option<String>,
    /// Also seal the store's master key to this recovery certificate (from `coffer keys
    /// recovery-key`), so that the store stays readable if every keystore is lost
    #[arg(long, value_name = "PEM")]
    pub recovery_cert: Option<PathBuf>,
}

fn parse_home(s: &str) -> Result<KeyHome, String> {
    match s.trim() {
        "local" => Ok(KeyHome::Local),
        "kms" => Ok(KeyHome::Kms),
        _ => Err("the provider is local or kms".into()),
    }
}

fn parse_rsa_bits(s: &str) -> Result<usize, String> {
    match s.trim() {
        "2048" => Ok(2048),
        "3072" => Ok(3072),
        "4096" => Ok(4096),
        _ => Err("RSA key size must be 2048, 3072 or 4096".into()),
    }
}

/// "64K" -> 16 (the block shift).
fn parse_block_size(s: &str) -> Result<u8, String> {
    let t = s.trim().to_ascii_uppercase();
    let (num, mult) = if let Some(n) = t.strip_suffix('K') {
        (n, 1024)
    } else if let Some(n) = t.strip_suffix('M') {
        (n, 1024 * 1024)
    } else {
        (t.as_str(), 1)
    };
    let v: u64 = num
        .parse::<u64>()
        .map_err(|_| format!("'{s}' is not a size"))?
        * mult;
    if !v.is_power_of_two() || !(4096..=1 << 20).contains(&v) {
        return Err("block size must be a power of two from 4K to 1M".into());
    }
    Ok(v.trailing_zeros() as u8)
}

pub fn run(a: InitArgs) -> CliResult {
    let recovery = a
        .recovery_cert
        .as_deref()
        .map(crate::keys::certificate::read)
        .transpose()?;
    let options = InitOptions {
        rsa_bits: a.rsa_bits,
        block_shift: a.block_size,
        policy: a.policy.clone(),
        copy: a.copy.clone(),
        provider: a.provider,
        kms: None,
    };
    let chain = chain(&a.keys)?;
    let new = NewStore {
        root: a.store.clone(),
        options,
        recovery,
    };
    let created = keys::init::init(&chain, &new)?;
    match &created.credential {
        CredentialKept::Kept(dir) => eprintln!(
            "coffer: kept a backup credential for store {} in {}: when the KMS is down, `mount \
             --fallback backup-only` still takes backups",
            created.desc.store_id,
            dir.display()
        ),
        CredentialKept::NoKeystore(dir) => eprintln!(
            "coffer: note: no keystore at {}, so no backup credential was kept: with one, \
             backups could go on while the KMS is down (docs/keys.md)",
            dir.display()
        ),
        CredentialKept::NotNeeded => {}
    }
    if created.desc.provider == crate::store::KeyHome::Local && created.desc.recovery.is_none() {
        eprintln!(
            "coffer: note: every backup in {} now depends on this host's keystore ({}) and its \
             passphrase: keep a copy of both, or an export (`coffer keys export`), somewhere \
             else; `--recovery-cert` at init seals the keys to your recovery certificate too",
            a.store.display(),
            chain.keystore_dir().display()
        );
    }
    println!("{}", created.desc.store_id);
    Ok(0)
}
