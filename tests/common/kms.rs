//! The development KMS for tests (PyKMIP on loopback, tools/kms-dev.sh): the shared one that
//! tools/test.sh starts, a private one a test may stop and start, and PyKMIP's own client
//! (tools/kms-admin.py) to act on the KMS from its side.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn python() -> PathBuf {
    std::env::var_os("COFFER_TEST_KMS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("build/kms/venv/bin/python"))
}

/// The shared development KMS's kms.toml (started here when tools/test.sh did not).
pub fn shared() -> &'static Path {
    static CONFIG: OnceLock<PathBuf> = OnceLock::new();
    CONFIG.get_or_init(|| {
        if let Some(p) = std::env::var_os("COFFER_TEST_KMS_CONFIG") {
            return PathBuf::from(p);
        }
        let o = Command::new("bash")
            .arg(root().join("tools/kms-dev.sh"))
            .arg("start")
            .output()
            .expect("run tools/kms-dev.sh");
        assert!(
            o.status.success(),
            "tools/kms-dev.sh start failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let out = String::from_utf8_lossy(&o.stdout);
        PathBuf::from(out.lines().last().expect("a kms.toml path").trim())
    })
}

/// Act on a KMS from its own side, with PyKMIP's client.
pub fn admin(config: &Path, args: &[&str]) -> String {
    let o = Command::new(python())
        .arg(root().join("tools/kms-admin.py"))
        .arg(config)
        .args(args)
        .output()
        .expect("run kms-admin.py");
    assert!(
        o.status.success(),
        "kms-admin {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A KMS of the test's own, in `dir` on `port`, that it may stop and start; stopped on drop.
pub struct PrivateKms {
    dir: PathBuf,
    pub port: u16,
    pub config: PathBuf,
}

impl PrivateKms {
    pub fn start(dir: PathBuf, port: u16) -> PrivateKms {
        let mut k = PrivateKms {
            dir,
            port,
            config: PathBuf::new(),
        };
        let o = k.dev("start");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        k.config = PathBuf::from(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .last()
                .expect("a kms.toml path")
                .trim(),
        );
        k
    }

    fn dev(&self, cmd: &str) -> Output {
        Command::new("bash")
            .arg(root().join("tools/kms-dev.sh"))
            .arg(cmd)
            .env("COFFER_KMS_DIR", &self.dir)
            .env("COFFER_KMS_PORT", self.port.to_string())
            .env(
                "COFFER_KMS_VENV",
                python().parent().and_then(Path::parent).expect("venv"),
            )
            .output()
            .expect("kms-dev.sh")
    }

    pub fn stop(&self) {
        let o = self.dev("stop");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    pub fn restart(&self) {
        let o = self.dev("start");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

impl Drop for PrivateKms {
    fn drop(&mut self) {
        let _ = self.dev("stop");
    }
}

/// A port for a private KMS that differs between test processes.
pub fn private_port(offset: u16) -> u16 {
    20000 + (std::process::id() % 20000) as u16 + offset
}
