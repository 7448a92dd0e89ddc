//! The desired state handed to the realizer: plain data, no model types.
//!
//! The model builds a [`Desired`] from what is marked made; the realizer
//! makes the kernel match it. Only CENs (and the CINs over them) that are
//! made appear here.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// What the model wants in the kernel: only CENs/CINs marked made appear.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Desired {
    /// container key ("<hostId>/<containerId>") -> how to reach its namespace
    pub containers: BTreeMap<String, ContainerNet>,
    /// CEN id -> its wiring
    pub cens: BTreeMap<String, CenNet>,
    /// switch IPv4 forwarding on in the fabric (some made CIN spans several CENs)
    pub forwarding: bool,
}

/// How to reach one container's network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerNet {
    /// The container id (the last part of its key).
    pub id: String,
    pub netns: NetnsRef,
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
