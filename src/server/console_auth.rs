//! Who may use a key server's web console, and how a browser proves it: console users with
//! an Argon2id passphrase hash in the server's configuration (`coffer keyserver user add`),
//! two roles, sessions with an expiry and a CSRF token each, the cookie that carries a
//! session, and a limit on failed logins. The pages are in console/.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::{Deserialize, Serialize};

use crate::crypto::{KdfParams, MAX_M_COST, MAX_T_COST};

/// What a console user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// See the tree, keys, rights and audit log; change nothing.
    Viewer,
    /// Also grant and revoke rights and set the hierarchy options (Read and Write on key
    /// management).
    KeyAdmin,
}

impl std::str::FromStr for Role {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Role, AuthError> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "key-admin" => Ok(Role::KeyAdmin),
            _ => Err(AuthError::Role(s.to_string())),
        }
    }
}

/// A console user as the configuration keeps it: never the passphrase, only its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleUser {
    pub role: Role,
    /// Argon2id, in the PHC string format ($argon2id$v=19$m=...,t=...,p=...$salt$hash).
    pub hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("unknown role '{0}' (viewer, key-admin)")]
    Role(String),
    #[error("a console user name is 1 to 64 letters, digits, '.', '_' or '-'; not '{0}'")]
    Name(String),
    #[error("a console passphrase needs at least 12 characters")]
    Short,
    #[error("cannot hash the passphrase: {0}")]
    Hash(String),
}

/// Check a console user name: short, and nothing that needs escaping in a page or a log.
pub fn check_name(name: &str) -> Result<(), AuthError> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    ok.then_some(())
        .ok_or_else(|| AuthError::Name(name.to_string()))
}

/// A new user record: the passphrase hashed with Argon2id (the keystore's parameters) and a
/// random salt.
pub fn new_user(role: Role, passphrase: &[u8]) -> Result<ConsoleUser, AuthError> {
    if passphrase.len() < 12 {
        return Err(AuthError::Short);
    }
    let k = KdfParams::default();
    let params = argon2::Params::new(k.m_cost, k.t_cost, k.p_cost, None)
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::generate(&mut rand_core::OsRng);
    let hash = a
        .hash_password(passphrase, &salt)
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    Ok(ConsoleUser {
        role,
        hash: hash.to_string(),
    })
}

/// Whether `passphrase` is the user's. A hash that does not parse, is not Argon2id, or asks
/// for more memory or passes than a keystore may (a hostile configuration) never matches.
pub fn verify(user: &ConsoleUser, passphrase: &[u8]) -> bool {
    let Ok(h) = PasswordHash::new(&user.hash) else {
        return false;
    };
    if h.algorithm.as_str() != "argon2id" {
        return false;
    }
    let Ok(p) = argon2::Params::try_from(&h) else {
        return false;
    };
    if p.m_cost() > MAX_M_COST || p.t_cost() > MAX_T_COST || p.p_cost() > 16 {
        return false;
    }
    argon2::Argon2::default()
        .verify_password(passphrase, &h)
        .is_ok()
}

/// A logged-in browser.
#[derive(Clone, Debug)]
pub struct Session {
    pub user: String,
    pub role: Role,
    /// Every form carries it; a change is refused without it.
    pub csrf: String,
    expires: Instant,
}

/// The sessions of a running server (in memory: a restart logs everyone out).
pub struct Sessions {
    ttl: Duration,
    live: Mutex<HashMap<String, Session>>,
}

const COOKIE: &str = "coffer_console";

fn token() -> String {
    let mut b = [0u8; 32];
    crate::crypto::random_bytes(&mut b);
    hex::encode(b)
}

impl Sessions {
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            ttl,
            live: Mutex::new(HashMap::new()),
        }
    }

    /// A new session for `user`: (the Set-Cookie header's value, the session).
    pub fn start(&self, user: &str, role: Role, now: Instant) -> (String, Session) {
        let (id, s) = (
            token(),
            Session {
                user: user.to_string(),
                role,
                csrf: token(),
                expires: now + self.ttl,
            },
        );
        if let Ok(mut live) = self.live.lock() {
            live.retain(|_, s| s.expires > now);
            live.insert(id.clone(), s.clone());
        }
        let cookie = format!(
            "{COOKIE}={id}; Path=/console; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
            self.ttl.as_secs()
        );
        (cookie, s)
    }

    /// The session a request's Cookie header names, if it is live.
    pub fn find(&self, cookie_header: &str, now: Instant) -> Option<Session> {
        let id = session_ids(cookie_header).next()?;
        let mut live = self.live.lock().ok()?;
        match live.get(id) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                live.remove(id);
                None
            }
            None => None,
        }
    }

    /// End the session a Cookie header names (logout).
    pub fn end(&self, cookie_header: &str) {
        if let Ok(mut live) = self.live.lock() {
            session_ids(cookie_header).for_each(|id| {
                live.remove(id);
            });
        }
    }
}

