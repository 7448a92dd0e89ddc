//! A change costs what it changes: change records of joins stay small
//! however large the CEN, the change log keeps the last N and says GONE
//! before that, a CIN over two CENs with a container on both is READY and
//! every member reaches every other, and a thousand small CINs fit and are
//! made.
//!
//! The kernel tests need root: in CI (`CI` set) they fail if they cannot
//! run; elsewhere they skip with a loud message. Each uses its own prefix.

mod common;

use common::kernel::*;
use common::*;
use serde_json::{json, Value};
use std::sync::Arc;

const JOIN: &str =
    "mutation($c: ID!, $cen: ID!) { containerJoinCen(input: {containerId: $c, cenId: $cen}) { revision } }";
const LEAVE: &str =
    "mutation($c: ID!, $cen: ID!) { containerLeaveCen(input: {containerId: $c, cenId: $cen}) { revision } }";

/// The size of the change record of each revision, as the log stores it.
async fn record_size(svc: &leviathan::service::Service, revision: u64) -> usize {
    let changes = svc.change_log(revision - 1, 1).await.unwrap();
    assert_eq!(changes[0].revision, revision);
    serde_json::to_string(&changes[0]).unwrap().len()
}

#[tokio::test]
async fn a_join_to_a_huge_cen_is_a_small_change() {
    use leviathan::model::{CenSpec, CinSpec, Command};
    let dir = tempfile::tempdir().unwrap();
    let svc = leviathan::service::Service::open(&dir.path().join("s.db"), "host1").unwrap();
    let members: Vec<String> = (0..10_000).map(|i| format!("m{i}")).collect();
    svc.execute(Command::CenImport {
        host: "host1".into(),
        cens: vec![CenSpec { id: "big".into(), containers: members }],
    })
    .await
    .unwrap();
    svc.execute(Command::CinImport { cins: vec![CinSpec { id: "cin1".into(), cens: vec!["big".into()] }] })
        .await
        .unwrap();
    let join = Command::ContainerJoinCen { host: "host1".into(), container: "newcomer".into(), cen: "big".into() };
    let r = svc.execute(join).await.unwrap();
    let size = record_size(&svc, r).await;
    assert!(size < 4096, "the change record of a join is {size} bytes");
    // The newcomer got the next address of the CIN.
    let addr = svc.read(|t| {
        let m = t.member(&leviathan::model::MemberKey::new(
            "big",
            &leviathan::model::ContainerKey::new("host1", "newcomer"),
        ));
        m.and_then(|m| m.addresses.get("cin1").copied())
    });
    assert_eq!(addr, Some("10.10.39.26".parse().unwrap()), "10,000 members hold .10 to 39.25");
    let leave = Command::ContainerLeaveCen { host: "host1".into(), container: "m5".into(), cen: "big".into() };
    let r = svc.execute(leave).await.unwrap();
    let size = record_size(&svc, r).await;
    assert!(size < 4096, "the change record of a leave is {size} bytes");
    // The freed address is handed out again, lowest first.
    let join = Command::ContainerJoinCen { host: "host1".into(), container: "second".into(), cen: "big".into() };
    svc.execute(join).await.unwrap();
    let addr = svc.read(|t| {
        let m =
            t.member(&leviathan::model::MemberKey::new("big", &leviathan::model::ContainerKey::new("host1", "second")));
        m.and_then(|m| m.addresses.get("cin1").copied())
    });
    assert_eq!(addr, Some("10.10.0.15".parse().unwrap()));
}

