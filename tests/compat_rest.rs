//! The legacy REST routes end to end: the real server binary, the real
//! `curl`, the original documentation's fixture files sent the way legacy
//! scripts send them (`curl -d @file`, form-urlencoded).

mod compat_common;
#[path = "common/kernel.rs"]
mod kernel;

use compat_common::{fixture, Server};
use kernel::{can_run, links, namespaces, ping, Prefix};
use serde_json::json;

const ALL_CENS: &str = r#"["cen1","cen2","cen3","cen4","cen5"]"#;

/// The original documentation's session, every status and body asserted,
/// and (as root) the kernel looked at after each step.
#[test]
fn documented_session() {
    let kernel = can_run("documented_session (kernel checks)").then(|| Prefix::new("r"));
    let s = match &kernel {
        Some(p) => Server::start_realized(&p.0),
        None => Server::start(),
    };

    // Import the CEN file with `curl -d @file`; importing again changes nothing.
    let r = s.post_file("/cen/import", &fixture("cen.json"));
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    let rev = s.revision();
    assert_eq!(s.post_file("/cen/import", &fixture("cen.json")).status, 204);
    assert_eq!(s.revision(), rev, "re-import changed something");

    let r = s.get("/cen/cen1");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
    assert_eq!(r.body, r#"{"cenID":"cen1","contIDs":["c1","c13","c14","c2"],"wiring_type":"bridge"}"#);
    assert_eq!(s.get("/cen/cen4").json(), json!({"cenID": "cen4", "contIDs": ["c11", "c12"], "wiring_type": "wire"}));
    assert_eq!(
        s.get("/cen/cen3").json(),
        json!({"cenID": "cen3", "contIDs": ["c10", "c11", "c15", "c16", "c9"], "wiring_type": "bridge"})
    );

    // Make the CENs.
    let r = s.post("/cen/make", ALL_CENS);
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    let made = s.graphql("{ cens { id made } }");
    assert!(made["cens"].as_array().unwrap().iter().all(|c| c["made"] == true), "{made}");
    if let Some(p) = &kernel {
        // Answered when done: every namespace and interface is there now.
        assert_eq!(namespaces(&p.0).len(), 16, "15 containers and the fabric");
        let c2 = links(&p.ns("c2"));
        assert!(c2["cen1"].up && c2["cen5"].up, "{c2:?}");
        assert_eq!(links(&p.ns("c11"))["cen4"].kind, "veth");
    }

    // Before any CIN, no address.
    assert_eq!(
        s.get("/host/host1/c1").json(),
        json!({"hostID": "host1", "containerID": "c1", "tag": null, "cens": ["cen1"],
               "interfaces": [{"cenID": "cen1", "name": "cen1", "ipaddress": null}]})
    );

    // Import the CIN file and make the CINs.
    let r = s.post_file("/cin/import", &fixture("cin.json"));
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    let r = s.post("/cin/make", r#"["cin1","cin2"]"#);
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    let cins = s.graphql(r#"{ a: cin(id: "cin1") { subnet made } b: cin(id: "cin2") { subnet made } }"#);
    assert_eq!(
        cins,
        json!({"a": {"subnet": "10.10.0.0/16", "made": true}, "b": {"subnet": "10.11.0.0/16", "made": true}})
    );

    let r = s.get("/host/host1/c1");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        r#"{"hostID":"host1","containerID":"c1","tag":null,"cens":["cen1"],"interfaces":[{"cenID":"cen1","name":"cen1","ipaddress":"10.10.0.10"}]}"#
    );
    if let Some(p) = &kernel {
        assert_eq!(links(&p.ns("c1"))["cen1"].addrs, ["10.10.0.10/16"]);
        assert_eq!(links(&p.ns("c4"))["cen2"].addrs, ["10.11.0.10/16"]);
        assert!(ping(&p.ns("c1"), "10.10.0.13"), "c1 cannot reach c14");
        assert!(!ping(&p.ns("c1"), "10.11.0.10"), "cin1 reaches cin2");
    }
    let c2 = s.get("/host/host1/c2").json();
    assert_eq!(c2["cens"], json!(["cen1", "cen5"]));
    assert_eq!(c2["interfaces"][0]["cenID"], "cen1");
    assert_eq!(c2["interfaces"][1], json!({"cenID": "cen5", "name": "cen5", "ipaddress": null}));

    // Add a container to a made CEN, read it, remove it.
    let r = s.curl("PUT", "/host/host1/c20/cen1", &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "true"));
    assert_eq!(s.get("/cen/cen1").json()["contIDs"], json!(["c1", "c13", "c14", "c2", "c20"]));
    let c20 = s.get("/host/host1/c20").json();
    assert_eq!(c20["cens"], json!(["cen1"]));
    let addr = c20["interfaces"][0]["ipaddress"].as_str().expect("c20 has an address").to_string();
    assert!(addr.starts_with("10.10.0."), "{addr}");
    if let Some(p) = &kernel {
        assert_eq!(links(&p.ns("c20"))["cen1"].addrs, [format!("{addr}/16")], "c20 wired at once");
        assert!(ping(&p.ns("c20"), "10.10.0.10"));
    }
    let r = s.curl("DELETE", "/host/host1/c20/cen1", &[]);
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    if let Some(p) = &kernel {
        assert!(!namespaces(&p.0).contains(&p.ns("c20")), "c20 unwired at once");
    }
    assert_eq!(s.get("/cen/cen1").json()["contIDs"], json!(["c1", "c13", "c14", "c2"]));
    assert_eq!(
        s.get("/host/host1/c20").json(),
        json!({"hostID": "host1", "containerID": "c20", "tag": null, "cens": [], "interfaces": []})
    );

    // A container on the host, then gone from everything.
    let r = s.curl("PUT", "/host/host1/c21", &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "true"));
    assert_eq!(s.curl("PUT", "/host/host1/c21", &[]).body, "true", "PUT is idempotent");
    assert_eq!(s.curl("PUT", "/host/host1/c21/cen2", &[]).status, 200);
    let r = s.curl("DELETE", "/host/host1/c21", &[]);
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    s.get("/host/host1/c21").assert_error(404, "c21");
    assert_eq!(s.get("/cen/cen2").json()["contIDs"], json!(["c4", "c5", "c6", "c7"]));

    // An empty CEN, created, read, deleted.
    let r = s.curl("PUT", "/cen/cen9", &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "true"));
    assert_eq!(s.curl("PUT", "/cen/cen9", &[]).status, 200, "PUT is idempotent");
    assert_eq!(s.get("/cen/cen9").body, r#"{"cenID":"cen9","contIDs":[],"wiring_type":null}"#);
    let r = s.curl("DELETE", "/cen/cen9", &[]);
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    s.get("/cen/cen9").assert_error(404, "cen9");

    // The pool file: `cinID` naming a CEN means that CEN.
    let r = s.post_file("/cpool", &fixture("cpool.json"));
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    let p = s.get("/host/host1/pool1-3").json();
    assert_eq!(p["cens"], json!(["cen1", "cen2"]));
    assert_eq!(s.get("/host/host1/pool2-1").json()["cens"], json!(["cen2"]));
    let pool = s.graphql(r#"{ cpool(id: "pool1") { type startWith cins { cinId defaultRoute } } }"#);
    assert_eq!(
        pool["cpool"],
        json!({"type": "ubuntu:14.04", "startWith": 3,
               "cins": [{"cinId": "cen1", "defaultRoute": true}, {"cinId": "cen2", "defaultRoute": false}]})
    );

    let r = s.get("/version");
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"version": env!("CARGO_PKG_VERSION")}));

    // Destroy the CINs, then the CENs.
    let r = s.post("/cin/destroy", r#"["cin1","cin2"]"#);
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    let r = s.post("/cen/destroy", ALL_CENS);
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    if let Some(p) = &kernel {
        assert_eq!(namespaces(&p.0).len(), 0, "destroy left {:?}", namespaces(&p.0));
    }
    let state = s.graphql("{ cens { made } cins { made } }");
    assert!(state["cens"].as_array().unwrap().iter().all(|c| c["made"] == false), "{state}");
    assert!(state["cins"].as_array().unwrap().iter().all(|c| c["made"] == false), "{state}");
    // Destroying an unmade CEN is a success.
    assert_eq!(s.post("/cen/destroy", r#"["cen1"]"#).status, 204);
    // The CINs stay defined.
    assert_eq!(s.get("/host/host1/c1").json()["interfaces"][0]["ipaddress"], "10.10.0.10");
}

/// `/cen/make` is an action under POST and a CEN id under GET, PUT, DELETE.
#[test]
fn cen_called_make() {
    let s = Server::start();
    s.get("/cen/make").assert_error(404, "make");
    assert_eq!(s.curl("PUT", "/cen/make", &[]).body, "true");
    assert_eq!(s.curl("PUT", "/cen/import", &[]).body, "true");
    assert_eq!(s.curl("PUT", "/host/host1/c1/make", &[]).status, 200);
    assert_eq!(s.get("/cen/make").json(), json!({"cenID": "make", "contIDs": ["c1"], "wiring_type": null}));
    assert_eq!(s.get("/cen/import").json()["cenID"], "import");
    assert_eq!(s.post("/cen/make", r#"["make","import"]"#).status, 204);
    assert_eq!(s.graphql(r#"{ cen(id: "make") { made } }"#)["cen"]["made"], true);
    assert_eq!(s.curl("DELETE", "/cen/make", &[]).status, 204);
    s.get("/cen/make").assert_error(404, "make");
    assert_eq!(s.post("/cen/destroy", r#"["import"]"#).status, 204);
    assert_eq!(s.curl("DELETE", "/cen/destroy", &[]).status, 404, "no CEN called destroy");
}

/// Every route of the spec's table answers its documented success status;
/// a route missing from the router fails here.
#[test]
fn every_route_of_the_table() {
    let s = Server::start();
    let cen = s.file("cen.json", br#"{"cenList": [{"cenID": "t1", "containerIDs": ["a", "b"]}]}"#);
    let cin = s.file("cin.json", br#"{"n1": ["t1"]}"#);
    let pool = s.file(
        "pool.json",
        br#"{"cpoolList": [{"cpoolID": "p", "type": "x", "start_with": 1, "cins": [{"cinID": "n1"}]}]}"#,
    );
    let list_t1 = s.file("t1.json", br#"["t1"]"#);
    let list_n1 = s.file("n1.json", br#"["n1"]"#);
    // (method, path as in the spec, concrete path, body file, status, body)
    type Row<'a> = (&'a str, &'a str, &'a str, Option<&'a std::path::Path>, u16, &'a str);
    let table: Vec<Row> = vec![
        ("POST", "/cen/import", "/cen/import", Some(&cen), 204, ""),
        ("POST", "/cen/make", "/cen/make", Some(&list_t1), 204, ""),
        ("POST", "/cen/destroy", "/cen/destroy", Some(&list_t1), 204, ""),
        ("POST", "/cin/import", "/cin/import", Some(&cin), 204, ""),
        ("POST", "/cin/make", "/cin/make", Some(&list_n1), 204, ""),
        ("POST", "/cin/destroy", "/cin/destroy", Some(&list_n1), 204, ""),
        ("POST", "/cpool", "/cpool", Some(&pool), 204, ""),
        ("PUT", "/cen/{cenId}", "/cen/t2", None, 200, "true"),
        ("GET", "/cen/{cenId}", "/cen/t2", None, 200, r#"{"cenID":"t2","contIDs":[],"wiring_type":null}"#),
        ("DELETE", "/cen/{cenId}", "/cen/t2", None, 204, ""),
        ("PUT", "/host/{hostId}/{containerId}/{cenId}", "/host/host1/c/t1", None, 200, "true"),
        ("DELETE", "/host/{hostId}/{containerId}/{cenId}", "/host/host1/c/t1", None, 204, ""),
        (
            "GET",
            "/host/{hostId}/{containerId}",
            "/host/host1/c",
            None,
            200,
            r#"{"hostID":"host1","containerID":"c","tag":null,"cens":[],"interfaces":[]}"#,
        ),
        ("PUT", "/host/{hostId}/{containerId}", "/host/host1/d", None, 200, "true"),
        ("DELETE", "/host/{hostId}/{containerId}", "/host/host1/d", None, 204, ""),
        ("GET", "/version", "/version", None, 200, ""),
    ];
    let ours: Vec<(&str, &str)> = table.iter().map(|t| (t.0, t.1)).collect();
    assert_eq!(ours, leviathan_rest_compat::ROUTES.to_vec(), "the crate's route list differs from this table");
    // This table is the spec's: read the route table of the contract itself
    // (docs/legacy-api.md, a copy of the original) and compare.
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/legacy-api.md")).unwrap();
    let spec: Vec<(String, String, u16)> = doc
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let method = *cells.get(1)?;
            if !["GET", "PUT", "POST", "DELETE"].contains(&method) {
                return None;
            }
            let path = cells.get(2)?.trim_matches('`').to_string();
            let status = cells.get(4)?.split_whitespace().next()?.trim_end_matches(',').parse().ok()?;
            Some((method.to_string(), path, status))
        })
        .collect();
    let mine: Vec<(String, String, u16)> = table.iter().map(|t| (t.0.to_string(), t.1.to_string(), t.4)).collect();
    assert_eq!(spec.len(), 16, "the spec's table: {spec:?}");
    assert_eq!(mine, spec, "this test's table differs from the spec's");
    for (method, pattern, path, file, status, body) in table {
        let r = match file {
            Some(f) => s.curl(method, path, &["-d", &format!("@{}", f.display())]),
            None => s.curl(method, path, &[]),
        };
        assert_eq!(r.status, status, "{method} {pattern}: {}", r.body);
        if pattern == "/version" {
            assert_eq!(r.json()["version"], env!("CARGO_PKG_VERSION"));
        } else {
            assert_eq!(r.body, body, "{method} {pattern}");
        }
    }
}

/// Bad requests on every route: documented status, legacy JSON body, and
/// nothing changed.
#[test]
fn bad_requests_change_nothing() {
    let s = Server::start();
    assert_eq!(s.post_file("/cen/import", &fixture("cen.json")).status, 204);
    assert_eq!(s.post_file("/cin/import", &fixture("cin.json")).status, 204);
    let rev = s.revision();
    let big = "x".repeat(70_000); // over the test server's --max-body 65536
    let big_file = s.file("big.json", format!(r#"["{big}"]"#).as_bytes());
    let big_arg = format!("@{}", big_file.display());

    // The body routes: malformed JSON, empty, wrong shape, invalid id, unknown id, too big.
    struct Case {
        path: &'static str,
        shape: &'static str,
        shape_msg: &'static str,
        invalid: &'static str,
        invalid_msg: &'static str,
        unknown: &'static str,
        unknown_msg: &'static str,
    }
    let cases = [
        Case {
            path: "/cen/import",
            shape: r#"{"cenList": [{"cenID": "cen1", "containerIDs": "c1"}]}"#,
            shape_msg: "cenList[0].containerIDs",
            invalid: r#"{"cenList": [{"cenID": "cen 1", "containerIDs": []}]}"#,
            invalid_msg: "cenList[0].cenID",
            unknown: "",
            unknown_msg: "",
        },
        Case {
            path: "/cen/make",
            shape: r#"{"ids": ["cen1"]}"#,
            shape_msg: "body: expected a list",
            invalid: r#"["cen1", "-x"]"#,
            invalid_msg: "body[1]",
            unknown: r#"["cen1", "cen2", "nope"]"#,
            unknown_msg: "nope",
        },
        Case {
            path: "/cen/destroy",
            shape: r#"["cen1", 2]"#,
            shape_msg: "body[1]",
            invalid: r#"["a/b"]"#,
            invalid_msg: "body[0]",
            unknown: r#"["nope", "cen1"]"#,
            unknown_msg: "nope",
        },
        Case {
            path: "/cin/import",
            shape: r#"{"cin3": "cen1"}"#,
            shape_msg: "cin3",
            invalid: r#"{"cin 3": ["cen1"]}"#,
            invalid_msg: "CIN id",
            unknown: r#"{"cin3": ["cen1"], "cin4": ["nope"]}"#,
            unknown_msg: "nope",
        },
        Case {
            path: "/cin/make",
            shape: r#""cin1""#,
            shape_msg: "body: expected a list",
            invalid: r#"[".cin"]"#,
            invalid_msg: "body[0]",
            unknown: r#"["cin1", "nope"]"#,
            unknown_msg: "nope",
        },
        Case {
            path: "/cin/destroy",
            shape: r#"[null]"#,
            shape_msg: "body[0]",
            invalid: r#"[""]"#,
            invalid_msg: "body[0]",
            unknown: r#"["nope"]"#,
            unknown_msg: "nope",
        },
        Case {
            path: "/cpool",
            shape: r#"{"cpoolList": [{"cpoolID": "p", "type": "t", "start_with": "3", "cins": []}]}"#,
            shape_msg: "cpoolList[0].start_with",
            invalid: r#"{"cpoolList": [{"cpoolID": "p q", "type": "t", "start_with": 3, "cins": []}]}"#,
            invalid_msg: "cpoolList[0].cpoolID",
            unknown: r#"{"cpoolList": [{"cpoolID": "p", "type": "t", "start_with": 3, "cins": [{"cinID": "nope"}]}]}"#,
            unknown_msg: "nope",
        },
    ];
    for c in &cases {
        s.post(c.path, "{").assert_error(400, "malformed JSON");
        s.post(c.path, "[1,").assert_error(400, "malformed JSON");
        s.curl("POST", c.path, &[]).assert_error(400, "missing JSON body");
        s.post(c.path, c.shape).assert_error(400, c.shape_msg);
        s.post(c.path, c.invalid).assert_error(400, c.invalid_msg);
        if !c.unknown.is_empty() {
            s.post(c.path, c.unknown).assert_error(404, c.unknown_msg);
        }
        s.curl("POST", c.path, &["--data-binary", &big_arg]).assert_error(413, "limit");
        let r = s.curl("GET", c.path, &[]);
        if c.path.starts_with("/cen/") {
            // Under GET, /cen/make is the CEN called make.
            r.assert_error(404, "no CEN");
        } else {
            r.assert_error(405, "does not take GET");
            assert_eq!(r.header("allow").as_deref(), Some("POST"), "{}", c.path);
        }
        let r = s.curl("PATCH", c.path, &["-d", "[]"]);
        r.assert_error(405, "PATCH");
        assert!(r.header("allow").unwrap_or_default().contains("POST"), "{}", c.path);
        assert_eq!(s.revision(), rev, "{} changed something", c.path);
    }
    // CPool specifics: default_route values, two default routes.
    let pool = |dr: &str| {
        format!(
            r#"{{"cpoolList": [{{"cpoolID": "p", "type": "t", "start_with": 1, "cins": [{{"cinID": "cin1", "default_route": {dr}}}]}}]}}"#
        )
    };
    s.post("/cpool", &pool(r#""yes""#)).assert_error(400, "default_route");
    s.post("/cpool", &pool("true")).assert_error(400, "default_route");
    s.post("/cpool", r#"{"cpoolList": [{"cpoolID": "p", "type": "t", "start_with": 1, "cins": [{"cinID": "cin1", "default_route": "true"}, {"cinID": "cin2", "default_route": "true"}]}]}"#).assert_error(409, "default route");
    s.post("/cpool", r#"{"cpool": []}"#).assert_error(400, "missing field 'cpoolList'");
    assert_eq!(s.revision(), rev, "/cpool changed something");

    // The path routes: invalid id, unknown id, wrong method, too big.
    s.get("/cen/a%20b").assert_error(400, "CEN id");
    s.curl("PUT", "/cen/.x", &[]).assert_error(400, "CEN id");
    s.curl("DELETE", "/cen/-x", &[]).assert_error(400, "CEN id");
    s.get("/cen/nope").assert_error(404, "nope");
    s.curl("DELETE", "/cen/nope", &[]).assert_error(404, "nope");
    let r = s.curl("POST", "/cen/cen1", &["-d", "[]"]);
    r.assert_error(405, "POST");
    assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD, PUT, DELETE"));
    s.curl("PUT", "/cen/cen7", &["--data-binary", &big_arg]).assert_error(413, "limit");

    s.curl("PUT", "/host/host1/c%2F1/cen1", &[]).assert_error(400, "container id");
    s.curl("PUT", "/host/ho%20st/c1/cen1", &[]).assert_error(400, "host id");
    s.curl("PUT", "/host/host1/c1/cen%3A1", &[]).assert_error(400, "CEN id");
    s.curl("PUT", "/host/host1/c1/nope", &[]).assert_error(404, "nope");
    s.curl("DELETE", "/host/host1/nope/cen1", &[]).assert_error(404, "nope");
    s.curl("DELETE", "/host/host1/c1/nope", &[]).assert_error(404, "nope");
    let r = s.get("/host/host1/c1/cen1");
    r.assert_error(405, "GET");
    assert_eq!(r.header("allow").as_deref(), Some("PUT, DELETE"));
    s.curl("PUT", "/host/host1/c1/cen1", &["--data-binary", &big_arg]).assert_error(413, "limit");

    s.get("/host/host1/c.1%22").assert_error(400, "container id");
    s.get("/host/host1/nope").assert_error(404, "nope");
    s.get("/host/host9/c1").assert_error(404, "host9");
    s.curl("DELETE", "/host/host1/nope", &[]).assert_error(404, "nope");
    s.curl("PUT", "/host/-h/c1", &[]).assert_error(400, "host id");
    let r = s.curl("POST", "/host/host1/c1", &["-d", "{}"]);
    r.assert_error(405, "POST");
    assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD, PUT, DELETE"));
    s.curl("PUT", "/host/host1/c1", &["--data-binary", &big_arg]).assert_error(413, "limit");

    let r = s.curl("POST", "/version", &["-d", "{}"]);
    r.assert_error(405, "POST");
    assert_eq!(r.header("allow").as_deref(), Some("GET, HEAD"));
    s.curl("GET", "/version", &["--data-binary", &big_arg]).assert_error(413, "limit");

    let r = s.curl("DELETE", "/leviathan/monitor", &[]);
    r.assert_error(405, "DELETE");
    s.get("/leviathan/monitor").assert_error(400, "websocket");

    assert_eq!(s.revision(), rev, "a failed request changed something");

    // And the good requests still work afterwards.
    assert_eq!(s.post("/cen/make", r#"["cen1","cen2"]"#).status, 204);
    assert!(s.revision() > rev);
}

/// With a token configured, every legacy route wants it (401, legacy body).
#[test]
fn token_guards_the_legacy_routes() {
    let s = Server::start_with(Some("s3cret"));
    let plain = std::process::Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", &s.url("/cen/cen1")])
        .output()
        .expect("curl");
    let out = String::from_utf8_lossy(&plain.stdout);
    let (body, code) = out.rsplit_once('\n').expect("status line");
    assert_eq!(code, "401");
    let v: serde_json::Value = serde_json::from_str(body).expect("JSON 401");
    assert_eq!(v["status"], 401);
    assert!(v["message"].as_str().is_some());
    // With the token (the helper sends it), the route answers.
    s.get("/cen/cen1").assert_error(404, "cen1");
    assert_eq!(s.get("/version").status, 200);
}
