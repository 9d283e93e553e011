//! `coffer keyserver`: run a key server (hierarchy node) in front; `coffer keys grant` edits
//! its configuration.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};

use super::unlock::read_passphrase;
use super::{init_logging, CliResult, Failure};
use crate::keys::{AuditLog, Keystore};
use crate::server::{self, console_auth, Config, KeyServer, Rights, Settings};

#[derive(Args)]
pub struct KeyserverArgs {
    /// Configuration file (TOML); flags override it
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 0.0.0.0:7443]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// This server's keystore (its certificate is the server's TLS identity)
    #[arg(long, value_name = "DIR")]
    pub keystore: Option<PathBuf>,
    /// The keystore's passphrase file
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// The parent key server, https://HOST:PORT
    #[arg(long, value_name = "URL")]
    pub parent: Option<String>,
    /// The parent's certificate (pins its fingerprint)
    #[arg(long, value_name = "PEM")]
    pub parent_cert: Option<PathBuf>,
    /// Take part in the hierarchy: push keys up at each heartbeat, ask the parent on a miss.
    /// Off (a server in a DMZ): no pushes and no upward lookups.
    #[arg(long)]
    pub hierarchy: bool,
    /// Time between heartbeats [default: 60s]
    #[arg(long, value_name = "DURATION")]
    pub heartbeat: Option<String>,
    /// How long to wait for the parent [default: 5s]
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Rights for a client: CERT=RIGHTS, CERT a fingerprint (SHA256:...) or a certificate
    /// file, RIGHTS a comma list of use, read, write, relay and the stores or keys they are
    /// limited to (store:ID, key:ID; none: every store). Repeatable.
    #[arg(long, value_name = "CERT=RIGHTS")]
    pub grant: Vec<String>,
    /// Audit log (JSON lines) [default: audit.log in the keystore]
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Serve the web console at https://ADDR/console (or `console = true` in the
    /// configuration); its users come from `coffer keyserver user add`
    #[arg(long)]
    pub console: bool,
    #[command(subcommand)]
    pub cmd: Option<KeyserverCommand>,
}

