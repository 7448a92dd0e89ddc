//! The monitor websocket's protocol, over a small stand-in schema whose
//! `cinMonitor` subscription has the shape the crate assumes
//! (`monitor/subscription.rs`). The same protocol against the real server
//! is tested in the root package's `tests/compat_monitor.rs`.

use async_graphql::{Context, EmptyMutation, Enum, ErrorExtensions, Object, Schema, SimpleObject, Subscription, ID};
use futures_util::{SinkExt, Stream, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;
use tokio_tungstenite::tungstenite::Message;

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
enum CinMonitorEventKind {
    State,
    Create,
    Update,
    Delete,
}

#[derive(SimpleObject, Clone)]
struct CinMonitorMember {
    container_id: ID,
    host_id: ID,
    address: Option<String>,
    tag: Option<String>,
}

#[derive(SimpleObject, Clone)]
struct CinMonitorEvent {
    kind: CinMonitorEventKind,
    members: Vec<CinMonitorMember>,
}

/// The stand-in topology: members per CIN, and a change stream.
#[derive(Clone)]
struct Hub {
    members: Arc<Mutex<HashMap<String, Vec<CinMonitorMember>>>>,
    cen_of: HashMap<String, String>,
    tx: broadcast::Sender<(String, CinMonitorEventKind, CinMonitorMember)>,
}

impl Hub {
    fn new() -> Hub {
        let (tx, _) = broadcast::channel(64);
        let mut m = HashMap::new();
        m.insert("cin1".to_string(), vec![member("c1", "10.10.0.10", None), member("c2", "10.10.0.11", Some("web"))]);
        m.insert("cin2".to_string(), vec![member("c4", "10.11.0.10", None)]);
        // A CEN without a CIN of its name: monitored as its containers.
        m.insert("cen7".to_string(), vec![member("c9", "10.12.0.10", None)]);
        Hub { members: Arc::new(Mutex::new(m)), cen_of: HashMap::new(), tx }
    }

    fn emit(&self, cin: &str, kind: CinMonitorEventKind, m: CinMonitorMember) {
        let _ = self.tx.send((cin.to_string(), kind, m));
    }
}

fn member(id: &str, addr: &str, tag: Option<&str>) -> CinMonitorMember {
    CinMonitorMember {
        container_id: ID(id.into()),
        host_id: ID("host1".into()),
        address: Some(addr.into()),
        tag: tag.map(Into::into),
    }
}

struct Query;

#[Object]
impl Query {
    async fn version(&self) -> &str {
        "9.9.9"
    }
}

struct Sub;

#[Subscription]
impl Sub {
    async fn cin_monitor(
        &self,
        ctx: &Context<'_>,
        cin_id: ID,
        container_tag: Option<String>,
    ) -> async_graphql::Result<impl Stream<Item = CinMonitorEvent>> {
        let hub = ctx.data_unchecked::<Hub>().clone();
        let id = hub.cen_of.get(cin_id.as_str()).cloned().unwrap_or_else(|| cin_id.to_string());
        let rx = hub.tx.subscribe();
        let Some(state) = hub.members.lock().unwrap().get(&id).cloned() else {
            return Err(async_graphql::Error::new(format!("no CIN or CEN named '{}'", cin_id.as_str()))
                .extend_with(|_, e| e.set("code", "NOT_FOUND")));
        };
        let tag = container_tag.clone();
        let keep = move |m: &CinMonitorMember| tag.is_none() || m.tag == tag;
        let keep2 = keep.clone();
        let first = CinMonitorEvent {
            kind: CinMonitorEventKind::State,
            members: state.into_iter().filter(|m| keep(m)).collect(),
        };
        let rest = BroadcastStream::new(rx).filter_map(move |item| {
            let out = match item {
                Ok((cin, kind, m)) if cin == id && keep2(&m) => Some(CinMonitorEvent { kind, members: vec![m] }),
                _ => None,
            };
            async move { out }
        });
        Ok(futures_util::stream::once(async move { first }).chain(rest))
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn start() -> (Hub, String) {
    start_with(leviathan_rest_compat::CompatConfig::default()).await
}

async fn start_with(cfg: leviathan_rest_compat::CompatConfig) -> (Hub, String) {
    let hub = Hub::new();
    let schema = Schema::build(Query, EmptyMutation, Sub).data(hub.clone()).finish();
    let app: axum::Router = leviathan_rest_compat::router(schema, cfg);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (hub, format!("ws://{addr}{}", leviathan_rest_compat::MONITOR_PATH))
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

async fn recv(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
            .expect("the socket is open")
            .expect("a frame");
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

/// Receives `n` messages, sorted by monitorID (their order across monitors
/// is not fixed).
async fn recv_n(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(recv(ws).await);
    }
    out.sort_by_key(|v| v["monitorID"].as_str().unwrap_or("").to_string());
    out
}

fn start_msg(seq: &str, cin: &str, tag: Option<&str>, id: Option<&str>) -> Value {
    let mut v = json!({"type": "start", "sequence": seq, "monitor": "CIN", "parameters": {"cinID": cin}});
    if let Some(t) = tag {
        v["parameters"]["container_tag"] = json!(t);
    }
    if let Some(id) = id {
        v["monitorID"] = json!(id);
    }
    v
}

#[tokio::test]
async fn two_monitors_events_replace_stop() {
    let (hub, url) = start().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();

    send(&mut ws, start_msg("S1", "cin1", None, None)).await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "response", "sequence": "S1", "response": {"monitorID": "M1", "state": [
            {"containerID": "c1", "ipaddress": "10.10.0.10", "tag": null},
            {"containerID": "c2", "ipaddress": "10.10.0.11", "tag": "web"}]}})
    );
    send(&mut ws, start_msg("S2", "cin1", Some("web"), None)).await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "response", "sequence": "S2", "response": {"monitorID": "M2", "state": [
            {"containerID": "c2", "ipaddress": "10.10.0.11", "tag": "web"}]}})
    );

    // A tagged container: both monitors; an untagged one: only M1.
    hub.emit("cin1", CinMonitorEventKind::Create, member("c5", "10.10.0.12", Some("web")));
    let ev = json!([{"containerID": "c5", "ipaddress": "10.10.0.12", "tag": "web"}]);
    assert_eq!(
        recv_n(&mut ws, 2).await,
        vec![
            json!({"type": "event", "monitorID": "M1", "event": "create", "message": ev}),
            json!({"type": "event", "monitorID": "M2", "event": "create", "message": ev}),
        ]
    );
    hub.emit("cin1", CinMonitorEventKind::Create, member("c6", "10.10.0.13", None));
    hub.emit("cin1", CinMonitorEventKind::Update, member("c5", "10.10.0.12", Some("web")));
    let got = recv_n(&mut ws, 3).await;
    assert_eq!(got[0]["message"][0]["containerID"], "c6");
    assert_eq!(got[0]["event"], "create");
    assert_eq!(got[1]["monitorID"], "M1");
    assert_eq!(got[1]["event"], "update");
    assert_eq!(got[2], json!({"type": "event", "monitorID": "M2", "event": "update", "message": ev}));
    hub.emit("cin1", CinMonitorEventKind::Delete, member("c6", "10.10.0.13", None));
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "event", "monitorID": "M1", "event": "delete",
               "message": [{"containerID": "c6", "ipaddress": "10.10.0.13", "tag": null}]})
    );

    // Replace M2: same id, now on cin2; cin1's events no longer reach it.
    send(&mut ws, start_msg("S3", "cin2", None, Some("M2"))).await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"type": "response", "sequence": "S3", "response": {"monitorID": "M2", "state": [
            {"containerID": "c4", "ipaddress": "10.11.0.10", "tag": null}]}})
    );
    hub.emit("cin1", CinMonitorEventKind::Create, member("c7", "10.10.0.14", Some("web")));
    let only = recv(&mut ws).await;
    assert_eq!((only["monitorID"].as_str(), only["message"][0]["containerID"].as_str()), (Some("M1"), Some("c7")));
    hub.emit("cin2", CinMonitorEventKind::Create, member("c8", "10.11.0.11", None));
    let only = recv(&mut ws).await;
    assert_eq!((only["monitorID"].as_str(), only["message"][0]["containerID"].as_str()), (Some("M2"), Some("c8")));

    // Stop M1: its events stop; M2 goes on.
    send(&mut ws, json!({"type": "stop", "sequence": "S4", "monitorID": "M1"})).await;
    assert_eq!(recv(&mut ws).await, json!({"type": "response", "sequence": "S4", "response": {"monitorID": "M1"}}));
    hub.emit("cin1", CinMonitorEventKind::Create, member("c10", "10.10.0.15", None));
    hub.emit("cin2", CinMonitorEventKind::Create, member("c11", "10.11.0.12", None));
    let only = recv(&mut ws).await;
    assert_eq!((only["monitorID"].as_str(), only["message"][0]["containerID"].as_str()), (Some("M2"), Some("c11")));
    send(&mut ws, json!({"type": "stop", "sequence": "S5", "monitorID": "M1"})).await;
    let e = recv(&mut ws).await;
    assert_eq!((e["type"].as_str(), e["sequence"].as_str()), (Some("error"), Some("S5")));
    assert!(e["response"]["message"].as_str().unwrap().contains("M1"));

    // A client-chosen id, and a CEN id where no CIN has it.
    send(&mut ws, start_msg("S6", "cen7", None, Some("mine"))).await;
    let r = recv(&mut ws).await;
    assert_eq!(r["response"]["monitorID"], "mine");
    assert_eq!(r["response"]["state"][0]["containerID"], "c9");
}

