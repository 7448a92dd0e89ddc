//! Netlink tests of the realizer against the real kernel (root needed).
//!
//! Each test uses its own prefix and a guard whose Drop runs `cleanup`, so a
//! failing test leaves nothing behind. Under `CI` these tests never skip: not
//! being root there is a failure.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use leviathan::realize::{
    cleanup, Addr, CenNet, Config, ContainerNet, Desired, FabricMode, Member, NetnsRef, Realizer, Route, Wiring,
};

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

/// True when the test may run; panics under CI without root.
fn root_or_skip(name: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{name}: netlink tests need root and must not skip in CI");
    }
    eprintln!("\n!!!!! SKIPPING {name}: netlink tests need root (they run, and must pass, in CI) !!!!!\n");
    false
}

static N: AtomicUsize = AtomicUsize::new(0);

fn unique_prefix() -> String {
    let n = N.fetch_add(1, Ordering::SeqCst);
    format!("lt{}{}-", std::process::id() % 10000, (b'a' + (n % 26) as u8) as char)
}

/// Removes everything under the prefix when dropped, even on panic.
struct Guard {
    prefix: String,
    extra_netns: Vec<String>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let p = self.prefix.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread().enable_all().build().map(|rt| rt.block_on(cleanup(&p)))
        })
        .join();
        for ns in &self.extra_netns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (ifindex, up) of an interface in a named namespace.
fn link_in(ns: &str, dev: &str) -> Option<(u32, bool)> {
    let out = ip(&["-n", ns, "-o", "link", "show", "dev", dev]);
    let line = out.lines().next()?;
    let idx = line.split(':').next()?.trim().parse().ok()?;
    let flags = line.split('<').nth(1)?.split('>').next()?;
    Some((idx, flags.split(',').any(|f| f == "UP")))
}

fn netns_list(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().map(String::from))
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

fn host_links(prefix: &str) -> Vec<String> {
    ip(&["-o", "link"])
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|s| s.trim().split('@').next().unwrap_or("").to_string()))
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// Send UDP from namespace `from` to `to_ip` and see whether a socket in
/// namespace `to` gets it. Each side runs on its own thread (setns is per
/// thread).
fn reaches(from: &str, to: &str, to_ip: Ipv4Addr) -> bool {
    let enter = |path: String| {
        let f = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let to_path = format!("/run/netns/{to}");
    let recv = std::thread::spawn(move || {
        enter(to_path);
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(1500))).expect("timeout");
        tx.send(s.local_addr().expect("addr").port()).expect("send port");
        let mut buf = [0u8; 16];
        matches!(s.recv_from(&mut buf), Ok((4, _)) if &buf[..4] == b"ping")
    });
    let port = rx.recv().expect("port");
    let from_path = format!("/run/netns/{from}");
    std::thread::spawn(move || {
        enter(from_path);
        let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
        for _ in 0..5 {
            let _ = s.send_to(b"ping", SocketAddrV4::new(to_ip, port));
            std::thread::sleep(Duration::from_millis(60));
        }
    })
    .join()
    .expect("sender");
    recv.join().expect("receiver")
}

fn member(c: &str, ifname: &str) -> Member {
    Member { container: format!("host1/{c}"), ifname: ifname.into(), addresses: vec![], routes: vec![] }
}

fn add_container(d: &mut Desired, c: &str) {
    d.containers.insert(format!("host1/{c}"), ContainerNet { id: c.into(), netns: NetnsRef::Managed, ident: None });
}

fn cen(d: &mut Desired, id: &str, members: &[&str]) {
    for c in members {
        add_container(d, c);
    }
    let wiring = match members.len() {
        0 | 1 => Wiring::None,
        2 => Wiring::Wire,
        _ => Wiring::Bridge,
    };
    d.cens.insert(
        id.into(),
        CenNet { wiring, members: members.iter().map(|c| member(c, id)).collect(), gateways: vec![], vxlan: None },
    );
}

/// A CIN over one CEN: gateway .1 on the bridge, members from .10.
fn cin_over(d: &mut Desired, cin: &str, cen_id: &str, b: u8) {
    let c = d.cens.get_mut(cen_id).expect("cen");
    c.gateways.push(Addr { cin: cin.into(), ip: Ipv4Addr::new(10, b, 0, 1), prefix_len: 16 });
    for (i, m) in c.members.iter_mut().enumerate() {
        m.addresses.push(Addr { cin: cin.into(), ip: Ipv4Addr::new(10, b, 0, 10 + i as u8), prefix_len: 16 });
    }
}

