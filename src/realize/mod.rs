//! Realization on Linux: desired state → plan (pure diff) → netlink apply.
//!
//! - [`Desired`] is what the model wants (plain data, see `desired.rs`).
//! - [`Observed`] is what is in the kernel under our prefix, filled at
//!   adoption ([`Realizer::new`]) and kept current by [`Realizer::apply`].
//! - [`plan()`] diffs the two into [`Op`]s, grouped in phases; the ops of a
//!   phase are pipelined (many netlink requests in flight).
//! - [`cleanup`] removes everything under a prefix.
//!
//! Kernel rules followed here (see DESIGN.md): namespaces are created on
//! dedicated threads, never by setns on a tokio worker; veth peers are
//! created directly in their namespaces in one RTM_NEWLINK and attached to
//! their bridge at creation; teardown deletes namespaces and link groups.

pub mod desired;
pub mod ledger;
mod naming;
mod netns;
mod nl;
pub mod observed;
pub mod plan;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

pub use desired::{Addr, CenNet, ContainerNet, Desired, Member, NetnsRef, Route, Vxlan, Wiring};
pub use naming::{bridge_name, cen_group, fabric_netns_name, member_mac, netns_name, veth_fabric_name, vxlan_name};
pub use netns::NETNS_DIR;
pub use observed::{LinkKind, LinkState, NsId, NsState, Observed, RouteState};
pub use plan::{plan, plan_scoped, GroupIndex, Op, Plan, Scope, Step, VethEnd};

use nl::NsHandle;

/// Where the host side (bridges, bridge-side veth ends) lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FabricMode {
    /// In the leviathan-owned namespace `<prefix>fabric` (default).
    #[default]
    Netns,
    /// In the host's own namespace (the legacy look).
    Host,
}

/// Realizer configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Carried by everything created (namespace files, fabric link names).
    /// At most 9 characters of `[A-Za-z0-9._-]`.
    pub prefix: String,
    pub fabric: FabricMode,
    /// This host's underlay, where CENs spanning hosts send their VXLAN
    /// traffic; `None` on a single host (a CEN with members elsewhere then
    /// fails with a message saying so).
    #[serde(default)]
    pub underlay: Option<Underlay>,
}

impl Default for Config {
    fn default() -> Self {
        Config { prefix: "lev-".into(), fabric: FabricMode::Netns, underlay: None }
    }
}

/// The interface holding this host's VTEP address, in the namespace the
/// server runs in (where VXLAN sockets are opened).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Underlay {
    /// The VTEP address (VXLAN's local address).
    pub local: std::net::Ipv4Addr,
    /// The interface's index.
    pub ifindex: u32,
    /// The interface's MTU: VXLAN costs 50 bytes of it, so members of
    /// CENs get `mtu - 50`.
    pub mtu: u32,
}

/// UDP port of VXLAN (IANA).
pub const VXLAN_PORT: u16 = 4789;
/// Bytes VXLAN over IPv4 adds to a frame (outer IPv4, UDP, VXLAN and
/// Ethernet headers).
pub const VXLAN_OVERHEAD: u32 = 50;

impl Underlay {
    /// Finds the interface holding `local` in the calling thread's network
    /// namespace.
    pub async fn find(local: std::net::Ipv4Addr) -> Result<Underlay, String> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|e| format!("opening netlink: {e}"))?;
        let task = tokio::spawn(conn);
        let r = nl::underlay(&handle, local).await;
        task.abort();
        let (ifindex, mtu) = r?.ok_or_else(|| {
            format!("no interface in this network namespace has the address {local} (give the address of this host's underlay interface)")
        })?;
        if mtu <= VXLAN_OVERHEAD + 68 {
            return Err(format!(
                "the underlay interface's MTU ({mtu}) leaves no room for VXLAN's {VXLAN_OVERHEAD} bytes"
            ));
        }
        Ok(Underlay { local, ifindex, mtu })
    }

    /// The MTU of member interfaces and VXLAN devices.
    pub fn member_mtu(&self) -> u32 {
        self.mtu - VXLAN_OVERHEAD
    }
}

/// Errors that stop the realizer as a whole (per-CEN errors go in the
/// [`ApplyReport`]).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RealizeError {
    #[error("invalid realizer configuration: {0}")]
    Config(String),
    #[error("{0}")]
    System(String),
}

/// Outcome of one [`Realizer::apply`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ApplyReport {
    /// Every desired CEN: Ok, or the first error met for it.
    pub cens: BTreeMap<String, Result<(), String>>,
    /// Every CIN mentioned by the desired state: Ok, or the first error.
    pub cins: BTreeMap<String, Result<(), String>>,
    /// Errors while removing objects no CEN wants any more.
    pub teardown_errors: Vec<String>,
    /// Number of kernel operations planned.
    pub steps: usize,
    /// Members of the CENs applied that were left out because their bound
    /// namespace is unavailable (the workload is gone): container key ->
    /// why. Their CENs are wired without them.
    #[serde(default)]
    pub unavailable: BTreeMap<String, String>,
}

impl ApplyReport {
    pub fn is_ok(&self) -> bool {
        self.cens.values().all(Result::is_ok)
            && self.cins.values().all(Result::is_ok)
            && self.teardown_errors.is_empty()
    }

    /// All errors, one line each.
    pub fn errors(&self) -> Vec<String> {
        let mut v: Vec<String> =
            self.cens.iter().filter_map(|(k, r)| r.as_ref().err().map(|e| format!("CEN {k}: {e}"))).collect();
        v.extend(self.cins.iter().filter_map(|(k, r)| r.as_ref().err().map(|e| format!("CIN {k}: {e}"))));
        v.extend(self.teardown_errors.iter().cloned());
        v
    }
}

/// A link by namespace and name.
type LinkName = (NsId, String);

/// Progress callback: (steps done, steps total).
pub type Progress<'a> = &'a (dyn Fn(usize, usize) + Send + Sync);

/// Requests in flight at once (per apply phase).
const IN_FLIGHT: usize = 64;

/// Keeps the kernel in line with a [`Desired`] state, under one prefix.
pub struct Realizer {
    cfg: Config,
    observed: Observed,
    handles: BTreeMap<NsId, NsHandle>,
    /// Namespaces whose observed state may be stale (after an error).
    dirty: BTreeSet<NsId>,
    /// Desired CENs by link group, as of the last apply.
    groups: GroupIndex,
    /// A pidfd watch per bound namespace of a process we hold open.
    watches: BTreeMap<NsId, watch::Watch>,
    events_tx: tokio::sync::mpsc::UnboundedSender<watch::Event>,
    events_rx: Option<tokio::sync::mpsc::UnboundedReceiver<watch::Event>>,
    /// A link/address notification listener per fabric, host and bound
    /// namespace (see `watch.rs` for why not per managed namespace).
    listeners: BTreeMap<NsId, watch::Watch>,
    /// Link deletions awaited from the listeners.
    departures: watch::Departures,
    /// Namespaces opened since the last apply that want a listener.
    listen_pending: BTreeSet<NsId>,
    /// What this instance made; without one, everything under the prefix
    /// counts as its own (tests and tools that own their prefix outright).
    ledger: Option<std::sync::Arc<ledger::Ledger>>,
    /// Objects under the prefix that the ledger does not hold, as of the
    /// last full look at the kernel: reported, never touched.
    foreign: BTreeSet<String>,
    /// A netlink connection in the server's own namespace, where VXLAN
    /// devices are created from (with an underlay only).
    underlay: Option<(rtnetlink::Handle, tokio::task::JoinHandle<()>)>,
}

