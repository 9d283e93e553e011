//! Concurrent writers checked by fio's own verify: four jobs write their files at random
//! offsets in blocks of 4-128 KiB at once, through a mount with every cache that is on by
//! default (writeback cache, hour-long entry and attribute timeouts), and fio reads each
//! block back against its checksum; then, after a remount, a verify-only pass finds every
//! block as written.

mod common;

use std::process::Command;

use common::{require_fuse, Env};

fn fio(dir: &std::path::Path, extra: &[&str]) -> String {
    let o = Command::new("fio")
        .args([
            "--name=writers",
            "--numjobs=4",
            "--rw=randwrite",
            "--bsrange=4k-128k",
            "--size=24m",
            "--ioengine=psync",
            "--verify=crc32c",
            "--verify_fatal=1",
            "--randrepeat=1",
            "--fsync_on_close=1",
            "--group_reporting",
        ])
        .arg(format!("--directory={}", dir.display()))
        .args(extra)
        // fio saves each job's verify state in its working directory: the test's own, not
        // wherever cargo runs it from.
        .current_dir(dir.parent().expect("the mount point's directory"))
        .output()
        .expect("fio (tools/setup.sh installs it)");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        o.status.success(),
        "fio failed:\n{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

#[test]
fn concurrent_writers_pass_fios_verify_and_again_after_a_remount() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let m = env.mount();
    let out = fio(&env.mnt, &[]);
    assert!(out.contains("err= 0"), "{out}");
    m.umount();
    let m = env.mount();
    let out = fio(&env.mnt, &["--verify_only"]);
    assert!(out.contains("err= 0"), "{out}");
    m.umount();
    env.assert_fsck_clean();
}
