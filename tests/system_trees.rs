//! A backup keeps everything a system tree carries: user xattrs, POSIX ACLs (access and
//! default), file capabilities, long symlinks and atimes, through `rsync -aHAX --numeric-ids`
//! and `tar --xattrs --acls`, across a remount and on an auxiliary copy mounted by another host.
//! Every comparison is of the tools' own dumps (getfattr, getfacl, stat), source against mount.

mod common;

use std::path::Path;

use common::trees::{dump, system_tree};
use common::{require_fuse, s, sh, sh_ok, Env};

fn rsync_changes(src: &Path, dst: &Path) -> String {
    sh_ok(&format!(
        "rsync -aHAXU --open-noatime --numeric-ids -n -i '{}/' '{}/'",
        src.display(),
        dst.display()
    ))
}

#[test]
fn rsync_ahax_keeps_xattrs_acls_capabilities_long_symlinks_and_atimes() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    system_tree(&src);
    let want = dump(&src);
    assert!(want.contains("user.comment") && want.contains("security.capability"));
    assert!(want.contains("default:group:50:rwx") && want.contains("user:1000:rw-"));
    let m = env.mount();
    sh_ok(&format!(
        "rsync -aHAXU --open-noatime --numeric-ids '{}/' '{}/'",
        src.display(),
        env.mnt.display()
    ));
    assert_eq!(dump(&env.mnt), want);
    assert_eq!(
        rsync_changes(&src, &env.mnt),
        "",
        "a second rsync has nothing to do"
    );
    // Reading a file through the mount keeps the atime that was set.
    sh_ok(&format!(
        "cat '{}/etc/app/conf' > /dev/null",
        env.mnt.display()
    ));
    assert_eq!(dump(&env.mnt), want);
    m.umount();
    env.assert_fsck_clean();
    let m = env.mount();
    assert_eq!(dump(&env.mnt), want, "after a remount");
    assert_eq!(rsync_changes(&src, &env.mnt), "");
    m.umount();
}

#[test]
fn an_auxiliary_copy_made_with_rsync_ax_carries_them_to_another_host() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    system_tree(&src);
    let want = dump(&src);
    let m = env.mount();
    sh_ok(&format!(
        "rsync -aHAXU --open-noatime --numeric-ids '{}/' '{}/'",
        src.display(),
        env.mnt.display()
    ));
    m.umount();
    // The store's attributes are attributes of its files (-X), its atimes the plaintext
    // atimes (-U, whole seconds): the documented auxiliary-copy command (README).
    let copy = env.path("copy");
    sh_ok(&format!(
        "rsync -aHXU --open-noatime '{}/' '{}/'",
        env.store.display(),
        copy.display()
    ));
    let other = common::keyservers::CertHost::new(&env, "other");
    let keys = env.path("keys");
    env.coffer_ok(&[
        "keys",
        "export",
        s(&env.store),
        "--recipient",
        s(&other.pem),
        "--out",
        s(&keys),
    ]);
    other.ok(&["keys", "import", s(&keys)]);
    let mnt = env.path("mnt-other");
    std::fs::create_dir(&mnt).expect("mkdir");
    other.ok(&["mount", s(&copy), s(&mnt)]);
    let _g = common::MountGuard(mnt.clone());
    assert_eq!(dump(&mnt), want);
    assert_eq!(rsync_changes(&src, &mnt), "");
    other.ok(&["umount", s(&mnt)]);
}

#[test]
fn tar_xattrs_acls_in_and_out() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    system_tree(&src);
    let tar = "tar --xattrs --xattrs-include='*' --acls --numeric-owner";
    let a = env.path("a.tar");
    sh_ok(&format!(
        "{tar} -cpf '{}' -C '{}' .",
        a.display(),
        src.display()
    ));
    let m = env.mount();
    sh_ok(&format!(
        "{tar} -xpf '{}' -C '{}'",
        a.display(),
        env.mnt.display()
    ));
    let b = env.path("b.tar");
    sh_ok(&format!(
        "{tar} -cpf '{}' -C '{}' .",
        b.display(),
        env.mnt.display()
    ));
    m.umount();
    let out = env.path("out");
    std::fs::create_dir(&out).expect("mkdir");
    sh_ok(&format!(
        "{tar} -xpf '{}' -C '{}'",
        b.display(),
        out.display()
    ));
    let strip_atime = |d: String| {
        d.lines()
            .map(|l| l.split(" atime=").next().unwrap_or(l))
            .collect::<Vec<_>>()
            .join("\n")
    };
    // tar keeps no atimes; everything else comes back as it went in.
    assert_eq!(strip_atime(dump(&out)), strip_atime(dump(&src)));
}