impl Drop for Realizer {
    fn drop(&mut self) {
        if let Some((_, task)) = &self.underlay {
            task.abort();
        }
    }
}

fn check_config(cfg: &Config) -> Result<(), RealizeError> {
    if !naming::valid_prefix(&cfg.prefix) {
        return Err(RealizeError::Config(format!("prefix {:?} must be {}", cfg.prefix, naming::PREFIX_RULE)));
    }
    Ok(())
}

/// Checks a prefix before anything is done with it.
pub fn check_prefix(prefix: &str) -> Result<(), RealizeError> {
    check_config(&Config { prefix: prefix.to_string(), fabric: FabricMode::Netns, underlay: None })
}

fn ns_file(prefix: &str, ns: &NsId) -> Option<String> {
    match ns {
        NsId::Fabric => Some(naming::fabric_netns_name(prefix)),
        NsId::Managed(id) => Some(naming::netns_name(prefix, id)),
        NsId::Host | NsId::Path(_) => None,
    }
}

/// What a namespace is to the netns helpers.
fn role(ns: &NsId) -> netns::Role {
    match ns {
        NsId::Fabric => netns::Role::Fabric,
        NsId::Host => netns::Role::HostFabric,
        NsId::Managed(_) | NsId::Path(_) => netns::Role::Container,
    }
}

fn ns_path(prefix: &str, ns: &NsId) -> PathBuf {
    match ns {
        NsId::Host => PathBuf::from("/proc/self/ns/net"),
        NsId::Path(p) => PathBuf::from(p),
        other => netns::netns_path(&ns_file(prefix, other).unwrap_or_default()),
    }
}

/// (device, inode) of what a namespace path leads to now; `None` when it
/// leads nowhere (the process exited, the file was removed).
fn workload_ident(path: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// (device, inode) of an open namespace.
fn fd_ident(fd: &std::os::fd::OwnedFd) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let f = std::fs::File::from(fd.try_clone().ok()?);
    f.metadata().ok().map(|m| (m.dev(), m.ino()))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.map_err(|e| format!("worker failed: {e}"))
}

/// Namespaces made per call to the namespace threads (see `run_phase`).
const CREATE_CHUNK: usize = 256;

/// What a finished step changes in the observed state.
enum Effect {
    None,
    /// A namespace made: our handle on it, and its forwarding (fabric).
    Opened(NsId, Box<NsHandle>, Option<bool>),
    NsGone(NsId),
    LinkGone(NsId, u32),
    GroupGone(NsId, u32),
    Up(NsId, String),
    Forwarding(NsId, bool),
    Addr(NsId, u32, std::net::Ipv4Addr, u8),
    AddrGone(NsId, u32, std::net::Ipv4Addr, u8),
    Route(NsId, RouteState),
    RouteGone(NsId, RouteState),
    Fdb(NsId, u32, std::net::Ipv4Addr, bool),
    Neigh(NsId, u32, std::net::Ipv4Addr, Option<[u8; 6]>),
}

impl Realizer {
    /// Adopt what exists under the prefix: open every namespace we own
    /// (and the host's in host mode) and observe its links, addresses and
    /// routes, so the next [`apply`](Self::apply) repairs drift both ways.
    pub async fn new(cfg: Config) -> Result<Realizer, RealizeError> {
        check_config(&cfg)?;
        let mut r = Realizer::blank(cfg, None)?;
        r.adopt().await?;
        Ok(r)
    }

    fn blank(cfg: Config, ledger: Option<std::sync::Arc<ledger::Ledger>>) -> Result<Realizer, RealizeError> {
        let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
        let underlay = match cfg.underlay {
            Some(_) => {
                let (conn, handle, _) = rtnetlink::new_connection()
                    .map_err(|e| RealizeError::System(format!("opening netlink in the underlay's namespace: {e}")))?;
                Some((handle, tokio::spawn(conn)))
            }
            None => None,
        };
        Ok(Realizer {
            cfg,
            observed: Observed::default(),
            handles: BTreeMap::new(),
            dirty: BTreeSet::new(),
            groups: GroupIndex::default(),
            watches: BTreeMap::new(),
            events_tx,
            events_rx: Some(events_rx),
            listeners: BTreeMap::new(),
            departures: watch::Departures::default(),
            listen_pending: BTreeSet::new(),
            ledger,
            foreign: BTreeSet::new(),
            underlay,
        })
    }

    /// [`Realizer::new`] for a server: only what `ledger` records is
    /// adopted, changed or deleted; the rest under the prefix is foreign.
    pub async fn with_ledger(cfg: Config, ledger: ledger::Ledger) -> Result<Realizer, RealizeError> {
        check_config(&cfg)?;
        let mut r = Realizer::blank(cfg, Some(std::sync::Arc::new(ledger)))?;
        r.adopt().await?;
        Ok(r)
    }

    /// Objects under the prefix that are not this instance's (as of the
    /// last full look at the kernel).
    pub fn foreign(&self) -> Vec<String> {
        self.foreign.iter().cloned().collect()
    }

