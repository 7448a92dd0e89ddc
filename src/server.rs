//! The router: every route, layer and piece of state assembled in one
//! place, and nothing else. The handlers, the state and the error answers
//! live under `http/`; the legacy routes come from `rest_compat`.
//!
//! Layers, outermost first: the front door (`http::front`: the request log,
//! the browser-safety guard, the token check), then the routes.

use crate::graphql::ws::WsConfig;
use crate::http::graphql::InFlight;
use crate::http::health::{self, Gauges};
use crate::http::ws::{graphql_ws, WsEndpoint, GRAPHQL_WS_PATH};
use crate::http::{front, pages};
use axum::http::{header, HeaderValue, Method};
use axum::middleware;
use axum::routing::get;
use axum::Router;

pub use crate::http::state::{AppState, DEFAULT_BODY_LIMIT};

/// The router: `/graphql`, `/graphql/ws`, `/graphiql`, `/schema.graphql`,
/// `/healthz`, all behind the token check when a token is set (a websocket
/// upgrade to `/graphql/ws` may instead carry its token in
/// `connection_init`).
pub fn router(state: AppState) -> Router {
    router_with(state, WsConfig::default())
}

/// [`router`] with other websocket limits and timers.
pub fn router_with(state: AppState, ws_config: WsConfig) -> Router {
    let ws = WsEndpoint::new(ws_config);
    let compat = leviathan_rest_compat::CompatConfig {
        body_limit: state.body_limit,
        monitor_send_timeout: ws.config().send_timeout,
        monitor_max_message: ws.config().max_message_size,
        monitor_max_connections: ws.config().max_connections,
        shutdown: ws.config().shutdown.receiver(),
        intake: state.http.intake.clone(),
        answers: Some(std::sync::Arc::new(crate::graphql::LegacyAnswers::new(state.schema.clone()))),
        ..Default::default()
    };
    let gauges = Gauges { ws: ws.clone(), graphql: InFlight::default() };
    Router::new()
        .route("/graphql", get(crate::http::graphql::get).post(crate::http::graphql::post))
        .route(
            GRAPHQL_WS_PATH,
            get(move |state, headers, query, upgrade, local| {
                graphql_ws(state, headers, query, upgrade, ws.clone(), local)
            }),
        )
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
        .merge(pages::router())
        .merge(leviathan_rest_compat::router(crate::graphql::Api(state.schema.clone()), compat))
        .fallback(pages::not_found)
        .layer(crate::http::media::compression())
        .layer(axum::Extension(gauges.graphql.clone()))
        .layer(axum::Extension(gauges))
        .layer(middleware::from_fn_with_state(state.clone(), front::check))
        .with_state(state)
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
