//! GraphQL over HTTP (<https://graphql.github.io/graphql-over-http/draft/>):
//! `POST /graphql` with a JSON body (one request, or an array of them: a
//! batch), `GET /graphql?query=…` for queries.
//!
//! - The answer is `application/graphql-response+json` when the client
//!   accepts it, else `application/json`; 406 when it accepts neither.
//! - A request that fails before execution (body, parameters, syntax,
//!   validation, limits) has no `data` key; with
//!   `application/graphql-response+json` it answers 400, with
//!   `application/json` 200 (as the spec asks of legacy clients) except for
//!   a body that is not a GraphQL request at all (400).
//! - Only `data`, `errors` and `extensions` at the top level.
//! - A POST without a JSON content type is refused with 415 (a browser can
//!   send `text/plain` cross-origin without a preflight).

use crate::graphql::cache::{Lookup, Ticket, Verbatim};
use crate::graphql::{refused, Engine, ExecutionStarted};
use crate::http::error::HttpError;
use crate::http::media::Media;
use crate::http::state::AppState;
use crate::model::ErrorCode;
use async_graphql::parser::types::OperationType;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use leviathan_rest_compat::intake::Refusal;
use leviathan_rest_compat::kind;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// An answer with a status and a media type.
/// Every GraphQL answer says `Cache-Control: no-store`: answers follow the
/// topology, and a persisted query's GET must not be answered from a cache
/// after a change.
fn answer(status: StatusCode, media: Media, body: impl Into<Body>) -> Response {
    let mut resp = (status, body.into()).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, media.content_type());
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Room an answer's buffer starts with: most answers fit, so they are
/// written without growing it.
const FIRST_ROOM: usize = 1024;

/// A writer that refuses to grow past a cap.
struct Capped {
    buf: Vec<u8>,
    cap: usize,
}

impl Write for Capped {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + b.len() > self.cap {
            return Err(std::io::Error::other("over the cap"));
        }
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Encodes one executed answer: without `data` if it failed before
/// execution. `Err(())` when over the size cap.
fn encode_one(resp: &async_graphql::Response, executed: bool, out: &mut Capped) -> Result<(), ()> {
    #[derive(serde::Serialize)]
    struct Out<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<&'a async_graphql::Value>,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        errors: &'a [async_graphql::ServerError],
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        extensions: &'a BTreeMap<String, async_graphql::Value>,
    }
    let o = Out { data: executed.then_some(&resp.data), errors: &resp.errors, extensions: &resp.extensions };
    serde_json::to_writer(out, &o).map_err(|_| ())
}

fn too_large(cap: usize) -> String {
    format!(
        "the answer is over the limit of {cap} bytes (--max-response-bytes) and was dropped; ask for less, e.g. page \
         with `first:`"
    )
}

/// One request's parameters, checked: `query` a string, `operationName`
/// a string or null, `variables` and `extensions` objects or null. Takes
/// the object, so that the variables are moved, not copied.
fn request_of(mut obj: Map<String, Value>) -> Result<async_graphql::Request, String> {
    let persisted = obj.get("extensions").and_then(|e| e.get("persistedQuery")).is_some();
    let query = match obj.remove("query") {
        Some(Value::String(q)) => q,
        // A persisted query by its hash alone.
        None if persisted => String::new(),
        Some(other) => return Err(format!("'query' must be a string (got {})", kind(&other))),
        None => return Err("missing 'query' (a string holding the GraphQL document)".into()),
    };
    let mut req = async_graphql::Request::new(query);
    match obj.remove("operationName") {
        None | Some(Value::Null) => {}
        Some(Value::String(n)) => req = req.operation_name(n),
        Some(other) => return Err(format!("'operationName' must be a string or null (got {})", kind(&other))),
    }
    match obj.remove("variables") {
        None | Some(Value::Null) => {}
        Some(v @ Value::Object(_)) => req = req.variables(async_graphql::Variables::from_json(v)),
        Some(other) => return Err(format!("'variables' must be an object or null (got {})", kind(&other))),
    }
    match obj.remove("extensions") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                req.extensions.insert(k, async_graphql::Value::from_json(v).unwrap_or_default());
            }
        }
        Some(other) => return Err(format!("'extensions' must be an object or null (got {})", kind(&other))),
    }
    Ok(req)
}

/// The GraphQL requests over HTTP being run now, and those abandoned: a
/// request's work is a future that hyper drops when the client goes away
/// (and execution yields to the runtime between fields, so the drop takes
/// effect at once), which [`Running`] counts. `/metrics` shows both.
#[derive(Debug, Clone, Default)]
pub struct InFlight {
    running: Arc<AtomicUsize>,
    abandoned: Arc<AtomicU64>,
}

