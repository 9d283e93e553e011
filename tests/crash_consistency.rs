//! SIGKILL of the mount daemon: every file that was fsynced before the kill reads back intact
//! after a remount, and fsck --repair leaves the store clean.

mod common;

use std::fs;
use std::io::Write;

use common::{pattern, require_fuse, Env};

#[test]
fn fsynced_files_survive_sigkill_of_the_daemon() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let m = env.mount();
    fs::create_dir(m.p("d")).expect("mkdir");
    let mut synced = Vec::new();
    for i in 0..20u64 {
        let data = pattern(i, 1000 + (i as usize) * 40_000);
        let mut f = fs::File::create(m.p(&format!("d/synced-{i}"))).expect("create");
        f.write_all(&data).expect("write");
        f.sync_all().expect("fsync");
        synced.push((format!("d/synced-{i}"), data));
    }
    // An fsynced file then rewritten in place: the fsynced bytes must stay valid too.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(m.p("d/synced-3"))
        .expect("open");
    f.write_all(b"rewritten head").expect("write");
    f.sync_all().expect("fsync");
    synced[3].1[..14].copy_from_slice(b"rewritten head");
    drop(f);
    // Unsynced work in flight when the daemon dies.
    for i in 0..20u64 {
        let _ = fs::write(m.p(&format!("d/unsynced-{i}")), pattern(100 + i, 70_000));
    }
    m.kill();
    let m = env.mount();
    for (name, data) in &synced {
        assert_eq!(
            &fs::read(m.p(name)).expect("read fsynced file"),
            data,
            "{name}"
        );
    }
    // Unsynced files either read back whole or are reported by fsck; never garbage.
    for i in 0..20u64 {
        if let Ok(b) = fs::read(m.p(&format!("d/unsynced-{i}"))) {
            assert_eq!(
                b,
                pattern(100 + i, 70_000)[..b.len()],
                "unsynced-{i} reads a prefix of what was written"
            );
        }
    }
    m.umount();
    let s = env.store.to_str().expect("utf8");
    let o = env.coffer(&["fsck", s, "--repair"]);
    let o2 = env.coffer(&["fsck", s]);
    assert_eq!(
        o2.status.code(),
        Some(0),
        "fsck after repair: {}\n(repair said: {})",
        String::from_utf8_lossy(&o2.stdout),
        String::from_utf8_lossy(&o.stdout)
    );
}
