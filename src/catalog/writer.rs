//! A background thread that applies catalog updates in groups, so that creating 10,000 small
//! files costs a few hundred commits instead of 10,000 fsyncs. `sync` waits until everything
//! sent before it is durable (used by fsync, flush on unmount, and tests).
//!
//! Senders only append to a queue; the first op into an empty queue wakes the thread, which
//! then gathers for `GATHER` before committing. A channel woke the thread for every op, and
//! on two cores that wake-up per created file competed with the FUSE workers. A sync wakes the
//! thread at once.
//!
//! A commit that fails (a full disk) loses nothing: its ops go back to the head of the queue
//! and are retried, once a second or at the next sync, and each sync reports the errno of
//! the attempt it waited for (ENOSPC stays ENOSPC). Once space is freed, the next commit
//! carries them and syncs succeed again.

use std::collections::VecDeque;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Catalog, FileRecord};

#[derive(Clone, Debug)]
pub enum CatalogOp {
    Put([u8; 16], FileRecord),
    SetLen([u8; 16], u64),
    Remove([u8; 16]),
}

/// Longest time queued updates stay non-durable while the mount is busy.
const DURABLE_EVERY: Duration = Duration::from_secs(5);
/// How long the thread lets ops accumulate after the first one arrives.
const GATHER: Duration = Duration::from_millis(10);
/// How long a failed commit waits before it is tried again, unless a sync asks sooner.
const RETRY: Duration = Duration::from_secs(1);
/// Most ops in one commit.
const MAX_GROUP: usize = 4096;

#[derive(Default)]
struct Queue {
    ops: VecDeque<CatalogOp>,
    acks: Vec<Sender<Result<(), i32>>>,
    closed: bool,
}

struct Shared {
    q: Mutex<Queue>,
    wake: Condvar,
}

pub struct CatalogWriter {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl CatalogWriter {
    pub fn spawn(catalog: Arc<Catalog>) -> std::io::Result<CatalogWriter> {
        let shared = Arc::new(Shared {
            q: Mutex::new(Queue::default()),
            wake: Condvar::new(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("coffer-catalog".into())
            .spawn(move || run(catalog, &s))?;
        Ok(CatalogWriter {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    pub fn send(&self, op: CatalogOp) {
        if let Ok(mut q) = self.shared.q.lock() {
            if q.closed {
                return;
            }
            let was_empty = q.ops.is_empty();
            q.ops.push_back(op);
            if was_empty {
                self.shared.wake.notify_one();
            }
        }
    }

    /// Block until every earlier op is committed durably; else the errno of the failure.
    pub fn sync(&self) -> Result<(), i32> {
        let (ack_tx, ack_rx) = channel();
        match self.shared.q.lock() {
            Ok(mut q) if !q.closed => {
                q.acks.push(ack_tx);
                self.shared.wake.notify_one();
            }
            _ => return Err(libc::EIO),
        }
        ack_rx.recv().unwrap_or(Err(libc::EIO))
    }

    /// Commit what is pending and stop the thread.
    pub fn close(&self) -> Result<(), i32> {
        let ok = self.sync();
        if let Ok(mut q) = self.shared.q.lock() {
            q.closed = true;
            self.shared.wake.notify_one();
        }
        if let Ok(mut t) = self.thread.lock() {
            if let Some(t) = t.take() {
                let _ = t.join();
            }
        }
        ok
    }
}

fn run(catalog: Arc<Catalog>, shared: &Shared) {
    // The errno of the last failed commit, while its ops wait to be retried.
    let mut failed: Option<i32> = None;
    let mut last_durable = Instant::now();
    // Whether a commit since the last durable one is not yet on disk.
    let mut volatile = false;
    loop {
        let (ops, acks) = {
            let Ok(mut q) = shared.q.lock() else {
                return;
            };
            if failed.is_some() && q.acks.is_empty() && !q.closed {
                // The last commit failed: wait a little before trying its ops again.
                q = match shared.wake.wait_timeout(q, RETRY) {
                    Ok((q, _)) => q,
                    Err(_) => return,
                };
            }
            while q.ops.is_empty() && q.acks.is_empty() && !q.closed {
                // Idle with a commit not yet durable: make it durable within DURABLE_EVERY.
                let left = DURABLE_EVERY.saturating_sub(last_durable.elapsed());
                if volatile && left.is_zero() {
                    break;
                }
                q = if volatile {
                    match shared.wake.wait_timeout(q, left) {
                        Ok((q, _)) => q,
                        Err(_) => return,
                    }
                } else {
                    match shared.wake.wait(q) {
                        Ok(q) => q,
                        Err(_) => return,
                    }
                };
            }
            if !q.ops.is_empty() && q.acks.is_empty() && !q.closed {
                // Ops only: let more arrive, unless a sync cuts the wait short.
                let until = Instant::now() + GATHER;
                while q.acks.is_empty() && !q.closed && q.ops.len() < MAX_GROUP {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    q = match shared.wake.wait_timeout(q, left) {
                        Ok((q, _)) => q,
                        Err(_) => return,
                    };
                }
            }
            if q.closed && q.ops.is_empty() && q.acks.is_empty() {
                return;
            }
            let n = q.ops.len().min(MAX_GROUP);
            let ops: Vec<CatalogOp> = q.ops.drain(..n).collect();
            // Acks wait for the ops queued before them; with more than a group queued, they
            // stay for the next round.
            let acks = if q.ops.is_empty() {
                std::mem::take(&mut q.acks)
            } else {
                Vec::new()
            };
            (ops, acks)
        };
        // Durable when somebody waits for it or every few seconds; a crash between loses
        // only records that fsck --repair rebuilds from the headers.
        let durable = !acks.is_empty() || last_durable.elapsed() >= DURABLE_EVERY;
        // A sync with nothing new commits nothing: an empty commit would still rewrite
        // redb's header pages, and every auxiliary rsync copy would then send them again.
        if !ops.is_empty() || (durable && volatile) {
            if durable {
                last_durable = Instant::now();
            }
            match catalog.apply(&ops, durable) {
                Ok(()) => {
                    volatile = !durable;
                    if failed.take().is_some() {
                        tracing::info!("catalog updates committed again");
                    }
                }
                Err(e) => {
                    let errno = e.errno();
                    if failed != Some(errno) {
                        tracing::error!("catalog update failed, will retry: {e}");
                    }
                    failed = Some(errno);
                    // Nothing is dropped: the ops go back, ahead of anything newer.
                    if let Ok(mut q) = shared.q.lock() {
                        for op in ops.into_iter().rev() {
                            q.ops.push_front(op);
                        }
                        if q.closed {
                            // Unmounting: report and stop; fsck --repair rebuilds from the
                            // file headers what these ops would have recorded.
                            for a in acks.iter().chain(q.acks.iter()) {
                                let _ = a.send(Err(errno));
                            }
                            return;
                        }
                    }
                }
            }
        }
        let answer = failed.map_or(Ok(()), Err);
        for a in acks {
            let _ = a.send(answer);
        }
    }
}
