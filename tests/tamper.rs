//! Tampered ciphertext never reads as other bytes: a flipped bit, swapped blocks (within and
//! between files), a file cut at a block boundary, a damaged header. Each read gives EIO, and
//! the log names the ciphertext file and the block.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use common::{pattern, require_fuse, Env};

/// The default block size.
const B: u64 = 4096;
const H: u64 = 132;
const O: u64 = 28;

fn cipher_len(plain: u64) -> u64 {
    let n = if plain == 0 { 1 } else { plain.div_ceil(B) };
    H + (n - 1) * (B + O) + (plain - (n - 1) * B) + O
}

/// The ciphertext file of a given length (the tests give each file a distinct length).
fn backing_of_len(store: &Path, len: u64) -> PathBuf {
    let found: Vec<_> = Env::all_bytes(&store.join("data"))
        .into_iter()
        .filter(|(p, b)| {
            p.is_file() && fs::metadata(p).map(|m| m.len()).ok() == Some(len) && !b.is_empty()
        })
        .map(|(p, _)| p)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one ciphertext file of length {len}"
    );
    found.into_iter().next().expect("one")
}

/// The ciphertext file of the file whose plaintext is `plain`.
fn file_of(env: &Env, plain: &[u8]) -> PathBuf {
    backing_of_len(&env.store, cipher_len(plain.len() as u64))
}

fn block_off(i: u64) -> u64 {
    H + i * (B + O)
}

fn read_err(p: &Path) -> Option<i32> {
    fs::read(p).err().and_then(|e| e.raw_os_error())
}

fn setup() -> (Env, Vec<u8>, Vec<u8>) {
    let env = Env::new();
    env.init();
    let a = pattern(1, 3 * B as usize + 100);
    let b = pattern(2, 3 * B as usize + 200);
    let m = env.mount();
    fs::write(m.p("a"), &a).expect("write");
    fs::write(m.p("b"), &b).expect("write");
    fs::write(m.p("c"), pattern(3, 3 * B as usize + 100 + 1)).expect("write");
    m.umount();
    (env, a, b)
}

fn swap(p: &Path, q: &Path, off_p: u64, off_q: u64, len: u64) {
    let (fp, fq) = (
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .expect("open"),
        fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(q)
            .expect("open"),
    );
    let (mut x, mut y) = (vec![0u8; len as usize], vec![0u8; len as usize]);
    fp.read_exact_at(&mut x, off_p).expect("read");
    fq.read_exact_at(&mut y, off_q).expect("read");
    fp.write_all_at(&y, off_p).expect("write");
    fq.write_all_at(&x, off_q).expect("write");
}

#[test]
fn flipped_bit_in_a_block_is_eio_and_logged() {
    if !require_fuse() {
        return;
    }
    let (env, a, _) = setup();
    let file = file_of(&env, &a);
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .expect("open");
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, block_off(1) + 500)
        .expect("read");
    f.write_all_at(&[byte[0] ^ 0x04], block_off(1) + 500)
        .expect("write");
    let m = env.mount();
    assert_eq!(read_err(&m.p("a")), Some(libc::EIO));
    // The untouched block before it still reads.
    let mut first = vec![0u8; 1000];
    fs::File::open(m.p("a"))
        .expect("open")
        .read_exact_at(&mut first, 0)
        .expect("block 0 reads");
    assert_eq!(first, a[..1000]);
    m.umount();
    let log = env.log_text();
    let rel = file
        .strip_prefix(&env.store)
        .expect("in store")
        .display()
        .to_string();
    assert!(
        log.contains(&rel) && log.contains("block 1 failed authentication"),
        "log must name file and block:\n{log}"
    );
}

#[test]
fn blocks_swapped_within_and_between_files_are_eio() {
    if !require_fuse() {
        return;
    }
    let (env, a, b) = setup();
    let fa = file_of(&env, &a);
    let fb = file_of(&env, &b);
    swap(&fa, &fa, block_off(0), block_off(1), B + O);
    swap(&fb, &fb, block_off(2), block_off(2), 0); // no-op keeps b intact
    let m = env.mount();
    assert_eq!(
        read_err(&m.p("a")),
        Some(libc::EIO),
        "blocks swapped within a file"
    );
    assert_eq!(fs::read(m.p("b")).expect("b untouched"), b);
    m.umount();
    let fc = backing_of_len(&env.store, cipher_len(a.len() as u64 + 1));
    swap(&fb, &fc, block_off(1), block_off(1), B + O);
    let m = env.mount();
    assert_eq!(
        read_err(&m.p("b")),
        Some(libc::EIO),
        "block grafted from another file"
    );
    assert_eq!(
        read_err(&m.p("c")),
        Some(libc::EIO),
        "block grafted from another file"
    );
    m.umount();
}

