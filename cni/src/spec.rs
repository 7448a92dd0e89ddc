//! The CNI specification's side of the plugin: the environment
//! (`CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`,
//! `CNI_ARGS`), the network configuration on stdin, the error object and
//! the result in the shape of the caller's `cniVersion` (1.0.0 and 1.1.0;
//! 0.3.0, 0.3.1 and 0.4.0 with `version` on each IP).
//!
//! Invariants: stdin is read up to [`MAX_CONFIG`] bytes; a missing or bad
//! variable is error 4, a bad configuration error 7, each naming what is
//! wrong; a `prevResult` is kept whole and ours is appended to it, so
//! plugins chained before and after see every interface, address and
//! route.

use serde_json::{json, Map, Value};
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// The versions this plugin speaks (VERSION answers these).
pub const SUPPORTED: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// Largest configuration read from stdin.
pub const MAX_CONFIG: u64 = 1024 * 1024;
/// Where the server's socket is unless the configuration says otherwise.
pub const DEFAULT_SERVER: &str = "unix:///run/leviathan/leviathan.sock";
/// The deletion queue unless the configuration says otherwise (the
/// server's `--cni-queue` default).
pub const DEFAULT_QUEUE: &str = "/var/lib/leviathan/cni-deletions";

/// Error codes: the spec's, then leviathan's own (100 and up).
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const BAD_ENV: u32 = 4;
    pub const IO: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// The server refused the request (its message says why).
    pub const SERVER_REFUSED: u32 = 100;
    /// An interface of that name is in the container already.
    pub const INTERFACE_EXISTS: u32 = 101;
    /// The CEN is not there or not made.
    pub const CEN_NOT_READY: u32 = 102;
    /// The container did not become READY (FAILED, or not in time).
    pub const NOT_READY: u32 = 103;
    /// CHECK: the kernel or the server differs from `prevResult`.
    pub const CHECK_FAILED: u32 = 104;
}

/// The spec's error object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError { code, msg: msg.into(), details: String::new() }
    }
    pub fn with_details(mut self, d: impl Into<String>) -> Self {
        self.details = d.into();
        self
    }
    pub fn to_json(&self, version: &str) -> Value {
        let mut v = json!({"cniVersion": version, "code": self.code, "msg": self.msg});
        if !self.details.is_empty() {
            v["details"] = Value::String(self.details.clone());
        }
        v
    }
}

/// The environment of one call.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS`: `K=V;K=V`.
    pub args: Vec<(String, String)>,
}

impl Env {
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let command = get("CNI_COMMAND").unwrap_or_default();
        let args = get("CNI_ARGS")
            .unwrap_or_default()
            .split(';')
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_string(), v.to_string())
            })
            .collect();
        let env = Env {
            command,
            container_id: get("CNI_CONTAINERID").unwrap_or_default(),
            netns: get("CNI_NETNS").unwrap_or_default(),
            ifname: get("CNI_IFNAME").unwrap_or_default(),
            args,
        };
        let need: &[(&str, &str)] = match env.command.as_str() {
            "ADD" | "CHECK" => {
                &[("CNI_CONTAINERID", &env.container_id), ("CNI_NETNS", &env.netns), ("CNI_IFNAME", &env.ifname)]
            }
            "DEL" => &[("CNI_CONTAINERID", &env.container_id), ("CNI_IFNAME", &env.ifname)],
            "VERSION" | "STATUS" | "GC" => &[],
            "" => {
                return Err(CniError::new(
                    code::BAD_ENV,
                    "CNI_COMMAND is not set (ADD, DEL, CHECK, STATUS, GC or VERSION)",
                ))
            }
            other => {
                return Err(CniError::new(
                    code::BAD_ENV,
                    format!("CNI_COMMAND '{other}' is not one of ADD, DEL, CHECK, STATUS, GC, VERSION"),
                ))
            }
        };
        if let Some((name, _)) = need.iter().find(|(_, v)| v.is_empty()) {
            return Err(CniError::new(code::BAD_ENV, format!("{name} is not set (required for {})", env.command)));
        }
        Ok(env)
    }

    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    /// The leviathan container id: `<namespace>.<pod>` for a Kubernetes
    /// pod, else `cni-` and the first 12 characters of the runtime's id.
    pub fn container_name(&self) -> String {
        if let (Some(ns), Some(pod)) = (self.arg("K8S_POD_NAMESPACE"), self.arg("K8S_POD_NAME")) {
            return format!("{ns}.{pod}");
        }
        let short: String = self.container_id.chars().take(12).collect();
        format!("cni-{short}")
    }
}

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
}

