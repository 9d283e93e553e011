//! Hard links on both walks: the first name of a linked inode that a worker reaches is
//! written as any file; every other name becomes a link to it once it is there. A worker
//! never waits for the first name: it may be the one that has to finish it (a worker blocked
//! in a nested rayon scope runs other tasks), so a name that comes while the first is being
//! written is queued, and the worker that wrote the first links the queue.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// Where a linked inode stands: being written (and who waits), or written (`P`: where its
/// first name went; None if that failed).
enum State<P, W> {
    Pending(Vec<W>),
    Done(Option<P>),
}

/// What a worker with name `W` of a linked inode does.
pub(super) enum Turn<P, W> {
    /// Write it, then call `done`.
    First(W),
    /// Nothing: the worker writing the first name links this one.
    Queued,
    /// Link this name to where the first one went.
    After(Option<P>, W),
}

pub(super) struct Links<K, P, W> {
    map: Mutex<HashMap<K, State<P, W>>>,
}

impl<K, P, W> Default for Links<K, P, W> {
    fn default() -> Self {
        Links {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq, P: Clone, W> Links<K, P, W> {
    pub(super) fn turn(&self, key: K, me: W) -> Turn<P, W> {
        let Ok(mut map) = self.map.lock() else {
            return Turn::First(me);
        };
        match map.get_mut(&key) {
            Some(State::Pending(waiting)) => {
                waiting.push(me);
                Turn::Queued
            }
            Some(State::Done(first)) => Turn::After(first.clone(), me),
            None => {
                map.insert(key, State::Pending(Vec::new()));
                Turn::First(me)
            }
        }
    }

    /// The first name is written (or failed): the names that were queued meanwhile.
    pub(super) fn done(&self, key: K, first: Option<P>) -> Vec<W> {
        match self
            .map
            .lock()
            .map(|mut m| m.insert(key, State::Done(first)))
        {
            Ok(Some(State::Pending(waiting))) => waiting,
            _ => Vec::new(),
        }
    }
}
