//! CNI benchmark (needs root): what a container runtime waits for at
//! ADD, through libcni (a Go driver built from Debian's
//! golang-github-appc-cni-dev, as in leviathan-cni's tests), with
//! leviathan-cni against a running server and with Debian's reference
//! `bridge` + `host-local` plugins doing the same job (a bridge, a veth
//! per container, an address from a /16 with its gateway):
//!
//! - ADD latency p50 and p99 over 100 sequential containers;
//! - the wall time of 30 ADDs at once (a burst of pods), all READY.
//!
//! Each side starts on a quiet kernel (the namespaces deleted before it
//! freed, the kernel's workers idle). Prints both figures and their ratios
//! (target: leviathan <= 0.5x).
//! Run: `cargo build --release -p leviathan-cni && cargo bench --bench cni`.
//! With `LEVIATHAN_BENCH_PHASES=1` the server also logs the timing of each
//! ADD's phases (debug level) and the bench prints their p50 and p99 over
//! the sequential ADDs, and the slowest five ADDs phase by phase (off by
//! default: the logging costs a little); `LEVIATHAN_BENCH_LOG=FILE` keeps
//! a copy of that server log.
//! Under `cargo test --all-targets` (no `--bench` argument) it only says
//! how to run it.

#[path = "../tests/common/kernel.rs"]
mod kernel;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

const SEQUENTIAL: usize = 100;
const BURST: usize = 30;

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The release binaries: the server (this package) and the plugin.
fn binaries() -> (PathBuf, PathBuf) {
    let server = PathBuf::from(env!("CARGO_BIN_EXE_leviathan"));
    let plugin = server.with_file_name("leviathan-cni");
    assert!(
        plugin.exists(),
        "{} is missing: build it first with `cargo build --release -p leviathan-cni`",
        plugin.display()
    );
    (server, plugin)
}

/// The libcni driver of leviathan-cni's tests, built in GOPATH mode.
fn driver() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cni-go-bench");
    std::fs::create_dir_all(&dir).expect("driver directory");
    let out = dir.join("driver");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("cni/tests/go/driver.go");
    let built = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", format!("/usr/share/gocode:{}", dir.join("gopath").display()))
        .env("GOCACHE", dir.join("cache"))
        .output()
        .expect("go (golang-go) is needed");
    assert!(built.status.success(), "building the libcni driver: {}", String::from_utf8_lossy(&built.stderr));
    out
}

struct Figures {
    p50_ms: f64,
    p99_ms: f64,
    burst_ms: f64,
    /// Each sequential ADD's latency in microseconds, in order.
    each_us: Vec<u64>,
}

/// Runs `jobs` through the driver, `parallel` at a time: each ADD's
/// latency and the wall time, in microseconds.
fn add_all(
    driver: &Path,
    cni_path: &str,
    cache: &Path,
    list: &Path,
    jobs: &[(String, String)],
    parallel: usize,
) -> (Vec<u64>, u64) {
    let file = cache.with_extension(format!("jobs{parallel}"));
    let text: String = jobs.iter().map(|(id, ns)| format!("{id} {ns}\n")).collect();
    std::fs::write(&file, text).expect("jobs file");
    let out = Command::new(driver)
        .arg("bench")
        .arg(list)
        .arg(&file)
        .arg(parallel.to_string())
        .env("CNI_PATH", cni_path)
        .env("CNI_CACHE", cache)
        .output()
        .expect("driver");
    assert!(
        out.status.success(),
        "ADDs failed: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lat = Vec::new();
    let mut wall = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        match line.strip_prefix("wall ") {
            Some(w) => wall = w.parse().expect("wall time"),
            None => lat.push(line.parse().expect("a latency")),
        }
    }
    (lat, wall)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Namespaces `<prefix><kind><i>`, as a runtime makes them.
fn namespaces(prefix: &str, kind: &str, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            let name = format!("{prefix}{kind}{i}");
            run("ip", &["netns", "add", &name]);
            (format!("{prefix}{kind}{i:04}-0000000000000000"), format!("/run/netns/{name}"))
        })
        .collect()
}

fn measure(driver: &Path, cni_path: &str, dir: &Path, list: &Path, prefix: &str) -> Figures {
    std::fs::create_dir_all(dir).expect("bench directory");
    let seq = namespaces(prefix, "s", SEQUENTIAL);
    let burst = namespaces(prefix, "p", BURST);
    let (each_us, _) = add_all(driver, cni_path, &dir.join("cache"), list, &seq, 1);
    let mut lat = each_us.clone();
    lat.sort_unstable();
    let (_, wall) = add_all(driver, cni_path, &dir.join("cache"), list, &burst, BURST);
    Figures { p50_ms: percentile(&lat, 0.5), p99_ms: percentile(&lat, 0.99), burst_ms: wall as f64 / 1000.0, each_us }
}

