//! The client verbs end to end: the real binary as a server, the same
//! binary as the client (`apply`, `get`, `watch`, `export`, `destroy`,
//! `delete`), everything checked against the GraphQL API.

mod common;

use common::cli::{cli, ok, Out};
use common::kernel;
use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/topology.yaml")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

const SNAPSHOT: &str = "{ revision
  containers { id host { id } tag netnsPath pool { id } cens { id } }
  cens { id made containers { id } }
  cins { id made cens { id } }
  cpools { id type startWith cins { cinId defaultRoute } }
}";

async fn snapshot(s: &Server) -> Value {
    let mut v = s.gql(SNAPSHOT, json!({})).await;
    v.as_object_mut().unwrap().remove("revision");
    v
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|x| x["id"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn apply_creates_then_changes_nothing_and_export_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("s.db"), &["--token", "t0k"]);
    let ex = example();
    let ex = ex.to_str().unwrap();

    let out = ok(&s, &["apply", ex]);
    assert!(out.contains("+ cen front: web1, web2, lb"), "{out}");
    assert!(out.contains("^ make cin public"), "{out}");
    assert!(out.contains("8 created, 0 changed, 4 made, 0 destroyed, 0 deleted"), "{out}");
    let d = s.gql(SNAPSHOT, json!({})).await;
    assert_eq!(ids(&d["cens"]), ["back", "front"]);
    assert!(d["cens"].as_array().unwrap().iter().all(|c| c["made"] == true));
    assert!(d["cins"].as_array().unwrap().iter().all(|c| c["made"] == true));
    assert_eq!(ids(&d["cens"][1]["containers"]), ["lb", "web1", "web2", "worker-1", "worker-2"]);
    let web1 = d["containers"].as_array().unwrap().iter().find(|c| c["id"] == "web1").unwrap();
    assert_eq!(web1["tag"], "web");
    assert_eq!(d["cpools"][0]["cins"], json!([{"cinId": "public", "defaultRoute": true}]));

    // The same file again: nothing is sent.
    let rev = s.revision().await;
    let out = ok(&s, &["apply", ex]);
    assert!(out.starts_with("No changes"), "{out}");
    assert_eq!(s.revision().await, rev);

    // export, then apply of the export, in both file formats: no change.
    for (fmt, name) in [("yaml", "export.yaml"), ("json", "export.json")] {
        let text = ok(&s, &["export", "-o", fmt]);
        let f = write(dir.path(), name, &text);
        let out = ok(&s, &["apply", f.to_str().unwrap(), "--prune"]);
        assert!(out.starts_with("No changes"), "{fmt}: {out}\n{text}");
        assert_eq!(s.revision().await, rev);
    }
    // Pictures name every object.
    let dot = ok(&s, &["export", "-o", "dot"]);
    assert!(dot.starts_with("graph leviathan {") && dot.contains("\"cen:front\" -- \"c:host1/web1\""), "{dot}");
    let mermaid = ok(&s, &["export", "-o", "mermaid"]);
    assert!(mermaid.starts_with("flowchart LR") && mermaid.contains("front (PENDING)"), "{mermaid}");
}

#[tokio::test]
async fn apply_of_a_changed_file_does_only_the_difference_and_prune_removes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("s.db"), &[]);
    ok(&s, &["apply", example().to_str().unwrap()]);
    // Something the file does not name.
    s.gql("mutation { cenCreate(input: {id: \"stray\"}) { revision } }", json!({})).await;
    s.gql("mutation { containerCreate(input: {id: \"loner\"}) { revision } }", json!({})).await;
    let before = s.revision().await;

    let changed = "
containers:
  - {id: web1, tag: web}
  - {id: web2, tag: web}
  - {id: db1, tag: primary}
cens:
  - {id: front, members: [web1, web2, web3], made: true}
  - {id: back, members: [web1, db1], made: true}
cins:
  - {id: public, cens: [front], made: true}
  - {id: private, cens: [back]}
pools:
  - {id: worker, type: 'ubuntu:24.04', startWith: 2, cins: [{cin: public, defaultRoute: true}]}
