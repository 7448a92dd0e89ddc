//! The legacy Leviathan REST routes and the `/leviathan/monitor` websocket
//! (`docs/legacy-api.md`), as translations to GraphQL operations.
//!
//! Every route turns its request into one GraphQL operation with variables,
//! runs it on an [`async_graphql::Executor`], and shapes the answer into the
//! legacy status and body. This crate knows nothing of the service behind
//! the executor: a legacy request and a GraphQL request reach the same
//! resolvers.
//!
//! ```text
//! routes.rs    the route table and the thin handlers (method dispatch, 405)
//! ops.rs       every GraphQL document this crate sends, and the shaping of
//!              their answers into legacy bodies
//! body.rs      reading bodies (limit, JSON whatever the content type) and
//!              checking their shape, naming the offending field
//! error.rs     the legacy error body, the one parse of GraphQL codes and
//!              their mapping to statuses
//! ids.rs       the id rule (1-64 of A-Z a-z 0-9 _ . -, no leading . or -)
//! monitor/     the monitor websocket; `monitor/subscription.rs` holds the
//!              `cinMonitor` document and its field mapping
//! ```

mod body;
mod error;
mod ids;
pub mod intake;
pub mod monitor;
mod ops;
mod routes;

use async_graphql::Executor;
use axum::Router;
use std::sync::Arc;
use std::time::Duration;

pub use body::kind;
pub use error::CompatError;
pub use ids::check_id;

/// Settings of the compat layer.
#[derive(Debug, Clone)]
pub struct CompatConfig {
    /// Largest request body accepted, in bytes (413 above it).
    pub body_limit: usize,
    /// How long a monitor `start` waits for the subscription's initial state.
    pub monitor_start_timeout: Duration,
    /// Largest websocket message accepted by the monitor, in bytes (the
    /// server passes its `--ws-max-message`); a larger one closes with 1009.
    pub monitor_max_message: usize,
    /// Most monitors one connection may hold at once.
    pub max_monitors: usize,
    /// Time the peer has to take one message before it is dropped.
    pub monitor_send_timeout: Duration,
    /// Most monitor connections at once; more are answered 503.
    pub monitor_max_connections: usize,
    /// Becomes `true` when the server shuts down: monitors close with 1001.
    pub shutdown: Option<tokio::sync::watch::Receiver<bool>>,
    /// Body timeout, list-item limit and the budget of large bodies (shared
    /// with the server's `/graphql`).
    pub intake: intake::Intake,
    /// Where the final bodies of the reads (`GET /cen/{id}`,
    /// `GET /host/{h}/{c}`, `GET /version`) are kept; `None`: every read runs.
    pub answers: Option<Arc<dyn Answers>>,
}

/// A cache of the final legacy bodies of the reads, kept by whoever runs
/// their operations (it knows when an answer may be kept and until when).
pub trait Answers: Send + Sync + std::fmt::Debug {
    /// The body kept for this read, or where to keep the one about to be
    /// made. Called in the request's task, after its token check.
    fn lookup(&self, query: &'static str, variables: &serde_json::Value) -> Cached;
    /// Keeps the body of a read that succeeded.
    fn keep(&self, ticket: Ticket, body: axum::body::Bytes);
}

/// What [`Answers::lookup`] found.
#[derive(Debug)]
pub enum Cached {
    /// The body (JSON), as first made.
    Hit(axum::body::Bytes),
    /// None yet: keep the body made with this ticket.
    Miss(Ticket),
    /// Not kept: run the read, keep nothing.
    Skip,
}

/// Where to keep a body: its key and the revision it is computed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub key: [u8; 32],
    pub revision: u64,
}

impl Default for CompatConfig {
    fn default() -> Self {
        CompatConfig {
            body_limit: 8 * 1024 * 1024,
            monitor_start_timeout: Duration::from_secs(10),
            monitor_max_message: 256 * 1024,
            max_monitors: 100,
            monitor_send_timeout: Duration::from_secs(10),
            monitor_max_connections: 10_000,
            shutdown: None,
            intake: intake::Intake::default(),
            answers: None,
        }
    }
}

/// What every handler holds: the executor and the settings.
#[derive(Clone)]
pub(crate) struct Compat<E> {
    pub executor: E,
    pub cfg: Arc<CompatConfig>,
    /// Monitor connection slots.
    pub monitor_slots: Arc<tokio::sync::Semaphore>,
}

/// The legacy router: every route of the spec's table and the monitor
/// websocket. It carries its own state, so it merges into a router of any
/// state type `S` (the binary merges it beside `/graphql`, under its token
/// check). It sets no fallback: unknown paths are the outer router's.
pub fn router<E, S>(executor: E, cfg: CompatConfig) -> Router<S>
where
    E: Executor,
    S: Clone + Send + Sync + 'static,
{
    let monitor_slots = Arc::new(tokio::sync::Semaphore::new(cfg.monitor_max_connections));
    routes::routes::<E>().with_state(Compat { executor, cfg: Arc::new(cfg), monitor_slots })
}

/// Every route of the legacy table as (method, path pattern), for tests and
/// documentation; the router answers each of them.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/cen/import"),
    ("POST", "/cen/make"),
    ("POST", "/cen/destroy"),
    ("POST", "/cin/import"),
    ("POST", "/cin/make"),
    ("POST", "/cin/destroy"),
    ("POST", "/cpool"),
    ("PUT", "/cen/{cenId}"),
    ("GET", "/cen/{cenId}"),
    ("DELETE", "/cen/{cenId}"),
    ("PUT", "/host/{hostId}/{containerId}/{cenId}"),
    ("DELETE", "/host/{hostId}/{containerId}/{cenId}"),
    ("GET", "/host/{hostId}/{containerId}"),
    ("PUT", "/host/{hostId}/{containerId}"),
    ("DELETE", "/host/{hostId}/{containerId}"),
    ("GET", "/version"),
];

/// The monitor websocket's path.
pub const MONITOR_PATH: &str = "/leviathan/monitor";
