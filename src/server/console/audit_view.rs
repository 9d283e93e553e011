//! The audit log as the console shows it: newest first, filtered by operation, client, key and
//! time, a page at a time, and as CSV. Only the last `WINDOW` bytes of the log are read (a
//! page says so when older records exist); a line that does not parse is skipped.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use maud::{html, Markup};
use serde::Deserialize;

use super::pages::{layout, table, Notice};
use super::views::{utc, View};
use super::ConsoleError;

const WINDOW: u64 = 32 << 20;
pub const PAGE: usize = 50;

/// One audit record, as read back.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct Line {
    pub time: u64,
    pub user: String,
    pub op: String,
    pub key_id: Option<String>,
    pub store_id: Option<String>,
    pub fingerprint: Option<String>,
    pub outcome: String,
    pub detail: Option<String>,
    pub actor: Option<String>,
}

/// What the audit page asks for.
#[derive(Default)]
pub struct Filter {
    pub op: String,
    pub client: String,
    pub key: String,
    pub since: String,
    pub until: String,
    pub page: usize,
    bounds: (Option<u64>, Option<u64>),
}

/// "2026-12-04", "2026-12-04T13:05" (a datetime-local field) or "2026-12-04 13:05:10", UTC.
fn parse_time(s: &str) -> Result<Option<u64>, ConsoleError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let t = s.replace('T', " ");
    let full = match t.len() {
        10 => format!("{t} 00:00:00"),
        16 => format!("{t}:00"),
        _ => t,
    };
    humantime::parse_rfc3339_weak(&full)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| Some(d.as_secs()))
        .ok_or_else(|| ConsoleError::BadTime(s.chars().take(40).collect()))
}

impl Filter {
    pub fn from_query(q: &HashMap<String, String>) -> Result<Filter, ConsoleError> {
        let get = |k: &str| q.get(k).map(|v| v.trim().to_string()).unwrap_or_default();
        let mut f = Filter {
            op: get("op"),
            client: get("client"),
            key: get("key").to_ascii_lowercase(),
            since: get("since"),
            until: get("until"),
            page: get("page").parse::<usize>().unwrap_or(1).clamp(1, 1 << 20),
            bounds: (None, None),
        };
        f.bounds = (parse_time(&f.since)?, parse_time(&f.until)?);
        Ok(f)
    }

    fn matches(&self, l: &Line) -> bool {
        let has = |v: &Option<String>, want: &str| {
            v.as_deref()
                .is_some_and(|v| v.to_ascii_lowercase().contains(want))
        };
        let client = self.client.to_ascii_lowercase();
        (self.op.is_empty() || l.op == self.op)
            && (client.is_empty() || has(&l.fingerprint, &client) || has(&l.actor, &client))
            && (self.key.is_empty() || has(&l.key_id, &self.key) || has(&l.store_id, &self.key))
            && self.bounds.0.is_none_or(|s| l.time >= s)
            && self.bounds.1.is_none_or(|u| l.time <= u)
    }

    /// The query string of these filters, at `page` (None: no page).
    pub fn query(&self, page: Option<usize>) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("op", &self.op),
            ("client", &self.client),
            ("key", &self.key),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if !v.is_empty() {
                s.append_pair(k, v);
            }
        }
        if let Some(p) = page {
            s.append_pair("page", &p.to_string());
        }
        s.finish()
    }
}

/// The records that match, newest first; whether older records were left unread; and every
/// operation seen (for the filter's list).
pub struct Found {
    pub lines: Vec<Line>,
    pub truncated: bool,
    pub ops: BTreeSet<String>,
}

pub fn read(path: &Path, f: &Filter) -> std::io::Result<Found> {
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Found {
                lines: Vec::new(),
                truncated: false,
                ops: BTreeSet::new(),
            })
        }
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(WINDOW);
    file.seek(SeekFrom::Start(start))?;
    let mut text = Vec::new();
    file.take(WINDOW).read_to_end(&mut text)?;
    let mut ops = BTreeSet::new();
    let mut lines: Vec<Line> = text
        .split(|b| *b == b'\n')
        .skip(usize::from(start > 0))
        .filter_map(|l| serde_json::from_slice::<Line>(l).ok())
        .inspect(|l| {
            ops.insert(l.op.clone());
        })
        .filter(|l| f.matches(l))
        .collect();
    lines.reverse();
    Ok(Found {
        lines,
        truncated: start > 0,
        ops,
    })
}

