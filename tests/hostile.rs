//! Hostile and huge requests against the real binary: fan-out queries,
//! huge documents, cross-origin browsers, rebinding hosts, pages over big
//! lists, the graphql-http audit, shutdown during a long request.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// Imports `cens` CENs of `per` containers each (`c<i>` numbered across).
async fn import(s: &Server, cens: usize, per: usize, shared: bool) {
    let list: Vec<Value> = (0..cens)
        .map(|k| {
            let ids: Vec<String> =
                (0..per).map(|i| if shared { format!("c{i}") } else { format!("c{:05}", k * per + i) }).collect();
            json!({"id": format!("cen{k}"), "containerIds": ids})
        })
        .collect();
    s.gql("mutation($i: CenImportInput!) { cenImport(input: $i) { revision } }", json!({"i": {"cens": list}})).await;
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

async fn post_raw(s: &Server, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
    let mut req = s.http.post(s.url("/graphql")).body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (status, ct, resp.text().await.unwrap())
}

const FAN_OUT: &str =
    "{ cens { containers { cens { containers { cens { containers { cens { containers { id } } } } } } } } }";

#[tokio::test]
async fn a_fan_out_query_is_refused_before_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state.db"), &[]);
    // Two CENs over the same 30 containers: every level multiplies.
    import(&s, 2, 30, true).await;
    let (status, ct, body) =
        post_raw(&s, &[("content-type", "application/json")], &json!({"query": FAN_OUT}).to_string()).await;
    assert_eq!(status, 200, "{body}");
    assert!(ct.starts_with("application/json"), "{ct}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v.get("data").is_none(), "no data before execution: {v}");
    assert_eq!(v["errors"][0]["extensions"]["code"], "BAD_REQUEST", "{v}");
    let msg = v["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("--max-cost") && msg.contains("times"), "{msg}");

    let (status, ct, body) = post_raw(
        &s,
        &[("content-type", "application/json"), ("accept", "application/graphql-response+json")],
        &json!({"query": FAN_OUT}).to_string(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(ct.starts_with("application/graphql-response+json"), "{ct}");
    assert!(rss_kib(s.child.id()) < 100 * 1024, "resident memory {} KiB", rss_kib(s.child.id()));

    // With `first`, the same shape is cheap and served.
    let paged = "{ cens(first: 2) { containers(first: 3) { cens(first: 1) { containers(first: 2) { id } } } } }";
    let d = s.gql(paged, json!({})).await;
    assert_eq!(d["cens"][0]["containers"].as_array().unwrap().len(), 3);
    // Lists without `first` are counted at their real size: all the ids
    // are served.
    let d = s.gql("{ containers { id } containerCount cenCount }", json!({})).await;
    assert_eq!(d["containers"].as_array().unwrap().len(), 30);
    assert_eq!(d["containerCount"], 30);
    assert_eq!(d["cenCount"], 2);
}

#[tokio::test]
async fn huge_documents_and_many_errors_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state.db"), &[]);
    // 5 MB of unknown fields: refused by size before parsing.
    let doc = format!("{{ {} }}", "unknownField ".repeat(400_000));
    let (status, body) = s.post(&json!({"query": doc})).await;
    assert_eq!(status, 200);
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("--max-document-bytes"), "{body}");
    // Many tokens in few bytes.
    let doc = format!("{{{}}}", "a ".repeat(30_000));
    let (_, body) = s.post(&json!({"query": doc})).await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("--max-tokens"), "{body}");
    // 300 unknown fields: 300 validation errors, at most 100 answered.
    let doc = format!("{{ {} }}", (0..300).map(|i| format!("f{i}")).collect::<Vec<_>>().join(" "));
    let (_, body) = s.post(&json!({"query": doc})).await;
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 100, "{body}");
    assert!(errors[99]["message"].as_str().unwrap().contains("201 more errors"), "{}", errors[99]);
    // A fragment bomb is refused before validation expands it.
    let mut doc = String::from("{ ...F0 }");
    for i in 0..7 {
        doc.push_str(&format!(" fragment F{i} on Query {{ {} }}", format!("...F{} ", i + 1).repeat(10)));
    }
    doc.push_str(" fragment F7 on Query { revision }");
    let (_, body) = s.post(&json!({"query": doc})).await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("fragments are inlined"), "{body}");
    // The server still answers.
    assert!(s.revision().await >= 0);
}

