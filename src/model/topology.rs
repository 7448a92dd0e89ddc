//! The topology graph: records as petgraph nodes, relations as edges, id
//! indexes beside it, and a journal of before-images so that a command that
//! fails part-way is undone exactly.

use super::addressing::AddrPlan;
use super::records::*;
use super::tally::Tally;
use petgraph::stable_graph::{NodeIndex, StableGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// An edge of the graph. Each is owned by one record, and rebuilt from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rel {
    /// host -> container (owned by the container)
    Hosts,
    /// membership -> CEN (owned by the membership)
    Of,
    /// membership -> container (owned by the membership)
    Is,
    /// CIN -> CEN (owned by the CIN)
    Over,
}

/// Images of records: `None` means "absent".
pub type Images = BTreeMap<EntityKey, Option<Record>>;

/// The whole topology. Every index is ordered, so lists come out sorted
/// without sorting, and each is kept by `put`/`remove` alone (so undoing a
/// command restores them exactly).
#[derive(Debug, Default, Clone)]
pub struct Topology {
    graph: StableGraph<Record, Rel>,
    hosts: BTreeMap<String, NodeIndex>,
    containers: BTreeMap<ContainerKey, NodeIndex>,
    cens: BTreeMap<String, NodeIndex>,
    cins: BTreeMap<String, NodeIndex>,
    cpools: BTreeMap<String, NodeIndex>,
    /// Memberships, by CEN then container.
    members: BTreeMap<MemberKey, NodeIndex>,
    /// Member count per CEN.
    sizes: HashMap<String, usize>,
    /// Join sequence numbers in use per CEN.
    seqs: BTreeSet<(String, u64)>,
    /// Subnets of CINs: base -> (last address, how many CINs use it).
    subnets: BTreeMap<u32, (u32, u32)>,
    /// Addresses in use per CIN (address -> how many interfaces hold it).
    used: HashMap<String, BTreeMap<u32, u32>>,
    /// Containers by the pool that made them.
    pools: BTreeSet<(String, ContainerKey)>,
    /// VNIs in use: how many CENs hold each, and the runs of consecutive
    /// ones (first -> last), so the lowest free is one lookup.
    vni_count: HashMap<u32, u32>,
    vni_runs: BTreeMap<u32, u32>,
    /// The longest lists of each kind, for bounding a query's cost.
    tally: Tally,
    /// How CIN subnets are handed out.
    plan: AddrPlan,
    /// Before-images of what the running command touched.
    journal: Option<Images>,
}

macro_rules! getter {
    ($name:ident, $map:ident, $key:ty, $variant:ident, $rec:ty) => {
        pub fn $name(&self, key: &$key) -> Option<&$rec> {
            match self.$map.get(key).and_then(|ix| self.graph.node_weight(*ix)) {
                Some(Record::$variant(r)) => Some(r),
                _ => None,
            }
        }
    };
}

macro_rules! lister {
    ($name:ident, $map:ident, $variant:ident, $rec:ty) => {
        /// Every record of this kind, in id order.
        pub fn $name(&self) -> impl Iterator<Item = &$rec> + '_ {
            self.$map.values().filter_map(|ix| match self.graph.node_weight(*ix) {
                Some(Record::$variant(r)) => Some(r),
                _ => None,
            })
        }
    };
}

impl Topology {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty topology whose CINs get subnets from `plan`.
    pub fn with_plan(plan: AddrPlan) -> Self {
        Topology { plan, ..Self::default() }
    }

    pub fn addr_plan(&self) -> &AddrPlan {
        &self.plan
    }

    /// The longest lists of each kind, kept as records change.
    pub fn tally(&self) -> &Tally {
        &self.tally
    }

    getter!(host, hosts, str, Host, HostRec);
    getter!(container, containers, ContainerKey, Container, ContainerRec);
    getter!(cen, cens, str, Cen, CenRec);
    getter!(cin, cins, str, Cin, CinRec);
    getter!(cpool, cpools, str, Cpool, CpoolRec);
    getter!(member, members, MemberKey, Member, MemberRec);

    lister!(hosts_iter, hosts, Host, HostRec);
    lister!(containers_iter, containers, Container, ContainerRec);
    lister!(cens_iter, cens, Cen, CenRec);
    lister!(cins_iter, cins, Cin, CinRec);
    lister!(cpools_iter, cpools, Cpool, CpoolRec);

