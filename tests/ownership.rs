//! Leviathan touches only what it made: a namespace made by hand under its
//! prefix, and a link or bridge made by hand in its fabric, survive
//! reconcile and restart and are reported as foreign; one
//! server per prefix and per state file; a server that cannot listen, or
//! is not root, changes nothing; a container of another host leaves a made
//! CEN alone; after destroy nothing it recorded remains.
//!
//! They need root: in CI (`CI` set) they fail if they cannot run;
//! elsewhere they skip with a loud message. Each uses its own prefix.

mod common;

use common::kernel::*;
use common::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::process::Command;

const MAKE: &str =
    "mutation { cenImport(input: {cens: [{id: \"cen1\", containerIds: [\"c1\", \"c2\", \"c3\"]}]}) { revision } }";

fn ifindexes(p: &Prefix) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for ns in namespaces(&p.0) {
        for l in ip_json(&["-n", &ns, "link", "show"]).as_array().unwrap() {
            out.insert(format!("{ns}/{}", l["ifname"].as_str().unwrap()), l["ifindex"].as_u64().unwrap() as u32);
        }
    }
    out
}

fn owned_rows(state: &std::path::Path) -> i64 {
    let c = rusqlite::Connection::open(state).unwrap();
    c.query_row("SELECT count(*) FROM owned", [], |r| r.get(0)).unwrap()
}

/// Imports cen1 (three containers) and makes it.
async fn make_cen1(s: &Server) {
    s.gql(MAKE, json!({})).await;
    let d = s.gql("mutation { cenMake(input: {ids: [\"cen1\"]}) { cens { status } } }", json!({})).await;
    assert_eq!(d["cenMake"]["cens"][0]["status"], "READY", "{d}");
}

