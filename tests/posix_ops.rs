//! Each POSIX operation that cp -a, tar, rsync -a and editors rely on, through a real mount.

mod common;

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};

use common::{pattern, require_fuse, Env};

/// The default block size.
const BLOCK: usize = 4096;

#[test]
fn files_read_and_write_at_any_offset_with_holes_and_truncation() {
    if require_fuse() {
        offsets_holes_and_truncation(&[]);
    }
}

/// The same without the kernel's writeback cache (on by default): every write then arrives
/// as the program made it.
#[test]
fn the_same_without_the_writeback_cache() {
    if require_fuse() {
        offsets_holes_and_truncation(&["--no-writeback-cache"]);
    }
}

fn offsets_holes_and_truncation(mount_args: &[&str]) {
    let env = Env::new();
    env.init();
    let m = env.mount_with(mount_args);
    let p = m.p("f.bin");
    // Sizes around block boundaries round-trip exactly.
    for (i, len) in [
        0,
        1,
        BLOCK - 1,
        BLOCK,
        BLOCK + 1,
        3 * BLOCK + 17,
        65535,
        65536,
        65537,
        5 << 20,
    ]
    .into_iter()
    .enumerate()
    {
        let data = pattern(i as u64, len);
        fs::write(&p, &data).expect("write");
        assert_eq!(
            fs::metadata(&p).expect("stat").len(),
            len as u64,
            "stat shows the plaintext size"
        );
        assert_eq!(
            fs::read(&p).expect("read"),
            data,
            "round trip of {len} bytes"
        );
    }
    // Writes at offsets inside, across and past the end of blocks.
    let mut model = pattern(9, 200_000);
    fs::write(&p, &model).expect("write");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .expect("open rw");
    for (off, len, seed) in [
        (10usize, 5usize, 1u64),
        (BLOCK - 3, 10, 2),
        (150_000, 60_000, 3),
        (300_000, 10, 4),
    ] {
        let d = pattern(seed, len);
        f.write_all_at(&d, off as u64).expect("pwrite");
        if model.len() < off + len {
            model.resize(off + len, 0); // the hole reads as zeros
        }
        model[off..off + len].copy_from_slice(&d);
    }
    f.sync_all().expect("fsync");
    common::drop_caches();
    assert_eq!(fs::read(&p).expect("read"), model);
    let mut buf = vec![0u8; 1000];
    f.read_exact_at(&mut buf, (BLOCK - 500) as u64)
        .expect("pread across a boundary");
    assert_eq!(&buf[..], &model[BLOCK - 500..BLOCK + 500]);
    // Truncate down into the middle of a block, to a boundary, up (a hole), and to zero.
    for new_len in [123_457usize, 2 * BLOCK, 400_000, 0, 7] {
        f.set_len(new_len as u64).expect("truncate");
        model.resize(new_len, 0);
        assert_eq!(fs::metadata(&p).expect("stat").len(), new_len as u64);
        assert_eq!(
            fs::read(&p).expect("read"),
            model,
            "after truncate to {new_len}"
        );
    }
    // O_APPEND goes to the end.
    let mut a = OpenOptions::new().append(true).open(&p).expect("append");
    a.write_all(b"tail").expect("append write");
    drop(a);
    model.extend_from_slice(b"tail");
    assert_eq!(fs::read(&p).expect("read"), model);
    // Seeking past the end and writing leaves a hole of zeros.
    let mut s = OpenOptions::new().write(true).open(&p).expect("open");
    s.seek(SeekFrom::Start(1_000_000)).expect("seek");
    s.write_all(b"x").expect("write");
    drop(s);
    model.resize(1_000_000, 0);
    model.push(b'x');
    assert_eq!(fs::read(&p).expect("read"), model);
    drop(f);
    m.umount();
}