";
    let f = write(dir.path(), "changed.yaml", changed);
    let f = f.to_str().unwrap();
    let out = ok(&s, &["apply", f, "--dry-run"]);
    assert!(out.contains("Dry run: nothing was sent."), "{out}");
    assert_eq!(s.revision().await, before);

    let out = ok(&s, &["apply", f]);
    let plan: Vec<&str> = out.lines().filter(|l| l.starts_with("  ")).map(str::trim).collect();
    assert_eq!(
        plan,
        ["~ container db1: tag db -> primary", "~ cen front: +web3 -lb", "v destroy cin private"],
        "{out}"
    );
    // One change per line: a tag, one cenImport, one destroy.
    assert_eq!(s.revision().await, before + 3);
    let d = s.gql(SNAPSHOT, json!({})).await;
    let front = d["cens"].as_array().unwrap().iter().find(|c| c["id"] == "front").unwrap();
    assert_eq!(ids(&front["containers"]), ["web1", "web2", "web3", "worker-1", "worker-2"]);
    let private = d["cins"].as_array().unwrap().iter().find(|c| c["id"] == "private").unwrap();
    assert_eq!(private["made"], false);
    // Not named, not touched without --prune.
    assert!(ids(&d["cens"]).contains(&"stray".to_string()));

    let out = ok(&s, &["apply", f, "--prune"]);
    let plan: Vec<&str> = out.lines().filter(|l| l.starts_with("  ")).map(str::trim).collect();
    assert_eq!(plan, ["- cen stray", "- container lb", "- container loner"], "{out}");
    let d = s.gql(SNAPSHOT, json!({})).await;
    assert_eq!(ids(&d["cens"]), ["back", "front"]);
    let containers = ids(&d["containers"]);
    assert_eq!(containers, ["db1", "web1", "web2", "web3", "worker-1", "worker-2"]);
    assert!(ok(&s, &["apply", f, "--prune"]).starts_with("No changes"));
}

#[tokio::test]
async fn each_legacy_file_is_accepted_as_the_api_imports_it() {
    let dir = tempfile::tempdir().unwrap();
    let by_cli = Server::start(&dir.path().join("a.db"), &[]);
    let by_api = Server::start(&dir.path().join("b.db"), &[]);
    for f in ["cen.json", "cin.json", "cpool.json"] {
        let out = ok(&by_cli, &["apply", fixture(f).to_str().unwrap()]);
        assert!(out.contains("Done"), "{out}");
        assert!(ok(&by_cli, &["apply", fixture(f).to_str().unwrap()]).starts_with("No changes"));
    }
    by_api.gql(CEN_IMPORT, cen_file_vars(&fixture("cen.json"))).await;
    by_api.gql(CIN_IMPORT, cin_file_vars(&fixture("cin.json"))).await;
    by_api
        .gql(
            "mutation($i: CpoolImportInput!) { cpoolImport(input: $i) { revision } }",
            json!({"i": {"pools": [
                {"id": "pool1", "type": "ubuntu:14.04", "startWith": 3,
                 "cins": [{"cinId": "cen1", "defaultRoute": true}, {"cinId": "cen2"}]},
                {"id": "pool2", "type": "ubuntu:14.04", "startWith": 3, "cins": [{"cinId": "cen2"}]}]}}),
        )
        .await;
    assert_eq!(snapshot(&by_cli).await, snapshot(&by_api).await);
    // A legacy CIN map over a CEN the server lacks: the server says so,
    // and nothing changes.
    let rev = by_cli.revision().await;
    let f = write(dir.path(), "cin.json", "{\"cin9\": [\"nope\"]}");
    let out = cli(&by_cli, &["apply", f.to_str().unwrap()]);
    assert!(!out.ok && out.stderr.contains("nope"), "{}", out.stderr);
    assert_eq!(by_cli.revision().await, rev);
}