/// The server's debug timing events (see [`phases`]).
const PHASE_LOG: &str = "info,leviathan::graphql::runtime=debug,leviathan::graphql::mutation=debug,\
    leviathan::service::commit=debug,leviathan::store::sqlite=debug,leviathan::driver::run=debug,\
    leviathan::realize::apply=debug";

/// The `key=number` fields of a log line.
fn fields(line: &str) -> BTreeMap<&str, u64> {
    line.split_whitespace().filter_map(|w| w.split_once('=')).filter_map(|(k, v)| Some((k, v.parse().ok()?))).collect()
}

/// Each phase's time per ADD, in microseconds, from the server's timing
/// events of the first `n` attaches (the sequential ones), in the order of
/// the ADDs (none where an event is missing): the change and the round of
/// each attach are found by its revision.
fn phases(log: &str, n: usize) -> Vec<(&'static str, Vec<Option<u64>>)> {
    let mut by_kind: BTreeMap<&str, BTreeMap<u64, BTreeMap<&str, u64>>> = BTreeMap::new();
    let mut attaches = Vec::new();
    let mut last_apply = BTreeMap::new();
    for line in log.lines() {
        let f = fields(line);
        let Some(kind) = ["attach", "mutation", "change", "commit", "round", "apply"]
            .into_iter()
            .find(|k| line.contains(&format!(" {k} timing")))
        else {
            continue;
        };
        match (kind, f.get("revision").copied()) {
            ("apply", _) => last_apply = f,
            ("round", Some(r)) => {
                by_kind.entry("apply").or_default().insert(r, std::mem::take(&mut last_apply));
                by_kind.entry(kind).or_default().insert(r, f);
            }
            ("attach", Some(r)) if attaches.len() < n => {
                attaches.push(r);
                by_kind.entry(kind).or_default().insert(r, f);
            }
            (_, Some(r)) => {
                by_kind.entry(kind).or_default().insert(r, f);
            }
            _ => {}
        }
    }
    let get = |kind: &str, r: u64, k: &str| by_kind.get(kind).and_then(|m| m.get(&r)).and_then(|f| f.get(k).copied());
    let span = |kind: &'static str, from: &'static str, to: &'static str| {
        attaches
            .iter()
            .map(|r| {
                let start = if from.is_empty() { Some(0) } else { get(kind, *r, from) };
                Some(get(kind, *r, to)?.saturating_sub(start?))
            })
            .collect::<Vec<Option<u64>>>()
    };
    let waited = span("mutation", "committed_us", "settled_us");
    let round = span("round", "", "recorded_us");
    // The commit's time outside `try_commit`: its task started, the
    // writer lock taken, the answer handed back.
    let whole = span("mutation", "", "committed_us");
    let tried = span("change", "", "published_us");
    let turn: Vec<Option<u64>> =
        whole.iter().zip(&tried).map(|(w, t)| Some(w.as_ref()?.saturating_sub(*t.as_ref()?))).collect();
    let woken = waited.iter().zip(&round).map(|(w, r)| Some(w.as_ref()?.saturating_sub(*r.as_ref()?))).collect();
    vec![
        ("attach: resolve the namespace", span("attach", "", "bound_us")),
        ("commit: compute the change", span("change", "", "prepared_us")),
        ("commit: SQLite rows", span("commit", "", "written_us")),
        ("commit: SQLite COMMIT (WAL, fsync)", span("commit", "vacuumed_us", "committed_us")),
        ("commit: store call (SQLite thread)", span("change", "prepared_us", "stored_us")),
        ("commit: make visible, publish", span("change", "stored_us", "published_us")),
        ("commit: task and turn (the rest)", turn),
        ("commit: whole (task, lock, publish)", whole),
        ("wait READY: the driver's round", waited),
        ("round: desired state of the CEN", span("round", "", "desired_us")),
        ("apply: open/check namespaces", span("apply", "", "opened_us")),
        ("apply: plan", span("apply", "opened_us", "planned_us")),
        ("apply: ledger record", span("apply", "planned_us", "recorded_us")),
        ("apply: kernel (netlink)", span("apply", "recorded_us", "kernel_us")),
        ("apply: listeners", span("apply", "kernel_us", "done_us")),
        ("round: statuses", span("round", "applied_us", "recorded_us")),
        ("wait READY less the round (wake-ups)", woken),
        ("attach: whole resolver", span("attach", "", "read_us")),
    ]
}

