//! The HTTP server: one router assembled here, state passed explicitly,
//! thin handlers.

use crate::graphql::LeviathanSchema;
use crate::service::Service;
use async_graphql::http::GraphiQLSource;
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Default cap on request bodies.
pub const DEFAULT_BODY_LIMIT: usize = 8 * 1024 * 1024;

/// What the router needs.
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    pub schema: LeviathanSchema,
    pub token: Option<Arc<str>>,
    pub body_limit: usize,
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

/// The router: `/graphql`, `/graphiql`, `/schema.graphql`, `/healthz`, all
/// behind the token check when a token is set.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/graphql", get(graphql_get).post(graphql_post))
        .route("/graphiql", get(graphiql))
        .route("/schema.graphql", get(schema_sdl))
        .route("/healthz", get(healthz))
        .merge(leviathan_rest_compat::router(
            state.schema.clone(),
            leviathan_rest_compat::CompatConfig { body_limit: state.body_limit, ..Default::default() },
        ))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .with_state(state)
}

async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    json_error(StatusCode::NOT_FOUND, "NOT_FOUND", &format!("no route for {method} {}", uri.path()))
}

/// Constant-time token comparison.
pub fn token_matches(expected: &str, given: &str) -> bool {
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

/// Checks `Authorization: Bearer <token>` (or `?token=` for websockets).
async fn auth(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(expected) = state.token.as_deref() else {
        return next.run(req).await;
    };
    let header_token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let query_token =
        req.uri().query().and_then(|q| url_params(q).into_iter().find(|(k, _)| k == "token").map(|(_, v)| v));
    let ok = header_token.is_some_and(|t| token_matches(expected, t))
        || query_token.is_some_and(|t| token_matches(expected, &t));
    if ok {
        next.run(req).await
    } else {
        let mut resp = json_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", "missing or wrong bearer token");
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        resp
    }
}

fn url_params(q: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_default()
}

fn graphql_response(resp: async_graphql::Response) -> Response {
    match serde_json::to_string(&resp) {
        Ok(body) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", &format!("encoding the answer: {e}")),
    }
}

fn bad_request(message: &str) -> Response {
    json_error(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
}

async fn graphql_post(State(state): State<AppState>, body: Body) -> Response {
    let bytes: Bytes = match axum::body::to_bytes(body, state.body_limit).await {
        Ok(b) => b,
        Err(_) => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "BAD_REQUEST",
                &format!("request body over the limit of {} bytes", state.body_limit),
            )
        }
    };
    let request: async_graphql::Request = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => return bad_request(&format!("malformed GraphQL request body: {e}")),
    };
    graphql_response(state.schema.execute(request).await)
}

async fn graphql_get(State(state): State<AppState>, Query(params): Query<HashMap<String, String>>) -> Response {
    let Some(query) = params.get("query") else {
        return bad_request("missing 'query' parameter");
    };
    if let Ok(doc) = async_graphql::parser::parse_query(query) {
        let mutates =
            doc.operations.iter().any(|(_, op)| op.node.ty != async_graphql::parser::types::OperationType::Query);
        if mutates {
            let mut resp =
                json_error(StatusCode::METHOD_NOT_ALLOWED, "BAD_REQUEST", "mutations and subscriptions need POST");
            resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
            return resp;
        }
    }
    let mut request = async_graphql::Request::new(query.clone());
    if let Some(op) = params.get("operationName") {
        request = request.operation_name(op.clone());
    }
    if let Some(vars) = params.get("variables") {
        match serde_json::from_str::<serde_json::Value>(vars) {
            Ok(v) => request = request.variables(async_graphql::Variables::from_json(v)),
            Err(e) => return bad_request(&format!("malformed 'variables' parameter: {e}")),
        }
    }
    graphql_response(state.schema.execute(request).await)
}

async fn graphiql() -> Html<String> {
    Html(GraphiQLSource::build().endpoint("/graphql").subscription_endpoint("/graphql/ws").title("leviathan").finish())
}

async fn schema_sdl(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], state.schema.sdl()).into_response()
}

async fn healthz(State(state): State<AppState>) -> Response {
    let body = json!({"status": "ok", "version": crate::VERSION, "revision": state.service.revision()});
    ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
