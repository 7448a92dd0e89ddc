//! Limits on what one GraphQL document may ask for, checked before anything
//! runs, and on what one request may take while it runs.
//!
//! In the order they are checked: the document's size and token count
//! (before parsing), aliases and the size of the document once its
//! fragments are inlined (after parsing), depth and cost (after validation,
//! with list sizes seen: `cost.rs`), the deadline of a query (while it
//! runs); and at most [`Limits::max_errors`] errors in any answer. Every
//! error gets an `extensions.code`: errors raised before execution are
//! `BAD_REQUEST`; any other uncoded error is `INTERNAL`.

use super::cache::Slot;
use super::cost::{self, Bounds};
use crate::model::ErrorCode;
use crate::service::Service;
use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextPrepareRequest, NextRequest,
    NextResolve, NextSubscribe, NextValidation, ResolveInfo,
};
use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::{Name, Request, ServerError, ServerResult, ValidationResult, Variables};
use futures_util::stream::{BoxStream, Stream, StreamExt};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

pub const MAX_DEPTH: usize = 16;
pub const MAX_COMPLEXITY: usize = 500_000;
pub const MAX_ALIASES: usize = 64;

/// The limits, all configurable (`leviathan serve --help`).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest document, in bytes.
    pub max_document_bytes: usize,
    /// Most tokens in a document (names, punctuators, values).
    pub max_tokens: usize,
    /// Deepest selection.
    pub max_depth: usize,
    /// Highest cost: fields, with lists counted at their size.
    pub max_cost: usize,
    /// Most aliased fields.
    pub max_aliases: usize,
    /// Most field selections once fragments are inlined.
    pub max_selections: usize,
    /// Most errors in one answer; the rest are summarized in one more.
    pub max_errors: usize,
    /// Longest a query (not a mutation, whose change is atomic, nor a
    /// subscription) may run.
    pub deadline: Duration,
    /// Bytes of parsed documents kept by the document cache.
    pub document_cache_bytes: usize,
    /// Bytes of serialized answers kept by the answer cache (0: none).
    pub answer_cache_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_document_bytes: 256 * 1024,
            max_tokens: 20_000,
            max_depth: MAX_DEPTH,
            max_cost: MAX_COMPLEXITY,
            max_aliases: MAX_ALIASES,
            max_selections: 100_000,
            max_errors: 100,
            deadline: Duration::from_secs(10),
            document_cache_bytes: super::cache::DEFAULT_CACHE_BYTES,
            answer_cache_bytes: super::cache::DEFAULT_ANSWER_BYTES,
        }
    }
}

/// The extension enforcing [`Limits`] (it keeps its historical name).
pub struct AliasLimit {
    limits: Arc<Limits>,
}

impl AliasLimit {
    pub fn new(limits: Limits) -> Self {
        AliasLimit { limits: Arc::new(limits) }
    }
}

impl Default for AliasLimit {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl ExtensionFactory for AliasLimit {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Guard {
            limits: Arc::clone(&self.limits),
            operation_name: Mutex::new(None),
            op_type: Mutex::new(None),
        })
    }
}

/// One request's guard.
struct Guard {
    limits: Arc<Limits>,
    operation_name: Mutex<Option<String>>,
    op_type: Mutex<Option<OperationType>>,
}

/// Put in a request's data by the HTTP handler: set once execution starts,
/// so that errors raised before it (syntax, validation, limits) can be told
/// from errors raised while running.
#[derive(Clone, Default)]
pub struct ExecutionStarted(pub Arc<std::sync::atomic::AtomicBool>);

