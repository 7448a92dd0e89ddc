//! GraphQL at the speed of the wire: the real server (`--no-realize`, the
//! example CEN file imported) against a raw axum handler started in this
//! process on another port, which parses the same JSON body and answers
//! the same bytes from a map. Same run, same load generator (a hyper client,
//! 64 kept-alive connections over 4 tasks), every answer's body checked
//! byte for byte.
//!
//! Prints req/s, p50 and p99 of: `cen(id)`, a 3-level nested query, a
//! persisted query by its hash alone, the legacy `GET /cen/{id}`, each
//! against the raw handler, and the ratios the targets name, for two
//! servers started side by side: one with the default configuration (the
//! answer cache on) and one with `--answer-cache-bytes 0` (every request
//! executed: the execution path); then a list
//! query issued right after each of 1,000 changes at 1,000 and at 100,000
//! containers (p50/p99, ratio); then the size of a 10,000-container page
//! with gzip, br and zstd against none.
//!
//! The three servers of a row take turns ([`ROUNDS`] of them), so a change
//! of the machine's load falls on all three alike. Each is a process of its
//! own (the raw handler is this bench started again with `--raw-server`),
//! so that what each spends per request is measured beside its req/s: CPU
//! time, and instructions where `perf` can count them (`cost.rs`).
//! Instructions do not move with the machine's other load; CPU time moves
//! less than req/s, but still some (a contended core runs each instruction
//! slower, and a server under less load answers fewer requests a wake-up):
//! measured here, run to run, within about ±15%.
//!
//! `cargo bench --bench http`; knobs: HTTP_BENCH_SECS (per measurement,
//! default 5), HTTP_BENCH_SIZES (default 1000,100000). Under
//! `cargo test --all-targets` it only says how to run it.

mod common;
#[path = "http/cost.rs"]
mod cost;

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::Path;
use std::process::Child;
use std::sync::Arc;
use std::time::{Duration, Instant};

const CEN: &str = "{ cen(id: \"cen1\") { id wiringType containers { id } } }";
const NESTED: &str = "{ cens { id containers { id cens { id size } } } }";
const CONNECTIONS: usize = 64;
const TASKS: usize = 4;

struct Server(Child, String);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(state: &std::path::Path) -> Server {
    start_with(state, &[])
}

fn start_with(state: &std::path::Path, extra: &[&str]) -> Server {
    let head = ["--no-realize", "--max-input-items", "1000000"].map(OsStr::new);
    let args = head.into_iter().chain(extra.iter().map(OsStr::new)).chain([OsStr::new("--state"), state.as_os_str()]);
    let (child, addr) = common::serve(args, true);
    Server(child, addr)
}

/// One request of a kind, as bytes to send again and again.
#[derive(Clone)]
struct Req {
    get: Option<String>,
    body: Bytes,
    encoding: Option<&'static str>,
}

impl Req {
    fn post(body: Value) -> Req {
        Req { get: None, body: Bytes::from(body.to_string()), encoding: None }
    }
    fn get(path: &str) -> Req {
        Req { get: Some(path.to_string()), body: Bytes::new(), encoding: None }
    }
    fn build(&self, addr: &str) -> hyper::Request<Full<Bytes>> {
        let b = hyper::Request::builder().header("host", addr);
        let b = match self.encoding {
            Some(e) => b.header("accept-encoding", e),
            None => b,
        };
        match &self.get {
            Some(p) => b.method("GET").uri(p.as_str()).body(Full::new(Bytes::new())),
            None => b
                .method("POST")
                .uri("/graphql")
                .header("content-type", "application/json")
                .body(Full::new(self.body.clone())),
        }
        .expect("a request")
    }
}

async fn connect(addr: &str) -> SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let io = hyper_util::rt::TokioIo::new(stream);
    let (send, conn) = hyper::client::conn::http1::handshake(io).await.expect("handshake");
    tokio::spawn(conn);
    send
}

