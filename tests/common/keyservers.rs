//! Key servers for tests: a host with its certificate, a running `coffer keyserver` that is
//! killed on drop, free ports, grants, and polling for a state with a bound.

use std::fs;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{s, Env, Host};

/// A host with its certificate made (`coffer keys cert`).
pub struct CertHost {
    pub host: Host,
    pub pem: PathBuf,
    pub fp: String,
}

impl std::ops::Deref for CertHost {
    type Target = Host;
    fn deref(&self) -> &Host {
        &self.host
    }
}

impl CertHost {
    pub fn new(env: &Env, name: &str) -> CertHost {
        let host = Host::new(env, name);
        let pem = env.path(&format!("{name}.pem"));
        let fp = host
            .ok(&["keys", "cert", "--out", s(&pem)])
            .trim()
            .to_string();
        CertHost { host, pem, fp }
    }
    /// The host's TLS identity (certificate and key), as a client presents it.
    pub fn identity(&self) -> coffer::keys::HostIdentity {
        let pass = fs::read_to_string(&self.pass).expect("pass");
        coffer::keys::Keystore::open(&self.keystore, pass.trim_end().as_bytes())
            .expect("keystore")
            .identity()
            .expect("identity")
    }
    pub fn has_key(&self, key_id: &str) -> bool {
        self.key_ids().iter().any(|k| k == key_id)
    }
}

/// A running key server; killed on drop.
pub struct Server {
    child: Child,
    pub port: u16,
    args: Vec<String>,
    log: PathBuf,
}

impl Server {
    pub fn start(env: &Env, host: &CertHost, port: u16, extra: &[String]) -> Server {
        let mut args = vec![
            "keyserver".to_string(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
            "--keystore".into(),
            host.keystore.display().to_string(),
            "--passphrase-file".into(),
            host.pass.display().to_string(),
        ];
        args.extend_from_slice(extra);
        let log = env.path(&format!("server-{}.log", host.name));
        Server::spawn(args, port, log)
    }
    pub fn spawn(args: Vec<String>, port: u16, log: PathBuf) -> Server {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log");
        let child = Command::new(super::bin())
            .args(&args)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("keyserver");
        wait_for(
            &format!("key server on {port} starting"),
            Duration::from_secs(20),
            || TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        Server {
            child,
            port,
            args,
            log,
        }
    }
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
    pub fn restart(&mut self) {
        self.stop();
        *self = Server::spawn(self.args.clone(), self.port, self.log.clone());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Poll `f` until it holds, failing the test if it does not within `limit` (a generous bound,
/// never a measurement).
pub fn wait_for(what: &str, limit: Duration, f: impl FnMut() -> bool) {
    assert!(
        super::poll(limit, f),
        "{what} did not happen within {limit:?}"
    );
}

/// The options of a key server under `parent` (listening on `port`, not necessarily started):
/// pinned, with the hierarchy on, heartbeats every second and a 2 s timeout.
pub fn child_of(parent: &CertHost, port: u16) -> Vec<String> {
    let url = format!("https://127.0.0.1:{port}");
    let args = [
        "--parent",
        &url,
        "--parent-cert",
        s(&parent.pem),
        "--hierarchy",
    ];
    args.iter()
        .chain(&["--heartbeat", "1s", "--timeout", "2s"])
        .map(|a| a.to_string())
        .collect()
}

pub fn grant(h: &CertHost, rights: &str) -> [String; 2] {
    ["--grant".into(), format!("{}={rights}", h.fp)]
}

/// `curl ARGS https://127.0.0.1:PORT/PATH`, the server's certificate not checked (a browser's
/// view of a self-signed server): (status, head in lower case, body).
pub fn https(port: u16, path: &str, args: &[&str]) -> (u16, String, String) {
    let o = Command::new("curl")
        .args(["-sk", "--max-time", "20", "-D", "-", "-w", "\n%{http_code}"])
        .args(args)
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (rest, code) = text.rsplit_once('\n').expect("status");
    let (head, body) = rest.split_once("\r\n\r\n").unwrap_or((rest, ""));
    (
        code.trim().parse().expect("code"),
        head.to_ascii_lowercase(),
        body.to_string(),
    )
}

/// Console user `name` with `role` in a key server's configuration; their passphrase is
/// "console passphrase of NAME".
pub fn add_console_user(env: &Env, config: &std::path::Path, name: &str, role: &str) {
    let pass = env.path(&format!("{name}.console"));
    fs::write(&pass, format!("console passphrase of {name}\n")).expect("write");
    let args = ["keyserver", "user", "add", name, "--role", role, "--config"];
    env.coffer_ok(&[&args[..], &[s(config), "--passphrase-file", s(&pass)]].concat());
}

/// A console login with curl: (status, head, body).
pub fn console_login(port: u16, user: &str, pass: &str) -> (u16, String, String) {
    let form = format!("user={user}&passphrase={}", pass.replace(' ', "+"));
    https(port, "/console/login", &["--data", &form])
}

/// The session cookie's value a login answer's head sets.
pub fn session_cookie(head: &str) -> String {
    head.lines()
        .find_map(|l| l.strip_prefix("set-cookie: coffer_console="))
        .and_then(|v| v.split(';').next())
        .expect("session cookie")
        .to_string()
}
