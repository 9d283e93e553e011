//! A tree of key servers on loopback with real TLS and real mounts:
//! top <- middle <- {leaf A, leaf B}, each with its own keystore.

mod common;

use std::fs;
use std::net::TcpStream;
use std::time::Duration;

use common::keyservers::{child_of, free_port, grant, wait_for, CertHost, Server};
use common::{pattern, require_fuse, s, sh_ok, Env, Host, MountGuard as Guard};

#[test]
fn keys_flow_up_the_tree_and_are_fetched_down_it() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    let (top, mid, a, b, c, d) = (
        CertHost::new(&env, "top"),
        CertHost::new(&env, "mid"),
        CertHost::new(&env, "a"),
        CertHost::new(&env, "b"),
        CertHost::new(&env, "c"),
        CertHost::new(&env, "d"),
    );
    let (pt, pm, pa, pb, pd) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let hb = |p: &CertHost| -> Vec<String> {
        vec![
            "--parent-cert".into(),
            p.pem.display().to_string(),
            "--hierarchy".into(),
            "--heartbeat".into(),
            "1s".into(),
            "--timeout".into(),
            "2s".into(),
        ]
    };
    // Child servers push up (write) and ask on behalf of their own clients (relay).
    let mut top_srv = Server::start(&env, &top, pt, &grant(&mid, "use,read,write,relay"));
    let mut mid_args: Vec<String> = vec!["--parent".into(), format!("https://127.0.0.1:{pt}")];
    mid_args.extend(hb(&top));
    for h in [&a, &b] {
        mid_args.extend(grant(h, "use,read,write,relay"));
    }
    mid_args.extend(grant(&d, "use,read,write"));
    let mut mid_srv = Server::start(&env, &mid, pm, &mid_args);
    let leaf = |h: &CertHost, port: u16, hierarchy: bool, grants: Vec<String>| {
        let mut args: Vec<String> = vec!["--parent".into(), format!("https://127.0.0.1:{pm}")];
        if hierarchy {
            args.extend(hb(&mid));
        } else {
            args.extend([
                "--parent-cert".into(),
                mid.pem.display().to_string(),
                "--heartbeat".into(),
                "1s".into(),
            ]);
        }
        args.extend(grants);
        Server::start(&env, h, port, &args)
    };
    let mut a_srv = leaf(&a, pa, true, grant(&a, "use,read,write").to_vec());
    let mut b_grants = grant(&b, "use,read,write").to_vec();
    b_grants.extend(grant(&c, "read"));
    let mut b_srv = leaf(&b, pb, true, b_grants);
    let mut d_srv = leaf(&d, pd, false, grant(&d, "use,read,write").to_vec());

    // A store made on A reaches the middle, and then the top.
    let store = env.path("store");
    a.ok(&["init", s(&store), "--rsa-bits", "2048"]);
    let info: serde_json::Value =
        serde_json::from_str(&a.ok(&["info", s(&store), "--json"])).expect("json");
    let key_id = info["master_keys"][0]["key_id"]
        .as_str()
        .expect("id")
        .to_string();
    wait_for(
        "the key reaching the middle",
        Duration::from_secs(15),
        || mid.has_key(&key_id),
    );
    wait_for("the key reaching the top", Duration::from_secs(15), || {
        top.has_key(&key_id)
    });

    // Put data in on A, copy the store, and B mounts the copy through its own server.
    let mnt = env.path("mnt-k");
    fs::create_dir_all(&mnt).expect("mkdir");
    let _g = Guard(mnt.clone());
    let src = env.path("src");
    for i in 0..20u64 {
        fs::create_dir_all(&src).expect("mkdir");
        fs::write(src.join(format!("f{i}")), pattern(i, 1000 * i as usize + 3)).expect("write");
    }
    a.ok(&["mount", s(&store), s(&mnt)]);
    sh_ok(&format!(
        "rsync -a '{}/' '{}/'",
        src.display(),
        mnt.display()
    ));
    a.ok(&["umount", s(&mnt)]);
    let copy = env.path("copy");
    sh_ok(&format!(
        "rsync -aHXS '{}/' '{}/'",
        store.display(),
        copy.display()
    ));
    assert!(!b.has_key(&key_id));
    b.ok(&[
        "mount",
        s(&copy),
        s(&mnt),
        "--key-server",
        &b_srv.url(),
        "--key-server-cert",
        s(&b.pem),
    ]);
    let out = sh_ok(&format!(
        "rsync -aHc --dry-run -i --delete '{}/' '{}/'",
        src.display(),
        mnt.display()
    ));
    assert!(out.trim().is_empty(), "{out}");
    b.ok(&["umount", s(&mnt)]);
    assert!(b
        .audit()
        .lines()
        .any(|l| l.contains("\"op\":\"fetch\"") && l.contains(&key_id) && l.contains("parent")));

    // A client without `use` is refused, and the refusal is audited.
    let pin = |h: &CertHost| h.pem.display().to_string();
    let o = c.run(&[
        "mount",
        s(&copy),
        s(&mnt),
        "--key-server",
        &b_srv.url(),
        "--key-server-cert",
        &pin(&b),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("lacks the use right"), "{e}");
    assert!(b
        .audit()
        .lines()
        .any(|l| l.contains(&c.fp) && l.contains("\"outcome\":\"refused\"")));

    // A leaf with the option off neither pushes nor asks.
    let dstore = env.path("dstore");
    d.ok(&["init", s(&dstore), "--rsa-bits", "2048"]);
    let dinfo: serde_json::Value =
        serde_json::from_str(&d.ok(&["info", s(&dstore), "--json"])).expect("json");
    let dkey = dinfo["master_keys"][0]["key_id"]
        .as_str()
        .expect("id")
        .to_string();
    let o = d.run(&[
        "mount",
        s(&copy),
        s(&mnt),
        "--key-server",
        &d_srv.url(),
        "--key-server-cert",
        &pin(&d),
    ]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "D's server must not ask its parent"
    );
    // Two stores made on B after D's, one after the other, reach the middle: a whole 1 s
    // heartbeat period has passed since D's key existed, and D, on the same period, would
    // have pushed it by then.
    for i in 0..2 {
        let bstore = env.path(&format!("bstore{i}"));
        b.ok(&["init", s(&bstore), "--rsa-bits", "2048"]);
        let info: serde_json::Value =
            serde_json::from_str(&b.ok(&["info", s(&bstore), "--json"])).expect("json");
        let bkey = info["master_keys"][0]["key_id"]
            .as_str()
            .expect("id")
            .to_string();
        wait_for(
            "B's new key reaching the middle",
            Duration::from_secs(15),
            || mid.has_key(&bkey),
        );
    }
    assert!(
        !mid.has_key(&dkey),
        "D pushed with the hierarchy option off"
    );
    assert!(!mid.audit().contains(&d.fp), "D talked to its parent");

    // With the parent stopped: a clear error naming it, and local keys still mount.
    mid_srv.stop();
    let o = b.run(&[
        "mount",
        s(&copy),
        s(&mnt),
        "--key-server",
        &b_srv.url(),
        "--key-server-cert",
        &b.fp,
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("unreachable") && e.contains(&format!("127.0.0.1:{pm}")),
        "{e}"
    );
    a.ok(&[
        "mount",
        s(&store),
        s(&mnt),
        "--key-server",
        &a_srv.url(),
        "--key-server-cert",
        &pin(&a),
    ]);
    assert_eq!(fs::read(mnt.join("f3")).expect("read"), pattern(3, 3003));
    a.ok(&["umount", s(&mnt)]);

    // After every server restarts, the keys are still there and fetchable down the chain.
    for srv in [
        &mut top_srv,
        &mut mid_srv,
        &mut a_srv,
        &mut b_srv,
        &mut d_srv,
    ] {
        srv.restart();
    }
    let copy2 = env.path("copy2");
    sh_ok(&format!(
        "rsync -aHXS '{}/' '{}/'",
        store.display(),
        copy2.display()
    ));
    let e = CertHost::new(&env, "e");
    // E is a new host that only the top knows: it mounts through the top directly.
    drop(top_srv);
    let mut top_args = grant(&mid, "use,read,write,relay").to_vec();
    top_args.extend(grant(&e, "use"));
    let _top2 = Server::start(&env, &top, pt, &top_args);
    e.ok(&[
        "mount",
        s(&copy2),
        s(&mnt),
        "--key-server",
        &format!("https://127.0.0.1:{pt}"),
        "--key-server-cert",
        &pin(&top),
    ]);
    assert_eq!(fs::read(mnt.join("f7")).expect("read"), pattern(7, 7003));
    e.ok(&["umount", s(&mnt)]);
    drop((a_srv, b_srv, d_srv, mid_srv));
}

#[test]
fn a_tree_with_a_cycle_is_refused() {
    let env = Env::new();
    let (x, y) = (CertHost::new(&env, "x"), CertHost::new(&env, "y"));
    let (px, py) = (free_port(), free_port());
    let args = |parent: u16, parent_host: &CertHost, child: &CertHost| -> Vec<String> {
        let mut v: Vec<String> = vec![
            "--parent".into(),
            format!("https://127.0.0.1:{parent}"),
            "--parent-cert".into(),
            parent_host.pem.display().to_string(),
            "--hierarchy".into(),
            "--heartbeat".into(),
            "1s".into(),
        ];
        v.extend(grant(child, "use,read,write,relay"));
        v
    };
    let mut ax = args(py, &y, &y);
    ax.extend(grant(&x, "use"));
    let _sx = Server::start(&env, &x, px, &ax);
    let _sy = Server::start(&env, &y, py, &args(px, &x, &x));
    wait_for("a refused heartbeat", Duration::from_secs(10), || {
        x.audit()
            .lines()
            .any(|l| l.contains("\"op\":\"heartbeat\"") && l.contains("cycle"))
    });
    // And a lookup that would go round the cycle ends with a clear refusal, not a hang.
    let store = env.path("s");
    let z = CertHost::new(&env, "z");
    z.ok(&["init", s(&store), "--rsa-bits", "2048"]);
    let o = x.run(&[
        "fsck",
        s(&store),
        "--key-server",
        &format!("https://127.0.0.1:{px}"),
        "--key-server-cert",
        &x.fp,
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("cycle"), "{e}");
}

#[test]
fn requests_without_a_certificate_or_from_an_unknown_one_are_refused_and_audited() {
    let env = Env::new();
    let (srv_host, stranger) = (CertHost::new(&env, "srv"), CertHost::new(&env, "stranger"));
    let port = free_port();
    let _srv = Server::start(&env, &srv_host, port, &[]);
    let url = format!("https://127.0.0.1:{port}");
    let client = coffer::keys::hierarchy::client::Client::new(
        &url,
        Some(srv_host.fp.clone()),
        Duration::from_secs(5),
    )
    .expect("client");
    // /healthz answers anyone who speaks TLS.
    let r = client
        .request(None, "GET", "/healthz", &[], None)
        .expect("healthz");
    assert_eq!(r.status, 200);
    // No client certificate: 401.
    let r = client
        .request(None, "GET", "/v1/keys", &[], None)
        .expect("request");
    assert_eq!(r.status, 401, "{}", r.body);
    // A certificate the server has no grant for: 403.
    let id = stranger.identity();
    let r = client
        .request(Some(&id), "GET", "/v1/keys/0123", &[], None)
        .expect("request");
    assert_eq!(r.status, 403, "{}", r.body);
    let audit = srv_host.audit();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("no client certificate") && l.contains("\"outcome\":\"refused\"")),
        "{audit}"
    );
    assert!(
        audit
            .lines()
            .any(|l| l.contains(&stranger.fp) && l.contains("unknown certificate")),
        "{audit}"
    );
    // A wrong pin is refused by the client before anything is sent.
    let wrong = coffer::keys::hierarchy::client::Client::new(
        &url,
        Some(stranger.fp.clone()),
        Duration::from_secs(5),
    )
    .expect("client");
    let e = wrong
        .request(None, "GET", "/healthz", &[], None)
        .err()
        .expect("pin mismatch");
    assert!(e.to_string().contains("expected"), "{e}");
}

