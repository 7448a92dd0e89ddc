//! Churn soak against the release binary (issue 24, row 9): four clients
//! each import a new CEN over their own 10 containers, join an eleventh to
//! it and delete the CEN, over and over (the kept state stays the same
//! size), through GraphQL, for `SOAK_SECS` (default 300) against a
//! server with `--keep-changes 5000`. Every 30 s it prints the state
//! file's size on disk (the file and its WAL), the server's resident
//! memory and open descriptors; at the end the ratio of the last size to
//! the size after the first minute. Target: <= 2.
//!
//! `cargo bench --bench soak`.

mod common;

use serde_json::{json, Value};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn disk_kib(state: &Path) -> u64 {
    let wal = state.with_extension("db-wal");
    [state, wal.as_path()].iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum::<u64>() / 1024
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

async fn gql(http: &reqwest::Client, url: &str, query: &str, vars: Value) -> Value {
    let r = http.post(url).json(&json!({"query": query, "variables": vars})).send().await.expect("the server answers");
    let v: Value = r.json().await.expect("a JSON answer");
    assert!(v.get("errors").is_none(), "{query}: {v}");
    v["data"].clone()
}

const IMPORT: &str = "mutation($i: CenImportInput!) { cenImport(input: $i) { revision } }";
const JOIN: &str =
    "mutation($c: ID!, $cen: ID!) { containerJoinCen(input: {cenId: $cen, containerId: $c}) { revision } }";
const DELETE: &str = "mutation($id: ID!) { cenDelete(input: {id: $id}) { revision } }";

/// One client's churn until `stop`; counts its changes.
async fn churn(url: String, client: usize, stop: Arc<AtomicBool>, changes: Arc<AtomicU64>) {
    let http = reqwest::Client::new();
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let cen = format!("soak{client}-{round}");
        let containers: Vec<String> = (0..10).map(|i| format!("soak{client}-c{i}")).collect();
        let input = json!({"cens": [{"id": cen, "containerIds": containers}]});
        gql(&http, &url, IMPORT, json!({"i": input})).await;
        gql(&http, &url, JOIN, json!({"c": format!("soak{client}-extra"), "cen": cen})).await;
        gql(&http, &url, DELETE, json!({"id": cen})).await;
        changes.fetch_add(3, Ordering::Relaxed);
        round += 1;
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("soak bench: run with `cargo bench --bench soak`");
        return;
    }
    let secs: u64 = std::env::var("SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let state = dir.path().join("soak.db");
    let args = [OsStr::new("--no-realize"), OsStr::new("--keep-changes"), OsStr::new("5000"), OsStr::new("--state")];
    let (mut child, addr) = common::serve(args.into_iter().chain([state.as_os_str()]), false);
    let pid = child.id();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let url = format!("http://{addr}/graphql");
        let stop = Arc::new(AtomicBool::new(false));
        let changes = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> =
            (0..4).map(|c| tokio::spawn(churn(url.clone(), c, Arc::clone(&stop), Arc::clone(&changes)))).collect();
        let started = Instant::now();
        let mut after_first_minute = None;
        let mut last = 0;
        let mut next = Duration::from_secs(30);
        while started.elapsed() < Duration::from_secs(secs) {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if started.elapsed() < next {
                continue;
            }
            next += Duration::from_secs(30);
            last = disk_kib(&state);
            if after_first_minute.is_none() && started.elapsed() >= Duration::from_secs(60) {
                after_first_minute = Some(last);
            }
            println!(
                "{:>4.0} s: {:>7} changes; state file {:>7} KiB; resident {:>6} KiB; {:>4} descriptors",
                started.elapsed().as_secs_f64(),
                changes.load(Ordering::Relaxed),
                last,
                rss_kib(pid),
                fds(pid)
            );
        }
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = t.await;
        }
        if let Some(first) = after_first_minute {
            println!(
                "state file: {first} KiB after the first minute, {last} KiB at the end: ratio {:.2} (target <= 2)",
                last as f64 / first.max(1) as f64
            );
        }
    });
    let _ = child.kill();
    let _ = child.wait();
}
