//! GraphQL subscriptions over `/graphql/ws` with a real websocket client
//! against the real server binary, for both subprotocols; plus in-process
//! checks of what a test cannot provoke from outside (lag, slow readers,
//! operation progress).

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use leviathan::graphql::ws::WsConfig;
use leviathan::model::Command;
use leviathan::server::{self, AppState};
use leviathan::service::Service;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const TRANSPORT: &str = "graphql-transport-ws";
const LEGACY: &str = "graphql-ws";
const WAIT: Duration = Duration::from_secs(15);

struct Ws {
    proto: &'static str,
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

fn ws_request(addr: &str, proto: &str, query: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut req = format!("ws://{addr}/graphql/ws{query}").into_client_request().unwrap();
    if !proto.is_empty() {
        req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_str(proto).unwrap());
    }
    req
}

impl Ws {
    async fn connect(addr: &str, proto: &'static str, query: &str) -> Ws {
        let (stream, resp) =
            tokio_tungstenite::connect_async(ws_request(addr, proto, query)).await.expect("ws connect");
        assert_eq!(resp.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()), Some(proto));
        Ws { proto, stream }
    }

    /// Connects and completes `connection_init` / `connection_ack`.
    async fn open(addr: &str, proto: &'static str, payload: Value) -> Ws {
        let mut ws = Ws::connect(addr, proto, "").await;
        ws.send(json!({"type": "connection_init", "payload": payload})).await;
        let ack = ws.recv().await;
        assert_eq!(ack["type"], "connection_ack", "{ack}");
        ws
    }

    async fn send(&mut self, v: Value) {
        self.stream.send(Message::Text(v.to_string().into())).await.expect("ws send");
    }

    /// The next protocol message (keep-alives skipped).
    async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.stream.next())
                .await
                .expect("timed out waiting for a websocket message")
                .expect("websocket ended")
                .expect("websocket error");
            match msg {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("JSON message");
                    if v["type"] == "ka" {
                        continue;
                    }
                    return v;
                }
                Message::Close(f) => panic!("unexpected close: {f:?}"),
                _ => continue,
            }
        }
    }

    /// Waits for the server's close frame; returns its code and reason.
    async fn closed(&mut self) -> (u16, String) {
        loop {
            let msg = tokio::time::timeout(WAIT, self.stream.next()).await.expect("timed out waiting for close");
            match msg {
                Some(Ok(Message::Close(Some(f)))) => return (u16::from(f.code), f.reason.to_string()),
                Some(Ok(Message::Close(None))) | None => return (1005, String::new()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("websocket error before close: {e}"),
            }
        }
    }

    async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        let ty = if self.proto == TRANSPORT { "subscribe" } else { "start" };
        self.send(json!({"type": ty, "id": id, "payload": {"query": query, "variables": variables}})).await;
    }

    /// The next result of subscription `id` (`next` / `data`), as `data`.
    async fn next(&mut self, id: &str) -> Value {
        let m = self.recv().await;
        let ty = if self.proto == TRANSPORT { "next" } else { "data" };
        assert_eq!(m["type"], ty, "expected a result for {id}: {m}");
        assert_eq!(m["id"], id, "{m}");
        assert!(m["payload"].get("errors").is_none(), "unexpected errors: {m}");
        m["payload"]["data"].clone()
    }
}

const CHANGES: &str = r#"subscription($since: Int, $kinds: [EntityKind!], $ids: [ID!]) {
  changes(since: $since, kinds: $kinds, ids: $ids) {
    revision mutation atMs
    items { kind id hostId op after { __typename ... on Cen { id made } ... on Container { id tag } } }
  }
}"#;

const MONITOR: &str = r#"subscription($id: ID!, $tag: String) {
  cinMonitor(cinId: $id, containerTag: $tag) {
    kind revision cinId cenMode members { containerId hostId cenId address tag }
  }
}"#;

const JOIN: &str =
    "mutation($c: ID!, $cen: ID!) { containerJoinCen(input: {containerId: $c, cenId: $cen}) { revision } }";
const LEAVE: &str =
    "mutation($c: ID!, $cen: ID!) { containerLeaveCen(input: {containerId: $c, cenId: $cen}) { revision } }";
const SET_TAG: &str = "mutation($c: ID!, $tag: String) { containerSetTag(input: {id: $c, tag: $tag}) { revision } }";
const CEN_CREATE: &str = "mutation($id: ID!) { cenCreate(input: {id: $id}) { revision } }";

async fn cen_create(s: &Server, id: &str) -> i64 {
    s.gql(CEN_CREATE, json!({"id": id})).await["cenCreate"]["revision"].as_i64().unwrap()
}

