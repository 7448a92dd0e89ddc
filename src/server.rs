//! The HTTP server: one router assembled here, state passed explicitly,
//! thin handlers.

use crate::graphql::ws::{self, Protocol, WsAuth, WsConfig};
use crate::graphql::LeviathanSchema;
use crate::service::Service;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Request, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use std::sync::Arc;

/// Default cap on request bodies.
pub const DEFAULT_BODY_LIMIT: usize = 8 * 1024 * 1024;

/// What the router needs.
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    pub schema: LeviathanSchema,
    pub token: Option<Arc<str>>,
    pub body_limit: usize,
    /// GraphQL-over-HTTP and browser-safety settings.
    pub http: Arc<crate::http::HttpConfig>,
}

/// A JSON error body understood by legacy clients (`status`, `message`) and
/// GraphQL clients (`errors[].extensions.code`).
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({
        "status": status.as_u16(),
        "message": message,
        "errors": [{"message": message, "extensions": {"code": code}}],
    });
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// An error in the shape of the route: `{"errors": [...]}` only on the
/// GraphQL routes, the legacy `{status, message}` (with `errors` beside
/// it) elsewhere.
pub fn error_for_path(path: &str, status: StatusCode, code: &str, message: &str) -> Response {
    if path == "/graphql" || path.starts_with("/graphql/") {
        crate::http::graphql::plain_error(status, code, message)
    } else {
        json_error(status, code, message)
    }
}

/// The router: `/graphql`, `/graphql/ws`, `/graphiql`, `/schema.graphql`,
/// `/healthz`, all behind the token check when a token is set (a websocket
/// upgrade to `/graphql/ws` may instead carry its token in
/// `connection_init`).
pub fn router(state: AppState) -> Router {
    router_with(state, WsConfig::default())
}

/// [`router`] with other websocket limits and timers.
pub fn router_with(state: AppState, ws_config: WsConfig) -> Router {
    let ws = WsEndpoint {
        slots: Arc::new(tokio::sync::Semaphore::new(ws_config.max_connections)),
        config: Arc::new(ws_config),
    };
    let compat_ws = ws.clone();
    let gauges = Gauges { ws: ws.clone(), graphql: crate::http::graphql::InFlight::default() };
    Router::new()
        .route("/graphql", get(crate::http::graphql::get).post(crate::http::graphql::post))
        .route(
            GRAPHQL_WS_PATH,
            get(move |state, headers, query, upgrade| graphql_ws(state, headers, query, upgrade, ws.clone())),
        )
        .route("/graphiql", get(graphiql))
        .route("/graphiql/assets/{file}", get(graphiql_asset))
        .route("/schema.graphql", get(schema_sdl))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(crate::pages::router())
        .merge(leviathan_rest_compat::router(
            state.schema.clone(),
            leviathan_rest_compat::CompatConfig {
                body_limit: state.body_limit,
                monitor_send_timeout: compat_ws.config.send_timeout,
                monitor_max_connections: compat_ws.config.max_connections,
                shutdown: compat_ws.config.shutdown.receiver(),
                ..Default::default()
            },
        ))
        .fallback(not_found)
        .layer(axum::Extension(gauges.graphql.clone()))
        .layer(axum::Extension(gauges))
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(middleware::from_fn_with_state(state.clone(), crate::http::guard::check))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// One structured log line per request: method, path, status, duration.
/// Server faults at `warn`, the rest at `debug` (`LEVIATHAN_LOG=debug`).
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let micros = started.elapsed().as_micros() as u64;
    if resp.status().is_server_error() {
        tracing::warn!(%method, %path, status, micros, "request");
    } else {
        tracing::debug!(%method, %path, status, micros, "request");
    }
    resp
}

/// Unknown paths; a path with a trailing slash is redirected (308, which
/// keeps the method and body) to the same path without it.
async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    let path = uri.path();
    let trimmed = path.trim_end_matches('/');
    if trimmed.len() < path.len() && !trimmed.is_empty() {
        let target = match uri.query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&target) {
            let mut resp = json_error(
                StatusCode::PERMANENT_REDIRECT,
                "NOT_FOUND",
                &format!("no route for {method} {path}; it is {trimmed} (without the trailing slash)"),
            );
            resp.headers_mut().insert(header::LOCATION, v);
            return resp;
        }
    }
    json_error(StatusCode::NOT_FOUND, "NOT_FOUND", &format!("no route for {method} {path}"))
}

pub use crate::auth::token_matches;

/// Path of the GraphQL websocket endpoint.
pub const GRAPHQL_WS_PATH: &str = "/graphql/ws";

/// The token of an `Authorization: Bearer <token>` header (the scheme in
/// any case, RFC 7235).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether a request carries the token in `Authorization: Bearer <token>`
/// or, where `query_allowed` (websocket upgrades and the pages), `?token=`.
fn request_has_token(expected: &str, headers: &HeaderMap, query: Option<&str>, query_allowed: bool) -> bool {
    let query_token = query
        .filter(|_| query_allowed)
        .and_then(|q| url_params(q).into_iter().find(|(k, _)| k == "token").map(|(_, v)| v));
    bearer(headers).is_some_and(|t| token_matches(expected, t))
        || query_token.is_some_and(|t| token_matches(expected, &t))
}