/// The phase table, then the slowest ADDs phase by phase (`each_us`: the
/// latency of each sequential ADD as the runtime saw it, in order).
fn print_phases(text: &str, each_us: &[u64]) {
    let all = phases(text, SEQUENTIAL);
    println!("Server phases of the {SEQUENTIAL} sequential ADDs (debug timing events):");
    println!("  (first 10 / last 10: the mean of the first and of the last ten ADDs, as the CEN grows)");
    println!("  {:<38} {:>9} {:>9} {:>9} {:>9} {:>5}", "", "p50 ms", "p99 ms", "first 10", "last 10", "n");
    for (name, v) in &all {
        let mut v: Vec<u64> = v.iter().flatten().copied().collect();
        if v.is_empty() {
            continue;
        }
        let mean = |w: &[u64]| w.iter().sum::<u64>() as f64 / w.len().max(1) as f64 / 1000.0;
        let (first, last) = (mean(&v[..v.len().min(10)]), mean(&v[v.len().saturating_sub(10)..]));
        v.sort_unstable();
        println!(
            "  {name:<38} {:>9.3} {:>9.3} {first:>9.3} {last:>9.3} {:>5}",
            percentile(&v, 0.5),
            percentile(&v, 0.99),
            v.len()
        );
    }
    print_slowest(&all, each_us);
}