#[test]
fn a_hierarchy_server_without_a_parent_pin_refuses_to_start_and_a_mount_without_a_pin_refuses() {
    let env = Env::new();
    let h = CertHost::new(&env, "lonely");
    let o = h.run(&[
        "keyserver",
        "--keystore",
        s(&h.keystore),
        "--passphrase-file",
        s(&h.pass),
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--parent",
        "https://127.0.0.1:9",
        "--hierarchy",
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("needs the parent's certificate"), "{e}");
    let store = env.path("s");
    h.ok(&["init", s(&store), "--rsa-bits", "2048"]);
    let other = CertHost::new(&env, "other");
    let o = other.run(&["fsck", s(&store), "--key-server", "https://127.0.0.1:9"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("needs the server pinned"), "{e}");
}

/// The store id and current key id of a store.
fn ids(h: &Host, store: &std::path::Path) -> (String, String) {
    let v: serde_json::Value =
        serde_json::from_str(&h.ok(&["info", s(store), "--json"])).expect("json");
    (
        v["store_id"].as_str().expect("sid").to_string(),
        v["master_keys"][0]["key_id"]
            .as_str()
            .expect("kid")
            .to_string(),
    )
}

#[test]
fn a_grant_for_one_store_reaches_no_other_at_any_level_of_the_tree() {
    let env = Env::new();
    let (top, leaf, x, y) = (
        CertHost::new(&env, "top"),
        CertHost::new(&env, "leaf"),
        CertHost::new(&env, "x"),
        CertHost::new(&env, "y"),
    );
    // Two stores whose keys only the top holds.
    let (s1, s2) = (env.path("s1"), env.path("s2"));
    top.ok(&["init", s(&s1), "--rsa-bits", "2048"]);
    top.ok(&["init", s(&s2), "--rsa-bits", "2048"]);
    let (sid1, _) = ids(&top, &s1);
    let (pt, pl) = (free_port(), free_port());
    let mut top_args = grant(&leaf, "write,relay").to_vec();
    top_args.extend(grant(&x, &format!("use,store:{sid1}")));
    let _t = Server::start(&env, &top, pt, &top_args);
    // On the leaf, X and Y have `use` on every store: the leaf alone would hand them anything.
    let mut leaf_args: Vec<String> = vec![
        "--parent".into(),
        format!("https://127.0.0.1:{pt}"),
        "--parent-cert".into(),
        top.pem.display().to_string(),
        "--hierarchy".into(),
        "--heartbeat".into(),
        "1h".into(),
    ];
    leaf_args.extend(grant(&x, "use"));
    leaf_args.extend(grant(&y, "use"));
    let l = Server::start(&env, &leaf, pl, &leaf_args);
    let via_leaf = |h: &CertHost, store: &std::path::Path| {
        h.run(&[
            "fsck",
            s(store),
            "--key-server",
            &l.url(),
            "--key-server-cert",
            &leaf.fp,
        ])
    };
    // X's grant at the top names store 1: it gets that key through the leaf...
    let o = via_leaf(&x, &s1);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // ...and not store 2's, though the leaf grants it `use` on everything.
    let o = via_leaf(&x, &s2);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("has no grant for key"), "{e}");
    // Y has no grant at the top at all: the top refuses it, whoever relays.
    let o = via_leaf(&y, &s1);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains(&y.fp) && e.contains("no rights on this key server"),
        "{e}"
    );
    assert!(top
        .audit()
        .lines()
        .any(|l| l.contains(&y.fp) && l.contains("\"outcome\":\"refused\"")));
    // Asked directly, the top gives X store 1 and refuses store 2.
    let direct = |store: &std::path::Path| {
        x.run(&[
            "fsck",
            s(store),
            "--key-server",
            &format!("https://127.0.0.1:{pt}"),
            "--key-server-cert",
            &top.fp,
        ])
    };
    assert_eq!(direct(&s1).status.code(), Some(0));
    assert_eq!(direct(&s2).status.code(), Some(2));
    // A client that names another requester, without the relay right, is refused.
    let id = x.identity();
    let client = coffer::keys::hierarchy::client::Client::new(
        &format!("https://127.0.0.1:{pt}"),
        Some(top.fp.clone()),
        Duration::from_secs(5),
    )
    .expect("client");
    let (_, k2) = ids(&top, &s2);
    let r = client
        .request(
            Some(&id),
            "GET",
            &format!("/v1/keys/{k2}"),
            &[("X-Coffer-For", leaf.fp.clone())],
            None,
        )
        .expect("request");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body.to_string().contains("lacks the relay right"),
        "{}",
        r.body
    );
}

