//! The provider chain end to end, on real parts: a KMS (PyKMIP on loopback) that a test stops,
//! key servers over TLS, real mounts. One chain for every store: a kms store mounts through a
//! key server while its KMS is down; a local store's key may live only on a key server; a key
//! found nowhere is one line naming every provider asked; backups go on, backup-only, when no
//! provider answers; the keystore is opened once, with one prompt; and a key operation that
//! cannot be audited does not happen.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::keyservers::{free_port, grant, wait_for, CertHost, Server};
use common::kms::PrivateKms;
use common::{pattern, require_fuse, s, Env, Host, MountGuard};

/// Run coffer as `h` with a KMS configuration (and nothing else from the environment).
fn run_kms(h: &Host, cfg: &Path, args: &[&str]) -> Output {
    h.run_env(args, &[("COFFER_KMS_CONFIG", cfg)])
}

/// `from` exports the store's keys (through its chain, with `cfg` as its KMS configuration)
/// to `to`'s certificate, and `to` imports them.
fn hand_keys(env: &Env, from: &Host, cfg: &Path, store: &Path, to: &CertHost) {
    let file = env.path(&format!("{}-to-{}.keys", from.name, to.name));
    let args = [
        "keys",
        "export",
        s(store),
        "--recipient",
        s(&to.pem),
        "--out",
        s(&file),
    ];
    ok_kms(from, cfg, &args);
    to.ok(&["keys", "import", s(&file)]);
}

fn ok_kms(h: &Host, cfg: &Path, args: &[&str]) -> String {
    let o = run_kms(h, cfg, args);
    assert!(
        o.status.success(),
        "{}: coffer {args:?}: {}",
        h.name,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Exit 2 and one line on stderr; returns it.
fn one_line_failure(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    err
}

fn key_id_of(store: &Path) -> String {
    let d: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("coffer.store")).expect("read"))
            .expect("json");
    d["master_keys"][0]["key_id"]
        .as_str()
        .expect("key id")
        .to_string()
}

