//! What the plugin asks of the server, as GraphQL over [`crate::http`]:
//! attach (bind the namespace, join the CEN, wait until wired), detach,
//! look a container up, list a CEN's runtime-made members, and health.
//! Shared by the CNI commands and the netavark mode.
//!
//! Invariants: a server that cannot be reached is told apart from one that
//! refuses ([`Failure::Unreachable`] lets DEL queue and STATUS answer 50);
//! the server's own message is passed on with its code.

use crate::http::{Client, HttpError, Server};
use crate::spec::{code, CniError};
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::time::Duration;

/// Why a call failed.
#[derive(Debug)]
pub enum Failure {
    /// Nothing answers: the server is down (or its store is).
    Unreachable(String),
    /// The server answered with an error (or nonsense).
    Refused(CniError),
}

impl Failure {
    /// As the spec's error: unreachable is "try again later".
    pub fn into_cni(self) -> CniError {
        match self {
            Failure::Unreachable(m) => CniError::new(code::TRY_AGAIN_LATER, m),
            Failure::Refused(e) => e,
        }
    }
}

/// The server, as the plugin sees it.
pub struct Api {
    client: Client,
}

/// What an attach left: the container's status and its addresses on the
/// CEN, with gateways and routes.
#[derive(Debug, Default)]
pub struct Wired {
    pub status: String,
    pub status_message: Option<String>,
    pub ips: Vec<(Ipv4Addr, u8, Option<Ipv4Addr>)>,
    pub routes: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
}

/// A runtime-made member of a CEN (GC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub origin: String,
    pub runtime_id: Option<String>,
    pub ifname: Option<String>,
}

const WIRED: &str = "status statusMessage runtimeId origin \
    interfaces { name cen { id } addresses { cinId address prefixLength } } \
    cins { id subnet gateways } defaultRoute { cenId gateway }";

impl Api {
    pub fn new(server: &str, token: Option<String>, timeout: Duration) -> Result<Api, CniError> {
        let server = Server::parse(server).map_err(|m| CniError::new(code::INVALID_CONFIG, m))?;
        Ok(Api { client: Client { server, token, timeout } })
    }

    /// Runs a GraphQL document; its `data`, or the first error as the
    /// spec's error.
    fn gql(&self, query: &str, variables: Value) -> Result<Value, Failure> {
        let answer = self.client.graphql(query, variables).map_err(|e| match e {
            HttpError::Unreachable(m) => Failure::Unreachable(m),
            HttpError::Protocol(m) => Failure::Refused(CniError::new(code::SERVER_REFUSED, m)),
        })?;
        if let Some(e) = answer.get("errors").and_then(Value::as_array).and_then(|a| a.first()) {
            let message = e["message"].as_str().unwrap_or("(no message)").to_string();
            let server_code = e["extensions"]["code"].as_str().unwrap_or("UNKNOWN");
            let c = match server_code {
                "UNAVAILABLE" => {
                    return Err(Failure::Unreachable(format!("the leviathan server is unavailable: {message}")))
                }
                "NOT_FOUND" if message.contains("CEN") => code::CEN_NOT_READY,
                _ => code::SERVER_REFUSED,
            };
            return Err(Failure::Refused(
                CniError::new(c, message).with_details(format!("server error code {server_code}")),
            ));
        }
        Ok(answer.get("data").cloned().unwrap_or(Value::Null))
    }

    /// Binds `id` to `netns`, joins `cen` as `ifname`; answers once the
    /// server has wired it (or failed to).
    pub fn attach(
        &self,
        id: &str,
        netns: &str,
        cen: &str,
        (ifname, runtime_id, origin): (&str, &str, &str),
    ) -> Result<Wired, Failure> {
        let q = format!("mutation($i: ContainerAttachInput!) {{ containerAttach(input: $i) {{ container {{ {WIRED} }} cen {{ status }} }} }}");
        let input = json!({"id": id, "netnsPath": netns, "cenId": cen, "interfaceName": ifname, "runtimeId": runtime_id, "origin": origin});
        let data = self.gql(&q, json!({"i": input}))?;
        let payload = &data["containerAttach"];
        if payload["cen"]["status"] == "PENDING" {
            return Err(Failure::Refused(CniError::new(
                code::CEN_NOT_READY,
                format!("CEN '{cen}' is not made: make it first (e.g. leviathan's cenMake or cinMake), then add the container again"),
            )));
        }
        Ok(wired(&payload["container"], cen))
    }

    /// Takes the runtime's container out of `cen` (deleted once in none).
    pub fn detach(&self, id: &str, cen: Option<&str>, runtime_id: &str, origin: &str) -> Result<(), Failure> {
        let q = "mutation($i: ContainerDetachInput!) { containerDetach(input: $i) { revision } }";
        self.gql(q, json!({"i": {"id": id, "cenId": cen, "runtimeId": runtime_id, "origin": origin}})).map(|_| ())
    }

    /// A container's wiring on `cen`, when it exists.
    pub fn container(&self, id: &str, cen: &str) -> Result<Option<Wired>, Failure> {
        let q = format!("query($id: ID!) {{ container(id: $id) {{ {WIRED} }} }}");
        let data = self.gql(&q, json!({"id": id}))?;
        Ok(Some(&data["container"]).filter(|c| !c.is_null()).map(|c| wired(c, cen)))
    }

    /// Whether `id` is the runtime's container `runtime_id` with interface
    /// `ifname` on `cen` (an ADD repeated after a lost answer).
    pub fn is_ours(&self, id: &str, cen: &str, ifname: &str, runtime_id: &str) -> Result<bool, Failure> {
        let q = "query($id: ID!) { container(id: $id) { runtimeId interfaces { name cen { id } } } }";
        let data = self.gql(q, json!({"id": id}))?;
        let c = &data["container"];
        let has =
            c["interfaces"].as_array().is_some_and(|a| a.iter().any(|i| i["name"] == ifname && i["cen"]["id"] == cen));
        Ok(c["runtimeId"] == runtime_id && has)
    }

