//! GraphQL over websocket (`/graphql/ws`), both subprotocols:
//!
//! - `graphql-transport-ws` (the `graphql-ws` npm package's protocol,
//!   <https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md>);
//! - `graphql-ws` (the older subscriptions-transport-ws protocol).
//!
//! One task per connection runs a loop over the client's messages, the
//! connection's subscription streams and a keep-alive timer, and writes
//! straight to the socket. Subscription streams are pulled only when the
//! socket takes a message, so nothing queues per subscriber beyond the
//! change stream's bounded ring (a subscriber that falls behind it resumes
//! from the change log); what waits for the socket is the one message being
//! sent (the socket library's write buffer is flushed on every send). A
//! peer that takes no message for
//! [`WsConfig::send_timeout`] is dropped; one that sends nothing (not even a
//! pong to our pings) for three keep-alive intervals is dropped too.
//!
//! Close codes (graphql-transport-ws): 4400 invalid message, 4401
//! unauthorized (a missing or wrong token at `connection_init`, or a
//! `subscribe` before the connection was acknowledged), 4408 no
//! `connection_init` in time, 4409 duplicate subscription id, 4429 a second
//! `connection_init`.
//!
//! A message over [`WsConfig::max_message_size`] closes the connection with
//! 1009 (message too big) and a reason naming the limit, on either
//! protocol. The socket library refuses such a frame from its header,
//! before reading its payload, so what one message can buffer stays
//! bounded by the limit.

use super::LeviathanSchema;
use crate::auth::{Auth, Caller};
use crate::model::ErrorCode;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{BoxStream, SplitSink};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::StreamMap;

/// Limits and timers of the websocket endpoint.
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// Most subscriptions one connection may hold at once.
    pub max_subscriptions: usize,
    /// Interval of keep-alives (websocket pings; `ka` messages for the
    /// older protocol).
    pub keepalive: Duration,
    /// Time a client has to send `connection_init`.
    pub init_timeout: Duration,
    /// Time the peer has to take one message before it is dropped.
    pub send_timeout: Duration,
    /// Largest message accepted from a client.
    pub max_message_size: usize,
    /// Most websocket connections served at once; more are answered 503.
    pub max_connections: usize,
    /// Read buffer of a connection (the socket library's default, 128 KiB,
    /// would cost that much per idle subscriber).
    pub read_buffer: usize,
    /// The server's shutdown: connections close with 1001 when it begins.
    pub shutdown: crate::shutdown::Shutdown,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            max_subscriptions: 100,
            keepalive: Duration::from_secs(15),
            init_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(10),
            max_message_size: 256 * 1024,
            max_connections: 10_000,
            read_buffer: 8 * 1024,
            shutdown: Default::default(),
        }
    }
}

/// The two subprotocols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `graphql-transport-ws`.
    TransportWs,
    /// `graphql-ws` (subscriptions-transport-ws).
    LegacyWs,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::TransportWs => "graphql-transport-ws",
            Protocol::LegacyWs => "graphql-ws",
        }
    }

    /// The first known protocol in a `Sec-WebSocket-Protocol` list (the
    /// client's order of preference).
    pub fn negotiate<'a>(offered: impl Iterator<Item = &'a str>) -> Option<Protocol> {
        offered.flat_map(|v| v.split(',')).map(str::trim).find_map(|p| match p {
            "graphql-transport-ws" => Some(Protocol::TransportWs),
            "graphql-ws" => Some(Protocol::LegacyWs),
            _ => None,
        })
    }
}

/// How the connection is authorized.
#[derive(Debug, Clone, Default)]
pub struct WsAuth {
    /// The tokens a connection may give, if the server has any.
    pub auth: Option<Arc<Auth>>,
    /// The caller of the upgrade request's own token (`?token=` or an
    /// `Authorization` header), if it carried one.
    pub caller: Option<Caller>,
}