/// (revision, [(kind, id, op)]) of a `changes` event.
fn summary(ev: &Value) -> (i64, Vec<(String, String, String)>) {
    let c = &ev["changes"];
    let items = c["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().unwrap().to_string(),
                i["id"].as_str().unwrap().to_string(),
                i["op"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (c["revision"].as_i64().unwrap(), items)
}

fn t3(k: &str, id: &str, op: &str) -> (String, String, String) {
    (k.to_string(), id.to_string(), op.to_string())
}

#[tokio::test]
async fn changes_arrive_in_order_on_both_protocols() {
    for proto in [TRANSPORT, LEGACY] {
        let dir = tempfile::tempdir().unwrap();
        let s = Server::start(&dir.path().join("x.db"), &[]);
        let rev0 = s.revision().await;
        let mut ws = Ws::open(&s.addr, proto, json!({})).await;
        ws.subscribe("1", CHANGES, json!({"since": rev0})).await;

        let r1 = cen_create(&s, "cen1").await;
        let r2 = s.gql(JOIN, json!({"c": "c1", "cen": "cen1"})).await["containerJoinCen"]["revision"].as_i64().unwrap();
        let r3 =
            s.gql(SET_TAG, json!({"c": "c1", "tag": "red"})).await["containerSetTag"]["revision"].as_i64().unwrap();
        assert_eq!((r1, r2, r3), (rev0 + 1, rev0 + 2, rev0 + 3));

        let e1 = ws.next("1").await;
        assert_eq!(summary(&e1), (r1, vec![t3("CEN", "cen1", "CREATE")]), "{proto}");
        assert_eq!(e1["changes"]["mutation"], "cenCreate");
        assert!(e1["changes"]["atMs"].as_f64().unwrap() > 1.6e12);
        // The record's own fields as of that revision (its size is a count
        // of memberships, records of their own, looked up as they are now).
        assert_eq!(e1["changes"]["items"][0]["after"], json!({"__typename": "Cen", "id": "cen1", "made": false}));
        let e2 = ws.next("1").await;
        let (rev, items) = summary(&e2);
        assert_eq!(rev, r2);
        assert!(items.contains(&t3("CONTAINER", "c1", "CREATE")), "{e2}");
        // A join is a membership of its own: the CEN record is untouched.
        assert!(items.contains(&t3("MEMBERSHIP", "cen1/c1", "CREATE")), "{e2}");
        assert!(!items.iter().any(|i| i.0 == "CEN"), "{e2}");
        let e3 = ws.next("1").await;
        assert_eq!(summary(&e3), (r3, vec![t3("CONTAINER", "c1", "UPDATE")]));
        let item = &e3["changes"]["items"][0];
        assert_eq!(item["hostId"], "host1");
        assert_eq!(item["after"], json!({"__typename": "Container", "id": "c1", "tag": "red"}));

        // Nothing in between: the next event is the next revision.
        let r4 = s.gql("mutation { containerDelete(input: {id: \"c1\"}) { revision } }", json!({})).await
            ["containerDelete"]["revision"]
            .as_i64()
            .unwrap();
        let e4 = ws.next("1").await;
        let (rev, items) = summary(&e4);
        assert_eq!(rev, r4);
        assert!(items.contains(&t3("CONTAINER", "c1", "DELETE")), "{e4}");
        let deleted = e4["changes"]["items"].as_array().unwrap().iter().find(|i| i["kind"] == "CONTAINER").unwrap();
        assert!(deleted["after"].is_null());

        // Ending the subscription.
        let stop = if proto == TRANSPORT { "complete" } else { "stop" };
        ws.send(json!({"type": stop, "id": "1"})).await;
        if proto == LEGACY {
            assert_eq!(ws.recv().await, json!({"type": "complete", "id": "1"}));
        }
        // The server reads a connection's messages in order: once a later
        // subscription answers, the ended one is gone (anything it sent is
        // already on the wire before this answer).
        ws.subscribe("2", "subscription { cinMonitor(cinId: \"cen1\") { kind revision } }", json!({})).await;
        loop {
            let m = ws.recv().await;
            if m["id"] == "2" {
                assert_eq!(m["payload"]["data"]["cinMonitor"]["kind"], "STATE", "{proto}: {m}");
                break;
            }
            assert!(m["id"] == "1" && m["payload"]["data"]["changes"]["revision"].as_i64() <= Some(r4), "{m}");
        }
        cen_create(&s, "cen2").await;
        // Still alive, and nothing from the ended subscription.
        ws.subscribe("3", "subscription { cinMonitor(cinId: \"cen2\") { kind revision } }", json!({})).await;
        let m = ws.next("3").await;
        assert_eq!(m["cinMonitor"]["kind"], "STATE", "{proto}: {m}");
    }
}

#[tokio::test]
async fn filters_keep_only_the_kinds_and_ids_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("x.db"), &[]);
    let mut ws = Ws::open(&s.addr, TRANSPORT, json!({})).await;
    ws.subscribe("k", CHANGES, json!({"since": 0, "kinds": ["CONTAINER"], "ids": ["c2", "host1/c3"]})).await;
    cen_create(&s, "cen1").await;
    s.gql(JOIN, json!({"c": "c1", "cen": "cen1"})).await;
    let r = s.gql(JOIN, json!({"c": "c2", "cen": "cen1"})).await["containerJoinCen"]["revision"].as_i64().unwrap();
    let r3 = s.gql(JOIN, json!({"c": "c3", "cen": "cen1"})).await["containerJoinCen"]["revision"].as_i64().unwrap();
    assert_eq!(summary(&ws.next("k").await), (r, vec![t3("CONTAINER", "c2", "CREATE")]));
    assert_eq!(summary(&ws.next("k").await), (r3, vec![t3("CONTAINER", "c3", "CREATE")]));

    // Bad arguments are named.
    for (vars, needle) in [
        (json!({"since": -1}), "since must not be negative"),
        (json!({"since": 99}), "since 99 is ahead of the current revision"),
        (json!({"kinds": []}), "kinds must not be empty"),
    ] {
        ws.subscribe("bad", CHANGES, vars.clone()).await;
        let m = ws.recv().await;
        assert_eq!(m["type"], "next", "{m}");
        let e = &m["payload"]["errors"][0];
        assert_eq!(e["extensions"]["code"], "BAD_REQUEST", "{vars}: {m}");
        assert!(e["message"].as_str().unwrap().contains(needle), "{vars}: {m}");
        assert_eq!(ws.recv().await, json!({"type": "complete", "id": "bad"}));
    }
    // A document the schema refuses is an `error` message.
    ws.subscribe("v", "subscription { changes { nope } }", json!({})).await;
    let m = ws.recv().await;
    assert_eq!(m["type"], "error", "{m}");
    assert_eq!(m["id"], "v");
    assert_eq!(m["payload"][0]["extensions"]["code"], "BAD_REQUEST", "{m}");
}