#[tokio::test]
async fn browsers_from_other_origins_are_refused_and_curl_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state.db"), &["--cors-origin", "http://dash.example"]);
    let rev = s.revision().await;
    let mutation = r#"{"query":"mutation { cenCreate(input:{id:\"x\"}) { revision } }"}"#;
    let evil = [("origin", "http://evil.example"), ("content-type", "text/plain")];
    let (status, _, body) = post_raw(&s, &evil, mutation).await;
    assert_eq!(status, 403, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v.as_object().unwrap().keys().collect::<Vec<_>>(), ["errors"], "{v}");
    // text/plain without Origin: 415, nothing runs.
    let (status, _, _) = post_raw(&s, &[("content-type", "text/plain")], mutation).await;
    assert_eq!(status, 415);
    // The legacy routes.
    let resp = s
        .http
        .post(s.url("/cen/import"))
        .header("origin", "http://evil.example")
        .body(r#"{"cenList":[{"cenID":"y","containerIDs":["a","b"]}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    let legacy: Value = resp.json().await.unwrap();
    assert_eq!(legacy["status"], 403, "{legacy}");
    assert_eq!(s.revision().await, rev, "a refused request changed something");
    // A rebinding Host.
    let resp = s.http.get(s.url("/healthz")).header("host", "evil.example:8080").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    // Both websockets.
    for (path, proto) in [("/graphql/ws", "graphql-transport-ws"), ("/leviathan/monitor", "")] {
        let mut req = format!("ws://{}{path}", s.addr).into_client_request().unwrap();
        req.headers_mut().insert("origin", HeaderValue::from_static("http://evil.example"));
        if !proto.is_empty() {
            req.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("graphql-transport-ws"));
        }
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 403),
            other => panic!("{path}: expected a 403, got {:?}", other.map(|_| ())),
        }
    }
    // The configured origin and the server's own pass, and curl is unchanged.
    let (status, _, body) =
        post_raw(&s, &[("origin", "http://dash.example"), ("content-type", "application/json")], mutation).await;
    assert_eq!(status, 200, "{body}");
    let own = format!("http://{}", s.addr);
    let (status, _, body) =
        post_raw(&s, &[("origin", own.as_str()), ("content-type", "application/json")], r#"{"query":"{ revision }"}"#)
            .await;
    assert_eq!(status, 200, "{body}");
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-d",
            r#"{"cenList":[{"cenID":"z","containerIDs":["a"]}]}"#,
        ])
        .arg(s.url("/cen/import"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "204");
}

#[tokio::test]
async fn pages_walk_ten_thousand_containers_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state.db"), &[]);
    import(&s, 100, 100, false).await;
    let d = s.gql("{ containerCount cenCount }", json!({})).await;
    assert_eq!(d["containerCount"], 10_000);
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let d = s.gql("query($a: String) { containers(first: 1000, after: $a) { id } }", json!({"a": after})).await;
        let page: Vec<String> =
            d["containers"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()).collect();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 1000);
        after = page.last().cloned();
        seen.extend(page);
    }
    let mut want: Vec<String> = (0..10_000).map(|i| format!("c{i:05}")).collect();
    want.sort();
    assert_eq!(seen, want, "every id exactly once, in id order");
    // A relation list pages the same way.
    let d = s.gql(r#"{ cen(id: "cen3") { containers(first: 10, after: "c00305") { id } } }"#, json!({})).await;
    assert_eq!(d["cen"]["containers"][0]["id"], "c00306");
    assert_eq!(d["cen"]["containers"].as_array().unwrap().len(), 10);
}

