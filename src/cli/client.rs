//! A GraphQL client of a leviathan server: queries and mutations over HTTP
//! (`POST /graphql`), subscriptions over `graphql-transport-ws` on
//! `/graphql/ws`. The CLI reaches the server through this and nothing else.

use anyhow::{anyhow, bail, Context};
use futures_util::{SinkExt, StreamExt};
use leviathan::model::ErrorCode;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// Largest answer the client reads (a topology of 100,000 containers fits).
const MAX_ANSWER: usize = 256 * 1024 * 1024;

/// An error the server answered, with its `extensions.code`.
#[derive(Debug)]
pub struct GqlError {
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for GqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for GqlError {}

/// Where the server is and how to authenticate.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: reqwest::Url,
    token: Option<String>,
}

impl Client {
    pub fn new(server: &str, token: Option<String>) -> anyhow::Result<Client> {
        let base = reqwest::Url::parse(server).with_context(|| format!("--server '{server}' is not a URL"))?;
        if !matches!(base.scheme(), "http" | "https") {
            bail!("--server '{server}': only http:// and https:// are supported");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .context("building the HTTP client")?;
        Ok(Client { http, base, token: token.filter(|t| !t.is_empty()) })
    }

    pub fn server(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    fn endpoint(&self, path: &str) -> anyhow::Result<reqwest::Url> {
        self.base.join(path).with_context(|| format!("joining {path} to {}", self.base))
    }

    /// Runs a query or mutation and returns its `data`; a GraphQL error
    /// becomes a [`GqlError`].
    pub async fn gql(&self, query: &str, variables: Value) -> anyhow::Result<Value> {
        let mut req = self.http.post(self.endpoint("graphql")?).json(&json!({"query": query, "variables": variables}));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.with_context(|| format!("cannot reach the server at {}", self.server()))?;
        let status = resp.status();
        let bytes = read_capped(resp).await?;
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|_| anyhow!("the server at {} answered {status} with a body that is not JSON", self.server()))?;
        if let Some(e) = body.get("errors").and_then(|e| e.as_array()).and_then(|a| a.first()) {
            return Err(GqlError {
                code: e["extensions"]["code"].as_str().unwrap_or("UNKNOWN").to_string(),
                message: e["message"].as_str().unwrap_or("(no message)").to_string(),
            }
            .into());
        }
        if !status.is_success() {
            bail!("the server at {} answered {status}", self.server());
        }
        Ok(body.get("data").cloned().unwrap_or(Value::Null))
    }

    /// Opens a `graphql-transport-ws` connection and starts one
    /// subscription.
    pub async fn subscribe(&self, query: &str, variables: Value) -> anyhow::Result<Subscription> {
        let mut url = self.endpoint("graphql/ws")?;
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme).map_err(|_| anyhow!("cannot make a websocket URL of {url}"))?;
        let mut request = url.as_str().into_client_request().context("websocket request")?;
        request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("graphql-transport-ws"));
        let (mut ws, _) = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(request))
            .await
            .map_err(|_| anyhow!("connecting to {url} timed out"))?
            .with_context(|| format!("cannot open a websocket to {url}"))?;
        let payload = match &self.token {
            Some(t) => json!({"token": t}),
            None => json!({}),
        };
        ws.send(Message::text(json!({"type": "connection_init", "payload": payload}).to_string())).await?;
        let mut sub = Subscription { ws };
        match sub.next_json(Duration::from_secs(10)).await? {
            Some(v) if v["type"] == "connection_ack" => {}
            Some(v) => bail!("the server did not accept the websocket connection: {v}"),
            None => {
                return Err(GqlError {
                    code: ErrorCode::Unauthenticated.as_str().into(),
                    message: "the server closed the websocket before accepting it (missing or wrong token?)".into(),
                }
                .into())
            }
        }
        let msg = json!({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}});
        sub.ws.send(Message::text(msg.to_string())).await?;
        Ok(sub)
    }
}

async fn read_capped(mut resp: reqwest::Response) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await.context("reading the answer")? {
        if out.len() + chunk.len() > MAX_ANSWER {
            bail!("the server's answer is over {MAX_ANSWER} bytes");
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One running subscription.
pub struct Subscription {
    ws: Ws,
}

impl Subscription {
    async fn next_json(&mut self, limit: Duration) -> anyhow::Result<Option<Value>> {
        loop {
            let msg = match tokio::time::timeout(limit, self.ws.next()).await {
                Err(_) => bail!("the server sent nothing for {} s", limit.as_secs()),
                Ok(None) => return Ok(None),
                Ok(Some(m)) => m.context("websocket")?,
            };
            match msg {
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).context("the server sent a message that is not JSON")?;
                    if v["type"] == "ping" {
                        let pong = json!({"type": "pong"}).to_string();
                        self.ws.send(Message::text(pong)).await?;
                        continue;
                    }
                    return Ok(Some(v));
                }
                Message::Close(_) => return Ok(None),
                _ => continue,
            }
        }
    }

    /// The next event's `data`, or `None` when the subscription completed
    /// or the connection closed. An error event is an error.
    pub async fn next(&mut self) -> anyhow::Result<Option<Value>> {
        // The server pings well within this; silence this long is a dead link.
        let limit = Duration::from_secs(120);
        loop {
            let Some(v) = self.next_json(limit).await? else { return Ok(None) };
            match v["type"].as_str() {
                Some("next") => {
                    if let Some(e) = v["payload"]["errors"].as_array().and_then(|a| a.first()) {
                        return Err(GqlError {
                            code: e["extensions"]["code"].as_str().unwrap_or("UNKNOWN").to_string(),
                            message: e["message"].as_str().unwrap_or("(no message)").to_string(),
                        }
                        .into());
                    }
                    return Ok(Some(v["payload"]["data"].clone()));
                }
                Some("error") => {
                    let e = &v["payload"][0];
                    return Err(GqlError {
                        code: e["extensions"]["code"].as_str().unwrap_or("UNKNOWN").to_string(),
                        message: e["message"].as_str().unwrap_or("(no message)").to_string(),
                    }
                    .into());
                }
                Some("complete") => return Ok(None),
                _ => continue,
            }
        }
    }
}