async fn revisions(ws: &mut Ws, id: &str, n: usize) -> Vec<i64> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(ws.next(id).await["changes"]["revision"].as_i64().unwrap());
    }
    v
}

#[tokio::test]
async fn resume_with_since_after_disconnect_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("x.db");
    let s = Server::start(&state, &[]);
    for i in 0..5 {
        cen_create(&s, &format!("a{i}")).await;
    }
    let mut ws = Ws::open(&s.addr, TRANSPORT, json!({})).await;
    ws.subscribe("1", CHANGES, json!({"since": 0})).await;
    assert_eq!(revisions(&mut ws, "1", 5).await, [1, 2, 3, 4, 5]);
    cen_create(&s, "b0").await;
    assert_eq!(revisions(&mut ws, "1", 1).await, [6]);
    drop(ws);

    // Changes while disconnected, then resume after the last one seen.
    for i in 1..4 {
        cen_create(&s, &format!("b{i}")).await;
    }
    let mut ws = Ws::open(&s.addr, LEGACY, json!({})).await;
    ws.subscribe("2", CHANGES, json!({"since": 6})).await;
    assert_eq!(revisions(&mut ws, "2", 3).await, [7, 8, 9]);
    cen_create(&s, "c0").await;
    assert_eq!(revisions(&mut ws, "2", 1).await, [10]);
    drop(ws);

    // A restart: the log is durable, revisions go on.
    s.stop();
    let s = Server::start(&state, &[]);
    assert_eq!(s.revision().await, 10);
    cen_create(&s, "d0").await;
    let mut ws = Ws::open(&s.addr, TRANSPORT, json!({})).await;
    ws.subscribe("3", CHANGES, json!({"since": 8})).await;
    assert_eq!(revisions(&mut ws, "3", 3).await, [9, 10, 11]);
    cen_create(&s, "d1").await;
    cen_create(&s, "d2").await;
    assert_eq!(revisions(&mut ws, "3", 2).await, [12, 13]);
    // Replay and live racing: commits while a long replay runs.
    let mut ws2 = Ws::open(&s.addr, TRANSPORT, json!({})).await;
    ws2.subscribe("4", CHANGES, json!({"since": 0})).await;
    for i in 0..10 {
        cen_create(&s, &format!("e{i}")).await;
    }
    assert_eq!(revisions(&mut ws2, "4", 23).await, (1..=23).collect::<Vec<_>>());
    assert_eq!(revisions(&mut ws, "3", 10).await, (14..=23).collect::<Vec<_>>());
    s.kill9();
}

/// (container, address, tag) of a monitor member.
type Mem = (String, Option<String>, Option<String>);

/// (kind, members) of a monitor event.
fn monitor(ev: &Value) -> (String, Vec<Mem>) {
    let m = &ev["cinMonitor"];
    let members = m["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["containerId"].as_str().unwrap().to_string(),
                x["address"].as_str().map(str::to_string),
                x["tag"].as_str().map(str::to_string),
            )
        })
        .collect();
    (m["kind"].as_str().unwrap().to_string(), members)
}

fn mem(c: &str, a: Option<&str>, t: Option<&str>) -> Mem {
    (c.to_string(), a.map(str::to_string), t.map(str::to_string))
}

