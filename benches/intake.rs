//! Memory of hostile imports (issue 24, row 1): 16 parallel `cpoolImport`s
//! of 99,999 valid pools and a last one with an invalid id (about 7.6 MB
//! each, under the 8 MiB body limit), against the release binary. Prints
//! the server's resident memory before, at its peak and 10 s after, for
//! the defaults (refused by `--max-input-items` before anything is built)
//! and with the item limit lifted (the whole path runs: parse, variables,
//! validation, the command and its error, under the budget of large
//! bodies). Target: peak <= 512 MiB, back within 64 MiB of the baseline.
//!
//! `cargo bench --bench intake` (`INTAKE_BENCH_PARALLEL`, default 16).

mod common;

use serde_json::{json, Value};
use std::ffi::OsStr;
use std::process::Child;
use std::time::{Duration, Instant};

fn vm_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/<pid>/status");
    let line = status.lines().find(|l| l.starts_with(key)).expect("the key in /proc/<pid>/status");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("a number of KiB")
}

fn start(state: &std::path::Path, extra: &[&str]) -> (Child, String) {
    let head = [OsStr::new("--no-realize"), OsStr::new("--state"), state.as_os_str()];
    common::serve(head.into_iter().chain(extra.iter().map(OsStr::new)), false)
}

fn hostile_body() -> String {
    const IMAGE: &str = "registry.example.com/ubuntu:14.04";
    let mut pools: Vec<Value> =
        (0..99_999).map(|i| json!({"id": format!("pool{i:06}"), "type": IMAGE, "startWith": 1})).collect();
    pools.push(json!({"id": "-bad", "type": IMAGE, "startWith": 1}));
    let q = "mutation($i: CpoolImportInput!) { cpoolImport(input: $i) { revision } }";
    json!({"query": q, "variables": {"i": {"pools": pools}}}).to_string()
}

async fn round(label: &str, extra: &[&str], body: &str, parallel: usize) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (mut child, addr) = start(&dir.path().join("bench.db"), extra);
    let pid = child.id();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(600)).build().expect("a client");
    // One request first: the server's pools and caches warmed up.
    let _ = http.get(format!("http://{addr}/healthz")).send().await;
    let base = vm_kib(pid, "VmRSS:");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..parallel {
        let (http, url, body) = (http.clone(), format!("http://{addr}/graphql"), body.to_string());
        tasks.push(tokio::spawn(async move {
            let r = http.post(url).header("content-type", "application/json").body(body).send().await;
            match r {
                Ok(r) => r.status().as_u16(),
                Err(_) => 0,
            }
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap_or(0));
    }
    let took = started.elapsed();
    let peak = vm_kib(pid, "VmHWM:");
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = vm_kib(pid, "VmRSS:");
    println!(
        "{label}: {parallel} parallel hostile imports ({:.1} MB each) answered {:?} in {:.1} s; resident memory: \
         baseline {} MiB, peak {} MiB, 10 s later {} MiB (+{} MiB)",
        body.len() as f64 / 1e6,
        statuses.iter().collect::<std::collections::BTreeSet<_>>(),
        took.as_secs_f64(),
        base / 1024,
        peak / 1024,
        after / 1024,
        after.saturating_sub(base) / 1024
    );
    let _ = child.kill();
    let _ = child.wait();
}

fn main() {
    let parallel: usize = std::env::var("INTAKE_BENCH_PARALLEL").ok().and_then(|v| v.parse().ok()).unwrap_or(16);
    let body = hostile_body();
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    rt.block_on(async {
        round("defaults", &[], &body, parallel).await;
        round("one request, item limit lifted", &["--max-input-items", "1000000"], &body, 1).await;
        round("item limit lifted", &["--max-input-items", "1000000"], &body, parallel).await;
    });
}
