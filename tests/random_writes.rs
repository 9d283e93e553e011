//! Random writes, truncates and reads at random offsets, compared with an in-memory model,
//! across cache drops and a remount.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use common::{drop_caches, pattern, require_fuse, Env};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn check(path: &std::path::Path, model: &[u8], step: usize) {
    let got = std::fs::read(path).expect("read");
    assert_eq!(got.len(), model.len(), "length after step {step}");
    if let Some(i) = got.iter().zip(model).position(|(a, b)| a != b) {
        panic!("first difference at byte {i} after step {step}");
    }
}

#[test]
fn random_writes_match_a_model() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let seed = std::env::var("COFFER_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x005E_EDC0_FFEE);
    eprintln!("seed {seed} (set COFFER_TEST_SEED to replay)");
    let mut rng = Rng(seed | 1);
    let mut models: Vec<Vec<u8>> = vec![Vec::new(); 3];
    let names = ["r0", "r1", "r2"];
    let mut m = env.mount();
    for step in 0..400 {
        let i = rng.below(3) as usize;
        let path = m.p(names[i]);
        let model = &mut models[i];
        match rng.below(10) {
            0..=6 => {
                // Offsets cluster around block boundaries and the end of file.
                let base = [0u64, 65536, 131072, model.len() as u64][rng.below(4) as usize];
                let off = (base + rng.below(3000)).saturating_sub(1500);
                let len = [1u64, 100, 4096, 65535, 65537, 300_000][rng.below(6) as usize];
                let data = pattern(rng.next(), len as usize);
                let f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .expect("open");
                f.write_all_at(&data, off).expect("pwrite");
                let end = off as usize + data.len();
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[off as usize..end].copy_from_slice(&data);
            }
            7 => {
                let len = rng.below(400_000);
                let f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)
                    .expect("open");
                f.set_len(len).expect("truncate");
                model.resize(len as usize, 0);
            }
            8 => {
                if !model.is_empty() {
                    let off = rng.below(model.len() as u64);
                    let len = rng.below(200_000).min(model.len() as u64 - off);
                    let f = OpenOptions::new().read(true).open(&path).expect("open");
                    let mut buf = vec![0u8; len as usize];
                    f.read_exact_at(&mut buf, off).expect("pread");
                    assert_eq!(
                        &buf[..],
                        &model[off as usize..(off + len) as usize],
                        "pread at step {step}"
                    );
                }
            }
            _ => {
                if path.exists() {
                    drop_caches();
                    check(&path, model, step);
                }
            }
        }
        if step == 200 {
            m.umount();
            m = env.mount();
        }
    }
    drop_caches();
    for (i, model) in models.iter().enumerate() {
        if m.p(names[i]).exists() {
            check(&m.p(names[i]), model, 400);
        }
    }
    m.umount();
    let o = env.coffer(&["fsck", env.store.to_str().expect("utf8")]);
    assert!(
        o.status.success(),
        "fsck after random writes: {}",
        String::from_utf8_lossy(&o.stdout)
    );
}
