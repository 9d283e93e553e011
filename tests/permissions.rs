//! Who may use a mount. Without --allow-other only the mounting user may (FUSE's default);
//! with it, other users come in and the kernel checks each file's mode and owner
//! (default_permissions), so a restore can run as the files' owners.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use common::{require_fuse, Env};

/// Run `cat FILE` as another user; its stderr on failure.
fn cat_as(uid: u32, file: &std::path::Path) -> Result<Vec<u8>, String> {
    let o = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "cat",
        ])
        .arg(file)
        .output()
        .expect("setpriv (util-linux)");
    if o.status.success() {
        Ok(o.stdout)
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

#[test]
fn only_the_owner_by_default_and_kernel_checked_modes_with_allow_other() {
    if !require_fuse() {
        return;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: switching users needs root");
        return;
    }
    let env = Env::new();
    env.init();
    // Other users must be able to reach the mount point itself.
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let m = env.mount();
    fs::set_permissions(&env.mnt, fs::Permissions::from_mode(0o755)).expect("chmod root");
    fs::write(m.p("alice.txt"), b"alice's data").expect("write");
    std::os::unix::fs::chown(m.p("alice.txt"), Some(1000), Some(1000)).expect("chown");
    fs::set_permissions(m.p("alice.txt"), fs::Permissions::from_mode(0o600)).expect("chmod");
    let e = cat_as(1000, &m.p("alice.txt")).expect_err("another user is kept out by default");
    assert!(e.contains("Permission denied"), "{e}");
    m.umount();

    let m = env.mount_with(&["--allow-other"]);
    assert_eq!(
        cat_as(1000, &m.p("alice.txt")).expect("the owner reads"),
        b"alice's data"
    );
    let e = cat_as(1001, &m.p("alice.txt")).expect_err("mode 0600 keeps others out");
    assert!(e.contains("Permission denied"), "{e}");
    m.umount();
}
