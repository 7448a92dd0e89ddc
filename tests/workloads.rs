//! Binding real workloads: processes that already run, by `pid:` (the way
//! Docker and Podman containers are bound, through their pid), wired on a
//! bridged CEN with a CIN; one exits, comes back, everything is destroyed.
//! And the `netnsPath` values that are refused, each changing nothing.
//!
//! The realizing test needs root. In CI (`CI` set) it fails if it cannot
//! run; elsewhere it skips with a loud message.

mod common;

use common::kernel::*;
use common::workload::{container, wait_status, Workload};
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

const BIND: &str = "mutation($id: ID!, $p: String!) { containerCreate(input: {id: $id, netnsPath: $p}) { revision container { netnsPath netns { path inode } } } }";

async fn bind(s: &Server, id: &str, p: &str) -> Value {
    s.gql(BIND, json!({"id": id, "p": p})).await["containerCreate"]["container"].clone()
}

/// Polls until `ok` holds (bounded generously).
async fn wait_until(what: &str, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn address(c: &Value) -> String {
    c["interfaces"][0]["address"].as_str().expect("an address").to_string()
}

#[tokio::test]
async fn running_processes_are_wired_failed_when_gone_and_wired_again() {
    if !can_run("running_processes_are_wired_failed_when_gone_and_wired_again") {
        return;
    }
    let p = Prefix::new("w");
    let dir = tempfile::tempdir().unwrap();
    // No periodic reconcile: what is repaired here is repaired because it
    // was seen (a pidfd, a link notification).
    let s = Server::start(&dir.path().join("s.db"), &["--prefix", &p.0, "--reconcile-interval", "0"]);
    let mut w = [Workload::start(), Workload::start(), Workload::start()];
    for (i, wl) in w.iter().enumerate() {
        let c = bind(&s, &format!("w{i}"), &format!("pid:{}", wl.pid())).await;
        assert_eq!(c["netnsPath"], format!("pid:{}", wl.pid()), "what the user said is kept: {c}");
        assert_eq!(c["netns"]["path"], wl.ns(), "{c}");
        assert_eq!(c["netns"]["inode"], wl.inode().to_string(), "{c}");
    }
    s.gql(CEN_IMPORT, json!({"input": {"cens": [{"id": "wl", "containerIds": ["w0", "w1", "w2"]}]}})).await;
    s.gql(CIN_IMPORT, json!({"input": {"cins": [{"id": "wn", "cenIds": ["wl"]}]}})).await;
    let d = s.gql("mutation { cinMake(input: {ids: [\"wn\"]}) { cins { status statusMessage } } }", json!({})).await;
    assert_eq!(d["cinMake"]["cins"][0]["status"], "READY", "{d}");
    let mut addrs = Vec::new();
    for (i, wl) in w.iter().enumerate() {
        let c = wait_status(&s, &format!("w{i}"), "READY").await;
        addrs.push(address(&c));
        assert!(wl.links().contains("wl"), "w{i} has no interface wl: {:?}", wl.links());
    }
    for (i, wl) in w.iter().enumerate() {
        for (j, a) in addrs.iter().enumerate() {
            if i != j {
                assert!(wl.ping(a), "w{i} cannot reach w{j} at {a}");
            }
        }
    }

    // Drift seen at once and repaired: our interface in w0 deleted by hand,
    // the addresses of w2's flushed.
    let old = w[0].ifindex("wl").expect("wl in w0");
    w[0].run(&["ip", "link", "del", "wl"]);
    wait_until("w0's interface is made again", || w[0].ifindex("wl").is_some_and(|i| i != old)).await;
    wait_until("w0's address is back", || w[0].has_addr("wl", &addrs[0])).await;
    w[2].run(&["ip", "addr", "flush", "dev", "wl"]);
    wait_until("w2's address is back", || w[2].has_addr("wl", &addrs[2])).await;
    // Towards w0 first: its new interface has the MAC address of the old.
    for (i, j) in [(1, 0), (2, 0), (0, 1), (1, 2)] {
        assert!(w[i].ping(&addrs[j]), "w{i} cannot reach w{j} after the repair");
    }

    // w1 exits: it alone turns FAILED, saying why; the others still talk.
    w[1].kill();
    let c = wait_status(&s, "w1", "FAILED").await;
    let why = c["statusMessage"].as_str().unwrap_or("");
    assert!(why.contains("workload is gone"), "{c}");
    let d = s.gql("{ cen(id: \"wl\") { status statusMessage } cin(id: \"wn\") { status } }", json!({})).await;
    assert_eq!(d["cen"]["status"], "READY", "the CEN is not failed by one gone member: {d}");
    assert_eq!(d["cin"]["status"], "READY", "{d}");
    for (i, j) in [(0, 2), (2, 0)] {
        assert_eq!(container(&s, &format!("w{i}")).await["status"], "READY");
        assert!(w[i].ping(&addrs[j]), "w{i} cannot reach w{j} after w1 went");
    }

    // It comes back as a new process, bound again: wired with its old address.
    w[1] = Workload::start();
    bind(&s, "w1", &format!("pid:{}", w[1].pid())).await;
    let c = wait_status(&s, "w1", "READY").await;
    assert_eq!(address(&c), addrs[1], "the address survives a rebind: {c}");
    // Towards the new process first: its interface has the MAC address the
    // old one had, so what the others remember of it still holds.
    for (i, j) in [(0, 1), (2, 1), (1, 0), (1, 2)] {
        if !w[i].ping(&addrs[j]) {
            let dump = |args: &[&str]| {
                String::from_utf8_lossy(&Command::new("nsenter").args(args).output().unwrap().stdout).to_string()
            };
            let n1 = format!("--net={}", w[1].ns());
            panic!(
                "w{i} cannot reach w{j} at {} after the rebind\nw1: {}\n{}\nfabric: {}",
                addrs[j],
                dump(&[&n1, "ip", "-d", "addr"]),
                dump(&[&n1, "ip", "route"]),
                dump(&[&format!("--net=/run/netns/{}", p.fabric()), "ip", "-d", "link"])
            );
        }
    }

    // Destroy: the workloads keep running in their namespaces, with only
    // leviathan's interfaces gone.
    let inodes: Vec<u64> = w.iter().map(Workload::inode).collect();
    s.gql("mutation { cinDestroy(input: {ids: [\"wn\"]}) { revision } }", json!({})).await;
    s.gql("mutation { cenDestroy(input: {ids: [\"wl\"]}) { revision } }", json!({})).await;
    for (i, wl) in w.iter().enumerate() {
        assert_eq!(wl.inode(), inodes[i], "w{i} lost its namespace");
        assert_eq!(wl.links(), BTreeSet::from(["lo".to_string()]), "w{i} keeps only its own interfaces");
    }
    assert!(namespaces(&p.0).iter().all(|n| *n == p.fabric()), "{:?}", namespaces(&p.0));
}

#[tokio::test]
async fn bad_namespaces_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("s.db"), &[]);
    let before = s.revision().await;
    let dead = {
        let mut c = Command::new("true").spawn().unwrap();
        c.wait().unwrap();
        c.id()
    };
    let mut cases: Vec<(String, Vec<String>)> = vec![
        ("/etc/passwd".into(), vec!["not a network namespace".into()]),
        ("/run/netns/no-such-namespace-here".into(), vec!["does not exist".into()]),
        (format!("pid:{dead}"), vec![format!("no process with pid {dead}")]),
        ("pid:abc".into(), vec!["pid:".into()]),
        ("docker:-rm".into(), vec!["docker:".into()]),
        ("relative/path".into(), vec!["absolute path".into()]),
    ];
    if is_root() {
        // The test runs in the server's namespace.
        let me = std::process::id();
        for own in [format!("/proc/{me}/ns/net"), format!("pid:{me}"), "/proc/self/ns/net".into()] {
            cases.push((own, vec!["--allow-host-netns".into()]));
        }
        // The host's init: refused, as its own namespace or as not ours to open.
        cases.push(("pid:1".into(), vec![]));
    }
    for runtime in ["docker", "podman"] {
        let installed = Command::new(runtime).arg("--version").output().is_ok();
        let want = if installed {
            // A CLI without a daemon, or no such container: the runtime's own words.
            vec![format!("'{runtime} inspect no-such-container-xyz' failed")]
        } else {
            vec![format!("{runtime} is not installed")]
        };
        cases.push((format!("{runtime}:no-such-container-xyz"), want));
    }
    for (path, wants) in &cases {
        let (code, msg) = s.gql_err(BIND, json!({"id": "x", "p": path})).await;
        assert_eq!(code, "BAD_REQUEST", "{path}: {msg}");
        for want in wants {
            assert!(msg.contains(want.as_str()), "{path}: {msg:?} lacks {want:?}");
        }
    }
    let far =
        "mutation { containerCreate(input: {hostId: \"host9\", id: \"x\", netnsPath: \"docker:web\"}) { revision } }";
    let (code, msg) = s.gql_err(far, json!({})).await;
    assert_eq!(code, "BAD_REQUEST", "{msg}");
    assert!(msg.contains("only the server of host 'host9'"), "{msg}");
    assert_eq!(s.revision().await, before, "a refused binding changed something");
    let d = s.gql("{ containers { id } }", json!({})).await;
    assert_eq!(d["containers"], json!([]), "{d}");
}
