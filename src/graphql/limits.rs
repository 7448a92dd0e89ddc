//! Query limits: depth and complexity are the schema's own; aliases are
//! counted here, after parsing and before anything runs.

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextRequest, NextSubscribe,
};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ServerResult, Variables};
use futures_util::stream::{BoxStream, StreamExt};
use std::sync::Arc;

pub const MAX_DEPTH: usize = 16;
pub const MAX_COMPLEXITY: usize = 20_000;
pub const MAX_ALIASES: usize = 64;

/// Refuses documents with more than [`MAX_ALIASES`] aliased fields, and
/// gives every error an `extensions.code`: errors the library raises before
/// execution (syntax, validation, limits) are `BAD_REQUEST`; any other
/// uncoded error is `INTERNAL`.
pub struct AliasLimit;

impl ExtensionFactory for AliasLimit {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(AliasLimitExt)
    }
}

struct AliasLimitExt;

fn count(set: &SelectionSet, depth: usize) -> usize {
    if depth > 64 {
        return 0;
    }
    set.items
        .iter()
        .map(|s| match &s.node {
            Selection::Field(f) => usize::from(f.node.alias.is_some()) + count(&f.node.selection_set.node, depth + 1),
            Selection::InlineFragment(f) => count(&f.node.selection_set.node, depth + 1),
            Selection::FragmentSpread(_) => 0,
        })
        .sum()
}

fn code_errors(mut resp: async_graphql::Response) -> async_graphql::Response {
    for e in &mut resp.errors {
        let coded = e.extensions.as_ref().is_some_and(|x| x.get("code").is_some());
        if !coded {
            let code = if e.path.is_empty() { "BAD_REQUEST" } else { "INTERNAL" };
            e.extensions.get_or_insert_with(Default::default).set("code", code);
        }
    }
    resp
}

#[async_trait::async_trait]
impl Extension for AliasLimitExt {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> async_graphql::Response {
        code_errors(next.run(ctx).await)
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, async_graphql::Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, async_graphql::Response> {
        next.run(ctx, stream).map(code_errors).boxed()
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        let ops: usize = doc.operations.iter().map(|(_, op)| count(&op.node.selection_set.node, 0)).sum();
        let frags: usize = doc.fragments.values().map(|f| count(&f.node.selection_set.node, 0)).sum();
        if ops + frags > MAX_ALIASES {
            let mut e = async_graphql::ServerError::new(
                format!("too many aliases: {} (at most {MAX_ALIASES})", ops + frags),
                None,
            );
            let mut ext = async_graphql::ErrorExtensionValues::default();
            ext.set("code", "BAD_REQUEST");
            e.extensions = Some(ext);
            return Err(e);
        }
        Ok(doc)
    }
}
