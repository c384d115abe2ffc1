//! A headless Chromium driven over W3C WebDriver (chromedriver), spoken with
//! `ureq`: enough to log in, click, type, read and screenshot the dashboard.
//!
//! Everything is bounded in time; the session is quit and chromedriver
//! killed on drop. If Chromium or chromedriver cannot be started the tests
//! that need them fail: CI installs Debian's `chromium` and
//! `chromium-driver`, so a missing browser is a broken set-up, not a skip.

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C key under which an element reference is returned.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long a single WebDriver command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `wait_until` and friends wait by default.
pub const WAIT: Duration = Duration::from_secs(10);

/// Flags that make Chromium work headless in a container on a closed
/// network: without the background-networking ones its connections are
/// refused here.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
];

/// A browser session: one chromedriver process and one Chromium session.
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    _profile: tempfile::TempDir,
}

/// An element found on the page.
#[derive(Clone)]
pub struct Element<'b> {
    browser: &'b Browser,
    id: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session. Panics with the
    /// reason if either cannot be started.
    pub fn start() -> Browser {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(path).exists(),
                "`{path}` is missing: install Debian's `chromium` and `chromium-driver` \
                 (`apt-get install -y --no-install-recommends chromium chromium-driver`)"
            );
        }
        let agent = ureq::AgentBuilder::new().timeout(COMMAND_TIMEOUT).build();
        let mut last_error = String::new();
        // The port may be taken between probing and binding: try a few.
        for _ in 0..3 {
            let port = free_port();
            let mut driver = Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start chromedriver");
            let base = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + Duration::from_secs(15);
            let mut ready = false;
            while Instant::now() < deadline {
                if let Ok(Some(status)) = driver.try_wait() {
                    last_error = format!("chromedriver exited at start: {status}");
                    break;
                }
                if let Ok(resp) = agent.get(&format!("{base}/status")).call() {
                    if resp
                        .into_json::<Value>()
                        .map(|v| v["value"]["ready"] == json!(true))
                        .unwrap_or(false)
                    {
                        ready = true;
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !ready {
                let _ = driver.kill();
                let _ = driver.wait();
                if last_error.is_empty() {
                    last_error = "chromedriver did not become ready in 15 s".into();
                }
                continue;
            }
            let profile = tempfile::tempdir().expect("a temporary Chromium profile");
            let mut args: Vec<String> = FLAGS.iter().map(|s| s.to_string()).collect();
            args.push(format!("--user-data-dir={}", profile.path().display()));
            let caps = json!({
                "capabilities": {
                    "alwaysMatch": {
                        "browserName": "chrome",
                        "pageLoadStrategy": "normal",
                        "timeouts": {"pageLoad": 20000, "script": 10000, "implicit": 0},
                        "goog:chromeOptions": {"binary": CHROMIUM, "args": args}
                    }
                }
            });
            match post(&agent, &format!("{base}/session"), &caps) {
                Ok(v) => {
                    let session = v["sessionId"]
                        .as_str()
                        .expect("a session id from chromedriver")
                        .to_string();
                    return Browser {
                        driver,
                        base,
                        session,
                        agent,
                        _profile: profile,
                    };
                }
                Err(e) => {
                    last_error = format!("Chromium did not start: {e}");
                    let _ = driver.kill();
                    let _ = driver.wait();
                }
            }
        }
        panic!("cannot start headless Chromium: {last_error}");
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{}", self.base, self.session, path)
    }

    fn cmd_post(&self, path: &str, body: &Value) -> Value {
        post(&self.agent, &self.url(path), body)
            .unwrap_or_else(|e| panic!("webdriver POST {path}: {e}"))
    }

    fn cmd_get(&self, path: &str) -> Value {
        get(&self.agent, &self.url(path)).unwrap_or_else(|e| panic!("webdriver GET {path}: {e}"))
    }

    /// Opens a URL and waits for the page to load.
    pub fn goto(&self, url: &str) {
        self.cmd_post("/url", &json!({ "url": url }));
    }

    pub fn current_url(&self) -> String {
        self.cmd_get("/url")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn title(&self) -> String {
        self.cmd_get("/title")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The rendered page's source.
    pub fn source(&self) -> String {
        self.cmd_get("/source")
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The value of a cookie the browser holds for the current page, even
    /// an `HttpOnly` one (WebDriver sees them; page scripts do not).
    pub fn cookie(&self, name: &str) -> Option<String> {
        get(&self.agent, &self.url(&format!("/cookie/{name}")))
            .ok()
            .and_then(|v| v["value"].as_str().map(str::to_string))
    }

    /// Presses Tab, as a keyboard user moves the focus.
    pub fn press_tab(&self) {
        let tab = "\u{E004}";
        self.cmd_post(
            "/actions",
            &json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
                {"type": "keyDown", "value": tab},
                {"type": "keyUp", "value": tab}
            ]}]}),
        );
    }

    /// Resizes the window (for narrow-width screenshots).
    pub fn resize(&self, width: u32, height: u32) {
        self.cmd_post("/window/rect", &json!({ "width": width, "height": height }));
    }

    /// Every element matching a CSS selector, possibly none.
    pub fn find_all(&self, css: &str) -> Vec<Element<'_>> {
        let v = self.cmd_post(
            "/elements",
            &json!({ "using": "css selector", "value": css }),
        );
        v.as_array()
            .map(|a| a.iter().filter_map(|e| self.element(e)).collect())
            .unwrap_or_default()
    }

    fn element(&self, v: &Value) -> Option<Element<'_>> {
        v[ELEMENT_KEY].as_str().map(|id| Element {
            browser: self,
            id: id.to_string(),
        })
    }

    /// The first element matching a CSS selector, if there is one now.
    pub fn try_find(&self, css: &str) -> Option<Element<'_>> {
        self.find_all(css).into_iter().next()
    }

    /// The first element matching a CSS selector, waiting up to [`WAIT`].
    pub fn find(&self, css: &str) -> Element<'_> {
        self.wait_until(&format!("an element `{css}`"), WAIT, || {
            self.try_find(css).is_some()
        });
        self.try_find(css)
            .unwrap_or_else(|| panic!("no element `{css}` on {}", self.current_url()))
    }

    /// Runs a script in the page and returns its result.
    pub fn execute(&self, script: &str, args: Value) -> Value {
        self.cmd_post("/execute/sync", &json!({ "script": script, "args": args }))
    }

    /// The page's visible text.
    pub fn body_text(&self) -> String {
        self.execute(
            "return document.body ? document.body.innerText : '';",
            json!([]),
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Polls `check` every 100 ms until it holds, or panics after `timeout`
    /// naming what was awaited.
    pub fn wait_until(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if check() {
                return;
            }
            if Instant::now() >= deadline {
                let shot = self.screenshot("timeout");
                panic!(
                    "timed out after {timeout:?} waiting for {what} on {} (screenshot {})",
                    self.current_url(),
                    shot.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the page's text contains `needle`.
    pub fn wait_for_text(&self, needle: &str) {
        self.wait_until(&format!("the text `{needle}`"), WAIT, || {
            self.body_text().contains(needle)
        });
    }

    /// Saves a PNG of the viewport under `target/screenshots/` and returns
    /// its path.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let dir = screenshot_dir();
        let path = dir.join(format!("{name}.png"));
        let b64 = self.cmd_get("/screenshot");
        let png = decode_base64(b64.as_str().unwrap_or_default())
            .unwrap_or_else(|| panic!("chromedriver sent a screenshot that is not base64"));
        std::fs::create_dir_all(&dir).expect("create the screenshot folder");
        std::fs::write(&path, png).expect("write the screenshot");
        path
    }

    /// Saves a PNG of the whole page, however long, by resizing the window
    /// to the document's height for the shot.
    pub fn full_page_screenshot(&self, name: &str, width: u32) -> PathBuf {
        self.resize(width, 900);
        let height = self
            .execute(
                "return Math.ceil(document.documentElement.scrollHeight);",
                json!([]),
            )
            .as_u64()
            .unwrap_or(900)
            .clamp(400, 6000) as u32;
        self.resize(width, height + 140);
        let path = self.screenshot(name);
        self.resize(1280, 900);
        path
    }
}

impl Element<'_> {
    fn path(&self, rest: &str) -> String {
        format!("/element/{}{}", self.id, rest)
    }

    pub fn click(&self) {
        self.browser.cmd_post(&self.path("/click"), &json!({}));
    }

    /// Types text into the element.
    pub fn type_text(&self, text: &str) {
        self.browser
            .cmd_post(&self.path("/value"), &json!({ "text": text }));
    }

    pub fn text(&self) -> String {
        self.browser
            .cmd_get(&self.path("/text"))
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// A DOM property (`value`, `checked`, ...).
    pub fn property(&self, name: &str) -> Value {
        self.browser
            .cmd_get(&self.path(&format!("/property/{name}")))
    }

    /// The first descendant matching a CSS selector.
    pub fn find(&self, css: &str) -> Element<'_> {
        let v = self.browser.cmd_post(
            &self.path("/element"),
            &json!({ "using": "css selector", "value": css }),
        );
        self.browser
            .element(&v)
            .unwrap_or_else(|| panic!("no `{css}` inside the element"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .agent
            .delete(&format!("{}/session/{}", self.base, self.session))
            .timeout(Duration::from_secs(10))
            .call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Where screenshots go: `target/screenshots/` (beside the test binary's
/// temporary folder, never committed).
pub fn screenshot_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().map(|t| t.join("screenshots")).unwrap_or(tmp)
}

fn answer(result: Result<ureq::Response, ureq::Error>) -> Result<Value, String> {
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            let mut body = String::new();
            let _ = r.into_reader().take(4096).read_to_string(&mut body);
            return Err(format!("HTTP {code}: {body}"));
        }
        Err(e) => return Err(e.to_string()),
    };
    let v: Value = resp.into_json().map_err(|e| e.to_string())?;
    Ok(v.get("value").cloned().unwrap_or(Value::Null))
}

fn post(agent: &ureq::Agent, url: &str, body: &Value) -> Result<Value, String> {
    answer(agent.post(url).send_json(body.clone()))
}

fn get(agent: &ureq::Agent, url: &str) -> Result<Value, String> {
    answer(agent.get(url).call())
}

/// Standard base64 (with padding), as WebDriver sends screenshots.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for chunk in bytes.chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = if c == b'=' { 0 } else { val(c)? };
            n |= v << (18 - 6 * i);
        }
        let got = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&got[..3 - pad.min(2)]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn decodes_base64() {
        assert_eq!(super::decode_base64("aGk=").as_deref(), Some(&b"hi"[..]));
        assert_eq!(
            super::decode_base64("aGVsbG8h").as_deref(),
            Some(&b"hello!"[..])
        );
        assert_eq!(super::decode_base64("YQ==").as_deref(), Some(&b"a"[..]));
        assert!(super::decode_base64("a*==").is_none());
    }
}