#[test]
fn xattr_calls_behave_as_on_ext4() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let m = env.mount();
    let f = m.p("f");
    std::fs::write(&f, b"x").expect("write");
    let py = |code: &str| {
        sh_ok(&format!(
            "python3 -c \"import os, errno\nf='{}'\n{code}\"",
            f.display()
        ))
        .trim()
        .to_string()
    };
    // XATTR_CREATE on an existing name, XATTR_REPLACE on a missing one, a size query, ERANGE.
    assert_eq!(py("os.setxattr(f, 'user.a', b'12345')\ntry:\n os.setxattr(f, 'user.a', b'x', os.XATTR_CREATE)\nexcept OSError as e: print(errno.errorcode[e.errno])"), "EEXIST");
    assert_eq!(py("try:\n os.setxattr(f, 'user.b', b'x', os.XATTR_REPLACE)\nexcept OSError as e: print(errno.errorcode[e.errno])"), "ENODATA");
    assert_eq!(py("print(os.getxattr(f, 'user.a'))"), "b'12345'");
    assert_eq!(py("print(sorted(os.listxattr(f)))"), "['user.a']");
    let erange = sh(&format!(
        "python3 -c \"import ctypes, errno; l=ctypes.CDLL(None, use_errno=True); b=ctypes.create_string_buffer(2); r=l.getxattr(b'{}', b'user.a', b, 2); print(r, errno.errorcode[ctypes.get_errno()]); print(l.getxattr(b'{}', b'user.a', None, 0))\"",
        f.display(),
        f.display()
    ));
    assert_eq!(
        String::from_utf8_lossy(&erange.stdout).trim(),
        "-1 ERANGE\n5"
    );
    assert_eq!(py("os.removexattr(f, 'user.a')\ntry:\n os.getxattr(f, 'user.a')\nexcept OSError as e: print(errno.errorcode[e.errno])"), "ENODATA");
    // A namespace no Linux filesystem keeps for users is refused.
    assert_eq!(py("try:\n os.setxattr(f, 'system.other', b'x')\nexcept OSError as e: print(errno.errorcode[e.errno])"), "ENOTSUP", "EOPNOTSUPP (errno 95, which Python names ENOTSUP)");
    // Cut to zero, the file starts afresh under a new id; its attributes go with it.
    py("os.setxattr(f, 'user.keep', b'kept')");
    std::fs::write(&f, b"rewritten").expect("truncate and rewrite");
    assert_eq!(py("print(os.getxattr(f, 'user.keep'))"), "b'kept'");
    m.umount();
    env.assert_fsck_clean();
}

#[test]
fn an_attribute_moved_to_another_file_or_altered_is_refused_and_reported() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let m = env.mount();
    std::fs::write(m.p("a"), b"a").expect("write");
    std::fs::write(m.p("b"), b"b").expect("write");
    sh_ok(&format!(
        "setfattr -n user.secret -v from-a '{}'",
        m.p("a").display()
    ));
    m.umount();
    // As a host that can write the store would: copy a's backing attribute onto b.
    let data = env.store.join("data");
    let files = sh_ok(&format!(
        "cd '{}' && for f in *; do getfattr -d -m 'user\\.cf\\.' -e hex \"$f\" 2>/dev/null | grep -q user.cf. && echo \"A $f\" || echo \"B $f\"; done",
        data.display()
    ));
    let a = files
        .lines()
        .find_map(|l| l.strip_prefix("A "))
        .expect("a's entry");
    let b = files
        .lines()
        .find_map(|l| l.strip_prefix("B "))
        .expect("b's entry");
    sh_ok(&format!(
        "cd '{}' && getfattr -d -m 'user\\.cf\\.' -e hex '{a}' | sed -n 's/^\\(user\\.cf\\.[^=]*\\)=\\(.*\\)/\\1 \\2/p' | while read -r n v; do setfattr -n \"$n\" -v \"$v\" '{b}'; done",
        data.display()
    ));
    let o = env.coffer(&["fsck", s(&env.store)]);
    let report = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{report}");
    // b's sealed record lists no such attribute (format 3): it is not read.
    assert!(
        report.contains("an attribute its sealed record does not list"),
        "{report}"
    );
    let m = env.mount();
    // On b it is nobody's attribute: not found by name, left out of the listing.
    let got = sh(&format!("getfattr -n user.secret '{}'", m.p("b").display()));
    assert!(!got.status.success(), "the planted attribute must not read");
    let err = String::from_utf8_lossy(&got.stderr);
    assert!(err.contains("No such attribute"), "{err}");
    assert_eq!(
        sh_ok(&format!("getfattr -d '{}'", m.p("b").display())).trim(),
        ""
    );
    assert!(sh_ok(&format!("getfattr -d '{}'", m.p("a").display())).contains("from-a"));
    m.umount();
    // Altered in place on a (its last byte flipped): EIO, never another value.
    sh_ok(&format!(
        "cd '{}' && getfattr -d -m 'user\\.cf\\.' -e hex '{a}' | sed -n 's/^\\(user\\.cf\\.[^=]*\\)=\\(.*\\)/\\1 \\2/p' | while read -r n v; do last=${{v#${{v%??}}}}; flip=$(printf '%02x' $((0x$last ^ 1))); setfattr -n \"$n\" -v \"${{v%??}}$flip\" '{a}'; done",
        data.display()
    ));
    let m = env.mount();
    let got = sh(&format!("getfattr -n user.secret '{}'", m.p("a").display()));
    let err = String::from_utf8_lossy(&got.stderr);
    assert!(
        !got.status.success() && err.contains("Input/output error"),
        "{err}"
    );
    m.umount();
}
