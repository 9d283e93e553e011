//! What a key server answers when it does not answer with a key: one type, each variant with
//! its HTTP status, turned into `{"error": "..."}` at the edge (serve.rs). The heartbeat and
//! start-up use the same type for what goes wrong talking to the parent.

use crate::keys::hierarchy::client::ClientError;
use crate::keys::hierarchy::tls::TlsError;
use crate::keys::transport::TransportError;
use crate::keys::{AuditError, KeystoreError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no client certificate")]
    NoCertificate,
    #[error("unknown certificate {0}: it has no rights on this key server")]
    UnknownCertificate(String),
    #[error("certificate {peer} lacks the relay right (it asked for {requester})")]
    NoRelay { peer: String, requester: String },
    #[error("certificate {requester} (relayed by {peer}) has no rights on this key server")]
    UnknownRequester { peer: String, requester: String },
    #[error("certificate {0} lacks the {1} right")]
    LacksRight(String, &'static str),
    #[error("no such endpoint")]
    NoEndpoint,
    #[error("expected {{\"export\": base64}}")]
    NotAPush,
    #[error("{0}")]
    Unopened(#[from] TransportError),
    #[error("certificate {peer} may not push key {key_id} (store {store_id}): outside its grant")]
    PushOutsideGrant {
        peer: String,
        key_id: String,
        store_id: String,
    },
    #[error("certificate {peer} has no grant for key {key_id}")]
    NoGrant { peer: String, key_id: String },
    #[error("key {0} is not known here or up the chain")]
    NotFound(String),
    #[error("the key-server tree has a cycle through {0}")]
    Cycle(String),
    #[error("{0}")]
    Keystore(#[from] KeystoreError),
    #[error("{0}")]
    Audit(#[from] AuditError),
    /// The parent refused (its status is passed on for 403 and 409).
    #[error("{error}")]
    ParentRefused { status: u16, error: ClientError },
    #[error("{0}")]
    Parent(#[from] ClientError),
    #[error("malformed answer from the parent")]
    ParentMalformed,
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("cannot listen on {0}: {1}")]
    Listen(String, std::io::Error),
    #[error("cannot start the server: {0}")]
    Start(std::io::Error),
}

impl ApiError {
    pub fn status(&self) -> u16 {
        use ApiError::*;
        match self {
            NoCertificate => 401,
            UnknownCertificate(_) | NoRelay { .. } | UnknownRequester { .. } => 403,
            LacksRight(..) | PushOutsideGrant { .. } | NoGrant { .. } => 403,
            NoEndpoint | NotFound(_) => 404,
            NotAPush | Unopened(_) => 400,
            Cycle(_) => 409,
            Keystore(KeystoreError::Conflict(_)) => 409,
            ParentRefused { status, .. } => *status,
            Parent(_) | ParentMalformed => 502,
            Keystore(_) | Audit(_) | Tls(_) | Listen(..) | Start(_) => 500,
        }
    }

    /// The body of the answer.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self.to_string() })
    }
}