/// The `graphql-http` npm package's audit suite (GraphQL over HTTP) against
/// the real server: no warning, no error.
#[tokio::test]
async fn graphql_http_audit_passes() {
    let node_dir = node_modules(&["graphql-http"]);
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state.db"), &[]);
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("node").arg("audit.mjs").arg(s.url("/graphql")).current_dir(&node_dir).output(),
    )
    .await
    .expect("audit timed out")
    .expect("node is needed for this test (Node 20+)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("audit: 0 warnings, 0 errors"), "{stdout}");
}

/// SIGTERM while a long query runs: the server stops accepting and exits
/// after the grace period instead of waiting for the query.
#[tokio::test]
async fn sigterm_during_a_long_request_exits() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        &dir.path().join("state.db"),
        &["--max-cost", "1000000000000", "--request-timeout", "600", "--shutdown-grace", "1"],
    );
    import(&s, 2, 40, true).await;
    let deep = "{ cens { containers { cens { containers { cens { containers { cens { containers { cens { containers \
                { id } } } } } } } } } } }";
    let url = s.url("/graphql");
    let http = s.http.clone();
    let long = tokio::spawn(async move {
        let _ = http.post(url).json(&json!({"query": deep})).send().await;
    });
    // The request is under way once the server has read it: wait until a
    // second connection sees the server answering, then signal.
    assert!(s.revision().await >= 0);
    let pid = s.child.id();
    std::process::Command::new("kill").arg(pid.to_string()).status().unwrap();
    let mut s = s;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            assert!(status.success() || status.code().is_some(), "{status:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the server did not exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    long.abort();
}

/// A gauge or counter of `/metrics`.
async fn metric(s: &Server, name: &str) -> u64 {
    let text = s.http.get(s.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = text.lines().find(|l| l.split_whitespace().next() == Some(name));
    line.unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}")).split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Polls `/metrics` until `name` has `want` (each poll is a round trip to
/// the server); fails after `bound`, which only catches a hang.
async fn await_metric(s: &Server, name: &str, want: u64, bound: Duration) {
    let end = std::time::Instant::now() + bound;
    loop {
        let v = metric(s, name).await;
        if v == want {
            return;
        }
        assert!(std::time::Instant::now() < end, "{name} stayed at {v} (waited for {want}) for {bound:?}");
        tokio::task::yield_now().await;
    }
}

/// A client that hangs up in the middle of a long request: the server stops
/// that request's work (hyper drops it; execution yields between fields, so
/// the drop takes effect) instead of running it to the end. The request is
/// a batch of 50,000 scans of 10,000 containers (`containerCount` with a
/// tag no container has: a small answer, no memory to speak of) that would
/// run for minutes; the test sees it running, hangs up, and waits for the
/// running count to fall back to 0 with the request counted as abandoned.
#[tokio::test]
async fn a_request_whose_client_hangs_up_stops() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state.db"), &["--max-batch", "1000", "--request-timeout", "3600"]);
    import(&s, 100, 100, false).await;
    let one = format!("{{ {} }}", (0..50).map(|i| format!("a{i}: containerCount(tag: \"none\")")).collect::<String>());
    let batch: Vec<Value> = (0..1000).map(|_| json!({"query": one})).collect();
    let body = serde_json::to_string(&batch).unwrap();
    let mut tcp = tokio::net::TcpStream::connect(&s.addr).await.unwrap();
    let head = format!(
        "POST /graphql HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        s.addr,
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body.as_bytes()).await.unwrap();
    await_metric(&s, "leviathan_graphql_requests_running", 1, Duration::from_secs(60)).await;
    assert_eq!(metric(&s, "leviathan_graphql_requests_abandoned_total").await, 0);
    drop(tcp);
    // The two are updated one after the other as the request's work is
    // dropped: wait for both, in whichever order they move.
    await_metric(&s, "leviathan_graphql_requests_abandoned_total", 1, Duration::from_secs(60)).await;
    await_metric(&s, "leviathan_graphql_requests_running", 0, Duration::from_secs(60)).await;
    assert_eq!(s.http.get(s.url("/healthz")).send().await.unwrap().status().as_u16(), 200);
}
