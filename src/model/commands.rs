//! Commands: every change the API can make, validated against the model and
//! applied through the journaling primitives so that a failure changes
//! nothing.

use super::addressing::AddrPlan;
use super::addressing::Slice;
use super::error::{ModelError, Result};
use super::ids::{check_container_id, check_id, check_tag, interface_name};
use super::records::*;
use super::topology::{Images, Topology};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

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
    pub realization: Realization,
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

fn check_unique<'a>(what: &str, ids: impl IntoIterator<Item = &'a String>) -> Result<()> {
    let mut seen = BTreeSet::new();
    for id in ids {
        if !seen.insert(id) {
            return Err(ModelError::bad_request(format!("{what} '{id}' is listed twice")));
        }
    }
    Ok(())
}

fn check_netns_path(p: &str, binding: Option<&NetnsBinding>) -> Result<()> {
    if let Some(b) = binding {
        check_abs_path(&b.path)?;
        if p.is_empty() || p.len() > MAX_NETNS_PATH || p.contains('\0') {
            return Err(ModelError::bad_request(format!("invalid netnsPath '{}'", p.escape_debug())));
        }
        return Ok(());
    }
    check_abs_path(p)
}

fn check_abs_path(p: &str) -> Result<()> {
    if !p.starts_with('/') || p.len() > MAX_NETNS_PATH || p.contains('\0') || p.split('/').any(|s| s == "..") {
        return Err(ModelError::bad_request(format!(
            "invalid netnsPath '{}': an absolute path without '..' is required",
            p.escape_debug()
        )));
    }
    Ok(())
}

/// The status an object takes, in the same change, when it is made or
/// destroyed: PREPARING until the realizer reports; DESTROYING where
/// something was realized, else straight back to PENDING.
fn transition(current: &Realization, made: bool) -> Realization {
    let status = match (made, current.status) {
        (true, _) => Status::Preparing,
        (false, Status::Pending) => Status::Pending,
        (false, _) => Status::Destroying,
    };
    Realization { status, message: None }
}

/// Applies a status report to an object's parts; returns its status.
fn set_part(parts: &mut BTreeMap<String, Realization>, r: &StatusReport, made: bool) -> Realization {
    let Some(host) = &r.host else { return r.realization.clone() };
    if r.realization.status == Status::Pending {
        parts.remove(host);
    } else {
        parts.insert(host.clone(), r.realization.clone());
    }
    // When the last part went, nothing is left to do anywhere.
    let none_left = Realization { status: if made { Status::Ready } else { Status::Pending }, message: None };
    Realization::of_parts(parts).unwrap_or(none_left)
}

/// Parts in the same change as a make (PREPARING) or a destroy
/// (DESTROYING where something was realized).
fn transition_parts(parts: &mut BTreeMap<String, Realization>, made: bool) {
    parts.retain(|_, r| made || r.status != Status::Pending);
    for r in parts.values_mut() {
        *r = transition(r, made);
    }
    parts.retain(|_, r| r.status != Status::Pending);
}