/// Sends a request, answers (status, content-encoding, body).
async fn send(c: &mut SendRequest<Full<Bytes>>, addr: &str, r: &Req) -> (u16, Option<String>, Bytes) {
    c.ready().await.expect("connection ready");
    let resp = c.send_request(r.build(addr)).await.expect("answer");
    let status = resp.status().as_u16();
    let enc = resp.headers().get("content-encoding").and_then(|v| v.to_str().ok()).map(str::to_string);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, enc, body)
}

struct Figures {
    rps: f64,
    p50: Duration,
    p99: Duration,
    /// Requests answered, and what the server spent on them.
    n: usize,
    spent: cost::Spent,
}

/// `CONNECTIONS` connections over `TASKS` tasks send `req` for `secs`
/// seconds; every answer must be `expected`.
async fn load(addr: &str, req: &Req, expected: &Bytes, secs: u64) -> Figures {
    let (lat, elapsed) = load_for(addr, req, expected, Duration::from_secs(secs)).await;
    figures(lat, elapsed)
}

/// Req/s, p50 and p99 of latencies measured over `elapsed` seconds.
fn figures(mut lat: Vec<Duration>, elapsed: f64) -> Figures {
    lat.sort_unstable();
    let at = |q: usize| lat.get(lat.len() * q / 100).copied().unwrap_or_default();
    Figures { rps: lat.len() as f64 / elapsed, p50: at(50), p99: at(99), n: lat.len(), spent: cost::Spent::default() }
}

/// Rounds each measurement is cut in: the targets take turns, so a change
/// of the machine's load during the run falls on all of them alike.
const ROUNDS: u32 = 5;

/// Each target (server, expected answer) loaded with `req` for `secs`
/// seconds in all, in [`ROUNDS`] turns; what each server spends is counted
/// over all the turns (a server idles while the others take theirs).
async fn interleaved(targets: &[(&Server, &Bytes)], req: &Req, secs: u64, scratch: &Path) -> Vec<Figures> {
    let slice = Duration::from_secs(secs) / ROUNDS;
    let meters: Vec<_> = targets.iter().map(|(s, _)| cost::Meter::start(s.0.id(), scratch)).collect();
    let mut all: Vec<(Vec<Duration>, f64)> = targets.iter().map(|_| (Vec::new(), 0.0)).collect();
    for _ in 0..ROUNDS {
        for (i, (server, expected)) in targets.iter().enumerate() {
            let (lat, elapsed) = load_for(&server.1, req, expected, slice).await;
            all[i].0.extend(lat);
            all[i].1 += elapsed;
        }
    }
    let spent = meters.into_iter().map(cost::Meter::stop);
    all.into_iter().zip(spent).map(|((lat, elapsed), spent)| Figures { spent, ..figures(lat, elapsed) }).collect()
}

/// The latencies of [`load`] over `span`, and the seconds it took.
async fn load_for(addr: &str, req: &Req, expected: &Bytes, span: Duration) -> (Vec<Duration>, f64) {
    let deadline = Instant::now() + span;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let (addr, req, expected) = (addr.to_string(), req.clone(), expected.clone());
        tasks.push(tokio::spawn(async move {
            let conns = (0..CONNECTIONS / TASKS).map(|_| {
                let (addr, req, expected) = (addr.clone(), req.clone(), expected.clone());
                async move {
                    let mut c = connect(&addr).await;
                    let mut lat = Vec::new();
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        let (status, _, body) = send(&mut c, &addr, &req).await;
                        lat.push(t.elapsed());
                        assert!(status == 200 && body == expected, "{status}: {body:?}, expected {expected:?}");
                    }
                    lat
                }
            });
            futures_util::future::join_all(conns).await.concat()
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("load task"));
    }
    (lat, start.elapsed().as_secs_f64())
}

/// The raw baseline, a process of its own: this bench started again with
/// `--raw-server`, given the answers (key to body, a JSON object) on its
/// standard input.
fn raw(answers: &HashMap<String, Bytes>) -> Server {
    use std::io::{BufRead, Write};
    use std::process::{Command, Stdio};
    let map: serde_json::Map<String, Value> = answers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(String::from_utf8(v.to_vec()).expect("a UTF-8 answer"))))
        .collect();
    let exe = std::env::current_exe().expect("the bench's path");
    let mut child = Command::new(exe)
        .arg("--raw-server")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the raw server");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(Value::Object(map).to_string().as_bytes()).expect("answers to the raw server");
    drop(stdin);
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("its address");
    let addr = line.trim().strip_prefix("listening on ").expect("listening on ADDR").to_string();
    Server(child, addr)
}

