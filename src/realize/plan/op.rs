//! The kernel operations a plan is made of ([`Op`]), their phases, the
//! namespace each works in and how each is described to people.
//!
//! Invariant: the operations of one phase are independent of each other
//! (they may run concurrently); phases run in order.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::super::naming::{self, ns_path};

/// The all-zeros MAC of a VXLAN device's flood entries.
pub const FLOOD: [u8; 6] = [0; 6];
use super::super::observed::NsId;

/// One end of a veth pair to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VethEnd {
    pub ns: NsId,
    pub name: String,
    /// Name of the bridge (in the same namespace) to attach to at creation.
    pub master: Option<String>,
    /// IFLA_IFALIAS: who the link belongs to, readable in `ip link`.
    #[serde(default)]
    pub alias: Option<String>,
    /// A MAC address pinned at creation (container ends: derived from the
    /// CEN and the container, so an interface made again, after a rebind or
    /// a repair, keeps the address its peers have in their ARP caches).
    #[serde(default)]
    pub mac: Option<[u8; 6]>,
    /// The MTU at creation (on a host with an underlay: its MTU less what
    /// VXLAN takes, so frames fit wherever the CEN reaches).
    #[serde(default)]
    pub mtu: Option<u32>,
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
        /// Pinned at creation.
        mac: [u8; 6],
    },
    /// One RTM_NEWLINK: `a` in its namespace (up, attached to its bridge),
    /// peer `b` created directly in its own namespace; both in `group`.
    CreateVeth {
        a: VethEnd,
        b: VethEnd,
        group: u32,
    },
    /// A CEN's VXLAN device, created from the underlay's namespace directly
    /// in `ns` (its UDP socket stays with the underlay), up and attached to
    /// the bridge `master` at creation.
    CreateVxlan {
        ns: NsId,
        name: String,
        vni: u32,
        master: String,
        group: u32,
    },
    /// One FDB entry on a VXLAN device: frames to `mac` go to this remote
    /// VTEP; the all-zeros MAC ([`FLOOD`]) is the entry for broadcast,
    /// multicast and MACs not known yet, one per remote VTEP.
    AddFdb {
        ns: NsId,
        name: String,
        mac: [u8; 6],
        remote: Ipv4Addr,
    },
    DeleteFdb {
        ns: NsId,
        index: u32,
        mac: [u8; 6],
        remote: Ipv4Addr,
    },
    /// A permanent neighbour entry on a bridge (a member on another host).
    AddNeigh {
        ns: NsId,
        name: String,
        ip: Ipv4Addr,
        mac: [u8; 6],
    },
    DeleteNeigh {
        ns: NsId,
        index: u32,
        ip: Ipv4Addr,
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
    /// IFLA_IFALIAS, saying whose a link is (the kernel ignores an alias
    /// given at creation, so it is set afterwards).
    SetAlias {
        ns: NsId,
        name: String,
        alias: String,
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
            | Op::DeleteRoute { .. }
            | Op::DeleteFdb { .. }
            | Op::DeleteNeigh { .. } => 0,
            Op::CreateNetns { .. } => 1,
            Op::SetUp { .. } | Op::SetForwarding { .. } | Op::CreateBridge { .. } => 2,
            Op::CreateVeth { .. } | Op::CreateVxlan { .. } => 3,
            Op::AddAddr { .. }
            | Op::SetUpNew { .. }
            | Op::SetAlias { .. }
            | Op::AddFdb { .. }
            | Op::AddNeigh { .. } => 4,
            Op::AddRoute { .. } => 5,
        }
    }

    /// Number of phases.
    pub const PHASES: usize = 6;

    /// The namespace the operation works in (a veth: where its request is
    /// sent, the namespace of end `a`).
    pub fn ns(&self) -> Option<&NsId> {
        match self {
            Op::DeleteNetns { ns }
            | Op::DeleteGroup { ns, .. }
            | Op::DeleteLink { ns, .. }
            | Op::DeleteAddr { ns, .. }
            | Op::DeleteRoute { ns, .. }
            | Op::CreateNetns { ns }
            | Op::SetUp { ns, .. }
            | Op::SetUpNew { ns, .. }
            | Op::SetForwarding { ns, .. }
            | Op::CreateBridge { ns, .. }
            | Op::AddAddr { ns, .. }
            | Op::SetAlias { ns, .. }
            | Op::AddRoute { ns, .. }
            | Op::CreateVxlan { ns, .. }
            | Op::AddFdb { ns, .. }
            | Op::DeleteFdb { ns, .. }
            | Op::AddNeigh { ns, .. }
            | Op::DeleteNeigh { ns, .. } => Some(ns),
            Op::CreateVeth { a, .. } => Some(&a.ns),
        }
    }

    /// What the operation does, for people (the start of a failed step's
    /// status message).
    pub fn describe(&self, prefix: &str) -> String {
        match self {
            Op::DeleteNetns { ns } => format!("deleting {ns} ({})", ns_path(prefix, ns).display()),
            Op::CreateNetns { ns } => format!("creating {ns} ({})", ns_path(prefix, ns).display()),
            Op::DeleteGroup { ns, group } => format!("deleting link group {group:#x} in {ns}"),
            Op::DeleteLink { ns, name, .. } => format!("deleting {name} in {ns}"),
            Op::DeleteAddr { ns, ip, prefix_len, .. } => format!("removing {ip}/{prefix_len} in {ns}"),
            Op::DeleteRoute { ns, dest, prefix_len, via, .. } => {
                format!("removing route {dest}/{prefix_len} via {via} in {ns}")
            }
            Op::SetUp { ns, name } | Op::SetUpNew { ns, name } => format!("setting {name} up in {ns}"),
            Op::SetForwarding { ns, on } => format!("setting ip_forward={} in {ns}", u8::from(*on)),
            Op::CreateBridge { ns, name, .. } => format!("creating bridge {name} in {ns}"),
            Op::CreateVeth { a, b, .. } => format!("creating veth {} ({}) <-> {} ({})", a.name, a.ns, b.name, b.ns),
            Op::AddAddr { ns, name, ip, prefix_len } => format!("adding {ip}/{prefix_len} to {name} in {ns}"),
            Op::SetAlias { ns, name, alias } => format!("naming {name} in {ns} {alias:?}"),
            Op::CreateVxlan { ns, name, vni, .. } => format!("creating VXLAN device {name} (VNI {vni}) in {ns}"),
            Op::AddFdb { ns, name, mac, remote } if *mac == FLOOD => {
                format!("adding remote VTEP {remote} to {name} in {ns}")
            }
            Op::AddFdb { ns, name, mac, remote } => {
                format!("adding FDB entry {} -> {remote} to {name} in {ns}", naming::mac_text(mac))
            }
            Op::DeleteFdb { ns, mac, remote, .. } if *mac == FLOOD => format!("removing remote VTEP {remote} in {ns}"),
            Op::DeleteFdb { ns, mac, remote, .. } => {
                format!("removing FDB entry {} -> {remote} in {ns}", naming::mac_text(mac))
            }
            Op::AddNeigh { ns, name, ip, .. } => format!("adding neighbour {ip} on {name} in {ns}"),
            Op::DeleteNeigh { ns, ip, .. } => format!("removing neighbour {ip} in {ns}"),
            Op::AddRoute { ns, name, dest, prefix_len, via } => {
                format!("adding route {dest}/{prefix_len} via {via} dev {name} in {ns}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(ns: NsId, name: &str) -> VethEnd {
        VethEnd { ns, name: name.into(), master: None, alias: None, mac: None, mtu: None }
    }

    #[test]
    fn each_op_says_where_it_works() {
        let ns = NsId::Managed("c1".into());
        assert_eq!(Op::CreateNetns { ns: ns.clone() }.ns(), Some(&ns));
        let veth = Op::CreateVeth { a: end(NsId::Fabric, "v1"), b: end(ns.clone(), "cen1"), group: 7 };
        assert_eq!(veth.ns(), Some(&NsId::Fabric));
        let fdb = Op::DeleteFdb { ns: NsId::Host, index: 3, mac: FLOOD, remote: Ipv4Addr::new(192, 0, 2, 2) };
        assert_eq!(fdb.ns(), Some(&NsId::Host));
    }

    #[test]
    fn each_op_is_described_for_people() {
        let ns = NsId::Managed("c1".into());
        let add = Op::AddAddr { ns: ns.clone(), name: "cen1".into(), ip: Ipv4Addr::new(10, 10, 0, 10), prefix_len: 16 };
        assert_eq!(add.describe("lev-"), format!("adding 10.10.0.10/16 to cen1 in {ns}"));
        let create = Op::CreateNetns { ns: ns.clone() };
        assert_eq!(create.describe("lev-"), format!("creating {ns} (/run/netns/lev-c1)"));
        let group = Op::DeleteGroup { ns: NsId::Fabric, group: 0x10 };
        assert_eq!(group.describe("lev-"), format!("deleting link group 0x10 in {}", NsId::Fabric));
        let fwd = Op::SetForwarding { ns: NsId::Fabric, on: true };
        assert!(fwd.describe("lev-").starts_with("setting ip_forward=1 in "));
        let remote = Ipv4Addr::new(192, 0, 2, 2);
        let flood = Op::AddFdb { ns: NsId::Fabric, name: "x1".into(), mac: FLOOD, remote };
        assert_eq!(flood.describe("lev-"), format!("adding remote VTEP 192.0.2.2 to x1 in {}", NsId::Fabric));
        let one = Op::AddFdb { ns: NsId::Fabric, name: "x1".into(), mac: [2, 0xab, 0, 1, 2, 0x3c], remote };
        assert_eq!(
            one.describe("lev-"),
            format!("adding FDB entry 02:ab:00:01:02:3c -> 192.0.2.2 to x1 in {}", NsId::Fabric)
        );
    }
}