    /// What this instance records as its own, when it keeps a ledger.
    pub fn ledger(&self) -> Option<&ledger::Ledger> {
        self.ledger.as_deref()
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// What the realizer notices outside applies (a bound workload's
    /// process exited): the driver takes this once and listens.
    pub fn take_events(&mut self) -> Option<tokio::sync::mpsc::UnboundedReceiver<watch::Event>> {
        self.events_rx.take()
    }

    /// What the realizer believes is in the kernel.
    pub fn observed(&self) -> &Observed {
        &self.observed
    }

    /// Forget everything and observe the kernel again (repairs runtime drift
    /// on the next apply).
    pub async fn refresh(&mut self) -> Result<(), RealizeError> {
        let paths: Vec<NsId> = self.handles.keys().filter(|n| matches!(n, NsId::Path(_))).cloned().collect();
        self.handles.retain(|k, _| matches!(k, NsId::Path(_)));
        self.listeners.retain(|k, _| matches!(k, NsId::Path(_)));
        self.observed.retain_ns(|k| matches!(k, NsId::Path(_)));
        self.adopt().await?;
        self.dirty.extend(paths);
        let dirty = std::mem::take(&mut self.dirty);
        self.observe_set(dirty).await;
        self.observed.pair_peers();
        Ok(())
    }

    async fn adopt(&mut self) -> Result<(), RealizeError> {
        let prefix = self.cfg.prefix.clone();
        let fabric_file = naming::fabric_netns_name(&prefix);
        let names = {
            let p = prefix.clone();
            blocking(move || {
                netns::prepare_run_netns()?;
                netns::list_named(&p)
            })
            .await
            .and_then(|r| r)
            .map_err(RealizeError::System)?
        };
        self.foreign.clear();
        let mut ids: Vec<NsId> = Vec::new();
        for n in &names {
            if self.ledger.as_ref().is_some_and(|l| !l.contains(n, "")) {
                tracing::warn!(namespace = %n, "a namespace under the prefix that this leviathan did not make: left alone");
                self.foreign.insert(format!("namespace {n}"));
                continue;
            }
            ids.push(if *n == fabric_file { NsId::Fabric } else { NsId::Managed(n[prefix.len()..].to_string()) });
        }
        // Recorded namespaces that are gone (deleted by hand, or a crash
        // between the record and the create): forget them.
        if let Some(l) = &self.ledger {
            let present: BTreeSet<&String> = names.iter().collect();
            let gone: Vec<ledger::Entry> = l
                .namespaces()
                .into_iter()
                .filter(|n| !n.starts_with("path:") && n != "host" && !present.contains(n))
                .map(|n| (n, String::new()))
                .collect();
            if let Err(e) = l.forget(&gone) {
                tracing::warn!(error = %e, "forgetting namespaces that are gone");
            }
        }
        if self.cfg.fabric == FabricMode::Host {
            ids.push(NsId::Host);
        }
        let mut stale = Vec::new();
        // In chunks, each turned into handles at once (a managed
        // namespace's fd is closed there): never two descriptors for each
        // of thousands of namespaces.
        for chunk in ids.chunks(CREATE_CHUNK) {
            let paths: Vec<(PathBuf, netns::Role)> = chunk.iter().map(|n| (ns_path(&prefix, n), role(n))).collect();
            let opened = blocking(move || netns::open_paths(paths)).await.map_err(RealizeError::System)?;
            for (id, o) in chunk.iter().zip(opened) {
                match o {
                    Ok(o) => {
                        let fwd = o.forwarding;
                        let h = NsHandle::new(o, ns_path(&prefix, id), !matches!(id, NsId::Managed(_)));
                        self.handles.insert(id.clone(), h);
                        self.listen_pending.insert(id.clone());
                        self.observed.insert_ns(id.clone(), NsState::new(vec![], vec![], fwd));
                        self.dirty.insert(id.clone());
                    }
                    Err(e) if *id == NsId::Host => return Err(RealizeError::System(e)),
                    // A file under our prefix that is no namespace: the
                    // remains of an interrupted create. Remove it.
                    Err(_) => stale.extend(ns_file(&prefix, id)),
                }
            }
        }
        if !stale.is_empty() {
            let _ = blocking(move || netns::delete_named_many(stale)).await;
        }
        let dirty = std::mem::take(&mut self.dirty);
        self.observe_set(dirty).await;
        self.observed.pair_peers();
        Ok(())
    }

    /// In a namespace that is not ours (the host's, or one bound by path),
    /// a link is ours only if the ledger records it; the others that carry
    /// our prefix or group are someone else's, reported and left alone.
    fn own(&mut self, ns: &NsId, st: &mut NsState) {
        let Some(l) = &self.ledger else { return };
        if !matches!(ns, NsId::Host | NsId::Path(_)) {
            return;
        }
        let key = ledger::ns_key(ns, &self.cfg.prefix);
        let strangers: Vec<(u32, String)> =
            st.links().filter(|x| x.ours && !l.contains(&key, &x.name)).map(|x| (x.index, x.name.clone())).collect();
        for (idx, name) in strangers {
            if let Some(x) = st.link_mut(idx) {
                x.ours = false;
            }
            tracing::warn!(link = %name, "{ns}: a link carrying the prefix that this leviathan did not make: left alone");
            self.foreign.insert(format!("link {name} in {ns}"));
        }
    }

    /// Dump the given namespaces again (links, addresses, routes).
    async fn observe_set(&mut self, set: BTreeSet<NsId>) {
        let prefix = self.cfg.prefix.clone();
        let futs: Vec<_> = set
            .iter()
            .filter_map(|ns| {
                let h = self.handles.get(ns)?;
                let fwd = self.observed.ns(ns).and_then(|s| s.forwarding);
                let prefix = prefix.clone();
                Some(async move { (ns.clone(), nl::observe(&h.handle, &prefix, ns, fwd).await) })
            })
            .collect();
        for (ns, r) in nl::bounded(futs, IN_FLIGHT).await {
            match r {
                Ok(mut st) => {
                    self.own(&ns, &mut st);
                    self.observed.insert_ns(ns, st);
                }
                Err(e) => {
                    tracing::warn!("observing {ns}: {e}");
                    self.dirty.insert(ns);
                }
            }
        }
    }

    /// Learns links just created by asking for each by name (one
    /// RTM_GETLINK each, never a dump of the namespace); `pairs` names the
    /// two ends of each veth created, so each knows where its peer is.
    async fn learn(&mut self, links: BTreeSet<LinkName>, pairs: &[(LinkName, LinkName)]) {
        let prefix = self.cfg.prefix.clone();
        let futs: Vec<_> = links
            .iter()
            .filter_map(|(ns, name)| {
                let h = self.handles.get(ns)?;
                let prefix = prefix.clone();
                Some(async move { (ns.clone(), name.clone(), nl::get_link(&h.handle, &prefix, ns, name).await) })
            })
            .collect();
        for (ns, name, r) in nl::bounded(futs, IN_FLIGHT).await {
            match r {
                Ok(Some(l)) => self.observed.insert_link(&ns, l),
                Ok(None) => tracing::warn!("{name} in {ns} was created but is not there"),
                Err(e) => {
                    tracing::warn!("{e}");
                    self.dirty.insert(ns);
                }
            }
        }
        for ((an, a), (bn, b)) in pairs {
            let ia = self.observed.link(an, a).map(|l| (l.index, l.peer));
            let ib = self.observed.link(bn, b).map(|l| (l.index, l.peer));
            if let (Some((ia, pa)), Some((ib, pb))) = (ia, ib) {
                if pa == Some(ib) && pb == Some(ia) {
                    if let Some(l) = self.observed.ns_mut(an).and_then(|s| s.link_mut(ia)) {
                        l.peer_ns = Some(bn.clone());
                    }
                    if let Some(l) = self.observed.ns_mut(bn).and_then(|s| s.link_mut(ib)) {
                        l.peer_ns = Some(an.clone());
                    }
                }
            }
        }
    }

    /// Takes in the `a` end of each veth just made as the kernel's answer
    /// about its peer `b` tells it (IFLA_LINK there is `a`'s ifindex) and as
    /// it was made (name, group, up, attached to its bridge): one
    /// RTM_GETLINK per pair instead of two. Every message about a veth end
    /// in the fabric costs the kernel a walk of the fabric's namespace ids
    /// (one per container namespace), so this is one walk fewer per join.
    /// The ends that cannot be told so are returned, with their pairs, to
    /// be asked for.
    fn take_in_told(&mut self, told: Vec<(VethEnd, LinkName, u32)>) -> (BTreeSet<LinkName>, Vec<(LinkName, LinkName)>) {
        let prefix = self.cfg.prefix.clone();
        let mut untold = BTreeSet::new();
        let mut pairs = Vec::new();
        for (a, (bns, bname), group) in told {
            let b = self.observed.link(&bns, &bname).map(|l| (l.index, l.peer));
            let master = match &a.master {
                Some(br) => self.observed.link(&a.ns, br).map(|l| Some(l.index)),
                None => Some(None),
            };
            let (Some((bi, Some(ai))), Some(master)) = (b, master) else {
                untold.insert((a.ns.clone(), a.name.clone()));
                pairs.push(((a.ns.clone(), a.name.clone()), (bns, bname)));
                continue;
            };
            // Whose it is, by the rule `nl::parse_link` applies to a veth.
            let ours = match &a.ns {
                NsId::Managed(_) | NsId::Fabric => true,
                NsId::Host => a.name.starts_with(&prefix),
                NsId::Path(_) => naming::is_our_group(&prefix, group),
            };
            let link = LinkState {
                index: ai,
                name: a.name.clone(),
                kind: LinkKind::Veth,
                group,
                master,
                peer: Some(bi),
                peer_ns: Some(bns.clone()),
                up: true,
                ours,
                addresses: Vec::new(),
                // As asked at creation (a veth's default otherwise).
                mtu: a.mtu.unwrap_or(1500),
                ..Default::default()
            };
            self.observed.insert_link(&a.ns, link);
            if let Some(l) = self.observed.ns_mut(&bns).and_then(|s| s.link_mut(bi)) {
                l.peer_ns = Some(a.ns.clone());
            }
        }
        (untold, pairs)
    }

    /// Make the kernel match `desired`, looking at everything (adoption,
    /// reconcile). Never fails as a whole: the report says, per CEN and per
    /// CIN, what went wrong; the next apply converges.
    pub async fn apply(&mut self, desired: &Desired, progress: Option<Progress<'_>>) -> ApplyReport {
        let index = desired::Index::of(desired);
        self.groups = GroupIndex::of(desired, &self.cfg.prefix);
        self.apply_with(desired, &index, Scope::All, progress).await
    }

    /// Make the kernel match `desired` for the given CENs only (those a
    /// change touched): their members' namespaces and their links. Cost
    /// follows the size of those CENs, not of the topology. `desired` must
    /// be kept with [`Desired::put_cen`] / [`Desired::remove_cen`].
    ///
    /// `released` names the namespaces whose containers no desired CEN uses
    /// any more (from [`Desired::take_released`]): they go.
    pub async fn apply_cens(
        &mut self,
        desired: &Desired,
        cens: &BTreeSet<String>,
        released: &BTreeSet<NsId>,
        progress: Option<Progress<'_>>,
    ) -> ApplyReport {
        for cen in cens {
            self.groups.set(&self.cfg.prefix, cen, desired.cens.contains_key(cen));
        }
        self.apply_with(desired, desired.index(), Scope::Cens(cens, released), progress).await
    }

    /// Opens the namespaces bound by path that the scope needs and looks at
    /// them again (they are not ours; anything may have changed there).
    async fn open_paths(&mut self, desired: &Desired, scope: Scope<'_>) -> BTreeSet<NsId> {
        let prefix = self.cfg.prefix.clone();
        let keys: Vec<&String> = match scope {
            Scope::All => desired.containers.keys().collect(),
            Scope::Cens(set, _) => set
                .iter()
                .filter_map(|c| desired.cens.get(c))
                .flat_map(|c| c.members.iter().map(|m| &m.container))
                .collect(),
        };
        // Each bound namespace with the identity it had when bound.
        let mut idents: BTreeMap<NsId, Option<(u64, u64)>> = BTreeMap::new();
        for c in keys.into_iter().filter_map(|k| desired.containers.get(k)) {
            if let NetnsRef::Path(p) = &c.netns {
                if !p.is_empty() {
                    let e = idents.entry(NsId::Path(p.clone())).or_default();
                    *e = e.or(c.ident);
                }
            }
        }
        let want_paths: BTreeSet<NsId> = idents.keys().cloned().collect();
        match scope {
            Scope::All => self.observed.unavailable.clear(),
            Scope::Cens(..) => self.observed.unavailable.retain(|k, _| !want_paths.contains(k)),
        }
        // Is each still the workload that was bound? A path that no longer
        // exists, or leads to another namespace than the one we hold or the
        // one bound, means the workload is gone: let go of what we hold
        // (the namespace, and with it our interfaces there, can then be
        // freed) and report it, without opening a stranger.
        for (ns, want) in &idents {
            let NsId::Path(p) = ns else { continue };
            let now = workload_ident(p);
            let held = self.handles.get(ns).and_then(|h| h.kept_fd()).and_then(fd_ident);
            let gone = match (now, want) {
                (None, _) => Some(format!("the workload is gone: {p} no longer exists")),
                (Some(now), Some(want)) if now != *want => Some(format!(
                    "the workload is gone: {p} is now another namespace (inode {}, bound to inode {})",
                    now.1, want.1
                )),
                _ => None,
            };
            if let Some(why) = gone {
                self.forget_path(ns);
                self.observed.unavailable.insert(ns.clone(), why);
            } else if held.is_some() && held != now {
                // Bound again to what the path leads to now: open that.
                self.forget_path(ns);
            }
        }
        let new_paths: Vec<NsId> = want_paths
            .iter()
            .filter(|p| !self.handles.contains_key(*p) && !self.observed.unavailable.contains_key(*p))
            .cloned()
            .collect();
        if !new_paths.is_empty() {
            let paths: Vec<(PathBuf, netns::Role)> =
                new_paths.iter().map(|n| (ns_path(&prefix, n), netns::Role::Container)).collect();
            match blocking(move || netns::open_paths(paths)).await {
                Ok(results) => {
                    for (ns, r) in new_paths.iter().zip(results) {
                        match r {
                            Ok(o) => {
                                self.handles.insert(ns.clone(), NsHandle::new(o, ns_path(&prefix, ns), true));
                                self.listen_pending.insert(ns.clone());
                                if let Some(w) = watch::watch_pid(ns, self.events_tx.clone()) {
                                    self.watches.insert(ns.clone(), w);
                                }
                            }
                            Err(e) => {
                                self.observed.unavailable.insert(ns.clone(), e);
                            }
                        }
                    }
                }
                Err(e) => {
                    for ns in &new_paths {
                        self.observed.unavailable.insert(ns.clone(), e.clone());
                    }
                }
            }
        }
        let mut again: BTreeSet<NsId> = std::mem::take(&mut self.dirty);
        again.extend(want_paths.iter().filter(|p| self.handles.contains_key(*p)).cloned());
        let full = matches!(scope, Scope::All);
        self.observe_set(again.clone()).await;
        for ns in &want_paths {
            if self.handles.contains_key(ns) && self.observed.ns(ns).is_none() {
                self.observed.unavailable.entry(ns.clone()).or_insert_with(|| "could not be observed".into());
            }
        }
        if full {
            self.observed.pair_peers();
        } else {
            for ns in &again {
                self.pair_ns(ns);
            }
        }
        want_paths
    }

    /// Closes what we hold on a namespace: its handle, its watches.
    fn close(&mut self, ns: &NsId) {
        self.handles.remove(ns);
        self.watches.remove(ns);
        self.listeners.remove(ns);
        self.listen_pending.remove(ns);
    }

    /// Starts listening to link and address notifications in the fabric,
    /// host and bound namespaces opened since the last call (managed
    /// container namespaces are not listened to: see `watch.rs`).
    async fn start_listeners(&mut self) {
        let pending: Vec<NsId> = std::mem::take(&mut self.listen_pending)
            .into_iter()
            .filter(|ns| !matches!(ns, NsId::Managed(_)) && !self.listeners.contains_key(ns))
            .collect();
        let mut want = Vec::new();
        let mut fds = Vec::new();
        for ns in pending {
            if let Some(fd) = self.handles.get(&ns).and_then(|h| h.kept_fd()).and_then(|f| f.try_clone().ok()) {
                want.push(ns);
                fds.push(fd);
            }
        }
        if want.is_empty() {
            return;
        }
        let Ok(sockets) = blocking(move || netns::open_listeners(fds)).await else { return };
        for (ns, s) in want.into_iter().zip(sockets) {
            match s {
                Ok(s) => {
                    let w = watch::listen(
                        ns.clone(),
                        s,
                        self.cfg.prefix.clone(),
                        self.events_tx.clone(),
                        self.departures.clone(),
                    );
                    self.listeners.insert(ns, w);
                }
                Err(e) => tracing::warn!("not listening to {ns}: {e}; the reconcile repairs drift there"),
            }
        }
    }

    /// Takes in what the listeners saw, where it is news (our own deletes
    /// were already taken in when they were made), and returns the CENs
    /// whose interfaces it concerns: a scoped apply of those repairs it.
    pub fn absorb_events(&mut self, events: &[watch::Event]) -> BTreeSet<String> {
        let mut groups = BTreeSet::new();
        for e in events {
            match e {
                watch::Event::Gone(_) => {}
                watch::Event::Overrun(ns) => {
                    // Looked at again on the next apply.
                    self.dirty.insert(ns.clone());
                }
                watch::Event::LinkGone { ns, index } => {
                    let Some(l) = self.observed.ns(ns).and_then(|s| s.link_by_index(*index)) else { continue };
                    groups.insert(l.group);
                    let (peer, peer_ns) = (l.peer, l.peer_ns.clone());
                    self.observed.remove_link(ns, *index);
                    // A veth dies as a pair: its peer too (it may be in a
                    // namespace nobody listens to).
                    if let (Some(p), Some(pns)) = (peer, peer_ns) {
                        self.observed.remove_link(&pns, p);
                    }
                }
                watch::Event::AddrGone { ns, index, ip, prefix_len } => {
                    let Some(l) = self.observed.ns_mut(ns).and_then(|s| s.link_mut(*index)) else { continue };
                    if l.addresses.contains(&(*ip, *prefix_len)) {
                        l.addresses.retain(|a| *a != (*ip, *prefix_len));
                        groups.insert(l.group);
                    }
                }
            }
        }
        groups.iter().flat_map(|g| self.groups.sharing(*g).cloned().collect::<Vec<_>>()).collect()
    }

    /// Lets go of a bound namespace: its handle (so the kernel may free
    /// it), what was observed there, and the peers we knew of.
    fn forget_path(&mut self, ns: &NsId) {
        self.close(ns);
        self.observed.drop_peers_of(ns);
        self.observed.remove_ns(ns);
        self.dirty.remove(ns);
    }

    /// Works out where the peers of one namespace's veths are, through the
    /// links of the same group (a re-observed namespace's links do not say).
    fn pair_ns(&mut self, ns: &NsId) {
        let links: Vec<(u32, u32, u32)> = self
            .observed
            .ns(ns)
            .map(|s| s.links().filter_map(|l| Some((l.index, l.peer?, l.group))).collect())
            .unwrap_or_default();
        for (idx, peer, group) in links {
            let found = self.observed.in_group(group).find(|(pn, pi)| {
                pn != ns
                    && *pi == peer
                    && self.observed.ns(pn).and_then(|s| s.link_by_index(*pi)).is_some_and(|l| l.peer == Some(idx))
            });
            let Some((pn, pi)) = found.cloned() else { continue };
            if let Some(l) = self.observed.ns_mut(ns).and_then(|s| s.link_mut(idx)) {
                l.peer_ns = Some(pn.clone());
            }
            if let Some(l) = self.observed.ns_mut(&pn).and_then(|s| s.link_mut(pi)) {
                l.peer_ns = Some(ns.clone());
            }
        }
    }

    async fn apply_with(
        &mut self,
        desired: &Desired,
        index: &desired::Index,
        scope: Scope<'_>,
        progress: Option<Progress<'_>>,
    ) -> ApplyReport {
        let prefix = self.cfg.prefix.clone();
        let mut report = ApplyReport::default();
        let want_paths = self.open_paths(desired, scope).await;

        let plan = plan::plan_scoped(&self.observed, desired, index, &self.cfg, scope, &self.groups);
        report.steps = plan.steps.len();
        report.unavailable = plan.unavailable.clone();
        // What is about to be made is recorded first, durably: a crash
        // after this point leaves nothing unaccounted for.
        if let Err(e) = self.record(&plan).await {
            tracing::error!(error = %e, "not realizing: ownership could not be recorded");
            for c in &plan.cens {
                report.cens.insert(c.clone(), Err(format!("could not record what would be made: {e}")));
            }
            return report;
        }
        let gone_names = self.names_of_doomed_groups(&plan);
        let total = plan.steps.len();
        let done = AtomicUsize::new(0);
        let tick = || {
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some(p) = progress {
                p(n, total);
            }
        };
        let mut failed_cens: BTreeMap<String, String> = plan.errors.clone();
        let mut failed_cins: BTreeMap<String, String> = BTreeMap::new();

        let mut phases: Vec<Vec<Step>> = vec![Vec::new(); Op::PHASES];
        for s in plan.steps {
            let p = s.op.phase();
            phases[p].push(s);
        }

        for (phase, steps) in phases.into_iter().enumerate() {
            if steps.is_empty() {
                continue;
            }
            // Skip what belongs to CENs that already failed.
            let mut run = Vec::new();
            for s in steps {
                if let Some(c) = s.cens.iter().find(|c| failed_cens.contains_key(*c)) {
                    if let Some(cin) = &s.cin {
                        failed_cins.entry(cin.clone()).or_insert_with(|| format!("CEN {c} is not wired"));
                    }
                    tick();
                } else {
                    run.push(s);
                }
            }
            if phase == 0 {
                // Close our handles on namespaces about to go, so the kernel
                // can free them.
                for s in &run {
                    if let Op::DeleteNetns { ns } = &s.op {
                        self.close(ns);
                    }
                }
            }
            let results = self.run_phase(&run, &tick).await;
            let mut created: BTreeSet<(NsId, String)> = BTreeSet::new();
            let mut told = Vec::new();
            let mut unmade: Vec<ledger::Entry> = Vec::new();
            for (s, r) in run.iter().zip(results) {
                match r {
                    Ok(effect) => {
                        unmade.extend(self.unmade(&s.op, &gone_names));
                        self.absorb(effect)
                    }
                    Err(e) => {
                        let msg = format!("{}: {e}", describe(&s.op, &prefix));
                        tracing::warn!("{msg}");
                        if let Some(ns) = op_ns(&s.op) {
                            self.dirty.insert(ns.clone());
                        }
                        if let Some(cin) = &s.cin {
                            failed_cins.entry(cin.clone()).or_insert(msg);
                        } else if s.cens.is_empty() {
                            report.teardown_errors.push(msg);
                        } else {
                            for c in &s.cens {
                                failed_cens.entry(c.clone()).or_insert_with(|| msg.clone());
                            }
                        }
                        continue;
                    }
                }
                match &s.op {
                    Op::CreateBridge { ns, name, .. } | Op::CreateVxlan { ns, name, .. } => {
                        created.insert((ns.clone(), name.clone()));
                    }
                    Op::CreateVeth { a, b, group } => {
                        created.insert((b.ns.clone(), b.name.clone()));
                        told.push((a.clone(), (b.ns.clone(), b.name.clone()), *group));
                    }
                    _ => {}
                }
            }
            if let (Some(l), false) = (self.ledger.clone(), unmade.is_empty()) {
                match blocking(move || l.forget(&unmade)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) | Err(e) => tracing::warn!(error = %e, "forgetting what was deleted"),
                }
            }
            // Learn the ifindexes of new links (needed for masters,
            // addresses and routes), one link at a time.
            if !created.is_empty() {
                self.learn(created, &[]).await;
            }
            let (untold, pairs) = self.take_in_told(told);
            if !untold.is_empty() {
                self.learn(untold, &pairs).await;
            }
        }

        // Drop path namespaces nobody wants any more (holding them would keep
        // a dead container's namespace alive).
        // (Bound namespaces sort last: a range, not a walk of every handle.)
        let gone: Vec<NsId> = self
            .handles
            .range(NsId::Path(String::new())..)
            .map(|(n, _)| n)
            .filter(|n| matches!(n, NsId::Path(_)) && !want_paths.contains(*n))
            .filter(|n| match scope {
                Scope::All => true,
                Scope::Cens(..) => index.in_ns(n).is_none(),
            })
            .cloned()
            .collect();
        for ns in gone {
            self.close(&ns);
            self.observed.remove_ns(&ns);
            self.dirty.remove(&ns);
        }

        self.start_listeners().await;

        for c in &plan.cens {
            report.cens.insert(c.clone(), failed_cens.get(c).map_or(Ok(()), |e| Err(e.clone())));
        }
        for c in &plan.cins {
            report.cins.insert(c.clone(), failed_cins.get(c).map_or(Ok(()), |e| Err(e.clone())));
        }
        report
    }

