//! `--json` on the commands that report what they did (keys export, keys import, keys
//! rotate, upgrade, keys backup-credential, recover, backup, restore): one JSON object on
//! stdout, with the same facts as the text.

mod common;

use common::{s, Env, Host};

fn json(out: &str) -> serde_json::Value {
    assert_eq!(out.trim().lines().count(), 1, "one JSON object: {out}");
    serde_json::from_str(out).expect("JSON")
}

#[test]
fn export_import_rotate_and_upgrade_report_in_json() {
    let env = Env::new();
    let (a, b) = (Host::new(&env, "a"), Host::new(&env, "b"));
    let store = env.path("store");
    let store_id = a
        .ok(&["init", s(&store), "--rsa-bits", "2048"])
        .trim()
        .to_string();
    let key_id = a.key_ids()[0].clone();
    let pem = env.path("b.pem");
    let fp = b.ok(&["keys", "cert", "--out", s(&pem)]).trim().to_string();
    let file = env.path("for-b.keys");
    let args = [
        "keys",
        "export",
        s(&store),
        "--recipient",
        s(&pem),
        "--out",
        s(&file),
        "--json",
    ];
    let v = json(&a.ok(&args));
    assert_eq!(v["keys"][0]["key_id"], key_id.as_str(), "{v}");
    assert_eq!(v["keys"][0]["store_id"], store_id.as_str(), "{v}");
    assert_eq!(v["recipient"], fp.as_str(), "{v}");

    let v = json(&b.ok(&["keys", "import", s(&file), "--json"]));
    assert_eq!(v["keys"][0]["key_id"], key_id.as_str(), "{v}");
    assert_eq!(v["keys"][0]["new"], true, "{v}");
    let v = json(&b.ok(&["keys", "import", s(&file), "--json"]));
    assert_eq!(v["keys"][0]["new"], false, "imported twice: {v}");

    let v = json(&a.ok(&["keys", "rotate", s(&store), "--json"]));
    assert_eq!(
        (v["from_version"].as_u64(), v["version"].as_u64()),
        (Some(1), Some(2)),
        "{v}"
    );
    assert_eq!(v["store_id"], store_id.as_str());
    assert!(
        v["key_id"].as_str().is_some_and(|k| k != key_id),
        "a new key: {v}"
    );

    let v = json(&a.ok(&["upgrade", s(&store), "--json"]));
    assert_eq!(
        (v["already"].as_bool(), v["format"].as_u64()),
        (Some(true), Some(3)),
        "{v}"
    );
    assert_eq!(v["store_id"], store_id.as_str());
}

#[test]
fn backup_credential_and_recover_report_in_json() {
    let env = Env::new();
    let (a, b) = (Host::new(&env, "a"), Host::new(&env, "b"));
    let (store, org) = (env.path("store"), env.path("org"));
    a.ok(&["keys", "recovery-key", "--out", s(&org), "--bits", "3072"]);
    let pem = env.path("org.pem");
    let store_id = a
        .ok(&[
            "init",
            s(&store),
            "--rsa-bits",
            "2048",
            "--recovery-cert",
            s(&pem),
        ])
        .trim()
        .to_string();
    let key_id = a.key_ids()[0].clone();
    let b_pem = env.path("b.pem");
    let fp = b
        .ok(&["keys", "cert", "--out", s(&b_pem)])
        .trim()
        .to_string();
    let cred = env.path("b.cred");
    let args = [
        "keys",
        "backup-credential",
        s(&store),
        "--recipient",
        s(&b_pem),
        "--out",
        s(&cred),
        "--json",
    ];
    let v = json(&a.ok(&args));
    assert_eq!(v["store_id"], store_id.as_str(), "{v}");
    assert_eq!(v["recipient"], fp.as_str(), "{v}");
    assert!(cred.exists());

    // A keystore lost: the recovery key puts the store's key back.
    std::fs::remove_dir_all(&a.keystore).expect("rm keystore");
    let key = env.path("org.key");
    let v = json(&a.ok(&["recover", s(&store), "--recovery-key", s(&key), "--json"]));
    assert_eq!(v["keys"][0]["key_id"], key_id.as_str(), "{v}");
    assert_eq!(v["keys"][0]["new"], true, "{v}");
}

/// `backup --dry-run --json` and `restore --json`: stdout is the summary alone, one JSON
/// object and a newline (a dry run's "would write" lines printed before it on stdout, so
/// stdout was not JSON); what the dry run would do goes to stderr.
#[test]
fn a_dry_run_backup_and_a_restore_print_json_alone_on_stdout() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("d")).expect("mkdir");
    std::fs::write(src.join("d/f"), b"x").expect("write");
    let (src_arg, dest) = (format!("{}/", s(&src)), format!("{}:x", s(&env.store)));
    let o = env.coffer(&["backup", &src_arg, &dest, "--dry-run", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.ends_with("}\n"), "{out:?}");
    let v = json(&out);
    assert_eq!(v["dry_run"], true, "{v}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("would write") && err.contains("d/f"), "{err}");

    env.coffer_ok(&["backup", &src_arg, &dest]);
    let to = env.path("out");
    let o = env.coffer(&["restore", &format!("{dest}/"), s(&to), "--json"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && out.ends_with("}\n"), "{out:?}");
    assert_eq!(json(&out)["files_written"], 1, "{out}");
}