/// Runs `serve` expecting it to exit at once; returns its stderr.
fn serve_fails(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_leviathan"))
        .arg("serve")
        .args(args)
        .env_remove("LEVIATHAN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve {args:?} started");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[tokio::test]
async fn what_was_not_made_here_is_left_alone() {
    if !can_run("what_was_not_made_here_is_left_alone") {
        return;
    }
    let p = Prefix::new("o");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.db");
    // Someone else's namespace under our prefix.
    let stray = p.ns("stray");
    assert!(Command::new("ip").args(["netns", "add", &stray]).status().unwrap().success());
    let s = Server::start(&state, &["--prefix", &p.0]);
    make_cen1(&s).await;
    let r = s.gql("mutation { reconcile(input: {wait: true}) { done foreign } }", json!({})).await;
    assert_eq!(r["reconcile"]["done"], true);
    assert_eq!(r["reconcile"]["foreign"], json!([format!("namespace {stray}")]));
    assert!(namespaces(&p.0).contains(&stray), "reconcile removed a foreign namespace");
    // A restart adopts what it made and still leaves the stray alone.
    let before = ifindexes(&p);
    s.kill9();
    let s = Server::start(&state, &["--prefix", &p.0]);
    let r = s.gql("mutation { reconcile(input: {wait: true}) { foreign } }", json!({})).await;
    assert_eq!(r["reconcile"]["foreign"], json!([format!("namespace {stray}")]));
    assert_eq!(ifindexes(&p), before, "adoption changed what was already right");
    assert!(owned_rows(&state) > 0);
    let health: serde_json::Value = s.http.get(s.url("/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!((health["status"].as_str(), health["realizer"].as_str()), (Some("ok"), Some("running")), "{health}");
    // Destroy removes everything recorded, and only that.
    s.gql("mutation { cenDestroy(input: {ids: [\"cen1\"]}) { revision } }", json!({})).await;
    assert_eq!(namespaces(&p.0), [stray.clone()].into_iter().collect());
    assert_eq!(owned_rows(&state), 0, "the ledger still records something");
}

#[tokio::test]
async fn one_server_per_prefix_and_per_state_file() {
    if !can_run("one_server_per_prefix_and_per_state_file") {
        return;
    }
    let p = Prefix::new("o");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.db");
    let s = Server::start(&state, &["--prefix", &p.0]);
    make_cen1(&s).await;
    let kernel = ifindexes(&p);
    let rev = s.revision().await;

    // Same prefix, another state file, from another directory.
    let other = dir.path().join("other.db");
    let e = serve_fails(&["--listen", "127.0.0.1:0", "--prefix", &p.0, "--state", other.to_str().unwrap()]);
    assert!(e.contains(&format!("prefix '{}' is already in use", p.0)) && e.contains("process "), "{e}");
    // Same state file, even without realizing.
    let e = serve_fails(&["--listen", "127.0.0.1:0", "--no-realize", "--state", state.to_str().unwrap()]);
    assert!(e.contains("already in use") && e.contains("s.db"), "{e}");
    // A prefix that starts another server's prefix is not a prefix at all.
    let longer = format!("{}r-", p.0);
    let e = serve_fails(&["--listen", "127.0.0.1:0", "--prefix", &longer, "--state", other.to_str().unwrap()]);
    assert!(e.contains("no prefix is the start of another"), "{e}");
    // The first server's kernel state and store are untouched.
    assert_eq!(ifindexes(&p), kernel);
    assert_eq!(s.revision().await, rev);
    // And `cleanup` will not take a served prefix without --force, nor
    // run without an explicit one.
    let out = Command::new(env!("CARGO_BIN_EXE_leviathan")).args(["cleanup", "--prefix", &p.0]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("stop it first"));
    let out = Command::new(env!("CARGO_BIN_EXE_leviathan")).args(["cleanup"]).output().unwrap();
    assert!(!out.status.success());
    assert_eq!(ifindexes(&p), kernel);
}

#[tokio::test]
async fn a_server_that_cannot_serve_changes_nothing() {
    if !can_run("a_server_that_cannot_serve_changes_nothing") {
        return;
    }
    let p = Prefix::new("o");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.db");
    let s = Server::start(&state, &["--prefix", &p.0]);
    make_cen1(&s).await;
    s.kill9();
    let kernel = ifindexes(&p);
    // Its port is taken: it exits, having touched nothing.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let e = serve_fails(&["--listen", &addr, "--prefix", &p.0, "--state", state.to_str().unwrap()]);
    assert!(e.contains("binding"), "{e}");
    assert_eq!(ifindexes(&p), kernel);
    // A VTEP address no interface here has (TEST-NET-3), or an IPv6 one:
    // refused, naming it.
    let st = state.to_str().unwrap();
    let e =
        serve_fails(&["--listen", "127.0.0.1:0", "--prefix", &p.0, "--state", st, "--vtep-address", "203.0.113.77"]);
    assert!(e.contains("203.0.113.77") && e.contains("no interface"), "{e}");
    let e = serve_fails(&["--listen", "127.0.0.1:0", "--prefix", &p.0, "--state", st, "--vtep-address", "2001:db8::1"]);
    assert!(e.contains("must be IPv4"), "{e}");
    assert_eq!(ifindexes(&p), kernel);
    // Without root: refused, with the way out named.
    let e = {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
            .arg(env!("CARGO_BIN_EXE_leviathan"))
            .args(["serve", "--listen", "127.0.0.1:0", "--prefix", &p.0, "--state", "/tmp/never-written.db"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    assert!(e.contains("needs root") && e.contains("--no-realize"), "{e}");
    assert!(!std::path::Path::new("/tmp/never-written.db").exists());
    assert_eq!(ifindexes(&p), kernel);
}

#[tokio::test]
async fn a_container_of_another_host_leaves_a_made_cen_alone() {
    if !can_run("a_container_of_another_host_leaves_a_made_cen_alone") {
        return;
    }
    let p = Prefix::new("o");
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("s.db"), &["--prefix", &p.0]);
    make_cen1(&s).await;
    let join = "mutation($h: ID!) { containerJoinCen(input: {hostId: $h, containerId: \"cY\", cenId: \"cen1\"}) { revision } }";
    s.gql(join, json!({"h": "host1"})).await;
    let kernel = ifindexes(&p);
    s.gql(join, json!({"h": "host2"})).await;
    assert_eq!(ifindexes(&p), kernel, "a container of host2 changed host1's kernel");
    let d = s
        .gql(
            "{ cen(id: \"cen1\") { status } c: container(hostId: \"host2\", id: \"cY\") { status statusMessage } }",
            json!({}),
        )
        .await;
    assert_eq!(d["cen"]["status"], "READY");
    assert_eq!(d["c"]["status"], "PENDING");
    assert!(d["c"]["statusMessage"].as_str().unwrap().contains("host2"), "{d}");
    // Host-side interfaces say whose they are.
    let fabric = ip_json(&["-n", &p.fabric(), "link", "show"]);
    let aliases: Vec<&str> = fabric.as_array().unwrap().iter().filter_map(|l| l["ifalias"].as_str()).collect();
    assert!(aliases.contains(&"leviathan: CEN cen1"), "{aliases:?}");
    assert!(aliases.contains(&"leviathan: host1/c1 on CEN cen1"), "{aliases:?}");
}

/// Names of the links in a namespace.
fn link_names(ns: &str) -> std::collections::BTreeSet<String> {
    links(ns).into_keys().collect()
}

fn ip(args: &[&str]) {
    assert!(Command::new("ip").args(args).status().unwrap().success(), "ip {args:?}");
}

#[tokio::test]
async fn links_made_by_hand_in_the_fabric_are_foreign_and_left_alone() {
    if !can_run("links_made_by_hand_in_the_fabric_are_foreign_and_left_alone") {
        return;
    }
    let p = Prefix::new("o");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.db");
    let s = Server::start(&state, &["--prefix", &p.0]);
    make_cen1(&s).await;
    let fabric = p.fabric();
    let ours = link_names(&fabric);
    // A veth pair and a bridge made by hand in the fabric, under the prefix.
    let (fh0, fh1, fbr) = (format!("{}fh0", p.0), format!("{}fh1", p.0), format!("{}fbr", p.0));
    ip(&["-n", &fabric, "link", "add", &fh0, "type", "veth", "peer", "name", &fh1]);
    ip(&["-n", &fabric, "link", "add", &fbr, "type", "bridge"]);
    let strays: std::collections::BTreeSet<String> = [&fh0, &fh1, &fbr].into_iter().cloned().collect();
    let listed = json!([
        format!("link {fbr} in fabric namespace"),
        format!("link {fh0} in fabric namespace"),
        format!("link {fh1} in fabric namespace"),
    ]);
    // One of ours deleted by hand: repaired as before.
    let veth = links(&fabric)
        .into_iter()
        .find(|(n, l)| l.kind == "veth" && ours.contains(n))
        .map(|(n, _)| n)
        .expect("a veth of ours in the fabric");
    ip(&["-n", &fabric, "link", "del", &veth]);
    let r = s.gql("mutation { reconcile(input: {wait: true}) { done foreign } }", json!({})).await;
    assert_eq!(r["reconcile"]["done"], true);
    assert_eq!(r["reconcile"]["foreign"], listed);
    let now = link_names(&fabric);
    assert!(now.is_superset(&strays), "reconcile removed links made by hand: {now:?}");
    assert!(now.is_superset(&ours), "reconcile did not repair {veth}: {now:?}");
    // A change touching the fabric leaves them alone too.
    let join = "mutation { containerJoinCen(input: {containerId: \"c4\", cenId: \"cen1\"}) { revision } }";
    s.gql(join, json!({})).await;
    let r = s.gql("mutation { reconcile(input: {wait: true}) { done foreign } }", json!({})).await;
    assert_eq!(r["reconcile"]["foreign"], listed);
    assert!(link_names(&fabric).is_superset(&strays));
    assert!(link_names(&p.ns("c4")).contains("cen1"), "the join was realized");
    // After a restart: adopted, still foreign, still there; ours untouched.
    let before = ifindexes(&p);
    s.kill9();
    let s = Server::start(&state, &["--prefix", &p.0]);
    let r = s.gql("mutation { reconcile(input: {wait: true}) { done foreign } }", json!({})).await;
    assert_eq!(r["reconcile"]["foreign"], listed);
    assert_eq!(ifindexes(&p), before, "adoption changed something");
    // Destroy removes what was made here; the fabric stays for its strangers.
    s.gql("mutation { cenDestroy(input: {ids: [\"cen1\"]}) { revision } }", json!({})).await;
    assert_eq!(namespaces(&p.0), [fabric.clone()].into_iter().collect());
    let mut left = strays.clone();
    left.insert("lo".into());
    assert_eq!(link_names(&fabric), left);
    // The ledger forgot every link it recorded there; the fabric it keeps.
    assert_eq!(owned_rows(&state), 1, "the ledger still records links that are gone");
}

#[tokio::test]
async fn a_ledger_from_before_fabric_links_were_recorded_keeps_its_fabric() {
    if !can_run("a_ledger_from_before_fabric_links_were_recorded_keeps_its_fabric") {
        return;
    }
    let p = Prefix::new("o");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.db");
    let s = Server::start(&state, &["--prefix", &p.0]);
    make_cen1(&s).await;
    s.kill9();
    let fabric = p.fabric();
    let fabric_rows = || -> i64 {
        let c = rusqlite::Connection::open(&state).unwrap();
        c.query_row("SELECT count(*) FROM owned WHERE ns = ?1 AND link != ''", [&fabric], |r| r.get(0)).unwrap()
    };
    assert!(fabric_rows() > 0, "the fabric's links are recorded");
    {
        // As an older build left it: the fabric namespace recorded, not its links.
        let c = rusqlite::Connection::open(&state).unwrap();
        c.execute("DELETE FROM owned WHERE ns = ?1 AND link != ''", [&fabric]).unwrap();
        c.execute_batch("DROP TABLE ledger_meta").unwrap();
    }
    let before = ifindexes(&p);
    let s = Server::start(&state, &["--prefix", &p.0]);
    let r = s.gql("mutation { reconcile(input: {wait: true}) { done foreign } }", json!({})).await;
    assert_eq!(r["reconcile"]["foreign"], json!([]), "what an older build made is still its own");
    assert_eq!(ifindexes(&p), before);
    assert!(fabric_rows() > 0, "the fabric's links were taken into the ledger");
    // From then on a link made by hand there is foreign.
    let stray = format!("{}fbr", p.0);
    ip(&["-n", &fabric, "link", "add", &stray, "type", "bridge"]);
    let r = s.gql("mutation { reconcile(input: {wait: true}) { done foreign } }", json!({})).await;
    assert_eq!(r["reconcile"]["foreign"], json!([format!("link {stray} in fabric namespace")]));
}
