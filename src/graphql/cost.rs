//! The cost of a query, seeing list sizes.
//!
//! async-graphql adds one per field; that alone lets a few nested lists
//! fan out to millions of objects. Here a list field costs
//! `1 + n × (cost of one item)`, where `n` is its `first` argument or, without
//! one, the longest such list in the current topology ([`Bounds`]). The
//! bounds are computed from the model once per revision and put in a task
//! local around validation ([`scope`]), where the schema's complexity
//! functions ([`list`]) read them.

use crate::model::{ContainerKey, Topology};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// The longest list of each kind in one topology.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bounds {
    pub hosts: usize,
    pub containers: usize,
    pub cens: usize,
    pub cins: usize,
    pub cpools: usize,
    /// Most containers on one host.
    pub host_containers: usize,
    /// Most members of one CEN.
    pub cen_members: usize,
    /// Most CENs one container is in (also its interfaces).
    pub container_cens: usize,
    /// Most CINs laid over one CEN.
    pub cen_cins: usize,
    /// Most CENs under one CIN.
    pub cin_cens: usize,
    /// Most member interfaces of one CIN.
    pub cin_members: usize,
    /// Most CINs giving one container an address.
    pub container_cins: usize,
    /// Most containers of one pool.
    pub pool_containers: usize,
    /// Most CINs of one pool.
    pub pool_cins: usize,
}

/// Which list a field returns.
#[derive(Debug, Clone, Copy)]
pub enum List {
    Hosts,
    Containers,
    Cens,
    Cins,
    Cpools,
    HostContainers,
    CenMembers,
    ContainerCens,
    CenCins,
    CinCens,
    CinMembers,
    ContainerCins,
    PoolContainers,
    PoolCins,
}

/// Cost of one list item's children is multiplied by at most this many
/// items when no topology is at hand (e.g. a schema without a service).
const FALLBACK: usize = 100;

/// Costs are clamped here so that sums of them never overflow.
pub const COST_CAP: usize = 1 << 40;

tokio::task_local! {
    static BOUNDS: LazyBounds;
}

/// Bounds worked out only when a cost function first needs them: a request
/// with no list (a mutation, a lookup by id) never pays for a pass over the
/// topology after a change.
#[derive(Clone)]
pub struct LazyBounds(Arc<LazyInner>);

struct LazyInner {
    cell: std::sync::OnceLock<Bounds>,
    compute: Box<dyn Fn() -> Bounds + Send + Sync>,
}

impl LazyBounds {
    /// Bounds already known.
    pub fn ready(b: Bounds) -> LazyBounds {
        let cell = std::sync::OnceLock::new();
        let _ = cell.set(b);
        LazyBounds(Arc::new(LazyInner { cell, compute: Box::new(Bounds::default) }))
    }

    /// Bounds computed by `f` on first use.
    pub fn new(f: impl Fn() -> Bounds + Send + Sync + 'static) -> LazyBounds {
        LazyBounds(Arc::new(LazyInner { cell: std::sync::OnceLock::new(), compute: Box::new(f) }))
    }

    fn get(&self) -> &Bounds {
        self.0.cell.get_or_init(|| (self.0.compute)())
    }
}

impl Bounds {
    /// The bounds of a topology: one pass over its records.
    pub fn of(t: &Topology) -> Bounds {
        let (hosts, containers, cens, cins, cpools) = t.counts();
        let mut b = Bounds { hosts, containers, cens, cins, cpools, ..Bounds::default() };
        let mut per_host: HashMap<&str, usize> = HashMap::new();
        let mut per_pool: HashMap<&str, usize> = HashMap::new();
        for c in t.containers() {
            *per_host.entry(c.host.as_str()).or_default() += 1;
            if let Some(p) = c.pool.as_deref() {
                *per_pool.entry(p).or_default() += 1;
            }
        }
        b.host_containers = per_host.values().copied().max().unwrap_or(0);
        b.pool_containers = per_pool.values().copied().max().unwrap_or(0);
        let mut cens_of: BTreeMap<ContainerKey, usize> = BTreeMap::new();
        let mut cins_over: HashMap<&str, usize> = HashMap::new();
        for cen in t.cens() {
            b.cen_members = b.cen_members.max(t.member_count(&cen.id));
            for m in t.members(&cen.id) {
                *cens_of.entry(m.key()).or_default() += 1;
            }
        }
        b.container_cens = cens_of.values().copied().max().unwrap_or(0);
        for cin in t.cins() {
            b.cin_cens = b.cin_cens.max(cin.cens.len());
            b.cin_members = b.cin_members.max(t.cin_members(cin).len());
            for cen in &cin.cens {
                *cins_over.entry(cen.as_str()).or_default() += 1;
            }
        }
        b.cen_cins = cins_over.values().copied().max().unwrap_or(0);
        // A container's CINs are those over its CENs.
        b.container_cins = b.container_cens.saturating_mul(b.cen_cins).min(b.cins);
        b.pool_cins = t.cpools().iter().map(|p| p.cins.len()).max().unwrap_or(0);
        b
    }

    fn get(&self, l: List) -> usize {
        match l {
            List::Hosts => self.hosts,
            List::Containers => self.containers,
            List::Cens => self.cens,
            List::Cins => self.cins,
            List::Cpools => self.cpools,
            List::HostContainers => self.host_containers,
            List::CenMembers => self.cen_members,
            List::ContainerCens => self.container_cens,
            List::CenCins => self.cen_cins,
            List::CinCens => self.cin_cens,
            List::CinMembers => self.cin_members,
            List::ContainerCins => self.container_cins,
            List::PoolContainers => self.pool_containers,
            List::PoolCins => self.pool_cins,
        }
    }
}

/// Runs a future with these bounds visible to the cost functions.
pub async fn scope<F: std::future::Future>(bounds: LazyBounds, f: F) -> F::Output {
    BOUNDS.scope(bounds, f).await
}

/// Runs a closure with these bounds visible to the cost functions.
pub fn sync_scope<R>(bounds: LazyBounds, f: impl FnOnce() -> R) -> R {
    BOUNDS.sync_scope(bounds, f)
}

/// How many items a list may hold: `first` where given (capped by the
/// bound), else the bound.
pub fn items(kind: List, first: Option<i32>) -> usize {
    let bound = BOUNDS.try_with(|b| b.get().get(kind)).unwrap_or(FALLBACK);
    match first {
        Some(f) if f >= 0 => (f as usize).min(bound),
        _ => bound,
    }
}

/// Cost of a list field: one for the field, plus its items' cost.
pub fn list(kind: List, first: Option<i32>, child: usize) -> usize {
    1usize.saturating_add(items(kind, first).saturating_mul(child)).min(COST_CAP)
}

/// Cost of a list field without paging (small lists of values or
/// payload lists).
pub fn all(kind: List, child: usize) -> usize {
    list(kind, None, child)
}
