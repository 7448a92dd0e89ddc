//! History benchmark: 100,000 containers (10,000 CENs of 10, imported in
//! 10 large changes), then 100,000 small changes (one `containerSetTag`
//! each, every container once) so that the log keeps 100,000 changes and
//! its oldest kept revision is the imported topology. Measures, in
//! process through the GraphQL schema with SQLite underneath:
//! - an `at` read of one CEN (its members and their tags) at the oldest,
//!   a middle and the newest kept revision: the first (cold) read and the
//!   median of 20 more, against the same read at the current revision
//!   (`cen` on `Query`) as baseline;
//! - cold `at` reads at revisions not read before, spread over the kept
//!   ones (each reads its block's changes after the revision from the
//!   log: the worst case);
//! - a `diff` over the last 1,000 changes;
//! - memory: the heap in use (counted by this bench's allocator: exact,
//!   unlike RSS, which keeps what was freed) after the changes, against
//!   the same import and changes run again in a child process whose log
//!   keeps one change (so its history holds about nothing): the difference
//!   is what the history costs, set against the live topology's own heap
//!   (measured as one copy of it); RSS too, the history's own estimate of
//!   its undo blocks, and the state file's size.
//!
//! The state file is put on tmpfs (`/dev/shm`) where there is one, so the
//! 100,000 commits do not wait for the disk.
//!
//! Run: `cargo bench --bench history` (env BENCH_SCALE=0.1 for a quick run).

use leviathan::model::{CenSpec, Command};
use leviathan::service::{Options, Service};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MEMBERS_PER_CEN: usize = 10;

/// The system allocator, counting the bytes in use.
struct Counting;

