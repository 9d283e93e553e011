//! The tree as the console shows it: what this server last heard from its parent (each
//! heartbeat's outcome) and from each child (its heartbeats, the keys it pushed, whether it
//! was refused). In memory only: after a restart the children reappear at their next
//! heartbeat. What a child says of itself (its heartbeat, how many keys it holds) is shown as
//! what it says, never used for a decision; children are counted only once they present a
//! certificate, and at most `MAX_CHILDREN` are remembered.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use super::request::{via_list, Request};
use super::ApiError;

/// Header: a child's time between heartbeats, in seconds.
pub(super) const HEARTBEAT: &str = "X-Coffer-Heartbeat";
/// Header: how many keys a child holds.
pub(super) const HELD: &str = "X-Coffer-Held";
const MAX_CHILDREN: usize = 1024;
const MAX_CHAIN: usize = 64;

/// How a peer looks from here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Heard from within two heartbeats.
    Reachable,
    /// Not heard from for two heartbeats.
    Late,
    /// The last attempt could not connect (parent), or silent for five heartbeats (child).
    Unreachable,
    /// It refused this server (parent), or this server refused it (child).
    Refusing,
    /// Not known: not contacted yet, or (an ancestor) its child is not reachable now.
    Unknown,
}

impl PeerState {
    pub fn label(self) -> &'static str {
        match self {
            PeerState::Reachable => "reachable",
            PeerState::Late => "late",
            PeerState::Unreachable => "unreachable",
            PeerState::Refusing => "refusing",
            PeerState::Unknown => "unknown",
        }
    }
}

/// What the last heartbeats to the parent found.
#[derive(Clone, Debug, Default)]
pub struct ParentSeen {
    /// Unix time of the last heartbeat that reached the parent.
    pub last_ok: Option<u64>,
    /// The last heartbeat's failure, if it failed: (refused, why).
    pub failed: Option<(bool, String)>,
    /// Keys pushed to it since this server started.
    pub pushed: u64,
    /// Keys it lacked after the last heartbeat (0 once a push went through).
    pub lacks: Option<usize>,
    /// Its hierarchy option, as its chain answer says.
    pub hierarchy: Option<bool>,
    /// Its chain at the last heartbeat: the parent first, the top last.
    pub chain: Vec<String>,
    /// Whether that chain reached the top (false: a server on the way did not answer).
    pub chain_complete: bool,
}

/// What this server heard from one child.
#[derive(Clone, Debug, Default)]
pub struct ChildSeen {
    pub addr: String,
    /// Unix time of its last heartbeat (or refused attempt).
    pub last_seen: u64,
    /// Its heartbeat interval, as it says.
    pub heartbeat: Option<u64>,
    /// How many keys it holds, as it says.
    pub held: Option<u64>,
    /// Keys it pushed that were new here, since this server started.
    pub pushed: u64,
    /// Its last request was refused.
    pub refused: bool,
}

#[derive(Default)]
pub(super) struct Peers {
    parent: Mutex<ParentSeen>,
    children: Mutex<HashMap<String, ChildSeen>>,
}

impl Peers {
    /// A heartbeat's outcome: `Ok((pushed, lacked))`, or why it failed.
    pub(super) fn heartbeat(&self, beat: &Result<usize, ApiError>) {
        let Ok(mut p) = self.parent.lock() else {
            return;
        };
        match beat {
            Ok(n) => {
                p.last_ok = Some(crate::unix_now());
                p.failed = None;
                p.pushed += *n as u64;
                p.lacks = Some(0);
            }
            Err(e) => {
                let refused = matches!(e, ApiError::ParentRefused { .. } | ApiError::Cycle(_));
                p.failed = Some((refused, e.to_string()));
            }
        }
    }

    /// The parent's chain answer: its hierarchy option, the chain up from it (at most
    /// `MAX_CHAIN` servers), whether that reached the top.
    pub(super) fn parent_chain(&self, answer: &serde_json::Value) {
        if let Ok(mut p) = self.parent.lock() {
            p.hierarchy = answer["hierarchy"].as_bool();
            p.chain = answer["chain"]
                .as_array()
                .map(|c| {
                    let ids = c.iter().filter_map(|x| x.as_str().map(String::from));
                    ids.take(MAX_CHAIN).collect()
                })
                .unwrap_or_default();
            p.chain_complete = answer["complete"].as_bool() != Some(false);
        }
    }

