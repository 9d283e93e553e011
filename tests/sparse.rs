//! Sparse files: a hole in the plaintext is a hole in the ciphertext, reads as zeros, and
//! SEEK_DATA / SEEK_HOLE report it; which blocks are holes is authenticated, so a hole
//! punched into written ciphertext reads EIO; fallocate and truncate behave as on ext4 where
//! the format can, and say EOPNOTSUPP or EFBIG where it cannot, with nothing changed.

mod common;

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::attacker::ciphertext_files;
use common::{pattern, require_fuse, s, sh, sh_ok, Env, MountGuard};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The data map SEEK_DATA / SEEK_HOLE report, as (data start, hole start) pairs.
fn data_map(p: &Path) -> Vec<(u64, u64)> {
    let out = sh_ok(&format!(
        "python3 -c \"
import os
fd = os.open('{}', os.O_RDONLY)
o = 0
while True:
    try:
        d = os.lseek(fd, o, os.SEEK_DATA)
    except OSError:
        break
    h = os.lseek(fd, d, os.SEEK_HOLE)
    print(d, h)
    o = h
\"",
        s(p)
    ));
    out.lines()
        .map(|l| {
            let (a, b) = l.split_once(' ').expect("pair");
            (a.parse().expect("n"), b.parse().expect("n"))
        })
        .collect()
}

/// Kilobytes the store takes on disk.
fn du_kib(p: &Path) -> u64 {
    let o = sh_ok(&format!("du -sk '{}'", s(p)));
    o.split_whitespace().next().expect("du").parse().expect("n")
}

/// A 10 GiB file holding 1 MiB of data in four places, and a fallocated 64 MiB file.
fn sparse_tree(dir: &Path) {
    fs::create_dir_all(dir).expect("mkdir");
    let f = File::create(dir.join("vm.img")).expect("create");
    f.set_len(10 * GIB).expect("truncate");
    for (i, at) in [0, 3 * GIB + 12345, 7 * GIB, 10 * GIB - MIB / 4]
        .iter()
        .enumerate()
    {
        f.write_all_at(&pattern(i as u64, (MIB / 4) as usize), *at)
            .expect("write");
    }
    sh_ok(&format!(
        "fallocate -l 64M '{}'",
        s(&dir.join("db.prealloc"))
    ));
}

fn rsync_changes(src: &Path, dst: &Path) -> String {
    sh_ok(&format!(
        "rsync -aHAX --numeric-ids -n -i '{}/' '{}/'",
        s(src),
        s(dst)
    ))
}

/// The files read back byte for byte (when `bytes`), and rsync finds nothing to do.
fn assert_same_tree(src: &Path, dst: &Path, bytes: bool) {
    for name in ["vm.img", "db.prealloc"].into_iter().filter(|_| bytes) {
        sh_ok(&format!(
            "cmp '{}' '{}'",
            s(&src.join(name)),
            s(&dst.join(name))
        ));
    }
    assert_eq!(
        rsync_changes(src, dst),
        "",
        "a second rsync has nothing to do"
    );
}

#[test]
fn a_sparse_tree_stays_sparse_through_rsync_a_remount_and_an_auxiliary_copy() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    sparse_tree(&src);
    let m = env.mount();
    // -S: rsync seeks over the zeros instead of sending them (without it, coffer still
    // stores each all-zero block as a hole, after the zeros have come through the mount).
    sh_ok(&format!(
        "rsync -aHAXS --numeric-ids '{}/' '{}/'",
        s(&src),
        s(&env.mnt)
    ));
    assert_same_tree(&src, &env.mnt, true);
    // A hole is a hole in the ciphertext: the store holds about the data written.
    let kib = du_kib(&env.store);
    assert!(kib < 8 * 1024, "store takes {kib} KiB for 1 MiB of data");
    // SEEK_DATA / SEEK_HOLE find the data where it was written (to the block).
    let map = data_map(&m.p("vm.img"));
    assert_eq!(map.len(), 4, "{map:?}");
    assert!(
        map[1].0 <= 3 * GIB + 12345 && 3 * GIB + 12345 - map[1].0 < 4096,
        "{map:?}"
    );
    assert_eq!(map[3].1, 10 * GIB, "{map:?}");
    m.umount();
    env.assert_fsck_clean();
    let m = env.mount();
    assert_same_tree(&src, &env.mnt, false);
    assert_eq!(data_map(&m.p("vm.img")), map, "after a remount");
    m.umount();

    // An auxiliary copy made as docs/admin.md says (-S keeps the ciphertext's holes),
    // mounted by another host.
    let copy = env.path("copy");
    sh_ok(&format!(
        "rsync -aHXUS --open-noatime '{}/' '{}/'",
        s(&env.store),
        s(&copy)
    ));
    let kib = du_kib(&copy);
    assert!(kib < 8 * 1024, "the copy takes {kib} KiB");
    let other = common::keyservers::CertHost::new(&env, "other");
    let keys = env.path("keys");
    env.coffer_ok(&[
        "keys",
        "export",
        s(&env.store),
        "--recipient",
        s(&other.pem),
        "--out",
        s(&keys),
    ]);
    other.ok(&["keys", "import", s(&keys)]);
    let mnt = env.path("mnt-other");
    fs::create_dir(&mnt).expect("mkdir");
    other.ok(&["mount", s(&copy), s(&mnt)]);
    let _g = MountGuard(mnt.clone());
    assert_same_tree(&src, &mnt, true);
    other.ok(&["umount", s(&mnt)]);
}