/// A TLS connection to a server on loopback, as `who` (or anonymous).
fn tls_to(
    port: u16,
    server_fp: &str,
    who: Option<&coffer::keys::HostIdentity>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let (cfg, _) = coffer::keys::hierarchy::tls::client_config(who, Some(server_fp.to_string()))
        .expect("config");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let conn = rustls::ClientConnection::new(cfg, name).expect("conn");
    let sock = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    rustls::StreamOwned::new(conn, sock)
}

#[test]
fn rights_are_checked_before_a_body_and_a_slow_client_is_cut_off() {
    use std::io::{Read, Write};
    let env = Env::new();
    let (srv_host, reader) = (CertHost::new(&env, "srv"), CertHost::new(&env, "reader"));
    let port = free_port();
    let _srv = Server::start(&env, &srv_host, port, grant(&reader, "read").as_ref());
    // A push from a client without `write` announces a large body and sends none of it: the
    // refusal comes at once, from the head alone (waiting for the body would hang the read).
    let id = reader.identity();
    let mut s = tls_to(port, &srv_host.fp, Some(&id));
    write!(
        s,
        "POST /v1/keys HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 900000\r\n\r\n"
    )
    .expect("head");
    s.flush().expect("flush");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(text.contains("lacks the write right"), "{text}");
    // A body over the limit, from a client with the right, is refused without being kept.
    let writer = CertHost::new(&env, "writer");
    drop(_srv);
    let _srv = Server::start(&env, &srv_host, port, grant(&writer, "write").as_ref());
    let wid = writer.identity();
    let mut s = tls_to(port, &srv_host.fp, Some(&wid));
    let big = vec![b'x'; 1_200_000];
    write!(
        s,
        "POST /v1/keys HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
        big.len()
    )
    .expect("head");
    let _ = s.write_all(&big);
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    // A client that sends its request head one byte a second is cut off (the head deadline
    // is 10 s); the bound here is generous, and what is awaited is the server closing.
    let mut s = tls_to(port, &srv_host.fp, Some(&wid));
    let head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut = false;
    for (sent, b) in head.iter().enumerate() {
        if s.write_all(&[*b]).and_then(|_| s.flush()).is_err() {
            cut = true;
            break;
        }
        // The pace is the attack (a byte a second); the bound counts bytes, not time: 60
        // of them, six times the server's deadline.
        assert!(sent < 60, "never cut off");
        std::thread::sleep(Duration::from_secs(1));
    }
    if !cut {
        // Every byte went out before the cut: the answer must then be a refusal or nothing,
        // never a served request.
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        assert!(
            !text.starts_with("HTTP/1.1 200"),
            "a byte-a-second client was served: {text}"
        );
    }
    // The server still answers others.
    let client = coffer::keys::hierarchy::client::Client::new(
        &format!("https://127.0.0.1:{port}"),
        Some(srv_host.fp.clone()),
        Duration::from_secs(5),
    )
    .expect("client");
    assert_eq!(
        client
            .request(None, "GET", "/healthz", &[], None)
            .expect("healthz")
            .status,
        200
    );
}

