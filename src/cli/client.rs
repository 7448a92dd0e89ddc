//! A GraphQL client of a leviathan server: queries and mutations over HTTP
//! (`POST /graphql`), subscriptions over `graphql-transport-ws` on
//! `/graphql/ws`. The CLI reaches the server through this and nothing else.
//!
//! Every way of not getting through names its fix: nothing listening says
//! to start `leviathan serve` or to pass `--server`; a missing or refused
//! token names `--token` and `LEVIATHAN_TOKEN` (the server's own message
//! speaks of the HTTP header, which a CLI user never writes); a refused
//! server certificate says which check failed (`cli::tls`). `--server`
//! without a scheme is `http://`; `https://` trusts the system's roots, or
//! only the CA of `--ca-cert`.

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
    /// The local socket, for `--server unix:PATH`.
    unix: Option<std::path::PathBuf>,
    /// The TLS configuration of `https://` servers.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl Client {
    #[cfg(test)]
    pub fn new(server: &str, token: Option<String>) -> anyhow::Result<Client> {
        Client::with_ca(server, token, None)
    }

    /// A client of `server` (`http://`, `https://` or `unix:PATH`); an
    /// `https://` one trusts the CA in `ca_cert` only, or else the system's
    /// roots.
    pub fn with_ca(server: &str, token: Option<String>, ca_cert: Option<&std::path::Path>) -> anyhow::Result<Client> {
        let unix = unix_path(server);
        let url = if unix.is_some() { "http://localhost/".to_string() } else { server_url(server) };
        let base = reqwest::Url::parse(&url).with_context(|| format!("--server '{server}' is not a URL"))?;
        if !matches!(base.scheme(), "http" | "https") {
            bail!("--server '{server}': only http://, https:// and unix:PATH are supported");
        }
        let mut builder = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
        if let Some(path) = &unix {
            builder = builder.unix_socket(path.clone());
        }
        let tls = if base.scheme() == "https" { Some(super::tls::client_config(ca_cert)?) } else { None };
        if let Some(cfg) = &tls {
            builder = builder.use_preconfigured_tls((**cfg).clone());
        }
        let http = builder.build().context("building the HTTP client")?;
        Ok(Client { http, base, token: token.filter(|t| !t.is_empty()), unix, tls })
    }

    pub fn server(&self) -> std::borrow::Cow<'_, str> {
        match &self.unix {
            Some(p) => format!("unix:{}", p.display()).into(),
            None => self.base.as_str().trim_end_matches('/').into(),
        }
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
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        let bytes = read_capped(resp).await?;
        let body: Value = serde_json::from_slice(&bytes)
            .map_err(|_| anyhow!("the server at {} answered {status} with a body that is not JSON", self.server()))?;
        if let Some(e) = body.get("errors").and_then(|e| e.as_array()).and_then(|a| a.first()) {
            return Err(self
                .explained(GqlError {
                    code: e["extensions"]["code"].as_str().unwrap_or("UNKNOWN").to_string(),
                    message: e["message"].as_str().unwrap_or("(no message)").to_string(),
                })
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
        if self.unix.is_some() {
            bail!(
                "subscriptions (watch, progress) are not served to the CLI over a unix socket: pass --server http://…"
            );
        }
        let mut url = self.endpoint("graphql/ws")?;
        let scheme = if url.scheme() == "https" { "wss" } else { "ws" };
        url.set_scheme(scheme).map_err(|_| anyhow!("cannot make a websocket URL of {url}"))?;
        let mut request = url.as_str().into_client_request().context("websocket request")?;
        request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("graphql-transport-ws"));
        let connector = self.tls.clone().map(tokio_tungstenite::Connector::Rustls);
        let connecting = tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector);
        let (mut ws, _) = tokio::time::timeout(Duration::from_secs(10), connecting)
            .await
            .map_err(|_| anyhow!("connecting to {url} timed out"))?
            .map_err(|e| self.unreachable(&e))?;
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
                return Err(self
                    .explained(GqlError {
                        code: ErrorCode::Unauthenticated.as_str().into(),
                        message: "the server closed the websocket before accepting it".into(),
                    })
                    .into())
            }
        }
        let msg = json!({"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}});
        sub.ws.send(Message::text(msg.to_string())).await?;
        Ok(sub)
    }
}

