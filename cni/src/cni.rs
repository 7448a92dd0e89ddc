//! The CNI commands: ADD, DEL, CHECK, STATUS, GC and VERSION, each one
//! call to the server (two where ADD must first tell a repeated ADD from a
//! name clash) and, for ADD and CHECK, a read of the container's
//! namespace.
//!
//! Invariants: ADD prints a result only once the container is READY; DEL
//! always succeeds unless the deletion cannot be kept (the server refuses
//! it for a reason of its own, or the queue is full); nothing here changes
//! the kernel.

use crate::api::{Api, Failure};
use crate::kernel;
use crate::queue;
use crate::spec::{self, code, Attached, CniError, Env, NetConf};
use serde_json::{json, Value};
use std::time::Duration;

fn api(conf: &NetConf) -> Result<Api, CniError> {
    Api::new(&conf.server, conf.token.clone(), Duration::from_secs_f64(conf.timeout_secs))
}

/// Runs one command; what to print on success (nothing for DEL and GC).
pub fn run(env: &Env, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    let need_cen = !matches!(env.command.as_str(), "VERSION" | "STATUS");
    if env.command == "VERSION" {
        let version = NetConf::parse(stdin, false).map(|c| c.cni_version).unwrap_or_else(|_| "1.1.0".into());
        return Ok(Some(json!({"cniVersion": version, "supportedVersions": spec::SUPPORTED})));
    }
    let conf = NetConf::parse(stdin, need_cen)?;
    match env.command.as_str() {
        "ADD" => add(env, &conf).map(Some),
        "DEL" => del(env, &conf).map(|()| None),
        "CHECK" => check(env, &conf).map(|()| None),
        "STATUS" => status(&conf).map(|()| None),
        "GC" => gc(&conf).map(|()| None),
        other => Err(CniError::new(code::BAD_ENV, format!("CNI_COMMAND '{other}' is not known"))),
    }
}

fn add(env: &Env, conf: &NetConf) -> Result<Value, CniError> {
    let api = api(conf)?;
    let id = env.container_name();
    let ns = kernel::NsSocket::open(&env.netns).map_err(|m| CniError::new(code::IO, m))?;
    if ns.has(&env.ifname).map_err(|m| CniError::new(code::IO, m))?
        && !api.is_ours(&id, &conf.cen, &env.ifname, &env.container_id).map_err(Failure::into_cni)?
    {
        return Err(CniError::new(
            code::INTERFACE_EXISTS,
            format!("an interface named '{}' exists already in {}", env.ifname, env.netns),
        ));
    }
    let w =
        api.attach(&id, &env.netns, &conf.cen, (&env.ifname, &env.container_id, "CNI")).map_err(Failure::into_cni)?;
    if w.status != "READY" {
        let why = w.status_message.unwrap_or_else(|| "no reason given".into());
        return Err(CniError::new(
            code::NOT_READY,
            format!("container '{id}' is {} on CEN '{}', not READY: {why}", w.status, conf.cen),
        ));
    }
    let ends = ns.ends(&env.ifname).map_err(|m| CniError::new(code::IO, m))?;
    let (mac, host) = ends.map(|e| (e.mac, e.host)).unwrap_or_default();
    let attached =
        Attached { host, ifname: env.ifname.clone(), mac, sandbox: env.netns.clone(), ips: w.ips, routes: w.routes };
    Ok(spec::result(&conf.cni_version, conf.prev_result.as_ref(), &attached))
}

fn del(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let api = api(conf)?;
    let id = env.container_name();
    match api.detach(&id, Some(&conf.cen), &env.container_id, "CNI") {
        Ok(()) => Ok(()),
        Err(Failure::Unreachable(why)) => {
            let d = queue::Deletion { id: &id, cen: Some(&conf.cen), runtime_id: &env.container_id, origin: "cni" };
            queue::push(&conf.delete_queue, &d).map_err(|m| {
                CniError::new(code::TRY_AGAIN_LATER, format!("{why}; and the deletion cannot be queued: {m}"))
            })
        }
        Err(Failure::Refused(e)) => Err(e),
    }
}

