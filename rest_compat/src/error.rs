//! The legacy error body, `{"status": N, "message": "..."}`, and the mapping
//! of GraphQL `extensions.code` to HTTP statuses.
//!
//! This crate does not depend on the server's, so it reads the code strings
//! itself: [`GraphqlCode::from_code`] is the one place they are parsed.

use async_graphql::{ServerError, Value};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::fmt;

/// An error as legacy clients see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompatError {
    pub status: StatusCode,
    pub message: String,
    /// The methods a path takes, sent as `Allow` with a 405.
    pub allow: Option<&'static str>,
}

impl CompatError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        CompatError { status, message: message.into(), allow: None }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
    pub fn method_not_allowed(method: &str, path: &str, allow: &'static str) -> Self {
        CompatError {
            status: StatusCode::METHOD_NOT_ALLOWED,
            message: format!("{path} does not take {method} (it takes {allow})"),
            allow: Some(allow),
        }
    }
    pub fn too_large(limit: usize) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body over the limit of {limit} bytes"))
    }

    /// The error of a GraphQL answer: the first error's `extensions.code`
    /// decides the status; an uncoded error is an internal fault.
    pub fn from_graphql(errors: &[ServerError]) -> Self {
        let Some(first) = errors.first() else {
            return Self::internal("the GraphQL answer had no data and no error");
        };
        let code = first.extensions.as_ref().and_then(|x| x.get("code")).and_then(|v| match v {
            Value::String(s) => Some(s.as_str()),
            Value::Enum(n) => Some(n.as_str()),
            _ => None,
        });
        Self::new(status_of_code(code), first.message.clone())
    }
}

/// The classes of failure a GraphQL answer names in `extensions.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphqlCode {
    BadRequest,
    NotFound,
    Conflict,
    Unauthenticated,
    Forbidden,
    Gone,
    Unavailable,
    /// The shared store could not be asked whether a change committed.
    UnknownOutcome,
    Internal,
}

impl GraphqlCode {
    /// The class of an `extensions.code` string; `None` for one unknown.
    pub fn from_code(code: &str) -> Option<GraphqlCode> {
        Some(match code {
            "BAD_REQUEST" => GraphqlCode::BadRequest,
            "NOT_FOUND" => GraphqlCode::NotFound,
            "CONFLICT" => GraphqlCode::Conflict,
            "UNAUTHENTICATED" => GraphqlCode::Unauthenticated,
            "FORBIDDEN" => GraphqlCode::Forbidden,
            "GONE" => GraphqlCode::Gone,
            "UNAVAILABLE" => GraphqlCode::Unavailable,
            "UNKNOWN_OUTCOME" => GraphqlCode::UnknownOutcome,
            "INTERNAL" => GraphqlCode::Internal,
            _ => return None,
        })
    }

    /// The legacy status of this class. The legacy routes have no
    /// resumable reads, so `GONE` stands for an internal fault there.
    pub fn status(self) -> StatusCode {
        match self {
            GraphqlCode::BadRequest => StatusCode::BAD_REQUEST,
            GraphqlCode::NotFound => StatusCode::NOT_FOUND,
            GraphqlCode::Conflict => StatusCode::CONFLICT,
            GraphqlCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            GraphqlCode::Forbidden => StatusCode::FORBIDDEN,
            GraphqlCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            GraphqlCode::UnknownOutcome => StatusCode::GATEWAY_TIMEOUT,
            GraphqlCode::Gone | GraphqlCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// BAD_REQUEST 400, NOT_FOUND 404, CONFLICT 409, UNAUTHENTICATED 401,
/// FORBIDDEN 403, UNAVAILABLE 503 (the shared store cannot be reached),
/// UNKNOWN_OUTCOME 504 (it could not be asked whether a change committed),
/// anything else (INTERNAL, GONE, an unknown code, or no code) 500.
pub fn status_of_code(code: Option<&str>) -> StatusCode {
    code.and_then(GraphqlCode::from_code).map_or(StatusCode::INTERNAL_SERVER_ERROR, GraphqlCode::status)
}

impl fmt::Display for CompatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for CompatError {}

impl IntoResponse for CompatError {
    fn into_response(self) -> Response {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            status: u16,
            message: &'a str,
        }
        let body = serde_json::to_string(&Body { status: self.status.as_u16(), message: &self.message })
            .unwrap_or_else(|_| format!("{{\"status\":{},\"message\":\"\"}}", self.status.as_u16()));
        let mut resp =
            (self.status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response();
        if let Some(allow) = self.allow {
            resp.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        // A body that did not arrive in time was not read: the connection
        // cannot be reused.
        if self.status == StatusCode::REQUEST_TIMEOUT {
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_statuses() {
        assert_eq!(status_of_code(Some("BAD_REQUEST")), StatusCode::BAD_REQUEST);
        assert_eq!(status_of_code(Some("NOT_FOUND")), StatusCode::NOT_FOUND);
        assert_eq!(status_of_code(Some("CONFLICT")), StatusCode::CONFLICT);
        assert_eq!(status_of_code(Some("UNAUTHENTICATED")), StatusCode::UNAUTHORIZED);
        assert_eq!(status_of_code(Some("INTERNAL")), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status_of_code(None), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status_of_code(Some("FORBIDDEN")), StatusCode::FORBIDDEN);
        assert_eq!(status_of_code(Some("GONE")), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status_of_code(Some("SOMETHING")), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn coded_graphql_error() {
        let mut e = ServerError::new("no CEN 'x'", None);
        let mut ext = async_graphql::ErrorExtensionValues::default();
        ext.set("code", "NOT_FOUND");
        e.extensions = Some(ext);
        let c = CompatError::from_graphql(&[e]);
        assert_eq!(c.status, StatusCode::NOT_FOUND);
        assert_eq!(c.message, "no CEN 'x'");
    }
}
