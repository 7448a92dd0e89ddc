//! What every handler is given: the service, the schema, the token and the
//! HTTP settings, passed explicitly as axum state (no globals).

use crate::graphql::LeviathanSchema;
use crate::http::config::HttpConfig;
use crate::service::Service;
use std::sync::Arc;

/// Default cap on request bodies.
pub const DEFAULT_BODY_LIMIT: usize = 8 * 1024 * 1024;

/// What the router needs.
#[derive(Clone)]
pub struct AppState {
    pub service: Arc<Service>,
    pub schema: LeviathanSchema,
    pub token: Option<Arc<str>>,
    pub body_limit: usize,
    /// GraphQL-over-HTTP and browser-safety settings.
    pub http: Arc<HttpConfig>,
}