    /// Number of nodes of each kind: (hosts, containers, cens, cins, cpools).
    pub fn counts(&self) -> (usize, usize, usize, usize, usize) {
        (self.hosts.len(), self.containers.len(), self.cens.len(), self.cins.len(), self.cpools.len())
    }

    /// Number of records (every kind, memberships included).
    pub fn node_count(&self) -> usize {
        self.graph.node_count()
    }

    pub fn hosts(&self) -> Vec<&HostRec> {
        self.hosts_iter().collect()
    }
    pub fn containers(&self) -> Vec<&ContainerRec> {
        self.containers_iter().collect()
    }
    pub fn cens(&self) -> Vec<&CenRec> {
        self.cens_iter().collect()
    }
    pub fn cins(&self) -> Vec<&CinRec> {
        self.cins_iter().collect()
    }
    pub fn cpools(&self) -> Vec<&CpoolRec> {
        self.cpools_iter().collect()
    }

    /// Every record, in insertion-safe order.
    pub fn records(&self) -> Vec<Record> {
        let mut all: Vec<Record> = self.graph.node_weights().cloned().collect();
        all.sort_by_key(|r| r.key());
        all
    }

    pub fn get(&self, key: &EntityKey) -> Option<&Record> {
        self.index_of(key).and_then(|ix| self.graph.node_weight(ix))
    }

    fn index_of(&self, key: &EntityKey) -> Option<NodeIndex> {
        match key {
            EntityKey::Host(id) => self.hosts.get(id),
            EntityKey::Container(k) => self.containers.get(k),
            EntityKey::Cen(id) => self.cens.get(id),
            EntityKey::Cin(id) => self.cins.get(id),
            EntityKey::Cpool(id) => self.cpools.get(id),
            EntityKey::Member(k) => self.members.get(k),
        }
        .copied()
    }