impl InFlight {
    /// Requests running now.
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }
    /// Requests whose work was dropped before it finished (the client went
    /// away, or the server shut down).
    pub fn abandoned(&self) -> u64 {
        self.abandoned.load(Ordering::SeqCst)
    }
    fn enter(&self) -> Running {
        self.running.fetch_add(1, Ordering::SeqCst);
        Running { of: self.clone(), finished: false }
    }
}

/// One request being run; counted out when dropped.
struct Running {
    of: InFlight,
    finished: bool,
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.finished {
            self.of.abandoned.fetch_add(1, Ordering::SeqCst);
        }
        self.of.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs one request; `(executed, answer)`.
async fn run(
    state: &AppState,
    in_flight: &InFlight,
    request: async_graphql::Request,
) -> (bool, async_graphql::Response) {
    let mut running = in_flight.enter();
    let started = ExecutionStarted::default();
    let resp = match Engine::of(&state.schema) {
        Some(engine) => engine.execute(&state.schema, request, Some(started.clone())).await,
        None => state.schema.execute(request.data(started.clone())).await,
    };
    running.finished = true;
    (started.get(), resp)
}

/// Runs a request whose document was found already (see [`get`]).
async fn run_entry(
    state: &AppState,
    in_flight: &InFlight,
    engine: &Engine,
    request: async_graphql::Request,
    entry: std::sync::Arc<crate::graphql::cache::Entry>,
) -> (bool, async_graphql::Response) {
    let mut running = in_flight.enter();
    let started = ExecutionStarted::default();
    let resp = engine.run(&state.schema, request, entry, Some(started.clone())).await;
    running.finished = true;
    (started.get(), resp)
}

/// The HTTP answer of one executed request.
fn single(state: &AppState, media: Media, executed: bool, resp: async_graphql::Response) -> Response {
    single_kept(state, media, executed, resp, None)
}

/// Where to keep an answer: the ticket of its look-up, and the request's
/// bytes (POST body or GET query string) with the entry of its document (to
/// keep it under those bytes too).
struct Keep<'a> {
    engine: &'a Engine,
    ticket: Ticket,
    verbatim: Option<(Verbatim<'a>, &'a crate::graphql::cache::Entry, Option<&'a str>)>,
}

/// [`single`], keeping the answer's bytes in the answer cache when it was
/// executed without errors and `keep` holds the ticket of its look-up.
fn single_kept(
    state: &AppState,
    media: Media,
    executed: bool,
    resp: async_graphql::Response,
    keep: Option<Keep<'_>>,
) -> Response {
    let cap = state.http.max_response_bytes;
    let mut out = Capped { buf: Vec::with_capacity(FIRST_ROOM.min(cap)), cap };
    if encode_one(&resp, executed, &mut out).is_err() {
        let body = json!({"data": null, "errors": [refused(too_large(cap))]});
        return answer(StatusCode::OK, media, body.to_string().into_bytes());
    }
    let status = if !executed && is_forbidden(&resp) {
        StatusCode::FORBIDDEN
    } else if executed || media == Media::Json {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    match keep {
        Some(k) if executed && resp.errors.is_empty() => {
            let body = Bytes::from(out.buf);
            k.engine.keep(k.ticket, body.clone());
            if let Some((request, entry, operation)) = k.verbatim {
                k.engine.keep_verbatim(request, entry, operation, k.ticket.revision, body.clone());
            }
            answer(status, media, body)
        }
        _ => answer(status, media, out.buf),
    }
}

/// Whether the client asked for a fresh answer (`Cache-Control: no-cache`
/// or `no-store`): the answer cache is not looked in (the answer made is
/// still kept).
fn wants_fresh(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').map(|d| d.trim().to_ascii_lowercase()).any(|d| d == "no-cache" || d == "no-store"))
}

/// Runs one request whose document is found (and whose other checks
/// passed), or serves its answer from the answer cache. `request`: the
/// bytes it came in (POST body or GET query string), under which the
/// answer is kept too, whether made or found: the same bytes again are
/// then answered before being parsed.
#[allow(clippy::too_many_arguments)]
async fn one_entry(
    state: &AppState,
    in_flight: &InFlight,
    media: Media,
    engine: &Engine,
    req: async_graphql::Request,
    entry: Arc<crate::graphql::cache::Entry>,
    fresh: bool,
    request: Verbatim<'_>,
) -> Response {
    let ticket = match engine.lookup("graphql", &req, &entry, fresh) {
        Lookup::Hit(body, revision) => {
            engine.keep_verbatim(request, &entry, req.operation_name.as_deref(), revision, body.clone());
            return answer(StatusCode::OK, media, body);
        }
        Lookup::Miss(t) => Some(t),
        Lookup::Skip => None,
    };
    let operation = req.operation_name.clone();
    let (executed, resp) = run_entry(state, in_flight, engine, req, Arc::clone(&entry)).await;
    let verbatim = Some((request, &*entry, operation.as_deref()));
    let keep = ticket.map(|ticket| Keep { engine, ticket, verbatim });
    single_kept(state, media, executed, resp, keep)
}

/// One request of a POST body: through the document and answer caches.
async fn one(
    state: &AppState,
    in_flight: &InFlight,
    media: Media,
    req: async_graphql::Request,
    fresh: bool,
    request: &[u8],
) -> Response {
    let Some(engine) = Engine::of(&state.schema) else {
        let (executed, resp) = run(state, in_flight, req).await;
        return single(state, media, executed, resp);
    };
    match engine.document(&req) {
        Ok(entry) => one_entry(state, in_flight, media, engine, req, entry, fresh, Verbatim::Body(request)).await,
        Err(e) => single(state, media, false, engine.refusal(e)),
    }
}

/// Whether a request was refused for its caller's role
/// (`graphql::access`): answered 403.
fn is_forbidden(resp: &async_graphql::Response) -> bool {
    let forbidden = async_graphql::Value::from(ErrorCode::Forbidden.as_str());
    resp.errors.iter().any(|e| e.extensions.as_ref().and_then(|x| x.get("code")) == Some(&forbidden))
}

fn body_too_large(limit: usize) -> Response {
    HttpError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::BadRequest,
        format!("request body over the limit of {limit} bytes (--max-body)"),
    )
    .graphql(Media::Json)
    // The rest of the body is never read: the connection cannot be reused.
    .with_header(header::CONNECTION, HeaderValue::from_static("close"))
    .into_response()
}

/// 408: the body did not arrive within `--body-timeout`; the connection is
/// closed (the rest of the body is never read).
fn body_too_slow(r: &Refusal) -> Response {
    HttpError::new(StatusCode::REQUEST_TIMEOUT, ErrorCode::BadRequest, r.message())
        .graphql(Media::Json)
        .with_header(header::CONNECTION, HeaderValue::from_static("close"))
        .into_response()
}

fn not_acceptable() -> Response {
    HttpError::new(
        StatusCode::NOT_ACCEPTABLE,
        ErrorCode::BadRequest,
        "this endpoint answers application/graphql-response+json or application/json: accept one of them",
    )
    .graphql(Media::Json)
    .into_response()
}

/// A 400 `BAD_REQUEST` before execution, in the answer's media type.
fn refuse(media: Media, message: String) -> Response {
    HttpError::bad_request(message).graphql(media).into_response()
}

/// Whether a content type is JSON (`application/json`, any parameters).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .is_some_and(|t| t == "application/json" || t == "application/graphql-response+json")
}

