//! End-to-end realization tests: the real server makes the topology in the
//! kernel (network namespaces, veth pairs, bridges, addresses, routes), and
//! the tests look at the kernel with `ip` and send real packets.
//!
//! They need root. In CI (`CI` set) they fail if they cannot run; elsewhere
//! they skip with a loud message. Each test uses its own prefix and cleans
//! up (a `leviathan cleanup --prefix`) even when it fails.

mod common;

use common::kernel::*;
use common::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

fn start(state: &std::path::Path, prefix: &Prefix) -> Server {
    Server::start(state, &["--prefix", &prefix.0])
}

async fn statuses(s: &Server) -> BTreeMap<String, String> {
    let d = s.gql("{ cens { id status statusMessage } cins { id status statusMessage } }", json!({})).await;
    let mut out = BTreeMap::new();
    for kind in ["cens", "cins"] {
        for o in d[kind].as_array().unwrap() {
            out.insert(o["id"].as_str().unwrap().to_string(), o["status"].as_str().unwrap().to_string());
        }
    }
    out
}

async fn make(s: &Server, kind: &str, ids: &[&str]) -> Value {
    let field = format!("{kind}Make");
    let plural = format!("{kind}s");
    let q = format!("mutation($ids: [ID!]!) {{ {field}(input: {{ids: $ids}}) {{ revision {plural} {{ id status statusMessage }} }} }}");
    let d = s.gql(&q, json!({"ids": ids})).await;
    for o in d[&field][&plural].as_array().unwrap() {
        assert_eq!(o["status"], "READY", "{kind} {} not ready: {o}", o["id"]);
    }
    d
}

async fn destroy(s: &Server, kind: &str, ids: &[&str]) {
    let q = format!("mutation($ids: [ID!]!) {{ {kind}Destroy(input: {{ids: $ids}}) {{ revision }} }}");
    s.gql(&q, json!({"ids": ids})).await;
}

const ALL_CENS: [&str; 5] = ["cen1", "cen2", "cen3", "cen4", "cen5"];

