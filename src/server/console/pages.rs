//! The console's HTML, rendered with maud (every value escaped). Plain pages: a skip link, a
//! navigation list, headings, tables that scroll sideways on a phone, forms with labels.

use maud::{html, Markup, DOCTYPE};

use super::views::{utc, RightRow, SettingsView, TreeRow, View};
use crate::keys::KeyEntry;

/// A line above a page's content: what was just done, or why it was not.
pub enum Notice<'a> {
    None,
    Done(&'a str),
    Error(&'a str),
}

const PAGES: [(&str, &str); 5] = [
    ("/console/tree", "Tree"),
    ("/console/keys", "Keys"),
    ("/console/rights", "Rights"),
    ("/console/audit", "Audit log"),
    ("/console/settings", "Settings"),
];

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · coffer key server" }
            link rel="stylesheet" href="/console/style.css";
            // No icon: a browser then asks for no /favicon.ico, whose refusal (no client
            // certificate there) would fill the audit log and the refusal counts.
            link rel="icon" href="data:,";
        }
    }
}

/// A page of the console: header with navigation and the user, then the content.
pub fn layout(v: &View, title: &str, current: &str, notice: Notice, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    span.brand { "coffer key server" }
                    nav aria-label="Console pages" {
                        ul {
                            @for (href, name) in PAGES {
                                li {
                                    @if href == current {
                                        a href=(href) aria-current="page" { (name) }
                                    } @else {
                                        a href=(href) { (name) }
                                    }
                                }
                            }
                        }
                    }
                    form method="post" action="/console/logout" {
                        input type="hidden" name="csrf" value=(v.csrf);
                        span { (v.user) " (" (v.role_name()) ")" }
                        button type="submit" { "Log out" }
                    }
                }
                main #main {
                    h1 { (title) }
                    @match notice {
                        Notice::None => {},
                        Notice::Done(t) => p.done role="status" { (t) },
                        Notice::Error(t) => p.error role="alert" { (t) },
                    }
                    (content)
                }
            }
        }
    }
}

pub fn login(error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Log in"))
            body {
                main.login #main {
                    h1 { "coffer key server" }
                    @if let Some(e) = error { p.error role="alert" { (e) } }
                    form method="post" action="/console/login" {
                        label { "User name" input type="text" name="user" autocomplete="username" required autofocus; }
                        label { "Passphrase" input type="password" name="passphrase" autocomplete="current-password" required; }
                        button type="submit" { "Log in" }
                    }
                }
            }
        }
    }
}

pub fn message(v: &View, title: &str, text: &str) -> Markup {
    layout(
        v,
        title,
        "",
        Notice::Error(text),
        html! {
            p { a href="/console/tree" { "Back to the tree" } }
        },
    )
}

/// A table that scrolls sideways on a narrow screen (and can be scrolled from the keyboard):
/// its id, what it holds (for a screen reader), its column heads (then `extra` ones), its rows.
pub(super) fn table(id: &str, label: &str, cols: &[&str], extra: Markup, rows: Markup) -> Markup {
    html! {
        div.scroll tabindex="0" role="region" aria-label=(label) {
            table id=(id) {
                thead { tr {
                    @for c in cols { th scope="col" { (c) } }
                    (extra)
                } }
                tbody { (rows) }
            }
        }
    }
}

const TREE_COLUMNS: [&str; 9] = [
    "Server",
    "Fingerprint",
    "Address",
    "Last heartbeat",
    "State",
    "Hierarchy",
    "Keys pushed",
    "Keys",
    "Detail",
];
const KEYS_COLUMNS: [&str; 7] = [
    "Key id",
    "Store id",
    "Policy",
    "Copy",
    "Version",
    "From",
    "When (UTC)",
];
const RIGHTS_COLUMNS: [&str; 8] = [
    "Name",
    "Fingerprint",
    "Use",
    "Read",
    "Write",
    "Relay",
    "Stores",
    "Keys",
];

fn yes_no(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => "on",
        Some(false) => "off",
        None => "unknown",
    }
}

pub fn tree(v: &View, rows: &[TreeRow], heartbeat: &str) -> Markup {
    let content = html! {
        p.muted { "Heartbeat every " (heartbeat) ". A child is late after two of its heartbeats \
                   without a word, unreachable after five; the parent is unreachable when the \
                   last heartbeat could not reach it." }
        (table("tree", "Servers", &TREE_COLUMNS, html! {}, html! {
            @for r in rows {
                @let label = r.state.label();
                tr data-relation=(r.relation) {
                    td { (r.relation) }
                    td.fp { (r.fingerprint) }
                    td { (r.address) }
                    td { @match (r.last, r.relation) {
                        (_, "this server" | "ancestor") => "—",
                        (Some(t), _) => (utc(t)),
                        (None, _) => "never",
                    } }
                    td { span class={ "state state-" (label.replace(' ', "-")) } { (label) } }
                    td { (yes_no(r.hierarchy)) }
                    td { @if let Some(n) = r.pushed { (n) } }
                    td { (r.keys) }
                    td.muted { @if let Some(d) = &r.detail { (d) } }
                }
            }
        }))
    };
    layout(v, "Key-server tree", "/console/tree", Notice::None, content)
}

fn origin(e: &KeyEntry) -> String {
    match e.origin.as_str() {
        "created" => "local".to_string(),
        o if o.starts_with("pushed by ") => format!("pushed from {}", &o[10..]),
        o => format!("imported ({o})"),
    }
}

