//! Resolvers tested in process (`schema.execute`), beside the end-to-end
//! tests in `tests/` that go through the binary and HTTP: a schema over a
//! service on a temporary SQLite file, no server, no kernel.

use super::{schema, LeviathanSchema};
use crate::service::Service;
use async_graphql::{Request, Variables};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;

/// A schema over a fresh service; the directory lives as long as the test.
fn fresh() -> (LeviathanSchema, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let service = Service::open(&dir.path().join("state.db"), "host1").expect("service on a fresh state file");
    (schema(service), dir)
}

/// Runs a document; answers its data, failing the test on any error.
async fn ok(s: &LeviathanSchema, doc: &str, vars: Value) -> Value {
    let resp = s.execute(Request::new(doc).variables(Variables::from_json(vars))).await;
    assert!(resp.errors.is_empty(), "{doc}: unexpected errors {:?}", resp.errors);
    resp.data.into_json().expect("data as JSON")
}

/// Runs a document that must fail; answers the first error's message and code.
async fn refused(s: &LeviathanSchema, doc: &str, vars: Value) -> (String, String) {
    let resp = s.execute(Request::new(doc).variables(Variables::from_json(vars))).await;
    let e = resp.errors.first().unwrap_or_else(|| panic!("{doc}: expected an error, got {:?}", resp.data));
    let code = e.extensions.as_ref().and_then(|x| x.get("code")).map(|c| c.to_string()).unwrap_or_default();
    (e.message.clone(), code.trim_matches('"').to_string())
}

const CEN_IMPORT: &str = "mutation($i: CenImportInput!) { cenImport(input: $i) { revision cens { id wiringType } } }";
const CIN_IMPORT: &str = "mutation($i: CinImportInput!) { cinImport(input: $i) { revision cins { id subnet } } }";

/// Two CENs: `front` (three members: a bridge) and `back` (two: a wire).
async fn two_cens(s: &LeviathanSchema) -> Value {
    let cens = json!({"cens": [
        {"id": "front", "containerIds": ["a", "b", "c"]},
        {"id": "back", "containerIds": ["c", "d"]},
    ]});
    ok(s, CEN_IMPORT, json!({ "i": cens })).await
}

