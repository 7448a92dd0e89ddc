//! The legacy monitor websocket, `/leviathan/monitor`: a JSON text protocol
//! translated onto the GraphQL `cinMonitor` subscription, run through
//! [`Executor::execute_stream`]. No second notifier: each monitor is one
//! subscription stream.
//!
//! Requests are handled one at a time in the order they arrive; each
//! monitor forwards its events from its own task; every outgoing message
//! goes through one queue to the socket, so a `start`'s response always
//! precedes that monitor's first event. Errors answer the request that
//! caused them and close nothing.
//!
//! A message over [`crate::CompatConfig::monitor_max_message`] (the server's
//! `--ws-max-message`) closes the connection with 1009 and a reason naming
//! the limit; the socket library refuses such a frame from its header, so
//! what one message can buffer stays bounded by the limit.

pub mod subscription;

use crate::error::CompatError;
use crate::ids::check_id;
use crate::Compat;
use async_graphql::{Executor, Request, Response as GqlResponse, Variables};
use axum::extract::ws::{rejection::WebSocketUpgradeRejection, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{Method, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{BoxStream, StreamExt};
use futures_util::SinkExt;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Outgoing messages waiting for the socket, per connection.
const QUEUE: usize = 256;

/// `GET /leviathan/monitor`: upgrades to the websocket.
pub(crate) async fn handler<E: Executor>(
    State(st): State<Compat<E>>,
    method: Method,
    uri: Uri,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    if method != Method::GET {
        return CompatError::method_not_allowed(method.as_str(), uri.path(), "GET").into_response();
    }
    let Ok(slot) = std::sync::Arc::clone(&st.monitor_slots).try_acquire_owned() else {
        let message =
            format!("too many monitor connections (at most {}); try again later", st.cfg.monitor_max_connections);
        return CompatError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, message).into_response();
    };
    match ws {
        Ok(ws) => ws
            .max_message_size(st.cfg.monitor_max_message)
            .max_frame_size(st.cfg.monitor_max_message)
            .on_upgrade(move |socket| async move {
                connection(socket, st).await;
                drop(slot);
            }),
        Err(e) => CompatError::bad_request(format!("{} is a websocket: {}", uri.path(), e.body_text())).into_response(),
    }
}

/// One connection: its monitors by id.
struct Conn<E> {
    st: Compat<E>,
    out: mpsc::Sender<Message>,
    monitors: HashMap<String, JoinHandle<()>>,
    next: u64,
}

async fn connection<E: Executor>(socket: WebSocket, st: Compat<E>) {
    let (mut sink, mut incoming) = socket.split();
    let (out, mut queue) = mpsc::channel::<Message>(QUEUE);
    let send_timeout = st.cfg.monitor_send_timeout;
    let writer = tokio::spawn(async move {
        while let Some(msg) = queue.recv().await {
            let closing = matches!(msg, Message::Close(_));
            match tokio::time::timeout(send_timeout, sink.send(msg)).await {
                Ok(Ok(())) if !closing => {}
                // Closed, failed, or the peer took nothing in time: drop it.
                _ => return,
            }
        }
        let _ = tokio::time::timeout(send_timeout, sink.close()).await;
    });
    let mut shutdown = st.cfg.shutdown.clone();
    let going_away = async move {
        let fired = match shutdown.as_mut() {
            Some(rx) => rx.wait_for(|v| *v).await.is_ok(),
            None => false,
        };
        if !fired {
            std::future::pending::<()>().await
        }
    };
    tokio::pin!(going_away);
    let max = st.cfg.monitor_max_message;
    let mut conn = Conn { st, out, monitors: HashMap::new(), next: 1 };
    loop {
        let msg = tokio::select! {
            m = incoming.next() => m,
            () = &mut going_away => {
                conn.close(1001, "server shutting down").await;
                break;
            }
        };
        match msg {
            Some(Ok(Message::Text(text))) => conn.request(text.as_str()).await,
            Some(Ok(Message::Binary(_))) => {
                conn.error(Value::Null, "binary messages are not understood; send JSON text").await
            }
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Err(e)) => {
                // The socket library's error type is that of axum's own
                // version of it: recognized by its message ("Space limit
                // exceeded: Message too long: N > MAX").
                if e.to_string().starts_with("Space limit exceeded") {
                    conn.close(1009, &format!("message over the limit of {max} bytes")).await;
                }
                break;
            }
        }
    }
    for (_, task) in conn.monitors.drain() {
        task.abort();
    }
    drop(conn);
    // The queue closes once the monitors' senders are gone; what is queued
    // is still sent.
    let _ = writer.await;
}

/// A start request, checked.
struct Start {
    sequence: Value,
    monitor_id: Option<String>,
    cin_id: String,
    tag: Option<String>,
}

impl<E: Executor> Conn<E> {
    async fn send(&self, v: Value) {
        let _ = self.out.send(Message::Text(v.to_string().into())).await;
    }

    async fn close(&self, code: u16, reason: &str) {
        let frame = axum::extract::ws::CloseFrame { code, reason: reason.to_string().into() };
        let _ = self.out.send(Message::Close(Some(frame))).await;
    }

    async fn error(&self, sequence: Value, message: &str) {
        self.send(json!({"type": "error", "sequence": sequence, "response": {"message": message}})).await;
    }

