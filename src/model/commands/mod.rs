//! Commands: every change the API can make, validated against the model and
//! applied through the journaling primitives so that a failure changes
//! nothing.
//!
//! [`Topology::prepare`] opens the journal, runs one command, gives the
//! addresses and host parts it needs (`reconcile`), then undoes it from
//! the journal and returns the after-images; the caller makes them durable
//! and [`Topology::commit`]s them. So a command may fail half-way: nothing
//! it did stays.
//!
//! `run` only dispatches: each command is one method, in the room of its
//! entity (`host`, `container`, `cen`, `cin`, `cpool`; status reports in
//! `status`). A method validates everything it is given before its first
//! `put` or `remove` where it can, and changes records only through those
//! two primitives (they journal).

mod cen;
mod cin;
mod container;
mod cpool;
mod host;
mod reconcile;
mod runtime;
mod status;

// What the rooms below share (they import it from here).
use super::addressing::{AddrPlan, Slice};
use super::error::{ModelError, Result};
use super::ids::{check_container_id, check_id, check_tag, interface_name};
use super::records::*;
use super::topology::{Images, Topology};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Most containers one pool may start with.
pub const MAX_POOL_SIZE: u32 = 100_000;
/// Longest bound namespace path.
pub const MAX_NETNS_PATH: usize = 4096;

/// One CEN of a CEN file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CenSpec {
    pub id: String,
    pub containers: Vec<String>,
}

/// One CIN of a CIN map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CinSpec {
    pub id: String,
    pub cens: Vec<String>,
}

/// One pool of a CPool file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpoolSpec {
    pub id: String,
    pub image: String,
    pub start_with: u32,
    pub cins: Vec<PoolCin>,
}

/// A status report for one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    pub target: EntityKey,
    pub realization: Standing,
    /// The made flag the report was worked out for: a report about an
    /// object made or destroyed since is stale and ignored.
    pub made: bool,
    /// For a CEN or CIN spanning hosts: the host whose part this is (its
    /// server's report); `None` reports the object as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
}

/// Every change to the topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "camelCase")]
pub enum Command {
    HostCreate {
        id: String,
    },
    HostDelete {
        id: String,
    },
    /// A host's leviathan says where its underlay (VTEP) address is; the
    /// host is created if new.
    HostAnnounce {
        id: String,
        vtep: Option<std::net::Ipv4Addr>,
    },
    ContainerCreate {
        host: String,
        id: String,
        tag: Option<String>,
        /// What the user said: a path, or `pid:`/`docker:`/`podman:` (then
        /// `netns` must say what it resolved to).
        netns_path: Option<String>,
        /// What `netns_path` resolved to (the API resolves it; the model
        /// does no I/O). `None`: the path is used as said.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        netns: Option<NetnsBinding>,
    },
    ContainerDelete {
        host: String,
        id: String,
    },
    ContainerSetTag {
        host: String,
        id: String,
        tag: Option<String>,
    },
    ContainerJoinCen {
        host: String,
        container: String,
        cen: String,
    },
    ContainerLeaveCen {
        host: String,
        container: String,
        cen: String,
    },
    /// A runtime attaches a container (CNI ADD, netavark setup): created
    /// or bound to its namespace, and joined to one CEN with the
    /// interface name the runtime chose.
    ContainerAttach {
        host: String,
        id: String,
        netns_path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        netns: Option<NetnsBinding>,
        cen: String,
        ifname: String,
        runtime: RuntimeRef,
    },
    /// A runtime detaches a container (CNI DEL, netavark teardown): it is
    /// deleted if it is the runtime's container of that id; otherwise
    /// nothing changes.
    ContainerDetach {
        host: String,
        id: String,
        /// The CEN left (the container is deleted once it is in none);
        /// `None`: every CEN.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cen: Option<String>,
        runtime: RuntimeRef,
    },
    CenCreate {
        id: String,
    },
    CenDelete {
        id: String,
    },
    CenImport {
        host: String,
        cens: Vec<CenSpec>,
    },
    /// Marks CENs made or not; with `realizing`, their status moves to
    /// PREPARING / DESTROYING in the same change (a realizer will report).
    CenSetMade {
        ids: Vec<String>,
        made: bool,
        realizing: bool,
    },
    CinImport {
        cins: Vec<CinSpec>,
    },
    CinDelete {
        id: String,
    },
    /// As [`Command::CenSetMade`], for CINs (making a CIN makes its CENs).
    CinSetMade {
        ids: Vec<String>,
        made: bool,
        realizing: bool,
    },
    CpoolImport {
        host: String,
        pools: Vec<CpoolSpec>,
    },
    CpoolDelete {
        id: String,
    },
    SetStatus {
        reports: Vec<StatusReport>,
    },
}

