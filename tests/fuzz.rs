//! A fuzz run over the GraphQL endpoint of the real binary.
//!
//! proptest strategies generate operations over a small pool of valid ids
//! (so most mutations succeed and build a topology to query), with a few
//! invalid ids and out-of-range numbers among them; queries are random
//! selections over the schema's types with random `first`/`after`. Four
//! clients send them at once for `LEVIATHAN_FUZZ_SECS` seconds (default 60;
//! `LEVIATHAN_FUZZ_SEED` replays a run). It ends with no 5xx and no
//! `INTERNAL` error, the process alive and answering `/healthz`, and its
//! resident memory (VmRSS) under a bound throughout.

mod common;

use common::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest resident memory the server may reach during the run.
const RSS_BOUND_KIB: u64 = 256 * 1024;
const CLIENTS: usize = 4;

fn pick(prefix: &'static str, n: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        30 => (0..n).prop_map(move |i| format!("{prefix}{i}")),
        1 => prop_oneof![
            Just("-bad".to_string()),
            Just("x".repeat(65)),
            Just("a/b".to_string()),
            Just(String::new()),
            "[a-z0-9_.-]{1,10}",
        ],
    ]
}

fn container() -> impl Strategy<Value = String> {
    pick("c", 40)
}
fn cen() -> impl Strategy<Value = String> {
    pick("n", 12)
}
fn cin() -> impl Strategy<Value = String> {
    pick("i", 6)
}
fn pool() -> impl Strategy<Value = String> {
    pick("p", 4)
}
fn tag() -> impl Strategy<Value = Option<String>> {
    prop_oneof![Just(None), Just(Some("web".to_string())), Just(Some("db".to_string())), Just(Some(" ".to_string()))]
}
fn first() -> impl Strategy<Value = Option<i64>> {
    prop_oneof![4 => Just(None), 4 => (0i64..6).prop_map(Some), 1 => Just(Some(-1)), 1 => Just(Some(1 << 40))]
}

/// `(query, variables)`.
type Gql = (String, Value);

fn mutation() -> impl Strategy<Value = Gql> {
    let m = |q: &str, v: Value| (format!("mutation($i: {q}Input!) {{ {}(input: $i) {{ revision }} }}", lower(q)), v);
    prop_oneof![
        (cen(), prop::collection::vec(container(), 0..6))
            .prop_map(move |(id, cs)| m("CenImport", json!({"i": {"cens": [{"id": id, "containerIds": cs}]}}))),
        cen().prop_map(move |id| m("CenCreate", json!({"i": {"id": id}}))),
        cen().prop_map(move |id| m("CenDelete", json!({"i": {"id": id}}))),
        (prop::collection::vec(cen(), 0..3), any::<bool>())
            .prop_map(move |(ids, make)| m(if make { "CenMake" } else { "CenDestroy" }, json!({"i": {"ids": ids}}))),
        (cin(), prop::collection::vec(cen(), 0..3))
            .prop_map(move |(id, cens)| m("CinImport", json!({"i": {"cins": [{"id": id, "cenIds": cens}]}}))),
        cin().prop_map(move |id| m("CinDelete", json!({"i": {"id": id}}))),
        (prop::collection::vec(cin(), 0..3), any::<bool>())
            .prop_map(move |(ids, make)| m(if make { "CinMake" } else { "CinDestroy" }, json!({"i": {"ids": ids}}))),
        (container(), tag()).prop_map(move |(id, t)| m("ContainerCreate", json!({"i": {"id": id, "tag": t}}))),
        container().prop_map(move |id| m("ContainerDelete", json!({"i": {"id": id}}))),
        (container(), tag()).prop_map(move |(id, t)| m("ContainerSetTag", json!({"i": {"id": id, "tag": t}}))),
        (container(), cen(), any::<bool>()).prop_map(move |(c, n, join)| m(
            if join { "ContainerJoinCen" } else { "ContainerLeaveCen" },
            json!({"i": {"containerId": c, "cenId": n}})
        )),
        (
            pool(),
            prop_oneof![9 => 0i64..6, 1 => Just(-3i64), 1 => Just(1i64 << 40)],
            prop::collection::vec((cin(), any::<bool>()), 0..3)
        )
            .prop_map(move |(id, n, cins)| {
                let cins: Vec<Value> = cins.into_iter().map(|(c, d)| json!({"cinId": c, "defaultRoute": d})).collect();
                m(
                    "CpoolImport",
                    json!({"i": {"pools": [{"id": id, "type": "ubuntu:14.04", "startWith": n, "cins": cins}]}}),
                )
            }),
        pool().prop_map(move |id| m("CpoolDelete", json!({"i": {"id": id}}))),
    ]
}

