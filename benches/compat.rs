//! Legacy `GET /cen/{id}` against the equivalent GraphQL POST, on the same
//! server (the real binary), in the same run: requests per second and
//! median latency of each, and the ratio of throughputs (target: compat at
//! least 0.8 of direct GraphQL).
//!
//! `cargo bench --bench compat`; knobs: COMPAT_BENCH_SECS (per round,
//! default 3), COMPAT_BENCH_CONCURRENCY (connections, default 4),
//! COMPAT_BENCH_ROUNDS (rounds of each, alternated, default 3).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const GRAPHQL_QUERY: &str = "query($id: ID!) { cen(id: $id) { id wiringType containers { id } } }";

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Compat,
    Graphql,
}

struct Round {
    requests: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

async fn round(client: &reqwest::Client, base: &str, mode: Mode, conc: u64, secs: u64) -> Round {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let body = serde_json::json!({"query": GRAPHQL_QUERY, "variables": {"id": "cen1"}}).to_string();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let client = client.clone();
        let base = base.to_string();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                let resp = match mode {
                    Mode::Compat => client.get(format!("{base}/cen/cen1")).send().await,
                    Mode::Graphql => {
                        client
                            .post(format!("{base}/graphql"))
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await
                    }
                };
                let resp = resp.expect("request");
                assert_eq!(resp.status(), 200);
                let bytes = resp.bytes().await.expect("body");
                assert!(bytes.len() > 20);
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("client task"));
    }
    Round { requests: latencies.len() as u64, elapsed: start.elapsed(), latencies }
}

fn summary(name: &str, rounds: &[Round]) -> (f64, Duration) {
    let requests: u64 = rounds.iter().map(|r| r.requests).sum();
    let elapsed: f64 = rounds.iter().map(|r| r.elapsed.as_secs_f64()).sum();
    let mut lat: Vec<Duration> = rounds.iter().flat_map(|r| r.latencies.iter().copied()).collect();
    lat.sort_unstable();
    let median = lat.get(lat.len() / 2).copied().unwrap_or_default();
    let p99 = lat.get(lat.len() * 99 / 100).copied().unwrap_or_default();
    let rps = requests as f64 / elapsed;
    println!(
        "{name:<32} {rps:>9.0} req/s   median {:>7.1} µs   p99 {:>7.1} µs   ({requests} requests)",
        median.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    (rps, median)
}

fn main() {
    let secs = env_or("COMPAT_BENCH_SECS", 3);
    let conc = env_or("COMPAT_BENCH_CONCURRENCY", 4);
    let rounds = env_or("COMPAT_BENCH_ROUNDS", 3);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_leviathan"))
        .args(["serve", "--no-realize", "--listen", "127.0.0.1:0", "--state"])
        .arg(dir.path().join("bench.db"))
        .env_remove("LEVIATHAN_TOKEN")
        .env("LEVIATHAN_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start leviathan");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("listening line");
    let _server = Server(child);
    let addr = line.trim().strip_prefix("listening on ").expect("listening on ADDR").to_string();
    let base = format!("http://{addr}");

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    rt.block_on(async {
        let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().expect("client");
        let fixture = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cen.json")).expect("fixture");
        let r = client.post(format!("{base}/cen/import")).body(fixture).send().await.expect("import");
        assert_eq!(r.status(), 204);
        // Warm up both paths.
        round(&client, &base, Mode::Compat, conc, 1).await;
        round(&client, &base, Mode::Graphql, conc, 1).await;
        let (mut compat, mut graphql) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            compat.push(round(&client, &base, Mode::Compat, conc, secs).await);
            graphql.push(round(&client, &base, Mode::Graphql, conc, secs).await);
        }
        println!("GET /cen/cen1 (5 CENs, 4 members) — {conc} connections, {rounds}×{secs} s each, alternated");
        let (c_rps, c_med) = summary("compat  GET /cen/cen1", &compat);
        let (g_rps, g_med) = summary("graphql POST cen(id: \"cen1\")", &graphql);
        println!(
            "ratio compat/graphql: throughput {:.3} (target >= 0.8), median latency {:.3}",
            c_rps / g_rps,
            c_med.as_secs_f64() / g_med.as_secs_f64()
        );
    });
}
