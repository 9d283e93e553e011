//! `coffer init STORE`: create a store and its master key in the local keystore.

use std::path::PathBuf;

use clap::Args;

use super::unlock::open_keystore;
use super::{CliResult, Failure, KeyOpts};
use crate::keys::KeyEntry;
use crate::store::{self, InitOptions};

#[derive(Args)]
pub struct InitArgs {
    /// Directory for the new store (absent or empty)
    pub store: PathBuf,
    #[command(flatten)]
    pub keys: KeyOpts,
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
    // Fail on a non-empty directory before asking for a passphrase.
    if let Ok(mut it) = std::fs::read_dir(&a.store) {
        if it.next().is_some() {
            return Err(Failure::from(store::StoreError::NotEmpty(a.store.clone())));
        }
    }
    let recovery = a
        .recovery_cert
        .as_deref()
        .map(crate::keys::certificate::read)
        .transpose()?;
    let ks = open_keystore(&a.keys, true)?;
    let opts = InitOptions {
        rsa_bits: a.rsa_bits,
        block_shift: a.block_size,
        policy: a.policy.clone(),
        copy: a.copy.clone(),
        provider: "local".into(),
    };
    let entry_for = |desc: &store::Descriptor| {
        let rec = desc.current_master();
        KeyEntry {
            key_id: rec.key_id.clone(),
            store_id: desc.store_id.clone(),
            version: rec.version,
            policy: a.policy.clone(),
            copy: a.copy.clone(),
            origin: "created".into(),
            created: crate::unix_now(),
        }
    };
    let save = Box::new(
        |desc: &store::Descriptor, master: &crate::crypto::MasterKey| {
            ks.add(entry_for(desc), master)
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    );
    let seal = Box::new(
        |desc: &store::Descriptor, master: &crate::crypto::MasterKey| {
            let Some((pk, pem)) = &recovery else {
                return Ok(None);
            };
            let key = crate::keys::transport::ExportedKey {
                entry: entry_for(desc),
                key: master.duplicate(),
            };
            let blob = crate::keys::transport::seal_to_recipient(
                &crate::keys::transport::Contents::Keys(vec![key]),
                pk,
            )
            .map_err(|e| e.to_string())?;
            let fingerprint = pk.fingerprint().map_err(|e| e.to_string())?;
            let _ = ks.audit().record_with(
                "recovery-seal",
                Some(&desc.current_master().key_id),
                Some(&desc.store_id),
                Some(&fingerprint),
                "ok",
                None,
            );
            Ok(Some(store::RecoveryRecord {
                fingerprint,
                certificate: pem.clone(),
                export: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, blob),
            }))
        },
    );
    let desc = store::init(&a.store, &opts, save, seal)?;
    println!("{}", desc.store_id);
    Ok(0)
}
