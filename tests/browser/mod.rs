//! Headless Chromium for the page tests, driven over the DevTools
//! protocol: launch it, evaluate expressions in the page, wait for one to
//! hold (within a generous bound), take screenshots.
#![allow(dead_code)]

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// The browser, or `None` (after a loud message) where there is none; in
/// CI (`CI` set) a missing browser fails the test.
pub fn chromium(test: &str) -> Option<&'static str> {
    let found = ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("Chromium is missing: .ci/run installs it, and CI must run {test}");
        }
        eprintln!("\n*** SKIPPING {test}: no Chromium here; CI runs it ***\n");
    }
    found
}

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Headless Chromium and a DevTools connection to its page.
pub struct Browser {
    child: Child,
    ws: Ws,
    next: u64,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How every page test runs Chromium: headless, and quiet (no network of
/// its own, no first-run pages, no updates).
pub const HEADLESS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// The longest any wait in these tests may take.
pub const BOUND: Duration = Duration::from_secs(90);

impl Browser {
    pub async fn launch(binary: &str) -> Browser {
        Browser::launch_with(binary, &[]).await
    }

    /// [`Browser::launch`] with more Chromium flags.
    pub async fn launch_with(binary: &str, extra: &[&str]) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(binary)
            .args(HEADLESS)
            .args(extra)
            .args(["--remote-debugging-port=0", "--window-size=1280,800"])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        // Chromium says where DevTools listens on stderr; keep draining it.
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let browser_url = tokio::task::spawn_blocking(move || rx.recv_timeout(BOUND))
            .await
            .unwrap()
            .expect("chromium never said where DevTools listens");
        let port = browser_url.trim_start_matches("ws://").split(['/', ':']).nth(1).unwrap().to_string();
        let started = Instant::now();
        let page_url = loop {
            let list: Value = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
                .await
                .expect("DevTools /json/list")
                .json()
                .await
                .unwrap();
            if let Some(p) = list.as_array().unwrap().iter().find(|t| t["type"] == "page") {
                break p["webSocketDebuggerUrl"].as_str().unwrap().to_string();
            }
            assert!(started.elapsed() < BOUND, "no page target: {list}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let (ws, _) = tokio_tungstenite::connect_async(page_url.as_str()).await.expect("DevTools websocket");
        Browser { child, ws, next: 0, _profile: profile }
    }

    /// Sends one DevTools command and returns its result (events are
    /// skipped).
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::text(msg)).await.unwrap();
        let deadline = Instant::now() + BOUND;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = tokio::time::timeout(left, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no answer within {BOUND:?}"))
                .expect("DevTools closed")
                .unwrap();
            let Message::Text(t) = m else { continue };
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates an expression in the page (awaiting a promise) and
    /// returns its value.
    pub async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call("Runtime.evaluate", json!({"expression": expr, "returnByValue": true, "awaitPromise": true}))
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {}", r["exceptionDetails"]);
        r["result"]["value"].clone()
    }

    /// Waits until an expression is true in the page, within [`BOUND`]; a
    /// failure says where the page was and what it showed.
    pub async fn wait_until(&mut self, expr: &str) {
        let started = Instant::now();
        while self.eval(&format!("!!({expr})")).await != true {
            if started.elapsed() >= BOUND {
                let seen = self.eval(PAGE_STATE).await;
                panic!("not true within {BOUND:?}: {expr}\nthe page then: {seen}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn screenshot(&mut self, name: &str) -> std::path::PathBuf {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"})).await;
        let png = base64::engine::general_purpose::STANDARD.decode(r["data"].as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}

/// Where the page is and what it shows (said when a wait fails).
const PAGE_STATE: &str = "({href: location.href, state: document.readyState, \
    text: document.body ? document.body.innerText.slice(0, 500) : null})";
