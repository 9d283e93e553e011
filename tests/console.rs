//! The key server's web console in a real browser: headless Chromium driven through
//! WebDriver against a three-server tree (top <- mid <- leaf, heartbeats every second), the
//! console on the middle one. A key administrator logs in, sees the tree and the top server
//! stopped shown as unreachable, finds the leaf's key by store id, grants a client a right
//! and sees the client then succeed, sees both in the audit log (and its CSV), sets the
//! heartbeat; a viewer is refused a change. Screenshots of each page go to
//! target/console-screenshots (the main ones are in docs/keyserver.md).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::keyservers::{
    add_console_user, child_of, console_login, free_port, grant, https, session_cookie, wait_for,
    CertHost, Server,
};
use common::webdriver::{Browser, ENTER};
use common::{s, Env};

const LIMIT: Duration = Duration::from_secs(60);

/// (key id, store id) of the first key a host's keystore holds.
fn first_key(h: &CertHost) -> (String, String) {
    let out = h.ok(&["keys", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let k = &v["keys"][0];
    let id = |f: &str| k[f].as_str().expect("id").to_string();
    (id("key_id"), id("store_id"))
}

/// The status a client gets fetching `key_id` from the server on `port`.
fn fetch_status(server: &CertHost, port: u16, client: &CertHost, key_id: &str) -> u16 {
    let c = coffer::keys::hierarchy::client::Client::new(
        &format!("https://127.0.0.1:{port}"),
        Some(server.fp.clone()),
        Duration::from_secs(5),
    )
    .expect("client");
    let path = format!("/v1/keys/{key_id}");
    c.request(Some(&client.identity()), "GET", &path, &[], None)
        .expect("request")
        .status
}

/// `curl` as the browser's session: (status, body).
fn curl(port: u16, cookie: &str, path: &str, form: Option<&str>) -> (u16, String) {
    let (cookie, origin) = (
        format!("coffer_console={cookie}"),
        format!("Origin: https://127.0.0.1:{port}"),
    );
    let mut args = vec!["-b", &cookie, "-H", &origin];
    args.extend(form.map(|f| ["--data", f]).into_iter().flatten());
    let (code, _, body) = https(port, path, &args);
    (code, body)
}

struct Tree {
    env: Env,
    top: CertHost,
    mid: CertHost,
    leaf: CertHost,
    client: CertHost,
    config: PathBuf,
    servers: Vec<Server>,
    port: u16,
    leaf_port: u16,
}

/// Console user `name` with `role` in the middle server's configuration.
fn start_tree() -> Tree {
    let env = Env::new();
    let hosts = ["top", "mid", "leaf", "client"].map(|n| CertHost::new(&env, n));
    let [top, mid, leaf, client] = hosts;
    for (h, store) in [(&mid, "mid-store"), (&leaf, "leaf-store")] {
        h.ok(&["init", s(&env.path(store)), "--rsa-bits", "2048"]);
    }
    let config = env.path("mid.toml");
    env.coffer_ok(&[
        "keys",
        "grant",
        "--config",
        s(&config),
        &leaf.fp,
        "read,write",
    ]);
    add_console_user(&env, &config, "alice", "key-admin");
    add_console_user(&env, &config, "victor", "viewer");
    let (top_port, port, leaf_port) = (free_port(), free_port(), free_port());
    let top_s = Server::start(&env, &top, top_port, &grant(&mid, "use,read,write,relay"));
    let mut mid_args = child_of(&top, top_port);
    mid_args.extend(["--config".into(), s(&config).into(), "--console".into()]);
    let mid_s = Server::start(&env, &mid, port, &mid_args);
    // The leaf has a console too (read with curl): it shows the top as an ancestor.
    let leaf_config = env.path("leaf.toml");
    add_console_user(&env, &leaf_config, "alice", "key-admin");
    let mut leaf_args = child_of(&mid, port);
    leaf_args.extend([
        "--config".into(),
        s(&leaf_config).into(),
        "--console".into(),
    ]);
    let leaf_s = Server::start(&env, &leaf, leaf_port, &leaf_args);
    Tree {
        leaf_port,
        servers: vec![top_s, mid_s, leaf_s],
        env,
        top,
        mid,
        leaf,
        client,
        config,
        port,
    }
}

impl Tree {
    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn login(&self, b: &Browser, user: &str, pass: &str) {
        b.goto(&self.url("/console/login"));
        b.type_into("input[name=user]", user);
        b.type_into("input[name=passphrase]", pass);
        b.click("form button[type=submit]");
        wait_for("the login answered", LIMIT, || {
            b.url().ends_with("/console/tree") || b.count("p.error") > 0
        });
    }

    /// Reload `path` until `f` holds of the page.
    fn wait_page(&self, b: &Browser, path: &str, what: &str, f: impl Fn(&Browser) -> bool) {
        wait_for(what, LIMIT, || {
            b.goto(&self.url(path));
            f(b)
        });
    }
}

/// Submit a form with its button, and wait for the page that says how it went.
fn submit(b: &Browser, button: &str) {
    b.click(button);
    wait_for("the form's answer", LIMIT, || {
        b.count("p.done, p.error") > 0
    });
}

/// A session on the console on `port`, logged in with curl.
fn curl_login(port: u16, user: &str) -> String {
    let (_, head, _) = console_login(port, user, &format!("console passphrase of {user}"));
    session_cookie(&head)
}

/// The rows of a tree page with `relation`, as HTML.
fn rows_of<'a>(page: &'a str, relation: &str) -> Vec<&'a str> {
    let start = format!("<tr data-relation=\"{relation}\">");
    page.split(start.as_str())
        .skip(1)
        .filter_map(|r| r.split("</tr>").next())
        .collect()
}

