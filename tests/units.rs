//! The systemd units in dist/systemd: `systemd-analyze verify` finds nothing to say of any of
//! them, and coffer-mount@.service's own ExecStart and ExecStop lines, run as systemd runs
//! them (its credential directory, the environment file docs/admin.md makes, %f), mount and
//! unmount a store.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{bin, require_fuse, s, Env, PASS};

fn units() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/systemd");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("dist/systemd")
        .map(|e| e.expect("entry").path())
        .collect();
    v.sort();
    v
}

#[test]
fn systemd_analyze_verify_is_clean_for_every_unit() {
    let found = Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "systemd-analyze is missing (apt-get install systemd); tools/setup.sh installs it"
    );
    let tmp = tempfile::tempdir().expect("tmp");
    let mut names = Vec::new();
    for u in units() {
        // The installed path of the program, as the package puts it, is this build's here.
        let text = std::fs::read_to_string(&u).expect("read unit");
        let name = u.file_name().expect("name").to_string_lossy().into_owned();
        std::fs::write(
            tmp.path().join(&name),
            text.replace("/usr/bin/coffer", bin()),
        )
        .expect("write");
        // A template is verified through an instance of it (found by its template's file).
        names.push(tmp.path().join(name.replace("@.", "@mnt-backup.")));
    }
    assert!(names.len() >= 4, "{names:?}");
    for n in &names {
        // The man pages they name are checked where the package installs them
        // (tests/package.sh); here they are not installed.
        let o = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(n)
            .env("SYSTEMD_UNIT_PATH", format!("{}:", s(tmp.path())))
            .output()
            .expect("systemd-analyze");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() && err.trim().is_empty(),
            "{}: {err}",
            n.display()
        );
    }
}

/// The values of `key=` lines in a unit file.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(String::from)
        .collect()
}

/// Run docs/admin.md's command that writes the mount's environment file (into a directory
/// of the test's for /etc/coffer/mount, naming the test's store), and read the file as
/// systemd's EnvironmentFile= does: KEY=VALUE lines.
fn admin_env_file(env: &Env) -> std::collections::HashMap<String, String> {
    let doc = common::admin_doc();
    let line = doc
        .lines()
        .find(|l| l.starts_with("printf 'COFFER_STORE="))
        .expect("the environment file's line in docs/admin.md");
    let dir = env.path("etc-coffer-mount");
    std::fs::create_dir(&dir).expect("mkdir");
    let cmd = line
        .replace("/etc/coffer/mount", s(&dir))
        .replace("/srv/backup/store", s(&env.store));
    common::sh_ok(&cmd);
    let text = std::fs::read_to_string(dir.join("mnt-backup.env")).expect("env file");
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_mount_units_commands_mount_with_the_credential_and_unmount() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/systemd/coffer-mount@.service"),
    )
    .expect("unit");
    assert_eq!(
        unit_values(&unit, "LoadCredential"),
        ["passphrase:/etc/coffer/mount/%i.passphrase"]
    );
    // What systemd makes of them: the credential in a directory of its own, the environment
    // file's variables, %f the unescaped instance (the mount point).
    let creds = env.path("credentials");
    std::fs::create_dir(&creds).expect("mkdir");
    std::fs::copy(&env.pass, creds.join("passphrase")).expect("copy");
    // The environment file as docs/admin.md makes it, for this test's store.
    let vars = admin_env_file(&env);
    let options = format!("--log {} {}", s(&env.log), vars["COFFER_MOUNT_OPTIONS"]);
    let store = vars["COFFER_STORE"].clone();
    let expand = |line: &str| -> Vec<String> {
        line.replace("/usr/bin/coffer", bin())
            .replace("${CREDENTIALS_DIRECTORY}", s(&creds))
            .replace("${COFFER_STORE}", &store)
            .replace("%f", s(&env.mnt))
            .split_whitespace()
            .flat_map(|w| match w {
                "$COFFER_MOUNT_OPTIONS" => options.split(' ').map(String::from).collect(),
                w => vec![w.to_string()],
            })
            .collect()
    };
    let run = |line: &str| {
        let argv = expand(line);
        let o = Command::new(&argv[0])
            .args(&argv[1..])
            .env("COFFER_KEYSTORE", &env.keystore)
            .env_remove("COFFER_PASSPHRASE_FILE")
            .output()
            .expect("run");
        assert!(
            o.status.success(),
            "{argv:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    let start = unit_values(&unit, "ExecStart");
    run(&start[0]);
    let mounted = common::Mounted::adopt(&env);
    std::fs::write(mounted.p("f"), b"by the unit").expect("write");
    assert_eq!(std::fs::read(mounted.p("f")).expect("read"), b"by the unit");
    // The passphrase is nowhere on the daemon's command line.
    let cmdline =
        std::fs::read(format!("/proc/{}/cmdline", mounted.daemon_pid())).expect("cmdline");
    assert!(!String::from_utf8_lossy(&cmdline).contains(PASS));
    std::mem::forget(mounted);
    run(&unit_values(&unit, "ExecStop")[0]);
    assert!(env.wait_released(), "the daemon released the store");
    env.assert_fsck_clean();
}

/// systemd's fstab generator makes a `.mount` of docs/admin.md's fstab line (mount at boot:
/// without noauto), of type fuse.coffer, after the network, wanted by remote-fs.target; and
/// systemd-analyze verify finds nothing to say of it.
#[test]
fn the_fstab_line_becomes_a_mount_unit_that_verifies() {
    let generator = Path::new("/lib/systemd/system-generators/systemd-fstab-generator");
    assert!(
        generator.exists(),
        "systemd's fstab generator is missing (apt-get install systemd)"
    );
    let line = common::admin_fstab_line().replace("noauto,", "");
    let tmp = tempfile::tempdir().expect("tmp");
    let (tab, out) = (tmp.path().join("fstab"), tmp.path().join("out"));
    std::fs::write(&tab, format!("{line}\n")).expect("write");
    std::fs::create_dir(&out).expect("mkdir");
    let o = Command::new(generator)
        .args([&out, &out, &out])
        .env("SYSTEMD_FSTAB", &tab)
        .output()
        .expect("generator");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let unit = std::fs::read_to_string(out.join("mnt-backup.mount")).expect("mnt-backup.mount");
    for want in [
        "Type=fuse.coffer",
        "Where=/mnt/backup",
        "What=/srv/backup/store",
        "After=network-online.target",
    ] {
        assert!(unit.lines().any(|l| l == want), "{want} in {unit}");
    }
    assert!(
        out.join("remote-fs.target.wants/mnt-backup.mount").exists(),
        "_netdev: a remote mount"
    );
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(out.join("mnt-backup.mount"))
        .output()
        .expect("systemd-analyze");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && err.trim().is_empty(), "{err}");
}

/// A unit whose configuration is missing must fail, naming it, never be skipped in silence:
/// no unit of ours has a Condition*= line (a failed condition skips the unit and the boot
/// goes on as if nothing were wrong); coffer-mount@ asserts its environment file instead.
#[test]
fn a_missing_configuration_fails_a_unit_rather_than_skipping_it() {
    for unit in units() {
        let text = std::fs::read_to_string(&unit).expect("unit");
        let conditions: Vec<_> = text
            .lines()
            .filter(|l| l.trim_start().starts_with("Condition"))
            .collect();
        assert!(conditions.is_empty(), "{}: {conditions:?}", unit.display());
    }
    let mount = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("dist/systemd/coffer-mount@.service"),
    )
    .expect("unit");
    assert!(
        mount.contains("\nAssertPathExists=/etc/coffer/mount/%i.env\n"),
        "{mount}"
    );
}
