//! The pure diff from what is in the kernel ([`Observed`]) to what is wanted
//! ([`Desired`]), as a list of netlink-level operations.
//!
//! The plan is incremental and idempotent: objects that exist and match are
//! left alone (same ifindex), so a container joining a made CEN costs only
//! its own veth, and a leaver only loses its own link. A veth pair is one
//! unit: if either end is missing or wrong, the pair is recreated. Teardown
//! prefers deleting namespaces and whole link groups over single links
//! (every unregister costs an RCU grace period).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::desired::{Desired, NetnsRef, Wiring};
use super::naming;
use super::observed::{LinkKind, LinkState, NsId, NsState, Observed};
use super::{Config, FabricMode};

/// One end of a veth pair to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VethEnd {
    pub ns: NsId,
    pub name: String,
    /// Name of the bridge (in the same namespace) to attach to at creation.
    pub master: Option<String>,
}

/// One kernel operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Unmount and remove a named namespace (the kernel drops its links).
    DeleteNetns {
        ns: NsId,
    },
    /// Delete every link of a group in one request.
    DeleteGroup {
        ns: NsId,
        group: u32,
    },
    DeleteLink {
        ns: NsId,
        index: u32,
        name: String,
    },
    DeleteAddr {
        ns: NsId,
        index: u32,
        ip: Ipv4Addr,
        prefix_len: u8,
    },
    DeleteRoute {
        ns: NsId,
        dest: Ipv4Addr,
        prefix_len: u8,
        via: Ipv4Addr,
        oif: u32,
    },
    /// Create a named namespace (managed container or fabric).
    CreateNetns {
        ns: NsId,
    },
    SetUp {
        ns: NsId,
        name: String,
    },
    SetForwarding {
        ns: NsId,
        on: bool,
    },
    CreateBridge {
        ns: NsId,
        name: String,
        group: u32,
    },
    /// One RTM_NEWLINK: `a` in its namespace (up, attached to its bridge),
    /// peer `b` created directly in its own namespace; both in `group`.
    CreateVeth {
        a: VethEnd,
        b: VethEnd,
        group: u32,
    },
    /// Bring up the peer end of a veth just created. The kernel refuses
    /// (ENOTCONN) to create a veth peer already up in another namespace, so
    /// it is set up from inside its namespace afterwards.
    SetUpNew {
        ns: NsId,
        name: String,
    },
    AddAddr {
        ns: NsId,
        name: String,
        ip: Ipv4Addr,
        prefix_len: u8,
    },
    AddRoute {
        ns: NsId,
        name: String,
        dest: Ipv4Addr,
        prefix_len: u8,
        via: Ipv4Addr,
    },
}

impl Op {
    /// Operations of one phase are independent of each other and may run
    /// concurrently; phases run in order.
    pub fn phase(&self) -> usize {
        match self {
            Op::DeleteNetns { .. }
            | Op::DeleteGroup { .. }
            | Op::DeleteLink { .. }
            | Op::DeleteAddr { .. }
            | Op::DeleteRoute { .. } => 0,
            Op::CreateNetns { .. } => 1,
            Op::SetUp { .. } | Op::SetForwarding { .. } | Op::CreateBridge { .. } => 2,
            Op::CreateVeth { .. } => 3,
            Op::AddAddr { .. } | Op::SetUpNew { .. } => 4,
            Op::AddRoute { .. } => 5,
        }
    }

    /// Number of phases.
    pub const PHASES: usize = 6;
}

/// An operation and what it belongs to (for error reports).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub op: Op,
    /// CENs that need this step (empty for teardown of unknown objects).
    pub cens: Vec<String>,
    /// The CIN an address or route belongs to.
    pub cin: Option<String>,
}