#[tokio::test]
async fn fixture_topology_in_the_kernel() {
    if !can_run("fixture_topology_in_the_kernel") {
        return;
    }
    let p = Prefix::new("l");
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("s.db"), &p);
    s.gql(CEN_IMPORT, cen_file_vars(&fixture("cen.json"))).await;
    make(&s, "cen", &ALL_CENS).await;

    // Every container namespace exists, one interface per CEN, named after it, up.
    let data = s.gql("{ containers { id cens { id } } }", json!({})).await;
    for c in data["containers"].as_array().unwrap() {
        let id = c["id"].as_str().unwrap();
        let l = links(&p.ns(id));
        assert!(!l.is_empty(), "namespace of {id} missing");
        let want: BTreeSet<String> =
            c["cens"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()).collect();
        let have: BTreeSet<String> = l.keys().filter(|n| *n != "lo").cloned().collect();
        assert_eq!(have, want, "interfaces of {id}");
        for (name, link) in &l {
            assert!(link.up, "{name} in {id} is down");
        }
    }
    // cen4 and cen5 are veth pairs straight between two namespaces.
    let fabric = links(&p.fabric());
    for (cen, a, b) in [("cen4", "c11", "c12"), ("cen5", "c2", "c3")] {
        assert_eq!(links(&p.ns(a))[cen].kind, "veth");
        assert_eq!(links(&p.ns(b))[cen].kind, "veth");
        assert!(fabric.values().all(|l| l.master.as_deref() != Some(&format!("{}b{cen}", p.0))), "{cen} has a bridge");
    }
    // cen1..cen3 are bridges in the fabric with one port per member.
    for (cen, n) in [("cen1", 4), ("cen2", 4), ("cen3", 5)] {
        let bridge = format!("{}b{cen}", p.0);
        assert_eq!(fabric.get(&bridge).map(|l| l.kind.as_str()), Some("bridge"), "bridge of {cen}");
        let ports = fabric.values().filter(|l| l.master.as_deref() == Some(bridge.as_str())).count();
        assert_eq!(ports, n, "ports of {cen}");
    }

    // CINs: the kernel's addresses are the API's; cin1 members reach each
    // other; cin1 does not reach cin2.
    s.gql(CIN_IMPORT, cin_file_vars(&fixture("cin.json"))).await;
    make(&s, "cin", &["cin1", "cin2"]).await;
    let d = s.gql("{ cins { id members { container { id } cen { id } address prefixLength } } }", json!({})).await;
    let mut members: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for cin in d["cins"].as_array().unwrap() {
        for m in cin["members"].as_array().unwrap() {
            let (c, cen, a) = (
                m["container"]["id"].as_str().unwrap(),
                m["cen"]["id"].as_str().unwrap(),
                m["address"].as_str().unwrap(),
            );
            let l = links(&p.ns(c));
            assert!(
                l[cen].addrs.contains(&format!("{a}/{}", m["prefixLength"])),
                "{c} {cen} lacks {a}: {:?}",
                l[cen].addrs
            );
            members.entry(cin["id"].as_str().unwrap().to_string()).or_default().push((c.to_string(), a.to_string()));
        }
    }
    assert!(fabric_has_addr(&p, "cen1", "10.10.0.1/16"));
    for (from, _) in &members["cin1"] {
        for (to, addr) in &members["cin1"] {
            if from != to {
                assert!(ping(&p.ns(from), addr), "{from} cannot reach {to} at {addr}");
            }
        }
    }
    for (from, _) in &members["cin1"] {
        for (to, addr) in &members["cin2"] {
            assert!(!ping(&p.ns(from), addr), "{from} (cin1) reaches {to} (cin2) at {addr}");
        }
    }

    // Destroy everything: nothing under the prefix remains.
    destroy(&s, "cin", &["cin1", "cin2"]).await;
    assert!(links(&p.ns("c1"))["cen1"].addrs.is_empty(), "cin destroy left addresses");
    destroy(&s, "cen", &ALL_CENS).await;
    let st = statuses(&s).await;
    assert!(st.values().all(|v| v == "PENDING"), "{st:?}");
    assert_eq!(namespaces(&p.0), BTreeSet::new(), "namespaces left after destroy");
}

fn fabric_has_addr(p: &Prefix, cen: &str, addr: &str) -> bool {
    links(&p.fabric()).get(&format!("{}b{cen}", p.0)).is_some_and(|l| l.addrs.iter().any(|a| a == addr))
}