    /// Records in the ledger every namespace the plan creates and every
    /// link it creates in a namespace that is not ours.
    async fn record(&self, plan: &Plan) -> Result<(), String> {
        let Some(l) = self.ledger.clone() else { return Ok(()) };
        let prefix = &self.cfg.prefix;
        let foreign_ns = |ns: &NsId| matches!(ns, NsId::Host | NsId::Path(_));
        let mut entries: Vec<ledger::Entry> = Vec::new();
        for s in &plan.steps {
            match &s.op {
                Op::CreateNetns { ns } => entries.push((ledger::ns_key(ns, prefix), String::new())),
                Op::CreateBridge { ns, name, .. } | Op::CreateVxlan { ns, name, .. } if foreign_ns(ns) => {
                    entries.push((ledger::ns_key(ns, prefix), name.clone()))
                }
                Op::CreateVeth { a, b, .. } => {
                    for end in [a, b] {
                        if foreign_ns(&end.ns) {
                            entries.push((ledger::ns_key(&end.ns, prefix), end.name.clone()));
                        }
                    }
                }
                _ => {}
            }
        }
        if entries.is_empty() {
            return Ok(());
        }
        blocking(move || l.record(&entries)).await.and_then(|r| r)
    }

    /// Names of the links a group delete in a namespace that is not ours
    /// takes (to forget them once gone).
    fn names_of_doomed_groups(&self, plan: &Plan) -> BTreeMap<(NsId, u32), Vec<String>> {
        let mut out = BTreeMap::new();
        for s in &plan.steps {
            if let Op::DeleteGroup { ns, group } = &s.op {
                if matches!(ns, NsId::Host | NsId::Path(_)) {
                    let names = self
                        .observed
                        .in_group(*group)
                        .filter(|(n, _)| n == ns)
                        .filter_map(|(n, i)| self.observed.ns(n).and_then(|st| st.link_by_index(*i)))
                        .map(|l| l.name.clone())
                        .collect();
                    out.insert((ns.clone(), *group), names);
                }
            }
        }
        out
    }

