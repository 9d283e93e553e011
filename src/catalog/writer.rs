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
//! and are retried, once a second or at the next sync, and each sync reports the failure of
//! the attempt it waited for (a full disk stays a full disk). Once space is freed, the next commit
//! carries them and syncs succeed again.

use std::collections::VecDeque;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Catalog, CommitFailure, FileRecord};

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
    acks: Vec<Sender<Result<(), CommitFailure>>>,
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

    /// Block until every earlier op is committed durably; else why not.
    pub fn sync(&self) -> Result<(), CommitFailure> {
        let (ack_tx, ack_rx) = channel();
        match self.shared.q.lock() {
            Ok(mut q) if !q.closed => {
                q.acks.push(ack_tx);
                self.shared.wake.notify_one();
            }
            _ => return Err(CommitFailure::Stopped),
        }
        ack_rx.recv().unwrap_or(Err(CommitFailure::Stopped))
    }

    /// Commit what is pending and stop the thread.
    pub fn close(&self) -> Result<(), CommitFailure> {
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

/// The writer thread's own state between rounds.
struct Round {
    /// The failure of the last commit, while its ops wait to be retried.
    failed: Option<CommitFailure>,
    last_durable: Instant,
    /// Whether a commit since the last durable one is not yet on disk.
    volatile: bool,
}

fn run(catalog: Arc<Catalog>, shared: &Shared) {
    let mut round = Round {
        failed: None,
        last_durable: Instant::now(),
        volatile: false,
    };
    while let Some((ops, acks)) = next_group(shared, &round) {
        // Durable when somebody waits for it or every few seconds; a crash between loses
        // only records that fsck --repair rebuilds from the headers.
        let durable = !acks.is_empty() || round.last_durable.elapsed() >= DURABLE_EVERY;
        // A sync with nothing new commits nothing: an empty commit would still rewrite
        // redb's header pages, and every auxiliary rsync copy would then send them again.
        if (!ops.is_empty() || (durable && round.volatile))
            && !commit(&catalog, shared, &mut round, ops, &acks, durable)
        {
            return;
        }
        let answer = round.failed.map_or(Ok(()), Err);
        for a in acks {
            let _ = a.send(answer);
        }
    }
}

/// Wait for work, then take the next group of ops and the syncs waiting for them; None when
/// the writer is closed and drained (or its lock is poisoned).
type Group = (Vec<CatalogOp>, Vec<Sender<Result<(), CommitFailure>>>);

fn next_group(shared: &Shared, round: &Round) -> Option<Group> {
    let mut q = shared.q.lock().ok()?;
    if round.failed.is_some() && q.acks.is_empty() && !q.closed {
        // The last commit failed: wait a little before trying its ops again.
        q = shared.wake.wait_timeout(q, RETRY).ok()?.0;
    }
    while q.ops.is_empty() && q.acks.is_empty() && !q.closed {
        // Idle with a commit not yet durable: make it durable within DURABLE_EVERY.
        let left = DURABLE_EVERY.saturating_sub(round.last_durable.elapsed());
        if round.volatile && left.is_zero() {
            break;
        }
        q = match round.volatile {
            true => shared.wake.wait_timeout(q, left).ok()?.0,
            false => shared.wake.wait(q).ok()?,
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
            q = shared.wake.wait_timeout(q, left).ok()?.0;
        }
    }
    if q.closed && q.ops.is_empty() && q.acks.is_empty() {
        return None;
    }
    let n = q.ops.len().min(MAX_GROUP);
    let ops: Vec<CatalogOp> = q.ops.drain(..n).collect();
    // Acks wait for the ops queued before them; with more than a group queued, they stay for
    // the next round.
    let acks = match q.ops.is_empty() {
        true => std::mem::take(&mut q.acks),
        false => Vec::new(),
    };
    Some((ops, acks))
}

/// Commit one group. A failure loses nothing: the ops go back, ahead of anything newer.
/// Returns false when the writer must stop (a failure while closing).
fn commit(
    catalog: &Catalog,
    shared: &Shared,
    round: &mut Round,
    ops: Vec<CatalogOp>,
    acks: &[Sender<Result<(), CommitFailure>>],
    durable: bool,
) -> bool {
    if durable {
        round.last_durable = Instant::now();
    }
    let e = match catalog.apply(&ops, durable) {
        Ok(()) => {
            round.volatile = !durable;
            if round.failed.take().is_some() {
                tracing::info!("catalog updates committed again");
            }
            return true;
        }
        Err(e) => e,
    };
    let failure = e.commit_failure();
    if round.failed != Some(failure) {
        tracing::error!("catalog update failed, will retry: {e}");
    }
    round.failed = Some(failure);
    let Ok(mut q) = shared.q.lock() else {
        return false;
    };
    for op in ops.into_iter().rev() {
        q.ops.push_front(op);
    }
    if q.closed {
        // Unmounting: report and stop; fsck --repair rebuilds from the file headers what
        // these ops would have recorded.
        for a in acks.iter().chain(q.acks.iter()) {
            let _ = a.send(Err(failure));
        }
        return false;
    }
    true
}
