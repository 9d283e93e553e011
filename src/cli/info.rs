//! `coffer info STORE [--json]`: what the store is, without any key (store::summary).

use std::path::PathBuf;

use clap::Args;

use super::CliResult;
use crate::store::summary::summary;

#[derive(Args)]
pub struct InfoArgs {
    /// The store directory
    pub store: PathBuf,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: InfoArgs) -> CliResult {
    let info = summary(&a.store)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(0);
    }
    println!("store:          {}", info.store);
    println!("store id:       {}", info.store_id);
    if info.format_version < crate::format::STORE_VERSION {
        println!(
            "format version: {} (modes, owners, types and links not authenticated: `coffer upgrade` makes it {})",
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
