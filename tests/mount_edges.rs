//! What a mount refuses, and where it works when it cannot write: a non-empty mount point,
//! a missing /dev/fuse, a store on read-only media or a user's read-only copy, and
//! non-owners renaming, linking and unlinking as the kernel and POSIX say (sticky
//! directories included), compared with ext4 on the same tree.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{require_fuse, s, sh, sh_ok, Env, MountGuard};

fn root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let r = unsafe { libc::geteuid() } == 0;
    if !r {
        eprintln!("SKIPPED: this test needs root (bind mounts, namespaces, other users)");
    }
    r
}

fn stderr_line(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).trim().to_string()
}

#[test]
fn a_non_empty_mount_point_is_refused_unless_nonempty_is_given() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    fs::write(env.mnt.join("plaintext-left-by-a-failed-run"), b"x").expect("write");
    let o = env.coffer(&["mount", s(&env.store), s(&env.mnt)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr_line(&o));
    let e = stderr_line(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains("is not empty") && e.contains("--nonempty"),
        "{e}"
    );
    assert!(!fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .contains(s(&env.mnt)));
    let m = env.mount_with(&["--nonempty"]);
    assert!(
        !m.p("plaintext-left-by-a-failed-run").exists(),
        "hidden by the mount"
    );
    m.umount();
    assert!(env.mnt.join("plaintext-left-by-a-failed-run").exists());
}

#[test]
fn a_mount_without_dev_fuse_names_it() {
    if !require_fuse() || !root() {
        return;
    }
    let env = Env::new();
    env.init();
    // A mount namespace whose /dev has no fuse device, as in a container started without it.
    let o = sh(&format!(
        "unshare -m sh -c 'mount -t tmpfs none /dev && COFFER_KEYSTORE={} COFFER_PASSPHRASE_FILE={} {} mount {} {}'",
        s(&env.keystore),
        s(&env.pass),
        common::bin(),
        s(&env.store),
        s(&env.mnt)
    ));
    assert_eq!(o.status.code(), Some(2), "{}", stderr_line(&o));
    let e = stderr_line(&o);
    assert!(e.contains("/dev/fuse is missing"), "{e}");
    assert!(
        e.contains("`coffer backup` and `coffer restore` need no mount"),
        "{e}"
    );
    // Something else in its place (a file bound over it): named too, before any mount(2).
    let o = sh(&format!(
        "unshare -m sh -c 'mount --bind /proc/version /dev/fuse && COFFER_KEYSTORE={} COFFER_PASSPHRASE_FILE={} {} mount {} {}'",
        s(&env.keystore),
        s(&env.pass),
        common::bin(),
        s(&env.store),
        s(&env.mnt)
    ));
    assert_eq!(o.status.code(), Some(2), "{}", stderr_line(&o));
    let e = stderr_line(&o);
    assert!(e.contains("/dev/fuse is not the FUSE device"), "{e}");
}

/// A store with a file in it and no lock file, made read-only by a read-only bind mount.
fn read_only_store(env: &Env) -> std::path::PathBuf {
    env.init();
    let m = env.mount();
    fs::write(m.p("kept"), b"on read-only media").expect("write");
    m.umount();
    // A snapshot taken of a store never mounted has no lock file to lock.
    fs::remove_file(env.store.join("lock")).expect("rm lock");
    let ro = env.path("ro-store");
    fs::create_dir(&ro).expect("mkdir");
    sh_ok(&format!(
        "mount --bind '{}' '{}' && mount -o remount,bind,ro '{}'",
        s(&env.store),
        s(&ro),
        s(&ro)
    ));
    ro
}

