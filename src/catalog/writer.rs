//! A background thread that applies catalog updates in groups, so that creating 10,000 small
//! files costs a handful of commits instead of 10,000 fsyncs. `sync` waits until everything
//! sent before it is durable (used by fsync, flush on unmount, and tests).

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{Catalog, FileRecord};

#[derive(Clone, Debug)]
pub enum CatalogOp {
    Put([u8; 16], FileRecord),
    SetLen([u8; 16], u64),
    Remove([u8; 16]),
}

enum Msg {
    Op(CatalogOp),
    Sync(Sender<bool>),
}

pub struct CatalogWriter {
    tx: std::sync::Mutex<Option<Sender<Msg>>>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl CatalogWriter {
    pub fn spawn(catalog: Arc<Catalog>) -> std::io::Result<CatalogWriter> {
        let (tx, rx) = channel();
        let thread = std::thread::Builder::new()
            .name("coffer-catalog".into())
            .spawn(move || run(catalog, rx))?;
        Ok(CatalogWriter {
            tx: std::sync::Mutex::new(Some(tx)),
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    pub fn send(&self, op: CatalogOp) {
        if let Ok(g) = self.tx.lock() {
            if let Some(tx) = g.as_ref() {
                let _ = tx.send(Msg::Op(op));
            }
        }
    }

    /// Block until every earlier op is committed durably. False if the catalog failed.
    pub fn sync(&self) -> bool {
        let (ack_tx, ack_rx) = channel();
        let sent = match self.tx.lock() {
            Ok(g) => g
                .as_ref()
                .map(|tx| tx.send(Msg::Sync(ack_tx)).is_ok())
                .unwrap_or(false),
            Err(_) => false,
        };
        sent && ack_rx.recv().unwrap_or(false)
    }

    /// Commit what is pending and stop the thread.
    pub fn close(&self) -> bool {
        let ok = self.sync();
        if let Ok(mut g) = self.tx.lock() {
            g.take();
        }
        if let Ok(mut t) = self.thread.lock() {
            if let Some(t) = t.take() {
                let _ = t.join();
            }
        }
        ok
    }
}

/// Longest time queued updates stay non-durable while the mount is busy.
const DURABLE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

fn run(catalog: Arc<Catalog>, rx: Receiver<Msg>) {
    let mut ok = true;
    let mut last_durable = std::time::Instant::now();
    // Whether a commit since the last durable one is not yet on disk.
    let mut volatile = false;
    while let Ok(first) = rx.recv() {
        let mut ops = Vec::new();
        let mut acks = Vec::new();
        let push = |m: Msg, ops: &mut Vec<CatalogOp>, acks: &mut Vec<Sender<bool>>| match m {
            Msg::Op(op) => ops.push(op),
            Msg::Sync(a) => acks.push(a),
        };
        push(first, &mut ops, &mut acks);
        while ops.len() < 4096 {
            match rx.try_recv() {
                Ok(m) => push(m, &mut ops, &mut acks),
                Err(_) => break,
            }
        }
        // Durable when somebody waits for it or every few seconds; a crash between loses
        // only records that fsck --repair rebuilds from the headers.
        let durable = !acks.is_empty() || last_durable.elapsed() >= DURABLE_EVERY;
        // A sync with nothing new commits nothing: an empty commit would still rewrite
        // redb's header pages, and every auxiliary rsync copy would then send them again.
        if !ops.is_empty() || (durable && volatile) {
            if durable {
                last_durable = std::time::Instant::now();
            }
            match catalog.apply(&ops, durable) {
                Ok(()) => volatile = !durable,
                Err(e) => {
                    tracing::error!("catalog update failed: {e}");
                    ok = false;
                }
            }
        }
        for a in acks {
            let _ = a.send(ok);
        }
    }
}