/// The slowest sequential ADDs, each phase of each (ms): where the tail's
/// time goes. "outside the server" is the ADD's latency less the attach
/// resolver's: the plugin's start, its namespace look-ups, the socket and
/// HTTP, libcni.
fn print_slowest(all: &[(&'static str, Vec<Option<u64>>)], each_us: &[u64]) {
    const SLOWEST: usize = 5;
    let mut order: Vec<usize> = (0..each_us.len()).collect();
    order.sort_by_key(|i| std::cmp::Reverse(each_us[*i]));
    order.truncate(SLOWEST);
    let resolver = all.iter().find(|(n, _)| n.starts_with("attach: whole")).map(|(_, v)| v);
    println!("The {SLOWEST} slowest sequential ADDs, phase by phase (ms; #: the ADD's place in the sequence):");
    print!("  {:<38}", "");
    for i in &order {
        print!(" {:>8}", format!("#{i}"));
    }
    println!();
    let row = |name: &str, f: &dyn Fn(usize) -> Option<u64>| {
        print!("  {name:<38}");
        for i in &order {
            match f(*i) {
                Some(us) => print!(" {:>8.3}", us as f64 / 1000.0),
                None => print!(" {:>8}", "-"),
            }
        }
        println!();
    };
    row("ADD as the runtime saw it", &|i| each_us.get(i).copied());
    row("outside the server (plugin, HTTP)", &|i| {
        let r = resolver.and_then(|v| v.get(i).copied().flatten())?;
        Some(each_us.get(i)?.saturating_sub(r))
    });
    for (name, v) in all {
        row(name, &|i| v.get(i).copied().flatten());
    }
}

fn start_server(server: &Path, dir: &Path, prefix: &str, sock: &Path, log: Option<&Path>) -> Child {
    let stderr = match log {
        Some(p) => Stdio::from(std::fs::File::create(p).expect("server log")),
        None => Stdio::null(),
    };
    let mut child = Command::new(server)
        .args(["serve", "--listen", "127.0.0.1:0", "--prefix", prefix])
        .arg("--state")
        .arg(dir.join("state.db"))
        .arg("--unix-socket")
        .arg(sock)
        .arg("--cni-queue")
        .arg(dir.join("queue"))
        .env("LEVIATHAN_LOG", if log.is_some() { PHASE_LOG } else { "info" })
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start leviathan");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("listening line");
    assert!(line.starts_with("listening on"), "{line}");
    child
}

fn gql(sock: &Path, query: &str) -> String {
    let body = serde_json::json!({"query": query}).to_string();
    run(
        "curl",
        &[
            "-s",
            "--unix-socket",
            sock.to_str().unwrap(),
            "http://localhost/graphql",
            "-H",
            "content-type: application/json",
            "-d",
            &body,
        ],
    )
}

fn cleanup(prefix: &str, server: &Path) {
    for ns in run("ip", &["netns", "list"]).lines().filter_map(|l| l.split_whitespace().next()) {
        if ns.starts_with(prefix) {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
    let _ = Command::new(server).args(["cleanup", "--prefix", prefix]).stdout(Stdio::null()).status();
}

/// Each side is measured on a quiet kernel: the namespaces deleted before
/// it (the other side's, an earlier run's) freed and the kernel's workers
/// idle, so neither pays for a teardown the kernel still runs under the
/// RTNL lock.
fn settle(reference: u64, prefix: &str) {
    let (freed, idle) = kernel::settle(reference, &format!("{prefix}flush"), std::time::Duration::from_secs(300));
    eprintln!("cni bench: deleted namespaces freed after {freed:.2?}, kernel workers idle after {idle:.2?}");
}

/// Whatever the bench made, removed even when it fails half-way.
struct Guard {
    server: PathBuf,
    child: Option<Child>,
    prefixes: Vec<String>,
    bridge: String,
    dir: PathBuf,
}

impl Guard {
    fn stop_server(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill with the child's pid and SIGTERM.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let _ = c.wait();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop_server();
        for p in &self.prefixes {
            cleanup(p, &self.server);
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).stderr(Stdio::null()).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("cni bench: run with `cargo build --release -p leviathan-cni && cargo bench --bench cni` (as root)");
        return;
    }
    if !kernel::is_root() {
        eprintln!("cni bench: needs root (it creates network namespaces); skipped");
        return;
    }
    let (server, plugin) = binaries();
    let driver = driver();
    // Namespaces allocated before anything of ours (see `kernel::settle`).
    let reference_ns = kernel::live_netns().unwrap_or(u64::MAX - kernel::NETNS_SLACK);
    let pid = std::process::id() % 1000;
    let ours = format!("cb{pid}-");
    let theirs = format!("cr{pid}-");
    let dir = std::env::temp_dir().join(format!("lev-cni-bench-{pid}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench directory");
    let cni_path = format!("{}:/usr/lib/cni", plugin.parent().expect("bin dir").display());

    let bridge = format!("{theirs}br");
    let mut guard = Guard {
        server: server.clone(),
        child: None,
        prefixes: vec![ours.clone(), theirs.clone()],
        bridge: bridge.clone(),
        dir: dir.clone(),
    };

    // leviathan-cni and a server.
    let sock = dir.join("l.sock");
    let phase_log = std::env::var("LEVIATHAN_BENCH_PHASES").is_ok_and(|v| v == "1").then(|| dir.join("server.log"));
    guard.child = Some(start_server(&server, &dir, &ours, &sock, phase_log.as_deref()));
    let made = gql(&sock, "mutation { cenCreate(input: {id: \"bench\"}) { revision } cinImport(input: {cins: [{id: \"benchcin\", cenIds: [\"bench\"]}]}) { revision } cinMake(input: {ids: [\"benchcin\"]}) { cins { status } } }");
    assert!(made.contains("READY"), "{made}");
    let list = dir.join("leviathan.conflist");
    let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "lev", "plugins": [
        {"type": "leviathan-cni", "cen": "bench", "server": format!("unix://{}", sock.display())}]});
    std::fs::write(&list, conf.to_string()).expect("conflist");
    settle(reference_ns, &ours);
    let lev = measure(&driver, &cni_path, &dir.join("lev"), &list, &ours);
    let ready = gql(&sock, "{ containers(cenId: \"bench\") { status } }");
    assert_eq!(ready.matches("READY").count(), SEQUENTIAL + BURST, "all READY: {ready}");
    guard.stop_server();
    cleanup(&ours, &server);
    let phase_text = phase_log.map(|p| std::fs::read_to_string(p).expect("server log"));
    if let (Some(text), Ok(keep)) = (&phase_text, std::env::var("LEVIATHAN_BENCH_LOG")) {
        std::fs::write(&keep, text).expect("a copy of the server log");
    }

    // Debian's reference plugins: bridge + host-local.
    let list = dir.join("reference.conflist");
    let conf = serde_json::json!({"cniVersion": "1.0.0", "name": "ref", "plugins": [
        {"type": "bridge", "bridge": bridge, "isGateway": true,
         "ipam": {"type": "host-local", "subnet": "10.99.0.0/16", "dataDir": dir.join("host-local").display().to_string()}}]});
    std::fs::write(&list, conf.to_string()).expect("conflist");
    settle(reference_ns, &theirs);
    let reference = measure(&driver, &cni_path, &dir.join("ref"), &list, &theirs);
    drop(guard);

    println!("ADD through libcni, {SEQUENTIAL} sequential containers, then {BURST} at once:");
    println!("  {:<28} {:>9} {:>9} {:>12}", "", "p50 ms", "p99 ms", "burst ms");
    for (name, f) in [("leviathan-cni + server", &lev), ("bridge + host-local", &reference)] {
        println!("  {name:<28} {:>9.2} {:>9.2} {:>12.1}", f.p50_ms, f.p99_ms, f.burst_ms);
    }
    println!(
        "  ratio leviathan/reference: p50 {:.2}x  p99 {:.2}x  burst {:.2}x  (target <= 0.5x)",
        lev.p50_ms / reference.p50_ms,
        lev.p99_ms / reference.p99_ms,
        lev.burst_ms / reference.burst_ms
    );
    if let Some(text) = &phase_text {
        print_phases(text, &lev.each_us);
    }
}
