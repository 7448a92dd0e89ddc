//! `leviathan serve --etcd` on stock etcd (its default limits: 128
//! operations and 1.5 MiB per request, never raised here): a large import
//! commits and every server converges; nothing acknowledged is lost when a
//! server is killed mid-import; with etcd stalled (SIGSTOP) every queued
//! write is answered in bounded time and truly; writers on two servers never
//! fail for losing the commit race; a server goes on through compaction.
//! Each test starts its own etcd and fails under `CI` when it is missing.

mod common;

use common::{until, Server, WAIT};
use leviathan::store::testing::{etcd_available, EtcdProcess};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

fn start(endpoints: &str, host: &str, extra: &[&str]) -> Server {
    common::etcd::etcd_server(endpoints, host, extra)
}

const CREATE: &str = "mutation($id: ID!) { cenCreate(input: {id: $id}) { cen { id } revision } }";
const CEN_IMPORT: &str = "mutation($input: CenImportInput!) { cenImport(input: $input) { revision } }";

/// `cenImport` variables: CENs `<tag>0..n` of `size` containers on `host`.
fn import_vars(tag: &str, n: usize, size: usize, host: &str) -> Value {
    let cens: Vec<Value> = (0..n)
        .map(|g| {
            let members: Vec<String> = (0..size).map(|i| format!("{tag}{g}x{i}")).collect();
            json!({"id": format!("{tag}{g}"), "containerIds": members})
        })
        .collect();
    json!({"input": {"hostId": host, "cens": cens}})
}

/// The CENs of a server, with their sizes and VNIs.
async fn state(s: &Server) -> Value {
    s.gql("{ revision cens { id size vni } }", json!({})).await
}

async fn cen_ids(s: &Server) -> BTreeSet<String> {
    let d = s.gql("{ cens { id } }", json!({})).await;
    d["cens"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()).collect()
}

