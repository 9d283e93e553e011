//! How this host resolves keys: the providers it asks and in which order, its key servers and
//! their pins, its KMS configuration, and what a mount does when no provider answers.
//!
//! Owns: `/etc/coffer/coffer.toml` (COFFER_CONFIG), the `Provider` and `Fallback` enums, and
//! the merge of command-line values over that file over the defaults. Does not own asking the
//! providers (chain.rs) or reading a passphrase (passphrase.rs).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where the client configuration is read from when no --config or COFFER_CONFIG names one.
pub const DEFAULT_PATH: &str = "/etc/coffer/coffer.toml";
/// How long a key server has to answer a lookup, unless configured otherwise.
pub const DEFAULT_KEY_SERVER_TIMEOUT: Duration = Duration::from_secs(5);

/// A source of master keys, in the chain's default order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    /// This host's passphrase-protected keystore.
    Local,
    /// The configured coffer key servers (and, through them, their tree).
    Hierarchy,
    /// A KMIP key management server, for stores whose descriptor names a KMS UID.
    Kms,
}

impl Provider {
    pub const ALL: [Provider; 3] = [Provider::Local, Provider::Hierarchy, Provider::Kms];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Local => "local",
            Provider::Hierarchy => "hierarchy",
            Provider::Kms => "kms",
        }
    }

    pub fn parse(s: &str) -> Result<Provider, ConfigError> {
        match s.trim() {
            "local" => Ok(Provider::Local),
            "hierarchy" => Ok(Provider::Hierarchy),
            "kms" => Ok(Provider::Kms),
            other => Err(ConfigError::UnknownProvider(other.to_string())),
        }
    }

    /// "local,kms": an order of providers, each at most once.
    pub fn parse_list(items: &[String]) -> Result<Vec<Provider>, ConfigError> {
        let mut out = Vec::new();
        for item in items.iter().flat_map(|s| s.split(',')) {
            let p = Provider::parse(item)?;
            if out.contains(&p) {
                return Err(ConfigError::RepeatedProvider(p.as_str()));
            }
            out.push(p);
        }
        if out.is_empty() {
            return Err(ConfigError::NoProviders);
        }
        Ok(out)
    }
}

/// What a mount does when no provider yields the master key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Fallback {
    /// Refuse, naming each provider and why it gave nothing.
    #[default]
    None,
    /// Mount backup-only with this host's backup credential for the store, if it holds one.
    BackupOnly,
}

impl Fallback {
    pub fn parse(s: &str) -> Result<Fallback, ConfigError> {
        match s.trim() {
            "none" => Ok(Fallback::None),
            "backup-only" => Ok(Fallback::BackupOnly),
            other => Err(ConfigError::UnknownFallback(other.to_string())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Parse(PathBuf, String),
    #[error("unknown key provider '{0}' (local, hierarchy, kms)")]
    UnknownProvider(String),
    #[error("key provider {0} is named twice")]
    RepeatedProvider(&'static str),
    #[error("no key provider named (local, hierarchy, kms)")]
    NoProviders,
    #[error("unknown fallback '{0}' (none, backup-only)")]
    UnknownFallback(String),
    #[error("'{0}' is not a duration (60s, 5m, 1h, 500ms)")]
    Duration(String),
    #[error(
        "key server {0} needs the server pinned: give --key-server-cert with its certificate \
         or its SHA256: fingerprint (or set COFFER_KEY_SERVER_CERT, or `cert` in the \
         configuration's [[key_servers]] entry)"
    )]
    Unpinned(String),
    #[error("key server certificate {0}: {1}")]
    Pin(String, String),
}

/// One key server this host asks, as the configuration names it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyServerEntry {
    pub url: String,
    /// Its certificate file, or its SHA256: fingerprint.
    pub cert: Option<String>,
}

/// The configuration file, every field optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub keystore: Option<PathBuf>,
    pub passphrase_file: Option<PathBuf>,
    pub providers: Option<Vec<String>>,
    pub fallback: Option<String>,
    pub kms_config: Option<PathBuf>,
    pub key_server_timeout: Option<String>,
    #[serde(default)]
    pub key_servers: Vec<KeyServerEntry>,
}

