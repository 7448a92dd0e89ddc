//! The live topology page in a real browser: headless Chromium, driven
//! over the DevTools protocol, opens `/topology` on the real server (with a
//! token, as a user would), and the test checks what the page has drawn:
//! the fixture's nodes and edges, a join made through the API appearing
//! without a reload, the page resuming after the server is killed and
//! started again. A screenshot is saved as an artifact
//! (`target/tmp/topology-page.png`). A second run with 1,000 containers
//! checks that an update is drawn within a second (a bound, not a
//! benchmark).
//!
//! Needs Chromium (`.ci/run` installs Debian's). In CI (`CI` set) a missing
//! browser fails the test; elsewhere it skips with a loud message.

mod common;

use base64::Engine as _;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

fn chromium(test: &str) -> Option<&'static str> {
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

/// `leviathan serve` on a given address (to restart on the same one).
fn start_at(state: &Path, listen: &str, token: &str) -> Server {
    Server::start_at(state, listen, &["--token", token])
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Headless Chromium and a DevTools connection to its page.
struct Browser {
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

/// The longest any wait in these tests may take.
const BOUND: Duration = Duration::from_secs(90);

impl Browser {
    async fn launch(binary: &str) -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                "--window-size=1280,800",
            ])
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
    async fn call(&mut self, method: &str, params: Value) -> Value {
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
    async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call("Runtime.evaluate", json!({"expression": expr, "returnByValue": true, "awaitPromise": true}))
            .await;
        assert!(r.get("exceptionDetails").is_none(), "{expr}: {}", r["exceptionDetails"]);
        r["result"]["value"].clone()
    }

    /// Waits until an expression is true in the page, within [`BOUND`].
    async fn wait_until(&mut self, expr: &str) {
        let started = Instant::now();
        while self.eval(&format!("!!({expr})")).await != true {
            assert!(started.elapsed() < BOUND, "not true within {BOUND:?}: {expr}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn screenshot(&mut self, name: &str) -> std::path::PathBuf {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"})).await;
        let png = base64::engine::general_purpose::STANDARD.decode(r["data"].as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, png).unwrap();
        path
    }
}

const LIVE: &str = "window.leviathanTopology && leviathanTopology.ready && document.body.dataset.state === 'live'";