#[tokio::test]
async fn a_broken_file_names_its_line_and_field_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("s.db"), &[]);
    let cases: [(&str, &str, &[&str]); 5] = [
        (
            "typo.yaml",
            "cens:\n  - id: a\n    members: [c1]\n    mde: true\n",
            &["line 4", "cens[0].mde", "unknown field `mde`"],
        ),
        ("type.yaml", "cens:\n  - id: a\n    made: maybe\n", &["line 3", "cens[0].made"]),
        (
            "ref.yaml",
            "cens:\n  - id: a\ncins:\n  - id: n\n    cens: [a, b]\n",
            &["line 5", "cins[0].cens[1]", "CEN 'b'"],
        ),
        ("dup.json", "{\"cens\": [{\"id\": \"a\"},\n  {\"id\": \"a\"}]}", &["line 2", "cens[1].id", "listed twice"]),
        ("pool.json", "{\"pools\": [{\"id\": \"p\", \"type\": \"t\"}]}", &["pools[0]", "startWith"]),
    ];
    for (name, text, wants) in cases {
        let f = write(dir.path(), name, text);
        let out = cli(&s, &["apply", f.to_str().unwrap()]);
        assert!(!out.ok, "{name} was accepted");
        for w in wants {
            assert!(out.stderr.contains(w), "{name}: no {w:?} in {}", out.stderr);
        }
        assert!(out.stdout.is_empty(), "{name}: {}", out.stdout);
    }
    let out = cli(&s, &["apply", "/nonexistent.yaml"]);
    assert!(!out.ok && out.stderr.contains("/nonexistent.yaml"), "{}", out.stderr);
    assert_eq!(s.revision().await, 0);
}

#[tokio::test]
async fn get_tables_and_json_match_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("s.db"), &["--token", "g3t"]);
    ok(&s, &["apply", example().to_str().unwrap()]);

    let api = s
        .gql(
            "{ cens { id wiringType size made status statusMessage containers { id host { id } } cins { id } } }",
            json!({}),
        )
        .await;
    let cli_json: Value = serde_json::from_str(&ok(&s, &["get", "cens", "-o", "json"])).unwrap();
    assert_eq!(cli_json, api["cens"]);
    let yaml = ok(&s, &["get", "cens", "-o", "yaml"]);
    assert_eq!(yaml_serde::from_str::<Value>(&yaml).unwrap(), api["cens"], "{yaml}");

    let table = ok(&s, &["get", "cens"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("ID") && lines[0].contains("WIRING") && lines[0].contains("STATUS"), "{table}");
    assert!(lines[1].starts_with("back ") && lines[1].contains("WIRE") && lines[1].contains("PENDING"), "{table}");
    assert!(lines[2].starts_with("front") && lines[2].contains("BRIDGE"), "{table}");
    // Aligned: each column starts at the same place on every line.
    let col = lines[0].find("STATUS").unwrap();
    assert!(lines[1..].iter().all(|l| &l[col..col + 7] == "PENDING"), "{table}");

    // The API's container filters.
    let web = ok(&s, &["get", "containers", "--tag", "web", "-o", "json"]);
    let api = s.gql("{ containers(tag: \"web\") { id } }", json!({})).await;
    assert_eq!(ids(&serde_json::from_str(&web).unwrap()), ids(&api["containers"]));
    let in_back = ok(&s, &["get", "containers", "--cen", "back", "-o", "json"]);
    assert_eq!(ids(&serde_json::from_str(&in_back).unwrap()), ["db1", "web1"]);
    let in_private = ok(&s, &["get", "containers", "--cin", "private", "--host", "host1", "-o", "json"]);
    assert_eq!(ids(&serde_json::from_str(&in_private).unwrap()), ["db1", "web1"]);
    let table = ok(&s, &["get", "containers", "--cin", "private"]);
    assert!(table.lines().nth(1).unwrap().contains("back=10.11.0.11"), "{table}");
    for kind in ["hosts", "cins", "pools"] {
        let t = ok(&s, &["get", kind]);
        assert!(t.lines().count() >= 2, "{kind}: {t}");
    }
    let one: Value = serde_json::from_str(&ok(&s, &["get", "cins", "public", "-o", "json"])).unwrap();
    assert_eq!(one["subnet"], "10.10.0.0/16");
    let out = cli(&s, &["get", "cens", "nope"]);
    assert!(!out.ok && out.stderr.contains("no CEN 'nope'"), "{}", out.stderr);
    // Without the token: refused, said plainly.
    let out = Command::new(env!("CARGO_BIN_EXE_leviathan"))
        .args(["get", "cens", "--server", &s.url("")])
        .env_remove("LEVIATHAN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("UNAUTHENTICATED"));
}

#[tokio::test]
async fn destroy_unmakes_and_delete_removes_what_the_file_names() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("s.db"), &[]);
    let ex = example();
    let ex = ex.to_str().unwrap();
    ok(&s, &["apply", ex]);
    s.gql("mutation { cenCreate(input: {id: \"other\"}) { revision } }", json!({})).await;
    let out = ok(&s, &["destroy", ex]);
    assert!(out.contains("v destroy cin public") && out.contains("v destroy cen front"), "{out}");
    let d = s.gql(SNAPSHOT, json!({})).await;
    assert!(d["cens"].as_array().unwrap().iter().all(|c| c["made"] == false));
    assert!(d["cins"].as_array().unwrap().iter().all(|c| c["made"] == false));
    assert!(ok(&s, &["destroy", ex]).starts_with("No changes"));

    ok(&s, &["delete", ex]);
    let d = s.gql(SNAPSHOT, json!({})).await;
    assert_eq!(ids(&d["cens"]), ["other"]);
    assert_eq!(d["cins"], json!([]));
    assert_eq!(d["cpools"], json!([]));
    assert_eq!(d["containers"], json!([]));
    assert!(ok(&s, &["delete", ex]).starts_with("No changes"));
}

