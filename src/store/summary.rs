//! What a store is, read without any key: its descriptor's public fields, what its data tree
//! holds (files, directories, symlinks, plaintext and ciphertext bytes), its catalog's record
//! count when no mount holds it, and who holds it. For `coffer info`.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use serde::Serialize;

use super::{Descriptor, StoreError, StoreLock, CATALOG, DATA};
use crate::format::{classify, plain_len_from_cipher, BlockGeometry};

#[derive(Serialize)]
pub struct KeyInfo {
    pub version: u32,
    pub key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms_uid: Option<String>,
}

#[derive(Serialize)]
pub struct Summary {
    pub store: String,
    pub store_id: String,
    pub format_version: u32,
    pub created: u64,
    pub provider: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms: Option<String>,
    pub policy: Option<String>,
    pub copy: Option<String>,
    pub rsa_bits: usize,
    pub block_size: u64,
    pub master_keys: Vec<KeyInfo>,
    pub files: u64,
    pub directories: u64,
    pub symlinks: u64,
    pub plaintext_bytes: u64,
    pub ciphertext_bytes: u64,
    pub catalog_records: Option<u64>,
    pub mounted_at: Option<String>,
}

#[derive(Default)]
struct Counts {
    files: u64,
    dirs: u64,
    links: u64,
    plain: u64,
    cipher: u64,
}

fn walk(dir: &Path, g: BlockGeometry, c: &mut Counts, seen: &mut std::collections::HashSet<u64>) {
    use std::os::unix::fs::MetadataExt;
    let Ok(it) = std::fs::read_dir(dir) else {
        return;
    };
    for e in it.flatten() {
        let n = e.file_name();
        let b = n.as_bytes();
        let Ok(m) = e.metadata() else { continue };
        c.cipher += m.len();
        if classify(b).is_internal() {
            continue;
        }
        if m.is_dir() {
            c.dirs += 1;
            walk(&e.path(), g, c, seen);
        } else if m.file_type().is_symlink() {
            c.links += 1;
        } else if m.is_file() && seen.insert(m.ino()) {
            c.files += 1;
            c.plain += plain_len_from_cipher(g, m.len()).unwrap_or(0);
        }
    }
}

/// Read the summary of the store at `root`.
pub fn summary(root: &Path) -> Result<Summary, StoreError> {
    let desc = Descriptor::load(root)?;
    let mut c = Counts::default();
    // Counted only when data/ is a directory of the store's own, not a link out of it.
    let data = root.join(DATA);
    if std::fs::symlink_metadata(&data).is_ok_and(|m| m.is_dir()) {
        let g = BlockGeometry::new(desc.block_shift);
        walk(&data, g, &mut c, &mut Default::default());
    }
    // The catalog is open (and locked) while a mount runs; then its count is not available.
    let mounted = match StoreLock::acquire(root) {
        Ok(_) => None,
        Err(_) => StoreLock::holder_mode(root)
            .map(|(pid, mnt, mode)| format!("{mnt} (pid {pid}, {mode})")),
    };
    let records = match mounted {
        Some(_) => None,
        None => crate::catalog::Catalog::open(&root.join(CATALOG), &desc.store_id_bytes()?)
            .ok()
            .and_then(|cat| cat.files().ok())
            .map(|f| f.len() as u64),
    };
    Ok(Summary {
        store: root.display().to_string(),
        store_id: desc.store_id.clone(),
        format_version: desc.version,
        created: desc.created,
        provider: desc.provider.as_str().to_string(),
        kms: desc.kms.clone(),
        policy: desc.policy.clone(),
        copy: desc.copy.clone(),
        rsa_bits: desc.rsa_bits,
        block_size: 1 << desc.block_shift,
        master_keys: desc
            .master_keys
            .iter()
            .map(|m| KeyInfo {
                version: m.version,
                key_id: m.key_id.clone(),
                kms_uid: m.uid.clone(),
            })
            .collect(),
        files: c.files,
        directories: c.dirs,
        symlinks: c.links,
        plaintext_bytes: c.plain,
        ciphertext_bytes: c.cipher,
        catalog_records: records,
        mounted_at: mounted,
    })
}
