//! SIGTERM or SIGINT to the mount daemon behave like `coffer umount`: the catalog is flushed,
//! the mount disappears and the daemon exits.

mod common;

use std::fs;
use std::time::Duration;

use common::{pattern, require_fuse, Env};

fn stop_with(signal: &str) {
    let env = Env::new();
    env.init();
    let m = env.mount();
    for i in 0..25u64 {
        fs::write(m.p(&format!("f{i}")), pattern(i, 10_000 * i as usize)).expect("write");
    }
    let pid = m.daemon_pid();
    std::mem::forget(m); // the daemon is stopped by the signal, not by the guard
    common::sh_ok(&format!("kill -{signal} {pid}"));
    let gone = || !std::path::Path::new(&format!("/proc/{pid}")).exists();
    assert!(
        common::poll(Duration::from_secs(30), gone),
        "daemon did not exit after SIG{signal}"
    );
    let mounts = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mounts.contains(env.mnt.to_str().expect("utf8")),
        "still mounted after SIG{signal}"
    );
    // Everything was flushed: fsck finds a complete catalog, and the files read back.
    env.assert_fsck_clean();
    let m = env.mount();
    for i in 0..25u64 {
        assert_eq!(
            fs::read(m.p(&format!("f{i}"))).expect("read"),
            pattern(i, 10_000 * i as usize)
        );
    }
    m.umount();
    assert!(env
        .log_text()
        .contains(&format!("signal {}", if signal == "TERM" { 15 } else { 2 })));
}

#[test]
fn sigterm_unmounts_cleanly() {
    if require_fuse() {
        stop_with("TERM");
    }
}

#[test]
fn sigint_unmounts_cleanly() {
    if require_fuse() {
        stop_with("INT");
    }
}
