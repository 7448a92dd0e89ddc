//! The media types a GraphQL answer (or error) is written in, and their
//! negotiation from `Accept`; the content codings of answers (gzip, br,
//! zstd), negotiated from `Accept-Encoding`.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use tower_http::compression::predicate::{DefaultPredicate, Predicate, SizeAbove};
use tower_http::compression::CompressionLayer;

/// Answers up to this many bytes go out as they are: smaller ones gain
/// little from a coding and pay its cost.
pub const COMPRESS_ABOVE: u16 = 1024;

/// Compresses answers larger than [`COMPRESS_ABOVE`] with gzip, br or zstd,
/// as the client's `Accept-Encoding` prefers, while they stream out. Never
/// a protocol switch (the websocket upgrades), nor images or event streams.
/// `--max-response-bytes` bounds the answer before its coding.
pub fn compression() -> CompressionLayer<impl Predicate> {
    let not_upgrade = |status: StatusCode, _: axum::http::Version, headers: &HeaderMap, _: &axum::http::Extensions| {
        status != StatusCode::SWITCHING_PROTOCOLS && !headers.contains_key(header::UPGRADE)
    };
    let predicate = DefaultPredicate::new().and(SizeAbove::new(COMPRESS_ABOVE)).and(not_upgrade);
    CompressionLayer::new().gzip(true).br(true).zstd(true).no_deflate().compress_when(predicate)
}

/// Media type of a GraphQL answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    /// `application/graphql-response+json`.
    GraphqlResponse,
    /// `application/json`.
    Json,
}

impl Media {
    /// The `Content-Type` of an answer in this media type.
    pub fn content_type(self) -> HeaderValue {
        match self {
            Media::GraphqlResponse => HeaderValue::from_static("application/graphql-response+json; charset=utf-8"),
            Media::Json => HeaderValue::from_static("application/json; charset=utf-8"),
        }
    }

    /// The media type to answer in, from `Accept` (none: JSON).
    pub fn negotiate(headers: &HeaderMap) -> Option<Media> {
        let mut ranges = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .peekable();
        if ranges.peek().is_none() {
            return Some(Media::Json);
        }
        let mut json = false;
        for r in ranges {
            let mut parts = r.split(';').map(str::trim);
            let essence = parts.next().unwrap_or("").to_ascii_lowercase();
            let refused =
                parts.any(|p| p.strip_prefix("q=").is_some_and(|q| q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)));
            if refused {
                continue;
            }
            match essence.as_str() {
                "application/graphql-response+json" => return Some(Media::GraphqlResponse),
                "application/json" | "application/*" | "*/*" => json = true,
                _ => {}
            }
        }
        json.then_some(Media::Json)
    }
}
