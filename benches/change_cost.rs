//! What one change costs as the topology grows (needs root).
//!
//! With 100, 1,000 and 10,000 made containers (bridged CENs of 10, a CIN of
//! /24 over each), the real server (release build, realization on) takes
//! 50 `containerJoinCen` into made CENs and then 50 `containerLeaveCen`,
//! end to end through GraphQL over HTTP, one at a time: p50 and p99
//! latency, and the server's CPU time per join (from /proc). Then, on the
//! largest topology, `cenCreate` throughput with realization on against a
//! `--no-realize` server on a copy of the same state, in the same run.
//! Prints the figures and the ratios p50(10,000)/p50(100) and
//! throughput(realize)/throughput(no-realize).
//!
//! Run: `cargo bench --bench change_cost` (`CHANGE_COST_SIZES=100,1000` to
//! pick sizes). Under `cargo test --all-targets` it only checks that it can
//! run and exits.

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

struct Server {
    child: Child,
    url: String,
    http: reqwest::Client,
    prefix: Option<String>,
}

impl Server {
    fn start(state: &std::path::Path, args: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_leviathan"))
            .args(["serve", "--listen", "127.0.0.1:0", "--reconcile-interval", "0", "--state"])
            .arg(state)
            .args(args)
            .env("LEVIATHAN_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start leviathan");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("listening line");
        let addr = line.trim().strip_prefix("listening on ").expect("listening line").to_string();
        let prefix = args.windows(2).find(|w| w[0] == "--prefix").map(|w| w[1].to_string());
        Server {
            child,
            url: format!("http://{addr}/graphql"),
            http: reqwest::Client::builder().timeout(Duration::from_secs(600)).build().expect("client"),
            prefix,
        }
    }

    async fn gql(&self, query: &str, variables: Value) -> Value {
        let r: Value = self
            .http
            .post(&self.url)
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json");
        assert!(r.get("errors").is_none(), "{query}: {r}");
        r["data"].clone()
    }

    /// User + system CPU time of the server process.
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<u64> = after.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        // Fields 14 and 15 (utime, stime) are the 12th and 13th after ')'
        // (the state, field 3, is not a number and was filtered out).
        let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
        Duration::from_millis(ticks * 1000 / 100)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(p) = &self.prefix {
            let _ = Command::new(env!("CARGO_BIN_EXE_leviathan")).args(["cleanup", "--prefix", p]).output();
        }
    }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Figures {
    size: usize,
    join_p50: Duration,
    join_p99: Duration,
    leave_p50: Duration,
    leave_p99: Duration,
    cpu_per_join: Duration,
    make: Duration,
}

const JOIN: &str =
    "mutation($c: ID!, $cen: ID!) { containerJoinCen(input: {containerId: $c, cenId: $cen}) { revision } }";
const LEAVE: &str =
    "mutation($c: ID!, $cen: ID!) { containerLeaveCen(input: {containerId: $c, cenId: $cen}) { revision } }";
const CEN_CREATE: &str = "mutation($id: ID!) { cenCreate(input: {id: $id}) { revision } }";

async fn build(s: &Server, size: usize) -> Duration {
    let groups = size / 10;
    let cens: Vec<Value> = (0..groups)
        .map(|g| json!({"id": format!("e{g}"), "containerIds": (0..10).map(|i| format!("c{g}x{i}")).collect::<Vec<_>>()}))
        .collect();
    s.gql("mutation($c: [CenImportItem!]!) { cenImport(input: {cens: $c}) { revision } }", json!({"c": cens})).await;
    let cins: Vec<Value> = (0..groups).map(|g| json!({"id": format!("n{g}"), "cenIds": [format!("e{g}")]})).collect();
    s.gql("mutation($c: [CinImportItem!]!) { cinImport(input: {cins: $c}) { revision } }", json!({"c": cins})).await;
    let ids: Vec<String> = (0..groups).map(|g| format!("n{g}")).collect();
    let t = Instant::now();
    let d =
        s.gql("mutation($ids: [ID!]!) { cinMake(input: {ids: $ids}) { cins { status } } }", json!({"ids": ids})).await;
    let made = t.elapsed();
    let ready = d["cinMake"]["cins"].as_array().map(|a| a.iter().filter(|c| c["status"] == "READY").count());
    assert_eq!(ready, Some(groups), "every CIN READY");
    made
}