/// The raw server (`--raw-server`): parses the JSON body, answers the bytes
/// the map read from standard input holds for its query (or persisted
/// hash), or for a GET path.
fn raw_server() {
    use axum::response::IntoResponse;
    let map: HashMap<String, String> = serde_json::from_reader(std::io::stdin()).expect("the answers");
    let answers: Arc<HashMap<String, Bytes>> = Arc::new(map.into_iter().map(|(k, v)| (k, Bytes::from(v))).collect());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    println!("listening on {}", listener.local_addr().expect("address"));
    {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
        rt.block_on(async move {
            let post = {
                let answers = Arc::clone(&answers);
                move |body: Bytes| async move {
                    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                    let key = match v.get("query").and_then(Value::as_str) {
                        Some(q) => q.to_string(),
                        None => v["extensions"]["persistedQuery"]["sha256Hash"].as_str().unwrap_or("").to_string(),
                    };
                    let b = answers.get(&key).cloned().unwrap_or_default();
                    ([("content-type", "application/graphql-response+json; charset=utf-8")], b).into_response()
                }
            };
            let get = move |uri: axum::http::Uri| async move {
                let b = answers.get(uri.path()).cloned().unwrap_or_default();
                ([("content-type", "application/json")], b).into_response()
            };
            let app = axum::Router::new().route("/graphql", axum::routing::post(post)).fallback(get);
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            axum::serve(listener, app).await.expect("raw server");
        });
    }
}

fn hex_sha256(text: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn row(name: &str, f: &Figures, raw: &Figures) {
    println!(
        "{name:<34} {:>8.0} req/s  p50 {:>7.0} µs  p99 {:>7.0} µs | raw {:>8.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs | \
         ratio {:.2}  p99/raw {:.2}",
        f.rps,
        f.p50.as_secs_f64() * 1e6,
        f.p99.as_secs_f64() * 1e6,
        raw.rps,
        raw.p50.as_secs_f64() * 1e6,
        raw.p99.as_secs_f64() * 1e6,
        f.rps / raw.rps,
        f.p99.as_secs_f64() / raw.p99.as_secs_f64()
    );
    let ratio = match (f.spent.cpu_us(f.n), raw.spent.cpu_us(raw.n)) {
        (Some(a), Some(b)) => format!("{:.2}", a / b),
        _ => "n/a".to_string(),
    };
    println!(
        "{:<34} per request: {} | raw {} | CPU/raw {ratio}",
        "",
        f.spent.per_request(f.n),
        raw.spent.per_request(raw.n)
    );
}

/// The four request kinds, as (name, key of the raw handler's map, request).
fn kinds() -> Vec<(&'static str, String, Req)> {
    let hash = hex_sha256(CEN);
    let apq = json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}});
    vec![
        ("GraphQL cen(id)", CEN.to_string(), Req::post(json!({ "query": CEN }))),
        ("GraphQL 3-level nested", NESTED.to_string(), Req::post(json!({ "query": NESTED }))),
        ("APQ hash only (cen(id))", hash, Req::post(apq)),
        ("legacy GET /cen/cen1", "/cen/cen1".to_string(), Req::get("/cen/cen1")),
    ]
}

