//! Model benchmark: builds 100,000 containers in 10,000 CENs and 246 CINs
//! (the most the addressing rules allow: a /16 each from 10.10.0.0/16 to
//! 10.255.0.0/16; each CIN spans 40 CENs) through the GraphQL API (the same code path HTTP requests take, with the
//! SQLite store underneath), then measures `cen(id)` queries in process and
//! over HTTP on loopback. Baselines in the same run: the same import applied
//! to the bare model (no GraphQL, no store), and in-process query latency.
//!
//! Run: `cargo bench --bench topology` (env BENCH_SCALE=0.1 for a quick run).

use leviathan::model::{CenSpec, CinSpec, Command, Topology};
use leviathan::server::{self, AppState};
use leviathan::service::Service;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MEMBERS_PER_CEN: usize = 10;
const CENS_PER_CIN: usize = 40;
/// CINs that fit 10.10.0.0/16 ..= 10.255.0.0/16.
const MAX_CINS: usize = 246;
const CEN_BATCH: usize = 1000;
const CIN_BATCH: usize = 50;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn cen_specs(n_cens: usize) -> Vec<CenSpec> {
    (0..n_cens)
        .map(|i| CenSpec {
            id: format!("cen{i}"),
            containers: (0..MEMBERS_PER_CEN).map(|j| format!("c{}", i * MEMBERS_PER_CEN + j)).collect(),
        })
        .collect()
}

fn cin_specs(n_cins: usize) -> Vec<CinSpec> {
    (0..n_cins)
        .map(|i| CinSpec {
            id: format!("cin{i}"),
            cens: (0..CENS_PER_CIN).map(|j| format!("cen{}", i * CENS_PER_CIN + j)).collect(),
        })
        .collect()
}

fn stats(label: &str, mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    println!(
        "{label:<44} median {:>9.1} µs   p99 {:>9.1} µs   ({} queries)",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        samples.len()
    );
    (p50, p99)
}

#[tokio::main]
async fn main() {
    let scale: f64 = std::env::var("BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let n_cens = ((10_000.0 * scale) as usize).max(CENS_PER_CIN);
    let n_cins = (n_cens / CENS_PER_CIN).min(MAX_CINS);
    let cens = cen_specs(n_cens);
    let cins = cin_specs(n_cins);
    println!("topology: {} containers, {n_cens} CENs, {n_cins} CINs", n_cens * MEMBERS_PER_CEN);

    // Baseline: the bare model.
    let rss0 = rss_kib();
    let t0 = Instant::now();
    let mut bare = Topology::new();
    for chunk in cens.chunks(CEN_BATCH) {
        bare.execute(&Command::CenImport { host: "host1".into(), cens: chunk.to_vec() }).expect("bare cen import");
    }
    for chunk in cins.chunks(CIN_BATCH) {
        bare.execute(&Command::CinImport { cins: chunk.to_vec() }).expect("bare cin import");
    }
    let bare_time = t0.elapsed();
    let bare_rss = rss_kib().saturating_sub(rss0);
    drop(bare);

    // Through the API.
    let dir = tempfile::tempdir().unwrap();
    let rss1 = rss_kib();
    let service = Service::open(&dir.path().join("bench.db"), "host1").unwrap();
    let schema = leviathan::graphql::schema(Arc::clone(&service));
    let t1 = Instant::now();
    for chunk in cens.chunks(CEN_BATCH) {
        let items: Vec<Value> = chunk.iter().map(|c| json!({"id": c.id, "containerIds": c.containers})).collect();
        let req = async_graphql::Request::new("mutation($i: CenImportInput!) { cenImport(input: $i) { revision } }")
            .variables(async_graphql::Variables::from_json(json!({"i": {"cens": items}})));
        let resp = schema.execute(req).await;
        assert!(resp.errors.is_empty(), "{:?}", resp.errors);
    }
    for chunk in cins.chunks(CIN_BATCH) {
        let items: Vec<Value> = chunk.iter().map(|c| json!({"id": c.id, "cenIds": c.cens})).collect();
        let req = async_graphql::Request::new("mutation($i: CinImportInput!) { cinImport(input: $i) { revision } }")
            .variables(async_graphql::Variables::from_json(json!({"i": {"cins": items}})));
        let resp = schema.execute(req).await;
        assert!(resp.errors.is_empty(), "{:?}", resp.errors);
    }
    let api_time = t1.elapsed();
    let api_rss = rss_kib().saturating_sub(rss1);
    let counts = service.read(|t| t.counts());
    assert_eq!(counts.1, n_cens * MEMBERS_PER_CEN);
    assert_eq!(counts.3, n_cins);

    println!();
    println!(
        "import via GraphQL + SQLite: {:>8.2} s   RSS growth {:>7.1} MiB",
        api_time.as_secs_f64(),
        api_rss as f64 / 1024.0
    );
    println!(
        "import, bare model baseline: {:>8.2} s   RSS growth {:>7.1} MiB",
        bare_time.as_secs_f64(),
        bare_rss as f64 / 1024.0
    );
    println!("ratio API / bare:            {:>8.2}", api_time.as_secs_f64() / bare_time.as_secs_f64());
    println!("resident memory now:         {:>8.1} MiB", rss_kib() as f64 / 1024.0);
    println!();

    let query = "query($id: ID!) { cen(id: $id) { id wiringType containers { id interfaces { name address } } } }";
    let n_queries = 2000;
    let ids: Vec<String> = (0..n_queries).map(|i| format!("cen{}", (i * 7919) % n_cens)).collect();

    let mut samples = Vec::with_capacity(n_queries);
    for id in &ids {
        let req = async_graphql::Request::new(query).variables(async_graphql::Variables::from_json(json!({"id": id})));
        let t = Instant::now();
        let resp = schema.execute(req).await;
        samples.push(t.elapsed());
        assert!(resp.errors.is_empty());
    }
    let (in_p50, _) = stats("cen(id) with members, in process", samples);

    let state = AppState {
        service: Arc::clone(&service),
        schema: schema.clone(),
        token: None,
        body_limit: server::DEFAULT_BODY_LIMIT,
        http: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, server::router(state)).await });
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/graphql");
    let mut samples = Vec::with_capacity(n_queries);
    for id in &ids {
        let t = Instant::now();
        let resp = client.post(&url).json(&json!({"query": query, "variables": {"id": id}})).send().await.unwrap();
        let body: Value = resp.json().await.unwrap();
        samples.push(t.elapsed());
        assert_eq!(body["data"]["cen"]["containers"].as_array().map(Vec::len), Some(MEMBERS_PER_CEN));
    }
    let (http_p50, _) = stats("cen(id) with members, HTTP on loopback", samples);
    println!("ratio HTTP / in process (median): {:.2}", http_p50.as_secs_f64() / in_p50.as_secs_f64());
}
