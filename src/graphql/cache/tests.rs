//! The document cache: its byte bound under many distinct documents, limits
//! still enforced on cached documents, persisted queries, and answers on the
//! cached paths equal to those of a first run.

use super::*;
use crate::graphql::{schema_with_limits, Limits};
use crate::service::Service;
use async_graphql::{Request, Response, Variables};
use serde_json::{json, Value as Json};

pub(super) struct Fixture {
    pub schema: crate::graphql::LeviathanSchema,
    pub service: std::sync::Arc<Service>,
    _dir: tempfile::TempDir,
}

pub(super) fn fixture(limits: Limits) -> Fixture {
    let dir = tempfile::tempdir().expect("temporary directory");
    let service = Service::open(&dir.path().join("state.db"), "host1").expect("service on a fresh state file");
    Fixture { schema: schema_with_limits(std::sync::Arc::clone(&service), None, limits), service, _dir: dir }
}

impl Fixture {
    pub fn engine(&self) -> &Engine {
        Engine::of(&self.schema).expect("the schema holds its engine")
    }

    async fn run(&self, req: Request) -> Response {
        self.engine().execute(&self.schema, req, None).await
    }

    async fn doc(&self, doc: &str, vars: Json) -> Response {
        self.run(Request::new(doc).variables(Variables::from_json(vars))).await
    }

    pub async fn ok(&self, doc: &str, vars: Json) -> Json {
        let resp = self.doc(doc, vars).await;
        assert!(resp.errors.is_empty(), "{doc}: unexpected errors {:?}", resp.errors);
        resp.data.into_json().expect("data as JSON")
    }

    /// Imports a CEN of `n` containers named `{prefix}{i}`.
    pub async fn cen(&self, id: &str, prefix: &str, n: usize) {
        let ids: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
        let doc = "mutation($i: CenImportInput!) { cenImport(input: $i) { revision } }";
        self.ok(doc, json!({"i": {"cens": [{"id": id, "containerIds": ids}]}})).await;
    }
}

fn coded(resp: &Response) -> (String, String) {
    let e = resp.errors.first().unwrap_or_else(|| panic!("expected an error, got {:?}", resp.data));
    let code = e.extensions.as_ref().and_then(|x| x.get("code")).map(|c| c.to_string()).unwrap_or_default();
    (e.message.clone(), code.trim_matches('"').to_string())
}