/// CHECK: the server still has the container READY, and the kernel has
/// the interface, MAC, addresses and routes `prevResult` says ADD made.
fn check(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::new(code::INVALID_CONFIG, "CHECK needs prevResult (the result of ADD)"))?;
    let api = api(conf)?;
    let id = env.container_name();
    let w = api
        .container(&id, &conf.cen)
        .map_err(Failure::into_cni)?
        .ok_or_else(|| CniError::new(code::CHECK_FAILED, format!("the server has no container '{id}'")))?;
    if w.status != "READY" {
        return Err(CniError::new(code::CHECK_FAILED, format!("container '{id}' is {}, not READY", w.status)));
    }
    let ns = kernel::read_netns(&env.netns).map_err(|m| CniError::new(code::IO, m))?;
    let differs = |m: String| CniError::new(code::CHECK_FAILED, m);
    let ifaces = prev["interfaces"].as_array().cloned().unwrap_or_default();
    let index = ifaces
        .iter()
        .position(|i| i["name"] == env.ifname.as_str() && i["sandbox"] == env.netns.as_str())
        .ok_or_else(|| differs(format!("prevResult lists no interface '{}' in {}", env.ifname, env.netns)))?;
    let have = ns
        .iface(&env.ifname)
        .ok_or_else(|| differs(format!("interface '{}' is missing from {}", env.ifname, env.netns)))?;
    if let Some(mac) = ifaces[index]["mac"].as_str() {
        if have.mac.as_deref() != Some(mac) {
            return Err(differs(format!("interface '{}' has MAC {:?}, prevResult says {mac}", env.ifname, have.mac)));
        }
    }
    for e in prev["ips"].as_array().into_iter().flatten().filter(|e| e["interface"] == index) {
        let Some(want) = e["address"].as_str() else { continue };
        let present = have.addrs.iter().any(|(ip, len)| format!("{ip}/{len}") == want);
        if !present {
            return Err(differs(format!("interface '{}' lacks address {want}", env.ifname)));
        }
        if !w.ips.iter().any(|(ip, len, _)| format!("{ip}/{len}") == want) {
            return Err(differs(format!("the server no longer gives '{id}' address {want}")));
        }
    }
    for (dst, len, gw) in &w.routes {
        let present = ns.routes.iter().any(|r| r.dst == *dst && r.prefix == *len && r.gw == Some(*gw));
        if !present {
            return Err(differs(format!("route {dst}/{len} via {gw} is missing from {}", env.netns)));
        }
    }
    Ok(())
}

/// STATUS: 50 when the server cannot be reached or cannot realize.
fn status(conf: &NetConf) -> Result<(), CniError> {
    api(conf)?.health().map_err(|f| match f {
        Failure::Unreachable(m) => CniError::new(code::NOT_AVAILABLE, m),
        Failure::Refused(e) => CniError::new(code::NOT_AVAILABLE, e.msg),
    })
}

/// GC: detaches this network's CNI-made containers whose runtime id and
/// interface `cni.dev/valid-attachments` does not list.
fn gc(conf: &NetConf) -> Result<(), CniError> {
    let api = api(conf)?;
    let members = api.members(&conf.cen).map_err(Failure::into_cni)?;
    for m in members.iter().filter(|m| m.origin == "CNI") {
        let Some(rid) = &m.runtime_id else { continue };
        let valid = conf
            .valid_attachments
            .iter()
            .any(|a| &a.container_id == rid && Some(a.ifname.as_str()) == m.ifname.as_deref());
        if !valid {
            api.detach(&m.id, Some(&conf.cen), rid, "CNI").map_err(Failure::into_cni)?;
        }
    }
    Ok(())
}