/// `leviathan serve` on a given address (to restart on the same one).
fn start_at(state: &Path, listen: &str) -> Server {
    Server::start_at(state, listen, &[])
}

#[tokio::test]
async fn listen_takes_a_bare_port_and_localhost_port() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let s = start_at(&dir.path().join("a.db"), &port.to_string());
    assert_eq!(s.addr, format!("127.0.0.1:{port}"));
    drop(s);
    let port = free_port();
    let s = start_at(&dir.path().join("b.db"), &format!("localhost:{port}"));
    assert_eq!(s.addr, format!("127.0.0.1:{port}"));
}

/// Reads stdout lines of a child on a thread, into a channel.
fn lines_of(child: &mut std::process::Child) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

async fn next_line(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(60), rx.recv()).await.expect("no line within 60 s").expect("watch ended")
}

#[tokio::test]
async fn watch_prints_each_change_once_and_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.db");
    let listen = format!("127.0.0.1:{}", free_port());
    let s = start_at(&state, &listen);
    s.gql("mutation { cenCreate(input: {id: \"a\"}) { revision } }", json!({})).await;

    let spawn = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_leviathan"))
            .args(args)
            .args(["--server", &format!("http://{listen}")])
            .env_remove("LEVIATHAN_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut json_watch = spawn(&["watch", "--since", "0", "-o", "json"]);
    let mut text_watch = spawn(&["watch", "--since", "0"]);
    let mut jl = lines_of(&mut json_watch);
    let mut tl = lines_of(&mut text_watch);
    let first: Value = serde_json::from_str(&next_line(&mut jl).await).unwrap();
    assert_eq!(first["revision"], 1);
    assert_eq!(first["items"][0], json!({"kind": "CEN", "id": "a", "hostId": null, "op": "CREATE"}));
    let line = next_line(&mut tl).await;
    assert!(line.starts_with("rev 1") && line.contains("cenCreate") && line.contains("+cen a"), "{line}");

    s.gql("mutation { containerJoinCen(input: {containerId: \"c1\", cenId: \"a\"}) { revision } }", json!({})).await;
    let line = next_line(&mut tl).await;
    assert!(line.starts_with("rev 2") && line.contains("+container host1/c1 +member host1/c1 in a"), "{line}");
    assert_eq!(serde_json::from_str::<Value>(&next_line(&mut jl).await).unwrap()["revision"], 2);

    // The server goes away; a change is made while the watchers are
    // disconnected; they come back and print it, once.
    s.kill9();
    let s = start_at(&state, &listen);
    s.gql("mutation { cenCreate(input: {id: \"b\"}) { revision } }", json!({})).await;
    let line = next_line(&mut tl).await;
    assert!(line.starts_with("rev 3") && line.contains("+cen b"), "{line}");
    assert_eq!(serde_json::from_str::<Value>(&next_line(&mut jl).await).unwrap()["revision"], 3);
    s.gql("mutation { cenCreate(input: {id: \"c\"}) { revision } }", json!({})).await;
    assert!(next_line(&mut tl).await.starts_with("rev 4"));
    let _ = json_watch.kill();
    let _ = text_watch.kill();
    let _ = json_watch.wait();
    let _ = text_watch.wait();
}

