//! Request intake and connection limits against the real binary: list
//! inputs over `--max-input-items` refused before anything is built (on
//! `/graphql` and the legacy routes), memory bounded under parallel hostile
//! imports, slow bodies answered 408 and closed after `--body-timeout`,
//! and new clients answered at `--max-connections` by shedding the idlest.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CEN_IMPORT: &str = "mutation($i: CenImportInput!) { cenImport(input: $i) { revision } }";
const CPOOL_IMPORT: &str = "mutation($i: CpoolImportInput!) { cpoolImport(input: $i) { revision } }";

fn vm_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn cen_vars(containers: usize) -> Value {
    let ids: Vec<String> = (0..containers).map(|i| format!("c{i}")).collect();
    json!({"i": {"cens": [{"id": "cen0", "containerIds": ids}]}})
}

#[tokio::test]
async fn lists_over_max_input_items_are_refused_naming_limit_and_count() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state.db"), &["--max-input-items", "100"]);
    // 1 CEN + 99 containers: 100 list items, at the limit.
    s.gql(CEN_IMPORT, cen_vars(99)).await;
    // 1 CEN + 120 containers: 121.
    let (status, body) = s.post(&json!({"query": CEN_IMPORT, "variables": cen_vars(120)})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.get("data").is_none(), "refused before execution: {body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST", "{body}");
    let m = body["errors"][0]["message"].as_str().unwrap();
    assert!(m.contains("121 list items") && m.contains("limit of 100") && m.contains("--max-input-items"), "{m}");
    // The legacy routes count the same way.
    let ids: Vec<String> = (0..120).map(|i| format!("c{i}")).collect();
    let legacy = json!({"cenList": [{"cenID": "cen1", "containerIDs": ids}]});
    let resp = s.http.post(s.url("/cen/import")).json(&legacy).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let b: Value = resp.json().await.unwrap();
    assert!(b["message"].as_str().unwrap().contains("121 list items"), "{b}");
    assert_eq!(s.gql("{ cenCount }", json!({})).await["cenCount"], 1, "nothing of the refused imports was made");
}

/// The pools of the hostile import: `n` valid ones and a last one
/// with an invalid id.
fn hostile_pools(n: usize) -> Vec<Value> {
    const IMAGE: &str = "registry.example.com/ubuntu:14.04";
    let mut pools: Vec<Value> =
        (0..n).map(|i| json!({"id": format!("pool{i:06}"), "type": IMAGE, "startWith": 1})).collect();
    pools.push(json!({"id": "-bad", "type": IMAGE, "startWith": 1}));
    pools
}

#[tokio::test]
async fn sixteen_parallel_hostile_imports_stay_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state.db"), &[]);
    let pid = s.child.id();
    let body = json!({"query": CPOOL_IMPORT, "variables": {"i": {"pools": hostile_pools(99_999)}}}).to_string();
    assert!(body.len() > 6_000_000 && body.len() < 8 * 1024 * 1024, "{}", body.len());
    let legacy_pools: Vec<Value> = (0..100_000)
        .map(|i| json!({"cpoolID": format!("pool{i:06}"), "type": "ubuntu:14.04", "start_with": 1, "cins": []}))
        .collect();
    let legacy = json!({"cpoolList": legacy_pools}).to_string();
    let base = vm_kib(pid, "VmRSS:");
    let mut tasks = Vec::new();
    for k in 0..16 {
        let (http, url, body) = if k % 4 == 3 {
            (s.http.clone(), s.url("/cpool"), legacy.clone())
        } else {
            (s.http.clone(), s.url("/graphql"), body.clone())
        };
        tasks.push(tokio::spawn(async move {
            let r = http.post(url).header("content-type", "application/json").body(body).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }));
    }
    for t in tasks {
        let (status, text) = t.await.unwrap();
        assert!(status == 200 || status == 400, "{status} {text}");
        assert!(text.contains("--max-input-items"), "{text}");
    }
    let peak = vm_kib(pid, "VmHWM:");
    // Each large body gives its memory back before its answer is sent.
    let after = vm_kib(pid, "VmRSS:");
    eprintln!("baseline {} MiB, peak {} MiB, after {} MiB", base / 1024, peak / 1024, after / 1024);
    assert!(peak <= 512 * 1024, "peak resident memory {} MiB over 512 MiB", peak / 1024);
    assert!(after <= base + 64 * 1024, "{} MiB resident after the answers, baseline {} MiB", after / 1024, base / 1024);
}

/// Sends a request's headers announcing a body of 100,000 bytes and only
/// a few of them; returns the stream.
async fn slow_body(addr: &str, path: &str) -> TcpStream {
    let mut t = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{{\"qu"
    );
    t.write_all(head.as_bytes()).await.unwrap();
    t
}

/// Reads until the server closes the connection (bounded); what it sent.
async fn read_to_close(t: &mut TcpStream, bound: Duration) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(bound, t.read_to_end(&mut out)).await.expect("the server closes the connection").ok();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_slow_body_gets_408_and_the_connection_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state.db"), &["--body-timeout", "1"]);
    for path in ["/graphql", "/cpool"] {
        let mut t = slow_body(&s.addr, path).await;
        let answer = read_to_close(&mut t, Duration::from_secs(30)).await;
        assert!(answer.starts_with("HTTP/1.1 408"), "{path}: {answer}");
        assert!(answer.contains("--body-timeout"), "{path}: {answer}");
    }
    // The server still answers.
    assert_eq!(s.http.get(s.url("/healthz")).send().await.unwrap().status().as_u16(), 200);
}

#[tokio::test]
async fn at_max_connections_new_clients_are_answered_and_idle_ones_shed() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state.db"), &["--max-connections", "50", "--body-timeout", "60"]);
    let mut slow = Vec::new();
    for _ in 0..5 {
        slow.push(slow_body(&s.addr, "/graphql").await);
    }
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..45 {
        let mut t = TcpStream::connect(&s.addr).await.unwrap();
        let tx = closed_tx.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            // Ends when the server closes it (0 bytes or a reset).
            let _ = t.read(&mut buf).await;
            let _ = tx.send(i);
            drop(t);
        });
    }
    // Several new clients in turn, each on a new connection.
    for _ in 0..5 {
        let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
        let r = tokio::time::timeout(Duration::from_secs(20), client.get(s.url("/healthz")).send())
            .await
            .expect("/healthz answers at --max-connections")
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let shed = tokio::time::timeout(Duration::from_secs(20), closed_rx.recv()).await.expect("an idle connection shed");
    assert!(shed.is_some());
    // The slow senders were not shed: each still waits for its body.
    for t in &slow {
        let mut buf = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_millis(10), t.peek(&mut buf)).await;
        assert!(r.is_err(), "a slow sender with a request in flight was closed: {r:?}");
    }
}