#[test]
fn zeros_written_without_seeking_become_holes() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let src = env.path("src");
    fs::create_dir(&src).expect("mkdir");
    let f = File::create(src.join("zeros")).expect("create");
    f.set_len(256 * MIB).expect("truncate");
    f.write_all_at(b"the only data", 100 * MIB).expect("write");
    let m = env.mount();
    sh_ok(&format!("rsync -a '{}/' '{}/'", s(&src), s(&env.mnt)));
    sh_ok(&format!(
        "cmp '{}' '{}'",
        s(&src.join("zeros")),
        s(&m.p("zeros"))
    ));
    let kib = du_kib(&env.store);
    assert!(kib < 4 * 1024, "store takes {kib} KiB for 13 bytes");
    m.umount();
    env.assert_fsck_clean();
}

/// A ciphertext file's backing name by its plaintext size (the only file of that size).
fn backing_of_size(env: &Env, want: u64) -> std::path::PathBuf {
    let m = env.mount();
    let _ = &m;
    m.umount();
    let files = ciphertext_files(&env.store);
    files
        .into_iter()
        .find(|p| {
            let len = fs::metadata(p).expect("stat").len();
            // 4 KiB blocks: 132-byte header, 28 bytes of overhead per block.
            len > 132
                && (len - 132) / (4096 + 28) * 4096 + ((len - 132) % (4096 + 28)).saturating_sub(28)
                    == want
        })
        .expect("the file's ciphertext")
}

fn punch(f: &File, off: u64, len: u64) {
    // SAFETY: the fd is open for the life of f.
    let r = unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off as libc::off_t,
            len as libc::off_t,
        )
    };
    assert_eq!(r, 0, "punch: {}", std::io::Error::last_os_error());
}

#[test]
fn a_hole_punched_into_written_ciphertext_reads_eio() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let m = env.mount();
    let data = pattern(7, 8 * 4096 + 100);
    fs::write(m.p("f"), &data).expect("write");
    // A file with a real hole (blocks 3..5) between data.
    let g = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.p("g"))
        .expect("create");
    g.write_all_at(&data[..3 * 4096], 0).expect("write");
    g.write_all_at(&data[..2 * 4096], 5 * 4096).expect("write");
    drop(g);
    m.umount();
    let stride = 4096 + 28;
    let at = |idx: u64| 132 + idx * stride;
    // As a host that can write the store would: punch block 2 of f (data between data),
    // and zero block 2 of g, just before its hole, so the hole seems to start one earlier.
    let f = OpenOptions::new()
        .write(true)
        .open(backing_of_size(&env, data.len() as u64))
        .expect("open");
    punch(&f, at(2), stride);
    let gb = OpenOptions::new()
        .write(true)
        .open(backing_of_size(&env, 7 * 4096))
        .expect("open");
    gb.write_all_at(&vec![0u8; stride as usize], at(2))
        .expect("zero");
    let o = env.coffer(&["fsck", s(&env.store)]);
    let report = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{report}");
    assert_eq!(
        report.matches("failed authentication").count(),
        2,
        "{report}"
    );
    let m = env.mount();
    let f = File::open(m.p("f")).expect("open");
    let mut b = vec![0u8; 4096];
    let e = f
        .read_exact_at(&mut b, 2 * 4096)
        .expect_err("a punched block must not read");
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    // Blocks around it still read as written.
    f.read_exact_at(&mut b, 0).expect("block 0");
    assert_eq!(b, data[..4096]);
    f.read_exact_at(&mut b, 3 * 4096).expect("block 3");
    assert_eq!(b, data[3 * 4096..4 * 4096]);
    let g = File::open(m.p("g")).expect("open");
    for blk in [2u64, 3, 5] {
        let e = g
            .read_exact_at(&mut b, blk * 4096)
            .expect_err("zeroed data or the hole after it");
        assert_eq!(e.raw_os_error(), Some(libc::EIO), "block {blk}");
    }
    drop((f, g));
    m.umount();
}

/// fallocate(2) with `mode` on `p`; the errno on failure.
fn fallocate(p: &Path, mode: i32, off: u64, len: u64) -> Result<(), i32> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .expect("open");
    // SAFETY: the fd is open for the life of f.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, off as libc::off_t, len as libc::off_t) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

