//! The audit log: one JSON object per line, appended, mode 0600. It records who did which key
//! operation on which key id, and the outcome. It never holds key material.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

#[derive(Serialize)]
pub struct AuditRecord<'a> {
    pub time: u64,
    pub uid: u32,
    pub user: String,
    pub pid: u32,
    pub op: &'a str,
    pub key_id: Option<&'a str>,
    pub store_id: Option<&'a str>,
    /// Certificate fingerprint involved (an export's recipient, an import's keystore).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<&'a str>,
    pub outcome: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'a str>,
}

pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    pub fn new(path: &Path) -> Self {
        AuditLog {
            path: path.to_path_buf(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one record. A failure to audit is reported to the caller: a key operation that
    /// cannot be audited must not proceed silently.
    pub fn record(
        &self,
        op: &str,
        key_id: Option<&str>,
        store_id: Option<&str>,
        outcome: &str,
        detail: Option<&str>,
    ) -> std::io::Result<()> {
        self.record_with(op, key_id, store_id, None, outcome, detail)
    }

    pub fn record_with(
        &self,
        op: &str,
        key_id: Option<&str>,
        store_id: Option<&str>,
        fingerprint: Option<&str>,
        outcome: &str,
        detail: Option<&str>,
    ) -> std::io::Result<()> {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        let rec = AuditRecord {
            time: crate::unix_now(),
            uid,
            user: user_name(uid),
            pid: std::process::id(),
            op,
            key_id,
            store_id,
            fingerprint,
            outcome,
            detail,
        };
        let mut line = serde_json::to_vec(&rec).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)?;
        f.write_all(&line)
    }
}

fn user_name(uid: u32) -> String {
    std::env::var("SUDO_USER")
        .ok()
        .filter(|_| uid == 0)
        .map(|s| format!("root (sudo by {s})"))
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| format!("uid {uid}"))
}