/// A stopped server high in the tree does not stop the pushes below it: the middle server
/// answers its chain as far as it knows it, and the leaf's keys still reach the middle.
#[test]
fn a_stopped_top_does_not_stop_the_pushes_below_it() {
    let env = Env::new();
    let (top, mid, leaf) = (
        CertHost::new(&env, "top"),
        CertHost::new(&env, "mid"),
        CertHost::new(&env, "leaf"),
    );
    let (pt, pm) = (free_port(), free_port());
    let mut top_srv = Server::start(&env, &top, pt, &grant(&mid, "read,write"));
    let mut mid_args = child_of(&top, pt);
    mid_args.extend(grant(&leaf, "read,write"));
    let _mid = Server::start(&env, &mid, pm, &mid_args);
    let _leaf = Server::start(&env, &leaf, free_port(), &child_of(&mid, pm));
    let store_key = |i: usize| {
        let store = env.path(&format!("store{i}"));
        leaf.ok(&["init", s(&store), "--rsa-bits", "2048"]);
        let info: serde_json::Value =
            serde_json::from_str(&leaf.ok(&["info", s(&store), "--json"])).expect("json");
        info["master_keys"][0]["key_id"]
            .as_str()
            .expect("id")
            .to_string()
    };
    let first = store_key(0);
    let limit = Duration::from_secs(30);
    wait_for("the leaf's key at the top", limit, || top.has_key(&first));

    top_srv.stop();
    let second = store_key(1);
    wait_for(
        "the leaf's new key at the middle, the top stopped",
        limit,
        || mid.has_key(&second),
    );
    assert!(!top.has_key(&second));
    let refused = leaf
        .audit()
        .lines()
        .filter(|l| l.contains("\"op\":\"heartbeat\""))
        .count();
    assert_eq!(
        refused,
        0,
        "the leaf's heartbeats all went through: {}",
        leaf.audit()
    );
}
