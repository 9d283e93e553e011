//! Many writers at once, as a backup job with parallel streams makes them: threads writing
//! their own files, threads writing interleaved, unaligned regions of one shared file (so
//! two of them read-modify-write the same block), and threads creating and renaming in one
//! directory. Every byte must be where its writer put it, before and after a remount.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use common::{pattern, require_fuse, Env};

const THREADS: u64 = 4;

#[test]
fn parallel_writers_lose_and_mix_nothing() {
    if !require_fuse() {
        return;
    }
    let env = Env::new();
    env.init();
    let m = env.mount();
    let root = Arc::new(env.mnt.clone());

    // 1. Own files, written at random-ish offsets in several passes, read back while others
    //    write.
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let root = root.clone();
        handles.push(std::thread::spawn(move || {
            let mut expect = BTreeMap::new();
            for i in 0..12u64 {
                let name = format!("t{t}-f{i}");
                let len = 1000 + ((t * 31 + i * 7919) % 300_000) as usize;
                let mut content = pattern(t * 100 + i, len);
                let f = fs::File::create(root.join(&name)).expect("create");
                f.write_all_at(&content, 0).expect("write");
                // Overwrite a middle stretch, unaligned.
                let at = len / 3 + 17;
                let patch = pattern(9000 + t * 100 + i, (len / 5).max(1));
                let end = (at + patch.len()).min(len);
                f.write_all_at(&patch[..end - at], at as u64)
                    .expect("patch");
                content[at..end].copy_from_slice(&patch[..end - at]);
                drop(f);
                assert!(
                    fs::read(root.join(&name)).expect("read back") == content,
                    "{name}"
                );
                expect.insert(name, content);
            }
            expect
        }));
    }
    let mut expect = BTreeMap::new();
    for h in handles {
        expect.extend(h.join().expect("writer thread"));
    }

    // 2. One shared file: thread t owns bytes [k*S + t*W, k*S + (t+1)*W) of each stripe k;
    //    W = 1,000 is not a block multiple, so neighbours share blocks.
    const W: usize = 1000;
    const STRIPES: usize = 200;
    let stride = W * THREADS as usize;
    let shared = root.join("shared");
    fs::write(&shared, vec![0u8; stride * STRIPES]).expect("create shared");
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let shared = shared.clone();
        handles.push(std::thread::spawn(move || {
            let f = fs::OpenOptions::new()
                .write(true)
                .open(&shared)
                .expect("open");
            for k in 0..STRIPES {
                let bytes = pattern(50_000 + t * 1000 + k as u64, W);
                f.write_all_at(&bytes, (k * stride + t as usize * W) as u64)
                    .expect("stripe write");
            }
        }));
    }
    for h in handles {
        h.join().expect("stripe thread");
    }
    let mut want = vec![0u8; stride * STRIPES];
    for t in 0..THREADS as usize {
        for k in 0..STRIPES {
            let at = k * stride + t * W;
            want[at..at + W].copy_from_slice(&pattern(50_000 + t as u64 * 1000 + k as u64, W));
        }
    }
    assert!(
        fs::read(&shared).expect("read shared") == want,
        "stripes of the shared file"
    );
    expect.insert("shared".into(), want);

    // 3. Creates and renames in one directory at once.
    fs::create_dir(root.join("dir")).expect("mkdir");
    let mut handles = Vec::new();
    for t in 0..THREADS {
        let root = root.clone();
        handles.push(std::thread::spawn(move || {
            let mut names = BTreeMap::new();
            for i in 0..50u64 {
                let tmp = root.join(format!("dir/.tmp-{t}-{i}"));
                let body = pattern(70_000 + t * 100 + i, 500 + i as usize);
                fs::write(&tmp, &body).expect("write tmp");
                let name = format!("dir/t{t}-{i}");
                fs::rename(&tmp, root.join(&name)).expect("rename");
                names.insert(name, body);
            }
            names
        }));
    }
    for h in handles {
        expect.extend(h.join().expect("rename thread"));
    }
    let listed = fs::read_dir(root.join("dir")).expect("ls").count();
    assert_eq!(listed, (THREADS * 50) as usize);
    m.umount();

    common::drop_caches();
    let m = env.mount();
    for (name, content) in &expect {
        assert!(
            fs::read(m.p(name)).expect("read") == *content,
            "{name} after remount"
        );
    }
    m.umount();
    env.assert_fsck_clean();
}