    /// How many keys the parent lacks, before this heartbeat pushes them.
    pub(super) fn parent_lacks(&self, n: usize) {
        if let Ok(mut p) = self.parent.lock() {
            p.lacks = Some(n);
        }
    }

    pub fn parent(&self) -> ParentSeen {
        self.parent.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// A direct child's heartbeat: a chain request whose Via names only the peer itself.
    pub(super) fn child_seen(&self, fp: &str, req: &Request) {
        if via_list(req.header(super::VIA)) != [fp] {
            return;
        }
        let number = |h: &str| req.header(h).and_then(|v| v.trim().parse::<u64>().ok());
        self.update(fp, req.peer_addr.as_deref(), |c| {
            c.refused = false;
            c.heartbeat = number(HEARTBEAT).filter(|s| (1..=86_400).contains(s));
            c.held = number(HELD);
        });
    }

    /// A would-be child's request was refused.
    pub(super) fn child_refused(&self, fp: &str, via: &str, addr: Option<&str>) {
        if via_list(Some(via)) == [fp] {
            self.update(fp, addr, |c| c.refused = true);
        }
    }

    /// Keys a child pushed that were new here.
    pub(super) fn pushed_by(&self, fp: &str, new: usize) {
        if let Ok(mut c) = self.children.lock() {
            if let Some(c) = c.get_mut(fp) {
                c.pushed += new as u64;
            }
        }
    }

    fn update(&self, fp: &str, addr: Option<&str>, f: impl FnOnce(&mut ChildSeen)) {
        let Ok(mut all) = self.children.lock() else {
            return;
        };
        if all.len() >= MAX_CHILDREN && !all.contains_key(fp) {
            return;
        }
        let c = all.entry(fp.to_string()).or_default();
        c.last_seen = crate::unix_now();
        if let Some(a) = addr {
            c.addr = a.to_string();
        }
        f(c);
    }

    /// Every child heard from, by fingerprint.
    pub fn children(&self) -> Vec<(String, ChildSeen)> {
        let mut v: Vec<_> = self
            .children
            .lock()
            .map(|c| c.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

/// The parent's state, given this server's heartbeat interval and timeout.
pub fn parent_state(p: &ParentSeen, every: Duration, now: u64) -> PeerState {
    match (&p.failed, p.last_ok) {
        (Some((true, _)), _) => PeerState::Refusing,
        (Some((false, _)), _) => PeerState::Unreachable,
        (None, None) => PeerState::Unknown,
        (None, Some(t)) if now.saturating_sub(t) > 2 * every.as_secs().max(1) + 10 => {
            PeerState::Late
        }
        (None, Some(_)) => PeerState::Reachable,
    }
}

/// A child's state, given the heartbeat it announced (or this server's own).
pub fn child_state(c: &ChildSeen, every: Duration, now: u64) -> PeerState {
    let beat = c.heartbeat.unwrap_or(every.as_secs()).max(1);
    let age = now.saturating_sub(c.last_seen);
    match () {
        _ if c.refused => PeerState::Refusing,
        _ if age <= 2 * beat + 2 => PeerState::Reachable,
        _ if age <= 5 * beat + 5 => PeerState::Late,
        _ => PeerState::Unreachable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_follow_the_heartbeat() {
        let every = Duration::from_secs(10);
        let mut c = ChildSeen {
            last_seen: 1000,
            heartbeat: Some(10),
            ..ChildSeen::default()
        };
        assert_eq!(child_state(&c, every, 1010), PeerState::Reachable);
        assert_eq!(child_state(&c, every, 1040), PeerState::Late);
        assert_eq!(child_state(&c, every, 1100), PeerState::Unreachable);
        c.refused = true;
        assert_eq!(child_state(&c, every, 1001), PeerState::Refusing);
        let mut p = ParentSeen::default();
        assert_eq!(parent_state(&p, every, 5), PeerState::Unknown);
        p.last_ok = Some(1000);
        assert_eq!(parent_state(&p, every, 1005), PeerState::Reachable);
        assert_eq!(parent_state(&p, every, 1100), PeerState::Late);
        p.failed = Some((false, "connection refused".into()));
        assert_eq!(parent_state(&p, every, 1001), PeerState::Unreachable);
    }
}
