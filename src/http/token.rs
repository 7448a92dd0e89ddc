//! The token check on every request, when the server has a token:
//! `Authorization: Bearer <token>`, or `?token=` on the pages and websocket
//! upgrades. The pages' assets are public library code and pass; a
//! websocket upgrade to `/graphql/ws` passes too, because its token is
//! checked at `connection_init`, where the protocol can say no with its own
//! code. A page without the token gets a page saying how to give it; any
//! other route a 401 `UNAUTHENTICATED` in its own shape. A request over
//! the local socket (`http::unix`) needs no token: its peer is checked.

use crate::auth::request_has_token;
use crate::http::error::HttpError;
use crate::http::pages::{is_page, is_public_asset};
use crate::http::state::AppState;
use crate::http::ws::GRAPHQL_WS_PATH;
use crate::model::ErrorCode;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The middleware.
pub async fn check(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match refusal(state.token.as_deref(), &req) {
        Some(resp) => resp,
        None => next.run(req).await,
    }
}

/// The answer to a request that lacks the token `expected` (if one is
/// set), `None` when it may go on. Also used before the store is open
/// (`http::waiting`).
pub fn refusal(expected: Option<&str>, req: &Request) -> Option<Response> {
    let expected = expected?;
    if crate::http::unix::is_local(req) {
        return None;
    }
    let path = req.uri().path();
    if is_public_asset(path) {
        return None;
    }
    let upgrade = is_websocket_upgrade(req.headers());
    let ok = request_has_token(expected, req.headers(), req.uri().query(), upgrade || is_page(path))
        || (path == GRAPHQL_WS_PATH && upgrade);
    if ok {
        return None;
    }
    let mut resp = if is_page(path) {
        let page = format!(
            "<!doctype html><title>leviathan: token needed</title><p>This server needs its token. Open \
             <code>{path}?token=YOUR_TOKEN</code> (the token given to <code>leviathan serve --token</code>).</p>"
        );
        (axum::http::StatusCode::UNAUTHORIZED, Html(page)).into_response()
    } else {
        HttpError::of(ErrorCode::Unauthenticated, "missing or wrong bearer token: send 'Authorization: Bearer <token>'")
            .for_path(path)
            .into_response()
    };
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Some(resp)
}
