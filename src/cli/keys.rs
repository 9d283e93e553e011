//! `coffer keys ...`: this host's certificate, export and import of store keys, the key list,
//! and recovery key pairs.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde::Serialize;

use super::credential;
use super::unlock::{keystore_dir, keystore_holds, kms_master, open_keystore};
use super::{CliResult, Failure, KeyOpts};
use crate::crypto::{KdfParams, PrivateKey};
use crate::keys::transport::{self, Contents, ExportedKey, Protection, TransportError};
use crate::keys::{certificate, kms, read_passphrase, Added, AuditLog, KeyEntry, Keystore};
use crate::store::Descriptor;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Write this keystore's encryption certificate and print its fingerprint
    #[command(
        after_help = "Example (on the destination host):\n  coffer keys cert --out dest.pem\n\nSend dest.pem to the source host, and compare the fingerprint over another channel\n(phone, ticket) before anyone exports keys to it. The private key never leaves the keystore."
    )]
    Cert(CertArgs),
    /// Export a store's master keys, wrapped to a certificate or under a password
    #[command(
        after_help = "Examples:\n  coffer keys export /srv/backup/store --recipient dest.pem --out store.keys\n  coffer keys export /srv/backup/store --password-file pw --out store.keys\n\nA password export cannot be opened without its password: a lost password cannot be\nrecovered by anyone. Exporting needs the keystore's passphrase (the Read right)."
    )]
    Export(ExportArgs),
    /// Import keys from an export file into this keystore
    #[command(
        after_help = "Examples:\n  coffer keys import store.keys\n  coffer keys import store.keys --password-file pw\n\nA key already present is left as it is; a different key under the same id is refused.\nImporting needs the keystore's passphrase (the Write right)."
    )]
    Import(ImportArgs),
    /// List the keys in this keystore (no secrets)
    #[command(after_help = "Example:\n  coffer keys list --json")]
    List(ListArgs),
    /// Give a backup host a credential that writes new backups but never reads old ones
    #[command(
        name = "backup-credential",
        after_help = "Example (on the host that holds the store's keys):\n  coffer keys backup-credential /srv/backup/store --recipient backuphost.pem --out store.bcred\n\nThe credential carries the store id, its public key and its name key, wrapped to the\nbackup host's certificate; never the master key, the private key or any batch key. On the\nbackup host: `coffer keys import store.bcred`, then `coffer mount STORE MNT` mounts\nbackup-only."
    )]
    BackupCredential(credential::BackupCredentialArgs),
    /// Give a client certificate rights on a key server (edits its configuration file)
    #[command(
        after_help = "Example:\n  coffer keys grant --config /etc/coffer/keyserver.toml SHA256:9f3a... use,read,write"
    )]
    Grant(super::keyserver::GrantArgs),
    /// Make a new master-key version and re-wrap the store's private key under it
    #[command(
        after_help = "Examples:\n  coffer keys rotate /srv/backup/store --kms-config /etc/coffer/kms.toml\n  coffer keys rotate /srv/backup/store --passphrase-file /root/pass     # a local store\n\nNo byte of data changes: only the descriptor's wrap of the private key and name key.\nA kms store's old version is revoked (cessation of operation) once the new wrap is on\ndisk; it stays readable, so copies of the store made earlier still open. A local store's\nold version stays in the keystore for the same reason."
    )]
    Rotate(super::versions::RotateArgs),
    /// Adopt a newer master-key version that the KMS made by its own rotation policy
    #[command(
        after_help = "Example (daily, from a timer: docs/kms.md has the systemd units):\n  coffer keys sync /srv/backup/store --kms-config /etc/coffer/kms.toml\n\nDoes nothing when the store already uses the newest active version."
    )]
    Sync(super::versions::SyncArgs),
    /// List a store's master keys in the KMS, found by the store id they are labelled with
    #[command(
        after_help = "Example:\n  coffer keys locate --kms-config /etc/coffer/kms.toml --store-id 0d98fe818b6e10fc53ae830751cd0363"
    )]
    Locate(super::versions::LocateArgs),
    /// Make an organisation recovery key pair (keep the .key file offline)
    #[command(
        name = "recovery-key",
        after_help = "Example:\n  coffer keys recovery-key --out org-recovery\n  coffer init STORE --recovery-cert org-recovery.pem\n  coffer recover STORE --recovery-key org-recovery.key   # when every keystore is lost"
    )]
    RecoveryKey(RecoveryKeyArgs),
}

