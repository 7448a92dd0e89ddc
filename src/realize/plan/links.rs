//! The passes of a plan over namespaces and links: namespaces to delete
//! and create, forwarding in the fabric, each bridge, VXLAN device and
//! veth pair checked as a unit against what is there, strays of the
//! scope's groups, and the deletes that follow.
//!
//! Invariants: an object that exists and matches is left alone (same
//! ifindex); a veth pair is one unit, recreated whole if either end is
//! missing or wrong; teardown prefers whole namespaces and link groups
//! over single links; namespaces bound by path are never deleted.

use std::collections::{BTreeMap, BTreeSet};

use super::super::desired::Wiring;
use super::super::naming;
use super::super::observed::{LinkKind, LinkState, NsId};
use super::{FabricMode, Op, Planner, Scope, Step, Unit, VethEnd};

impl<'a> Planner<'a> {
    /// Whether any desired container (of any CEN) lives in a namespace; the
    /// fabric namespace, whether a CEN is bridged or awaits its first member
    /// (made ahead: creating a namespace costs about a millisecond, which
    /// would otherwise fall on that first join).
    fn ns_wanted(&self, ns: &NsId) -> bool {
        match ns {
            NsId::Fabric => {
                self.cfg.fabric == FabricMode::Netns && (self.index.any_bridged() || self.index.any_awaiting())
            }
            other => self.index.in_ns(other).is_some_and(|k| !k.is_empty()),
        }
    }

    /// Namespaces to delete (ours, in scope, wanted by nobody) and to create.
    pub(super) fn namespaces(&mut self) {
        for ns in &self.spaces {
            if !self.cur.namespaces().contains_key(ns) {
                continue;
            }
            let ours = matches!(ns, NsId::Managed(_)) || (*ns == NsId::Fabric && self.cfg.fabric == FabricMode::Netns);
            // In host mode an old fabric namespace is a leftover: remove it.
            let leftover_fabric = *ns == NsId::Fabric && self.cfg.fabric == FabricMode::Host;
            // A fabric holding links that are not ours stays (with them).
            let holds_foreign = *ns == NsId::Fabric
                && self.cur.ns(ns).is_some_and(|st| st.links().any(|l| !l.ours && l.kind != LinkKind::Loopback));
            if ((ours && !self.ns_wanted(ns)) || leftover_fabric) && !holds_foreign {
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
    pub(super) fn forwarding(&mut self) {
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
    pub(super) fn links(&mut self) {
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
    pub(super) fn strays(&mut self, scope: Scope<'_>) {
        let candidates: Vec<(NsId, &'a LinkState)> = match scope {
            Scope::All => {
                self.cur.namespaces().iter().flat_map(|(ns, st)| st.links().map(move |l| (ns.clone(), l))).collect()
            }
            Scope::Cens(..) => {
                let prefix = self.prefix();
                let mut v = Vec::new();
                for cen in &self.cens {
                    if let Some(f) = self.focus.get(cen) {
                        v.extend(self.focused_strays(cen, f));
                        continue;
                    }
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

    /// The links of a focused CEN's groups in its focused members'
    /// namespaces (the fabric's are the other members', not looked at).
    fn focused_strays(&self, cen: &str, focus: &BTreeSet<String>) -> Vec<(NsId, &'a LinkState)> {
        let prefix = self.prefix();
        let groups = [naming::cen_group(prefix, cen, true), naming::cen_group(prefix, cen, false)];
        let spaces: BTreeSet<&NsId> = focus
            .iter()
            .filter_map(|c| self.ns_of.get(c.as_str()))
            .filter_map(|r| r.as_ref().ok())
            .filter(|ns| **ns != self.fabric)
            .collect();
        let mut v = Vec::new();
        for ns in spaces {
            let Some(st) = self.cur.ns(ns) else { continue };
            v.extend(st.links().filter(|l| groups.contains(&l.group)).map(|l| (ns.clone(), l)));
        }
        v
    }

    /// Doomed links as deletes, preferring one group delete where a whole
    /// group of a namespace goes.
    pub(super) fn deletes(&mut self) {
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
}
