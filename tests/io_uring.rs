//! FUSE over io_uring. With the kernel offering it (the fuse module's enable_uring
//! parameter), a mount serves over the ring, and every kind of request the workload makes
//! comes back right; with --no-io-uring, or with the kernel not offering it, the same store
//! mounts through /dev/fuse and reads back the same bytes.
//!
//! enable_uring is a setting of the whole kernel, so the three mounts run in one test, in
//! order, and the setting is put back as it was found. (Test binaries run one at a time;
//! tools/test.sh turns the setting on for the whole suite, so every other test runs over the
//! ring too.)

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use common::{drop_caches, pattern, require_fuse, Env, Mounted};

const PARAM: &str = "/sys/module/fuse/parameters/enable_uring";

/// enable_uring as it was, put back on drop.
struct Param(String);

impl Param {
    fn set(on: bool) {
        fs::write(PARAM, if on { "1" } else { "0" }).expect("write enable_uring (needs root)");
    }
}

impl Drop for Param {
    fn drop(&mut self) {
        let _ = fs::write(PARAM, if self.0.trim() == "Y" { "1" } else { "0" });
    }
}

fn require_uring() -> Option<Param> {
    match fs::read_to_string(PARAM) {
        Ok(was) => Some(Param(was)),
        Err(e) if std::env::var("COFFER_SKIP_IO_URING_TESTS").as_deref() == Ok("1") => {
            eprintln!("SKIPPED (COFFER_SKIP_IO_URING_TESTS=1): cannot read {PARAM}: {e}");
            None
        }
        Err(e) => panic!(
            "this test needs a kernel with FUSE over io_uring (6.14+, CONFIG_FUSE_IO_URING), \
             but {PARAM} cannot be read: {e}"
        ),
    }
}

/// Big writes (three times the largest request), small ones, a wide directory (several
/// READDIRPLUS replies), a symlink, an xattr, a rename and a truncate.
fn write_tree(m: &Mounted) {
    fs::write(m.p("big"), pattern(1, 3 << 20 | 12345)).unwrap();
    fs::write(m.p("small"), pattern(2, 1000)).unwrap();
    fs::write(m.p("empty"), b"").unwrap();
    fs::create_dir(m.p("wide")).unwrap();
    for i in 0..300 {
        fs::write(m.p(&format!("wide/file-{i:03}")), format!("{i}")).unwrap();
    }
    symlink("wide/file-007", m.p("link")).unwrap();
    xattr_set(&m.p("small"), "user.colour", b"blue");
    fs::write(m.p("moved-from"), pattern(3, 70_000)).unwrap();
    fs::rename(m.p("moved-from"), m.p("moved")).unwrap();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(m.p("moved"))
        .unwrap();
    f.set_len(65_536).unwrap();
}

fn check_tree(m: &Mounted) {
    drop_caches();
    assert_eq!(fs::read(m.p("big")).unwrap(), pattern(1, 3 << 20 | 12345));
    assert_eq!(fs::read(m.p("small")).unwrap(), pattern(2, 1000));
    assert_eq!(fs::read(m.p("empty")).unwrap(), b"");
    let mut names: Vec<String> = fs::read_dir(m.p("wide"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let want: Vec<String> = (0..300).map(|i| format!("file-{i:03}")).collect();
    assert_eq!(names, want);
    assert_eq!(fs::read_to_string(m.p("wide/file-299")).unwrap(), "299");
    assert_eq!(
        fs::read_link(m.p("link")).unwrap(),
        Path::new("wide/file-007")
    );
    assert_eq!(fs::read_to_string(m.p("link")).unwrap(), "7");
    assert_eq!(xattr_get(&m.p("small"), "user.colour"), b"blue");
    assert_eq!(
        fs::read(m.p("moved")).unwrap(),
        pattern(3, 70_000)[..65_536]
    );
    assert!(!m.p("moved-from").exists());
}

fn xattr_set(p: &Path, name: &str, value: &[u8]) {
    let o = std::process::Command::new("setfattr")
        .args(["-n", name, "-v"])
        .arg(String::from_utf8_lossy(value).as_ref())
        .arg(p)
        .output()
        .expect("setfattr (attr package)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn xattr_get(p: &Path, name: &str) -> Vec<u8> {
    let o = std::process::Command::new("getfattr")
        .args(["--only-values", "-n", name])
        .arg(p)
        .output()
        .expect("getfattr (attr package)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o.stdout
}

/// What the log says of the latest mount: its transport, and how many requests it answered
/// over io_uring (None when it logged no count).
fn latest_mount(env: &Env) -> (String, Option<u64>) {
    let log = env.log_text();
    let last = &log[log.rfind(" INFO serving ").expect("a serving line")..];
    let transport = last
        .lines()
        .next()
        .unwrap()
        .split(" through ")
        .nth(1)
        .unwrap();
    let count = last
        .lines()
        .find_map(|l| {
            l.split(" INFO ")
                .nth(1)?
                .strip_suffix(" requests came over io_uring")
        })
        .map(|n| n.parse().unwrap());
    (transport.to_string(), count)
}

#[test]
fn a_mount_serves_over_io_uring_when_offered_and_through_dev_fuse_otherwise() {
    if !require_fuse() {
        return;
    }
    let Some(_restore) = require_uring() else {
        return;
    };
    let env = Env::new();
    env.init();

    Param::set(true);
    let m = env.mount();
    write_tree(&m);
    check_tree(&m);
    m.umount();
    let (transport, count) = latest_mount(&env);
    assert!(transport.starts_with("io_uring ("), "{transport}");
    // 300 creates alone are 300 requests; every one of them came over the ring.
    assert!(count.unwrap() > 600, "{count:?}");

    let m = env.mount_with(&["--no-io-uring"]);
    check_tree(&m);
    m.umount();
    assert_eq!(latest_mount(&env), ("/dev/fuse".to_string(), None));

    Param::set(false);
    let m = env.mount();
    check_tree(&m);
    fs::write(m.p("wide/file-300"), "300").unwrap();
    m.umount();
    assert_eq!(latest_mount(&env), ("/dev/fuse".to_string(), None));
    env.assert_fsck_clean();
}
