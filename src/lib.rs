//! leviathan: a topology service for container networks.
pub mod auth;
pub mod driver;
pub mod graphql;
pub mod http;
pub mod lock;
pub mod model;
pub mod realize;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod store;
pub mod workload;

/// The version clients see.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