#[tokio::test]
async fn cin_monitor_sees_create_update_delete_with_and_without_tag() {
    for proto in [TRANSPORT, LEGACY] {
        let dir = tempfile::tempdir().unwrap();
        let s = Server::start(&dir.path().join("x.db"), &[]);
        s.gql(CEN_IMPORT, json!({"input": {"cens": [{"id": "cen1", "containerIds": ["c1", "c2"]}]}})).await;
        s.gql(CIN_IMPORT, json!({"input": {"cins": [{"id": "cin1", "cenIds": ["cen1"]}]}})).await;
        s.gql(SET_TAG, json!({"c": "c2", "tag": "web"})).await;
        let rev = s.revision().await;

        let mut ws = Ws::open(&s.addr, proto, json!({})).await;
        ws.subscribe("all", MONITOR, json!({"id": "cin1"})).await;
        ws.subscribe("web", MONITOR, json!({"id": "cin1", "tag": "web"})).await;
        ws.subscribe("cen", MONITOR, json!({"id": "cen1"})).await;
        // Each starts with the current members; the order of the three
        // subscriptions' messages is free, so collect by id.
        let mut first = std::collections::BTreeMap::new();
        for _ in 0..3 {
            let m = ws.recv().await;
            first.insert(m["id"].as_str().unwrap().to_string(), m["payload"]["data"].clone());
        }
        assert_eq!(
            monitor(&first["all"]),
            ("STATE".into(), vec![mem("c1", Some("10.10.0.10"), None), mem("c2", Some("10.10.0.11"), Some("web"))])
        );
        assert_eq!(first["all"]["cinMonitor"]["revision"], rev);
        assert_eq!(first["all"]["cinMonitor"]["members"][0]["hostId"], "host1");
        assert_eq!(first["all"]["cinMonitor"]["members"][0]["cenId"], "cen1");
        assert_eq!(monitor(&first["web"]), ("STATE".into(), vec![mem("c2", Some("10.10.0.11"), Some("web"))]));
        assert_eq!(first["cen"]["cinMonitor"]["cenMode"], true);
        assert_eq!(monitor(&first["cen"]).1.len(), 2);

        // Monitors are independent streams: end two of them to read one.
        let stop = if proto == TRANSPORT { "complete" } else { "stop" };
        ws.send(json!({"type": stop, "id": "cen"})).await;
        if proto == LEGACY {
            assert_eq!(ws.recv().await, json!({"type": "complete", "id": "cen"}));
        }

        // Join: CREATE for "all"; not for "web" (no tag yet).
        s.gql(JOIN, json!({"c": "c3", "cen": "cen1"})).await;
        assert_eq!(monitor(&ws.next("all").await), ("CREATE".into(), vec![mem("c3", Some("10.10.0.12"), None)]));
        // Tag change: UPDATE for "all", CREATE for "web" (it enters the view).
        s.gql(SET_TAG, json!({"c": "c3", "tag": "web"})).await;
        let mut got = std::collections::BTreeMap::new();
        for _ in 0..2 {
            let m = ws.recv().await;
            got.insert(m["id"].as_str().unwrap().to_string(), m["payload"]["data"].clone());
        }
        assert_eq!(monitor(&got["all"]), ("UPDATE".into(), vec![mem("c3", Some("10.10.0.12"), Some("web"))]));
        assert_eq!(monitor(&got["web"]), ("CREATE".into(), vec![mem("c3", Some("10.10.0.12"), Some("web"))]));
        // Leave: DELETE for both.
        s.gql(LEAVE, json!({"c": "c2", "cen": "cen1"})).await;
        let mut got = std::collections::BTreeMap::new();
        for _ in 0..2 {
            let m = ws.recv().await;
            got.insert(m["id"].as_str().unwrap().to_string(), m["payload"]["data"].clone());
        }
        assert_eq!(monitor(&got["all"]), ("DELETE".into(), vec![mem("c2", Some("10.10.0.11"), Some("web"))]));
        assert_eq!(monitor(&got["web"]), ("DELETE".into(), vec![mem("c2", Some("10.10.0.11"), Some("web"))]));
        // An unrelated change says nothing; the next event is the next one.
        cen_create(&s, "other").await;
        s.gql(SET_TAG, json!({"c": "c1", "tag": "db"})).await;
        assert_eq!(monitor(&ws.next("all").await), ("UPDATE".into(), vec![mem("c1", Some("10.10.0.10"), Some("db"))]));

        // Unknown id: NOT_FOUND, then the subscription completes.
        ws.subscribe("x", MONITOR, json!({"id": "cin9"})).await;
        let m = ws.recv().await;
        assert_eq!(m["id"], "x");
        assert_eq!(m["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND", "{m}");
        assert!(m["payload"]["errors"][0]["message"].as_str().unwrap().contains("'cin9'"));
        assert_eq!(ws.recv().await, json!({"type": "complete", "id": "x"}));
    }
}

#[tokio::test]
async fn cin_monitor_on_a_cen_reports_addresses_only_where_a_cin_gives_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("x.db"), &[]);
    s.gql(CEN_IMPORT, json!({"input": {"cens": [{"id": "cen1", "containerIds": ["c1"]}]}})).await;
    let mut ws = Ws::open(&s.addr, TRANSPORT, json!({})).await;
    ws.subscribe("m", MONITOR, json!({"id": "cen1"})).await;
    let state = ws.next("m").await;
    assert_eq!(monitor(&state), ("STATE".into(), vec![mem("c1", None, None)]));
    s.gql(JOIN, json!({"c": "c2", "cen": "cen1"})).await;
    assert_eq!(monitor(&ws.next("m").await), ("CREATE".into(), vec![mem("c2", None, None)]));
    // A CIN over the CEN gives both addresses: UPDATE.
    s.gql(CIN_IMPORT, json!({"input": {"cins": [{"id": "cin1", "cenIds": ["cen1"]}]}})).await;
    assert_eq!(
        monitor(&ws.next("m").await),
        ("UPDATE".into(), vec![mem("c1", Some("10.10.0.10"), None), mem("c2", Some("10.10.0.11"), None)])
    );
}

