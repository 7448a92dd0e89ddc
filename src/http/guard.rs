//! Browser safety, on every request before the token check: a request
//! whose `Origin` is neither the server's own nor one given with
//! `--cors-origin` is refused (403), so no web page can drive the API
//! through a visitor's browser; and, when listening on loopback, a `Host`
//! that does not name loopback (or a name given with `--allowed-host`) is
//! refused (403), so DNS rebinding cannot reach it. Requests without
//! `Origin` (curl, scripts) are unaffected. Over HTTP/2, which sends no
//! `Host`, the request's `:authority` is checked in its place.

use crate::http::config::HttpConfig;
use crate::http::error::HttpError;
use crate::model::ErrorCode;
use axum::extract::Request;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};

/// The host part of a `Host` value (no port, no brackets), lowercase.
fn host_name(host: &str) -> String {
    let h = host.trim();
    let name = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        h.rsplit_once(':').filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit())).map_or(h, |(n, _)| n)
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

fn is_loopback_name(name: &str) -> bool {
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host a request names: its `Host` header, or (HTTP/2, which sends
/// none) its `:authority`.
fn named_host<'a>(headers: &'a HeaderMap, authority: Option<&'a str>) -> Option<Result<&'a str, String>> {
    match headers.get(header::HOST) {
        Some(h) => Some(h.to_str().map_err(|_| "the Host header is not text".to_string())),
        None => authority.map(Ok),
    }
}

/// Whether `Host` is acceptable.
pub fn host_allowed(headers: &HeaderMap, loopback: bool, allowed: &[String]) -> Result<(), String> {
    host_allowed_at(headers, None, loopback, allowed)
}

/// [`host_allowed`], with the request's `:authority` standing in for a
/// missing `Host` (HTTP/2).
pub fn host_allowed_at(
    headers: &HeaderMap,
    authority: Option<&str>,
    loopback: bool,
    allowed: &[String],
) -> Result<(), String> {
    if !loopback {
        return Ok(());
    }
    let Some(host) = named_host(headers, authority) else { return Ok(()) };
    let host = host?;
    let name = host_name(host);
    if is_loopback_name(&name) || allowed.iter().any(|a| host_name(a) == name) {
        Ok(())
    } else {
        Err(format!(
            "Host '{}' does not name this server: it listens on loopback and answers only to localhost, \
             127.0.0.1 and [::1] (add a name with --allowed-host)",
            host.escape_debug()
        ))
    }
}

/// Whether `Origin` (if any) is the server's own or a configured one.
pub fn origin_allowed(headers: &HeaderMap, cors: &[String]) -> Result<(), String> {
    origin_allowed_at(headers, None, cors)
}

/// [`origin_allowed`], with the request's `:authority` standing in for a
/// missing `Host` (HTTP/2).
pub fn origin_allowed_at(headers: &HeaderMap, authority: Option<&str>, cors: &[String]) -> Result<(), String> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().unwrap_or("").trim().trim_end_matches('/').to_ascii_lowercase();
    let own = named_host(headers, authority).and_then(Result::ok).map(|h| h.trim().to_ascii_lowercase());
    let same = own.is_some_and(|h| origin == format!("http://{h}") || origin == format!("https://{h}"));
    let configured = cors.iter().any(|c| c.trim().trim_end_matches('/').eq_ignore_ascii_case(&origin));
    if same || configured {
        Ok(())
    } else {
        Err(format!(
            "cross-origin request from '{}' refused: only this server's own pages and origins given with \
             --cors-origin may call it",
            origin.escape_debug()
        ))
    }
}

/// The 403 answer to a request `Host` or `Origin` refuses, `None` when it
/// may go on. Also used before the store is open (`http::waiting`).
pub fn refusal(cfg: &HttpConfig, req: &Request) -> Option<Response> {
    let authority = req.uri().authority().map(|a| a.as_str());
    let verdict = host_allowed_at(req.headers(), authority, cfg.loopback, &cfg.allowed_hosts)
        .and_then(|()| origin_allowed_at(req.headers(), authority, &cfg.cors_origins));
    verdict.err().map(|message| HttpError::of(ErrorCode::Forbidden, message).for_path(req.uri().path()).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn hosts() {
        for ok in ["localhost:8080", "127.0.0.1:1", "[::1]:80", "LOCALHOST", "127.0.0.1"] {
            assert!(host_allowed(&headers(&[("host", ok)]), true, &[]).is_ok(), "{ok}");
        }
        assert!(host_allowed(&headers(&[("host", "evil.example:8080")]), true, &[]).is_err());
        assert!(host_allowed(&headers(&[("host", "box.lan:8080")]), true, &["box.lan".into()]).is_ok());
        assert!(host_allowed(&headers(&[("host", "evil.example")]), false, &[]).is_ok());
    }

    #[test]
    fn origins() {
        let h = headers(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080")]);
        assert!(origin_allowed(&h, &[]).is_ok());
        let h = headers(&[("host", "127.0.0.1:8080"), ("origin", "http://evil.example")]);
        assert!(origin_allowed(&h, &[]).is_err());
        assert!(origin_allowed(&h, &["http://evil.example".into()]).is_ok());
        let h = headers(&[("host", "127.0.0.1:8080"), ("origin", "null")]);
        assert!(origin_allowed(&h, &[]).is_err());
        assert!(origin_allowed(&headers(&[("host", "x")]), &[]).is_ok());
    }

    /// HTTP/2 sends no `Host`: its `:authority` is checked instead.
    #[test]
    fn the_authority_stands_in_for_host() {
        let h = headers(&[("origin", "https://127.0.0.1:8443")]);
        assert!(origin_allowed_at(&h, Some("127.0.0.1:8443"), &[]).is_ok());
        assert!(origin_allowed_at(&h, Some("evil.example:8443"), &[]).is_err());
        assert!(host_allowed_at(&HeaderMap::new(), Some("evil.example:8443"), true, &[]).is_err());
        assert!(host_allowed_at(&HeaderMap::new(), Some("localhost:8443"), true, &[]).is_ok());
    }
}
