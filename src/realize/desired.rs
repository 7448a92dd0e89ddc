//! The desired state handed to the realizer: plain data, no model types.
//!
//! The model builds a [`Desired`] from what is marked made; the realizer
//! makes the kernel match it. Only CENs (and the CINs over them) that are
//! made appear here.

use std::collections::{BTreeMap, BTreeSet};

use super::observed::NsId;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// What the model wants in the kernel: only CENs/CINs marked made appear.
///
/// The fields may be filled directly (the realizer then indexes them once,
/// for a full apply); the driver keeps one up to date with [`Desired::put_cen`]
/// and [`Desired::remove_cen`], which keep the indexes a scoped apply needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Desired {
    /// container key ("<hostId>/<containerId>") -> how to reach its namespace
    pub containers: BTreeMap<String, ContainerNet>,
    /// CEN id -> its wiring
    pub cens: BTreeMap<String, CenNet>,
    /// switch IPv4 forwarding on in the fabric (some made CIN spans several CENs)
    pub forwarding: bool,
    #[serde(skip)]
    index: Index,
}

impl PartialEq for Desired {
    fn eq(&self, other: &Self) -> bool {
        self.containers == other.containers && self.cens == other.cens && self.forwarding == other.forwarding
    }
}

impl Eq for Desired {}

/// What the planner asks of the whole desired state, kept incrementally.
#[derive(Debug, Clone, Default)]
pub struct Index {
    /// container key -> how many desired CENs it is a member of
    users: BTreeMap<String, usize>,
    /// namespace -> the containers (with users) that live in it
    ns_keys: BTreeMap<NsId, BTreeSet<String>>,
    /// how many desired CENs are bridged
    bridged: usize,
    /// how many desired CENs await their first member here (see
    /// [`CenNet::awaits_first_member`])
    awaiting: usize,
    /// namespaces whose last desired container went since last taken
    released: BTreeSet<NsId>,
}

impl Index {
    /// Indexes a whole desired state.
    pub fn of(d: &Desired) -> Index {
        let mut ix = Index::default();
        for cen in d.cens.values() {
            ix.add(d, cen);
        }
        ix
    }

    fn add(&mut self, d: &Desired, cen: &CenNet) {
        if cen.wiring == Wiring::Bridge {
            self.bridged += 1;
        }
        if cen.awaits_first_member() {
            self.awaiting += 1;
        }
        for m in &cen.members {
            self.add_member(d, &m.container);
        }
    }

    /// One more desired CEN uses the container `key`.
    fn add_member(&mut self, d: &Desired, key: &str) {
        let n = self.users.entry(key.to_string()).or_default();
        *n += 1;
        if *n == 1 {
            if let Some(ns) = d.containers.get(key).and_then(ContainerNet::ns) {
                self.ns_keys.entry(ns.clone()).or_default().insert(key.to_string());
                self.released.remove(&ns);
            }
        }
    }

    fn sub(&mut self, d: &Desired, cen: &CenNet) {
        if cen.wiring == Wiring::Bridge {
            self.bridged -= 1;
        }
        if cen.awaits_first_member() {
            self.awaiting -= 1;
        }
        for m in &cen.members {
            let Some(n) = self.users.get_mut(&m.container) else { continue };
            *n -= 1;
            if *n == 0 {
                self.users.remove(&m.container);
                if let Some(ns) = d.containers.get(&m.container).and_then(ContainerNet::ns) {
                    if let Some(keys) = self.ns_keys.get_mut(&ns) {
                        keys.remove(&m.container);
                        if keys.is_empty() {
                            self.ns_keys.remove(&ns);
                            self.released.insert(ns);
                        }
                    }
                }
            }
        }
    }

    /// The desired containers living in a namespace.
    pub fn in_ns(&self, ns: &NsId) -> Option<&BTreeSet<String>> {
        self.ns_keys.get(ns)
    }

    /// Whether some desired CEN is bridged (the fabric is needed).
    pub fn any_bridged(&self) -> bool {
        self.bridged > 0
    }

    /// Whether some desired CEN awaits its first member here: its first
    /// join may well be bridged (a container runtime's is), so a fabric
    /// namespace is made ahead of it.
    pub fn any_awaiting(&self) -> bool {
        self.awaiting > 0
    }
}

impl Desired {
    /// The indexes kept by `put_cen` / `remove_cen`.
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// The namespaces whose last desired container went since the last
    /// call: a scoped apply must look at them (nothing else leads there
    /// once their links are gone).
    pub fn take_released(&mut self) -> BTreeSet<NsId> {
        std::mem::take(&mut self.index.released)
    }

    /// Sets (or replaces) a desired CEN. Its members' containers must be in
    /// `containers` first (see [`Desired::put_container`]).
    pub fn put_cen(&mut self, id: &str, cen: CenNet) {
        let mut index = std::mem::take(&mut self.index);
        let old = self.cens.remove(id);
        if let Some(old) = &old {
            index.sub(self, old);
        }
        index.add(self, &cen);
        self.cens.insert(id.to_string(), cen);
        self.prune(&index, old);
        self.index = index;
    }

    /// Puts one member into the desired CEN `id`, which is there already,
    /// leaving the rest of it as it is: `at` says where, as a binary search
    /// would (`Ok(i)`: it replaces the member at `i`, of the same
    /// container; `Err(i)`: it is inserted at `i`); the index follows for
    /// that member alone. Its container must be in `containers` first.
    /// Costs the one member (and a shift of the CEN's member list), not
    /// the CEN. False, and nothing changed, when the CEN is not there or
    /// `at` does not fit it.
    pub fn put_member(&mut self, id: &str, member: Member, at: Result<usize, usize>) -> bool {
        let Some(cen) = self.cens.get_mut(id) else { return false };
        match at {
            Ok(i) => match cen.members.get_mut(i) {
                Some(m) if m.container == member.container => *m = member,
                _ => return false,
            },
            Err(i) if i <= cen.members.len() => {
                let key = member.container.clone();
                cen.members.insert(i, member);
                let mut index = std::mem::take(&mut self.index);
                index.add_member(self, &key);
                self.index = index;
            }
            Err(_) => return false,
        }
        true
    }

