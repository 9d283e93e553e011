//! `coffer backup` and `coffer restore`: trees into and out of a store without a mount, in the
//! same format a mount reads and writes. Every comparison is of tests/tools/tree-dump.py's
//! dumps (type, mode, owner, times, content hash, every xattr, getfacl), source against copy.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::trees::{dump, system_tree};
use common::{pattern, require_fuse, s, sh_ok, Env, Host};

/// The system tree, and what else a tree can hold: a sparse file, a FIFO, a device node, a
/// socket, an empty file, a file of several blocks, a deep directory.
fn full_tree(dir: &Path) {
    system_tree(dir);
    // Written before every time is set in the past (as system_tree does, for rsync's sake).
    fs::create_dir_all(dir.join("var/deep/a/b/c/d")).expect("mkdir");
    fs::write(dir.join("var/deep/a/b/c/d/blocks"), pattern(7, 5_000_000)).expect("write");
    let d = s(dir);
    sh_ok(&format!(
        "set -e; mkdir -p {d}/var/deep/a/b/c/d
         truncate -s 64M {d}/var/sparse
         printf 'in the middle' | dd of={d}/var/sparse bs=1 seek=10000000 conv=notrunc status=none
         mkfifo {d}/var/fifo
         mknod {d}/var/null c 1 3
         python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind(\"{d}/var/sock\")'
         : > {d}/var/empty
         ln {d}/etc/app/conf {d}/var/deep/a/conf.far
         find {d}/var -depth -exec touch -h -m -d '2021-01-02 03:04:05.5' {{}} +"
    ));
}

/// Run and parse the JSON summary; the exit code must be `code`.
fn json_run(env: &Env, args: &[&str], code: i32) -> serde_json::Value {
    let mut all = args.to_vec();
    all.push("--json");
    let o = env.coffer(&all);
    assert_eq!(
        o.status.code(),
        Some(code),
        "coffer {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("one JSON summary on stdout")
}

fn at(env: &Env, path: &str) -> String {
    format!("{}:{path}", s(&env.store))
}

/// Each backing file's identity and change time: what a run that changes nothing leaves.
fn store_state(store: &Path) -> BTreeMap<PathBuf, (u64, i64, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![store.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("ls").flatten() {
            let m = e.path().symlink_metadata().expect("stat");
            if m.is_dir() {
                stack.push(e.path());
            }
            if e.file_name() != "lock" {
                out.insert(e.path(), (m.ino(), m.ctime(), m.ctime_nsec()));
            }
        }
    }
    out
}

fn allocated_kib(p: &Path) -> u64 {
    p.symlink_metadata().expect("stat").blocks() / 2
}

#[test]
fn backup_keeps_what_a_system_tree_carries_and_a_mount_reads_it() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    full_tree(&src);
    let want = dump(&src);
    let summary = json_run(
        &env,
        &["backup", &format!("{}/", s(&src)), &at(&env, "hosts/web1")],
        0,
    );
    assert_eq!(summary["failed"], 0);
    assert_eq!(summary["files_written"], 13, "{summary}");

    let m = env.mount_with(&["--read-only"]);
    assert_eq!(
        dump(&m.p("hosts/web1")),
        want,
        "a mount reads what backup wrote"
    );
    assert!(
        allocated_kib(&m.p("hosts/web1/var/sparse")) < 1024,
        "holes stay holes in the store"
    );
    m.umount();
    env.assert_fsck_clean();

    let out = env.path("out");
    let summary = json_run(&env, &["restore", &at(&env, "hosts/web1/"), s(&out)], 0);
    assert_eq!(summary["failed"], 0);
    assert_eq!(dump(&out), want, "restore gives back what backup took");
    let ino = |p: &str| out.join(p).symlink_metadata().expect("stat").ino();
    let first = ino("etc/app/conf");
    assert_eq!(
        (ino("etc/app/conf.hard"), ino("var/deep/a/conf.far")),
        (first, first),
        "hard links stay links"
    );
    assert!(
        allocated_kib(&out.join("var/sparse")) < 1024,
        "and holes stay holes"
    );
}

#[test]
fn a_tree_written_through_the_mount_restores_whole() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    full_tree(&src);
    let want = dump(&src);
    let m = env.mount();
    sh_ok(&format!(
        "rsync -aHAXU --open-noatime --numeric-ids '{}/' '{}/'",
        s(&src),
        s(&env.mnt)
    ));
    m.umount();
    let out = env.path("out");
    let summary = json_run(&env, &["restore", &at(&env, ""), s(&out)], 0);
    assert_eq!(summary["failed"], 0);
    assert_eq!(dump(&out), want);
}

