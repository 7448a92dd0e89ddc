//! leviathan-cni as containerd and CRI-O call it: through libcni
//! (Debian's golang-github-appc-cni-dev, a Go driver built in GOPATH
//! mode), against a real server realizing in the kernel. libcni 1.1 has no
//! STATUS and GC (libcni 1.2 added them): those are exec'd with the spec's
//! environment, exactly as libcni 1.2 does.
//!
//! Each test has its own prefix (`lca-`, `lcb-`, …), CEN and namespaces,
//! removed whatever the outcome.

mod common;

use common::{error_of, json_of, ping, run, World};
use serde_json::json;

#[test]
fn two_namespaces_added_through_libcni_reach_each_other_and_a_chained_plugin_runs_after() {
    if !common::can_run("two_namespaces_added_through_libcni") {
        return;
    }
    let mut w = World::new("lca");
    w.start();
    w.made_cen("lcafront");
    let list = w.conflist("front", "lcafront", &[json!({"type": "tuning", "mtu": 1400})]);
    let list = list.to_str().unwrap();
    let a = w.netns("a");
    let b = w.netns("b");
    let ra = json_of(&w.driver(&["add", list, "aaaa00000000000000a", &a, "eth0"]));
    let rb = json_of(&w.driver(&["add", list, "bbbb00000000000000b", &b, "eth0"]));
    // The result, as the chain left it: our interface with its sandbox and
    // MAC, the CIN address with its gateway.
    assert_eq!(ra["ips"][0]["address"], "10.10.0.10/16", "{ra}");
    assert_eq!(ra["ips"][0]["gateway"], "10.10.0.1", "{ra}");
    assert_eq!(rb["ips"][0]["address"], "10.10.0.11/16", "{rb}");
    let iface = &ra["interfaces"][ra["ips"][0]["interface"].as_u64().unwrap() as usize];
    assert_eq!((iface["name"].as_str(), iface["sandbox"].as_str()), (Some("eth0"), Some(a.as_str())), "{ra}");
    let mac = iface["mac"].as_str().expect("a MAC").to_string();
    let link: serde_json::Value =
        serde_json::from_str(&run("ip", &["-j", "-n", "lca-a", "link", "show", "eth0"])).unwrap();
    assert_eq!(link[0]["address"], mac.as_str());
    // tuning ran after leviathan-cni, on the interface it made.
    assert_eq!(link[0]["mtu"], 1400, "{link}");
    // The host side, listed before it without a sandbox: the bridge port
    // in leviathan's fabric namespace that is eth0's peer.
    let host = &ra["interfaces"][ra["ips"][0]["interface"].as_u64().unwrap() as usize - 1];
    assert!(host.get("sandbox").is_none(), "{ra}");
    let port: serde_json::Value = serde_json::from_str(&run(
        "ip",
        &["-j", "-n", "lca-fabric", "link", "show", host["name"].as_str().expect("a host side name")],
    ))
    .unwrap();
    assert_eq!(port[0]["address"], host["mac"], "{ra}");
    assert_eq!(port[0]["ifindex"], link[0]["link_index"], "the host side is eth0's peer: {port} {link}");
    assert!(ping("lca-a", "10.10.0.11"), "a reaches b");
    assert!(ping("lca-b", "10.10.0.10"), "b reaches a");
    // Visible like any container, with the runtime's id and origin.
    let v = w.gql("{ containers(cenId: \"lcafront\") { id origin runtimeId status } }");
    assert_eq!(
        v["data"]["containers"],
        json!([
            {"id": "cni-aaaa00000000", "origin": "CNI", "runtimeId": "aaaa00000000000000a", "status": "READY"},
            {"id": "cni-bbbb00000000", "origin": "CNI", "runtimeId": "bbbb00000000000000b", "status": "READY"}
        ])
    );
    // CHECK agrees with the kernel, then names what differs.
    let ok = w.driver(&["check", list, "aaaa00000000000000a", &a, "eth0"]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));
    // The runtime's record of ADD (libcni's cache, given as prevResult)
    // says another address: CHECK names it. (Drift in the kernel itself
    // the server repairs at once, before a CHECK could see it.)
    let cached = w.dir.join("cache/results/front-aaaa00000000000000a-eth0");
    let text = std::fs::read_to_string(&cached).expect("libcni's cached result");
    std::fs::write(&cached, text.replace("10.10.0.10/16", "10.10.0.99/16")).unwrap();
    let e = error_of(&w.driver(&["check", list, "aaaa00000000000000a", &a, "eth0"]));
    assert_eq!(e["code"], 104, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("10.10.0.99/16"), "{e}");
    // A second ADD into a namespace whose eth0 exists is refused.
    let e = error_of(&w.driver(&["add", list, "cccc00000000000000c", &b, "eth0"]));
    assert_eq!(e["code"], 101, "{e}");
    // VERSION through libcni.
    let versions = json_of(&w.driver(&["version", list, "leviathan-cni"]));
    assert!(versions.as_array().unwrap().contains(&json!("1.0.0")), "{versions}");
    assert!(w.driver(&["del", list, "aaaa00000000000000a", &a, "eth0"]).status.success());
    assert!(w.driver(&["del", list, "bbbb00000000000000b", &b, "eth0"]).status.success());
    let v = w.gql("{ containers(cenId: \"lcafront\") { id } }");
    assert_eq!(v["data"]["containers"], json!([]));
}

