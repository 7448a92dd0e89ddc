//! Realizer benchmark (needs root): make and destroy 1,000 containers in 100
//! CENs (50 wires, 50 bridges of 18) with 50 CINs, with leviathan's
//! realizer and with the equivalent `ip -batch` scripts; prints both times
//! and their ratio.
//!
//! Run: `cargo bench --bench realize`. Under `cargo test --all-targets`
//! (no `--bench` argument) it only checks that it is root-capable and exits.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use leviathan::realize::{
    bridge_name, cen_group, cleanup, veth_fabric_name, Addr, CenNet, Config, ContainerNet, Desired, FabricMode, Member,
    NetnsRef, Realizer, Wiring,
};

const WIRES: usize = 50;
const BRIDGES: usize = 50;
const BRIDGE_SIZE: usize = 18;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

fn topology() -> Desired {
    let mut d = Desired::default();
    let mut n = 0usize;
    let mut next = || {
        n += 1;
        let id = format!("c{n}");
        (format!("h/{id}"), id)
    };
    for w in 0..WIRES {
        let cen = format!("w{w}");
        let mut members = Vec::new();
        for _ in 0..2 {
            let (key, id) = next();
            d.containers.insert(key.clone(), ContainerNet { id, netns: NetnsRef::Managed, ident: None });
            members.push(Member { container: key, ifname: cen.clone(), addresses: vec![], routes: vec![] });
        }
        d.cens.insert(cen, CenNet { wiring: Wiring::Wire, members, gateways: vec![], vxlan: None });
    }
    for b in 0..BRIDGES {
        let cen = format!("b{b}");
        let cin = format!("cin{b}");
        let oct = 10 + b as u8;
        let mut members = Vec::new();
        for i in 0..BRIDGE_SIZE {
            let (key, id) = next();
            d.containers.insert(key.clone(), ContainerNet { id, netns: NetnsRef::Managed, ident: None });
            members.push(Member {
                container: key,
                ifname: cen.clone(),
                addresses: vec![Addr { cin: cin.clone(), ip: Ipv4Addr::new(10, oct, 0, 10 + i as u8), prefix_len: 16 }],
                routes: vec![],
            });
        }
        let gateways = vec![Addr { cin, ip: Ipv4Addr::new(10, oct, 0, 1), prefix_len: 16 }];
        d.cens.insert(cen, CenNet { wiring: Wiring::Bridge, members, gateways, vxlan: None });
    }
    d
}

/// The same topology as `ip -batch` scripts: one for the namespaces, one
/// run inside the fabric (bridges, veths created directly in their
/// namespaces, gateway addresses), and one per container (lo and its
/// interface up, addresses): `ip` has no per-line namespace switch.
fn ip_scripts(d: &Desired, prefix: &str) -> (String, String, Vec<(String, String)>, String) {
    let fabric = format!("{prefix}fabric");
    let mut netns = format!("netns add {fabric}\n");
    for c in d.containers.values() {
        let _ = writeln!(netns, "netns add {prefix}{}", c.id);
    }
    let mut fab = String::new();
    let mut per: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    let id_of = |key: &str| d.containers[key].id.clone();
    for (cen, c) in &d.cens {
        match c.wiring {
            Wiring::Bridge => {
                let g = cen_group(prefix, cen, true);
                let br = bridge_name(prefix, cen);
                let _ = writeln!(fab, "link add name {br} group {g} up type bridge");
                for a in &c.gateways {
                    let _ = writeln!(fab, "addr add {}/{} dev {br}", a.ip, a.prefix_len);
                }
                for m in &c.members {
                    let v = veth_fabric_name(prefix, cen, &m.container);
                    let id = id_of(&m.container);
                    let _ = writeln!(fab, "link add name {v} group {g} up master {br} type veth peer name {} netns {prefix}{id} group {g}", m.ifname);
                }
            }
            Wiring::Wire => {
                let g = cen_group(prefix, cen, false);
                let (a, b) = (&c.members[0], &c.members[1]);
                let _ = writeln!(
                    fab,
                    "link add name {} netns {prefix}{} group {g} type veth peer name {} netns {prefix}{} group {g}",
                    a.ifname,
                    id_of(&a.container),
                    b.ifname,
                    id_of(&b.container)
                );
            }
            Wiring::None => {}
        }
        for m in &c.members {
            let s = per.entry(id_of(&m.container)).or_insert_with(|| "link set lo up\n".to_string());
            let _ = writeln!(s, "link set {} up", m.ifname);
            for a in &m.addresses {
                let _ = writeln!(s, "addr add {}/{} dev {}", a.ip, a.prefix_len, m.ifname);
            }
        }
    }
    let mut del = format!("netns del {fabric}\n");
    for c in d.containers.values() {
        let _ = writeln!(del, "netns del {prefix}{}", c.id);
    }
    let per = per.into_iter().map(|(id, s)| (format!("{prefix}{id}"), s)).collect();
    (netns, fab, per, del)
}

