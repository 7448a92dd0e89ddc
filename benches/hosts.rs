//! Many hosts (needs root and etcd): three "hosts" on one machine, as the
//! tests build them (`tests/common/hosts.rs`: network namespaces on an
//! underlay bridge, an etcd member and a `leviathan serve --etcd ...
//! --vtep-address ...` in each).
//!
//! In the same run, on the same cluster:
//! - make 999 containers (111 bridged CENs of 9, a /24 CIN over each) all
//!   on one host, and 999 spread over the three hosts (each CEN with 3
//!   members on each host, so every CEN spans the three with VXLAN), in
//!   rounds (`LEVIATHAN_BENCH_ROUNDS`, 3) whose order alternates (one host
//!   first, then three hosts first, ...; the last make is over three
//!   hosts); each make is torn down before the next, and the next starts
//!   once the kernel has freed the deleted namespaces and its workers are
//!   idle (freeing 999 namespaces takes the kernel seconds, under the RTNL
//!   lock: overlapping the next make, it would be charged to that make's
//!   servers, see [`teardown`]). Per make: wall time from the
//!   `cinMake` request through GraphQL until every server shows its
//!   containers, CENs and CINs READY and every host's fabric holds its
//!   bridges, VXLAN devices and member veths, up; each server's CPU time
//!   (user + system) during it. Per round: the ratio spread / one host of
//!   the wall time and of the busiest server's CPU over three hosts to the
//!   one-host server's (the wall time shares this machine's two cores, so
//!   CPU per server is the honest figure); then every round's CPU ratio,
//!   the worst and the median. Each round makes both twice: the servers
//!   at once, and isolated (each server realizes its part alone while the
//!   others are stopped, see [`make`]: the servers share one kernel's RTNL
//!   lock here, separate hosts would not), and both ratios are printed;
//! - mount setup: as root, the benchmark runs in a mount namespace of its
//!   own with a fresh tmpfs on `/run/netns` (servers, etcd and `ip` are its
//!   children, so all see the same one), as on a host whose `/run` is a
//!   tmpfs: on a disk file system each namespace file made pays for the
//!   files removed in the minutes before (see [`private_run_netns`]);
//! - the round-trip time of a ping between two containers of one CEN on
//!   one host, against two on different hosts (over VXLAN): the median of
//!   100 echoes (5 alternating runs of `ping -c 20 -i 0.01` each way), and
//!   the ratio across / within;
//! - 1,000 unicast pings (flood mode) between a member on h1 and one on h2
//!   of a CEN that spans the three hosts: the packets the third host's
//!   VXLAN device of that CEN received meanwhile (exact forwarding: one
//!   FDB entry per remote member MAC), against the second host's.
//!
//! - first, on stock etcd (its default limits) and on loopback (needs etcd
//!   only): one `cenImport` of 10,000 CENs of 10 containers through one of
//!   three servers: wall time until it is acknowledged and until the three
//!   show the same revision and state, the largest etcd request sent (bytes
//!   and operations, from `/metrics`), against the same import on SQLite
//!   (one server) as the baseline.
//!
//! Run: `cargo bench --bench hosts` (`-- stock`: the import on stock etcd
//! only; `-- make`: all but it; `LEVIATHAN_BENCH_PERF=DIR`: a `perf
//! record` of each server during each make, in DIR, as
//! `<one|three><round>-<host>.data`). Under `cargo test --all-targets` (no
//! `--bench` argument) it only says so and exits.

#[path = "../tests/common/hosts.rs"]
mod hosts;
#[path = "../tests/common/kernel.rs"]
mod kernel;

use hosts::{Cluster, Host, Options};
use leviathan::realize::vxlan_name;
use serde_json::{json, Value};
use std::process::Command;
use std::time::{Duration, Instant};

/// CENs of each run, and members of each CEN.
const CENS: usize = 111;
const SIZE: usize = 9;
/// Rounds of the two makes (`LEVIATHAN_BENCH_ROUNDS`, 1 to 9).
const ROUNDS: usize = 3;
/// Bound of every wait in the benchmark (only there to catch a hang).
const BOUND: Duration = Duration::from_secs(900);

