//! The `/graphql/ws` endpoint: subprotocol negotiation, the upgrade, and a
//! cap on open connections (each holds a slot until it closes); the
//! protocols themselves are `graphql::ws`.

use crate::auth::Caller;
use crate::graphql::ws::{self, Protocol, WsAuth, WsConfig};
use crate::http::error::HttpError;
use crate::http::media::Media;
use crate::http::state::AppState;
use crate::model::ErrorCode;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Path of the GraphQL websocket endpoint.
pub const GRAPHQL_WS_PATH: &str = "/graphql/ws";

/// The websocket endpoint's settings and its connection slots.
#[derive(Clone)]
pub struct WsEndpoint {
    config: Arc<WsConfig>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl WsEndpoint {
    pub fn new(config: WsConfig) -> Self {
        WsEndpoint { slots: Arc::new(tokio::sync::Semaphore::new(config.max_connections)), config: Arc::new(config) }
    }

    /// The endpoint's settings.
    pub fn config(&self) -> &WsConfig {
        &self.config
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.config.max_connections.saturating_sub(self.slots.available_permits())
    }
}

/// A refusal before the upgrade, in the GraphQL routes' shape.
fn refuse(status: StatusCode, code: ErrorCode, message: String) -> Response {
    HttpError::new(status, code, message).graphql(Media::Json).into_response()
}

/// `/graphql/ws`: GraphQL subscriptions (and queries, mutations) over a
/// websocket, `graphql-transport-ws` or `graphql-ws`.
pub async fn graphql_ws(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    ws: WsEndpoint,
    local: Option<axum::Extension<crate::http::unix::UnixCaller>>,
) -> Response {
    let offered = headers.get_all(header::SEC_WEBSOCKET_PROTOCOL).iter().filter_map(|v| v.to_str().ok());
    let Some(protocol) = Protocol::negotiate(offered) else {
        return refuse(
            StatusCode::BAD_REQUEST,
            ErrorCode::BadRequest,
            "websocket subprotocol required: offer 'graphql-transport-ws' or 'graphql-ws' in Sec-WebSocket-Protocol"
                .into(),
        );
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(e) => {
            return refuse(e.status(), ErrorCode::BadRequest, format!("not a websocket upgrade: {}", e.body_text()))
        }
    };
    let Ok(slot) = Arc::clone(&ws.slots).try_acquire_owned() else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal,
            format!("too many websocket connections (at most {}); try again later", ws.config.max_connections),
        );
    };
    // The peer of the local socket, or the upgrade request's own token, if
    // it had one (the token check let it through without one:
    // `connection_init` may give it).
    let caller = match local {
        Some(axum::Extension(peer)) => Some(Caller::unix(peer.uid)),
        None => state.token.as_deref().and_then(|a| a.request_caller(&headers, uri.query(), true)),
    };
    let auth = WsAuth { auth: state.token.clone(), caller };
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