#[tokio::test]
async fn token_travels_in_connection_init_or_the_query_string() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("x.db"), &["--token", "s3cret"]);

    // Plain HTTP to the websocket path still needs the token.
    let resp = reqwest::get(s.url("/graphql/ws")).await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    for payload in [
        json!({"token": "s3cret"}),
        json!({"Authorization": "Bearer s3cret"}),
        json!({"headers": {"authorization": "Bearer s3cret"}}),
    ] {
        let mut ws = Ws::open(&s.addr, TRANSPORT, payload).await;
        ws.subscribe("1", "subscription { changes(since: 0) { revision } }", json!({})).await;
        s.gql(CEN_CREATE, json!({"id": "x"})).await;
        assert_eq!(ws.next("1").await["changes"]["revision"], 1);
    }
    let mut ws = Ws::connect(&s.addr, TRANSPORT, "?token=s3cret").await;
    ws.send(json!({"type": "connection_init"})).await;
    assert_eq!(ws.recv().await["type"], "connection_ack");

    for payload in [json!({}), json!({"token": "wrong"}), json!("s3cret"), json!({"Authorization": "s3cret"})] {
        let mut ws = Ws::connect(&s.addr, TRANSPORT, "").await;
        ws.send(json!({"type": "connection_init", "payload": payload})).await;
        let (code, reason) = ws.closed().await;
        assert_eq!(code, 4401, "{payload}: {reason}");
    }
    let mut ws = Ws::connect(&s.addr, TRANSPORT, "?token=wrong").await;
    ws.send(json!({"type": "connection_init"})).await;
    assert_eq!(ws.closed().await.0, 4401);

    // The older protocol: connection_error, then the same close code.
    let mut ws = Ws::connect(&s.addr, LEGACY, "").await;
    ws.send(json!({"type": "connection_init", "payload": {}})).await;
    let m = ws.recv().await;
    assert_eq!(m["type"], "connection_error", "{m}");
    assert_eq!(m["payload"]["extensions"]["code"], "UNAUTHENTICATED");
    assert_eq!(ws.closed().await.0, 4401);
    let mut ws = Ws::open(&s.addr, LEGACY, json!({"token": "s3cret"})).await;
    ws.subscribe("1", "subscription { changes(since: 0) { revision } }", json!({})).await;
    assert_eq!(ws.next("1").await["changes"]["revision"], 1);
}

#[tokio::test]
async fn protocol_close_codes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("x.db"), &[]);

    // No (known) subprotocol: refused before the upgrade.
    for proto in ["", "chat"] {
        match tokio_tungstenite::connect_async(ws_request(&s.addr, proto, "")).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 400),
            other => panic!("expected HTTP 400 for subprotocol {proto:?}, got {:?}", other.map(|_| ())),
        }
    }
    // Both offered: the client's first choice wins.
    let (_, resp) =
        tokio_tungstenite::connect_async(ws_request(&s.addr, "graphql-ws, graphql-transport-ws", "")).await.unwrap();
    assert_eq!(resp.headers()["sec-websocket-protocol"], "graphql-ws");

    // Subscribe before connection_ack: 4401.
    let mut ws = Ws::connect(&s.addr, TRANSPORT, "").await;
    ws.subscribe("1", "subscription { changes { revision } }", json!({})).await;
    assert_eq!(ws.closed().await, (4401, "Unauthorized".to_string()));

    // The same subscription id twice: 4409.
    let mut ws = Ws::open(&s.addr, TRANSPORT, json!({})).await;
    ws.subscribe("dup", "subscription { changes { revision } }", json!({})).await;
    ws.subscribe("dup", "subscription { changes { revision } }", json!({})).await;
    assert_eq!(ws.closed().await, (4409, "Subscriber for dup already exists".to_string()));

    // A second connection_init: 4429.
    let mut ws = Ws::open(&s.addr, TRANSPORT, json!({})).await;
    ws.send(json!({"type": "connection_init"})).await;
    assert_eq!(ws.closed().await.0, 4429);

    // Invalid messages: 4400.
    for bad in [
        json!("hello"),
        json!({"type": "bogus"}),
        json!({"type": "subscribe", "payload": {"query": "{ revision }"}}),
        json!({"type": "subscribe", "id": "1", "payload": 7}),
    ] {
        let mut ws = Ws::open(&s.addr, TRANSPORT, json!({})).await;
        ws.send(bad.clone()).await;
        let (code, reason) = ws.closed().await;
        assert_eq!(code, 4400, "{bad}: {reason}");
        assert!(reason.starts_with("Invalid message received"), "{reason}");
    }
    let mut ws = Ws::open(&s.addr, TRANSPORT, json!({})).await;
    ws.stream.send(Message::Text("{not json".into())).await.unwrap();
    assert_eq!(ws.closed().await.0, 4400);

    // ping / pong.
    let mut ws = Ws::open(&s.addr, TRANSPORT, json!({})).await;
    ws.send(json!({"type": "ping", "payload": {"n": 1}})).await;
    assert_eq!(ws.recv().await, json!({"type": "pong", "payload": {"n": 1}}));

    // Queries and mutations over the socket answer once, then complete.
    ws.subscribe("q", "{ revision }", json!({})).await;
    assert_eq!(ws.next("q").await, json!({"revision": 0}));
    assert_eq!(ws.recv().await, json!({"type": "complete", "id": "q"}));
}