    fn neighbors(&self, ix: Option<NodeIndex>, dir: Direction, rel: Rel) -> impl Iterator<Item = &Record> + '_ {
        ix.into_iter().flat_map(move |ix| {
            self.graph.edges_directed(ix, dir).filter(move |e| *e.weight() == rel).filter_map(move |e| {
                self.graph.node_weight(if dir == Direction::Outgoing { e.target() } else { e.source() })
            })
        })
    }

    /// The members of a CEN, in container order (one range of the index).
    pub fn members<'a, 'b>(&'a self, cen: &'b str) -> impl Iterator<Item = &'a MemberRec> + use<'a, 'b> {
        let from = MemberKey { cen: cen.to_string(), host: String::new(), container: String::new() };
        self.members.range(from..).take_while(move |(k, _)| k.cen == cen).filter_map(|(_, ix)| {
            match self.graph.node_weight(*ix) {
                Some(Record::Member(m)) => Some(m),
                _ => None,
            }
        })
    }

    /// The hosts with members of a CEN, in id order: one index step per
    /// host, however many members each has.
    pub fn member_hosts(&self, cen: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let mut from = MemberKey { cen: cen.to_string(), host: String::new(), container: String::new() };
        while let Some((k, _)) = self.members.range(from.clone()..).next() {
            if k.cen != cen {
                break;
            }
            out.push(k.host.as_str());
            // The first key past every member of this host.
            from.host = format!("{}\0", k.host);
        }
        out
    }

    /// How many members a CEN has.
    pub fn member_count(&self, cen: &str) -> usize {
        self.sizes.get(cen).copied().unwrap_or(0)
    }

    /// A container's memberships, sorted by CEN id.
    pub fn memberships_of(&self, key: &ContainerKey) -> Vec<&MemberRec> {
        let mut v: Vec<&MemberRec> = self
            .neighbors(self.containers.get(key).copied(), Direction::Incoming, Rel::Is)
            .filter_map(|r| if let Record::Member(m) = r { Some(m) } else { None })
            .collect();
        v.sort_by(|a, b| a.cen.cmp(&b.cen));
        v
    }

    /// The CINs laid over a CEN, sorted by id.
    pub fn cins_over(&self, cen: &str) -> Vec<&CinRec> {
        let mut v: Vec<&CinRec> = self
            .neighbors(self.cens.get(cen).copied(), Direction::Incoming, Rel::Over)
            .filter_map(|r| if let Record::Cin(c) = r { Some(c) } else { None })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// The containers of a host, sorted by id (one range of the index).
    pub fn containers_of_host(&self, host: &str) -> Vec<&ContainerRec> {
        let from = ContainerKey::new(host, "");
        self.containers
            .range(from..)
            .take_while(|(k, _)| k.host == host)
            .filter_map(|(_, ix)| match self.graph.node_weight(*ix) {
                Some(Record::Container(c)) => Some(c),
                _ => None,
            })
            .collect()
    }

    /// Whether a container is a member of a CEN (one index lookup).
    pub fn is_member(&self, key: &ContainerKey, cen: &str) -> bool {
        self.members.contains_key(&MemberKey::new(cen, key))
    }

    /// The next join sequence number of a CEN.
    pub(crate) fn next_seq(&self, cen: &str) -> u64 {
        self.seqs.range((cen.to_string(), 0)..=(cen.to_string(), u64::MAX)).next_back().map_or(0, |(_, s)| s + 1)
    }

    /// The lowest free subnet for a new CIN.
    pub(crate) fn free_subnet(&self) -> Option<std::net::Ipv4Addr> {
        self.plan.lowest_free(&self.subnets)
    }

    /// The lowest free member address of a slice of a CIN, above `after`
    /// when given (a caller handing out several in a row passes the last).
    pub(crate) fn free_address(
        &self,
        cin: &str,
        slice: &super::addressing::Slice,
        after: Option<u32>,
    ) -> Option<std::net::Ipv4Addr> {
        let (first, last) = slice.member_range();
        let mut cand = after.map_or(first, |a| a.saturating_add(1).max(first));
        if cand > last {
            return None;
        }
        if let Some(used) = self.used.get(cin) {
            for (&a, _) in used.range(cand..=last) {
                if a != cand {
                    break;
                }
                cand += 1;
            }
        }
        (cand <= last).then(|| std::net::Ipv4Addr::from(cand))
    }

    /// The lowest VNI no CEN holds, from [`FIRST_VNI`] up.
    pub(crate) fn free_vni(&self) -> Option<u32> {
        let v = match self.vni_runs.range(..=FIRST_VNI).next_back() {
            Some((_, last)) if *last >= FIRST_VNI => last + 1,
            _ => FIRST_VNI,
        };
        (v <= LAST_VNI).then_some(v)
    }

    fn vni_in(&mut self, v: u32) {
        let n = self.vni_count.entry(v).or_default();
        *n += 1;
        if *n > 1 {
            return;
        }
        // Join the run ending just below and the one starting just above.
        let mut first = v;
        let mut last = v;
        if let Some((f, l)) = self.vni_runs.range(..v).next_back().map(|(f, l)| (*f, *l)) {
            if l.checked_add(1) == Some(v) {
                first = f;
            }
        }
        if let Some(next) = v.checked_add(1) {
            if let Some(l) = self.vni_runs.remove(&next) {
                last = l;
            }
        }
        self.vni_runs.insert(first, last);
    }

    fn vni_out(&mut self, v: u32) {
        let Some(n) = self.vni_count.get_mut(&v) else { return };
        *n -= 1;
        if *n > 0 {
            return;
        }
        self.vni_count.remove(&v);
        let Some((f, l)) = self.vni_runs.range(..=v).next_back().map(|(f, l)| (*f, *l)) else { return };
        if l < v {
            return;
        }
        self.vni_runs.remove(&f);
        if f < v {
            self.vni_runs.insert(f, v - 1);
        }
        if l > v {
            self.vni_runs.insert(v + 1, l);
        }
    }

    /// Gives CENs read from records written before VNIs were kept one each
    /// (in id order, so every server loading the same records agrees).
    pub(crate) fn fill_vnis(&mut self) {
        let missing: Vec<String> = self.cens_iter().filter(|c| c.vni == 0).map(|c| c.id.clone()).collect();
        for id in missing {
            let (Some(vni), Some(mut rec)) = (self.free_vni(), self.cen(&id).cloned()) else { return };
            rec.vni = vni;
            self.put(Record::Cen(rec));
        }
    }

    /// The containers a pool made.
    pub(crate) fn pool_members(&self, pool: &str) -> Vec<ContainerKey> {
        let from = (pool.to_string(), ContainerKey::new("", ""));
        self.pools.range(from..).take_while(|(p, _)| p == pool).map(|(_, k)| k.clone()).collect()
    }

    /// Whether an address of a CIN is held by more than one interface.
    pub(crate) fn address_shared(&self, cin: &str, ip: std::net::Ipv4Addr) -> bool {
        self.used.get(cin).and_then(|u| u.get(&u32::from(ip))).is_some_and(|n| *n > 1)
    }

    // ---- mutation primitives: the only ways the graph changes ----

    /// Starts journaling before-images.
    pub(crate) fn begin(&mut self) {
        self.journal = Some(Images::new());
    }

    /// Ends journaling and returns the before-images of what changed.
    pub(crate) fn end(&mut self) -> Images {
        self.journal.take().unwrap_or_default()
    }

    fn remember(&mut self, key: &EntityKey) {
        if self.journal.as_ref().is_some_and(|j| !j.contains_key(key)) {
            let before = self.get(key).cloned();
            if let Some(j) = self.journal.as_mut() {
                j.insert(key.clone(), before);
            }
        }
    }

    /// Inserts or replaces a record and rebuilds the edges it owns.
    ///
    /// Callers keep the references valid: a container's host, a
    /// membership's CEN and container, and a CIN's CENs exist before the
    /// record is put.
    pub(crate) fn put(&mut self, rec: Record) {
        let key = rec.key();
        self.remember(&key);
        let ix = match self.index_of(&key) {
            Some(ix) => {
                let old = std::mem::replace(&mut self.graph[ix], rec);
                self.unindex(&old);
                ix
            }
            None => {
                let ix = self.graph.add_node(rec);
                match &key {
                    EntityKey::Host(id) => self.hosts.insert(id.clone(), ix),
                    EntityKey::Container(k) => self.containers.insert(k.clone(), ix),
                    EntityKey::Cen(id) => self.cens.insert(id.clone(), ix),
                    EntityKey::Cin(id) => self.cins.insert(id.clone(), ix),
                    EntityKey::Cpool(id) => self.cpools.insert(id.clone(), ix),
                    EntityKey::Member(k) => self.members.insert(k.clone(), ix),
                };
                if let EntityKey::Container(k) = &key {
                    if let Some(h) = self.hosts.get(&k.host).copied() {
                        self.graph.add_edge(h, ix, Rel::Hosts);
                    }
                }
                ix
            }
        };
        let rec = self.graph[ix].clone();
        self.index(&rec);
        let targets: Vec<(Rel, NodeIndex)> = match &rec {
            Record::Member(m) => [(Rel::Of, self.cens.get(&m.cen)), (Rel::Is, self.containers.get(&m.key()))]
                .into_iter()
                .filter_map(|(rel, t)| t.map(|t| (rel, *t)))
                .collect(),
            Record::Cin(c) => c.cens.iter().filter_map(|id| self.cens.get(id)).map(|t| (Rel::Over, *t)).collect(),
            _ => return,
        };
        let old: Vec<_> = self.graph.edges_directed(ix, Direction::Outgoing).map(|e| e.id()).collect();
        for e in old {
            self.graph.remove_edge(e);
        }
        for (rel, t) in targets {
            self.graph.add_edge(ix, t, rel);
        }
    }

    /// Adds a record to the derived indexes.
    fn index(&mut self, rec: &Record) {
        self.tally.add(rec);
        match rec {
            Record::Container(c) => {
                if let Some(p) = &c.pool {
                    self.pools.insert((p.clone(), c.key()));
                }
            }
            Record::Member(m) => {
                *self.sizes.entry(m.cen.clone()).or_default() += 1;
                self.seqs.insert((m.cen.clone(), m.seq));
                for (cin, ip) in &m.addresses {
                    *self.used.entry(cin.clone()).or_default().entry(u32::from(*ip)).or_default() += 1;
                }
            }
            Record::Cen(c) if c.vni != 0 => self.vni_in(c.vni),
            Record::Cin(c) => {
                let e = self.subnets.entry(u32::from(c.subnet)).or_insert((0, 0));
                e.0 = e.0.max(super::addressing::last_of(c.subnet, c.prefix_len));
                e.1 += 1;
            }
            _ => {}
        }
    }

    /// Takes a record out of the derived indexes.
    fn unindex(&mut self, rec: &Record) {
        self.tally.sub(rec);
        match rec {
            Record::Container(c) => {
                if let Some(p) = &c.pool {
                    self.pools.remove(&(p.clone(), c.key()));
                }
            }
            Record::Member(m) => {
                if let Some(n) = self.sizes.get_mut(&m.cen) {
                    *n -= 1;
                    if *n == 0 {
                        self.sizes.remove(&m.cen);
                    }
                }
                self.seqs.remove(&(m.cen.clone(), m.seq));
                for (cin, ip) in &m.addresses {
                    if let Some(u) = self.used.get_mut(cin) {
                        if let Some(n) = u.get_mut(&u32::from(*ip)) {
                            *n -= 1;
                            if *n == 0 {
                                u.remove(&u32::from(*ip));
                            }
                        }
                        if u.is_empty() {
                            self.used.remove(cin);
                        }
                    }
                }
            }
            Record::Cen(c) if c.vni != 0 => self.vni_out(c.vni),
            Record::Cin(c) => {
                let base = u32::from(c.subnet);
                if let Some(e) = self.subnets.get_mut(&base) {
                    e.1 -= 1;
                    if e.1 == 0 {
                        self.subnets.remove(&base);
                    }
                }
            }
            _ => {}
        }
    }

    /// Removes a record (and every edge touching it).
    pub(crate) fn remove(&mut self, key: &EntityKey) {
        self.remember(key);
        let ix = match key {
            EntityKey::Host(id) => self.hosts.remove(id),
            EntityKey::Container(k) => self.containers.remove(k),
            EntityKey::Cen(id) => self.cens.remove(id),
            EntityKey::Cin(id) => self.cins.remove(id),
            EntityKey::Cpool(id) => self.cpools.remove(id),
            EntityKey::Member(k) => self.members.remove(k),
        };
        if let Some(rec) = ix.and_then(|ix| self.graph.remove_node(ix)) {
            self.unindex(&rec);
        }
    }

    /// Sets a batch of images: inserts and replacements in key order (each
    /// kind refers only to earlier kinds), then removals in reverse order.
    pub(crate) fn apply_images(&mut self, images: &Images) {
        for (_, rec) in images.iter() {
            if let Some(rec) = rec {
                self.put(rec.clone());
            }
        }
        for (key, rec) in images.iter().rev() {
            if rec.is_none() {
                self.remove(key);
            }
        }
    }

    /// Current images of the given keys.
    pub(crate) fn images_of<'a>(&self, keys: impl Iterator<Item = &'a EntityKey>) -> Images {
        keys.map(|k| (k.clone(), self.get(k).cloned())).collect()
    }

    /// Checks every cross-reference; used by tests and after loading.
    pub fn check_integrity(&self) -> Result<(), String> {
        for c in self.containers_iter() {
            if self.host(&c.host).is_none() {
                return Err(format!("container {} names missing host", c.key()));
            }
        }
        for (k, ix) in &self.members {
            let Some(Record::Member(m)) = self.graph.node_weight(*ix) else {
                return Err(format!("membership {k} is not a membership record"));
            };
            if self.cen(&m.cen).is_none() {
                return Err(format!("membership {k} names missing CEN"));
            }
            if self.container(&m.key()).is_none() {
                return Err(format!("CEN {} lists missing container {}", m.cen, m.key()));
            }
            for cin in m.addresses.keys() {
                if !self.cin(cin).is_some_and(|c| c.cens.contains(&m.cen)) {
                    return Err(format!("{k} has an address in CIN {cin}, which is not over CEN {}", m.cen));
                }
            }
        }
        for cin in self.cins_iter() {
            for cen in &cin.cens {
                if self.cen(cen).is_none() {
                    return Err(format!("CIN {} lists missing CEN {cen}", cin.id));
                }
            }
        }
        Ok(())
    }
}

impl Topology {
    /// The before-image of a record the running command touched.
    pub(crate) fn journal_before(&self, key: &EntityKey) -> Option<&Record> {
        self.journal.as_ref().and_then(|j| j.get(key)).and_then(|r| r.as_ref())
    }

    /// Keys the running command has touched so far.
    pub(crate) fn journal_keys(&self) -> Option<Vec<EntityKey>> {
        self.journal.as_ref().map(|j| j.keys().cloned().collect())
    }
}