/// A server with the example CEN file imported and the persisted query
/// registered, started with `extra`; every kind's answer, by its key.
async fn prepared(dir: &std::path::Path, extra: &[&str]) -> (Server, HashMap<String, Bytes>) {
    let server = start_with(&dir.join("bench.db"), extra);
    let addr = server.1.clone();
    let mut c = connect(&addr).await;
    let fixture = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cen.json")).expect("fixture");
    let import = Req { get: None, body: Bytes::from(fixture), encoding: None };
    let mut r = import.build(&addr);
    *r.uri_mut() = "/cen/import".parse().expect("uri");
    c.ready().await.expect("ready");
    assert_eq!(c.send_request(r).await.expect("import").status(), 204);
    let mut register = json!({"query": CEN});
    register["extensions"] = json!({"persistedQuery": {"version": 1, "sha256Hash": hex_sha256(CEN)}});
    let (status, _, _) = send(&mut c, &addr, &Req::post(register)).await;
    assert_eq!(status, 200);
    let mut answers = HashMap::new();
    for (_, key, req) in kinds() {
        let (status, _, body) = send(&mut c, &addr, &req).await;
        assert!(status == 200 && !body.windows(8).any(|w| w == b"\"errors\""), "{key}: {body:?}");
        answers.insert(key, body);
    }
    (server, answers)
}

/// The four request kinds on both servers against the raw handler.
async fn throughput(secs: u64) {
    let (dir, off_dir) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let (server, answers) = prepared(dir.path(), &[]).await;
    let (off, off_answers) = prepared(off_dir.path(), &["--answer-cache-bytes", "0"]).await;
    for (key, body) in &answers {
        let json = |b: &Bytes| serde_json::from_slice::<Value>(b).expect("a JSON answer");
        assert_eq!(json(body), json(&off_answers[key]), "both servers answer the same for {key}");
    }
    let raw = raw(&answers);
    println!(
        "{CONNECTIONS} connections over {TASKS} tasks, {secs} s each in {ROUNDS} turns (cache on, cache off, raw); \
         every body checked"
    );
    let mut figures = Vec::new();
    for (name, key, req) in &kinds() {
        let (expected, off_expected) = (&answers[key], &off_answers[key]);
        load(&server.1, req, expected, 1).await;
        load(&off.1, req, off_expected, 1).await;
        let targets = [(&server, expected), (&off, off_expected), (&raw, expected)];
        let mut f = interleaved(&targets, req, secs, dir.path()).await.into_iter();
        let (Some(ours), Some(executed), Some(base)) = (f.next(), f.next(), f.next()) else { unreachable!() };
        row(name, &ours, &base);
        row("  answer cache off", &executed, &base);
        figures.push((ours, executed, base));
    }
    for (mode, pick) in [("answer cache on (default)", 0), ("answer cache off", 1)] {
        let f = |i: usize| if pick == 0 { &figures[i].0 } else { &figures[i].1 };
        let (cen, cen_raw, apq_f, apq_raw, legacy) = (f(0), &figures[0].2, f(2), &figures[2].2, f(3));
        println!(
            "targets, {mode}: cen(id)/raw {:.2} (>= 0.6), APQ/raw {:.2} (>= 0.65), cen(id) p99/raw p99 {:.2} (<= 2), \
             legacy/GraphQL {:.2} (>= 0.95)",
            cen.rps / cen_raw.rps,
            apq_f.rps / apq_raw.rps,
            cen.p99.as_secs_f64() / cen_raw.p99.as_secs_f64(),
            legacy.rps / cen.rps
        );
        let cpu = |f: &Figures| f.spent.cpu_us(f.n);
        let ratio =
            |a: Option<f64>, b: Option<f64>| a.zip(b).map_or("n/a".to_string(), |(a, b)| format!("{:.2}", a / b));
        // Rows run one after another, so the machine's load may differ
        // between the two of legacy/GraphQL; per request CPU moves less
        // with it (GraphQL's CPU over legacy's: >= 1 when legacy costs no
        // more).
        println!(
            "  CPU per request, {mode}: cen(id)/raw {}, APQ/raw {}, APQ/cen(id) {}, GraphQL/legacy {}",
            ratio(cpu(cen), cpu(cen_raw)),
            ratio(cpu(apq_f), cpu(apq_raw)),
            ratio(cpu(apq_f), cpu(cen)),
            ratio(cpu(cen), cpu(legacy))
        );
    }
}

async fn gql(c: &mut SendRequest<Full<Bytes>>, addr: &str, query: &str) -> Bytes {
    let (status, _, body) = send(c, addr, &Req::post(json!({ "query": query }))).await;
    assert!(status == 200 && !body.windows(8).any(|w| w == b"\"errors\""), "{query}: {body:?}");
    body
}