fn lower(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_ascii_lowercase().to_string() + c.as_str()).unwrap_or_default()
}

/// `(first: N, after: "A")`, or nothing.
fn page() -> impl Strategy<Value = String> {
    (first(), prop_oneof![3 => Just(None), 1 => container().prop_map(Some), 1 => cen().prop_map(Some)]).prop_map(
        |(f, a)| {
            let mut args = Vec::new();
            if let Some(f) = f {
                args.push(format!("first: {f}"));
            }
            if let Some(a) = a {
                args.push(format!("after: {}", Value::String(a)));
            }
            if args.is_empty() {
                String::new()
            } else {
                format!("({})", args.join(", "))
            }
        },
    )
}

#[derive(Clone, Copy, Debug)]
enum Ty {
    Cen,
    Container,
    Cin,
    Cpool,
    Host,
}

/// A selection set on `ty`, nesting up to `depth` more lists.
fn selection(ty: Ty, depth: u32) -> BoxedStrategy<String> {
    let scalars: &'static [&'static str] = match ty {
        Ty::Cen => &["id", "wiringType", "size", "made", "status", "statusMessage"],
        Ty::Container => &[
            "id",
            "tag",
            "netnsPath",
            "status",
            "statusMessage",
            "host { id }",
            "interfaces { name address addresses { cinId address prefixLength } cen { id } }",
            "defaultRoute { via cinId cenId gateway }",
            "pool { id type startWith }",
        ],
        Ty::Cin => &["id", "subnet", "gateways", "made", "status", "slices { cenId subnet gateway }"],
        Ty::Cpool => &["id", "type", "startWith", "cins { cinId defaultRoute }"],
        Ty::Host => &["id"],
    };
    let leaf = prop::sample::subsequence(scalars, 1..=scalars.len().min(4)).prop_map(|v| v.join(" "));
    if depth == 0 {
        return leaf.prop_map(|s| format!("{{ {s} }}")).boxed();
    }
    let nested: Vec<(&'static str, Ty)> = match ty {
        Ty::Cen => vec![("containers", Ty::Container), ("cins", Ty::Cin)],
        Ty::Container => vec![("cens", Ty::Cen), ("cins", Ty::Cin)],
        Ty::Cin => vec![("cens", Ty::Cen), ("members", Ty::Container)],
        Ty::Cpool => vec![("containers", Ty::Container)],
        Ty::Host => vec![("containers", Ty::Container)],
    };
    let subs: Vec<BoxedStrategy<String>> = nested
        .into_iter()
        .map(|(field, t)| {
            let inner = if field == "members" {
                // Cin.members are { container address prefixLength cen }.
                selection(Ty::Container, depth - 1)
                    .prop_map(|s| format!("{{ address prefixLength container {s} cen {{ id }} }}"))
                    .boxed()
            } else {
                selection(t, depth - 1)
            };
            (page(), inner).prop_map(move |(p, s)| format!("{field}{p} {s}")).boxed()
        })
        .collect();
    (leaf, prop::collection::vec(prop::strategy::Union::new(subs), 0..2))
        .prop_map(|(l, subs)| format!("{{ {l} {} }}", subs.join(" ")))
        .boxed()
}

fn query() -> impl Strategy<Value = Gql> {
    let d = 0u32..3;
    fn q(s: String) -> Gql {
        (format!("{{ {s} }}"), json!({}))
    }
    prop_oneof![
        (page(), d.clone()).prop_flat_map(|(p, d)| selection(Ty::Cen, d).prop_map(move |s| q(format!("cens{p} {s}")))),
        (cen(), d.clone())
            .prop_flat_map(|(id, d)| selection(Ty::Cen, d)
                .prop_map(move |s| q(format!("cen(id: {}) {s}", Value::String(id.clone()))))),
        (page(), tag(), d.clone()).prop_flat_map(|(p, t, d)| selection(Ty::Container, d).prop_map(move |s| {
            let tag = t.as_ref().map(|t| format!("(tag: {})", Value::String(t.clone()))).unwrap_or_default();
            q(format!("containers{p} {s} count: containerCount{tag}"))
        })),
        (container(), d.clone()).prop_flat_map(|(id, d)| selection(Ty::Container, d)
            .prop_map(move |s| q(format!("container(id: {}) {s}", Value::String(id.clone()))))),
        (cin(), d.clone())
            .prop_flat_map(|(id, d)| selection(Ty::Cin, d)
                .prop_map(move |s| q(format!("cin(id: {}) {s}", Value::String(id.clone()))))),
        (page(), d.clone()).prop_flat_map(|(p, d)| selection(Ty::Cin, d).prop_map(move |s| q(format!("cins{p} {s}")))),
        (page(), d.clone())
            .prop_flat_map(|(p, d)| selection(Ty::Cpool, d).prop_map(move |s| q(format!("cpools{p} {s}")))),
        (page(), d).prop_flat_map(|(p, d)| selection(Ty::Host, d).prop_map(move |s| q(format!("hosts{p} {s}")))),
        Just(q("revision version hostId hostCount containerCount cenCount cinCount cpoolCount".into())),
    ]
}