pub fn keys(v: &View, q: &str, entries: &[KeyEntry]) -> Markup {
    let content = html! {
        form.filters method="get" action="/console/keys" role="search" {
            label { "Store or key id" input type="text" name="q" value=(q); }
            button type="submit" { "Find" }
        }
        p.muted { (entries.len()) " key(s). Ids and labels only: no key, and nothing a key \
                   could be had from, is ever shown here." }
        (table("keys", "Keys", &KEYS_COLUMNS, html! {}, html! {
            @for e in entries {
                tr {
                    td.id { (e.key_id) } td.id { (e.store_id) }
                    td { (e.policy.as_deref().unwrap_or("")) }
                    td { (e.copy.as_deref().unwrap_or("")) }
                    td { (e.version) } td { (origin(e)) } td { (utc(e.created)) }
                }
            }
        }))
    };
    layout(v, "Keys", "/console/keys", Notice::None, content)
}

fn revoke_form(v: &View, fp: &str) -> Markup {
    html! {
        form method="post" action="/console/rights/revoke" {
            input type="hidden" name="csrf" value=(v.csrf);
            input type="hidden" name="fingerprint" value=(fp);
            button.danger type="submit" aria-label={ "Revoke " (fp) } { "Revoke" }
        }
    }
}

fn grant_form(v: &View) -> Markup {
    html! {
        h2 #grant { "Grant rights" }
        p.muted { "A grant replaces what the certificate had. Limit it to the stores it is for: \
                   without a store or key id it reaches every store on this server." }
        form.grant method="post" action="/console/rights/grant" {
            input type="hidden" name="csrf" value=(v.csrf);
            label { "Certificate fingerprint" input type="text" name="fingerprint" placeholder="SHA256:…" required; }
            label { "Name" input type="text" name="name" maxlength="64"; }
            fieldset {
                legend { "Rights" }
                @for (r, what) in [("use", "fetch keys"), ("read", "list keys"), ("write", "push keys"), ("relay", "ask for its clients")] {
                    label.check { input type="checkbox" name=(r) value="on"; (r) span.muted { " (" (what) ")" } }
                }
            }
            label { "Stores (ids, comma separated)" input type="text" name="stores"; }
            label { "Keys (ids, comma separated)" input type="text" name="keys"; }
            button type="submit" { "Grant" }
        }
    }
}

pub fn rights(v: &View, rows: &[RightRow], notice: Notice) -> Markup {
    let tick = |b: bool| if b { "yes" } else { "no" };
    let content = html! {
        @if !v.admin() { p.note { "You are a viewer: rights are shown, not changed." } }
        (table("rights", "Rights", &RIGHTS_COLUMNS, html! { @if v.admin() { th scope="col" { span.skip { "Revoke" } } } }, html! {
            @for r in rows {
                tr {
                    td { (r.name) } td.fp { (r.fingerprint) }
                    td { (tick(r.rights.use_)) } td { (tick(r.rights.read)) }
                    td { (tick(r.rights.write)) } td { (tick(r.rights.relay)) }
                    td { @if r.rights.stores.is_empty() { "every store" } @else { code { (r.rights.stores.join(", ")) } } }
                    td { @if r.rights.keys.is_empty() { "every key" } @else { code { (r.rights.keys.join(", ")) } } }
                    @if v.admin() { td { (revoke_form(v, &r.fingerprint)) } }
                }
            }
        }))
        @if v.admin() { (grant_form(v)) }
    };
    layout(v, "Rights", "/console/rights", notice, content)
}

pub fn settings(v: &View, s: &SettingsView, notice: Notice) -> Markup {
    let content = html! {
        dl.facts {
            dt { "Parent" } dd { (s.parent.as_deref().unwrap_or("none configured")) }
            dt { "Hierarchy" } dd { @if s.hierarchy { "on" } @else { "off" } }
            dt { "Heartbeat" } dd { (s.heartbeat) }
        }
        p.muted { "With the hierarchy on, this server pushes its keys to its parent at each \
                   heartbeat and asks the parent for a key it lacks. Off (a server in a DMZ): \
                   no pushes and no upward lookups." }
        @if v.admin() {
            form.settings method="post" action="/console/settings" {
                input type="hidden" name="csrf" value=(v.csrf);
                label.check { input type="checkbox" name="hierarchy" value="on" checked[s.hierarchy]; "Hierarchy on" }
                label { "Heartbeat (60s, 5m, 500ms)" input type="text" name="heartbeat" value=(s.heartbeat) required; }
                button type="submit" { "Save" }
            }
        } @else {
            p.note { "You are a viewer: settings are shown, not changed." }
        }
    };
    layout(
        v,
        "Hierarchy settings",
        "/console/settings",
        notice,
        content,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::console_auth::Role;

    #[test]
    fn what_a_child_pushed_is_escaped() {
        let v = View {
            user: "alice".into(),
            role: Role::Viewer,
            csrf: "t".into(),
        };
        let e = KeyEntry {
            key_id: "ab".repeat(16),
            store_id: "cd".repeat(16),
            version: 1,
            policy: Some("<script>alert(1)</script>".into()),
            copy: Some("\" onfocus=\"x".into()),
            origin: "pushed by SHA256:<b>".into(),
            created: 0,
            format: None,
        };
        let html = keys(&v, "<q>", &[e]).into_string();
        assert!(!html.contains("<script>") && !html.contains("<b>") && !html.contains("<q>"));
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(html.contains("&quot; onfocus=&quot;x"), "{html}");
        let viewer = rights(&v, &[], Notice::None).into_string();
        assert!(!viewer.contains("<form class=\"grant\"") && viewer.contains("You are a viewer"));
        let admin = View {
            role: Role::KeyAdmin,
            ..v
        };
        let page = rights(&admin, &[], Notice::None).into_string();
        assert!(page.contains("<form class=\"grant\"") && !page.contains("You are a viewer"));
    }
}