#[derive(Subcommand)]
pub enum KeyserverCommand {
    /// The web console's users, kept in the server's configuration
    User {
        #[command(subcommand)]
        cmd: UserCommand,
    },
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Add a console user, or give one a new passphrase or role; the passphrase is kept only
    /// as an Argon2id hash
    #[command(
        after_help = "Examples:\n  coffer keyserver user add alice --role key-admin --config /etc/coffer/keyserver.toml\n  coffer keyserver user add audit --role viewer --config keyserver.toml --passphrase-file p\n\nRoles: viewer (sees the tree, keys, rights and audit log), key-admin (also grants and\nrevokes rights and sets the hierarchy options)."
    )]
    Add(UserAddArgs),
    /// The console users and their roles (never their passphrases)
    #[command(
        after_help = "Example:\n  coffer keyserver user list --config /etc/coffer/keyserver.toml"
    )]
    List {
        /// The key server's configuration file
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// One JSON array of {name, role} on stdout
        #[arg(long)]
        json: bool,
    },
    /// Take a console user out: no login from then on (a session already open runs until it
    /// expires or the key server restarts)
    #[command(
        after_help = "Example:\n  coffer keyserver user remove alice --config /etc/coffer/keyserver.toml"
    )]
    Remove {
        /// The user name
        name: String,
        /// The key server's configuration file
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Args)]
pub struct UserAddArgs {
    /// The user name: letters, digits, '.', '_' or '-'
    pub name: String,
    /// viewer or key-admin
    #[arg(long)]
    pub role: String,
    /// The key server's configuration file (created if missing)
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// A file holding the user's passphrase (at least 12 characters); without it, coffer asks
    /// twice on the terminal
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

/// `coffer keyserver user add|list|remove`.
fn user(cmd: KeyserverCommand) -> CliResult {
    let KeyserverCommand::User { cmd } = cmd;
    match cmd {
        UserCommand::Add(a) => user_add(a),
        UserCommand::List { config, json } => {
            let cfg = Config::load(&config)?;
            let users: Vec<_> = (cfg.console_users.iter())
                .map(|(n, u)| serde_json::json!({ "name": n, "role": u.role }))
                .collect();
            match json {
                true => println!("{}", serde_json::Value::Array(users)),
                false => {
                    for (n, u) in &cfg.console_users {
                        println!(
                            "{n}\t{}",
                            serde_json::to_value(u.role)?.as_str().unwrap_or("")
                        );
                    }
                }
            }
            Ok(0)
        }
        UserCommand::Remove { name, config } => {
            let mut cfg = Config::load(&config)?;
            if cfg.console_users.remove(&name).is_none() {
                return Err(Failure::from(format!(
                    "no console user {name} in {}",
                    config.display()
                )));
            }
            cfg.save(&config)?;
            println!("removed console user {name} from {}", config.display());
            Ok(0)
        }
    }
}

/// `coffer keyserver user add`: hash the passphrase, put the user in the configuration.
fn user_add(a: UserAddArgs) -> CliResult {
    console_auth::check_name(&a.name)?;
    let role: console_auth::Role = a.role.parse()?;
    let mut cfg = match a.config.exists() {
        true => Config::load(&a.config)?,
        false => Config::default(),
    };
    let pass = read_passphrase(a.passphrase_file.as_ref(), "Console passphrase", true)?;
    let record = console_auth::new_user(role, &pass)?;
    let replaced = cfg.console_users.insert(a.name.clone(), record).is_some();
    cfg.save(&a.config)?;
    let what = if replaced { "updated" } else { "added" };
    println!(
        "{what} console user {} ({}) in {}",
        a.name,
        a.role,
        a.config.display()
    );
    Ok(0)
}

#[derive(Args)]
pub struct GrantArgs {
    /// The key server's configuration file (created if missing)
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The client: a fingerprint as `coffer keys cert` prints it, or its certificate file
    pub cert: String,
    /// Rights: a comma list of use, read, write, relay, and store:ID or key:ID to limit them
    /// to named stores or keys (the normal form: without one, the grant reaches every store)
    pub rights: String,
}

pub fn grant(a: GrantArgs) -> CliResult {
    let mut cfg = if a.config.exists() {
        Config::load(&a.config)?
    } else {
        Config::default()
    };
    let fp = server::grant_fingerprint(&a.cert)?;
    let rights: Vec<String> = a
        .rights
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let parsed = Rights::parse(&rights)?;
    cfg.grants.insert(fp.clone(), rights.clone());
    cfg.save(&a.config)?;
    println!(
        "granted {} to {fp} in {}",
        rights.join(","),
        a.config.display()
    );
    if !parsed.scoped() && (parsed.use_ || parsed.read) {
        eprintln!(
            "coffer: note: this grant reaches every store on the server; limit it with \
             store:ID (coffer info STORE prints the id)"
        );
    }
    Ok(0)
}

/// The key server's settings: flags over its configuration file.
fn settings(a: &KeyserverArgs) -> Result<(Settings, String), Failure> {
    let file = match &a.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    let keystore = a
        .keystore
        .clone()
        .or(file.keystore.clone())
        .unwrap_or_else(Keystore::default_dir);
    let pass_file = a.passphrase_file.clone().or(file.passphrase_file.clone());
    let pass = read_passphrase(
        pass_file.as_ref(),
        "Keystore passphrase",
        !Keystore::exists(&keystore),
    )?;
    let ks = Keystore::open_or_create(&keystore, &pass)?;
    let mut grants = HashMap::new();
    for (cert, rights) in &file.grants {
        grants.insert(server::grant_fingerprint(cert)?, Rights::parse(rights)?);
    }
    for g in &a.grant {
        let (cert, rights) = g
            .split_once('=')
            .ok_or_else(|| Failure::from(format!("--grant {g}: expected CERT=use,read,write")))?;
        grants.insert(
            server::grant_fingerprint(cert)?,
            Rights::parse(&[rights.to_string()])?,
        );
    }
    let duration = |flag: &Option<String>, conf: &Option<String>, default: &str| {
        server::parse_duration(flag.as_deref().or(conf.as_deref()).unwrap_or(default))
    };
    let timeout = duration(&a.timeout, &file.timeout, "5s")?;
    let heartbeat = duration(&a.heartbeat, &file.heartbeat, "60s")?;
    let parent_key = a
        .parent_cert
        .clone()
        .or(file.parent_cert.clone())
        .as_deref()
        .map(crate::keys::certificate::read)
        .transpose()?
        .map(|(k, _)| k);
    let listen = a
        .listen
        .clone()
        .or(file.listen.clone())
        .unwrap_or_else(|| "0.0.0.0:7443".into());
    let audit = AuditLog::new(
        &a.audit_log
            .clone()
            .or(file.audit_log.clone())
            .unwrap_or_else(|| keystore.join("audit.log")),
    );
    let names = file
        .grant_names
        .iter()
        .map(|(k, v)| Ok((server::grant_fingerprint(k)?, v.clone())))
        .collect::<Result<HashMap<_, _>, server::ConfigError>>()?;
    let set = Settings {
        ks,
        grants,
        parent: a.parent.clone().or(file.parent.clone()),
        parent_key,
        hierarchy: a.hierarchy || file.hierarchy,
        heartbeat,
        timeout,
        audit,
        names,
        config: a.config.clone(),
        console: (a.console || file.console).then(|| file.console_users.clone()),
    };
    Ok((set, listen))
}

pub fn run(mut a: KeyserverArgs) -> CliResult {
    if let Some(cmd) = a.cmd.take() {
        return user(cmd);
    }
    init_logging(None, "info")?;
    let (set, listen) = settings(&a)?;
    let (n_grants, parent, hierarchy) = (set.grants.len(), set.parent.clone(), set.hierarchy);
    let console = match &set.console {
        Some(users) if users.is_empty() => {
            ", console on at /console (no user yet: add one with coffer keyserver user add)"
        }
        Some(_) => ", console on at /console",
        None => "",
    };
    let srv = Arc::new(KeyServer::new(set)?);
    eprintln!(
        "coffer keyserver on {listen}, certificate {}, {n_grants} grant(s), parent {}, hierarchy {}{console}",
        srv.fingerprint(),
        parent.as_deref().unwrap_or("none"),
        if hierarchy { "on" } else { "off" }
    );
    server::serve(srv, &listen)?;
    Ok(0)
}