#[tokio::test]
async fn cin_over_two_cens_routes_between_slices() {
    if !can_run("cin_over_two_cens_routes_between_slices") {
        return;
    }
    let p = Prefix::new("l");
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("s.db"), &p);
    s.gql(CEN_IMPORT, json!({"input": {"cens": [{"id": "left", "containerIds": ["a1", "a2"]}, {"id": "right", "containerIds": ["b1", "b2", "b3"]}]}}))
        .await;
    s.gql(CIN_IMPORT, json!({"input": {"cins": [{"id": "both", "cenIds": ["left", "right"]}]}})).await;
    make(&s, "cin", &["both"]).await;
    let d = s.gql("{ cin(id: \"both\") { members { container { id } address } } }", json!({})).await;
    let addr: BTreeMap<String, String> = d["cin"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["container"]["id"].as_str().unwrap().to_string(), m["address"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(addr["a1"], "10.10.0.10");
    assert_eq!(addr["b1"], "10.10.1.10");
    for (from, to) in [("a1", "b1"), ("b2", "a2"), ("a2", "b3"), ("b1", "b2")] {
        assert!(ping(&p.ns(from), &addr[to]), "{from} cannot reach {to} at {}", addr[to]);
    }
}

#[tokio::test]
async fn join_and_leave_touch_only_the_member() {
    if !can_run("join_and_leave_touch_only_the_member") {
        return;
    }
    let p = Prefix::new("l");
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("s.db"), &p);
    s.gql(CEN_IMPORT, cen_file_vars(&fixture("cen.json"))).await;
    s.gql(CIN_IMPORT, cin_file_vars(&fixture("cin.json"))).await;
    make(&s, "cen", &ALL_CENS).await;
    make(&s, "cin", &["cin1"]).await;
    let before: BTreeMap<&str, i64> =
        ["c1", "c13", "c14"].iter().map(|c| (*c, links(&p.ns(c))["cen1"].ifindex)).collect();

    s.gql("mutation { containerJoinCen(input: {containerId: \"newbie\", cenId: \"cen1\"}) { revision } }", json!({}))
        .await;
    let d = s.gql("{ container(id: \"newbie\") { status interfaces { address } } }", json!({})).await;
    assert_eq!(d["container"]["status"], "READY");
    let a = d["container"]["interfaces"][0]["address"].as_str().unwrap().to_string();
    assert_eq!(a, "10.10.0.14");
    let l = links(&p.ns("newbie"));
    assert!(l["cen1"].up && l["cen1"].addrs.contains(&"10.10.0.14/16".to_string()), "{l:?}");
    assert!(ping(&p.ns("newbie"), "10.10.0.10"));

    s.gql("mutation { containerLeaveCen(input: {containerId: \"c2\", cenId: \"cen1\"}) { revision } }", json!({}))
        .await;
    let l = links(&p.ns("c2"));
    assert!(!l.contains_key("cen1"), "c2 still has cen1: {l:?}");
    assert!(l.contains_key("cen5"), "c2 lost cen5");
    for (c, ix) in before {
        assert_eq!(links(&p.ns(c))["cen1"].ifindex, ix, "{c}'s interface was rebuilt");
    }
    // A container that leaves its last made CEN loses its namespace.
    s.gql("mutation { containerLeaveCen(input: {containerId: \"newbie\", cenId: \"cen1\"}) { revision } }", json!({}))
        .await;
    assert!(!namespaces(&p.0).contains(&p.ns("newbie")));
}