/// The topology of fixtures/cen.json.
fn fixture() -> Desired {
    let mut d = Desired::default();
    cen(&mut d, "cen1", &["c1", "c2", "c13", "c14"]);
    cen(&mut d, "cen2", &["c4", "c5", "c6", "c7"]);
    cen(&mut d, "cen3", &["c15", "c16", "c9", "c10", "c11"]);
    cen(&mut d, "cen4", &["c11", "c12"]);
    cen(&mut d, "cen5", &["c2", "c3"]);
    cin_over(&mut d, "cin1", "cen1", 10);
    cin_over(&mut d, "cin2", "cen2", 11);
    d
}

/// A name for a namespace outside the test's prefix (a workload's, bound
/// by path), unique to this run.
fn foreign_name(tag: &str) -> String {
    format!("{tag}{}{}", std::process::id() % 10000, N.fetch_add(1, Ordering::SeqCst))
}

/// `ip netns add NAME`, which must succeed.
fn netns_add(name: &str) {
    assert!(Command::new("ip").args(["netns", "add", name]).status().expect("ip").success(), "ip netns add {name}");
}

async fn realizer(prefix: &str) -> Realizer {
    Realizer::new(Config { prefix: prefix.into(), fabric: FabricMode::Netns, underlay: None }).await.expect("realizer")
}

