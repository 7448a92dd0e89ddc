//! The entities of the topology as self-contained records.
//!
//! A record is both what a node of the graph holds and what the store keeps:
//! each relation is owned by exactly one record (a CEN owns its memberships,
//! a CIN owns its CEN list and addresses, a container names its host), so a
//! set of records is the whole state and the graph's edges are an index over
//! them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

/// A container is identified by its host and its id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ContainerKey {
    pub host: String,
    pub id: String,
}

impl ContainerKey {
    pub fn new(host: impl Into<String>, id: impl Into<String>) -> Self {
        Self { host: host.into(), id: id.into() }
    }
}

impl fmt::Display for ContainerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.host, self.id)
    }
}

/// Realization status of a CEN, CIN or container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    #[default]
    Pending,
    Preparing,
    Ready,
    Destroying,
    Failed,
}

/// How an object stands: its status, with the reason of a failure. (Not to
/// be confused with `service::Realization`, the handle on the realizer.)
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Standing {
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Standing {
    /// The status of an object from its hosts' parts: FAILED if one failed
    /// (naming the host), else in transition while one is, else READY
    /// once every part is; `None` without parts.
    pub fn of_parts(parts: &BTreeMap<String, Standing>) -> Option<Standing> {
        if parts.is_empty() {
            return None;
        }
        if let Some((h, r)) = parts.iter().find(|(_, r)| r.status == Status::Failed) {
            let why = r.message.as_deref().unwrap_or("failed");
            return Some(Standing { status: Status::Failed, message: Some(format!("on host {h}: {why}")) });
        }
        for status in [Status::Destroying, Status::Preparing, Status::Pending] {
            if parts.values().any(|r| r.status == status) {
                return Some(Standing { status, message: None });
            }
        }
        Some(Standing { status: Status::Ready, message: None })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRec {
    pub id: String,
    /// The host's underlay (VTEP) address, as its leviathan announced it
    /// with `--vtep-address`: where other hosts send the VXLAN traffic of
    /// the CENs they share with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRec {
    pub host: String,
    pub id: String,
    #[serde(default)]
    pub tag: Option<String>,
    /// An existing namespace this container is bound to (never deleted by
    /// leviathan); `None` means a managed namespace.
    #[serde(default)]
    pub netns_path: Option<String>,
    /// What `netns_path` resolved to when it was bound (`pid:`, `docker:`
    /// and `podman:` become `/proc/<pid>/ns/net`): the path and the
    /// namespace's identity, so a reused pid is not taken for the same
    /// workload. `None` for managed namespaces and for bindings made before
    /// identities were kept (the path is then used as said).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<NetnsBinding>,
    /// Set by the realizer when this container cannot be wired while its
    /// CENs can (its workload is gone); default otherwise. The container's
    /// status is derived from it and from its CENs.
    #[serde(default, skip_serializing_if = "is_default")]
    pub realization: Standing,
    /// The CIN (or CEN, legacy) through whose gateway this container wants
    /// its default route.
    #[serde(default)]
    pub default_route: Option<String>,
    /// The pool that created this container, if any.
    #[serde(default)]
    pub pool: Option<String>,
    /// The container runtime that attached this container (through
    /// `leviathan-cni`) and its own id for it; `None` for containers made
    /// through the API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeRef>,
}

/// Which hook of a container runtime made a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// A CNI plugin call (containerd, CRI-O, Kubernetes, nerdctl).
    Cni,
    /// A netavark plugin call (Podman 4+).
    Netavark,
}

/// A container made by a runtime: how, and the runtime's id for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RuntimeRef {
    pub origin: Origin,
    /// The runtime's container id (`CNI_CONTAINERID`, Podman's id).
    pub id: String,
}

impl ContainerRec {
    pub fn key(&self) -> ContainerKey {
        ContainerKey::new(&self.host, &self.id)
    }

    /// The namespace path the realizer opens: the resolved one, else the
    /// one the user gave.
    pub fn netns_target(&self) -> Option<&str> {
        self.netns.as_ref().map(|b| b.path.as_str()).or(self.netns_path.as_deref())
    }
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// The first VNI handed to a CEN (below are left to other uses).
pub const FIRST_VNI: u32 = 4096;
/// The largest VNI (24 bits).
pub const LAST_VNI: u32 = 0x00ff_ffff;

fn is_default(r: &Standing) -> bool {
    *r == Standing::default()
}

/// A network namespace a container is bound to, as resolved at binding.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NetnsBinding {
    /// The path opened (e.g. `/proc/1234/ns/net`, `/run/netns/NAME`).
    pub path: String,
    /// `st_dev` of the namespace file.
    pub device: u64,
    /// `st_ino` of the namespace file (the namespace's inode number).
    pub inode: u64,
}

/// A container's membership in a CEN: its own record, so that a join or a
/// leave is one small record however large the CEN is. It owns the edges
/// to its CEN and its container, and the addresses its interface has in
/// the CINs over the CEN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRec {
    pub cen: String,
    pub host: String,
    pub container: String,
    /// The CEN's interface name inside the container.
    pub ifname: String,
    /// Join order within the CEN (the first two of a wire are its ends).
    pub seq: u64,
    /// CIN id -> the address of this interface in that CIN.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub addresses: BTreeMap<String, Ipv4Addr>,
}