#[test]
fn directories_renames_links_and_unlink_while_open() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let m = env.mount();
    fs::create_dir_all(m.p("a/b/c")).expect("mkdir -p");
    fs::write(m.p("a/b/c/file"), b"one").expect("write");
    fs::write(m.p("a/other"), b"two").expect("write");
    // readdir lists exactly the plaintext names.
    let mut names: Vec<_> = fs::read_dir(m.p("a"))
        .expect("ls")
        .map(|e| e.expect("e").file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["b", "other"]);
    // Rename across directories, and a directory with its contents.
    fs::rename(m.p("a/b/c/file"), m.p("a/moved")).expect("rename across dirs");
    assert_eq!(fs::read(m.p("a/moved")).expect("read"), b"one");
    fs::rename(m.p("a/b"), m.p("b2")).expect("rename dir");
    assert!(m.p("b2/c").is_dir());
    // Rename over an existing file replaces it.
    fs::rename(m.p("a/moved"), m.p("a/other")).expect("rename over");
    assert_eq!(fs::read(m.p("a/other")).expect("read"), b"one");
    assert!(!m.p("a/moved").exists());
    // Rename a directory over an empty one.
    fs::create_dir(m.p("empty")).expect("mkdir");
    fs::rename(m.p("b2"), m.p("empty")).expect("rename dir over empty dir");
    assert!(m.p("empty/c").is_dir());
    // rmdir refuses a non-empty directory and removes an empty one.
    let e = fs::remove_dir(m.p("empty")).expect_err("not empty");
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY));
    fs::remove_dir(m.p("empty/c")).expect("rmdir");
    fs::remove_dir(m.p("empty")).expect("rmdir");
    assert!(!m.p("empty").exists());
    // Unlink while open: the open handle still reads and writes.
    fs::write(m.p("gone"), pattern(3, 100_000)).expect("write");
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("gone"))
        .expect("open");
    fs::remove_file(m.p("gone")).expect("unlink");
    assert!(!m.p("gone").exists());
    let mut back = Vec::new();
    f.read_to_end(&mut back).expect("read after unlink");
    assert_eq!(back, pattern(3, 100_000));
    f.write_all_at(b"still", 0).expect("write after unlink");
    drop(f);
    // Hard links share the inode and the content.
    fs::write(m.p("h1"), b"linked").expect("write");
    fs::hard_link(m.p("h1"), m.p("a/h2")).expect("link");
    let (s1, s2) = (
        fs::metadata(m.p("h1")).expect("stat"),
        fs::metadata(m.p("a/h2")).expect("stat"),
    );
    assert_eq!(s1.ino(), s2.ino());
    assert_eq!(s1.nlink(), 2);
    fs::write(m.p("a/h2"), b"changed via the second name").expect("write");
    assert_eq!(
        fs::read(m.p("h1")).expect("read"),
        b"changed via the second name"
    );
    fs::remove_file(m.p("h1")).expect("unlink first name");
    assert_eq!(
        fs::read(m.p("a/h2")).expect("read"),
        b"changed via the second name"
    );
    // Symlinks: the target is returned as written, and stat sees its length.
    std::os::unix::fs::symlink("../some/where/target.txt", m.p("a/ln")).expect("symlink");
    assert_eq!(
        fs::read_link(m.p("a/ln")).expect("readlink").to_str(),
        Some("../some/where/target.txt")
    );
    assert_eq!(fs::symlink_metadata(m.p("a/ln")).expect("lstat").len(), 24);
    std::os::unix::fs::symlink("other", m.p("a/ln2")).expect("symlink");
    assert_eq!(
        fs::read(m.p("a/ln2")).expect("read through symlink"),
        b"one"
    );
    // A 255-byte name works; 256 is refused with ENAMETOOLONG.
    let long = "L".repeat(255);
    fs::write(m.p(&long), b"long name").expect("255-byte name");
    assert_eq!(fs::read(m.p(&long)).expect("read"), b"long name");
    assert!(fs::read_dir(env.mnt.clone())
        .expect("ls")
        .any(|e| e.expect("e").file_name() == long.as_str()));
    fs::rename(m.p(&long), m.p("short")).expect("rename long to short");
    fs::rename(m.p("short"), m.p(&long)).expect("rename short to long");
    let e = fs::write(m.p(&"L".repeat(256)), b"x").expect_err("too long");
    assert_eq!(e.raw_os_error(), Some(libc::ENAMETOOLONG));
    fs::remove_file(m.p(&long)).expect("unlink long");
    m.umount();
    // The store keeps no orphan long-name sidecars.
    let leftovers: Vec<_> = Env::all_bytes(&env.store.join("data"))
        .into_iter()
        .filter(|(p, _)| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".N"))
        })
        .collect();
    assert!(leftovers.is_empty(), "orphan sidecars: {leftovers:?}");
}