async fn apply_ok(r: &mut Realizer, d: &Desired) {
    let rep = r.apply(d, None).await;
    assert!(rep.is_ok(), "apply failed: {:#?}", rep.errors());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixture_topology_is_wired_and_isolated() {
    if !root_or_skip("fixture_topology_is_wired_and_isolated") {
        return;
    }
    let prefix = unique_prefix();
    let _g = Guard { prefix: prefix.clone(), extra_netns: vec![] };
    let mut r = realizer(&prefix).await;
    let d = fixture();
    let calls = std::sync::Mutex::new(Vec::new());
    let progress = |done: usize, total: usize| calls.lock().expect("lock").push((done, total));
    let rep = r.apply(&d, Some(&progress)).await;
    assert!(rep.is_ok(), "{:#?}", rep.errors());
    let calls = calls.into_inner().expect("calls");
    assert_eq!(calls.last().map(|c| (c.0, c.1)), Some((rep.steps, rep.steps)));

    // Every namespace has one interface per CEN, named after it, up.
    for (id, c) in &d.cens {
        for m in &c.members {
            let cid = m.container.split('/').nth(1).expect("id");
            let (_, up) = link_in(&format!("{prefix}{cid}"), id).unwrap_or_else(|| panic!("{id} missing in {cid}"));
            assert!(up, "{id} in {cid} is down");
        }
    }
    // cen1-3 are bridges in the fabric with one port per member; cen4/5 are
    // straight wires (no bridge, no fabric port).
    let fabric = format!("{prefix}fabric");
    for (id, n) in [("cen1", 4), ("cen2", 4), ("cen3", 5)] {
        let br = leviathan::realize::bridge_name(&prefix, id);
        assert!(link_in(&fabric, &br).is_some_and(|(_, up)| up), "bridge {br}");
        let ports = ip(&["-n", &fabric, "-o", "link", "show", "master", &br]).lines().count();
        assert_eq!(ports, n, "ports of {br}");
    }
    for id in ["cen4", "cen5"] {
        assert!(link_in(&fabric, &leviathan::realize::bridge_name(&prefix, id)).is_none());
    }
    let peer = ip(&["-n", &format!("{prefix}c11"), "-d", "link", "show", "dev", "cen4"]);
    assert!(peer.contains("veth"), "{peer}");
    // Fabric ends total: 13 bridge ports + 3 bridges + lo.
    assert_eq!(ip(&["-n", &fabric, "-o", "link"]).lines().count(), 17);

    // cin1 members reach each other; none reaches cin2.
    let cin1 = ["c1", "c2", "c13", "c14"];
    for (i, a) in cin1.iter().enumerate() {
        for (j, b) in cin1.iter().enumerate() {
            if i != j {
                let ipb = Ipv4Addr::new(10, 10, 0, 10 + j as u8);
                assert!(reaches(&format!("{prefix}{a}"), &format!("{prefix}{b}"), ipb), "{a} -> {b} ({ipb})");
            }
        }
    }
    assert!(
        !reaches(&format!("{prefix}c1"), &format!("{prefix}c4"), Ipv4Addr::new(10, 11, 0, 10)),
        "cin1 reached cin2"
    );
    assert!(
        !reaches(&format!("{prefix}c5"), &format!("{prefix}c2"), Ipv4Addr::new(10, 10, 0, 11)),
        "cin2 reached cin1"
    );

    // Applying again changes nothing.
    let rep = r.apply(&d, None).await;
    assert_eq!(rep.steps, 0, "second apply not idempotent");

    // Destroy all: nothing under the prefix remains.
    apply_ok(&mut r, &Desired::default()).await;
    assert!(netns_list(&prefix).is_empty(), "{:?}", netns_list(&prefix));
    assert!(host_links(&prefix).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cin_over_two_cens_routes_through_fabric() {
    if !root_or_skip("cin_over_two_cens_routes_through_fabric") {
        return;
    }
    let prefix = unique_prefix();
    let _g = Guard { prefix: prefix.clone(), extra_netns: vec![] };
    let mut r = realizer(&prefix).await;
    let mut d = Desired::default();
    cen(&mut d, "cenA", &["c1", "c2"]);
    cen(&mut d, "cenB", &["c3", "c4", "c5"]);
    // A CIN over several CENs wires each as a bridge, whatever its size.
    for (k, id) in ["cenA", "cenB"].iter().enumerate() {
        let c = d.cens.get_mut(*id).expect("cen");
        c.wiring = Wiring::Bridge;
        let gw = Ipv4Addr::new(10, 12, k as u8, 1);
        c.gateways.push(Addr { cin: "cin3".into(), ip: gw, prefix_len: 24 });
        for (i, m) in c.members.iter_mut().enumerate() {
            m.addresses.push(Addr {
                cin: "cin3".into(),
                ip: Ipv4Addr::new(10, 12, k as u8, 10 + i as u8),
                prefix_len: 24,
            });
            m.routes.push(Route { cin: "cin3".into(), dest: Ipv4Addr::new(10, 12, 0, 0), prefix_len: 16, via: gw });
        }
    }
    d.forwarding = true;
    apply_ok(&mut r, &d).await;
    let p = |c: &str| format!("{prefix}{c}");
    assert!(reaches(&p("c1"), &p("c3"), Ipv4Addr::new(10, 12, 1, 10)));
    assert!(reaches(&p("c5"), &p("c2"), Ipv4Addr::new(10, 12, 0, 11)));
    assert!(reaches(&p("c1"), &p("c2"), Ipv4Addr::new(10, 12, 0, 11)));
    let routes = ip(&["-n", &p("c4"), "route"]);
    assert!(routes.contains("10.12.0.0/16 via 10.12.1.1"), "{routes}");
    assert!(!routes.contains("default"), "{routes}");

    // Forwarding off: the slices no longer reach each other.
    d.forwarding = false;
    apply_ok(&mut r, &d).await;
    assert!(!reaches(&p("c1"), &p("c3"), Ipv4Addr::new(10, 12, 1, 10)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_leave_touch_nobody_else() {
    if !root_or_skip("join_and_leave_touch_nobody_else") {
        return;
    }
    let prefix = unique_prefix();
    let _g = Guard { prefix: prefix.clone(), extra_netns: vec![] };
    let mut r = realizer(&prefix).await;
    let mut d = Desired::default();
    cen(&mut d, "cen1", &["c1", "c2", "c3"]);
    cin_over(&mut d, "cin1", "cen1", 10);
    cen(&mut d, "cen9", &["c1", "c9"]);
    apply_ok(&mut r, &d).await;
    let idx = |c: &str, dev: &str| link_in(&format!("{prefix}{c}"), dev).map(|l| l.0);
    let before: BTreeMap<&str, Option<u32>> = ["c1", "c2", "c3"].iter().map(|c| (*c, idx(c, "cen1"))).collect();
    let wire_before = idx("c9", "cen9");

    // c4 joins.
    let mut d2 = d.clone();
    add_container(&mut d2, "c4");
    let mut m = member("c4", "cen1");
    m.addresses.push(Addr { cin: "cin1".into(), ip: Ipv4Addr::new(10, 10, 0, 13), prefix_len: 16 });
    d2.cens.get_mut("cen1").expect("cen1").members.push(m);
    let rep = r.apply(&d2, None).await;
    assert!(rep.is_ok(), "{:?}", rep.errors());
    assert_eq!(rep.steps, 6, "join: netns, lo, veth, peer up, host side's alias, address");
    for (c, i) in &before {
        assert_eq!(idx(c, "cen1"), *i, "{c} was touched by the join");
    }
    assert!(reaches(&format!("{prefix}c4"), &format!("{prefix}c1"), Ipv4Addr::new(10, 10, 0, 10)));

    // c2 leaves.
    d2.cens.get_mut("cen1").expect("cen1").members.retain(|m| m.container != "host1/c2");
    d2.containers.remove("host1/c2");
    apply_ok(&mut r, &d2).await;
    for c in ["c1", "c3"] {
        assert_eq!(idx(c, "cen1"), before[c], "{c} was touched by the leave");
    }
    assert_eq!(idx("c9", "cen9"), wire_before);
    assert!(!netns_list(&prefix).contains(&format!("{prefix}c2")));
    let br = leviathan::realize::bridge_name(&prefix, "cen1");
    assert_eq!(ip(&["-n", &format!("{prefix}fabric"), "-o", "link", "show", "master", &br]).lines().count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adoption_repairs_drift_both_ways() {
    if !root_or_skip("adoption_repairs_drift_both_ways") {
        return;
    }
    let prefix = unique_prefix();
    let _g = Guard { prefix: prefix.clone(), extra_netns: vec![] };
    let mut d = Desired::default();
    cen(&mut d, "cen1", &["c1", "c2", "c3"]);
    cin_over(&mut d, "cin1", "cen1", 10);
    cen(&mut d, "cen2", &["c1", "c4"]);
    {
        let mut r = realizer(&prefix).await;
        apply_ok(&mut r, &d).await;
    }
    // By hand: delete a bridge member's veth and a wire, add a stray bridge.
    Command::new("ip").args(["-n", &format!("{prefix}c2"), "link", "del", "cen1"]).status().expect("ip");
    Command::new("ip").args(["-n", &format!("{prefix}c4"), "link", "del", "cen2"]).status().expect("ip");
    Command::new("ip")
        .args(["-n", &format!("{prefix}fabric"), "link", "add", &format!("{prefix}stray"), "type", "bridge"])
        .status()
        .expect("ip");
    assert!(link_in(&format!("{prefix}c2"), "cen1").is_none());

    // A new realizer adopts and repairs.
    let mut r = realizer(&prefix).await;
    apply_ok(&mut r, &d).await;
    assert!(link_in(&format!("{prefix}c2"), "cen1").is_some_and(|l| l.1));
    assert!(link_in(&format!("{prefix}c4"), "cen2").is_some_and(|l| l.1));
    assert!(link_in(&format!("{prefix}fabric"), &format!("{prefix}stray")).is_none());
    assert!(reaches(&format!("{prefix}c2"), &format!("{prefix}c1"), Ipv4Addr::new(10, 10, 0, 10)));
    // Adopted state is complete: nothing more to do.
    assert_eq!(r.apply(&d, None).await.steps, 0);

    // Adoption also removes what desired no longer has.
    drop(r);
    let mut r = realizer(&prefix).await;
    let mut less = d.clone();
    less.cens.remove("cen2");
    less.containers.remove("host1/c4");
    apply_ok(&mut r, &less).await;
    assert!(link_in(&format!("{prefix}c1"), "cen2").is_none());
    assert!(!netns_list(&prefix).contains(&format!("{prefix}c4")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_namespace_is_wired_and_never_deleted() {
    if !root_or_skip("path_namespace_is_wired_and_never_deleted") {
        return;
    }
    let prefix = unique_prefix();
    let foreign = foreign_name("lp");
    let _g = Guard { prefix: prefix.clone(), extra_netns: vec![foreign.clone()] };
    netns_add(&foreign);
    let mut r = realizer(&prefix).await;
    let mut d = Desired::default();
    cen(&mut d, "cen1", &["c1", "c2", "c3"]);
    cen(&mut d, "cen2", &["c1", "c2"]);
    d.containers.get_mut("host1/c1").expect("c1").netns = NetnsRef::Path(format!("/run/netns/{foreign}"));
    cin_over(&mut d, "cin1", "cen1", 10);
    apply_ok(&mut r, &d).await;
    assert!(link_in(&foreign, "cen1").is_some_and(|l| l.1));
    assert!(link_in(&foreign, "cen2").is_some_and(|l| l.1));
    assert!(!netns_list(&prefix).iter().any(|n| n.contains("c1")));
    assert!(reaches(&foreign, &format!("{prefix}c2"), Ipv4Addr::new(10, 10, 0, 11)));

    apply_ok(&mut r, &Desired::default()).await;
    assert!(std::path::Path::new(&format!("/run/netns/{foreign}")).exists(), "path namespace deleted");
    assert!(link_in(&foreign, "cen1").is_none() && link_in(&foreign, "cen2").is_none());
    assert!(link_in(&foreign, "lo").is_some());
    assert!(netns_list(&prefix).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_fabric_mode_and_cleanup() {
    if !root_or_skip("host_fabric_mode_and_cleanup") {
        return;
    }
    let prefix = unique_prefix();
    let _g = Guard { prefix: prefix.clone(), extra_netns: vec![] };
    let mut r = Realizer::new(Config { prefix: prefix.clone(), fabric: FabricMode::Host, underlay: None })
        .await
        .expect("realizer");
    let mut d = Desired::default();
    cen(&mut d, "cen1", &["c1", "c2", "c3"]);
    cin_over(&mut d, "cin1", "cen1", 10);
    apply_ok(&mut r, &d).await;
    let br = leviathan::realize::bridge_name(&prefix, "cen1");
    assert!(host_links(&prefix).contains(&br), "{:?}", host_links(&prefix));
    assert_eq!(host_links(&prefix).len(), 4);
    assert!(!netns_list(&prefix).contains(&format!("{prefix}fabric")));
    assert!(reaches(&format!("{prefix}c1"), &format!("{prefix}c3"), Ipv4Addr::new(10, 10, 0, 12)));
    drop(r);

    // cleanup removes everything, without a realizer.
    let rep = cleanup(&prefix).await.expect("cleanup");
    assert_eq!(rep.namespaces, 3);
    assert!(netns_list(&prefix).is_empty());
    assert!(host_links(&prefix).is_empty(), "{:?}", host_links(&prefix));
}

#[tokio::test]
async fn bad_prefix_is_refused() {
    assert!(Realizer::new(Config {
        prefix: "this-prefix-is-too-long".into(),
        fabric: FabricMode::Netns,
        underlay: None
    })
    .await
    .is_err());
    assert!(cleanup("").await.is_err());
}

/// One thread (a one-CPU host's default runtime) and phases of many
/// requests in one namespace: the fabric's connection sends them all
/// before it reads an answer, so their answers wait in the socket's
/// receive buffer at once. The apply finishes, with every bridge there.
/// (On one host this passed with the default buffer too; the lost answers
/// of a make across hosts are caught by `tests/one_worker.rs`.)
#[tokio::test(flavor = "current_thread")]
async fn an_apply_of_many_cens_on_one_thread_finishes() {
    if !root_or_skip("an_apply_of_many_cens_on_one_thread_finishes") {
        return;
    }
    let prefix = unique_prefix();
    let _g = Guard { prefix: prefix.clone(), extra_netns: vec![] };
    let mut r = realizer(&prefix).await;
    let mut d = Desired::default();
    // 120 bridges, each with three members: one phase of 120 bridge
    // creates, then one of 360 veth creates, all in the fabric.
    for g in 0..120 {
        let members: Vec<String> = (0..3).map(|i| format!("g{g}m{i}")).collect();
        let members: Vec<&str> = members.iter().map(String::as_str).collect();
        cen(&mut d, &format!("cen{g}"), &members);
    }
    // A bound far above the seconds this takes, that only catches a hang.
    let rep = tokio::time::timeout(Duration::from_secs(300), r.apply(&d, None))
        .await
        .expect("the apply hung: an answer of the kernel was lost");
    assert!(rep.is_ok(), "apply failed: {:#?}", rep.errors());
    let fabric = format!("{prefix}fabric");
    let out = ip(&["-n", &fabric, "-br", "link", "show", "type", "bridge"]);
    assert_eq!(out.lines().count(), 120, "{out}");
    drop(r);
}

/// A namespace opened ahead of its change (`warm`: a runtime's ADD, while
/// the change commits) is wired by the next round like any other; one
/// whose path leads to another namespace than the one given is not
/// opened; one that no round wires is let go of once kept long enough
/// (here: not at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_opened_ahead_are_wired_by_the_round_or_let_go_of() {
    if !root_or_skip("namespaces_opened_ahead_are_wired_by_the_round_or_let_go_of") {
        return;
    }
    use leviathan::realize::NsId;
    use std::os::unix::fs::MetadataExt;
    let prefix = unique_prefix();
    let (a, b) = (foreign_name("lwa"), foreign_name("lwb"));
    let _g = Guard { prefix: prefix.clone(), extra_netns: vec![a.clone(), b.clone()] };
    netns_add(&a);
    netns_add(&b);
    let path = |n: &str| format!("/run/netns/{n}");
    let ident = |n: &str| std::fs::metadata(path(n)).map(|m| (m.dev(), m.ino())).expect("stat");
    let mut r = realizer(&prefix).await;
    r.keep_warmed_for(Duration::ZERO);

    // Kept per CEN, as the driver keeps it: c2 and c3 on cen1.
    let mut d = Desired::default();
    let on_cen1 = |d: &Desired| CenNet {
        wiring: Wiring::Bridge,
        members: d.containers.values().map(|c| member(&c.id, "cen1")).collect(),
        gateways: vec![],
        vxlan: None,
    };
    for c in ["c2", "c3"] {
        d.put_container(&format!("host1/{c}"), ContainerNet { id: c.into(), netns: NetnsRef::Managed, ident: None });
    }
    d.put_cen("cen1", on_cen1(&d));
    cin_over(&mut d, "cin1", "cen1", 10);
    apply_ok(&mut r, &d).await;

    let (on_a, on_b) = (NsId::Path(path(&a)), NsId::Path(path(&b)));
    let (ia, ib) = (ident(&a), ident(&b));
    r.warm(vec![(path(&a), ia), (path(&b), (ib.0, ib.1 + 1))]).await;
    let lo_of = |r: &Realizer, ns: &NsId| r.observed().ns(ns).is_some_and(|s| s.links().any(|l| l.name == "lo"));
    assert!(lo_of(&r, &on_a), "{a} is held and observed");
    assert!(r.observed().ns(&on_b).is_none(), "{b}, given with another inode, was opened");
    r.warm(vec![(path(&b), ib)]).await;
    assert!(lo_of(&r, &on_b), "{b} is held and observed");

    // c1, bound to a, joins cen1: a scoped round wires it.
    d.put_container("host1/c1", ContainerNet { id: "c1".into(), netns: NetnsRef::Path(path(&a)), ident: Some(ia) });
    d.put_cen("cen1", on_cen1(&d));
    cin_over(&mut d, "cin1", "cen1", 10);
    let cens = ["cen1".to_string()].into();
    let released = d.take_released();
    let rep = r.apply_cens(&d, &cens, &released, &Default::default(), None).await;
    assert!(rep.is_ok(), "apply failed: {:#?}", rep.errors());
    assert!(link_in(&a, "cen1").is_some_and(|l| l.1), "c1's interface in {a}, up");
    let c1_ip = d.cens["cen1"].members.iter().find(|m| m.container == "host1/c1").expect("c1").addresses[0].ip;
    assert!(reaches(&format!("{prefix}c2"), &a, c1_ip));
    assert!(lo_of(&r, &on_a), "{a} is still held");
    assert!(r.observed().ns(&on_b).is_none(), "{b}, wired by no round, is let go of");
    assert_eq!(r.unwired_until(), None);

    // Between rounds, the driver lets go of it when the time comes.
    r.warm(vec![(path(&b), ib)]).await;
    assert!(lo_of(&r, &on_b) && r.unwired_until().is_some());
    r.let_go_of_unwired(d.index());
    assert!(r.observed().ns(&on_b).is_none() && r.unwired_until().is_none());
    assert!(lo_of(&r, &on_a), "{a}, wired, is held");
}
