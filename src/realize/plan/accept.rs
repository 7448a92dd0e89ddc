//! The first pass of a plan: each desired CEN in scope is validated and
//! turned into what it needs, by what it is: a wire (one veth pair between
//! two members), a bridge (a bridge in the fabric and a pair per member),
//! VXLAN across hosts (a device on the bridge, its remote VTEPs and
//! neighbours), and the CIN slices over it (addresses and routes on the
//! members' interfaces and gateways on the bridge).
//!
//! Invariants: a CEN is taken whole or refused with a reason (never half
//! planned; a focused CEN is taken with its members in focus, the others
//! being as the last plan left them); an interface name is claimed by one CEN only; a member whose
//! bound namespace is unavailable is left out and reported on its own.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::super::desired::{CenNet, Member, NetnsRef, Vxlan, Wiring};
use super::super::naming;
use super::super::observed::NsId;
use super::{in_focus, Addrs, FabricMode, Planner, Unit, VethEnd, L2};

/// Why the planner will not wire a CEN (or put a container in a
/// namespace), in words shown as the CEN's status message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Refuses, saying why.
fn refuse<T>(why: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(why.into()))
}

/// What one CEN would make: its links (namespace, name), the units to
/// check, and its layer-2 entries.
#[derive(Default)]
struct Claim {
    links: Vec<(NsId, String)>,
    units: Vec<Unit>,
    l2: Vec<L2>,
}

/// The members of a CEN that are there, each with its namespace.
struct Present<'a> {
    members: Vec<&'a Member>,
    ns: Vec<NsId>,
}

impl<'a> Planner<'a> {
    /// The namespace a container lives in, or why it cannot be used.
    fn container_ns(&self, key: &str) -> Option<Result<NsId, Refusal>> {
        let c = self.want.containers.get(key)?;
        Some(match &c.netns {
            NetnsRef::Managed => {
                let ns = NsId::Managed(c.id.clone());
                let sharing = self.index.in_ns(&ns).map(|keys| keys.iter().find(|k| k.as_str() != key));
                if !naming::valid_container_id(&c.id) {
                    refuse(format!("container id {:?} cannot name a namespace", c.id))
                } else if let Some(Some(other)) = sharing {
                    let (a, b) = if other.as_str() < key { (other.as_str(), key) } else { (key, other.as_str()) };
                    refuse(format!("containers {a} and {b} would share namespace {}{}", self.prefix(), c.id))
                } else {
                    Ok(ns)
                }
            }
            NetnsRef::Path(p) if p.is_empty() => refuse("empty namespace path"),
            NetnsRef::Path(p) => Ok(NsId::Path(p.clone())),
        })
    }

    /// Validates the desired CENs in scope and collects their links,
    /// addresses and namespaces.
    pub(super) fn accept_cens(&mut self) {
        let want = self.want;
        let cens: Vec<String> = self.cens.iter().cloned().collect();
        for id in &cens {
            let Some(cen) = want.cens.get(id) else { continue };
            let focus = self.focus_of(id);
            for m in cen.members.iter().filter(|m| in_focus(focus.as_ref(), &m.container)) {
                if !self.ns_of.contains_key(m.container.as_str()) {
                    if let Some(r) = self.container_ns(&m.container) {
                        self.ns_of.insert(m.container.as_str(), r);
                    }
                }
            }
            if let Err(e) = self.accept(id, cen) {
                self.out.errors.insert(id.clone(), e.0);
            }
        }
    }

    /// One CEN: its members' namespaces, its units and links. A member
    /// whose bound namespace is unavailable (its workload is gone) is left
    /// out and reported on its own; the others are wired as if it were not
    /// there.
    fn accept(&mut self, id: &str, cen: &'a CenNet) -> Result<(), Refusal> {
        let present = self.present(id, cen)?;
        let n = cen.members.len();
        let ok_wiring = match cen.wiring {
            Wiring::None => n < 2,
            Wiring::Wire => n == 2,
            Wiring::Bridge => true,
        };
        if !ok_wiring {
            return refuse(format!("wiring {:?} does not fit {n} members", cen.wiring));
        }
        // A wire missing an end has nothing to wire until it is back.
        let wiring = match cen.wiring {
            Wiring::Wire if present.members.len() < 2 => Wiring::None,
            w => w,
        };
        let claim = match wiring {
            Wiring::None => Claim::default(),
            Wiring::Wire => self.wire(id, &present)?,
            Wiring::Bridge => self.bridge(id, cen, &present)?,
        };
        self.take(id, claim)?;
        self.cin_slices(id, cen, wiring, &present);
        Ok(())
    }