#[tokio::test]
async fn drift_is_repaired_on_restart() {
    if !can_run("drift_is_repaired_on_restart") {
        return;
    }
    let p = Prefix::new("l");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.db");
    let s = start(&state, &p);
    s.gql(CEN_IMPORT, cen_file_vars(&fixture("cen.json"))).await;
    make(&s, "cen", &ALL_CENS).await;
    s.stop();
    // By hand: a veth deleted, a stray namespace under the prefix.
    assert!(Command::new("ip").args(["-n", &p.ns("c1"), "link", "del", "cen1"]).status().unwrap().success());
    assert!(Command::new("ip").args(["netns", "add", &p.ns("stray")]).status().unwrap().success());
    assert!(!links(&p.ns("c1")).contains_key("cen1"));
    let s = start(&state, &p);
    let deadline = Instant::now() + Duration::from_secs(30);
    // Repaired: the veth is back and up. The stray namespace is not this
    // server's (not in its ledger): it stays, reported as foreign.
    while !links(&p.ns("c1")).get("cen1").is_some_and(|l| l.up) {
        assert!(Instant::now() < deadline, "drift not repaired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(links(&p.ns("c1"))["cen1"].kind, "veth");
    let r = s.gql("mutation { reconcile(input: {wait: true}) { foreign } }", json!({})).await;
    assert_eq!(r["reconcile"]["foreign"], json!([format!("namespace {}", p.ns("stray"))]));
    assert!(namespaces(&p.0).contains(&p.ns("stray")));
    drop(s);
}

#[tokio::test]
async fn sigkill_mid_make_converges_without_leaks() {
    if !can_run("sigkill_mid_make_converges_without_leaks") {
        return;
    }
    let p = Prefix::new("l");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.db");
    let s = start(&state, &p);
    let cens: Vec<Value> = (0..20)
        .map(|i| json!({"id": format!("k{i}"), "containerIds": (0..10).map(|j| format!("m{}", i * 10 + j)).collect::<Vec<_>>()}))
        .collect();
    let ids: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    s.gql(CEN_IMPORT, json!({"input": {"cens": cens}})).await;
    s.gql("mutation($ids: [ID!]!) { cenMake(input: {ids: $ids, wait: false}) { revision } }", json!({"ids": ids}))
        .await;
    // Let it get part of the way.
    let deadline = Instant::now() + Duration::from_secs(20);
    while namespaces(&p.0).len() < 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    s.kill9();
    let s = start(&state, &p);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = statuses(&s).await;
        if st.values().all(|v| v == "READY") {
            break;
        }
        assert!(Instant::now() < deadline, "did not converge: {st:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ns = namespaces(&p.0);
    assert_eq!(ns.iter().filter(|n| **n != p.fabric()).count(), 200, "one namespace per container");
    for i in [0, 57, 199] {
        let l = links(&p.ns(&format!("m{i}")));
        assert!(l.get(&format!("k{}", i / 10)).is_some_and(|l| l.up), "m{i}: {l:?}");
    }
    let fabric = links(&p.fabric());
    assert_eq!(fabric.values().filter(|l| l.kind == "bridge").count(), 20);
    assert_eq!(fabric.values().filter(|l| l.kind == "veth").count(), 200, "leaked or missing veths");
    destroy(&s, "cen", &ids.iter().map(String::as_str).collect::<Vec<_>>()).await;
    assert_eq!(namespaces(&p.0), BTreeSet::new());
}

/// A namespace made by the test outside leviathan's prefix, deleted on drop.
struct ForeignNs(String);

impl Drop for ForeignNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[tokio::test]
async fn failures_are_reported_and_retried() {
    if !can_run("failures_are_reported_and_retried") {
        return;
    }
    let p = Prefix::new("f");
    let foreign = ForeignNs(format!("xg{}", std::process::id()));
    let path = format!("/run/netns/{}", foreign.0);
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("s.db"), &p);
    let bind = "mutation($p: String!) { containerCreate(input: {id: \"ghost\", netnsPath: $p}) { revision } }";
    // A namespace that does not exist cannot be bound at all.
    let (code, msg) = s.gql_err(bind, json!({"p": path})).await;
    assert_eq!(code, "BAD_REQUEST", "{msg}");
    assert!(msg.contains("does not exist"), "{msg}");
    // Bound while it exists, then gone before the make: the CEN is wired
    // without it, and the container alone says why.
    assert!(Command::new("ip").args(["netns", "add", &foreign.0]).status().unwrap().success());
    s.gql(bind, json!({"p": path})).await;
    assert!(Command::new("ip").args(["netns", "del", &foreign.0]).status().unwrap().success());
    s.gql(CEN_IMPORT, json!({"input": {"cens": [{"id": "x", "containerIds": ["ghost", "real1", "real2"]}]}})).await;
    let d = s.gql("mutation { cenMake(input: {ids: [\"x\"]}) { cens { status statusMessage } } }", json!({})).await;
    assert_eq!(d["cenMake"]["cens"][0]["status"], "READY", "{d}");
    let c = s.gql("{ container(id: \"ghost\") { status statusMessage } }", json!({})).await;
    assert_eq!(c["container"]["status"], "FAILED", "{c}");
    let why = c["container"]["statusMessage"].as_str().unwrap().to_string();
    assert!(why.contains(&foreign.0) && why.contains("gone"), "{why}");
    let c = s.gql("{ container(id: \"real1\") { status statusMessage } }", json!({})).await;
    assert_eq!(c["container"]["status"], "READY", "the other members are untouched: {c}");
    assert!(links(&p.ns("real1")).get("x").is_some_and(|l| l.up), "real1 is wired");
    // The namespace back, bound again: wired.
    assert!(Command::new("ip").args(["netns", "add", &foreign.0]).status().unwrap().success());
    s.gql(bind, json!({"p": path})).await;
    let c = s.gql("{ container(id: \"ghost\") { status statusMessage } }", json!({})).await;
    assert_eq!(c["container"]["status"], "READY", "{c}");
    assert!(links(&foreign.0).get("x").is_some_and(|l| l.up), "the bound namespace is wired");

    // A made CIN whose CENs are all destroyed is not READY.
    s.gql(CIN_IMPORT, json!({"input": {"cins": [{"id": "cx", "cenIds": ["x"]}]}})).await;
    make(&s, "cin", &["cx"]).await;
    destroy(&s, "cen", &["x"]).await;
    let c = s.gql("{ cin(id: \"cx\") { made status statusMessage } }", json!({})).await;
    assert_eq!(c["cin"]["status"], "PENDING", "{c}");
    assert!(c["cin"]["statusMessage"].as_str().unwrap().contains("none of its CENs"), "{c}");
    // The bound namespace outlives the destroy; only our link left it.
    assert!(std::path::Path::new(&path).exists());
    assert!(!links(&foreign.0).contains_key("x"));
}

#[tokio::test]
async fn no_wait_make_reports_progress_by_subscription() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue, Message};
    if !can_run("no_wait_make_reports_progress_by_subscription") {
        return;
    }
    let p = Prefix::new("o");
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("s.db"), &p);
    s.gql(CEN_IMPORT, cen_file_vars(&fixture("cen.json"))).await;
    let d = s
        .gql(
            "mutation { cenMake(input: {ids: [\"cen1\", \"cen2\", \"cen3\"], wait: false}) { operationId } }",
            json!({}),
        )
        .await;
    let op = d["cenMake"]["operationId"].as_str().expect("an operation id").to_string();

    let mut req = format!("ws://{}/graphql/ws", s.addr).into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("graphql-transport-ws"));
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws.send(Message::text(json!({"type": "connection_init"}).to_string())).await.unwrap();
    let q = "subscription($id: ID!) { operation(id: $id) { stepsDone stepsTotal state message } }";
    let mut acked = false;
    let mut last = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let Some(Ok(msg)) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap() else { break };
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(&t).unwrap();
        match v["type"].as_str() {
            Some("connection_ack") if !acked => {
                acked = true;
                let sub = json!({"id": "1", "type": "subscribe", "payload": {"query": q, "variables": {"id": op}}});
                ws.send(Message::text(sub.to_string())).await.unwrap();
            }
            Some("next") => {
                last = v["payload"]["data"]["operation"].clone();
                assert!(last["stepsDone"].as_i64() <= last["stepsTotal"].as_i64(), "{last}");
            }
            Some("complete") => break,
            _ => {}
        }
    }
    assert_eq!(last["state"], "SUCCEEDED", "{last}");
    assert!(last["stepsTotal"].as_i64().unwrap() > 0, "{last}");
    assert_eq!(last["stepsDone"], last["stepsTotal"]);
    assert!(links(&p.ns("c9")).contains_key("cen3"));
}