async fn sorted(b: &mut Browser, expr: &str) -> Vec<String> {
    let v = b.eval(&format!("{expr}.map(e => e.id()).sort()")).await;
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn topology_page_draws_the_fixture_follows_a_join_and_resumes_after_a_restart() {
    let Some(binary) = chromium("topology_page_draws_the_fixture_follows_a_join_and_resumes_after_a_restart") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.db");
    let listen = format!("127.0.0.1:{}", free_port());
    let s = start_at(&state, &listen, "t0p0");
    s.gql(CEN_IMPORT, cen_file_vars(&fixture("cen.json"))).await;
    s.gql(CIN_IMPORT, cin_file_vars(&fixture("cin.json"))).await;

    let mut b = Browser::launch(binary).await;
    b.call("Page.navigate", json!({"url": s.url("/topology?token=t0p0")})).await;
    b.wait_until(LIVE).await;

    // The fixture: one host, 16 containers, 5 CENs, 17 memberships, 2 CINs.
    let d = s.gql("{ containers { id } cens { id containers { id } } }", json!({})).await;
    let mut want: Vec<String> = vec!["h:host1".into()];
    want.extend(d["containers"].as_array().unwrap().iter().map(|c| format!("c:host1/{}", c["id"].as_str().unwrap())));
    let mut edges = Vec::new();
    for c in d["cens"].as_array().unwrap() {
        let cen = c["id"].as_str().unwrap();
        want.push(format!("n:{cen}"));
        for m in c["containers"].as_array().unwrap() {
            edges.push(format!("m:{cen}|host1/{}", m["id"].as_str().unwrap()));
        }
    }
    want.sort();
    edges.sort();
    assert_eq!(sorted(&mut b, "leviathanTopology.cy.nodes()").await, want);
    assert_eq!(sorted(&mut b, "leviathanTopology.cy.edges()").await, edges);
    assert_eq!(edges.len(), 17);
    assert_eq!(b.eval("leviathanTopology.cinIds()").await, json!(["cin1", "cin2"]));
    // CIN addresses are on the membership edges.
    let addr = s.gql("{ container(id: \"c1\") { interfaces { address } } }", json!({})).await;
    let label = b.eval("leviathanTopology.cy.getElementById('m:cen1|host1/c1').data('label')").await;
    assert_eq!(label, addr["container"]["interfaces"][0]["address"]);
    // Details on click.
    b.eval("leviathanTopology.cy.getElementById('n:cen1').emit('tap'); true").await;
    b.wait_until("document.getElementById('details').textContent.includes('\"wiringType\": \"BRIDGE\"')").await;
    b.eval("window.noReload = 42").await;

    // A join through the API appears without a reload.
    s.gql("mutation { containerJoinCen(input: {containerId: \"c99\", cenId: \"cen1\"}) { revision } }", json!({}))
        .await;
    b.eval("leviathanTopology.whenDrawn('m:cen1|host1/c99')").await;
    assert_eq!(b.eval("leviathanTopology.cy.getElementById('c:host1/c99').data('parent')").await, "h:host1");
    let addr = s.gql("{ container(id: \"c99\") { interfaces { address } } }", json!({})).await;
    b.wait_until(&format!(
        "leviathanTopology.cy.getElementById('m:cen1|host1/c99').data('label') === {}",
        addr["container"]["interfaces"][0]["address"]
    ))
    .await;
    assert_eq!(b.eval("window.noReload").await, 42);

    // The server dies; the page says so, and resumes when it is back.
    s.kill9();
    b.wait_until("document.body.dataset.state === 'reconnecting'").await;
    let s = start_at(&state, &listen, "t0p0");
    s.gql("mutation { containerJoinCen(input: {containerId: \"c100\", cenId: \"cen2\"}) { revision } }", json!({}))
        .await;
    b.eval("leviathanTopology.whenDrawn('m:cen2|host1/c100')").await;
    b.wait_until(LIVE).await;
    assert_eq!(b.eval("leviathanTopology.revision").await, json!(s.revision().await));
    assert_eq!(b.eval("window.noReload").await, 42);
    assert_eq!(b.eval("leviathanTopology.cy.edges().length").await, 19);
    // A leave takes the edge away.
    s.gql("mutation { containerLeaveCen(input: {containerId: \"c100\", cenId: \"cen2\"}) { revision } }", json!({}))
        .await;
    b.wait_until("leviathanTopology.cy.getElementById('m:cen2|host1/c100').empty()").await;
    assert_eq!(b.eval("leviathanTopology.cy.edges().length").await, 18);

    let shot = b.screenshot("topology-page.png").await;
    eprintln!("screenshot: {}", shot.display());

    // The page wants the token; its scripts are public library code.
    assert_eq!(reqwest::get(s.url("/topology")).await.unwrap().status().as_u16(), 401);
    let js = reqwest::get(s.url("/topology/assets/cytoscape.min.js")).await.unwrap();
    assert_eq!(js.status().as_u16(), 200);
    assert_eq!(js.headers()["content-type"], "text/javascript");
    assert_eq!(reqwest::get(s.url("/topology/assets/nope.js")).await.unwrap().status().as_u16(), 404);
}

#[tokio::test]
async fn topology_page_with_1000_containers_draws_an_update_within_a_second() {
    let Some(binary) = chromium("topology_page_with_1000_containers_draws_an_update_within_a_second") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let s = start_at(&dir.path().join("s.db"), "127.0.0.1:0", "b1g");
    let cens: Vec<Value> = (0..20)
        .map(|c| json!({"id": format!("cen{c}"), "containerIds": (0..50).map(|i| format!("c{}", c * 50 + i)).collect::<Vec<_>>()}))
        .collect();
    s.gql(CEN_IMPORT, json!({"input": {"cens": cens}})).await;
    s.gql(CIN_IMPORT, json!({"input": {"cins": [{"id": "cin0", "cenIds": ["cen0", "cen1", "cen2"]}]}})).await;

    let mut b = Browser::launch(binary).await;
    b.call("Page.navigate", json!({"url": s.url("/topology?token=b1g")})).await;
    b.wait_until(LIVE).await;
    assert_eq!(b.eval("leviathanTopology.cy.nodes(\"[kind='container']\").length").await, 1000);
    assert_eq!(b.eval("leviathanTopology.cy.edges().length").await, 1000);

    for (n, cen) in ["cen1", "cen7", "cen19"].into_iter().enumerate() {
        let edge = format!("m:{cen}|host1/new{n}");
        b.eval(&format!("window.drawn = leviathanTopology.whenDrawn('{edge}'); true")).await;
        let started = Instant::now();
        let q = format!(
            "mutation {{ containerJoinCen(input: {{containerId: \"new{n}\", cenId: \"{cen}\"}}) {{ revision }} }}"
        );
        s.gql(&q, json!({})).await;
        let committed = started.elapsed();
        let in_page = b.eval("window.drawn.then(t => t - leviathanTopology.received)").await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(1), "join {n} took {took:?} to be drawn with 1,000 containers");
        eprintln!("join {n}: committed after {committed:?}, drawn after {took:?} ({in_page} ms in the page)");
    }
    b.screenshot("topology-page-1000.png").await;
}

#[tokio::test]
async fn home_page_points_at_the_pages_the_schema_and_the_legacy_routes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("s.db"), &["--token", "h0me"]);
    assert_eq!(reqwest::get(s.url("/")).await.unwrap().status().as_u16(), 401);
    let resp = reqwest::get(s.url("/?token=h0me")).await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let page = resp.text().await.unwrap();
    for link in
        ["href=\"/graphiql\"", "href=\"/topology\"", "href=\"/schema.graphql\"", "/cen/import", "/leviathan/monitor"]
    {
        assert!(page.contains(link), "no {link} in the home page");
    }
}
