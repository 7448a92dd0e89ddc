//! A request's way through the document cache.
//!
//! 1. Persisted queries (Apollo's protocol): a request whose
//!    `extensions.persistedQuery.sha256Hash` names a cached document may
//!    leave out `query`; one that names no cached document is answered
//!    `PERSISTED_QUERY_NOT_FOUND`, and the client sends the text with the
//!    hash, which registers it (a hash that is not the text's is refused).
//! 2. The document is found by the SHA-256 of its text, or checked against
//!    the limits of its text, parsed, checked against the limits of its
//!    parse, and cached.
//! 3. Validation (the schema's rules, depth, cost with list sizes) passed
//!    once is remembered per operation, kind of variables and list bounds
//!    ([`super::Memo`]); it runs again when any of them differs, so a
//!    cached document over a limit is still refused, e.g. once the
//!    topology has grown.
//! 4. A query or mutation whose remembered cost is at most [`FAST_COST`]
//!    runs on a schema without extensions: async-graphql then resolves
//!    fields without a hook per field. The deadline needs no per-field hook
//!    at that size (the cost bounds the fields; the few resolvers whose
//!    work the cost does not bound, such as a filtered count, spend the
//!    task's budget themselves, and so does each request of a batch);
//!    larger ones run on the guarded schema, whose per-field hook yields to
//!    the runtime so that the deadline and a client going away can stop
//!    them.
//!
//! 5. Before a request is run, [`Engine::lookup`] looks for its answer in
//!    the answer cache (`answers.rs`): only for a pure query (`pure.rs`)
//!    whose caller's role may run it, at the current topology revision.
//!    A hit is served as it was serialized; a miss hands a [`Ticket`],
//!    with which the caller keeps the answer's bytes if it has no errors.
//!
//! 6. An answer found or made for a request every role may run is kept
//!    also under the request's own bytes ([`Verbatim`]: its POST body or
//!    GET query string), so that the same bytes again (a persisted query's
//!    hash alone as much as a full text) are answered before being parsed:
//!    [`Engine::lookup_verbatim`].
//!
//! A check on the parsed document of every request (e.g. which role an
//! operation needs) belongs in [`Engine::run`], where the marked comment
//! is, and in [`Engine::lookup`], which serves answers without running
//! them: every request through the cache passes there with its [`Entry`],
//! cached or fresh.

use super::answers::{answer_key, AnswerCache, Ticket};
use super::pure::Pure;
use super::{key_from_hex, key_of, DocumentCache, Entry, Key, Memo, VarKind};
use crate::auth::Caller;
use crate::graphql::access;
use crate::graphql::cost::{self, Bounds};
use crate::graphql::limits::{self, check_document, check_text, refused, Limits};
use crate::graphql::LeviathanSchema;
use crate::service::Service;
use async_graphql::parser::types::{BaseType, ExecutableDocument, OperationType};
use async_graphql::{Executor, Request, Response, ServerError, ValidationResult, Value, Variables};
use axum::body::Bytes;
use futures_util::stream::BoxStream;
use std::sync::Arc;

/// Largest remembered cost of a document run without per-field hooks.
pub const FAST_COST: usize = 1_000;

/// `extensions.code` (and message) of a persisted query the server does not
/// hold.
pub const PERSISTED_QUERY_NOT_FOUND: &str = "PERSISTED_QUERY_NOT_FOUND";

/// The document cache, and the schema without extensions that cached
/// documents within [`FAST_COST`] run on. It lives in the guarded schema's
/// data.
pub struct Engine {
    pub cache: DocumentCache,
    /// Serialized answers of pure queries.
    pub answers: AnswerCache,
    pure: Pure,
    fast: LeviathanSchema,
    service: Arc<Service>,
    limits: Arc<Limits>,
}

/// Put in the data of a request run on the guarded schema: its cached
/// document, so the guard neither checks the document's own limits again
/// nor validates it when a memo holds.
pub(crate) struct Slot {
    entry: Arc<Entry>,
    operation: Option<String>,
    vars: Option<Vec<VarKind>>,
    bounds: Bounds,
}