#[test]
fn a_second_run_writes_nothing_and_a_change_rewrites_that_file_alone() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    for i in 0..200u64 {
        let d = src.join(format!("d{}", i % 7));
        fs::create_dir_all(&d).expect("mkdir");
        fs::write(d.join(format!("f{i}")), pattern(i, 100 + 997 * i as usize)).expect("write");
    }
    let dest = at(&env, "srv");
    let first = json_run(&env, &["backup", s(&src), &dest], 0);
    assert_eq!(first["files_written"], 200);
    let before = store_state(&env.store);
    let again = json_run(&env, &["backup", s(&src), &dest], 0);
    assert_eq!(
        (again["files_written"].as_u64(), again["unchanged"].as_u64()),
        (Some(0), Some(200))
    );
    assert_eq!(
        store_state(&env.store),
        before,
        "a run with nothing to do changes nothing in the store"
    );

    fs::write(src.join("d3/f3"), b"new content").expect("change");
    sh_ok(&format!(
        "chmod 600 '{0}/d4/f4' && setfattr -n user.x -v y '{0}/d5/f5'",
        s(&src)
    ));
    let third = json_run(&env, &["backup", s(&src), &dest], 0);
    assert_eq!(
        (third["files_written"].as_u64(), third["unchanged"].as_u64()),
        (Some(1), Some(199))
    );
    let after = store_state(&env.store);
    let data = env.store.join("data");
    let replaced = before
        .iter()
        .filter(|(p, v)| p.starts_with(&data) && after.get(*p).is_some_and(|a| a.0 != v.0))
        .count();
    let new = after
        .keys()
        .filter(|p| p.starts_with(&data) && !before.contains_key(*p));
    assert_eq!(
        replaced + new.count(),
        1,
        "one ciphertext file written anew"
    );

    let checked = json_run(&env, &["backup", "--checksum", s(&src), &dest], 0);
    assert_eq!(
        checked["unchanged"], 200,
        "--checksum finds the content equal"
    );
    let out = env.path("out");
    json_run(&env, &["restore", &at(&env, "srv/src/"), s(&out)], 0);
    assert_eq!(dump(&out), dump(&src));
}

/// The span of bytes where two ciphertexts of one file differ.
fn differing_span(a: &[u8], b: &[u8]) -> usize {
    let first = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let last = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .position(|(x, y)| x != y)
        .unwrap_or(0);
    a.len().max(b.len()).saturating_sub(first + last)
}

#[test]
fn a_changed_file_is_re_encrypted_only_where_it_changed() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("big"), pattern(1, 2 << 20)).expect("write");
    fs::write(src.join("grows"), pattern(2, 100_000)).expect("write");
    let dest = at(&env, "p");
    json_run(&env, &["backup", &format!("{}/", s(&src)), &dest], 0);
    let before: BTreeMap<PathBuf, Vec<u8>> = Env::all_bytes(&env.store.join("data"))
        .into_iter()
        .collect();

    let mut big = pattern(1, 2 << 20);
    big[1_000_000..1_000_010].copy_from_slice(b"0123456789");
    fs::write(src.join("big"), &big).expect("change in place");
    let mut grows = pattern(2, 100_000);
    grows.extend(pattern(3, 5000));
    fs::write(src.join("grows"), &grows).expect("append");
    sh_ok(&format!(
        "touch -d '+1 minute' '{0}/big' '{0}/grows'",
        s(&src)
    ));
    let v = json_run(&env, &["backup", &format!("{}/", s(&src)), &dest], 0);
    assert_eq!(v["files_written"], 2);
    let written = v["bytes_written"].as_u64().expect("bytes");
    // The store has 4 KiB blocks: one for the change in place; for the append, the old final
    // block, the one it grew into and what follows.
    assert!(
        written <= 3 * 4096 + 5000,
        "only changed blocks are written: {written} bytes"
    );

    let after: BTreeMap<PathBuf, Vec<u8>> = Env::all_bytes(&env.store.join("data"))
        .into_iter()
        .collect();
    let spans: Vec<usize> = before
        .iter()
        .filter(|(p, b)| b.len() > 1 << 20 && after.get(*p).is_some_and(|a| a != *b))
        .map(|(p, b)| differing_span(b, &after[p]))
        .collect();
    assert_eq!(
        spans.len(),
        1,
        "the big file's ciphertext, at the same name"
    );
    // One block's ciphertext: nonce, 4 KiB, tag.
    assert!(
        spans[0] <= 12 + 4096 + 16,
        "differs in one block's span, not more: {spans:?}"
    );

    let out = env.path("out");
    json_run(&env, &["restore", &at(&env, "p/"), s(&out)], 0);
    assert_eq!(fs::read(out.join("big")).expect("read"), big);
    assert_eq!(fs::read(out.join("grows")).expect("read"), grows);
    env.assert_fsck_clean();
}

