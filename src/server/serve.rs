//! Serving: hyper's HTTP/1.1 over tokio-rustls, and the heartbeat thread.
//!
//! The limits a hostile client meets: at most `MAX_CONNECTIONS` at once (further ones wait in
//! the kernel's backlog); the TLS handshake and the request head must each arrive within
//! `HEAD_DEADLINE`, and a whole connection ends after `CONNECTION_DEADLINE`, so a client that
//! sends a byte a second is cut off; one request per connection; a request is authorised from
//! its head before its body is read, and a body is read only up to `MAX_BODY`; an accept
//! error backs off (up to a second) instead of spinning. The API logic itself (keystore, RSA,
//! the blocking parent client) runs on tokio's blocking pool.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;

use super::console;
use super::request::{Request, MAX_BODY};
use super::{ApiError, KeyServer};
use crate::crypto::PublicKey;
use crate::keys::hierarchy::tls;

pub const MAX_CONNECTIONS: usize = 256;
pub const HEAD_DEADLINE: Duration = Duration::from_secs(10);
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(30);
const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Serve until the process ends.
pub fn serve(server: Arc<KeyServer>, listen: &str) -> Result<(), ApiError> {
    let std_listener =
        std::net::TcpListener::bind(listen).map_err(|e| ApiError::Listen(listen.to_string(), e))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| ApiError::Listen(listen.to_string(), e))?;
    let cfg = tls::server_config(server.identity())?;
    if server.parent_configured() {
        spawn_heartbeat(server.clone())?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("coffer-keyserver")
        .enable_all()
        .build()
        .map_err(ApiError::Start)?;
    rt.block_on(accept_loop(server, std_listener, cfg))
}

/// The heartbeat thread runs while a parent is configured; it beats while the hierarchy option
/// is on, and reads the option and the interval afresh each time (the console changes them).
fn spawn_heartbeat(s: Arc<KeyServer>) -> Result<(), ApiError> {
    std::thread::Builder::new()
        .name("coffer-heartbeat".into())
        .spawn(move || loop {
            if s.hierarchy() {
                beat_once(&s);
            }
            let start = std::time::Instant::now();
            while start.elapsed() < s.heartbeat_every() {
                std::thread::sleep(s.heartbeat_every().min(Duration::from_secs(1)));
            }
        })
        .map(|_| ())
        .map_err(ApiError::Start)
}

fn beat_once(s: &KeyServer) {
    let beat = s.heartbeat();
    s.metrics.heartbeat(beat.as_ref().ok().copied());
    s.peers.heartbeat(&beat);
    match beat {
        Ok(0) => tracing::debug!("heartbeat: parent has every key"),
        Ok(n) => tracing::info!("heartbeat: pushed {n} key(s) to the parent"),
        Err(e) => {
            tracing::warn!("heartbeat: {e}");
            s.audit.refusal(
                "heartbeat",
                None,
                None,
                None,
                "failed",
                Some(&e.to_string()),
            );
        }
    }
}

async fn accept_loop(
    server: Arc<KeyServer>,
    std_listener: std::net::TcpListener,
    cfg: Arc<rustls::ServerConfig>,
) -> Result<(), ApiError> {
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(ApiError::Start)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = BACKOFF_MIN;
    loop {
        // The semaphore is never closed, so this waits for a free connection slot.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            continue;
        };
        match listener.accept().await {
            Ok((sock, addr)) => {
                backoff = BACKOFF_MIN;
                let (server, acceptor) = (server.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let served = tokio::time::timeout(
                        CONNECTION_DEADLINE,
                        connection(server, acceptor, sock, addr.ip().to_string()),
                    )
                    .await;
                    match served {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::debug!("connection from {addr}: {e}"),
                        Err(_) => {
                            tracing::debug!("connection from {addr}: cut off at the deadline")
                        }
                    }
                });
            }
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS...: wait, and wait longer each time, rather than spin.
                tracing::warn!("accept: {e}; retrying in {backoff:?}");
                drop(permit);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Why a connection ended early (logged at debug level; the client sees nothing more).
#[derive(Debug, thiserror::Error)]
enum ConnectionError {
    #[error("TLS handshake did not finish in time")]
    HandshakeDeadline,
    #[error("TLS handshake: {0}")]
    Handshake(std::io::Error),
    #[error("HTTP: {0}")]
    Http(hyper::Error),
}

async fn connection(
    server: Arc<KeyServer>,
    acceptor: tokio_rustls::TlsAcceptor,
    sock: tokio::net::TcpStream,
    addr: String,
) -> Result<(), ConnectionError> {
    let tls = tokio::time::timeout(HEAD_DEADLINE, acceptor.accept(sock))
        .await
        .map_err(|_| ConnectionError::HandshakeDeadline)?
        .map_err(ConnectionError::Handshake)?;
    let peer: Arc<Option<(PublicKey, String)>> = Arc::new(
        tls.get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| tls::cert_key(c).ok()),
    );
    let svc = hyper::service::service_fn(move |req| {
        answer(server.clone(), peer.clone(), addr.clone(), req)
    });
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_DEADLINE)
        .keep_alive(false)
        .max_buf_size(16 * 1024)
        .serve_connection(TokioIo::new(tls), svc)
        .await
        .map_err(ConnectionError::Http)
}