impl Client {
    /// A request that never reached the server: nothing listening (start
    /// one, or point `--server` at yours), or another network failure with
    /// the same hint.
    fn unreachable(&self, e: &(dyn std::error::Error + 'static)) -> anyhow::Error {
        let server = self.server();
        if let Some(words) = super::tls::explain(e, &server) {
            return anyhow!("{words}");
        }
        let refused = std::iter::successors(Some(e), |e| e.source()).any(|e| {
            e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        });
        if refused {
            return anyhow!(
                "no leviathan server is listening at {server} (connection refused): start one with \
                 `leviathan serve`, or pass --server (or set LEVIATHAN_SERVER) with the address of yours"
            );
        }
        let mut causes = e.to_string();
        for c in std::iter::successors(e.source(), |e| e.source()) {
            causes.push_str(&format!(": {c}"));
        }
        anyhow!(
            "cannot reach the server at {server} ({causes}): is it running (`leviathan serve`), and does \
             --server (or LEVIATHAN_SERVER) give its address?"
        )
    }

    /// The server's own words, with what to do about them when the fix is
    /// on the command line: a missing or wrong token names `--token` and
    /// `LEVIATHAN_TOKEN` (not the HTTP header the server speaks of).
    fn explained(&self, e: GqlError) -> GqlError {
        if e.code == ErrorCode::Forbidden.as_str() && e.message.starts_with("forbidden:") {
            let message = format!("{} (--token or LEVIATHAN_TOKEN)", e.message);
            return GqlError { code: e.code, message };
        }
        if e.code != ErrorCode::Unauthenticated.as_str() {
            return e;
        }
        let server = self.server();
        let message = match self.token {
            None => format!(
                "the server at {server} needs a token: pass it with --token, or set LEVIATHAN_TOKEN \
                 (the token the server was started with)"
            ),
            Some(_) => format!(
                "the server at {server} did not accept the token given (--token or LEVIATHAN_TOKEN): \
                 give the token the server was started with"
            ),
        };
        GqlError { code: e.code, message }
    }
}

/// The socket of `--server unix:PATH` (also `unix://PATH`).
fn unix_path(server: &str) -> Option<std::path::PathBuf> {
    let rest = server.trim().strip_prefix("unix:")?;
    let path = rest.strip_prefix("//").unwrap_or(rest);
    Some(std::path::PathBuf::from(path))
}

/// `--server` as a URL: without a scheme, `http://` (`127.0.0.1:8080`,
/// `localhost:8080`, `myhost`); a bare port is on 127.0.0.1.
pub fn server_url(server: &str) -> String {
    let s = server.trim();
    if s.contains("://") {
        return s.to_string();
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return format!("http://127.0.0.1:{s}");
    }
    format!("http://{s}")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_without_a_scheme_is_http() {
        assert_eq!(server_url("127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(server_url("localhost:9000"), "http://localhost:9000");
        assert_eq!(server_url("8081"), "http://127.0.0.1:8081");
        assert_eq!(server_url("https://lev.example/"), "https://lev.example/");
        let c = Client::new("127.0.0.1:8080", None).unwrap();
        assert_eq!(c.server(), "http://127.0.0.1:8080");
        assert!(Client::new("ftp://x", None).is_err());
        for s in ["unix:/run/l.sock", "unix:///run/l.sock"] {
            assert_eq!(Client::new(s, None).unwrap().server(), "unix:/run/l.sock");
        }
    }

    #[test]
    fn a_token_error_names_the_flag_and_the_variable() {
        let refused = || GqlError { code: "UNAUTHENTICATED".into(), message: "send 'Authorization: Bearer'".into() };
        for token in [None, Some("wrong".to_string())] {
            let e = Client::new("http://127.0.0.1:1", token).unwrap().explained(refused()).to_string();
            assert!(e.contains("--token") && e.contains("LEVIATHAN_TOKEN") && e.contains("UNAUTHENTICATED"), "{e}");
            assert!(!e.contains("Authorization"), "{e}");
        }
        let other = GqlError { code: "NOT_FOUND".into(), message: "no CEN".into() };
        assert_eq!(Client::new("http://127.0.0.1:1", None).unwrap().explained(other).message, "no CEN");
    }
}
