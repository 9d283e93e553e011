//! --delete's guard. What the source no longer has is removed once the walk is done, not as
//! it goes, and only up to `--max-delete N` entries (rsync's meaning: the rest are kept,
//! and the run says how many and exits 25); without it, not at all when that is more than
//! half of the entries the walk found in the store under the target. A backup from an empty
//! or unmounted source directory would otherwise remove the whole backup, and exit 0.

use std::ffi::OsString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::put::{Here, Run};
use super::Counters;

/// Entries of the store the source no longer has, and how many entries the walk found.
#[derive(Default)]
pub(super) struct Doomed {
    list: Mutex<Vec<(u64, OsString, Here)>>,
    seen: AtomicU64,
}

impl Doomed {
    /// `n` more entries found in a store directory the walk filled.
    pub(super) fn saw(&self, n: usize) {
        self.seen.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Entry `name` of store directory `dir` (held to the end of the run) is to go.
    pub(super) fn add(&self, dir: u64, name: OsString, at: Here) {
        if let Ok(mut l) = self.list.lock() {
            l.push((dir, name, at));
        }
    }
}

/// How many of `doomed` entries may go, of `seen`, under `max` (--max-delete).
pub(super) fn allowed(doomed: u64, seen: u64, max: Option<u64>) -> u64 {
    match max {
        Some(m) => doomed.min(m),
        None if doomed > seen / 2 => 0,
        None => doomed,
    }
}

impl Run<'_> {
    /// Remove what the walk doomed, as far as the guard allows; count what it kept back.
    pub(super) fn delete_doomed(&self) {
        let list: Vec<(u64, OsString, Here)> = match self.doomed.list.lock() {
            Ok(mut l) => std::mem::take(&mut *l),
            Err(_) => Vec::new(),
        };
        let seen = self.doomed.seen.load(Ordering::Relaxed);
        let n = allowed(list.len() as u64, seen, self.opts.max_delete) as usize;
        Counters::add(&self.counters.deletes_refused, (list.len() - n) as u64);
        for (dir, name, at) in list.into_iter().take(n) {
            if self.opts.dry_run {
                // Named where it is: in the store, not the source that no longer has it.
                self.report
                    .would("delete from the store", &self.dest.join(&at.rel));
                continue;
            }
            // The directory's times were set when the walk finished it: put back as they were.
            let before = self.tree.stat(dir);
            match self.remove(dir, &name) {
                Ok(k) => Counters::add(&self.counters.deleted, k),
                Err(e) => self.fail(&at, "cannot delete from the store", &e),
            }
            if let Ok(b) = before {
                if let Err(e) = self.times_back(dir, &b) {
                    self.fail(&at, "cannot set its directory's times in the store", &e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn more_than_half_is_refused_unless_a_limit_is_given() {
        assert_eq!(allowed(0, 0, None), 0);
        assert_eq!(allowed(5, 10, None), 5);
        assert_eq!(allowed(6, 10, None), 0, "more than half: none");
        assert_eq!(allowed(10, 10, None), 0, "an empty source: none");
        assert_eq!(allowed(10, 10, Some(3)), 3, "--max-delete: that many");
        assert_eq!(allowed(10, 10, Some(100)), 10);
        assert_eq!(allowed(2, 100, Some(0)), 0, "--max-delete 0: none");
    }
}
