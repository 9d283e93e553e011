//! The console's pages (GET) and changes (POST, key administrators only): a grant, a
//! revocation, the hierarchy settings. A change is checked, audited with the user's name,
//! saved to the configuration file and only then put into effect.

use std::collections::HashMap;

use super::audit_view::{self, Filter};
use super::pages::{self, Notice};
use super::views::View;
use super::{fields, ConsoleError, Reply};
use crate::server::console_auth::Session;
use crate::server::{
    grant_fingerprint, parse_duration, Config, ConfigError, KeyServer, Request, Rights,
};

static CHANGING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The audit operation a console POST is.
pub(super) fn op_of(path: &str) -> &'static str {
    match path {
        "/console/rights/grant" => "console-grant",
        "/console/rights/revoke" => "console-revoke",
        "/console/settings" => "console-settings",
        "/console/logout" => "console-logout",
        _ => "console-change",
    }
}

/// What `?done=` says after a change (a fixed set: the page never echoes the query).
fn done_text(code: Option<&String>) -> Notice<'static> {
    match code.map(String::as_str) {
        Some("granted") => Notice::Done("Granted. The certificate's next request is judged by it."),
        Some("revoked") => Notice::Done("Revoked. The certificate's next request is refused."),
        Some("saved") => Notice::Done("Saved. The next heartbeat follows it."),
        _ => Notice::None,
    }
}

/// A name as the rights page shows it: printable, at most 64 characters.
fn clean_name(s: &str) -> String {
    s.trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(64)
        .collect()
}