/// A network configuration as leviathan reads it.
#[derive(Debug, Clone)]
pub struct NetConf {
    pub cni_version: String,
    pub cen: String,
    pub server: String,
    pub token: Option<String>,
    pub delete_queue: PathBuf,
    pub timeout_secs: f64,
    pub prev_result: Option<Value>,
    pub valid_attachments: Vec<Attachment>,
}

fn str_field<'a>(v: &'a Value, key: &str) -> Result<Option<&'a str>, CniError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(CniError::new(code::INVALID_CONFIG, format!("'{key}' must be a string"))),
    }
}

impl NetConf {
    /// Reads the configuration; `need_cen` for the commands that act on a
    /// CEN (all but VERSION and STATUS).
    pub fn parse(bytes: &[u8], need_cen: bool) -> Result<NetConf, CniError> {
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| CniError::new(code::DECODE, format!("the network configuration on stdin is not JSON: {e}")))?;
        if !v.is_object() {
            return Err(CniError::new(code::DECODE, "the network configuration must be a JSON object"));
        }
        let cni_version = str_field(&v, "cniVersion")?.unwrap_or("0.3.0").to_string();
        if !SUPPORTED.contains(&cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("cniVersion '{cni_version}' is not supported (supported: 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0)"),
            ));
        }
        let cen = str_field(&v, "cen")?.unwrap_or("").to_string();
        if need_cen && cen.is_empty() {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "the network configuration needs \"cen\": the CEN the containers join",
            ));
        }
        let timeout_secs = match v.get("timeout") {
            None | Some(Value::Null) => 120.0,
            Some(t) => t.as_f64().filter(|t| *t > 0.0 && *t <= 3600.0).ok_or_else(|| {
                CniError::new(
                    code::INVALID_CONFIG,
                    "'timeout' must be a number of seconds, more than 0 and at most 3600",
                )
            })?,
        };
        let valid_attachments = match v.get("cni.dev/valid-attachments") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|e| {
                    let id = e.get("containerID").and_then(Value::as_str);
                    let ifname = e.get("ifname").and_then(Value::as_str);
                    match (id, ifname) {
                        (Some(id), Some(ifname)) => Ok(Attachment { container_id: id.into(), ifname: ifname.into() }),
                        _ => Err(CniError::new(
                            code::INVALID_CONFIG,
                            "each cni.dev/valid-attachments entry needs containerID and ifname",
                        )),
                    }
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(CniError::new(code::INVALID_CONFIG, "cni.dev/valid-attachments must be a list")),
        };
        Ok(NetConf {
            server: str_field(&v, "server")?.unwrap_or(DEFAULT_SERVER).to_string(),
            token: str_field(&v, "token")?.map(str::to_string),
            delete_queue: PathBuf::from(str_field(&v, "deleteQueue")?.unwrap_or(DEFAULT_QUEUE)),
            prev_result: v.get("prevResult").filter(|p| !p.is_null()).cloned(),
            cni_version,
            cen,
            timeout_secs,
            valid_attachments,
        })
    }
}

/// What leviathan attached: the container's interface, its addresses
/// (with gateways) and the routes it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The host side of the container's veth (name, MAC), when it has one:
    /// a bridge port in leviathan's fabric, listed without `sandbox` as the
    /// spec lists host interfaces.
    pub host: Option<(String, Option<String>)>,
    pub ifname: String,
    pub mac: Option<String>,
    pub sandbox: String,
    /// Address, prefix length, gateway.
    pub ips: Vec<(Ipv4Addr, u8, Option<Ipv4Addr>)>,
    /// Destination, prefix length, gateway.
    pub routes: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
}

fn list(v: Option<&Value>) -> Vec<Value> {
    v.and_then(Value::as_array).cloned().unwrap_or_default()
}

