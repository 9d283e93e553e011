//! `coffer info STORE [--json]`: what the store is, without any key.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use super::CliResult;
use crate::format::{classify, plain_len_from_cipher, BlockGeometry};
use crate::store::{Descriptor, StoreLock, CATALOG, DATA};

#[derive(Args)]
pub struct InfoArgs {
    /// The store directory
    pub store: PathBuf,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct KeyInfo {
    version: u32,
    key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    kms_uid: Option<String>,
}

#[derive(Serialize)]
struct Info {
    store: String,
    store_id: String,
    format_version: u32,
    created: u64,
    provider: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    kms: Option<String>,
    policy: Option<String>,
    copy: Option<String>,
    rsa_bits: usize,
    block_size: u64,
    master_keys: Vec<KeyInfo>,
    files: u64,
    directories: u64,
    symlinks: u64,
    plaintext_bytes: u64,
    ciphertext_bytes: u64,
    catalog_records: Option<u64>,
    mounted_at: Option<String>,
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

pub fn run(a: InfoArgs) -> CliResult {
    let desc = Descriptor::load(&a.store)?;
    let mut c = Counts::default();
    // Counted only when data/ is a directory of the store's own, not a link out of it.
    let data = a.store.join(DATA);
    if std::fs::symlink_metadata(&data).is_ok_and(|m| m.is_dir()) {
        walk(
            &data,
            BlockGeometry::new(desc.block_shift),
            &mut c,
            &mut Default::default(),
        );
    }
    // The catalog is open (and locked) while a mount runs; then its count is not available.
    let mounted = match StoreLock::acquire(&a.store) {
        Ok(_) => None,
        Err(_) => StoreLock::holder_mode(&a.store)
            .map(|(pid, mnt, mode)| format!("{mnt} (pid {pid}, {mode})")),
    };
    let records = if mounted.is_none() {
        crate::catalog::Catalog::open(&a.store.join(CATALOG), &desc.store_id_bytes()?)
            .ok()
            .and_then(|cat| cat.files().ok())
            .map(|f| f.len() as u64)
    } else {
        None
    };
    let info = Info {
        store: a.store.display().to_string(),
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
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(0);
    }
    println!("store:          {}", info.store);
    println!("store id:       {}", info.store_id);
    if info.format_version < crate::format::STORE_VERSION {
        println!(
            "format version: {} (batches and descriptor not authenticated: `coffer upgrade` makes it {})",
            info.format_version,
            crate::format::STORE_VERSION
        );
    } else {
        println!("format version: {}", info.format_version);
    }
    println!("provider:       {}", info.provider);
    if let Some(k) = &info.kms {
        println!("KMS:            {k}");
    }
    if let Some(p) = &info.policy {
        println!("policy:         {p}");
    }
    if let Some(p) = &info.copy {
        println!("copy:           {p}");
    }
    println!("RSA key:        {} bits", info.rsa_bits);
    println!("block size:     {} bytes", info.block_size);
    for k in &info.master_keys {
        match &k.kms_uid {
            Some(uid) => println!(
                "master key:     version {} id {} (KMS UID {uid})",
                k.version, k.key_id
            ),
            None => println!("master key:     version {} id {}", k.version, k.key_id),
        }
    }
    println!(
        "files:          {} ({} bytes plaintext, {} bytes on disk)",
        info.files, info.plaintext_bytes, info.ciphertext_bytes
    );
    println!("directories:    {}", info.directories);
    println!("symlinks:       {}", info.symlinks);
    match info.catalog_records {
        Some(n) => println!("catalog:        {n} file records"),
        None => println!("catalog:        not read"),
    }
    if let Some(m) = &info.mounted_at {
        println!("mounted at:     {m}");
    }
    Ok(0)
}
