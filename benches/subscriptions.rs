//! Subscription fan-out: delivery latency from commit to receipt, and the
//! server's memory, with 10 and with 1,000 live subscriptions in one run.
//!
//!     cargo bench --bench subscriptions
//!
//! Runs the real server binary (state file on /dev/shm where it exists, so
//! that the figures are about delivery rather than the disk), opens N
//! websocket connections (graphql-transport-ws), one `changes` subscription
//! each, then commits a paced stream of changes through GraphQL mutations
//! over HTTP. Latency is the receipt time minus the change's commit time
//! (`atMs`, microsecond precision, taken as the commit starts; same clock,
//! same machine). Memory is the server process's resident set (VmRSS).
//! Clients and server share the machine's cores.
//!
//! Knobs (environment): BENCH_CHANGES (default 200), BENCH_INTERVAL_MS
//! (default 10), BENCH_SUBS (default "10,1000").

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn now_ms() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as f64 / 1000.0).unwrap_or(0.0)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Server CPU time (user + system), in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which ends with ')'): utime and stime
    // are the 12th and 13th, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Http {
    client: reqwest::Client,
    url: String,
}

impl Http {
    async fn gql(&self, query: &str) -> Value {
        let body: Value =
            self.client.post(&self.url).json(&json!({"query": query})).send().await.unwrap().json().await.unwrap();
        assert!(body.get("errors").is_none(), "{body}");
        body["data"].clone()
    }
    async fn set_tag(&self, i: usize) -> i64 {
        let q = format!(r#"mutation {{ containerSetTag(input: {{id: "bench", tag: "t{i}"}}) {{ revision }} }}"#);
        self.gql(&q).await["containerSetTag"]["revision"].as_i64().unwrap()
    }
}

/// One subscriber: connects, subscribes after `since`, reports (revision,
/// latency ms) of every event.
async fn subscriber(addr: String, since: i64, ready: mpsc::Sender<()>, out: mpsc::UnboundedSender<(i64, f64)>) {
    let mut req = format!("ws://{addr}/graphql/ws").into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("graphql-transport-ws"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("connect");
    ws.send(Message::Text(json!({"type": "connection_init"}).to_string().into())).await.unwrap();
    let sub = json!({"type": "subscribe", "id": "1",
        "payload": {"query": format!("subscription {{ changes(since: {since}) {{ revision atMs }} }}")}});
    ws.send(Message::Text(sub.to_string().into())).await.unwrap();
    let _ = ready.send(()).await;
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Text(t) = msg {
            let received = now_ms();
            let v: Value = match serde_json::from_str(t.as_str()) {
                Ok(v) => v,
                Err(_) => continue,
            };
            if v["type"] == "next" {
                let c = &v["payload"]["data"]["changes"];
                if let (Some(rev), Some(at)) = (c["revision"].as_i64(), c["atMs"].as_f64()) {
                    let _ = out.send((rev, received - at));
                }
            }
        }
    }
}

struct Figures {
    subs: usize,
    delivered: usize,
    expected: usize,
    median: f64,
    p99: f64,
    max: f64,
    rss_idle: u64,
    rss_subscribed: u64,
    rss_streaming: u64,
    /// Server CPU seconds per 1,000 deliveries.
    cpu_per_k: f64,
}

async fn phase(http: &Http, addr: &str, pid: u32, subs: usize, changes: usize, interval: Duration) -> Figures {
    let rss_idle = rss_kib(pid);
    let since = http.gql("{ revision }").await["revision"].as_i64().unwrap();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    let (ready_tx, mut ready_rx) = mpsc::channel(subs.max(1));
    let mut tasks = Vec::with_capacity(subs);
    for chunk in 0..subs.div_ceil(100) {
        let n = 100.min(subs - chunk * 100);
        for _ in 0..n {
            tasks.push(tokio::spawn(subscriber(addr.to_string(), since, ready_tx.clone(), out_tx.clone())));
        }
        for _ in 0..n {
            ready_rx.recv().await.expect("subscriber ready");
        }
    }
    drop(out_tx);
    // Warm-up change: every subscriber has it once all are live.
    let warm = http.set_tag(0).await;
    let mut got = 0;
    while got < subs {
        let (rev, _) = tokio::time::timeout(Duration::from_secs(60), out_rx.recv()).await.unwrap().unwrap();
        if rev == warm {
            got += 1;
        }
    }
    let rss_subscribed = rss_kib(pid);

    let cpu_before = cpu_secs(pid);
    let mut first = None;
    let mut last = 0;
    let mut tick = tokio::time::interval(interval);
    for i in 1..=changes {
        tick.tick().await;
        let rev = http.set_tag(i).await;
        first.get_or_insert(rev);
        last = rev;
    }
    let first = first.unwrap_or(warm + 1);
    let expected = subs * changes;
    let mut latencies = Vec::with_capacity(expected);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut rss_streaming = rss_kib(pid);
    while latencies.len() < expected && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(10), out_rx.recv()).await {
            Ok(Some((rev, ms))) if rev >= first && rev <= last => latencies.push(ms),
            Ok(Some(_)) => {}
            _ => break,
        }
        if latencies.len() == expected / 2 {
            rss_streaming = rss_streaming.max(rss_kib(pid));
        }
    }
    let cpu = cpu_secs(pid) - cpu_before;
    for t in &tasks {
        t.abort();
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    Figures {
        subs,
        delivered: latencies.len(),
        expected,
        median: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
        max: latencies.last().copied().unwrap_or(f64::NAN),
        rss_idle,
        rss_subscribed,
        rss_streaming,
        cpu_per_k: if latencies.is_empty() { f64::NAN } else { cpu * 1000.0 / latencies.len() as f64 },
    }
}