    /// The members of `cen`, with how each was made.
    pub fn members(&self, cen: &str) -> Result<Vec<Member>, Failure> {
        let q = "query($cen: ID!) { containers(cenId: $cen) { id origin runtimeId interfaces { name cen { id } } } }";
        let data = self.gql(q, json!({"cen": cen}))?;
        Ok(data["containers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| Member {
                        id: c["id"].as_str().unwrap_or_default().to_string(),
                        origin: c["origin"].as_str().unwrap_or_default().to_string(),
                        runtime_id: c["runtimeId"].as_str().map(str::to_string),
                        ifname: c["interfaces"]
                            .as_array()
                            .and_then(|i| i.iter().find(|i| i["cen"]["id"] == cen))
                            .and_then(|i| i["name"].as_str())
                            .map(str::to_string),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `/healthz`: Ok when the server serves its state and realizes.
    pub fn health(&self) -> Result<(), Failure> {
        let (status, body) =
            self.client.request("GET", "/healthz", None).map_err(|e| Failure::Unreachable(e.to_string()))?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status != 200 || v["status"] != "ok" {
            return Err(Failure::Unreachable(format!(
                "the leviathan server at {} is not serving its state: {}",
                self.client.shown(),
                v["store"]["error"].as_str().unwrap_or("unavailable")
            )));
        }
        if v["realizer"] != "running" {
            return Err(Failure::Unreachable(format!(
                "the leviathan server at {} does not realize ({}): it cannot wire containers",
                self.client.shown(),
                v["realizer"].as_str().unwrap_or("unknown")
            )));
        }
        Ok(())
    }
}

fn ip(v: &Value) -> Option<Ipv4Addr> {
    v.as_str()?.parse().ok()
}

fn network(ip: Ipv4Addr, len: u8) -> Ipv4Addr {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len.min(32))) };
    Ipv4Addr::from(u32::from(ip) & mask)
}

/// The wiring of a container on `cen`, from its GraphQL object: each
/// address with the gateway in its subnet (or slice), a route to the whole
/// CIN through it when the address is on a slice, the default route when
/// the container asked for it through this CEN.
fn wired(c: &Value, cen: &str) -> Wired {
    let mut w = Wired {
        status: c["status"].as_str().unwrap_or_default().to_string(),
        status_message: c["statusMessage"].as_str().map(str::to_string),
        ..Default::default()
    };
    let cins = c["cins"].as_array().cloned().unwrap_or_default();
    let iface = c["interfaces"].as_array().and_then(|a| a.iter().find(|i| i["cen"]["id"] == cen)).cloned();
    for a in iface.as_ref().and_then(|i| i["addresses"].as_array()).into_iter().flatten() {
        let (Some(addr), Some(len)) =
            (ip(&a["address"]), a["prefixLength"].as_u64().and_then(|l| u8::try_from(l).ok()))
        else {
            continue;
        };
        let cin = cins.iter().find(|c| c["id"] == a["cinId"]);
        let gw = cin
            .and_then(|c| c["gateways"].as_array())
            .into_iter()
            .flatten()
            .filter_map(ip)
            .find(|g| network(*g, len) == network(addr, len) && *g != addr);
        w.ips.push((addr, len, gw));
        let subnet = cin.and_then(|c| c["subnet"].as_str()).and_then(|s| s.split_once('/'));
        if let (Some((net, sl)), Some(gw)) = (subnet, gw) {
            if let (Ok(net), Ok(sl)) = (net.parse::<Ipv4Addr>(), sl.parse::<u8>()) {
                if sl < len {
                    w.routes.push((net, sl, gw));
                }
            }
        }
    }
    if c["defaultRoute"]["cenId"] == cen {
        if let Some(gw) = ip(&c["defaultRoute"]["gateway"]) {
            w.routes.push((Ipv4Addr::UNSPECIFIED, 0, gw));
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wiring_reads_gateways_slices_and_the_default_route() {
        let c = json!({
            "status": "READY",
            "interfaces": [
                {"name": "eth0", "cen": {"id": "a"}, "addresses": [{"cinId": "c", "address": "10.10.1.10", "prefixLength": 24}]},
                {"name": "eth1", "cen": {"id": "b"}, "addresses": [{"cinId": "d", "address": "10.11.0.10", "prefixLength": 16}]}
            ],
            "cins": [{"id": "c", "subnet": "10.10.0.0/16", "gateways": ["10.10.0.1", "10.10.1.1"]},
                     {"id": "d", "subnet": "10.11.0.0/16", "gateways": ["10.11.0.1"]}],
            "defaultRoute": {"cenId": "a", "gateway": "10.10.1.1"}
        });
        let w = wired(&c, "a");
        assert_eq!(w.ips, vec![(Ipv4Addr::new(10, 10, 1, 10), 24, Some(Ipv4Addr::new(10, 10, 1, 1)))]);
        assert_eq!(
            w.routes,
            vec![
                (Ipv4Addr::new(10, 10, 0, 0), 16, Ipv4Addr::new(10, 10, 1, 1)),
                (Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::new(10, 10, 1, 1))
            ]
        );
        let w = wired(&c, "b");
        assert_eq!(w.ips, vec![(Ipv4Addr::new(10, 11, 0, 10), 16, Some(Ipv4Addr::new(10, 11, 0, 1)))]);
        assert!(w.routes.is_empty());
    }
}