#[derive(Args)]
pub struct CertArgs {
    #[command(flatten)]
    pub keys: KeyOpts,
    /// Where to write the certificate (PEM); standard output when absent
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Args)]
pub struct ExportArgs {
    /// The store whose keys to export
    pub store: PathBuf,
    #[command(flatten)]
    pub keys: KeyOpts,
    /// Wrap the keys to this certificate (from `coffer keys cert` on the destination)
    #[arg(
        long,
        value_name = "PEM",
        conflicts_with = "password_file",
        required_unless_present = "password_file"
    )]
    pub recipient: Option<PathBuf>,
    /// Protect the file with the password in FILE instead (Argon2id). A lost password cannot
    /// be recovered.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// The export file to write (it must not exist)
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct ImportArgs {
    /// The export file
    pub file: PathBuf,
    #[command(flatten)]
    pub keys: KeyOpts,
    /// The export's password, for a password-protected file
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct ListArgs {
    /// The keystore options; listing reads no secret, so the passphrase is not asked for
    #[command(flatten)]
    pub keys: KeyOpts,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RecoveryKeyArgs {
    /// The keystore options: when this host has a keystore, the new recovery key's
    /// fingerprint is written to its audit log (no passphrase needed)
    #[command(flatten)]
    pub keys: KeyOpts,
    /// Writes PREFIX.pem (the certificate, for `init --recovery-cert`) and PREFIX.key (the
    /// private key: keep it offline; whoever holds it can read every store made with it)
    #[arg(long, value_name = "PREFIX")]
    pub out: PathBuf,
    /// RSA key size
    #[arg(long, default_value_t = 4096)]
    pub bits: usize,
}

pub fn run(cmd: KeysCommand) -> CliResult {
    match cmd {
        KeysCommand::Cert(a) => cert(a),
        KeysCommand::Export(a) => export(a),
        KeysCommand::Import(a) => import(a),
        KeysCommand::List(a) => list(a),
        KeysCommand::RecoveryKey(a) => recovery_key(a),
        KeysCommand::BackupCredential(a) => credential::backup_credential(a),
        KeysCommand::Grant(a) => super::keyserver::grant(a),
        KeysCommand::Rotate(a) => super::versions::rotate(a),
        KeysCommand::Sync(a) => super::versions::sync(a),
        KeysCommand::Locate(a) => super::versions::locate(a),
    }
}

/// Create a new file (never overwrite) with `mode` and write `bytes`.
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Failure> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Failure::from(format!(
                "{} exists; choose another name or remove it",
                path.display()
            )),
            _ => Failure::from(format!("cannot write {}: {e}", path.display())),
        })?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Failure::from(format!("cannot write {}: {e}", path.display())))
}

fn cert(a: CertArgs) -> CliResult {
    let ks = open_keystore(&a.keys, true)?;
    let id = ks.identity()?;
    match &a.out {
        Some(p) => write_new(p, id.certificate.as_bytes(), 0o644)?,
        None => print!("{}", id.certificate),
    }
    let _ = ks
        .audit()
        .record_with("cert", None, None, Some(&id.fingerprint), "ok", None);
    eprintln!("certificate fingerprint {}", id.fingerprint);
    if a.out.is_some() {
        println!("{}", id.fingerprint);
    }
    Ok(0)
}

/// The store's master keys that this keystore holds, newest first.
fn store_keys(ks: &Keystore, desc: &Descriptor) -> Result<Vec<ExportedKey>, Failure> {
    let entries = ks.entries()?;
    let mut out = Vec::new();
    let mut records: Vec<_> = desc.master_keys.iter().collect();
    records.sort_by_key(|r| std::cmp::Reverse(r.version));
    for rec in records {
        if let Some(key) = ks.get(&rec.key_id)? {
            let entry = entries
                .iter()
                .find(|e| e.key_id == rec.key_id)
                .cloned()
                .unwrap_or(KeyEntry {
                    key_id: rec.key_id.clone(),
                    store_id: desc.store_id.clone(),
                    version: rec.version,
                    policy: desc.policy.clone(),
                    copy: desc.copy.clone(),
                    origin: "created".into(),
                    created: desc.created,
                });
            out.push(ExportedKey { entry, key });
        }
    }
    if out.is_empty() {
        let current = desc.current_master();
        return Err(Failure::from(crate::keys::KeyError::NotFound {
            key_id: current.key_id.clone(),
            store_id: desc.store_id.clone(),
            tried: crate::keys::KeyProvider::describe(ks),
        }));
    }
    Ok(out)
}

