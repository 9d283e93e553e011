//! The hierarchy key provider: asks a key server for a master key by id, with this host's
//! keystore certificate as its TLS identity; the key arrives wrapped to that certificate.

use std::time::Duration;

use base64::Engine;

use super::client::Client;
use crate::keys::transport::{self, Contents};
use crate::keys::{HostIdentity, KeyError, KeyProvider, Lookup};

pub struct HierarchyProvider {
    client: Client,
    identity: HostIdentity,
}

/// How long a mount waits for a key server.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

impl HierarchyProvider {
    pub fn new(url: &str, pin: Option<String>, identity: HostIdentity) -> Result<Self, String> {
        Ok(HierarchyProvider {
            client: Client::new(url, pin, DEFAULT_TIMEOUT)?,
            identity,
        })
    }
}

impl KeyProvider for HierarchyProvider {
    fn describe(&self) -> String {
        format!("key server {}", self.client.url())
    }

    fn lookup(&self, key_id: &str) -> Result<Lookup, KeyError> {
        let fail = |message: String| KeyError::Provider {
            provider: self.describe(),
            message,
        };
        let r = self
            .client
            .request(
                Some(&self.identity),
                "GET",
                &format!("/v1/keys/{key_id}"),
                &[],
                None,
            )
            .map_err(|e| fail(e.to_string()))?;
        match r.status {
            200 => {
                let blob = r.body["export"]
                    .as_str()
                    .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                    .ok_or_else(|| fail("malformed answer".into()))?;
                let keys = transport::open_with_identity(&blob, &self.identity.private)
                    .and_then(Contents::into_keys)
                    .map_err(|e| fail(e.to_string()))?;
                // The key id is recomputed from the key's bytes on open: a server cannot hand
                // over a different key under this id.
                Ok(keys
                    .into_iter()
                    .find(|k| k.entry.key_id == key_id)
                    .map(|k| Lookup::Found(k.key))
                    .unwrap_or(Lookup::NotHere))
            }
            404 => Ok(Lookup::NotHere),
            _ => Err(fail(self.client.refusal(&r).to_string())),
        }
    }
}
