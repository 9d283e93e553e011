//! `kms.toml`: where the KMIP server is and which certificates this host talks to it with.
//! Relative paths are taken from the file's own directory, so a configuration and its
//! certificates can move together.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::KmsError;

/// Where `--kms-config` points when neither it nor COFFER_KMS_CONFIG is given.
pub const DEFAULT_PATH: &str = "/etc/coffer/kms.toml";
const DEFAULT_PORT: u16 = 5696;
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    host: String,
    #[serde(default)]
    port: Option<u16>,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// "10s", "500ms", "2m", or a number of seconds.
    #[serde(default)]
    timeout: Option<toml::Value>,
    /// The name the server's certificate is checked against, when not `host`.
    #[serde(default)]
    server_name: Option<String>,
}

#[derive(Clone, Debug)]
pub struct KmsConfig {
    pub path: PathBuf,
    pub host: String,
    pub port: u16,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub timeout: Duration,
    pub server_name: Option<String>,
}

impl KmsConfig {
    pub fn load(path: &Path) -> Result<KmsConfig, KmsError> {
        let bad = |detail: String| KmsError::Config {
            path: path.display().to_string(),
            detail,
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            match e.kind() {
            std::io::ErrorKind::NotFound => bad(
                "no such file (give --kms-config or COFFER_KMS_CONFIG; tools/kms-dev.sh writes one)"
                    .into(),
            ),
            _ => bad(e.to_string()),
        }
        })?;
        Self::parse(path, &text).map_err(bad)
    }

    pub(crate) fn parse(path: &Path, text: &str) -> Result<KmsConfig, String> {
        let raw: Raw = toml::from_str(text).map_err(|e| e.message().to_string())?;
        if raw.host.trim().is_empty() {
            return Err("host is empty".into());
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let abs = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let timeout = match raw.timeout {
            None => DEFAULT_TIMEOUT,
            Some(toml::Value::Integer(n)) if n > 0 => Duration::from_secs(n as u64),
            Some(toml::Value::String(s)) => {
                crate::keys::parse_duration(&s).map_err(|e| format!("timeout: {e}"))?
            }
            Some(_) => return Err("timeout must be like \"10s\" or a number of seconds".into()),
        };
        if timeout.is_zero() {
            return Err("timeout must be more than zero".into());
        }
        Ok(KmsConfig {
            path: path.to_path_buf(),
            host: raw.host.trim().to_string(),
            port: raw.port.unwrap_or(DEFAULT_PORT),
            ca: abs(raw.ca),
            cert: abs(raw.cert),
            key: abs(raw.key),
            timeout,
            server_name: raw.server_name,
        })
    }

    /// "host:port", for messages and the descriptor.
    pub fn endpoint(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_relative_paths() {
        let c = KmsConfig::parse(
            Path::new("/etc/coffer/kms.toml"),
            "host = \"kms.example\"\nca = \"ca.pem\"\ncert = \"/x/c.pem\"\nkey = \"c.key\"\n",
        )
        .unwrap();
        assert_eq!(c.port, 5696);
        assert_eq!(c.timeout, Duration::from_secs(10));
        assert_eq!(c.ca, Path::new("/etc/coffer/ca.pem"));
        assert_eq!(c.cert, Path::new("/x/c.pem"));
        assert_eq!(c.endpoint(), "kms.example:5696");
    }

    #[test]
    fn timeouts_and_mistakes() {
        let p = Path::new("k.toml");
        let base = "host = \"h\"\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n";
        let t = |extra: &str| KmsConfig::parse(p, &format!("{base}{extra}"));
        assert_eq!(
            t("timeout = \"500ms\"").unwrap().timeout,
            Duration::from_millis(500)
        );
        assert_eq!(t("timeout = 3").unwrap().timeout, Duration::from_secs(3));
        assert!(t("timeout = true").is_err());
        assert!(t("timeout = 0").is_err());
        let e = t("hots = \"typo\"").err().unwrap();
        assert!(e.contains("hots"), "{e}");
        assert!(KmsConfig::parse(p, "host = \"h\"\n").is_err());
    }
}