#[test]
fn files_cut_at_a_block_boundary_or_with_a_bad_header_are_eio() {
    if !require_fuse() {
        return;
    }
    let (env, a, b) = setup();
    let fa = file_of(&env, &a);
    let fb = file_of(&env, &b);
    // Cut after block 1: the remaining last block was not sealed as final.
    cut(&fa, block_off(2));
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&fb)
        .expect("open");
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, 30).expect("read");
    f.write_all_at(&[byte[0] ^ 1], 30)
        .expect("flip a header byte (the batch id)");
    let m = env.mount();
    assert_eq!(
        read_err(&m.p("a")),
        Some(libc::EIO),
        "cut at a block boundary"
    );
    assert_eq!(read_err(&m.p("b")), Some(libc::EIO), "damaged header");
    m.umount();
    // fsck reports both, exit code 1.
    let o = env.coffer(&["fsck", env.store.to_str().expect("utf8")]);
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("block 2 failed authentication")
            || out.contains("block 1 failed authentication"),
        "{out}"
    );
    assert!(out.contains("file key does not unwrap"), "{out}");
}

fn cut(p: &Path, len: u64) {
    fs::OpenOptions::new()
        .write(true)
        .open(p)
        .expect("open")
        .set_len(len)
        .expect("cut");
}

fn append(p: &Path, bytes: &[u8]) {
    use std::io::Write;
    fs::OpenOptions::new()
        .append(true)
        .open(p)
        .expect("open")
        .write_all(bytes)
        .expect("append");
}

