//! End-to-end tests of the GraphQL API: the real binary, a temporary state
//! file, real HTTP.

mod common;

use common::*;
use serde_json::{json, Value};

const TOPOLOGY: &str = r#"{
  cens { id wiringType containers { id } }
  cins { id subnet gateways members { container { id } address } }
  containers { id host { id } cens { id } interfaces { name cen { id } address } }
}"#;

async fn import_fixtures(s: &Server) {
    s.gql(CEN_IMPORT, cen_file_vars(&fixture("cen.json"))).await;
    s.gql(CIN_IMPORT, cin_file_vars(&fixture("cin.json"))).await;
}

#[tokio::test]
async fn fixture_import_wiring_and_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state.db"), &[]);
    let data = s.gql(CEN_IMPORT, cen_file_vars(&fixture("cen.json"))).await;
    let wiring: Vec<(String, String)> = data["cenImport"]["cens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap().to_string(), c["wiringType"].as_str().unwrap().to_string()))
        .collect();
    for (id, w) in [("cen1", "BRIDGE"), ("cen2", "BRIDGE"), ("cen3", "BRIDGE"), ("cen4", "WIRE"), ("cen5", "WIRE")] {
        assert!(wiring.contains(&(id.to_string(), w.to_string())), "{id} should be {w}: {wiring:?}");
    }
    let q = "query($id: ID!) { container(id: $id) { cens { id } } }";
    let cens = |v: &Value| -> Vec<String> {
        v["container"]["cens"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(cens(&s.gql(q, json!({"id": "c2"})).await), ["cen1", "cen5"]);
    assert_eq!(cens(&s.gql(q, json!({"id": "c11"})).await), ["cen3", "cen4"]);

    s.gql(CIN_IMPORT, cin_file_vars(&fixture("cin.json"))).await;
    let cin1 = s.gql("{ cin(id: \"cin1\") { subnet gateways members { container { id } address } } }", json!({})).await;
    assert_eq!(cin1["cin"]["subnet"], "10.10.0.0/16");
    assert_eq!(cin1["cin"]["gateways"], json!(["10.10.0.1"]));
    let addrs: Vec<(&str, &str)> = cin1["cin"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["container"]["id"].as_str().unwrap(), m["address"].as_str().unwrap()))
        .collect();
    assert_eq!(addrs, [("c1", "10.10.0.10"), ("c2", "10.10.0.11"), ("c13", "10.10.0.12"), ("c14", "10.10.0.13")]);
    let cin2 = s.gql("{ cin(id: \"cin2\") { subnet } }", json!({})).await;
    assert_eq!(cin2["cin"]["subnet"], "10.11.0.0/16");

    // Importing the same files again changes nothing.
    let rev = s.revision().await;
    import_fixtures(&s).await;
    assert_eq!(s.revision().await, rev);
}

#[tokio::test]
async fn restart_gives_identical_answers() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let s = Server::start(&state, &[]);
    import_fixtures(&s).await;
    s.gql("mutation { containerSetTag(input: {id: \"c1\", tag: \"web\"}) { revision } }", json!({})).await;
    let before = s.gql(TOPOLOGY, json!({})).await;
    let rev = s.revision().await;
    s.stop();
    let s = Server::start(&state, &[]);
    assert_eq!(s.gql(TOPOLOGY, json!({})).await, before);
    assert_eq!(s.revision().await, rev);
}

#[tokio::test]
async fn acknowledged_changes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let s = Server::start(&state, &[]);
    s.gql("mutation { cenCreate(input: {id: \"k\"}) { revision } }", json!({})).await;
    let mut last = 0;
    for i in 0..50 {
        let d = s
            .gql(
                "mutation($c: ID!) { containerJoinCen(input: {containerId: $c, cenId: \"k\"}) { revision } }",
                json!({"c": format!("c{i}")}),
            )
            .await;
        last = d["containerJoinCen"]["revision"].as_i64().unwrap();
    }
    s.kill9();
    let s = Server::start(&state, &[]);
    assert_eq!(s.revision().await, last);
    let d = s.gql("{ cen(id: \"k\") { containers { id } } }", json!({})).await;
    assert_eq!(d["cen"]["containers"].as_array().unwrap().len(), 50);
}