async fn measure(size: usize, pid: u32) -> (Figures, tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("cc{}{}-", pid % 1000, size.to_string().len());
    let s = Server::start(&dir.path().join("s.db"), &["--prefix", &prefix, "--cin-prefix-len", "24"]);
    let make = build(&s, size).await;
    let groups = size / 10;
    let step = (groups / 50).max(1);
    let targets: Vec<(String, String)> =
        (0..50).map(|j| (format!("j{j}"), format!("e{}", (j * step) % groups))).collect();
    let mut joins = Vec::new();
    let cpu0 = s.cpu();
    for (c, cen) in &targets {
        let t = Instant::now();
        s.gql(JOIN, json!({"c": c, "cen": cen})).await;
        joins.push(t.elapsed());
    }
    let cpu_per_join = (s.cpu().saturating_sub(cpu0)) / 50;
    let mut leaves = Vec::new();
    for (c, cen) in &targets {
        let t = Instant::now();
        s.gql(LEAVE, json!({"c": c, "cen": cen})).await;
        leaves.push(t.elapsed());
    }
    let f = Figures {
        size,
        join_p50: pct(&mut joins, 0.5),
        join_p99: pct(&mut joins, 0.99),
        leave_p50: pct(&mut leaves, 0.5),
        leave_p99: pct(&mut leaves, 0.99),
        cpu_per_join,
        make,
    };
    (f, dir, s)
}

async fn creates_per_sec(s: &Server, tag: &str, n: usize) -> f64 {
    let t = Instant::now();
    for i in 0..n {
        s.gql(CEN_CREATE, json!({"id": format!("{tag}{i}")})).await;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("change_cost bench: run with `cargo bench --bench change_cost` (as root)");
        return;
    }
    if !is_root() {
        eprintln!("change_cost bench: needs root (it creates up to 10,000 network namespaces); skipped");
        return;
    }
    let sizes: Vec<usize> = std::env::var("CHANGE_COST_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 1_000, 10_000]);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let pid = std::process::id();
    rt.block_on(async {
        let mut all = Vec::new();
        let mut last = None;
        for &size in &sizes {
            let (f, dir, s) = measure(size, pid).await;
            println!(
                "{:>6} made containers: make {:>8.0} ms | join p50 {:>6.2} ms p99 {:>6.2} ms | leave p50 {:>6.2} ms p99 {:>6.2} ms | server CPU per join {:>5.2} ms",
                f.size,
                ms(f.make),
                ms(f.join_p50),
                ms(f.join_p99),
                ms(f.leave_p50),
                ms(f.leave_p99),
                ms(f.cpu_per_join)
            );
            all.push(f);
            last = Some((dir, s));
        }
        if let (Some(first), Some(biggest)) = (all.first(), all.last()) {
            println!(
                "ratio join p50({})/p50({}): {:.2}   leave p50 ratio: {:.2}",
                biggest.size,
                first.size,
                biggest.join_p50.as_secs_f64() / first.join_p50.as_secs_f64(),
                biggest.leave_p50.as_secs_f64() / first.leave_p50.as_secs_f64()
            );
        }
        if let Some((dir, s)) = last {
            // cenCreate at the largest size: realization on, and off on a
            // copy of the same state, both running, in alternated rounds
            // (the kernel may still be finishing the leaves above: each
            // side gets its share of that), median of each.
            let n = 500;
            let copy = dir.path().join("copy.db");
            let conn = rusqlite::Connection::open(dir.path().join("s.db")).expect("open state");
            conn.execute("VACUUM INTO ?1", [copy.to_string_lossy().to_string()]).expect("copy state");
            drop(conn);
            let off_server = Server::start(&copy, &["--no-realize"]);
            let (mut ons, mut offs) = (Vec::new(), Vec::new());
            for round in 0..3 {
                ons.push(creates_per_sec(&s, &format!("x{round}-"), n).await);
                offs.push(creates_per_sec(&off_server, &format!("y{round}-"), n).await);
            }
            drop(s);
            let median = |v: &mut Vec<f64>| {
                v.sort_by(|a, b| a.total_cmp(b));
                v[v.len() / 2]
            };
            let (on, off) = (median(&mut ons), median(&mut offs));
            println!(
                "cenCreate at {} made containers: {:.0}/s with realization, {:.0}/s with --no-realize; ratio {:.2}",
                sizes.last().copied().unwrap_or(0),
                on,
                off,
                on / off
            );
        }
    });
}
