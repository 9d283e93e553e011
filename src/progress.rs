//! How far a long job has got, for whoever shows it (the command line's progress bar): items
//! done and, once known, how many there are, and bytes. The job counts; it draws nothing.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default, Debug)]
pub struct Progress {
    pub done: AtomicU64,
    /// How many items there are; 0 until known.
    pub total: AtomicU64,
    pub bytes: AtomicU64,
}

impl Progress {
    pub fn step(&self, bytes: u64) {
        self.done.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn set_total(&self, n: u64) {
        self.total.store(n, Ordering::Relaxed);
    }

    pub fn add_total(&self, n: u64) {
        self.total.fetch_add(n, Ordering::Relaxed);
    }

    /// (done, total when known, bytes).
    pub fn get(&self) -> (u64, Option<u64>, u64) {
        let total = self.total.load(Ordering::Relaxed);
        (
            self.done.load(Ordering::Relaxed),
            (total > 0).then_some(total),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}