/// The session ids a Cookie header carries.
fn session_ids(cookie_header: &str) -> impl Iterator<Item = &str> {
    cookie_header
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .filter(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// Whether a form's token is the session's, compared in constant time.
pub fn csrf_ok(s: &Session, token: &str) -> bool {
    crate::crypto::ct_eq(s.csrf.as_bytes(), token.as_bytes())
}

/// Failed logins per user name and per client address: after `FREE` failures in a row, each
/// further attempt must wait, twice as long each time, up to `MAX_WAIT`; a success clears it.
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

const FREE: u32 = 5;
const MAX_WAIT: Duration = Duration::from_secs(15 * 60);

impl Default for LoginLimiter {
    fn default() -> Self {
        LoginLimiter {
            failures: Mutex::new(HashMap::new()),
        }
    }
}

impl LoginLimiter {
    /// Ok when `key` (a user name or an address) may try now; else how long to wait.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let f = self.failures.lock().map_err(|_| MAX_WAIT)?;
        match f.get(key) {
            Some((_, until)) if *until > now => Err(*until - now),
            _ => Ok(()),
        }
    }

    pub fn failed(&self, key: &str, now: Instant) {
        if let Ok(mut f) = self.failures.lock() {
            let e = f.entry(key.to_string()).or_insert((0, now));
            e.0 += 1;
            if e.0 > FREE {
                let wait = Duration::from_secs(1u64 << (e.0 - FREE - 1).min(10));
                e.1 = now + wait.min(MAX_WAIT);
            }
        }
    }

    pub fn succeeded(&self, key: &str) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_logs_in_with_the_passphrase_alone() {
        let u = new_user(Role::KeyAdmin, b"correct horse battery").expect("user");
        assert!(
            u.hash.starts_with("$argon2id$v=19$m=65536,t=3,p=1$"),
            "{}",
            u.hash
        );
        assert!(verify(&u, b"correct horse battery"));
        assert!(!verify(&u, b"correct horse batterY"));
        assert!(matches!(
            new_user(Role::Viewer, b"short"),
            Err(AuthError::Short)
        ));
        // A hash that asks for 4 GiB (a hostile configuration) never matches, and costs nothing.
        let hostile = ConsoleUser {
            role: Role::Viewer,
            hash: u.hash.replace("m=65536", "m=4194304"),
        };
        assert!(!verify(&hostile, b"correct horse battery"));
        let not_argon = ConsoleUser {
            role: Role::Viewer,
            hash: "plain".into(),
        };
        assert!(!verify(&not_argon, b"plain"));
    }

    #[test]
    fn names_and_roles_are_checked() {
        assert!(check_name("alice.ops-1").is_ok());
        for bad in ["", "a b", "<script>", "x\n", &"a".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!("key-admin".parse::<Role>().ok(), Some(Role::KeyAdmin));
        assert!("admin".parse::<Role>().is_err());
    }

    #[test]
    fn sessions_expire_and_their_cookie_is_strict() {
        let s = Sessions::new(Duration::from_secs(600));
        let t0 = Instant::now();
        let (cookie, sess) = s.start("alice", Role::Viewer, t0);
        for part in [
            "Secure",
            "HttpOnly",
            "SameSite=Strict",
            "Max-Age=600",
            "Path=/console",
        ] {
            assert!(cookie.split("; ").any(|p| p == part), "{part} in {cookie}");
        }
        let header = format!("other=1; {}", cookie.split(';').next().expect("pair"));
        let found = s
            .find(&header, t0 + Duration::from_secs(599))
            .expect("live");
        assert_eq!((found.user.as_str(), found.role), ("alice", Role::Viewer));
        assert!(csrf_ok(&found, &sess.csrf));
        assert!(!csrf_ok(&found, &sess.csrf[1..]));
        assert!(
            s.find(&header, t0 + Duration::from_secs(601)).is_none(),
            "expired"
        );
        assert!(s.find("coffer_console=0000", t0).is_none(), "made up");
        let (cookie, _) = s.start("bob", Role::KeyAdmin, t0);
        let header = cookie.split(';').next().expect("pair").to_string();
        s.end(&header);
        assert!(s.find(&header, t0).is_none(), "logged out");
    }

    #[test]
    fn failed_logins_wait_longer_each_time_and_a_success_clears_them() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        for _ in 0..FREE {
            assert!(l.check("alice", t0).is_ok());
            l.failed("alice", t0);
        }
        assert!(l.check("alice", t0).is_ok(), "the first five are free");
        l.failed("alice", t0);
        assert_eq!(l.check("alice", t0), Err(Duration::from_secs(1)));
        l.failed("alice", t0);
        assert_eq!(l.check("alice", t0), Err(Duration::from_secs(2)));
        assert!(l.check("bob", t0).is_ok(), "per name");
        for _ in 0..40 {
            l.failed("alice", t0);
        }
        assert!(l.check("alice", t0).is_err_and(|w| w <= MAX_WAIT));
        l.succeeded("alice");
        assert!(l.check("alice", t0).is_ok());
    }
}