impl WsAuth {
    /// The caller of a `connection_init` payload (or of the upgrade
    /// request): `{"token": T}`, `{"Authorization": "Bearer T"}` (any
    /// case), or the same inside `"headers"`. `None`: refused.
    fn accepts(&self, payload: &Value) -> Option<Caller> {
        let Some(auth) = self.auth.as_deref() else { return Some(Caller::anonymous()) };
        if let Some(c) = &self.caller {
            return Some(c.clone());
        }
        let mut given = Vec::new();
        for obj in [Some(payload), payload.get("headers")].into_iter().flatten() {
            let Some(map) = obj.as_object() else { continue };
            for (k, v) in map {
                let Some(v) = v.as_str() else { continue };
                if k.eq_ignore_ascii_case("token") {
                    given.push(v.trim());
                } else if k.eq_ignore_ascii_case("authorization") {
                    if let Some(t) = v.trim().strip_prefix("Bearer ").or_else(|| v.trim().strip_prefix("bearer ")) {
                        given.push(t.trim());
                    }
                }
            }
        }
        given.into_iter().find_map(|t| auth.caller(t))
    }
}

enum Out {
    Next { first: bool, resp: Box<async_graphql::Response> },
    Done,
}

type Sink = SplitSink<WebSocket, Message>;

struct Conn {
    proto: Protocol,
    schema: LeviathanSchema,
    auth: WsAuth,
    cfg: WsConfig,
    sink: Sink,
    subs: StreamMap<String, BoxStream<'static, Out>>,
    init_received: bool,
    acked: bool,
    /// Who the connection is served as, once acknowledged.
    caller: Option<Caller>,
}

/// Why the loop ends.
enum Stop {
    /// Close with this code and reason.
    Close(u16, String),
    /// The peer closed: answer its close frame, then drop.
    PeerClosed,
    /// The peer is gone or stuck: drop the connection.
    Drop,
}

/// Serves one upgraded connection until it closes.
pub async fn serve(socket: WebSocket, proto: Protocol, schema: LeviathanSchema, auth: WsAuth, cfg: WsConfig) {
    let (sink, mut incoming) = socket.split();
    let mut conn = Conn {
        proto,
        schema,
        auth,
        cfg,
        sink,
        subs: StreamMap::new(),
        init_received: false,
        acked: false,
        caller: None,
    };
    let keepalive = conn.cfg.keepalive;
    let mut ticker = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let init_deadline = tokio::time::sleep(conn.cfg.init_timeout);
    tokio::pin!(init_deadline);
    let mut last_heard = Instant::now();
    let shutdown = conn.cfg.shutdown.clone();
    let going_away = shutdown.signalled();
    tokio::pin!(going_away);

    let stop = loop {
        let step = tokio::select! {
            msg = incoming.next() => match msg {
                Some(Err(e)) if over_limit(&e) => Err(Stop::Close(
                    1009,
                    format!("message over the limit of {} bytes", conn.cfg.max_message_size),
                )),
                None | Some(Err(_)) => Err(Stop::Drop),
                Some(Ok(msg)) => {
                    last_heard = Instant::now();
                    conn.on_message(msg).await
                }
            },
            Some((id, out)) = conn.subs.next(), if !conn.subs.is_empty() => conn.on_output(id, out).await,
            () = &mut going_away => Err(Stop::Close(1001, "server shutting down".into())),
            () = &mut init_deadline, if !conn.acked => {
                Err(Stop::Close(4408, "Connection initialisation timeout".into()))
            }
            _ = ticker.tick() => {
                if last_heard.elapsed() > keepalive * 3 {
                    tracing::debug!("websocket peer silent for three keep-alive intervals; dropping it");
                    Err(Stop::Drop)
                } else {
                    conn.keepalive().await
                }
            }
        };
        if let Err(stop) = step {
            break stop;
        }
    };
    match stop {
        Stop::Close(code, reason) => {
            let frame = CloseFrame { code, reason: Utf8Bytes::from(reason) };
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.sink.send(Message::Close(Some(frame)))).await;
        }
        // The socket library has queued the answering close frame: flush it.
        Stop::PeerClosed => {
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.sink.close()).await;
        }
        Stop::Drop => {}
    }
    // Dropping the halves closes the TCP connection and every subscription.
}

/// Whether a read failed because the peer's message (or frame) is over the
/// configured size. The socket library's error type is that of axum's own
/// version of it, so it is recognized by its message ("Space limit
/// exceeded: Message too long: N > MAX").
fn over_limit(e: &axum::Error) -> bool {
    e.to_string().starts_with("Space limit exceeded")
}

fn text(v: &Value) -> Message {
    Message::Text(Utf8Bytes::from(v.to_string()))
}

fn invalid(what: impl std::fmt::Display) -> Stop {
    Stop::Close(4400, format!("Invalid message received: {what}"))
}

