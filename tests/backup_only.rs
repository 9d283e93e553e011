//! Backup-only mounts: a backup host holding only a backup credential writes new backups
//! (rsync -a, incremental runs included) and can never read old ones; the key host reads all.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use common::{pattern, require_fuse, s, sh, sh_ok, Env, Host, MountGuard as Guard};

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("ls").flatten() {
            let t = e.file_type().expect("type");
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                out.push(e.path());
            }
        }
    }
    out
}

fn make_tree(src: &Path, round: u64) {
    for i in 0..30u64 {
        let d = src.join(format!("dir{}", i % 3));
        fs::create_dir_all(&d).expect("mkdir");
        fs::write(
            d.join(format!("file{i}.dat")),
            pattern(i + round * 1000, 5000 + 2000 * i as usize),
        )
        .expect("write");
    }
}

#[test]
fn backup_host_writes_new_backups_and_never_reads_old_ones() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    let (key_host, backup_host) = (Host::new(&env, "key"), Host::new(&env, "backup"));
    let store = env.path("store");
    let mnt = env.path("mnt-b");
    fs::create_dir_all(&mnt).expect("mkdir");
    let _g = Guard(mnt.clone());
    let src = env.path("src");

    // 1. A store made on the key host; a credential goes to the backup host's own keystore.
    key_host.ok(&["init", s(&store), "--rsa-bits", "2048"]);
    backup_host.ok(&["keys", "cert", "--out", s(&env.path("backup.pem"))]);
    key_host.ok(&[
        "keys",
        "backup-credential",
        s(&store),
        "--recipient",
        s(&env.path("backup.pem")),
        "--out",
        s(&env.path("store.bcred")),
    ]);
    backup_host.ok(&["keys", "import", s(&env.path("store.bcred"))]);

    // 2. rsync a tree in twice through the backup-only mount, with a change between runs.
    make_tree(&src, 1);
    let o = backup_host.run(&["mount", s(&store), s(&mnt), "--log", s(&env.path("b.log"))]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(said.contains("backup-only"), "{said}");
    let info = key_host.ok(&["info", s(&store)]);
    assert!(info.contains("backup-only"), "info shows the mode: {info}");
    sh_ok(&format!(
        "rsync -a '{}/' '{}/'",
        src.display(),
        mnt.join("data").display()
    ));
    // Files written in this session read back (tar --verify wants this).
    assert_eq!(
        fs::read(mnt.join("data/dir1/file1.dat")).expect("read own write"),
        pattern(1001, 7000)
    );
    backup_host.ok(&["umount", s(&mnt)]);
    fs::write(src.join("dir0/file0.dat"), b"changed for run two").expect("change");
    fs::write(src.join("dir2/brand-new.dat"), pattern(77, 123_456)).expect("add");
    fs::remove_file(src.join("dir1/file4.dat")).expect("remove");
    backup_host.ok(&["mount", s(&store), s(&mnt), "--log", s(&env.path("b.log"))]);
    let o = sh(&format!(
        "rsync -a --delete '{}/' '{}/'",
        src.display(),
        mnt.join("data").display()
    ));
    assert!(
        o.status.success(),
        "incremental rsync: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    // 3. Every file written before this mount is refused with EACCES (not EIO).
    let old: Vec<_> = files_under(&mnt.join("data"))
        .into_iter()
        .filter(|p| !p.ends_with("dir0/file0.dat") && !p.ends_with("dir2/brand-new.dat"))
        .collect();
    assert!(old.len() >= 25, "{} old files", old.len());
    for p in &old {
        let e = fs::read(p).expect_err("old content must not be readable");
        assert_eq!(e.raw_os_error(), Some(libc::EACCES), "{}", p.display());
    }
    // 6. An in-place write to an old file is refused; truncate-and-rewrite works.
    let victim = mnt.join("data/dir2/file2.dat");
    let e = fs::OpenOptions::new()
        .write(true)
        .open(&victim)
        .expect_err("in-place write");
    assert_eq!(e.raw_os_error(), Some(libc::EACCES));
    let e = fs::OpenOptions::new()
        .append(true)
        .open(&victim)
        .expect_err("append");
    assert_eq!(e.raw_os_error(), Some(libc::EACCES));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&victim)
        .expect("truncate and rewrite");
    f.write_all(b"rewritten by the backup host").expect("write");
    drop(f);
    fs::write(src.join("dir2/file2.dat"), b"rewritten by the backup host").expect("mirror");
    // Names and metadata of old files can be changed without reading them.
    let d = mnt.join("data");
    fs::create_dir(d.join("tmpdir")).expect("mkdir");
    fs::remove_dir(d.join("tmpdir")).expect("rmdir");
    std::os::unix::fs::symlink("dir1/file1.dat", d.join("link")).expect("symlink");
    assert_eq!(
        fs::read_link(d.join("link")).expect("readlink").to_str(),
        Some("dir1/file1.dat")
    );
    fs::hard_link(d.join("dir1/file7.dat"), d.join("hard")).expect("hard link to an old file");
    fs::set_permissions(
        d.join("dir1/file7.dat"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .expect("chmod");
    std::os::unix::fs::chown(d.join("dir1/file7.dat"), Some(1234), Some(1234)).expect("chown");
    sh_ok(&format!(
        "touch -d '2020-01-02 03:04:05' '{}'",
        d.join("dir1/file7.dat").display()
    ));
    fs::rename(d.join("dir0/file3.dat"), d.join("dir1/moved.dat")).expect("rename an old file");
    fs::rename(src.join("dir0/file3.dat"), src.join("dir1/moved.dat")).expect("mirror rename");
    std::os::unix::fs::symlink("dir1/file1.dat", src.join("link")).expect("mirror");
    fs::hard_link(src.join("dir1/file7.dat"), src.join("hard")).expect("mirror");
    fs::set_permissions(
        src.join("dir1/file7.dat"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .expect("mirror");
    std::os::unix::fs::chown(src.join("dir1/file7.dat"), Some(1234), Some(1234)).expect("mirror");
    sh_ok(&format!(
        "touch -d '2020-01-02 03:04:05' '{}'",
        src.join("dir1/file7.dat").display()
    ));
    backup_host.ok(&["umount", s(&mnt)]);
    let log = fs::read_to_string(env.path("b.log")).expect("log");
    assert!(
        log.contains("backup-only") && log.contains("no private key"),
        "the log says why"
    );
    let help = backup_host.ok(&["mount", "--help"]);
    assert!(help.contains("EACCES"), "--help says why");

    // 4. Nothing the backup host holds gives old plaintext: try every command.
    let marker = pattern(1 + 1000, 5000); // the start of dir1/file1.dat from run one
    let mut outputs = Vec::new();
    for args in [
        vec!["fsck", s(&store)],
        vec!["fsck", s(&store), "--names"],
        vec!["info", s(&store), "--json"],
        vec!["keys", "list", "--json"],
        vec![
            "keys",
            "export",
            s(&store),
            "--password-file",
            s(&backup_host.pass),
            "--out",
            s(&env.path("leak.keys")),
        ],
        vec![
            "keys",
            "backup-credential",
            s(&store),
            "--recipient",
            s(&env.path("backup.pem")),
            "--out",
            s(&env.path("x.bcred")),
        ],
    ] {
        let o = backup_host.run(&args);
        outputs.extend_from_slice(&o.stdout);
        outputs.extend_from_slice(&o.stderr);
    }
    let fsck = backup_host.run(&["fsck", s(&store)]);
    assert_eq!(fsck.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&fsck.stdout).contains("skipped: block authentication"));
    assert!(
        !env.path("leak.keys").exists(),
        "the backup host cannot export keys"
    );
    assert!(
        !outputs.windows(64).any(|w| w == &marker[..64]),
        "old plaintext in command output"
    );
    backup_host.ok(&["mount", s(&store), s(&mnt), "--read-only"]);
    let e = fs::read(mnt.join("data/dir1/file1.dat")).expect_err("read-only mount of a credential");
    assert_eq!(e.raw_os_error(), Some(libc::EACCES));
    backup_host.ok(&["umount", s(&mnt)]);
    // The backup host's keystore holds none of the store's reading keys, in any encoding.
    let secrets = reading_keys(&key_host, &store);
    let keystore_bytes: Vec<u8> = Env::all_bytes(&backup_host.keystore)
        .into_iter()
        .flat_map(|(_, b)| b)
        .collect();
    for secret in &secrets {
        for form in forms(secret) {
            assert!(
                !keystore_bytes
                    .windows(form.len())
                    .any(|w| w == form.as_slice()),
                "a reading key is in the backup host's keystore"
            );
        }
    }

    // 5. A full mount on the key host reads every byte of both runs.
    key_host.ok(&["mount", s(&store), s(&mnt)]);
    let out = sh_ok(&format!(
        "rsync -aHc --dry-run -i --delete '{}/' '{}/'",
        src.display(),
        mnt.join("data").display()
    ));
    assert!(
        out.trim().is_empty(),
        "key host sees exactly the source:\n{out}"
    );
    key_host.ok(&["umount", s(&mnt)]);
}

/// The store's master key, RSA private key (DER) and every batch key, read on the key host.
fn reading_keys(key_host: &Host, store: &Path) -> Vec<Vec<u8>> {
    let pass = fs::read_to_string(&key_host.pass).expect("pass");
    let ks = coffer::keys::Keystore::open(&key_host.keystore, pass.trim_end().as_bytes())
        .expect("keystore");
    let desc = coffer::store::Descriptor::load(store).expect("descriptor");
    let master = ks
        .get(&desc.current_master().key_id)
        .expect("get")
        .expect("master");
    let keys = coffer::store::unlock_keys(&desc, &master).expect("unlock");
    let private = keys.private.expect("private key");
    let mut out = vec![
        master.expose().to_vec(),
        private.to_der().expect("der").to_vec(),
    ];
    for e in fs::read_dir(store.join("batches"))
        .expect("batches")
        .flatten()
    {
        let record = fs::read(e.path()).expect("batch");
        let blob = coffer::format::BatchBlob::decode(&record).expect("batch record");
        out.push(
            private
                .unwrap_batch_key(blob.wrapped())
                .expect("unwrap")
                .expose()
                .to_vec(),
        );
    }
    assert!(out.len() >= 4, "two mounts made at least two batches");
    out
}

fn forms(key: &[u8]) -> Vec<Vec<u8>> {
    let probe = &key[..key.len().min(32)];
    vec![
        probe.to_vec(),
        hex::encode(probe).into_bytes(),
        base64::engine::general_purpose::STANDARD
            .encode(probe)
            .into_bytes(),
    ]
}

#[test]
fn a_backup_only_mount_keeps_the_attributes_and_acls_of_what_it_writes() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    let (key_host, backup_host) = (Host::new(&env, "key"), Host::new(&env, "backup"));
    let store = env.path("store");
    let mnt = env.path("mnt-b");
    fs::create_dir_all(&mnt).expect("mkdir");
    let _g = Guard(mnt.clone());
    key_host.ok(&["init", s(&store), "--rsa-bits", "2048"]);
    backup_host.ok(&["keys", "cert", "--out", s(&env.path("backup.pem"))]);
    key_host.ok(&[
        "keys",
        "backup-credential",
        s(&store),
        "--recipient",
        s(&env.path("backup.pem")),
        "--out",
        s(&env.path("store.bcred")),
    ]);
    backup_host.ok(&["keys", "import", s(&env.path("store.bcred"))]);
    let src = env.path("src");
    fs::create_dir_all(src.join("d")).expect("mkdir");
    fs::write(src.join("d/f"), b"backed up").expect("write");
    sh_ok(&format!(
        "setfattr -n user.origin -v nightly '{f}' && setfacl -m u:1000:r '{f}' && setfacl -d -m g:50:rx '{d}'",
        f = s(&src.join("d/f")),
        d = s(&src.join("d"))
    ));
    let dump = |root: &Path| {
        sh_ok(&format!(
            "cd '{}' && getfattr -R -d -m - -e hex d | grep -v '^$' | sort",
            s(root)
        ))
    };
    let want = dump(&src);
    assert!(
        want.contains("user.origin") && want.contains("posix_acl_default"),
        "{want}"
    );
    let o = backup_host.run(&["mount", s(&store), s(&mnt), "--log", s(&env.path("b.log"))]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    sh_ok(&format!("rsync -aAX '{}/' '{}/'", s(&src), s(&mnt)));
    // The backup host reads back the attributes of what it wrote (sealed under the name key,
    // which it holds, as names are).
    assert_eq!(dump(&mnt), want);
    backup_host.ok(&["umount", s(&mnt)]);
    key_host.ok(&["mount", s(&store), s(&mnt)]);
    assert_eq!(dump(&mnt), want);
    assert_eq!(fs::read(mnt.join("d/f")).expect("read"), b"backed up");
    key_host.ok(&["umount", s(&mnt)]);
}