impl Slot {
    /// The remembered validation for this request, if one holds.
    pub(crate) fn memo(&self) -> Option<ValidationResult> {
        self.entry.memo(self.operation.as_deref(), self.vars.as_ref()?, &self.bounds)
    }

    /// Remembers a validation that passed.
    pub(crate) fn remember(&self, result: ValidationResult) {
        if let Some(vars) = &self.vars {
            let (operation, vars, bounds) = (self.operation.clone(), vars.clone(), self.bounds);
            self.entry.remember(Memo { operation, vars, bounds, result });
        }
    }
}

fn not_found() -> ServerError {
    let mut e = ServerError::new("PersistedQueryNotFound", None);
    let mut ext = async_graphql::ErrorExtensionValues::default();
    ext.set("code", PERSISTED_QUERY_NOT_FOUND);
    e.extensions = Some(ext);
    e
}

/// The hash a request's `extensions.persistedQuery` names, checked.
fn persisted_hash(req: &Request) -> Result<Option<Key>, ServerError> {
    let Some(pq) = req.extensions.get("persistedQuery") else {
        return Ok(None);
    };
    let shape = "extensions.persistedQuery must be {\"version\": 1, \"sha256Hash\": \"<64 hex digits>\"}";
    let Value::Object(o) = pq else {
        return Err(refused(format!("{shape} (got {pq})")));
    };
    match o.get("version") {
        Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
        Some(v) => return Err(refused(format!("persisted query version {v} is not served: only version 1"))),
        None => return Err(refused(format!("{shape} (no version)"))),
    }
    match o.get("sha256Hash") {
        Some(Value::String(h)) => match key_from_hex(h) {
            Some(k) => Ok(Some(k)),
            None => Err(refused(format!("{shape} (sha256Hash is {:?})", h.escape_debug().to_string()))),
        },
        _ => Err(refused(format!("{shape} (no sha256Hash string)"))),
    }
}

/// The kinds of a request's variables, as far as validation can tell them
/// apart; `None` when validation may depend on more than the kind (input
/// objects, lists, enums, floats, other scalars): such a request is
/// validated every time.
fn var_kinds(doc: &ExecutableDocument, name: Option<&str>, variables: &Variables) -> Option<Vec<VarKind>> {
    let (_, op) = doc.operations.iter().find(|(n, _)| name.is_none() || n.map(|n| n.as_str()) == name)?;
    let defs = &op.node.variable_definitions;
    let mut kinds = Vec::with_capacity(defs.len());
    for d in defs {
        let BaseType::Named(ty) = &d.node.var_type.node.base else { return None };
        let kind = match (ty.as_str(), variables.get(&d.node.name.node)) {
            (_, None) => VarKind::Absent,
            (_, Some(Value::Null)) => VarKind::Null,
            ("ID" | "String", Some(Value::String(_))) => VarKind::Text,
            ("Boolean", Some(Value::Boolean(_))) => VarKind::Bool,
            ("ID" | "Int", Some(Value::Number(n))) => VarKind::Int(n.as_i64()?),
            _ => return None,
        };
        kinds.push(kind);
    }
    Some(kinds)
}

impl Engine {
    /// An engine over a schema without extensions.
    pub(crate) fn new(fast: LeviathanSchema, service: Arc<Service>, limits: Arc<Limits>) -> Engine {
        let pure = Pure::of_sdl(&fast.sdl());
        Engine {
            cache: DocumentCache::new(limits.document_cache_bytes),
            answers: AnswerCache::new(limits.answer_cache_bytes),
            pure,
            fast,
            service,
            limits,
        }
    }