static IN_USE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; only
// a counter is kept beside it.
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let p = std::alloc::System.alloc(layout);
        if !p.is_null() {
            IN_USE.fetch_add(layout.size(), std::sync::atomic::Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        std::alloc::System.dealloc(ptr, layout);
        IN_USE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        let p = std::alloc::System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            IN_USE.fetch_add(new_size, std::sync::atomic::Ordering::Relaxed);
            IN_USE.fetch_sub(layout.size(), std::sync::atomic::Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap bytes in use, in KiB.
fn heap_kib() -> u64 {
    (IN_USE.load(std::sync::atomic::Ordering::Relaxed) / 1024) as u64
}
const CEN_BATCH: usize = 1000;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs a query, failing on errors; returns the time it took and its data.
async fn timed(schema: &leviathan::graphql::LeviathanSchema, query: &str, vars: Value) -> (Duration, Value) {
    let req = async_graphql::Request::new(query).variables(async_graphql::Variables::from_json(vars));
    let t = Instant::now();
    let resp = schema.execute(req).await;
    let took = t.elapsed();
    assert!(resp.errors.is_empty(), "{:?}", resp.errors);
    (took, resp.data.into_json().expect("data as JSON"))
}

/// The first run and the median of 20 more.
async fn first_and_p50(schema: &leviathan::graphql::LeviathanSchema, query: &str, vars: Value) -> (Duration, Duration) {
    let (first, _) = timed(schema, query, vars.clone()).await;
    let mut v = Vec::new();
    for _ in 0..20 {
        v.push(timed(schema, query, vars.clone()).await.0);
    }
    (first, median(v))
}

fn file_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).map(|rd| rd.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0)
}

async fn import(schema: &leviathan::graphql::LeviathanSchema, n_cens: usize) {
    let cens: Vec<CenSpec> = (0..n_cens)
        .map(|i| CenSpec {
            id: format!("cen{i}"),
            containers: (0..MEMBERS_PER_CEN).map(|j| format!("c{}", i * MEMBERS_PER_CEN + j)).collect(),
        })
        .collect();
    for chunk in cens.chunks(CEN_BATCH) {
        let items: Vec<Value> = chunk.iter().map(|c| json!({"id": c.id, "containerIds": c.containers})).collect();
        timed(
            schema,
            "mutation($i: CenImportInput!) { cenImport(input: $i) { revision } }",
            json!({"i": {"cens": items}}),
        )
        .await;
    }
}

#[tokio::main]
async fn main() {
    let scale: f64 = std::env::var("BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let n_cens = ((10_000.0 * scale) as usize).max(10);
    let n_containers = n_cens * MEMBERS_PER_CEN;
    // The child run (see the module docs) keeps a log of one change.
    let child_keep: Option<u64> = std::env::var("HISTORY_BENCH_KEEP").ok().and_then(|s| s.parse().ok());
    let keep = child_keep.unwrap_or(n_containers as u64);
    // On tmpfs where there is one: the state file's fsync per commit
    // (synchronous=FULL) would make the 100,000 changes take minutes, and
    // it is not what is measured here.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.unwrap();
    let rss0 = rss_kib();
    let heap0 = heap_kib();
    let opts = Options { keep_changes: keep, ..Options::new("host1") };
    let every = opts.history_every;
    let service = Service::open_with(&dir.path().join("bench.db"), opts).unwrap();
    let schema = leviathan::graphql::schema(Arc::clone(&service));
    let t = Instant::now();
    import(&schema, n_cens).await;
    let import_time = t.elapsed();
    let rss_live = rss_kib();
    println!(
        "history: {n_containers} containers in {n_cens} CENs, imported in {:.2} s; the log keeps {keep}; blocks of {every}",
        import_time.as_secs_f64()
    );

    let t = Instant::now();
    for i in 0..n_containers {
        let cmd = Command::ContainerSetTag { host: "host1".into(), id: format!("c{i}"), tag: Some("tagged".into()) };
        service.execute(cmd).await.expect("tag");
    }
    let changes_time = t.elapsed();
    let rss_changed = rss_kib();
    let heap_changed = heap_kib().saturating_sub(heap0);
    if child_keep.is_some() {
        println!("rss {rss0} {rss_live} {rss_changed} heap {heap0} {}", heap_kib());
        return;
    }
    let (oldest, newest) = service.kept_revisions();
    println!(
        "{n_containers} small changes in {:.2} s ({:.0}/s); kept revisions {oldest}..={newest}",
        changes_time.as_secs_f64(),
        n_containers as f64 / changes_time.as_secs_f64()
    );

    let cen = format!("cen{}", n_cens / 2);
    let live_q = "query($id: ID!) { cen(id: $id) { id size containers { id tag } } }";
    let at_q = "query($r: Int!, $id: ID!) { at(revision: $r) { cen(id: $id) { id size containers { id tag } } } }";
    let (base_first, base_p50) = first_and_p50(&schema, live_q, json!({"id": cen})).await;
    println!();
    println!("{:<40} {:>12} {:>12} {:>10}", "read of one CEN (10 members)", "first ms", "p50 ms", "p50/base");
    println!(
        "{:<40} {:>12.3} {:>12.3} {:>10}",
        "baseline: cen at the current revision",
        ms(base_first),
        ms(base_p50),
        "1.0"
    );
    let middle = oldest + (newest - oldest) / 2;
    let mut worst_p50 = Duration::ZERO;
    let mut worst_cold = Duration::ZERO;
    for (label, rev) in [("oldest", oldest), ("middle", middle), ("newest", newest)] {
        let (first, p50) = first_and_p50(&schema, at_q, json!({"r": rev, "id": cen})).await;
        worst_p50 = worst_p50.max(p50);
        worst_cold = worst_cold.max(first);
        let (_, data) = timed(&schema, at_q, json!({"r": rev, "id": cen})).await;
        let tags: Vec<&Value> = data["at"]["cen"]["containers"].as_array().unwrap().iter().map(|c| &c["tag"]).collect();
        assert_eq!(data["at"]["cen"]["size"], MEMBERS_PER_CEN, "{data}");
        println!(
            "{:<40} {:>12.3} {:>12.3} {:>10.1}",
            format!("at {label} ({rev}; tagged {})", tags.iter().filter(|t| !t.is_null()).count()),
            ms(first),
            ms(p50),
            p50.as_secs_f64() / base_p50.as_secs_f64()
        );
    }
    // Revisions not read before, inside blocks (not at their ends): each
    // read reads the changes of its block after the revision from the log.
    let mut cold = Vec::new();
    for k in 1..=6u64 {
        let rev = oldest + (newest - oldest) * k / 7 + 3;
        cold.push(timed(&schema, at_q, json!({"r": rev, "id": cen})).await.0);
    }
    let cold_p50 = median(cold.clone());
    worst_cold = worst_cold.max(*cold.iter().max().unwrap());
    println!(
        "{:<40} {:>12.3} {:>12.3} {:>10.1}",
        "at, cold revisions (6, spread): max, p50",
        ms(*cold.iter().max().unwrap()),
        ms(cold_p50),
        cold_p50.as_secs_f64() / base_p50.as_secs_f64()
    );
    // For scale: what a read that copied the topology would pay.
    let mut copies = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let copy = service.read(|t| t.clone());
        copies.push(t.elapsed());
        drop(copy);
    }
    println!("{:<40} {:>12.3} {:>12.3}", "reference: one copy of the live topology", ms(copies[0]), ms(median(copies)));
    let diff_q = "query($f: Int!, $t: Int!) { diff(from: $f, to: $t, first: 1000) { kind id op } }";
    let from = newest.saturating_sub(1000).max(oldest);
    let (d_first, d_p50) = first_and_p50(&schema, diff_q, json!({"f": from, "t": newest})).await;
    let (_, d) = timed(&schema, diff_q, json!({"f": from, "t": newest})).await;
    println!(
        "{:<40} {:>12.3} {:>12.3} {:>10.1}",
        format!("diff over {} changes ({} entries)", newest - from, d["diff"].as_array().unwrap().len()),
        ms(d_first),
        ms(d_p50),
        d_p50.as_secs_f64() / base_p50.as_secs_f64()
    );

    // The live topology's own heap: one copy of it.
    let before = heap_kib();
    let copy = service.read(|t| t.clone());
    let topology = heap_kib().saturating_sub(before);
    drop(copy);
    let heap = [heap_changed, topology];
    report_memory(&service, dir.path(), n_containers, [rss0, rss_live, rss_changed], heap, [worst_p50, worst_cold]);
}

/// Prints the memory figures and the targets; `rss` is the RSS at the
/// start, after the import and after the changes, `heap` the heap grown
/// over the import and changes and the live topology's (KiB); `worst` the
/// worst p50 and cold `at` reads.
fn report_memory(
    service: &Service,
    dir: &std::path::Path,
    n_containers: usize,
    rss: [u64; 3],
    heap: [u64; 2],
    worst: [Duration; 2],
) {
    let [rss0, rss_live, rss_changed] = rss;
    let [heap_changed, topology] = heap;
    let [worst_p50, worst_cold] = worst;
    let stats = service.history_stats();
    let rss_end = rss_kib();
    let child = without_history();
    let history = heap_changed.saturating_sub(child.heap);
    println!();
    println!("memory (heap in use, counted; RSS growth beside):");
    println!("  the live topology (one copy of it)      {:>8.1} MiB", mib(topology));
    println!(
        "  after the import and {n_containers} changes      {:>8.1} MiB  (RSS {:.1} MiB; after the import {:.1} MiB)",
        mib(heap_changed),
        mib(rss_changed.saturating_sub(rss0)),
        mib(rss_live.saturating_sub(rss0))
    );
    println!(
        "  the same, the log keeping 1 change      {:>8.1} MiB  (RSS {:.1} MiB; child process: no history)",
        mib(child.heap),
        mib(child.rss)
    );
    println!(
        "  the history (the difference)            {:>8.1} MiB: {:.2}x the live topology",
        mib(history),
        history as f64 / topology.max(1) as f64
    );
    println!(
        "  undo blocks (the snapshots), estimated  {:>8.1} MiB in {} blocks, {} images",
        stats.bytes as f64 / 1048576.0,
        stats.blocks,
        stats.images
    );
    println!("  per-object index                        {} revisions of {} objects", stats.revisions, stats.records);
    println!(
        "  changes held for reads                  {} of the block being filled, {} of blocks read from the log",
        stats.recent, stats.logged
    );
    println!(
        "  after the reads (nothing materialized)  heap {:>8.1} MiB, RSS +{:.1} MiB",
        mib(heap_kib()),
        mib(rss_end.saturating_sub(rss_changed))
    );
    println!(
        "state file: {:.1} MiB (the history keeps nothing on disk: the same with or without its snapshots)",
        file_size(dir) as f64 / 1048576.0
    );
    println!(
        "targets: at p50 of 20 <= 50 ms: {} (worst {:.3} ms); cold at read <= 50 ms: {} (worst {:.3} ms); \
         history memory <= 1x live: {} ({:.2}x)",
        if ms(worst_p50) <= 50.0 { "met" } else { "missed" },
        ms(worst_p50),
        if ms(worst_cold) <= 50.0 { "met" } else { "missed" },
        ms(worst_cold),
        if history <= topology { "met" } else { "missed" },
        history as f64 / topology.max(1) as f64
    );
}

/// What the child run (see the module docs) grew by, in KiB.
struct Child {
    heap: u64,
    rss: u64,
}

/// The same import and changes in a child process whose log keeps one
/// change.
fn without_history() -> Child {
    let exe = std::env::current_exe().expect("the bench's own path");
    let out = std::process::Command::new(exe)
        .args(std::env::args().skip(1))
        .env("HISTORY_BENCH_KEEP", "1")
        .output()
        .expect("the child run");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find_map(|l| l.strip_prefix("rss ")).unwrap_or_else(|| panic!("child said: {text}"));
    let v: Vec<u64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    Child { heap: v[4].saturating_sub(v[3]), rss: v[2].saturating_sub(v[0]) }
}
