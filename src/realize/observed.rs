//! What the realizer has seen in the kernel, as plain data.
//!
//! [`Observed`] is filled by adoption (dumping links, addresses and routes of
//! every namespace under the prefix) and kept up to date by `apply`; the pure
//! planner compares it with [`crate::realize::Desired`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// A network namespace the realizer works in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NsId {
    /// The namespace of the process itself (fabric in `FabricMode::Host`).
    Host,
    /// The leviathan-owned fabric namespace `<prefix>fabric`.
    Fabric,
    /// A managed container namespace `<prefix><containerId>`.
    Managed(String),
    /// An existing namespace bound by path: wired, never deleted.
    Path(String),
}

impl fmt::Display for NsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NsId::Host => write!(f, "host namespace"),
            NsId::Fabric => write!(f, "fabric namespace"),
            NsId::Managed(id) => write!(f, "namespace of container {id}"),
            NsId::Path(p) => write!(f, "namespace {p}"),
        }
    }
}

/// Everything observed, per namespace, indexed by namespace, by name, by
/// ifindex and by link group, so one change looks up only what it touches.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Observed {
    namespaces: BTreeMap<NsId, NsState>,
    /// Namespaces the desired state names but that could not be opened
    /// (e.g. a `Path` whose process is gone), with the reason.
    pub unavailable: BTreeMap<NsId, String>,
    /// link group -> the links that carry it
    #[serde(skip)]
    groups: BTreeMap<u32, BTreeSet<(NsId, u32)>>,
}

impl Observed {
    pub fn namespaces(&self) -> &BTreeMap<NsId, NsState> {
        &self.namespaces
    }

    pub fn ns(&self, ns: &NsId) -> Option<&NsState> {
        self.namespaces.get(ns)
    }

    pub fn ns_mut(&mut self, ns: &NsId) -> Option<&mut NsState> {
        self.namespaces.get_mut(ns)
    }

    /// One link, by namespace and name.
    pub fn link(&self, ns: &NsId, name: &str) -> Option<&LinkState> {
        self.namespaces.get(ns).and_then(|s| s.link(name))
    }

    /// The links carrying a group, in every namespace.
    pub fn in_group(&self, group: u32) -> impl Iterator<Item = &(NsId, u32)> + '_ {
        self.groups.get(&group).into_iter().flatten()
    }

    /// Sets (or replaces) a namespace's whole state.
    pub fn insert_ns(&mut self, ns: NsId, state: NsState) {
        self.remove_ns(&ns);
        for l in state.links.values() {
            if l.group != 0 {
                self.groups.entry(l.group).or_default().insert((ns.clone(), l.index));
            }
        }
        self.namespaces.insert(ns, state);
    }

    /// Forgets a namespace.
    pub fn remove_ns(&mut self, ns: &NsId) -> Option<NsState> {
        let st = self.namespaces.remove(ns)?;
        for l in st.links.values() {
            self.ungroup(ns, l);
        }
        Some(st)
    }

    /// Keeps only the namespaces `keep` says yes to.
    pub fn retain_ns(&mut self, keep: impl Fn(&NsId) -> bool) {
        let gone: Vec<NsId> = self.namespaces.keys().filter(|n| !keep(n)).cloned().collect();
        for ns in gone {
            self.remove_ns(&ns);
        }
    }

    fn ungroup(&mut self, ns: &NsId, l: &LinkState) {
        if let Some(set) = self.groups.get_mut(&l.group) {
            set.remove(&(ns.clone(), l.index));
            if set.is_empty() {
                self.groups.remove(&l.group);
            }
        }
    }

    /// Records a link (replacing one with the same index or name).
    pub fn insert_link(&mut self, ns: &NsId, link: LinkState) {
        let Some(st) = self.namespaces.get_mut(ns) else { return };
        let mut old: Vec<LinkState> = st.take(link.index).into_iter().collect();
        if let Some(i) = st.names.get(&link.name).copied() {
            old.extend(st.take(i));
        }
        if link.group != 0 {
            self.groups.entry(link.group).or_default().insert((ns.clone(), link.index));
        }
        if let Some(st) = self.namespaces.get_mut(ns) {
            st.put(link);
        }
        for l in old {
            self.ungroup(ns, &l);
        }
    }

    /// Forgets a link, and its veth peer where that is known (the kernel
    /// deletes both ends together).
    pub fn remove_link(&mut self, ns: &NsId, index: u32) {
        let Some(l) = self.namespaces.get_mut(ns).and_then(|s| s.take(index)) else { return };
        self.ungroup(ns, &l);
        if let (Some(pns), Some(p)) = (&l.peer_ns, l.peer) {
            let mutual =
                self.namespaces.get(pns).and_then(|s| s.link_by_index(p)).is_some_and(|x| x.peer == Some(index));
            if mutual {
                if let Some(pl) = self.namespaces.get_mut(pns).and_then(|s| s.take(p)) {
                    self.ungroup(&pns.clone(), &pl);
                }
            }
        }
    }

    /// Forgets the peers (in other namespaces) of a namespace's veths: the
    /// kernel takes them with the namespace.
    pub fn drop_peers_of(&mut self, ns: &NsId) {
        let peers: Vec<(NsId, u32, u32)> = self
            .namespaces
            .get(ns)
            .map(|s| {
                s.links
                    .values()
                    .filter_map(|l| Some((l.peer_ns.clone()?, l.peer?, l.index)))
                    .filter(|(pns, _, _)| pns != ns)
                    .collect()
            })
            .unwrap_or_default();
        for (pns, p, mine) in peers {
            let mutual =
                self.namespaces.get(&pns).and_then(|s| s.link_by_index(p)).is_some_and(|x| x.peer == Some(mine));
            if mutual {
                if let Some(pl) = self.namespaces.get_mut(&pns).and_then(|s| s.take(p)) {
                    self.ungroup(&pns, &pl);
                }
            }
        }
    }

    /// Works out which namespace each veth's peer is in, by mutual ifindex
    /// (after a full observation; links created here record it directly).
    pub fn pair_peers(&mut self) {
        let mut by_pair: HashMap<(u32, u32), Vec<NsId>> = HashMap::new();
        for (ns, st) in &self.namespaces {
            for l in st.links.values() {
                if let Some(p) = l.peer {
                    by_pair.entry((l.index, p)).or_default().push(ns.clone());
                }
            }
        }
        for (ns, st) in self.namespaces.iter_mut() {
            for l in st.links.values_mut() {
                if let Some(p) = l.peer {
                    let cands = by_pair.get(&(p, l.index)).map(Vec::as_slice).unwrap_or(&[]);
                    let others: Vec<&NsId> = cands.iter().filter(|c| *c != ns).collect();
                    l.peer_ns = match others.as_slice() {
                        [one] => Some((*one).clone()),
                        _ => None,
                    };
                }
            }
        }
    }
}