/// A kms store made by `admin` (whose keystore exists, so it keeps a backup credential),
/// with one file written through a mount.
fn kms_store(env: &Env, admin: &Host, cfg: &Path) -> std::path::PathBuf {
    let store = env.path("store");
    let o = run_kms(
        admin,
        cfg,
        &["init", s(&store), "--provider", "kms", "--rsa-bits", "2048"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(said.contains("kept a backup credential"), "{said}");
    let mnt = env.path("mnt-admin");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    ok_kms(admin, cfg, &["mount", s(&store), s(&mnt)]);
    let g = MountGuard(mnt.clone());
    std::fs::write(mnt.join("old"), pattern(1, 70_000)).expect("write");
    ok_kms(admin, cfg, &["umount", s(&mnt)]);
    drop(g);
    store
}

/// An admin host with a keystore of its own (made by `keys cert`).
fn admin_host(env: &Env) -> CertHost {
    CertHost::new(env, "admin")
}

#[test]
fn a_kms_store_mounts_through_the_key_server_tree_while_its_kms_is_down() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    let k = PrivateKms::start(env.path("kms"), common::kms::private_port(1));
    let admin = admin_host(&env);
    let store = kms_store(&env, &admin, &k.config);
    let key_id = key_id_of(&store);
    // A leaf server pushes up to the top at each heartbeat; the client is granted at the top.
    let (top, leaf, client) = (
        CertHost::new(&env, "top"),
        CertHost::new(&env, "leaf"),
        CertHost::new(&env, "client"),
    );
    let (pt, pl) = (free_port(), free_port());
    let mut top_args = grant(&leaf, "write").to_vec();
    top_args.extend(grant(&client, "use"));
    let _top = Server::start(&env, &top, pt, &top_args);
    let leaf_args: Vec<String> = vec![
        "--parent".into(),
        format!("https://127.0.0.1:{pt}"),
        "--parent-cert".into(),
        s(&top.pem).into(),
        "--hierarchy".into(),
        "--heartbeat".into(),
        "1s".into(),
    ];
    let _leaf = Server::start(&env, &leaf, pl, &leaf_args);
    // The kms store's key reaches the leaf as an export from the KMS, like any key.
    hand_keys(&env, &admin, &k.config, &store, &leaf);
    wait_for(
        "the kms store's key reaching the top",
        Duration::from_secs(30),
        || top.has_key(&key_id),
    );

    k.stop();
    let mnt = env.path("mnt-client");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    let url = format!("https://127.0.0.1:{pt}");
    let args = [
        "mount",
        s(&store),
        s(&mnt),
        "--key-server",
        &url,
        "--key-server-cert",
        s(&top.pem),
    ];
    let o = run_kms(&client, &k.config, &args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let g = MountGuard(mnt.clone());
    assert_eq!(
        std::fs::read(mnt.join("old")).expect("read"),
        pattern(1, 70_000)
    );
    std::fs::write(mnt.join("new"), pattern(2, 5000)).expect("write");
    client.ok(&["umount", s(&mnt)]);
    drop(g);
    assert!(top
        .audit()
        .lines()
        .any(|l| l.contains("\"op\":\"fetch\"") && l.contains(&key_id)));
}

#[test]
fn a_local_stores_key_only_on_a_key_server_and_providers_narrowed_or_reordered() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    let (owner, srv, client) = (
        CertHost::new(&env, "owner"),
        CertHost::new(&env, "srv"),
        CertHost::new(&env, "client"),
    );
    let store = env.path("store");
    owner.ok(&["init", s(&store), "--rsa-bits", "2048"]);
    hand_keys(&env, &owner, &env.path("no-kms.toml"), &store, &srv);
    let port = free_port();
    let _srv = Server::start(&env, &srv, port, &grant(&client, "use"));
    let url = format!("https://127.0.0.1:{port}");
    let mnt = env.path("mnt");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    let fsck = |providers: &str| {
        client.run(&[
            "fsck",
            s(&store),
            "--key-server",
            &url,
            "--key-server-cert",
            s(&srv.pem),
            "--providers",
            providers,
        ])
    };
    // Local alone: not here, in one line naming the keystore.
    let e = one_line_failure(&fsck("local"));
    assert!(e.contains("was found by no key provider"), "{e}");
    assert!(
        e.contains(&format!("keystore {}: not here", client.keystore.display())),
        "{e}"
    );
    assert!(!e.contains("https://"), "the key server was not asked: {e}");
    // Reordered, and the key server asked first: found.
    let o = fsck("hierarchy,local");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The same through the configuration file, for a mount.
    let cfg = env.path("coffer.toml");
    std::fs::write(
        &cfg,
        format!("providers = [\"local\", \"hierarchy\"]\n[[key_servers]]\nurl = \"{url}\"\ncert = \"{}\"\n", srv.fp),
    )
    .expect("write");
    client.ok(&["mount", s(&store), s(&mnt), "--config", s(&cfg)]);
    let g = MountGuard(mnt.clone());
    std::fs::write(mnt.join("f"), b"through the key server").expect("write");
    client.ok(&["umount", s(&mnt)]);
    drop(g);
    let e = one_line_failure(&client.run(&[
        "fsck",
        s(&store),
        "--config",
        s(&cfg),
        "--providers",
        "kms",
    ]));
    assert!(e.contains("no provider was asked"), "{e}");
}

#[test]
fn a_key_found_nowhere_is_one_line_naming_every_provider_and_why() {
    let env = Env::new();
    let k = PrivateKms::start(env.path("kms"), common::kms::private_port(2));
    let admin = admin_host(&env);
    let store = kms_store_no_mount(&env, &admin, &k.config);
    let (empty, client) = (CertHost::new(&env, "empty"), CertHost::new(&env, "client"));
    let port = free_port();
    let _srv = Server::start(&env, &empty, port, &grant(&client, "use"));
    let silent = free_port();
    let cfg = env.path("coffer.toml");
    std::fs::write(
        &cfg,
        format!(
            "key_server_timeout = \"1s\"\n[[key_servers]]\nurl = \"https://127.0.0.1:{port}\"\n\
             cert = \"{}\"\n[[key_servers]]\nurl = \"https://127.0.0.1:{silent}\"\ncert = \"{}\"\n",
            empty.fp, empty.fp
        ),
    )
    .expect("write");
    k.stop();
    let o = run_kms(
        &client,
        &k.config,
        &["fsck", s(&store), "--config", s(&cfg)],
    );
    let e = one_line_failure(&o);
    for want in [
        format!("keystore {}: not here", client.keystore.display()),
        format!("key server https://127.0.0.1:{port}: not here"),
        format!("key server https://127.0.0.1:{silent} is unreachable"),
        format!("cannot reach the KMS at 127.0.0.1:{}", k.port),
    ] {
        assert!(e.contains(&want), "wanted '{want}' in: {e}");
    }
}

/// A kms store without a mount (for tests that need no FUSE).
fn kms_store_no_mount(env: &Env, admin: &Host, cfg: &Path) -> std::path::PathBuf {
    let store = env.path("store");
    ok_kms(
        admin,
        cfg,
        &["init", s(&store), "--provider", "kms", "--rsa-bits", "2048"],
    );
    store
}

#[test]
fn backups_keep_running_backup_only_while_every_provider_is_down() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    let k = PrivateKms::start(env.path("kms"), common::kms::private_port(3));
    let admin = admin_host(&env);
    let store = kms_store(&env, &admin, &k.config);
    k.stop();
    let mnt = env.path("mnt");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    let kms_down = format!("cannot reach the KMS at 127.0.0.1:{}", k.port);
    // Without a fallback: refused, naming the KMS, and saying what would keep backups going.
    let e = one_line_failure(&run_kms(&admin, &k.config, &["mount", s(&store), s(&mnt)]));
    assert!(
        e.contains(&kms_down) && e.contains("--fallback backup-only"),
        "{e}"
    );
    // With it: backup-only, saying which provider failed, on stderr and in the log.
    let log = env.path("fallback.log");
    let o = run_kms(
        &admin,
        &k.config,
        &[
            "mount",
            s(&store),
            s(&mnt),
            "--fallback",
            "backup-only",
            "--log",
            s(&log),
        ],
    );
    let said = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{said}");
    let g = MountGuard(mnt.clone());
    assert!(
        said.contains("mounting backup-only (fallback)") && said.contains(&kms_down),
        "{said}"
    );
    let logged = std::fs::read_to_string(&log).expect("log");
    assert!(
        logged.contains("backup-only (fallback)") && logged.contains(&kms_down),
        "{logged}"
    );
    std::fs::write(mnt.join("new-backup"), pattern(9, 200_000)).expect("a new backup");
    // A restore of an old file fails clearly: EACCES, as on any backup-only mount.
    let e = std::fs::read(mnt.join("old")).expect_err("old files do not read");
    assert_eq!(e.raw_os_error(), Some(libc::EACCES));
    admin.ok(&["umount", s(&mnt)]);
    drop(g);
    // The same from the configuration file.
    let cfg = env.path("coffer.toml");
    std::fs::write(&cfg, "fallback = \"backup-only\"\n").expect("write");
    ok_kms(
        &admin,
        &k.config,
        &["mount", s(&store), s(&mnt), "--config", s(&cfg)],
    );
    let g = MountGuard(mnt.clone());
    std::fs::write(mnt.join("second-backup"), b"x").expect("write");
    admin.ok(&["umount", s(&mnt)]);
    drop(g);
    // The KMS back: everything reads, old and new.
    k.restart();
    ok_kms(&admin, &k.config, &["mount", s(&store), s(&mnt)]);
    let g = MountGuard(mnt.clone());
    assert_eq!(
        std::fs::read(mnt.join("old")).expect("old"),
        pattern(1, 70_000)
    );
    assert_eq!(
        std::fs::read(mnt.join("new-backup")).expect("new"),
        pattern(9, 200_000)
    );
    admin.ok(&["umount", s(&mnt)]);
    drop(g);
}