fn hex(k: &Key) -> String {
    k.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn keys_are_sha256_and_read_back_from_hex() {
    // SHA-256 of the empty string.
    let empty = key_of("");
    assert_eq!(hex(&empty), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    assert_eq!(key_from_hex(&hex(&empty)), Some(empty));
    assert_eq!(key_from_hex(&hex(&empty).to_uppercase()), Some(empty));
    assert_eq!(key_from_hex("abc"), None);
    assert_eq!(key_from_hex(&"g".repeat(64)), None);
}

/// Thousands of distinct documents (each a few hundred bytes, as an
/// attacker would send) never take the cache past its bound: the oldest
/// are evicted, and the bytes accounted stay within it at every step.
#[tokio::test]
async fn distinct_documents_stay_within_the_bound() {
    let bound = 512 * 1024;
    let f = fixture(Limits { document_cache_bytes: bound, ..Limits::default() });
    let cache = &f.engine().cache;
    assert_eq!(cache.bound(), bound);
    let one = Entry::new(
        "{ a0: revision }".into(),
        async_graphql::parser::parse_query("{ a0: revision }").expect("a document"),
    );
    assert!(one.bytes > 16 * "{ a0: revision }".len(), "the parse is accounted, not only the text: {}", one.bytes);
    let n = 3_000;
    for i in 0..n {
        let doc = format!("{{ a{i}: revision b{i}: hostId c{i}: cenCount d{i}: containerCount }}");
        let resp = f.doc(&doc, json!({})).await;
        assert!(resp.errors.is_empty(), "{doc}: {:?}", resp.errors);
        assert!(cache.bytes() <= bound, "after {i} documents: {} bytes cached, bound {bound}", cache.bytes());
    }
    let evicted = cache.stats.evictions.load(Ordering::Relaxed);
    assert!(cache.len() < n && evicted as usize == n - cache.len(), "{} kept, {evicted} evicted", cache.len());
    assert!(cache.len() > 10, "the cache keeps documents: {}", cache.len());
    // The most recent document is still there; the first is gone.
    let last = format!("{{ a{0}: revision b{0}: hostId c{0}: cenCount d{0}: containerCount }}", n - 1);
    assert!(cache.get(&key_of(&last)).is_some());
    let first = "{ a0: revision b0: hostId c0: cenCount d0: containerCount }";
    assert!(cache.get(&key_of(first)).is_none());
}

#[tokio::test]
async fn a_document_larger_than_a_share_is_run_but_not_kept() {
    let f = fixture(Limits { document_cache_bytes: 16 * 1024, ..Limits::default() });
    let big = format!("{{ revision {} }}", "hostId ".repeat(200));
    assert!(f.doc(&big, json!({})).await.errors.is_empty());
    assert_eq!(f.engine().cache.len(), 0);
    assert_eq!(f.engine().cache.stats.too_large.load(Ordering::Relaxed), 1);
}

/// A cached, validated document is refused once the topology grows past
/// what its cost allows, and admitted again when it shrinks.
#[tokio::test]
async fn a_cached_document_over_the_cost_limit_is_refused() {
    let f = fixture(Limits { max_cost: 60, ..Limits::default() });
    f.cen("e1", "c", 10).await;
    let q = "{ containers { id host { id } } }";
    let first = f.ok(q, json!({})).await;
    let again = f.ok(q, json!({})).await;
    assert_eq!(first, again, "the cached path answers as the first run");
    assert!(f.engine().cache.stats.hits.load(Ordering::Relaxed) >= 1);
    f.cen("e2", "d", 30).await;
    let (msg, code) = coded(&f.doc(q, json!({})).await);
    assert!(msg.contains("--max-cost"), "{msg}");
    assert_eq!(code, "BAD_REQUEST");
    // Refused every time, not only the first.
    assert!(code_of(&f.doc(q, json!({})).await).contains("--max-cost"));
    let gone = "mutation { cenDelete(input: {id: \"e2\"}) { revision } }";
    assert!(f.doc(gone, json!({})).await.errors.is_empty());
    let del = "mutation($h: ID!, $c: ID!) { containerDelete(input: {hostId: $h, id: $c}) { revision } }";
    for i in 0..30 {
        f.ok(del, json!({"h": "host1", "c": format!("d{i}")})).await;
    }
    assert_eq!(f.ok(q, json!({})).await, first);
}

fn code_of(resp: &Response) -> String {
    resp.errors.first().map(|e| e.message.clone()).unwrap_or_default()
}

/// Variables of a cached document are checked on every request: a memo made
/// with a string does not admit an object, nor an Int over 32 bits.
#[tokio::test]
async fn variables_of_a_cached_document_are_checked_every_time() {
    let f = fixture(Limits::default());
    f.cen("e1", "c", 3).await;
    let q = "query($id: ID!) { cen(id: $id) { id size } }";
    let ok = f.ok(q, json!({"id": "e1"})).await;
    assert_eq!(ok, json!({"cen": {"id": "e1", "size": 3}}));
    assert_eq!(f.ok(q, json!({"id": "e1"})).await, ok);
    let bad = f.doc(q, json!({"id": {"x": 1}})).await;
    assert!(!bad.errors.is_empty() && bad.data == async_graphql::Value::Null, "{bad:?}");
    let missing = f.doc(q, json!({})).await;
    assert!(code_of(&missing).contains("needs a value"), "{missing:?}");
    let paged = "query($n: Int) { containers(first: $n) { id } }";
    assert!(f.doc(paged, json!({"n": 2})).await.errors.is_empty());
    let over = f.doc(paged, json!({"n": 5_000_000_000i64})).await;
    assert!(!over.errors.is_empty(), "an Int over 32 bits: {over:?}");
}

/// Apollo's automatic persisted queries: an unknown hash asks for the
/// text, the text with its hash registers it, the hash alone then runs it;
/// a hash that is not the text's is refused.
#[tokio::test]
async fn persisted_queries_register_and_run_by_hash() {
    let f = fixture(Limits::default());
    f.cen("e1", "c", 2).await;
    let q = "{ cen(id: \"e1\") { id wiringType containers { id } } }";
    let hash = hex(&key_of(q));
    let pq = |hash: &str| {
        let mut r = Request::new("");
        let ext = json!({"version": 1, "sha256Hash": hash});
        r.extensions.insert("persistedQuery".into(), async_graphql::Value::from_json(ext).expect("a value"));
        r
    };
    let (msg, code) = coded(&f.run(pq(&hash)).await);
    assert_eq!((msg.as_str(), code.as_str()), ("PersistedQueryNotFound", PERSISTED_QUERY_NOT_FOUND));
    let mut with_text = pq(&hash);
    with_text.query = q.into();
    let registered = f.run(with_text).await;
    assert!(registered.errors.is_empty(), "{:?}", registered.errors);
    let by_hash = f.run(pq(&hash)).await;
    assert!(by_hash.errors.is_empty(), "{:?}", by_hash.errors);
    assert_eq!(by_hash.data, registered.data);
    let mut wrong = pq(&hex(&key_of("{ revision }")));
    wrong.query = q.into();
    let (msg, code) = coded(&f.run(wrong).await);
    assert!(msg.contains("is not the SHA-256"), "{msg}");
    assert_eq!(code, "BAD_REQUEST");
    let mut v2 = Request::new(q);
    v2.extensions.insert(
        "persistedQuery".into(),
        async_graphql::Value::from_json(json!({"version": 2, "sha256Hash": hash})).expect("a value"),
    );
    assert!(code_of(&f.run(v2).await).contains("only version 1"));
}

/// A document that fails a limit of its text or its parse is never cached,
/// and is refused again on every request with the same message.
#[tokio::test]
async fn refused_documents_are_not_cached() {
    let f = fixture(Limits { max_aliases: 2, ..Limits::default() });
    let q = "{ a: revision b: revision c: revision }";
    for _ in 0..2 {
        assert!(code_of(&f.doc(q, json!({})).await).contains("too many aliases"));
    }
    assert!(code_of(&f.doc("{ revision", json!({})).await).contains("expected"), "a syntax error");
    assert_eq!(f.engine().cache.len(), 0);
}

/// Answers on the fast path (no per-field hooks), on the guarded path
/// (a memo, parse skipped) and of a first run are the same, for a nested
/// query and a mutation.
#[tokio::test]
async fn cached_paths_answer_as_a_first_run() {
    let f = fixture(Limits::default());
    f.cen("e1", "c", 4).await;
    f.cen("e2", "c", 2).await;
    let nested = "{ cens { id containers { id cens { id size } } } }";
    let first = f.ok(nested, json!({})).await;
    for _ in 0..3 {
        assert_eq!(f.ok(nested, json!({})).await, first);
    }
    assert_eq!(first["cens"][0]["containers"][0]["cens"][1], json!({"id": "e2", "size": 2}));
    let tag = "mutation($t: String) { containerSetTag(input: {id: \"c0\", tag: $t}) { revision } }";
    let a = f.ok(tag, json!({"t": "x"})).await;
    let b = f.ok(tag, json!({"t": "y"})).await;
    assert_eq!(a["containerSetTag"]["revision"].as_u64().map(|r| r + 1), b["containerSetTag"]["revision"].as_u64());
}