#[tokio::test]
async fn changes_older_than_the_log_keeps_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("s.db"), &["--keep-changes", "5"]);
    for i in 0..12 {
        s.gql("mutation($id: ID!) { cenCreate(input: {id: $id}) { revision } }", json!({"id": format!("cen{i}")}))
            .await;
    }
    let rev = s.revision().await;
    assert_eq!(rev, 12);
    // Within the log: replayed over a websocket.
    let mut ws = ws_open(&s).await;
    ws_send(&mut ws, json!({"id": "1", "type": "subscribe", "payload": {"query": "subscription { changes(since: 7) { revision } }"}})).await;
    let m = ws_recv(&mut ws).await;
    assert_eq!(m["payload"]["data"]["changes"]["revision"], 8, "{m}");
    // Older: a clear GONE that says what to do.
    ws_send(&mut ws, json!({"id": "2", "type": "subscribe", "payload": {"query": "subscription { changes(since: 2) { revision } }"}})).await;
    let m = loop {
        let m = ws_recv(&mut ws).await;
        if m["id"] == "2" {
            break m;
        }
    };
    let e = &m["payload"]["errors"][0];
    assert_eq!(e["extensions"]["code"], "GONE", "{m}");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("no longer kept") && msg.contains("read the current state") && msg.contains("12"), "{msg}");
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_open(s: &Server) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/graphql/ws", s.addr).into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    ws_send(&mut ws, json!({"type": "connection_init"})).await;
    assert_eq!(ws_recv(&mut ws).await["type"], "connection_ack");
    ws
}

async fn ws_send(ws: &mut Ws, v: Value) {
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(v.to_string().into())).await.unwrap();
}

