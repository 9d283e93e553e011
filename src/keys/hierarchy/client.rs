//! A blocking HTTPS client for the key-server API, used by child servers (heartbeat pushes
//! and lookups up the chain) and by mounts (the hierarchy key provider): hyper's HTTP/1.1
//! client over tokio-rustls, on a runtime of its own for the one request, so callers stay
//! blocking. The whole exchange (connect, handshake, request, answer) has one deadline, and
//! an answer's body is read only up to `MAX_BODY`.

use std::net::ToSocketAddrs;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use super::{tls, MAX_BODY};
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
    #[error("key server {0}: {1}")]
    BadUrl(String, &'static str),
}

pub struct Response {
    pub status: u16,
    pub body: serde_json::Value,
    /// The server's certificate as seen in the handshake (DER).
    pub server_cert: Option<Vec<u8>>,
}

impl Client {
    /// `url` is https://HOST:PORT; `pin` is the server's fingerprint when known.
    pub fn new(url: &str, pin: Option<String>, timeout: Duration) -> Result<Client, ClientError> {
        let bad = |why| ClientError::BadUrl(url.to_string(), why);
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| bad("key server URLs start with https://"))?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (
                h.trim_matches(['[', ']']).to_string(),
                p.parse().map_err(|_| bad("bad port"))?,
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
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| unreachable(&e))?;
        let exchange = self.exchange(id, method, path, headers, body);
        match rt.block_on(async { tokio::time::timeout(self.timeout, exchange).await }) {
            Ok(r) => r,
            Err(_) => Err(unreachable(&format!(
                "did not answer within {}",
                humane(self.timeout)
            ))),
        }
    }

    async fn exchange(
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
        let sock = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| unreachable(&e))?;
        let (cfg, seen) = tls::client_config(id, self.pin.clone()).map_err(|e| unreachable(&e))?;
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|e| unreachable(&e))?;
        let stream = tokio_rustls::TlsConnector::from(cfg)
            .connect(name, sock)
            .await
            .map_err(|e| unreachable(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(&e))?;
        tokio::spawn(conn);
        let bytes = body
            .map(|b| serde_json::to_vec(b).unwrap_or_default())
            .unwrap_or_default();
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.host.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json");
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| unreachable(&e))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| unreachable(&e))?;
        let status = resp.status().as_u16();
        let raw = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|_| ClientError::Malformed(self.url.clone()))?
            .to_bytes();
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

/// "5 s", "500 ms": a timeout as messages say it.
fn humane(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{} ms", d.as_millis())
    }
}
