//! A `coffer backup` killed with SIGKILL at moments spread over the run (early, in the middle
//! of the small files, in the large one) and run again: the rerun finishes the job, nothing is
//! lost or torn, no temporary file is left, and fsck finds the store clean.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::trees::dump;
use common::{pattern, require_fuse, s, sh_ok, Env};

fn entries_under(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            n += 1;
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
    }
    n
}

fn tree(src: &Path) {
    for i in 0..2000u64 {
        let d = src.join(format!("d{:02}", i % 25));
        fs::create_dir_all(&d).expect("mkdir");
        fs::write(
            d.join(format!("f{i}")),
            pattern(i, 1000 + (i as usize * 37) % 9000),
        )
        .expect("write");
    }
    fs::write(src.join("large"), pattern(99, 48 << 20)).expect("write");
    sh_ok(&format!(
        "cd '{}' && ln d00/f0 hard-a && ln d00/f0 d01/hard-b && ln -s d02/f2 link",
        s(src)
    ));
}

#[test]
fn a_backup_killed_at_moments_through_the_run_finishes_on_the_next() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    tree(&src);
    let want = dump(&src);
    let dest = format!("{}:x", s(&env.store));
    let src_arg = format!("{}/", s(&src));
    let data = env.store.join("data");
    let (mut killed, mut last_killed) = (0, false);
    for grow in [40usize, 400, 300] {
        let start = entries_under(&data);
        let mut child = Command::new(common::bin())
            .args(["backup", &src_arg, &dest, "--jobs", "2"])
            .env("COFFER_KEYSTORE", &env.keystore)
            .env("COFFER_PASSPHRASE_FILE", &env.pass)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let deadline = Instant::now() + Duration::from_secs(120);
        while child.try_wait().expect("wait").is_none()
            && entries_under(&data) < start + grow
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(2));
        }
        last_killed = child.try_wait().expect("wait").is_none();
        if last_killed {
            child.kill().expect("SIGKILL");
            killed += 1;
        }
        child.wait().expect("reaped");
    }
    assert!(killed >= 2, "the runs were killed part way ({killed} of 3)");

    let o = env.coffer(&["backup", &src_arg, &dest, "--json"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let said = String::from_utf8_lossy(&o.stderr);
    if last_killed {
        assert!(
            said.contains("did not finish"),
            "the rerun says what it found: {said}"
        );
    }
    env.assert_fsck_clean();
    let again = env.coffer_ok(&["backup", &src_arg, &dest, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&again).expect("json");
    assert_eq!(v["files_written"], 0, "the job was finished: {v}");

    let m = env.mount_with(&["--read-only"]);
    assert_eq!(dump(&m.p("x")), want, "nothing lost, nothing torn");
    let left = sh_ok(&format!("find '{}' -name '.coffer-partial.*'", s(&env.mnt)));
    assert_eq!(left, "", "no temporary file is left");
    m.umount();
}