    /// Looks for the answer of a request whose document is `entry`, shaped
    /// by `shape` (`"graphql"` or a legacy route's); `fresh` (the client
    /// asked `Cache-Control: no-cache`) skips the look-up but keeps the
    /// answer made. The caller's role is checked first, as [`Engine::run`]
    /// checks it: a request refused there is never served from here.
    pub fn lookup(&self, shape: &str, req: &Request, entry: &Entry, fresh: bool) -> Lookup {
        if !self.answers.enabled() {
            return Lookup::Skip;
        }
        let given = req.data.get(&std::any::TypeId::of::<Caller>()).and_then(|d| d.downcast_ref::<Caller>());
        let Ok(vars) = serde_json::to_vec(&req.variables) else { return Lookup::Skip };
        match self.lookup_with(shape, entry, req.operation_name.as_deref(), given, &vars, fresh) {
            // Only an answer made on the fast path is kept: async-graphql
            // resolves an object's fields concurrently and, on the guarded
            // path (whose per-field hook yields), their members can come
            // out of the selection's order; kept, such an answer would be
            // repeated. The fast path's fields never yield.
            Lookup::Miss(_) if !self.runs_fast(req, entry) => Lookup::Skip,
            found => found,
        }
    }

    /// Whether a request whose document is `entry` runs on the fast path
    /// now: a query with a remembered validation within [`FAST_COST`].
    fn runs_fast(&self, req: &Request, entry: &Entry) -> bool {
        let operation = req.operation_name.as_deref();
        let Some(kinds) = var_kinds(&entry.doc, operation, &req.variables) else { return false };
        let bounds = self.service.read(Bounds::of);
        entry.operation(operation) == Some(OperationType::Query)
            && entry.memo(operation, &kinds, &bounds).is_some_and(|r| r.complexity <= FAST_COST)
    }

    /// [`Engine::lookup`] of an operation with its variables serialized.
    fn lookup_with(
        &self,
        shape: &str,
        entry: &Entry,
        operation: Option<&str>,
        caller: Option<&Caller>,
        vars: &[u8],
        fresh: bool,
    ) -> Lookup {
        if !self.answers.enabled() {
            return Lookup::Skip;
        }
        if !entry.pure(operation) {
            self.answers.stats.uncacheable.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Lookup::Skip;
        }
        if !access::caller_of(caller).may(access::needed(&entry.doc, operation)) {
            return Lookup::Skip;
        }
        self.lookup_key(answer_key(shape, &entry.key, operation, vars), fresh)
    }

    /// The answer kept under `key` at the current revision, or a ticket.
    fn lookup_key(&self, key: Key, fresh: bool) -> Lookup {
        // Read before execution: an answer that sees a later change is kept
        // under this older revision, and never answers.
        let revision = self.service.revision();
        if !fresh {
            if let Some(body) = self.answers.get(&key, revision) {
                return Lookup::Hit(body, revision);
            }
        }
        Lookup::Miss(Ticket { key, revision })
    }

    /// Keeps the bytes of an answer made after a [`Lookup::Miss`] (the
    /// caller checked that it has no errors).
    pub fn keep(&self, ticket: Ticket, body: Bytes) {
        self.answers.insert(ticket, body);
    }

    /// The answer kept for a request byte for byte the same as one
    /// answered before (see [`Engine::keep_verbatim`]), at the current
    /// revision.
    pub fn lookup_verbatim(&self, request: Verbatim<'_>) -> Option<Bytes> {
        if !self.answers.enabled() {
            return None;
        }
        self.answers.find(&request.key(), self.service.revision())
    }

    /// Keeps an answer (made at `revision`, or found in the answer cache at
    /// it) also under the bytes of the request that asked for it: they hold
    /// the document (its text, or a persisted query's hash, which names one
    /// text), the operation name, the variables and the extensions, all an
    /// answer of a pure query depends on, so a later request with the same
    /// bytes is answered without being parsed. Only for an operation every
    /// caller may run (one needing the lowest role, `viewer`): such a hit
    /// needs no role check.
    pub fn keep_verbatim(
        &self,
        request: Verbatim<'_>,
        entry: &Entry,
        operation: Option<&str>,
        revision: u64,
        body: Bytes,
    ) {
        if access::needed(&entry.doc, operation) == crate::auth::Role::Viewer {
            self.answers.insert(Ticket { key: request.key(), revision }, body);
        }
    }

    /// The engine of a schema built by [`crate::graphql::schema_with_limits`].
    pub fn of(schema: &LeviathanSchema) -> Option<&Engine> {
        schema.data::<Arc<Engine>>().map(|e| &**e)
    }

