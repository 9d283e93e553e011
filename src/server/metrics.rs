//! What a key server counts, served as Prometheus text at `GET /metrics`: requests by
//! endpoint and status, refusals by the right that was missing, heartbeats and the keys they
//! pushed, the keys held, and whether the parent answered the last heartbeat.
//!
//! Like `/healthz`, it needs no client certificate (a scraper rarely has one) and so says
//! only counts: never a key id, a store id or a certificate fingerprint.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use super::ApiError;

#[derive(Default)]
pub struct Metrics {
    /// (endpoint, HTTP status) -> count.
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// The right (or credential) a refused request lacked -> count.
    refusals: Mutex<BTreeMap<&'static str, u64>>,
    heartbeats_ok: AtomicU64,
    heartbeats_failed: AtomicU64,
    keys_pushed: AtomicU64,
    /// 1 the parent answered the last heartbeat, 0 it did not, -1 none yet.
    parent_up: AtomicI64,
    parent_last_ok: AtomicU64,
}

/// The endpoint a request names, as a metric label (a fixed set: a path a client makes up is
/// "other", so no one can grow the label set).
pub fn endpoint(method: &str, path: &str) -> &'static str {
    match (method, path) {
        ("GET", "/healthz") => "healthz",
        ("GET", "/metrics") => "metrics",
        ("GET", "/v1/chain") => "chain",
        ("GET", "/v1/keys") => "list",
        ("POST", "/v1/keys") => "push",
        ("GET", p) if p.starts_with("/v1/keys/") => "fetch",
        (_, p) if p == "/console" || p.starts_with("/console/") => "console",
        _ => "other",
    }
}

/// What a refusal lacked: the right its grant did not give, or a known certificate.
fn lacked(e: &ApiError) -> Option<&'static str> {
    Some(match e {
        ApiError::NoCertificate | ApiError::UnknownCertificate(_) => "certificate",
        ApiError::NoRelay { .. } | ApiError::UnknownRequester { .. } => "relay",
        ApiError::LacksRight(_, right) => right,
        ApiError::PushOutsideGrant { .. } => "write",
        ApiError::NoGrant { .. } => "use",
        _ => return None,
    })
}

fn bump<K: Ord>(m: &Mutex<BTreeMap<K, u64>>, k: K) {
    if let Ok(mut m) = m.lock() {
        *m.entry(k).or_default() += 1;
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            parent_up: AtomicI64::new(-1),
            ..Metrics::default()
        }
    }

    /// One answered request; `refused` the error it was refused with, if any.
    pub fn request(&self, endpoint: &'static str, status: u16, refused: Option<&ApiError>) {
        bump(&self.requests, (endpoint, status));
        if let Some(r) = refused.and_then(lacked) {
            bump(&self.refusals, r);
        }
    }

    /// One heartbeat: Ok(keys pushed), or it failed (the parent unreachable or refusing).
    pub fn heartbeat(&self, pushed: Option<usize>) {
        match pushed {
            Some(n) => {
                self.heartbeats_ok.fetch_add(1, Ordering::Relaxed);
                self.keys_pushed.fetch_add(n as u64, Ordering::Relaxed);
                self.parent_up.store(1, Ordering::Relaxed);
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                self.parent_last_ok.store(now.as_secs(), Ordering::Relaxed);
            }
            None => {
                self.heartbeats_failed.fetch_add(1, Ordering::Relaxed);
                self.parent_up.store(0, Ordering::Relaxed);
            }
        }
    }

    /// The Prometheus text exposition (format 0.0.4); `keys_held` None when the keystore
    /// could not be read.
    pub fn render(&self, keys_held: Option<usize>, has_parent: bool) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let one = |v: u64| vec![(String::new(), v)];
        let requests = samples(&self.requests, |(ep, code)| {
            format!("{{endpoint=\"{ep}\",code=\"{code}\"}}")
        });
        let refusals = samples(&self.refusals, |r| format!("{{right=\"{r}\"}}"));
        let beats = vec![
            ("{result=\"ok\"}".to_string(), g(&self.heartbeats_ok)),
            (
                "{result=\"failed\"}".to_string(),
                g(&self.heartbeats_failed),
            ),
        ];
        let mut families = vec![
            (
                "requests_total",
                "counter",
                "Requests answered, by endpoint and HTTP status.",
                requests,
            ),
            (
                "refusals_total",
                "counter",
                "Requests refused, by the right or certificate they lacked.",
                refusals,
            ),
            (
                "heartbeats_total",
                "counter",
                "Heartbeats to the parent, by result.",
                beats,
            ),
            (
                "keys_pushed_total",
                "counter",
                "Keys pushed to the parent by heartbeats.",
                one(g(&self.keys_pushed)),
            ),
        ];
        if let Some(k) = keys_held {
            families.push((
                "keys_held",
                "gauge",
                "Keys in this server's keystore.",
                one(k as u64),
            ));
        }
        let up = self.parent_up.load(Ordering::Relaxed);
        if has_parent && up >= 0 {
            let help = "1 when the parent answered the last heartbeat, else 0.";
            families.push(("parent_up", "gauge", help, one(up as u64)));
            let help = "When a heartbeat last reached the parent (Unix time).";
            let last = one(g(&self.parent_last_ok));
            families.push(("parent_last_success_timestamp_seconds", "gauge", help, last));
        }
        let mut out = String::new();
        for (name, kind, help, s) in families {
            family(&mut out, name, kind, help, &s);
        }
        out
    }
}

/// A labelled counter's samples, in label order.
fn samples<K>(m: &Mutex<BTreeMap<K, u64>>, label: impl Fn(&K) -> String) -> Vec<(String, u64)> {
    m.lock()
        .map(|m| m.iter().map(|(k, n)| (label(k), *n)).collect())
        .unwrap_or_default()
}

/// One metric family: its HELP and TYPE lines, then a line per (labels, value).
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP coffer_keyserver_{name} {help}");
    let _ = writeln!(out, "# TYPE coffer_keyserver_{name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "coffer_keyserver_{name}{labels} {v}");
    }
}
