//! The key server's web console (`console = true`): server-rendered HTML at `/console` on the
//! TLS port, with no script at all and nothing fetched from elsewhere. Pages: the tree (this
//! server, its parent and children), the keys held (ids and labels, never key bytes), the
//! rights, the audit log (filters, paging, CSV) and the hierarchy settings.
//!
//! Who may do what: a console user logs in (console_auth.rs); a viewer sees every page, a key
//! administrator also grants and revokes rights and sets the hierarchy options. A change is
//! refused unless its form carries the session's CSRF token and any Origin header names this
//! server; it is saved to the configuration file and audited with the user's name before it
//! takes effect. Failed logins are audited and slowed down (LoginLimiter).

mod actions;
mod audit_view;
mod pages;
mod reply;
mod views;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock, RwLock};

use std::time::{Duration, Instant};
use zeroize::Zeroize;

pub use reply::{Reply, SECURITY_HEADERS};

use super::console_auth::{self, ConsoleUser, LoginLimiter, Role, Session, Sessions};
use super::{ConfigError, KeyServer, Request};
use crate::keys::AuditError;

/// How long a login lasts.
pub const SESSION_TTL: Duration = Duration::from_secs(3600);

/// A running console: its users, sessions and failed-login limits.
pub struct Console {
    users: RwLock<BTreeMap<String, ConsoleUser>>,
    sessions: Sessions,
    limiter: LoginLimiter,
    /// A hash checked for an unknown user name, so that a login takes as long either way.
    decoy: OnceLock<Option<ConsoleUser>>,
    /// One login is checked at a time: an Argon2id check takes 64 MiB, so a flood of logins
    /// must queue rather than take the server's memory, and the failure limit is then exact.
    verifying: Mutex<()>,
}

impl Console {
    pub fn new(users: BTreeMap<String, ConsoleUser>) -> Console {
        Console {
            users: RwLock::new(users),
            sessions: Sessions::new(SESSION_TTL),
            limiter: LoginLimiter::default(),
            decoy: OnceLock::new(),
            verifying: Mutex::new(()),
        }
    }
}

/// Why the console refused a change.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("a viewer may look but not change anything; a key administrator must do this")]
    Forbidden,
    #[error("the form is stale or did not come from this console; reload the page and try again")]
    Csrf,
    #[error("the request came from another site (Origin {0})")]
    CrossOrigin(String),
    #[error(
        "this key server runs without a configuration file (--config): a change made here \
         would be lost at restart, so none is made"
    )]
    NoConfig,
    #[error("tick at least one right (use, read, write or relay)")]
    NoRights,
    #[error("{0} has no grant here")]
    NoGrant(String),
    #[error("'{0}' is not a time: use 2026-12-04 or 2026-12-04 13:05 (UTC)")]
    BadTime(String),
    #[error("a heartbeat of '{0}' is out of range: from 1s to 24h")]
    Heartbeat(String),
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Audit(#[from] AuditError),
}

impl ConsoleError {
    pub fn status(&self) -> u16 {
        match self {
            ConsoleError::Forbidden | ConsoleError::Csrf | ConsoleError::CrossOrigin(_) => 403,
            ConsoleError::NoConfig => 409,
            ConsoleError::NoGrant(_) => 404,
            ConsoleError::NoRights
            | ConsoleError::BadTime(_)
            | ConsoleError::Heartbeat(_)
            | ConsoleError::Config(_) => 400,
            ConsoleError::Audit(_) => 500,
        }
    }
}

/// The first value of each field of a form or query string.
pub(crate) fn fields(text: &[u8]) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for (k, v) in form_urlencoded::parse(text) {
        m.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    m
}

impl KeyServer {
    /// Whether the console is on (`console = true`).
    pub fn console_enabled(&self) -> bool {
        self.console.is_some()
    }

