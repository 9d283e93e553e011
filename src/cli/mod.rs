//! The command line: one file per subcommand. Errors reach the user as one line on stderr.

mod backup;
mod credential;
mod daemon;
mod fsck;
mod fstab;
mod generate;
mod info;
mod init;
mod keys;
mod keyserver;
mod logging;
mod mount;
mod progress;

mod recover;
mod stats;
mod umount;
mod unlock;
mod upgrade;
mod versions;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use logging::init_logging;

const EXAMPLES: &str = "\
Examples:
  coffer init /srv/backup/store --passphrase-file /root/pass
  coffer mount /srv/backup/store /mnt/backup --passphrase-file /root/pass
  rsync -a /home/ /mnt/backup/home/            # backup
  rsync -a /mnt/backup/home/ /tmp/restore/     # restore
  coffer umount /mnt/backup
  coffer fsck /srv/backup/store --passphrase-file /root/pass
  coffer info /srv/backup/store --json

Exit codes: 0 success, 1 a check found problems, 2 a usage or operational error.";

const BACKUP_EXAMPLES: &str = "\
Examples:
  coffer backup /home /etc /srv/backup/store:hosts/web1      # makes hosts/web1/home and .../etc
  coffer backup /srv/www/ /srv/backup/store:www --delete     # the contents of /srv/www
  coffer backup --dry-run --exclude '*.tmp' --exclude-from ex.txt /srv /srv/backup/store:srv
  coffer backup --json /home /srv/backup/store:home          # one JSON summary at the end

A second run writes only what changed (size or modification time; --checksum compares
content). Files are written under a temporary name and renamed into place, so an
interrupted run never leaves half a file; run it again to finish. Owners, modes, times,
hard links, symlinks, devices, FIFOs, extended attributes, ACLs and holes are kept.
The store must not be mounted. Exit codes: 0 done, 23 some files failed (each is named on
stderr), 20 interrupted, 2 an error that stopped the run.";

const RESTORE_EXAMPLES: &str = "\
Examples:
  coffer restore /srv/backup/store:hosts/web1/etc /srv/restore     # makes /srv/restore/etc
  coffer restore /srv/backup/store:hosts/web1/etc/ /etc            # the contents, into /etc
  coffer restore --exclude '*.log' /srv/backup/store:www /tmp/www

Needs the store's key (a backup-only host cannot restore). Exit codes as for backup.";

#[derive(Parser)]
#[command(
    name = "coffer",
    version,
    about = "An encrypted backup store that you mount with FUSE",
    long_about = "coffer keeps backups encrypted at rest: every file under its own random key, \
                  file keys wrapped by batch keys, batch keys by the store's RSA key, and that \
                  by a master key held in a passphrase-protected keystore. The store directory \
                  holds only ciphertext and can be copied anywhere with rsync.",
    after_help = EXAMPLES
)]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