/// Making what is made but FAILED is a retry: it goes back to PREPARING
/// (a change, so the realizer tries again).
fn retry(made: bool, realizing: bool, was_made: bool, current: &Realization) -> bool {
    made && realizing && was_made && current.status == Status::Failed
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

    fn run(&mut self, cmd: &Command) -> Result<()> {
        match cmd {
            Command::HostCreate { id } => {
                check_id("host id", id)?;
                self.ensure_host(id);
                Ok(())
            }
            Command::HostDelete { id } => {
                check_id("host id", id)?;
                if self.host(id).is_none() {
                    return Err(ModelError::not_found(format!("no host '{id}'")));
                }
                let n = self.containers_of_host(id).len();
                if n > 0 {
                    return Err(ModelError::conflict(format!("host '{id}' still has {n} containers")));
                }
                self.remove(&EntityKey::Host(id.clone()));
                Ok(())
            }
            Command::HostAnnounce { id, vtep } => {
                check_id("host id", id)?;
                self.ensure_host(id);
                if self.host(id).is_some_and(|h| h.vtep != *vtep) {
                    self.put(Record::Host(HostRec { id: id.clone(), vtep: *vtep }));
                }
                Ok(())
            }
            Command::ContainerCreate { host, id, tag, netns_path, netns } => {
                check_id("host id", host)?;
                check_container_id(id)?;
                if let Some(t) = tag {
                    check_tag(t)?;
                }
                if let Some(p) = netns_path {
                    check_netns_path(p, netns.as_ref())?;
                }
                let key = ContainerKey::new(host, id);
                let mut rec = self.ensure_container(&key).clone();
                if let Some(p) = netns_path {
                    if rec.netns_path.is_none() && self.container_is_made(&key) {
                        return Err(ModelError::conflict(format!(
                            "container '{key}' is realized in a managed namespace; destroy its CENs before binding it"
                        )));
                    }
                    // Binding again (the workload restarted, or moved) is
                    // allowed: the realizer wires the new namespace with the
                    // same interfaces and addresses (they live in the
                    // memberships).
                    // Binding a container whose workload was reported gone
                    // is a retry even when nothing differs (namespace inode
                    // numbers are reused: a namespace made again under the
                    // same name may have the same identity).
                    let retry = rec.realization.status == Status::Failed;
                    if rec.netns_path.as_ref() != Some(p) || rec.netns != *netns || retry {
                        rec.netns_path = Some(p.clone());
                        rec.netns = netns.clone();
                        rec.realization = Realization::default();
                    }
                }
                if tag.is_some() {
                    rec.tag = tag.clone();
                }
                self.put(Record::Container(rec));
                Ok(())
            }
            Command::ContainerDelete { host, id } => {
                let key = self.existing_container(host, id)?;
                self.delete_container(&key);
                Ok(())
            }
            Command::ContainerSetTag { host, id, tag } => {
                if let Some(t) = tag {
                    check_tag(t)?;
                }
                let key = self.existing_container(host, id)?;
                let mut rec =
                    self.container(&key).cloned().ok_or_else(|| ModelError::internal("container vanished"))?;
                rec.tag = tag.clone();
                self.put(Record::Container(rec));
                Ok(())
            }
            Command::ContainerJoinCen { host, container, cen } => {
                check_id("host id", host)?;
                check_container_id(container)?;
                self.existing_cen(cen)?;
                let key = ContainerKey::new(host, container);
                self.ensure_container(&key);
                self.join(&key, cen)?;
                Ok(())
            }
            Command::ContainerLeaveCen { host, container, cen } => {
                let key = self.existing_container(host, container)?;
                self.existing_cen(cen)?;
                self.leave(&key, cen);
                Ok(())
            }
            Command::CenCreate { id } => {
                check_id("CEN id", id)?;
                if self.cen(id).is_none() {
                    self.new_cen(id)?;
                }
                Ok(())
            }
            Command::CenDelete { id } => {
                self.existing_cen(id)?;
                let members: Vec<EntityKey> = self.members(id).map(|m| EntityKey::Member(m.member_key())).collect();
                for k in members {
                    self.remove(&k);
                }
                for cin in self.cins_over(id).into_iter().cloned().collect::<Vec<_>>() {
                    let mut cin = cin;
                    cin.cens.retain(|c| c != id);
                    self.put(Record::Cin(cin));
                }
                self.remove(&EntityKey::Cen(id.clone()));
                Ok(())
            }
            Command::CenImport { host, cens } => {
                check_id("host id", host)?;
                for spec in cens {
                    check_id("CEN id", &spec.id)?;
                    for c in &spec.containers {
                        check_container_id(c)?;
                    }
                }
                check_unique("CEN id", cens.iter().map(|s| &s.id))?;
                for spec in cens {
                    self.import_cen(host, spec)?;
                }
                Ok(())
            }
            Command::CenSetMade { ids, made, realizing } => {
                for id in ids {
                    self.existing_cen(id)?;
                }
                for id in ids {
                    self.set_cen_made(id, *made, *realizing);
                }
                Ok(())
            }
            Command::CinImport { cins } => {
                for spec in cins {
                    check_id("CIN id", &spec.id)?;
                    for c in &spec.cens {
                        check_id("CEN id", c)?;
                    }
                    check_unique(&format!("CEN id in CIN '{}'", spec.id), spec.cens.iter())?;
                    let len = self.cin(&spec.id).map_or(self.addr_plan().cin_len(), |c| c.prefix_len);
                    let max = AddrPlan::max_cens(len);
                    if spec.cens.len() > max {
                        return Err(ModelError::bad_request(format!(
                            "CIN '{}' lists {} CENs; at most {max} fit its /{len}",
                            spec.id,
                            spec.cens.len()
                        )));
                    }
                }
                check_unique("CIN id", cins.iter().map(|s| &s.id))?;
                for spec in cins {
                    for c in &spec.cens {
                        if self.cen(c).is_none() {
                            return Err(ModelError::not_found(format!("no CEN '{c}' (listed by CIN '{}')", spec.id)));
                        }
                    }
                }
                for spec in cins {
                    self.import_cin(spec)?;
                }
                Ok(())
            }
            Command::CinDelete { id } => {
                self.existing_cin(id)?;
                self.remove(&EntityKey::Cin(id.clone()));
                Ok(())
            }
            Command::CinSetMade { ids, made, realizing } => {
                for id in ids {
                    self.existing_cin(id)?;
                }
                for id in ids {
                    let mut cin = self.cin(id).cloned().ok_or_else(|| ModelError::internal("CIN vanished"))?;
                    if *made {
                        // Addresses need interfaces: making a CIN makes its CENs.
                        for cen in &cin.cens {
                            self.set_cen_made(cen, true, *realizing);
                        }
                    }
                    if retry(*made, *realizing, cin.made, &cin.realization) {
                        cin.realization = transition(&cin.realization, true);
                        transition_parts(&mut cin.parts, true);
                        self.put(Record::Cin(cin));
                    } else if cin.made != *made {
                        cin.made = *made;
                        if *realizing {
                            cin.realization = transition(&cin.realization, *made);
                            transition_parts(&mut cin.parts, *made);
                        }
                        self.put(Record::Cin(cin));
                    }
                }
                Ok(())
            }
            Command::CpoolImport { host, pools } => {
                check_id("host id", host)?;
                for p in pools {
                    check_id("pool id", &p.id)?;
                    if p.start_with > MAX_POOL_SIZE {
                        return Err(ModelError::bad_request(format!(
                            "pool '{}': start_with {} is over the limit of {MAX_POOL_SIZE}",
                            p.id, p.start_with
                        )));
                    }
                    if p.image.len() > 256 || p.image.chars().any(char::is_control) {
                        return Err(ModelError::bad_request(format!("pool '{}': invalid type", p.id)));
                    }
                    for c in &p.cins {
                        check_id("CIN id", &c.cin)?;
                    }
                    check_unique(&format!("CIN id in pool '{}'", p.id), p.cins.iter().map(|c| &c.cin))?;
                    let defaults: Vec<&str> =
                        p.cins.iter().filter(|c| c.default_route).map(|c| c.cin.as_str()).collect();
                    if defaults.len() > 1 {
                        return Err(ModelError::conflict(format!(
                            "pool '{}' asks for {} default routes ({}); a container has at most one",
                            p.id,
                            defaults.len(),
                            defaults.join(", ")
                        )));
                    }
                }
                check_unique("pool id", pools.iter().map(|p| &p.id))?;
                for p in pools {
                    self.import_pool(host, p)?;
                }
                Ok(())
            }
            Command::CpoolDelete { id } => {
                check_id("pool id", id)?;
                let pool = self.cpool(id).cloned().ok_or_else(|| ModelError::not_found(format!("no pool '{id}'")))?;
                let keys = self.pool_containers(&pool.id);
                self.delete_containers(&keys);
                self.remove(&EntityKey::Cpool(id.clone()));
                Ok(())
            }
            Command::SetStatus { reports } => {
                for r in reports {
                    let Some(rec) = self.get(&r.target).cloned() else { continue };
                    let rec = match rec {
                        Record::Cen(mut c) if c.made == r.made => {
                            c.realization = set_part(&mut c.parts, r, c.made);
                            Record::Cen(c)
                        }
                        Record::Cin(mut c) if c.made == r.made => {
                            c.realization = set_part(&mut c.parts, r, c.made);
                            Record::Cin(c)
                        }
                        Record::Container(mut c)
                            if c.realization != r.realization && self.container_is_made(&c.key()) == r.made =>
                        {
                            c.realization = r.realization.clone();
                            Record::Container(c)
                        }
                        _ => continue,
                    };
                    self.put(rec);
                }
                Ok(())
            }
        }
    }

    // ---- lookups that fail with a named id ----

    fn existing_container(&self, host: &str, id: &str) -> Result<ContainerKey> {
        check_id("host id", host)?;
        check_container_id(id)?;
        let key = ContainerKey::new(host, id);
        if self.container(&key).is_none() {
            return Err(ModelError::not_found(format!("no container '{id}' on host '{host}'")));
        }
        Ok(key)
    }

    fn existing_cen(&self, id: &str) -> Result<()> {
        check_id("CEN id", id)?;
        if self.cen(id).is_none() {
            return Err(ModelError::not_found(format!("no CEN '{id}'")));
        }
        Ok(())
    }

    fn existing_cin(&self, id: &str) -> Result<()> {
        check_id("CIN id", id)?;
        if self.cin(id).is_none() {
            return Err(ModelError::not_found(format!("no CIN '{id}'")));
        }
        Ok(())
    }

    // ---- building blocks ----

    fn ensure_host(&mut self, id: &str) {
        if self.host(id).is_none() {
            self.put(Record::Host(HostRec { id: id.to_string(), vtep: None }));
        }
    }

    /// A new CEN, with the lowest free VNI.
    fn new_cen(&mut self, id: &str) -> Result<()> {
        let vni = self.free_vni().ok_or_else(|| {
            ModelError::conflict(format!("no VNI is left for CEN '{id}' (all {FIRST_VNI}..={LAST_VNI} are in use)"))
        })?;
        self.put(Record::Cen(CenRec {
            id: id.to_string(),
            vni,
            made: false,
            realization: Realization::default(),
            parts: BTreeMap::new(),
        }));
        Ok(())
    }

    fn ensure_container(&mut self, key: &ContainerKey) -> &ContainerRec {
        if self.container(key).is_none() {
            self.ensure_host(&key.host);
            self.put(Record::Container(ContainerRec {
                host: key.host.clone(),
                id: key.id.clone(),
                tag: None,
                netns_path: None,
                netns: None,
                realization: Realization::default(),
                default_route: None,
                pool: None,
            }));
        }
        self.container(key).expect("container was just ensured")
    }

    fn join(&mut self, key: &ContainerKey, cen: &str) -> Result<()> {
        self.join_many(cen, std::slice::from_ref(key))
    }

    /// Adds containers (in order) to a CEN they are not yet in: one
    /// membership record each. An interface name the container already uses
    /// for another CEN is a conflict.
    fn join_many(&mut self, cen: &str, keys: &[ContainerKey]) -> Result<()> {
        if self.cen(cen).is_none() {
            return Ok(());
        }
        let ifname = interface_name(cen);
        let mut seq = self.next_seq(cen);
        for key in keys {
            if self.is_member(key, cen) {
                continue;
            }
            self.check_ifname_free(key, cen, &ifname)?;
            self.put(Record::Member(MemberRec {
                cen: cen.to_string(),
                host: key.host.clone(),
                container: key.id.clone(),
                ifname: ifname.clone(),
                seq,
                addresses: BTreeMap::new(),
            }));
            seq += 1;
        }
        Ok(())
    }

    /// A container's interfaces need distinct names: joining `cen` must not
    /// reuse the name of another CEN's interface in it.
    fn check_ifname_free(&self, key: &ContainerKey, cen: &str, ifname: &str) -> Result<()> {
        match self.memberships_of(key).into_iter().find(|m| m.cen != cen && m.ifname == ifname) {
            Some(other) => Err(ModelError::conflict(format!(
                "container '{key}' already has an interface named '{ifname}' (for CEN '{}'); CEN '{cen}' would use the same name",
                other.cen
            ))),
            None => Ok(()),
        }
    }

    fn leave(&mut self, key: &ContainerKey, cen: &str) {
        self.remove(&EntityKey::Member(MemberKey::new(cen, key)));
    }

    /// Takes containers out of a CEN: one membership record each.
    fn leave_many(&mut self, cen: &str, keys: &BTreeSet<ContainerKey>) {
        for key in keys {
            let k = MemberKey::new(cen, key);
            if self.member(&k).is_some() {
                self.remove(&EntityKey::Member(k));
            }
        }
    }

    fn delete_container(&mut self, key: &ContainerKey) {
        self.delete_containers(std::slice::from_ref(key));
    }

    /// Removes containers from every CEN (their memberships, and with them
    /// their addresses) and from their hosts.
    fn delete_containers(&mut self, keys: &[ContainerKey]) {
        for key in keys {
            let memberships: Vec<EntityKey> =
                self.memberships_of(key).into_iter().map(|m| EntityKey::Member(m.member_key())).collect();
            for m in memberships {
                self.remove(&m);
            }
        }
        for key in keys {
            self.remove(&EntityKey::Container(key.clone()));
        }
    }

    fn set_cen_made(&mut self, id: &str, made: bool, realizing: bool) {
        if let Some(mut rec) = self.cen(id).cloned() {
            if retry(made, realizing, rec.made, &rec.realization) {
                rec.realization = transition(&rec.realization, true);
                transition_parts(&mut rec.parts, true);
                self.put(Record::Cen(rec));
            } else if rec.made != made {
                rec.made = made;
                if realizing {
                    rec.realization = transition(&rec.realization, made);
                    transition_parts(&mut rec.parts, made);
                }
                self.put(Record::Cen(rec));
            }
        }
    }

    fn import_cen(&mut self, host: &str, spec: &CenSpec) -> Result<()> {
        if self.cen(&spec.id).is_none() {
            self.new_cen(&spec.id)?;
        }
        let mut wanted: Vec<ContainerKey> = Vec::with_capacity(spec.containers.len());
        let mut seen = BTreeSet::new();
        for c in &spec.containers {
            if seen.insert(c.as_str()) {
                wanted.push(ContainerKey::new(host, c.as_str()));
            }
        }
        for key in &wanted {
            self.ensure_container(key);
        }
        // Members of this host not in the file leave; members of other hosts
        // stay; new ones join in file order after those already present.
        let leaving: BTreeSet<ContainerKey> = self
            .members(&spec.id)
            .filter(|m| m.host == host && !seen.contains(m.container.as_str()))
            .map(|m| m.key())
            .collect();
        self.leave_many(&spec.id, &leaving);
        self.join_many(&spec.id, &wanted)
    }

    fn import_cin(&mut self, spec: &CinSpec) -> Result<()> {
        let rec = match self.cin(&spec.id).cloned() {
            Some(mut rec) => {
                rec.cens = spec.cens.clone();
                rec
            }
            None => {
                let subnet = self.free_subnet().ok_or_else(|| {
                    ModelError::conflict(format!(
                        "no free /{} left in the CIN pool {} for CIN '{}'",
                        self.addr_plan().cin_len(),
                        self.addr_plan().pool(),
                        spec.id
                    ))
                })?;
                CinRec {
                    id: spec.id.clone(),
                    cens: spec.cens.clone(),
                    subnet,
                    prefix_len: self.addr_plan().cin_len(),
                    made: false,
                    realization: Realization::default(),
                    parts: BTreeMap::new(),
                }
            }
        };
        if self.cin(&spec.id) != Some(&rec) {
            self.put(Record::Cin(rec));
        }
        Ok(())
    }

    fn pool_containers(&self, pool: &str) -> Vec<ContainerKey> {
        self.pool_members(pool)
    }

    /// The CENs a pool entry names: a CIN's CENs, or (legacy) a CEN.
    fn pool_target_cens(&self, pool: &str, name: &str) -> Result<Vec<String>> {
        if let Some(cin) = self.cin(name) {
            return Ok(cin.cens.clone());
        }
        if self.cen(name).is_some() {
            return Ok(vec![name.to_string()]);
        }
        Err(ModelError::not_found(format!("no CIN or CEN named '{name}' (listed by pool '{pool}')")))
    }

    fn import_pool(&mut self, host: &str, spec: &CpoolSpec) -> Result<()> {
        let old = self.cpool(&spec.id).cloned();
        let mut targets: Vec<String> = Vec::new();
        for c in &spec.cins {
            for cen in self.pool_target_cens(&spec.id, &c.cin)? {
                if !targets.contains(&cen) {
                    targets.push(cen);
                }
            }
        }
        let default_route = spec.cins.iter().find(|c| c.default_route).map(|c| c.cin.clone());
        let old_targets: Vec<String> = match &old {
            Some(o) => o
                .cins
                .iter()
                .filter_map(|c| self.pool_target_cens(&o.id, &c.cin).ok())
                .flatten()
                .filter(|cen| !targets.contains(cen))
                .collect(),
            None => Vec::new(),
        };
        // Containers past the new size go.
        let past: Vec<ContainerKey> = self
            .pool_containers(&spec.id)
            .into_iter()
            .filter(|key| {
                let n = key.id.strip_prefix(&format!("{}-", spec.id)).and_then(|n| n.parse::<u32>().ok());
                key.host != host || n.is_none_or(|n| n == 0 || n > spec.start_with)
            })
            .collect();
        self.delete_containers(&past);
        let mut members = Vec::with_capacity(spec.start_with as usize);
        for n in 1..=spec.start_with {
            let id = format!("{}-{n}", spec.id);
            check_container_id(&id)?;
            let key = ContainerKey::new(host, &id);
            let mut rec = self.ensure_container(&key).clone();
            if let (Some(have), Some(want)) = (&rec.default_route, &default_route) {
                if have != want && rec.pool.as_deref() != Some(spec.id.as_str()) {
                    return Err(ModelError::conflict(format!(
                        "container '{key}' already has a default route via '{have}'; pool '{}' asks for one via '{want}'",
                        spec.id
                    )));
                }
            }
            rec.pool = Some(spec.id.clone());
            rec.default_route = default_route.clone();
            if self.container(&key) != Some(&rec) {
                self.put(Record::Container(rec));
            }
            members.push(key);
        }
        // One change per CEN, however large the pool.
        let set: BTreeSet<ContainerKey> = members.iter().cloned().collect();
        for cen in &old_targets {
            self.leave_many(cen, &set);
        }
        for cen in &targets {
            self.join_many(cen, &members)?;
        }
        let rec = CpoolRec {
            id: spec.id.clone(),
            image: spec.image.clone(),
            start_with: spec.start_with,
            cins: spec.cins.clone(),
        };
        if old.as_ref() != Some(&rec) {
            self.put(Record::Cpool(rec));
        }
        Ok(())
    }

    /// Gives addresses where the running command needs them: every
    /// interface of a CIN whose CEN list changed (a new CIN, CENs added,
    /// removed or reordered), and every membership it created or changed.
    /// Nothing else is looked at, so a join costs one membership.
    fn reconcile_touched(&mut self) -> Result<()> {
        let Some(journal) = self.journal_keys() else { return Ok(()) };
        let mut members: Vec<MemberKey> = Vec::new();
        let mut spread: BTreeSet<EntityKey> = BTreeSet::new();
        for key in journal {
            match &key {
                EntityKey::Member(k) => {
                    spread.insert(EntityKey::Cen(k.cen.clone()));
                    for cin in self.cins_over(&k.cen).into_iter().filter(|c| c.made) {
                        spread.insert(EntityKey::Cin(cin.id.clone()));
                        if cin.cens.len() > 1 {
                            spread.extend(cin.cens.iter().map(|c| EntityKey::Cen(c.clone())));
                        }
                    }
                }
                EntityKey::Cen(_) | EntityKey::Cin(_) => {
                    spread.insert(key.clone());
                }
                _ => {}
            }
            match key {
                EntityKey::Cin(id) => {
                    let before: Vec<String> = match self.journal_before(&EntityKey::Cin(id.clone())) {
                        Some(Record::Cin(c)) => c.cens.clone(),
                        _ => Vec::new(),
                    };
                    let after: Vec<String> = self.cin(&id).map(|c| c.cens.clone()).unwrap_or_default();
                    if before != after {
                        for cen in before.iter().filter(|c| !after.contains(c)) {
                            self.strip_cin(&id, cen);
                        }
                        self.reconcile_cin(&id)?;
                    }
                }
                EntityKey::Member(k) => members.push(k),
                _ => {}
            }
        }
        // In join order, so pools and imports hand out addresses in order.
        let mut members: Vec<(String, u64, MemberKey)> =
            members.into_iter().filter_map(|k| self.member(&k).map(|m| (m.cen.clone(), m.seq, k))).collect();
        members.sort();
        for (_, _, k) in members {
            self.reconcile_member(&k)?;
        }
        for key in spread {
            self.spread_parts(&key);
        }
        Ok(())
    }

    /// A made CEN or CIN gets a part, PREPARING, for each host it is now
    /// present on that announced a VTEP address and has none yet (hosts
    /// that left report their part gone themselves).
    fn spread_parts(&mut self, key: &EntityKey) {
        let (hosts, parts, made) = match key {
            EntityKey::Cen(id) => match self.cen(id) {
                Some(c) => (self.presence(id), &c.parts, c.made),
                None => return,
            },
            EntityKey::Cin(id) => match self.cin(id) {
                Some(c) => (self.cin_presence(c), &c.parts, c.made),
                None => return,
            },
            _ => return,
        };
        let new: Vec<String> = hosts
            .into_iter()
            .filter(|h| !parts.contains_key(*h) && self.host(h).is_some_and(|r| r.vtep.is_some()))
            .map(str::to_string)
            .collect();
        if !made || new.is_empty() {
            return;
        }
        let add = |parts: &mut BTreeMap<String, Realization>, whole: &mut Realization| {
            parts.extend(new.into_iter().map(|h| (h, Realization { status: Status::Preparing, message: None })));
            *whole = Realization::of_parts(parts).unwrap_or_default();
        };
        match self.get(key).cloned() {
            Some(Record::Cen(mut c)) => {
                add(&mut c.parts, &mut c.realization);
                self.put(Record::Cen(c));
            }
            Some(Record::Cin(mut c)) => {
                add(&mut c.parts, &mut c.realization);
                self.put(Record::Cin(c));
            }
            _ => {}
        }
    }

    /// Takes CIN `cin`'s addresses off the members of `cen`.
    fn strip_cin(&mut self, cin: &str, cen: &str) {
        let holding: Vec<MemberRec> = self.members(cen).filter(|m| m.addresses.contains_key(cin)).cloned().collect();
        for mut m in holding {
            m.addresses.remove(cin);
            self.put(Record::Member(m));
        }
    }

    /// Whether `ip` is a valid address of a member in this slice, held by
    /// it alone.
    fn address_ok(&self, cin: &str, slice: &Slice, ip: Ipv4Addr) -> bool {
        slice.member_offset(ip).is_some() && !self.address_shared(cin, ip)
    }

    /// One membership's addresses: one per CIN over its CEN; a valid one
    /// stays, a missing or invalid one gets the lowest free address of the
    /// slice.
    fn reconcile_member(&mut self, k: &MemberKey) -> Result<()> {
        let Some(mut m) = self.member(k).cloned() else { return Ok(()) };
        let cins: Vec<(String, Slice)> =
            self.cins_over(&k.cen).into_iter().filter_map(|c| Some((c.id.clone(), self.slice(c, &k.cen)?))).collect();
        let mut changed = false;
        let before = m.addresses.len();
        m.addresses.retain(|cin, _| cins.iter().any(|(c, _)| c == cin));
        if m.addresses.len() != before {
            changed = true;
            self.put(Record::Member(m.clone()));
        }
        for (cin, slice) in cins {
            if m.addresses.get(&cin).is_some_and(|ip| self.address_ok(&cin, &slice, *ip)) {
                continue;
            }
            if m.addresses.remove(&cin).is_some() {
                self.put(Record::Member(m.clone()));
            }
            let ip = self.free_address(&cin, &slice, None).ok_or_else(|| {
                ModelError::conflict(format!(
                    "CIN '{cin}' has no free address left in {} for container '{}' on CEN '{}'",
                    slice.to_cidr(),
                    k.container,
                    k.cen
                ))
            })?;
            m.addresses.insert(cin, ip);
            changed = true;
            self.put(Record::Member(m.clone()));
        }
        let _ = changed;
        Ok(())
    }

    /// Gives every member interface of a CIN an address: existing addresses
    /// that are still valid stay, freed ones are reused lowest first, new
    /// members get the lowest free address of their CEN's slice in join order.
    fn reconcile_cin(&mut self, id: &str) -> Result<()> {
        let Some(cin) = self.cin(id).cloned() else { return Ok(()) };
        for cen_id in &cin.cens {
            let Some(slice) = self.slice(&cin, cen_id) else { continue };
            let mut pending = Vec::new();
            for m in self.members_in_order(cen_id) {
                match m.addresses.get(id) {
                    Some(ip) if self.address_ok(id, &slice, *ip) => {}
                    _ => pending.push(m.clone()),
                }
            }
            // Free the invalid ones first, so they can be handed out again.
            for m in &mut pending {
                if m.addresses.remove(id).is_some() {
                    self.put(Record::Member(m.clone()));
                }
            }
            let mut cursor = None;
            for mut m in pending {
                let ip = self.free_address(id, &slice, cursor).ok_or_else(|| {
                    ModelError::conflict(format!(
                        "CIN '{id}' has no free address left in {} for container '{}' on CEN '{cen_id}'",
                        slice.to_cidr(),
                        m.container
                    ))
                })?;
                cursor = Some(u32::from(ip));
                m.addresses.insert(id.to_string(), ip);
                self.put(Record::Member(m));
            }
        }
        Ok(())
    }
}
