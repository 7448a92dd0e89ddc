//! The one error answer of the HTTP side: [`HttpError`], a status, an
//! [`ErrorCode`] (the same classes the model and GraphQL use) and a message,
//! written in the shape its route speaks:
//!
//! - [`Shape::Legacy`]: `{"status": N, "message": M, "errors": [{"message":
//!   M, "extensions": {"code": C}}]}` as `application/json`, understood by
//!   legacy clients (`status`, `message`) and GraphQL clients (`errors`)
//!   alike: everything outside the GraphQL routes (pages, assets, 404s);
//! - [`Shape::Graphql`]: `{"errors": [...]}` only, in the negotiated GraphQL
//!   media type: the GraphQL routes (`/graphql`, `/graphql/ws`), before
//!   execution.
//!
//! Invariant: no code string is written by hand on the HTTP side; every
//! `extensions.code` comes from [`ErrorCode::as_str`].

use crate::http::media::Media;
use crate::model::ErrorCode;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// The body an [`HttpError`] is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `{status, message, errors}` as `application/json`.
    Legacy,
    /// `{"errors": [...]}` in a GraphQL media type.
    Graphql(Media),
}

/// An error answer: status, code, message, the body's shape and any
/// headers it needs (`Location`, `WWW-Authenticate`, `Allow`, ...).
#[derive(Debug, Clone)]
pub struct HttpError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub shape: Shape,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// The HTTP status a class of failure answers with when nothing more
/// precise is said.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::Gone => StatusCode::GONE,
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::UnknownOutcome => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Whether a path is one of the GraphQL routes, whose errors are
/// `{"errors": [...]}` only.
fn is_graphql_route(path: &str) -> bool {
    path == "/graphql" || path.starts_with("/graphql/")
}

impl HttpError {
    /// An error with the given status, in the legacy shape.
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        HttpError { status, code, message: message.into(), shape: Shape::Legacy, headers: Vec::new() }
    }

    /// An error with its class's own status ([`status_of`]).
    pub fn of(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(status_of(code), code, message)
    }

    /// 400 `BAD_REQUEST`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::of(ErrorCode::BadRequest, message)
    }

    /// 404 `NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::of(ErrorCode::NotFound, message)
    }

    /// Written as `{"errors": [...]}` in `media` (a GraphQL request error).
    pub fn graphql(mut self, media: Media) -> Self {
        self.shape = Shape::Graphql(media);
        self
    }

    /// In the shape of the route: `{"errors": [...]}` (as `application/json`)
    /// only on the GraphQL routes, the legacy shape elsewhere. For answers
    /// given outside a handler (token, origin checks).
    pub fn for_path(self, path: &str) -> Self {
        if is_graphql_route(path) {
            self.graphql(Media::Json)
        } else {
            self
        }
    }

    /// With one more header on the answer.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The GraphQL error object: `{"message": M, "extensions": {"code": C}}`.
    fn error_object(&self) -> Value {
        json!({"message": self.message, "extensions": {"code": self.code.as_str()}})
    }

    /// The GraphQL request-error body, `{"errors": [...]}` (also what a
    /// batch holds for one refused item).
    pub fn errors_body(&self) -> Value {
        json!({"errors": [self.error_object()]})
    }

    /// The legacy body: `status` and `message`, with `errors` beside them.
    fn legacy_body(&self) -> Value {
        json!({
            "status": self.status.as_u16(),
            "message": self.message,
            "errors": [self.error_object()],
        })
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let (content_type, body) = match self.shape {
            Shape::Legacy => (HeaderValue::from_static("application/json"), self.legacy_body()),
            Shape::Graphql(media) => (media.content_type(), self.errors_body()),
        };
        let mut resp = (self.status, body.to_string()).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, content_type);
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(resp: Response) -> (StatusCode, String, Value) {
        let status = resp.status();
        let ct = resp.headers()[header::CONTENT_TYPE].to_str().unwrap().to_string();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, ct, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn legacy_shape_carries_status_message_and_errors() {
        let (status, ct, v) = body(HttpError::not_found("no route").into_response()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(ct, "application/json");
        assert_eq!(v["status"], 404);
        assert_eq!(v["message"], "no route");
        assert_eq!(v["errors"][0]["extensions"]["code"], "NOT_FOUND");
    }

    #[tokio::test]
    async fn graphql_routes_get_errors_only() {
        let e = HttpError::of(ErrorCode::Forbidden, "no").for_path("/graphql");
        let (status, ct, v) = body(e.into_response()).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(ct, "application/json; charset=utf-8");
        assert_eq!(v, json!({"errors": [{"message": "no", "extensions": {"code": "FORBIDDEN"}}]}));
        let e = HttpError::bad_request("x").graphql(Media::GraphqlResponse);
        let (_, ct, _) = body(e.into_response()).await;
        assert_eq!(ct, "application/graphql-response+json; charset=utf-8");
        let e = HttpError::of(ErrorCode::Forbidden, "no").for_path("/graphqlx");
        assert_eq!(e.shape, Shape::Legacy);
    }

    #[test]
    fn headers_are_added() {
        let resp =
            HttpError::bad_request("x").with_header(header::ALLOW, HeaderValue::from_static("GET")).into_response();
        assert_eq!(resp.headers()[header::ALLOW], "GET");
    }
}
