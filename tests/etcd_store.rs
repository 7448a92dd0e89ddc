//! Two (or more) `leviathan serve --etcd` servers on one etcd: a change made
//! through one is visible on the other at the same revision; concurrent
//! changes through both stay totally ordered and gapless; with etcd gone,
//! changes fail with UNAVAILABLE while queries answer; with etcd back, the
//! servers recover by themselves. Each test starts its own etcd (Debian's
//! `etcd-server`) and fails under `CI` when it is missing.

mod common;

use common::{until, Server, WAIT};
use leviathan::store::testing::{etcd_available, EtcdProcess};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn start(endpoints: &str, host: &str, extra: &[&str]) -> Server {
    common::etcd::etcd_server(endpoints, host, extra)
}

async fn cens(s: &Server) -> Vec<String> {
    let d = s.gql("{ cens { id } }", json!({})).await;
    d["cens"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()).collect()
}

const CREATE: &str = "mutation($id: ID!) { cenCreate(input: {id: $id}) { cen { id } revision } }";

/// `changes(since: 0)` of one server, up to `upto`.
async fn changes_since0(s: &Server, upto: i64) -> Vec<(i64, Value)> {
    common::changes_since0(&format!("ws://{}/graphql/ws", s.addr), None, upto).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_ordered_history() {
    if !etcd_available("two_servers_share_one_ordered_history") {
        return;
    }
    let etcd = EtcdProcess::start("two");
    let a = start(&etcd.client_url, "ha", &["--vtep-address", "192.0.2.1"]);
    let b = start(&etcd.client_url, "hb", &["--vtep-address", "192.0.2.2"]);
    // Each announces its VTEP address into the model: the first two changes.
    until("both hosts to be announced", || async { a.revision().await == 2 && b.revision().await == 2 }).await;
    let d = a.gql("{ hosts { id vtepAddress } }", json!({})).await;
    assert_eq!(d["hosts"], json!([{"id": "ha", "vtepAddress": "192.0.2.1"}, {"id": "hb", "vtepAddress": "192.0.2.2"}]));

    // A change through one is visible on the other, at the same revision.
    let d = a.gql(CREATE, json!({"id": "one"})).await;
    let r1 = d["cenCreate"]["revision"].as_i64().unwrap();
    assert_eq!(r1, 3);
    until("b to see revision 3", || async { b.revision().await == r1 }).await;
    assert_eq!(cens(&b).await, vec!["one"]);

    // Concurrent changes through both: every one acknowledged, one history.
    let mut tasks = Vec::new();
    for (i, s) in [&a, &b].into_iter().enumerate() {
        let (http, url) = (s.http.clone(), s.url("/graphql"));
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::new();
            for n in 0..15 {
                let body = json!({"query": CREATE, "variables": {"id": format!("s{i}n{n}")}});
                let v: Value = http.post(&url).json(&body).send().await.unwrap().json().await.unwrap();
                assert!(v.get("errors").is_none(), "{v}");
                revs.push(v["data"]["cenCreate"]["revision"].as_i64().unwrap());
            }
            revs
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    acked.sort();
    assert_eq!(acked, (4..=33).collect::<Vec<_>>(), "every change got its own revision");
    until("both at revision 33", || async { a.revision().await == 33 && b.revision().await == 33 }).await;
    assert_eq!(cens(&a).await, cens(&b).await);
    assert_eq!(cens(&a).await.len(), 31);
    let ha = changes_since0(&a, 33).await;
    let hb = changes_since0(&b, 33).await;
    assert_eq!(ha.iter().map(|(r, _)| *r).collect::<Vec<_>>(), (1..=33).collect::<Vec<_>>(), "gapless");
    assert_eq!(ha, hb, "the same history on both servers");

    // Hosts announce themselves: both up, with their VTEP addresses.
    let d = b.gql("{ host(id: \"hb\") { vtepAddress up } }", json!({})).await;
    assert_eq!(d["host"], json!({"vtepAddress": "192.0.2.2", "up": true}));
    // A server gone for good is down once its lease expired.
    b.kill9();
    until("hb to be down", || async {
        a.gql("{ host(id: \"hb\") { up } }", json!({})).await["host"]["up"] == json!(false)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_etcd_changes_are_unavailable_and_reads_answer_then_it_recovers() {
    if !etcd_available("without_etcd_changes_are_unavailable_and_reads_answer_then_it_recovers") {
        return;
    }
    let mut etcd = EtcdProcess::start("outage");
    let a = start(&etcd.client_url, "ha", &[]);
    let b = start(&etcd.client_url, "hb", &[]);
    a.gql(CREATE, json!({"id": "before"})).await;
    until("b at revision 1", || async { b.revision().await == 1 }).await;

    etcd.kill();
    // Once a has seen etcd go (its watch broke), a change is refused before
    // it is sent: UNAVAILABLE. (A change sent on the connection as it breaks
    // is rightly UNKNOWN_OUTCOME: etcd may have had it.)
    until("a to see etcd gone", || async {
        a.http.get(a.url("/healthz")).send().await.unwrap().status().as_u16() == 503
    })
    .await;
    let (code, message) = a.gql_err(CREATE, json!({"id": "during"})).await;
    assert_eq!(code, "UNAVAILABLE", "{message}");
    // The legacy routes say 503.
    let resp = a.http.put(a.url("/cen/during2")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    // Reads answer from the last known model, with its revision.
    assert_eq!(cens(&a).await, vec!["before"]);
    assert_eq!(b.revision().await, 1);
    assert_eq!(cens(&b).await, vec!["before"]);
    // Health says so.
    let resp = a.http.get(a.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let health: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        (health["status"].as_str(), health["store"]["kind"].as_str()),
        (Some("unavailable"), Some("etcd")),
        "{health}"
    );

    // etcd back: both servers reconnect by themselves.
    etcd.restart();
    etcd.wait_healthy();
    let deadline = Instant::now() + WAIT;
    let r = loop {
        let (_, body) = a.post(&json!({"query": CREATE, "variables": {"id": "after"}})).await;
        if let Some(r) = body["data"]["cenCreate"]["revision"].as_i64() {
            break r;
        }
        assert_eq!(body["errors"][0]["extensions"]["code"], json!("UNAVAILABLE"), "{body}");
        assert!(Instant::now() < deadline, "a did not take changes again: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    until("b to follow again", || async { b.revision().await == r }).await;
    assert_eq!(cens(&b).await, vec!["after", "before"]);
    b.gql(CREATE, json!({"id": "from-b"})).await;
    until("a to follow b", || async { a.revision().await == r + 1 }).await;
    assert_eq!(changes_since0(&a, r + 1).await, changes_since0(&b, r + 1).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_on_with_one_of_three_etcd_members_down() {
    if !etcd_available("writes_go_on_with_one_of_three_etcd_members_down") {
        return;
    }
    let mut members = EtcdProcess::cluster("three", 3);
    let urls = members.iter().map(|m| m.client_url.clone()).collect::<Vec<_>>().join(",");
    let a = start(&urls, "ha", &[]);
    let b = start(&urls, "hb", &[]);
    a.gql(CREATE, json!({"id": "x1"})).await;
    members[0].kill();
    // The other two keep a quorum: changes through both servers go on.
    let deadline = Instant::now() + WAIT;
    let r = loop {
        let (_, body) = a.post(&json!({"query": CREATE, "variables": {"id": "x2"}})).await;
        if let Some(r) = body["data"]["cenCreate"]["revision"].as_i64() {
            break r;
        }
        let code = body["errors"][0]["extensions"]["code"].as_str().unwrap_or("").to_string();
        // A change sent as the member went (or while the other two elect a
        // leader) may have committed: its outcome is unknown. Creating a CEN
        // is idempotent, so asking again answers its revision either way.
        // The client whose endpoint went away may need a moment to move on.
        assert!(code == "UNAVAILABLE" || code == "UNKNOWN_OUTCOME", "{body}");
        assert!(Instant::now() < deadline, "no change went through with one member down: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let d = b.gql(CREATE, json!({"id": "x3"})).await;
    assert_eq!(d["cenCreate"]["revision"].as_i64().unwrap(), r + 1);
    until("both at the same revision", || async { a.revision().await == r + 1 }).await;
    assert_eq!(cens(&a).await, vec!["x1", "x2", "x3"]);
    assert_eq!(changes_since0(&a, r + 1).await, changes_since0(&b, r + 1).await);
}
