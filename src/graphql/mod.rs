//! The GraphQL API over the topology service.

pub mod access;
pub mod cache;
mod cost;
mod history;
mod limits;
mod monitor;
mod mutation;
mod objects;
mod page;
mod query;
mod runtime;
mod subscription;
mod types;
pub mod ws;

#[cfg(test)]
mod tests;

use crate::model::{ErrorCode, ModelError};
use crate::service::{Realization, Service};
use async_graphql::{ErrorExtensions, Schema, ValidationMode};
use std::sync::Arc;

pub use cache::{Api, Engine, LegacyAnswers, DEFAULT_ANSWER_BYTES, DEFAULT_CACHE_BYTES, PERSISTED_QUERY_NOT_FOUND};
pub use cost::Bounds;
pub use history::{DiffEntry, HistoryEntry, KeptRevisions, TopologyAt};
pub use limits::{
    cap_errors, count_tokens, refused, AliasLimit, ExecutionStarted, Limits, MAX_ALIASES, MAX_COMPLEXITY, MAX_DEPTH,
};
pub use mutation::MutationRoot;
pub use query::QueryRoot;
pub use runtime::ContainerOrigin;
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
    schema_with_limits(service, realization, Limits::default())
}

/// [`schema_with`] under other [`Limits`].
pub fn schema_with_limits(
    service: Arc<Service>,
    realization: Option<Arc<dyn Realization>>,
    limits: Limits,
) -> LeviathanSchema {
    // The schema cached documents run on when their cost is small: the
    // same roots and data, no extension (so no hook per field), and only
    // the validation rules a remembered full validation cannot vouch for.
    let mut fast = roots(&limits).validation_mode(ValidationMode::Fast).data(Arc::clone(&service));
    if let Some(r) = &realization {
        fast = fast.data(Arc::clone(r));
    }
    let engine = Engine::new(fast.finish(), Arc::clone(&service), Arc::new(limits.clone()));
    let mut b = builder(limits).data(service).data(Arc::new(engine));
    if let Some(r) = realization {
        b = b.data(r);
    }
    b.finish()
}

/// Depth and cost are checked by [`AliasLimit`] (whose errors say which
/// limit and by how much), not by the library's own limits. The role check
/// ([`access::Access`]) is outermost, so it sees every document this schema
/// parses (the websockets, direct executions); a document taken from the
/// cache is checked by [`Engine::run`] before it runs.
fn builder(limits: Limits) -> async_graphql::SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    roots(&limits).extension(access::Access).extension(AliasLimit::new(limits))
}

/// The roots with the parser's own limits.
fn roots(limits: &Limits) -> async_graphql::SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    let recursion = (limits.max_depth * 2).max(32);
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot).limit_recursive_depth(recursion).limit_directives(8)
}

/// The SDL of the schema, as checked in at `schema/schema.graphql`.
pub fn sdl() -> String {
    builder(Limits::default()).finish().sdl()
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
