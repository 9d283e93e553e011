//! `coffer keys ...`: this host's certificate, export and import of store keys, the key list,
//! and recovery key pairs.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;

use super::credential;
use super::unlock::{chain, read_passphrase};
use super::{CliResult, Failure, KeyOpts};
use crate::keys::export::{self, Imported, Wrap};
use crate::keys::transport::TransportError;
use crate::keys::{certificate, Added, KeyEntry, KeyError, Keystore};

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
    /// Print what was done as one JSON object
    #[arg(long)]
    pub json: bool,
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
    /// Print what was done as one JSON object
    #[arg(long)]
    pub json: bool,
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

fn cert(a: CertArgs) -> CliResult {
    let chain = chain(&a.keys)?;
    let (pem, fingerprint) = export::certificate(&chain)?;
    match &a.out {
        Some(p) => export::write_new(p, pem.as_bytes(), 0o644)?,
        None => print!("{pem}"),
    }
    eprintln!("certificate fingerprint {fingerprint}");
    if a.out.is_some() {
        println!("{fingerprint}");
    }
    Ok(0)
}

fn export(a: ExportArgs) -> CliResult {
    export::check_new(&a.out)?;
    // Read the recipient first: a wrong path should not cost a passphrase prompt.
    let recipient = a.recipient.as_deref().map(certificate::read).transpose()?;
    let chain = chain(&a.keys)?;
    let password;
    let wrap = match &recipient {
        Some((pk, _)) => Wrap::Recipient(pk),
        None => {
            password = read_passphrase(a.password_file.as_ref(), "Export password", true)?;
            Wrap::Password(&password)
        }
    };
    let done = export::export(&chain, &a.store, wrap, &a.out)?;
    let how = match &done.recipient {
        None => "under a password (a lost password cannot be recovered)".to_string(),
        Some(fp) => format!("for certificate {fp}"),
    };
    let store_id = done.keys.first().map(|k| k.1.as_str()).unwrap_or("?");
    if a.json {
        let keys: Vec<_> = done
            .keys
            .iter()
            .map(|(k, s, v)| serde_json::json!({"key_id": k, "store_id": s, "version": v}))
            .collect();
        let out = serde_json::json!({"file": a.out, "keys": keys, "recipient": done.recipient});
        println!("{out}");
        return Ok(0);
    }
    println!(
        "exported {} key(s) of store {store_id} to {} {how}",
        done.keys.len(),
        a.out.display()
    );
    Ok(0)
}

fn import(a: ImportArgs) -> CliResult {
    let what = a.file.display().to_string();
    let bytes =
        std::fs::read(&a.file).map_err(|e| Failure::from(format!("cannot read {what}: {e}")))?;
    let chain = chain(&a.keys)?;
    let password = || {
        if a.password_file.is_none() && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
            return Err(KeyError::Transport(TransportError::NeedsPassword));
        }
        Ok(read_passphrase(
            a.password_file.as_ref(),
            "Export password",
            false,
        )?)
    };
    let refused = |e: KeyError| match e {
        KeyError::Transport(t) => Failure::from(format!("{what}: {t}; nothing was imported")),
        e => Failure::from(e),
    };
    let dir = chain.keystore_dir().display().to_string();
    let imported =
        export::import(&chain, &bytes, &password, a.password_file.is_some()).map_err(refused)?;
    if a.json {
        println!("{}", imported_json(&imported, &dir));
        return Ok(0);
    }
    match imported {
        Imported::Keys(keys) => print_added(&keys, &dir),
        Imported::Credential { store_id, added } => match added {
            Added::New => println!(
                "imported a backup credential for store {store_id} into {dir}: this host can \
                 write new backups into it and never read old ones"
            ),
            Added::AlreadyPresent => println!(
                "the backup credential for store {store_id} is already in this keystore: \
                 nothing to do"
            ),
        },
    }
    Ok(0)
}

/// Keys put into the keystore at `dir`, as `--json` prints them (import, recover).
pub fn added_json(keys: &[(KeyEntry, Added)], dir: &str) -> serde_json::Value {
    let keys: Vec<_> = keys
        .iter()
        .map(|(e, a)| {
            serde_json::json!({
                "key_id": e.key_id, "store_id": e.store_id, "version": e.version,
                "new": *a == Added::New,
            })
        })
        .collect();
    serde_json::json!({ "keystore": dir, "keys": keys })
}

/// What an import did, as `--json` prints it.
fn imported_json(i: &Imported, dir: &str) -> serde_json::Value {
    match i {
        Imported::Keys(keys) => added_json(keys, dir),
        Imported::Credential { store_id, added } => serde_json::json!({
            "keystore": dir,
            "backup_credential": {"store_id": store_id, "new": *added == Added::New},
        }),
    }
}

/// Say what happened to each key put into the keystore at `dir`.
pub fn print_added(keys: &[(KeyEntry, Added)], dir: &str) {
    for (entry, outcome) in keys {
        match outcome {
            Added::New => println!(
                "imported key {} (store {}, version {}) into {dir}",
                entry.key_id, entry.store_id, entry.version
            ),
            Added::AlreadyPresent => println!(
                "key {} (store {}, version {}) is already in this keystore: nothing to do",
                entry.key_id, entry.store_id, entry.version
            ),
        }
    }
}

#[derive(Serialize)]
struct ListingOut {
    keystore: String,
    #[serde(flatten)]
    listing: crate::keys::Listing,
}

fn list(a: ListArgs) -> CliResult {
    let dir = chain(&a.keys)?.keystore_dir().to_path_buf();
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
    let chain = chain(&a.keys)?;
    let fp = export::recovery_key(&chain, &a.out, a.bits)?;
    let (pem_path, key_path) = export::recovery_paths(&a.out);
    println!("{fp}");
    eprintln!(
        "recovery certificate {} (give it to `coffer init --recovery-cert`); private key {} \
         (keep it offline: it opens every store made with this certificate)",
        pem_path.display(),
        key_path.display()
    );
    Ok(0)
}
