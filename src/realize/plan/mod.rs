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

mod op;

pub use op::{Op, VethEnd};

use super::desired::{CenNet, Desired, Index, NetnsRef, Wiring};
use super::naming;
use super::observed::{LinkKind, LinkState, NsId, Observed};
use super::{Config, FabricMode};

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
    /// Members left out because their bound namespace is unavailable:
    /// container key -> why (their CENs are wired without them).
    pub unavailable: BTreeMap<String, String>,
    /// Observed links looked at while planning (a measure of the work).
    #[serde(skip)]
    pub lookups: usize,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// What a plan looks at.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Everything: adoption and reconcile.
    All,
    /// These CENs (made or not, existing or gone), the namespaces of their
    /// members and the links that carry their groups, and the namespaces
    /// given (those whose containers no desired CEN uses any more, see
    /// [`Desired::take_released`]): one change's worth.
    Cens(&'a BTreeSet<String>, &'a BTreeSet<NsId>),
}

/// Desired CENs by link group (groups are 20-bit hashes: two CENs may share
/// one, and then a scoped plan must look at both).
#[derive(Debug, Clone, Default)]
pub struct GroupIndex {
    cens: BTreeMap<u32, BTreeSet<String>>,
}

impl GroupIndex {
    /// Indexes every desired CEN.
    pub fn of(desired: &Desired, prefix: &str) -> GroupIndex {
        let mut ix = GroupIndex::default();
        for id in desired.cens.keys() {
            ix.set(prefix, id, true);
        }
        ix
    }

    /// Records whether a CEN is desired.
    pub fn set(&mut self, prefix: &str, cen: &str, desired: bool) {
        for g in [naming::cen_group(prefix, cen, true), naming::cen_group(prefix, cen, false)] {
            if desired {
                self.cens.entry(g).or_default().insert(cen.to_string());
            } else if let Some(set) = self.cens.get_mut(&g) {
                set.remove(cen);
                if set.is_empty() {
                    self.cens.remove(&g);
                }
            }
        }
    }

    /// The desired CENs whose links carry group `g`.
    pub fn sharing(&self, g: u32) -> impl Iterator<Item = &String> + '_ {
        self.cens.get(&g).into_iter().flatten()
    }
}

/// A bridge or a veth pair to check as a whole.
enum Unit {
    Bridge { cen: String, name: String, group: u32 },
    Pair { cen: String, a: VethEnd, b: VethEnd, group: u32 },
    Vxlan { cen: String, name: String, vni: u32, bridge: String, group: u32 },
}

/// A bridged CEN's layer-2 entries: the VXLAN device's remote VTEPs and
/// the bridge's neighbours on other hosts (none where it spans nothing).
struct L2 {
    cen: String,
    bridge: String,
    vxlan: Option<String>,
    remotes: BTreeSet<Ipv4Addr>,
    neighbours: BTreeMap<Ipv4Addr, [u8; 6]>,
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

/// Compute the operations that take the kernel from `current` to `desired`,
/// looking at everything.
pub fn plan(current: &Observed, desired: &Desired, cfg: &Config) -> Plan {
    let index = Index::of(desired);
    plan_scoped(current, desired, &index, cfg, Scope::All, &GroupIndex::default())
}

/// Compute the operations for one scope. `index` describes `desired` (see
/// [`Desired::index`]); `groups` names the desired CENs per link group.
pub fn plan_scoped(
    current: &Observed,
    desired: &Desired,
    index: &Index,
    cfg: &Config,
    scope: Scope<'_>,
    groups: &GroupIndex,
) -> Plan {
    let mut p = Planner::new(current, desired, index, cfg);
    p.scope(scope, groups);
    p.accept_cens();
    p.namespaces();
    p.forwarding();
    p.links();
    p.strays(scope);
    p.deletes();
    p.addresses_and_routes();
    p.finish()
}

/// The state of one planning: the passes fill it in order.
struct Planner<'a> {
    cur: &'a Observed,
    want: &'a Desired,
    index: &'a Index,
    cfg: &'a Config,
    fabric: NsId,
    out: Plan,
    /// The CENs this plan looks at.
    cens: BTreeSet<String>,
    /// The namespaces this plan looks at.
    spaces: BTreeSet<NsId>,
    /// Namespace of each container of an accepted CEN.
    ns_of: BTreeMap<&'a str, Result<NsId, String>>,
    /// Links the accepted CENs expect: namespace -> name -> CEN.
    expected: BTreeMap<NsId, BTreeMap<String, String>>,
    units: Vec<Unit>,
    addrs: Vec<Addrs>,
    l2: Vec<L2>,
    /// Namespaces the accepted CENs need, with the CENs that need them.
    needed_ns: BTreeMap<NsId, Vec<String>>,
    steps: Vec<Step>,
    create_steps: Vec<Step>,
    deleted_ns: BTreeSet<NsId>,
    /// Links to delete, per namespace: index -> name.
    doomed: BTreeMap<NsId, BTreeMap<u32, String>>,
    recreated: BTreeSet<(NsId, String)>,
    bridge_ok: BTreeMap<String, bool>,
    lookups: std::cell::Cell<usize>,
}