#[test]
fn delete_dry_run_and_excludes_do_what_rsync_does() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    sh_ok(&format!(
        "set -e; mkdir -p '{0}' && cd '{0}'
         mkdir -p a cache/x logs; echo keep > a/keep; echo gone > a/gone; echo t > b.tmp
         echo c > cache/x/c; echo l > logs/app.log; echo k > logs/keep.txt",
        s(&src)
    ));
    let ex = env.path("ex.txt");
    fs::write(&ex, "# logs are rotated elsewhere\n*.log\n").expect("write");
    let dest = at(&env, "t");
    let src_c = format!("{}/", s(&src));
    let args = [
        "backup",
        &src_c,
        &dest,
        "--exclude",
        "*.tmp",
        "--exclude",
        "cache/",
    ];
    json_run(&env, &[&args[..], &["--exclude-from", s(&ex)]].concat(), 0);
    let out = env.path("out1");
    json_run(&env, &["restore", &at(&env, "t/"), s(&out)], 0);
    let listing = sh_ok(&format!("cd '{}' && find . | sort", s(&out)));
    assert_eq!(
        listing,
        ".\n./a\n./a/gone\n./a/keep\n./logs\n./logs/keep.txt\n"
    );

    fs::remove_file(src.join("a/gone")).expect("rm");
    let before = store_state(&env.store);
    let o = env.coffer(&[
        "backup",
        "-n",
        "--delete",
        &src_c,
        &dest,
        "--exclude",
        "*.tmp",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("would delete from the store t/a/gone"),
        "named in the store, not the source: {said}"
    );
    assert!(
        said.contains("would write") && said.contains("cache"),
        "{said}"
    );
    assert_eq!(store_state(&env.store), before, "a dry run changes nothing");

    let s2 = json_run(
        &env,
        &["backup", "--delete", &src_c, &dest, "--exclude", "*.tmp"],
        0,
    );
    assert_eq!(s2["deleted"], 1);
    let out = env.path("out2");
    json_run(&env, &["restore", &at(&env, "t/"), s(&out)], 0);
    assert!(!out.join("a/gone").exists() && out.join("cache/x/c").exists());
    assert!(
        out.join("logs/app.log").exists(),
        "now that it is not excluded"
    );
}

/// Run a shell script in a mount namespace of its own, where /dev is an empty tmpfs (no
/// /dev/fuse) and `bad` in the source is a file that cannot be read even by root.
fn in_namespace_without_fuse(env: &Env, script: &str) -> Output {
    let full = format!(
        "set -e; mount --make-rprivate /; mount -t tmpfs none /dev; test ! -e /dev/fuse
         export COFFER_KEYSTORE='{}' COFFER_PASSPHRASE_FILE='{}'
         {script}",
        s(&env.keystore),
        s(&env.pass)
    );
    Command::new("unshare")
        .args(["-m", "sh", "-c", &full])
        .output()
        .expect("unshare")
}