fn operation() -> impl Strategy<Value = Gql> {
    prop_oneof![3 => mutation(), 2 => query()]
}

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    mutations_ok: AtomicU64,
    mutations: AtomicU64,
    refused: AtomicU64,
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server process is gone");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `n` operations (the strategies are not `Send`: they live only here).
fn generate(runner: &mut TestRunner, n: usize) -> Vec<Gql> {
    let strategy = operation();
    (0..n).map(|_| strategy.new_tree(runner).expect("a generated operation").current()).collect()
}

/// One client: sends generated operations until `end`; panics on a 5xx
/// or an `INTERNAL` error.
async fn client(s: Arc<Server>, seed: [u8; 32], end: Instant, tally: Arc<Tally>) {
    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    let mut batch = Vec::new();
    while Instant::now() < end {
        if batch.is_empty() {
            batch = generate(&mut runner, 50);
        }
        let (query, variables) = batch.pop().unwrap();
        let resp = s
            .http
            .post(s.url("/graphql"))
            .json(&json!({"query": query, "variables": variables}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("the server did not answer {query} {variables}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        tally.requests.fetch_add(1, Ordering::Relaxed);
        assert!(status < 500, "{status} for {query} {variables}: {text}");
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        let errors = body["errors"].as_array().cloned().unwrap_or_default();
        for e in &errors {
            assert_ne!(e["extensions"]["code"], "INTERNAL", "INTERNAL for {query} {variables}: {text}");
        }
        if !errors.is_empty() {
            tally.refused.fetch_add(1, Ordering::Relaxed);
        }
        if query.starts_with("mutation") {
            tally.mutations.fetch_add(1, Ordering::Relaxed);
            if errors.is_empty() {
                tally.mutations_ok.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn seed() -> u64 {
    match std::env::var("LEVIATHAN_FUZZ_SEED") {
        Ok(s) => s.parse().expect("LEVIATHAN_FUZZ_SEED: a number"),
        Err(_) => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzz_the_graphql_endpoint() {
    let secs: u64 =
        std::env::var("LEVIATHAN_FUZZ_SECS").map(|s| s.parse().expect("LEVIATHAN_FUZZ_SECS: seconds")).unwrap_or(60);
    let seed = seed();
    eprintln!("fuzz: {secs} s, {CLIENTS} clients, LEVIATHAN_FUZZ_SEED={seed}");
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(Server::start(&dir.path().join("state.db"), &[]));
    let pid = s.child.id();
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let end = started + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for k in 0..CLIENTS {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        bytes[8] = k as u8;
        tasks.push(tokio::spawn(client(Arc::clone(&s), bytes, end, Arc::clone(&tally))));
    }
    // Resident memory, sampled while the clients run.
    let mut max_rss = rss_kib(pid);
    while !tasks.iter().all(|t| t.is_finished()) {
        max_rss = max_rss.max(rss_kib(pid));
        assert!(max_rss < RSS_BOUND_KIB, "the server's resident memory reached {max_rss} KiB");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for t in tasks {
        if let Err(e) = t.await {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    let final_rss = rss_kib(pid);
    max_rss = max_rss.max(final_rss);
    let health = s.http.get(s.url("/healthz")).send().await.expect("the server answers after the run");
    assert_eq!(health.status().as_u16(), 200);
    let topology = s.gql("{ revision hostCount containerCount cenCount cinCount cpoolCount }", json!({})).await;
    let (requests, mutations, ok) = (
        tally.requests.load(Ordering::Relaxed),
        tally.mutations.load(Ordering::Relaxed),
        tally.mutations_ok.load(Ordering::Relaxed),
    );
    eprintln!(
        "fuzz: {requests} requests in {:.0} s ({} answered with errors), {ok} of {mutations} mutations \
         succeeded; topology at the end {topology}; server RSS max {max_rss} KiB, at the end {final_rss} KiB",
        started.elapsed().as_secs_f64(),
        tally.refused.load(Ordering::Relaxed),
    );
    assert!(requests > 0);
    // Valid ids most of the time: most mutations do something.
    assert!(ok * 3 >= mutations, "only {ok} of {mutations} mutations succeeded");
}