/// A gauge of `/metrics`.
async fn gauge(s: &Server, name: &str) -> u64 {
    let text = s.http.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_import_commits_on_stock_etcd_and_every_server_converges() {
    if !etcd_available("a_large_import_commits_on_stock_etcd_and_every_server_converges") {
        return;
    }
    let etcd = EtcdProcess::start("stock-import");
    let a = start(&etcd.client_url, "ha", &[]);
    let b = start(&etcd.client_url, "hb", &[]);
    // 1,000 CENs of 10 containers in one mutation: one change of several MiB.
    let t = Instant::now();
    let d = a.gql(CEN_IMPORT, import_vars("c", 1_000, 10, "ha")).await;
    let r = d["cenImport"]["revision"].as_i64().unwrap();
    println!("cenImport of 1,000 CENs of 10 containers through one server: {:.2} s", t.elapsed().as_secs_f64());
    until("b to reach the import's revision", || async { b.revision().await == r }).await;
    let sa = state(&a).await;
    assert_eq!(sa["cens"].as_array().map(Vec::len), Some(1_000));
    assert_eq!(sa, state(&b).await, "the same revision and state on both servers");
    // Every request stayed within etcd's defaults.
    let (bytes, ops) =
        (gauge(&a, "leviathan_etcd_request_max_bytes").await, gauge(&a, "leviathan_etcd_request_max_ops").await);
    println!("largest etcd request: {bytes} bytes, {ops} operations");
    assert!(bytes > 0 && bytes <= 1536 * 1024 && ops <= 128, "{bytes} bytes, {ops} operations");
    // A server started afterwards loads the same state, and writes go on.
    let c = start(&etcd.client_url, "hc", &[]);
    assert_eq!(state(&c).await, sa);
    let d = c.gql(CREATE, json!({"id": "after"})).await;
    assert_eq!(d["cenCreate"]["revision"].as_i64(), Some(r + 1));
    until("a to follow c", || async { a.revision().await == r + 1 }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_when_a_server_is_killed_mid_import() {
    if !etcd_available("nothing_acknowledged_is_lost_when_a_server_is_killed_mid_import") {
        return;
    }
    let etcd = EtcdProcess::start("stock-kill");
    let a = start(&etcd.client_url, "ha", &[]);
    // Imports of 100 CENs (each a change of about a MiB) from 4 writers.
    // Acknowledgements counted as the writers receive them: the kill waits
    // for six of them, not for a revision (a commit's answer may still be
    // on its way when the revision shows it).
    let acks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..4 {
        let (http, url, acks) = (a.http.clone(), a.url("/graphql"), acks.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in 0.. {
                let tag = format!("w{w}n{n}c");
                let body = json!({"query": CEN_IMPORT, "variables": import_vars(&tag, 100, 10, "ha")});
                let Ok(resp) = http.post(&url).json(&body).send().await else { break };
                let Ok(v) = resp.json::<Value>().await else { break };
                if v["data"]["cenImport"]["revision"].is_i64() {
                    acked.push(tag);
                    acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
            acked
        }));
    }
    until("a few imports acknowledged", || async { acks.load(std::sync::atomic::Ordering::SeqCst) >= 6 }).await;
    a.kill9();
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    assert!(acked.len() >= 6, "{acked:?}");
    let b = start(&etcd.client_url, "hb", &[]);
    let have = cen_ids(&b).await;
    for tag in &acked {
        for g in [0, 99] {
            assert!(have.contains(&format!("{tag}{g}")), "acknowledged import {tag} lost");
        }
    }
    println!("{} imports acknowledged before the kill, all present after it", acked.len());
    // The server goes on from there.
    b.gql(CREATE, json!({"id": "after"})).await;
}

/// One answer of a write during a stall: (id, code or "", seconds).
type Answer = (String, String, f64);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_stalled_every_queued_write_is_answered_in_bounded_time_and_truly() {
    if !etcd_available("with_etcd_stalled_every_queued_write_is_answered_in_bounded_time_and_truly") {
        return;
    }
    let etcd = EtcdProcess::start("stock-stall");
    let a = start(&etcd.client_url, "ha", &[]);
    a.gql(CREATE, json!({"id": "before"})).await;
    etcd.signal("STOP");
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (http, url) = (a.http.clone(), a.url("/graphql"));
        tasks.push(tokio::spawn(async move {
            let id = format!("stalled{w}");
            let t = Instant::now();
            let body = json!({"query": CREATE, "variables": {"id": id}});
            let v: Value = http.post(&url).json(&body).send().await.unwrap().json().await.unwrap();
            let code = v["errors"][0]["extensions"]["code"].as_str().unwrap_or("").to_string();
            println!("{id}: {code} after {:.3} s: {}", t.elapsed().as_secs_f64(), v["errors"][0]["message"]);
            (id, code, t.elapsed().as_secs_f64())
        }));
    }
    let mut answers: Vec<Answer> = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let t = Instant::now();
    let health = a.http.get(a.url("/healthz")).send().await.unwrap();
    let health_s = t.elapsed().as_secs_f64();
    println!("answers with etcd stopped (--etcd-timeout 2): {answers:?}; /healthz {health_s:.3} s");
    assert_eq!(health.status().as_u16(), 503);
    // etcd stays stopped until every writer has its answer, so that they
    // all answered is what shows the wait bounded. The bounds below are
    // hang checks only, generous on a busy machine (the figures are printed
    // above): writers timed out one after another would take 8 x 2 s.
    assert!(health_s < 10.0, "/healthz took {health_s} s");
    for (id, code, secs) in &answers {
        assert!(*secs < 12.0, "{id} answered after {secs} s");
        assert!(["UNAVAILABLE", "UNKNOWN_OUTCOME"].contains(&code.as_str()), "{id}: {code}");
    }
    etcd.signal("CONT");
    // Every answer was true: none answered as failed is committed.
    let deadline = Instant::now() + WAIT;
    let r = loop {
        let (_, body) = a.post(&json!({"query": CREATE, "variables": {"id": "after"}})).await;
        if let Some(r) = body["data"]["cenCreate"]["revision"].as_i64() {
            break r;
        }
        assert!(Instant::now() < deadline, "a did not take changes again: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let b = start(&etcd.client_url, "hb", &[]);
    until("b at a's revision", || async { b.revision().await >= r }).await;
    let have = cen_ids(&b).await;
    for (id, code, _) in &answers {
        if code == "UNAVAILABLE" {
            assert!(!have.contains(id), "{id} was answered UNAVAILABLE but committed");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_on_two_servers_never_fail_for_losing_the_race() {
    if !etcd_available("writers_on_two_servers_never_fail_for_losing_the_race") {
        return;
    }
    let etcd = EtcdProcess::start("stock-fair");
    let a = start(&etcd.client_url, "ha", &[]);
    let b = start(&etcd.client_url, "hb", &[]);
    // 32 writers, half on each server, small creates and imports mixed.
    let mut tasks = Vec::new();
    for w in 0..32 {
        let s = if w % 2 == 0 { &a } else { &b };
        let (http, url) = (s.http.clone(), s.url("/graphql"));
        tasks.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for n in 0..4 {
                let body = if w % 4 == 1 {
                    json!({"query": CEN_IMPORT, "variables": import_vars(&format!("w{w}n{n}c"), 50, 10, "ha")})
                } else {
                    json!({"query": CREATE, "variables": {"id": format!("w{w}n{n}")}})
                };
                let v: Value = http.post(&url).json(&body).send().await.unwrap().json().await.unwrap();
                if v.get("errors").is_some() {
                    failures.push(v);
                }
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for t in tasks {
        failures.extend(t.await.unwrap());
    }
    assert!(failures.is_empty(), "{} writes failed: {:?}", failures.len(), failures.first());
    let r = a.revision().await.max(b.revision().await);
    assert_eq!(r, 128, "every write got its own revision");
    until("both at the last revision", || async { a.revision().await == r && b.revision().await == r }).await;
    assert_eq!(state(&a).await, state(&b).await);
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A `changes(since:)` subscription on `ws_url`, its messages not read yet.
async fn subscribe_changes(ws_url: &str, since: i64) -> Ws {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
    let mut req = ws_url.into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("ws connect");
    ws.send(Message::Text(json!({"type": "connection_init"}).to_string().into())).await.unwrap();
    let sub = json!({"type": "subscribe", "id": "1", "payload": {
        "query": format!("subscription {{ changes(since: {since}) {{ revision }} }}")}});
    ws.send(Message::Text(sub.to_string().into())).await.unwrap();
    ws
}

/// The revisions a subscription delivers up to `upto`, or the code of the
/// error that ends it.
async fn read_changes(ws: &mut Ws, upto: i64) -> Result<Vec<i64>, String> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    while out.last() != Some(&upto) {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, ws.next()).await.expect("changes stalled").expect("ws ended").unwrap();
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(&t).unwrap();
        match v["type"].as_str() {
            Some("next") if v["payload"]["errors"].is_array() => {
                return Err(v["payload"]["errors"][0]["extensions"]["code"].as_str().unwrap_or("").to_string())
            }
            Some("next") => out.push(v["payload"]["data"]["changes"]["revision"].as_i64().unwrap()),
            Some("error") => return Err(v["payload"][0]["extensions"]["code"].as_str().unwrap_or("").to_string()),
            Some("connection_ack") | Some("ping") | Some("pong") => {}
            _ => panic!("unexpected message: {v}"),
        }
    }
    Ok(out)
}

/// The revisions `changes(since:)` delivers up to `upto`, or its error code.
async fn changes_since(ws_url: &str, since: i64, upto: i64) -> Result<Vec<i64>, String> {
    read_changes(&mut subscribe_changes(ws_url, since).await, upto).await
}

/// Compacts etcd at its current revision.
async fn compact(url: &str) -> i64 {
    let mut c = etcd_client::Client::connect([url], None).await.unwrap();
    let rev = c.get("/", None).await.unwrap().header().unwrap().revision();
    c.compact(rev, Some(etcd_client::CompactionOptions::new().with_physical())).await.unwrap();
    rev
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_go_on_through_compaction_while_down_and_while_up() {
    if !etcd_available("servers_go_on_through_compaction_while_down_and_while_up") {
        return;
    }
    let etcd = EtcdProcess::start("stock-compact");
    let url = etcd.client_url.clone();
    let a = start(&url, "ha", &["--keep-changes", "5"]);
    let b = start(&url, "hb", &["--keep-changes", "5"]);
    let ws = format!("ws://{}/graphql/ws", b.addr);
    for i in 0..3 {
        a.gql(CREATE, json!({"id": format!("c{i}")})).await;
    }
    until("b at 3", || async { b.revision().await == 3 }).await;
    // While b is up: writes on a, compaction, more writes: b follows. The
    // subscriber has its replay before the writes (with 5 changes kept, a
    // later `since: 0` would rightly be GONE).
    let mut live = subscribe_changes(&ws, 0).await;
    assert_eq!(read_changes(&mut live, 3).await, Ok(vec![1, 2, 3]));
    for i in 3..6 {
        a.gql(CREATE, json!({"id": format!("c{i}")})).await;
    }
    compact(&url).await;
    for i in 6..9 {
        a.gql(CREATE, json!({"id": format!("c{i}")})).await;
    }
    until("b at 9", || async { b.revision().await == 9 }).await;
    assert_eq!(read_changes(&mut live, 9).await, Ok((4..=9).collect::<Vec<_>>()), "gapless");
    assert_eq!(cen_ids(&a).await, cen_ids(&b).await);
    // While b is down: writes on a, compaction; b comes back with it all.
    b.kill9();
    for i in 9..20 {
        a.gql(CREATE, json!({"id": format!("c{i}")})).await;
    }
    compact(&url).await;
    let b = start(&url, "hb", &["--keep-changes", "5"]);
    assert_eq!(b.revision().await, 20);
    assert_eq!(cen_ids(&a).await, cen_ids(&b).await);
    a.gql(CREATE, json!({"id": "after"})).await;
    until("b to follow after compaction", || async { b.revision().await == 21 }).await;
    // A resume from before what the log keeps is GONE; from within, gapless.
    let ws = format!("ws://{}/graphql/ws", b.addr);
    assert_eq!(changes_since(&ws, 16, 21).await, Ok((17..=21).collect::<Vec<_>>()));
    assert_eq!(changes_since(&ws, 2, 21).await, Err("GONE".to_string()));
}
