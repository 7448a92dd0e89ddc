//! The cost of a query, seeing list sizes.
//!
//! async-graphql adds one per field; that alone lets a few nested lists
//! fan out to millions of objects. Here a list field costs
//! `1 + n × (cost of one item)`, where `n` is its `first` argument or, without
//! one, the longest such list in the current topology ([`Bounds`]). The
//! bounds are read from the list sizes the model keeps as records change
//! (`model/tally.rs`: a change costs what it touches, a read a few
//! lookups) and put in a task local around validation ([`scope`]), where
//! the schema's complexity functions ([`list`]) read them.

#[cfg(test)]
use crate::model::ContainerKey;
use crate::model::Topology;
#[cfg(test)]
use std::collections::{BTreeMap, HashMap};

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
    static BOUNDS: Bounds;
}

impl Bounds {
    /// The bounds of a topology, from the list sizes the model keeps as
    /// records change ([`Topology::tally`]): a handful of lookups, never a
    /// pass over the topology.
    pub fn of(t: &Topology) -> Bounds {
        let (hosts, containers, cens, cins, cpools) = t.counts();
        let [host_containers, pool_containers, cen_members, container_cens, cen_cins, cin_members, cin_cens, pool_cins] =
            t.tally().maxima();
        Bounds {
            hosts,
            containers,
            cens,
            cins,
            cpools,
            host_containers,
            cen_members,
            container_cens,
            cen_cins,
            cin_cens,
            cin_members,
            // A container's CINs are those over its CENs.
            container_cins: container_cens.saturating_mul(cen_cins).min(cins),
            pool_containers,
            pool_cins,
        }
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
pub async fn scope<F: std::future::Future>(bounds: Bounds, f: F) -> F::Output {
    BOUNDS.scope(bounds, f).await
}

/// Whether bounds are visible to the cost functions already.
pub fn scoped() -> bool {
    BOUNDS.try_with(|_| ()).is_ok()
}

/// Runs a closure with these bounds visible to the cost functions.
pub fn sync_scope<R>(bounds: Bounds, f: impl FnOnce() -> R) -> R {
    BOUNDS.sync_scope(bounds, f)
}

/// How many items a list may hold: `first` where given (capped by the
/// bound), else the bound.
pub fn items(kind: List, first: Option<i32>) -> usize {
    let bound = BOUNDS.try_with(|b| b.get(kind)).unwrap_or(FALLBACK);
    match first {
        Some(f) if f >= 0 => (f as usize).min(bound),
        _ => bound,
    }
}

/// Cost of a list field: one for the field, plus its items' cost.
pub fn list(kind: List, first: Option<i32>, child: usize) -> usize {
    1usize.saturating_add(items(kind, first).saturating_mul(child)).min(COST_CAP)
}

/// Cost of a list whose pages hold at most `max` items (`diff`,
/// `history`): `first` where given (capped by `max`), else `max`.
pub fn paged(first: Option<i32>, max: usize, child: usize) -> usize {
    let n = first.map_or(max, |f| usize::try_from(f).unwrap_or(0).min(max));
    1usize.saturating_add(n.saturating_mul(child)).min(COST_CAP)
}

/// Cost of a list field without paging (small lists of values or
/// payload lists).
pub fn all(kind: List, child: usize) -> usize {
    list(kind, None, child)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CenSpec, CinSpec, Command, CpoolSpec, PoolCin};

    impl Bounds {
        /// The bounds of a topology counted by one pass over its records (what
        /// [`Bounds::of`] must always equal).
        #[cfg(test)]
        pub fn scan(t: &Topology) -> Bounds {
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
    }

    fn run(t: &mut Topology, c: Command) {
        t.execute(&c).unwrap_or_else(|e| panic!("{c:?}: {e:?}"));
    }

    /// The bounds kept as records change are those of a full pass, through
    /// joins, CINs, pools, leaves and deletes.
    #[test]
    fn kept_bounds_equal_a_full_pass() {
        let mut t = Topology::new();
        let cens = |specs: &[(&str, &[&str])]| {
            specs
                .iter()
                .map(|(id, cs)| CenSpec { id: id.to_string(), containers: cs.iter().map(|c| c.to_string()).collect() })
                .collect()
        };
        run(
            &mut t,
            Command::CenImport { host: "h1".into(), cens: cens(&[("e1", &["a", "b", "c"]), ("e2", &["a", "d"])]) },
        );
        run(&mut t, Command::CenImport { host: "h2".into(), cens: cens(&[("e3", &["x", "y"])]) });
        run(
            &mut t,
            Command::CinImport {
                cins: vec![
                    CinSpec { id: "n1".into(), cens: vec!["e1".into(), "e2".into()] },
                    CinSpec { id: "n2".into(), cens: vec!["e1".into()] },
                ],
            },
        );
        let pool = CpoolSpec {
            id: "p1".into(),
            image: "img".into(),
            start_with: 3,
            cins: vec![PoolCin { cin: "n2".into(), default_route: true }],
        };
        run(&mut t, Command::CpoolImport { host: "h1".into(), pools: vec![pool] });
        let full = Bounds::scan(&t);
        assert_eq!(Bounds::of(&t), full);
        assert_eq!((full.cen_members, full.container_cens, full.cen_cins, full.cin_cens), (6, 2, 2, 2));
        assert!(full.pool_containers == 3 && full.pool_cins == 1 && full.host_containers >= 7, "{full:?}");
        for c in ["a", "b"] {
            run(&mut t, Command::ContainerLeaveCen { host: "h1".into(), container: c.into(), cen: "e1".into() });
            assert_eq!(Bounds::of(&t), Bounds::scan(&t));
        }
        run(&mut t, Command::CinDelete { id: "n1".into() });
        assert_eq!(Bounds::of(&t), Bounds::scan(&t));
        run(&mut t, Command::CpoolDelete { id: "p1".into() });
        assert_eq!(Bounds::of(&t), Bounds::scan(&t));
        run(&mut t, Command::ContainerDelete { host: "h2".into(), id: "x".into() });
        let after = Bounds::of(&t);
        assert_eq!(after, Bounds::scan(&t));
        assert!(after.cen_members < full.cen_members, "{after:?}");
    }
}