/// `POST /graphql`.
pub async fn post(
    State(state): State<AppState>,
    Extension(in_flight): Extension<InFlight>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(media) = Media::negotiate(&headers) else {
        return not_acceptable();
    };
    if !is_json(&headers) {
        let given = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("none");
        return HttpError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::BadRequest,
            format!(
                "a GraphQL POST needs 'content-type: application/json' (got {}); the body is \
                 {{\"query\": ..., \"variables\": ..., \"operationName\": ...}}",
                given.escape_debug()
            ),
        )
        .graphql(media)
        .into_response();
    }
    let intake = &state.http.intake;
    let bytes: Bytes = match intake.read(body, state.body_limit).await {
        Ok(b) => b,
        Err(Refusal::TooLarge { limit }) => return body_too_large(limit),
        Err(r @ Refusal::TooSlow { .. }) => return body_too_slow(&r),
    };
    // Held until the answer is made: large bodies queue for the budget.
    let body = intake.admit(bytes).await;
    if let Err(m) = intake.check_items(body.bytes()) {
        return refuse(media, m);
    }
    let fresh = wants_fresh(&headers);
    // A body byte for byte the same as one answered at this revision.
    let verbatim = Verbatim::Body(body.bytes());
    if let Some(kept) = Engine::of(&state.schema).filter(|_| !fresh).and_then(|e| e.lookup_verbatim(verbatim)) {
        return answer(StatusCode::OK, media, kept);
    }
    // Boxed: the future of the whole way (parse, caches, execution) is
    // large, and a future held inline is moved with the handler's on every
    // request, answered by the shortcut above or not.
    Box::pin(answer_body(&state, &in_flight, media, body.bytes(), fresh)).await
}