    /// Answer a request under `/console`.
    pub fn console(&self, req: &Request) -> Reply {
        let Some(c) = &self.console else {
            return Reply::not_found();
        };
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/console/style.css") => return Reply::css(),
            ("GET", "/console/login") => return Reply::html(200, pages::login(None)),
            ("POST", "/console/login") => return self.login(c, req),
            _ => {}
        }
        let cookie = req.header("cookie").unwrap_or_default();
        let Some(s) = c.sessions.find(cookie, Instant::now()) else {
            return Reply::redirect("/console/login");
        };
        match req.method.as_str() {
            "GET" => self.page(&s, req),
            "POST" => self.change(c, &s, req),
            _ => Reply::not_found(),
        }
    }

    /// POST /console/login: check the passphrase (slowed down after failures), start a
    /// session. Every failure is audited; an unknown name is never written down, since it
    /// may be a passphrase typed in the wrong box.
    fn login(&self, c: &Console, req: &Request) -> Reply {
        if let Err(e) = same_origin(req) {
            return Reply::html(e.status(), pages::login(Some(&e.to_string())));
        }
        let mut f = fields(&req.body);
        let reply = self.check_login(c, req, &f);
        f.values_mut().for_each(Zeroize::zeroize);
        reply
    }

    fn check_login(&self, c: &Console, req: &Request, f: &HashMap<String, String>) -> Reply {
        let name = f.get("user").map(String::as_str).unwrap_or_default();
        let pass = f.get("passphrase").map(String::as_str).unwrap_or_default();
        let addr = req.peer_addr.as_deref().unwrap_or("unknown").to_string();
        let _one = c.verifying.lock().unwrap_or_else(|p| p.into_inner());
        let user = self.console_user(c, name);
        let known = user.as_ref().map(|_| name);
        let keys: Vec<String> = std::iter::once(format!("addr:{addr}"))
            .chain(known.map(|n| format!("user:{n}")))
            .collect();
        let now = Instant::now();
        if let Some(wait) = keys.iter().find_map(|k| c.limiter.check(k, now).err()) {
            let detail = format!("from {addr}: too many failed logins");
            self.audit
                .refusal("console-login", None, None, None, "refused", Some(&detail));
            let msg = format!(
                "Too many failed logins: try again in {} s.",
                wait.as_secs() + 1
            );
            return Reply::html(429, pages::login(Some(&msg)));
        }
        let ok = match &user {
            Some(u) => console_auth::verify(u, pass.as_bytes()),
            None => {
                let decoy = c.decoy.get_or_init(|| {
                    let mut random = [0u8; 32];
                    crate::crypto::random_bytes(&mut random);
                    console_auth::new_user(Role::Viewer, hex::encode(random).as_bytes()).ok()
                });
                decoy
                    .as_ref()
                    .map(|d| console_auth::verify(d, pass.as_bytes()));
                false
            }
        };
        self.logged_in(c, req, (name, user.map(|u| u.role)), ok, &keys)
    }

    /// The outcome of a login attempt: a session and the tree page, or the login page again.
    fn logged_in(
        &self,
        c: &Console,
        req: &Request,
        (name, role): (&str, Option<Role>),
        ok: bool,
        keys: &[String],
    ) -> Reply {
        let addr = req.peer_addr.as_deref().unwrap_or("unknown");
        let now = Instant::now();
        let (true, Some(role)) = (ok, role) else {
            keys.iter().for_each(|k| c.limiter.failed(k, now));
            let (actor, why) = match role {
                Some(_) => (Some(name), "wrong passphrase"),
                None => (None, "unknown user"),
            };
            let detail = format!("from {addr}: {why}");
            if let Err(e) =
                self.audit
                    .record_by(actor, "console-login", None, "refused", Some(&detail))
            {
                tracing::error!("console-login refused: {e}");
            }
            let msg = "Wrong user name or passphrase.";
            return Reply::html(401, pages::login(Some(msg)));
        };
        let detail = format!("from {addr}");
        if let Err(e) = self
            .audit
            .record_by(Some(name), "console-login", None, "ok", Some(&detail))
        {
            return Reply::html(500, pages::login(Some(&e.to_string())));
        }
        keys.iter().for_each(|k| c.limiter.succeeded(k));
        let (cookie, _) = c.sessions.start(name, role, now);
        Reply::redirect("/console/tree").with_header("Set-Cookie", cookie)
    }

    /// A console user by name: the configuration file is read again, so that a user added
    /// with `coffer keyserver user add` can log in without a restart.
    fn console_user(&self, c: &Console, name: &str) -> Option<ConsoleUser> {
        if let Some(cfg) = self
            .config
            .as_deref()
            .and_then(|p| super::Config::load(p).ok())
        {
            if let Ok(mut u) = c.users.write() {
                *u = cfg.console_users;
            }
        }
        c.users.read().ok()?.get(name).cloned()
    }

    /// POST under /console: log out, or (a key administrator) make a change.
    fn change(&self, c: &Console, s: &Session, req: &Request) -> Reply {
        let f = fields(&req.body);
        let checked = same_origin(req).and_then(|_| {
            match console_auth::csrf_ok(s, f.get("csrf").map(String::as_str).unwrap_or("")) {
                true => Ok(()),
                false => Err(ConsoleError::Csrf),
            }
        });
        if let Err(e) = checked {
            return self.refused_change(s, req, e);
        }
        if req.path == "/console/logout" {
            let cookie = req.header("cookie").unwrap_or_default();
            c.sessions.end(cookie);
            if let Err(e) = self
                .audit
                .record_by(Some(&s.user), "console-logout", None, "ok", None)
            {
                tracing::error!("console-logout: {e}");
            }
            let gone =
                "coffer_console=; Path=/console; Secure; HttpOnly; SameSite=Strict; Max-Age=0";
            return Reply::redirect("/console/login").with_header("Set-Cookie", gone.into());
        }
        if s.role != Role::KeyAdmin {
            return self.refused_change(s, req, ConsoleError::Forbidden);
        }
        self.act(s, req, &f)
    }

    /// A refused change: audited with the user's name, and shown.
    fn refused_change(&self, s: &Session, req: &Request, e: ConsoleError) -> Reply {
        self.audit_refused(s, req, None, &e);
        Reply::html(
            e.status(),
            pages::message(&views::View::of(s), "Refused", &e.to_string()),
        )
    }

    /// Record a refused console change, with the user's name, as well as the log allows.
    fn audit_refused(&self, s: &Session, req: &Request, fp: Option<&str>, e: &ConsoleError) {
        let detail = format!("POST {}: {e}", req.path);
        let op = actions::op_of(&req.path);
        let recorded = self
            .audit
            .record_by(Some(&s.user), op, fp, "refused", Some(&detail));
        if let Err(err) = recorded {
            tracing::error!("console change refused: {err}");
        }
    }
}

/// A POST must not come from another site: an Origin header, when the browser sends one, must
/// name the host the request was sent to. (SameSite=Strict and the CSRF token are the other
/// two locks.)
fn same_origin(req: &Request) -> Result<(), ConsoleError> {
    let Some(origin) = req.header("origin") else {
        return Ok(());
    };
    let host = req.header("host").unwrap_or_default();
    match origin.strip_prefix("https://") == Some(host) && !host.is_empty() {
        true => Ok(()),
        false => Err(ConsoleError::CrossOrigin(
            origin.chars().take(100).collect(),
        )),
    }
}