    async fn request(&mut self, text: &str) {
        let v: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(e) => return self.error(Value::Null, &format!("malformed JSON: {e}")).await,
        };
        let Some(obj) = v.as_object() else {
            return self.error(Value::Null, "expected a JSON object").await;
        };
        let sequence = obj.get("sequence").cloned().unwrap_or(Value::Null);
        let result = match obj.get("type").and_then(Value::as_str) {
            Some("start") => match parse_start(obj, sequence.clone()) {
                Ok(start) => return self.start(start).await,
                Err(e) => Err(e),
            },
            Some("stop") => self.stop(obj, &sequence),
            Some(other) => Err(format!("unknown type '{}' (expected \"start\" or \"stop\")", other.escape_debug())),
            None => Err("missing field 'type' (a string: \"start\" or \"stop\")".to_string()),
        };
        match result {
            Ok(v) => self.send(v).await,
            Err(message) => self.error(sequence, &message).await,
        }
    }

    fn stop(&mut self, obj: &Map<String, Value>, sequence: &Value) -> Result<Value, String> {
        if obj.get("sequence").is_none() {
            return Err("missing field 'sequence'".into());
        }
        let id = match obj.get("monitorID") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err("monitorID: expected a string".into()),
            None => return Err("missing field 'monitorID'".into()),
        };
        let task = self
            .monitors
            .remove(&id)
            .ok_or_else(|| format!("no monitor '{}' on this connection", id.escape_debug()))?;
        task.abort();
        Ok(json!({"type": "response", "sequence": sequence, "response": {"monitorID": id}}))
    }

    /// Starts (or replaces) a monitor: runs the subscription, waits for its
    /// initial state, answers with it, then forwards the rest from a task. A
    /// replaced monitor runs until its replacement has started, so a failed
    /// replacement leaves it as it was.
    async fn start(&mut self, s: Start) {
        let replacing = s.monitor_id.as_ref().is_some_and(|id| self.monitors.contains_key(id));
        if !replacing && self.monitors.len() >= self.st.cfg.max_monitors {
            let message = format!("too many monitors on this connection (at most {})", self.st.cfg.max_monitors);
            return self.error(s.sequence, &message).await;
        }
        let request = Request::new(subscription::DOCUMENT)
            .variables(Variables::from_json(subscription::variables(&s.cin_id, s.tag.as_deref())));
        let mut stream = self.st.executor.execute_stream(request, None);
        let first = tokio::time::timeout(self.st.cfg.monitor_start_timeout, stream.next()).await;
        let state = match first {
            Err(_) => return self.error(s.sequence, "the monitor's initial state did not come in time").await,
            Ok(None) => return self.error(s.sequence, "the monitor ended before its initial state").await,
            Ok(Some(resp)) => match event_of(resp) {
                Ok(ev) => ev,
                Err(message) => return self.error(s.sequence, &message).await,
            },
        };
        let id = match s.monitor_id {
            Some(id) => id,
            None => self.fresh_id(),
        };
        if let Some(old) = self.monitors.remove(&id) {
            old.abort();
        }
        // The response goes into the queue before the task can queue events.
        self.send(json!({"type": "response", "sequence": s.sequence,
            "response": {"monitorID": id, "state": state.members}}))
            .await;
        let task = tokio::spawn(forward(id.clone(), stream, self.out.clone()));
        self.monitors.insert(id, task);
    }

    fn fresh_id(&mut self) -> String {
        loop {
            let id = format!("M{}", self.next);
            self.next += 1;
            if !self.monitors.contains_key(&id) {
                return id;
            }
        }
    }
}

fn parse_start(obj: &Map<String, Value>, sequence: Value) -> Result<Start, String> {
    if obj.get("sequence").is_none() {
        return Err("missing field 'sequence'".into());
    }
    match obj.get("monitor") {
        Some(Value::String(m)) if m.eq_ignore_ascii_case("CIN") => {}
        Some(Value::String(m)) => return Err(format!("unknown monitor '{}' (only \"CIN\")", m.escape_debug())),
        Some(_) => return Err("monitor: expected the string \"CIN\"".into()),
        None => return Err("missing field 'monitor' (\"CIN\")".into()),
    }
    let monitor_id = match obj.get("monitorID") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => Some(s.clone()),
        Some(_) => return Err("monitorID: expected a string of 1 to 256 characters".into()),
    };
    let params = match obj.get("parameters") {
        Some(Value::Object(p)) => p,
        Some(_) => return Err("parameters: expected an object".into()),
        None => return Err("missing field 'parameters'".into()),
    };
    let cin_id = match params.get("cinID") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("parameters.cinID: expected a string".into()),
        None => return Err("missing field 'parameters.cinID'".into()),
    };
    check_id("CIN id at parameters.cinID", &cin_id).map_err(|e| e.message)?;
    let tag = match params.get("container_tag") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("parameters.container_tag: expected a string".into()),
    };
    Ok(Start { sequence, monitor_id, cin_id, tag })
}

/// The event of one subscription answer, or the message of its error.
fn event_of(resp: GqlResponse) -> Result<subscription::Event, String> {
    if let Some(e) = resp.errors.first() {
        return Err(e.message.clone());
    }
    let data = resp.data.into_json().map_err(|e| format!("encoding the subscription answer: {e}"))?;
    subscription::parse_event(&data)
}

/// Forwards a monitor's events until its stream ends or it is stopped.
async fn forward(id: String, mut stream: BoxStream<'static, GqlResponse>, out: mpsc::Sender<Message>) {
    while let Some(resp) = stream.next().await {
        let msg = match event_of(resp) {
            Ok(ev) if ev.members.is_empty() => continue,
            Ok(ev) => json!({"type": "event", "monitorID": id, "event": ev.kind.legacy_word(), "message": ev.members}),
            Err(message) => {
                json!({"type": "error", "sequence": null, "response": {"monitorID": id, "message": message}})
            }
        };
        if out.send(Message::Text(msg.to_string().into())).await.is_err() {
            return;
        }
    }
}
