//! What the pages show, gathered from the running server: plain data, rendered by pages.rs.

use std::time::{Duration, UNIX_EPOCH};

use super::super::console_auth::{Role, Session};
use super::super::peers::{child_state, parent_state, PeerState};
use super::super::{KeyServer, Rights};

/// Who is looking, and the token their forms carry.
pub struct View {
    pub user: String,
    pub role: Role,
    pub csrf: String,
}

impl View {
    pub fn of(s: &Session) -> View {
        View {
            user: s.user.clone(),
            role: s.role,
            csrf: s.csrf.clone(),
        }
    }

    pub fn admin(&self) -> bool {
        self.role == Role::KeyAdmin
    }

    pub fn role_name(&self) -> &'static str {
        match self.role {
            Role::Viewer => "viewer",
            Role::KeyAdmin => "key administrator",
        }
    }
}

/// One server in the tree, as this one sees it.
pub struct TreeRow {
    pub relation: &'static str,
    pub fingerprint: String,
    pub address: String,
    /// Unix time it was last heard from.
    pub last: Option<u64>,
    pub state: PeerState,
    pub hierarchy: Option<bool>,
    /// Keys it pushed here (a child), or this server pushed to it (the parent).
    pub pushed: Option<u64>,
    /// Keys it holds (this server, a child as it says) or lacks (the parent).
    pub keys: String,
    pub detail: Option<String>,
}

/// One grant.
pub struct RightRow {
    pub fingerprint: String,
    pub name: String,
    pub rights: Rights,
}

/// The hierarchy settings.
pub struct SettingsView {
    pub hierarchy: bool,
    pub heartbeat: String,
    pub parent: Option<String>,
}

/// Unix time as UTC, to the second.
pub fn utc(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs))
        .to_string()
        .replace('T', " ")
}

impl KeyServer {
    /// This server, its parent and the children heard from.
    pub(super) fn tree_rows(&self) -> Vec<TreeRow> {
        let (now, every) = (crate::unix_now(), self.heartbeat_every());
        let held = self.ks.entries().map(|e| e.len().to_string());
        let mut rows = vec![TreeRow {
            relation: "this server",
            fingerprint: self.identity.fingerprint.clone(),
            address: String::new(),
            last: None,
            state: PeerState::Reachable,
            hierarchy: Some(self.hierarchy()),
            pushed: None,
            keys: format!("holds {}", held.unwrap_or_else(|e| e.to_string())),
            detail: None,
        }];
        rows.extend(self.parent_rows(every, now));
        for (fp, c) in self.peers.children() {
            rows.push(TreeRow {
                relation: "child",
                state: child_state(&c, every, now),
                address: c.addr.clone(),
                last: Some(c.last_seen),
                hierarchy: (!c.refused).then_some(true),
                pushed: Some(c.pushed),
                keys: c.held.map(|n| format!("holds {n}")).unwrap_or_default(),
                detail: c
                    .refused
                    .then(|| "its last request was refused here".into()),
                fingerprint: fp,
            });
        }
        rows
    }

    /// The parent, and the servers above it as its chain named them at the last heartbeat.
    fn parent_rows(&self, every: Duration, now: u64) -> Vec<TreeRow> {
        let Some(parent) = &self.parent else {
            return Vec::new();
        };
        let p = self.peers.parent();
        let pin = self.parent_key.as_ref().and_then(|k| k.fingerprint().ok());
        let state = parent_state(&p, every, now);
        let detail = match (!self.hierarchy(), &p.failed, state, p.chain.len()) {
            (true, _, _, _) => Some("hierarchy off here: no heartbeat is sent".into()),
            (_, Some((_, why)), _, _) => Some(why.clone()),
            (_, None, PeerState::Unknown, _) => Some("no heartbeat yet".into()),
            (_, None, _, n) if n <= 1 && !p.chain_complete => {
                Some("its own parent did not answer it".into())
            }
            _ => None,
        };
        let mut rows = vec![TreeRow {
            relation: "parent",
            fingerprint: pin.unwrap_or_else(|| "not pinned".into()),
            address: parent.url().to_string(),
            last: p.last_ok,
            state,
            hierarchy: p.hierarchy,
            pushed: Some(p.pushed),
            keys: p.lacks.map(|n| format!("lacks {n}")).unwrap_or_default(),
            detail,
        }];
        let n = p.chain.len();
        for (i, fp) in p.chain.iter().enumerate().skip(1) {
            let last = i + 1 == n && !p.chain_complete;
            rows.push(TreeRow {
                relation: "ancestor",
                fingerprint: fp.clone(),
                address: String::new(),
                last: None,
                state: match state {
                    PeerState::Reachable => PeerState::Reachable,
                    _ => PeerState::Unknown,
                },
                hierarchy: None,
                pushed: None,
                keys: String::new(),
                detail: Some(match last {
                    true => "named in the parent's chain; its own parent did not answer it".into(),
                    false => "named in the parent's chain at the last heartbeat".into(),
                }),
            });
        }
        rows
    }

    /// Every grant, by fingerprint, with its name.
    pub(super) fn right_rows(&self) -> Vec<RightRow> {
        let names = self.names.read().map(|n| n.clone()).unwrap_or_default();
        let mut rows: Vec<RightRow> = self
            .grants
            .read()
            .map(|g| {
                g.iter()
                    .map(|(fp, r)| RightRow {
                        name: names.get(fp).cloned().unwrap_or_default(),
                        fingerprint: fp.clone(),
                        rights: r.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        rows.sort_by(|a, b| (&a.name, &a.fingerprint).cmp(&(&b.name, &b.fingerprint)));
        rows
    }

    pub(super) fn settings_view(&self) -> SettingsView {
        SettingsView {
            hierarchy: self.hierarchy(),
            heartbeat: match self.heartbeat_every().as_millis() {
                ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
                ms => format!("{ms}ms"),
            },
            parent: self.parent.as_ref().map(|p| p.url().to_string()),
        }
    }
}