impl ExecutionStarted {
    pub fn get(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A `BAD_REQUEST` error raised before execution.
pub fn refused(message: impl Into<String>) -> ServerError {
    let mut e = ServerError::new(message, None);
    let mut ext = async_graphql::ErrorExtensionValues::default();
    ext.set("code", ErrorCode::BadRequest.as_str());
    e.extensions = Some(ext);
    e
}

impl Guard {
    /// The topology's list bounds: kept by the model as records change, so
    /// reading them is a few lookups under the read lock.
    fn bounds(&self, ctx: &ExtensionContext<'_>) -> Option<Bounds> {
        let service = ctx.data_opt::<Arc<Service>>()?;
        Some(service.read(Bounds::of))
    }

    fn code_and_cap(&self, mut resp: async_graphql::Response) -> async_graphql::Response {
        cap_errors(&mut resp.errors, self.limits.max_errors);
        code_errors(&mut resp.errors);
        resp
    }
}

/// Gives every uncoded error its `extensions.code`: `BAD_REQUEST` for
/// errors raised before execution and for arguments that do not fit their
/// type (async-graphql checks some of those, such as an `Int` over 32 bits
/// inside an input object, only when the resolver reads its argument, and
/// then reports them with a path and no code); `INTERNAL` for the rest.
pub(crate) fn code_errors(errors: &mut [ServerError]) {
    for e in errors {
        let coded = e.extensions.as_ref().is_some_and(|x| x.get("code").is_some());
        if !coded {
            let input = e.message.starts_with("Failed to parse \"") || e.message.starts_with("Expected input type \"");
            let code = if e.path.is_empty() || input { ErrorCode::BadRequest } else { ErrorCode::Internal };
            e.extensions.get_or_insert_with(Default::default).set("code", code.as_str());
        }
    }
}

/// The error of a query stopped at its deadline.
pub fn over_deadline(deadline: Duration) -> ServerError {
    refused(format!(
        "the query ran over its deadline of {} ms (--request-timeout) and was stopped; ask for less, e.g. page \
         with `first:`",
        deadline.as_millis()
    ))
}

/// Keeps at most `max` errors: the first `max - 1` and one that counts the
/// rest.
pub fn cap_errors(errors: &mut Vec<ServerError>, max: usize) {
    let max = max.max(1);
    if errors.len() > max {
        let dropped = errors.len() - (max - 1);
        errors.truncate(max - 1);
        errors.push(refused(format!("{dropped} more errors not shown (at most {max} errors in one answer)")));
    }
}

fn aliases(set: &SelectionSet, depth: usize) -> usize {
    if depth > 64 {
        return 0;
    }
    set.items
        .iter()
        .map(|s| match &s.node {
            Selection::Field(f) => usize::from(f.node.alias.is_some()) + aliases(&f.node.selection_set.node, depth + 1),
            Selection::InlineFragment(f) => aliases(&f.node.selection_set.node, depth + 1),
            Selection::FragmentSpread(_) => 0,
        })
        .sum()
}

/// Field selections of a set with its fragments inlined (saturating; a
/// fragment cycle, refused by validation later, counts as huge).
fn selections(
    set: &SelectionSet,
    doc: &ExecutableDocument,
    memo: &mut HashMap<Name, usize>,
    stack: &mut Vec<Name>,
) -> usize {
    let mut n = 0usize;
    for s in &set.items {
        let add = match &s.node {
            Selection::Field(f) => 1usize.saturating_add(selections(&f.node.selection_set.node, doc, memo, stack)),
            Selection::InlineFragment(f) => selections(&f.node.selection_set.node, doc, memo, stack),
            Selection::FragmentSpread(sp) => {
                let name = &sp.node.fragment_name.node;
                if let Some(v) = memo.get(name) {
                    *v
                } else if stack.contains(name) || stack.len() > 256 {
                    usize::MAX
                } else if let Some(frag) = doc.fragments.get(name) {
                    stack.push(name.clone());
                    let v = selections(&frag.node.selection_set.node, doc, memo, stack);
                    stack.pop();
                    memo.insert(name.clone(), v);
                    v
                } else {
                    0
                }
            }
        };
        n = n.saturating_add(add);
    }
    n
}

/// Counts the lexical tokens of a document, stopping past `max`: names,
/// numbers, strings and punctuators (`...` is one); whitespace, commas and
/// comments are not tokens.
pub fn count_tokens(doc: &str, max: usize) -> usize {
    let b = doc.as_bytes();
    let (mut i, mut n) = (0usize, 0usize);
    while i < b.len() && n <= max {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => i += 1,
            0xEF if b[i..].starts_with(&[0xEF, 0xBB, 0xBF]) => i += 3,
            b'#' => {
                while i < b.len() && b[i] != b'\n' && b[i] != b'\r' {
                    i += 1;
                }
            }
            b'"' => {
                n += 1;
                if b[i..].starts_with(b"\"\"\"") {
                    i += 3;
                    while i < b.len() && !b[i..].starts_with(b"\"\"\"") {
                        i += if b[i..].starts_with(b"\\\"\"\"") { 4 } else { 1 };
                    }
                    i += 3;
                } else {
                    i += 1;
                    while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                        i += if b[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
            }
            b'.' if b[i..].starts_with(b"...") => {
                n += 1;
                i += 3;
            }
            c if c == b'_' || c == b'-' || c.is_ascii_alphanumeric() => {
                n += 1;
                i += 1;
                while i < b.len() && (b[i] == b'_' || b[i] == b'.' || b[i] == b'+' || b[i].is_ascii_alphanumeric()) {
                    i += 1;
                }
            }
            _ => {
                n += 1;
                i += 1;
            }
        }
    }
    n
}

/// Polls a stream with the topology's bounds visible to the cost functions
/// (a subscription is validated on its first poll).
struct Scoped<S> {
    bounds: Option<Bounds>,
    inner: S,
}

impl<S: Stream + Unpin> Stream for Scoped<S> {
    type Item = S::Item;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        match self.bounds {
            Some(b) => cost::sync_scope(b, || self.inner.poll_next_unpin(cx)),
            None => self.inner.poll_next_unpin(cx),
        }
    }
}

fn plural(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The limits of a document's text, checked before it is parsed: its size
/// and its tokens.
pub fn check_text(l: &Limits, query: &str) -> Result<(), ServerError> {
    let len = query.len();
    if len > l.max_document_bytes {
        return Err(refused(format!(
            "the document is {} bytes, over the limit of {} (--max-document-bytes) by {}",
            plural(len),
            plural(l.max_document_bytes),
            plural(len - l.max_document_bytes)
        )));
    }
    let tokens = count_tokens(query, l.max_tokens);
    if tokens > l.max_tokens {
        return Err(refused(format!(
            "the document has more than {} tokens (--max-tokens); send a smaller one, with variables for large \
             inputs",
            plural(l.max_tokens)
        )));
    }
    Ok(())
}

/// The limits of a parsed document that depend on it alone: aliases, and
/// selections once fragments are inlined.
pub fn check_document(l: &Limits, doc: &ExecutableDocument) -> Result<(), ServerError> {
    let ops: usize = doc.operations.iter().map(|(_, op)| aliases(&op.node.selection_set.node, 0)).sum();
    let frags: usize = doc.fragments.values().map(|f| aliases(&f.node.selection_set.node, 0)).sum();
    if ops + frags > l.max_aliases {
        return Err(refused(format!("too many aliases: {} (at most {}, --max-aliases)", ops + frags, l.max_aliases)));
    }
    let mut memo = HashMap::new();
    let mut total = 0usize;
    for (_, op) in doc.operations.iter() {
        total = total.saturating_add(selections(&op.node.selection_set.node, doc, &mut memo, &mut Vec::new()));
    }
    if total > l.max_selections {
        return Err(refused(format!(
            "the document selects {} fields once its fragments are inlined, over the limit of {}",
            if total == usize::MAX { "unboundedly many".to_string() } else { plural(total) },
            plural(l.max_selections)
        )));
    }
    Ok(())
}

/// Variable coercion of the simplest kind, before anything runs: a
/// non-null variable without a default needs a value. The kind of the
/// operation the request names, if there is one.
pub fn check_variables(
    doc: &ExecutableDocument,
    name: Option<&str>,
    variables: &Variables,
) -> Result<Option<OperationType>, ServerError> {
    let op = doc.operations.iter().find(|(n, _)| name.is_none() || n.map(|n| n.as_str()) == name);
    if let Some((_, op)) = op {
        for v in &op.node.variable_definitions {
            let v = &v.node;
            let given = variables.get(&v.name.node).is_some_and(|x| !matches!(x, async_graphql::Value::Null));
            if !v.var_type.node.nullable && v.default_value.is_none() && !given {
                return Err(refused(format!(
                    "variable ${} of type {} needs a value (got {})",
                    v.name.node,
                    v.var_type.node,
                    if variables.get(&v.name.node).is_some() { "null" } else { "none" }
                )));
            }
        }
    }
    Ok(op.map(|(_, op)| op.node.ty))
}

/// The limits that validation measures: depth, and cost with list sizes.
pub fn check_validation(l: &Limits, r: &ValidationResult) -> Result<(), ServerError> {
    if r.depth > l.max_depth {
        return Err(refused(format!(
            "the query is {} levels deep, over the limit of {} (--max-depth) by {}",
            r.depth,
            l.max_depth,
            r.depth - l.max_depth
        )));
    }
    if r.complexity > l.max_cost {
        let times = r.complexity as f64 / l.max_cost.max(1) as f64;
        return Err(refused(format!(
            "the query may cost {} (each field 1, each list's items counted at its `first` or else at the longest \
             such list in the topology), over the limit of {} (--max-cost) by {} ({:.1} times); ask for fewer \
             items with `first:` or nest fewer lists",
            if r.complexity >= cost::COST_CAP { "over 10^12".to_string() } else { plural(r.complexity) },
            plural(l.max_cost),
            plural(r.complexity.saturating_sub(l.max_cost)),
            times
        )));
    }
    Ok(())
}

#[async_trait::async_trait]
impl Extension for Guard {
    /// Every field spends a unit of the task's cooperative budget: the
    /// resolvers read an in-memory graph and never wait, so without this a
    /// whole query would run in one poll, and neither the deadline nor a
    /// client going away (hyper drops the request's future) could stop it
    /// before its end. With it, execution yields to the runtime every few
    /// dozen fields.
    async fn resolve(
        &self,
        ctx: &ExtensionContext<'_>,
        info: ResolveInfo<'_>,
        next: NextResolve<'_>,
    ) -> ServerResult<Option<async_graphql::Value>> {
        tokio::task::consume_budget().await;
        next.run(ctx, info).await
    }

    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> async_graphql::Response {
        // A request through the document cache runs inside the bounds its
        // validation memo was made for (`cache/engine.rs`).
        let resp = match self.bounds(ctx) {
            Some(b) if !cost::scoped() => cost::scope(b, next.run(ctx)).await,
            _ => next.run(ctx).await,
        };
        self.code_and_cap(resp)
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, async_graphql::Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, async_graphql::Response> {
        let limits = Arc::clone(&self.limits);
        let bounds = self.bounds(ctx);
        let inner = next.run(ctx, stream);
        Scoped { bounds, inner }
            .map(move |mut resp| {
                cap_errors(&mut resp.errors, limits.max_errors);
                code_errors(&mut resp.errors);
                resp
            })
            .boxed()
    }

    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        // A cached document passed these before it was cached.
        if !request.data.contains_key(&std::any::TypeId::of::<Slot>()) {
            check_text(&self.limits, &request.query)?;
        }
        *self.operation_name.lock() = request.operation_name.clone();
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
        if ctx.data_opt::<Slot>().is_none() {
            check_document(&self.limits, &doc)?;
        }
        let name = self.operation_name.lock().clone();
        *self.op_type.lock() = check_variables(&doc, name.as_deref(), variables)?;
        Ok(doc)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let slot = ctx.data_opt::<Slot>();
        if let Some(r) = slot.and_then(Slot::memo) {
            return Ok(r);
        }
        let r = next.run(ctx).await?;
        check_validation(&self.limits, &r).map_err(|e| vec![e])?;
        if let Some(slot) = slot {
            slot.remember(r);
        }
        Ok(r)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> async_graphql::Response {
        let ty = *self.op_type.lock();
        // Only HTTP requests carry `ExecutionStarted`; a subscription's
        // events on a websocket run through here too.
        let over_http = ctx.data_opt::<ExecutionStarted>().is_some();
        if over_http && ty == Some(OperationType::Subscription) {
            return async_graphql::Response::from_errors(vec![refused(
                "subscriptions are served over the websocket at /graphql/ws (subprotocol graphql-transport-ws or \
                 graphql-ws), not over HTTP",
            )]);
        }
        if let Some(started) = ctx.data_opt::<ExecutionStarted>() {
            started.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        if ty != Some(OperationType::Query) {
            return next.run(ctx, operation_name).await;
        }
        let deadline = self.limits.deadline;
        match tokio::time::timeout(deadline, next.run(ctx, operation_name)).await {
            Ok(resp) => resp,
            Err(_) => async_graphql::Response::from_errors(vec![over_deadline(deadline)]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_counted() {
        assert_eq!(count_tokens("{ a b(x: 1) { ...F } }", 100), 13);
        assert_eq!(count_tokens("# comment\n query { a(s: \"x, y\") }", 100), 9);
        assert_eq!(count_tokens("{ a(s: \"\"\"block \"\" \"\"\") }", 100), 8);
        assert_eq!(count_tokens(&"a ".repeat(1000), 10), 11);
    }

    #[test]
    fn errors_are_capped() {
        let mut v: Vec<ServerError> = (0..250).map(|i| ServerError::new(format!("e{i}"), None)).collect();
        cap_errors(&mut v, 100);
        assert_eq!(v.len(), 100);
        assert!(v[99].message.contains("151 more errors"), "{}", v[99].message);
    }
}
