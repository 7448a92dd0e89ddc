//! End-to-end: time travel over HTTP (the real binary, SQLite): `at` reads
//! as the topology stood, `diff` agrees with two `at` reads, `history`
//! lists the changes of one object, GONE / BAD_REQUEST at the edges, and
//! all of it the same after a restart.

mod common;

use common::*;
use serde_json::{json, Value};

const AT: &str = r#"query($r: Int!) { at(revision: $r) {
  revision atMs cenCount containerCount
  cen(id: "e1") { id size containers { id tag cens { id } } }
  containers { id tag interfaces { name cen { id size } } }
} }"#;

const DIFF: &str = r#"query($f: Int!, $t: Int, $n: Int, $a: String) {
  diff(from: $f, to: $t, first: $n, after: $a) { kind id hostId container op before after cursor }
}"#;

const HISTORY: &str = r#"query($k: EntityKind!, $id: ID!, $c: ID, $n: Int, $a: Int) {
  history(kind: $k, id: $id, container: $c, first: $n, after: $a) { revision atMs actor mutation op before after }
}"#;

async fn run(s: &Server, m: &str) -> i64 {
    let data = s.gql(&format!("mutation {{ {m} {{ revision }} }}"), json!({})).await;
    data.as_object().unwrap().values().next().unwrap()["revision"].as_i64().unwrap()
}