#[test]
fn del_twice_succeeds_and_del_with_the_server_stopped_is_completed_at_the_next_start() {
    if !common::can_run("del_twice_and_del_while_stopped") {
        return;
    }
    let mut w = World::new("lcb");
    w.start();
    w.made_cen("lcbfront");
    let list = w.conflist("front", "lcbfront", &[]);
    let list = list.to_str().unwrap();
    let a = w.netns("a");
    let b = w.netns("b");
    json_of(&w.driver(&["add", list, "aaaa00000000000000a", &a, "eth0"]));
    for _ in 0..2 {
        let out = w.driver(&["del", list, "aaaa00000000000000a", &a, "eth0"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    }
    json_of(&w.driver(&["add", list, "bbbb00000000000000b", &b, "eth0"]));
    w.stop();
    // ADD cannot be done without the server: try again later.
    let e = error_of(&w.driver(&["add", list, "aaaa00000000000000a", &a, "eth0"]));
    assert_eq!(e["code"], 11, "{e}");
    let out = w.driver(&["del", list, "bbbb00000000000000b", &b, "eth0"]);
    assert!(out.status.success(), "DEL with the server stopped: {}", String::from_utf8_lossy(&out.stdout));
    let queued: Vec<_> = std::fs::read_dir(&w.queue).unwrap().collect();
    assert_eq!(queued.len(), 1, "one deletion queued");
    w.start();
    let v = w.gql("{ containers(cenId: \"lcbfront\") { id } }");
    assert_eq!(v["data"]["containers"], json!([]), "the queued deletion was carried out at start");
    assert_eq!(std::fs::read_dir(&w.queue).unwrap().count(), 0);
}

#[test]
fn status_answers_50_with_the_server_stopped_and_gc_removes_a_stale_attachment() {
    if !common::can_run("status_and_gc") {
        return;
    }
    let mut w = World::new("lcc");
    w.start();
    w.made_cen("lccfront");
    let list = w.conflist("front", "lccfront", &[]);
    let list = list.to_str().unwrap();
    let a = w.netns("a");
    let b = w.netns("b");
    json_of(&w.driver(&["add", list, "aaaa00000000000000a", &a, "eth0"]));
    json_of(&w.driver(&["add", list, "bbbb00000000000000b", &b, "eth0"]));
    let mut conf = w.plugin_conf("lccfront");
    conf["cniVersion"] = json!("1.1.0");
    conf["name"] = json!("front");
    let up = w.exec_plugin("STATUS", &conf);
    assert!(up.status.success(), "STATUS with the server up: {}", String::from_utf8_lossy(&up.stdout));
    // GC: b's sandbox is gone as far as the runtime knows.
    conf["cni.dev/valid-attachments"] = json!([{"containerID": "aaaa00000000000000a", "ifname": "eth0"}]);
    let gc = w.exec_plugin("GC", &conf);
    assert!(gc.status.success(), "GC: {}", String::from_utf8_lossy(&gc.stdout));
    let v = w.gql("{ containers(cenId: \"lccfront\") { id } }");
    assert_eq!(v["data"]["containers"], json!([{"id": "cni-aaaa00000000"}]));
    let links: serde_json::Value = serde_json::from_str(&run("ip", &["-j", "-n", "lcc-b", "link"])).unwrap();
    assert!(links.as_array().unwrap().iter().all(|l| l["ifname"] != "eth0"), "b's interface is gone: {links}");
    w.stop();
    let e = error_of(&w.exec_plugin("STATUS", &conf));
    assert_eq!(e["code"], 50, "{e}");
    assert_eq!(e["cniVersion"], "1.1.0");
}