#[tokio::test]
async fn subscriptions_per_connection_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("x.db"), &[]);
    let mut ws = Ws::open(&s.addr, TRANSPORT, json!({})).await;
    let limit = WsConfig::default().max_subscriptions;
    for i in 0..limit {
        ws.subscribe(&i.to_string(), "subscription { changes(since: 0) { revision } }", json!({})).await;
    }
    ws.subscribe("over", "subscription { changes { revision } }", json!({})).await;
    let m = ws.recv().await;
    assert_eq!(m["type"], "error", "{m}");
    assert_eq!(m["id"], "over");
    assert!(m["payload"][0]["message"].as_str().unwrap().contains(&format!("at most {limit}")), "{m}");
    // Those accepted still work.
    cen_create(&s, "x").await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..limit {
        let m = ws.recv().await;
        assert_eq!(m["payload"]["data"]["changes"]["revision"], 1);
        seen.insert(m["id"].as_str().unwrap().to_string());
    }
    assert_eq!(seen.len(), limit);
    // Ending one frees a place.
    ws.send(json!({"type": "complete", "id": "0"})).await;
    ws.subscribe("again", "subscription { changes(since: 0) { revision } }", json!({})).await;
    assert_eq!(ws.next("again").await["changes"]["revision"], 1);
}

// ---- in-process: the same router, with settings a test can provoke ----

struct InProcess {
    service: Arc<Service>,
    addr: String,
    _dir: tempfile::TempDir,
}