#[tokio::test]
async fn errors_close_nothing() {
    let (hub, url) = start().await;
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
    let cases: Vec<(Value, Value, &str)> = vec![
        (start_msg("E1", "cin9", None, None), json!("E1"), "cin9"),
        (json!({"type": "start", "sequence": "E2", "monitor": "CIN", "parameters": {}}), json!("E2"), "cinID"),
        (json!({"type": "start", "sequence": "E3", "monitor": "CIN"}), json!("E3"), "parameters"),
        (json!({"type": "start", "sequence": "E4", "parameters": {"cinID": "cin1"}}), json!("E4"), "monitor"),
        (
            json!({"type": "start", "sequence": "E5", "monitor": "CEN", "parameters": {"cinID": "cin1"}}),
            json!("E5"),
            "CEN",
        ),
        (json!({"sequence": "E6"}), json!("E6"), "type"),
        (json!({"type": "wat", "sequence": 7}), json!(7), "wat"),
        (json!({"type": "stop", "sequence": "E8"}), json!("E8"), "monitorID"),
        (json!({"type": "start", "monitor": "CIN", "parameters": {"cinID": "cin1"}}), Value::Null, "sequence"),
        (start_msg("E10", "a b", None, None), json!("E10"), "cinID"),
        (
            json!({"type": "start", "sequence": "E11", "monitor": "CIN", "parameters": {"cinID": "cin1", "container_tag": 3}}),
            json!("E11"),
            "container_tag",
        ),
        (json!([1, 2]), Value::Null, "object"),
    ];
    for (req, seq, needle) in cases {
        send(&mut ws, req.clone()).await;
        let e = recv(&mut ws).await;
        assert_eq!(e["type"], "error", "{req} -> {e}");
        assert_eq!(e["sequence"], seq, "{req} -> {e}");
        let msg = e["response"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{req}: {msg:?} lacks {needle:?}");
    }
    ws.send(Message::Text("{not json".into())).await.unwrap();
    let e = recv(&mut ws).await;
    assert_eq!((e["type"].as_str(), &e["sequence"]), (Some("error"), &Value::Null));
    assert!(e["response"]["message"].as_str().unwrap().contains("malformed JSON"));

    // A failed replacement leaves the monitor as it was.
    send(&mut ws, start_msg("S1", "cin2", None, None)).await;
    assert_eq!(recv(&mut ws).await["response"]["monitorID"], "M1");
    send(&mut ws, start_msg("S2", "cin9", None, Some("M1"))).await;
    assert_eq!(recv(&mut ws).await["type"], "error");
    hub.emit("cin2", CinMonitorEventKind::Create, member("c8", "10.11.0.11", None));
    let ev = recv(&mut ws).await;
    assert_eq!((ev["monitorID"].as_str(), ev["event"].as_str()), (Some("M1"), Some("create")));
}

#[tokio::test]
async fn monitors_per_connection_are_capped() {
    let cfg = leviathan_rest_compat::CompatConfig { max_monitors: 2, ..Default::default() };
    let (_hub, url) = start_with(cfg).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
    for seq in ["S1", "S2"] {
        send(&mut ws, start_msg(seq, "cin1", None, None)).await;
        assert_eq!(recv(&mut ws).await["type"], "response");
    }
    send(&mut ws, start_msg("S3", "cin1", None, None)).await;
    let e = recv(&mut ws).await;
    assert_eq!((e["type"].as_str(), e["sequence"].as_str()), (Some("error"), Some("S3")), "{e}");
    assert!(e["response"]["message"].as_str().unwrap().contains("at most 2"), "{e}");
    // Replacing one is still allowed, and stopping one makes room.
    send(&mut ws, start_msg("S4", "cin1", None, Some("M1"))).await;
    assert_eq!(recv(&mut ws).await["response"]["monitorID"], "M1");
    send(&mut ws, json!({"type": "stop", "sequence": "S5", "monitorID": "M2"})).await;
    assert_eq!(recv(&mut ws).await["type"], "response");
    send(&mut ws, start_msg("S6", "cin1", None, None)).await;
    assert_eq!(recv(&mut ws).await["type"], "response");
}
