//! A browser for tests: Debian's chromium, headless, driven by chromedriver through the W3C
//! WebDriver protocol (JSON over HTTP on loopback, with ureq). Chromium is started as the
//! machine's probe found it must be here: no sandbox (root), no GPU, no background
//! networking (the machine's closed network refuses it), a fresh profile. The session and
//! chromedriver end on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use super::keyservers::{free_port, wait_for};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
const TAB: &str = "\u{E004}";
pub const ENTER: &str = "\u{E007}";

pub struct Browser {
    driver: Child,
    base: String,
    shots: PathBuf,
}

fn need(cmd: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{cmd} is not installed, so the console cannot be tested in a browser: \
         install Debian's {package} (tools/setup.sh does)"
    );
}

impl Browser {
    /// A headless Chromium, 1280 px wide, saving screenshots under `shots`.
    pub fn start(profile: &Path, shots: &Path) -> Browser {
        need("chromium", "chromium");
        need("chromedriver", "chromium-driver");
        std::fs::create_dir_all(shots).expect("screenshot dir");
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver");
        let root = format!("http://127.0.0.1:{port}");
        wait_for("chromedriver ready", Duration::from_secs(30), || {
            ureq::get(&format!("{root}/status"))
                .call()
                .ok()
                .and_then(|r| r.into_json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == json!(true))
        });
        let caps = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        } } });
        let r: Value = ureq::post(&format!("{root}/session"))
            .send_json(caps)
            .expect("new WebDriver session")
            .into_json()
            .expect("session json");
        let id = r["value"]["sessionId"].as_str().expect("session id");
        Browser {
            driver,
            base: format!("{root}/session/{id}"),
            shots: shots.to_path_buf(),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let req = ureq::request(method, &url);
        let r = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match r {
            Ok(r) => r.into_json::<Value>().expect("json")["value"].take(),
            Err(ureq::Error::Status(code, r)) => {
                let why: Value = r.into_json().unwrap_or_default();
                let msg = why["value"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let page = ureq::get(&format!("{}/source", self.base))
                    .call()
                    .ok()
                    .and_then(|r| r.into_json::<Value>().ok())
                    .map(|v| v["value"].to_string())
                    .unwrap_or_default();
                panic!("WebDriver {method} {path}: {code} {msg}\npage: {page}")
            }
            Err(e) => panic!("WebDriver {method} {path}: {e}"),
        }
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    pub fn url(&self) -> String {
        self.call("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The element a CSS selector finds (the test fails if none).
    pub fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        );
        match v[ELEMENT].as_str() {
            Some(id) => id.to_string(),
            None => panic!("no element {css} at {}: {v}\n{}", self.url(), self.source()),
        }
    }

    /// How many elements a CSS selector finds.
    pub fn count(&self, css: &str) -> usize {
        let v = self.call(
            "POST",
            "/elements",
            Some(json!({ "using": "css selector", "value": css })),
        );
        v.as_array().map_or(0, Vec::len)
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css);
        self.call("POST", &format!("/element/{el}/clear"), Some(json!({})));
        self.call(
            "POST",
            &format!("/element/{el}/value"),
            Some(json!({ "text": text })),
        );
    }

    pub fn click(&self, css: &str) {
        let el = self.find(css);
        self.call("POST", &format!("/element/{el}/click"), Some(json!({})));
    }

    /// The visible text of the first element a selector finds.
    pub fn text(&self, css: &str) -> String {
        let el = self.find(css);
        let v = self.call("GET", &format!("/element/{el}/text"), None);
        v.as_str().unwrap_or_default().to_string()
    }

    pub fn source(&self) -> String {
        self.call("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Press keys (Tab, Enter, text) as a keyboard would, into whatever has the focus.
    pub fn keys(&self, keys: &str) {
        let mut acts = Vec::new();
        for c in keys.chars() {
            acts.push(json!({ "type": "keyDown", "value": c.to_string() }));
            acts.push(json!({ "type": "keyUp", "value": c.to_string() }));
        }
        let body = json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": acts }] });
        self.call("POST", "/actions", Some(body));
    }

    pub fn tab(&self) {
        self.keys(TAB);
    }

    /// The text of the focused element.
    pub fn focused_text(&self) -> String {
        let v = self.call("GET", "/element/active", None);
        let el = v[ELEMENT].as_str().expect("active element");
        let t = self.call("GET", &format!("/element/{el}/text"), None);
        t.as_str().unwrap_or_default().to_string()
    }

    pub fn resize(&self, width: u32, height: u32) {
        self.call(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        );
    }

    /// A script's value (WebDriver runs it outside the page's Content-Security-Policy).
    pub fn script(&self, js: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": js, "args": [] })),
        )
    }

    /// A cookie's value (HttpOnly ones too: WebDriver sees them).
    pub fn cookie(&self, name: &str) -> String {
        let v = self.call("GET", &format!("/cookie/{name}"), None);
        v["value"].as_str().unwrap_or_default().to_string()
    }

    pub fn delete_cookies(&self) {
        self.call("DELETE", "/cookie", None);
    }

    /// Save a screenshot of the viewport as NAME.png.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let b64 = self.call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("screenshot"))
            .expect("png");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = ureq::delete(&self.base).call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