async fn in_process(capacity: usize, cfg: WsConfig) -> InProcess {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::open_with_capacity(&dir.path().join("x.db"), "host1", capacity).unwrap();
    let schema = leviathan::graphql::schema(Arc::clone(&service));
    let state = AppState {
        service: Arc::clone(&service),
        schema,
        token: None,
        body_limit: server::DEFAULT_BODY_LIMIT,
        http: Default::default(),
    };
    let app = server::router_with(state, cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    InProcess { service, addr, _dir: dir }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_lags_behind_the_stream_misses_nothing() {
    let p = in_process(4, WsConfig::default()).await;
    let schema = leviathan::graphql::schema(Arc::clone(&p.service));
    let changes = schema.execute_stream("subscription { changes { revision } }");
    let monitor = schema
        .execute_stream(r#"subscription { cinMonitor(cinId: "cen1") { kind revision members { containerId } } }"#);
    let mut monitor = monitor;
    p.service.execute(Command::CenCreate { id: "cen1".into() }).await.unwrap();
    // The monitor subscribes at its first poll: take the state first.
    let state = monitor.next().await.unwrap();
    assert_eq!(state.data.into_json().unwrap()["cinMonitor"]["kind"], "STATE");
    // The change stream subscribes at its first poll too; it then gets
    // far more changes than the stream holds before it reads again.
    let first = tokio::spawn(async move {
        let mut changes = changes;
        let r = changes.next().await.unwrap();
        (r, changes)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    p.service.execute(Command::CenCreate { id: "cen2".into() }).await.unwrap();
    let (r, mut changes) = first.await.unwrap();
    assert_eq!(r.data.into_json().unwrap()["changes"]["revision"], 2);
    for i in 0..30 {
        p.service
            .execute(Command::ContainerJoinCen { host: "host1".into(), container: format!("c{i}"), cen: "cen1".into() })
            .await
            .unwrap();
    }
    for rev in 3..=32 {
        let r = tokio::time::timeout(WAIT, changes.next()).await.unwrap().unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(r.data.into_json().unwrap()["changes"]["revision"], rev);
    }
    // The monitor missed 30 member changes: it resyncs and reports them.
    let mut joined = 0;
    while joined < 30 {
        let r = tokio::time::timeout(WAIT, monitor.next()).await.unwrap().unwrap();
        let v = r.data.into_json().unwrap();
        assert_eq!(v["cinMonitor"]["kind"], "CREATE", "{v}");
        joined += v["cinMonitor"]["members"].as_array().unwrap().len();
    }
    assert_eq!(joined, 30);
}

/// A client frame (clients mask their frames; a zero mask key is a valid
/// key and leaves the payload as it is).
fn masked_text_frame(text: &str) -> Vec<u8> {
    let payload = text.as_bytes();
    let mut f = vec![0x81];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    f
}

/// The value of a gauge in the server's `/metrics`.
async fn gauge(s: &Server, name: &str) -> u64 {
    let text = s.http.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = text.lines().find(|l| l.split_whitespace().next() == Some(name));
    line.unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}")).split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A client that stops reading is dropped, however long the server takes.
///
/// The client is a raw TCP socket with a tiny receive buffer: after the
/// upgrade (whose answer it reads up to the end of the headers, not a byte
/// more) it sends `connection_init` and a subscription whose events are
/// ~60 KB each, and then reads nothing. The test makes changes, one at a
/// time, until the server's `/metrics` shows no open websocket connection
/// (the server gave up on the peer after `--ws-send-timeout`); only a hang
/// (no drop within two minutes) fails it. Then the client reads again and
/// must find the end of the connection (a close frame and EOF, or a reset)
/// behind what was queued. The server still serves new subscribers.
#[tokio::test]
async fn a_connection_that_stops_reading_is_dropped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state.db"), &["--ws-send-timeout", "0.5"]);
    let members: Vec<String> = (0..1500).map(|i| format!("container-with-a-long-name-{i}")).collect();
    s.gql(
        "mutation($i: CenImportInput!) { cenImport(input: $i) { revision } }",
        json!({"i": {"cens": [{"id": "big", "containerIds": members}]}}),
    )
    .await;
    assert_eq!(gauge(&s, "leviathan_ws_connections").await, 0);

    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut tcp = sock.connect(s.addr.parse().unwrap()).await.unwrap();
    let upgrade = format!(
        "GET /graphql/ws HTTP/1.1\r\nhost: {}\r\nconnection: Upgrade\r\nupgrade: websocket\r\n\
         sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         sec-websocket-protocol: {TRANSPORT}\r\n\r\n",
        s.addr
    );
    tcp.write_all(upgrade.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        assert_eq!(tcp.read(&mut byte).await.unwrap(), 1, "the server hung up during the upgrade");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    tcp.write_all(&masked_text_frame(&json!({"type": "connection_init"}).to_string())).await.unwrap();
    let big =
        "subscription { changes { revision items { after { ... on Container { cens { containers { id tag } } } } } } }";
    let sub = json!({"type": "subscribe", "id": "1", "payload": {"query": big}}).to_string();
    tcp.write_all(&masked_text_frame(&sub)).await.unwrap();
    // From here on the client reads nothing until the server has dropped it.

    let bound = std::time::Instant::now() + Duration::from_secs(120);
    let mut changes = 0;
    while gauge(&s, "leviathan_ws_connections").await > 0 {
        assert!(
            std::time::Instant::now() < bound,
            "the server kept a connection that stopped reading ({changes} changes made)"
        );
        let tag = if changes % 2 == 0 { "a" } else { "b" };
        s.gql(
            "mutation($t: String) { containerSetTag(input: {id: \"container-with-a-long-name-0\", tag: $t}) { revision } }",
            json!({"t": tag}),
        )
        .await;
        changes += 1;
    }

    // Reading again, the client finds the end of the connection behind
    // whatever was queued: EOF, or a reset.
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) => return "eof",
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(_) => return "reset",
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the connection was not closed ({} bytes read after the drop)", got.len());
    let end = end.unwrap();
    eprintln!("dropped after {changes} changes; {} bytes were still queued; then {end}", got.len());
    if end == "eof" {
        // Nothing was lost to a reset: the subscription was running, and
        // the events queued before the drop are fewer than the changes.
        let text = String::from_utf8_lossy(&got);
        assert!(text.contains("\"connection_ack\""), "no connection_ack: the subscription never ran");
        let events = text.matches("\"type\":\"next\"").count();
        assert!(events >= 1 && events < changes, "{events} events queued for {changes} changes");
    }

    // The server is fine: a new subscriber resumes from the log.
    let mut ws = Ws::open(&s.addr, TRANSPORT, json!({})).await;
    ws.subscribe("2", "subscription { changes(since: 1) { revision } }", json!({})).await;
    assert_eq!(ws.next("2").await["changes"]["revision"], 2);
}

#[tokio::test]
async fn operation_progress_then_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let service = Service::open(&dir.path().join("x.db"), "host1").unwrap();
    let schema = leviathan::graphql::schema(Arc::clone(&service));
    let ops = service.operations();
    let id = ops.start("cenMake", vec!["cen1".into(), "cen2".into()], 4);
    let q = format!(
        r#"subscription {{ operation(id: "{id}") {{ id kind targetIds stepsDone stepsTotal state message }} }}"#
    );
    let stream = schema.execute_stream(q.as_str());
    futures_util::pin_mut!(stream);
    let first = stream.next().await.unwrap().data.into_json().unwrap();
    assert_eq!(
        first["operation"],
        json!({"id": id, "kind": "cenMake", "targetIds": ["cen1", "cen2"], "stepsDone": 0, "stepsTotal": 4,
               "state": "RUNNING", "message": null})
    );
    ops.progress(&id, 3, 4);
    let v = stream.next().await.unwrap().data.into_json().unwrap();
    assert_eq!((v["operation"]["stepsDone"].clone(), v["operation"]["state"].clone()), (json!(3), json!("RUNNING")));
    ops.finish(&id, Err("cen2: bridge lev-cen2: operation not permitted".into()));
    let v = stream.next().await.unwrap().data.into_json().unwrap();
    assert_eq!(v["operation"]["state"], "FAILED");
    assert_eq!(v["operation"]["message"], "cen2: bridge lev-cen2: operation not permitted");
    assert!(stream.next().await.is_none(), "the stream ends after the outcome");

    // A finished operation: its outcome at once, then the end.
    let stream = schema.execute_stream(q.as_str());
    futures_util::pin_mut!(stream);
    assert_eq!(stream.next().await.unwrap().data.into_json().unwrap()["operation"]["state"], "FAILED");
    assert!(stream.next().await.is_none());

    let r = schema.execute_stream(r#"subscription { operation(id: "op-nope") { id } }"#).next().await.unwrap();
    assert_eq!(r.errors[0].extensions.as_ref().unwrap().get("code").unwrap().to_string(), "\"NOT_FOUND\"");
}

#[tokio::test]
async fn unknown_operation_over_the_socket_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("x.db"), &[]);
    let mut ws = Ws::open(&s.addr, TRANSPORT, json!({})).await;
    ws.subscribe("o", "subscription { operation(id: \"op-1\") { state } }", json!({})).await;
    let m = ws.recv().await;
    assert_eq!(m["payload"]["errors"][0]["extensions"]["code"], "NOT_FOUND", "{m}");
    assert_eq!(ws.recv().await, json!({"type": "complete", "id": "o"}));
}

/// The `graphql-ws` npm package's own client against the real server
/// (`tests/node/conformance.mjs`). Installs it with `npm ci` when
/// `tests/node/node_modules` is missing.
#[tokio::test]
async fn graphql_ws_npm_client_conformance() {
    let node_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node");
    if !node_dir.join("node_modules/graphql-ws").exists() {
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&node_dir)
            .status()
            .expect("npm is needed for this test (Node 20+): install Node.js and npm");
        assert!(status.success(), "npm ci in tests/node failed");
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("x.db"), &["--token", "conformance-token"]);
    let out = tokio::process::Command::new("node")
        .arg("conformance.mjs")
        .arg(&s.addr)
        .arg("conformance-token")
        .current_dir(&node_dir)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("node conformance run timed out")
        .expect("node is needed for this test (Node 20+)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "graphql-ws client conformance failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("7 passed, 0 failed"), "unexpected output:\n{stdout}\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_and_the_init_deadline() {
    let cfg = WsConfig {
        keepalive: Duration::from_millis(200),
        init_timeout: Duration::from_millis(300),
        ..WsConfig::default()
    };
    let p = in_process(1024, cfg).await;

    // No connection_init in time: 4408.
    let mut ws = Ws::connect(&p.addr, TRANSPORT, "").await;
    assert_eq!(ws.closed().await.0, 4408);

    // graphql-transport-ws: websocket pings; the older protocol also `ka`.
    let mut ws = Ws::open(&p.addr, TRANSPORT, json!({})).await;
    let ping = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(Ok(Message::Ping(_))) = ws.stream.next().await {
                return;
            }
        }
    })
    .await;
    assert!(ping.is_ok(), "no websocket ping within the keep-alive interval");
    let mut ws = Ws::connect(&p.addr, LEGACY, "").await;
    ws.send(json!({"type": "connection_init"})).await;
    let mut kinds = Vec::new();
    while kinds.iter().filter(|k| *k == "ka").count() < 3 {
        let msg = tokio::time::timeout(WAIT, ws.stream.next()).await.unwrap().unwrap().unwrap();
        if let Message::Text(t) = msg {
            kinds.push(serde_json::from_str::<Value>(t.as_str()).unwrap()["type"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(kinds[0], "connection_ack");

    // A peer that answers nothing (not even pings) is dropped after three
    // intervals of silence.
    let tcp = TcpStream::connect(&p.addr).await.unwrap();
    let (mut silent, _) =
        tokio_tungstenite::client_async(ws_request(&p.addr, TRANSPORT, ""), MaybeTlsStream::Plain(tcp)).await.unwrap();
    silent.send(Message::Text(json!({"type": "connection_init"}).to_string().into())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Reading now answers pings, too late: the server has gone.
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match silent.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "a silent peer was kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_connections_are_capped() {
    let p = in_process(1024, WsConfig { max_connections: 2, ..WsConfig::default() }).await;
    let a = Ws::open(&p.addr, TRANSPORT, json!({})).await;
    let _b = Ws::open(&p.addr, LEGACY, json!({})).await;
    match tokio_tungstenite::connect_async(ws_request(&p.addr, TRANSPORT, "")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 503),
        other => panic!("expected HTTP 503 over the cap, got {:?}", other.map(|_| ())),
    }
    // A closed connection frees its slot.
    drop(a);
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if tokio_tungstenite::connect_async(ws_request(&p.addr, TRANSPORT, "")).await.is_ok() {
            ok = true;
            break;
        }
    }
    assert!(ok, "the slot of a closed connection was not freed");
}
