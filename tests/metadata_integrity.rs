//! Everything a restore acts on is authenticated (store format 3): a host that can write the
//! store, with nothing but its bytes, changes modes, owners, types, device numbers, symlink
//! targets, places in the tree, hard links and attributes on the store's own inodes, as
//! chmod, chown, mknod, ln, mv and setfattr do. None of it is believed: the mount shows the
//! sealed values or EIO, fsck reports each with its reason and `--repair` adopts none, a root
//! `coffer restore` restores everything else and names what it skipped (exit 23), and an
//! `--allow-other` mount's permission checks see only sealed modes.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::attacker::{backing_by_ino, copy_coffer_attrs, get_xattr, remove_xattr, set_xattr};
use common::{require_fuse, s, sh, sh_ok, Env};

const SHADOW: &[u8] = b"root:$6$secret-hash:19000:0:99999:7:::\n";

/// What the tests put in the store: a small system tree, and where each entry's backing
/// inode is (found through the mount by inode number).
struct System {
    env: Env,
    backing: BTreeMap<&'static str, PathBuf>,
}

const ENTRIES: &[&str] = &[
    "usr/bin/python3",
    "etc/passwd",
    "etc/group",
    "etc/shadow",
    "etc/localtime",
    "etc/alt",
    "dev/null",
    "run/fifo",
    "home/u",
    "home/u/notes",
    "usr/bin",
];