fn export(a: ExportArgs) -> CliResult {
    let desc = Descriptor::load(&a.store)?;
    if a.out.exists() {
        return Err(Failure::from(format!(
            "{} exists; choose another name or remove it",
            a.out.display()
        )));
    }
    // Read the recipient first: a wrong path should not cost a passphrase prompt.
    let recipient = a.recipient.as_deref().map(certificate::read).transpose()?;
    let dir = keystore_dir(&a.keys);
    let current = desc.current_master();
    // A kms store's key comes from the KMS (its client certificate is the Read right there),
    // unless this keystore already holds it.
    let (keys, audit) = if desc.provider == "kms" && !keystore_holds(&dir, &current.key_id) {
        let key = kms_master(&desc, &a.keys)?;
        let entry = super::init::key_entry(&desc, current.version, &current.key_id, "kms");
        (vec![ExportedKey { entry, key }], kms::audit_log(&dir)?)
    } else {
        let ks = open_keystore(&a.keys, false)?;
        (store_keys(&ks, &desc)?, AuditLog::new(ks.audit().path()))
    };
    let ids: Vec<(String, String)> = keys
        .iter()
        .map(|k| (k.entry.key_id.clone(), k.entry.store_id.clone()))
        .collect();
    let contents = Contents::Keys(keys);
    let (bytes, fingerprint) = match recipient {
        Some((pk, _)) => {
            let fp = pk.fingerprint()?;
            (transport::seal_to_recipient(&contents, &pk)?, fp)
        }
        None => {
            let pw = read_passphrase(a.password_file.as_ref(), "Export password", true)?;
            (
                transport::seal_with_password(&contents, &pw, &KdfParams::default())?,
                "password".to_string(),
            )
        }
    };
    write_new(&a.out, &bytes, 0o600)?;
    for (key_id, store_id) in &ids {
        audit
            .record_with(
                "export",
                Some(key_id),
                Some(store_id),
                Some(&fingerprint),
                "ok",
                Some(&a.out.display().to_string()),
            )
            .map_err(|e| Failure::from(format!("cannot write the audit log: {e}")))?;
    }
    let how = if fingerprint == "password" {
        "under a password (a lost password cannot be recovered)".to_string()
    } else {
        format!("for certificate {fingerprint}")
    };
    println!(
        "exported {} key(s) of store {} to {} {how}",
        ids.len(),
        desc.store_id,
        a.out.display()
    );
    Ok(0)
}

fn import(a: ImportArgs) -> CliResult {
    let what = a.file.display().to_string();
    let bytes =
        std::fs::read(&a.file).map_err(|e| Failure::from(format!("cannot read {what}: {e}")))?;
    let refused = |e: TransportError| Failure::from(format!("{what}: {e}; nothing was imported"));
    let protection = transport::protection(&bytes).map_err(refused)?;
    let ks = open_keystore(&a.keys, true)?;
    let audit_refusal = |e: &TransportError, fp: Option<&str>| {
        let _ = ks
            .audit()
            .record_with("import", None, None, fp, "refused", Some(&e.to_string()));
    };
    let (keys, origin, fingerprint) = match protection {
        Protection::Password => {
            if a.password_file.is_none() && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                return Err(refused(TransportError::NeedsPassword));
            }
            let pw = read_passphrase(a.password_file.as_ref(), "Export password", false)?;
            let keys = transport::open_with_password(&bytes, &pw).map_err(|e| {
                audit_refusal(&e, None);
                refused(e)
            })?;
            (keys, "import (password)".to_string(), None)
        }
        Protection::Recipient { fingerprint } => {
            if a.password_file.is_some() {
                return Err(refused(TransportError::NeedsIdentity));
            }
            let Some(ours) = ks.identity_fingerprint()? else {
                let e = TransportError::WrongRecipient {
                    made_for: fingerprint.clone(),
                    ours: "none yet (`coffer keys cert` makes it)".into(),
                };
                audit_refusal(&e, Some(&fingerprint));
                return Err(refused(e));
            };
            if ours != fingerprint {
                let e = TransportError::WrongRecipient {
                    made_for: fingerprint.clone(),
                    ours,
                };
                audit_refusal(&e, Some(&fingerprint));
                return Err(refused(e));
            }
            let id = ks.identity()?;
            let keys = transport::open_with_identity(&bytes, &id.private).map_err(|e| {
                audit_refusal(&e, Some(&fingerprint));
                refused(e)
            })?;
            (
                keys,
                format!("import (certificate {fingerprint})"),
                Some(fingerprint),
            )
        }
    };
    match keys {
        Contents::Keys(keys) => add_keys(&ks, keys, &origin, "import", fingerprint.as_deref()),
        Contents::Credential(c) => {
            let what = ks.add_credential(&c, &origin, fingerprint.as_deref())?;
            match what {
                Added::New => println!(
                    "imported a backup credential for store {} into {}: this host can write new \
                     backups into it and never read old ones",
                    c.store_id,
                    ks.dir().display()
                ),
                Added::AlreadyPresent => {
                    println!("the backup credential for store {} is already in this keystore: nothing to do", c.store_id)
                }
            }
            Ok(0)
        }
    }
}

