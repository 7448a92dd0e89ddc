//! What the realizer has seen in the kernel, as plain data.
//!
//! [`Observed`] is filled by adoption (dumping links, addresses and routes of
//! every namespace under the prefix) and kept up to date by `apply`; the pure
//! planner compares it with [`crate::realize::Desired`].

use std::collections::BTreeMap;
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

/// Everything observed, per namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Observed {
    pub namespaces: BTreeMap<NsId, NsState>,
    /// Namespaces the desired state names but that could not be opened
    /// (e.g. a `Path` whose process is gone), with the reason.
    pub unavailable: BTreeMap<NsId, String>,
}

/// One namespace's links and routes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NsState {
    pub links: Vec<LinkState>,
    /// IPv4 routes of the main table through a gateway (static/boot protocol).
    pub routes: Vec<RouteState>,
    /// `net.ipv4.ip_forward` in that namespace, when read.
    pub forwarding: Option<bool>,
}

impl NsState {
    pub fn link(&self, name: &str) -> Option<&LinkState> {
        self.links.iter().find(|l| l.name == name)
    }

    pub fn link_by_index(&self, index: u32) -> Option<&LinkState> {
        self.links.iter().find(|l| l.index == index)
    }
}

/// The kind of a link, from IFLA_INFO_KIND.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LinkKind {
    Loopback,
    Veth,
    Bridge,
    Other(String),
}

/// One link as dumped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    pub index: u32,
    pub name: String,
    pub kind: LinkKind,
    pub group: u32,
    /// IFLA_MASTER: the bridge it is a port of.
    pub master: Option<u32>,
    /// IFLA_LINK: for a veth, the peer's ifindex (in the peer's namespace).
    pub peer: Option<u32>,
    pub up: bool,
    /// Whether leviathan owns this link (may change or delete it).
    pub ours: bool,
    /// IPv4 addresses with prefix length.
    pub addresses: Vec<(Ipv4Addr, u8)>,
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
            up: false,
            ours: false,
            addresses: vec![],
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
