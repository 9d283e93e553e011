//! The audit log: one JSON object per line, appended, mode 0600. It records who did which key
//! operation on which key id, and the outcome. It never holds key material.
//!
//! The one policy for a log that cannot be written (a full disk, a read-only filesystem, a
//! path that is not a file):
//! - **A key operation that releases, creates, stores or changes key material goes ahead only
//!   once its record is written** ([`AuditLog::record`]). A key is handed out (to a mount, an
//!   export file, a key-server client) only after the record; an action that cannot be taken
//!   back once done (a KMS revocation) is recorded after it, and its command then fails,
//!   saying the action was done but not audited.
//! - **A refusal or a failure is recorded as well as it can be** ([`AuditLog::refusal`]):
//!   nothing was released, so an unwritable log cannot let anything through; the refusal
//!   reaches the caller either way, and a record that cannot be written goes to the process's
//!   own log (stderr, or the mount's or key server's log file) instead.

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
    /// The web console user who made the change (key server console).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<&'a str>,
}

#[derive(Clone)]
pub struct AuditLog {
    path: PathBuf,
}

/// The audit log could not be written, so the key operation was not done.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the audit log {}: {source}; the key operation was not done", path.display())]
pub struct AuditError {
    pub path: PathBuf,
    pub source: std::io::Error,
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

    /// Append the record of a key operation that goes ahead only once it is written.
    pub fn record(
        &self,
        op: &str,
        key_id: Option<&str>,
        store_id: Option<&str>,
        outcome: &str,
        detail: Option<&str>,
    ) -> Result<(), AuditError> {
        self.record_with(op, key_id, store_id, None, outcome, detail)
    }

    /// The same, naming a certificate fingerprint (an export's recipient, an import's source).
    pub fn record_with(
        &self,
        op: &str,
        key_id: Option<&str>,
        store_id: Option<&str>,
        fingerprint: Option<&str>,
        outcome: &str,
        detail: Option<&str>,
    ) -> Result<(), AuditError> {
        let rec = self.record_of(op, key_id, store_id, fingerprint, outcome, detail);
        self.append(&rec).map_err(|source| AuditError {
            path: self.path.clone(),
            source,
        })
    }

    /// Record a refusal or a failure: nothing was released, so a log that cannot be written
    /// is reported to the process's own log and the caller goes on returning its refusal.
    pub fn refusal(
        &self,
        op: &str,
        key_id: Option<&str>,
        store_id: Option<&str>,
        fingerprint: Option<&str>,
        outcome: &str,
        detail: Option<&str>,
    ) {
        if let Err(e) = self.record_with(op, key_id, store_id, fingerprint, outcome, detail) {
            tracing::error!("{op} {outcome}: {e}");
        }
    }

    /// Record what a web console user did (or tried to do), naming the user. A change goes
    /// ahead only once this is written, as for any key operation.
    pub fn record_by(
        &self,
        actor: Option<&str>,
        op: &str,
        fingerprint: Option<&str>,
        outcome: &str,
        detail: Option<&str>,
    ) -> Result<(), AuditError> {
        let mut rec = self.record_of(op, None, None, fingerprint, outcome, detail);
        rec.actor = actor;
        self.append(&rec).map_err(|source| AuditError {
            path: self.path.clone(),
            source,
        })
    }

    fn record_of<'a>(
        &self,
        op: &'a str,
        key_id: Option<&'a str>,
        store_id: Option<&'a str>,
        fingerprint: Option<&'a str>,
        outcome: &'a str,
        detail: Option<&'a str>,
    ) -> AuditRecord<'a> {
        // SAFETY: getuid has no preconditions and cannot fail.
        let uid = unsafe { libc::getuid() };
        AuditRecord {
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
            actor: None,
        }
    }

    fn append(&self, rec: &AuditRecord<'_>) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
        line.push(b'\n');
        // Never through a symlink, and never into anything but a regular file.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&self.path)?;
        if !f.metadata()?.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
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