#[tokio::test]
async fn apply_makes_it_in_the_kernel_and_a_refused_binding_exits_non_zero_with_the_reason() {
    if !kernel::can_run("apply_makes_it_in_the_kernel_and_a_failed_make_exits_non_zero_with_the_reason") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let prefix = kernel::Prefix::new("a");
    let s = Server::start(&dir.path().join("s.db"), &["--prefix", &prefix.0, "--reconcile-interval", "0"]);
    let out = cli(&s, &["apply", example().to_str().unwrap()]);
    assert!(out.ok && out.stdout.contains("Done"), "{}\n{}", out.stdout, out.stderr);
    // Progress came from the operation subscription: steps were counted.
    let steps = |stderr: &str, what: &str| -> u64 {
        let line = stderr.lines().find(|l| l.starts_with(what)).unwrap_or_else(|| panic!("no {what:?} in {stderr}"));
        line.rsplit_once('(').unwrap().1.split(' ').next().unwrap().parse().unwrap()
    };
    assert!(steps(&out.stderr, "make cen front, back: done") > 0, "{}", out.stderr);
    assert!(steps(&out.stderr, "make cin public, private: done") > 0, "{}", out.stderr);
    let d = s.gql("{ cens { id status } cins { id status } }", json!({})).await;
    for c in d["cens"].as_array().unwrap().iter().chain(d["cins"].as_array().unwrap()) {
        assert_eq!(c["status"], "READY", "{d}");
    }
    let names = kernel::namespaces(&prefix.0);
    for c in ["web1", "web2", "db1", "lb", "worker-1", "worker-2"] {
        assert!(names.contains(&prefix.ns(c)), "no namespace for {c}: {names:?}");
    }
    assert!(ok(&s, &["apply", example().to_str().unwrap()]).starts_with("No changes"));

    // A container bound to a namespace that does not exist is refused
    // before anything is made.
    let bad = "
containers:
  - {id: ghost, netnsPath: /proc/999999999/ns/net}
cens:
  - {id: haunted, members: [ghost, spare], made: true}
";
    let f = write(dir.path(), "bad.yaml", bad);
    let out = cli(&s, &["apply", f.to_str().unwrap()]);
    assert!(!out.ok, "a refused binding exited 0:\n{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("/proc/999999999/ns/net does not exist"), "{}", out.stderr);
    let d = s.gql("{ container(id: \"ghost\") { id } }", json!({})).await;
    assert!(d["container"].is_null(), "{d}");
    ok(&s, &["delete", f.to_str().unwrap()]);
    ok(&s, &["delete", example().to_str().unwrap()]);
    assert!(kernel::namespaces(&prefix.0).iter().all(|n| n == &prefix.fabric()), "{:?}", kernel::namespaces(&prefix.0));
}

#[tokio::test]
async fn members_on_other_hosts_round_trip_and_legacy_files_keep_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("s.db"), &[]);
    let text = "
hosts: [host3]
containers:
  - {id: far, host: host2, tag: edge}
cens:
  - {id: span, members: [near, host2/far]}
pools:
  - {id: p, host: host2, type: alpine, startWith: 1, cins: [{cin: span}]}
