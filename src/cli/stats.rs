//! `coffer stats MOUNTPOINT [--json]`: a running mount's counters, from its daemon
//! (fs/stats.rs): operations, errors by errno, bytes, catalog commits, batch-key unwraps.

use std::path::PathBuf;

use clap::Args;

use super::{CliResult, Failure};
use crate::fs::stats;

#[derive(Args)]
pub struct StatsArgs {
    /// Where the store is mounted
    pub mountpoint: PathBuf,
    /// Print the counters as one JSON object
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: StatsArgs) -> CliResult {
    let mnt = a
        .mountpoint
        .canonicalize()
        .map_err(|e| Failure::from(format!("{}: {e}", a.mountpoint.display())))?;
    if super::umount::find_mount(&mnt).is_none() {
        return Err(Failure::from(format!(
            "{} is not a mounted coffer store",
            mnt.display()
        )));
    }
    let s = stats::read(&mnt)?;
    if a.json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(0);
    }
    println!(
        "mount:             {} (store {}), up {} s",
        s.mountpoint.display(),
        s.store_id,
        s.seconds
    );
    println!(
        "bytes:             {} read, {} written",
        indicatif::HumanBytes(s.bytes_read),
        indicatif::HumanBytes(s.bytes_written)
    );
    println!("catalog commits:   {}", s.catalog_commits);
    println!(
        "batch keys opened: {} (one RSA operation each)",
        s.batch_key_unwraps
    );
    let list = |m: &std::collections::BTreeMap<String, u64>| match m.is_empty() {
        true => "none".to_string(),
        false => m
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
    };
    println!("operations:        {}", list(&s.operations));
    println!("errors:            {}", list(&s.errors));
    Ok(0)
}