/// Pages a browser opens by address, which can carry `?token=`.
fn is_page(path: &str) -> bool {
    matches!(path, "/" | "/graphiql" | "/topology")
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Checks `Authorization: Bearer <token>` (or `?token=` for websockets).
/// A websocket upgrade to `/graphql/ws` goes through: its token is checked
/// at `connection_init`, where the protocol can say no with its own code.
async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(expected) = state.token.as_deref() else {
        return next.run(req).await;
    };
    if req.uri().path().starts_with(GRAPHIQL_ASSETS) || req.uri().path().starts_with(crate::pages::TOPOLOGY_ASSETS) {
        return next.run(req).await;
    }
    let path = req.uri().path();
    let upgrade = is_websocket_upgrade(req.headers());
    let ok = request_has_token(expected, req.headers(), req.uri().query(), upgrade || is_page(path))
        || (path == GRAPHQL_WS_PATH && upgrade);
    if ok {
        return next.run(req).await;
    }
    let mut resp = if is_page(path) {
        let page = format!(
            "<!doctype html><title>leviathan: token needed</title><p>This server needs its token. Open \
             <code>{path}?token=YOUR_TOKEN</code> (the token given to <code>leviathan serve --token</code>).</p>"
        );
        (StatusCode::UNAUTHORIZED, Html(page)).into_response()
    } else {
        error_for_path(
            path,
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
        )
    };
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

fn url_params(q: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_default()
}

fn bad_request(message: &str) -> Response {
    crate::http::graphql::plain_error(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
}

/// The websocket endpoint's settings and its connection slots.
#[derive(Clone)]
struct WsEndpoint {
    config: Arc<WsConfig>,
    slots: Arc<tokio::sync::Semaphore>,
}

/// `/graphql/ws`: GraphQL subscriptions (and queries, mutations) over a
/// websocket, `graphql-transport-ws` or `graphql-ws`.
async fn graphql_ws(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    ws: WsEndpoint,
) -> Response {
    let offered = headers.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter().filter_map(|v| v.to_str().ok());
    let Some(protocol) = Protocol::negotiate(offered) else {
        return bad_request(
            "websocket subprotocol required: offer 'graphql-transport-ws' or 'graphql-ws' in Sec-WebSocket-Protocol",
        );
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => {
            return crate::http::graphql::plain_error(
                e.status(),
                "BAD_REQUEST",
                &format!("not a websocket upgrade: {}", e.body_text()),
            )
        }
    };
    let Ok(slot) = Arc::clone(&ws.slots).try_acquire_owned() else {
        return crate::http::graphql::plain_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "INTERNAL",
            &format!("too many websocket connections (at most {}); try again later", ws.config.max_connections),
        );
    };
    let auth = WsAuth {
        pre_authorized: state.token.as_deref().is_some_and(|t| request_has_token(t, &headers, uri.query(), true)),
        token: state.token.clone(),
    };
    let schema = state.schema.clone();
    let cfg = (*ws.config).clone();
    upgrade
        .protocols([protocol.name()])
        .max_message_size(cfg.max_message_size)
        .max_frame_size(cfg.max_message_size)
        .read_buffer_size(cfg.read_buffer)
        .write_buffer_size(cfg.read_buffer)
        .on_upgrade(move |socket| async move {
            let live = cfg.shutdown.track();
            ws::serve(socket, protocol, schema, auth, cfg).await;
            drop((slot, live));
        })
}

/// The explorer: GraphiQL served from the binary itself (no CDN), so it
/// works on machines without Internet access.
async fn graphiql() -> Html<&'static str> {
    Html(include_str!("../assets/graphiql/index.html"))
}

/// The explorer's scripts and styles (public library code: no token needed).
pub const GRAPHIQL_ASSETS: &str = "/graphiql/assets/";

async fn graphiql_asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, kind): (&'static [u8], &str) = match file.as_str() {
        "graphiql.min.js" => (include_bytes!("../assets/graphiql/graphiql.min.js"), "text/javascript"),
        "graphiql.min.css" => (include_bytes!("../assets/graphiql/graphiql.min.css"), "text/css"),
        "react.production.min.js" => (include_bytes!("../assets/graphiql/react.production.min.js"), "text/javascript"),
        "react-dom.production.min.js" => {
            (include_bytes!("../assets/graphiql/react-dom.production.min.js"), "text/javascript")
        }
        _ => return json_error(StatusCode::NOT_FOUND, "NOT_FOUND", &format!("no explorer asset '{file}'")),
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "public, max-age=86400")], body).into_response()
}

async fn schema_sdl(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], state.schema.sdl()).into_response()
}