impl<'a> Planner<'a> {
    fn new(cur: &'a Observed, want: &'a Desired, index: &'a Index, cfg: &'a Config) -> Self {
        Planner {
            cur,
            want,
            index,
            cfg,
            fabric: fabric_ns(cfg),
            out: Plan::default(),
            cens: BTreeSet::new(),
            spaces: BTreeSet::new(),
            ns_of: BTreeMap::new(),
            expected: BTreeMap::new(),
            units: Vec::new(),
            addrs: Vec::new(),
            l2: Vec::new(),
            needed_ns: BTreeMap::new(),
            steps: Vec::new(),
            create_steps: Vec::new(),
            deleted_ns: BTreeSet::new(),
            doomed: BTreeMap::new(),
            recreated: BTreeSet::new(),
            bridge_ok: BTreeMap::new(),
            lookups: std::cell::Cell::new(0),
        }
    }

    fn prefix(&self) -> &'a str {
        self.cfg.prefix.as_str()
    }

    fn find(&self, ns: &NsId, name: &str) -> Option<&'a LinkState> {
        self.lookups.set(self.lookups.get() + 1);
        self.cur.link(ns, name)
    }

    /// Which CENs and namespaces to look at.
    fn scope(&mut self, scope: Scope<'_>, groups: &GroupIndex) {
        match scope {
            Scope::All => {
                self.cens = self.want.cens.keys().cloned().collect();
                self.spaces = self.cur.namespaces().keys().cloned().collect();
            }
            Scope::Cens(set, released) => {
                self.spaces.extend(released.iter().cloned());
                let prefix = self.prefix();
                for cen in set {
                    self.cens.insert(cen.clone());
                    for g in [naming::cen_group(prefix, cen, true), naming::cen_group(prefix, cen, false)] {
                        // Desired CENs sharing a group are looked at too, so
                        // that their links are expected, not strays.
                        self.cens.extend(groups.sharing(g).cloned());
                        self.spaces.extend(self.cur.in_group(g).map(|(ns, _)| ns.clone()));
                    }
                }
            }
        }
        let cens: Vec<String> = self.cens.iter().cloned().collect();
        for id in &cens {
            let Some(cen) = self.want.cens.get(id) else { continue };
            self.out.cens.insert(id.clone());
            for m in &cen.members {
                self.out.cins.extend(m.addresses.iter().map(|a| a.cin.clone()));
                self.out.cins.extend(m.routes.iter().map(|r| r.cin.clone()));
                if let Some(ns) = self.want.containers.get(&m.container).and_then(|c| c.ns()) {
                    self.spaces.insert(ns);
                }
            }
            self.out.cins.extend(cen.gateways.iter().map(|a| a.cin.clone()));
            if cen.wiring == Wiring::Bridge {
                self.spaces.insert(self.fabric.clone());
            }
        }
    }

    /// The namespace a container lives in, or why it cannot be used.
    fn container_ns(&self, key: &str) -> Option<Result<NsId, String>> {
        let c = self.want.containers.get(key)?;
        Some(match &c.netns {
            NetnsRef::Managed => {
                let ns = NsId::Managed(c.id.clone());
                let sharing = self.index.in_ns(&ns).map(|keys| keys.iter().find(|k| k.as_str() != key));
                if !naming::valid_container_id(&c.id) {
                    Err(format!("container id {:?} cannot name a namespace", c.id))
                } else if let Some(Some(other)) = sharing {
                    let (a, b) = if other.as_str() < key { (other.as_str(), key) } else { (key, other.as_str()) };
                    Err(format!("containers {a} and {b} would share namespace {}{}", self.prefix(), c.id))
                } else {
                    Ok(ns)
                }
            }
            NetnsRef::Path(p) if p.is_empty() => Err("empty namespace path".to_string()),
            NetnsRef::Path(p) => Ok(NsId::Path(p.clone())),
        })
    }

    /// Validates the desired CENs in scope and collects their links,
    /// addresses and namespaces.
    fn accept_cens(&mut self) {
        let want = self.want;
        let cens: Vec<String> = self.cens.iter().cloned().collect();
        for id in &cens {
            let Some(cen) = want.cens.get(id) else { continue };
            for m in &cen.members {
                if !self.ns_of.contains_key(m.container.as_str()) {
                    if let Some(r) = self.container_ns(&m.container) {
                        self.ns_of.insert(m.container.as_str(), r);
                    }
                }
            }
            if let Err(e) = self.accept(id, cen) {
                self.out.errors.insert(id.clone(), e);
            }
        }
    }

    /// One CEN: its members' namespaces, its units and links. A member
    /// whose bound namespace is unavailable (its workload is gone) is left
    /// out and reported on its own; the others are wired as if it were not
    /// there.
    fn accept(&mut self, id: &str, cen: &'a CenNet) -> Result<(), String> {
        let mut members_ns = Vec::with_capacity(cen.members.len());
        let mut present: Vec<&'a super::desired::Member> = Vec::with_capacity(cen.members.len());
        let mut seen = BTreeSet::new();
        for m in &cen.members {
            let ns = match self.ns_of.get(m.container.as_str()) {
                None => return Err(format!("member {} is not a known container", m.container)),
                Some(Err(e)) => return Err(format!("member {}: {e}", m.container)),
                Some(Ok(ns)) => ns.clone(),
            };
            if let Some(reason) = self.cur.unavailable.get(&ns) {
                self.out.unavailable.insert(m.container.clone(), reason.clone());
                continue;
            }
            present.push(m);
            if !seen.insert(m.container.as_str()) {
                return Err(format!("container {} is a member twice", m.container));
            }
            if !naming::valid_ifname(&m.ifname) {
                return Err(format!("invalid interface name {:?} for {}", m.ifname, m.container));
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
            return Err(format!("wiring {:?} does not fit {n} members", cen.wiring));
        }
        // A wire missing an end has nothing to wire until it is back.
        let wiring = match cen.wiring {
            Wiring::Wire if present.len() < 2 => Wiring::None,
            w => w,
        };
        let prefix = self.prefix();
        let fabric = self.fabric.clone();
        let bridged = cen.wiring == Wiring::Bridge;
        let mtu = self.cfg.underlay.map(|u| u.member_mtu());
        let group = naming::cen_group(prefix, id, bridged);
        let mut mine: Vec<(NsId, String)> = Vec::new();
        let mut units = Vec::new();
        let mut l2s = Vec::new();
        match wiring {
            Wiring::None => {}
            Wiring::Wire => {
                let (m0, m1) = (present[0], present[1]);
                let (n0, n1) = (members_ns[0].clone(), members_ns[1].clone());
                if n0 == n1 {
                    return Err("both members share one namespace".to_string());
                }
                mine.push((n0.clone(), m0.ifname.clone()));
                mine.push((n1.clone(), m1.ifname.clone()));
                units.push(Unit::Pair {
                    cen: id.to_string(),
                    a: VethEnd {
                        ns: n0,
                        name: m0.ifname.clone(),
                        master: None,
                        alias: Some(format!("leviathan: {} on CEN {id}", m0.container)),
                        mac: Some(naming::member_mac(id, &m0.container)),
                        mtu,
                    },
                    b: VethEnd {
                        ns: n1,
                        name: m1.ifname.clone(),
                        master: None,
                        alias: Some(format!("leviathan: {} on CEN {id}", m1.container)),
                        mac: Some(naming::member_mac(id, &m1.container)),
                        mtu,
                    },
                    group,
                });
            }
            Wiring::Bridge => {
                let br = naming::bridge_name(prefix, id);
                mine.push((fabric.clone(), br.clone()));
                units.push(Unit::Bridge { cen: id.to_string(), name: br.clone(), group });
                let mut l2 = L2 {
                    cen: id.to_string(),
                    bridge: br.clone(),
                    vxlan: None,
                    remotes: BTreeSet::new(),
                    neighbours: BTreeMap::new(),
                };
                if let Some(vx) = &cen.vxlan {
                    if self.cfg.underlay.is_none() {
                        return Err("it has members on other hosts, and this server has no underlay to reach them (start it with --vtep-address)".to_string());
                    }
                    if !(1..=0x00ff_ffff).contains(&vx.vni) {
                        return Err(format!("VNI {} is out of range", vx.vni));
                    }
                    let name = naming::vxlan_name(prefix, id);
                    mine.push((fabric.clone(), name.clone()));
                    units.push(Unit::Vxlan {
                        cen: id.to_string(),
                        name: name.clone(),
                        vni: vx.vni,
                        bridge: br.clone(),
                        group,
                    });
                    l2.vxlan = Some(name);
                    l2.remotes = vx.remotes.clone();
                    l2.neighbours = vx.neighbours.clone();
                }
                l2s.push(l2);
                for (m, ns) in present.iter().zip(&members_ns) {
                    if *ns == fabric {
                        return Err(format!("member {} lives in the fabric namespace", m.container));
                    }
                    let v = naming::veth_fabric_name(prefix, id, &m.container);
                    mine.push((fabric.clone(), v.clone()));
                    mine.push((ns.clone(), m.ifname.clone()));
                    units.push(Unit::Pair {
                        cen: id.to_string(),
                        a: VethEnd {
                            ns: fabric.clone(),
                            name: v,
                            master: Some(br.clone()),
                            alias: Some(format!("leviathan: {} on CEN {id}", m.container)),
                            mac: None,
                            mtu,
                        },
                        b: VethEnd {
                            ns: ns.clone(),
                            name: m.ifname.clone(),
                            master: None,
                            alias: Some(format!("leviathan: CEN {id}")),
                            mac: Some(naming::member_mac(id, &m.container)),
                            mtu,
                        },
                        group,
                    });
                }
            }
        }
        let mut local = BTreeSet::new();
        for (ns, name) in &mine {
            if let Some(other) = self.expected.get(ns).and_then(|m| m.get(name)) {
                return Err(format!("interface {name} in {ns} is already used by CEN {other}"));
            }
            if !local.insert((ns, name)) {
                return Err(format!("interface {name} in {ns} is used twice"));
            }
        }
        // Accepted.
        for (ns, name) in mine {
            self.expected.entry(ns).or_default().insert(name, id.to_string());
        }
        self.units.extend(units);
        self.l2.extend(l2s);
        for (m, ns) in present.iter().zip(&members_ns) {
            self.needed_ns.entry(ns.clone()).or_default().push(id.to_string());
            if wiring != Wiring::None {
                self.addrs.push(Addrs {
                    ns: ns.clone(),
                    name: m.ifname.clone(),
                    cen: id.to_string(),
                    addrs: m.addresses.iter().map(|a| (a.cin.clone(), a.ip, a.prefix_len)).collect(),
                    routes: m.routes.iter().map(|r| (r.cin.clone(), r.dest, r.prefix_len, r.via)).collect(),
                });
            }
        }
        if bridged {
            self.needed_ns.entry(fabric.clone()).or_default().push(id.to_string());
            self.addrs.push(Addrs {
                ns: fabric,
                name: naming::bridge_name(prefix, id),
                cen: id.to_string(),
                addrs: cen.gateways.iter().map(|a| (a.cin.clone(), a.ip, a.prefix_len)).collect(),
                routes: Vec::new(),
            });
        }
        Ok(())
    }

    /// Whether any desired container (of any CEN) lives in a namespace.
    fn ns_wanted(&self, ns: &NsId) -> bool {
        match ns {
            NsId::Fabric => self.cfg.fabric == FabricMode::Netns && self.index.any_bridged(),
            other => self.index.in_ns(other).is_some_and(|k| !k.is_empty()),
        }
    }

    /// Namespaces to delete (ours, in scope, wanted by nobody) and to create.
    fn namespaces(&mut self) {
        for ns in &self.spaces {
            if !self.cur.namespaces().contains_key(ns) {
                continue;
            }
            let ours = matches!(ns, NsId::Managed(_)) || (*ns == NsId::Fabric && self.cfg.fabric == FabricMode::Netns);
            // In host mode an old fabric namespace is a leftover: remove it.
            let leftover_fabric = *ns == NsId::Fabric && self.cfg.fabric == FabricMode::Host;
            if (ours && !self.ns_wanted(ns)) || leftover_fabric {
                self.deleted_ns.insert(ns.clone());
                self.steps.push(Step { op: Op::DeleteNetns { ns: ns.clone() }, cens: vec![], cin: None });
            }
        }
        for (ns, cens) in &self.needed_ns {
            let creatable = matches!(ns, NsId::Managed(_)) || *ns == NsId::Fabric;
            match self.cur.ns(ns) {
                None if creatable => {
                    self.steps.push(Step { op: Op::CreateNetns { ns: ns.clone() }, cens: cens.clone(), cin: None });
                    if matches!(ns, NsId::Managed(_)) {
                        self.steps.push(Step {
                            op: Op::SetUp { ns: ns.clone(), name: "lo".into() },
                            cens: cens.clone(),
                            cin: None,
                        });
                    }
                }
                None => {
                    // A path or host namespace that was not observed: the
                    // apply step opens those before planning, so this is a
                    // bug upstream; report rather than guess.
                    for c in cens {
                        self.out.errors.entry(c.clone()).or_insert_with(|| format!("{ns} was not observed"));
                    }
                }
                Some(st) => {
                    if matches!(ns, NsId::Managed(_)) {
                        if let Some(lo) = st.link("lo").filter(|l| l.kind == LinkKind::Loopback && !l.up) {
                            self.steps.push(Step {
                                op: Op::SetUp { ns: ns.clone(), name: lo.name.clone() },
                                cens: cens.clone(),
                                cin: None,
                            });
                        }
                    }
                }
            }
        }
        // CENs whose namespace is unusable were rejected above; drop their steps.
        let errors = &self.out.errors;
        self.steps.retain(|s| !s.cens.iter().any(|c| errors.contains_key(c)) || matches!(s.op, Op::DeleteNetns { .. }));
    }

    /// IPv4 forwarding in the fabric.
    fn forwarding(&mut self) {
        if !self.index.any_bridged() && self.want.cens.values().all(|c| c.wiring != Wiring::Bridge) {
            return;
        }
        let cur = self.cur.ns(&self.fabric).and_then(|s| s.forwarding);
        let want = self.want.forwarding;
        let change = match self.cfg.fabric {
            FabricMode::Netns => cur != Some(want),
            // Never switch the host's forwarding off: it may have been on
            // before leviathan came.
            FabricMode::Host => want && cur != Some(true),
        };
        if change {
            let cens: Vec<String> = self
                .cens
                .iter()
                .filter(|id| self.want.cens.get(*id).is_some_and(|c| c.wiring == Wiring::Bridge))
                .filter(|id| !self.out.errors.contains_key(*id))
                .cloned()
                .collect();
            self.steps.push(Step { op: Op::SetForwarding { ns: self.fabric.clone(), on: want }, cens, cin: None });
        }
    }

    /// Which units are intact; the others are (re)created.
    fn links(&mut self) {
        let fabric = self.fabric.clone();
        for u in &self.units {
            if let Unit::Bridge { cen, name, group } = u {
                let ok =
                    self.find(&fabric, name).is_some_and(|l| l.kind == LinkKind::Bridge && l.group == *group && l.ours);
                self.bridge_ok.insert(cen.clone(), ok);
            }
        }
        let units = std::mem::take(&mut self.units);
        for u in &units {
            match u {
                Unit::Bridge { cen, name, group } => self.check_bridge(cen, name, *group),
                Unit::Pair { cen, a, b, group } => self.check_pair(cen, a, b, *group),
                Unit::Vxlan { cen, name, vni, bridge, group } => self.check_vxlan(cen, name, *vni, bridge, *group),
            }
        }
    }

    fn check_bridge(&mut self, cen: &str, name: &str, group: u32) {
        let fabric = self.fabric.clone();
        if !self.bridge_ok.get(cen).copied().unwrap_or(false) {
            if let Some(l) = self.find(&fabric, name).filter(|l| l.ours) {
                self.doomed.entry(fabric.clone()).or_default().insert(l.index, l.name.clone());
            }
            self.recreated.insert((fabric.clone(), name.to_string()));
            self.create_steps.push(Step {
                op: Op::CreateBridge {
                    ns: fabric.clone(),
                    name: name.to_string(),
                    group,
                    mac: naming::bridge_mac(cen),
                },
                cens: vec![cen.to_string()],
                cin: None,
            });
            self.create_steps.push(Step {
                op: Op::SetAlias { ns: fabric, name: name.to_string(), alias: format!("leviathan: CEN {cen}") },
                cens: vec![cen.to_string()],
                cin: None,
            });
        } else if self.find(&fabric, name).is_some_and(|l| !l.up) {
            self.create_steps.push(Step {
                op: Op::SetUp { ns: fabric, name: name.to_string() },
                cens: vec![cen.to_string()],
                cin: None,
            });
        }
    }

    fn check_vxlan(&mut self, cen: &str, name: &str, vni: u32, bridge: &str, group: u32) {
        let fabric = self.fabric.clone();
        let bridge_ok = self.bridge_ok.get(cen).copied().unwrap_or(false);
        let mtu = self.cfg.underlay.map(|u| u.member_mtu());
        let link = self.find(&fabric, name);
        let ok = link.is_some_and(|l| {
            l.kind == LinkKind::Vxlan
                && l.group == group
                && l.ours
                && l.vni == Some(vni)
                && mtu.is_none_or(|m| l.mtu == m)
                && bridge_ok
                && self.find(&fabric, bridge).is_some_and(|b| Some(b.index) == l.master)
        });
        let cens = vec![cen.to_string()];
        if ok {
            if link.is_some_and(|l| !l.up) {
                self.create_steps.push(Step { op: Op::SetUp { ns: fabric, name: name.to_string() }, cens, cin: None });
            }
            return;
        }
        if let Some(l) = link.filter(|l| l.ours) {
            self.doomed.entry(fabric.clone()).or_default().insert(l.index, l.name.clone());
        }
        self.recreated.insert((fabric.clone(), name.to_string()));
        self.create_steps.push(Step {
            op: Op::CreateVxlan { ns: fabric.clone(), name: name.to_string(), vni, master: bridge.to_string(), group },
            cens: cens.clone(),
            cin: None,
        });
        self.create_steps.push(Step {
            op: Op::SetAlias {
                ns: fabric,
                name: name.to_string(),
                alias: format!("leviathan: CEN {cen} to other hosts"),
            },
            cens,
            cin: None,
        });
    }

    fn check_pair(&mut self, cen: &str, a: &VethEnd, b: &VethEnd, group: u32) {
        let la = self.find(&a.ns, &a.name);
        let lb = self.find(&b.ns, &b.name);
        let bridge_ok = self.bridge_ok.get(cen).copied().unwrap_or(false);
        let end_ok = |l: &LinkState, end: &VethEnd| -> bool {
            l.kind == LinkKind::Veth
                && l.group == group
                && l.ours
                && end.mtu.is_none_or(|m| l.mtu == m)
                && match &end.master {
                    None => l.master.is_none(),
                    Some(br) => bridge_ok && self.find(&end.ns, br).is_some_and(|b| Some(b.index) == l.master),
                }
        };
        let ok = match (la, lb) {
            (Some(la), Some(lb)) => {
                end_ok(la, a) && end_ok(lb, b) && la.peer == Some(lb.index) && lb.peer == Some(la.index)
            }
            _ => false,
        };
        let cens = vec![cen.to_string()];
        if ok {
            for (l, end) in [(la, a), (lb, b)] {
                if let Some(l) = l.filter(|l| !l.up) {
                    self.create_steps.push(Step {
                        op: Op::SetUp { ns: end.ns.clone(), name: l.name.clone() },
                        cens: cens.clone(),
                        cin: None,
                    });
                }
            }
            return;
        }
        for (l, end) in [(la, a), (lb, b)] {
            if let Some(l) = l.filter(|l| l.ours) {
                self.doomed.entry(end.ns.clone()).or_default().insert(l.index, l.name.clone());
            }
            self.recreated.insert((end.ns.clone(), end.name.clone()));
        }
        self.create_steps.push(Step {
            op: Op::CreateVeth { a: a.clone(), b: b.clone(), group },
            cens: cens.clone(),
            cin: None,
        });
        // The host side says whose it is (inside a container, the
        // interface's name says it already).
        if let (Some(alias), true) = (&a.alias, a.master.is_some()) {
            self.create_steps.push(Step {
                op: Op::SetAlias { ns: a.ns.clone(), name: a.name.clone(), alias: alias.clone() },
                cens: cens.clone(),
                cin: None,
            });
        }
        self.create_steps.push(Step { op: Op::SetUpNew { ns: b.ns.clone(), name: b.name.clone() }, cens, cin: None });
    }

    /// Our links nobody expects: in every namespace looked at for a full
    /// plan; for a scoped one, the links carrying the scoped CENs' groups.
    fn strays(&mut self, scope: Scope<'_>) {
        let candidates: Vec<(NsId, &'a LinkState)> = match scope {
            Scope::All => {
                self.cur.namespaces().iter().flat_map(|(ns, st)| st.links().map(move |l| (ns.clone(), l))).collect()
            }
            Scope::Cens(..) => {
                let prefix = self.prefix();
                let mut v = Vec::new();
                for cen in &self.cens {
                    for g in [naming::cen_group(prefix, cen, true), naming::cen_group(prefix, cen, false)] {
                        for (ns, idx) in self.cur.in_group(g) {
                            if let Some(l) = self.cur.ns(ns).and_then(|s| s.link_by_index(*idx)) {
                                v.push((ns.clone(), l));
                            }
                        }
                    }
                }
                v
            }
        };
        let fabric = self.fabric.clone();
        let fabric_seen = self.cur.namespaces().contains_key(&fabric);
        self.lookups.set(self.lookups.get() + candidates.len());
        for (ns, l) in candidates {
            if self.deleted_ns.contains(&ns) {
                continue;
            }
            let exp = self.expected.get(&ns);
            if !l.ours || l.kind == LinkKind::Loopback || exp.is_some_and(|e| e.contains_key(&l.name)) {
                continue;
            }
            // A bridged CEN's link inside a managed container namespace has
            // its peer in the fabric, which is deleted there (or goes with
            // the fabric); deleting it from both sides would cost a second
            // unregister. In a namespace bound by path the container keeps
            // running, so its links go now, explicitly.
            let container_side = matches!(ns, NsId::Managed(_));
            let bridged_ours = l.group & naming::GROUP_BRIDGE_BIT != 0 && naming::is_our_group(self.prefix(), l.group);
            if container_side && bridged_ours && fabric_seen && !self.deleted_ns.contains(&fabric) {
                continue;
            }
            if container_side && l.group & naming::GROUP_BRIDGE_BIT != 0 && self.deleted_ns.contains(&fabric) {
                continue;
            }
            self.doomed.entry(ns).or_default().insert(l.index, l.name.clone());
        }
    }

    /// Doomed links as deletes, preferring one group delete where a whole
    /// group of a namespace goes.
    fn deletes(&mut self) {
        for (ns, links) in &self.doomed {
            let Some(st) = self.cur.ns(ns) else { continue };
            let mut by_group: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
            for idx in links.keys() {
                let g = st.link_by_index(*idx).map(|l| l.group).unwrap_or(0);
                by_group.entry(g).or_default().push(*idx);
            }
            for (g, idxs) in by_group {
                let whole = g != 0 && self.cur.in_group(g).filter(|(n, _)| n == ns).all(|(_, i)| links.contains_key(i));
                if whole && idxs.len() > 1 {
                    self.steps.push(Step { op: Op::DeleteGroup { ns: ns.clone(), group: g }, cens: vec![], cin: None });
                } else {
                    for i in idxs {
                        let name = links.get(&i).cloned().unwrap_or_default();
                        self.steps.push(Step {
                            op: Op::DeleteLink { ns: ns.clone(), index: i, name },
                            cens: vec![],
                            cin: None,
                        });
                    }
                }
            }
        }
        let creates = std::mem::take(&mut self.create_steps);
        self.steps.extend(creates);
    }

    /// Addresses and routes of the accepted CENs' interfaces, and their
    /// bridges' FDB and neighbour entries.
    fn addresses_and_routes(&mut self) {
        let l2 = std::mem::take(&mut self.l2);
        for x in &l2 {
            if !self.out.errors.contains_key(&x.cen) {
                self.l2_of(x);
            }
        }
        let addrs = std::mem::take(&mut self.addrs);
        for a in &addrs {
            if self.out.errors.contains_key(&a.cen) {
                continue;
            }
            let fresh = self.recreated.contains(&(a.ns.clone(), a.name.clone()));
            let link = if fresh { None } else { self.find(&a.ns, &a.name) };
            self.addresses_of(a, link);
            self.routes_of(a, link);
        }
    }

    fn l2_of(&mut self, x: &L2) {
        let fabric = self.fabric.clone();
        let cens = vec![x.cen.clone()];
        if let Some(vx) = &x.vxlan {
            let fresh = self.recreated.contains(&(fabric.clone(), vx.clone()));
            let link = if fresh { None } else { self.find(&fabric, vx) };
            for remote in &x.remotes {
                if !link.is_some_and(|l| l.fdb.contains(remote)) {
                    self.steps.push(Step {
                        op: Op::AddFdb { ns: fabric.clone(), name: vx.clone(), remote: *remote },
                        cens: cens.clone(),
                        cin: None,
                    });
                }
            }
            if let Some(l) = link {
                for remote in l.fdb.difference(&x.remotes) {
                    self.steps.push(Step {
                        op: Op::DeleteFdb { ns: fabric.clone(), index: l.index, remote: *remote },
                        cens: vec![],
                        cin: None,
                    });
                }
            }
        }
        let fresh = self.recreated.contains(&(fabric.clone(), x.bridge.clone()));
        let link = if fresh { None } else { self.find(&fabric, &x.bridge) };
        for (ip, mac) in &x.neighbours {
            if link.and_then(|l| l.neighbours.get(ip)) != Some(mac) {
                self.steps.push(Step {
                    op: Op::AddNeigh { ns: fabric.clone(), name: x.bridge.clone(), ip: *ip, mac: *mac },
                    cens: cens.clone(),
                    cin: None,
                });
            }
        }
        if let Some(l) = link {
            for ip in l.neighbours.keys().filter(|ip| !x.neighbours.contains_key(*ip)) {
                self.steps.push(Step {
                    op: Op::DeleteNeigh { ns: fabric.clone(), index: l.index, ip: *ip },
                    cens: vec![],
                    cin: None,
                });
            }
        }
    }

    fn addresses_of(&mut self, a: &Addrs, link: Option<&LinkState>) {
        let have: &[(Ipv4Addr, u8)] = link.map(|l| l.addresses.as_slice()).unwrap_or(&[]);
        for (cin, ip, plen) in &a.addrs {
            if !have.contains(&(*ip, *plen)) {
                self.steps.push(Step {
                    op: Op::AddAddr { ns: a.ns.clone(), name: a.name.clone(), ip: *ip, prefix_len: *plen },
                    cens: vec![a.cen.clone()],
                    cin: Some(cin.clone()),
                });
            }
        }
        if let Some(l) = link {
            for (ip, plen) in have {
                if !a.addrs.iter().any(|(_, i, p)| i == ip && p == plen) {
                    self.steps.push(Step {
                        op: Op::DeleteAddr { ns: a.ns.clone(), index: l.index, ip: *ip, prefix_len: *plen },
                        cens: vec![],
                        cin: None,
                    });
                }
            }
        }
    }

    fn routes_of(&mut self, a: &Addrs, link: Option<&LinkState>) {
        let routes_have: Vec<(Ipv4Addr, u8, Ipv4Addr)> = match (link, self.cur.ns(&a.ns)) {
            (Some(l), Some(st)) => {
                st.routes.iter().filter(|r| r.oif == l.index).map(|r| (r.dest, r.prefix_len, r.via)).collect()
            }
            _ => Vec::new(),
        };
        for (cin, dest, plen, via) in &a.routes {
            if !routes_have.contains(&(*dest, *plen, *via)) {
                self.steps.push(Step {
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
                    self.steps.push(Step {
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

    fn finish(mut self) -> Plan {
        self.steps.sort_by_key(|s| s.op.phase());
        self.out.steps = self.steps;
        self.out.lookups = self.lookups.get();
        self.out
    }
}

#[cfg(test)]
mod tests;
