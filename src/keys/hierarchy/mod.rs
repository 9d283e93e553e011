//! The hierarchy: coffer key servers arranged in a tree, as their clients see them. Owns the
//! HTTPS client of the key-server API (client.rs), TLS pinned by certificate fingerprint
//! (tls.rs), and the provider that asks a key server for a master key by id, with this host's
//! keystore certificate as its TLS identity; the key arrives wrapped to that certificate.
//! Does not own the key server itself (crate::server), which builds on these parts.

pub mod client;
pub mod tls;

use std::time::Duration;

use base64::Engine;

use crate::keys::transport::{self, Contents, ExportedKey};
use crate::keys::{HostIdentity, KeyError, KeyProvider, Lookup, Target};
use client::{Client, ClientError};

/// The largest body any key-server request or answer may have (a push of many keys is a few
/// KiB).
pub const MAX_BODY: usize = 1 << 20;

/// What is wrong with a key server's answer to a fetch.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("malformed answer")]
    Malformed,
    #[error("{0}")]
    Unopened(#[from] transport::TransportError),
}

/// The key `key_id` in a key server's answer to a fetch (`{"export": base64}`, wrapped to
/// `identity`). The key id is recomputed from the key's bytes on open: a server cannot hand
/// over a different key under this id, so an answer without it is "not here".
pub fn open_answer(
    body: &serde_json::Value,
    identity: &HostIdentity,
    key_id: &str,
) -> Result<Option<ExportedKey>, AnswerError> {
    let blob = body["export"]
        .as_str()
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .ok_or(AnswerError::Malformed)?;
    let keys =
        transport::open_with_identity(&blob, &identity.private).and_then(Contents::into_keys)?;
    Ok(keys.into_iter().find(|k| k.entry.key_id == key_id))
}

/// One key server, asked for master keys with this host's identity.
pub struct HierarchyProvider<'a> {
    client: Client,
    identity: &'a HostIdentity,
}

impl<'a> HierarchyProvider<'a> {
    /// A provider for `url`, pinned to `pin` (a certificate fingerprint).
    pub fn new(
        url: &str,
        pin: &str,
        timeout: Duration,
        identity: &'a HostIdentity,
    ) -> Result<Self, ClientError> {
        Ok(HierarchyProvider {
            client: Client::new(url, Some(pin.to_string()), timeout)?,
            identity,
        })
    }
}

impl KeyProvider for HierarchyProvider<'_> {
    fn describe(&self) -> String {
        format!("key server {}", self.client.url())
    }

    fn lookup(&self, target: &Target<'_>) -> Result<Lookup, KeyError> {
        let key_id = target.key_id;
        let fail = |message: String| KeyError::Provider {
            provider: self.describe(),
            message,
        };
        let r = self.client.request(
            Some(self.identity),
            "GET",
            &format!("/v1/keys/{key_id}"),
            &[],
            None,
        )?;
        match r.status {
            200 => Ok(open_answer(&r.body, self.identity, key_id)
                .map_err(|e| fail(e.to_string()))?
                .map(|k| Lookup::Found(k.key))
                .unwrap_or(Lookup::NotHere)),
            404 => Ok(Lookup::NotHere),
            _ => Err(self.client.refusal(&r).into()),
        }
    }
}
