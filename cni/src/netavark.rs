//! The netavark plugin mode (Podman 4+), per netavark's plugin API:
//! `create` (checks a network config whose `options.cen` names the CEN),
//! `setup NETNS` (attaches the container, prints a status block),
//! `teardown NETNS` (detaches it; queued while the server is down) and
//! `info`. Input is JSON on stdin; an error is `{"error": "..."}`.
//!
//! A Podman network: `podman network create -d leviathan-netavark --opt
//! cen=front front` (options `server` and `timeout` as in the CNI
//! configuration). Containers are named `podman-<first 12 of the id>`
//! with origin NETAVARK.

use crate::api::{Api, Failure};
use crate::kernel;
use crate::queue;
use crate::spec::{DEFAULT_QUEUE, DEFAULT_SERVER};
use serde_json::{json, Value};
use std::time::Duration;

/// The network's leviathan options.
struct Options {
    cen: String,
    server: String,
    timeout: Duration,
    queue: String,
}

fn options(network: &Value) -> Result<Options, String> {
    let o = &network["options"];
    let get = |k: &str| o.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
    let cen = get("cen").ok_or("the network needs the option cen (podman network create --opt cen=CEN)")?;
    let timeout = match get("timeout") {
        None => 120.0,
        Some(t) => {
            t.parse::<f64>().ok().filter(|t| *t > 0.0 && *t <= 3600.0).ok_or("option timeout: seconds, 0 to 3600")?
        }
    };
    Ok(Options {
        cen: cen.to_string(),
        server: get("server").unwrap_or(DEFAULT_SERVER).to_string(),
        timeout: Duration::from_secs_f64(timeout),
        queue: get("delete_queue").unwrap_or(DEFAULT_QUEUE).to_string(),
    })
}

fn api(o: &Options) -> Result<Api, String> {
    Api::new(&o.server, None, o.timeout).map_err(|e| e.msg)
}

fn failure(f: Failure) -> String {
    match f {
        Failure::Unreachable(m) => m,
        Failure::Refused(e) => e.msg,
    }
}

/// Runs a subcommand; what to print on success.
pub fn run(sub: &str, netns: Option<&str>, stdin: &[u8]) -> Result<Option<Value>, String> {
    if sub == "info" {
        return Ok(Some(json!({
            "version": env!("CARGO_PKG_VERSION"),
            "api_version": "1.0.0",
            "description": "leviathan: containers join a leviathan CEN and get their CIN addresses"
        })));
    }
    let input: Value = serde_json::from_slice(stdin).map_err(|e| format!("the input on stdin is not JSON: {e}"))?;
    match sub {
        "create" => create(input).map(Some),
        "setup" => setup(&input, netns.ok_or("setup needs the namespace path as its argument")?).map(Some),
        "teardown" => teardown(&input).map(|()| None),
        "" => Err("a subcommand is needed: create, setup, teardown or info".into()),
        other => Err(format!("unknown subcommand '{other}': create, setup, teardown or info")),
    }
}

fn create(network: Value) -> Result<Value, String> {
    let o = options(&network)?;
    if network["subnets"].as_array().is_some_and(|s| !s.is_empty()) {
        return Err(
            "leviathan gives the addresses of the CINs over the CEN: create the network without --subnet".into()
        );
    }
    api(&o)?.members(&o.cen).map_err(failure)?;
    Ok(network)
}

fn ids(input: &Value) -> Result<(String, String, String), String> {
    let rid = input["container_id"].as_str().filter(|s| !s.is_empty()).ok_or("container_id is missing")?;
    let ifname = input["network_options"]["interface_name"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or("network_options.interface_name is missing")?;
    let short: String = rid.chars().take(12).collect();
    Ok((format!("podman-{short}"), rid.to_string(), ifname.to_string()))
}

fn setup(input: &Value, netns: &str) -> Result<Value, String> {
    let o = options(&input["network"])?;
    let (id, rid, ifname) = ids(input)?;
    if input["network_options"]["static_ips"].as_array().is_some_and(|a| !a.is_empty()) {
        return Err("static IPs are not supported: leviathan gives the addresses of the CINs over the CEN".into());
    }
    let w = api(&o)?.attach(&id, netns, &o.cen, (&ifname, &rid, "NETAVARK")).map_err(failure)?;
    if w.status != "READY" {
        return Err(format!("container '{id}' is {}, not READY: {}", w.status, w.status_message.unwrap_or_default()));
    }
    let mac = kernel::read_netns(netns)?.iface(&ifname).and_then(|i| i.mac.clone());
    let subnets: Vec<Value> = w
        .ips
        .iter()
        .map(|(ip, len, gw)| {
            let mut s = json!({"ipnet": format!("{ip}/{len}")});
            if let Some(g) = gw {
                s["gateway"] = json!(g.to_string());
            }
            s
        })
        .collect();
    let mut iface = json!({"subnets": subnets});
    if let Some(m) = mac {
        iface["mac_address"] = json!(m);
    }
    Ok(json!({"dns_search_domains": [], "dns_server_ips": [], "interfaces": {ifname: iface}}))
}

fn teardown(input: &Value) -> Result<(), String> {
    let o = options(&input["network"])?;
    let (id, rid, _) = ids(input)?;
    match api(&o)?.detach(&id, Some(&o.cen), &rid, "NETAVARK") {
        Ok(()) => Ok(()),
        Err(Failure::Unreachable(why)) => {
            let d = queue::Deletion { id: &id, cen: Some(&o.cen), runtime_id: &rid, origin: "netavark" };
            queue::push(std::path::Path::new(&o.queue), &d)
                .map_err(|m| format!("{why}; and the deletion cannot be queued: {m}"))
        }
        Err(Failure::Refused(e)) => Err(e.msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_checked_before_the_server_is_asked() {
        let e = run("create", None, br#"{"name":"n","driver":"leviathan-netavark","options":{}}"#).unwrap_err();
        assert!(e.contains("--opt cen="), "{e}");
        let e = run(
            "setup",
            Some("/run/netns/x"),
            br#"{"network":{"options":{"cen":"f"}},"network_options":{"interface_name":"eth0"}}"#,
        )
        .unwrap_err();
        assert!(e.contains("container_id"), "{e}");
        assert!(run("bogus", None, b"{}").unwrap_err().contains("unknown subcommand"));
        assert!(run("setup", None, b"{}").unwrap_err().contains("namespace path"));
        let info = run("info", None, b"").unwrap().unwrap();
        assert_eq!(info["api_version"], "1.0.0");
    }
}
