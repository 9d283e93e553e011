//! coffer: an encrypted backup store mounted with FUSE.
//!
//! Files copied into the mount are encrypted, block by block, each under its own random
//! AES-256-GCM-SIV key, into a plain directory (the store) that can be copied anywhere with
//! rsync. File keys are wrapped by batch keys, batch keys by the store's RSA public key, and
//! the RSA private key by a master key that a key provider holds and the store never does.
//!
//! Threat model in one paragraph: whoever holds the store's bytes (a stolen disk, an
//! auxiliary copy, a curious storage admin) learns neither contents nor names, and cannot
//! change, swap, cut or graft blocks or files without the reader seeing EIO; with write
//! access and no key they can neither plant a file that reads (batches are tagged under a
//! write key) nor a descriptor field (it is sealed under the master key), nor make coffer
//! open anything outside the store (see `within`). They do learn
//! the shape of the tree, approximate sizes and times, and can roll a whole file back to an
//! older version of itself. Whoever holds the master key (through a provider) reads
//! everything. See docs/threat-model.md.

pub mod backup;
pub mod catalog;
pub mod cli;
pub mod crypto;
pub mod format;
pub mod fs;
pub mod fsck;
#[doc(hidden)]
pub mod fuzzing;
pub mod holes;
pub mod keys;
pub mod mountinfo;
pub mod progress;
pub mod server;
pub mod store;
pub mod within;

use std::path::Path;

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Replace `path` with `bytes` atomically and durably: a temporary file beside it, created
/// exclusively under a random name with `mode`, fsynced, renamed into place, then the
/// directory fsynced. The final component is never followed (see [`within`]).
pub fn atomic_write(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("no file name"))?;
    within::write_atomic_at(&within::open_root(dir)?, name, bytes, mode)
}