#[test]
fn fallocate_and_truncate_as_on_ext4_or_a_clear_refusal() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let m = env.mount();
    // fallocate -l: the file grows, reads zeros, and its space is reserved.
    let p = m.p("prealloc");
    sh_ok(&format!("fallocate -l 100M '{}'", s(&p)));
    assert_eq!(fs::metadata(&p).expect("stat").len(), 100 * MIB);
    sh_ok(&format!("cmp -n 104857600 '{}' /dev/zero", s(&p)));
    assert!(du_kib(&env.store) >= 100 * 1024, "space is reserved");
    // KEEP_SIZE: space, not length.
    let d = pattern(3, 10_000);
    fs::write(m.p("k"), &d).expect("write");
    fallocate(&m.p("k"), libc::FALLOC_FL_KEEP_SIZE, 0, 50 * MIB).expect("keep size");
    assert_eq!(fs::read(m.p("k")).expect("read"), d);
    // PUNCH_HOLE: zeros in place, length kept, space given back.
    let big = pattern(4, (8 * MIB) as usize);
    fs::write(m.p("p"), &big).expect("write");
    let before = du_kib(&env.store);
    fallocate(
        &m.p("p"),
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        1000,
        6 * MIB,
    )
    .expect("punch");
    let mut want = big.clone();
    want[1000..1000 + 6 * MIB as usize].fill(0);
    assert_eq!(fs::read(m.p("p")).expect("read"), want);
    assert!(
        du_kib(&env.store) + 5 * 1024 < before,
        "punched space is freed"
    );
    assert_eq!(
        data_map(&m.p("p")).len(),
        2,
        "a hole between two runs of data"
    );
    // Modes the format cannot do: EOPNOTSUPP, and the file as it was.
    for mode in [
        libc::FALLOC_FL_COLLAPSE_RANGE,
        libc::FALLOC_FL_INSERT_RANGE,
        libc::FALLOC_FL_ZERO_RANGE,
    ] {
        assert_eq!(
            fallocate(&m.p("p"), mode, 0, 4096),
            Err(libc::EOPNOTSUPP),
            "mode {mode}"
        );
        assert_eq!(fs::read(m.p("p")).expect("read"), want, "mode {mode}");
    }
    // truncate: any length the format holds succeeds at once, as a hole; past it, EFBIG.
    let t = m.p("t");
    fs::write(&t, b"head").expect("write");
    // 4 TiB: within what ext4, xfs and tmpfs hold, as a backing file of its ciphertext.
    sh_ok(&format!("truncate -s 4T '{}'", s(&t)));
    assert_eq!(fs::metadata(&t).expect("stat").len(), 1 << 42);
    let o = sh(&format!("truncate -s 9223300000000000000 '{}'", s(&t)));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("File too large"),
        "{o:?}"
    );
    assert_eq!(fs::metadata(&t).expect("stat").len(), 1 << 42, "unchanged");
    let f = File::open(&t).expect("open");
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, (1 << 41) + 3)
        .expect("a hole reads");
    assert_eq!(b, [0u8; 8]);
    f.read_exact_at(&mut b[..4], 0).expect("head");
    assert_eq!(&b[..4], b"head");
    drop(f);
    m.umount();
    env.assert_fsck_clean();
}

/// A small deterministic generator, so a failing sequence can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn random_writes_truncates_and_punches_match_a_model() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let m = env.mount_with(&["--no-writeback-cache"]);
    let mut rng = Lcg(15);
    for round in 0..60 {
        let p = m.p(&format!("r{round}"));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&p)
            .expect("create");
        let mut model: Vec<u8> = Vec::new();
        let mut log = Vec::new();
        for _ in 0..20 {
            let off = rng.next(48) * 4096 + [0, 0, 100, 4000][rng.next(4) as usize];
            let len = [1, 100, 4096, 8192, 3 * 4096 + 5, 20000][rng.next(6) as usize] as usize;
            match rng.next(10) {
                0 => {
                    let to = rng.next(50 * 4096);
                    log.push(format!("truncate {to}"));
                    f.set_len(to).expect("truncate");
                    model.resize(to as usize, 0);
                }
                1 => {
                    log.push(format!("punch {off}+{len}"));
                    // SAFETY: the fd is open for the life of f.
                    let r = unsafe {
                        libc::fallocate(f.as_raw_fd(), 3, off as libc::off_t, len as libc::off_t)
                    };
                    assert_eq!(r, 0, "{log:?}");
                    let end = (off as usize + len).min(model.len());
                    if (off as usize) < end {
                        model[off as usize..end].fill(0);
                    }
                }
                k => {
                    let data = match k < 7 {
                        true => vec![0u8; len],
                        false => pattern(rng.next(1000), len),
                    };
                    log.push(format!(
                        "write {off}+{len} {}",
                        if k < 7 { "zeros" } else { "data" }
                    ));
                    f.write_all_at(&data, off)
                        .unwrap_or_else(|e| panic!("{e}: {log:?}"));
                    if model.len() < off as usize + len {
                        model.resize(off as usize + len, 0);
                    }
                    model[off as usize..off as usize + len].copy_from_slice(&data);
                }
            }
            let mut got = vec![0u8; model.len()];
            f.read_exact_at(&mut got, 0)
                .unwrap_or_else(|e| panic!("{e}: {log:?}"));
            assert!(got == model, "round {round}: {log:?}");
        }
    }
    m.umount();
    env.assert_fsck_clean();
}