impl FileConfig {
    /// Read `path`; an absent file at the default path is an empty configuration, an absent
    /// file that was named explicitly is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<FileConfig, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(FileConfig::default())
            }
            Err(e) => return Err(ConfigError::Read(path.to_path_buf(), e)),
        };
        toml::from_str(&text)
            .map_err(|e| ConfigError::Parse(path.to_path_buf(), e.message().into()))
    }
}

/// What the command line says about keys (each None when not given). The binary fills this
/// from flags and environment variables; the library merges it over the file.
#[derive(Clone, Debug, Default)]
pub struct KeyFlags {
    pub config: Option<PathBuf>,
    pub keystore: Option<PathBuf>,
    pub passphrase_file: Option<PathBuf>,
    pub providers: Option<Vec<String>>,
    pub key_server: Option<String>,
    pub key_server_cert: Option<String>,
    pub key_server_timeout: Option<String>,
    pub kms_config: Option<PathBuf>,
    pub fallback: Option<String>,
}

/// A key server to ask, pinned to its certificate's fingerprint.
#[derive(Clone, Debug)]
pub struct KeyServerSpec {
    pub url: String,
    pub pin: String,
}

/// Everything the provider chain needs to know, merged and checked.
#[derive(Clone, Debug)]
pub struct ChainSettings {
    pub keystore_dir: PathBuf,
    pub passphrase_file: Option<PathBuf>,
    pub providers: Vec<Provider>,
    pub key_servers: Vec<KeyServerSpec>,
    pub key_server_timeout: Duration,
    pub kms_config: PathBuf,
    pub fallback: Fallback,
}

impl ChainSettings {
    /// Flags over the configuration file over the defaults. A key server given on the command
    /// line replaces those of the file.
    pub fn resolve(flags: &KeyFlags) -> Result<ChainSettings, ConfigError> {
        let file = match &flags.config {
            Some(p) => FileConfig::load(p, true)?,
            None => FileConfig::load(Path::new(DEFAULT_PATH), false)?,
        };
        let providers = match flags.providers.as_ref().or(file.providers.as_ref()) {
            Some(list) => Provider::parse_list(list)?,
            None => Provider::ALL.to_vec(),
        };
        let fallback = match flags.fallback.as_deref().or(file.fallback.as_deref()) {
            Some(f) => Fallback::parse(f)?,
            None => Fallback::None,
        };
        let timeout = match flags
            .key_server_timeout
            .as_deref()
            .or(file.key_server_timeout.as_deref())
        {
            Some(t) => parse_duration(t)?,
            None => DEFAULT_KEY_SERVER_TIMEOUT,
        };
        let entries = match &flags.key_server {
            Some(url) => vec![KeyServerEntry {
                url: url.clone(),
                cert: flags.key_server_cert.clone(),
            }],
            None => file.key_servers.clone(),
        };
        let key_servers = entries
            .into_iter()
            .map(|e| {
                let cert = e.cert.ok_or_else(|| ConfigError::Unpinned(e.url.clone()))?;
                let pin = super::certificate::pin_of(&cert)
                    .map_err(|err| ConfigError::Pin(cert.clone(), err.to_string()))?;
                Ok(KeyServerSpec { url: e.url, pin })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(ChainSettings {
            keystore_dir: flags
                .keystore
                .clone()
                .or(file.keystore)
                .unwrap_or_else(super::Keystore::default_dir),
            passphrase_file: flags.passphrase_file.clone().or(file.passphrase_file),
            providers,
            key_servers,
            key_server_timeout: timeout,
            kms_config: flags
                .kms_config
                .clone()
                .or(file.kms_config)
                .unwrap_or_else(|| PathBuf::from(super::kms::DEFAULT_PATH)),
            fallback,
        })
    }

    pub fn asks(&self, p: Provider) -> bool {
        self.providers.contains(&p)
    }
}

/// "60s", "5m", "1h", "500ms" or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, ConfigError> {
    let t = s.trim();
    let bad = || ConfigError::Duration(s.to_string());
    let (num, unit) = t
        .find(|c: char| !c.is_ascii_digit())
        .map(|i| t.split_at(i))
        .unwrap_or((t, "s"));
    let n: u64 = num.parse().map_err(|_| bad())?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" | "" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(bad()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_durations_and_fallbacks_parse() {
        let l = Provider::parse_list(&["kms, local".into()]).expect("list");
        assert_eq!(l, vec![Provider::Kms, Provider::Local]);
        assert!(matches!(
            Provider::parse_list(&["local,local".into()]),
            Err(ConfigError::RepeatedProvider("local"))
        ));
        assert!(matches!(
            Provider::parse_list(&["ldap".into()]),
            Err(ConfigError::UnknownProvider(_))
        ));
        assert!(matches!(
            Provider::parse_list(&[]),
            Err(ConfigError::NoProviders)
        ));
        assert_eq!(
            Fallback::parse("backup-only").expect("f"),
            Fallback::BackupOnly
        );
        assert!(Fallback::parse("read-only").is_err());
        assert_eq!(
            parse_duration("500ms").expect("ms"),
            Duration::from_millis(500)
        );
        assert_eq!(parse_duration("2m").expect("m"), Duration::from_secs(120));
        assert!(parse_duration("5y").is_err());
    }