const CEN_IMPORT: &str = "mutation($input: CenImportInput!) { cenImport(input: $input) { revision } }";
const CIN_IMPORT: &str = "mutation($input: CinImportInput!) { cinImport(input: $input) { revision } }";
const CIN_MAKE: &str =
    "mutation($ids: [ID!]!, $wait: Boolean!) { cinMake(input: {ids: $ids, wait: $wait}) { revision cins { status } } }";

/// The host of member `i` of a CEN: all on h1, or round robin.
fn host_of(spread: bool, i: usize) -> String {
    if spread {
        format!("h{}", i % 3 + 1)
    } else {
        "h1".to_string()
    }
}

/// Imports the CENs `<tag><g>` (members `<tag><g>x<i>`) and a CIN over each.
async fn import(cl: &Cluster, tag: &str, spread: bool) {
    for h in &cl.hosts {
        let cens: Vec<Value> = (0..CENS)
            .map(|g| {
                let members: Vec<String> =
                    (0..SIZE).filter(|i| host_of(spread, *i) == h.id).map(|i| format!("{tag}{g}x{i}")).collect();
                json!({"id": format!("{tag}{g}"), "containerIds": members})
            })
            .collect();
        if cens.iter().any(|c| !c["containerIds"].as_array().is_some_and(Vec::is_empty)) {
            cl.hosts[0].gql(CEN_IMPORT, json!({"input": {"hostId": h.id, "cens": cens}})).await;
        }
    }
    let cins: Vec<Value> =
        (0..CENS).map(|g| json!({"id": format!("n{tag}{g}"), "cenIds": [format!("{tag}{g}")]})).collect();
    cl.hosts[0].gql(CIN_IMPORT, json!({"input": {"cins": cins}})).await;
}

/// The links of a host's fabric that are up: (bridges, VXLAN devices,
/// veths in a bridge).
fn fabric_counts(h: &Host) -> (usize, usize, usize) {
    let v = kernel::ip_json(&["-d", "-n", &h.fabric(), "link", "show", "up"]);
    let (mut bridges, mut vxlans, mut veths) = (0, 0, 0);
    for l in v.as_array().into_iter().flatten() {
        match l["linkinfo"]["info_kind"].as_str() {
            Some("bridge") => bridges += 1,
            Some("vxlan") => vxlans += 1,
            Some("veth") if l["master"].is_string() => veths += 1,
            _ => {}
        }
    }
    (bridges, vxlans, veths)
}

/// What host `h`'s fabric holds once its part of the make is there:
/// (bridges, VXLAN devices, member veths), see [`fabric_counts`].
fn fabric_wanted(h: &Host, spread: bool) -> (usize, usize, usize) {
    let members = (0..SIZE).filter(|i| host_of(spread, *i) == h.id).count() * CENS;
    match (spread, members) {
        (_, 0) => (0, 0, 0),
        (true, _) => (CENS, CENS, members),
        (false, _) => (CENS, 0, members),
    }
}