/// One namespace's links and routes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NsState {
    links: BTreeMap<u32, LinkState>,
    #[serde(skip)]
    names: HashMap<String, u32>,
    /// IPv4 routes of the main table through a gateway (static/boot protocol).
    pub routes: Vec<RouteState>,
    /// `net.ipv4.ip_forward` in that namespace, when read.
    pub forwarding: Option<bool>,
}

impl NsState {
    pub fn new(links: Vec<LinkState>, routes: Vec<RouteState>, forwarding: Option<bool>) -> NsState {
        let mut st = NsState { links: BTreeMap::new(), names: HashMap::new(), routes, forwarding };
        for l in links {
            st.put(l);
        }
        st
    }

    pub fn link(&self, name: &str) -> Option<&LinkState> {
        self.names.get(name).and_then(|i| self.links.get(i))
    }

    pub fn link_by_index(&self, index: u32) -> Option<&LinkState> {
        self.links.get(&index)
    }

    pub fn link_mut(&mut self, index: u32) -> Option<&mut LinkState> {
        self.links.get_mut(&index)
    }

    pub fn links(&self) -> impl Iterator<Item = &LinkState> + '_ {
        self.links.values()
    }

    pub fn len(&self) -> usize {
        self.links.len()
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }

    fn put(&mut self, l: LinkState) {
        self.names.insert(l.name.clone(), l.index);
        self.links.insert(l.index, l);
    }

    fn take(&mut self, index: u32) -> Option<LinkState> {
        let l = self.links.remove(&index)?;
        if self.names.get(&l.name) == Some(&index) {
            self.names.remove(&l.name);
        }
        self.routes.retain(|r| r.oif != index);
        if l.kind == LinkKind::Bridge {
            for o in self.links.values_mut() {
                if o.master == Some(index) {
                    o.master = None;
                }
            }
        }
        Some(l)
    }
}

/// The kind of a link, from IFLA_INFO_KIND.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkKind {
    Loopback,
    Veth,
    Bridge,
    Vxlan,
    Other(String),
}

impl Default for LinkKind {
    fn default() -> Self {
        LinkKind::Other(String::new())
    }
}

/// One link as dumped.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    pub kind: LinkKind,
    pub group: u32,
    /// IFLA_MASTER: the bridge it is a port of.
    pub master: Option<u32>,
    /// IFLA_LINK: for a veth, the peer's ifindex (in the peer's namespace).
    pub peer: Option<u32>,
    /// The namespace the peer is in, where known.
    #[serde(default)]
    pub peer_ns: Option<NsId>,
    pub up: bool,
    /// Whether leviathan owns this link (may change or delete it).
    pub ours: bool,
    /// IPv4 addresses with prefix length.
    pub addresses: Vec<(Ipv4Addr, u8)>,
    /// IFLA_MTU.
    #[serde(default)]
    pub mtu: u32,
    /// For a VXLAN device, its VNI.
    #[serde(default)]
    pub vni: Option<u32>,
    /// For a VXLAN device, the remote VTEPs of its all-zeros FDB entries.
    #[serde(default)]
    pub fdb: BTreeSet<Ipv4Addr>,
    /// For a VXLAN device, its FDB entries for single MACs (members on
    /// other hosts): MAC -> remote VTEP.
    #[serde(default)]
    pub macs: BTreeMap<[u8; 6], Ipv4Addr>,
    /// Permanent IPv4 neighbour entries on this link: address -> MAC.
    #[serde(default)]
    pub neighbours: BTreeMap<Ipv4Addr, [u8; 6]>,
}

impl LinkState {
    /// The loopback of a namespace just created: index 1, down.
    pub fn new_loopback() -> LinkState {
        LinkState {
            index: 1,
            name: "lo".into(),
            kind: LinkKind::Loopback,
            group: 0,
            master: None,
            peer: None,
            peer_ns: None,
            up: false,
            ours: false,
            addresses: vec![],
            mtu: 65536,
            ..Default::default()
        }
    }
}

/// A route through a gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteState {
    pub dest: Ipv4Addr,
    pub prefix_len: u8,
    pub via: Ipv4Addr,
    pub oif: u32,
}
