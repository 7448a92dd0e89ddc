//! The primitive reads of a topology: records by id, lists by kind, the
//! indexed relations (a CEN's members, a host's containers, a container's
//! memberships, the CINs over a CEN) and counts.
//!
//! Two things answer them: the live [`Topology`], from its graph and
//! indexes, and a view of the topology as it stood at a kept revision
//! (`service::history`), from the live one plus the history's index,
//! record by record. Everything derived from these (wiring, gateways,
//! interfaces, a container's realization, ...) is written once, over this
//! trait ([`View`](super::View)), so both answer alike.
//!
//! Invariants every implementation keeps:
//! - lists come out sorted the way [`Topology`]'s do: by id, containers by
//!   host then id, a CEN's members by host then container, a container's
//!   memberships by CEN id, the CINs over a CEN by id;
//! - a relation only names records the same view holds (a member's CEN and
//!   container, a container's host, a CIN's CENs).

use super::records::*;
use super::topology::Topology;

/// The primitive reads (see the module docs).
pub trait Read {
    fn host(&self, id: &str) -> Option<&HostRec>;
    fn container(&self, key: &ContainerKey) -> Option<&ContainerRec>;
    fn cen(&self, id: &str) -> Option<&CenRec>;
    fn cin(&self, id: &str) -> Option<&CinRec>;
    fn cpool(&self, id: &str) -> Option<&CpoolRec>;
    fn member(&self, key: &MemberKey) -> Option<&MemberRec>;

    /// Every record of a kind, in id order.
    fn hosts(&self) -> Vec<&HostRec>;
    fn containers(&self) -> Vec<&ContainerRec>;
    fn cens(&self) -> Vec<&CenRec>;
    fn cins(&self) -> Vec<&CinRec>;
    fn cpools(&self) -> Vec<&CpoolRec>;

    /// Number of records of each kind: (hosts, containers, cens, cins, cpools).
    fn counts(&self) -> (usize, usize, usize, usize, usize);

    /// The members of a CEN, in container order (host, then id).
    fn members(&self, cen: &str) -> Vec<&MemberRec>;
    /// How many members a CEN has.
    fn member_count(&self, cen: &str) -> usize;
    /// A container's memberships, sorted by CEN id.
    fn memberships_of(&self, key: &ContainerKey) -> Vec<&MemberRec>;
    /// The CINs laid over a CEN, sorted by id.
    fn cins_over(&self, cen: &str) -> Vec<&CinRec>;
    /// The containers of a host, sorted by id.
    fn containers_of_host(&self, host: &str) -> Vec<&ContainerRec>;
    /// The containers a pool made, sorted by host and id.
    fn pool_containers(&self, pool: &str) -> Vec<&ContainerRec>;

    /// Whether a container is a member of a CEN.
    fn is_member(&self, key: &ContainerKey, cen: &str) -> bool {
        self.member(&MemberKey::new(cen, key)).is_some()
    }

    /// The hosts with members of a CEN, in id order.
    fn member_hosts(&self, cen: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for m in self.members(cen) {
            if out.last() != Some(&m.host.as_str()) {
                out.push(m.host.as_str());
            }
        }
        out
    }
}

/// The live topology answers from its graph and indexes.
impl Read for Topology {
    fn host(&self, id: &str) -> Option<&HostRec> {
        Topology::host(self, id)
    }
    fn container(&self, key: &ContainerKey) -> Option<&ContainerRec> {
        Topology::container(self, key)
    }
    fn cen(&self, id: &str) -> Option<&CenRec> {
        Topology::cen(self, id)
    }
    fn cin(&self, id: &str) -> Option<&CinRec> {
        Topology::cin(self, id)
    }
    fn cpool(&self, id: &str) -> Option<&CpoolRec> {
        Topology::cpool(self, id)
    }
    fn member(&self, key: &MemberKey) -> Option<&MemberRec> {
        Topology::member(self, key)
    }
    fn hosts(&self) -> Vec<&HostRec> {
        Topology::hosts(self)
    }
    fn containers(&self) -> Vec<&ContainerRec> {
        Topology::containers(self)
    }
    fn cens(&self) -> Vec<&CenRec> {
        Topology::cens(self)
    }
    fn cins(&self) -> Vec<&CinRec> {
        Topology::cins(self)
    }
    fn cpools(&self) -> Vec<&CpoolRec> {
        Topology::cpools(self)
    }
    fn counts(&self) -> (usize, usize, usize, usize, usize) {
        Topology::counts(self)
    }
    fn members(&self, cen: &str) -> Vec<&MemberRec> {
        Topology::members(self, cen).collect()
    }
    fn member_count(&self, cen: &str) -> usize {
        Topology::member_count(self, cen)
    }
    fn memberships_of(&self, key: &ContainerKey) -> Vec<&MemberRec> {
        Topology::memberships_of(self, key)
    }
    fn cins_over(&self, cen: &str) -> Vec<&CinRec> {
        Topology::cins_over(self, cen)
    }
    fn containers_of_host(&self, host: &str) -> Vec<&ContainerRec> {
        Topology::containers_of_host(self, host)
    }
    fn pool_containers(&self, pool: &str) -> Vec<&ContainerRec> {
        self.pool_members(pool).iter().filter_map(|k| Topology::container(self, k)).collect()
    }
    fn is_member(&self, key: &ContainerKey, cen: &str) -> bool {
        Topology::is_member(self, key, cen)
    }
    fn member_hosts(&self, cen: &str) -> Vec<&str> {
        Topology::member_hosts(self, cen)
    }
}
