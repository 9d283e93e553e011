//! Shared harness for the integration suites: a temporary store, keystore, passphrase and
//! mount point per test, driven through the real `coffer` binary, and a guard that always
//! unmounts (a failed test must not leave a stale mount behind for the next run).

#![allow(dead_code)]

pub mod attacker;
pub mod keyservers;
pub mod kms;
pub mod stores;
pub mod trees;
pub mod webdriver;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const PASS: &str = "correct horse battery staple";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_coffer")
}

/// Mount tests need root, /dev/fuse and fusermount3. Say exactly why when they cannot run;
/// COFFER_SKIP_FUSE_TESTS=1 turns that into a skip instead of a failure.
pub fn require_fuse() -> bool {
    let mut missing = Vec::new();
    if !Path::new("/dev/fuse").exists() {
        missing.push("/dev/fuse does not exist");
    }
    if !Command::new("sh")
        .args(["-c", "command -v fusermount3"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
    {
        missing.push("fusermount3 is not installed (apt-get install fuse3)");
    }
    if missing.is_empty() {
        return true;
    }
    let why = missing.join("; ");
    if std::env::var("COFFER_SKIP_FUSE_TESTS").as_deref() == Ok("1") {
        eprintln!(
            "SKIPPED (COFFER_SKIP_FUSE_TESTS=1): this test mounts a FUSE filesystem, but {why}"
        );
        return false;
    }
    panic!("this test mounts a FUSE filesystem, but {why}; run tools/test.sh, which installs what is needed");
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
    pub mnt: PathBuf,
    pub keystore: PathBuf,
    pub pass: PathBuf,
    pub log: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("coffer-test-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path().to_path_buf();
        std::fs::create_dir(d.join("mnt")).expect("mkdir mnt");
        std::fs::write(d.join("pass"), format!("{PASS}\n")).expect("write pass");
        Env {
            store: d.join("store"),
            mnt: d.join("mnt"),
            keystore: d.join("keystore"),
            pass: d.join("pass"),
            log: d.join("mount.log"),
            dir,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Run coffer with this env's keystore options appended.
    pub fn coffer(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .args(args)
            .env("COFFER_KEYSTORE", &self.keystore)
            .env("COFFER_PASSPHRASE_FILE", &self.pass)
            .env_remove("COFFER_LOG")
            .output()
            .expect("run coffer")
    }

    pub fn coffer_ok(&self, args: &[&str]) -> String {
        let o = self.coffer(args);
        assert!(
            o.status.success(),
            "coffer {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn init(&self) -> String {
        self.init_with(&[])
    }

    /// `coffer init` with extra arguments (a block size, say).
    pub fn init_with(&self, extra: &[&str]) -> String {
        let s = self.store.to_str().expect("utf8");
        let mut args = vec!["init", s, "--rsa-bits", "2048"];
        args.extend_from_slice(extra);
        self.coffer_ok(&args).trim().to_string()
    }

    pub fn mount(&self) -> Mounted<'_> {
        self.mount_with(&[])
    }

    pub fn mount_with(&self, extra: &[&str]) -> Mounted<'_> {
        let (s, m, l) = (
            self.store.to_str().expect("utf8"),
            self.mnt.to_str().expect("utf8"),
            self.log.to_str().expect("utf8"),
        );
        let mut args = vec!["mount", s, m, "--log", l];
        args.extend_from_slice(extra);
        self.coffer_ok(&args);
        Mounted {
            env: self,
            active: true,
        }
    }

    /// Poll until the store's lock record is empty: the daemon released it cleanly and
    /// exited (a generous bound; never a measurement).
    pub fn wait_released(&self) -> bool {
        poll(std::time::Duration::from_secs(60), || {
            std::fs::read(self.store.join("lock")).is_ok_and(|b| b.is_empty())
        })
    }

    /// `coffer fsck STORE` finds nothing (exit 0); its report is the failure message.
    pub fn assert_fsck_clean(&self) {
        let o = self.coffer(&["fsck", self.store.to_str().expect("utf8")]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
    }

    /// This env's store as an earlier coffer would have written it (common::stores::as_older_format).
    pub fn older_format(&self, version: u32) {
        stores::as_older_format(&|a| self.coffer(a), &self.store, &self.keystore, version);
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Every byte under a directory, for "no plaintext here" checks.
    pub fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("ls").flatten() {
                let p = e.path();
                let ft = e.file_type().expect("type");
                if ft.is_dir() {
                    stack.push(p.clone());
                }
                let mut bytes = p
                    .file_name()
                    .map(|n| n.as_encoded_bytes().to_vec())
                    .unwrap_or_default();
                if ft.is_file() {
                    bytes.extend(std::fs::read(&p).expect("read"));
                } else if ft.is_symlink() {
                    bytes.extend(
                        std::fs::read_link(&p)
                            .expect("readlink")
                            .into_os_string()
                            .into_encoded_bytes(),
                    );
                }
                out.push((p, bytes));
            }
        }
        out
    }
}

/// Every byte of a store but its descriptor and the lock file a mount rewrites: what must
/// not change when only the keys do (a rotation).
pub fn store_bytes_but_descriptor(store: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    Env::all_bytes(store)
        .into_iter()
        .filter(|(p, _)| {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n != "coffer.store" && n != "lock"
        })
        .collect()
}

/// A live mount; unmounts on drop, even when the test panics.
pub struct Mounted<'a> {
    pub env: &'a Env,
    active: bool,
}

impl Mounted<'_> {
    pub fn p(&self, rel: &str) -> PathBuf {
        self.env.mnt.join(rel)
    }

    pub fn umount(mut self) {
        self.active = false;
        let m = self.env.mnt.to_str().expect("utf8");
        let o = self.env.coffer(&["umount", m]);
        assert!(
            o.status.success(),
            "umount failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    /// The daemon's pid, from the store's lock file.
    pub fn daemon_pid(&self) -> u32 {
        let s = std::fs::read_to_string(self.env.store.join("lock")).expect("lock file");
        s.lines()
            .next()
            .expect("pid line")
            .trim()
            .parse()
            .expect("pid")
    }

    /// SIGKILL the daemon (a crash), then clear the stale mount.
    pub fn kill(mut self) {
        self.active = false;
        let pid = self.daemon_pid();
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .expect("kill");
        // Polled with a generous bound: the umount below needs the daemon gone.
        poll(std::time::Duration::from_secs(30), || {
            !Path::new(&format!("/proc/{pid}")).exists()
        });
        let m = self.env.mnt.to_str().expect("utf8");
        let o = self.env.coffer(&["umount", m]);
        if !o.status.success() {
            Command::new("fusermount3").args(["-uz", m]).status().ok();
        }
    }
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        let m = self.env.mnt.to_str().unwrap_or_default().to_string();
        let ok = Command::new(bin())
            .args(["umount", &m, "--timeout", "20"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            Command::new("fusermount3").args(["-uz", &m]).status().ok();
            Command::new("umount").args(["-l", &m]).status().ok();
        }
    }
}

/// Deterministic pseudo-random bytes.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn sh(cmd: &str) -> Output {
    Command::new("sh").args(["-c", cmd]).output().expect("sh")
}

pub fn sh_ok(cmd: &str) -> String {
    let o = sh(cmd);
    assert!(
        o.status.success(),
        "`{cmd}` failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The text of docs/admin.md, whose snippets the admin tests run.
pub fn admin_doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/admin.md"))
        .expect("docs/admin.md")
}

/// The fstab line of docs/admin.md.
pub fn admin_fstab_line() -> String {
    let doc = admin_doc();
    let block = doc
        .split("```fstab\n")
        .nth(1)
        .expect("an fstab block in docs/admin.md");
    let line = block.lines().next().expect("its line");
    assert!(line.contains(" fuse.coffer "), "{line}");
    line.to_string()
}

/// Run `coffer ARGS` (a shell-quoted string) with this env's keystore on a terminal of its
/// own, script(1)'s; returns what the terminal showed (stdout).
pub fn on_terminal(env: &Env, args: &str) -> Output {
    sh(&format!(
        "COFFER_KEYSTORE='{}' COFFER_PASSPHRASE_FILE='{}' script -qec \"{} {args}\" /dev/null",
        s(&env.keystore),
        s(&env.pass),
        bin(),
    ))
}

/// Drop the kernel's page cache, so the next reads go through the filesystem's decrypt path
/// instead of being served from memory.
pub fn drop_caches() {
    let _ = sh("sync; echo 3 > /proc/sys/vm/drop_caches");
}

impl<'a> Mounted<'a> {
    /// Take charge of a mount made some other way (a test that mounts with its own command).
    pub fn adopt(env: &'a Env) -> Mounted<'a> {
        Mounted { env, active: true }
    }
}

/// A "host" in multi-host tests: its own keystore and passphrase.
pub struct Host {
    pub name: String,
    pub keystore: PathBuf,
    pub pass: PathBuf,
}

impl Host {
    pub fn new(env: &Env, name: &str) -> Host {
        let pass = env.path(&format!("{name}.pass"));
        std::fs::write(&pass, format!("passphrase of {name}\n")).expect("write");
        Host {
            name: name.into(),
            keystore: env.path(&format!("{name}.keystore")),
            pass,
        }
    }

    /// Run coffer with this host's keystore options.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    /// The same, with more environment (a KMS configuration, say).
    pub fn run_env(&self, args: &[&str], env: &[(&str, &Path)]) -> Output {
        let mut c = Command::new(bin());
        c.args(args)
            .env("COFFER_KEYSTORE", &self.keystore)
            .env("COFFER_PASSPHRASE_FILE", &self.pass)
            .env_remove("COFFER_LOG");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("coffer")
    }

    /// Run, and keep everything it printed in `log` (for leak checks).
    pub fn run_into(&self, args: &[&str], log: &mut Vec<u8>) -> Output {
        let o = self.run(args);
        log.extend_from_slice(&o.stdout);
        log.extend_from_slice(&o.stderr);
        o
    }

    /// Run, require success, return standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "{}: coffer {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn ok_into(&self, args: &[&str], log: &mut Vec<u8>) -> String {
        let o = self.run_into(args, log);
        assert!(
            o.status.success(),
            "{}: coffer {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Key ids this host's keystore holds (read without the passphrase).
    pub fn key_ids(&self) -> Vec<String> {
        let o = Command::new(bin())
            .args(["keys", "list", "--json", "--keystore"])
            .arg(&self.keystore)
            .output()
            .expect("list");
        if !o.status.success() {
            return Vec::new();
        }
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        v["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k["key_id"].as_str().expect("id").to_string())
            .collect()
    }

    pub fn audit(&self) -> String {
        std::fs::read_to_string(self.keystore.join("audit.log")).unwrap_or_default()
    }
}

/// Poll `f` every 20 ms until it holds (true) or `limit` has passed (false): a generous bound
/// on waiting for a state, never a measurement.
pub fn poll(limit: std::time::Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A path as &str for command lines.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

/// Unmounts a mount point on drop, so a failing multi-host test leaves no mount behind.
pub struct MountGuard(pub PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        let m = s(&self.0);
        if std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .contains(m)
        {
            let _ = Command::new(bin()).args(["umount", m]).output();
            let _ = Command::new("fusermount3").args(["-uz", m]).output();
        }
    }
}

/// A listing of a tree: each entry's kind, path, and size and SHA-256 (files) or target
/// (symlinks), as tools/make-fixture.sh writes it into a fixture's manifest.
pub fn manifest_of(root: &Path) -> String {
    sh_ok(&format!(
        r#"cd '{}' && find . -mindepth 1 | LC_ALL=C sort | while read -r p; do
  if [ -L "$p" ]; then echo "l $p $(readlink "$p")";
  elif [ -d "$p" ]; then echo "d $p";
  else echo "f $p $(stat -c %s "$p") $(sha256sum < "$p" | cut -d' ' -f1)"; fi
done"#,
        root.display()
    ))
}