fn main() {
    let changes: usize = env_or("BENCH_CHANGES", 200);
    let interval = Duration::from_millis(env_or("BENCH_INTERVAL_MS", 10));
    let sizes: Vec<usize> = std::env::var("BENCH_SUBS")
        .unwrap_or_else(|_| "10,1000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();

    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm).unwrap() } else { tempfile::tempdir().unwrap() };
    let mut child = Command::new(env!("CARGO_BIN_EXE_leviathan"))
        .args(["serve", "--no-realize", "--listen", "127.0.0.1:0", "--state"])
        .arg(dir.path().join("bench.db"))
        .env_remove("LEVIATHAN_TOKEN")
        .env("LEVIATHAN_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start leviathan");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").expect("listening line").to_string();
    let pid = child.id();

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let results = rt.block_on(async {
        let http = Http { client: reqwest::Client::new(), url: format!("http://{addr}/graphql") };
        http.gql(r#"mutation { containerCreate(input: {id: "bench"}) { revision } }"#).await;
        let mut results = Vec::new();
        for &n in &sizes {
            results.push(phase(&http, &addr, pid, n, changes, interval).await);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        results
    });
    let _ = child.kill();
    let _ = child.wait();

    println!(
        "subscription fan-out: {changes} changes, one every {} ms, one `changes` subscription per connection",
        interval.as_millis()
    );
    println!(
        "{:>6} {:>14} {:>10} {:>10} {:>10} {:>13} {:>15} {:>15} {:>14}",
        "subs",
        "delivered",
        "median ms",
        "p99 ms",
        "max ms",
        "RSS idle MiB",
        "RSS subscr MiB",
        "RSS stream MiB",
        "CPU ms/1k msg"
    );
    for f in &results {
        println!(
            "{:>6} {:>14} {:>10.3} {:>10.3} {:>10.3} {:>13.1} {:>15.1} {:>15.1} {:>14.1}",
            f.subs,
            format!("{}/{}", f.delivered, f.expected),
            f.median,
            f.p99,
            f.max,
            f.rss_idle as f64 / 1024.0,
            f.rss_subscribed as f64 / 1024.0,
            f.rss_streaming as f64 / 1024.0,
            f.cpu_per_k * 1000.0
        );
    }
    if let (Some(base), Some(big)) = (results.first(), results.last()) {
        if results.len() > 1 {
            let grown = |f: &Figures| (f.rss_streaming as f64 - f.rss_idle as f64).max(1.0);
            println!(
                "ratio {} subs / {} subs: median latency {:.2}, p99 {:.2}, server memory growth {:.1} ({:.1} KiB per subscription)",
                big.subs,
                base.subs,
                big.median / base.median,
                big.p99 / base.p99,
                grown(big) / grown(base),
                grown(big) / big.subs as f64
            );
        }
    }
    if results.iter().any(|f| f.delivered != f.expected) {
        eprintln!("some events were not delivered");
        std::process::exit(1);
    }
}