impl Conn {
    async fn send(&mut self, msg: Message) -> Result<(), Stop> {
        match tokio::time::timeout(self.cfg.send_timeout, self.sink.send(msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Stop::Drop),
            Err(_) => {
                tracing::info!("websocket peer took no message for {:?}; dropping it", self.cfg.send_timeout);
                Err(Stop::Drop)
            }
        }
    }

    async fn send_json(&mut self, v: Value) -> Result<(), Stop> {
        self.send(text(&v)).await
    }

    async fn keepalive(&mut self) -> Result<(), Stop> {
        self.send(Message::Ping(Default::default())).await?;
        if self.proto == Protocol::LegacyWs && self.acked {
            self.send_json(json!({"type": "ka"})).await?;
        }
        Ok(())
    }

    async fn on_message(&mut self, msg: Message) -> Result<(), Stop> {
        let bytes = match msg {
            Message::Text(t) => t.as_str().as_bytes().to_vec(),
            Message::Binary(b) => b.to_vec(),
            Message::Ping(_) | Message::Pong(_) => return Ok(()),
            Message::Close(_) => return Err(Stop::PeerClosed),
        };
        let v: Value = match serde_json::from_slice(&bytes) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return self.bad_message("a JSON object is required", None).await,
            Err(e) => return self.bad_message(format!("malformed JSON: {e}"), None).await,
        };
        let Some(ty) = v.get("type").and_then(Value::as_str).map(str::to_string) else {
            return self.bad_message("missing 'type'", None).await;
        };
        let id = v.get("id").and_then(Value::as_str).map(str::to_string);
        let payload = v.get("payload").cloned().unwrap_or(Value::Null);
        match (self.proto, ty.as_str()) {
            (_, "connection_init") => self.on_init(payload).await,
            (Protocol::TransportWs, "ping") => {
                let mut pong = json!({"type": "pong"});
                if !payload.is_null() {
                    pong["payload"] = payload;
                }
                self.send_json(pong).await
            }
            (Protocol::TransportWs, "pong") => Ok(()),
            (Protocol::TransportWs, "subscribe") | (Protocol::LegacyWs, "start") => {
                let Some(id) = id.filter(|i| !i.is_empty()) else {
                    return self.bad_message(format!("'{ty}' needs a non-empty string 'id'"), None).await;
                };
                self.on_subscribe(id, payload).await
            }
            (Protocol::TransportWs, "complete") | (Protocol::LegacyWs, "stop") => {
                let Some(id) = id else {
                    return self.bad_message(format!("'{ty}' needs a string 'id'"), None).await;
                };
                let known = self.subs.remove(&id).is_some();
                if known && self.proto == Protocol::LegacyWs {
                    self.send_json(json!({"type": "complete", "id": id})).await?;
                }
                Ok(())
            }
            (Protocol::LegacyWs, "connection_terminate") => Err(Stop::Close(1000, "terminated".into())),
            _ => self.bad_message(format!("unknown message type '{ty}' for {}", self.proto.name()), id).await,
        }
    }

    /// A message the protocol does not allow: close with 4400
    /// (graphql-transport-ws), answer with an `error` (graphql-ws).
    async fn bad_message(&mut self, what: impl std::fmt::Display, id: Option<String>) -> Result<(), Stop> {
        match self.proto {
            Protocol::TransportWs => Err(invalid(what)),
            Protocol::LegacyWs => {
                let mut msg = json!({"type": "error", "payload": {"message": format!("invalid message: {what}")}});
                if let Some(id) = id {
                    msg["id"] = Value::String(id);
                }
                self.send_json(msg).await
            }
        }
    }

    async fn on_init(&mut self, payload: Value) -> Result<(), Stop> {
        if self.init_received && self.proto == Protocol::TransportWs {
            return Err(Stop::Close(4429, "Too many initialisation requests".into()));
        }
        self.init_received = true;
        self.caller = self.auth.accepts(&payload);
        if self.caller.is_none() {
            return match self.proto {
                Protocol::TransportWs => Err(Stop::Close(4401, "Unauthorized: missing or wrong token".into())),
                Protocol::LegacyWs => {
                    self.send_json(json!({
                        "type": "connection_error",
                        "payload": {"message": "Unauthorized: missing or wrong token",
                                    "extensions": {"code": ErrorCode::Unauthenticated.as_str()}}
                    }))
                    .await?;
                    Err(Stop::Close(4401, "Unauthorized: missing or wrong token".into()))
                }
            };
        }
        self.acked = true;
        self.send_json(json!({"type": "connection_ack"})).await?;
        if self.proto == Protocol::LegacyWs {
            self.send_json(json!({"type": "ka"})).await?;
        }
        Ok(())
    }

    async fn on_subscribe(&mut self, id: String, payload: Value) -> Result<(), Stop> {
        if !self.acked {
            return Err(Stop::Close(4401, "Unauthorized".into()));
        }
        if self.subs.contains_key(&id) {
            match self.proto {
                Protocol::TransportWs => return Err(Stop::Close(4409, format!("Subscriber for {id} already exists"))),
                // The older protocol replaces an operation with the same id.
                Protocol::LegacyWs => {
                    self.subs.remove(&id);
                }
            }
        }
        let request: async_graphql::Request = match serde_json::from_value(payload) {
            Ok(r) => r,
            Err(e) => {
                return match self.proto {
                    Protocol::TransportWs => Err(invalid(format!("bad subscribe payload: {e}"))),
                    Protocol::LegacyWs => {
                        self.op_error(&id, format!("bad start payload: {e}"), ErrorCode::BadRequest).await
                    }
                };
            }
        };
        if self.subs.len() >= self.cfg.max_subscriptions {
            let max = self.cfg.max_subscriptions;
            return self
                .op_error(
                    &id,
                    format!("too many subscriptions on this connection (at most {max})"),
                    ErrorCode::BadRequest,
                )
                .await;
        }
        // Each operation is checked against the caller's role
        // (`graphql::access`): a mutation beyond it is refused here.
        let request = match &self.caller {
            Some(c) => request.data(c.clone()),
            None => request,
        };
        let stream = self
            .schema
            .execute_stream(request)
            .enumerate()
            .map(|(i, resp)| Out::Next { first: i == 0, resp: Box::new(resp) })
            .chain(futures_util::stream::once(async { Out::Done }))
            .boxed();
        self.subs.insert(id, stream);
        Ok(())
    }

    /// An `error` message for one operation (which then ends).
    async fn op_error(&mut self, id: &str, message: String, code: ErrorCode) -> Result<(), Stop> {
        let err = json!({"message": message, "extensions": {"code": code.as_str()}});
        let payload = match self.proto {
            Protocol::TransportWs => json!([err]),
            Protocol::LegacyWs => err,
        };
        self.send_json(json!({"type": "error", "id": id, "payload": payload})).await
    }

    async fn on_output(&mut self, id: String, out: Out) -> Result<(), Stop> {
        match out {
            Out::Next { first, resp } => {
                // A request refused before it ran (syntax, validation,
                // limits) is an `error` message; errors while running
                // (e.g. NOT_FOUND from a resolver) are results.
                let refused = first
                    && resp.data == async_graphql::Value::Null
                    && !resp.errors.is_empty()
                    && resp.errors.iter().all(|e| e.path.is_empty());
                if refused {
                    self.subs.remove(&id);
                    let errors = serde_json::to_value(&resp.errors).unwrap_or_else(|_| json!([]));
                    let payload = match self.proto {
                        Protocol::TransportWs => errors,
                        Protocol::LegacyWs => errors.get(0).cloned().unwrap_or(Value::Null),
                    };
                    return self.send_json(json!({"type": "error", "id": id, "payload": payload})).await;
                }
                let ty = match self.proto {
                    Protocol::TransportWs => "next",
                    Protocol::LegacyWs => "data",
                };
                let body = match serde_json::to_string(&resp) {
                    Ok(b) => b,
                    Err(e) => {
                        return self.op_error(&id, format!("encoding the result: {e}"), ErrorCode::Internal).await
                    }
                };
                let id_json = Value::String(id).to_string();
                self.send(Message::Text(Utf8Bytes::from(format!(
                    r#"{{"type":"{ty}","id":{id_json},"payload":{body}}}"#
                ))))
                .await
            }
            Out::Done => {
                // Gone before the client hears it is: the client may reuse
                // the id as soon as `complete` arrives.
                self.subs.remove(&id);
                self.send_json(json!({"type": "complete", "id": id})).await
            }
        }
    }
}
