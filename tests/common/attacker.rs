//! What a host that can write a store, and holds no key but the public one in coffer.store,
//! can do: every function here reads and writes the store's files directly, as
//! docs/format.md describes them, with no master key, private key, name key or write key.

use std::path::{Path, PathBuf};

use coffer::crypto::{random_id, BatchKey, BlockCipher, FileKey, PublicKey};
use coffer::format::{encode_batch, seal_block, Header, BLOCK_OVERHEAD};
use coffer::store::Descriptor;

/// How the planted batch record is framed.
#[derive(Clone, Copy)]
pub enum Framing {
    /// The bare RSA wrap of format 1.
    Bare,
    /// The format-2 frame with a tag the attacker made up (it lacks the write key).
    MadeUpTag,
}

/// Rewrite the ciphertext file `target` so that it holds `plain` under a file key of the
/// attacker's own, in a batch of its own wrapped to the store's public key, and under the
/// file id of the file it replaces (in its header, in the clear), so that only the batch
/// can give it away. Returns the planted batch's id.
pub fn plant(store: &Path, target: &Path, plain: &[u8], framing: Framing) -> [u8; 16] {
    let desc = Descriptor::load(store).expect("the descriptor is public");
    let public = PublicKey::from_der(&desc.public_key_der().expect("der")).expect("public key");
    let store_id = desc.store_id_bytes().expect("id");
    let batch = BatchKey::random();
    let batch_id = random_id();
    let wrapped = public.wrap_batch_key(&batch).expect("wrap");
    let record = match framing {
        Framing::Bare => wrapped,
        Framing::MadeUpTag => encode_batch(&wrapped, &[0x41; 32]),
    };
    std::fs::write(batch_path(store, &batch_id), record).expect("write batch");
    let key = FileKey::random();
    let old = std::fs::read(target).expect("the target's header");
    let id: [u8; 16] = old[8..24].try_into().expect("a file id");
    let header = Header::with_id(&store_id, desc.block_shift, batch_id, &batch, &key, id);
    let cipher = BlockCipher::new(key.secret());
    let bs = 1usize << desc.block_shift;
    let mut out = header.encode().to_vec();
    let chunks: Vec<&[u8]> = if plain.is_empty() {
        vec![&[]]
    } else {
        plain.chunks(bs).collect()
    };
    for (i, c) in chunks.iter().enumerate() {
        let mut buf = vec![0u8; c.len() + BLOCK_OVERHEAD];
        let at = coffer::format::BlockPos {
            idx: i as u64,
            last: i + 1 == chunks.len(),
            holes_before: header.sparse().then_some(0),
        };
        seal_block(&cipher, &header.file_id, at, c, &mut buf);
        out.extend_from_slice(&buf);
    }
    std::fs::write(target, out).expect("rewrite the ciphertext file");
    batch_id
}

pub fn batch_path(store: &Path, id: &[u8; 16]) -> PathBuf {
    store.join("batches").join(hex::encode(id))
}

/// Every regular ciphertext file under data/ (no sidecars, no directory IVs).
pub fn ciphertext_files(store: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![store.join("data")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("ls").flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let t = e.file_type().expect("type");
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() && !name.starts_with('.') {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// The descriptor as JSON, to edit as the attacker would.
pub fn descriptor_json(store: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(store.join("coffer.store")).expect("read")).expect("json")
}

pub fn write_descriptor_json(store: &Path, v: &serde_json::Value) {
    std::fs::write(
        store.join("coffer.store"),
        serde_json::to_vec_pretty(v).expect("json"),
    )
    .expect("write descriptor");
}

/// Turn a format-2 store into the format-1 store it would have been: drop the write key and
/// both seals (format 1 had none of them) and say version 1. Its tagged batch records are
/// what an interrupted upgrade leaves, which format 1 reads.
pub fn make_format_1(store: &Path) {
    let mut v = descriptor_json(store);
    let o = v.as_object_mut().expect("object");
    o.insert("version".into(), 1.into());
    o.remove("seal");
    o.remove("writer_seal");
    for m in o["master_keys"].as_array_mut().expect("records") {
        m.as_object_mut().expect("record").remove("write_key");
    }
    write_descriptor_json(store, &v);
}

/// The backing path (under `store`/data) of the inode numbered `ino`: a mount's inode numbers
/// are its backing inodes' (the store's root excepted), so a test can find, through the mount,
/// which ciphertext entry holds a file, and then act on it as the attacker would.
pub fn backing_by_ino(store: &Path, ino: u64) -> PathBuf {
    use std::os::unix::fs::MetadataExt;
    let mut stack = vec![store.join("data")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("ls").flatten() {
            let m = std::fs::symlink_metadata(e.path()).expect("lstat");
            if m.ino() == ino {
                return e.path();
            }
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    panic!("no backing inode {ino} under {}", store.display());
}

fn cpath(p: &Path) -> std::ffi::CString {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes()).expect("path")
}

/// An attribute of `p` itself (never a symlink's target), if it has it.
pub fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let (c, n) = (cpath(p), std::ffi::CString::new(name).expect("name"));
    let mut buf = vec![0u8; 65536];
    // SAFETY: c and n are NUL-terminated; buf is writable for its length.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| {
        buf.truncate(r as usize);
        buf
    })
}

pub fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    let (c, n) = (cpath(p), std::ffi::CString::new(name).expect("name"));
    // SAFETY: c and n are NUL-terminated; value is readable for its length.
    let r = unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr {name} on {}", p.display());
}

pub fn remove_xattr(p: &Path, name: &str) {
    let (c, n) = (cpath(p), std::ffi::CString::new(name).expect("name"));
    // SAFETY: c and n are NUL-terminated.
    let r = unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) };
    assert_eq!(r, 0, "removexattr {name} on {}", p.display());
}

/// The names of the attributes of `p` itself.
pub fn xattr_names(p: &Path) -> Vec<String> {
    let c = cpath(p);
    let mut buf = vec![0u8; 65536];
    // SAFETY: c is NUL-terminated; buf is writable for its length.
    let r = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(r >= 0, "listxattr {}", p.display());
    buf[..r as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Every coffer attribute (the record and the sealed user attributes) of `from` copied onto
/// `to`, as `cp -a` or `rsync -X` of the store's files would carry them.
pub fn copy_coffer_attrs(from: &Path, to: &Path) {
    for n in xattr_names(from) {
        if n.contains(".cf") {
            set_xattr(to, &n, &get_xattr(from, &n).expect("value"));
        }
    }
}
