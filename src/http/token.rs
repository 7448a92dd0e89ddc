//! The token check on every request, and the role each route needs.
//!
//! When the server has tokens, a request carries one in
//! `Authorization: Bearer <token>`, or `?token=` on the pages and websocket
//! upgrades; it is then served as that token's [`Caller`]. The pages'
//! assets are public library code and pass; a websocket upgrade to
//! `/graphql/ws` passes too, because its token is checked at
//! `connection_init`, where the protocol can say no with its own code. A
//! page without a token gets a page saying how to give it; any other route
//! a 401 `UNAUTHENTICATED` in its own shape. Without tokens every request
//! is served as [`Caller::anonymous`].
//!
//! Routes and roles: `/metrics` needs `admin`; `/graphql` and
//! `/graphql/ws` `viewer` here (the document decides the rest, see
//! `graphql::access`); the pages, `/schema.graphql`, `/healthz` and the
//! legacy `GET` routes (the monitor websocket among them) `viewer`; any
//! other legacy method `editor`. Beyond its role a request gets 403
//! `FORBIDDEN` naming the role it needs, before anything runs.
//!
//! The caller is inserted as an axum request extension (`Extension<Caller>`)
//! and the rest of the request runs inside [`crate::auth::scope`]. A
//! transport that knows its peer itself (a local socket) inserts the
//! `Caller` extension before the router: this check then takes it as is.

use crate::auth::{Auth, Caller, Role};
use crate::http::error::HttpError;
use crate::http::pages::{is_page, is_public_asset};
use crate::http::ws::GRAPHQL_WS_PATH;
use crate::model::ErrorCode;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method};
use axum::response::{Html, IntoResponse, Response};

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The role a route needs (GraphQL documents are checked again by kind).
pub fn route_role(method: &Method, path: &str) -> Role {
    let reads = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if path == "/metrics" {
        Role::Admin
    } else if reads || path == "/graphql" || path == GRAPHQL_WS_PATH || is_page(path) || path == "/healthz" {
        Role::Viewer
    } else {
        Role::Editor
    }
}

/// The caller a request is served as, or the answer refusing it. Also
/// used before the store is open (`http::waiting`).
pub fn admit(auth: Option<&Auth>, req: &Request) -> Result<Caller, Box<Response>> {
    if let Some(c) = req.extensions().get::<Caller>() {
        return Ok(c.clone());
    }
    let Some(auth) = auth else { return Ok(Caller::anonymous()) };
    let path = req.uri().path();
    let upgrade = is_websocket_upgrade(req.headers());
    let caller = auth.request_caller(req.headers(), req.uri().query(), upgrade || is_page(path));
    let Some(caller) = caller else {
        if is_public_asset(path) || (path == GRAPHQL_WS_PATH && upgrade) {
            // Served as nobody: an asset needs no token, and the
            // websocket's `connection_init` gives its own.
            return Ok(Caller { role: Role::Viewer, actor: crate::auth::ANONYMOUS_ACTOR.into() });
        }
        return Err(Box::new(unauthenticated(path)));
    };
    let needed = route_role(req.method(), path);
    if caller.may(needed) {
        Ok(caller)
    } else {
        let message = format!(
            "forbidden: {} {path} needs the {needed} role; the token '{}' is a {}'s",
            req.method(),
            caller.actor,
            caller.role
        );
        Err(Box::new(HttpError::of(ErrorCode::Forbidden, message).for_path(path).into_response()))
    }
}

/// The answer to a request that lacks a token (if tokens are set), `None`
/// when it may go on.
pub fn refusal(auth: Option<&Auth>, req: &Request) -> Option<Response> {
    admit(auth, req).err().map(|r| *r)
}

fn unauthenticated(path: &str) -> Response {
    let mut resp = if is_page(path) {
        let page = format!(
            "<!doctype html><title>leviathan: token needed</title><p>This server needs a token. Open \
             <code>{path}?token=YOUR_TOKEN</code> (a token given to <code>leviathan serve --token</code> or \
             listed in its <code>--tokens</code> file).</p>"
        );
        (axum::http::StatusCode::UNAUTHORIZED, Html(page)).into_response()
    } else {
        HttpError::of(ErrorCode::Unauthenticated, "missing or wrong bearer token: send 'Authorization: Bearer <token>'")
            .for_path(path)
            .into_response()
    };
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_their_roles() {
        assert_eq!(route_role(&Method::GET, "/metrics"), Role::Admin);
        assert_eq!(route_role(&Method::POST, "/graphql"), Role::Viewer);
        assert_eq!(route_role(&Method::GET, "/topology"), Role::Viewer);
        assert_eq!(route_role(&Method::GET, "/cen/c1"), Role::Viewer);
        assert_eq!(route_role(&Method::POST, "/cen/import"), Role::Editor);
        assert_eq!(route_role(&Method::DELETE, "/cen/c1"), Role::Editor);
        assert_eq!(route_role(&Method::PUT, "/host/h/c"), Role::Editor);
    }
}
