//! A key-server request as the API logic sees it, once hyper has parsed it, and the pure
//! parsing of the parts coffer itself reads (the Via list, a push's body). Nothing here
//! touches a socket, so it is what the keyserver_http fuzz target drives, behind hyper.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

pub use crate::keys::hierarchy::MAX_BODY;

pub struct Request {
    pub method: String,
    pub path: String,
    /// The query string, without its '?' (empty when there is none).
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The client's address, when the request came over the network.
    pub peer_addr: Option<String>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The method, path and headers of a hyper request (headers that are not text are
    /// dropped: coffer reads none such); the body comes later, once the request is admitted.
    pub fn head_of<B>(req: &hyper::Request<B>) -> Request {
        Request {
            method: req.method().as_str().to_string(),
            path: req.uri().path().to_string(),
            query: req.uri().query().unwrap_or_default().to_string(),
            headers: req
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect(),
            body: Vec::new(),
            peer_addr: None,
        }
    }
}

/// The fingerprints an `X-Coffer-Via` header lists.
pub fn via_list(v: Option<&str>) -> Vec<String> {
    v.map(|v| {
        v.split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    })
    .unwrap_or_default()
}

/// The key export a push carries: `{"export": base64}`.
pub fn export_of(body: &[u8]) -> Option<Vec<u8>> {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["export"].as_str().and_then(|s| B64.decode(s).ok()))
}