impl MemberRec {
    pub fn key(&self) -> ContainerKey {
        ContainerKey::new(&self.host, &self.container)
    }

    pub fn member_key(&self) -> MemberKey {
        MemberKey { cen: self.cen.clone(), host: self.host.clone(), container: self.container.clone() }
    }
}

/// The key of a membership: ordered by CEN first, so one CEN's members are
/// one range of the index.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MemberKey {
    pub cen: String,
    pub host: String,
    pub container: String,
}

impl MemberKey {
    pub fn new(cen: impl Into<String>, key: &ContainerKey) -> Self {
        MemberKey { cen: cen.into(), host: key.host.clone(), container: key.id.clone() }
    }

    pub fn container_key(&self) -> ContainerKey {
        ContainerKey::new(&self.host, &self.container)
    }
}

impl fmt::Display for MemberKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.cen, self.host, self.container)
    }
}

/// What a CEN and a CIN share: whether it is made, and how that stands,
/// as a whole and per host. Flattened into both records, so the stored
/// fields stay `made`, `realization` and `parts` beside the others.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Making {
    /// Marked to be realized.
    #[serde(default)]
    pub made: bool,
    /// The overall status; where it spans hosts that announced a VTEP
    /// address, worked out from `parts` (see [`Standing::of_parts`]).
    #[serde(default)]
    pub realization: Standing,
    /// Where it spans such hosts: each host's part, as that host's server
    /// reports it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parts: BTreeMap<String, Standing>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CenRec {
    pub id: String,
    /// The VXLAN network identifier of this CEN where it spans hosts:
    /// allocated when the CEN is created, the lowest free from
    /// [`FIRST_VNI`] up, so every host agrees on it. 0 in records written
    /// before VNIs were kept (one is given at load).
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub vni: u32,
    /// Whether it is made and how that stands (stored flat, beside `id`).
    #[serde(flatten)]
    pub making: Making,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CinRec {
    pub id: String,
    /// CENs in the order listed (slice k of a multi-CEN CIN is `cens[k]`).
    pub cens: Vec<String>,
    /// The CIN's subnet: base address and prefix length.
    pub subnet: Ipv4Addr,
    pub prefix_len: u8,
    /// Whether it is made and how that stands, as for a CEN.
    #[serde(flatten)]
    pub making: Making,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolCin {
    /// A CIN id, or (legacy) a CEN id where no CIN has that id.
    pub cin: String,
    pub default_route: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpoolRec {
    pub id: String,
    pub image: String,
    pub start_with: u32,
    pub cins: Vec<PoolCin>,
}

/// Any record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    Host(HostRec),
    Container(ContainerRec),
    Cen(CenRec),
    Cin(CinRec),
    Cpool(CpoolRec),
    Member(MemberRec),
}

impl Record {
    /// Whether a CEN or a CIN is made and how it stands; `None` for the
    /// other kinds.
    pub fn making(&self) -> Option<&Making> {
        match self {
            Record::Cen(c) => Some(&c.making),
            Record::Cin(c) => Some(&c.making),
            _ => None,
        }
    }

    pub fn key(&self) -> EntityKey {
        match self {
            Record::Host(h) => EntityKey::Host(h.id.clone()),
            Record::Container(c) => EntityKey::Container(c.key()),
            Record::Cen(c) => EntityKey::Cen(c.id.clone()),
            Record::Cin(c) => EntityKey::Cin(c.id.clone()),
            Record::Cpool(p) => EntityKey::Cpool(p.id.clone()),
            Record::Member(m) => EntityKey::Member(m.member_key()),
        }
    }
}

/// The key of a record. The derived order (hosts, containers, CENs, CINs,
/// pools, memberships) is the order in which records may be inserted: each
/// kind only refers to kinds before it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "snake_case")]
pub enum EntityKey {
    Host(String),
    Container(ContainerKey),
    Cen(String),
    Cin(String),
    Cpool(String),
    Member(MemberKey),
}

impl EntityKey {
    /// Kind name, as the store and the change feed spell it.
    pub fn kind(&self) -> &'static str {
        match self {
            EntityKey::Host(_) => "host",
            EntityKey::Container(_) => "container",
            EntityKey::Cen(_) => "cen",
            EntityKey::Cin(_) => "cin",
            EntityKey::Cpool(_) => "cpool",
            EntityKey::Member(_) => "member",
        }
    }

    /// The id within its kind (`host/container` for containers,
    /// `cen/host/container` for memberships).
    pub fn id(&self) -> String {
        match self {
            EntityKey::Host(s) | EntityKey::Cen(s) | EntityKey::Cin(s) | EntityKey::Cpool(s) => s.clone(),
            EntityKey::Container(k) => k.to_string(),
            EntityKey::Member(k) => k.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The stored format of CEN and CIN records, as the store and the change
    //! log write it (serde_json of a [`Record`]): pinned, so that reshaping
    //! the structs never changes what is on disk or in etcd.

    use super::*;

    fn parts() -> BTreeMap<String, Standing> {
        BTreeMap::from([
            ("h1".to_string(), Standing { status: Status::Ready, message: None }),
            ("h2".to_string(), Standing { status: Status::Failed, message: Some("boom".into()) }),
        ])
    }

    const CEN_FULL: &str = r#"{"kind":"cen","id":"c1","vni":4096,"made":true,"realization":{"status":"FAILED","message":"on host h2: boom"},"parts":{"h1":{"status":"READY"},"h2":{"status":"FAILED","message":"boom"}}}"#;
    const CEN_BARE: &str = r#"{"kind":"cen","id":"c0","made":false,"realization":{"status":"PENDING"}}"#;
    const CIN_FULL: &str = r#"{"kind":"cin","id":"n1","cens":["a","b"],"subnet":"10.10.0.0","prefix_len":24,"made":true,"realization":{"status":"PREPARING"},"parts":{"h1":{"status":"READY"},"h2":{"status":"FAILED","message":"boom"}}}"#;
    const CIN_BARE: &str = r#"{"kind":"cin","id":"n0","cens":[],"subnet":"10.11.0.0","prefix_len":16,"made":false,"realization":{"status":"PENDING"}}"#;

    fn cen_full() -> Record {
        Record::Cen(CenRec {
            id: "c1".into(),
            vni: 4096,
            making: Making {
                made: true,
                realization: Standing { status: Status::Failed, message: Some("on host h2: boom".into()) },
                parts: parts(),
            },
        })
    }

    fn cen_bare() -> Record {
        Record::Cen(CenRec { id: "c0".into(), vni: 0, making: Making::default() })
    }

    fn cin_full() -> Record {
        Record::Cin(CinRec {
            id: "n1".into(),
            cens: vec!["a".into(), "b".into()],
            subnet: Ipv4Addr::new(10, 10, 0, 0),
            prefix_len: 24,
            making: Making {
                made: true,
                realization: Standing { status: Status::Preparing, message: None },
                parts: parts(),
            },
        })
    }

    fn cin_bare() -> Record {
        Record::Cin(CinRec {
            id: "n0".into(),
            cens: vec![],
            subnet: Ipv4Addr::new(10, 11, 0, 0),
            prefix_len: 16,
            making: Making::default(),
        })
    }

    #[test]
    fn cen_and_cin_records_keep_their_stored_format() {
        for (rec, json) in
            [(cen_full(), CEN_FULL), (cen_bare(), CEN_BARE), (cin_full(), CIN_FULL), (cin_bare(), CIN_BARE)]
        {
            assert_eq!(serde_json::to_string(&rec).unwrap(), json);
            assert_eq!(serde_json::from_str::<Record>(json).unwrap(), rec);
        }
    }

    #[test]
    fn older_cen_and_cin_records_still_read() {
        // Written before VNIs, made flags, statuses and parts were kept.
        let cen: Record = serde_json::from_str(r#"{"kind":"cen","id":"c0"}"#).unwrap();
        assert_eq!(cen, cen_bare());
        let cin: Record =
            serde_json::from_str(r#"{"kind":"cin","id":"n0","cens":[],"subnet":"10.11.0.0","prefix_len":16}"#).unwrap();
        assert_eq!(cin, cin_bare());
        // Unknown fields (from a newer writer) are ignored, as before.
        let cen: Record = serde_json::from_str(r#"{"kind":"cen","id":"c0","later":1}"#).unwrap();
        assert_eq!(cen, cen_bare());
        // The parts' order on disk does not matter; an explicit empty map reads.
        let json =
            r#"{"kind":"cen","id":"c0","parts":{},"realization":{"status":"PENDING","message":null},"made":false}"#;
        assert_eq!(serde_json::from_str::<Record>(json).unwrap(), cen_bare());
    }
}
