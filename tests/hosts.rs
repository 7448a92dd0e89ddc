//! Many hosts (issue 11), end to end: three "hosts" on one machine
//! (`tests/common/hosts.rs`: network namespaces on an underlay bridge,
//! 192.0.2.0/24, each with an etcd member and a `leviathan serve --etcd
//! ... --vtep-address ...` entered into it), one scenario run in order:
//!
//! - the original example CEN file imported with its containers spread over
//!   the three hosts (GraphQL `cenImport` with `hostId`, the legacy
//!   `POST /cen/import` on a host's own server, the legacy
//!   `PUT /host/{hostId}/{containerId}/{cenId}`), the original CIN file and
//!   two more CINs, made through the legacy routes and GraphQL;
//! - every container pings every other member of each of its CINs, across
//!   hosts; a CEN of two containers on two hosts works; each spanning CEN
//!   has the same VNI on every server and, on each host where it is, one
//!   VXLAN device with that VNI (dstport 4789, learning off, ARP
//!   suppression on) with one all-zeros FDB entry per other such host and
//!   one FDB entry per member elsewhere, to its host; member interfaces
//!   have the underlay MTU minus 50; 1,000 pings between two hosts reach
//!   the third host's VXLAN device at most 10 times;
//! - a container added on a third host to a made CEN reaches the others,
//!   and the existing members' interfaces are untouched;
//! - destroy leaves nothing under any host's prefix;
//! - with one etcd member stopped, mutations go on; a server killed with
//!   SIGKILL while the topology changes through another converges when
//!   restarted; every acknowledged change is on every server (the same
//!   revision, the same model, the same change history).
//!
//! Needs root and etcd: fails under `CI` without them, skips loudly
//! otherwise.

mod common;

use common::hosts::{ping_all, Cluster, Host, Options};
use common::kernel::{ip_json, links, namespaces};
use common::{cen_doc_vars, cin_file_vars, fixture, until, WAIT};
use leviathan::realize::{bridge_name, mac_text, member_mac, vxlan_name};
use leviathan::store::testing::etcd_available;
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

/// The underlay MTU: not the default, so that a member MTU of 1450 could
/// only come from the underlay.
const UNDERLAY_MTU: i64 = 9000;

/// Where each container of the example files runs. cen1 and cen3 span the
/// three hosts, cen2 two of them (a third joins later), cen4 and cen5 are
/// two containers on two hosts each.
const PLACEMENT: &[(&str, &str)] = &[
    ("c1", "h1"),
    ("c4", "h1"),
    ("c6", "h1"),
    ("c11", "h1"),
    ("c15", "h1"),
    ("c2", "h2"),
    ("c5", "h2"),
    ("c7", "h2"),
    ("c16", "h2"),
    ("c3", "h3"),
    ("c9", "h3"),
    ("c10", "h3"),
    ("c12", "h3"),
    ("c13", "h3"),
    ("c14", "h3"),
];

fn placed(c: &str) -> &'static str {
    PLACEMENT.iter().find(|(id, _)| *id == c).map(|(_, h)| *h).unwrap_or_else(|| panic!("{c} is not placed"))
}

/// The example CEN file: (CEN, members in file order).
fn cen_file() -> Vec<(String, Vec<String>)> {
    let doc: Value = serde_json::from_slice(&std::fs::read(fixture("cen.json")).unwrap()).unwrap();
    doc["cenList"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let members = c["containerIDs"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_string());
            (c["cenID"].as_str().unwrap().to_string(), members.collect())
        })
        .collect()
}

/// The part of the CEN file on one host, as a legacy CEN file.
fn cen_file_on(host: &str) -> Value {
    let cens: Vec<Value> = cen_file()
        .into_iter()
        .map(|(cen, members)| {
            let here: Vec<String> = members.into_iter().filter(|m| placed(m) == host).collect();
            json!({"cenID": cen, "containerIDs": here})
        })
        .collect();
    json!({"cenList": cens})
}

const ALL_CENS: [&str; 5] = ["cen1", "cen2", "cen3", "cen4", "cen5"];
const ALL_CINS: [&str; 4] = ["cin1", "cin2", "cin3", "cin5"];

/// The whole model as every server should have it (statuses left out:
/// each server reports its own host's containers).
const DUMP: &str = "{ revision
  hosts { id vtepAddress up }
  cens { id made wiringType size containers { host { id } id } cins { id } }
  cins { id subnet made gateways cens { id } slices { cenId subnet gateway }
         members { container { host { id } id } cen { id } address prefixLength } }
  containers { host { id } id tag cens { id } interfaces { name cen { id } address } } }";

/// A container of the model: (host, id).
type Key = (String, String);

fn key_of(c: &Value) -> Key {
    (c["host"]["id"].as_str().unwrap().to_string(), c["id"].as_str().unwrap().to_string())
}

/// Kernel checks that failed, collected so that one run reports them all.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            let w = what();
            eprintln!("FAILED CHECK: {w}");
            self.0.push(w);
        }
    }
    fn assert_none(&self, stage: &str) {
        assert!(self.0.is_empty(), "{stage}: {} failed checks:\n{}", self.0.len(), self.0.join("\n"));
    }
}