async fn ws_recv(ws: &mut Ws) -> Value {
    use futures_util::StreamExt;
    loop {
        let m = tokio::time::timeout(std::time::Duration::from_secs(60), ws.next())
            .await
            .expect("timed out waiting for a websocket message")
            .expect("websocket ended")
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

async fn status_of(s: &Server, kind: &str, id: &str) -> (String, Value) {
    let d = s.gql(&format!("{{ {kind}(id: \"{id}\") {{ status statusMessage }} }}"), json!({})).await;
    (d[kind]["status"].as_str().unwrap_or("").to_string(), d[kind]["statusMessage"].clone())
}

#[tokio::test]
async fn a_container_on_two_slices_of_one_cin() {
    if !can_run("a_container_on_two_slices_of_one_cin") {
        return;
    }
    let p = Prefix::new("s");
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("s.db"), &["--prefix", &p.0]);
    // The original example's c11 in cen3 and cen4, with a CIN over both.
    s.gql(
        "mutation { cenImport(input: {cens: [{id: \"cen3\", containerIds: [\"c15\",\"c16\",\"c9\",\"c10\",\"c11\"]}, {id: \"cen4\", containerIds: [\"c11\",\"c12\"]}]}) { revision } }",
        json!({}),
    )
    .await;
    s.gql(
        "mutation { cinImport(input: {cins: [{id: \"cin3\", cenIds: [\"cen3\", \"cen4\"]}]}) { revision } }",
        json!({}),
    )
    .await;
    let d = s.gql("mutation { cinMake(input: {ids: [\"cin3\"]}) { cins { status statusMessage } } }", json!({})).await;
    assert_eq!(d["cinMake"]["cins"][0]["status"], "READY", "{d}");
    for cen in ["cen3", "cen4"] {
        assert_eq!(status_of(&s, "cen", cen).await.0, "READY");
    }
    let members = s.gql("{ cin(id: \"cin3\") { members { container { id } address } } }", json!({})).await;
    let members: Vec<(String, String)> = members["cin"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["container"]["id"].as_str().unwrap().to_string(), m["address"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(members.len(), 7, "{members:?}");
    // Every member reaches every other, on either slice.
    for (from, _) in &members {
        for (to, addr) in &members {
            if from != to {
                assert!(ping(&p.ns(from), addr), "{from} cannot reach {to} at {addr}");
            }
        }
    }
    // The bridge's MAC was pinned at creation and survives a join.
    let mac = |s: &str| {
        let v = ip_json(&["-n", &p.fabric(), "link", "show", s]);
        v[0]["address"].as_str().unwrap().to_string()
    };
    let br = format!("{}bcen3", p.0);
    let before = mac(&br);
    assert!(before.starts_with("02:"), "{before}");
    s.gql(JOIN, json!({"c": "late", "cen": "cen3"})).await;
    assert_eq!(mac(&br), before);
    s.gql(LEAVE, json!({"c": "c9", "cen": "cen3"})).await;
    assert_eq!(mac(&br), before);
    s.gql("mutation { cinDestroy(input: {ids: [\"cin3\"]}) { revision } }", json!({})).await;
    s.gql("mutation { cenDestroy(input: {ids: [\"cen3\", \"cen4\"]}) { revision } }", json!({})).await;
    assert!(namespaces(&p.0).is_empty(), "left {:?}", namespaces(&p.0));
}

#[tokio::test]
async fn a_thousand_small_cins() {
    if !can_run("a_thousand_small_cins") {
        return;
    }
    let p = Prefix::new("k");
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(Server::start(&dir.path().join("s.db"), &["--prefix", &p.0, "--cin-prefix-len", "24"]));
    let cens: Vec<Value> =
        (0..1000).map(|i| json!({"id": format!("e{i}"), "containerIds": [format!("a{i}"), format!("b{i}")]})).collect();
    s.gql("mutation($c: [CenImportItem!]!) { cenImport(input: {cens: $c}) { revision } }", json!({"c": cens})).await;
    let cins: Vec<Value> = (0..1000).map(|i| json!({"id": format!("n{i}"), "cenIds": [format!("e{i}")]})).collect();
    s.gql("mutation($c: [CinImportItem!]!) { cinImport(input: {cins: $c}) { revision } }", json!({"c": cins})).await;
    let ids: Vec<String> = (0..1000).map(|i| format!("n{i}")).collect();
    let d = s
        .gql(
            "mutation($ids: [ID!]!) { cinMake(input: {ids: $ids}) { cins { id status statusMessage } } }",
            json!({"ids": ids}),
        )
        .await;
    let cins = d["cinMake"]["cins"].as_array().unwrap();
    assert_eq!(cins.len(), 1000);
    for c in cins {
        assert_eq!(c["status"], "READY", "{c}");
    }
    let last = s.gql("{ cin(id: \"n999\") { subnet members { address } } }", json!({})).await;
    // 10.10.0.0/24 up: the thousandth is 10.13.231.0/24.
    assert_eq!(last["cin"]["subnet"], "10.13.231.0/24");
    assert!(ping(&p.ns("a999"), "10.13.231.11"), "a999 cannot reach b999");
    assert!(ping(&p.ns("a0"), "10.10.0.11"), "a0 cannot reach b0");
    s.gql("mutation($ids: [ID!]!) { cinDestroy(input: {ids: $ids}) { revision } }", json!({"ids": ids})).await;
    let cen_ids: Vec<String> = (0..1000).map(|i| format!("e{i}")).collect();
    s.gql("mutation($ids: [ID!]!) { cenDestroy(input: {ids: $ids}) { revision } }", json!({"ids": cen_ids})).await;
    assert!(namespaces(&p.0).is_empty());
}

#[tokio::test]
async fn a_namespace_left_without_links_still_goes() {
    if !can_run("a_namespace_left_without_links_still_goes") {
        return;
    }
    let p = Prefix::new("g");
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("s.db"), &["--prefix", &p.0]);
    s.gql(
        "mutation { cenImport(input: {cens: [{id: \"pair\", containerIds: [\"web1\", \"db1\"]}]}) { revision } }",
        json!({}),
    )
    .await;
    s.gql("mutation { cenMake(input: {ids: [\"pair\"]}) { revision } }", json!({})).await;
    assert_eq!(namespaces(&p.0).len(), 2);
    // One member goes: the other is left alone in the CEN, with no link.
    s.gql("mutation { containerDelete(input: {id: \"web1\"}) { revision } }", json!({})).await;
    assert_eq!(namespaces(&p.0), [p.ns("db1")].into_iter().collect());
    assert!(!links(&p.ns("db1")).contains_key("pair"));
    // Destroying the CEN finds that namespace although no link leads there.
    s.gql("mutation { cenDestroy(input: {ids: [\"pair\"]}) { revision } }", json!({})).await;
    assert!(namespaces(&p.0).is_empty(), "left {:?}", namespaces(&p.0));
}