/// Run coffer on a pseudo-terminal, answering each passphrase prompt; returns how many prompts
/// it saw and the exit code.
fn on_a_terminal(h: &Host, cfg: &Path, args: &[&str]) -> (usize, i32, String) {
    let script = r#"
import json, os, pty, select, sys
answer = open(sys.argv[1], 'rb').read().strip() + b'\n'
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
out, prompts, seen = b'', 0, 0
while True:
    r, _, _ = select.select([fd], [], [], 120)
    if not r:
        break
    try:
        data = os.read(fd, 4096)
    except OSError:
        break
    if not data:
        break
    out += data
    while out.count(b'passphrase: ') > seen:
        seen += 1
        prompts += 1
        os.write(fd, answer)
_, status = os.waitpid(pid, 0)
print(json.dumps({"prompts": prompts, "code": os.waitstatus_to_exitcode(status), "out": out.decode('utf-8', 'replace')}))
"#;
    let o = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&h.pass)
        .arg(common::bin())
        .args(args)
        .env("COFFER_KEYSTORE", &h.keystore)
        .env("COFFER_KMS_CONFIG", cfg)
        .env_remove("COFFER_PASSPHRASE_FILE")
        .output()
        .expect("python3 pty");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("pty harness: {}", String::from_utf8_lossy(&o.stderr)));
    (
        v["prompts"].as_u64().unwrap_or(0) as usize,
        v["code"].as_i64().unwrap_or(-1) as i32,
        v["out"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn the_keystore_is_opened_once_with_one_prompt() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    let kms = common::kms::shared();
    let admin = admin_host(&env);
    let store = kms_store(&env, &admin, kms);
    // This keystore now holds both a backup credential for the store and its key.
    hand_keys(&env, &admin, kms, &store, &admin);
    let mnt = env.path("mnt");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    let (prompts, code, out) = on_a_terminal(&admin, kms, &["mount", s(&store), s(&mnt)]);
    let _g = MountGuard(mnt.clone());
    assert_eq!(code, 0, "{out}");
    assert_eq!(prompts, 1, "one prompt: {out}");
    assert_eq!(
        std::fs::read(mnt.join("old")).expect("read"),
        pattern(1, 70_000)
    );
    admin.ok(&["umount", s(&mnt)]);
    let (prompts, code, out) = on_a_terminal(&admin, kms, &["fsck", s(&store)]);
    assert_eq!((prompts, code), (1, 0), "{out}");
}

#[test]
fn a_key_operation_that_cannot_be_audited_does_not_happen() {
    let env = Env::new();
    let owner = CertHost::new(&env, "owner");
    let store = env.path("store");
    owner.ok(&["init", s(&store), "--rsa-bits", "2048"]);
    let audit = owner.keystore.join("audit.log");
    std::fs::remove_file(&audit).expect("rm");
    std::fs::create_dir(&audit).expect("a directory where the log should be");
    let out = env.path("store.keys");
    let e = one_line_failure(&owner.run(&[
        "keys",
        "export",
        s(&store),
        "--recipient",
        s(&owner.pem),
        "--out",
        s(&out),
    ]));
    assert!(
        e.contains("cannot write the audit log") && e.contains("was not done"),
        "{e}"
    );
    assert!(!out.exists(), "no export file is left behind");
    // Unlocking a store gets its key from the keystore: not without the record.
    let e = one_line_failure(&owner.run(&["fsck", s(&store)]));
    assert!(e.contains("cannot write the audit log"), "{e}");
    let e = one_line_failure(&owner.run(&["keys", "rotate", s(&store)]));
    assert!(e.contains("cannot write the audit log"), "{e}");
    std::fs::remove_dir(&audit).expect("rmdir");
    owner.ok(&[
        "keys",
        "export",
        s(&store),
        "--recipient",
        s(&owner.pem),
        "--out",
        s(&out),
    ]);
    assert!(std::fs::read_to_string(&audit)
        .expect("log")
        .contains("\"op\":\"export\""));

    // A key server does not hand out a key it cannot record handing out.
    let (srv, client) = (CertHost::new(&env, "srv"), CertHost::new(&env, "client"));
    hand_keys(&env, &owner, &env.path("no-kms.toml"), &store, &srv);
    let server_log = env.path("server-audit");
    std::fs::create_dir(&server_log).expect("a directory where the log should be");
    let port = free_port();
    let mut args = grant(&client, "use").to_vec();
    args.extend(["--audit-log".to_string(), s(&server_log).to_string()]);
    let _srv = Server::start(&env, &srv, port, &args);
    let url = format!("https://127.0.0.1:{port}");
    let e = one_line_failure(&client.run(&[
        "fsck",
        s(&store),
        "--key-server",
        &url,
        "--key-server-cert",
        s(&srv.pem),
    ]));
    assert!(e.contains("cannot write the audit log"), "{e}");
    assert!(!client.audit().contains("\"op\":\"key-add\""));
}

/// The key operations are library calls with typed errors: a program other than the `coffer`
/// binary can create, rotate, export and resolve through the same chain.
#[test]
fn the_key_operations_are_library_calls_with_typed_errors() {
    use coffer::keys::chain::Said;
    use coffer::keys::{self, Chain, ChainSettings, KeyError, KeyFlags, Refusal, Secrets, Target};
    use coffer::store::{InitOptions, KeyHome};

    struct Fixed(std::path::PathBuf);
    impl Secrets for Fixed {
        fn keystore_passphrase(
            &self,
            _dir: &Path,
            _new: bool,
        ) -> Result<zeroize::Zeroizing<Vec<u8>>, keys::KeystoreError> {
            keys::passphrase_from_file(&self.0)
        }
    }
    let env = Env::new();
    let h = Host::new(&env, "lib");
    let flags = KeyFlags {
        config: Some(env.path("absent-is-an-error.toml")),
        keystore: Some(h.keystore.clone()),
        ..KeyFlags::default()
    };
    assert!(matches!(
        ChainSettings::resolve(&flags),
        Err(keys::config::ConfigError::Read(..))
    ));
    let flags = KeyFlags {
        config: None,
        kms_config: Some(env.path("no-kms.toml")),
        ..flags
    };
    let chain = Chain::new(
        ChainSettings::resolve(&flags).expect("settings"),
        Box::new(Fixed(h.pass.clone())),
    );
    let new = keys::init::NewStore {
        root: env.path("lib-store"),
        options: InitOptions {
            rsa_bits: 2048,
            block_shift: 12,
            policy: Some("daily".into()),
            copy: None,
            provider: KeyHome::Local,
            kms: None,
        },
        recovery: None,
    };
    let created = keys::init::init(&chain, &new).expect("init");
    let rotated = keys::versions::rotate(&chain, &new.root).expect("rotate");
    assert_eq!((rotated.from_version, rotated.version), (1, 2));
    match keys::versions::sync(&chain, &new.root, &Default::default()) {
        Err(KeyError::Refused(Refusal::NotKms(id))) => assert_eq!(id, created.desc.store_id),
        other => panic!("sync of a local store: {:?}", other.err()),
    }
    let out = env.path("lib.keys");
    let done = keys::export::export(&chain, &new.root, keys::export::Wrap::Password(b"pw"), &out)
        .expect("export");
    // The descriptor names only the current version after a rotation: that is what leaves.
    assert_eq!(done.keys.len(), 1);
    assert_eq!(done.keys[0].2, 2);
    // A key this host does not hold: not here, said by the keystore, typed.
    let missing = Target {
        store_id: &created.desc.store_id,
        key_id: "00112233445566778899aabbccddeeff",
        uid: None,
    };
    match chain.resolve(&missing) {
        Err(KeyError::NotFound { attempts, .. }) => {
            assert_eq!(attempts.0.len(), 1);
            assert!(matches!(attempts.0[0].said, Said::NotHere));
            assert!(!attempts.any_failed());
        }
        other => panic!("expected NotFound, got {:?}", other.err()),
    }
}
