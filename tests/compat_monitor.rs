//! The legacy monitor websocket against the real server: a real websocket
//! client (tokio-tungstenite), changes made through the legacy routes and
//! GraphQL, and the same changes seen through the `cinMonitor` subscription.

mod compat_common;

use compat_common::{fixture, Server};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(s: &Server) -> Ws {
    let url = format!("ws://{}/leviathan/monitor", s.addr);
    tokio_tungstenite::connect_async(url.as_str()).await.expect("websocket").0
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.expect("send");
}

async fn recv(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")
            .expect("the socket is open")
            .expect("a frame");
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).expect("JSON");
        }
    }
}

fn start(seq: &str, cin: &str, tag: Option<&str>, id: Option<&str>) -> Value {
    let mut v = json!({"type": "start", "sequence": seq, "monitor": "CIN", "parameters": {"cinID": cin}});
    if let Some(t) = tag {
        v["parameters"]["container_tag"] = json!(t);
    }
    if let Some(id) = id {
        v["monitorID"] = json!(id);
    }
    v
}

fn ids(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|m| m["containerID"].as_str().expect("containerID").to_string())
        .collect()
}

fn set(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn seeded() -> Server {
    let s = Server::start();
    assert_eq!(s.post_file("/cen/import", &fixture("cen.json")).status, 204);
    assert_eq!(s.post_file("/cin/import", &fixture("cin.json")).status, 204);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitors_follow_a_cin() {
    let s = seeded();
    let mut ws = connect(&s).await;

    // M1: all of cin1.
    send(&mut ws, start("S1", "cin1", None, None)).await;
    let r = recv(&mut ws).await;
    assert_eq!((r["type"].as_str(), r["sequence"].as_str()), (Some("response"), Some("S1")), "{r}");
    let m1 = r["response"]["monitorID"].as_str().expect("monitorID").to_string();
    let state = &r["response"]["state"];
    assert_eq!(ids(state), set(&["c1", "c13", "c14", "c2"]));
    for m in state.as_array().unwrap() {
        assert!(m["ipaddress"].as_str().unwrap().starts_with("10.10.0."), "{m}");
        assert_eq!(m["tag"], Value::Null);
    }

    // M2: cin1's containers tagged "web" (none yet).
    s.graphql(r#"mutation { containerCreate(input: {id: "c30", tag: "web"}) { revision } }"#);
    send(&mut ws, start("S2", "cin1", Some("web"), None)).await;
    let r = recv(&mut ws).await;
    assert_eq!(r["sequence"], "S2", "{r}");
    let m2 = r["response"]["monitorID"].as_str().expect("monitorID").to_string();
    assert_ne!(m1, m2);
    assert_eq!(r["response"]["state"], json!([]));

    // A tagged container joins: both monitors see it created.
    assert_eq!(s.curl("PUT", "/host/host1/c30/cen1", &[]).status, 200);
    let mut got = [recv(&mut ws).await, recv(&mut ws).await];
    got.sort_by_key(|v| v["monitorID"] != json!(m1));
    for (ev, id) in got.iter().zip([&m1, &m2]) {
        assert_eq!(ev["type"], "event", "{ev}");
        assert_eq!(ev["monitorID"], json!(id));
        assert_eq!(ev["event"], "create");
        assert_eq!(ids(&ev["message"]), set(&["c30"]));
        assert_eq!(ev["message"][0]["tag"], "web");
        assert!(ev["message"][0]["ipaddress"].as_str().unwrap().starts_with("10.10.0."));
    }

    // An untagged one: only M1.
    assert_eq!(s.curl("PUT", "/host/host1/c31/cen1", &[]).status, 200);
    let ev = recv(&mut ws).await;
    assert_eq!((ev["monitorID"].as_str(), ev["event"].as_str()), (Some(m1.as_str()), Some("create")), "{ev}");
    assert_eq!(ids(&ev["message"]), set(&["c31"]));

    // Stop M2.
    send(&mut ws, json!({"type": "stop", "sequence": "S3", "monitorID": m2})).await;
    assert_eq!(recv(&mut ws).await, json!({"type": "response", "sequence": "S3", "response": {"monitorID": m2}}));

    // A tag change is an update; leaving the CEN is a delete.
    s.graphql(r#"mutation { containerSetTag(input: {id: "c31", tag: "db"}) { revision } }"#);
    let ev = recv(&mut ws).await;
    assert_eq!((ev["monitorID"].as_str(), ev["event"].as_str()), (Some(m1.as_str()), Some("update")), "{ev}");
    assert_eq!(ev["message"][0]["containerID"], "c31");
    assert_eq!(ev["message"][0]["tag"], "db");
    assert_eq!(s.curl("DELETE", "/host/host1/c31/cen1", &[]).status, 204);
    let ev = recv(&mut ws).await;
    assert_eq!((ev["monitorID"].as_str(), ev["event"].as_str()), (Some(m1.as_str()), Some("delete")), "{ev}");
    assert_eq!(ids(&ev["message"]), set(&["c31"]));

    // Replace M1 by a monitor of cin2: same id, cin1 no longer reported.
    send(&mut ws, start("S4", "cin2", None, Some(&m1))).await;
    let r = recv(&mut ws).await;
    assert_eq!(r["response"]["monitorID"], json!(m1), "{r}");
    assert_eq!(ids(&r["response"]["state"]), set(&["c4", "c5", "c6", "c7"]));
    assert_eq!(s.curl("PUT", "/host/host1/c32/cen1", &[]).status, 200);
    assert_eq!(s.curl("PUT", "/host/host1/c33/cen2", &[]).status, 200);
    let ev = recv(&mut ws).await;
    assert_eq!((ev["monitorID"].as_str(), ev["event"].as_str()), (Some(m1.as_str()), Some("create")), "{ev}");
    assert_eq!(ids(&ev["message"]), set(&["c33"]));
    assert!(ev["message"][0]["ipaddress"].as_str().unwrap().starts_with("10.11.0."));

    // A CEN id where no CIN has that id: that CEN's containers.
    send(&mut ws, start("S5", "cen3", None, Some("by-cen"))).await;
    let r = recv(&mut ws).await;
    assert_eq!(r["response"]["monitorID"], "by-cen", "{r}");
    assert_eq!(ids(&r["response"]["state"]), set(&["c10", "c11", "c15", "c16", "c9"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_errors_close_nothing() {
    let s = seeded();
    let mut ws = connect(&s).await;

    send(&mut ws, start("E1", "cin9", None, None)).await;
    let e = recv(&mut ws).await;
    assert_eq!((e["type"].as_str(), e["sequence"].as_str()), (Some("error"), Some("E1")), "{e}");
    assert!(e["response"]["message"].as_str().unwrap().contains("cin9"), "{e}");

    ws.send(Message::Text("{\"type\": \"start\",".into())).await.unwrap();
    let e = recv(&mut ws).await;
    assert_eq!((e["type"].as_str(), &e["sequence"]), (Some("error"), &Value::Null), "{e}");

    send(&mut ws, json!({"type": "start", "sequence": "E3", "monitor": "CIN", "parameters": {}})).await;
    let e = recv(&mut ws).await;
    assert_eq!((e["type"].as_str(), e["sequence"].as_str()), (Some("error"), Some("E3")), "{e}");
    assert!(e["response"]["message"].as_str().unwrap().contains("cinID"), "{e}");

    send(&mut ws, json!({"type": "stop", "sequence": "E4", "monitorID": "nope"})).await;
    let e = recv(&mut ws).await;
    assert_eq!((e["type"].as_str(), e["sequence"].as_str()), (Some("error"), Some("E4")), "{e}");

    // The connection still works.
    send(&mut ws, start("S1", "cin2", None, None)).await;
    let r = recv(&mut ws).await;
    assert_eq!((r["type"].as_str(), r["sequence"].as_str()), (Some("response"), Some("S1")), "{r}");
    assert_eq!(ids(&r["response"]["state"]), set(&["c4", "c5", "c6", "c7"]));
}

/// With a token configured, the monitor wants it too (`?token=`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_wants_the_token() {
    let s = Server::start_with(Some("s3cret"));
    let url = format!("ws://{}/leviathan/monitor", s.addr);
    assert!(tokio_tungstenite::connect_async(url.as_str()).await.is_err(), "upgraded without a token");
    let url = format!("ws://{}/leviathan/monitor?token=s3cret", s.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.expect("upgrade with the token");
    ws.send(Message::Text("nonsense".into())).await.unwrap();
    assert_eq!(recv(&mut ws).await["sequence"], Value::Null);
}

/// The legacy monitor is a translation of the `cinMonitor` subscription: for
/// the same changes, both report the same events with the same members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitor_matches_the_graphql_subscription() {
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};
    let s = seeded();
    let mut legacy = connect(&s).await;
    send(&mut legacy, start("S1", "cin1", None, None)).await;
    let first = recv(&mut legacy).await;
    let legacy_state = first["response"]["state"].clone();

    let mut req = format!("ws://{}/graphql/ws", s.addr).into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("graphql-transport-ws"));
    let (mut gql, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    send(&mut gql, json!({"type": "connection_init"})).await;
    assert_eq!(recv(&mut gql).await["type"], "connection_ack");
    let q = "subscription { cinMonitor(cinId: \"cin1\") { kind members { containerId address tag } } }";
    send(&mut gql, json!({"id": "m", "type": "subscribe", "payload": {"query": q}})).await;

    // GraphQL events in the legacy shape.
    let as_legacy = |v: &Value| -> (String, BTreeSet<String>) {
        let ev = &v["payload"]["data"]["cinMonitor"];
        let members: BTreeSet<String> = ev["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| json!({"containerID": m["containerId"], "ipaddress": m["address"], "tag": m["tag"]}).to_string())
            .collect();
        (ev["kind"].as_str().unwrap().to_lowercase(), members)
    };
    let legacy_members = |list: &Value| -> BTreeSet<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|m| json!({"containerID": m["containerID"], "ipaddress": m["ipaddress"], "tag": m["tag"]}).to_string())
            .collect()
    };
    let (kind, members) = as_legacy(&recv(&mut gql).await);
    assert_eq!(kind, "state");
    assert_eq!(members, legacy_members(&legacy_state));

    s.graphql(r#"mutation { containerJoinCen(input: {containerId: "c40", cenId: "cen1"}) { revision } }"#);
    s.graphql(r#"mutation { containerSetTag(input: {id: "c40", tag: "web"}) { revision } }"#);
    assert_eq!(s.curl("DELETE", "/host/host1/c2/cen1", &[]).status, 204);
    s.graphql(r#"mutation { containerDelete(input: {id: "c13"}) { revision } }"#);
    let mut seen = Vec::new();
    for _ in 0..4 {
        let ev = recv(&mut legacy).await;
        let (kind, members) = as_legacy(&recv(&mut gql).await);
        assert_eq!(ev["event"].as_str().unwrap(), kind, "legacy {ev}");
        assert_eq!(legacy_members(&ev["message"]), members, "legacy {ev}");
        seen.push(kind);
    }
    assert_eq!(seen, ["create", "update", "delete", "delete"]);
}