";
    let f = write(dir.path(), "hosts.yaml", text);
    let f = f.to_str().unwrap();
    let out = ok(&s, &["apply", f]);
    assert!(out.contains("+ host host3") && out.contains("+ container host2/far tag edge"), "{out}");
    let d = s.gql("{ hosts { id } cen(id: \"span\") { containers { id host { id } } } }", json!({})).await;
    assert_eq!(ids(&d["hosts"]), ["host1", "host2", "host3"]);
    let members: Vec<String> = d["cen"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| format!("{}/{}", c["host"]["id"].as_str().unwrap(), c["id"].as_str().unwrap()))
        .collect();
    assert_eq!(members, ["host1/near", "host2/far", "host2/p-1"]);
    assert!(ok(&s, &["apply", f]).starts_with("No changes"));
    let exported = ok(&s, &["export"]);
    assert!(exported.contains("host2/far") && exported.contains("host: host2"), "{exported}");
    let e = write(dir.path(), "export.yaml", &exported);
    assert!(ok(&s, &["apply", e.to_str().unwrap(), "--prune"]).starts_with("No changes"), "{exported}");

    // A legacy CEN file speaks for this server's host: host2's members stay.
    let legacy = write(dir.path(), "cen.json", r#"{"cenList": [{"cenID": "span", "containerIDs": ["other"]}]}"#);
    let out = ok(&s, &["apply", legacy.to_str().unwrap()]);
    assert!(out.contains("~ cen span: +other -near"), "{out}");
    let d = s.gql("{ cen(id: \"span\") { containers { id } } }", json!({})).await;
    assert_eq!(ids(&d["cen"]["containers"]), ["other", "far", "p-1"]);
}

#[tokio::test]
async fn the_server_logs_one_plain_line_per_change() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_leviathan"))
        .args(["serve", "--no-realize", "--listen", "0", "--state"])
        .arg(dir.path().join("s.db"))
        .env_remove("LEVIATHAN_TOKEN")
        .env_remove("LEVIATHAN_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening on ").unwrap().to_string();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let s = Server { child, addr, token: None, http: reqwest::Client::new() };
    ok(&s, &["apply", example().to_str().unwrap()]);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("rev 8 cinMake: ~cin private, ~cin public")) {
        let l = next_line(&mut rx).await;
        assert!(!l.contains('\x1b'), "colour codes off a terminal: {l:?}");
        seen.push(l);
    }
    let text = seen.join("\n");
    assert!(text.contains("rev 4 cenImport: +container host1/lb, +cen back, +cen front"), "{text}");
    assert!(text.contains("rev 7 cenMake: ~cen back, ~cen front"), "{text}");
}

/// Runs `leviathan ARGS` as given (no server or token added; neither
/// LEVIATHAN_SERVER nor LEVIATHAN_TOKEN inherited), with `env` set.
fn run(args: &[&str], env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leviathan"));
    cmd.args(args).env_remove("LEVIATHAN_TOKEN").env_remove("LEVIATHAN_SERVER").envs(env.iter().copied());
    let out = cmd.output().expect("run leviathan");
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn with_no_server_listening_the_cli_says_to_start_one_or_pass_server() {
    // A port the OS just handed out and nobody listens on.
    let url = format!("http://127.0.0.1:{}", free_port());
    let ex = example();
    let verbs =
        [&["get", "cens"][..], &["export", "-o", "dot"], &["apply", ex.to_str().unwrap()], &["watch", "--since", "0"]];
    for verb in verbs {
        let mut args = verb.to_vec();
        args.extend(["--server", &url]);
        // `watch --since N` keeps trying: it says so, once, before the
        // next attempt; the others give up at once.
        if args[0] == "watch" {
            let mut child = Command::new(env!("CARGO_BIN_EXE_leviathan"))
                .args(&args)
                .env_remove("LEVIATHAN_TOKEN")
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            BufReader::new(child.stderr.take().unwrap()).read_line(&mut line).unwrap();
            let _ = child.kill();
            let _ = child.wait();
            assert!(line.contains("leviathan serve") && line.contains("--server"), "{line}");
            continue;
        }
        let out = run(&args, &[]);
        assert!(!out.ok, "{args:?} succeeded");
        let e = out.stderr;
        assert!(
            e.contains(&format!("no leviathan server is listening at {url} (connection refused)")),
            "{args:?}: {e}"
        );
        assert!(e.contains("start one with `leviathan serve`") && e.contains("--server"), "{args:?}: {e}");
        assert!(e.contains("LEVIATHAN_SERVER"), "{args:?}: {e}");
    }
}

#[tokio::test]
async fn a_server_address_without_a_scheme_is_http() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("s.db"), &[]);
    s.gql("mutation { cenCreate(input: {id: \"a\"}) { revision } }", json!({})).await;
    let port = s.addr.rsplit_once(':').unwrap().1.to_string();
    for server in [s.addr.clone(), format!("localhost:{port}"), port] {
        for env in [false, true] {
            let out = if env {
                run(&["get", "cens", "-o", "json"], &[("LEVIATHAN_SERVER", &server)])
            } else {
                run(&["get", "cens", "-o", "json", "--server", &server], &[])
            };
            assert!(out.ok, "--server {server}: {}", out.stderr);
            assert_eq!(ids(&serde_json::from_str(&out.stdout).unwrap()), ["a"], "--server {server}");
        }
    }
    // The plan names the server as it is reached.
    let f = write(dir.path(), "t.yaml", "cens: [{id: b}]\n");
    let out = run(&["apply", f.to_str().unwrap(), "--dry-run", "--server", &s.addr], &[]);
    assert!(out.ok && out.stdout.contains(&format!("on http://{} at revision 1", s.addr)), "{}", out.stdout);
}

