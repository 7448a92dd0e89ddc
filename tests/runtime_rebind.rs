//! A container bound as `docker:NAME` whose workload the runtime restarts
//! (a new process, a new namespace) is bound again by the reconcile, and
//! wired with the same address. The `docker` CLI here is a stand-in script
//! (first in PATH, for the server this test starts) that answers
//! `docker inspect --format {{.State.Pid}} NAME` from a file, so no daemon
//! is needed.
//!
//! Needs root. In CI (`CI` set) it fails if it cannot run; elsewhere it
//! skips with a loud message.

mod common;

use common::kernel::*;
use common::workload::{wait_status, Workload};
use common::*;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;

#[tokio::test]
async fn a_restarted_docker_container_is_bound_again_by_the_reconcile() {
    if !can_run("a_restarted_docker_container_is_bound_again_by_the_reconcile") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let script = format!(
        "#!/bin/sh\n# docker inspect --format '{{{{.State.Pid}}}}' NAME\nf=\"{}/$4.pid\"\n\
         if [ -f \"$f\" ]; then cat \"$f\"; else echo \"Error: No such object: $4\" >&2; exit 1; fi\n",
        dir.path().display()
    );
    std::fs::write(bin.join("docker"), script).unwrap();
    std::fs::set_permissions(bin.join("docker"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // The server started below inherits it (this binary runs this test only).
    std::env::set_var("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()));

    let p = Prefix::new("d");
    let s = Server::start(&dir.path().join("s.db"), &["--prefix", &p.0, "--reconcile-interval", "0"]);
    let bind = "mutation($id: ID!, $p: String!) { containerCreate(input: {id: $id, netnsPath: $p}) { revision } }";
    let (code, msg) = s.gql_err(bind, json!({"id": "web", "p": "docker:web"})).await;
    assert_eq!(code, "BAD_REQUEST");
    assert!(msg.contains("No such object: web"), "the runtime's own words: {msg}");

    let mut web = Workload::start();
    let peer = Workload::start();
    std::fs::write(dir.path().join("web.pid"), web.pid().to_string()).unwrap();
    s.gql(bind, json!({"id": "web", "p": "docker:web"})).await;
    s.gql(bind, json!({"id": "peer", "p": format!("pid:{}", peer.pid())})).await;
    s.gql(CEN_IMPORT, json!({"input": {"cens": [{"id": "rt", "containerIds": ["web", "peer"]}]}})).await;
    s.gql(CIN_IMPORT, json!({"input": {"cins": [{"id": "rtn", "cenIds": ["rt"]}]}})).await;
    s.gql("mutation { cinMake(input: {ids: [\"rtn\"]}) { revision } }", json!({})).await;
    let c = wait_status(&s, "web", "READY").await;
    assert_eq!(c["netnsPath"], "docker:web");
    assert_eq!(c["netns"]["path"], web.ns());
    let addr = c["interfaces"][0]["address"].as_str().unwrap().to_string();
    assert!(peer.ping(&addr), "peer cannot reach web at {addr}");

    // The runtime restarts it: the old process goes, a new one comes.
    web.kill();
    wait_status(&s, "web", "FAILED").await;
    web = Workload::start();
    std::fs::write(dir.path().join("web.pid"), web.pid().to_string()).unwrap();
    s.gql("mutation { reconcile(input: {}) { done } }", json!({})).await;
    let c = wait_status(&s, "web", "READY").await;
    assert_eq!(c["netnsPath"], "docker:web", "what the user said is kept");
    assert_eq!(c["netns"]["path"], web.ns(), "bound to the new process");
    assert_eq!(c["interfaces"][0]["address"], addr.as_str(), "with the same address");
    assert!(peer.ping(&addr), "peer cannot reach the restarted web at {addr}");
    assert!(web.links().contains("rt"));
}