/// The leaf's view: the middle server as its parent and the top as an ancestor; once the
/// top is stopped, the middle still reachable and its own parent said not to answer.
fn leaf_sees_the_top(t: &Tree, top_up: bool) {
    let cookie = curl_login(t.leaf_port, "alice");
    wait_for("the leaf's tree", LIMIT, || {
        let (_, page) = curl(t.leaf_port, &cookie, "/console/tree", None);
        let parent = rows_of(&page, "parent");
        let ancestors = rows_of(&page, "ancestor");
        let mid_ok = parent.len() == 1
            && parent[0].contains(&t.mid.fp)
            && parent[0].contains("state-reachable");
        match top_up {
            true => {
                mid_ok
                    && ancestors.len() == 1
                    && ancestors[0].contains(&t.top.fp)
                    && ancestors[0].contains("state-reachable")
            }
            false => {
                mid_ok
                    && ancestors.is_empty()
                    && parent[0].contains("its own parent did not answer it")
            }
        }
    });
}

fn state_of(b: &Browser, relation: &str) -> String {
    let css = format!("tr[data-relation='{relation}'] .state");
    match b.count(&css) {
        0 => String::new(),
        _ => b.text(&css),
    }
}

#[test]
fn console_in_a_browser() {
    let mut t = start_tree();
    let b = Browser::start(&t.env.path("chromium"), &shots());
    // A wrong passphrase is refused, and said so; then alice logs in.
    t.login(&b, "alice", "not her passphrase");
    assert_eq!(b.text("p.error"), "Wrong user name or passphrase.");
    t.login(&b, "alice", "console passphrase of alice");
    assert!(b.url().ends_with("/console/tree"), "{}", b.url());

    tree_page(&mut t, &b);
    keys_page(&t, &b);
    rights_and_audit(&t, &b);
    settings_and_keyboard(&t, &b);
    viewer_refused(&t, &b);
    let audit = std::fs::read_to_string(t.mid.keystore.join("audit.log")).expect("audit");
    assert!(audit.contains(r#""op":"console-login","key_id":null,"store_id":null,"outcome":"refused","detail":"from 127.0.0.1: wrong passphrase","actor":"alice""#), "{audit}");
    // The browser asked for no /favicon.ico, whose refusal filled the audit log.
    assert!(!audit.contains("favicon"), "{audit}");
}

fn shots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots")
}

fn tree_page(t: &mut Tree, b: &Browser) {
    t.wait_page(b, "/console/tree", "parent and child reachable", |b| {
        state_of(b, "parent") == "reachable" && state_of(b, "child") == "reachable"
    });
    let src = b.source();
    for fp in [&t.top.fp, &t.mid.fp, &t.leaf.fp] {
        assert!(src.contains(fp.as_str()), "tree names {fp}");
    }
    b.screenshot("tree");
    leaf_sees_the_top(t, true);
    // The top server stops: the next heartbeat cannot reach it.
    t.servers[0].stop();
    leaf_sees_the_top(t, false);
    t.wait_page(
        b,
        "/console/tree",
        "the stopped parent shown unreachable",
        |b| state_of(b, "parent") == "unreachable",
    );
    assert_eq!(state_of(b, "child"), "reachable");
    b.screenshot("tree-parent-unreachable");
}

fn keys_page(t: &Tree, b: &Browser) {
    let (leaf_key, leaf_store) = first_key(&t.leaf);
    wait_for("the leaf's key pushed to mid", LIMIT, || {
        t.mid.has_key(&leaf_key)
    });
    b.goto(&t.url("/console/keys"));
    assert_eq!(b.count("#keys tbody tr"), 2, "mid's own key and the leaf's");
    b.type_into("input[name=q]", &leaf_store);
    b.keys(ENTER);
    wait_for("the search", LIMIT, || b.url().contains("q="));
    assert_eq!(b.count("#keys tbody tr"), 1);
    let row = b.text("#keys tbody tr");
    assert!(
        row.contains(&leaf_key) && row.contains(&leaf_store),
        "{row}"
    );
    assert!(row.contains(&format!("pushed from {}", t.leaf.fp)), "{row}");
    b.screenshot("keys");
    // In a 1280 px window the keys table fits its box, with nothing to scroll sideways (it
    // was 1261 px in 1248).
    b.resize(1280, 800);
    b.goto(&t.url("/console/keys"));
    let (table, room) = (
        b.script("return document.querySelector('#keys').scrollWidth"),
        b.script("return document.querySelector('#keys').parentElement.clientWidth"),
    );
    assert!(
        table.as_u64().expect("px") <= room.as_u64().expect("px"),
        "the keys table is {table} px wide in {room} px"
    );
}

fn rights_and_audit(t: &Tree, b: &Browser) {
    let (mid_key, mid_store) = first_key(&t.mid);
    assert_eq!(fetch_status(&t.mid, t.port, &t.client, &mid_key), 403);
    b.goto(&t.url("/console/rights"));
    b.type_into("form.grant input[name=fingerprint]", &t.client.fp);
    b.type_into("form.grant input[name=name]", "restore host");
    b.click("form.grant input[name=use]");
    b.type_into("form.grant input[name=stores]", &mid_store);
    submit(b, "form.grant button[type=submit]");
    assert!(b.text("p.done").starts_with("Granted."), "{}", b.source());
    let table = b.text("#rights");
    assert!(
        table.contains(&t.client.fp) && table.contains("restore host"),
        "{table}"
    );
    b.screenshot("rights");
    // The client now gets the key.
    assert_eq!(fetch_status(&t.mid, t.port, &t.client, &mid_key), 200);

    // The audit log, filtered to the client: its refused request, the grant (by alice) and
    // the fetch, newest first.
    b.goto(&t.url("/console/audit"));
    b.type_into("input[name=client]", &t.client.fp);
    b.keys(ENTER);
    wait_for("the filter", LIMIT, || b.url().contains("client="));
    let rows = b.text("#audit tbody");
    let lines: Vec<&str> = rows.lines().collect();
    assert_eq!(lines.len(), 3, "{rows}");
    assert!(
        lines[0].contains("fetch ok") && lines[0].contains(&mid_key),
        "{rows}"
    );
    assert!(
        lines[1].contains("console-grant ok") && lines[1].contains("alice (console)"),
        "{rows}"
    );
    assert!(lines[2].contains("request refused"), "{rows}");
    b.screenshot("audit");
    let query = format!(
        "/console/audit.csv?client={}",
        t.client.fp.replace(':', "%3A")
    );
    let (code, csv) = curl(t.port, &b.cookie("coffer_console"), &query, None);
    assert_eq!(code, 200);
    let csv: Vec<&str> = csv.lines().collect();
    assert_eq!(csv.len(), 4, "{csv:?}");
    assert!(csv[0].starts_with("time_utc,op,outcome,key_id,store_id,client,console_user"));
    assert!(
        csv[1].contains(",fetch,ok,") && csv[2].contains(",console-grant,ok,"),
        "{csv:?}"
    );

    // Revoked from the page: the client is refused again.
    b.goto(&t.url("/console/rights"));
    submit(b, &format!("button[aria-label='Revoke {}']", t.client.fp));
    assert!(b.text("p.done").starts_with("Revoked."), "{}", b.source());
    assert!(!b.text("#rights").contains(&t.client.fp));
    assert_eq!(fetch_status(&t.mid, t.port, &t.client, &mid_key), 403);
    let cfg = std::fs::read_to_string(&t.config).expect("config");
    assert!(
        !cfg.contains(&t.client.fp),
        "revoked in the file too: {cfg}"
    );
}

fn settings_and_keyboard(t: &Tree, b: &Browser) {
    b.goto(&t.url("/console/settings"));
    b.type_into("input[name=heartbeat]", "2s");
    submit(b, "form.settings button[type=submit]");
    assert!(b.text("p.done").starts_with("Saved."), "{}", b.source());
    let cfg = std::fs::read_to_string(&t.config).expect("config");
    assert!(
        cfg.contains("heartbeat = \"2s\"") && cfg.contains("hierarchy = true"),
        "{cfg}"
    );
    b.screenshot("settings");

    // Keyboard only: the skip link first, then the pages, Enter follows one.
    b.goto(&t.url("/console/tree"));
    b.tab();
    assert_eq!(b.focused_text(), "Skip to content");
    b.tab();
    assert_eq!(b.focused_text(), "Tree");
    b.tab();
    assert_eq!(b.focused_text(), "Keys");
    b.keys(ENTER);
    wait_for("Enter on Keys", LIMIT, || {
        b.url().ends_with("/console/keys")
    });

    // A phone-width window: nothing wider than the screen but the tables, which scroll.
    b.resize(390, 844);
    b.goto(&t.url("/console/tree"));
    let fits = b.script("return document.documentElement.scrollWidth <= window.innerWidth + 1;");
    assert_eq!(
        fits,
        serde_json::json!(true),
        "the page is wider than a phone"
    );
    b.screenshot("tree-phone");
    b.resize(1280, 900);
}

fn viewer_refused(t: &Tree, b: &Browser) {
    b.click("header form button[type=submit]");
    wait_for("logged out", LIMIT, || b.url().ends_with("/console/login"));
    t.login(b, "victor", "console passphrase of victor");
    b.goto(&t.url("/console/rights"));
    assert_eq!(b.count("form.grant"), 0, "no grant form for a viewer");
    assert!(b.text("p.note").contains("viewer"));
    b.screenshot("viewer-rights");
    // A viewer who forges the form is refused by the server, and the refusal audited.
    let src = b.source();
    let csrf = src
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("csrf token");
    let form = format!(
        "csrf={csrf}&fingerprint={}&read=on",
        t.leaf.fp.replace(':', "%3A")
    );
    let (code, body) = curl(
        t.port,
        &b.cookie("coffer_console"),
        "/console/rights/grant",
        Some(&form),
    );
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("a viewer may look but not change anything"),
        "{body}"
    );
    t.wait_page(
        b,
        "/console/audit?op=console-grant",
        "the viewer's refusal in the log",
        |b| {
            b.text("#audit tbody")
                .lines()
                .any(|l| l.contains("victor (console)") && l.contains("refused"))
        },
    );
    b.screenshot("audit-viewer-refused");
}
