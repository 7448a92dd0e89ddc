//! The answer cache through the engine: a hit answers what a run answers,
//! a change of the topology makes the next read run, documents that read
//! more than the topology are never kept, the role check comes first, and
//! distinct variables never take the cache past its bound.

use super::tests::{fixture, Fixture};
use super::*;
use crate::auth::{Caller, Role};
use crate::graphql::Limits;
use crate::model::{Command, EntityKey, Standing, Status, StatusReport};
use async_graphql::{Request, Variables};
use serde_json::{json, Value as Json};
use std::sync::atomic::Ordering;

impl Fixture {
    /// A read as the HTTP route makes it: the answer's bytes, and whether
    /// they came from the answer cache.
    async fn read(&self, doc: &str, vars: Json) -> (Vec<u8>, bool) {
        self.read_as(doc, vars, None).await
    }

    async fn read_as(&self, doc: &str, vars: Json, caller: Option<Caller>) -> (Vec<u8>, bool) {
        let e = self.engine();
        let mut req = Request::new(doc).variables(Variables::from_json(vars));
        if let Some(c) = caller {
            req = req.data(c);
        }
        let entry = e.document(&req).expect("a document");
        let found = e.lookup("graphql", &req, &entry, false);
        if let Lookup::Hit(body, _) = found {
            return (body.to_vec(), true);
        }
        let resp = e.run(&self.schema, req, entry, None).await;
        let body = serde_json::to_vec(&resp).expect("JSON");
        if let (Lookup::Miss(t), true) = (found, resp.errors.is_empty()) {
            e.keep(t, body.clone().into());
        }
        (body, false)
    }
}

fn data(body: &[u8]) -> Json {
    serde_json::from_slice::<Json>(body).expect("JSON")["data"].clone()
}

const CEN: &str = "query($id: ID!) { cen(id: $id) { id wiringType containers { id } } }";

#[tokio::test]
async fn a_hit_answers_as_a_run_until_the_topology_changes() {
    let f = fixture(Limits::default());
    f.cen("e1", "c", 2).await;
    let (first, hit) = f.read(CEN, json!({"id": "e1"})).await;
    assert!(!hit);
    // The first run validated the document on the guarded path: not kept.
    assert!(f.engine().answers.is_empty());
    let (second, hit) = f.read(CEN, json!({"id": "e1"})).await;
    assert!(!hit);
    assert_eq!(first, second);
    let (again, hit) = f.read(CEN, json!({"id": "e1"})).await;
    assert!(hit, "the read after a fast-path run is served from the answer cache");
    assert_eq!(first, again);
    // Other variables, another answer.
    let (other, hit) = f.read(CEN, json!({"id": "nope"})).await;
    assert!(!hit);
    assert_eq!(data(&other), json!({"cen": null}));
    // A change: the next read runs and shows it.
    f.cen("e1", "c", 3).await;
    let (after, hit) = f.read(CEN, json!({"id": "e1"})).await;
    assert!(!hit, "a change makes the next read run");
    let ids = data(&after)["cen"]["containers"].as_array().map(Vec::len);
    assert_eq!(ids, Some(3), "{}", String::from_utf8_lossy(&after));
    // The list bounds moved: validated again on the guarded path, then kept.
    assert_eq!(f.read(CEN, json!({"id": "e1"})).await, (after.clone(), false));
    assert_eq!(f.read(CEN, json!({"id": "e1"})).await, (after, true));
    let stats = &f.engine().answers.stats;
    assert_eq!(stats.hits.load(Ordering::Relaxed), 2);
    assert!(stats.stale.load(Ordering::Relaxed) >= 1);
    // The stale entry was replaced, not kept beside the new one.
    assert_eq!(f.engine().answers.len(), 2);
}

/// A document selecting a realization status is never kept: each read
/// runs, and follows the status as the realizer reports it.
#[tokio::test]
async fn a_document_reading_the_realization_is_never_kept() {
    let f = fixture(Limits::default());
    f.cen("e1", "c", 2).await;
    let q = "{ cen(id: \"e1\") { id status statusMessage } }";
    let status = |b: &[u8]| data(b)["cen"]["status"].clone();
    let (a, hit) = f.read(q, json!({})).await;
    assert!(!hit);
    assert_eq!(status(&a), json!("PENDING"));
    let report = |s: Status, m: &str| Command::SetStatus {
        reports: vec![StatusReport {
            target: EntityKey::Cen("e1".into()),
            realization: Standing { status: s, message: Some(m.into()) },
            made: false,
            host: None,
        }],
    };
    f.service.execute(report(Status::Failed, "no room")).await.expect("a status report");
    let (b, hit) = f.read(q, json!({})).await;
    assert!(!hit);
    assert_eq!(status(&b), json!("FAILED"), "{}", String::from_utf8_lossy(&b));
    for _ in 0..3 {
        assert!(!f.read(q, json!({})).await.1, "never served from the cache");
    }
    assert_eq!(f.engine().answers.len(), 0);
    assert_eq!(f.engine().answers.stats.uncacheable.load(Ordering::Relaxed), 5);
    // Nor are mutations.
    let m = "mutation { cenCreate(input: {id: \"e9\"}) { revision } }";
    assert!(!f.read(m, json!({})).await.1);
    assert_eq!(f.engine().answers.len(), 0);
}

/// Every role may read (queries need `viewer`, the lowest), and no pure
/// field reads the caller: a viewer is served the answer an admin's read
/// kept, byte for byte.
#[tokio::test]
async fn the_answer_is_the_same_for_every_role() {
    let f = fixture(Limits::default());
    let q = "{ cens { id } revision }";
    let admin = Caller { actor: "root".into(), role: Role::Admin };
    f.read(q, json!({})).await;
    let (kept, _) = f.read_as(q, json!({}), Some(admin)).await;
    let viewer = Caller { actor: "v".into(), role: Role::Viewer };
    assert_eq!(f.read_as(q, json!({}), Some(viewer)).await, (kept, true));
}

/// Reads with thousands of distinct variables (as a hostile client would
/// send) never take the answer cache past its bound.
#[tokio::test]
async fn distinct_variables_stay_within_the_bound() {
    let bound = 64 * 1024;
    let f = fixture(Limits { answer_cache_bytes: bound, ..Limits::default() });
    let answers = &f.engine().answers;
    for i in 0..3_000 {
        let id = format!("{i}-{}", "x".repeat(i % 50));
        f.read(CEN, json!({"id": id})).await;
        assert!(answers.bytes() <= bound, "after {i}: {} bytes, bound {bound}", answers.bytes());
    }
    assert!(answers.stats.evictions.load(Ordering::Relaxed) > 1_000);
    assert!(answers.len() > 10);
}

#[tokio::test]
async fn zero_bytes_turns_the_answer_cache_off() {
    let f = fixture(Limits { answer_cache_bytes: 0, ..Limits::default() });
    for _ in 0..3 {
        assert!(!f.read("{ cens { id } }", json!({})).await.1);
    }
    assert!(f.engine().answers.is_empty());
}
