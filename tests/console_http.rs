//! The console's locks, over real HTTPS with curl: off unless asked for; the security headers
//! on every answer; the session cookie's flags; a login slowed after failures, and every
//! failure audited without writing down a name that is not a user's; a change refused
//! without the form's token or from another site; a session ended by logging out.

mod common;

use std::path::Path;

use common::keyservers::{
    add_console_user, console_login, free_port, https, session_cookie, CertHost, Server,
};
use common::{s, Env};

fn console_server(env: &Env, host: &CertHost, config: &Path) -> Server {
    add_console_user(env, config, "alice", "key-admin");
    let args = ["--config", s(config), "--console"].map(String::from);
    Server::start(env, host, free_port(), &args)
}

#[test]
fn console_is_off_unless_asked_for() {
    let env = Env::new();
    let host = CertHost::new(&env, "srv");
    let srv = Server::start(&env, &host, free_port(), &[]);
    let (code, _, body) = https(srv.port, "/console/login", &[]);
    assert_eq!(
        code, 401,
        "the API's answer to a request without a certificate: {body}"
    );
    assert!(!body.contains("<html"), "{body}");
}

#[test]
fn console_locks() {
    let env = Env::new();
    let host = CertHost::new(&env, "srv");
    let config = env.path("srv.toml");
    let srv = console_server(&env, &host, &config);
    let port = srv.port;
    // Every answer, the login page as much as a page behind it, carries the headers.
    let (code, head, _) = https(port, "/console/login", &[]);
    assert_eq!(code, 200);
    for h in [
        "content-security-policy: default-src 'none'; style-src 'self'; img-src 'self'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        "x-frame-options: deny",
        "x-content-type-options: nosniff",
        "cache-control: no-store",
    ] {
        assert!(head.contains(h), "{h}: {head}");
    }
    // Not logged in: to the login page.
    let (code, head, _) = https(port, "/console/rights", &[]);
    assert_eq!(code, 303);
    assert!(head.contains("location: /console/login"), "{head}");

    // A good login: a cookie that only this site's HTTPS pages ever see.
    let (code, head, _) = console_login(port, "alice", "console passphrase of alice");
    assert_eq!(code, 303, "{head}");
    let set = head
        .lines()
        .find(|l| l.starts_with("set-cookie:"))
        .expect("cookie");
    for flag in [
        "path=/console",
        "secure",
        "httponly",
        "samesite=strict",
        "max-age=3600",
    ] {
        assert!(set.contains(flag), "{flag}: {set}");
    }
    let cookie = format!("coffer_console={}", session_cookie(&head));
    changes_need_the_token(port, &cookie, &host);
    let saved = std::fs::read_to_string(&config).expect("config");
    assert!(
        !saved.contains(&"ab".repeat(32)),
        "nothing granted: {saved}"
    );

    // Logging out ends the session on the server, not only in the browser.
    let (_, _, page) = https(port, "/console/tree", &["-b", &cookie]);
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).expect("token");
    let csrf = &csrf[..64];
    let out = ["-b", &cookie, "--data", &format!("csrf={csrf}")];
    let (code, _, _) = https(port, "/console/logout", &out);
    assert_eq!(code, 303);
    let (code, head, _) = https(port, "/console/tree", &["-b", &cookie]);
    assert_eq!(code, 303, "{head}");

    failed_logins(port, &host);

    // Console answers are counted under their own label in /metrics.
    let (_, _, metrics) = https(port, "/metrics", &[]);
    assert!(
        metrics.contains("coffer_keyserver_requests_total{endpoint=\"console\",code=\"429\"} 1"),
        "{metrics}"
    );
}

/// A change without the session's token, or sent from another site, is refused and audited.
fn changes_need_the_token(port: u16, cookie: &str, host: &CertHost) {
    let fp = "SHA256:".to_string() + &"ab".repeat(32);
    let form = format!("csrf=0000&fingerprint={fp}&use=on");
    let (code, _, body) = https(
        port,
        "/console/rights/grant",
        &["-b", cookie, "--data", &form],
    );
    assert_eq!(code, 403);
    assert!(
        body.contains("the form is stale or did not come from this console"),
        "{body}"
    );
    let (_, _, page) = https(port, "/console/rights", &["-b", cookie]);
    let csrf = &page.split("name=\"csrf\" value=\"").nth(1).expect("token")[..64];
    let form = format!("csrf={csrf}&fingerprint={fp}&use=on");
    let evil = [
        "-b",
        cookie,
        "-H",
        "Origin: https://evil.example",
        "--data",
        &form,
    ];
    let (code, _, body) = https(port, "/console/rights/grant", &evil);
    assert_eq!(code, 403);
    assert!(
        body.contains("the request came from another site (Origin https://evil.example)"),
        "{body}"
    );
    let audit = host.audit();
    assert_eq!(
        audit.matches(r#""op":"console-grant""#).count(),
        2,
        "{audit}"
    );
    assert_eq!(
        audit.matches(r#""outcome":"refused""#).count(),
        2,
        "{audit}"
    );
}

/// Failed logins are audited (an unknown name is not written down: it may be a passphrase
/// typed in the wrong box) and, after five in a row, slowed down, the right passphrase too.
fn failed_logins(port: u16, host: &CertHost) {
    let (code, _, body) = console_login(port, "hunter2-typed-in-the-name-box", "x");
    assert_eq!(code, 401);
    assert!(body.contains("Wrong user name or passphrase."), "{body}");
    for _ in 0..5 {
        assert_eq!(console_login(port, "alice", "wrong passphrase").0, 401);
    }
    let (code, _, body) = console_login(port, "alice", "console passphrase of alice");
    assert_eq!(code, 429, "{body}");
    assert!(
        body.contains("Too many failed logins: try again in"),
        "{body}"
    );
    let audit = host.audit();
    assert!(!audit.contains("hunter2"), "{audit}");
    assert!(
        audit.contains(r#""detail":"from 127.0.0.1: unknown user""#),
        "{audit}"
    );
    assert_eq!(
        audit
            .matches(r#""detail":"from 127.0.0.1: wrong passphrase","actor":"alice""#)
            .count(),
        5
    );
    assert!(
        audit.contains(r#""detail":"from 127.0.0.1: too many failed logins""#),
        "{audit}"
    );
}
