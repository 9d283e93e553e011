//! Serving: the accept loop, one thread per connection, and the heartbeat thread.

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use super::{http, tls, KeyServer};

/// Serve until the process ends: one thread per connection, and the heartbeat.
pub fn serve(server: Arc<KeyServer>, listen: &str, heartbeat: Duration) -> Result<(), String> {
    let listener =
        TcpListener::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let cfg = tls::server_config(server.identity())?;
    if server.has_parent() {
        let s = server.clone();
        std::thread::Builder::new()
            .name("coffer-heartbeat".into())
            .spawn(move || loop {
                match s.heartbeat() {
                    Ok(0) => tracing::debug!("heartbeat: parent has every key"),
                    Ok(n) => tracing::info!("heartbeat: pushed {n} key(s) to the parent"),
                    Err(e) => {
                        tracing::warn!("heartbeat: {e}");
                        s.audit("heartbeat", None, None, "failed", Some(&e));
                    }
                }
                std::thread::sleep(heartbeat);
            })
            .map_err(|e| e.to_string())?;
    }
    for conn in listener.incoming() {
        let Ok(sock) = conn else { continue };
        let (s, cfg) = (server.clone(), cfg.clone());
        let _ = std::thread::Builder::new()
            .name("coffer-conn".into())
            .spawn(move || {
                if let Err(e) = connection(&s, cfg, sock) {
                    tracing::debug!("connection: {e}");
                }
            });
    }
    Ok(())
}

fn connection(
    server: &KeyServer,
    cfg: Arc<rustls::ServerConfig>,
    sock: TcpStream,
) -> Result<(), String> {
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    sock.set_write_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let conn = rustls::ServerConnection::new(cfg).map_err(|e| e.to_string())?;
    let mut stream = rustls::StreamOwned::new(conn, sock);
    let req = http::read_request(&mut stream).map_err(|e| e.to_string())?;
    let peer = stream
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| tls::cert_key(c).ok());
    let (status, body) = server.handle(&req, peer);
    http::write_response(&mut stream, status, &body).map_err(|e| e.to_string())?;
    stream.conn.send_close_notify();
    let _ = std::io::Write::flush(&mut stream);
    Ok(())
}