/// A text that may be absent but, when given, is a string (never null).
#[derive(Default)]
struct Text(Option<String>);

impl<'de> serde::Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
        String::deserialize(d).map(|s| Text(Some(s)))
    }
}

/// One request read straight from its body into what execution needs, with
/// no `serde_json::Value` on the way: the common case. `None` for anything
/// else (a batch, a member of the wrong type, no `query` and no persisted
/// query, JSON that is not well formed): the general path then answers it,
/// or says what is wrong with it.
fn direct(bytes: &[u8]) -> Option<async_graphql::Request> {
    #[derive(serde::Deserialize)]
    struct Wire {
        #[serde(default)]
        query: Text,
        #[serde(default, rename = "operationName")]
        operation_name: Option<String>,
        #[serde(default)]
        variables: async_graphql::Variables,
        #[serde(default)]
        extensions: Option<std::collections::HashMap<String, async_graphql::Value>>,
    }
    let w: Wire = serde_json::from_slice(bytes).ok()?;
    let extensions = w.extensions.unwrap_or_default();
    let query = match w.query.0 {
        Some(q) => q,
        None if extensions.contains_key("persistedQuery") => String::new(),
        None => return None,
    };
    let mut req = async_graphql::Request::new(query).variables(w.variables);
    if let Some(n) = w.operation_name {
        req = req.operation_name(n);
    }
    req.extensions.0 = extensions;
    Some(req)
}

/// The answer to a POST body that was read whole and counted.
async fn answer_body(state: &AppState, in_flight: &InFlight, media: Media, bytes: &[u8], fresh: bool) -> Response {
    if let Some(req) = direct(bytes) {
        return one(state, in_flight, media, req, fresh, bytes).await;
    }
    let bad = |m: String| refuse(media, m);
    let v: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) if bytes.iter().all(u8::is_ascii_whitespace) => {
            let _ = e;
            return bad("the body is empty: send {\"query\": \"...\"}".into());
        }
        Err(e) => return bad(format!("malformed JSON body: {e}")),
    };
    match v {
        Value::Object(obj) => match request_of(obj) {
            Ok(req) => one(state, in_flight, media, req, fresh, bytes).await,
            Err(m) => bad(m),
        },
        Value::Array(items) => batch(state, in_flight, media, items).await,
        other => bad(format!(
            "expected a JSON object {{\"query\": ...}} or an array of them (a batch), got {}",
            kind(&other)
        )),
    }
}

/// A batch: each request runs on its own (each counted against every
/// limit), in order; the answer is the array of their answers.
async fn batch(state: &AppState, in_flight: &InFlight, media: Media, items: Vec<Value>) -> Response {
    let max = state.http.max_batch;
    let bad = |m: String| refuse(media, m);
    if items.is_empty() {
        return bad("the batch is empty: send at least one request".into());
    }
    if items.len() > max {
        return bad(format!("the batch has {} requests, over the limit of {max} (--max-batch)", items.len()));
    }
    let cap = state.http.max_response_bytes;
    let mut out = Capped { buf: b"[".to_vec(), cap };
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.buf.push(b',');
        }
        let parsed = match item {
            Value::Object(o) => request_of(o),
            _ => Err(format!("batch item {i}: expected an object")),
        };
        let ok = match parsed {
            Ok(req) => {
                let (executed, resp) = run(state, in_flight, req).await;
                encode_one(&resp, executed, &mut out)
            }
            Err(m) => serde_json::to_writer(&mut out, &HttpError::bad_request(m).errors_body()).map_err(|_| ()),
        };
        if ok.is_err() {
            let body = json!([{"errors": [refused(too_large(cap))]}]);
            return answer(StatusCode::OK, media, body.to_string().into_bytes());
        }
    }
    out.buf.push(b']');
    answer(StatusCode::OK, media, out.buf)
}

/// `GET /graphql?query=…&variables=…&operationName=…`: queries only.
pub async fn get(
    State(state): State<AppState>,
    Extension(in_flight): Extension<InFlight>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let Some(media) = Media::negotiate(&headers) else {
        return not_acceptable();
    };
    let fresh = wants_fresh(&headers);
    let query = uri.query().unwrap_or("");
    // A query string byte for byte the same as one answered at this
    // revision (only queries are ever kept: a mutation never gets here).
    let verbatim = Verbatim::Query(query);
    if let Some(kept) = Engine::of(&state.schema).filter(|_| !fresh).and_then(|e| e.lookup_verbatim(verbatim)) {
        return answer(StatusCode::OK, media, kept);
    }
    // Boxed as in [`post`].
    Box::pin(answer_get(&state, &in_flight, media, query, fresh)).await
}

