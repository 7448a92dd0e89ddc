//! The HTTP side of the server, beside the router assembly (`server.rs`):
//!
//! ```text
//! config.rs   HttpConfig: the `serve` options of the HTTP endpoints
//! state.rs    AppState: what every handler is given
//! error.rs    HttpError: the one error answer (status, ErrorCode, message),
//!             in the shape of its route; `IntoResponse`
//! media.rs    the GraphQL media types and their negotiation
//! front.rs    the one middleware of every request: the request log, the
//!             guard, the token check
//! graphql.rs  GraphQL over HTTP (`/graphql`, GET and POST, batches)
//! ws.rs       the `/graphql/ws` endpoint (upgrade, connection slots)
//! token.rs    the token check on every request
//! guard.rs    browser safety: `Origin` and `Host` checks on every request
//! pages.rs    `/`, `/graphiql`, `/topology`, their assets, the schema, 404s
//! health.rs   `/healthz`, `/metrics`
//! serve.rs    the accept loop: connection limits (the idlest shed for a
//!             new client), TLS handshakes, graceful shutdown
//! tls.rs      HTTPS: the certificate and key, re-read on SIGHUP
//! unix.rs     the local socket (`--unix-socket`): the same router, the
//!             peer authenticated by SO_PEERCRED instead of a token
//! waiting.rs  the answers before the store is open (503), the gate to the
//!             real router
//! ```
//!
//! Arrows: these files import the graphql, service and model rooms, never
//! `server.rs`; files here import one another by their own path (not
//! through this file's re-exports).

pub mod config;
pub mod error;
pub mod front;
pub mod graphql;
pub mod guard;
pub mod health;
pub mod media;
pub mod pages;
pub mod serve;
pub mod state;
pub mod tls;
pub mod token;
pub mod unix;
pub mod waiting;
pub mod ws;

pub use config::HttpConfig;
pub use error::HttpError;
pub use state::{AppState, DEFAULT_BODY_LIMIT};