/// Waits (watching the kernel with `ip`, which costs the servers nothing)
/// until `h`'s fabric holds its part of the make.
async fn wait_fabric(h: &Host, spread: bool, t: Instant) {
    let want = fabric_wanted(h, spread);
    while fabric_counts(h) != want {
        assert!(t.elapsed() < BOUND, "{}: fabric {:?}, not {want:?}", h.id, fabric_counts(h));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `h` shows each CEN and CIN of `tag` READY (a CEN is READY
/// once every member is wired on every host), or with `own_part` only its
/// own part of each: its `hostStatuses` entry, its containers' wiring
/// included (a CEN that spans no hosts has none, then its own status
/// counts; a CEN with no part on `h` asks nothing of it; a container's own
/// status waits for every host of its CENs, so containers are not asked).
/// Not the harness's `wait_ready`: that lists every container of a host,
/// and the containers of every earlier make stay defined, so its answer
/// (and the CPU the servers spend on it, counted as the make's) would grow
/// round by round, most on h1, which holds the one-host makes' containers
/// too.
async fn wait_ready_of(h: &Host, tag: &str, own_part: bool, t: Instant) {
    let q = if own_part {
        "{ cens { id status hostStatuses { hostId status } } cins { id status hostStatuses { hostId status } } }"
    } else {
        "{ cens { id status } cins { id status } }"
    };
    let status = |x: &Value| -> Value {
        let parts = x["hostStatuses"].as_array().map(Vec::as_slice).unwrap_or_default();
        match parts.iter().find(|p| p["hostId"] == json!(h.id)) {
            _ if !own_part || parts.is_empty() => x["status"].clone(),
            Some(p) => p["status"].clone(),
            None => json!("READY"),
        }
    };
    let cin_prefix = format!("n{tag}");
    loop {
        let d = h.gql(q, json!({})).await;
        let mut waiting = 0;
        for (k, prefix) in [("cens", tag), ("cins", cin_prefix.as_str())] {
            for x in d[k].as_array().into_iter().flatten() {
                if x["id"].as_str().is_some_and(|i| i.starts_with(prefix)) {
                    let st = status(x);
                    assert_ne!(st, json!("FAILED"), "on {}: {x}", h.id);
                    waiting += usize::from(st != json!("READY"));
                }
            }
        }
        if waiting == 0 {
            return;
        }
        assert!(t.elapsed() < BOUND, "{}: {waiting} CENs and CINs of {tag} not READY", h.id);
        tokio::time::sleep(Duration::from_millis(if own_part { 50 } else { 100 })).await;
    }
}

/// Stops (SIGSTOP) or continues (SIGCONT) a host's server.
fn signal(h: &Host, sig: libc::c_int) {
    let pid = h.server_pid().expect("the server runs");
    // SAFETY: kill only sends a signal to a child of ours.
    let r = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig})");
}

/// Makes the CINs `n<tag>*` through h1's server and waits until they are
/// READY everywhere and every host's fabric has its part; the wall time.
///
/// `isolated`: each server realizes its part while the others are stopped
/// (SIGSTOP), one after the other (h1, then h2, then h3), as on hosts that
/// share no kernel. On this machine the three servers share one kernel,
/// whose RTNL lock serializes every link create: run at once, a server
/// spins on that lock (`mutex_spin_on_owner`) while another's create holds
/// it, and that spinning is charged to its CPU although separate hosts
/// would never wait for each other's lock. The wall time of an isolated
/// make is the sum of the parts, not a figure of its own.
async fn make(cl: &Cluster, tag: &str, spread: bool, isolated: bool) -> Duration {
    let ids: Vec<String> = (0..CENS).map(|g| format!("n{tag}{g}")).collect();
    let t = Instant::now();
    if isolated {
        for h in &cl.hosts[1..] {
            signal(h, libc::SIGSTOP);
        }
        cl.hosts[0].gql(CIN_MAKE, json!({"ids": ids, "wait": false})).await;
        for (n, h) in cl.hosts.iter().enumerate() {
            if n > 0 {
                signal(h, libc::SIGCONT);
            }
            wait_fabric(h, spread, t).await;
            wait_ready_of(h, tag, true, t).await;
            if n + 1 < cl.hosts.len() {
                signal(h, libc::SIGSTOP);
            }
        }
        for h in &cl.hosts[..cl.hosts.len() - 1] {
            signal(h, libc::SIGCONT);
        }
        // The servers let go on catch up on the others' statuses first;
        // asked for every container's status meanwhile (below), they would
        // spend on answering the bench CPU that is counted as the make's.
        // Their revision is asked instead, which costs them next to nothing.
        let last = cl.hosts[cl.hosts.len() - 1].gql("{ revision }", json!({})).await["revision"].as_i64();
        for h in &cl.hosts {
            while h.gql("{ revision }", json!({})).await["revision"].as_i64() < last {
                assert!(t.elapsed() < BOUND, "{}: not caught up with revision {last:?}", h.id);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    } else {
        let d = cl.hosts[0].gql(CIN_MAKE, json!({"ids": ids, "wait": true})).await;
        assert_eq!(d["cinMake"]["cins"].as_array().map(Vec::len), Some(CENS));
        // The kernel is watched first, then the statuses are asked once it
        // is all there: asked every 100 ms meanwhile, the servers would
        // spend on answering the bench (a list of every container) CPU
        // that is counted as the make's.
        for h in &cl.hosts {
            wait_fabric(h, spread, t).await;
        }
    }
    for h in &cl.hosts {
        wait_ready_of(h, tag, false, t).await;
    }
    t.elapsed()
}

/// One measured make.
struct Run {
    wall: Duration,
    /// CPU seconds of each server (h1 h2 h3) during the make.
    cpu: Vec<f64>,
}

/// Imports the CENs and CINs of `tag`, then makes them (see [`make`]) while
/// measuring each server's CPU; prints and returns the figures.
async fn measured_make(cl: &Cluster, tag: &str, spread: bool, isolated: bool, round: usize) -> Run {
    import(cl, tag, spread).await;
    let r0 = revision(cl).await;
    let (hosts, alone) = if isolated { ("-isolated", ", isolated") } else { ("", "") };
    let what = format!("{}{hosts}{round}", if spread { "three" } else { "one" });
    let (cpu, wall) = cpu_during(cl, &what, make(cl, tag, spread, isolated)).await;
    let label = format!("{}{alone}:", if spread { "over three hosts" } else { "on one host" });
    println!("round {round}: make 999 containers {label:<29}{:>8.2} s", wall.as_secs_f64());
    println!("  CPU per server (h1 h2 h3):                    {cpu:>8.2?} s");
    println!("  changes committed meanwhile:                  {:>8}", revision(cl).await - r0);
    Run { wall, cpu }
}

/// Destroys the CINs and CENs of `tag` and waits until every host has taken
/// its part down (fabric empty, no namespace of the host's prefix but the
/// fabric's), the kernel has freed the namespaces (back to `reference`,
/// see [`kernel::settle`]) and its workers are idle:
/// the next make starts on a quiet machine, not while the kernel is still
/// tearing down the last one under the same locks.
async fn teardown(cl: &Cluster, tag: &str, reference: u64) {
    let t = Instant::now();
    let ids: Vec<String> = (0..CENS).map(|g| format!("n{tag}{g}")).collect();
    cl.hosts[0]
        .gql("mutation($ids: [ID!]!) { cinDestroy(input: {ids: $ids}) { revision } }", json!({"ids": ids}))
        .await;
    let ids: Vec<String> = (0..CENS).map(|g| format!("{tag}{g}")).collect();
    cl.hosts[0]
        .gql("mutation($ids: [ID!]!) { cenDestroy(input: {ids: $ids}) { revision } }", json!({"ids": ids}))
        .await;
    for h in &cl.hosts {
        let fabric = h.fabric();
        while fabric_counts(h) != (0, 0, 0) || kernel::namespaces(&h.prefix.0).iter().any(|n| *n != fabric) {
            assert!(t.elapsed() < BOUND, "{}: {tag} not torn down", h.id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let taken = t.elapsed();
    let flush = format!("{}flush", cl.net.0);
    let (freed, idle) = tokio::task::block_in_place(|| kernel::settle(reference, &flush, BOUND - taken));
    println!(
        "  {tag} torn down in {:.2} s, its namespaces freed after {:.2} s, kernel workers idle after {:.2} s",
        taken.as_secs_f64(),
        (taken + freed).as_secs_f64(),
        (taken + idle).as_secs_f64()
    );
}

/// Moves the benchmark (and every process it starts later: etcd, servers,
/// `ip`) into a mount namespace of its own with a fresh tmpfs on
/// `/run/netns`, as on a host where `/run` is a tmpfs. Where `/run/netns`
/// sits on a disk file system (ext4 here), creating a namespace file
/// searches past the inodes freed in the last minutes, so each make would
/// pay for the removals before it (and the order of the makes would decide
/// the ratio). Mounts are private first, so nothing propagates back to the
/// machine's namespace; everything bound there goes with the namespace.
/// Must run while the process has one thread (`unshare` applies to the
/// calling thread).
fn private_run_netns() {
    use nix::mount::{mount, MsFlags};
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .expect("making every mount private");
    std::fs::create_dir_all("/run/netns").expect("mkdir /run/netns");
    mount(Some("tmpfs"), "/run/netns", Some("tmpfs"), MsFlags::empty(), Some("mode=0755"))
        .expect("tmpfs on /run/netns");
}

/// The revision of the shared log, as h1 knows it.
async fn revision(cl: &Cluster) -> i64 {
    cl.hosts[0].gql("{ revision }", json!({})).await["revision"].as_i64().expect("revision")
}

/// The address of a container on a CIN.
async fn address(cl: &Cluster, host: &str, id: &str) -> String {
    let d = cl.hosts[0]
        .gql(
            "query($h: ID!, $id: ID!) { container(hostId: $h, id: $id) { interfaces { address } } }",
            json!({"h": host, "id": id}),
        )
        .await;
    d["container"]["interfaces"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("{host}/{id} has no address: {d}"))
        .to_string()
}

/// Round-trip times (ms) of `ping -c 20 -i 0.01` from a namespace.
fn rtts(from_ns: &str, to: &str) -> Vec<f64> {
    let out = Command::new("ip")
        .args(["netns", "exec", from_ns, "ping", "-n", "-c", "20", "-i", "0.01", "-W", "1", to])
        .output()
        .expect("ping");
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(!v.is_empty(), "no answer from {to} to {from_ns}:\n{text}");
    v
}

/// CPU time (user + system) a server has used so far, in seconds.
fn cpu(h: &Host) -> f64 {
    let pid = h.server_pid().expect("the server runs");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // Fields after the command name (which may hold spaces): utime and
    // stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest.split_whitespace().skip(11).take(2).filter_map(|x| x.parse().ok()).collect();
    // SAFETY: sysconf only reads a constant of the system.
    let tick = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        t if t > 0 => t as f64,
        _ => 100.0,
    };
    f.iter().sum::<u64>() as f64 / tick
}

/// Each server's CPU seconds while `work` runs, and what it returned.
/// With `LEVIATHAN_BENCH_PERF=DIR`, each server is also profiled meanwhile
/// (`perf record -F 2000 --call-graph fp -p PID -o DIR/<what>-<host>.data`;
/// `LEVIATHAN_BENCH_PERF_ARGS` replaces what comes before `-p`, e.g.
/// `stat -e syscalls:sys_enter_sendto`).
async fn cpu_during<T>(cl: &Cluster, what: &str, work: impl std::future::Future<Output = T>) -> (Vec<f64>, T) {
    let perf = profile(cl, what);
    let before: Vec<f64> = cl.hosts.iter().map(cpu).collect();
    let out = work.await;
    let used = cl.hosts.iter().zip(before).map(|(h, b)| cpu(h) - b).collect();
    for mut p in perf {
        // SIGINT: perf writes its data and exits.
        // SAFETY: kill only sends a signal to a child of ours.
        unsafe { libc::kill(p.id() as i32, libc::SIGINT) };
        let _ = p.wait();
    }
    (used, out)
}

/// `perf record` on each server when `LEVIATHAN_BENCH_PERF` names a
/// directory (see [`cpu_during`]).
fn profile(cl: &Cluster, what: &str) -> Vec<std::process::Child> {
    let Some(dir) = std::env::var_os("LEVIATHAN_BENCH_PERF") else { return Vec::new() };
    let children: Vec<_> = cl
        .hosts
        .iter()
        .map(|h| {
            let pid = h.server_pid().expect("the server runs").to_string();
            let out = std::path::Path::new(&dir).join(format!("{what}-{}.data", h.id));
            let args = std::env::var("LEVIATHAN_BENCH_PERF_ARGS")
                .unwrap_or_else(|_| "record -q -F 2000 --call-graph fp".to_string());
            Command::new("perf")
                .args(args.split_whitespace())
                .args(["-p", &pid, "-o"])
                .arg(out)
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("perf")
        })
        .collect();
    // perf needs a moment to attach.
    std::thread::sleep(Duration::from_millis(500));
    children
}

/// Packets a link has received (`ip -s`).
fn rx_packets(ns: &str, dev: &str) -> i64 {
    let out = Command::new("ip").args(["-s", "-j", "-n", ns, "link", "show", "dev", dev]).output().expect("ip");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v[0]["stats64"]["rx"]["packets"].as_i64().unwrap_or_else(|| panic!("no counters for {dev} in {ns}"))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A `leviathan serve --no-realize` on loopback with `store` flags; its
/// address.
fn serve(store: &[&str]) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_leviathan"))
        .args(["serve", "--listen", "127.0.0.1:0", "--no-realize", "--max-input-items", "200000"])
        .args(store)
        .env_remove("LEVIATHAN_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start leviathan");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("listening line");
    let addr = line.trim().strip_prefix("listening on ").expect("listening on ...").to_string();
    (child, addr)
}

async fn post(http: &reqwest::Client, addr: &str, query: &str, variables: Value) -> Value {
    let body = json!({"query": query, "variables": variables});
    let v: Value = http.post(format!("http://{addr}/graphql")).json(&body).send().await.unwrap().json().await.unwrap();
    assert!(v.get("errors").is_none(), "{v}");
    v["data"].clone()
}

/// The import of 10,000 CENs of 10 containers: on stock etcd through one
/// of three servers, and on SQLite (see the module docs).
async fn stock_import() {
    let http = reqwest::Client::builder().timeout(BOUND).build().unwrap();
    let cens: Vec<Value> = (0..10_000)
        .map(|g| json!({"id": format!("k{g}"), "containerIds": (0..10).map(|i| format!("k{g}x{i}")).collect::<Vec<_>>()}))
        .collect();
    let vars = json!({"input": {"hostId": "h1", "cens": cens}});
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.db");
    let (mut sqlite, addr) = serve(&["--state", state.to_str().unwrap(), "--host-id", "h1"]);
    let t = Instant::now();
    post(&http, &addr, CEN_IMPORT, vars.clone()).await;
    let base = t.elapsed();
    let _ = sqlite.kill();
    let _ = sqlite.wait();

    let etcd = leviathan::store::testing::EtcdProcess::start("bench-stock");
    let servers: Vec<_> = ["h1", "h2", "h3"].map(|h| serve(&["--etcd", &etcd.client_url, "--host-id", h])).into();
    let t = Instant::now();
    let r = post(&http, &servers[0].1, CEN_IMPORT, vars).await["cenImport"]["revision"].as_i64();
    let acked = t.elapsed();
    let query = "{ revision cens { id size vni } }";
    let first = post(&http, &servers[0].1, query, json!({})).await;
    for (_, addr) in &servers[1..] {
        while post(&http, addr, "{ revision }", json!({})).await["revision"].as_i64() != r {
            assert!(t.elapsed() < BOUND, "{addr} did not reach revision {r:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(post(&http, addr, query, json!({})).await, first, "{addr} differs");
    }
    let converged = t.elapsed();
    let metrics = http.get(format!("http://{}/metrics", servers[0].1)).send().await.unwrap().text().await.unwrap();
    let gauge = |name: &str| -> u64 {
        metrics.lines().find_map(|l| l.strip_prefix(&format!("{name} "))?.trim().parse().ok()).unwrap_or(0)
    };
    let (bytes, ops) = (gauge("leviathan_etcd_request_max_bytes"), gauge("leviathan_etcd_request_max_ops"));
    println!("cenImport 10,000 CENs x 10 on SQLite (baseline):     {:>8.2} s", base.as_secs_f64());
    println!("the same on stock etcd, acknowledged:                {:>8.2} s", acked.as_secs_f64());
    println!("  three servers at the same revision and state:      {:>8.2} s", converged.as_secs_f64());
    println!("  ratio etcd (acknowledged) / SQLite:                {:>8.2}", acked.as_secs_f64() / base.as_secs_f64());
    println!("  largest etcd request: {bytes} bytes, {ops} operations (limits: 1572864 bytes, 128 operations)");
    assert!(bytes <= 1_572_864 && ops <= 128, "a request over etcd's default limits");
    for (mut c, _) in servers {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("hosts bench: run with `cargo bench --bench hosts` (as root, with etcd)");
        return;
    }
    if kernel::is_root() && !std::env::args().any(|a| a == "stock") {
        // Before any thread exists (see the function).
        private_run_netns();
        println!("mount setup: a private mount namespace with a fresh tmpfs on /run/netns (as /run on a host)");
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    if leviathan::store::testing::etcd_binary().is_some() && !std::env::args().any(|a| a == "make") {
        rt.block_on(stock_import());
    }
    if std::env::args().any(|a| a == "stock") {
        return;
    }
    if !kernel::is_root() || leviathan::store::testing::etcd_binary().is_none() {
        eprintln!("hosts bench: needs root (network namespaces) and etcd (Debian's etcd-server); skipped");
        return;
    }
    let rounds: usize = match std::env::var("LEVIATHAN_BENCH_ROUNDS") {
        Ok(v) => v.parse().ok().filter(|n| (1..=9).contains(n)).expect("LEVIATHAN_BENCH_ROUNDS: 1 to 9"),
        Err(_) => ROUNDS,
    };
    let opts = Options {
        serve_args: ["--cin-prefix-len", "24", "--reconcile-interval", "0"].map(String::from).to_vec(),
        log: std::env::var("LEVIATHAN_BENCH_LOG").unwrap_or_else(|_| "warn".to_string()),
        ..Options::default()
    };
    let cl = Cluster::start(opts);
    // Namespaces allocated before the first make (the harness's, others').
    let reference = kernel::live_netns().unwrap_or(u64::MAX - kernel::NETNS_SLACK);
    rt.block_on(async {
        // By isolation: [servers at once, each server alone].
        let mut ratios = [Vec::new(), Vec::new()];
        let mut last = String::new();
        for r in 1..=rounds {
            for isolated in [false, true] {
                // Alternating order (one host first in odd rounds), the
                // last make always over three hosts (its containers are
                // pinged).
                let three_first = r % 2 == 0 && r != rounds;
                // By spread: [one host, three hosts].
                let mut runs: [Option<Run>; 2] = [None, None];
                for spread in [three_first, !three_first] {
                    let tag = format!("{}{}{r}", if spread { 's' } else { 'a' }, if isolated { "i" } else { "" });
                    runs[usize::from(spread)] = Some(measured_make(&cl, &tag, spread, isolated, r).await);
                    if r == rounds && spread && isolated {
                        last = tag;
                    } else {
                        teardown(&cl, &tag, reference).await;
                    }
                }
                let [Some(one), Some(three)] = runs else { panic!("round {r}: a make did not run") };
                let busiest = three.cpu.iter().copied().fold(0.0, f64::max);
                let ratio = busiest / one.cpu[0];
                if isolated {
                    println!("round {r}: ratio three hosts / one host, isolated: busiest server's CPU {ratio:.2}");
                } else {
                    println!(
                        "round {r}: ratio three hosts / one host: wall {:.2}, busiest server's CPU {ratio:.2}",
                        three.wall.as_secs_f64() / one.wall.as_secs_f64()
                    );
                }
                ratios[usize::from(isolated)].push(ratio);
            }
        }
        for (how, v) in ["servers at once (one kernel's RTNL shared)", "each server alone (as on its own host)"]
            .iter()
            .zip(ratios)
        {
            let worst = v.iter().copied().fold(0.0, f64::max);
            println!(
                "ratio busiest server's CPU, three / one, {how}, per round: {v:.2?}; worst {worst:.2}, median {:.2} (target <= 0.50)",
                median(v.clone())
            );
        }

        // Ping within a host (member 0 and 3 of the last make's CEN 0, on
        // h1) and across (member 1, on h2).
        let from = cl.host("h1").ns_of(&format!("{last}0x0"));
        let within = address(&cl, "h1", &format!("{last}0x3")).await;
        let across = address(&cl, "h2", &format!("{last}0x1")).await;
        rtts(&from, &within);
        rtts(&from, &across);
        let (mut w, mut a) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            w.extend(rtts(&from, &within));
            a.extend(rtts(&from, &across));
        }
        let (w, a) = (median(w), median(a));
        println!("ping RTT within a host (median of 100): {:>8.3} ms", w);
        println!("ping RTT across hosts (median of 100):  {:>8.3} ms", a);
        println!("ratio across / within:                  {:>8.2}", a / w);

        // Unicast between h1 and h2 on CEN 0, which h3 is on too.
        let (h2, h3) = (cl.host("h2"), cl.host("h3"));
        let cen = format!("{last}0");
        let (dev2, dev3) = (vxlan_name(&h2.prefix.0, &cen), vxlan_name(&h3.prefix.0, &cen));
        let before = (rx_packets(&h2.fabric(), &dev2), rx_packets(&h3.fabric(), &dev3));
        let out = Command::new("ip")
            .args(["netns", "exec", &from, "ping", "-f", "-q", "-c", "1000", "-w", "60", &across])
            .output()
            .expect("ping");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("1000 received"), "flood ping h1 -> h2: {text}");
        let got2 = rx_packets(&h2.fabric(), &dev2) - before.0;
        let got3 = rx_packets(&h3.fabric(), &dev3) - before.1;
        println!(
            "1000 pings h1 -> h2: packets at h2's VXLAN device {got2:>6}, at h3's {got3:>6} ({:.2}%)",
            got3 as f64 / 10.0
        );
    });
    drop(cl);
}