/// Put keys into the keystore (all or none) and say what happened to each.
pub fn add_keys(
    ks: &Keystore,
    keys: Vec<ExportedKey>,
    origin: &str,
    op: &str,
    fingerprint: Option<&str>,
) -> CliResult {
    let entries: Vec<(KeyEntry, &crate::crypto::MasterKey)> = keys
        .iter()
        .map(|k| {
            (
                KeyEntry {
                    origin: origin.to_string(),
                    created: crate::unix_now(),
                    ..k.entry.clone()
                },
                &k.key,
            )
        })
        .collect();
    let outcomes = ks.add_all(&entries, op, fingerprint)?;
    for ((entry, _), outcome) in entries.iter().zip(outcomes) {
        match outcome {
            Added::New => println!(
                "imported key {} (store {}, version {}) into {}",
                entry.key_id,
                entry.store_id,
                entry.version,
                ks.dir().display()
            ),
            Added::AlreadyPresent => println!(
                "key {} (store {}, version {}) is already in this keystore: nothing to do",
                entry.key_id, entry.store_id, entry.version
            ),
        }
    }
    Ok(0)
}

#[derive(Serialize)]
struct ListingOut {
    keystore: String,
    #[serde(flatten)]
    listing: crate::keys::Listing,
}

fn list(a: ListArgs) -> CliResult {
    let dir = keystore_dir(&a.keys);
    let l = ListingOut {
        keystore: dir.display().to_string(),
        listing: Keystore::public_listing(&dir)?,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&l)?);
        return Ok(0);
    }
    println!("keystore {}", l.keystore);
    match &l.listing.certificate_fingerprint {
        Some(f) => println!("certificate {f}"),
        None => println!("certificate: none yet (`coffer keys cert` makes one)"),
    }
    if l.listing.keys.is_empty() && l.listing.credentials.is_empty() {
        println!("no keys");
    }
    let labels = |policy: &Option<String>, copy: &Option<String>| {
        let l: Vec<String> = [
            policy.as_ref().map(|p| format!("policy {p}")),
            copy.as_ref().map(|c| format!("copy {c}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if l.is_empty() {
            String::new()
        } else {
            format!("  ({})", l.join(", "))
        }
    };
    for k in &l.listing.keys {
        println!(
            "{}  store {}  version {}  {}{}",
            k.key_id,
            k.store_id,
            k.version,
            k.origin,
            labels(&k.policy, &k.copy)
        );
    }
    for c in &l.listing.credentials {
        println!(
            "backup credential  store {}  {}{}",
            c.store_id,
            c.origin,
            labels(&c.policy, &c.copy)
        );
    }
    Ok(0)
}

fn recovery_key(a: RecoveryKeyArgs) -> CliResult {
    if ![3072, 4096].contains(&a.bits) {
        return Err(Failure::from("--bits must be 3072 or 4096"));
    }
    let pem_path = PathBuf::from(format!("{}.pem", a.out.display()));
    let key_path = PathBuf::from(format!("{}.key", a.out.display()));
    for p in [&pem_path, &key_path] {
        if p.exists() {
            return Err(Failure::from(format!(
                "{} exists; choose another name or remove it",
                p.display()
            )));
        }
    }
    let key = PrivateKey::generate(a.bits)?;
    let cert = certificate::self_signed(&key, "coffer recovery key")?;
    write_new(&key_path, key.to_pem()?.as_bytes(), 0o600)?;
    write_new(&pem_path, cert.as_bytes(), 0o644)?;
    let fp = key.public().fingerprint()?;
    let dir = keystore_dir(&a.keys);
    if Keystore::exists(&dir) {
        let detail = pem_path.display().to_string();
        let audit = crate::keys::AuditLog::new(&dir.join("audit.log"));
        let _ = audit.record_with(
            "recovery-key-create",
            None,
            None,
            Some(&fp),
            "ok",
            Some(&detail),
        );
    }
    println!("{fp}");
    eprintln!(
        "recovery certificate {} (give it to `coffer init --recovery-cert`); private key {} \
         (keep it offline: it opens every store made with this certificate)",
        pem_path.display(),
        key_path.display()
    );
    Ok(0)
}
