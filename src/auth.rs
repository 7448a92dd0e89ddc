//! Token checks shared by the HTTP routes and the websocket handshakes:
//! the constant-time comparison, and where a request may carry the token
//! (`Authorization: Bearer <token>`, or `?token=` where allowed).
//!
//! Invariant: a token is only ever compared with [`token_matches`], never
//! with `==`, so its comparison takes the same time whatever it holds.

use axum::http::{header, HeaderMap};
use subtle::ConstantTimeEq;

/// Constant-time token comparison.
pub fn token_matches(expected: &str, given: &str) -> bool {
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in
/// any case, RFC 7235).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether a request carries the token in `Authorization: Bearer <token>`
/// or, where `query_allowed` (websocket upgrades and the pages), `?token=`.
pub fn request_has_token(expected: &str, headers: &HeaderMap, query: Option<&str>, query_allowed: bool) -> bool {
    let query_token = query
        .filter(|_| query_allowed)
        .and_then(|q| url_params(q).into_iter().find(|(k, _)| k == "token").map(|(_, v)| v));
    bearer(headers).is_some_and(|t| token_matches(expected, t))
        || query_token.is_some_and(|t| token_matches(expected, &t))
}

fn url_params(q: &str) -> Vec<(String, String)> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(q).unwrap_or_default()
}
