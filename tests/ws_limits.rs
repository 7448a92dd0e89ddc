//! Websocket message limits as documented, against the real server with a
//! real websocket client: on both `/graphql/ws` and `/leviathan/monitor`, a
//! message of exactly `--ws-max-message` bytes is taken and answered, one
//! byte more closes the connection with 1009 and a reason naming the limit.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const WAIT: Duration = Duration::from_secs(15);
const CEN_IMPORT: &str = "mutation($i: CenImportInput!) { cenImport(input: $i) { revision } }";
const CIN_IMPORT: &str = "mutation($i: CinImportInput!) { cinImport(input: $i) { revision } }";

async fn graphql_ws(addr: &str) -> Ws {
    let mut req = format!("ws://{addr}/graphql/ws").into_client_request().unwrap();
    req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("graphql-transport-ws"));
    let mut ws = tokio_tungstenite::connect_async(req).await.expect("ws connect").0;
    ws.send(Message::Text(json!({"type": "connection_init"}).to_string().into())).await.unwrap();
    assert_eq!(recv(&mut ws).await["type"], "connection_ack");
    ws
}

async fn monitor(addr: &str) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://{addr}/leviathan/monitor")).await.expect("ws connect").0
}

/// `msg` with a `pad` field grown so the message is exactly `size` bytes.
fn sized(mut msg: Value, size: usize) -> String {
    msg["pad"] = json!("");
    let bare = msg.to_string().len();
    assert!(size >= bare, "{size} < {bare}");
    msg["pad"] = json!("x".repeat(size - bare));
    let text = msg.to_string();
    assert_eq!(text.len(), size);
    text
}

/// The next text message, as JSON.
async fn recv(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("a message in time") {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).expect("JSON"),
            Some(Ok(Message::Close(f))) => panic!("unexpected close: {f:?}"),
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

/// The server's close frame: code and reason (a dropped connection
/// without one fails the test).
async fn closed(ws: &mut Ws) -> (u16, String) {
    loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("a close frame in time") {
            Some(Ok(Message::Close(Some(f)))) => return (u16::from(f.code), f.reason.to_string()),
            Some(Ok(Message::Close(None))) => panic!("close frame without a code"),
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    }
}

/// A message far over the limit (32 MiB, more than the socket buffers
/// hold) still gets its close frame: the server reads no payload of it.
async fn check_far_over(mut ws: Ws, msg: Value, limit: usize) {
    let _ = ws.send(Message::Text(sized(msg, 32 << 20).into())).await;
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains(&limit.to_string()), "the reason names the limit: {reason}");
}

async fn check_graphql_ws(addr: &str, limit: usize) {
    let subscribe = json!({"type": "subscribe", "id": "s", "payload": {"query": "{ revision }"}});
    let mut ws = graphql_ws(addr).await;
    ws.send(Message::Text(sized(subscribe.clone(), limit).into())).await.unwrap();
    let next = recv(&mut ws).await;
    assert_eq!((next["type"].as_str(), next["id"].as_str()), (Some("next"), Some("s")), "{next}");
    assert!(next["payload"]["data"]["revision"].is_i64(), "{next}");
    assert_eq!(recv(&mut ws).await["type"], "complete");

    let mut ws = graphql_ws(addr).await;
    // The send may fail once the server has closed; the close frame counts.
    let _ = ws.send(Message::Text(sized(subscribe.clone(), limit + 1).into())).await;
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains(&limit.to_string()), "the reason names the limit: {reason}");
    check_far_over(graphql_ws(addr).await, subscribe, limit).await;
}

async fn check_monitor(addr: &str, limit: usize) {
    let start = json!({"type": "start", "sequence": "1", "monitor": "CIN", "parameters": {"cinID": "cin1"}});
    let mut ws = monitor(addr).await;
    ws.send(Message::Text(sized(start.clone(), limit).into())).await.unwrap();
    let resp = recv(&mut ws).await;
    assert_eq!((resp["type"].as_str(), resp["sequence"].as_str()), (Some("response"), Some("1")), "{resp}");
    assert!(resp["response"]["monitorID"].is_string(), "{resp}");

    let mut ws = monitor(addr).await;
    let _ = ws.send(Message::Text(sized(start.clone(), limit + 1).into())).await;
    let (code, reason) = closed(&mut ws).await;
    assert_eq!(code, 1009, "{reason}");
    assert!(reason.contains(&limit.to_string()), "the reason names the limit: {reason}");
    check_far_over(monitor(addr).await, start, limit).await;
}

async fn seeded(extra: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state.db"), extra);
    let cens = json!({"hostId": "h1", "cens": [{"id": "cen1", "containerIds": ["c1"]}]});
    s.gql(CEN_IMPORT, json!({ "i": cens })).await;
    s.gql(CIN_IMPORT, json!({"i": {"cins": [{"id": "cin1", "cenIds": ["cen1"]}]}})).await;
    (dir, s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_limit_is_256_kib_on_both_websockets() {
    let (_dir, s) = seeded(&["--host-id", "h1"]).await;
    check_graphql_ws(&s.addr, 256 * 1024).await;
    check_monitor(&s.addr, 256 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_max_message_sets_the_limit_on_both_websockets() {
    let (_dir, s) = seeded(&["--host-id", "h1", "--ws-max-message", "100000"]).await;
    check_graphql_ws(&s.addr, 100_000).await;
    check_monitor(&s.addr, 100_000).await;
}
