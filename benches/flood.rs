//! Connection floods against the release binary (issue 24, rows 2 and 3):
//! 2,200 TCP connections that send nothing and 2,000 slow-body senders
//! (`POST /graphql` with `content-length: 100000`, then one byte every
//! 2 s), each reconnecting whenever the server closes it, held for 60 s
//! against one server at its defaults (`--max-connections 2048`,
//! `--body-timeout 10`). Meanwhile a new client asks `GET /healthz` every
//! 250 ms on a fresh connection. Prints the probes' answer times (median,
//! p99, max), how many took over 1 s or failed, and how many times the
//! attackers were closed and came back. Target: every probe answered
//! within 1 s.
//!
//! `cargo bench --bench flood` (`FLOOD_SECS`, default 60; `FLOOD_IDLE`,
//! default 2200; `FLOOD_SLOW`, default 2000). Raises its own open-file
//! limit to what it needs.

mod common;

use std::ffi::OsStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Counters the attackers keep.
#[derive(Default)]
struct Tally {
    /// Connections made (first ones and reconnections).
    connects: AtomicU64,
    /// Connections the server closed.
    closed: AtomicU64,
    /// Connections refused or failed to open.
    failed: AtomicU64,
}

/// One attacker: connects, sends what its kind sends, and reconnects when
/// the server closes it, until `stop`.
async fn attacker(addr: String, slow: bool, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut s) = TcpStream::connect(&addr).await else {
            tally.failed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        tally.connects.fetch_add(1, Ordering::Relaxed);
        let mut buf = [0u8; 1024];
        if slow {
            let head = format!(
                "POST /graphql HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n"
            );
            if s.write_all(head.as_bytes()).await.is_err() {
                tally.closed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                // A byte every 2 s; the server's answer (408) or close ends it.
                tokio::select! {
                    r = s.read(&mut buf) => {
                        let _ = r;
                        break;
                    }
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {
                        if s.write_all(b" ").await.is_err() {
                            break;
                        }
                    }
                }
            }
        } else {
            loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                tokio::select! {
                    r = s.read(&mut buf) => {
                        if matches!(r, Ok(0) | Err(_)) {
                            break;
                        }
                    }
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
        tally.closed.fetch_add(1, Ordering::Relaxed);
    }
}

/// One `GET /healthz` on a fresh connection: the time to the whole answer,
/// or `None` when it failed or took over 10 s.
async fn probe(addr: &str) -> Option<Duration> {
    let t = Instant::now();
    let fut = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = format!("GET /healthz HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.ok()?;
        out.starts_with(b"HTTP/1.1 200").then_some(())
    };
    match tokio::time::timeout(Duration::from_secs(10), fut).await {
        Ok(Some(())) => Some(t.elapsed()),
        _ => None,
    }
}

fn raise_nofile(need: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < need {
            let want = need.min(hard);
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, want, hard) {
                eprintln!("flood bench: could not raise the open-file limit to {want}: {e}");
            }
        }
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("flood bench: run with `cargo bench --bench flood`");
        return;
    }
    let secs = env_or("FLOOD_SECS", 60);
    let (idle, slow) = (env_or("FLOOD_IDLE", 2200), env_or("FLOOD_SLOW", 2000));
    raise_nofile(idle + slow + 1024);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let state = dir.path().join("flood.db");
    let (mut child, addr) =
        common::serve([OsStr::new("--no-realize"), OsStr::new("--state"), state.as_os_str()], false);
    rt.block_on(async {
        let tally = Arc::new(Tally::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for i in 0..idle + slow {
            tasks.push(tokio::spawn(attacker(addr.clone(), i >= idle, Arc::clone(&tally), Arc::clone(&stop))));
        }
        // Wait until the attackers have their connections.
        let opened = Instant::now();
        while tally.connects.load(Ordering::Relaxed) < idle + slow && opened.elapsed() < Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "{idle} idle + {slow} slow-body connections opened in {:.1} s ({} connects so far)",
            opened.elapsed().as_secs_f64(),
            tally.connects.load(Ordering::Relaxed)
        );
        let started = Instant::now();
        let mut times = Vec::new();
        let mut failed = 0;
        while started.elapsed() < Duration::from_secs(secs) {
            match probe(&addr).await {
                Some(t) => times.push(t.as_secs_f64() * 1000.0),
                None => failed += 1,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.abort();
        }
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times.get(((times.len() as f64 - 1.0) * q) as usize).copied().unwrap_or(f64::NAN);
        let over = times.iter().filter(|t| **t > 1000.0).count();
        println!(
            "/healthz from a new client every 250 ms for {secs} s: {} answered, {failed} failed; \
             median {:.1} ms, p99 {:.1} ms, max {:.1} ms; over 1 s: {over}",
            times.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        );
        println!(
            "attackers: {} connects, {} closed by the server, {} failed to connect",
            tally.connects.load(Ordering::Relaxed),
            tally.closed.load(Ordering::Relaxed),
            tally.failed.load(Ordering::Relaxed)
        );
        println!("target: every probe within 1 s: {}", if failed == 0 && over == 0 { "met" } else { "NOT met" });
    });
    let _ = child.kill();
    let _ = child.wait();
}