#[tokio::test]
async fn drift_is_repaired_by_reconcile_without_restart() {
    if !can_run("drift_is_repaired_by_reconcile_without_restart") {
        return;
    }
    let p = Prefix::new("d");
    let dir = tempfile::tempdir().unwrap();
    let s = start(&dir.path().join("s.db"), &p);
    s.gql(CEN_IMPORT, cen_file_vars(&fixture("cen.json"))).await;
    make(&s, "cen", &ALL_CENS).await;
    let untouched = links(&p.ns("c12"))["cen4"].ifindex;
    assert!(Command::new("ip").args(["-n", &p.ns("c11"), "link", "del", "cen4"]).status().unwrap().success());
    assert!(Command::new("ip").args(["-n", &p.ns("c3"), "link", "set", "cen5", "down"]).status().unwrap().success());
    // The wire's other end went with it.
    assert!(!links(&p.ns("c12")).contains_key("cen4"));
    let d = s.gql("mutation { reconcile(input: {}) { done } }", json!({})).await;
    assert_eq!(d["reconcile"]["done"], true);
    let (c11, c12) = (links(&p.ns("c11")), links(&p.ns("c12")));
    assert!(c11["cen4"].up && c12["cen4"].up, "{c11:?} {c12:?}");
    assert_ne!(c12["cen4"].ifindex, untouched, "the wire was recreated");
    assert!(links(&p.ns("c3"))["cen5"].up, "a link set down by hand is set up again");
    // Without a realizer there is nothing to reconcile.
    let plain = Server::start(&dir.path().join("plain.db"), &[]);
    let (code, _) = plain.gql_err("mutation { reconcile(input: {}) { done } }", json!({})).await;
    assert_eq!(code, "CONFLICT");
}
