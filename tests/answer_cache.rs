//! The answer cache over real HTTP: a repeated read is served from it with
//! the bytes a run made, a change by anyone makes the next read show the
//! new state (GraphQL over POST and GET, persisted queries, the legacy
//! `GET /cen/{id}`), documents that read more than the topology always run,
//! `Cache-Control: no-cache` runs afresh, `--answer-cache-bytes 0` keeps
//! nothing, and the same request bytes again (a persisted query's hash
//! alone included) are answered without being parsed, behind the token.

mod common;

use common::*;
use serde_json::{json, Value};

const CEN: &str = "query Cen($id: ID!) { cen(id: $id) { id wiringType containers { id } } }";

/// A request with the server's token, if it has one.
fn authed(s: &Server, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    match &s.token {
        Some(t) => req.bearer_auth(t),
        None => req,
    }
}

async fn metric(s: &Server, name: &str) -> u64 {
    let resp = authed(s, s.http.get(s.url("/metrics"))).send().await.expect("GET /metrics");
    let text = resp.text().await.expect("text");
    let line = text.lines().find(|l| l.split(' ').next() == Some(name)).unwrap_or_else(|| panic!("no {name}:\n{text}"));
    line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}

/// POSTs a body with extra headers; the status and the raw body.
async fn post_raw(s: &Server, body: &Value, headers: &[(&str, &str)]) -> (u16, String) {
    let mut req = authed(s, s.http.post(s.url("/graphql")).json(body));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("POST /graphql");
    (resp.status().as_u16(), resp.text().await.expect("body"))
}

async fn get_raw(s: &Server, path: &str) -> (u16, String) {
    let resp = authed(s, s.http.get(s.url(path))).send().await.expect("GET");
    (resp.status().as_u16(), resp.text().await.expect("body"))
}

async fn join(s: &Server, container: &str) {
    let m = "mutation($c: ID!) { containerJoinCen(input: {containerId: $c, cenId: \"e1\"}) { revision } }";
    s.gql(m, json!({"c": container})).await;
}

fn members(body: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let list = v["data"]["cen"]["containers"].as_array().cloned().unwrap_or_default();
    list.iter().filter_map(|c| c["id"].as_str().map(String::from)).collect()
}