    /// The members that are there (of a focused CEN, those in focus),
    /// checked: known, once each, with a usable interface name.
    fn present(&mut self, id: &str, cen: &'a CenNet) -> Result<Present<'a>, Refusal> {
        let mut present = Present { members: Vec::with_capacity(cen.members.len()), ns: Vec::new() };
        let mut seen = BTreeSet::new();
        let focus = self.focus_of(id);
        for m in cen.members.iter().filter(|m| in_focus(focus.as_ref(), &m.container)) {
            let ns = match self.ns_of.get(m.container.as_str()) {
                None => return refuse(format!("member {} is not a known container", m.container)),
                Some(Err(e)) => return refuse(format!("member {}: {e}", m.container)),
                Some(Ok(ns)) => ns.clone(),
            };
            if let Some(reason) = self.cur.unavailable.get(&ns) {
                self.out.unavailable.insert(m.container.clone(), reason.clone());
                continue;
            }
            present.members.push(m);
            if !seen.insert(m.container.as_str()) {
                return refuse(format!("container {} is a member twice", m.container));
            }
            if !naming::valid_ifname(&m.ifname) {
                return refuse(format!("invalid interface name {:?} for {}", m.ifname, m.container));
            }
            present.ns.push(ns);
        }
        Ok(present)
    }

    /// A wire: one veth pair between the two members' namespaces.
    fn wire(&self, id: &str, present: &Present<'a>) -> Result<Claim, Refusal> {
        let (m0, m1) = (present.members[0], present.members[1]);
        let (n0, n1) = (present.ns[0].clone(), present.ns[1].clone());
        if n0 == n1 {
            return refuse("both members share one namespace");
        }
        let mtu = self.cfg.underlay.map(|u| u.member_mtu());
        let group = naming::cen_group(self.prefix(), id, false);
        let end = |ns: NsId, m: &Member| VethEnd {
            ns,
            name: m.ifname.clone(),
            master: None,
            alias: Some(format!("leviathan: {} on CEN {id}", m.container)),
            mac: Some(naming::member_mac(id, &m.container)),
            mtu,
        };
        let mut claim = Claim::default();
        claim.links.push((n0.clone(), m0.ifname.clone()));
        claim.links.push((n1.clone(), m1.ifname.clone()));
        claim.units.push(Unit::Pair { cen: id.to_string(), a: end(n0, m0), b: end(n1, m1), group });
        Ok(claim)
    }

    /// A bridge in the fabric, VXLAN when the CEN spans hosts, and a veth
    /// pair from the bridge to each member.
    fn bridge(&self, id: &str, cen: &CenNet, present: &Present<'a>) -> Result<Claim, Refusal> {
        let prefix = self.prefix();
        let fabric = self.fabric.clone();
        let group = naming::cen_group(prefix, id, true);
        let br = naming::bridge_name(prefix, id);
        let mut claim = Claim::default();
        claim.links.push((fabric.clone(), br.clone()));
        claim.units.push(Unit::Bridge { cen: id.to_string(), name: br.clone(), group });
        let mut l2 = L2 {
            cen: id.to_string(),
            bridge: br.clone(),
            vxlan: None,
            remotes: BTreeSet::new(),
            macs: BTreeMap::new(),
            neighbours: BTreeMap::new(),
        };
        if let Some(vx) = &cen.vxlan {
            self.vxlan(id, vx, &mut l2, &mut claim, group)?;
        }
        claim.l2.push(l2);
        let mtu = self.cfg.underlay.map(|u| u.member_mtu());
        for (m, ns) in present.members.iter().zip(&present.ns) {
            if *ns == fabric {
                return refuse(format!("member {} lives in the fabric namespace", m.container));
            }
            let v = naming::veth_fabric_name(prefix, id, &m.container);
            claim.links.push((fabric.clone(), v.clone()));
            claim.links.push((ns.clone(), m.ifname.clone()));
            claim.units.push(Unit::Pair {
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
        Ok(claim)
    }

    /// VXLAN across hosts: the CEN's device on its bridge, and the remote
    /// VTEPs and neighbours it is told of.
    fn vxlan(&self, id: &str, vx: &Vxlan, l2: &mut L2, claim: &mut Claim, group: u32) -> Result<(), Refusal> {
        if self.cfg.underlay.is_none() {
            return refuse("it has members on other hosts, and this server has no underlay to reach them (start it with --vtep-address)");
        }
        if !(1..=0x00ff_ffff).contains(&vx.vni) {
            return refuse(format!("VNI {} is out of range", vx.vni));
        }
        let name = naming::vxlan_name(self.prefix(), id);
        claim.links.push((self.fabric.clone(), name.clone()));
        claim.units.push(Unit::Vxlan {
            cen: id.to_string(),
            name: name.clone(),
            vni: vx.vni,
            bridge: l2.bridge.clone(),
            group,
        });
        l2.vxlan = Some(name);
        l2.remotes = vx.remotes.clone();
        l2.macs = vx.macs.clone();
        l2.neighbours = vx.neighbours.clone();
        Ok(())
    }

    /// Takes a CEN's claim, unless one of its interface names is already
    /// another CEN's or used twice.
    fn take(&mut self, id: &str, claim: Claim) -> Result<(), Refusal> {
        let mut local = BTreeSet::new();
        for (ns, name) in &claim.links {
            if let Some(other) = self.expected.get(ns).and_then(|m| m.get(name)) {
                return refuse(format!("interface {name} in {ns} is already used by CEN {other}"));
            }
            if !local.insert((ns, name)) {
                return refuse(format!("interface {name} in {ns} is used twice"));
            }
        }
        for (ns, name) in claim.links {
            self.expected.entry(ns).or_default().insert(name, id.to_string());
        }
        self.units.extend(claim.units);
        self.l2.extend(claim.l2);
        Ok(())
    }

    /// The CIN slices over an accepted CEN: the namespaces it needs, the
    /// members' addresses and routes (once wired), and the gateways on
    /// its bridge.
    fn cin_slices(&mut self, id: &str, cen: &CenNet, wiring: Wiring, present: &Present<'a>) {
        for (m, ns) in present.members.iter().zip(&present.ns) {
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
        if cen.awaits_first_member() && self.cfg.fabric == FabricMode::Netns {
            // Made ahead of the first join (see `ns_wanted`).
            self.needed_ns.entry(self.fabric.clone()).or_default().push(id.to_string());
        }
        if cen.wiring == Wiring::Bridge {
            let fabric = self.fabric.clone();
            self.needed_ns.entry(fabric.clone()).or_default().push(id.to_string());
            self.addrs.push(Addrs {
                ns: fabric,
                name: naming::bridge_name(self.prefix(), id),
                cen: id.to_string(),
                addrs: cen.gateways.iter().map(|a| (a.cin.clone(), a.ip, a.prefix_len)).collect(),
                routes: Vec::new(),
            });
        }
    }
}
