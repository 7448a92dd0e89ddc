//! The front door: every request passes one middleware that does, in this
//! order, what three layers did before - the request log around
//! everything, the browser-safety guard (`http::guard`), then the token
//! check (`http::token`), which runs the rest of the request as its caller.
//! One layer instead of three spares each request two boxed futures and
//! two clones of the inner service (measured by `benches/http.rs`).
//!
//! Invariants: a request the guard refuses is answered 403 before its
//! token is looked at; one the token check refuses is answered before any
//! route runs; every request, refused or not, gets its log line.

use crate::http::state::AppState;
use crate::http::{guard, token};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

/// The middleware.
pub async fn check(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let method = req.method().clone();
    // A clone of the URI shares its bytes: the path is only read if a line
    // is written.
    let uri = req.uri().clone();
    let started = std::time::Instant::now();
    let resp = if let Some(refused) = guard::refusal(&state.http, &req) {
        refused
    } else {
        match token::admit(state.token.as_deref(), &req) {
            Err(resp) => *resp,
            Ok(caller) => {
                req.extensions_mut().insert(caller.clone());
                crate::auth::scope(caller, next.run(req)).await
            }
        }
    };
    log(&method, &uri, &resp, started);
    resp
}

/// One structured log line per request: method, path, status, duration.
/// Server faults at `warn`, the rest at `debug` (`LEVIATHAN_LOG=debug`).
fn log(method: &axum::http::Method, uri: &axum::http::Uri, resp: &Response, started: std::time::Instant) {
    let status = resp.status().as_u16();
    let micros = started.elapsed().as_micros() as u64;
    let path = uri.path();
    if resp.status().is_server_error() {
        tracing::warn!(%method, %path, status, micros, "request");
    } else {
        tracing::debug!(%method, %path, status, micros, "request");
    }
}