#[test]
fn a_store_on_read_only_media_mounts_read_only_and_fscks() {
    if !require_fuse() || !root() {
        return;
    }
    let env = Env::new();
    let ro = read_only_store(&env);
    let _unbind = MountGuard(ro.clone());
    // Read-write is refused with the real cause.
    let o = env.coffer(&["mount", s(&ro), s(&env.mnt)]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr_line(&o));
    let e = stderr_line(&o);
    assert!(e.contains("Read-only file system"), "{e}");
    assert!(
        e.contains("mount it with --read-only"),
        "names the way out: {e}"
    );
    assert!(!e.contains("not a coffer store"), "{e}");
    // --read-only mounts, says why it holds no lock, and reads.
    let o = env.coffer(&["mount", s(&ro), s(&env.mnt), "--read-only"]);
    assert!(o.status.success(), "{}", stderr_line(&o));
    let _m = MountGuard(env.mnt.clone());
    let e = stderr_line(&o);
    assert!(
        e.contains("cannot take the store's lock") && e.contains("Read-only file system"),
        "{e}"
    );
    assert_eq!(
        fs::read(env.mnt.join("kept")).expect("read"),
        b"on read-only media"
    );
    env.coffer_ok(&["umount", s(&env.mnt)]);
    // fsck (no --repair) checks it all and says what it could not do.
    let o = env.coffer(&["fsck", s(&ro)]);
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &stderr_line(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(out.contains("cannot take the store's lock"), "{out}");
    assert!(out.contains("0 problems"), "{out}");
    let o = env.coffer(&["fsck", s(&ro), "--repair"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr_line(&o).contains("Read-only file system"),
        "{}",
        stderr_line(&o)
    );
    sh_ok(&format!("umount '{}'", s(&ro)));
}

#[test]
fn a_user_without_write_access_fscks_a_store_it_can_read() {
    if !require_fuse() || !root() {
        return;
    }
    let env = Env::new();
    env.init();
    let m = env.mount();
    fs::write(m.p("kept"), b"x").expect("write");
    m.umount();
    // The user's own copy of store and keys, every directory of it left without write access,
    // and no lock file in it.
    fs::remove_file(env.store.join("lock")).expect("rm lock");
    let user = 4242;
    sh_ok(&format!(
        "chmod 755 '{d}' && chown -R {user}:{user} '{d}' && find '{st}' -type d -exec chmod a-w {{}} +",
        d = s(env.dir.path()),
        st = s(&env.store)
    ));
    let o = sh(&format!(
        "setpriv --reuid={user} --regid={user} --clear-groups env COFFER_KEYSTORE={} COFFER_PASSPHRASE_FILE={} {} fsck {}",
        s(&env.keystore),
        s(&env.pass),
        common::bin(),
        s(&env.store)
    ));
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &stderr_line(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        out.contains("cannot take the store's lock") && out.contains("Permission denied"),
        "{out}"
    );
    assert!(
        out.contains("1 files") && out.contains("0 problems"),
        "{out}"
    );
    assert!(!out.contains("not a coffer store"), "{out}");
    sh_ok(&format!(
        "find '{}' -type d -exec chmod u+w {{}} +",
        s(&env.store)
    ));
}

/// What each operation by uid 4242 on `dir`'s tree gives: "ok" or the errno's name.
fn non_owner_ops(dir: &Path) -> String {
    let script = r#"
import errno, os, sys
d = sys.argv[1]
def tr(name, f):
    try:
        f(); print(name, "ok")
    except OSError as e:
        print(name, errno.errorcode[e.errno])
tr("rename across open dirs", lambda: os.rename(d + "/open/rootfile", d + "/open2/moved"))
tr("rename in sticky dir", lambda: os.rename(d + "/sticky/rootfile", d + "/sticky/moved"))
tr("unlink in sticky dir", lambda: os.unlink(d + "/sticky/rootfile"))
tr("unlink own in sticky dir", lambda: os.unlink(d + "/sticky/userfile"))
tr("rename out of closed dir", lambda: os.rename(d + "/closed/rootfile", d + "/open/x"))
tr("link to unreadable file", lambda: os.link(d + "/open2/secret", d + "/open/l"))
tr("unlink in open dir", lambda: os.unlink(d + "/open2/secret"))
tr("rename dir across dirs", lambda: os.rename(d + "/open/rootdir", d + "/open2/rootdir"))
"#;
    sh_ok(&format!(
        "cd '{d}' && mkdir -m 777 open open2 && mkdir -m 1777 sticky && mkdir -m 755 closed &&
         for x in open sticky closed; do echo r > $x/rootfile; done &&
         echo s > open2/secret && chmod 600 open2/secret && mkdir -m 755 open/rootdir &&
         echo u > sticky/userfile && chown 4242:4242 sticky/userfile",
        d = s(dir)
    ));
    sh_ok(&format!(
        "setpriv --reuid=4242 --regid=4242 --clear-groups /usr/bin/python3 -c '{}' '{}'",
        script.replace('\'', "'\\''"),
        s(dir)
    ))
}

#[test]
fn non_owners_rename_link_and_unlink_as_on_ext4() {
    if !require_fuse() || !root() {
        return;
    }
    let env = Env::new();
    env.init();
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let reference = env.path("ext4");
    fs::create_dir(&reference).expect("mkdir");
    fs::set_permissions(&reference, fs::Permissions::from_mode(0o755)).expect("chmod");
    let want = non_owner_ops(&reference);
    // The kernel's own rules, as this machine sets them (fs.protected_hardlinks).
    assert!(want.contains("rename across open dirs ok"), "{want}");
    assert!(want.contains("unlink in sticky dir EPERM"), "{want}");
    eprintln!("ext4 gives:\n{want}");
    let m = env.mount_with(&["--allow-other"]);
    fs::set_permissions(&env.mnt, fs::Permissions::from_mode(0o755)).expect("chmod");
    assert_eq!(non_owner_ops(&env.mnt), want);
    m.umount();
    env.assert_fsck_clean();
}

#[test]
fn with_allow_other_the_kernel_enforces_acls() {
    if !require_fuse() || !root() {
        return;
    }
    let env = Env::new();
    env.init();
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let m = env.mount_with(&["--allow-other"]);
    fs::set_permissions(&env.mnt, fs::Permissions::from_mode(0o755)).expect("chmod");
    let f = m.p("payroll");
    fs::write(&f, b"figures").expect("write");
    sh_ok(&format!(
        "chmod 600 '{f}' && setfacl -m u:4242:r '{f}'",
        f = s(&f)
    ));
    let cat = |uid: u32| {
        sh(&format!(
            "setpriv --reuid={uid} --regid={uid} --clear-groups cat '{}'",
            s(&f)
        ))
    };
    let o = cat(4242);
    assert!(o.status.success(), "{}", stderr_line(&o));
    assert_eq!(o.stdout, b"figures");
    let o = cat(4243);
    assert!(
        stderr_line(&o).contains("Permission denied"),
        "{}",
        stderr_line(&o)
    );
    // The mask limits named entries, as on ext4.
    sh_ok(&format!("setfacl -m m::- '{}'", s(&f)));
    let o = cat(4242);
    assert!(
        stderr_line(&o).contains("Permission denied"),
        "{}",
        stderr_line(&o)
    );
    m.umount();
}