/// The answer to a `GET /graphql` not answered by its bytes alone.
async fn answer_get(state: &AppState, in_flight: &InFlight, media: Media, query: &str, fresh: bool) -> Response {
    let bad = |m: String| refuse(media, m);
    let params: Vec<(String, String)> = match serde_urlencoded::from_str(query) {
        Ok(p) => p,
        Err(e) => return bad(format!("malformed query string: {e}")),
    };
    let param = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let mut obj = Map::new();
    if let Some(query) = param("query") {
        obj.insert("query".into(), Value::String(query));
    }
    if let Some(op) = param("operationName") {
        obj.insert("operationName".into(), Value::String(op));
    }
    for key in ["variables", "extensions"] {
        if let Some(raw) = param(key) {
            match serde_json::from_str::<Value>(&raw) {
                Ok(v) => {
                    obj.insert(key.into(), v);
                }
                Err(e) => return bad(format!("malformed '{key}' parameter: {e}")),
            }
        }
    }
    let persisted = obj.get("extensions").and_then(|e| e.get("persistedQuery")).is_some();
    if !obj.contains_key("query") && !persisted {
        return bad("missing 'query' parameter (GET /graphql?query=...; or POST a JSON body)".into());
    }
    let req = match request_of(obj) {
        Ok(req) => req,
        Err(m) => return bad(m),
    };
    let Some(engine) = Engine::of(&state.schema) else {
        let (executed, resp) = run(state, in_flight, req).await;
        return single(state, media, executed, resp);
    };
    let entry = match engine.document(&req) {
        Ok(e) => e,
        Err(e) => return single(state, media, false, engine.refusal(e)),
    };
    let name = req.operation_name.as_deref();
    let mutates = entry
        .doc
        .operations
        .iter()
        .any(|(n, op)| (name.is_none() || n.map(|n| n.as_str()) == name) && op.node.ty != OperationType::Query);
    if mutates {
        return HttpError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::BadRequest,
            "mutations need POST (subscriptions the websocket at /graphql/ws)",
        )
        .graphql(media)
        .with_header(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"))
        .into_response();
    }
    one_entry(state, in_flight, media, engine, req, entry, fresh, Verbatim::Query(query)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request the general path makes of a body.
    fn general(body: &str) -> Result<async_graphql::Request, String> {
        match serde_json::from_str::<Value>(body).map_err(|e| e.to_string())? {
            Value::Object(o) => request_of(o),
            other => Err(format!("not an object: {}", kind(&other))),
        }
    }

    fn same(a: &async_graphql::Request, b: &async_graphql::Request) {
        assert_eq!(a.query, b.query);
        assert_eq!(a.operation_name, b.operation_name);
        assert_eq!(a.variables, b.variables);
        assert_eq!(a.extensions, b.extensions);
    }

    #[test]
    fn direct_reads_what_the_general_path_reads() {
        for body in [
            r#"{"query": "{ cen(id: \"cen1\") { id } }"}"#,
            r#"{"query": "query Q($n: Int) { cens(first: $n) { id } }", "operationName": "Q", "variables": {"n": 2}}"#,
            r#"{"query": "{ hosts { id } }", "operationName": null, "variables": null, "extensions": null}"#,
            r#"{"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "ab"}}}"#,
            r#"{"query": "{ a }", "extensions": {"persistedQuery": null, "other": [1, "x"]}, "unknown": 3}"#,
        ] {
            let d = direct(body.as_bytes()).unwrap_or_else(|| panic!("direct refused {body}"));
            same(&d, &general(body).unwrap());
        }
    }

    #[test]
    fn direct_leaves_every_faulty_body_to_the_general_path() {
        for body in [
            r#"{"query": null}"#,
            r#"{"query": 3}"#,
            r#"{"variables": {}}"#,
            r#"{"query": "{ a }", "operationName": 1}"#,
            r#"{"query": "{ a }", "variables": "x"}"#,
            r#"{"query": "{ a }", "extensions": []}"#,
            r#"{"query": "{ a }", "query": "{ b }"}"#,
            r#"[{"query": "{ a }"}]"#,
            r#"{"query": "#,
            "",
        ] {
            assert!(direct(body.as_bytes()).is_none(), "direct took {body}");
        }
    }
}