    /// The document of a request: a persisted query by its hash, or the
    /// cached parse of its text, or its text checked, parsed and cached.
    pub fn document(&self, req: &Request) -> Result<Arc<Entry>, ServerError> {
        let persisted = persisted_hash(req)?;
        if let (true, Some(k)) = (req.query.is_empty(), persisted) {
            return self.cache.get(&k).ok_or_else(not_found);
        }
        let key = key_of(&req.query);
        if persisted.is_some_and(|k| k != key) {
            return Err(refused(
                "extensions.persistedQuery.sha256Hash is not the SHA-256 of the query's text: send the hash of the \
                 exact text (hex of its UTF-8 bytes)",
            ));
        }
        if let Some(e) = self.cache.get(&key) {
            return Ok(e);
        }
        check_text(&self.limits, &req.query)?;
        let doc = async_graphql::parser::parse_query(&req.query).map_err(ServerError::from)?;
        check_document(&self.limits, &doc)?;
        let entry = Arc::new(Entry::new(req.query.as_str().into(), doc).with_pure(&self.pure));
        self.cache.insert(key, Arc::clone(&entry));
        Ok(entry)
    }

    /// Runs a request through the cache on `schema` (the guarded schema
    /// holding this engine). `started` is set once execution starts.
    pub async fn execute(
        &self,
        schema: &LeviathanSchema,
        req: Request,
        started: Option<limits::ExecutionStarted>,
    ) -> Response {
        let entry = match self.document(&req) {
            Ok(e) => e,
            Err(e) => return self.refusal(e),
        };
        self.run(schema, req, entry, started).await
    }

    /// Runs a request whose document is `entry`.
    pub async fn run(
        &self,
        schema: &LeviathanSchema,
        mut req: Request,
        entry: Arc<Entry>,
        started: Option<limits::ExecutionStarted>,
    ) -> Response {
        // Every request through the cache comes here (GET, POST, batch
        // items and the legacy routes): the role check on its document,
        // before anything of it runs.
        let operation = req.operation_name.clone();
        let given = req.data.get(&std::any::TypeId::of::<Caller>()).and_then(|d| d.downcast_ref::<Caller>());
        let caller = access::caller_of(given);
        let role = access::needed(&entry.doc, operation.as_deref());
        if !caller.may(role) {
            return self.refusal(access::forbidden(&caller, role));
        }
        let bounds = self.service.read(Bounds::of);
        let vars = var_kinds(&entry.doc, operation.as_deref(), &req.variables);
        req.set_parsed_query(entry.doc.clone());
        let ty = entry.operation(operation.as_deref());
        if let (Some(kinds), Some(ty @ (OperationType::Query | OperationType::Mutation))) = (&vars, ty) {
            let memo = entry.memo(operation.as_deref(), kinds, &bounds);
            if memo.is_some_and(|r| r.complexity <= FAST_COST) {
                // One unit of the task's budget per request: a batch of
                // them yields to the runtime between its requests.
                tokio::task::consume_budget().await;
                if let Some(s) = &started {
                    s.0.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                let resp = if ty == OperationType::Query {
                    let deadline = self.limits.deadline;
                    match tokio::time::timeout(deadline, self.fast.execute(req)).await {
                        Ok(r) => r,
                        Err(_) => Response::from_errors(vec![limits::over_deadline(deadline)]),
                    }
                } else {
                    self.fast.execute(req).await
                };
                return self.finish(resp);
            }
        }
        let mut req = req.data(Slot { entry, operation, vars, bounds });
        if let Some(s) = started {
            req = req.data(s);
        }
        cost::scope(bounds, schema.execute(req)).await
    }

    /// The answer to a request refused before execution.
    pub fn refusal(&self, e: ServerError) -> Response {
        self.finish(Response::from_errors(vec![e]))
    }

    /// Codes and caps an answer's errors, as the guard does.
    fn finish(&self, mut resp: Response) -> Response {
        limits::cap_errors(&mut resp.errors, self.limits.max_errors);
        limits::code_errors(&mut resp.errors);
        resp
    }
}

/// What [`Engine::lookup`] found.
#[derive(Debug)]
pub enum Lookup {
    /// The answer's bytes, as first serialized, and the revision they
    /// answer at.
    Hit(Bytes, u64),
    /// None yet: keep the answer made with this ticket.
    Miss(Ticket),
    /// Not cacheable (or the cache is off): run it, keep nothing.
    Skip,
}

/// A request's own bytes, which name its answer without being parsed:
/// a POST body, or the query string of a `GET /graphql`. Each is its own
/// key space (the same bytes as a body and as a query string are two keys).
#[derive(Debug, Clone, Copy)]
pub enum Verbatim<'a> {
    Body(&'a [u8]),
    Query(&'a str),
}

impl Verbatim<'_> {
    /// Where the answer to these bytes is kept.
    fn key(self) -> Key {
        match self {
            Verbatim::Body(b) => answer_key("body", &[0; 32], None, b),
            Verbatim::Query(q) => answer_key("get", &[0; 32], None, q.as_bytes()),
        }
    }
}

/// The answer cache of the legacy routes' reads: their final legacy bodies,
/// kept under the fixed document and the variables. What may be kept of a
/// document is worked out once per document (its text is fixed): its key
/// when it is a pure query every role may run, `None` otherwise.
pub struct LegacyAnswers {
    schema: LeviathanSchema,
    known: parking_lot::RwLock<std::collections::HashMap<&'static str, Option<Key>>>,
}

impl LegacyAnswers {
    /// The legacy answers of a schema built by
    /// [`crate::graphql::schema_with_limits`].
    pub fn new(schema: LeviathanSchema) -> LegacyAnswers {
        LegacyAnswers { schema, known: Default::default() }
    }