    /// Removes a desired CEN; containers no desired CEN uses any more go.
    pub fn remove_cen(&mut self, id: &str) {
        let mut index = std::mem::take(&mut self.index);
        let old = self.cens.remove(id);
        if let Some(old) = &old {
            index.sub(self, old);
        }
        self.prune(&index, old);
        self.index = index;
    }

    fn prune(&mut self, index: &Index, old: Option<CenNet>) {
        for m in old.iter().flat_map(|c| c.members.iter()) {
            if !index.users.contains_key(&m.container) {
                self.containers.remove(&m.container);
            }
        }
    }

    /// Sets how to reach a container's namespace. A container some desired
    /// CEN uses may be bound again (its workload restarted): the index
    /// follows, and the namespace it leaves is released when no other
    /// container lives there.
    pub fn put_container(&mut self, key: &str, net: ContainerNet) {
        if self.index.users.contains_key(key) {
            let old = self.containers.get(key).and_then(ContainerNet::ns);
            let new = net.ns();
            if old != new {
                if let Some(old) = old {
                    if let Some(keys) = self.index.ns_keys.get_mut(&old) {
                        keys.remove(key);
                        if keys.is_empty() {
                            self.index.ns_keys.remove(&old);
                            self.index.released.insert(old);
                        }
                    }
                }
                if let Some(new) = new {
                    self.index.ns_keys.entry(new.clone()).or_default().insert(key.to_string());
                    self.index.released.remove(&new);
                }
            }
        }
        self.containers.insert(key.to_string(), net);
    }
}

/// How to reach one container's network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerNet {
    /// The container id (the last part of its key).
    pub id: String,
    pub netns: NetnsRef,
    /// For a `Path`: the (device, inode) the namespace had when it was
    /// bound. A path that now leads elsewhere (the process exited and its
    /// pid was reused, a named namespace made again) is not the workload:
    /// the container is reported gone rather than wired into a stranger.
    #[serde(default)]
    pub ident: Option<(u64, u64)>,
}

impl ContainerNet {
    /// The namespace this container lives in (`None` for an empty path).
    pub fn ns(&self) -> Option<NsId> {
        match &self.netns {
            NetnsRef::Managed => Some(NsId::Managed(self.id.clone())),
            NetnsRef::Path(p) if !p.is_empty() => Some(NsId::Path(p.clone())),
            NetnsRef::Path(_) => None,
        }
    }
}

/// Which network namespace a container lives in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetnsRef {
    /// A named namespace `<prefix><containerId>` in `/run/netns`, created and
    /// deleted by the realizer.
    Managed,
    /// An existing namespace file such as `/proc/<pid>/ns/net`: wired, never
    /// deleted.
    Path(String),
}

/// How a CEN's members are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Wiring {
    /// Fewer than two members: nothing to wire, namespaces still exist.
    None,
    /// Exactly two members: one veth pair straight between them.
    Wire,
    /// A bridge in the fabric with one veth per member.
    Bridge,
}

/// One CEN's wiring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CenNet {
    pub wiring: Wiring,
    /// In join order.
    pub members: Vec<Member>,
    /// Put on the bridge (only when `Bridge`).
    pub gateways: Vec<Addr>,
    /// Where the CEN also has a bridge on other hosts: the VXLAN device
    /// joining this host's bridge to theirs (only when `Bridge`).
    #[serde(default)]
    pub vxlan: Option<Vxlan>,
}

impl CenNet {
    /// Whether the CEN is made but has no member here yet: its first join
    /// may well make a bridge (a container runtime's member does).
    pub fn awaits_first_member(&self) -> bool {
        self.wiring == Wiring::None && self.members.is_empty()
    }
}

/// A CEN's VXLAN link to the other hosts it is present on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vxlan {
    /// The VXLAN network identifier (the same on every host).
    pub vni: u32,
    /// The VTEP addresses of the other hosts: one all-zeros FDB entry each
    /// (broadcast, unknown unicast and ARP go to every one of them).
    pub remotes: BTreeSet<Ipv4Addr>,
    /// The members on other hosts: address -> MAC, as permanent neighbour
    /// entries on the bridge (the gateway has the same address and MAC on
    /// every host, so replies to its ARP requests would stay where they are
    /// sent from; it must not need to ask).
    pub neighbours: BTreeMap<Ipv4Addr, [u8; 6]>,
    /// The members on other hosts: MAC -> the VTEP of their host, one FDB
    /// entry each on the VXLAN device, so unicast goes to that host only
    /// (the all-zeros entries then carry broadcast, multicast and frames
    /// to MACs not known yet).
    #[serde(default)]
    pub macs: BTreeMap<[u8; 6], Ipv4Addr>,
}

/// One container's membership in a CEN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Container key, as in [`Desired::containers`].
    pub container: String,
    /// Interface name inside the container (at most 15 bytes), given by the
    /// model.
    pub ifname: String,
    pub addresses: Vec<Addr>,
    pub routes: Vec<Route>,
}

/// An IPv4 address with its prefix length, and the CIN it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addr {
    pub cin: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
}

/// A route through a gateway; `prefix_len` 0 is a default route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub cin: String,
    pub dest: Ipv4Addr,
    pub prefix_len: u8,
    pub via: Ipv4Addr,
}