fn system() -> System {
    let env = Env::new();
    env.init();
    let m = env.mount();
    for d in ["usr/bin", "etc", "dev", "run", "home/u"] {
        fs::create_dir_all(m.p(d)).expect("mkdir");
    }
    fs::write(m.p("usr/bin/python3"), b"#!/python\n").expect("write");
    fs::write(m.p("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").expect("write");
    fs::write(m.p("etc/group"), b"root:x:0:\n").expect("write");
    fs::write(m.p("etc/shadow"), SHADOW).expect("write");
    fs::write(m.p("home/u/notes"), b"u's notes\n").expect("write");
    let mode = |p: &str, m: u32| fs::set_permissions(p, fs::Permissions::from_mode(m));
    let mp = |r: &str| s(&m.p(r)).to_string();
    mode(&mp("usr/bin/python3"), 0o755).expect("chmod");
    mode(&mp("etc/shadow"), 0o600).expect("chmod");
    mode(&mp(""), 0o755).expect("chmod the root");
    std::os::unix::fs::symlink("/usr/share/zoneinfo/UTC", m.p("etc/localtime")).expect("ln");
    std::os::unix::fs::symlink("/bin/true", m.p("etc/alt")).expect("ln");
    sh_ok(&format!(
        "mknod -m 666 '{}' c 1 3 && mkfifo -m 644 '{}' && chown -R 1000:1000 '{}'",
        mp("dev/null"),
        mp("run/fifo"),
        mp("home/u")
    ));
    let mut backing = BTreeMap::new();
    for e in ENTRIES {
        let ino = fs::symlink_metadata(m.p(e)).expect("stat").ino();
        backing.insert(*e, backing_by_ino(&env.store, ino));
    }
    m.umount();
    System { env, backing }
}

impl System {
    fn b(&self, e: &str) -> &Path {
        &self.backing[e]
    }

    /// `coffer restore STORE:/ TARGET` as root: its exit code and stderr.
    fn restore(&self, target: &Path) -> (Option<i32>, String) {
        let from = format!("{}:/", s(&self.env.store));
        let o = self.env.coffer(&["restore", &from, s(target)]);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// `coffer fsck` (with `--repair` if asked): exit code and stdout.
    fn fsck(&self, repair: bool) -> (Option<i32>, String) {
        let mut args = vec!["fsck", s(&self.env.store)];
        if repair {
            args.push("--repair");
        }
        let o = self.env.coffer(&args);
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        )
    }
}

fn errno(r: std::io::Result<impl Sized>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

/// Replace the backing inode at `p` with what `make` makes there (a shell command given the
/// path), keeping the inode's coffer attributes, as `cp -a` of the store would.
fn remake(p: &Path, make: &str) {
    let keep = p.with_extension("kept");
    sh_ok(&format!(
        "cp -a '{}' '{}' && rm -f '{}'",
        s(p),
        s(&keep),
        s(p)
    ));
    sh_ok(&make.replace("{}", s(p)));
    copy_coffer_attrs(&keep, p);
    fs::remove_file(&keep).expect("rm");
}

#[test]
fn modes_owners_and_set_id_bits_set_on_the_store_are_not_believed() {
    if !require_fuse() {
        return;
    }
    let sys = system();
    // The attacker: a setuid root python3, /etc/passwd given to uid 1000, shadow readable.
    sh_ok(&format!(
        "chmod 4755 '{}' && chown 1000:1000 '{}' && chmod 644 '{}' && chmod 777 '{}'",
        s(sys.b("usr/bin/python3")),
        s(sys.b("etc/passwd")),
        s(sys.b("etc/shadow")),
        s(sys.b("usr/bin")),
    ));
    let m = sys.env.mount();
    let st = |r: &str| fs::metadata(m.p(r)).expect("stat");
    assert_eq!(st("usr/bin/python3").mode() & 0o7777, 0o755);
    assert_eq!(st("etc/passwd").uid(), 0);
    assert_eq!(st("etc/shadow").mode() & 0o7777, 0o600);
    assert_eq!(st("usr/bin").mode() & 0o7777, 0o755);
    assert_eq!(
        st("home/u/notes").uid(),
        1000,
        "the sealed owner, not the backing one"
    );
    m.umount();
    let out = sys.env.path("restored");
    let (code, err) = sys.restore(&out);
    assert_eq!(code, Some(0), "{err}");
    let rs = |r: &str| fs::symlink_metadata(out.join(r)).expect("restored");
    assert_eq!(rs("usr/bin/python3").mode() & 0o7777, 0o755);
    assert_eq!((rs("etc/passwd").uid(), rs("etc/passwd").gid()), (0, 0));
    assert_eq!(rs("etc/shadow").mode() & 0o7777, 0o600);
    assert_eq!(rs("home/u/notes").uid(), 1000);
    assert_eq!(rs("dev/null").rdev(), libc::makedev(1, 3));
    assert_eq!(sys.fsck(false).0, Some(0), "the backing modes mean nothing");
}

#[test]
fn types_and_device_numbers_changed_on_the_store_read_eio_and_are_skipped() {
    if !require_fuse() {
        return;
    }
    let sys = system();
    // The FIFO becomes a world-writable block device 8:0; /dev/null becomes /dev/mem.
    remake(sys.b("run/fifo"), "mknod -m 666 '{}' b 8 0");
    remake(sys.b("dev/null"), "mknod -m 666 '{}' c 1 1");
    let m = sys.env.mount();
    assert_eq!(
        errno(fs::symlink_metadata(m.p("run/fifo"))),
        Some(libc::EIO)
    );
    assert_eq!(
        errno(fs::symlink_metadata(m.p("dev/null"))),
        Some(libc::EIO)
    );
    assert_eq!(
        fs::read(m.p("etc/passwd")).expect("the rest reads").len(),
        26
    );
    m.umount();
    let log = sys.env.log_text();
    assert!(
        log.contains("its device numbers are not its sealed record's"),
        "{log}"
    );
    assert!(log.contains("Fifo's, the backing inode a Block's"), "{log}");
    let (code, report) = sys.fsck(true);
    assert_eq!(code, Some(1), "{report}");
    assert!(
        report.contains("its device numbers are not its sealed record's"),
        "{report}"
    );
    assert!(report.contains("its sealed record is a Fifo's"), "{report}");
    assert_eq!(sys.fsck(false).0, Some(1), "--repair adopted nothing");
    let out = sys.env.path("restored");
    let (code, err) = sys.restore(&out);
    assert_eq!(code, Some(23), "{err}");
    assert!(
        err.contains("dev/null") && err.contains("run/fifo"),
        "{err}"
    );
    assert!(fs::symlink_metadata(out.join("dev/null")).is_err());
    assert!(fs::symlink_metadata(out.join("run/fifo")).is_err());
    assert_eq!(fs::read(out.join("etc/shadow")).expect("the rest"), SHADOW);
}

#[test]
fn a_symlink_target_taken_from_another_symlink_reads_eio() {
    if !require_fuse() {
        return;
    }
    let sys = system();
    // etc/alt's backing target replaced by etc/localtime's (a genuine sealed target).
    let target = fs::read_link(sys.b("etc/localtime")).expect("readlink");
    let alt = sys.b("etc/alt");
    let record = get_xattr(alt, "trusted.cfi").expect("a symlink's record");
    fs::remove_file(alt).expect("rm");
    std::os::unix::fs::symlink(&target, alt).expect("ln");
    set_xattr(alt, "trusted.cfi", &record);
    let m = sys.env.mount();
    assert_eq!(errno(fs::read_link(m.p("etc/alt"))), Some(libc::EIO));
    let lt = fs::read_link(m.p("etc/localtime")).expect("the genuine one reads");
    assert_eq!(lt, Path::new("/usr/share/zoneinfo/UTC"));
    m.umount();
    let (code, report) = sys.fsck(false);
    assert_eq!(code, Some(1));
    assert!(
        report.contains("its target is not the one its sealed record names"),
        "{report}"
    );
    let (code, err) = sys.restore(&sys.env.path("restored"));
    assert_eq!(code, Some(23), "{err}");
    assert!(err.contains("etc/alt"), "{err}");
}

#[test]
fn files_and_directories_moved_or_swapped_in_the_store_do_not_read_there() {
    if !require_fuse() {
        return;
    }
    let sys = system();
    // u's notes moved over /etc/passwd's ciphertext name (a file in another directory).
    fs::rename(sys.b("home/u/notes"), sys.b("etc/passwd")).expect("mv");
    // /etc/group and /etc/shadow swapped (two names in one directory).
    let tmp = sys.b("etc/group").with_extension("x");
    fs::rename(sys.b("etc/group"), &tmp).expect("mv");
    fs::rename(sys.b("etc/shadow"), sys.b("etc/group")).expect("mv");
    fs::rename(&tmp, sys.b("etc/shadow")).expect("mv");
    // /usr/bin moved over home/u's name (a directory in another place).
    sh_ok(&format!("rm -r '{}'", s(sys.b("home/u"))));
    fs::rename(sys.b("usr/bin"), sys.b("home/u")).expect("mv dir");
    let m = sys.env.mount();
    for e in ["etc/passwd", "etc/group", "etc/shadow"] {
        assert_eq!(errno(fs::read(m.p(e))), Some(libc::EIO), "{e}");
    }
    assert_eq!(errno(fs::symlink_metadata(m.p("home/u"))), Some(libc::EIO));
    assert!(fs::read_link(m.p("etc/alt")).is_ok(), "the rest reads");
    m.umount();
    let (code, report) = sys.fsck(true);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(
        report.matches("fails authentication here").count(),
        4,
        "{report}"
    );
    let out = sys.env.path("restored");
    let (code, err) = sys.restore(&out);
    assert_eq!(code, Some(23), "{err}");
    for e in ["etc/passwd", "etc/group", "etc/shadow", "home/u"] {
        assert!(err.contains(e), "{e}: {err}");
        assert!(fs::symlink_metadata(out.join(e)).is_err(), "{e} restored");
    }
    assert!(!sh_ok(&format!("grep -rl secret-hash '{}' || true", s(&out))).contains('/'));
}

#[test]
fn a_hard_link_added_on_the_store_does_not_read() {
    if !require_fuse() {
        return;
    }
    let sys = system();
    // /etc/shadow's inode linked under u's notes' ciphertext name.
    fs::remove_file(sys.b("home/u/notes")).expect("rm");
    fs::hard_link(sys.b("etc/shadow"), sys.b("home/u/notes")).expect("ln");
    let m = sys.env.mount();
    assert_eq!(errno(fs::read(m.p("home/u/notes"))), Some(libc::EIO));
    let shadow = fs::metadata(m.p("etc/shadow")).expect("stat");
    assert_eq!((shadow.nlink(), shadow.mode() & 0o7777), (1, 0o600));
    m.umount();
    let (code, report) = sys.fsck(false);
    assert_eq!(code, Some(1));
    assert!(report.contains("fails authentication here"), "{report}");
    let out = sys.env.path("restored");
    let (code, err) = sys.restore(&out);
    assert_eq!(code, Some(23), "{err}");
    assert!(err.contains("home/u/notes"), "{err}");
    assert!(fs::symlink_metadata(out.join("home/u/notes")).is_err());
    assert_eq!(fs::read(out.join("etc/shadow")).expect("shadow"), SHADOW);
}

#[test]
fn a_deleted_attribute_makes_the_attributes_unreadable_not_fewer() {
    if !require_fuse() {
        return;
    }
    let sys = system();
    let m = sys.env.mount();
    let (py, pw) = (m.p("usr/bin/python3"), m.p("etc/passwd"));
    sh_ok(&format!(
        "setcap cap_net_raw+ep '{}' && setfattr -n user.origin -v debian '{}'",
        s(&py),
        s(&pw)
    ));
    m.umount();
    // The attacker strips the file capability's and the comment's backing attributes.
    for e in ["usr/bin/python3", "etc/passwd"] {
        let p = sys.b(e);
        let names = common::attacker::xattr_names(p);
        let sealed: Vec<_> = names.iter().filter(|n| n.starts_with("user.cf.")).collect();
        assert_eq!(sealed.len(), 1, "{e}: {names:?}");
        remove_xattr(p, sealed[0]);
    }
    let m = sys.env.mount();
    let o = sh(&format!(
        "getfattr -d -m - '{}'",
        s(&m.p("usr/bin/python3"))
    ));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Input/output error"),
        "{o:?}"
    );
    assert!(!o.status.success());
    let o = sh(&format!(
        "getfattr -n user.origin '{}'",
        s(&m.p("etc/passwd"))
    ));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("Input/output error"),
        "{o:?}"
    );
    m.umount();
    let (code, report) = sys.fsck(false);
    assert_eq!(code, Some(1));
    assert_eq!(
        report
            .matches("an attribute its sealed record lists is gone")
            .count(),
        2,
        "{report}"
    );
    let (code, err) = sys.restore(&sys.env.path("restored"));
    assert_eq!(code, Some(23), "{err}");
    assert!(
        err.contains("usr/bin/python3") && err.contains("etc/passwd"),
        "{err}"
    );
}

#[test]
fn allow_other_permission_checks_see_only_sealed_modes_and_owners() {
    if !require_fuse() {
        return;
    }
    let sys = system();
    sh_ok(&format!(
        "chmod 644 '{}' && chown 65534 '{}'",
        s(sys.b("etc/shadow")),
        s(sys.b("etc/shadow"))
    ));
    let m = sys.env.mount_with(&["--allow-other"]);
    let as_nobody = |p: &Path| {
        sh(&format!(
            "setpriv --reuid=65534 --regid=65534 --clear-groups cat '{}'",
            s(p)
        ))
    };
    let passwd = as_nobody(&m.p("etc/passwd"));
    assert!(passwd.status.success(), "0644 reads: {passwd:?}");
    let shadow = as_nobody(&m.p("etc/shadow"));
    assert!(!shadow.status.success());
    assert!(String::from_utf8_lossy(&shadow.stderr).contains("Permission denied"));
    assert!(!String::from_utf8_lossy(&shadow.stdout).contains("secret"));
}
