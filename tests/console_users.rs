//! `coffer keyserver user add`, `list` and `remove`: a web-console user in the key server's
//! configuration, kept only as an Argon2id hash, in a file only root reads; and one line
//! for each mistake.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{bin, s, Env};

fn user_add(env: &Env, name: &str, role: &str, pass: &str) -> std::process::Output {
    let pf = env.path(&format!("{name}.console-pass"));
    std::fs::write(&pf, format!("{pass}\n")).expect("write");
    std::process::Command::new(bin())
        .args(["keyserver", "user", "add", name, "--role", role])
        .args([
            "--config",
            s(&env.path("keyserver.toml")),
            "--passphrase-file",
            s(&pf),
        ])
        .output()
        .expect("coffer")
}

#[test]
fn console_users_are_kept_as_argon2id_hashes() {
    let env = Env::new();
    let cfg = env.path("keyserver.toml");
    let o = user_add(&env, "alice", "key-admin", "a long console passphrase");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("added console user alice (key-admin)"),
        "{out}"
    );
    let o = user_add(&env, "view.only", "viewer", "another long passphrase");
    assert!(o.status.success());
    let text = std::fs::read_to_string(&cfg).expect("config");
    assert!(!text.contains("a long console passphrase"), "{text}");
    let mode = std::fs::metadata(&cfg).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let c = coffer::server::Config::load(&cfg).expect("the server reads it");
    let alice = &c.console_users["alice"];
    assert_eq!(alice.role, coffer::server::console_auth::Role::KeyAdmin);
    assert!(alice.hash.starts_with("$argon2id$"), "{}", alice.hash);
    assert!(coffer::server::console_auth::verify(
        alice,
        b"a long console passphrase"
    ));
    assert!(!coffer::server::console_auth::verify(
        alice,
        b"another long passphrase"
    ));
    // A new passphrase replaces the old one.
    let o = user_add(&env, "alice", "viewer", "a newer console passphrase");
    assert!(String::from_utf8_lossy(&o.stdout).contains("updated console user alice"));
    let c = coffer::server::Config::load(&cfg).expect("config");
    assert!(coffer::server::console_auth::verify(
        &c.console_users["alice"],
        b"a newer console passphrase"
    ));

    for (name, role, pass, want) in [
        ("bob", "viewer", "short", "at least 12 characters"),
        (
            "bob",
            "admin",
            "a long console passphrase",
            "unknown role 'admin'",
        ),
        (
            "<b>",
            "viewer",
            "a long console passphrase",
            "a console user name is",
        ),
    ] {
        let o = user_add(&env, name, role, pass);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.starts_with("coffer: ") && err.contains(want) && err.lines().count() == 1,
            "{err}"
        );
    }
    let c = coffer::server::Config::load(&cfg).expect("config");
    assert_eq!(c.console_users.len(), 2, "nothing added by a refused call");
}

/// `user list` shows each console user and role (never a hash), `user remove` takes one
/// out, and removing one that is not there is one line, exit 2.
#[test]
fn console_users_are_listed_and_removed() {
    let env = Env::new();
    let cfg = env.path("keyserver.toml");
    for (n, r) in [("alice", "key-admin"), ("bob", "viewer")] {
        let o = user_add(&env, n, r, "a long console passphrase");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let run = |args: &[&str]| {
        std::process::Command::new(bin())
            .args(["keyserver", "user"])
            .args(args)
            .args(["--config", s(&cfg)])
            .output()
            .expect("coffer")
    };
    let o = run(&["list"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out, "alice\tkey-admin\nbob\tviewer\n");
    let o = run(&["remove", "bob"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&["list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(
        v,
        serde_json::json!([{ "name": "alice", "role": "key-admin" }])
    );
    assert!(!String::from_utf8_lossy(&o.stdout).contains("argon2"));
    let o = run(&["remove", "bob"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no console user bob in") && err.lines().count() == 1,
        "{err}"
    );
}