    #[test]
    fn flags_override_the_file_and_a_key_server_needs_a_pin() {
        let d = tempfile::tempdir().expect("tempdir");
        let cfg = d.path().join("coffer.toml");
        std::fs::write(
            &cfg,
            "providers = [\"hierarchy\", \"local\"]\nfallback = \"backup-only\"\n\
             key_server_timeout = \"1s\"\n[[key_servers]]\nurl = \"https://a:7443\"\n\
             cert = \"SHA256:aa\"\n[[key_servers]]\nurl = \"https://b:7443\"\ncert = \"SHA256:bb\"\n",
        )
        .expect("write");
        let mut flags = KeyFlags {
            config: Some(cfg.clone()),
            ..KeyFlags::default()
        };
        let s = ChainSettings::resolve(&flags).expect("settings");
        assert_eq!(s.providers, vec![Provider::Hierarchy, Provider::Local]);
        assert_eq!(s.fallback, Fallback::BackupOnly);
        assert_eq!(s.key_server_timeout, Duration::from_secs(1));
        assert_eq!(s.key_servers.len(), 2);
        assert_eq!(s.key_servers[1].pin, "SHA256:bb");
        flags.providers = Some(vec!["local".into()]);
        flags.key_server = Some("https://c:7443".into());
        let e = ChainSettings::resolve(&flags).expect_err("unpinned");
        assert!(
            matches!(e, ConfigError::Unpinned(ref u) if u == "https://c:7443"),
            "{e}"
        );
        flags.key_server_cert = Some("SHA256:cc".into());
        let s = ChainSettings::resolve(&flags).expect("settings");
        assert_eq!(s.providers, vec![Provider::Local]);
        assert_eq!(s.key_servers.len(), 1);
        // A named file that is missing is an error; the default path may be absent.
        flags.config = Some(d.path().join("absent.toml"));
        assert!(matches!(
            ChainSettings::resolve(&flags),
            Err(ConfigError::Read(..))
        ));
        std::fs::write(&cfg, "providerz = []\n").expect("write");
        flags.config = Some(cfg);
        assert!(matches!(
            ChainSettings::resolve(&flags),
            Err(ConfigError::Parse(..))
        ));
    }
}
