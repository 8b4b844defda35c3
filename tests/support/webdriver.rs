//! Headless Chromium (Debian's `chromium` and `chromium-driver`, installed by
//! `scripts/setup.sh deps`) driven over the W3C WebDriver protocol, for the dashboard test:
//! a real browser logs in, runs the page's script and takes screenshots.

use base64::Engine;
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// WebDriver's key for an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process with one headless browser session.
pub struct Browser {
    /// Leader of its own process group, which holds the Chromium processes it starts:
    /// killing the group leaves no browser behind when a test fails mid-way.
    driver: Child,
    http: reqwest::Client,
    session: String,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a headless session.
    pub async fn start() -> Browser {
        super::process::require(
            std::path::Path::new(CHROMIUM),
            "chromium (bash scripts/setup.sh deps)",
        );
        super::process::require(
            std::path::Path::new(CHROMEDRIVER),
            "chromedriver (bash scripts/setup.sh deps)",
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = http.get(format!("{base}/status")).send().await;
            if let Ok(r) = ready {
                if r.json::<Value>()
                    .await
                    .map(|v| v["value"]["ready"] == json!(true))
                    .unwrap_or(false)
                {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver did not come up on port {port}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1100", "--user-data-dir=/tmp/pgmld-chromium-".to_string() + &port.to_string()
            ]}
        }}});
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {r}"))
            .to_string();
        Browser { driver, http, session: format!("{base}/session/{session}") }
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.session);
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body),
        };
        let r: Value = req.send().await.unwrap().json().await.unwrap();
        if let Some(e) = r["value"].get("error") {
            panic!("WebDriver {method} {path}: {e} {}", r["value"]["message"]);
        }
        r["value"].clone()
    }

    /// Opens `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url })).await;
    }

    /// The current URL.
    pub async fn url(&self) -> String {
        self.call("GET", "/url", Value::Null).await.as_str().unwrap_or_default().to_string()
    }

    /// Waits up to `within` for the page to be at `url`, and returns the URL it is at then:
    /// a click that submits a form can return before the navigation it started has ended.
    pub async fn wait_for_url(&self, url: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let now = self.url().await;
            if now == url || Instant::now() >= deadline {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn element(&self, css: &str) -> String {
        let v = self.call("POST", "/element", json!({"using": "css selector", "value": css})).await;
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {v}")).to_string()
    }

    /// Types `text` into the element `css` selects.
    pub async fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css).await;
        self.call("POST", &format!("/element/{id}/clear"), json!({})).await;
        self.call("POST", &format!("/element/{id}/value"), json!({ "text": text })).await;
    }

    /// Clicks the element `css` selects.
    pub async fn click(&self, css: &str) {
        let id = self.element(css).await;
        self.call("POST", &format!("/element/{id}/click"), json!({})).await;
    }

    /// Runs `js` (a function body; `return` gives the value) in the page.
    pub async fn script(&self, js: &str) -> Value {
        self.call("POST", "/execute/sync", json!({"script": js, "args": []})).await
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        let b64 = self.call("GET", "/screenshot", Value::Null).await;
        base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap()).unwrap()
    }

    /// Ends the browser session (chromedriver stops its Chromium); dropping `self` then
    /// ends chromedriver.
    pub async fn close(self) {
        let _ = self.http.delete(&self.session).send().await;
    }

    /// Kills chromedriver and every Chromium process it started (its process group). Runs
    /// once, from `drop`: the group's id is chromedriver's pid, which no other process can
    /// take before the `wait` below reaps it.
    fn kill_group(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    /// Also on a failed assertion: a panic unwinds through here.
    fn drop(&mut self) {
        self.kill_group();
    }
}
