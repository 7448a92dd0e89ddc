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

mod accept;
mod addrs;
mod links;
mod op;

pub use accept::Refusal;
pub use op::{Op, VethEnd, FLOOD};

use super::desired::{Desired, Index, Wiring};
use super::naming;
use super::observed::{LinkState, NsId, Observed};
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
    /// [`Desired::take_released`]): one change's worth. A CEN the
    /// [`Focus`] names is looked at only through those members (see
    /// [`GroupIndex::focusable`]).
    Cens(&'a BTreeSet<String>, &'a BTreeSet<NsId>, &'a Focus),
}

/// The members (container keys) a scoped plan looks at, per CEN, where only
/// they changed: a container joined, or its own addresses, routes or
/// namespace changed, while the CEN's wiring, gateways and VXLAN side stay
/// as they were and no member left. Their veths, addresses, routes and
/// namespaces are checked, with the CEN's bridge and layer-2 entries; the
/// other members' are not looked at (the periodic reconcile does). A CEN
/// not named is looked at whole.
pub type Focus = BTreeMap<String, BTreeSet<String>>;

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

    /// Whether a CEN may be planned through some of its members only: it is
    /// bridged (each member has a pair of its own) and no other desired CEN
    /// shares its link groups (their strays are found by group).
    pub fn focusable(&self, prefix: &str, desired: &Desired, cen: &str) -> bool {
        let bridged = desired.cens.get(cen).is_some_and(|c| c.wiring == Wiring::Bridge);
        bridged
            && [naming::cen_group(prefix, cen, true), naming::cen_group(prefix, cen, false)]
                .into_iter()
                .all(|g| self.sharing(g).all(|c| c == cen))
    }
}

/// A bridge or a veth pair to check as a whole.
enum Unit {
    Bridge { cen: String, name: String, group: u32 },
    Pair { cen: String, a: VethEnd, b: VethEnd, group: u32 },
    Vxlan { cen: String, name: String, vni: u32, bridge: String, group: u32 },
}

/// A bridged CEN's layer-2 entries: the VXLAN device's remote VTEPs and
/// remote members' MACs, and the bridge's neighbours on other hosts (none
/// where it spans nothing).
struct L2 {
    cen: String,
    bridge: String,
    vxlan: Option<String>,
    remotes: BTreeSet<Ipv4Addr>,
    macs: BTreeMap<[u8; 6], Ipv4Addr>,
    neighbours: BTreeMap<Ipv4Addr, [u8; 6]>,
}

struct Addrs {
    ns: NsId,
    name: String,
    cen: String,
    addrs: Vec<(String, Ipv4Addr, u8)>,
    routes: Vec<(String, Ipv4Addr, u8, Ipv4Addr)>,
}

/// Whether a member is looked at, given its CEN's focus (`None`: all are).
fn in_focus(focus: Option<&BTreeSet<String>>, container: &str) -> bool {
    focus.is_none_or(|f| f.contains(container))
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
    /// The CENs looked at through some of their members only.
    focus: Focus,
    /// The namespaces this plan looks at.
    spaces: BTreeSet<NsId>,
    /// Namespace of each container of an accepted CEN.
    ns_of: BTreeMap<&'a str, Result<NsId, Refusal>>,
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
            focus: Focus::new(),
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

    /// The members of a CEN looked at: `None` for all of them (a CEN not
    /// focused).
    fn focus_of(&self, cen: &str) -> Option<BTreeSet<String>> {
        self.focus.get(cen).cloned()
    }

    /// Which CENs and namespaces to look at.
    fn scope(&mut self, scope: Scope<'_>, groups: &GroupIndex) {
        match scope {
            Scope::All => {
                self.cens = self.want.cens.keys().cloned().collect();
                self.spaces = self.cur.namespaces().keys().cloned().collect();
            }
            Scope::Cens(set, released, focus) => {
                self.spaces.extend(released.iter().cloned());
                if self.cfg.fabric == FabricMode::Netns {
                    // The fabric namespace may be made ahead of a first
                    // join: it goes as soon as nothing wants it (see
                    // `ns_wanted`), whatever the change.
                    self.spaces.insert(self.fabric.clone());
                }
                let prefix = self.prefix();
                for cen in set {
                    self.cens.insert(cen.clone());
                    let focused = focus.get(cen).filter(|_| groups.focusable(prefix, self.want, cen));
                    if let Some(f) = focused {
                        // No member left: the namespaces of its group are
                        // those of members still wanted.
                        self.focus.insert(cen.clone(), f.clone());
                        continue;
                    }
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
            let focus = self.focus_of(id);
            for m in cen.members.iter().filter(|m| in_focus(focus.as_ref(), &m.container)) {
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

    fn finish(mut self) -> Plan {
        self.steps.sort_by_key(|s| s.op.phase());
        self.out.steps = self.steps;
        self.out.lookups = self.lookups.get();
        self.out
    }
}

#[cfg(test)]
mod tests;
