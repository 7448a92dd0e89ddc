//! Which role a GraphQL operation needs, and the check that refuses an
//! operation beyond its caller's role before anything of it runs.
//!
//! The rule is one function over the parsed document, [`needed`]: queries
//! and subscriptions need `viewer`; mutations `editor`, except those that
//! reconcile or touch hosts ([`ADMIN_FIELDS`]), which need `admin`. The
//! [`Access`] extension applies it to every request (HTTP, websockets, the
//! legacy routes) right after the document is parsed, so a cache of parsed
//! documents placed inside it is checked on every request too. It is the
//! outermost extension.
//!
//! A refusal is a request error with `extensions.code: FORBIDDEN` naming the
//! role needed; the HTTP route answers it 403, the legacy routes 403, a
//! websocket an `error` message for that operation.

use crate::auth::{Caller, Role};
use crate::model::ErrorCode;
use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextPrepareRequest};
use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::{Request, ServerError, ServerResult, Variables};
use std::sync::Arc;

/// Mutation fields that need `admin`: the repair of the kernel and
/// anything that changes hosts.
pub const ADMIN_FIELDS: &[&str] = &["reconcile", "hostCreate", "hostDelete"];

/// The role `operation_name` (or, without one, every operation) of a
/// parsed document needs. An unknown operation name needs `viewer`: it
/// runs nothing (the request fails on its name).
pub fn needed(doc: &ExecutableDocument, operation_name: Option<&str>) -> Role {
    doc.operations
        .iter()
        .filter(|(n, _)| operation_name.is_none() || n.map(|n| n.as_str()) == operation_name)
        .map(|(_, op)| match op.node.ty {
            OperationType::Query | OperationType::Subscription => Role::Viewer,
            OperationType::Mutation => {
                let mut seen = Vec::new();
                if touches_admin(&op.node.selection_set.node, doc, &mut seen) {
                    Role::Admin
                } else {
                    Role::Editor
                }
            }
        })
        .max()
        .unwrap_or(Role::Viewer)
}

/// Whether a mutation's top-level selection (through fragments) names an
/// admin field. `seen` keeps a fragment from being followed twice (a cycle
/// is refused by validation later; here it must only end).
fn touches_admin<'a>(set: &'a SelectionSet, doc: &'a ExecutableDocument, seen: &mut Vec<&'a str>) -> bool {
    set.items.iter().any(|sel| match &sel.node {
        Selection::Field(f) => ADMIN_FIELDS.contains(&f.node.name.node.as_str()),
        Selection::InlineFragment(i) => touches_admin(&i.node.selection_set.node, doc, seen),
        Selection::FragmentSpread(s) => {
            let name = s.node.fragment_name.node.as_str();
            if seen.contains(&name) {
                return false;
            }
            seen.push(name);
            doc.fragments
                .get(&s.node.fragment_name.node)
                .is_some_and(|f| touches_admin(&f.node.selection_set.node, doc, seen))
        }
    })
}

/// The caller of the operation being run: given as request data (the
/// websockets), else that of the request's task (HTTP, legacy routes),
/// else `anonymous` (the schema used directly, without a transport).
pub fn caller_of(data: Option<&Caller>) -> Caller {
    data.cloned().or_else(crate::auth::current).unwrap_or_else(Caller::anonymous)
}

/// The 403 error of an operation beyond its caller's role.
pub fn forbidden(caller: &Caller, needed: Role) -> ServerError {
    let mut e = ServerError::new(
        format!(
            "forbidden: this operation needs the {needed} role; '{}' is a {} (a token with the {needed} role can)",
            caller.actor, caller.role
        ),
        None,
    );
    let mut ext = async_graphql::ErrorExtensionValues::default();
    ext.set("code", ErrorCode::Forbidden.as_str());
    ext.set("role", needed.as_str());
    e.extensions = Some(ext);
    e
}

/// The extension that applies [`needed`] to every request.
pub struct Access;

impl ExtensionFactory for Access {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Check { operation_name: parking_lot::Mutex::new(None) })
    }
}

struct Check {
    operation_name: parking_lot::Mutex<Option<String>>,
}

#[async_trait::async_trait]
impl Extension for Check {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        self.operation_name.lock().clone_from(&request.operation_name);
        next.run(ctx, request).await
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await?;
        let caller = caller_of(ctx.data_opt::<Caller>());
        let name = self.operation_name.lock().clone();
        let role = needed(&doc, name.as_deref());
        if caller.may(role) {
            Ok(doc)
        } else {
            Err(forbidden(&caller, role))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role(q: &str, op: Option<&str>) -> Role {
        needed(&async_graphql::parser::parse_query(q).expect("parses"), op)
    }

    #[test]
    fn the_operation_kind_and_its_fields_decide() {
        assert_eq!(role("{ cens { id } }", None), Role::Viewer);
        assert_eq!(role("subscription { changes { revision } }", None), Role::Viewer);
        assert_eq!(role("mutation { cenDestroy(input: {ids: [\"a\"]}) { revision } }", None), Role::Editor);
        assert_eq!(role("mutation { reconcile(input: {}) { done } }", None), Role::Admin);
        assert_eq!(role("mutation { x: hostDelete(input: {id: \"h\"}) { revision } }", None), Role::Admin);
        // Through fragments, inline or named (even a cycle ends).
        assert_eq!(role("mutation { ... on Mutation { reconcile(input: {}) { done } } }", None), Role::Admin);
        let q = "mutation { ...F } fragment F on Mutation { ...G } fragment G on Mutation { ...F hostCreate(input: {id: \"h\"}) { revision } }";
        assert_eq!(role(q, None), Role::Admin);
        // The named operation only; without a name, the most any needs.
        let two = "query Q { cens { id } } mutation M { reconcile(input: {}) { done } }";
        assert_eq!(role(two, Some("Q")), Role::Viewer);
        assert_eq!(role(two, Some("M")), Role::Admin);
        assert_eq!(role(two, None), Role::Admin);
        assert_eq!(role(two, Some("Nope")), Role::Viewer);
    }
}
