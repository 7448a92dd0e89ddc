//! What every handler is given: the service, the schema, the tokens and the
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
    /// The tokens (with their roles) requests must carry; `None`: an open
    /// server, every request served as `anonymous`.
    pub token: Option<Arc<crate::auth::Auth>>,
    pub body_limit: usize,
    /// GraphQL-over-HTTP and browser-safety settings.
    pub http: Arc<HttpConfig>,
}