#[tokio::test]
async fn queries_answer_what_mutations_made() {
    let (s, _dir) = fresh();
    let made = two_cens(&s).await;
    assert_eq!(made["cenImport"]["revision"], 1);
    let cens: Vec<_> = made["cenImport"]["cens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].clone(), c["wiringType"].clone()))
        .collect();
    assert_eq!(cens, [(json!("front"), json!("BRIDGE")), (json!("back"), json!("WIRE"))], "in the order given");

    let q = r#"{ revision hostId cenCount containerCount
                 cen(id: "front") { id size made status containers { id } cins { id } }
                 container(id: "c") { id host { id } cens { id } } }"#;
    let d = ok(&s, q, json!({})).await;
    assert_eq!(d["revision"], 1);
    assert_eq!(d["hostId"], "host1");
    assert_eq!(d["cenCount"], 2);
    assert_eq!(d["containerCount"], 4);
    assert_eq!(d["cen"]["containers"], json!([{"id": "a"}, {"id": "b"}, {"id": "c"}]));
    assert_eq!(d["cen"]["size"], 3);
    assert_eq!(d["cen"]["made"], false);
    assert_eq!(d["cen"]["status"], "PENDING");
    assert_eq!(d["container"]["host"]["id"], "host1");
    assert_eq!(d["container"]["cens"], json!([{"id": "back"}, {"id": "front"}]));

    let cin = ok(&s, CIN_IMPORT, json!({"i": {"cins": [{"id": "net", "cenIds": ["front"]}]}})).await;
    assert_eq!(cin["cinImport"]["cins"][0]["subnet"], "10.10.0.0/16");
    let members = ok(&s, r#"{ cin(id: "net") { gateways members { container { id } address } } }"#, json!({})).await;
    assert_eq!(members["cin"]["gateways"], json!(["10.10.0.1"]));
    let addrs: Vec<_> = members["cin"]["members"].as_array().unwrap().iter().map(|m| m["address"].clone()).collect();
    assert_eq!(addrs, [json!("10.10.0.10"), json!("10.10.0.11"), json!("10.10.0.12")]);
}

#[tokio::test]
async fn lists_page_by_first_and_after() {
    let (s, _dir) = fresh();
    two_cens(&s).await;
    let page = |after: Option<&str>| {
        let vars = json!({"after": after});
        let s = &s;
        async move { ok(s, "query($after: String) { containers(first: 3, after: $after) { id } }", vars).await }
    };
    assert_eq!(page(None).await["containers"], json!([{"id": "a"}, {"id": "b"}, {"id": "c"}]));
    assert_eq!(page(Some("c")).await["containers"], json!([{"id": "d"}]));
    assert_eq!(page(Some("d")).await["containers"], json!([]));
    let members = ok(&s, r#"{ cen(id: "front") { containers(first: 1, after: "a") { id } } }"#, json!({})).await;
    assert_eq!(members["cen"]["containers"], json!([{"id": "b"}]));
}

#[tokio::test]
async fn refused_mutations_carry_a_code_and_change_nothing() {
    let (s, _dir) = fresh();
    two_cens(&s).await;
    let (message, code) =
        refused(&s, r#"mutation { cenDelete(input: {id: "nowhere"}) { revision } }"#, json!({})).await;
    assert_eq!(code, "NOT_FOUND", "{message}");
    assert!(message.contains("nowhere"), "the message names the missing CEN: {message}");

    let bad = json!({"i": {"cens": [{"id": "ok", "containerIds": ["x"]}, {"id": "-bad", "containerIds": ["y"]}]}});
    let (message, code) = refused(&s, CEN_IMPORT, bad).await;
    assert_eq!(code, "BAD_REQUEST", "{message}");
    assert!(message.contains("-bad"), "the message names the bad id: {message}");

    let d = ok(&s, "{ revision cenCount containerCount }", json!({})).await;
    assert_eq!(d, json!({"revision": 1, "cenCount": 2, "containerCount": 4}), "the refused import changed nothing");
}

/// The next event of a subscription, within a bound that only catches hangs.
async fn next_event(stream: &mut (impl futures_util::Stream<Item = async_graphql::Response> + Unpin)) -> Value {
    let resp = tokio::time::timeout(Duration::from_secs(60), stream.next())
        .await
        .expect("an event within the bound")
        .expect("the stream goes on");
    assert!(resp.errors.is_empty(), "{:?}", resp.errors);
    resp.data.into_json().expect("event as JSON")
}

#[tokio::test]
async fn the_change_feed_replays_then_follows_live() {
    let (s, _dir) = fresh();
    two_cens(&s).await;
    let sub = Request::new("subscription { changes(since: 0) { revision mutation items { kind id op } } }");
    let mut stream = s.execute_stream(sub);
    let first = next_event(&mut stream).await;
    assert_eq!(first["changes"]["revision"], 1);
    assert_eq!(first["changes"]["mutation"], "cenImport");
    let kinds: Vec<_> = first["changes"]["items"].as_array().unwrap().iter().map(|i| i["kind"].clone()).collect();
    assert!(kinds.contains(&json!("CEN")) && kinds.contains(&json!("CONTAINER")), "{kinds:?}");

    ok(&s, r#"mutation { containerSetTag(input: {id: "a", tag: "web"}) { revision } }"#, json!({})).await;
    let live = next_event(&mut stream).await;
    assert_eq!(live["changes"]["revision"], 2);
    assert_eq!(live["changes"]["items"], json!([{"kind": "CONTAINER", "id": "a", "op": "UPDATE"}]));
}