/// Every page of a diff, following the cursors two at a time.
async fn diff_all(s: &Server, from: i64, to: i64) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    loop {
        let after = out.last().map(|e| e["cursor"].clone()).unwrap_or(Value::Null);
        let page =
            s.gql(DIFF, json!({"f": from, "t": to, "n": 2, "a": after})).await["diff"].as_array().unwrap().clone();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// The objects of an `at` read, keyed for comparison with a diff.
fn at_objects(at: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = at["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| ("CONTAINER".into(), c["id"].as_str().unwrap().into()))
        .collect();
    v.sort();
    v
}

async fn check(s: &Server, revs: &[i64]) {
    let [r_cen, r_a, r_b, r_join, r_tag, r_leave, r_del] = revs.try_into().unwrap();
    // Right after the joins: e1 has a and b, untagged.
    let at = s.gql(AT, json!({"r": r_join})).await["at"].clone();
    assert_eq!(at["revision"], r_join);
    assert!(at["atMs"].as_f64().unwrap() > 1.0e12, "{at}");
    let members: Vec<&str> =
        at["cen"]["containers"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(members, ["a", "b"]);
    assert_eq!(at["cen"]["size"], 2);
    // Relations read at the revision too: b's interface shows e1 of size 2.
    assert_eq!(at["containers"][1]["interfaces"][0]["cen"]["size"], 2);
    assert_eq!(at["cen"]["containers"][0]["tag"], Value::Null);
    // After the tag, before the leave.
    let at = s.gql(AT, json!({"r": r_tag})).await["at"].clone();
    assert_eq!(at["cen"]["containers"][0]["tag"], "blue");
    // After the leave and the delete: e1 has no member, b is gone.
    let at = s.gql(AT, json!({"r": r_del})).await["at"].clone();
    assert_eq!(at["cen"]["size"], 0);
    assert_eq!(at_objects(&at), [("CONTAINER".to_string(), "a".to_string())]);
    // Only the CEN.
    let at = s.gql(AT, json!({"r": r_cen})).await["at"].clone();
    assert_eq!((at["cenCount"].as_i64(), at["containerCount"].as_i64()), (Some(1), Some(0)));
    let _ = (r_a, r_b);

    // diff agrees with the two reads: from the CEN alone to the end, the
    // host and a are created and b (made and deleted in between) is not there.
    // (A CEN's own record may or may not change with its members: left out.)
    let d: Vec<Value> = diff_all(s, r_cen, r_del).await.into_iter().filter(|e| e["kind"] != "CEN").collect();
    let kinds: Vec<(&str, &str, &str)> =
        d.iter().map(|e| (e["kind"].as_str().unwrap(), e["id"].as_str().unwrap(), e["op"].as_str().unwrap())).collect();
    assert_eq!(kinds, [("HOST", "host1", "CREATE"), ("CONTAINER", "a", "CREATE")], "{d:?}");
    assert_eq!(d[1]["before"], Value::Null);
    assert_eq!(d[1]["after"]["tag"], "blue");
    // From the joins to the end: a tagged, b and both memberships deleted.
    let all = diff_all(s, r_join, r_del).await;
    let d: Vec<Value> = all.iter().filter(|e| e["kind"] != "CEN").cloned().collect();
    let kinds: Vec<(&str, &str, &str)> =
        d.iter().map(|e| (e["kind"].as_str().unwrap(), e["id"].as_str().unwrap(), e["op"].as_str().unwrap())).collect();
    assert_eq!(
        kinds,
        [
            ("CONTAINER", "a", "UPDATE"),
            ("CONTAINER", "b", "DELETE"),
            ("MEMBERSHIP", "e1", "DELETE"),
            ("MEMBERSHIP", "e1", "DELETE")
        ],
        "{d:?}"
    );
    assert_eq!((d[2]["container"].as_str(), d[3]["container"].as_str()), (Some("a"), Some("b")));
    assert_eq!(d[1]["after"], Value::Null);
    // `to` defaults to the current revision; an empty range is empty.
    assert_eq!(s.gql(DIFF, json!({"f": r_join})).await["diff"].as_array().unwrap().len(), all.len());
    assert!(s.gql(DIFF, json!({"f": r_del, "t": r_del})).await["diff"].as_array().unwrap().is_empty());

    // history of container a: created, tagged (newest first); paged.
    let h = s.gql(HISTORY, json!({"k": "CONTAINER", "id": "a"})).await["history"].clone();
    let ops: Vec<(i64, &str, &str)> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["revision"].as_i64().unwrap(), e["op"].as_str().unwrap(), e["mutation"].as_str().unwrap()))
        .collect();
    assert_eq!(ops, [(r_tag, "UPDATE", "containerSetTag"), (r_a, "CREATE", "containerCreate")]);
    assert_eq!(h[0]["before"]["tag"], Value::Null);
    assert_eq!(h[0]["after"]["tag"], "blue");
    assert_eq!(h[0]["actor"], "anonymous");
    let older = s.gql(HISTORY, json!({"k": "CONTAINER", "id": "a", "a": r_tag})).await["history"].clone();
    assert_eq!(older.as_array().unwrap().len(), 1);
    assert_eq!(older[0]["revision"], r_a);
    // A membership: joined, left.
    let h = s.gql(HISTORY, json!({"k": "MEMBERSHIP", "id": "e1", "c": "a"})).await["history"].clone();
    let ops: Vec<&str> = h.as_array().unwrap().iter().map(|e| e["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["DELETE", "CREATE"]);
    // a left one revision before b.
    assert_eq!(h[0]["revision"], r_leave - 1);

    let kept = s.gql("{ keptRevisions { oldest newest } }", json!({})).await["keptRevisions"].clone();
    assert_eq!(kept["newest"], r_del);
}

#[tokio::test]
async fn at_diff_and_history_over_http_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let s = Server::start(&state, &["--history-every", "2"]);
    let revs = vec![
        run(&s, r#"cenCreate(input: {id: "e1"})"#).await,
        run(&s, r#"containerCreate(input: {id: "a"})"#).await,
        run(&s, r#"containerCreate(input: {id: "b"})"#).await,
        {
            run(&s, r#"containerJoinCen(input: {containerId: "a", cenId: "e1"})"#).await;
            run(&s, r#"containerJoinCen(input: {containerId: "b", cenId: "e1"})"#).await
        },
        run(&s, r#"containerSetTag(input: {id: "a", tag: "blue"})"#).await,
        {
            run(&s, r#"containerLeaveCen(input: {containerId: "a", cenId: "e1"})"#).await;
            run(&s, r#"containerLeaveCen(input: {containerId: "b", cenId: "e1"})"#).await
        },
        run(&s, r#"containerDelete(input: {id: "b"})"#).await,
    ];
    check(&s, &revs).await;
    // The edges: the future, a negative revision, from after to.
    let last = *revs.last().unwrap();
    let (code, msg) = s.gql_err(AT, json!({"r": last + 1})).await;
    assert_eq!(code, "BAD_REQUEST", "{msg}");
    assert!(msg.contains("ahead of the current revision"), "{msg}");
    assert_eq!(s.gql_err(AT, json!({"r": -1})).await.0, "BAD_REQUEST");
    assert_eq!(s.gql_err(DIFF, json!({"f": last, "t": 1})).await.0, "BAD_REQUEST");
    assert_eq!(s.gql_err(DIFF, json!({"f": 1, "n": 5000})).await.0, "BAD_REQUEST");
    let metrics = s.http.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("leviathan_history_snapshots "), "{metrics}");
    assert!(metrics.contains("leviathan_history_recent_changes "), "{metrics}");
    s.stop();

    // After a restart (the history rebuilt from the log), the same answers.
    let s = Server::start(&state, &["--history-every", "2"]);
    check(&s, &revs).await;
    s.stop();

    // A log that keeps 3 changes: older revisions are GONE, naming the oldest.
    let s = Server::start(&state, &["--keep-changes", "3"]);
    let last = run(&s, r#"cenCreate(input: {id: "e2"})"#).await;
    let (status, body) = s.post(&json!({"query": AT, "variables": {"r": 1}})).await;
    assert_eq!(status, 200);
    let e = &body["errors"][0];
    assert_eq!(e["extensions"]["code"], "GONE", "{body}");
    assert_eq!(e["extensions"]["oldest"], last - 3, "{body}");
    let kept = s.gql("{ keptRevisions { oldest newest } }", json!({})).await["keptRevisions"].clone();
    assert_eq!(kept, json!({"oldest": last - 3, "newest": last}));
    let at = s.gql(AT, json!({"r": last - 3})).await["at"].clone();
    assert_eq!(at["cenCount"], 1);
    assert_eq!(at["atMs"], Value::Null);
}

/// On etcd: changes made through one server read the same through
/// another (which saw them as remote changes), and again after it restarts
/// (its history rebuilt from the log in etcd).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_and_history_on_etcd_through_another_server_and_after_its_restart() {
    use leviathan::store::testing::{etcd_available, EtcdProcess};
    if !etcd_available("at_and_history_on_etcd_through_another_server_and_after_its_restart") {
        return;
    }
    let etcd = EtcdProcess::start("history");
    let a = common::etcd::etcd_server(&etcd.client_url, "ha", &["--history-every", "2"]);
    run(&a, r#"cenCreate(input: {id: "e1"})"#).await;
    run(&a, r#"containerCreate(input: {id: "a"})"#).await;
    let r_join = run(&a, r#"containerJoinCen(input: {containerId: "a", cenId: "e1"})"#).await;
    let r_tag = run(&a, r#"containerSetTag(input: {id: "a", tag: "blue"})"#).await;
    let r_leave = run(&a, r#"containerLeaveCen(input: {containerId: "a", cenId: "e1"})"#).await;
    let q = r#"query($r: Int!) { at(revision: $r) { cen(id: "e1") { size containers { id tag } } } }"#;
    let hq = r#"{ history(kind: CONTAINER, id: "a", hostId: "ha") { revision op } }"#;
    let dq = r#"query($f: Int!, $t: Int!) { diff(from: $f, to: $t) { kind id op } }"#;
    for round in 0..2 {
        let b = common::etcd::etcd_server(&etcd.client_url, "hb", &["--history-every", "2"]);
        until("b to catch up", || async { b.revision().await >= r_leave }).await;
        let at = b.gql(q, json!({"r": r_join})).await;
        assert_eq!(at["at"]["cen"], json!({"size": 1, "containers": [{"id": "a", "tag": null}]}), "round {round}");
        let at = b.gql(q, json!({"r": r_tag})).await;
        assert_eq!(at["at"]["cen"]["containers"][0]["tag"], "blue", "round {round}");
        let at = b.gql(q, json!({"r": r_leave})).await;
        assert_eq!(at["at"]["cen"]["size"], 0, "round {round}");
        let h = b.gql(hq, json!({})).await["history"].clone();
        let revs: Vec<i64> = h.as_array().unwrap().iter().map(|e| e["revision"].as_i64().unwrap()).collect();
        assert_eq!(revs, [r_tag, r_join - 1], "round {round}: {h}");
        let d = b.gql(dq, json!({"f": r_join, "t": r_tag})).await["diff"].clone();
        assert_eq!(d, json!([{"kind": "CONTAINER", "id": "a", "op": "UPDATE"}]), "round {round}");
        b.stop();
    }
}
