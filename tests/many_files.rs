//! A mount serves far more files than its descriptor limit allows open at once: inodes are
//! not held open (the reference machine's limit is 20,000 and root cannot raise it).

mod common;

use std::fs;
use std::process::Command;

use common::{pattern, require_fuse, sh_ok, Env};

#[test]
fn more_files_than_the_descriptor_limit() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    for d in 0..8 {
        fs::create_dir_all(src.join(format!("d{d}/sub"))).expect("mkdir");
        for i in 0..400 {
            let sub = if i % 2 == 0 { "sub/" } else { "" };
            fs::write(
                src.join(format!("d{d}/{sub}f{i}")),
                pattern(d * 1000 + i, 50 + i as usize),
            )
            .expect("write");
        }
    }
    // The daemon runs with at most 256 descriptors, for 3,200 files and 16 directories.
    let mount = |env: &Env| {
        let o = Command::new("prlimit")
            .arg("--nofile=256:256")
            .arg(common::bin())
            .args([
                "mount".as_ref(),
                env.store.as_os_str(),
                env.mnt.as_os_str(),
                "--log".as_ref(),
                env.log.as_os_str(),
            ])
            .env("COFFER_KEYSTORE", &env.keystore)
            .env("COFFER_PASSPHRASE_FILE", &env.pass)
            .output()
            .expect("prlimit");
        assert!(
            o.status.success(),
            "mount: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    mount(&env);
    let guard = common::Mounted::adopt(&env);
    sh_ok(&format!(
        "rsync -a '{}/' '{}/'",
        src.display(),
        env.mnt.join("t").display()
    ));
    let limits =
        fs::read_to_string(format!("/proc/{}/limits", guard.daemon_pid())).expect("limits");
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 256 ")),
        "{limits}"
    );
    guard.umount();
    common::drop_caches();
    mount(&env);
    let guard = common::Mounted::adopt(&env);
    let out = env.path("out");
    sh_ok(&format!(
        "rsync -a '{}/' '{}/'",
        env.mnt.join("t").display(),
        out.display()
    ));
    guard.umount();
    let d = common::sh(&format!("diff -r '{}' '{}'", src.display(), out.display()));
    assert!(d.status.success(), "{}", String::from_utf8_lossy(&d.stdout));
    assert!(!env.log_text().contains("Errno(24)"), "EMFILE in the log");
}