/// The result for `version`: `prev` (if any) with ours appended.
pub fn result(version: &str, prev: Option<&Value>, a: &Attached) -> Value {
    let old = version.starts_with("0.");
    let mut interfaces = list(prev.and_then(|p| p.get("interfaces")));
    if let Some((name, mac)) = &a.host {
        let mut host = Map::new();
        host.insert("name".into(), json!(name));
        if let Some(m) = mac {
            host.insert("mac".into(), json!(m));
        }
        interfaces.push(Value::Object(host));
    }
    let index = interfaces.len();
    let mut iface = Map::new();
    iface.insert("name".into(), json!(a.ifname));
    if let Some(m) = &a.mac {
        iface.insert("mac".into(), json!(m));
    }
    iface.insert("sandbox".into(), json!(a.sandbox));
    interfaces.push(Value::Object(iface));
    let mut ips = list(prev.and_then(|p| p.get("ips")));
    for (ip, len, gw) in &a.ips {
        let mut e = json!({"address": format!("{ip}/{len}"), "interface": index});
        if let Some(g) = gw {
            e["gateway"] = json!(g.to_string());
        }
        if old {
            e["version"] = json!("4");
        }
        ips.push(e);
    }
    let mut routes = list(prev.and_then(|p| p.get("routes")));
    for (dst, len, gw) in &a.routes {
        routes.push(json!({"dst": format!("{dst}/{len}"), "gw": gw.to_string()}));
    }
    let mut out = json!({"cniVersion": version, "interfaces": interfaces, "ips": ips, "routes": routes});
    out["dns"] = prev.and_then(|p| p.get("dns")).cloned().unwrap_or_else(|| json!({}));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<Env, CniError> {
        Env::from_vars(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn the_environment_is_checked_per_command() {
        assert_eq!(env(&[]).unwrap_err().code, code::BAD_ENV);
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "x"), ("CNI_IFNAME", "eth0")]).unwrap_err();
        assert!(e.msg.contains("CNI_NETNS") && e.code == 4, "{e:?}");
        assert!(env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "x"), ("CNI_IFNAME", "eth0")]).is_ok());
        assert_eq!(env(&[("CNI_COMMAND", "FOO")]).unwrap_err().code, code::BAD_ENV);
        let e =
            env(&[("CNI_COMMAND", "VERSION"), ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=p-1")])
                .unwrap();
        assert_eq!(e.container_name(), "web.p-1");
        let e =
            env(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "0123456789abcdef"), ("CNI_IFNAME", "eth0")]).unwrap();
        assert_eq!(e.container_name(), "cni-0123456789ab");
    }

    #[test]
    fn configurations_are_checked() {
        assert_eq!(NetConf::parse(b"nope", true).unwrap_err().code, code::DECODE);
        assert_eq!(NetConf::parse(br#"{"cniVersion":"0.2.0","cen":"f"}"#, true).unwrap_err().code, 1);
        assert_eq!(NetConf::parse(br#"{"cniVersion":"1.1.0"}"#, true).unwrap_err().code, 7);
        assert_eq!(NetConf::parse(br#"{"cniVersion":"1.1.0","cen":"f","timeout":-1}"#, true).unwrap_err().code, 7);
        let c = NetConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n","cen":"f","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#,
            true,
        )
        .unwrap();
        assert_eq!(c.server, DEFAULT_SERVER);
        assert_eq!(c.valid_attachments, vec![Attachment { container_id: "a".into(), ifname: "eth0".into() }]);
    }

    #[test]
    fn results_append_to_the_previous_one_in_the_callers_shape() {
        let mut a = Attached {
            host: None,
            ifname: "eth0".into(),
            mac: Some("02:00:00:00:00:01".into()),
            sandbox: "/run/netns/x".into(),
            ips: vec![(Ipv4Addr::new(10, 10, 0, 10), 16, Some(Ipv4Addr::new(10, 10, 0, 1)))],
            routes: vec![(Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::new(10, 10, 0, 1))],
        };
        let r = result("1.1.0", None, &a);
        assert_eq!(r["ips"][0], json!({"address": "10.10.0.10/16", "gateway": "10.10.0.1", "interface": 0}));
        assert_eq!(r["interfaces"][0]["sandbox"], "/run/netns/x");
        let prev = json!({"cniVersion": "0.4.0", "interfaces": [{"name": "lo0"}], "ips": [{"address": "1.2.3.4/8", "version": "4"}],
                          "dns": {"nameservers": ["1.1.1.1"]}});
        let r = result("0.4.0", Some(&prev), &a);
        assert_eq!(r["interfaces"].as_array().unwrap().len(), 2);
        assert_eq!(r["ips"][1]["interface"], 1);
        assert_eq!(r["ips"][1]["version"], "4");
        assert_eq!(r["dns"]["nameservers"][0], "1.1.1.1");
        assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
        // The host side comes before the container's interface, without a
        // sandbox; the addresses name the container's.
        a.host = Some(("lt1-vabc".into(), Some("02:00:00:00:00:02".into())));
        let r = result("1.1.0", Some(&prev), &a);
        assert_eq!(r["interfaces"][1], json!({"name": "lt1-vabc", "mac": "02:00:00:00:00:02"}));
        assert_eq!(r["interfaces"][2]["sandbox"], "/run/netns/x");
        assert_eq!(r["ips"][1]["interface"], 2);
    }
}