/// Ids from a comma or space separated list, each with `prefix` ("store:", "key:").
fn ids(list: Option<&String>, prefix: &str) -> Vec<String> {
    list.map(|l| {
        l.split([',', ' ', '\n'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| format!("{prefix}{s}"))
            .collect()
    })
    .unwrap_or_default()
}

impl KeyServer {
    /// GET under /console, for a logged-in user.
    pub(super) fn page(&self, s: &Session, req: &Request) -> Reply {
        let v = View::of(s);
        let q = fields(req.query.as_bytes());
        match req.path.as_str() {
            "/console" | "/console/" => Reply::redirect("/console/tree"),
            "/console/tree" => {
                let every = self.settings_view().heartbeat;
                Reply::html(200, pages::tree(&v, &self.tree_rows(), &every))
            }
            "/console/keys" => self.keys_page(&v, q.get("q").map(String::as_str).unwrap_or("")),
            "/console/rights" => {
                let notice = done_text(q.get("done"));
                Reply::html(200, pages::rights(&v, &self.right_rows(), notice))
            }
            "/console/audit" => self.audit_page(&v, &q, false),
            "/console/audit.csv" => self.audit_page(&v, &q, true),
            "/console/settings" => {
                let notice = done_text(q.get("done"));
                Reply::html(200, pages::settings(&v, &self.settings_view(), notice))
            }
            _ => Reply::not_found(),
        }
    }

    fn keys_page(&self, v: &View, q: &str) -> Reply {
        let want = q.trim().to_ascii_lowercase();
        match self.ks.entries() {
            Ok(mut all) => {
                all.retain(|e| {
                    want.is_empty() || e.store_id.contains(&want) || e.key_id.contains(&want)
                });
                all.sort_by(|a, b| (&a.store_id, a.version).cmp(&(&b.store_id, b.version)));
                Reply::html(200, pages::keys(v, q, &all))
            }
            Err(e) => Reply::html(500, pages::message(v, "Keys", &e.to_string())),
        }
    }

    fn audit_page(&self, v: &View, q: &HashMap<String, String>, csv: bool) -> Reply {
        let (filter, notice) = match Filter::from_query(q) {
            Ok(f) => (f, None),
            Err(e) => (Filter::default(), Some(e.to_string())),
        };
        let found = match audit_view::read(self.audit.path(), &filter) {
            Ok(f) => f,
            Err(e) => {
                let why = format!("cannot read {}: {e}", self.audit.path().display());
                return Reply::html(500, pages::message(v, "Audit log", &why));
            }
        };
        if csv {
            return match audit_view::csv(&found.lines) {
                Ok(body) => Reply::csv(body, "coffer-audit.csv"),
                Err(e) => Reply::html(500, pages::message(v, "Audit log", &e.to_string())),
            };
        }
        let notice = notice.as_deref().map_or(Notice::None, Notice::Error);
        Reply::html(200, audit_view::page(v, &filter, &found, notice))
    }

    /// POST of a change, by a key administrator whose token was checked.
    pub(super) fn act(&self, s: &Session, req: &Request, f: &HashMap<String, String>) -> Reply {
        // One change at a time: each reads the configuration file, changes it and writes it
        // back, then updates the running server; two at once would lose one.
        let _one = CHANGING.lock().unwrap_or_else(|p| p.into_inner());
        let (done, back) = match req.path.as_str() {
            "/console/rights/grant" => (self.grant_from(s, f), "/console/rights"),
            "/console/rights/revoke" => (self.revoke_from(s, f), "/console/rights"),
            "/console/settings" => (self.settings_from(s, f), "/console/settings"),
            _ => return Reply::not_found(),
        };
        let e = match done {
            Ok(code) => return Reply::redirect(&format!("{back}?done={code}")),
            Err(e) => e,
        };
        let fp = f
            .get("fingerprint")
            .map(String::as_str)
            .filter(|s| s.starts_with("SHA256:"));
        self.audit_refused(s, req, fp, &e);
        let (v, text) = (View::of(s), e.to_string());
        let page = match back {
            "/console/rights" => pages::rights(&v, &self.right_rows(), Notice::Error(&text)),
            _ => pages::settings(&v, &self.settings_view(), Notice::Error(&text)),
        };
        Reply::html(e.status(), page)
    }

    /// Load the configuration file, change it, write it back (atomically, 0600).
    fn save_config(&self, edit: impl FnOnce(&mut Config)) -> Result<(), ConsoleError> {
        let path = self.config.as_ref().ok_or(ConsoleError::NoConfig)?;
        let mut cfg = Config::load(path)?;
        edit(&mut cfg);
        cfg.save(path)?;
        Ok(())
    }

    /// A fingerprint typed in a form: only `SHA256:...` (a form never names a file to read).
    fn form_fingerprint(f: &HashMap<String, String>) -> Result<String, ConsoleError> {
        let raw = f.get("fingerprint").map(|s| s.trim()).unwrap_or_default();
        if !raw.starts_with("SHA256:") {
            let shown: String = raw.chars().take(80).collect();
            return Err(
                ConfigError::Subject(shown, "expected a fingerprint, SHA256:...".into()).into(),
            );
        }
        Ok(grant_fingerprint(raw)?)
    }

    fn grant_from(
        &self,
        s: &Session,
        f: &HashMap<String, String>,
    ) -> Result<&'static str, ConsoleError> {
        self.config.as_ref().ok_or(ConsoleError::NoConfig)?;
        let fp = Self::form_fingerprint(f)?;
        let mut list: Vec<String> = ["use", "read", "write", "relay"]
            .into_iter()
            .filter(|r| f.get(*r).is_some_and(|v| v == "on"))
            .map(String::from)
            .collect();
        if list.is_empty() {
            return Err(ConsoleError::NoRights);
        }
        list.extend(ids(f.get("stores"), "store:"));
        list.extend(ids(f.get("keys"), "key:"));
        let rights = Rights::parse(&list)?;
        let list = rights.to_list();
        let name = clean_name(f.get("name").map(String::as_str).unwrap_or(""));
        let detail = format!("granted {} (name {name:?})", list.join(","));
        self.change_grant(s, &fp, Some((rights, name)), &detail)?;
        Ok("granted")
    }

    /// Give `fp` these rights and this name (None: take its grant away): audited, saved to
    /// the configuration file, then in effect.
    fn change_grant(
        &self,
        s: &Session,
        fp: &str,
        grant: Option<(Rights, String)>,
        detail: &str,
    ) -> Result<(), ConsoleError> {
        let op = if grant.is_some() {
            "console-grant"
        } else {
            "console-revoke"
        };
        self.audit
            .record_by(Some(&s.user), op, Some(fp), "ok", Some(detail))?;
        let name = grant
            .as_ref()
            .map(|(_, n)| n.clone())
            .filter(|n| !n.is_empty());
        self.save_config(|cfg| {
            cfg.grants
                .retain(|k, _| grant_fingerprint(k).map_or(true, |g| g != fp));
            cfg.grant_names.remove(fp);
            if let Some((rights, _)) = &grant {
                cfg.grants.insert(fp.to_string(), rights.to_list());
            }
            if let Some(n) = &name {
                cfg.grant_names.insert(fp.to_string(), n.clone());
            }
        })?;
        if let Ok(mut n) = self.names.write() {
            n.remove(fp);
            n.extend(name.map(|n| (fp.to_string(), n)));
        }
        if let Ok(mut g) = self.grants.write() {
            g.remove(fp);
            g.extend(grant.map(|(r, _)| (fp.to_string(), r)));
        }
        Ok(())
    }

    fn revoke_from(
        &self,
        s: &Session,
        f: &HashMap<String, String>,
    ) -> Result<&'static str, ConsoleError> {
        self.config.as_ref().ok_or(ConsoleError::NoConfig)?;
        let fp = Self::form_fingerprint(f)?;
        if !self.grants.read().is_ok_and(|g| g.contains_key(&fp)) {
            return Err(ConsoleError::NoGrant(fp));
        }
        self.change_grant(s, &fp, None, "revoked every right")?;
        Ok("revoked")
    }

    fn settings_from(
        &self,
        s: &Session,
        f: &HashMap<String, String>,
    ) -> Result<&'static str, ConsoleError> {
        self.config.as_ref().ok_or(ConsoleError::NoConfig)?;
        let on = f.get("hierarchy").is_some_and(|v| v == "on");
        let text = f
            .get("heartbeat")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let every = parse_duration(&text)?;
        if every < std::time::Duration::from_secs(1)
            || every > std::time::Duration::from_secs(86_400)
        {
            return Err(ConsoleError::Heartbeat(text));
        }
        if on && self.parent.is_some() && self.parent_key.is_none() {
            return Err(ConfigError::ParentPin.into());
        }
        let detail = format!(
            "hierarchy {}, heartbeat {text}",
            if on { "on" } else { "off" }
        );
        self.audit
            .record_by(Some(&s.user), "console-settings", None, "ok", Some(&detail))?;
        self.save_config(|cfg| {
            cfg.hierarchy = on;
            cfg.heartbeat = Some(text.clone());
        })?;
        self.set_hierarchy(on, every);
        Ok("saved")
    }
}
