//! Looking at the kernel from tests: unique prefixes cleaned up on drop,
//! links and addresses of a namespace (`ip -j`), namespaces under a prefix,
//! pings from inside a namespace. Tests that need root call [`can_run`]:
//! in CI (`CI` set) they fail without root; elsewhere they skip loudly.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

static NEXT: AtomicUsize = AtomicUsize::new(0);

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// Returns false (after a loud message) when the test cannot run here.
pub fn can_run(name: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{name}: needs root and network namespaces, and CI must run it");
    }
    eprintln!("\n*** SKIPPING {name}: needs root (network namespaces); CI runs it as root ***\n");
    false
}

/// A unique prefix, removed from the kernel when dropped.
pub struct Prefix(pub String);

impl Prefix {
    /// A fresh prefix starting with `tag` (one letter keeps it short).
    pub fn new(tag: &str) -> Prefix {
        let p = Prefix(format!("{}{}{}-", tag, std::process::id() % 10000, NEXT.fetch_add(1, Ordering::SeqCst)));
        cleanup(&p.0);
        p
    }
    pub fn ns(&self, container: &str) -> String {
        format!("{}{container}", self.0)
    }
    pub fn fabric(&self) -> String {
        format!("{}fabric", self.0)
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        cleanup(&self.0);
    }
}

pub fn cleanup(prefix: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_leviathan")).args(["cleanup", "--prefix", prefix]).output().unwrap();
    assert!(out.status.success(), "cleanup failed: {}", String::from_utf8_lossy(&out.stderr));
}

pub fn ip_json(args: &[&str]) -> Value {
    let out = Command::new("ip").arg("-j").args(args).output().expect("ip");
    if !out.status.success() {
        return json!([]);
    }
    serde_json::from_slice(&out.stdout).unwrap_or(json!([]))
}

/// Links in a namespace: name -> (ifindex, kind, up, master, addresses).
#[derive(Debug, Clone)]
pub struct Link {
    pub ifindex: i64,
    pub mtu: i64,
    pub kind: String,
    pub up: bool,
    pub master: Option<String>,
    pub addrs: Vec<String>,
}

pub fn links(ns: &str) -> BTreeMap<String, Link> {
    let mut out = BTreeMap::new();
    let detail = ip_json(&["-d", "-n", ns, "link", "show"]);
    let addrs = ip_json(&["-n", ns, "addr", "show"]);
    for l in detail.as_array().into_iter().flatten() {
        let name = l["ifname"].as_str().unwrap_or("").to_string();
        let a: Vec<String> = addrs
            .as_array()
            .into_iter()
            .flatten()
            .filter(|x| x["ifname"] == l["ifname"])
            .flat_map(|x| x["addr_info"].as_array().cloned().unwrap_or_default())
            .filter(|i| i["family"] == "inet")
            .map(|i| format!("{}/{}", i["local"].as_str().unwrap_or(""), i["prefixlen"]))
            .collect();
        out.insert(
            name,
            Link {
                ifindex: l["ifindex"].as_i64().unwrap_or(0),
                mtu: l["mtu"].as_i64().unwrap_or(0),
                kind: l["linkinfo"]["info_kind"].as_str().unwrap_or("").to_string(),
                up: l["flags"].as_array().is_some_and(|f| f.iter().any(|x| x == "UP")),
                master: l["master"].as_str().map(str::to_string),
                addrs: a,
            },
        );
    }
    out
}

pub fn namespaces(prefix: &str) -> BTreeSet<String> {
    std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

pub fn ping(from_ns: &str, to: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", from_ns, "ping", "-c", "1", "-W", "1", "-q", to])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Network namespaces allocated in the kernel (deleted ones included until
/// the kernel has freed them), from the `net_namespace` slab cache
/// (`/proc/slabinfo`, root); `None` where it cannot be read.
pub fn live_netns() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/slabinfo").ok()?;
    info.lines().find_map(|l| l.strip_prefix("net_namespace ")?.split_whitespace().next()?.parse().ok())
}

/// Slab objects counted allocated though free (cached per CPU).
pub const NETNS_SLACK: u64 = 16;

/// How long the count of allocated namespaces may stay put before
/// [`settle`] takes what is left for freed objects the allocator keeps.
const FLUSH_STALL: Duration = Duration::from_secs(3);

/// How long the kernel's workers are watched at a time after a teardown,
/// and the CPU ticks (of `_SC_CLK_TCK`, 10 ms here) they may use in it to
/// count as idle.
const QUIET_WINDOW: Duration = Duration::from_millis(250);
const QUIET_TICKS: u64 = 2;

/// CPU ticks (user + system) used so far by each kernel worker thread
/// (`kworker/...`), by pid.
pub fn kworker_ticks() -> std::collections::BTreeMap<u32, u64> {
    let mut out = std::collections::BTreeMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        let Some((name, rest)) = stat.split_once(") ") else { continue };
        if !name.contains("(kworker") {
            continue;
        }
        let t: u64 = rest.split_whitespace().skip(11).take(2).filter_map(|x| x.parse::<u64>().ok()).sum();
        out.insert(pid, t);
    }
    out
}

/// Waits until the kernel has freed the namespaces deleted before (their
/// count back to `reference`, see [`live_netns`]) and its workers are
/// idle, so what is measured next is not charged for a teardown the kernel
/// still runs under the RTNL lock. Some namespaces deleted by a server
/// stay allocated on this kernel until another namespace is deleted: a
/// throwaway one, `flush`, is added and deleted until the count is back.
/// The slab's count also holds freed objects the allocator keeps, so it
/// may stay above `reference` with nothing left to free: once it has not
/// gone down for [`FLUSH_STALL`], the namespaces count as freed.
/// Returns when the namespaces were freed and when the workers were idle,
/// from the call; panics after `bound` (only there to catch a hang). For
/// benches, before a measurement: its sleeps are the interval between two
/// looks at the kernel and the window a rate is measured over, and nothing
/// is asserted on what they let happen (a settle cut short only adds noise
/// to the next figure).
pub fn settle(reference: u64, flush: &str, bound: Duration) -> (Duration, Duration) {
    let t = std::time::Instant::now();
    let mut lowest = (u64::MAX, t);
    while let Some(n) = live_netns().filter(|n| *n > reference + NETNS_SLACK) {
        if n < lowest.0 {
            lowest = (n, std::time::Instant::now());
        } else if lowest.1.elapsed() >= FLUSH_STALL {
            break;
        }
        assert!(t.elapsed() < bound, "the kernel did not free deleted namespaces: {n} live");
        let ok = |args: &[&str]| Command::new("ip").args(args).status().is_ok_and(|s| s.success());
        assert!(ok(&["netns", "add", flush]) && ok(&["netns", "del", flush]), "ip netns add/del {flush}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let freed = t.elapsed();
    let mut last = kworker_ticks();
    loop {
        std::thread::sleep(QUIET_WINDOW);
        let now = kworker_ticks();
        let used: u64 = now.iter().map(|(pid, t)| t.saturating_sub(last.get(pid).copied().unwrap_or(0))).sum();
        last = now;
        if used <= QUIET_TICKS {
            break;
        }
        assert!(t.elapsed() < bound, "the kernel's workers stayed busy");
    }
    (freed, t.elapsed())
}