/// What `/metrics` shows of the HTTP side: websocket connections open,
/// GraphQL requests running and abandoned.
#[derive(Clone)]
struct Gauges {
    ws: WsEndpoint,
    graphql: crate::http::graphql::InFlight,
}

/// Prometheus text exposition: the revision, objects by kind, CENs and
/// CINs by realization status, operations under way, open `/graphql/ws`
/// connections, GraphQL requests over HTTP running and abandoned.
async fn metrics(State(state): State<AppState>, axum::Extension(gauges): axum::Extension<Gauges>) -> Response {
    use std::fmt::Write as _;
    let service = &state.service;
    let ((counts, statuses), revision) = service.read_at(|t| {
        let mut statuses: std::collections::BTreeMap<(&str, String), usize> = Default::default();
        for c in t.cens() {
            *statuses.entry(("cen", format!("{:?}", c.making.realization.status).to_uppercase())).or_default() += 1;
        }
        for c in t.cins() {
            *statuses.entry(("cin", format!("{:?}", c.making.realization.status).to_uppercase())).or_default() += 1;
        }
        (t.counts(), statuses)
    });
    let mut out = String::new();
    let _ = writeln!(out, "# HELP leviathan_revision Revision of the last committed change.");
    let _ = writeln!(out, "# TYPE leviathan_revision gauge\nleviathan_revision {revision}");
    let _ = writeln!(out, "# HELP leviathan_objects Objects in the topology, by kind.");
    let _ = writeln!(out, "# TYPE leviathan_objects gauge");
    let (hosts, containers, cens, cins, cpools) = counts;
    for (kind, n) in [("host", hosts), ("container", containers), ("cen", cens), ("cin", cins), ("cpool", cpools)] {
        let _ = writeln!(out, "leviathan_objects{{kind=\"{kind}\"}} {n}");
    }
    let _ = writeln!(out, "# HELP leviathan_realization CENs and CINs by realization status.");
    let _ = writeln!(out, "# TYPE leviathan_realization gauge");
    for ((kind, status), n) in statuses {
        let _ = writeln!(out, "leviathan_realization{{kind=\"{kind}\",status=\"{status}\"}} {n}");
    }
    let running = service.operations().running();
    let _ = writeln!(out, "# HELP leviathan_operations_running Make/destroy operations under way.");
    let _ = writeln!(out, "# TYPE leviathan_operations_running gauge\nleviathan_operations_running {running}");
    let ws_open = gauges.ws.config.max_connections.saturating_sub(gauges.ws.slots.available_permits());
    let _ = writeln!(out, "# HELP leviathan_ws_connections Open websocket connections on /graphql/ws.");
    let _ = writeln!(out, "# TYPE leviathan_ws_connections gauge\nleviathan_ws_connections {ws_open}");
    let _ = writeln!(out, "# HELP leviathan_graphql_requests_running GraphQL requests over HTTP being run.");
    let _ = writeln!(
        out,
        "# TYPE leviathan_graphql_requests_running gauge\nleviathan_graphql_requests_running {}",
        gauges.graphql.running()
    );
    let _ = writeln!(
        out,
        "# HELP leviathan_graphql_requests_abandoned_total GraphQL requests over HTTP whose work was dropped \
         before it finished (the client went away)."
    );
    let _ = writeln!(
        out,
        "# TYPE leviathan_graphql_requests_abandoned_total counter\nleviathan_graphql_requests_abandoned_total {}",
        gauges.graphql.abandoned()
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// Lets the browser pages of the given origins call the API (nothing
/// cross-origin is allowed otherwise). Preflights are answered before the
/// token check, which they cannot pass.
pub fn with_cors(router: Router, origins: &[String]) -> anyhow::Result<Router> {
    if origins.is_empty() {
        return Ok(router);
    }
    let mut allowed = Vec::with_capacity(origins.len());
    for o in origins {
        allowed
            .push(HeaderValue::from_str(o).map_err(|_| anyhow::anyhow!("--cors-origin: '{o}' is not a valid origin"))?);
    }
    let cors = tower_http::cors::CorsLayer::new()
        .allow_origin(allowed)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]);
    Ok(router.layer(cors))
}

/// Health, honestly: the store is asked for something (a read of the
/// change log, bounded by a timeout), and the answer is 503 when it does
/// not answer; the realizer is running whenever the server is (a server
/// that cannot realize refuses to start), or off with `--no-realize`.
async fn healthz(State(state): State<AppState>) -> Response {
    let store = state.service.store();
    let rev = state.service.revision();
    let probe = tokio::time::timeout(std::time::Duration::from_secs(5), store.changes_after(rev, 1)).await;
    let store_error = match probe {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("no answer within 5 s".to_string()),
    };
    let ok = store_error.is_none();
    let body = json!({
        "status": if ok { "ok" } else { "unavailable" },
        "version": crate::VERSION,
        "revision": rev,
        "store": {"kind": store.kind(), "ok": ok, "error": store_error},
        "realizer": if state.http.realizing { "running" } else { "off (--no-realize)" },
    });
    let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