/// Where this host finds keys: its keystore, key servers, a KMS (the provider chain).
#[derive(Args, Clone, Debug)]
pub struct KeyOpts {
    /// Client configuration: providers, key servers, KMS, fallback [default:
    /// /etc/coffer/coffer.toml when it exists]
    #[arg(long, env = "COFFER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Keystore directory [default: /var/lib/coffer/keystore for root, else
    /// ~/.local/share/coffer/keystore]. Created on first use by `init`.
    #[arg(long, env = "COFFER_KEYSTORE", value_name = "DIR")]
    pub keystore: Option<PathBuf>,
    /// Which key providers to ask, and in what order [default: local,hierarchy,kms]
    #[arg(long, env = "COFFER_PROVIDERS", value_name = "LIST")]
    pub providers: Option<String>,
    /// A key server to ask when this keystore lacks a store's key (https://HOST:PORT); the
    /// key arrives wrapped to this keystore's certificate. Replaces the configuration's.
    #[arg(long, env = "COFFER_KEY_SERVER", value_name = "URL")]
    pub key_server: Option<String>,
    /// The key server's certificate file, or its fingerprint (SHA256:...), to pin it:
    /// required with --key-server (a key is asked only of the server it names)
    #[arg(long, env = "COFFER_KEY_SERVER_CERT", value_name = "PEM|FINGERPRINT")]
    pub key_server_cert: Option<String>,
    /// How long a key server has to answer (500ms, 5s) [default: 5s]
    #[arg(long, env = "COFFER_KEY_SERVER_TIMEOUT", value_name = "DURATION")]
    pub key_server_timeout: Option<String>,
    /// KMS provider configuration (kms.toml: host, port, CA, client certificate and key,
    /// timeout), asked for stores whose descriptor names a KMS UID [default:
    /// /etc/coffer/kms.toml]
    #[arg(long, env = "COFFER_KMS_CONFIG", value_name = "FILE")]
    pub kms_config: Option<PathBuf>,
    /// File holding the keystore passphrase (a trailing newline is ignored). Without it,
    /// coffer prompts on a terminal, and refuses when there is none.
    #[arg(long, env = "COFFER_PASSPHRASE_FILE", value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new store in an absent or empty directory, and its keys
    #[command(
        after_help = "Examples:\n  coffer init /srv/backup/store --passphrase-file /root/pass --policy daily --copy primary\n  coffer init /srv/backup/store --provider kms --kms-config /etc/coffer/kms.toml --policy daily\n\nPrints the new store's id. With --provider kms the master key is made in the KMS and\nnever stored on this host (docs/kms.md)."
    )]
    Init(init::InitArgs),
    /// Mount a store; returns once the filesystem is serving
    #[command(
        after_help = "Examples:\n  coffer mount /srv/backup/store /mnt/backup --passphrase-file /root/pass\n  coffer mount /srv/backup/store /mnt/backup --read-only --allow-other\n  mount -t fuse.coffer /srv/backup/store /mnt/backup -o passphrase_file=/root/pass,ro\n\nIn /etc/fstab (docs/admin.md; each flag is an option, with _ for -):\n  /srv/backup/store /mnt/backup fuse.coffer noauto,_netdev,passphrase_file=/root/pass 0 0\n\nStop it with `coffer umount MOUNTPOINT`, `umount MOUNTPOINT` or SIGTERM to the daemon."
    )]
    Mount(mount::MountArgs),
    /// Back up files into a store without a mount (no FUSE needed): only what changed is written
    #[command(after_help = BACKUP_EXAMPLES)]
    Backup(backup::BackupArgs),
    /// Restore files from a store without a mount
    #[command(after_help = RESTORE_EXAMPLES)]
    Restore(backup::RestoreArgs),
    /// Flush and unmount a mounted store, and wait for its daemon to exit
    #[command(after_help = "Example:\n  coffer umount /mnt/backup")]
    Umount(umount::UmountArgs),
    /// Show a running mount's counters: operations, errors, bytes, catalog commits, key unwraps
    #[command(
        after_help = "Examples:\n  coffer stats /mnt/backup\n  coffer stats /mnt/backup --json     # for monitoring\n\nAsked of the mount's daemon, as the user it runs as; counts only, no names."
    )]
    Stats(stats::StatsArgs),
    /// Check every header, block, name and catalog record of a store
    #[command(
        after_help = "Examples:\n  coffer fsck /srv/backup/store --passphrase-file /root/pass\n  coffer fsck /srv/backup/store --passphrase-file /root/pass --repair\n  coffer fsck /srv/backup/store --json        # findings and counts as one JSON object\n\nA progress bar on a terminal. Exit code 1 when problems remain. The store must not be mounted."
    )]
    Fsck(fsck::FsckArgs),
    /// Show a store's id, format, provider, key ids and sizes (never a secret)
    #[command(after_help = "Example:\n  coffer info /srv/backup/store --json")]
    Info(info::InfoArgs),
    /// Keys: certificates, export, import, list, rotation, KMS sync and locate, recovery keys
    Keys {
        #[command(subcommand)]
        cmd: keys::KeysCommand,
    },
    /// Run a key server (a node of a key-server hierarchy) in front
    #[command(
        after_help = "Examples:\n  coffer keyserver --config /etc/coffer/keyserver.toml\n  coffer keyserver --listen 127.0.0.1:7443 --keystore /var/lib/coffer/ks --passphrase-file /root/pass \\\n      --parent https://keys-top:7443 --parent-cert top.pem --hierarchy --heartbeat 60s \\\n      --grant SHA256:...=use,store:5c1e0d4a9b7f2e31c08d6a5f4b3e2d1c --grant SHA256:...=write,relay\n\nRights per client certificate: use (fetch keys to mount), read (list, export), write (push),\nrelay (ask for a client of its own; each hop authorises that client too); store:ID and\nkey:ID limit a grant to those stores or keys. --hierarchy with --parent needs --parent-cert.\n\nThe web console (tree, keys, rights, audit log, settings), with its users' logins:\n  coffer keyserver user add alice --role key-admin --config /etc/coffer/keyserver.toml\n  coffer keyserver --config /etc/coffer/keyserver.toml --console   # https://HOST:7443/console",
        args_conflicts_with_subcommands = true
    )]
    Keyserver(keyserver::KeyserverArgs),
    /// Put a store's keys back into this keystore with the organisation's recovery key
    #[command(
        after_help = "Example:\n  coffer recover /srv/backup/store --recovery-key org-recovery.key"
    )]
    Recover(recover::RecoverArgs),
    /// Upgrade a format-1 store to format 2: authenticated writers and a sealed descriptor
    #[command(
        after_help = "Example:\n  coffer upgrade /srv/backup/store --passphrase-file /root/pass\n\nNeeds the master key; the store must not be mounted. No data is re-encrypted, and it\nis safe to interrupt and run again. Upgrade the store you wrote: batches already in a\nformat-1 store are trusted as they are. Backup-only hosts need a new credential after it."
    )]
    Upgrade(upgrade::UpgradeArgs),
    /// Man pages and shell completions, from the same definitions as --help
    #[command(
        after_help = "Examples:\n  coffer generate man /usr/local/share/man/man1\n  coffer generate completions bash > /etc/bash_completion.d/coffer\n  coffer generate completions zsh > /usr/local/share/zsh/site-functions/_coffer\n  coffer generate completions fish > ~/.config/fish/completions/coffer.fish"
    )]
    Generate {
        #[command(subcommand)]
        cmd: generate::GenerateCommand,
    },
}