#[test]
fn without_dev_fuse_an_unreadable_file_is_reported_and_the_rest_copied() {
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir_all(src.join("sub")).expect("mkdir");
    fs::write(src.join("sub/ok"), pattern(1, 70_000)).expect("write");
    fs::write(src.join("bad"), b"").expect("write");
    fs::write(src.join("fine"), b"fine").expect("write");
    let out = env.path("out");
    let o = in_namespace_without_fuse(
        &env,
        &format!(
            "mount --bind /proc/sys/vm/drop_caches '{src}/bad'
             rc=0; {bin} backup '{src}/' '{store}:x' || rc=$?; echo backup=$rc
             {bin} mount '{store}' '{mnt}' || echo mount=$?
             {bin} restore '{store}:x/' '{out}'; echo restore=$?",
            bin = common::bin(),
            src = s(&src),
            store = s(&env.store),
            mnt = s(&env.mnt),
            out = s(&out)
        ),
    );
    let (said, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(
        said.contains("backup=23"),
        "some files failed: exit 23 as rsync\n{said}\n{err}"
    );
    assert!(
        err.contains(&format!(
            "{}/bad: cannot back up: Permission denied",
            s(&src)
        )),
        "{err}"
    );
    assert!(
        said.contains("mount=2") && err.contains("/dev/fuse"),
        "no FUSE here\n{said}\n{err}"
    );
    assert!(said.contains("restore=0"), "{said}\n{err}");
    assert_eq!(
        fs::read(out.join("sub/ok")).expect("restored"),
        pattern(1, 70_000)
    );
    assert_eq!(fs::read(out.join("fine")).expect("restored"), b"fine");
    assert!(!out.join("bad").exists());
}

#[test]
fn a_backup_only_host_backs_up_and_cannot_restore() {
    let env = Env::new();
    let (key_host, backup_host) = (Host::new(&env, "key"), Host::new(&env, "backup"));
    let store = env.path("store");
    key_host.ok(&["init", s(&store), "--rsa-bits", "2048"]);
    let pem = env.path("b.pem");
    backup_host.ok(&["keys", "cert", "--out", s(&pem)]);
    let cred = env.path("store.bcred");
    let recipient = ["--recipient", s(&pem), "--out", s(&cred)];
    key_host.ok(&[&["keys", "backup-credential", s(&store)][..], &recipient].concat());
    backup_host.ok(&["keys", "import", s(&cred)]);

    let src = env.path("src");
    fs::create_dir_all(&src).expect("mkdir");
    fs::write(src.join("a"), pattern(3, 40_000)).expect("write");
    let dest = format!("{}:b", s(&store));
    let o = backup_host.run(&["backup", &format!("{}/", s(&src)), &dest]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("backing up backup-only"));
    fs::write(src.join("a"), pattern(4, 40_001)).expect("change");
    fs::write(src.join("new"), b"new").expect("write");
    backup_host.ok(&["backup", &format!("{}/", s(&src)), &dest]);

    let out = env.path("out");
    let o = backup_host.run(&["restore", &format!("{}:b/", s(&store)), s(&out)]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("holds no private key for the store"), "{err}");
    key_host.ok(&["restore", &format!("{}:b/", s(&store)), s(&out)]);
    assert_eq!(fs::read(out.join("a")).expect("read"), pattern(4, 40_001));
    assert_eq!(fs::read(out.join("new")).expect("read"), b"new");
}

/// A restore into a directory that already holds the tree leaves what matches (size, time,
/// mode) as it is, rsync's quick check, where it rewrote every file; what differs is
/// written again.
#[test]
fn a_restore_over_the_same_tree_writes_only_what_differs() {
    use std::os::unix::fs::MetadataExt;
    let env = Env::new();
    env.init();
    let src = env.path("src");
    sh_ok(&format!(
        "mkdir -p '{0}/d' && echo a > '{0}/a' && echo b > '{0}/d/b' && echo c > '{0}/d/c'",
        s(&src)
    ));
    json_run(
        &env,
        &["backup", &format!("{}/", s(&src)), &at(&env, "t")],
        0,
    );
    let out = env.path("out");
    let first = json_run(&env, &["restore", &at(&env, "t/"), s(&out)], 0);
    assert_eq!(first["files_written"], 3, "{first}");
    let ino = |p: &str| fs::metadata(out.join(p)).expect(p).ino();
    let (a, b) = (ino("a"), ino("d/b"));
    fs::write(out.join("d/c"), "changed here\n").expect("write");

    let again = json_run(&env, &["restore", &at(&env, "t/"), s(&out)], 0);
    assert_eq!(
        (again["files_written"].as_u64(), again["unchanged"].as_u64()),
        (Some(1), Some(2)),
        "{again}"
    );
    assert_eq!((ino("a"), ino("d/b")), (a, b), "left as they were");
    assert_eq!(fs::read_to_string(out.join("d/c")).expect("c"), "c\n");
}
