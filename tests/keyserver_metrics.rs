//! A key server's `/metrics`, scraped as Prometheus scrapes it (HTTPS GET, no client
//! certificate): requests by endpoint and status, refusals by what they lacked, heartbeats,
//! keys held, and the parent's reachability as it goes down and comes up. Counts only: no key
//! id, store id or fingerprint.

mod common;

use std::time::Duration;

use common::keyservers::{child_of, free_port, grant, wait_for, CertHost, Server};
use common::{s, Env};

/// `/metrics` of the server on `port`, over TLS without a client certificate.
fn scrape(port: u16) -> String {
    let o = std::process::Command::new("curl")
        .args(["-sk", "--max-time", "10", "-D", "-"])
        .arg(format!("https://127.0.0.1:{port}/metrics"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{text}"
    );
    text
}

/// The value of sample `name` (with its labels) in a scrape.
fn value(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// The status a GET of `path` gets from the server on `port`, as `who` (or no certificate).
fn status(srv: &CertHost, port: u16, who: Option<&CertHost>, path: &str) -> u16 {
    let c = coffer::keys::hierarchy::client::Client::new(
        &format!("https://127.0.0.1:{port}"),
        Some(srv.fp.clone()),
        Duration::from_secs(5),
    )
    .expect("client");
    let id = who.map(CertHost::identity);
    c.request(id.as_ref(), "GET", path, &[], None)
        .expect("request")
        .status
}

#[test]
fn metrics_count_requests_refusals_heartbeats_and_the_parent() {
    let env = Env::new();
    let (srv, top, reader, stranger) = (
        CertHost::new(&env, "srv"),
        CertHost::new(&env, "top"),
        CertHost::new(&env, "reader"),
        CertHost::new(&env, "stranger"),
    );
    // The server holds the key of a store made with its keystore.
    srv.ok(&["init", s(&env.path("store")), "--rsa-bits", "2048"]);
    let (port, top_port) = (free_port(), free_port());
    let mut args = child_of(&top, top_port);
    args.extend(grant(&reader, "use"));
    let _srv = Server::start(&env, &srv, port, &args);

    let client = |who: Option<&CertHost>, path: &str| status(&srv, port, who, path);
    assert_eq!(client(None, "/healthz"), 200);
    assert_eq!(client(None, "/v1/keys"), 401);
    assert_eq!(client(Some(&stranger), "/v1/keys"), 403);
    assert_eq!(
        client(Some(&reader), "/v1/keys"),
        403,
        "use does not give read"
    );

    // The parent is down: heartbeats fail, and the parent is not up.
    wait_for("a failed heartbeat", Duration::from_secs(30), || {
        value(
            &scrape(port),
            "coffer_keyserver_heartbeats_total{result=\"failed\"}",
        )
        .is_some_and(|n| n >= 1)
    });
    let text = scrape(port);
    let v = |name: &str| value(&text, name);
    assert_eq!(
        v("coffer_keyserver_requests_total{endpoint=\"healthz\",code=\"200\"}"),
        Some(1)
    );
    assert_eq!(
        v("coffer_keyserver_requests_total{endpoint=\"list\",code=\"401\"}"),
        Some(1)
    );
    assert_eq!(
        v("coffer_keyserver_requests_total{endpoint=\"list\",code=\"403\"}"),
        Some(2)
    );
    assert_eq!(
        v("coffer_keyserver_refusals_total{right=\"certificate\"}"),
        Some(2)
    );
    assert_eq!(
        v("coffer_keyserver_refusals_total{right=\"read\"}"),
        Some(1)
    );
    assert!(
        v("coffer_keyserver_keys_held").is_some_and(|n| n >= 1),
        "{text}"
    );
    assert_eq!(v("coffer_keyserver_parent_up"), Some(0), "{text}");
    for secret in [&srv.fp, &reader.fp, &stranger.fp, &top.fp] {
        assert!(
            !text.contains(secret.trim_start_matches("SHA256:")),
            "{text}"
        );
    }
    for id in srv.key_ids() {
        assert!(!text.contains(&id), "no key id: {text}");
    }

    parent_comes_up(&env, &top, &srv, port, top_port);
}

/// The parent starts: the next heartbeat reaches it, pushes the key, and says so.
fn parent_comes_up(env: &Env, top: &CertHost, srv: &CertHost, port: u16, top_port: u16) {
    let _top = Server::start(env, top, top_port, &grant(srv, "use,read,write,relay"));
    wait_for("the parent up in /metrics", Duration::from_secs(30), || {
        value(&scrape(port), "coffer_keyserver_parent_up") == Some(1)
    });
    let text = scrape(port);
    assert!(
        value(&text, "coffer_keyserver_heartbeats_total{result=\"ok\"}").is_some_and(|n| n >= 1)
    );
    assert!(
        value(&text, "coffer_keyserver_keys_pushed_total").is_some_and(|n| n >= 1),
        "{text}"
    );
    assert!(
        value(
            &text,
            "coffer_keyserver_parent_last_success_timestamp_seconds"
        )
        .is_some_and(|t| t > 1_700_000_000),
        "{text}"
    );
}