/// The plan: steps (in phase order) and CENs rejected while planning.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// CEN id -> why it cannot be realized (it is treated as not desired).
    pub errors: BTreeMap<String, String>,
    /// Every CEN the desired state asks for.
    pub cens: BTreeSet<String>,
    /// Every CIN the desired state mentions.
    pub cins: BTreeSet<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Which CEN wants a link (the link's shape is checked per unit).
#[derive(Debug, Clone)]
struct Expect {
    cen: String,
}

enum Unit {
    Bridge { cen: String, name: String, group: u32 },
    Pair { cen: String, a: VethEnd, b: VethEnd, group: u32 },
}

struct Addrs {
    ns: NsId,
    name: String,
    cen: String,
    addrs: Vec<(String, Ipv4Addr, u8)>,
    routes: Vec<(String, Ipv4Addr, u8, Ipv4Addr)>,
}

fn fabric_ns(cfg: &Config) -> NsId {
    match cfg.fabric {
        FabricMode::Netns => NsId::Fabric,
        FabricMode::Host => NsId::Host,
    }
}

/// Compute the operations that take the kernel from `current` to `desired`.
pub fn plan(current: &Observed, desired: &Desired, cfg: &Config) -> Plan {
    let mut out = Plan::default();
    let fabric = fabric_ns(cfg);
    let prefix = cfg.prefix.as_str();

    for (id, cen) in &desired.cens {
        out.cens.insert(id.clone());
        for m in &cen.members {
            out.cins.extend(m.addresses.iter().map(|a| a.cin.clone()));
            out.cins.extend(m.routes.iter().map(|r| r.cin.clone()));
        }
        out.cins.extend(cen.gateways.iter().map(|a| a.cin.clone()));
    }

    // Which namespace each container lives in; two containers must not share
    // a managed namespace name.
    let mut ns_of: BTreeMap<&str, Result<NsId, String>> = BTreeMap::new();
    let mut managed_owner: BTreeMap<&str, &str> = BTreeMap::new();
    for (key, c) in &desired.containers {
        let r = match &c.netns {
            NetnsRef::Managed => {
                if !naming::valid_container_id(&c.id) {
                    Err(format!("container id {:?} cannot name a namespace", c.id))
                } else if let Some(other) = managed_owner.insert(c.id.as_str(), key.as_str()) {
                    Err(format!("containers {other} and {key} would share namespace {}{}", prefix, c.id))
                } else {
                    Ok(NsId::Managed(c.id.clone()))
                }
            }
            NetnsRef::Path(p) if p.is_empty() => Err("empty namespace path".to_string()),
            NetnsRef::Path(p) => Ok(NsId::Path(p.clone())),
        };
        ns_of.insert(key.as_str(), r);
    }

    // Expected links per namespace, and units to check.
    let mut expected: BTreeMap<NsId, BTreeMap<String, Expect>> = BTreeMap::new();
    let mut units: Vec<Unit> = Vec::new();
    let mut addrs: Vec<Addrs> = Vec::new();
    let mut needed_ns: BTreeMap<NsId, Vec<String>> = BTreeMap::new();
    let mut fabric_needed = false;

    'cens: for (id, cen) in &desired.cens {
        // Validate the CEN on its own.
        let mut members_ns = Vec::with_capacity(cen.members.len());
        let mut seen = BTreeSet::new();
        for m in &cen.members {
            let ns = match ns_of.get(m.container.as_str()) {
                None => {
                    out.errors.insert(id.clone(), format!("member {} is not a known container", m.container));
                    continue 'cens;
                }
                Some(Err(e)) => {
                    out.errors.insert(id.clone(), format!("member {}: {e}", m.container));
                    continue 'cens;
                }
                Some(Ok(ns)) => ns.clone(),
            };
            if let Some(reason) = current.unavailable.get(&ns) {
                out.errors.insert(id.clone(), format!("member {}: {ns}: {reason}", m.container));
                continue 'cens;
            }
            if !seen.insert(m.container.as_str()) {
                out.errors.insert(id.clone(), format!("container {} is a member twice", m.container));
                continue 'cens;
            }
            if !naming::valid_ifname(&m.ifname) {
                out.errors.insert(id.clone(), format!("invalid interface name {:?} for {}", m.ifname, m.container));
                continue 'cens;
            }
            members_ns.push(ns);
        }
        let n = cen.members.len();
        let ok_wiring = match cen.wiring {
            Wiring::None => n < 2,
            Wiring::Wire => n == 2,
            Wiring::Bridge => true,
        };
        if !ok_wiring {
            out.errors.insert(id.clone(), format!("wiring {:?} does not fit {n} members", cen.wiring));
            continue;
        }

        // Collect this CEN's links, checking for name clashes with CENs
        // already accepted.
        let bridged = cen.wiring == Wiring::Bridge;
        let group = naming::cen_group(prefix, id, bridged);
        let mut mine: Vec<(NsId, String, Expect)> = Vec::new();
        let mut cen_units = Vec::new();
        match cen.wiring {
            Wiring::None => {}
            Wiring::Wire => {
                let (m0, m1) = (&cen.members[0], &cen.members[1]);
                let (n0, n1) = (members_ns[0].clone(), members_ns[1].clone());
                if n0 == n1 {
                    out.errors.insert(id.clone(), "both members share one namespace".to_string());
                    continue;
                }
                mine.push((n0.clone(), m0.ifname.clone(), Expect { cen: id.clone() }));
                mine.push((n1.clone(), m1.ifname.clone(), Expect { cen: id.clone() }));
                cen_units.push(Unit::Pair {
                    cen: id.clone(),
                    a: VethEnd { ns: n0, name: m0.ifname.clone(), master: None },
                    b: VethEnd { ns: n1, name: m1.ifname.clone(), master: None },
                    group,
                });
            }
            Wiring::Bridge => {
                let br = naming::bridge_name(prefix, id);
                mine.push((fabric.clone(), br.clone(), Expect { cen: id.clone() }));
                cen_units.push(Unit::Bridge { cen: id.clone(), name: br.clone(), group });
                for (m, ns) in cen.members.iter().zip(&members_ns) {
                    if *ns == fabric {
                        out.errors.insert(id.clone(), format!("member {} lives in the fabric namespace", m.container));
                        continue 'cens;
                    }
                    let v = naming::veth_fabric_name(prefix, id, &m.container);
                    mine.push((fabric.clone(), v.clone(), Expect { cen: id.clone() }));
                    mine.push((ns.clone(), m.ifname.clone(), Expect { cen: id.clone() }));
                    cen_units.push(Unit::Pair {
                        cen: id.clone(),
                        a: VethEnd { ns: fabric.clone(), name: v, master: Some(br.clone()) },
                        b: VethEnd { ns: ns.clone(), name: m.ifname.clone(), master: None },
                        group,
                    });
                }
            }
        }
        let mut local = BTreeSet::new();
        for (ns, name, _) in &mine {
            let clash_other = expected.get(ns).and_then(|m| m.get(name)).map(|e| e.cen.clone());
            if let Some(other) = clash_other {
                out.errors.insert(id.clone(), format!("interface {name} in {ns} is already used by CEN {other}"));
                continue 'cens;
            }
            if !local.insert((ns.clone(), name.clone())) {
                out.errors.insert(id.clone(), format!("interface {name} in {ns} is used twice"));
                continue 'cens;
            }
        }
        // Accepted.
        for (ns, name, e) in mine {
            expected.entry(ns).or_default().insert(name, e);
        }
        units.extend(cen_units);
        for (m, ns) in cen.members.iter().zip(&members_ns) {
            needed_ns.entry(ns.clone()).or_default().push(id.clone());
            if cen.wiring != Wiring::None {
                addrs.push(Addrs {
                    ns: ns.clone(),
                    name: m.ifname.clone(),
                    cen: id.clone(),
                    addrs: m.addresses.iter().map(|a| (a.cin.clone(), a.ip, a.prefix_len)).collect(),
                    routes: m.routes.iter().map(|r| (r.cin.clone(), r.dest, r.prefix_len, r.via)).collect(),
                });
            }
        }
        if bridged {
            fabric_needed = true;
            needed_ns.entry(fabric.clone()).or_default().push(id.clone());
            addrs.push(Addrs {
                ns: fabric.clone(),
                name: naming::bridge_name(prefix, id),
                cen: id.clone(),
                addrs: cen.gateways.iter().map(|a| (a.cin.clone(), a.ip, a.prefix_len)).collect(),
                routes: Vec::new(),
            });
        }
    }

    let mut steps: Vec<Step> = Vec::new();
    let empty = NsState::default();
    let state = |ns: &NsId| current.namespaces.get(ns).unwrap_or(&empty);

    // Namespaces.
    let mut deleted_ns: BTreeSet<NsId> = BTreeSet::new();
    for ns in current.namespaces.keys() {
        let ours = matches!(ns, NsId::Managed(_)) || (*ns == NsId::Fabric && cfg.fabric == FabricMode::Netns);
        let needed = needed_ns.contains_key(ns) || (*ns == NsId::Fabric && fabric_needed);
        // In host mode an old fabric namespace is a leftover: remove it.
        let leftover_fabric = *ns == NsId::Fabric && cfg.fabric == FabricMode::Host;
        if (ours && !needed) || leftover_fabric {
            deleted_ns.insert(ns.clone());
            steps.push(Step { op: Op::DeleteNetns { ns: ns.clone() }, cens: vec![], cin: None });
        }
    }
    for (ns, cens) in &needed_ns {
        let creatable = matches!(ns, NsId::Managed(_)) || *ns == NsId::Fabric;
        match current.namespaces.get(ns) {
            None if creatable => {
                steps.push(Step { op: Op::CreateNetns { ns: ns.clone() }, cens: cens.clone(), cin: None });
                if matches!(ns, NsId::Managed(_)) {
                    steps.push(Step {
                        op: Op::SetUp { ns: ns.clone(), name: "lo".into() },
                        cens: cens.clone(),
                        cin: None,
                    });
                }
            }
            None => {
                // A path or host namespace that was not observed: the apply
                // step opens those before planning, so this is a bug upstream;
                // report rather than guess.
                for c in cens {
                    out.errors.entry(c.clone()).or_insert_with(|| format!("{ns} was not observed"));
                }
            }
            Some(st) => {
                if matches!(ns, NsId::Managed(_)) {
                    if let Some(lo) = st.links.iter().find(|l| l.kind == LinkKind::Loopback) {
                        if !lo.up {
                            steps.push(Step {
                                op: Op::SetUp { ns: ns.clone(), name: lo.name.clone() },
                                cens: cens.clone(),
                                cin: None,
                            });
                        }
                    }
                }
            }
        }
    }
    // CENs whose namespace is unusable were rejected above; drop their steps.
    steps.retain(|s| !s.cens.iter().any(|c| out.errors.contains_key(c)) || matches!(s.op, Op::DeleteNetns { .. }));

    // Forwarding in the fabric.
    if fabric_needed {
        let cur = state(&fabric).forwarding;
        let want = desired.forwarding;
        let change = match cfg.fabric {
            FabricMode::Netns => cur != Some(want),
            // Never switch the host's forwarding off: it may have been on
            // before leviathan came.
            FabricMode::Host => want && cur != Some(true),
        };
        if change {
            let cens: Vec<String> = desired
                .cens
                .iter()
                .filter(|(id, c)| c.wiring == Wiring::Bridge && !out.errors.contains_key(*id))
                .map(|(id, _)| id.clone())
                .collect();
            steps.push(Step { op: Op::SetForwarding { ns: fabric.clone(), on: want }, cens, cin: None });
        }
    }

    // Links: which units are intact.
    let find = |ns: &NsId, name: &str| -> Option<&LinkState> { current.namespaces.get(ns).and_then(|s| s.link(name)) };
    let mut bridge_ok: BTreeMap<String, bool> = BTreeMap::new();
    for u in &units {
        if let Unit::Bridge { cen, name, group } = u {
            let ok = find(&fabric, name).is_some_and(|l| l.kind == LinkKind::Bridge && l.group == *group && l.ours);
            bridge_ok.insert(cen.clone(), ok);
        }
    }
    // Links to delete, per namespace: index -> name.
    let mut doomed: BTreeMap<NsId, BTreeMap<u32, String>> = BTreeMap::new();
    let mut recreated: BTreeSet<(NsId, String)> = BTreeSet::new();
    let mut create_steps = Vec::new();
    for u in &units {
        match u {
            Unit::Bridge { cen, name, group } => {
                if !bridge_ok.get(cen).copied().unwrap_or(false) {
                    if let Some(l) = find(&fabric, name).filter(|l| l.ours) {
                        doomed.entry(fabric.clone()).or_default().insert(l.index, l.name.clone());
                    }
                    recreated.insert((fabric.clone(), name.clone()));
                    create_steps.push(Step {
                        op: Op::CreateBridge { ns: fabric.clone(), name: name.clone(), group: *group },
                        cens: vec![cen.clone()],
                        cin: None,
                    });
                } else if let Some(l) = find(&fabric, name) {
                    if !l.up {
                        create_steps.push(Step {
                            op: Op::SetUp { ns: fabric.clone(), name: name.clone() },
                            cens: vec![cen.clone()],
                            cin: None,
                        });
                    }
                }
            }
            Unit::Pair { cen, a, b, group } => {
                let la = find(&a.ns, &a.name);
                let lb = find(&b.ns, &b.name);
                let end_ok = |l: &LinkState, end: &VethEnd| -> bool {
                    l.kind == LinkKind::Veth
                        && l.group == *group
                        && l.ours
                        && match &end.master {
                            None => l.master.is_none(),
                            Some(br) => {
                                bridge_ok.get(cen).copied().unwrap_or(false)
                                    && find(&end.ns, br).is_some_and(|b| Some(b.index) == l.master)
                            }
                        }
                };
                let ok = match (la, lb) {
                    (Some(la), Some(lb)) => {
                        end_ok(la, a) && end_ok(lb, b) && la.peer == Some(lb.index) && lb.peer == Some(la.index)
                    }
                    _ => false,
                };
                if ok {
                    for (l, end) in [(la, a), (lb, b)] {
                        if let Some(l) = l.filter(|l| !l.up) {
                            create_steps.push(Step {
                                op: Op::SetUp { ns: end.ns.clone(), name: l.name.clone() },
                                cens: vec![cen.clone()],
                                cin: None,
                            });
                        }
                    }
                } else {
                    for (l, end) in [(la, a), (lb, b)] {
                        if let Some(l) = l.filter(|l| l.ours) {
                            doomed.entry(end.ns.clone()).or_default().insert(l.index, l.name.clone());
                        }
                        recreated.insert((end.ns.clone(), end.name.clone()));
                    }
                    create_steps.push(Step {
                        op: Op::CreateVeth { a: a.clone(), b: b.clone(), group: *group },
                        cens: vec![cen.clone()],
                        cin: None,
                    });
                    create_steps.push(Step {
                        op: Op::SetUpNew { ns: b.ns.clone(), name: b.name.clone() },
                        cens: vec![cen.clone()],
                        cin: None,
                    });
                }
            }
        }
    }

    // Our links nobody expects. A bridged CEN's link inside a managed
    // container namespace has its peer in the fabric, which is deleted there;
    // deleting it from both sides would cost a second unregister.
    let fabric_seen = current.namespaces.contains_key(&fabric);
    for (ns, st) in &current.namespaces {
        if deleted_ns.contains(ns) {
            continue;
        }
        let exp = expected.get(ns);
        for l in &st.links {
            if !l.ours || l.kind == LinkKind::Loopback || exp.is_some_and(|e| e.contains_key(&l.name)) {
                continue;
            }
            // Only in our own namespaces: in a namespace bound by path the
            // container keeps running, so its links go now, explicitly,
            // rather than whenever the kernel gets round to freeing the
            // fabric.
            let container_side = matches!(ns, NsId::Managed(_));
            if container_side
                && l.group & naming::GROUP_BRIDGE_BIT != 0
                && naming::is_our_group(prefix, l.group)
                && fabric_seen
                && !deleted_ns.contains(&fabric)
            {
                continue;
            }
            if container_side && l.group & naming::GROUP_BRIDGE_BIT != 0 && deleted_ns.contains(&fabric) {
                // The fabric namespace goes, and the peers with it.
                continue;
            }
            doomed.entry(ns.clone()).or_default().insert(l.index, l.name.clone());
        }
    }
    // Prefer group deletes: a group all of whose links in a namespace go.
    for (ns, links) in &doomed {
        let st = state(ns);
        let mut by_group: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for idx in links.keys() {
            let g = st.link_by_index(*idx).map(|l| l.group).unwrap_or(0);
            by_group.entry(g).or_default().push(*idx);
        }
        for (g, idxs) in by_group {
            let whole = g != 0 && st.links.iter().filter(|l| l.group == g).all(|l| links.contains_key(&l.index));
            if whole && idxs.len() > 1 {
                steps.push(Step { op: Op::DeleteGroup { ns: ns.clone(), group: g }, cens: vec![], cin: None });
            } else {
                for i in idxs {
                    let name = links.get(&i).cloned().unwrap_or_default();
                    steps.push(Step { op: Op::DeleteLink { ns: ns.clone(), index: i, name }, cens: vec![], cin: None });
                }
            }
        }
    }
    steps.extend(create_steps);

    // Addresses and routes.
    for a in &addrs {
        if out.errors.contains_key(&a.cen) {
            continue;
        }
        let fresh = recreated.contains(&(a.ns.clone(), a.name.clone()));
        let link = if fresh { None } else { find(&a.ns, &a.name) };
        let have: Vec<(Ipv4Addr, u8)> = link.map(|l| l.addresses.clone()).unwrap_or_default();
        for (cin, ip, plen) in &a.addrs {
            if !have.contains(&(*ip, *plen)) {
                steps.push(Step {
                    op: Op::AddAddr { ns: a.ns.clone(), name: a.name.clone(), ip: *ip, prefix_len: *plen },
                    cens: vec![a.cen.clone()],
                    cin: Some(cin.clone()),
                });
            }
        }
        if let Some(l) = link {
            for (ip, plen) in &have {
                if !a.addrs.iter().any(|(_, i, p)| i == ip && p == plen) {
                    steps.push(Step {
                        op: Op::DeleteAddr { ns: a.ns.clone(), index: l.index, ip: *ip, prefix_len: *plen },
                        cens: vec![],
                        cin: None,
                    });
                }
            }
        }
        let routes_have: Vec<(Ipv4Addr, u8, Ipv4Addr)> = match link {
            Some(l) => {
                state(&a.ns).routes.iter().filter(|r| r.oif == l.index).map(|r| (r.dest, r.prefix_len, r.via)).collect()
            }
            None => Vec::new(),
        };
        for (cin, dest, plen, via) in &a.routes {
            if !routes_have.contains(&(*dest, *plen, *via)) {
                steps.push(Step {
                    op: Op::AddRoute {
                        ns: a.ns.clone(),
                        name: a.name.clone(),
                        dest: *dest,
                        prefix_len: *plen,
                        via: *via,
                    },
                    cens: vec![a.cen.clone()],
                    cin: Some(cin.clone()),
                });
            }
        }
        if let Some(l) = link {
            for (dest, plen, via) in &routes_have {
                if !a.routes.iter().any(|(_, d, p, v)| d == dest && p == plen && v == via) {
                    steps.push(Step {
                        op: Op::DeleteRoute {
                            ns: a.ns.clone(),
                            dest: *dest,
                            prefix_len: *plen,
                            via: *via,
                            oif: l.index,
                        },
                        cens: vec![],
                        cin: None,
                    });
                }
            }
        }
    }

    steps.sort_by_key(|s| s.op.phase());
    out.steps = steps;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realize::desired::{Addr, CenNet, ContainerNet, Member, Route};

    fn cfg() -> Config {
        Config { prefix: "t-".into(), fabric: FabricMode::Netns }
    }

    fn desired(cens: &[(&str, &[&str])]) -> Desired {
        let mut d = Desired::default();
        for (cen, members) in cens {
            for c in *members {
                d.containers.insert(format!("h/{c}"), ContainerNet { id: c.to_string(), netns: NetnsRef::Managed });
            }
            let wiring = match members.len() {
                0 | 1 => Wiring::None,
                2 => Wiring::Wire,
                _ => Wiring::Bridge,
            };
            d.cens.insert(
                cen.to_string(),
                CenNet {
                    wiring,
                    members: members
                        .iter()
                        .map(|c| Member {
                            container: format!("h/{c}"),
                            ifname: cen.to_string(),
                            addresses: vec![],
                            routes: vec![],
                        })
                        .collect(),
                    gateways: vec![],
                },
            );
        }
        d
    }

    /// Pretend every step succeeded: a tiny kernel model.
    fn simulate(obs: &mut Observed, plan: &Plan, prefix: &str) {
        let mut next: u32 =
            obs.namespaces.values().flat_map(|s| s.links.iter().map(|l| l.index)).max().unwrap_or(0) + 100;
        for s in &plan.steps {
            match &s.op {
                Op::DeleteNetns { ns } => {
                    // The kernel drops the namespace's links, veth peers included.
                    let pairs: Vec<(u32, u32)> = obs
                        .namespaces
                        .get(ns)
                        .map(|s| s.links.iter().filter_map(|l| l.peer.map(|p| (l.index, p))).collect())
                        .unwrap_or_default();
                    obs.namespaces.remove(ns);
                    for (i, p) in pairs {
                        for st in obs.namespaces.values_mut() {
                            st.links.retain(|l| !(l.index == p && l.peer == Some(i)));
                        }
                    }
                }
                Op::CreateNetns { ns } => {
                    let lo = LinkState::new_loopback();
                    obs.namespaces
                        .insert(ns.clone(), NsState { links: vec![lo], routes: vec![], forwarding: Some(false) });
                }
                Op::DeleteGroup { ns, group } => {
                    let gone: Vec<u32> = obs
                        .namespaces
                        .get(ns)
                        .map(|s| s.links.iter().filter(|l| l.group == *group).map(|l| l.index).collect())
                        .unwrap_or_default();
                    for i in gone {
                        del_link(obs, ns, i);
                    }
                }
                Op::DeleteLink { ns, index, .. } => del_link(obs, ns, *index),
                Op::SetUp { ns, name } | Op::SetUpNew { ns, name } => {
                    if let Some(l) =
                        obs.namespaces.get_mut(ns).and_then(|s| s.links.iter_mut().find(|l| l.name == *name))
                    {
                        l.up = true;
                    }
                }
                Op::SetForwarding { ns, on } => {
                    if let Some(s) = obs.namespaces.get_mut(ns) {
                        s.forwarding = Some(*on);
                    }
                }
                Op::CreateBridge { ns, name, group } => {
                    next += 1;
                    obs.namespaces.get_mut(ns).expect("ns").links.push(LinkState {
                        index: next,
                        name: name.clone(),
                        kind: LinkKind::Bridge,
                        group: *group,
                        master: None,
                        peer: None,
                        up: true,
                        ours: true,
                        addresses: vec![],
                    });
                }
                Op::CreateVeth { a, b, group } => {
                    let (ia, ib) = (next + 1, next + 2);
                    next += 2;
                    let master = a.master.as_ref().map(|m| obs.namespaces[&a.ns].link(m).expect("bridge").index);
                    obs.namespaces.get_mut(&a.ns).expect("ns a").links.push(LinkState {
                        index: ia,
                        name: a.name.clone(),
                        kind: LinkKind::Veth,
                        group: *group,
                        master,
                        peer: Some(ib),
                        up: true,
                        ours: true,
                        addresses: vec![],
                    });
                    obs.namespaces.get_mut(&b.ns).expect("ns b").links.push(LinkState {
                        index: ib,
                        name: b.name.clone(),
                        kind: LinkKind::Veth,
                        group: *group,
                        master: None,
                        peer: Some(ia),
                        up: false,
                        ours: true,
                        addresses: vec![],
                    });
                }
                Op::AddAddr { ns, name, ip, prefix_len } => {
                    let l = obs
                        .namespaces
                        .get_mut(ns)
                        .and_then(|s| s.links.iter_mut().find(|l| l.name == *name))
                        .expect("link");
                    l.addresses.push((*ip, *prefix_len));
                }
                Op::DeleteAddr { ns, index, ip, prefix_len } => {
                    if let Some(l) =
                        obs.namespaces.get_mut(ns).and_then(|s| s.links.iter_mut().find(|l| l.index == *index))
                    {
                        l.addresses.retain(|a| *a != (*ip, *prefix_len));
                    }
                }
                Op::AddRoute { ns, name, dest, prefix_len, via } => {
                    let st = obs.namespaces.get_mut(ns).expect("ns");
                    let oif = st.link(name).expect("link").index;
                    st.routes.push(crate::realize::observed::RouteState {
                        dest: *dest,
                        prefix_len: *prefix_len,
                        via: *via,
                        oif,
                    });
                }
                Op::DeleteRoute { ns, dest, prefix_len, via, oif } => {
                    if let Some(st) = obs.namespaces.get_mut(ns) {
                        st.routes.retain(|r| {
                            !(r.dest == *dest && r.prefix_len == *prefix_len && r.via == *via && r.oif == *oif)
                        });
                    }
                }
            }
        }
        let _ = prefix;
    }

    fn del_link(obs: &mut Observed, ns: &NsId, index: u32) {
        // Deleting a veth end deletes its peer: find it by mutual index.
        let peer = obs.namespaces.get(ns).and_then(|s| s.link_by_index(index)).and_then(|l| l.peer);
        if let Some(st) = obs.namespaces.get_mut(ns) {
            st.links.retain(|l| l.index != index);
            for l in st.links.iter_mut() {
                if l.master == Some(index) {
                    l.master = None;
                }
            }
            st.routes.retain(|r| r.oif != index);
        }
        if let Some(p) = peer {
            for st in obs.namespaces.values_mut() {
                st.links.retain(|l| !(l.index == p && l.peer == Some(index)));
            }
        }
    }

    fn converge(obs: &mut Observed, d: &Desired) -> Plan {
        let p = plan(obs, d, &cfg());
        simulate(obs, &p, "t-");
        let again = plan(obs, d, &cfg());
        assert!(again.is_empty(), "not idempotent: {:#?}", again.steps);
        p
    }

    #[test]
    fn make_from_nothing_creates_directly() {
        let d = desired(&[("cen1", &["c1", "c2", "c3"]), ("cen5", &["c2", "c4"])]);
        let mut obs = Observed::default();
        let p = converge(&mut obs, &d);
        assert!(p.errors.is_empty(), "{:?}", p.errors);
        let count = |f: fn(&Op) -> bool| p.steps.iter().filter(|s| f(&s.op)).count();
        assert_eq!(count(|o| matches!(o, Op::CreateNetns { .. })), 5); // 4 containers + fabric
        assert_eq!(count(|o| matches!(o, Op::CreateBridge { .. })), 1);
        assert_eq!(count(|o| matches!(o, Op::CreateVeth { .. })), 4);
        assert_eq!(count(|o| matches!(o, Op::DeleteLink { .. } | Op::DeleteGroup { .. })), 0);
        // Phases are ordered.
        assert!(p.steps.windows(2).all(|w| w[0].op.phase() <= w[1].op.phase()));
        // Each container namespace has one interface per CEN.
        assert!(obs.namespaces[&NsId::Managed("c2".into())].link("cen1").is_some());
        assert!(obs.namespaces[&NsId::Managed("c2".into())].link("cen5").is_some());
    }

    #[test]
    fn joiner_and_leaver_touch_only_their_links() {
        let mut obs = Observed::default();
        converge(&mut obs, &desired(&[("cen1", &["c1", "c2", "c3"])]));
        let before = obs.clone();
        let p = converge(&mut obs, &desired(&[("cen1", &["c1", "c2", "c3", "c4"])]));
        assert_eq!(p.steps.len(), 4, "{:#?}", p.steps); // netns, lo up, veth, peer up
        for c in ["c1", "c2", "c3"] {
            let ns = NsId::Managed(c.into());
            assert_eq!(
                before.namespaces[&ns].link("cen1").map(|l| l.index),
                obs.namespaces[&ns].link("cen1").map(|l| l.index)
            );
        }
        // c2 leaves: one link delete in the fabric, nothing else.
        let p = converge(&mut obs, &desired(&[("cen1", &["c1", "c3", "c4"])]));
        assert_eq!(p.steps.len(), 2, "{:#?}", p.steps);
        assert!(p.steps.iter().any(|s| matches!(&s.op, Op::DeleteNetns { ns } if *ns == NsId::Managed("c2".into()))));
        assert!(p.steps.iter().any(|s| matches!(&s.op, Op::DeleteLink { ns: NsId::Fabric, .. })));
    }

    #[test]
    fn destroy_all_deletes_namespaces_only() {
        let mut obs = Observed::default();
        converge(&mut obs, &desired(&[("cen1", &["c1", "c2", "c3"]), ("cen4", &["c3", "c5"])]));
        let p = converge(&mut obs, &Desired::default());
        assert!(p.steps.iter().all(|s| matches!(s.op, Op::DeleteNetns { .. })), "{:#?}", p.steps);
        assert!(obs.namespaces.is_empty());
    }

    #[test]
    fn destroying_one_bridge_cen_is_one_group_delete() {
        let mut obs = Observed::default();
        converge(&mut obs, &desired(&[("cen1", &["c1", "c2", "c3"]), ("cen2", &["c1", "c2", "c3"])]));
        let p = converge(&mut obs, &desired(&[("cen1", &["c1", "c2", "c3"])]));
        assert_eq!(p.steps.len(), 1, "{:#?}", p.steps);
        assert!(matches!(p.steps[0].op, Op::DeleteGroup { ns: NsId::Fabric, .. }));
    }

    #[test]
    fn wire_becomes_bridge() {
        let mut obs = Observed::default();
        converge(&mut obs, &desired(&[("cen1", &["c1", "c2"])]));
        assert!(!obs.namespaces.contains_key(&NsId::Fabric));
        converge(&mut obs, &desired(&[("cen1", &["c1", "c2", "c3"])]));
        let l = obs.namespaces[&NsId::Managed("c1".into())].link("cen1").expect("link");
        assert!(l.group & naming::GROUP_BRIDGE_BIT != 0);
        converge(&mut obs, &desired(&[("cen1", &["c1"])]));
        assert!(obs.namespaces[&NsId::Managed("c1".into())].link("cen1").is_none());
    }

    #[test]
    fn drift_is_repaired() {
        let mut obs = Observed::default();
        converge(&mut obs, &desired(&[("cen1", &["c1", "c2", "c3"])]));
        // Someone deletes c2's container end (and so its peer).
        let ns = NsId::Managed("c2".into());
        let idx = obs.namespaces[&ns].link("cen1").expect("link").index;
        del_link(&mut obs, &ns, idx);
        let p = converge(&mut obs, &desired(&[("cen1", &["c1", "c2", "c3"])]));
        assert_eq!(p.steps.len(), 2); // veth, peer up
        assert!(matches!(p.steps[0].op, Op::CreateVeth { .. }));
        // A stray link of ours in the fabric goes.
        obs.namespaces.get_mut(&NsId::Fabric).expect("fabric").links.push(LinkState {
            index: 999,
            name: "t-bold".into(),
            kind: LinkKind::Bridge,
            group: 7,
            master: None,
            peer: None,
            up: true,
            ours: true,
            addresses: vec![],
        });
        let p = converge(&mut obs, &desired(&[("cen1", &["c1", "c2", "c3"])]));
        assert_eq!(p.steps.len(), 1);
    }

    #[test]
    fn addresses_routes_and_forwarding() {
        let mut d = desired(&[("cen1", &["c1", "c2", "c3"])]);
        let cen = d.cens.get_mut("cen1").expect("cen");
        cen.gateways.push(Addr { cin: "cin1".into(), ip: Ipv4Addr::new(10, 12, 0, 1), prefix_len: 24 });
        for (i, m) in cen.members.iter_mut().enumerate() {
            m.addresses.push(Addr { cin: "cin1".into(), ip: Ipv4Addr::new(10, 12, 0, 10 + i as u8), prefix_len: 24 });
            m.routes.push(Route {
                cin: "cin1".into(),
                dest: Ipv4Addr::new(10, 12, 0, 0),
                prefix_len: 16,
                via: Ipv4Addr::new(10, 12, 0, 1),
            });
        }
        d.forwarding = true;
        let mut obs = Observed::default();
        let p = converge(&mut obs, &d);
        assert!(p.cins.contains("cin1"));
        assert_eq!(p.steps.iter().filter(|s| matches!(s.op, Op::AddAddr { .. })).count(), 4);
        assert_eq!(p.steps.iter().filter(|s| matches!(s.op, Op::AddRoute { .. })).count(), 3);
        assert_eq!(obs.namespaces[&NsId::Fabric].forwarding, Some(true));
        // Change one address: delete old, add new, nothing else.
        d.cens.get_mut("cen1").expect("cen").members[0].addresses[0].ip = Ipv4Addr::new(10, 12, 0, 99);
        let p = converge(&mut obs, &d);
        assert_eq!(p.steps.len(), 2, "{:#?}", p.steps);
    }

    #[test]
    fn bad_input_is_reported_not_panicked() {
        let mut d = desired(&[("cen1", &["c1", "c2", "c3"]), ("cen2", &["c1", "c2"])]);
        d.cens.get_mut("cen2").expect("cen").members[0].ifname = "cen1".into(); // clash in c1
        d.cens.insert("cen3".into(), CenNet { wiring: Wiring::Wire, members: vec![], gateways: vec![] });
        d.cens.insert(
            "cen4".into(),
            CenNet {
                wiring: Wiring::Bridge,
                members: vec![Member {
                    container: "nobody".into(),
                    ifname: "x".into(),
                    addresses: vec![],
                    routes: vec![],
                }],
                gateways: vec![],
            },
        );
        let mut obs = Observed::default();
        let p = plan(&obs, &d, &cfg());
        assert!(p.errors.contains_key("cen2") && p.errors.contains_key("cen3") && p.errors.contains_key("cen4"));
        assert!(!p.errors.contains_key("cen1"));
        simulate(&mut obs, &p, "t-");
        assert!(plan(&obs, &d, &cfg()).is_empty());
    }

    #[test]
    fn path_namespaces_are_never_deleted_and_foreign_links_kept() {
        let mut d = desired(&[("cen1", &["c1", "c2"])]);
        d.containers.get_mut("h/c2").expect("c2").netns = NetnsRef::Path("/proc/1/ns/net".into());
        let pns = NsId::Path("/proc/1/ns/net".into());
        let mut obs = Observed::default();
        let eth0 = LinkState {
            index: 2,
            name: "eth0".into(),
            kind: LinkKind::Veth,
            group: 0,
            master: None,
            peer: Some(9),
            up: true,
            ours: false,
            addresses: vec![],
        };
        obs.namespaces.insert(pns.clone(), NsState { links: vec![eth0], routes: vec![], forwarding: None });
        converge(&mut obs, &d);
        assert!(obs.namespaces[&pns].link("cen1").is_some());
        let p = converge(&mut obs, &Desired::default());
        assert!(!p.steps.iter().any(|s| matches!(&s.op, Op::DeleteNetns { ns } if *ns == pns)));
        assert!(obs.namespaces[&pns].link("eth0").is_some());
        assert!(obs.namespaces[&pns].link("cen1").is_none());
    }
}