#[tokio::test]
async fn reads_are_served_until_a_change_and_then_follow_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state.db"), &[]);
    let import = "mutation($i: CenImportInput!) { cenImport(input: $i) { revision } }";
    s.gql(import, json!({"i": {"cens": [{"id": "e1", "containerIds": ["c1", "c2"]}]}})).await;
    let hits = "leviathan_answer_cache_hits_total";
    let body = json!({"query": CEN, "variables": {"id": "e1"}});

    let (st, first) = post_raw(&s, &body, &[]).await;
    assert_eq!(st, 200, "{first}");
    assert_eq!(members(&first), ["c1", "c2"]);
    // The first run validates the document (the guarded path): its answer
    // is not kept; the second runs on the fast path, and is.
    assert_eq!(post_raw(&s, &body, &[]).await, (200, first.clone()));
    let before = metric(&s, hits).await;
    let (_, again) = post_raw(&s, &body, &[]).await;
    assert_eq!(again, first, "a hit answers the bytes of the run");
    assert_eq!(metric(&s, hits).await, before + 1);
    // GET of the same document and variables: the same answer, kept once.
    let q = format!("/graphql?query={}&variables={}", urlencode(CEN), urlencode(r#"{"id":"e1"}"#));
    assert_eq!(get_raw(&s, &q).await, (200, first.clone()));
    assert_eq!(metric(&s, hits).await, before + 2);
    // A client asking for a fresh answer gets a run.
    let (_, fresh) = post_raw(&s, &body, &[("cache-control", "no-cache")]).await;
    assert_eq!(fresh, first);
    assert_eq!(metric(&s, hits).await, before + 2);

    // A change: every way of reading shows it at once.
    join(&s, "c3").await;
    let (_, after) = post_raw(&s, &body, &[]).await;
    assert_eq!(members(&after), ["c1", "c2", "c3"]);
    assert_eq!(members(&get_raw(&s, &q).await.1), ["c1", "c2", "c3"]);

    // A persisted query by its hash alone follows changes too.
    let hash = sha256_hex(CEN);
    let pq = json!({"version": 1, "sha256Hash": hash});
    let by_hash = json!({"variables": {"id": "e1"}, "extensions": {"persistedQuery": pq}});
    post_raw(&s, &json!({"query": CEN, "variables": {"id": "e1"}, "extensions": {"persistedQuery": pq}}), &[]).await;
    assert_eq!(members(&post_raw(&s, &by_hash, &[]).await.1), ["c1", "c2", "c3"]);
    join(&s, "c4").await;
    assert_eq!(members(&post_raw(&s, &by_hash, &[]).await.1), ["c1", "c2", "c3", "c4"]);

    // The legacy read keeps its final body, and follows changes.
    let (st, legacy) = get_raw(&s, "/cen/e1").await;
    assert_eq!(st, 200, "{legacy}");
    let before = metric(&s, hits).await;
    assert_eq!(get_raw(&s, "/cen/e1").await, (200, legacy.clone()));
    assert_eq!(metric(&s, hits).await, before + 1);
    join(&s, "c5").await;
    let (_, legacy_after) = get_raw(&s, "/cen/e1").await;
    let v: Value = serde_json::from_str(&legacy_after).unwrap();
    assert!(v.to_string().contains("c5"), "{legacy_after}");
    assert_ne!(legacy_after, legacy);
}

/// The same bytes again, over POST (a persisted query's hash alone) and GET
/// (its query string): answered from the answer cache without asking the
/// document cache (nothing is parsed), still behind the token, and showing
/// a change at once.
#[tokio::test]
async fn repeated_bytes_are_answered_unparsed() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state.db"), &["--token", "t0k"]);
    let import = "mutation($i: CenImportInput!) { cenImport(input: $i) { revision } }";
    s.gql(import, json!({"i": {"cens": [{"id": "e1", "containerIds": ["c1", "c2"]}]}})).await;
    let (docs, hits) = ("leviathan_document_cache_hits_total", "leviathan_answer_cache_hits_total");
    let pq = json!({"version": 1, "sha256Hash": sha256_hex(CEN)});
    let by_hash = json!({"variables": {"id": "e1"}, "extensions": {"persistedQuery": pq}});
    let full = json!({"query": CEN, "variables": {"id": "e1"}, "extensions": {"persistedQuery": pq}});
    // Registered and validated, then run on the fast path and kept.
    let (_, first) = post_raw(&s, &full, &[]).await;
    assert_eq!(post_raw(&s, &full, &[]).await, (200, first.clone()));
    assert_eq!(members(&first), ["c1", "c2"]);
    // The hash alone: found through the document cache once, then by its
    // bytes alone.
    assert_eq!(post_raw(&s, &by_hash, &[]).await, (200, first.clone()));
    let (d0, h0) = (metric(&s, docs).await, metric(&s, hits).await);
    for _ in 0..3 {
        assert_eq!(post_raw(&s, &by_hash, &[]).await, (200, first.clone()));
    }
    assert_eq!(metric(&s, hits).await, h0 + 3);
    assert_eq!(metric(&s, docs).await, d0, "answered without the document cache");
    // The same over GET.
    let q = format!(
        "/graphql?variables={}&extensions={}",
        urlencode(r#"{"id":"e1"}"#),
        urlencode(&json!({"persistedQuery": pq}).to_string())
    );
    assert_eq!(get_raw(&s, &q).await, (200, first.clone()));
    let d1 = metric(&s, docs).await;
    assert_eq!(d1, d0 + 1, "the first GET finds the document");
    for _ in 0..3 {
        assert_eq!(get_raw(&s, &q).await, (200, first.clone()));
    }
    assert_eq!(metric(&s, docs).await, d1);
    assert_eq!(metric(&s, hits).await, h0 + 7);
    // Kept bytes are no way past the token.
    let resp = s.http.post(s.url("/graphql")).json(&by_hash).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = s.http.get(s.url(&q)).bearer_auth("wrong").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    // A change shows at once, by either way.
    join(&s, "c3").await;
    assert_eq!(members(&post_raw(&s, &by_hash, &[]).await.1), ["c1", "c2", "c3"]);
    assert_eq!(members(&get_raw(&s, &q).await.1), ["c1", "c2", "c3"]);
}

/// A document selecting a realization status or a host's liveness always
/// runs: none of its answers is kept.
#[tokio::test]
async fn documents_reading_more_than_the_topology_always_run() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state.db"), &[]);
    s.gql("mutation { cenCreate(input: {id: \"e1\"}) { revision } }", json!({})).await;
    let uncacheable = "leviathan_answer_cache_uncacheable_total";
    let u0 = metric(&s, uncacheable).await;
    let h0 = metric(&s, "leviathan_answer_cache_hits_total").await;
    for q in ["{ cen(id: \"e1\") { id status } }", "{ hosts { id up vtepAddress } }", "{ keptRevisions { newest } }"] {
        for _ in 0..2 {
            let (st, body) = post_raw(&s, &json!({"query": q}), &[]).await;
            assert_eq!(st, 200, "{body}");
            assert!(!body.contains("\"errors\""), "{body}");
        }
    }
    assert_eq!(metric(&s, uncacheable).await, u0 + 6);
    assert_eq!(metric(&s, "leviathan_answer_cache_hits_total").await, h0);
    assert_eq!(metric(&s, "leviathan_answer_cache_entries").await, 0);
}

#[tokio::test]
async fn zero_bytes_keeps_no_answer() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state.db"), &["--answer-cache-bytes", "0"]);
    let body = json!({"query": "{ cens { id } }"});
    let (_, a) = post_raw(&s, &body, &[]).await;
    let (_, b) = post_raw(&s, &body, &[]).await;
    assert_eq!(a, b);
    assert_eq!(metric(&s, "leviathan_answer_cache_hits_total").await, 0);
    assert_eq!(metric(&s, "leviathan_answer_cache_entries").await, 0);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn sha256_hex(text: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}
