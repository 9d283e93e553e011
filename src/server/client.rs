//! A blocking HTTPS client for the key-server API, used by child servers (heartbeat pushes
//! and lookups up the chain) and by mounts (the hierarchy key provider). No async runtime.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::{http, tls};
use crate::crypto::PublicKey;
use crate::keys::HostIdentity;

pub struct Client {
    url: String,
    host: String,
    port: u16,
    pin: Option<String>,
    timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("key server {0} is unreachable: {1}")]
    Unreachable(String, String),
    #[error("key server {0}: {1}")]
    Refused(String, String),
    #[error("key server {0} gave a malformed answer")]
    Malformed(String),
}

pub struct Response {
    pub status: u16,
    pub body: serde_json::Value,
    /// The server's certificate as seen in the handshake (DER).
    pub server_cert: Option<Vec<u8>>,
}

impl Client {
    /// `url` is https://HOST:PORT; `pin` is the server's fingerprint when known.
    pub fn new(url: &str, pin: Option<String>, timeout: Duration) -> Result<Client, String> {
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| format!("{url}: key server URLs start with https://"))?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h.trim_matches(['[', ']']).to_string(),
                p.parse().map_err(|_| format!("{url}: bad port"))?,
            ),
            None => (rest.to_string(), 7443),
        };
        Ok(Client {
            url: url.trim_end_matches('/').to_string(),
            host,
            port,
            pin,
            timeout,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn request(
        &self,
        id: Option<&HostIdentity>,
        method: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<Response, ClientError> {
        let unreachable =
            |e: &dyn std::fmt::Display| ClientError::Unreachable(self.url.clone(), e.to_string());
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| unreachable(&e))?
            .next()
            .ok_or_else(|| unreachable(&"no address"))?;
        let sock = TcpStream::connect_timeout(&addr, self.timeout).map_err(|e| unreachable(&e))?;
        sock.set_read_timeout(Some(self.timeout))
            .map_err(|e| unreachable(&e))?;
        sock.set_write_timeout(Some(self.timeout))
            .map_err(|e| unreachable(&e))?;
        let (cfg, seen) = tls::client_config(id, self.pin.clone()).map_err(|e| unreachable(&e))?;
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| unreachable(&e))?;
        let conn = rustls::ClientConnection::new(cfg, name).map_err(|e| unreachable(&e))?;
        let mut stream = rustls::StreamOwned::new(conn, sock);
        let body = body
            .map(|b| serde_json::to_vec(b).unwrap_or_default())
            .unwrap_or_default();
        http::write_request(&mut stream, method, &self.host, path, headers, &body)
            .map_err(|e| unreachable(&e))?;
        let (status, raw) = http::read_response(&mut stream).map_err(|e| unreachable(&e))?;
        let body =
            serde_json::from_slice(&raw).map_err(|_| ClientError::Malformed(self.url.clone()))?;
        let server_cert = seen.lock().ok().and_then(|s| s.clone());
        Ok(Response {
            status,
            body,
            server_cert,
        })
    }

    /// The error text a server sent, for a refusal.
    pub fn refusal(&self, r: &Response) -> ClientError {
        let msg = r
            .body
            .get("error")
            .and_then(|e| e.as_str())
            .unwrap_or("refused")
            .to_string();
        ClientError::Refused(self.url.clone(), msg)
    }
}

/// The public key of a certificate seen in a handshake.
pub fn seen_key(r: &Response) -> Option<PublicKey> {
    r.server_cert
        .as_deref()
        .and_then(|d| tls::cert_key(d).ok())
        .map(|(k, _)| k)
}
