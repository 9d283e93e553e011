//! No plaintext file name, file content or passphrase reaches the store, the keystore or
//! the log.

mod common;

use std::fs;

use common::{require_fuse, Env, PASS};

#[test]
fn store_keystore_and_log_hold_no_plaintext() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let name = "quarterly-payroll-MARKERNAME";
    let dir = "hr-records-MARKERDIR";
    let link_target = "../secret-target-MARKERLINK";
    let content = "Salary of the CEO: MARKERCONTENT 1234567 ".repeat(3000);
    let m = env.mount();
    fs::create_dir(m.p(dir)).expect("mkdir");
    fs::write(m.p(&format!("{dir}/{name}")), &content).expect("write");
    fs::write(m.p(&"MARKERLONG".repeat(25)), b"MARKERSMALL").expect("long name");
    std::os::unix::fs::symlink(link_target, m.p("ln")).expect("symlink");
    fs::rename(
        m.p(&format!("{dir}/{name}")),
        m.p(&format!("{dir}/{name}-renamed")),
    )
    .expect("rename");
    m.umount();
    let mut checked = 0;
    for root in [&env.store, &env.keystore] {
        for (path, bytes) in Env::all_bytes(root) {
            let text = String::from_utf8_lossy(&bytes);
            for marker in [
                "MARKERNAME",
                "MARKERDIR",
                "MARKERLINK",
                "MARKERCONTENT",
                "MARKERLONG",
                "MARKERSMALL",
                PASS,
            ] {
                assert!(
                    !text.contains(marker),
                    "{marker} found in {}",
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 8, "walked only {checked} files");
    let log = env.log_text();
    assert!(!log.is_empty());
    for marker in ["MARKER", PASS] {
        assert!(!log.contains(marker), "{marker} in the log");
    }
}