/// One request: admitted on its head, then its body read (bounded), then answered on the
/// blocking pool.
async fn answer(
    server: Arc<KeyServer>,
    peer: Arc<Option<(PublicKey, String)>>,
    addr: String,
    req: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
    let mut head = Request::head_of(&req);
    head.peer_addr = Some(addr);
    if server.console_enabled() && (head.path == "/console" || head.path.starts_with("/console/")) {
        return Ok(console(server, head, req.into_body()).await);
    }
    if head.method == "GET" && head.path == "/metrics" {
        let text = tokio::task::spawn_blocking(move || server.metrics_text()).await;
        return Ok(match text {
            Ok(t) => metrics_reply(t),
            Err(_) => reply(500, &serde_json::json!({ "error": "internal error" })),
        });
    }
    if let Some((status, body)) = server.admit(&head, peer.as_ref().as_ref()) {
        return Ok(reply(status, &body));
    }
    head.body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => {
            server.count(&head, 413);
            let msg = serde_json::json!({ "error": "request body too large or cut short" });
            return Ok(reply(413, &msg));
        }
    };
    let answered =
        tokio::task::spawn_blocking(move || server.handle(&head, peer.as_ref().as_ref())).await;
    Ok(match answered {
        Ok((status, body)) => reply(status, &body),
        Err(_) => reply(500, &serde_json::json!({ "error": "internal error" })),
    })
}

/// A console request: its body read (bounded), answered on the blocking pool (Argon2 and the
/// keystore are slow), with the console's security headers.
async fn console(
    server: Arc<KeyServer>,
    mut head: Request,
    body: Incoming,
) -> hyper::Response<Full<Bytes>> {
    let r = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => {
            head.body = b.to_bytes().to_vec();
            tokio::task::spawn_blocking(move || {
                let r = server.console(&head);
                server.count(&head, r.status);
                // A login's body holds a passphrase.
                zeroize::Zeroize::zeroize(&mut head.body);
                r
            })
            .await
        }
        Err(_) => Ok(console::Reply {
            status: 413,
            content_type: "text/plain; charset=utf-8",
            body: b"request body too large or cut short\n".to_vec(),
            headers: Vec::new(),
        }),
    };
    let Ok(r) = r else {
        return reply(500, &serde_json::json!({ "error": "internal error" }));
    };
    let mut resp = hyper::Response::new(Full::new(Bytes::from(r.body)));
    *resp.status_mut() =
        hyper::StatusCode::from_u16(r.status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(r.content_type),
    );
    let extra = r.headers.iter().map(|(k, v)| (*k, v.as_str()));
    for (k, v) in console::SECURITY_HEADERS.into_iter().chain(extra) {
        if let Ok(v) = hyper::header::HeaderValue::from_str(v) {
            h.append(k, v);
        }
    }
    resp
}

fn reply(status: u16, body: &serde_json::Value) -> hyper::Response<Full<Bytes>> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut r = hyper::Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn metrics_reply(text: String) -> hyper::Response<Full<Bytes>> {
    let mut r = hyper::Response::new(Full::new(Bytes::from(text)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}