/// Every container pings every other member of each of its made CINs.
async fn check_pings(cl: &Cluster, f: &mut Failures, stage: &str) -> usize {
    let d = cl.hosts[0].gql("{ cins { id made members { container { host { id } id } address } } }", json!({})).await;
    let mut pings = Vec::new();
    for cin in d["cins"].as_array().unwrap().iter().filter(|c| c["made"] == json!(true)) {
        let members: Vec<(Key, String)> = cin["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| (key_of(&m["container"]), m["address"].as_str().unwrap().to_string()))
            .collect();
        let from: BTreeSet<&Key> = members.iter().map(|(k, _)| k).collect();
        for a in from {
            for (b, addr) in members.iter().filter(|(b, _)| b != a) {
                let label = format!("{stage}: {}: {}/{} -> {}/{} at {addr}", cin["id"], a.0, a.1, b.0, b.1);
                pings.push((label, cl.host(&a.0).ns_of(&a.1), addr.clone()));
            }
        }
    }
    let failed = ping_all(&pings);
    for (label, _, _) in &failed {
        f.check(false, || format!("no answer: {label}"));
    }
    // What the kernel had, for whoever reads the failure.
    let from: BTreeSet<&String> = failed.iter().map(|(_, ns, _)| ns).collect();
    for ns in from {
        eprintln!("{stage}: {ns}: {:?}", links(ns));
    }
    if !failed.is_empty() {
        for h in &cl.hosts {
            eprintln!("{stage}: {} fabric: {:?}", h.id, links(&h.fabric()));
        }
    }
    pings.len()
}

/// The hosts a CEN is on: those with members and, for a made CIN over
/// several CENs that includes it, those with members of its other made
/// CENs (each such host routes between the CIN's slices itself).
fn presence(dump: &Value, cen: &str) -> BTreeSet<String> {
    let cens: BTreeMap<&str, &Value> =
        dump["cens"].as_array().unwrap().iter().map(|c| (c["id"].as_str().unwrap(), c)).collect();
    let hosts_of = |id: &str| -> BTreeSet<String> {
        cens[id]["containers"].as_array().unwrap().iter().map(|c| key_of(c).0).collect()
    };
    let mut out = hosts_of(cen);
    for cin in dump["cins"].as_array().unwrap().iter().filter(|c| c["made"] == json!(true)) {
        let over: Vec<&str> = cin["cens"].as_array().unwrap().iter().map(|c| c["id"].as_str().unwrap()).collect();
        if over.len() > 1 && over.contains(&cen) {
            for other in over.into_iter().filter(|o| *o != cen && cens[o]["made"] == json!(true)) {
                out.extend(hosts_of(other));
            }
        }
    }
    out
}

/// The VNI of each CEN as one server shows it (None when the API has no
/// `Cen.vni`; that is a failure).
async fn vnis(h: &Host, f: &mut Failures) -> Option<BTreeMap<String, i64>> {
    let (_, body) = h.post(&json!({"query": "{ cens { id vni } }"})).await;
    f.check(body.get("errors").is_none(), || format!("{}: {{ cens {{ id vni }} }} answered {body}", h.id));
    body["data"]["cens"]
        .as_array()
        .map(|a| a.iter().map(|c| (c["id"].as_str().unwrap().to_string(), c["vni"].as_i64().unwrap_or(-1))).collect())
}

/// The VXLAN devices of a namespace: VNI -> (name, ifindex, details).
fn vxlan_devices(ns: &str) -> BTreeMap<i64, Vec<(String, i64, Value)>> {
    let mut out: BTreeMap<i64, Vec<(String, i64, Value)>> = BTreeMap::new();
    for l in ip_json(&["-d", "-n", ns, "link", "show", "type", "vxlan"]).as_array().into_iter().flatten() {
        let vni = l["linkinfo"]["info_data"]["id"].as_i64().unwrap_or(-1);
        let name = l["ifname"].as_str().unwrap_or("").to_string();
        out.entry(vni).or_default().push((name, l["ifindex"].as_i64().unwrap_or(0), l.clone()));
    }
    out
}

/// The FDB entries of a VXLAN device that name a destination: those of
/// the all-zeros MAC (their destinations, sorted) and the others (MAC ->
/// destination).
fn fdb_entries(ns: &str, dev: &str) -> (Vec<String>, BTreeMap<String, String>) {
    let out = Command::new("bridge").args(["-n", ns, "-j", "fdb", "show", "dev", dev]).output().expect("bridge");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(json!([]));
    let (mut flood, mut macs) = (Vec::new(), BTreeMap::new());
    for e in v.as_array().into_iter().flatten().filter(|e| e["dst"].is_string()) {
        let (mac, dst) = (e["mac"].as_str().unwrap_or("").to_string(), e["dst"].as_str().unwrap_or("").to_string());
        if mac == "00:00:00:00:00:00" {
            flood.push(dst);
        } else {
            macs.insert(mac, dst);
        }
    }
    flood.sort();
    (flood, macs)
}

/// The FDB entries a CEN's VXLAN device on `host` should have: each
/// member on another host, MAC -> that host's VTEP.
fn remote_macs(cen: &Value, host: &str, vtep: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let id = cen["id"].as_str().unwrap();
    cen["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(key_of)
        .filter(|(h, _)| h != host)
        .map(|(h, c)| (mac_text(&member_mac(id, &format!("{h}/{c}"))), vtep[&h].clone()))
        .collect()
}

/// Packets a link has received (`ip -s`).
fn rx_packets(ns: &str, dev: &str) -> i64 {
    let l = ip_json(&["-s", "-n", ns, "link", "show", "dev", dev]);
    l[0]["stats64"]["rx"]["packets"].as_i64().unwrap_or(-1)
}

/// The VXLAN side of every CEN, host by host, and the member MTUs; returns
/// the ifindex of each VXLAN device found, by (host, CEN).
async fn check_vxlan(cl: &Cluster, f: &mut Failures, stage: &str) -> BTreeMap<(String, String), i64> {
    let dump = cl.hosts[0].gql(DUMP, json!({})).await;
    let mut found = BTreeMap::new();
    let mut per_server = Vec::new();
    for h in &cl.hosts {
        per_server.push(vnis(h, f).await);
    }
    let vni = per_server.first().cloned().flatten();
    if let Some(vni) = &vni {
        for (h, v) in cl.hosts.iter().zip(&per_server) {
            f.check(v.as_ref() == Some(vni), || format!("{stage}: VNIs on {} {v:?} differ from h1's {vni:?}", h.id));
        }
        let distinct: BTreeSet<i64> = vni.values().copied().collect();
        f.check(distinct.len() == vni.len() && distinct.iter().all(|v| *v >= 4096), || {
            format!("{stage}: VNIs are not distinct from 4096 up: {vni:?}")
        });
    }
    let vtep: BTreeMap<String, String> = cl.hosts.iter().map(|h| (h.id.clone(), h.addr.to_string())).collect();
    let member_mtu = UNDERLAY_MTU - 50;
    for h in &cl.hosts {
        // Made in the host's namespace (where the underlay is), then moved.
        let left = vxlan_devices(&h.ns);
        f.check(left.is_empty(), || format!("{stage}: VXLAN devices left in {}'s own namespace: {left:?}", h.id));
    }
    for cen in dump["cens"].as_array().unwrap().iter().filter(|c| c["made"] == json!(true)) {
        let id = cen["id"].as_str().unwrap();
        let here = presence(&dump, id);
        let spans = here.len() > 1;
        for h in cl.hosts.iter().filter(|_| vni.is_some()) {
            let vni = vni.as_ref().map_or(-1, |v| v[id]);
            let devs = vxlan_devices(&h.fabric()).remove(&vni).unwrap_or_default();
            if !(spans && here.contains(&h.id)) {
                f.check(devs.is_empty(), || format!("{stage}: {id} is not on {} but has a VXLAN device there", h.id));
                continue;
            }
            f.check(devs.len() == 1, || {
                format!("{stage}: {id} (VNI {vni}) on {}: {} VXLAN devices in {}", h.id, devs.len(), h.fabric())
            });
            let Some((name, ifindex, l)) = devs.into_iter().next() else { continue };
            found.insert((h.id.clone(), id.to_string()), ifindex);
            let data = &l["linkinfo"]["info_data"];
            f.check(data["port"] == json!(4789), || format!("{stage}: {id} on {}: dstport {}", h.id, data["port"]));
            f.check(data["learning"] == json!(false), || format!("{stage}: {id} on {}: learning on", h.id));
            let (want_name, bridge) = (vxlan_name(&h.prefix.0, id), bridge_name(&h.prefix.0, id));
            f.check(name == want_name, || format!("{stage}: {id} on {}: VXLAN device {name}, not {want_name}", h.id));
            f.check(l["master"] == json!(bridge), || {
                format!("{stage}: {id} on {}: {name} is in {}, not in {bridge}", h.id, l["master"])
            });
            f.check(l["flags"].as_array().is_some_and(|fl| fl.iter().any(|x| x == "UP")), || {
                format!("{stage}: {id} on {}: {name} is down", h.id)
            });
            let (got, macs) = fdb_entries(&h.fabric(), &name);
            let want: Vec<String> = here.iter().filter(|o| **o != h.id).map(|o| vtep[o].clone()).collect();
            f.check(got == want, || {
                format!("{stage}: {id} on {}: all-zeros FDB entries of {name} go to {got:?}, not {want:?}", h.id)
            });
            // One entry per member elsewhere, to its own host's VTEP.
            let want = remote_macs(cen, &h.id, &vtep);
            f.check(macs == want, || {
                format!("{stage}: {id} on {}: FDB entries of {name} are {macs:?}, not {want:?}", h.id)
            });
            f.check(l["linkinfo"]["info_slave_data"]["neigh_suppress"] == json!(true), || {
                format!("{stage}: {id} on {}: {name} does not suppress ARP: {}", h.id, l["linkinfo"])
            });
        }
        // Member interfaces of a spanning CEN leave room for VXLAN.
        if spans {
            for c in cen["containers"].as_array().unwrap() {
                let (host, cid) = key_of(c);
                let ns = cl.host(&host).ns_of(&cid);
                let mtu = links(&ns).get(id).map(|l| l.mtu);
                f.check(mtu == Some(member_mtu), || {
                    format!("{stage}: {host}/{cid}'s interface on {id} has MTU {mtu:?}, not {member_mtu}")
                });
            }
        }
    }
    found
}

/// 1,000 pings from c1 on h1 to c2 on h2, both in cen1, which h3 is on
/// too: h2's VXLAN device of cen1 receives every one, h3's (almost) none
/// (a frame to a known MAC goes to its host's VTEP only; a few broadcasts
/// are allowed for).
async fn unicast_goes_to_one_host(cl: &Cluster, f: &mut Failures) {
    let d = cl.hosts[0]
        .gql("{ cins { made members { container { host { id } id } cen { id } address } } }", json!({}))
        .await;
    let to = d["cins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["made"] == json!(true))
        .flat_map(|c| c["members"].as_array().unwrap().iter())
        .find(|m| m["cen"]["id"] == json!("cen1") && key_of(&m["container"]) == ("h2".into(), "c2".into()))
        .and_then(|m| m["address"].as_str())
        .expect("c2 has an address on cen1")
        .to_string();
    let (h2, h3) = (cl.host("h2"), cl.host("h3"));
    let dev = |h: &Host| vxlan_name(&h.prefix.0, "cen1");
    let before = (rx_packets(&h2.fabric(), &dev(h2)), rx_packets(&h3.fabric(), &dev(h3)));
    let ns = cl.host("h1").ns_of("c1");
    let out =
        Command::new("ip").args(["netns", "exec", &ns, "ping", "-f", "-q", "-c", "1000", "-w", "60", &to]).output();
    let out = out.expect("ping");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    f.check(out.status.success() && text.contains("1000 received"), || format!("c1 -> c2 flood ping: {text}"));
    let got2 = rx_packets(&h2.fabric(), &dev(h2)) - before.0;
    let got3 = rx_packets(&h3.fabric(), &dev(h3)) - before.1;
    eprintln!("1000 pings h1/c1 -> h2/c2 on cen1: h2's VXLAN device received {got2} packets, h3's {got3}");
    f.check(got2 >= 1000, || format!("h2's VXLAN device of cen1 received {got2} packets of 1000 pings"));
    f.check(got3 <= 10, || {
        format!("h3's VXLAN device of cen1 received {got3} packets of 1000 pings between h1 and h2")
    });
}

/// Where the kernel of each host differs from what the model asks of it:
/// each member of a made CEN has its interface up with the addresses of its
/// made CINs (and, in a CIN over several CENs, a route to the whole CIN);
/// each host a spanning CEN is present on has its VXLAN device up with one
/// all-zeros FDB entry per other such host, and a permanent neighbour on
/// the CEN's bridge for each member address on other hosts; a container in
/// no made CEN has no namespace.
fn kernel_mismatches(cl: &Cluster, dump: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let made_cens: BTreeSet<&str> = dump["cens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["made"] == json!(true))
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    // (container, CEN) -> addresses of made CINs; container -> subnets of
    // made CINs over several CENs.
    let mut addrs: BTreeMap<(Key, String), BTreeSet<String>> = BTreeMap::new();
    let mut routes: BTreeMap<Key, BTreeSet<String>> = BTreeMap::new();
    for cin in dump["cins"].as_array().unwrap().iter().filter(|c| c["made"] == json!(true)) {
        let multi = cin["cens"].as_array().unwrap().len() > 1;
        for m in cin["members"].as_array().unwrap() {
            let key = key_of(&m["container"]);
            let cen = m["cen"]["id"].as_str().unwrap().to_string();
            if !made_cens.contains(cen.as_str()) {
                continue;
            }
            addrs.entry((key.clone(), cen)).or_default().insert(format!(
                "{}/{}",
                m["address"].as_str().unwrap(),
                m["prefixLength"]
            ));
            if multi {
                routes.entry(key).or_default().insert(cin["subnet"].as_str().unwrap().to_string());
            }
        }
    }
    for c in dump["containers"].as_array().unwrap() {
        let key = key_of(c);
        let h = cl.host(&key.0);
        let ns = h.ns_of(&key.1);
        let made: Vec<(String, String)> = c["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| made_cens.contains(i["cen"]["id"].as_str().unwrap_or("")))
            .map(|i| (i["cen"]["id"].as_str().unwrap().to_string(), i["name"].as_str().unwrap().to_string()))
            .collect();
        if made.is_empty() {
            if namespaces(&h.prefix.0).contains(&ns) {
                out.push(format!("{}/{} is in no made CEN but has its namespace", key.0, key.1));
            }
            continue;
        }
        let have = links(&ns);
        for (cen, ifname) in made {
            let want = addrs.get(&(key.clone(), cen.clone())).cloned().unwrap_or_default();
            match have.get(&ifname) {
                Some(l) if l.up && l.addrs.iter().cloned().collect::<BTreeSet<_>>() == want => {}
                l => {
                    out.push(format!("{}/{}: interface {ifname} on {cen} is {l:?}, not up with {want:?}", key.0, key.1))
                }
            }
        }
        if let Some(subnets) = routes.get(&key) {
            let table = ip_json(&["-n", &ns, "route", "show"]);
            for s in subnets {
                if !table.as_array().into_iter().flatten().any(|r| r["dst"] == json!(s)) {
                    out.push(format!("{}/{}: no route to {s}", key.0, key.1));
                }
            }
        }
    }
    let vtep: BTreeMap<String, String> = cl.hosts.iter().map(|h| (h.id.clone(), h.addr.to_string())).collect();
    for cen in dump["cens"].as_array().unwrap().iter().filter(|c| c["made"] == json!(true)) {
        let id = cen["id"].as_str().unwrap();
        let here = presence(dump, id);
        if here.len() < 2 {
            continue;
        }
        for h in cl.hosts.iter().filter(|h| here.contains(&h.id)) {
            let dev = vxlan_name(&h.prefix.0, id);
            if !links(&h.fabric()).get(&dev).is_some_and(|l| l.up) {
                out.push(format!("{id} on {}: no VXLAN device {dev} up", h.id));
                continue;
            }
            let (got, macs) = fdb_entries(&h.fabric(), &dev);
            let want: Vec<String> = here.iter().filter(|o| **o != h.id).map(|o| vtep[o].clone()).collect();
            if got != want {
                out.push(format!("{id} on {}: all-zeros FDB entries to {got:?}, not {want:?}", h.id));
            }
            let want = remote_macs(cen, &h.id, &vtep);
            if macs != want {
                out.push(format!("{id} on {}: FDB entries {macs:?}, not {want:?}", h.id));
            }
            let bridge = bridge_name(&h.prefix.0, id);
            let neigh = ip_json(&["-n", &h.fabric(), "neigh", "show", "dev", &bridge, "nud", "permanent"]);
            let neigh: BTreeSet<String> =
                neigh.as_array().into_iter().flatten().filter_map(|n| n["dst"].as_str().map(str::to_string)).collect();
            for ((key, c), a) in &addrs {
                if c == id && key.0 != h.id {
                    for a in a {
                        let ip = a.split('/').next().unwrap_or("").to_string();
                        if !neigh.contains(&ip) {
                            out.push(format!(
                                "{id} on {}: no permanent neighbour {ip} ({}/{}) on {bridge}",
                                h.id, key.0, key.1
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

/// Waits (bounded) until every server has the same model and the kernel of
/// every host matches it (see [`kernel_mismatches`]). A host's READY does
/// not say that the others are done: the status of a CEN spanning hosts is
/// one record, so this looks at the kernels themselves.
async fn wait_kernel(cl: &Cluster) {
    let acked = cl.hosts[0].revision().await;
    wait_same_model(cl, acked).await;
    let dump = cl.hosts[0].gql(DUMP, json!({})).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let left = kernel_mismatches(cl, &dump);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "the kernels did not match the model within {WAIT:?}:\n{}", left.join("\n"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (bounded) until no host has anything under its prefix and the
/// harness's namespaces hold only what the harness put there.
async fn wait_nothing_left(cl: &Cluster) {
    let prefixes = cl.prefixes();
    let deadline = Instant::now() + WAIT;
    loop {
        let mut left: Vec<String> = prefixes.values().flat_map(|p| namespaces(p)).collect();
        for h in &cl.hosts {
            let names: BTreeSet<String> = links(&h.ns).into_keys().collect();
            if names != BTreeSet::from(["eth0".to_string(), "lo".to_string()]) {
                left.push(format!("links in {}: {names:?}", h.ns));
            }
        }
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left after destroy (waited {WAIT:?}): {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(namespaces(&cl.net.0), cl.own_namespaces(), "the harness's namespaces changed");
    let names: BTreeSet<String> = links(&cl.underlay).into_keys().collect();
    assert_eq!(names, BTreeSet::from(["br0", "lo", "p1", "p2", "p3"].map(String::from)), "the underlay changed");
}

/// The container ifindexes of some members on a CEN.
fn ifindexes(cl: &Cluster, cen: &str, members: &[&str]) -> BTreeMap<String, Option<i64>> {
    members.iter().map(|c| (c.to_string(), links(&cl.host(placed(c)).ns_of(c)).get(cen).map(|l| l.ifindex))).collect()
}

/// The revisions and items of `changes(since: 0)` up to `upto`, over the
/// websocket subscription of one server.
async fn history(h: &Host, upto: i64) -> Vec<(i64, Value)> {
    let url = format!("{}/graphql/ws", h.url.replacen("http://", "ws://", 1));
    common::changes_since0(&url, Some(common::hosts::TOKEN), upto).await
}

/// Waits (bounded) until the three servers are at one revision, at least
/// `acked`, with the same model; returns that revision.
async fn wait_same_model(cl: &Cluster, acked: i64) -> i64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut dumps = Vec::new();
        for h in &cl.hosts {
            dumps.push(h.gql(DUMP, json!({})).await);
        }
        let rev = dumps[0]["revision"].as_i64().unwrap();
        if rev >= acked && dumps.iter().all(|d| *d == dumps[0]) {
            return rev;
        }
        if Instant::now() > deadline {
            for (h, d) in cl.hosts.iter().zip(&dumps) {
                eprintln!("{}: {d}", h.id);
            }
            panic!("the servers did not agree on one model at revision {acked} or later within {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const MAKE: &str = "mutation($ids: [ID!]!) { cinMake(input: {ids: $ids}) { revision cins { status } } }";
const JOIN: &str = "mutation($h: ID, $c: ID!, $cen: ID!) {
  containerJoinCen(input: {hostId: $h, containerId: $c, cenId: $cen}) { revision } }";
const LEAVE: &str = "mutation($h: ID, $c: ID!, $cen: ID!) {
  containerLeaveCen(input: {hostId: $h, containerId: $c, cenId: $cen}) { revision } }";

fn rev(d: &Value, field: &str) -> i64 {
    d[field]["revision"].as_i64().unwrap_or_else(|| panic!("no revision in {d}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_share_cens_and_cins_over_vxlan_and_survive_faults() {
    if !common::kernel::can_run("three_hosts_share_cens_and_cins_over_vxlan_and_survive_faults")
        || !etcd_available("three_hosts_share_cens_and_cins_over_vxlan_and_survive_faults")
    {
        return;
    }
    let started = Instant::now();
    let opts = Options { mtu: UNDERLAY_MTU as u32, ..Options::default() };
    let mut cl = tokio::task::block_in_place(|| Cluster::start(opts));
    eprintln!("three hosts up in {:?}", started.elapsed());
    let mut f = Failures::default();
    let (h1, h2, h3) = (&cl.hosts[0], &cl.hosts[1], &cl.hosts[2]);

    // The harness: the hosts reach each other over the underlay, and every
    // server knows the three hosts, up, with their VTEP addresses.
    for (a, b) in [(h1, h2), (h2, h3), (h3, h1)] {
        assert!(common::kernel::ping(&a.ns, &b.addr.to_string()), "{} cannot reach {} on the underlay", a.id, b.id);
    }
    for (via, h) in [(h1, h2), (h2, h3), (h3, h1)] {
        // Each through another server: any server takes any host's changes.
        via.gql("mutation($id: ID!) { hostCreate(input: {id: $id}) { revision } }", json!({"id": h.id})).await;
    }
    for h in [h1, h2, h3] {
        until(&format!("{} to see the three hosts up", h.id), || async {
            let d = h.gql("{ hostId hosts { id vtepAddress up } }", json!({})).await;
            d["hostId"] == json!(h.id)
                && d["hosts"]
                    == json!([
                        {"id": "h1", "vtepAddress": "192.0.2.1", "up": true},
                        {"id": "h2", "vtepAddress": "192.0.2.2", "up": true},
                        {"id": "h3", "vtepAddress": "192.0.2.3", "up": true},
                    ])
        })
        .await;
    }

    // The example CEN file, spread: h1's part through GraphQL (sent to
    // h2's server), h2's part as a legacy CEN file on its own server, h3's
    // part one legacy PUT at a time (sent to h1's server).
    let part = |host: &str| {
        let mut vars = cen_doc_vars(&cen_file_on(host));
        vars["input"]["hostId"] = json!(host);
        vars
    };
    h2.gql(common::CEN_IMPORT, part("h1")).await;
    let (st, body) = h2.legacy(Method::POST, "/cen/import", Some(&cen_file_on("h2").to_string())).await;
    assert_eq!(st, 204, "{body}");
    for (cen, members) in cen_file() {
        for c in members.iter().filter(|c| placed(c) == "h3") {
            let (st, body) = h1.legacy(Method::PUT, &format!("/host/h3/{c}/{cen}"), None).await;
            assert_eq!((st, body.as_str()), (200, "true"), "PUT /host/h3/{c}/{cen}");
        }
    }
    // Every server has the file's CENs with their members where placed.
    let want: BTreeMap<String, BTreeSet<Key>> = cen_file()
        .into_iter()
        .map(|(cen, m)| (cen, m.iter().map(|c| (placed(c).to_string(), c.clone())).collect()))
        .collect();
    for h in [h1, h2, h3] {
        until(&format!("{} to have the CEN file", h.id), || async {
            let d = h.gql("{ cens { id containers { host { id } id } } }", json!({})).await;
            let got: BTreeMap<String, BTreeSet<Key>> = d["cens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    (
                        c["id"].as_str().unwrap().to_string(),
                        c["containers"].as_array().unwrap().iter().map(key_of).collect(),
                    )
                })
                .collect();
            got == want
        })
        .await;
    }

    // The CIN file through the legacy route, and CINs over cen3+cen4 (two
    // slices, routed on every host) and over cen5 (two hosts, two members)
    // through GraphQL; made through the legacy route and GraphQL.
    let (st, body) =
        h2.legacy(Method::POST, "/cin/import", Some(&std::fs::read_to_string(fixture("cin.json")).unwrap())).await;
    assert_eq!(st, 204, "{body}");
    h3.gql(
        common::CIN_IMPORT,
        json!({"input": {"cins": [{"id": "cin3", "cenIds": ["cen3", "cen4"]}, {"id": "cin5", "cenIds": ["cen5"]}]}}),
    )
    .await;
    // Every CIN of the file is there, over its CENs.
    let d = h1.gql("{ cins { id cens { id } } }", json!({})).await;
    for want in cin_file_vars(&fixture("cin.json"))["input"]["cins"].as_array().unwrap() {
        let got = d["cins"].as_array().unwrap().iter().find(|c| c["id"] == want["id"]);
        let cens: Option<Vec<Value>> =
            got.map(|c| c["cens"].as_array().unwrap().iter().map(|e| e["id"].clone()).collect());
        assert_eq!(cens.as_ref(), want["cenIds"].as_array(), "{want} in {d}");
    }
    let (st, body) = h3.legacy(Method::POST, "/cen/make", Some(&json!(ALL_CENS).to_string())).await;
    assert_eq!(st, 204, "{body}");
    let d = h1
        .gql("mutation($ids: [ID!]!) { cinMake(input: {ids: $ids}) { cins { id status } } }", json!({"ids": ALL_CINS}))
        .await;
    assert_eq!(d["cinMake"]["cins"].as_array().unwrap().len(), 4, "{d}");
    cl.wait_ready().await;
    wait_kernel(&cl).await;
    eprintln!("made in {:?}", started.elapsed());

    // Every container pings every other member of its CINs, across hosts.
    let n = check_pings(&cl, &mut f, "made").await;
    eprintln!("{n} pings");
    // The CEN of two containers on two hosts (cen5: c2 on h2, c3 on h3).
    let d = h1.gql("{ cen(id: \"cen5\") { size containers { host { id } } } }", json!({})).await;
    assert_eq!(d["cen"]["containers"], json!([{"host": {"id": "h2"}}, {"host": {"id": "h3"}}]));
    let vx = check_vxlan(&cl, &mut f, "made").await;
    unicast_goes_to_one_host(&cl, &mut f).await;

    // A container joins cen2 (on h1 and h2) from the third host, h3: it
    // reaches the others; theirs interfaces and VXLAN devices stay as they were.
    let members = ["c4", "c5", "c6", "c7"];
    let before = ifindexes(&cl, "cen2", &members);
    assert!(before.values().all(Option::is_some), "{before:?}");
    let (st, body) = h2.legacy(Method::PUT, "/host/h3/c8/cen2", None).await;
    assert_eq!((st, body.as_str()), (200, "true"));
    cl.wait_ready().await;
    wait_kernel(&cl).await;
    let d = h3.gql("{ container(id: \"c8\") { status interfaces { name address } } }", json!({})).await;
    assert_eq!(d["container"]["status"], "READY", "{d}");
    let c8 = d["container"]["interfaces"][0]["address"].as_str().expect("c8 has an address").to_string();
    f.check(links(&h3.ns_of("c8")).contains_key("cen2"), || "c8 has no interface cen2".into());
    check_pings(&cl, &mut f, "c8 joined").await;
    assert_eq!(ifindexes(&cl, "cen2", &members), before, "existing members of cen2 were rebuilt");
    let vx_after = check_vxlan(&cl, &mut f, "c8 joined").await;
    for ((host, cen), ix) in &vx {
        f.check(vx_after.get(&(host.clone(), cen.clone())) == Some(ix), || {
            format!(
                "the VXLAN device of {cen} on {host} was rebuilt (ifindex {ix} -> {:?})",
                vx_after.get(&(host.clone(), cen.clone()))
            )
        });
    }
    f.check(vx_after.contains_key(&("h3".to_string(), "cen2".to_string())), || "cen2 has no VXLAN device on h3".into());
    eprintln!("c8 at {c8} checked at {:?}", started.elapsed());

    // Destroy leaves nothing on any host.
    h2.gql("mutation($ids: [ID!]!) { cinDestroy(input: {ids: $ids}) { revision } }", json!({"ids": ALL_CINS})).await;
    let (st, body) = h1.legacy(Method::POST, "/cen/destroy", Some(&json!(ALL_CENS).to_string())).await;
    assert_eq!(st, 204, "{body}");
    wait_nothing_left(&cl).await;
    eprintln!("destroyed at {:?}", started.elapsed());

    // Faults. Made again; then one etcd member (h3's) stops, and mutations
    // through every server go on.
    h2.gql("mutation($ids: [ID!]!) { cinMake(input: {ids: $ids}) { revision } }", json!({"ids": ALL_CINS})).await;
    cl.wait_ready().await;
    wait_kernel(&cl).await;
    cl.stop_etcd(2);
    let (h1, h2, h3) = (&cl.hosts[0], &cl.hosts[1], &cl.hosts[2]);
    let mut acked: Vec<(i64, &str)> = Vec::new();
    acked.push((
        rev(&h3.gql_retry(JOIN, json!({"h": "h1", "c": "c20", "cen": "cen1"})).await, "containerJoinCen"),
        "containerJoinCen",
    ));
    acked.push((
        rev(&h1.gql_retry(JOIN, json!({"h": "h2", "c": "c21", "cen": "cen3"})).await, "containerJoinCen"),
        "containerJoinCen",
    ));
    acked.push((
        rev(&h2.gql_retry(JOIN, json!({"h": "h3", "c": "c24", "cen": "cen1"})).await, "containerJoinCen"),
        "containerJoinCen",
    ));
    cl.wait_ready().await;
    wait_kernel(&cl).await;
    check_pings(&cl, &mut f, "one etcd member down").await;

    // h3's server killed; the topology changes through the others: a
    // container of h3 joins cen2, another of h3 leaves its only CEN, one
    // of h1 joins cen2, and a new CEN with a CIN, on h1 and h3, is made.
    cl.kill_server(2);
    let (h1, h2) = (&cl.hosts[0], &cl.hosts[1]);
    acked.push((
        rev(&h1.gql_retry(JOIN, json!({"h": "h3", "c": "c22", "cen": "cen2"})).await, "containerJoinCen"),
        "containerJoinCen",
    ));
    acked.push((
        rev(&h1.gql_retry(LEAVE, json!({"h": "h3", "c": "c14", "cen": "cen1"})).await, "containerLeaveCen"),
        "containerLeaveCen",
    ));
    acked.push((
        rev(&h2.gql_retry(JOIN, json!({"h": "h1", "c": "c23", "cen": "cen2"})).await, "containerJoinCen"),
        "containerJoinCen",
    ));
    let cen6 = json!({"input": {"hostId": "h1", "cens": [{"id": "cen6", "containerIds": ["c25"]}]}});
    acked.push((rev(&h2.gql_retry(common::CEN_IMPORT, cen6).await, "cenImport"), "cenImport"));
    acked.push((
        rev(&h1.gql_retry(JOIN, json!({"h": "h3", "c": "c26", "cen": "cen6"})).await, "containerJoinCen"),
        "containerJoinCen",
    ));
    let cin6 = json!({"input": {"cins": [{"id": "cin6", "cenIds": ["cen6"]}]}});
    acked.push((rev(&h2.gql_retry(common::CIN_IMPORT, cin6).await, "cinImport"), "cinImport"));
    acked.push((rev(&h1.gql_retry(MAKE, json!({"ids": ["cin6"]})).await, "cinMake"), "cinMake"));
    let last = acked.iter().map(|(r, _)| *r).max().unwrap();
    tokio::task::block_in_place(|| cl.start_server(2));
    let (h2, h3) = (&cl.hosts[1], &cl.hosts[2]);
    until("h3's server to catch up", || async { h3.revision().await >= last }).await;
    cl.wait_ready().await;
    wait_kernel(&cl).await;
    // Its kernel converged: c22 and c26 are there, c14 is gone.
    let c14 = h3.ns_of("c14");
    until("c14's namespace to go", || async { !namespaces(&h3.prefix.0).contains(&c14) }).await;
    f.check(links(&h3.ns_of("c22")).contains_key("cen2"), || "c22 has no interface cen2 after the restart".into());
    f.check(links(&h3.ns_of("c26")).contains_key("cen6"), || "c26 has no interface cen6 after the restart".into());
    check_pings(&cl, &mut f, "after the restart").await;
    let vx = check_vxlan(&cl, &mut f, "after the restart").await;

    // h3's members leave cen2: h3 takes its part out, the others drop their
    // FDB entry towards h3 and keep their VXLAN devices.
    acked.push((
        rev(&h2.gql(LEAVE, json!({"h": "h3", "c": "c8", "cen": "cen2"})).await, "containerLeaveCen"),
        "containerLeaveCen",
    ));
    acked.push((
        rev(&h3.gql(LEAVE, json!({"h": "h3", "c": "c22", "cen": "cen2"})).await, "containerLeaveCen"),
        "containerLeaveCen",
    ));
    cl.wait_ready().await;
    wait_kernel(&cl).await;
    let c22 = h3.ns_of("c22");
    until("c22's namespace to go", || async { !namespaces(&h3.prefix.0).contains(&c22) }).await;
    let vx_after = check_vxlan(&cl, &mut f, "h3 left cen2").await;
    for h in ["h1", "h2"] {
        let k = (h.to_string(), "cen2".to_string());
        f.check(vx.contains_key(&k) && vx.get(&k) == vx_after.get(&k), || {
            format!("cen2's VXLAN device on {h}: ifindex {:?} before h3 left, {:?} after", vx.get(&k), vx_after.get(&k))
        });
    }
    check_pings(&cl, &mut f, "h3 left cen2").await;
    let last = acked.iter().map(|(r, _)| *r).max().unwrap();

    // The member back; every acknowledged change is on every server: one
    // revision, one model, one history holding every acknowledged revision.
    cl.start_etcd(2);
    tokio::task::block_in_place(|| cl.wait_etcd(2));
    let rev_all = wait_same_model(&cl, last).await;
    let histories = [
        history(&cl.hosts[0], rev_all).await,
        history(&cl.hosts[1], rev_all).await,
        history(&cl.hosts[2], rev_all).await,
    ];
    let revs: Vec<i64> = histories[0].iter().map(|(r, _)| *r).collect();
    assert_eq!(revs, (1..=rev_all).collect::<Vec<_>>(), "a gapless history");
    assert!(histories.iter().all(|h| *h == histories[0]), "the servers' histories differ");
    for (r, mutation) in &acked {
        let entry = &histories[0][(*r - 1) as usize];
        assert_eq!(entry.1[0], json!(mutation), "revision {r}: {entry:?}");
    }
    let d = cl.hosts[2].gql(DUMP, json!({})).await;
    let in_cen = |cen: &str| -> BTreeSet<Key> {
        d["cens"].as_array().unwrap().iter().find(|c| c["id"] == cen).unwrap()["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(key_of)
            .collect()
    };
    let k = |h: &str, c: &str| (h.to_string(), c.to_string());
    assert!(in_cen("cen1").contains(&k("h1", "c20")) && in_cen("cen1").contains(&k("h3", "c24")));
    assert!(!in_cen("cen1").contains(&k("h3", "c14")));
    assert!(in_cen("cen3").contains(&k("h2", "c21")));
    assert!(!in_cen("cen2").contains(&k("h3", "c22")) && in_cen("cen2").contains(&k("h1", "c23")));
    assert_eq!(in_cen("cen6"), BTreeSet::from([k("h1", "c25"), k("h3", "c26")]));

    // And destroy still leaves nothing.
    cl.hosts[2]
        .gql(
            "mutation($ids: [ID!]!) { cinDestroy(input: {ids: $ids}) { revision } }",
            json!({"ids": ([ALL_CINS.as_slice(), &["cin6"]].concat())}),
        )
        .await;
    cl.hosts[0]
        .gql(
            "mutation($ids: [ID!]!) { cenDestroy(input: {ids: $ids}) { revision } }",
            json!({"ids": ([ALL_CENS.as_slice(), &["cen6"]].concat())}),
        )
        .await;
    wait_nothing_left(&cl).await;
    f.assert_none("three hosts");

    // The harness leaves nothing behind: no process, no namespace.
    let pids: Vec<u32> = cl.hosts.iter().flat_map(|h| [h.server_pid(), h.etcd_pid()]).flatten().collect();
    assert_eq!(pids.len(), 6, "three servers and three etcd members run");
    let prefixes: Vec<String> = cl.prefixes().into_values().chain([cl.net.0.clone()]).collect();
    let dir = cl.dir().to_path_buf();
    drop(cl);
    for p in pids {
        assert!(!std::path::Path::new(&format!("/proc/{p}")).exists(), "process {p} outlived the harness");
    }
    for p in &prefixes {
        assert_eq!(namespaces(p), BTreeSet::new(), "namespaces under {p} outlived the harness");
    }
    assert!(!dir.exists(), "{} outlived the harness", dir.display());
    eprintln!("done in {:?}", started.elapsed());
}