/// A cell as CSV carries it, defused: a spreadsheet would run a cell starting with = + - @
/// as a formula, and the log holds text that clients chose (paths, names).
fn cell(s: &str) -> String {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}"),
        _ => s.to_string(),
    }
}

pub fn csv(lines: &[Line]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "time_utc",
        "op",
        "outcome",
        "key_id",
        "store_id",
        "client",
        "console_user",
        "os_user",
        "detail",
    ])?;
    for l in lines {
        let o = |v: &Option<String>| cell(v.as_deref().unwrap_or(""));
        w.write_record([
            utc(l.time),
            cell(&l.op),
            cell(&l.outcome),
            o(&l.key_id),
            o(&l.store_id),
            o(&l.fingerprint),
            o(&l.actor),
            cell(&l.user),
            o(&l.detail),
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

const AUDIT_COLUMNS: [&str; 8] = [
    "Time (UTC)",
    "Operation",
    "Outcome",
    "Key",
    "Store",
    "Client",
    "By",
    "Detail",
];

fn filters(f: &Filter, ops: &BTreeSet<String>) -> Markup {
    html! {
        form.filters method="get" action="/console/audit" role="search" {
            label { "Operation" select name="op" {
                option value="" { "any" }
                @for op in ops { option value=(op) selected[*op == f.op] { (op) } }
            } }
            label { "Client or console user" input type="text" name="client" value=(f.client); }
            label { "Key or store id" input type="text" name="key" value=(f.key); }
            label { "From (UTC)" input type="datetime-local" name="since" value=(f.since); }
            label { "To (UTC)" input type="datetime-local" name="until" value=(f.until); }
            button type="submit" { "Filter" }
            a href={ "/console/audit.csv?" (f.query(None)) } download="coffer-audit.csv" { "Download CSV" }
        }
    }
}

/// Who acted, for the "By" column: a console user; else the client whose certificate the
/// request came with (the record's user is the server's own process, "uid 0", which said
/// nothing); else the local user who ran the command on this host.
fn by(l: &Line) -> String {
    match (&l.actor, &l.fingerprint) {
        (Some(a), _) => format!("{a} (console)"),
        (None, Some(_)) => "the client".to_string(),
        (None, None) => l.user.clone(),
    }
}

pub fn page(v: &View, f: &Filter, found: &Found, notice: Notice) -> Markup {
    let pages = found.lines.len().div_ceil(PAGE).max(1);
    let at = f.page.min(pages);
    let shown = found.lines.iter().skip((at - 1) * PAGE).take(PAGE);
    let content = html! {
        (filters(f, &found.ops))
        p.muted { (found.lines.len()) " record(s), page " (at) " of " (pages) ", newest first."
            @if found.truncated { " Only the newest 32 MiB of the log are read here; older records are in the file itself." } }
        (table("audit", "Audit records", &AUDIT_COLUMNS, html! {}, html! {
            @for l in shown {
                tr {
                    td { (utc(l.time)) } td { (l.op) } td { (l.outcome) }
                    td.id { (l.key_id.as_deref().unwrap_or("")) }
                    td.id { (l.store_id.as_deref().unwrap_or("")) }
                    td.fp { (l.fingerprint.as_deref().unwrap_or("")) }
                    td { (by(l)) }
                    td { (l.detail.as_deref().unwrap_or("")) }
                }
            }
        }))
        nav.pager aria-label="Pages" {
            @if at > 1 { a href={ "/console/audit?" (f.query(Some(at - 1))) } rel="prev" { "← Newer" } }
            @if at < pages { a href={ "/console/audit?" (f.query(Some(at + 1))) } rel="next" { "Older →" } }
        }
    };
    layout(v, "Audit log", "/console/audit", notice, content)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(op: &str, time: u64, fp: &str) -> Line {
        Line {
            time,
            op: op.into(),
            fingerprint: Some(fp.into()),
            key_id: Some("ab".repeat(16)),
            ..Line::default()
        }
    }

    #[test]
    fn by_names_the_console_user_the_client_or_the_local_user() {
        let mut l = line("fetch", 0, "SHA256:ab");
        l.user = "uid 0".into();
        assert_eq!(by(&l), "the client");
        l.actor = Some("alice".into());
        assert_eq!(by(&l), "alice (console)");
        let local = Line {
            user: "root".into(),
            ..Line::default()
        };
        assert_eq!(by(&local), "root");
    }

    #[test]
    fn filters_times_and_csv() {
        let q = |pairs: &[(&str, &str)]| {
            let m: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Filter::from_query(&m)
        };
        let f = q(&[
            ("op", "fetch"),
            ("since", "2026-12-04T10:00"),
            ("client", "sha256:AB"),
        ])
        .expect("filter");
        let at = 1_796_378_400; // 2026-12-04 10:00:00 UTC
        assert!(f.matches(&line("fetch", at, "SHA256:abcd")));
        assert!(!f.matches(&line("fetch", at - 1, "SHA256:abcd")));
        assert!(!f.matches(&line("push", at, "SHA256:abcd")));
        assert!(!f.matches(&line("fetch", at, "SHA256:cd")));
        assert_eq!(parse_time("2026-12-04").expect("day"), Some(at - 36_000));
        assert!(matches!(
            q(&[("until", "yesterday")]),
            Err(ConsoleError::BadTime(_))
        ));
        assert_eq!(
            f.query(Some(2)),
            "op=fetch&client=sha256%3AAB&since=2026-12-04T10%3A00&page=2"
        );

        let mut hostile = line("=cmd|' /C calc'!A0", at, "-1+1");
        hostile.detail = Some("a,\"quoted\"\nline".into());
        let text = String::from_utf8(csv(&[hostile]).expect("csv")).expect("utf8");
        let row = text.lines().nth(1).expect("row");
        assert!(
            row.contains("'=cmd|' /C calc'!A0,") && row.contains(",'-1+1,"),
            "{text}"
        );
        assert!(text.contains("\"a,\"\"quoted\"\"\nline\""), "{text}");
    }

    #[test]
    fn pages_of_fifty_newest_first() {
        let dir = tempfile::tempdir().expect("dir");
        let log = crate::keys::AuditLog::new(&dir.path().join("audit.log"));
        for i in 0..120 {
            let op = if i % 2 == 0 { "fetch" } else { "push" };
            log.record(op, Some(&format!("{i:032}")), None, "ok", None)
                .expect("record");
        }
        let all = read(log.path(), &Filter::default()).expect("read");
        assert_eq!(all.lines.len(), 120);
        assert_eq!(
            all.lines[0].key_id.as_deref(),
            Some(&*format!("{:032}", 119))
        );
        assert_eq!(all.ops.iter().collect::<Vec<_>>(), ["fetch", "push"]);
        let v = View {
            user: "u".into(),
            role: crate::server::console_auth::Role::Viewer,
            csrf: "t".into(),
        };
        let f = Filter {
            page: 2,
            ..Filter::default()
        };
        let html = page(&v, &f, &all, Notice::None).into_string();
        assert!(html.contains("120 record(s), page 2 of 3"), "{html}");
        assert!(
            html.contains("href=\"/console/audit?page=1\" rel=\"prev\""),
            "{html}"
        );
        assert!(
            html.contains("href=\"/console/audit?page=3\" rel=\"next\""),
            "{html}"
        );
        assert!(html.contains(&format!("{:032}", 69)) && !html.contains(&format!("{:032}", 70)));
        let mut q = HashMap::new();
        q.insert("op".to_string(), "push".to_string());
        let pushes = read(log.path(), &Filter::from_query(&q).expect("f")).expect("read");
        assert_eq!(pushes.lines.len(), 60);
    }
}