async fn assert_refused(s: &Server, query: &str, variables: Value, code: &str, mentions: &str) {
    let rev = s.revision().await;
    let (got, message) = s.gql_err(query, variables).await;
    assert_eq!(got, code, "{query}: {message}");
    assert!(message.contains(mentions), "{query}: message {message:?} should mention {mentions:?}");
    assert_eq!(s.revision().await, rev, "{query} changed the revision");
}

#[tokio::test]
async fn bad_inputs_get_codes_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state.db"), &[]);
    import_fixtures(&s).await;
    let before = s.gql(TOPOLOGY, json!({})).await;

    assert_refused(&s, "mutation { cenCreate(input: {id: \"-x\"}) { revision } }", json!({}), "BAD_REQUEST", "-x")
        .await;
    assert_refused(&s, "mutation { cenCreate(input: {id: \"a/b\"}) { revision } }", json!({}), "BAD_REQUEST", "a/b")
        .await;
    let long = "x".repeat(65);
    assert_refused(
        &s,
        "mutation($id: ID!) { cenCreate(input: {id: $id}) { revision } }",
        json!({"id": long}),
        "BAD_REQUEST",
        "64",
    )
    .await;
    assert_refused(
        &s,
        CEN_IMPORT,
        json!({"input": {"cens": [{"id": "ok", "containerIds": ["fine", "not ok"]}]}}),
        "BAD_REQUEST",
        "not ok",
    )
    .await;
    assert_refused(&s, "mutation { cenDelete(input: {id: \"cen9\"}) { revision } }", json!({}), "NOT_FOUND", "cen9")
        .await;
    assert_refused(
        &s,
        "mutation { cenMake(input: {ids: [\"cen1\", \"cen2\", \"cen9\"]}) { revision } }",
        json!({}),
        "NOT_FOUND",
        "cen9",
    )
    .await;
    assert_refused(
        &s,
        CIN_IMPORT,
        json!({"input": {"cins": [{"id": "cin3", "cenIds": ["nope"]}]}}),
        "NOT_FOUND",
        "nope",
    )
    .await;
    assert_refused(&s, "mutation { containerDelete(input: {id: \"zz\"}) { revision } }", json!({}), "NOT_FOUND", "zz")
        .await;
    assert_refused(&s, "mutation { hostDelete(input: {id: \"host1\"}) { revision } }", json!({}), "CONFLICT", "host1")
        .await;
    assert_refused(&s, "{ cens { id ", json!({}), "BAD_REQUEST", "").await;
    assert_refused(&s, "{ nosuchfield }", json!({}), "BAD_REQUEST", "nosuchfield").await;
    assert_refused(&s, "mutation { cenCreate(input: {}) { revision } }", json!({}), "BAD_REQUEST", "id").await;
    // An Int over 32 bits inside an input object, as a literal and as a
    // variable: the client's fault, not the server's.
    let pool = |start: &str| {
        format!("mutation {{ cpoolImport(input: {{pools: [{{id: \"p\", type: \"x\", startWith: {start}, cins: []}}]}}) {{ revision }} }}")
    };
    assert_refused(&s, &pool("1099511627776"), json!({}), "BAD_REQUEST", "Int").await;
    assert_refused(
        &s,
        "mutation($i: CpoolImportInput!) { cpoolImport(input: $i) { revision } }",
        json!({"i": {"pools": [{"id": "p", "type": "x", "startWith": 1_099_511_627_776_i64, "cins": []}]}}),
        "BAD_REQUEST",
        "Int",
    )
    .await;
    // An invalid id is a bad request for cpoolDelete as for the others.
    assert_refused(&s, "mutation { cpoolDelete(input: {id: \"-p\"}) { revision } }", json!({}), "BAD_REQUEST", "-p")
        .await;
    assert_refused(&s, "mutation { cpoolDelete(input: {id: \"p9\"}) { revision } }", json!({}), "NOT_FOUND", "p9")
        .await;

    // Over-deep query.
    let mut deep = String::from("id");
    for _ in 0..20 {
        deep = format!("cens {{ containers {{ {deep} }} }}");
    }
    assert_refused(&s, &format!("{{ container(id: \"c1\") {{ {deep} }} }}"), json!({}), "BAD_REQUEST", "depth").await;
    // Too many aliases.
    let aliases: String = (0..100).map(|i| format!("a{i}: version ")).collect();
    assert_refused(&s, &format!("{{ {aliases} }}"), json!({}), "BAD_REQUEST", "aliases").await;

    // Malformed HTTP bodies.
    let rev = s.revision().await;
    let resp = s.http.post(s.url("/graphql")).body("{not json").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 415, "a POST without a JSON content type");
    let resp = s
        .http
        .post(s.url("/graphql"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST");
    // Oversized body.
    let big = format!("{{\"query\": \"{{ version }}\", \"x\": \"{}\"}}", "y".repeat(9 * 1024 * 1024));
    let resp = reqwest::Client::new()
        .post(s.url("/graphql"))
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    assert_eq!(resp.headers()["connection"], "close");
    // Mutations over GET are refused.
    let resp = s
        .http
        .get(s.url("/graphql"))
        .query(&[("query", "mutation { cenCreate(input: {id: \"viaget\"}) { revision } }")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(s.revision().await, rev);
    assert_eq!(s.gql(TOPOLOGY, json!({})).await, before);
}

#[tokio::test]
async fn token_guards_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state.db"), &["--token", "s3cret"]);
    s.gql("mutation { cenCreate(input: {id: \"a\"}) { revision } }", json!({})).await;
    let rev = s.revision().await;
    for path in ["/graphql", "/graphiql", "/schema.graphql", "/healthz"] {
        let resp = s.http.get(s.url(path)).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{path} without token");
        let resp = s.http.get(s.url(path)).bearer_auth("wrong").send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{path} with a wrong token");
    }
    for token in [None, Some("wrong"), Some("s3cre"), Some("s3cret2")] {
        let mut req = s
            .http
            .post(s.url("/graphql"))
            .json(&json!({"query": "mutation { cenCreate(input: {id: \"b\"}) { revision } }"}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    }
    assert_eq!(s.revision().await, rev);
    let resp = s.http.get(s.url("/healthz")).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

#[tokio::test]
async fn explorer_schema_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state.db"), &[]);
    let page = s.http.get(s.url("/graphiql")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("graphiql") || page.contains("GraphiQL"), "not the explorer");
    let sdl = s.http.get(s.url("/schema.graphql")).send().await.unwrap().text().await.unwrap();
    assert_eq!(sdl, leviathan::graphql::sdl());
    let health: Value = s.http.get(s.url("/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["store"], json!({"kind": "sqlite", "ok": true, "error": null}));
    assert_eq!(health["realizer"], "off (--no-realize)");
    let v = s.gql("{ version revision }", json!({})).await;
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn refuses_public_listen_without_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leviathan"))
        .args(["serve", "--no-realize", "--listen", "0.0.0.0:0", "--state"])
        .arg(dir.path().join("s.db"))
        .env_remove("LEVIATHAN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("without a token"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A user error is one line, without a backtrace, even with
/// `RUST_BACKTRACE` set in the environment.
#[test]
fn user_errors_print_no_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    for args in [vec!["--token", " "], vec!["--listen", "0.0.0.0:0"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_leviathan"))
            .args(["serve", "--no-realize", "--state"])
            .arg(dir.path().join("s.db"))
            .args(&args)
            .env_remove("LEVIATHAN_TOKEN")
            .env("RUST_BACKTRACE", "1")
            .env("RUST_LIB_BACKTRACE", "1")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
        assert!(lines[0].starts_with("error: --") || lines[0].starts_with("error: refusing"), "{stderr}");
        assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
    }
}

#[test]
fn refuses_foreign_and_newer_state_files() {
    let dir = tempfile::tempdir().unwrap();
    let foreign = dir.path().join("foreign.db");
    let c = rusqlite::Connection::open(&foreign).unwrap();
    c.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);").unwrap();
    drop(c);
    let err = leviathan::store::SqliteStore::open(&foreign, Default::default(), 100)
        .err()
        .expect("foreign file refused")
        .to_string();
    assert!(err.contains("not a leviathan state file"), "{err}");

    let newer = dir.path().join("newer.db");
    drop(leviathan::store::SqliteStore::open(&newer, Default::default(), 100).unwrap());
    let c = rusqlite::Connection::open(&newer).unwrap();
    c.pragma_update(None, "user_version", 99).unwrap();
    drop(c);
    let err = leviathan::store::SqliteStore::open(&newer, Default::default(), 100)
        .err()
        .expect("newer format refused")
        .to_string();
    assert!(err.contains("newer leviathan") && err.contains("format 99"), "{err}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leviathan"))
        .args(["serve", "--no-realize", "--listen", "127.0.0.1:0", "--state"])
        .arg(&newer)
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn metrics_and_cors() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state.db"), &["--token", "t0k", "--cors-origin", "http://dash.example"]);
    s.gql(CEN_IMPORT, cen_file_vars(&fixture("cen.json"))).await;
    let resp = s.http.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401, "metrics are behind the token too");
    let text = s.http.get(s.url("/metrics")).bearer_auth("t0k").send().await.unwrap().text().await.unwrap();
    assert!(text.contains("leviathan_revision 1\n"), "{text}");
    assert!(text.contains("leviathan_objects{kind=\"container\"} 15\n"), "{text}");
    assert!(text.contains("leviathan_realization{kind=\"cen\",status=\"PENDING\"} 5\n"), "{text}");

    let preflight = |origin: &'static str| {
        s.http
            .request(reqwest::Method::OPTIONS, s.url("/graphql"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "authorization, content-type")
            .send()
    };
    let ok = preflight("http://dash.example").await.unwrap();
    assert_eq!(
        ok.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap()),
        Some("http://dash.example")
    );
    let other = preflight("http://elsewhere.example").await.unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none(), "{:?}", other.headers());
    // A cross-origin request still needs the token.
    let resp = s
        .http
        .post(s.url("/graphql"))
        .header("Origin", "http://dash.example")
        .body("{\"query\":\"{ revision }\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
}

#[tokio::test]
async fn containers_filters_combine() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state.db"), &[]);
    import_fixtures(&s).await;
    s.gql("mutation { containerSetTag(input: {id: \"c2\", tag: \"web\"}) { revision } }", json!({})).await;
    s.gql("mutation { containerSetTag(input: {id: \"c4\", tag: \"web\"}) { revision } }", json!({})).await;
    s.gql("mutation { containerCreate(input: {hostId: \"host2\", id: \"c1\"}) { revision } }", json!({})).await;
    let ids = |v: &Value| -> Vec<String> {
        v["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| format!("{}/{}", c["host"]["id"].as_str().unwrap(), c["id"].as_str().unwrap()))
            .collect()
    };
    let q = "query($h: ID, $cen: ID, $cin: ID, $tag: String) { containers(hostId: $h, cenId: $cen, cinId: $cin, tag: $tag) { id host { id } } }";
    let run = |vars: Value| {
        let s = &s;
        async move { ids(&s.gql(q, vars).await) }
    };
    assert_eq!(run(json!({"cen": "cen5"})).await, ["host1/c2", "host1/c3"]);
    assert_eq!(run(json!({"cin": "cin1"})).await, ["host1/c1", "host1/c13", "host1/c14", "host1/c2"]);
    assert_eq!(run(json!({"cin": "cin1", "cen": "cen5"})).await, ["host1/c2"]);
    assert_eq!(run(json!({"tag": "web"})).await, ["host1/c2", "host1/c4"]);
    assert_eq!(run(json!({"tag": "web", "cin": "cin2"})).await, ["host1/c4"]);
    assert_eq!(run(json!({"h": "host2"})).await, ["host2/c1"]);
    assert_eq!(run(json!({"h": "host2", "cen": "cen1"})).await, Vec::<String>::new());
    assert_eq!(run(json!({"cin": "nope"})).await, Vec::<String>::new());
    assert_eq!(run(json!({})).await.len(), 16);
}

fn sha256_hex(text: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Apollo's automatic persisted queries over POST and GET, `Cache-Control:
/// no-store` on GraphQL answers, and a persisted mutation refused on GET.
#[tokio::test]
async fn persisted_queries_over_post_and_get() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state.db"), &[]);
    import_fixtures(&s).await;
    let rev = s.revision().await;
    let q = "{ cen(id: \"cen1\") { id wiringType containers { id } } }";
    let ext = json!({"persistedQuery": {"version": 1, "sha256Hash": sha256_hex(q)}});
    let (status, body) = s.post(&json!({ "extensions": ext })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "PERSISTED_QUERY_NOT_FOUND", "{body}");
    assert_eq!(body["errors"][0]["message"], "PersistedQueryNotFound");
    assert!(body.get("data").is_none(), "{body}");
    let (status, registered) = s.post(&json!({ "query": q, "extensions": ext })).await;
    assert_eq!(status, 200, "{registered}");
    assert_eq!(registered["data"]["cen"]["containers"].as_array().map(Vec::len), Some(4), "{registered}");
    let (status, by_hash) = s.post(&json!({ "extensions": ext })).await;
    assert_eq!((status, &by_hash), (200, &registered));
    let resp = s.http.get(s.url("/graphql")).query(&[("extensions", ext.to_string())]).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert_eq!(resp.json::<Value>().await.unwrap(), registered);
    let wrong = json!({"persistedQuery": {"version": 1, "sha256Hash": sha256_hex("{ revision }")}});
    let (_, body) = s.post(&json!({ "query": q, "extensions": wrong })).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST", "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("not the SHA-256"), "{body}");
    // A mutation registered by POST is still refused on GET by its hash.
    let m = "mutation { cenDelete(input: {id: \"nope\"}) { deletedId } }";
    let mext = json!({"persistedQuery": {"version": 1, "sha256Hash": sha256_hex(m)}});
    let (_, body) = s.post(&json!({ "query": m, "extensions": mext })).await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("nope"), "{body}");
    let resp = s.http.get(s.url("/graphql")).query(&[("extensions", mext.to_string())]).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(s.revision().await, rev, "nothing changed");
}

/// Large answers are compressed as the client asks (gzip here, checked by
/// decompressing), small ones are not.
#[tokio::test]
async fn large_answers_are_compressed() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("state.db"), &[]);
    import_fixtures(&s).await;
    let body = json!({ "query": TOPOLOGY }).to_string();
    let send = |enc: &'static str, body: String| {
        s.http
            .post(s.url("/graphql"))
            .header("content-type", "application/json")
            .header("accept-encoding", enc)
            .body(body)
            .send()
    };
    let plain = send("identity", body.clone()).await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    let plain = plain.bytes().await.unwrap();
    assert!(plain.len() > 1024, "a large answer: {} bytes", plain.len());
    let gz = send("gzip", body).await.unwrap();
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    let gz = gz.bytes().await.unwrap();
    assert!(gz.len() < plain.len(), "{} >= {}", gz.len(), plain.len());
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut out).unwrap();
    let json = |b: &[u8]| serde_json::from_slice::<Value>(b).expect("a JSON answer");
    assert_eq!(json(&out), json(&plain));
    let small = send("gzip, br, zstd", json!({"query": "{ revision }"}).to_string()).await.unwrap();
    assert!(small.headers().get("content-encoding").is_none());
}
