//! What follows from the records: wiring types, slices, gateways,
//! interfaces and default routes. Nothing here is stored.
//!
//! Written once, over the primitive reads ([`Read`]): [`View`] is
//! implemented by everything that implements [`Read`], so the live
//! [`Topology`] and a view at a kept revision derive alike. `Topology`
//! keeps inherent methods of the same names (calling these), so its
//! callers need no import.

use super::addressing::Slice;
use super::read::Read;
use super::records::*;
use super::topology::Topology;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// How a CEN is wired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Wiring {
    /// One veth pair straight between two containers.
    Wire,
    /// A bridge with one veth pair per member.
    Bridge,
}

/// An address on an interface, with the CIN that gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    pub cin: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
}

/// A container's interface on one CEN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub cen: String,
    pub name: String,
    pub addresses: Vec<IfAddr>,
}

/// A member of a CIN: one container interface with its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CinMember {
    pub container: ContainerKey,
    pub cen: String,
    pub ip: Ipv4Addr,
}

/// The reads derived from the primitive ones (see the module docs).
pub trait View: Read {
    /// The hosts a CEN is realized on: those with members, and those with
    /// members of a made CIN over several CENs that includes it (each such
    /// host routes between the CIN's slices itself, so it needs every slice).
    fn presence<'a>(&'a self, cen: &str) -> BTreeSet<&'a str> {
        let mut hosts: BTreeSet<&str> = self.member_hosts(cen).into_iter().collect();
        for cin in self.cins_over(cen).into_iter().filter(|c| c.making.made && c.cens.len() > 1) {
            for other in cin.cens.iter().filter(|c| *c != cen) {
                if self.cen(other).is_some_and(|c| c.making.made) {
                    hosts.extend(self.member_hosts(other));
                }
            }
        }
        hosts
    }

    /// The hosts a CIN is realized on: those with members of its made CENs.
    fn cin_presence<'a>(&'a self, cin: &CinRec) -> BTreeSet<&'a str> {
        let mut hosts = BTreeSet::new();
        for cen in &cin.cens {
            if self.cen(cen).is_some_and(|c| c.making.made) {
                hosts.extend(self.member_hosts(cen));
            }
        }
        hosts
    }

    /// The wiring of a CEN: a bridge for three or more members, for any CEN
    /// of a CIN spanning several CENs, where a member routes its default
    /// route through it (a gateway is needed), and where a container
    /// runtime attached a member (its interface must exist from the first
    /// container on, and runtimes' containers come and go: a bridge keeps
    /// the others' wiring as they do); a wire for two; else none.
    fn wiring(&self, cen: &CenRec) -> Option<Wiring> {
        let n = self.member_count(&cen.id);
        let in_multi = self.cins_over(&cen.id).iter().any(|c| c.cens.len() > 1);
        if in_multi || n >= 3 {
            return Some(Wiring::Bridge);
        }
        if n == 0 {
            return None;
        }
        let routes_here = self.members(&cen.id).into_iter().any(|m| {
            self.container(&m.key())
                .and_then(|c| self.default_route_of(c))
                .is_some_and(|(_, via_cen)| via_cen == cen.id)
        });
        let runtime_here =
            || self.members(&cen.id).into_iter().any(|m| self.container(&m.key()).is_some_and(|c| c.runtime.is_some()));
        if routes_here || runtime_here() {
            Some(Wiring::Bridge)
        } else if n == 2 {
            Some(Wiring::Wire)
        } else {
            None
        }
    }

    /// The slice a CEN has in a CIN.
    fn slice(&self, cin: &CinRec, cen: &str) -> Option<Slice> {
        let k = cin.cens.iter().position(|c| c == cen)?;
        Slice::of(cin.subnet, cin.prefix_len, k, cin.cens.len() > 1)
    }

    /// The gateway of a CEN in a CIN: `.1` of its slice, when the CEN is a
    /// bridge (the address sits on the bridge).
    fn gateway(&self, cin: &CinRec, cen: &str) -> Option<Ipv4Addr> {
        let rec = self.cen(cen)?;
        if self.wiring(rec) != Some(Wiring::Bridge) {
            return None;
        }
        self.slice(cin, cen).map(|s| s.gateway())
    }

    /// Where a container's requested default route goes: `(cin, cen)`.
    /// The request names a CIN, or (legacy) a CEN covered by some CIN.
    fn default_route_of(&self, c: &ContainerRec) -> Option<(String, String)> {
        let name = c.default_route.as_deref()?;
        let key = c.key();
        if let Some(cin) = self.cin(name) {
            let cen = cin.cens.iter().find(|cen| self.is_member(&key, cen))?;
            return Some((cin.id.clone(), cen.clone()));
        }
        if self.is_member(&key, name) {
            let cin = self.cins_over(name).into_iter().next()?;
            return Some((cin.id.clone(), name.to_string()));
        }
        None
    }

    /// The default route of a container as `(gateway, cin, cen)`, where a
    /// gateway exists.
    fn default_gateway_of(&self, c: &ContainerRec) -> Option<(Ipv4Addr, String, String)> {
        let (cin, cen) = self.default_route_of(c)?;
        let gw = self.gateway(self.cin(&cin)?, &cen)?;
        Some((gw, cin, cen))
    }

    /// The interface of one membership.
    fn interface(&self, m: &MemberRec) -> Interface {
        let addresses = m
            .addresses
            .iter()
            .filter_map(|(cin, ip)| {
                let rec = self.cin(cin)?;
                let slice = self.slice(rec, &m.cen)?;
                Some(IfAddr { cin: cin.clone(), ip: *ip, prefix_len: slice.prefix_len })
            })
            .collect();
        Interface { cen: m.cen.clone(), name: m.ifname.clone(), addresses }
    }

    /// A container's interfaces, one per CEN, sorted by CEN id.
    fn interfaces(&self, key: &ContainerKey) -> Vec<Interface> {
        self.memberships_of(key).into_iter().map(|m| self.interface(m)).collect()
    }

    /// The members of a CIN with their addresses, in address order.
    fn cin_members(&self, cin: &CinRec) -> Vec<CinMember> {
        let mut v: Vec<CinMember> = cin
            .cens
            .iter()
            .flat_map(|cen| self.members(cen))
            .filter_map(|m| Some(CinMember { container: m.key(), cen: m.cen.clone(), ip: *m.addresses.get(&cin.id)? }))
            .collect();
        v.sort_by_key(|m| m.ip);
        v
    }

    /// The containers of a CIN (each once), sorted.
    fn cin_containers(&self, cin: &CinRec) -> Vec<ContainerKey> {
        let mut v: Vec<ContainerKey> = cin
            .cens
            .iter()
            .flat_map(|cen| self.members(cen))
            .filter(|m| m.addresses.contains_key(&cin.id))
            .map(|m| m.key())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// A container's realization, derived from the CENs it is in: FAILED if
    /// a made one failed, PREPARING or DESTROYING while one is on its way,
    /// READY when in a made CEN, else PENDING.
    fn container_realization(&self, key: &ContainerKey) -> Standing {
        let cens = self.cens_of(key);
        let with = |status: Status, message: Option<String>| Standing { status, message };
        // Its own failure (a bound workload that is gone) while its CENs are
        // fine.
        if let Some(own) = self.container(key).map(|c| &c.realization).filter(|r| r.status == Status::Failed) {
            if cens.iter().any(|c| c.making.made) {
                return own.clone();
            }
        }
        if let Some(c) = cens.iter().find(|c| c.making.made && c.making.realization.status == Status::Failed) {
            let why = c.making.realization.message.as_deref().unwrap_or("failed");
            return with(Status::Failed, Some(format!("CEN {}: {why}", c.id)));
        }
        for status in [Status::Preparing, Status::Destroying] {
            if cens.iter().any(|c| c.making.realization.status == status) {
                return with(status, None);
            }
        }
        if cens.iter().any(|c| c.making.made && c.making.realization.status == Status::Ready) {
            return with(Status::Ready, None);
        }
        with(Status::Pending, None)
    }

    /// Whether a managed or bound namespace is wanted for a container: it is
    /// a member of at least one made CEN.
    fn container_is_made(&self, key: &ContainerKey) -> bool {
        self.cens_of(key).iter().any(|c| c.making.made)
    }

    /// The CENs a container is a member of, sorted by id.
    fn cens_of(&self, key: &ContainerKey) -> Vec<&CenRec> {
        self.memberships_of(key).into_iter().filter_map(|m| self.cen(&m.cen)).collect()
    }

    /// The members of a CEN in join order.
    fn members_in_order(&self, cen: &str) -> Vec<&MemberRec> {
        let mut v = self.members(cen);
        v.sort_by_key(|m| m.seq);
        v
    }
}

