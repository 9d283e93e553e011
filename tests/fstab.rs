//! A store in /etc/fstab, and `mount -t fuse.coffer`, as an administrator uses them: mount(8)
//! runs mount.fuse3, which runs `coffer STORE MOUNTPOINT -o OPTIONS`. Each test works in a
//! private mount namespace with its own /etc/fstab bound over the machine's.

mod common;

use std::path::Path;
use std::process::Output;

use common::{bin, require_fuse, s, Env, Mounted};

/// `script` run by sh in a private mount namespace, with this test's fstab over /etc/fstab
/// and the coffer under test in /usr/local/sbin, first on the PATH that mount(8) gives
/// mount.fuse3 (it sets its own, so the coffer it runs is the one found there).
fn in_namespace(env: &Env, fstab: &str, script: &str) -> Output {
    let tab = env.path("fstab");
    std::fs::write(&tab, fstab).expect("write fstab");
    let dir = Path::new(bin()).parent().expect("bin dir");
    let inner = format!(
        "mount --bind {} /usr/local/sbin && mount --bind {} /etc/fstab && {script}",
        s(dir),
        s(&tab)
    );
    std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &inner])
        .env_remove("COFFER_KEYSTORE")
        .env_remove("COFFER_PASSPHRASE_FILE")
        .output()
        .expect("unshare")
}

fn options(env: &Env) -> String {
    format!(
        "keystore={},passphrase_file={},log={}",
        s(&env.keystore),
        s(&env.pass),
        s(&env.log)
    )
}

#[test]
fn an_fstab_line_mounts_with_mount_and_unmounts_with_umount() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    // The line docs/admin.md gives, with this test's paths, and its log kept with the test.
    let fstab = common::admin_fstab_line()
        .replace("/srv/backup/store", s(&env.store))
        .replace("/mnt/backup", s(&env.mnt))
        .replace("/var/lib/coffer/keystore", s(&env.keystore))
        .replace("/etc/coffer/mount/mnt-backup.passphrase", s(&env.pass))
        .replace("  0 0", &format!(",log={}  0 0\n", s(&env.log)));
    let m = s(&env.mnt);
    let script = format!(
        "mount {m} && grep -q ' {m} .* - fuse.coffer coffer:' /proc/self/mountinfo && \
         printf 'kept by fstab' > {m}/file && umount {m} && echo unmounted"
    );
    let o = in_namespace(&env, &fstab, &script);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("unmounted"),
        "mount, write, umount: {out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        env.wait_released(),
        "after umount the daemon flushes, releases the store and exits"
    );
    // What went in through the fstab mount is there for an ordinary one.
    let mounted = env.mount();
    assert_eq!(
        std::fs::read(mounted.p("file")).expect("read"),
        b"kept by fstab"
    );
    mounted.umount();
    env.assert_fsck_clean();
}

#[test]
fn mount_t_fuse_coffer_takes_every_flag_as_an_option() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    {
        let m = env.mount();
        std::fs::write(m.p("old"), b"from before").expect("write");
        m.umount();
    }
    let (st, m) = (s(&env.store), s(&env.mnt));
    let script = format!(
        "mount -t fuse.coffer {st} {m} -o ro,noexec,{} && cat {m}/old && echo && \
         grep ' {m} ' /proc/self/mountinfo && (touch {m}/new 2>&1 || true) && umount {m}",
        options(&env)
    );
    let o = in_namespace(&env, "", &script);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.starts_with("from before"), "{out}");
    let line = out.lines().find(|l| l.contains(m)).expect("mountinfo line");
    for flag in ["ro", "nosuid", "nodev", "noexec"] {
        assert!(
            line.split_whitespace()
                .nth(5)
                .is_some_and(|f| f.split(',').any(|x| x == flag)),
            "{flag} in {line}"
        );
    }
    assert!(
        out.contains("Read-only file system"),
        "ro is read-only: {out}"
    );
    assert!(env.wait_released());
}

#[test]
fn a_bad_option_or_passphrase_fails_the_mount_with_one_line() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let (st, m) = (s(&env.store), s(&env.mnt));
    let wrong = env.path("wrong");
    std::fs::write(&wrong, "not the passphrase\n").expect("write");
    let cases = [
        (
            format!("{},frobnicate", options(&env)),
            "unknown mount option frobnicate",
        ),
        (
            format!("{},keystore", options(&env)),
            "mount option keystore needs a value",
        ),
        (
            format!(
                "keystore={},passphrase_file={}",
                s(&env.keystore),
                s(&wrong)
            ),
            "wrong passphrase",
        ),
    ];
    for (opts, want) in cases {
        let o = in_namespace(
            &env,
            "",
            &format!("mount -t fuse.coffer {st} {m} -o {opts}"),
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{opts}: mounted");
        assert_eq!(err.lines().count(), 1, "{opts}: one line: {err}");
        assert!(
            err.starts_with("coffer: ") && err.contains(want),
            "{opts}: want {want:?}, got {err}"
        );
        assert!(
            !std::fs::read_to_string("/proc/self/mountinfo")
                .expect("mountinfo")
                .contains(m),
            "nothing mounted"
        );
    }
    // And nothing was left behind that keeps the next mount from working.
    let mounted: Mounted = env.mount();
    mounted.umount();
}