#[tokio::test]
async fn a_missing_or_wrong_token_names_the_flag_and_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("s.db"), &["--token", "the-right-token"]);
    let url = s.url("");
    // What the error says; the flags given; the environment.
    type Case<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: [Case; 4] = [
        ("needs a token", &[], &[]),
        ("did not accept the token given", &["--token", "a-wrong-one"], &[]),
        ("did not accept the token given", &[], &[("LEVIATHAN_TOKEN", "a-wrong-one")]),
        ("needs a token", &["--token", ""], &[]),
    ];
    // `watch` meets the token on the websocket, the others over HTTP.
    for verb in [&["get", "cens"][..], &["watch", "--since", "0"], &["export"]] {
        for (says, flags, env) in cases {
            let mut args = verb.to_vec();
            args.extend(["--server", &url]);
            args.extend(flags);
            let out = run(&args, env);
            assert!(!out.ok, "{args:?} {env:?} succeeded");
            let e = out.stderr;
            assert!(e.contains(&format!("the server at {url} {says}")), "{args:?} {env:?}: {e}");
            assert!(e.contains("--token") && e.contains("LEVIATHAN_TOKEN"), "{args:?} {env:?}: {e}");
            assert!(e.contains("UNAUTHENTICATED") && !e.contains("Authorization"), "{args:?} {env:?}: {e}");
        }
    }
    // With the right one, in either place: accepted.
    assert!(run(&["get", "cens", "--server", &url, "--token", "the-right-token"], &[]).ok);
    assert!(run(&["get", "cens", "--server", &url], &[("LEVIATHAN_TOKEN", "the-right-token")]).ok);
}

#[tokio::test]
async fn watch_ends_when_its_reader_goes_away_while_no_change_comes() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let s = start_at(&dir.path().join("s.db"), &listen);
    s.gql("mutation { cenCreate(input: {id: \"a\"}) { revision } }", json!({})).await;
    let mut watch = Command::new(env!("CARGO_BIN_EXE_leviathan"))
        .args(["watch", "--since", "0", "--server", &format!("http://{listen}")])
        .env_remove("LEVIATHAN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The one change is read, then the reader closes the pipe (as `| head
    // -n 1` does once it printed) and no change comes to be written.
    let mut out = BufReader::new(watch.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("+cen a"), "{line}");
    drop(out);
    let pid = watch.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(watch.wait()));
    let Ok(status) = rx.recv_timeout(Duration::from_secs(60)) else {
        let _ = Command::new("kill").arg(&pid).status();
        panic!("watch outlived its reader");
    };
    let status = status.unwrap();
    assert!(status.success(), "{status}");
}
