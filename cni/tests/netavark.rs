//! The netavark plugin mode, fed the JSON netavark sends (Podman is not
//! installed here): create checks the network's options, setup attaches
//! the container and answers a status block netavark reads, teardown
//! detaches it (and twice is fine), info names the API version.

mod common;

use common::{error_of, json_of, ping, World};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs the plugin as netavark does: `info` with no input (the plugin
/// reads none, so a write to it could meet a closed pipe), the others with
/// `input` on stdin.
fn netavark(args: &[&str], input: &Value) -> Output {
    let info = args.first() == Some(&"info");
    let mut child = Command::new(common::plugin())
        .arg("netavark")
        .args(args)
        .stdin(if info { Stdio::null() } else { Stdio::piped() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the plugin");
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.to_string().as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

#[test]
fn podman_networks_attach_and_detach_containers() {
    if !common::can_run("podman_networks_attach_and_detach_containers") {
        return;
    }
    let mut w = World::new("lcn");
    w.start();
    w.made_cen("lcnfront");
    let sock = format!("unix://{}", w.sock.display());
    let network = json!({
        "name": "front", "id": "2f259bab93aaaaa2542ba43ef33eb990d0999ee1b9924b557b7be53c0b7a1bb9",
        "driver": "leviathan-netavark", "network_interface": "", "subnets": [], "ipv6_enabled": false,
        "internal": false, "dns_enabled": false, "options": {"cen": "lcnfront", "server": sock}
    });
    assert_eq!(json_of(&netavark(&["create"], &network)), network);
    let mut no_cen = network.clone();
    no_cen["options"] = json!({"server": sock});
    let e = error_of(&netavark(&["create"], &no_cen));
    assert!(e["error"].as_str().unwrap().contains("--opt cen="), "{e}");
    let info = json_of(&netavark(&["info"], &json!({})));
    assert_eq!(info["api_version"], "1.0.0");

    let mut setups = Vec::new();
    for (name, id) in [("a", "752947ff91f961eb3cb47ffe9315016979f3ffbec09e4d96a4fae3fb03391697"), ("b", "8a2f")] {
        let netns = w.netns(name);
        let input = json!({
            "container_id": id, "container_name": name, "port_mappings": [],
            "network": network, "network_options": {"aliases": [name], "interface_name": "eth0"}
        });
        let status = json_of(&netavark(&["setup", &netns], &input));
        setups.push((netns, input, status));
    }
    let status = &setups[0].2;
    assert_eq!(
        status["interfaces"]["eth0"]["subnets"][0],
        json!({"ipnet": "10.10.0.10/16", "gateway": "10.10.0.1"}),
        "{status}"
    );
    assert!(status["interfaces"]["eth0"]["mac_address"].as_str().is_some_and(|m| m.len() == 17), "{status}");
    assert!(ping("lcn-a", "10.10.0.11"));
    let v = w.gql("{ containers(cenId: \"lcnfront\") { id origin runtimeId } }");
    assert_eq!(
        v["data"]["containers"][0],
        json!({"id": "podman-752947ff91f9", "origin": "NETAVARK", "runtimeId": "752947ff91f961eb3cb47ffe9315016979f3ffbec09e4d96a4fae3fb03391697"})
    );
    for (netns, input, _) in &setups {
        for _ in 0..2 {
            let out = netavark(&["teardown", netns], input);
            assert!(out.status.success() && out.stdout.is_empty(), "{}", String::from_utf8_lossy(&out.stdout));
        }
    }
    let v = w.gql("{ containers(cenId: \"lcnfront\") { id } }");
    assert_eq!(v["data"]["containers"], json!([]));
}