/// An error for the user: one line, and the exit code to leave with.
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure {
            code: 2,
            message: e.to_string(),
        }
    }
}

pub type CliResult = Result<i32, Failure>;

pub fn main() -> i32 {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let args = match fstab::helper_call(&args) {
        None => args,
        Some(Ok(mount)) => mount,
        Some(Err(f)) => {
            eprintln!("coffer: {}", f.message);
            return f.code;
        }
    };
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let result = match cli.cmd {
        Command::Init(a) => init::run(a),
        Command::Mount(a) => mount::run(a),
        Command::Backup(a) => backup::run_backup(a),
        Command::Restore(a) => backup::run_restore(a),
        Command::Umount(a) => umount::run(a),
        Command::Stats(a) => stats::run(a),
        Command::Fsck(a) => fsck::run(a),
        Command::Info(a) => info::run(a),
        Command::Keys { cmd } => keys::run(cmd),
        Command::Recover(a) => recover::run(a),
        Command::Keyserver(a) => keyserver::run(a),
        Command::Upgrade(a) => upgrade::run(a),
        Command::Generate { cmd } => generate::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(f) => {
            // One line: collapse anything multi-line that a lower layer produced.
            let msg = f.message.replace('\n', " ");
            eprintln!("coffer: {msg}");
            f.code
        }
    }
}