fn ip_batch(ns: Option<&str>, script: &str) {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    let mut child = cmd.args(["-batch", "-"]).stdin(Stdio::piped()).stdout(Stdio::null()).spawn().expect("spawn ip");
    child.stdin.take().expect("stdin").write_all(script.as_bytes()).expect("write script");
    let st = child.wait().expect("wait ip");
    assert!(st.success(), "ip -batch failed");
}

/// Let the kernel finish freeing namespaces before the next measurement.
fn settle() {
    std::thread::sleep(Duration::from_secs(3));
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    if !is_root() {
        eprintln!("realize bench: needs root (it creates 1,000 network namespaces); skipped");
        return;
    }
    if !full {
        eprintln!("realize bench: run with `cargo bench --bench realize`");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let d = topology();
    let pid = std::process::id() % 1000;
    let ours = format!("lb{pid}-");
    let theirs = format!("ib{pid}-");
    println!(
        "topology: {} containers, {} CENs ({WIRES} wires, {BRIDGES} bridges of {BRIDGE_SIZE}), {BRIDGES} CINs",
        d.containers.len(),
        d.cens.len()
    );

    // ip -batch.
    let (netns, fab, per, del) = ip_scripts(&d, &theirs);
    let lines = netns.lines().count() + fab.lines().count() + per.iter().map(|p| p.1.lines().count()).sum::<usize>();
    // Rounds alternate the three ways so that drift in the machine's state
    // (kernel namespace cleanup runs in the background) hits all alike;
    // medians are reported.
    let rounds: usize = std::env::var("BENCH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(3).max(1);
    let (mut ip_make, mut ip_destroy, mut our_make, mut our_destroy, mut api_make, mut api_destroy) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut steps = 0;
    for round in 0..rounds {
        let t = Instant::now();
        ip_batch(None, &netns);
        ip_batch(Some(&format!("{theirs}fabric")), &fab);
        for (ns, s) in &per {
            ip_batch(Some(ns), s);
        }
        ip_make.push(t.elapsed());
        let t = Instant::now();
        ip_batch(None, &del);
        ip_destroy.push(t.elapsed());
        settle();

        let (m, d2, n) = rt.block_on(async {
            let _ = cleanup(&ours).await;
            let mut r = Realizer::new(Config { prefix: ours.clone(), fabric: FabricMode::Netns, underlay: None })
                .await
                .expect("realizer");
            let t = Instant::now();
            let rep = r.apply(&d, None).await;
            let make = t.elapsed();
            assert!(rep.is_ok(), "make failed: {:?}", rep.errors());
            let t = Instant::now();
            let rep2 = r.apply(&Desired::default(), None).await;
            let destroy = t.elapsed();
            assert!(rep2.is_ok(), "destroy failed: {:?}", rep2.errors());
            (make, destroy, rep.steps)
        });
        our_make.push(m);
        our_destroy.push(d2);
        steps = n;
        settle();

        // End to end: the same topology in the model, made and destroyed
        // through GraphQL, the service, the SQLite store and the driver.
        let (m, d2) = rt.block_on(api_make_destroy(&ours));
        api_make.push(m);
        api_destroy.push(d2);
        settle();
        eprintln!("round {} of {rounds} done", round + 1);
    }
    // Once more through adoption + cleanup (the crash path).
    let (adopt_make, cleanup_time) = rt.block_on(async {
        let mut r = Realizer::new(Config { prefix: ours.clone(), fabric: FabricMode::Netns, underlay: None })
            .await
            .expect("realizer");
        let t = Instant::now();
        let rep = r.apply(&d, None).await;
        let make = t.elapsed();
        assert!(rep.is_ok(), "make failed: {:?}", rep.errors());
        drop(r);
        let t = Instant::now();
        cleanup(&ours).await.expect("cleanup");
        (make, t.elapsed())
    });

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let med = |v: &mut Vec<Duration>| {
        v.sort();
        ms(v[v.len() / 2])
    };
    let (ip_m, ip_d) = (med(&mut ip_make), med(&mut ip_destroy));
    let (our_m, our_d) = (med(&mut our_make), med(&mut our_destroy));
    let (api_m, api_d) = (med(&mut api_make), med(&mut api_destroy));
    println!("medians of {rounds} rounds:");
    println!(
        "make:    leviathan {our_m:8.1} ms ({steps} ops)   ip -batch {ip_m:8.1} ms ({lines} lines, {} processes)   ratio {:.2}",
        per.len() + 2,
        our_m / ip_m
    );
    println!("destroy: leviathan {our_d:8.1} ms   ip -batch {ip_d:8.1} ms   ratio {:.2}", our_d / ip_d);
    println!(
        "through the API (GraphQL + store + driver): make {api_m:8.1} ms (ratio {:.2})   destroy {api_d:8.1} ms (ratio {:.2})",
        api_m / ip_m,
        api_d / ip_d
    );
    println!("second make (adopting) {:8.1} ms, cleanup {:8.1} ms", ms(adopt_make), ms(cleanup_time));
}

/// The bench topology built in the model through GraphQL, then made with
/// `cenMake` + `cinMake` and destroyed with `cenDestroy` (each answers when
/// the kernel has it); returns (make, destroy) times.
async fn api_make_destroy(prefix: &str) -> (Duration, Duration) {
    use serde_json::json;
    use std::sync::Arc;
    let _ = cleanup(prefix).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let service = leviathan::service::Service::open(&dir.path().join("bench.db"), "h").expect("service");
    let realizer = Realizer::new(Config { prefix: prefix.to_string(), fabric: FabricMode::Netns, underlay: None })
        .await
        .expect("the realizer starts");
    let driver = leviathan::driver::Driver::start(Arc::clone(&service), realizer);
    let schema = leviathan::graphql::schema_with(Arc::clone(&service), Some(Arc::new(driver)));
    let run = |q: String, v: serde_json::Value| {
        let schema = schema.clone();
        async move {
            let resp =
                schema.execute(async_graphql::Request::new(q).variables(async_graphql::Variables::from_json(v))).await;
            assert!(resp.errors.is_empty(), "{:?}", resp.errors);
            resp.data.into_json().expect("json")
        }
    };
    let mut n = 0usize;
    let mut next = || {
        n += 1;
        format!("c{n}")
    };
    let mut cens = Vec::new();
    for w in 0..WIRES {
        cens.push(json!({"id": format!("w{w}"), "containerIds": [next(), next()]}));
    }
    for b in 0..BRIDGES {
        cens.push(json!({"id": format!("b{b}"), "containerIds": (0..BRIDGE_SIZE).map(|_| next()).collect::<Vec<_>>()}));
    }
    let cins: Vec<_> = (0..BRIDGES).map(|b| json!({"id": format!("cin{b}"), "cenIds": [format!("b{b}")]})).collect();
    let all_cens: Vec<String> =
        (0..WIRES).map(|w| format!("w{w}")).chain((0..BRIDGES).map(|b| format!("b{b}"))).collect();
    let all_cins: Vec<String> = (0..BRIDGES).map(|b| format!("cin{b}")).collect();
    run("mutation($c: [CenImportItem!]!) { cenImport(input: {cens: $c}) { revision } }".into(), json!({"c": cens}))
        .await;
    run("mutation($c: [CinImportItem!]!) { cinImport(input: {cins: $c}) { revision } }".into(), json!({"c": cins}))
        .await;
    let t = Instant::now();
    let d = run(
        "mutation($e: [ID!]!, $n: [ID!]!) { cenMake(input: {ids: $e}) { cens { status } } cinMake(input: {ids: $n}) { cins { status } } }"
            .into(),
        json!({"e": all_cens, "n": all_cins}),
    )
    .await;
    let make = t.elapsed();
    assert!(d["cinMake"]["cins"].as_array().unwrap().iter().all(|c| c["status"] == "READY"), "{d}");
    assert!(d["cenMake"]["cens"].as_array().unwrap().iter().all(|c| c["status"] != "FAILED"), "{d}");
    // Destroy: `cenDestroy` of every CEN takes the namespaces and links
    // away (addresses with them), which is what the `ip` script does; the
    // CINs are unmade afterwards, with nothing left in the kernel to touch.
    let t = Instant::now();
    let d =
        run("mutation($e: [ID!]!) { cenDestroy(input: {ids: $e}) { cens { status } } }".into(), json!({"e": all_cens}))
            .await;
    let destroy = t.elapsed();
    assert!(d["cenDestroy"]["cens"].as_array().unwrap().iter().all(|c| c["status"] == "PENDING"), "{d}");
    let left = std::fs::read_dir("/run/netns")
        .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(prefix)).count())
        .unwrap_or(0);
    assert_eq!(left, 0, "namespaces left after cenDestroy");
    run("mutation($n: [ID!]!) { cinDestroy(input: {ids: $n}) { revision } }".into(), json!({"n": all_cins})).await;

    let _ = cleanup(prefix).await;
    (make, destroy)
}