    /// The key of a legacy document if its answers may be kept.
    fn keyed(&self, engine: &Engine, query: &'static str) -> Option<Key> {
        if let Some(k) = self.known.read().get(query) {
            return *k;
        }
        let entry = engine.document(&Request::new(query)).ok()?;
        let keep = entry.pure(None) && access::needed(&entry.doc, None) == crate::auth::Role::Viewer;
        let k = keep.then_some(entry.key);
        self.known.write().insert(query, k);
        k
    }
}

impl std::fmt::Debug for LegacyAnswers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LegacyAnswers")
    }
}

impl leviathan_rest_compat::Answers for LegacyAnswers {
    fn lookup(&self, query: &'static str, variables: &serde_json::Value) -> leviathan_rest_compat::Cached {
        use leviathan_rest_compat::Cached;
        let Some(engine) = Engine::of(&self.schema).filter(|e| e.answers.enabled()) else { return Cached::Skip };
        let Some(doc) = self.keyed(engine, query) else {
            engine.answers.stats.uncacheable.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Cached::Skip;
        };
        let Ok(vars) = serde_json::to_vec(variables) else { return Cached::Skip };
        match engine.lookup_key(answer_key("legacy", &doc, None, &vars), false) {
            Lookup::Hit(body, _) => Cached::Hit(body),
            Lookup::Miss(t) => Cached::Miss(leviathan_rest_compat::Ticket { key: t.key, revision: t.revision }),
            Lookup::Skip => Cached::Skip,
        }
    }

    fn keep(&self, ticket: leviathan_rest_compat::Ticket, body: Bytes) {
        if let Some(engine) = Engine::of(&self.schema) {
            engine.keep(Ticket { key: ticket.key, revision: ticket.revision }, body);
        }
    }
}

/// The executor of the legacy routes: the guarded schema, reached through
/// its document cache (the legacy documents are fixed, so they are parsed
/// and validated once).
#[derive(Clone)]
pub struct Api(pub LeviathanSchema);

impl Executor for Api {
    async fn execute(&self, request: Request) -> Response {
        match Engine::of(&self.0) {
            Some(e) => e.execute(&self.0, request, None).await,
            None => self.0.execute(request).await,
        }
    }

    fn execute_stream(
        &self,
        request: Request,
        session_data: Option<Arc<async_graphql::Data>>,
    ) -> BoxStream<'static, Response> {
        Executor::execute_stream(&self.0, request, session_data)
    }
}