/// A server with `size` containers, in CENs of 1,000 (`b0`, `b1`, ...).
async fn populated(size: usize, dir: &std::path::Path) -> (Server, SendRequest<Full<Bytes>>) {
    let server = start(&dir.join("bench.db"));
    let mut c = connect(&server.1).await;
    for k in 0..size.div_ceil(1000) {
        let ids: Vec<String> = (0..1000.min(size - k * 1000)).map(|i| format!("k{k}x{i}")).collect();
        let body = json!({"cenList": [{"cenID": format!("b{k}"), "containerIDs": ids}]}).to_string();
        let mut r = Req::post(json!({})).build(&server.1);
        *r.uri_mut() = "/cen/import".parse().expect("uri");
        *r.body_mut() = Full::new(Bytes::from(body));
        c.ready().await.expect("ready");
        assert_eq!(c.send_request(r).await.expect("import").status(), 204);
    }
    (server, c)
}

/// A list query right after each of 1,000 changes (a container joins and
/// leaves a CEN in turn, so list bounds move): its p50 and p99.
async fn after_changes(size: usize) -> (Duration, Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, mut c) = populated(size, dir.path()).await;
    let addr = server.1.clone();
    let join = "mutation { containerJoinCen(input: {containerId: \"roamer\", cenId: \"b0\"}) { cen { size } } }";
    let leave = "mutation { containerLeaveCen(input: {containerId: \"roamer\", cenId: \"b0\"}) { cen { size } } }";
    let list = "{ hosts { id } cen(id: \"b0\") { id size containers { id } } }";
    let mut lat = Vec::with_capacity(1000);
    for i in 0..1000 {
        gql(&mut c, &addr, if i % 2 == 0 { join } else { leave }).await;
        let t = Instant::now();
        let body = gql(&mut c, &addr, list).await;
        lat.push(t.elapsed());
        let needle = format!("\"size\":{}", if i % 2 == 0 { 1001 } else { 1000 });
        assert!(body.windows(needle.len()).any(|w| w == needle.as_bytes()), "{needle} in {body:?}");
    }
    lat.sort_unstable();
    (lat[500], lat[990])
}

/// Bytes of a 10,000-container page with each coding, and with none.
async fn page_sizes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, mut c) = populated(10_000, dir.path()).await;
    let q = json!({"query": "{ containers(first: 10000) { id host { id } cens { id } } }"});
    let mut sizes = Vec::new();
    for enc in [None, Some("gzip"), Some("br"), Some("zstd")] {
        let req = Req { encoding: enc, ..Req::post(q.clone()) };
        let (status, got, body) = send(&mut c, &server.1, &req).await;
        assert_eq!((status, got.as_deref()), (200, enc), "the coding asked for");
        sizes.push(body.len());
    }
    println!(
        "10,000-container page: {} bytes; gzip {} ({:.1}× smaller, target >= 5), br {} ({:.1}×), zstd {} ({:.1}×)",
        sizes[0],
        sizes[1],
        sizes[0] as f64 / sizes[1] as f64,
        sizes[2],
        sizes[0] as f64 / sizes[2] as f64,
        sizes[3],
        sizes[0] as f64 / sizes[3] as f64
    );
}

fn main() {
    if std::env::args().any(|a| a == "--raw-server") {
        return raw_server();
    }
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("http bench: run with `cargo bench --bench http`");
        return;
    }
    let secs: u64 = std::env::var("HTTP_BENCH_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(5);
    let sizes: Vec<usize> = std::env::var("HTTP_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 100_000]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        throughput(secs).await;
        let mut first = None;
        for &size in &sizes {
            let (p50, p99) = after_changes(size).await;
            let base = *first.get_or_insert(p50);
            println!(
                "list query right after a change, {size:>7} containers: p50 {:>7.0} µs  p99 {:>7.0} µs  p50 ratio to \
                 the first size {:.2} (target <= 2)",
                p50.as_secs_f64() * 1e6,
                p99.as_secs_f64() * 1e6,
                p50.as_secs_f64() / base.as_secs_f64()
            );
        }
        page_sizes().await;
    });
}