#[test]
fn metadata_chmod_chown_utimens_statfs_mmap_and_stable_inodes() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let m = env.mount();
    fs::create_dir(m.p("d")).expect("mkdir");
    fs::write(m.p("d/f"), pattern(1, 70_000)).expect("write");
    fs::set_permissions(m.p("d/f"), fs::Permissions::from_mode(0o640)).expect("chmod");
    assert_eq!(
        fs::metadata(m.p("d/f")).expect("stat").mode() & 0o7777,
        0o640
    );
    std::os::unix::fs::chown(m.p("d/f"), Some(1234), Some(4321)).expect("chown");
    let st = fs::metadata(m.p("d/f")).expect("stat");
    assert_eq!((st.uid(), st.gid()), (1234, 4321));
    common::sh_ok(&format!(
        "touch -h -d '2001-02-03 04:05:06.789' '{}'",
        m.p("d/f").display()
    ));
    assert_eq!(fs::metadata(m.p("d/f")).expect("stat").mtime(), 981173106);
    std::os::unix::fs::symlink("f", m.p("d/ln")).expect("symlink");
    common::sh_ok(&format!(
        "touch -h -d '1999-01-01 00:00:00' '{}'",
        m.p("d/ln").display()
    ));
    assert_eq!(
        fs::symlink_metadata(m.p("d/ln")).expect("lstat").mtime(),
        915148800
    );
    assert_eq!(
        fs::metadata(m.p("d/f")).expect("stat").mtime(),
        981173106,
        "touch -h changed the link only"
    );
    // statfs answers with the backing filesystem's numbers.
    let df = common::sh_ok(&format!("stat -f -c '%b %S' '{}'", env.mnt.display()));
    assert!(
        df.split_whitespace()
            .next()
            .and_then(|b| b.parse::<u64>().ok())
            .is_some_and(|b| b > 0),
        "statfs: {df}"
    );
    // mmap reads see the plaintext.
    let py = format!(
        "import mmap; f=open('{}','rb'); m=mmap.mmap(f.fileno(),0,prot=mmap.PROT_READ); print(m[65530:65540].hex())",
        m.p("d/f").display()
    );
    let out = common::sh_ok(&format!("python3 -c \"{py}\""));
    assert_eq!(out.trim(), hex::encode(&pattern(1, 70_000)[65530..65540]));
    // A FIFO can be made (rsync -a of /home meets these).
    common::sh_ok(&format!("mkfifo '{}'", m.p("d/fifo").display()));
    assert!(fs::symlink_metadata(m.p("d/fifo"))
        .expect("stat")
        .file_type()
        .is_fifo_like());
    let ino = fs::metadata(m.p("d/f")).expect("stat").ino();
    let dino = fs::metadata(m.p("d")).expect("stat").ino();
    m.umount();
    let m = env.mount();
    assert_eq!(
        fs::metadata(m.p("d/f")).expect("stat").ino(),
        ino,
        "file inode stable across remounts"
    );
    assert_eq!(
        fs::metadata(m.p("d")).expect("stat").ino(),
        dino,
        "dir inode stable across remounts"
    );
    assert_eq!(
        fs::metadata(m.p("d/f")).expect("stat").mode() & 0o7777,
        0o640
    );
    m.umount();
}

/// The writeback cache sends its cached times back after a rename and at close; the mount
/// answers one that changes nothing without touching the file (ops.rs, mtime_already). The
/// times that land must still be the last ones set, whatever was answered on the way.
#[test]
fn times_hold_through_renames_and_the_kernels_time_flushes() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let m = env.mount();
    let touch = |when: &str, rel: &str| {
        common::sh_ok(&format!("touch -m -d '{when}' '{}'", m.p(rel).display()));
    };
    fs::write(m.p("t"), pattern(3, 5000)).expect("write");
    touch("2001-02-03 04:05:06.5", "t");
    fs::rename(m.p("t"), m.p("u")).expect("rename");
    common::sh_ok("sync");
    touch("2001-02-03 04:05:06.5", "u");
    let mtime = |m: &common::Mounted, rel: &str| {
        let st = fs::metadata(m.p(rel)).expect("stat");
        (st.mtime(), st.mtime_nsec())
    };
    assert_eq!(mtime(&m, "u"), (981173106, 500_000_000));
    OpenOptions::new()
        .append(true)
        .open(m.p("u"))
        .and_then(|mut f| f.write_all(b"more"))
        .expect("append");
    common::sh_ok("sync");
    assert!(mtime(&m, "u").0 > 981173106, "a write moves the time");
    touch("1999-01-01 00:00:00", "u");
    fs::rename(m.p("u"), m.p("v")).expect("rename");
    common::sh_ok("sync");
    m.umount();
    let m = env.mount();
    assert_eq!(mtime(&m, "v"), (915148800, 0));
    assert_eq!(fs::read(m.p("v")).expect("read").len(), 5004);
    m.umount();
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_fifo(self)
    }
}

#[test]
fn read_only_mount_refuses_writes_and_serves_reads() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let m = env.mount();
    fs::write(m.p("keep"), b"kept").expect("write");
    m.umount();
    let m = env.mount_with(&["--read-only"]);
    assert_eq!(fs::read(m.p("keep")).expect("read"), b"kept");
    let e = fs::write(m.p("new"), b"x").expect_err("read-only");
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    m.umount();
}