impl Command {
    /// The mutation name clients know this command by.
    pub fn name(&self) -> &'static str {
        match self {
            Command::HostCreate { .. } => "hostCreate",
            Command::HostDelete { .. } => "hostDelete",
            Command::HostAnnounce { .. } => "hostAnnounce",
            Command::ContainerCreate { .. } => "containerCreate",
            Command::ContainerDelete { .. } => "containerDelete",
            Command::ContainerSetTag { .. } => "containerSetTag",
            Command::ContainerJoinCen { .. } => "containerJoinCen",
            Command::ContainerLeaveCen { .. } => "containerLeaveCen",
            Command::ContainerAttach { .. } => "containerAttach",
            Command::ContainerDetach { .. } => "containerDetach",
            Command::CenCreate { .. } => "cenCreate",
            Command::CenDelete { .. } => "cenDelete",
            Command::CenImport { .. } => "cenImport",
            Command::CenSetMade { made: true, .. } => "cenMake",
            Command::CenSetMade { made: false, .. } => "cenDestroy",
            Command::CinImport { .. } => "cinImport",
            Command::CinDelete { .. } => "cinDelete",
            Command::CinSetMade { made: true, .. } => "cinMake",
            Command::CinSetMade { made: false, .. } => "cinDestroy",
            Command::CpoolImport { .. } => "cpoolImport",
            Command::CpoolDelete { .. } => "cpoolDelete",
            Command::SetStatus { .. } => "status",
        }
    }
}

/// Refuses a list that names an id twice.
fn check_unique<'a>(what: &str, ids: impl IntoIterator<Item = &'a String>) -> Result<()> {
    let mut seen = BTreeSet::new();
    for id in ids {
        if !seen.insert(id) {
            return Err(ModelError::bad_request(format!("{what} '{id}' is listed twice")));
        }
    }
    Ok(())
}

impl Topology {
    /// Runs a command and returns the images of the records it would
    /// change, leaving the topology as it was. The caller makes the images
    /// durable and then calls [`Topology::commit`]. An empty result means
    /// the command changes nothing.
    pub fn prepare(&mut self, cmd: &Command) -> Result<Images> {
        self.begin();
        let outcome = self.run(cmd).and_then(|()| self.reconcile_touched());
        let before = self.end();
        let mut after = self.images_of(before.keys());
        self.apply_images(&before);
        outcome?;
        after.retain(|k, v| before.get(k) != Some(v));
        Ok(after)
    }

    /// Sets images produced by [`Topology::prepare`] (or read from the store).
    pub fn commit(&mut self, images: &Images) {
        self.apply_images(images);
    }

    /// Runs a command and keeps its effect (tests, benchmarks, loading).
    pub fn execute(&mut self, cmd: &Command) -> Result<Images> {
        let after = self.prepare(cmd)?;
        self.commit(&after);
        Ok(after)
    }

    /// One method per command, in the room of its entity.
    fn run(&mut self, cmd: &Command) -> Result<()> {
        match cmd {
            Command::HostCreate { id } => self.host_create(id),
            Command::HostDelete { id } => self.host_delete(id),
            Command::HostAnnounce { id, vtep } => self.host_announce(id, *vtep),
            Command::ContainerCreate { host, id, tag, netns_path, netns } => {
                self.container_create(host, id, tag.as_deref(), netns_path.as_deref(), netns.as_ref())
            }
            Command::ContainerDelete { host, id } => self.container_delete(host, id),
            Command::ContainerSetTag { host, id, tag } => self.container_set_tag(host, id, tag.as_deref()),
            Command::ContainerJoinCen { host, container, cen } => self.container_join_cen(host, container, cen),
            Command::ContainerLeaveCen { host, container, cen } => self.container_leave_cen(host, container, cen),
            Command::ContainerAttach { host, id, netns_path, netns, cen, ifname, runtime } => {
                self.container_attach(host, id, (netns_path, netns.as_ref()), cen, ifname, runtime)
            }
            Command::ContainerDetach { host, id, cen, runtime } => {
                self.container_detach(host, id, cen.as_deref(), runtime)
            }
            Command::CenCreate { id } => self.cen_create(id),
            Command::CenDelete { id } => self.cen_delete(id),
            Command::CenImport { host, cens } => self.cen_import(host, cens),
            Command::CenSetMade { ids, made, realizing } => self.cen_set_made(ids, *made, *realizing),
            Command::CinImport { cins } => self.cin_import(cins),
            Command::CinDelete { id } => self.cin_delete(id),
            Command::CinSetMade { ids, made, realizing } => self.cin_set_made(ids, *made, *realizing),
            Command::CpoolImport { host, pools } => self.cpool_import(host, pools),
            Command::CpoolDelete { id } => self.cpool_delete(id),
            Command::SetStatus { reports } => self.set_status(reports),
        }
    }
}
