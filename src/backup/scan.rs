//! How much a backup has to look at, counted ahead of it for a progress bar's ETA: regular
//! files and their bytes under each source, with the run's filter, never following a symlink.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rayon::prelude::*;

use super::{local, Filter};

/// Totals found so far (they only grow while the scan runs).
#[derive(Default)]
pub struct Totals {
    pub files: AtomicU64,
    pub bytes: AtomicU64,
    pub done: AtomicBool,
}

/// Count what `sources` hold; unreadable parts are left out (the backup reports them).
pub fn scan(sources: &[std::path::PathBuf], filter: &Filter, totals: &Totals) {
    sources.par_iter().for_each(|src| {
        let s = src.as_os_str().as_encoded_bytes();
        let contents = s.ends_with(b"/") || src.file_name().is_none();
        if contents {
            if let Ok(fd) = local::open_root(src) {
                dir(&fd, Path::new(""), filter, totals);
            }
            return;
        }
        let parent = match src.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if let (Ok(pfd), Some(name)) = (local::open_root(parent), src.file_name()) {
            entry(&pfd, name, Path::new(name), filter, totals);
        }
    });
    totals.done.store(true, Ordering::Relaxed);
}

fn dir(fd: &OwnedFd, rel: &Path, filter: &Filter, totals: &Totals) {
    if let Ok(names) = local::names(fd) {
        names
            .par_iter()
            .for_each(|n| entry(fd, n, &rel.join(n), filter, totals));
    }
}

fn entry(dfd: &OwnedFd, name: &OsStr, rel: &Path, filter: &Filter, totals: &Totals) {
    let Ok(st) = local::stat_at(dfd, name) else {
        return;
    };
    let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
    if filter.excludes(rel, is_dir) {
        return;
    }
    if is_dir {
        if let Ok(sub) = local::open_dir_at(dfd, name) {
            dir(&sub, rel, filter, totals);
        }
        return;
    }
    totals.files.fetch_add(1, Ordering::Relaxed);
    if st.st_mode & libc::S_IFMT == libc::S_IFREG {
        totals.bytes.fetch_add(st.st_size as u64, Ordering::Relaxed);
    }
}
