//! `coffer init STORE`: create a store and its first master key, in this host's keystore
//! (`--provider local`, the default) or in a KMIP key management server (`--provider kms`).

use std::path::PathBuf;

use clap::Args;

use super::unlock::{keystore_dir, kms_config, open_keystore};
use super::{CliResult, Failure, KeyOpts};
use crate::crypto::{MasterKey, PublicKey};
use crate::keys::kms::{self, KeyLabels, KmsClient};
use crate::keys::{AuditLog, KeyEntry};
use crate::store::{self, Descriptor, FirstMaster, InitOptions, RecoveryRecord};

#[derive(Args)]
pub struct InitArgs {
    /// Directory for the new store (absent or empty)
    pub store: PathBuf,
    #[command(flatten)]
    pub keys: KeyOpts,
    /// Where the store's master key lives: "local" (this host's keystore) or "kms" (a KMIP
    /// server named by --kms-config; the key never leaves it except to unlock the store)
    #[arg(long, default_value = "local", value_parser = ["local", "kms"])]
    pub provider: String,
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
    // Fail on a non-empty directory before asking for a passphrase or calling a KMS.
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
    let opts = InitOptions {
        rsa_bits: a.rsa_bits,
        block_shift: a.block_size,
        policy: a.policy.clone(),
        copy: a.copy.clone(),
        provider: a.provider.clone(),
        kms: None,
    };
    let desc = if a.provider == "kms" {
        init_kms(&a, &opts, recovery)?
    } else {
        init_local(&a, &opts, recovery)?
    };
    println!("{}", desc.store_id);
    Ok(0)
}

/// The keystore entry that describes master-key version `rec` of `desc`.
pub fn key_entry(desc: &Descriptor, version: u32, key_id: &str, origin: &str) -> KeyEntry {
    KeyEntry {
        key_id: key_id.to_string(),
        store_id: desc.store_id.clone(),
        version,
        policy: desc.policy.clone(),
        copy: desc.copy.clone(),
        origin: origin.into(),
        created: crate::unix_now(),
    }
}

/// Seal the store's current master key to a recovery certificate (audited).
pub fn seal_recovery(
    desc: &Descriptor,
    master: &MasterKey,
    recipient: &PublicKey,
    pem: &str,
    audit: &AuditLog,
) -> Result<RecoveryRecord, String> {
    let rec = desc.current_master();
    let key = crate::keys::transport::ExportedKey {
        entry: key_entry(desc, rec.version, &rec.key_id, "created"),
        key: master.duplicate(),
    };
    let blob = crate::keys::transport::seal_to_recipient(
        &crate::keys::transport::Contents::Keys(vec![key]),
        recipient,
    )
    .map_err(|e| e.to_string())?;
    let fingerprint = recipient.fingerprint().map_err(|e| e.to_string())?;
    audit
        .record_with(
            "recovery-seal",
            Some(&rec.key_id),
            Some(&desc.store_id),
            Some(&fingerprint),
            "ok",
            None,
        )
        .map_err(|e| format!("cannot write the audit log: {e}"))?;
    Ok(RecoveryRecord {
        fingerprint,
        certificate: pem.to_string(),
        export: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, blob),
    })
}

fn init_local(
    a: &InitArgs,
    opts: &InitOptions,
    recovery: Option<(PublicKey, String)>,
) -> Result<Descriptor, Failure> {
    let ks = open_keystore(&a.keys, true)?;
    let save = Box::new(|desc: &Descriptor, master: &MasterKey| {
        let rec = desc.current_master();
        ks.add(key_entry(desc, rec.version, &rec.key_id, "created"), master)
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let seal = Box::new(|desc: &Descriptor, master: &MasterKey| match &recovery {
        Some((pk, pem)) => seal_recovery(desc, master, pk, pem, ks.audit()).map(Some),
        None => Ok(None),
    });
    Ok(store::init(
        &a.store,
        opts,
        FirstMaster::random(),
        save,
        seal,
    )?)
}

/// The KMS creates the key (pre-active), labelled with the new store's id; coffer reads it,
/// builds the store, activates the key just before the descriptor (which marks a complete
/// store) is written, and takes the key out of service again if anything fails.
fn init_kms(
    a: &InitArgs,
    opts: &InitOptions,
    recovery: Option<(PublicKey, String)>,
) -> Result<Descriptor, Failure> {
    let config = kms_config(&a.keys)?;
    let audit = kms::audit_log(&keystore_dir(&a.keys))?;
    let client = KmsClient::connect(&config)?;
    let store_id = crate::crypto::random_id();
    let labels = KeyLabels {
        store_id: hex::encode(store_id),
        version: 1,
        policy: a.policy.clone(),
        copy: a.copy.clone(),
    };
    let endpoint = config.endpoint();
    let audited = |op: &str, key_id: Option<&str>, outcome: &str, detail: &str| {
        audit
            .record(op, key_id, Some(&labels.store_id), outcome, Some(detail))
            .map_err(|e| Failure::from(format!("cannot write the audit log: {e}")))
    };
    let uid = match client.create_master(&labels) {
        Ok(uid) => uid,
        Err(e) => {
            audited("kms-create", None, &format!("failed: {e}"), &endpoint)?;
            return Err(e.into());
        }
    };
    let detail = format!("uid {uid} at {endpoint}");
    let activated = std::cell::Cell::new(false);
    let result = (|| -> Result<Descriptor, Failure> {
        let key = client.get_master(&uid)?;
        let key_id = crate::crypto::master_key_id(&key);
        audited("kms-create", Some(&key_id), "ok", &detail)?;
        let first = FirstMaster {
            store_id,
            key,
            uid: Some(uid.clone()),
        };
        let save = Box::new(|desc: &Descriptor, _master: &MasterKey| {
            client.activate(&uid).map_err(|e| e.to_string())?;
            activated.set(true);
            let rec = desc.current_master();
            audit
                .record(
                    "kms-activate",
                    Some(&rec.key_id),
                    Some(&desc.store_id),
                    "ok",
                    Some(&detail),
                )
                .map_err(|e| format!("cannot write the audit log: {e}"))
        });
        let seal = Box::new(|desc: &Descriptor, master: &MasterKey| match &recovery {
            Some((pk, pem)) => seal_recovery(desc, master, pk, pem, &audit).map(Some),
            None => Ok(None),
        });
        let mut o = opts.clone();
        o.kms = Some(endpoint.clone());
        Ok(store::init(&a.store, &o, first, save, seal)?)
    })();
    let Err(failure) = result else {
        return result;
    };
    // Nothing refers to the key: take it out of the KMS again.
    let undone = client.discard(&uid, activated.get());
    let _ = audited(
        "kms-destroy",
        None,
        if undone.is_ok() { "ok" } else { "failed" },
        &format!("{detail}: init failed"),
    );
    Err(match undone {
        Ok(()) => failure,
        Err(e) => Failure::from(format!(
            "{}; the unused KMS key {uid} could not be removed ({e}): destroy it from the KMS console",
            failure.message
        )),
    })
}