impl<T: Read + ?Sized> View for T {}

/// The derived reads as inherent methods of the live topology (each calls
/// [`View`]'s), so that its callers need not import the trait.
macro_rules! inherent {
    ($($(#[$doc:meta])* fn $name:ident$(<$l:lifetime>)?(&$($sl:lifetime)? self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        impl Topology {
            $(
                $(#[$doc])*
                pub fn $name$(<$l>)?(&$($sl)? self $(, $arg: $ty)*) -> $ret {
                    View::$name(self $(, $arg)*)
                }
            )*
        }
    };
}

inherent! {
    /// See [`View::presence`].
    fn presence<'a>(&'a self, cen: &str) -> BTreeSet<&'a str>;
    /// See [`View::cin_presence`].
    fn cin_presence<'a>(&'a self, cin: &CinRec) -> BTreeSet<&'a str>;
    /// See [`View::wiring`].
    fn wiring(&self, cen: &CenRec) -> Option<Wiring>;
    /// See [`View::slice`].
    fn slice(&self, cin: &CinRec, cen: &str) -> Option<Slice>;
    /// See [`View::gateway`].
    fn gateway(&self, cin: &CinRec, cen: &str) -> Option<Ipv4Addr>;
    /// See [`View::default_route_of`].
    fn default_route_of(&self, c: &ContainerRec) -> Option<(String, String)>;
    /// See [`View::default_gateway_of`].
    fn default_gateway_of(&self, c: &ContainerRec) -> Option<(Ipv4Addr, String, String)>;
    /// See [`View::interface`].
    fn interface(&self, m: &MemberRec) -> Interface;
    /// See [`View::interfaces`].
    fn interfaces(&self, key: &ContainerKey) -> Vec<Interface>;
    /// See [`View::cin_members`].
    fn cin_members(&self, cin: &CinRec) -> Vec<CinMember>;
    /// See [`View::cin_containers`].
    fn cin_containers(&self, cin: &CinRec) -> Vec<ContainerKey>;
    /// See [`View::container_realization`].
    fn container_realization(&self, key: &ContainerKey) -> Standing;
    /// See [`View::container_is_made`].
    fn container_is_made(&self, key: &ContainerKey) -> bool;
    /// See [`View::cens_of`].
    fn cens_of(&self, key: &ContainerKey) -> Vec<&CenRec>;
    /// See [`View::members_in_order`].
    fn members_in_order<'a>(&'a self, cen: &'a str) -> Vec<&'a MemberRec>;
}