#[test]
fn a_cut_in_mid_block_or_appended_garbage_is_eio() {
    if !require_fuse() {
        return;
    }
    let (env, a, b) = setup();
    let fa = file_of(&env, &a);
    let fb = file_of(&env, &b);
    let fc = backing_of_len(&env.store, cipher_len(a.len() as u64 + 1));
    cut(&fa, block_off(1) + 100);
    append(&fb, &pattern(9, 50));
    // A whole extra block's worth: the block sealed as final is no longer the last.
    append(&fc, &pattern(10, (B + O) as usize));
    let m = env.mount();
    assert_eq!(read_err(&m.p("a")), Some(libc::EIO), "cut in mid-block");
    assert_eq!(read_err(&m.p("b")), Some(libc::EIO), "garbage appended");
    assert_eq!(read_err(&m.p("c")), Some(libc::EIO), "a block appended");
    m.umount();
    let o = env.coffer(&["fsck", env.store.to_str().expect("utf8")]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn a_tampered_name_is_hidden_logged_and_reported() {
    if !require_fuse() {
        return;
    }
    let (env, a, b) = setup();
    let fa = file_of(&env, &a);
    let name = fa
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();
    // Change one character of the encrypted name (base64url): the name fails authentication.
    let mut chars: Vec<char> = name.chars().collect();
    chars[5] = if chars[5] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    fs::rename(&fa, fa.with_file_name(&tampered)).expect("rename");
    let m = env.mount();
    let mut listed: Vec<String> = fs::read_dir(&env.mnt)
        .expect("ls")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        vec!["b", "c"],
        "a tampered name must not list as anything"
    );
    assert_eq!(
        fs::read(m.p("a")).err().and_then(|e| e.raw_os_error()),
        Some(libc::ENOENT)
    );
    assert_eq!(fs::read(m.p("b")).expect("b"), b);
    m.umount();
    assert!(
        env.log_text().contains("fails authentication"),
        "{}",
        env.log_text()
    );
    let o = env.coffer(&["fsck", env.store.to_str().expect("utf8")]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

/// Flip one character in each sealed field of the descriptor, and garble its JSON: the store
/// does not open, with one line and exit 2, and the untouched descriptor opens again.
#[test]
fn a_tampered_descriptor_is_refused() {
    let env = Env::new();
    env.init();
    let p = env.store.join("coffer.store");
    let good = fs::read_to_string(&p).expect("read");
    let v: serde_json::Value = serde_json::from_str(&good).expect("json");
    let flip = |s: &str| {
        let mut c: Vec<char> = s.chars().collect();
        let i = c.len() / 2;
        c[i] = if c[i] == 'A' { 'B' } else { 'A' };
        c.into_iter().collect::<String>()
    };
    let cases = [
        (
            "private key",
            v["master_keys"][0]["private_key"]
                .as_str()
                .expect("pk")
                .to_string(),
        ),
        (
            "name key",
            v["master_keys"][0]["name_key"]
                .as_str()
                .expect("nk")
                .to_string(),
        ),
        (
            "public key",
            v["public_key"].as_str().expect("pub").to_string(),
        ),
    ];
    let store = env.store.to_str().expect("utf8");
    for (what, field) in &cases {
        fs::write(&p, good.replace(field.as_str(), &flip(field))).expect("write");
        let o = env.coffer(&["fsck", store]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{what}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{what}: {err}");
        assert!(
            err.contains("coffer.store was changed or damaged"),
            "{what}: {err}"
        );
    }
    fs::write(&p, &good[..good.len() / 2]).expect("write");
    let o = env.coffer(&["fsck", store]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not valid"));
    fs::write(&p, &good).expect("write");
    env.coffer_ok(&["fsck", store]);
}

/// Not detected, by design (docs/threat-model.md): an older version of a block, put back at
/// its own place in its own file, reads as that older version. It never reads as anything
/// else.
#[test]
fn a_replayed_block_reads_as_its_own_older_version() {
    if !require_fuse() {
        return;
    }
    let (env, a, _) = setup();
    let fa = file_of(&env, &a);
    let mut old_block = vec![0u8; (B + O) as usize];
    fs::File::open(&fa)
        .expect("open")
        .read_exact_at(&mut old_block, block_off(1))
        .expect("read");
    let m = env.mount();
    fs::OpenOptions::new()
        .write(true)
        .open(m.p("a"))
        .expect("open")
        .write_all_at(b"NEW BYTES", B + 10)
        .expect("write");
    m.umount();
    let mut changed = a.clone();
    changed[B as usize + 10..B as usize + 19].copy_from_slice(b"NEW BYTES");
    let m = env.mount();
    assert_eq!(fs::read(m.p("a")).expect("read"), changed);
    m.umount();
    fs::OpenOptions::new()
        .write(true)
        .open(&fa)
        .expect("open")
        .write_all_at(&old_block, block_off(1))
        .expect("replay");
    common::drop_caches();
    let m = env.mount();
    assert_eq!(
        fs::read(m.p("a")).expect("read"),
        a,
        "the replayed block is its old self"
    );
    m.umount();
}

/// Two whole ciphertext files swapped between names: each inode's sealed record names the
/// place it was written at (format 3), so neither reads at the other's (before format 3 each
/// read as the other, byte for byte).
#[test]
fn swapped_ciphertext_files_read_as_eio() {
    if !require_fuse() {
        return;
    }
    let (env, a, b) = setup();
    let fa = file_of(&env, &a);
    let fb = file_of(&env, &b);
    let tmp = fa.with_file_name("swap-tmp");
    fs::rename(&fa, &tmp).expect("rename");
    fs::rename(&fb, &fa).expect("rename");
    fs::rename(&tmp, &fb).expect("rename");
    let m = env.mount();
    assert_eq!(read_err(&m.p("a")), Some(libc::EIO));
    assert_eq!(read_err(&m.p("b")), Some(libc::EIO));
    m.umount();
    let o = env.coffer(&["fsck", env.store.to_str().expect("utf8")]);
    let report = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{report}");
    assert_eq!(
        report.matches("fails authentication here").count(),
        2,
        "{report}"
    );
}

/// Not detected, by design until restore points: a whole file put back to an older copy of
/// itself (its ciphertext and its record, as an older copy of the store holds them) reads as
/// that older version. docs/threat-model.md lists it.
#[test]
fn a_whole_file_rolled_back_reads_as_its_older_self() {
    if !require_fuse() {
        return;
    }
    let (env, a, _) = setup();
    let fa = file_of(&env, &a);
    let old = env.path("old-a");
    common::sh_ok(&format!("cp -a '{}' '{}'", fa.display(), old.display()));
    let m = env.mount();
    fs::write(m.p("a"), b"the newer version").expect("rewrite");
    m.umount();
    common::sh_ok(&format!("cp -a '{}' '{}'", old.display(), fa.display()));
    let m = env.mount();
    assert_eq!(fs::read(m.p("a")).expect("read"), a);
    m.umount();
}

/// Single bits flipped across the catalog, one at a time: the store refuses to mount (naming
/// `fsck --repair`), or it mounts and every file reads exactly or fails with EIO. Never other
/// bytes: a file's key comes from its own authenticated header, not from the catalog.
#[test]
fn bits_flipped_in_the_catalog_never_read_as_other_bytes() {
    if !require_fuse() {
        return;
    }
    let (env, a, b) = setup();
    let c = pattern(3, 3 * B as usize + 100 + 1);
    let cat = env.store.join("catalog");
    let good = fs::read(&cat).expect("read catalog");
    let (store, mnt) = (
        env.store.to_str().expect("utf8"),
        env.mnt.to_str().expect("utf8"),
    );
    let (mut refused, mut mounted) = (0, 0);
    for k in 0..12usize {
        let mut bad = good.clone();
        let pos = good.len() * (2 * k + 1) / 24;
        bad[pos] ^= 1 << (k % 8);
        fs::write(&cat, &bad).expect("flip");
        let o = env.coffer(&["mount", store, mnt]);
        if o.status.success() {
            mounted += 1;
            let m = common::Mounted::adopt(&env);
            for (name, want) in [("a", &a), ("b", &b), ("c", &c)] {
                match fs::read(m.p(name)) {
                    Ok(got) => assert!(got == *want, "{name} read other bytes (bit at {pos})"),
                    Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{name}: {e}"),
                }
            }
            m.umount();
        } else {
            refused += 1;
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{err}");
            assert!(
                err.contains("catalog") && err.contains("fsck --repair"),
                "{err}"
            );
        }
        fs::write(&cat, &good).expect("restore");
    }
    eprintln!("catalog bit flips: {refused} refused at mount, {mounted} mounted");
    assert_eq!(refused + mounted, 12);
    env.coffer_ok(&["fsck", store]);
}

/// `fsck --repair` on damaged files keeps every block that still reads: a damaged block
/// inside a file becomes zeros (and the report says which bytes), a damaged end is cut off,
/// and bytes appended after the real last block go. Afterwards fsck is clean.
#[test]
fn repair_salvages_every_block_that_still_reads() {
    if !require_fuse() {
        return;
    }
    let (env, a, b) = setup();
    let c = pattern(3, 3 * B as usize + 100 + 1);
    let flip = |p: &Path, at: u64| {
        let f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(p)
            .expect("open");
        let mut x = [0u8];
        f.read_exact_at(&mut x, at).expect("read");
        f.write_all_at(&[x[0] ^ 0x10], at).expect("write");
    };
    flip(&file_of(&env, &a), block_off(1) + 77); // inside: becomes zeros
    flip(&file_of(&env, &b), block_off(3) + 40); // the last block: cut off
    append(
        &backing_of_len(&env.store, cipher_len(c.len() as u64)),
        &pattern(11, 500),
    );
    let s = env.store.to_str().expect("utf8");
    assert_eq!(env.coffer(&["fsck", s]).status.code(), Some(1));
    let o = env.coffer(&["fsck", s, "--repair"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("bytes 4096..8192 could not be read and are now zeros"),
        "{out}"
    );
    assert!(out.contains("cut off"), "{out}");
    for name in ["a", "b", "c"] {
        assert!(
            !out.contains(&format!("/{name} ")),
            "no plaintext name in the report"
        );
    }
    env.assert_fsck_clean();
    let m = env.mount();
    let mut want_a = a.clone();
    want_a[B as usize..2 * B as usize].fill(0);
    assert!(
        fs::read(m.p("a")).expect("a") == want_a,
        "a: block 1 zeros, the rest intact"
    );
    assert!(
        fs::read(m.p("b")).expect("b") == b[..3 * B as usize],
        "b: cut before block 3"
    );
    assert!(
        fs::read(m.p("c")).expect("c") == c,
        "c: the appended bytes are gone, c whole"
    );
    m.umount();
}
