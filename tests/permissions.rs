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

/// Whether this test can mount and run commands as other users (root); says so when not.
fn can_switch_users() -> bool {
    if !require_fuse() {
        return false;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: switching users needs root");
        return false;
    }
    true
}

#[test]
fn only_the_owner_by_default_and_kernel_checked_modes_with_allow_other() {
    if !can_switch_users() {
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

/// Set-user-ID, set-group-ID and file capabilities on files that another user writes and
/// truncates and that root gives away (by name and by open descriptor), as a shell script
/// run in `dir`; prints each file's mode and capability.
const PRIVS: &str = r#"set -e
cd "$1"
for f in w t c c2; do printf x > $f; chmod 4777 $f; setcap cap_net_raw+ep $f; done
printf x > g; chmod 2777 g
printf x > h; chmod 2767 h
setpriv --reuid 4242 --regid 4242 --clear-groups sh -c \
  'printf y >> w; printf y >> g; printf y >> h; truncate -s 0 t'
chown 4242 c
/usr/bin/python3 -c 'import os; fd = os.open("c2", os.O_RDONLY); os.fchown(fd, 4242, -1)'
for f in w t c c2 g h; do echo "$f $(stat -c %a $f) $(getcap $f | cut -d' ' -f2)"; done
"#;

#[test]
fn privileges_drop_as_on_ext4_when_others_write_or_root_gives_a_file_away() {
    if !can_switch_users() {
        return;
    }
    let env = Env::new();
    env.init();
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let plain = env.path("plain");
    fs::create_dir(&plain).expect("mkdir");
    fs::set_permissions(&plain, fs::Permissions::from_mode(0o777)).expect("chmod");
    let run = |dir: &std::path::Path| {
        let o = Command::new("bash")
            .args(["-c", PRIVS, "privs"])
            .arg(dir)
            .output()
            .expect("bash");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "{out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        out
    };
    let want = run(&plain);
    assert!(want.contains("w 777 \n"), "{want}");
    let m = env.mount_with(&["--allow-other"]);
    fs::set_permissions(&env.mnt, fs::Permissions::from_mode(0o777)).expect("chmod root");
    let got = run(&env.mnt);
    m.umount();
    assert_eq!(got, want, "coffer against ext4");
}

/// access(2) through a mount for its owner alone, which runs without default_permissions
/// (the daemon answers ACCESS from the backing file, the kernel still checks execute on
/// regular files): execute needs an x bit, even for root, and a missing name is ENOENT.
#[test]
fn access_answers_as_the_backing_file_on_an_owner_only_mount() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let m = env.mount();
    fs::write(m.p("tool"), b"#!/bin/sh\necho ran\n").expect("write");
    fs::set_permissions(m.p("tool"), fs::Permissions::from_mode(0o644)).expect("chmod");
    let x_ok = |p: &std::path::Path| {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: c is NUL-terminated.
        unsafe { libc::access(c.as_ptr(), libc::X_OK) == 0 }
    };
    assert!(!x_ok(&m.p("tool")), "mode 0644 is not executable");
    fs::set_permissions(m.p("tool"), fs::Permissions::from_mode(0o755)).expect("chmod");
    assert!(x_ok(&m.p("tool")), "mode 0755 is executable");
    let missing = std::ffi::CString::new(m.p("none").as_os_str().as_encoded_bytes()).expect("p");
    // SAFETY: as above.
    assert_ne!(unsafe { libc::access(missing.as_ptr(), libc::F_OK) }, 0);
    m.umount();
}

/// pjdfstest rename/21, subtests 12 to 14, as root on an --allow-other mount: an unprivileged
/// user moves a root's file from one 0777 directory to another (as ext4 allows).
#[test]
fn an_unprivileged_user_moves_a_file_between_two_open_directories() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let m = env.mount_with(&["--allow-other"]);
    fs::set_permissions(&env.mnt, fs::Permissions::from_mode(0o755)).expect("chmod root");
    for d in ["n2", "n3"] {
        fs::create_dir(m.p(d)).expect("mkdir");
        fs::set_permissions(m.p(d), fs::Permissions::from_mode(0o777)).expect("chmod");
    }
    fs::write(m.p("n2/n0"), b"root's").expect("create");
    fs::set_permissions(m.p("n2/n0"), fs::Permissions::from_mode(0o644)).expect("chmod");
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "mv"])
        .arg(m.p("n2/n0"))
        .arg(m.p("n3/n1"))
        .output()
        .expect("setpriv");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(fs::read(m.p("n3/n1")).expect("moved"), b"root's");
    assert!(fs::symlink_metadata(m.p("n2/n0")).is_err());
    fs::remove_file(m.p("n3/n1")).expect("unlink");
    m.umount();
    env.assert_fsck_clean();
}

/// pjdfstest chown/00 (the owner gives a set-ID file to another of its groups), for every
/// kind but a directory: as on ext4, the set-user-ID bit goes, and the set-group-ID bit with
/// group execute. (In format 3 the mode is the sealed record's, which the mount changes
/// itself, for a FIFO or a device as for a file.)
#[test]
fn a_chown_by_the_owner_drops_set_id_bits_of_every_kind_but_a_directory() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let m = env.mount_with(&["--allow-other"]);
    fs::set_permissions(&env.mnt, fs::Permissions::from_mode(0o755)).expect("chmod root");
    let make = [
        ("file", "touch"),
        ("fifo", "mkfifo"),
        ("char", "mknod -m 600 {} c 1 3"),
        ("dir", "mkdir"),
    ];
    for (name, cmd) in make {
        let p = m.p(name);
        let ps = format!("'{}'", p.to_str().expect("utf8"));
        let cmd = match cmd.contains("{}") {
            true => cmd.replace("{}", &ps),
            false => format!("{cmd} {ps}"),
        };
        common::sh_ok(&format!(
            "{cmd} && chown 65534:65533 {ps} && chmod 06555 {ps}"
        ));
        let o = Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65533",
                "--groups=65533,65532",
                "chgrp",
                "65532",
            ])
            .arg(&p)
            .output()
            .expect("setpriv");
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let mode = fs::symlink_metadata(&p).expect("stat").permissions().mode() & 0o7777;
        let want = if name == "dir" { 0o6555 } else { 0o555 };
        assert_eq!(mode, want, "{name}: {mode:o}");
    }
    m.umount();
}
