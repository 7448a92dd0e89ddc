//! Shared helpers of the end-to-end tests: start the real binary on a free
//! port with its own state file, talk to it over HTTP.
#![allow(dead_code)]

pub mod cli;
pub mod etcd;
pub mod hosts;
pub mod kernel;
pub mod workload;

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `leviathan serve`; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub token: Option<String>,
    pub http: reqwest::Client,
}

impl Server {
    /// Starts the server on `state` with extra arguments.
    pub fn start(state: &Path, extra: &[&str]) -> Server {
        Server::start_at(state, "127.0.0.1:0", extra)
    }

    /// Starts the server on `state` listening on `listen` (a fixed address
    /// lets a test start it again where clients expect it).
    pub fn start_at(state: &Path, listen: &str, extra: &[&str]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_leviathan"));
        cmd.args(["serve", "--listen", listen, "--state"]).arg(state).args(extra);
        // Tests that realize pass their own prefix; the others never touch
        // the kernel (and so never the default prefix of a real install).
        if !extra.contains(&"--prefix") {
            cmd.arg("--no-realize");
        }
        let token = extra.windows(2).find(|w| w[0] == "--token").map(|w| w[1].to_string());
        Server::spawn(cmd, token, Duration::from_secs(60))
    }

    /// Starts `cmd` (a `leviathan serve` on `127.0.0.1:0` or another
    /// address), its log discarded, and reads the address it listens on
    /// from its first line; clients time out after `timeout`.
    pub fn spawn(mut cmd: Command, token: Option<String>, timeout: Duration) -> Server {
        cmd.env_remove("LEVIATHAN_TOKEN").stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().expect("start leviathan");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Server { child, addr, token, http: reqwest::Client::builder().timeout(timeout).build().unwrap() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs a GraphQL request (with the token if the server has one) and
    /// returns the HTTP status and JSON body.
    pub async fn post(&self, body: &Value) -> (u16, Value) {
        let mut req = self.http.post(self.url("/graphql")).json(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("POST /graphql");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("JSON body"))
    }

    /// Runs a GraphQL operation and returns `data`, failing on errors.
    pub async fn gql(&self, query: &str, variables: Value) -> Value {
        let (status, body) = self.post(&json!({"query": query, "variables": variables})).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("errors").is_none(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// Runs a GraphQL operation expected to fail; returns its first error code.
    pub async fn gql_err(&self, query: &str, variables: Value) -> (String, String) {
        let (status, body) = self.post(&json!({"query": query, "variables": variables})).await;
        assert_eq!(status, 200, "{body}");
        let e = &body["errors"][0];
        assert!(!e.is_null(), "expected an error: {body}");
        (e["extensions"]["code"].as_str().unwrap_or("").to_string(), e["message"].as_str().unwrap_or("").to_string())
    }

    pub async fn revision(&self) -> i64 {
        self.gql("{ revision }", json!({})).await["revision"].as_i64().unwrap()
    }

    /// Stops the server with SIGKILL (no chance to flush anything).
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the server with SIGTERM and waits for it.
    pub fn stop(mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fixture file of the original documentation, byte for byte.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// The `cenImport` variables for a legacy CEN file.
pub fn cen_file_vars(path: &Path) -> Value {
    let doc: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    cen_doc_vars(&doc)
}

/// The `cenImport` variables for a legacy CEN document (`{"cenList": ...}`).
pub fn cen_doc_vars(doc: &Value) -> Value {
    let cens: Vec<Value> = doc["cenList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| json!({"id": c["cenID"], "containerIds": c["containerIDs"]}))
        .collect();
    json!({"input": {"cens": cens}})
}

/// The `cinImport` variables for a legacy CIN map.
pub fn cin_file_vars(path: &Path) -> Value {
    let doc: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let cins: Vec<Value> =
        doc.as_object().unwrap().iter().map(|(id, cens)| json!({"id": id, "cenIds": cens})).collect();
    json!({"input": {"cins": cins}})
}

pub const CEN_IMPORT: &str =
    "mutation($input: CenImportInput!) { cenImport(input: $input) { revision cens { id wiringType } } }";
pub const CIN_IMPORT: &str =
    "mutation($input: CinImportInput!) { cinImport(input: $input) { revision cins { id subnet } } }";

/// `tests/node`, with its npm packages installed (`npm ci` when one of
/// `needed` is missing).
pub fn node_modules(needed: &[&str]) -> PathBuf {
    let node_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    if needed.iter().any(|p| !node_dir.join("node_modules").join(p).exists()) {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&node_dir)
            .status()
            .expect("npm is needed for this test (Node 20+): install Node.js and npm");
        assert!(status.success(), "npm ci in tests/node failed");
    }
    node_dir
}

/// A loopback port free now (the OS gives it; it stays free for a test's
/// restart on the same address).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Generous bound of every wait: only there to catch a hang.
pub const WAIT: Duration = Duration::from_secs(60);

/// Waits (bounded by [`WAIT`]) until `check` holds, polling.
pub async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out after {WAIT:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `changes(since: 0)` up to revision `upto`, over the websocket
/// subscription at `ws_url` (with a bearer token when given): each change
/// as (revision, [mutation, items]).
pub async fn changes_since0(ws_url: &str, token: Option<&str>, upto: i64) -> Vec<(i64, Value)> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
    let mut req = ws_url.into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("ws connect");
    let init = match token {
        Some(t) => json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {t}")}}),
        None => json!({"type": "connection_init"}),
    };
    ws.send(Message::Text(init.to_string().into())).await.unwrap();
    let sub = json!({"type": "subscribe", "id": "1", "payload": {
        "query": "subscription { changes(since: 0) { revision mutation items { kind id op } } }"}});
    ws.send(Message::Text(sub.to_string().into())).await.unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    while out.last().map(|(r, _)| *r) != Some(upto) {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, ws.next()).await.expect("changes stalled").expect("ws ended").unwrap();
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(&t).unwrap();
        match v["type"].as_str() {
            Some("next") => {
                let c = &v["payload"]["data"]["changes"];
                assert!(!c.is_null(), "{v}");
                out.push((c["revision"].as_i64().unwrap(), json!([c["mutation"], c["items"]])));
            }
            Some("connection_ack") | Some("ping") | Some("pong") => {}
            _ => panic!("unexpected message from {ws_url}: {v}"),
        }
    }
    out
}