    /// What a successful delete takes out of the ledger.
    fn unmade(&self, op: &Op, groups: &BTreeMap<(NsId, u32), Vec<String>>) -> Vec<ledger::Entry> {
        if self.ledger.is_none() {
            return Vec::new();
        }
        let prefix = &self.cfg.prefix;
        match op {
            Op::DeleteNetns { ns } => vec![(ledger::ns_key(ns, prefix), String::new())],
            Op::DeleteLink { ns, name, .. } if matches!(ns, NsId::Host | NsId::Path(_)) => {
                vec![(ledger::ns_key(ns, prefix), name.clone())]
            }
            Op::DeleteGroup { ns, group } => groups
                .get(&(ns.clone(), *group))
                .into_iter()
                .flatten()
                .map(|n| (ledger::ns_key(ns, prefix), n.clone()))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn absorb(&mut self, effect: Effect) {
        let obs = &mut self.observed;
        match effect {
            Effect::None => {}
            Effect::Opened(ns, h, forwarding) => {
                let lo = LinkState::new_loopback();
                obs.insert_ns(ns.clone(), NsState::new(vec![lo], vec![], forwarding));
                self.handles.insert(ns.clone(), *h);
                self.listen_pending.insert(ns);
            }
            Effect::NsGone(ns) => {
                obs.drop_peers_of(&ns);
                obs.remove_ns(&ns);
                self.close(&ns);
            }
            Effect::LinkGone(ns, index) => obs.remove_link(&ns, index),
            Effect::GroupGone(ns, group) => {
                let idxs: Vec<u32> = obs.in_group(group).filter(|(n, _)| *n == ns).map(|(_, i)| *i).collect();
                for i in idxs {
                    obs.remove_link(&ns, i);
                }
            }
            Effect::Up(ns, name) => {
                let idx = obs.link(&ns, &name).map(|l| l.index);
                if let Some(l) = idx.and_then(|i| obs.ns_mut(&ns).and_then(|s| s.link_mut(i))) {
                    l.up = true;
                }
            }
            Effect::Forwarding(ns, on) => {
                if let Some(s) = obs.ns_mut(&ns) {
                    s.forwarding = Some(on);
                }
            }
            Effect::Addr(ns, idx, ip, plen) => {
                if let Some(l) = obs.ns_mut(&ns).and_then(|s| s.link_mut(idx)) {
                    if !l.addresses.contains(&(ip, plen)) {
                        l.addresses.push((ip, plen));
                    }
                }
            }
            Effect::AddrGone(ns, idx, ip, plen) => {
                if let Some(l) = obs.ns_mut(&ns).and_then(|s| s.link_mut(idx)) {
                    l.addresses.retain(|a| *a != (ip, plen));
                }
            }
            Effect::Route(ns, r) => {
                if let Some(s) = obs.ns_mut(&ns) {
                    s.routes.push(r);
                }
            }
            Effect::RouteGone(ns, r) => {
                if let Some(s) = obs.ns_mut(&ns) {
                    s.routes.retain(|x| *x != r);
                }
            }
            Effect::Fdb(ns, idx, remote, present) => {
                if let Some(l) = obs.ns_mut(&ns).and_then(|s| s.link_mut(idx)) {
                    if present {
                        l.fdb.insert(remote);
                    } else {
                        l.fdb.remove(&remote);
                    }
                }
            }
            Effect::Neigh(ns, idx, ip, mac) => {
                if let Some(l) = obs.ns_mut(&ns).and_then(|s| s.link_mut(idx)) {
                    match mac {
                        Some(mac) => l.neighbours.insert(ip, mac),
                        None => l.neighbours.remove(&ip),
                    };
                }
            }
        }
    }

    async fn run_phase(&self, steps: &[Step], tick: &(dyn Fn() + Sync)) -> Vec<Result<Effect, String>> {
        let prefix = &self.cfg.prefix;
        // Namespace creation and deletion are batches on dedicated threads.
        let mut creates = Vec::new();
        let mut deletes = Vec::new();
        for (i, s) in steps.iter().enumerate() {
            match &s.op {
                Op::CreateNetns { ns } => creates.push((i, ns.clone())),
                Op::DeleteNetns { ns } => deletes.push((i, ns.clone())),
                _ => {}
            }
        }
        let mut out: Vec<Option<Result<Effect, String>>> = steps.iter().map(|_| None).collect();
        let batch = async {
            let mut res = Vec::new();
            // In chunks, each turned into handles at once: a managed
            // namespace's fd is closed there (only its socket is kept), so
            // a make of thousands never holds two descriptors for each.
            for chunk in creates.chunks(CREATE_CHUNK) {
                let names: Vec<(String, netns::Role)> =
                    chunk.iter().map(|(_, ns)| (ns_file(prefix, ns).unwrap_or_default(), role(ns))).collect();
                match blocking(move || netns::create_named(names)).await {
                    Ok(v) => {
                        for ((i, ns), r) in chunk.iter().zip(v) {
                            res.push((
                                *i,
                                r.map(|o| {
                                    let fwd = o.forwarding;
                                    let keep = !matches!(ns, NsId::Managed(_));
                                    let h = NsHandle::new(o, ns_path(prefix, ns), keep);
                                    Effect::Opened(ns.clone(), Box::new(h), fwd)
                                }),
                            ));
                        }
                    }
                    Err(e) => res.extend(chunk.iter().map(|(i, _)| (*i, Err(e.clone())))),
                }
            }
            if !deletes.is_empty() {
                let names: Vec<String> =
                    deletes.iter().map(|(_, ns)| ns_file(prefix, ns).unwrap_or_default()).collect();
                match blocking(move || netns::delete_named_many(names)).await {
                    Ok(v) => {
                        for ((i, ns), r) in deletes.iter().zip(v) {
                            res.push((*i, r.map(|()| Effect::NsGone(ns.clone()))));
                        }
                    }
                    Err(e) => res.extend(deletes.iter().map(|(i, _)| (*i, Err(e.clone())))),
                }
            }
            for _ in &res {
                tick();
            }
            res
        };
        let nl_futs: Vec<_> = steps
            .iter()
            .enumerate()
            .filter(|(_, s)| !matches!(s.op, Op::CreateNetns { .. } | Op::DeleteNetns { .. }))
            .map(|(i, s)| async move {
                let r = self.exec(&s.op).await;
                tick();
                (i, r)
            })
            .collect();
        let (batch_res, nl_res) = future_join(batch, nl::bounded(nl_futs, IN_FLIGHT)).await;
        for (i, r) in batch_res.into_iter().chain(nl_res) {
            if let Some(slot) = out.get_mut(i) {
                *slot = Some(r);
            }
        }
        out.into_iter().map(|r| r.unwrap_or(Err("not run".into()))).collect()
    }

    /// Deletes one link, off the tokio workers (see [`netns::delete_links`]).
    /// Where a listener hears the namespace, the link is gone as soon as it
    /// announces so (out of the namespace, off its bridge); the request
    /// then finishes its RCU waits in the background.
    async fn delete_link(&self, ns: &NsId, index: u32) -> Result<(), String> {
        let fd = self.handle(ns)?.ns_fd()?;
        let heard = self.listeners.contains_key(ns).then(|| self.departures.expect(ns, index));
        let mut request =
            tokio::task::spawn_blocking(move || netns::delete_links(fd, vec![netns::Deletion::Link(index)]));
        let Some(heard) = heard else {
            return first(request.await.map_err(|e| format!("worker failed: {e}")));
        };
        tokio::select! {
            r = &mut request => {
                self.departures.forget(ns, index);
                first(r.map_err(|e| format!("worker failed: {e}")))
            }
            Ok(()) = heard => {
                let what = format!("deleting link {index} in {ns}");
                tokio::spawn(async move {
                    if let Err(e) = first(request.await.map_err(|e| format!("worker failed: {e}"))) {
                        tracing::warn!("{what} (announced gone): {e}");
                    }
                });
                Ok(())
            }
        }
    }

    fn handle(&self, ns: &NsId) -> Result<&NsHandle, String> {
        self.handles.get(ns).ok_or_else(|| format!("{ns} is not open"))
    }

    fn index(&self, ns: &NsId, name: &str) -> Result<u32, String> {
        self.observed.link(ns, name).map(|l| l.index).ok_or_else(|| format!("no interface {name} in {ns}"))
    }

    async fn exec(&self, op: &Op) -> Result<Effect, String> {
        match op {
            Op::CreateNetns { .. } | Op::DeleteNetns { .. } => Err("namespace ops run in batches".into()),
            Op::DeleteGroup { ns, group } => {
                let fd = self.handle(ns)?.ns_fd()?;
                let g = *group;
                first(blocking(move || netns::delete_links(fd, vec![netns::Deletion::Group(g)])).await)
                    .map(|()| Effect::GroupGone(ns.clone(), g))
            }
            Op::DeleteLink { ns, index, .. } => {
                self.delete_link(ns, *index).await.map(|()| Effect::LinkGone(ns.clone(), *index))
            }
            Op::DeleteAddr { ns, index, ip, prefix_len } => {
                nl::del_addr(&self.handle(ns)?.handle, *index, *ip, *prefix_len)
                    .await
                    .map(|()| Effect::AddrGone(ns.clone(), *index, *ip, *prefix_len))
            }
            Op::DeleteRoute { ns, dest, prefix_len, via, oif } => {
                nl::del_route(&self.handle(ns)?.handle, *dest, *prefix_len, *via, *oif).await.map(|()| {
                    Effect::RouteGone(
                        ns.clone(),
                        RouteState { dest: *dest, prefix_len: *prefix_len, via: *via, oif: *oif },
                    )
                })
            }
            Op::SetUp { ns, name } | Op::SetUpNew { ns, name } => {
                let idx = self.index(ns, name)?;
                nl::set_up(&self.handle(ns)?.handle, idx).await.map(|()| Effect::Up(ns.clone(), name.clone()))
            }
            Op::SetForwarding { ns, on } => {
                let fd = self.handle(ns)?.ns_fd()?;
                let on = *on;
                blocking(move || netns::set_forwarding_in(&fd, on))
                    .await
                    .and_then(|r| r)
                    .map(|()| Effect::Forwarding(ns.clone(), on))
            }
            Op::CreateBridge { ns, name, group, mac } => {
                nl::create_bridge(&self.handle(ns)?.handle, name, *group, *mac).await.map(|()| Effect::None)
            }
            Op::SetAlias { ns, name, alias } => {
                let idx = self.index(ns, name)?;
                nl::set_alias(&self.handle(ns)?.handle, idx, alias).await.map(|()| Effect::None)
            }
            Op::CreateVeth { a, b, group } => {
                let master = match &a.master {
                    Some(m) => Some(self.index(&a.ns, m)?),
                    None => None,
                };
                let bfd = self.handle(&b.ns)?.ns_fd()?;
                let (a_mac, b_mac) = (a.mac, b.mac);
                nl::create_veth(
                    &self.handle(&a.ns)?.handle,
                    &a.name,
                    a_mac,
                    master,
                    &b.name,
                    b_mac,
                    netns::raw(&bfd),
                    *group,
                    a.mtu,
                )
                .await
                .map(|()| Effect::None)
            }
            Op::CreateVxlan { ns, name, vni, master, group } => {
                let (Some((underlay, _)), Some(u)) = (&self.underlay, self.cfg.underlay) else {
                    return Err("no underlay is configured (--vtep-address)".into());
                };
                let master = self.index(ns, master)?;
                let fd = self.handle(ns)?.ns_fd()?;
                nl::create_vxlan(underlay, name, *vni, u.local, u.ifindex, netns::raw(&fd), master, *group)
                    .await
                    .map(|()| Effect::None)
            }
            Op::AddFdb { ns, name, remote } => {
                let idx = self.index(ns, name)?;
                nl::add_fdb(&self.handle(ns)?.handle, idx, *remote)
                    .await
                    .map(|()| Effect::Fdb(ns.clone(), idx, *remote, true))
            }
            Op::DeleteFdb { ns, index, remote } => nl::del_fdb(&self.handle(ns)?.handle, *index, *remote)
                .await
                .map(|()| Effect::Fdb(ns.clone(), *index, *remote, false)),
            Op::AddNeigh { ns, name, ip, mac } => {
                let idx = self.index(ns, name)?;
                nl::add_neigh(&self.handle(ns)?.handle, idx, *ip, *mac)
                    .await
                    .map(|()| Effect::Neigh(ns.clone(), idx, *ip, Some(*mac)))
            }
            Op::DeleteNeigh { ns, index, ip } => nl::del_neigh(&self.handle(ns)?.handle, *index, *ip)
                .await
                .map(|()| Effect::Neigh(ns.clone(), *index, *ip, None)),
            Op::AddAddr { ns, name, ip, prefix_len } => {
                let idx = self.index(ns, name)?;
                nl::add_addr(&self.handle(ns)?.handle, idx, *ip, *prefix_len)
                    .await
                    .map(|()| Effect::Addr(ns.clone(), idx, *ip, *prefix_len))
            }
            Op::AddRoute { ns, name, dest, prefix_len, via } => {
                let oif = self.index(ns, name)?;
                nl::add_route(&self.handle(ns)?.handle, *dest, *prefix_len, *via, oif).await.map(|()| {
                    Effect::Route(ns.clone(), RouteState { dest: *dest, prefix_len: *prefix_len, via: *via, oif })
                })
            }
        }
    }
}

/// The one result of a one-element batch.
fn first(r: Result<Vec<Result<(), String>>, String>) -> Result<(), String> {
    r.and_then(|v| v.into_iter().next().unwrap_or_else(|| Err("no result".into())))
}

async fn future_join<A: std::future::Future, B: std::future::Future>(a: A, b: B) -> (A::Output, B::Output) {
    futures_util::future::join(a, b).await
}

pub(crate) fn op_ns(op: &Op) -> Option<&NsId> {
    match op {
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

fn describe(op: &Op, prefix: &str) -> String {
    match op {
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
        Op::AddFdb { ns, name, remote } => format!("adding remote VTEP {remote} to {name} in {ns}"),
        Op::DeleteFdb { ns, remote, .. } => format!("removing remote VTEP {remote} in {ns}"),
        Op::AddNeigh { ns, name, ip, .. } => format!("adding neighbour {ip} on {name} in {ns}"),
        Op::DeleteNeigh { ns, ip, .. } => format!("removing neighbour {ip} in {ns}"),
        Op::AddRoute { ns, name, dest, prefix_len, via } => {
            format!("adding route {dest}/{prefix_len} via {via} dev {name} in {ns}")
        }
    }
}

type BoxedDelete<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>>;

/// What [`cleanup`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CleanupReport {
    pub namespaces: usize,
    pub links: usize,
}

/// Remove everything under `prefix`: named namespaces (containers and
/// fabric) and, in the host namespace, links whose name carries the prefix.
/// Namespaces bound by path are not known here; their links die with the
/// fabric (bridged CENs) or with a managed peer namespace.
pub async fn cleanup(prefix: &str) -> Result<CleanupReport, RealizeError> {
    check_config(&Config { prefix: prefix.to_string(), fabric: FabricMode::Netns, underlay: None })?;
    let p = prefix.to_string();
    let names = blocking(move || netns::list_named(&p)).await.and_then(|r| r).map_err(RealizeError::System)?;
    let count = names.len();
    let errs: Vec<String> = blocking(move || netns::delete_named_many(names))
        .await
        .map_err(RealizeError::System)?
        .into_iter()
        .filter_map(Result::err)
        .collect();
    if let Some(e) = errs.into_iter().next() {
        return Err(RealizeError::System(e));
    }
    // Host-mode leftovers.
    let opened = blocking(|| netns::open_paths(vec![(PathBuf::from("/proc/self/ns/net"), netns::Role::Container)]))
        .await
        .map_err(RealizeError::System)?;
    let Some(Ok(o)) = opened.into_iter().next() else {
        return Err(RealizeError::System("cannot open the host namespace".into()));
    };
    let h = NsHandle::new(o, PathBuf::from("/proc/self/ns/net"), true);
    let links = nl::dump_links(&h.handle, prefix, &NsId::Host).await.map_err(RealizeError::System)?;
    let ours: Vec<&LinkState> = links.iter().filter(|l| l.ours).collect();
    let mut groups: BTreeSet<u32> = BTreeSet::new();
    let mut singles = Vec::new();
    for l in &ours {
        let whole = l.group != 0
            && naming::is_our_group(prefix, l.group)
            && links.iter().filter(|x| x.group == l.group).all(|x| x.ours);
        if whole {
            groups.insert(l.group);
        } else {
            singles.push(l.index);
        }
    }
    let mut futs: Vec<BoxedDelete<'_>> = Vec::new();
    for g in groups {
        futs.push(Box::pin(nl::delete_group(&h.handle, g)));
    }
    for i in singles {
        futs.push(Box::pin(nl::delete_link(&h.handle, i)));
    }
    for r in nl::bounded(futs, IN_FLIGHT).await {
        r.map_err(RealizeError::System)?;
    }
    Ok(CleanupReport { namespaces: count, links: ours.len() })
}
