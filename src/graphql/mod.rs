//! The GraphQL API over the topology service.

mod limits;
mod monitor;
mod mutation;
mod query;
mod subscription;
mod types;
pub mod ws;

use crate::model::{ErrorCode, ModelError};
use crate::service::{Realization, Service};
use async_graphql::{ErrorExtensions, Schema};
use std::sync::Arc;

pub use limits::{AliasLimit, MAX_ALIASES, MAX_COMPLEXITY, MAX_DEPTH};
pub use mutation::MutationRoot;
pub use query::QueryRoot;
pub use subscription::*;
pub use types::*;

pub type LeviathanSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Builds the schema over a service, with its limits.
pub fn schema(service: Arc<Service>) -> LeviathanSchema {
    schema_with(service, None)
}

/// Builds the schema over a service and, where the kernel is realized, the
/// driver that make/destroy wait for.
pub fn schema_with(service: Arc<Service>, realization: Option<Arc<dyn Realization>>) -> LeviathanSchema {
    let mut b = builder().data(service);
    if let Some(r) = realization {
        b = b.data(r);
    }
    b.finish()
}

fn builder() -> async_graphql::SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .limit_recursive_depth(MAX_DEPTH * 2)
        .limit_directives(8)
        .extension(AliasLimit)
}

/// The SDL of the schema, as checked in at `schema/schema.graphql`.
pub fn sdl() -> String {
    builder().finish().sdl()
}

/// A GraphQL error carrying `extensions.code`.
pub fn error(code: ErrorCode, message: impl Into<String>) -> async_graphql::Error {
    let code = code.as_str();
    async_graphql::Error::new(message.into()).extend_with(|_, e| e.set("code", code))
}

/// A model error as a GraphQL error with its code.
pub(crate) fn gql(e: ModelError) -> async_graphql::Error {
    error(e.code, e.message)
}
