//! The topology graph: records as petgraph nodes, relations as edges, id
//! indexes beside it, and a journal of before-images so that a command that
//! fails part-way is undone exactly.

use super::records::*;
use petgraph::stable_graph::{NodeIndex, StableGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use std::collections::{BTreeMap, HashMap};

/// An edge of the graph. Each is owned by one record, and rebuilt from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rel {
    /// host -> container (owned by the container)
    Hosts,
    /// CEN -> container (owned by the CEN)
    Member,
    /// CIN -> CEN (owned by the CIN)
    Over,
}

/// Images of records: `None` means "absent".
pub type Images = BTreeMap<EntityKey, Option<Record>>;

/// The whole topology.
#[derive(Debug, Default, Clone)]
pub struct Topology {
    graph: StableGraph<Record, Rel>,
    hosts: HashMap<String, NodeIndex>,
    containers: HashMap<ContainerKey, NodeIndex>,
    cens: HashMap<String, NodeIndex>,
    cins: HashMap<String, NodeIndex>,
    cpools: HashMap<String, NodeIndex>,
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

impl Topology {
    pub fn new() -> Self {
        Self::default()
    }

    getter!(host, hosts, str, Host, HostRec);
    getter!(container, containers, ContainerKey, Container, ContainerRec);
    getter!(cen, cens, str, Cen, CenRec);
    getter!(cin, cins, str, Cin, CinRec);
    getter!(cpool, cpools, str, Cpool, CpoolRec);

    /// Number of nodes of each kind: (hosts, containers, cens, cins, cpools).
    pub fn counts(&self) -> (usize, usize, usize, usize, usize) {
        (self.hosts.len(), self.containers.len(), self.cens.len(), self.cins.len(), self.cpools.len())
    }

    fn sorted<'a, K: Ord + 'a, R: 'a>(
        &'a self,
        map: &'a HashMap<K, NodeIndex>,
        pick: impl Fn(&'a Record) -> Option<&'a R>,
    ) -> Vec<&'a R> {
        let mut keyed: Vec<(&K, &R)> =
            map.iter().filter_map(|(k, ix)| self.graph.node_weight(*ix).and_then(&pick).map(|r| (k, r))).collect();
        keyed.sort_by(|a, b| a.0.cmp(b.0));
        keyed.into_iter().map(|(_, r)| r).collect()
    }

    pub fn hosts(&self) -> Vec<&HostRec> {
        self.sorted(&self.hosts, |r| if let Record::Host(h) = r { Some(h) } else { None })
    }
    pub fn containers(&self) -> Vec<&ContainerRec> {
        self.sorted(&self.containers, |r| if let Record::Container(c) = r { Some(c) } else { None })
    }
    pub fn cens(&self) -> Vec<&CenRec> {
        self.sorted(&self.cens, |r| if let Record::Cen(c) = r { Some(c) } else { None })
    }
    pub fn cins(&self) -> Vec<&CinRec> {
        self.sorted(&self.cins, |r| if let Record::Cin(c) = r { Some(c) } else { None })
    }
    pub fn cpools(&self) -> Vec<&CpoolRec> {
        self.sorted(&self.cpools, |r| if let Record::Cpool(c) = r { Some(c) } else { None })
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
        }
        .copied()
    }

    fn neighbors(&self, ix: Option<NodeIndex>, dir: Direction, rel: Rel) -> Vec<&Record> {
        let Some(ix) = ix else { return Vec::new() };
        self.graph
            .edges_directed(ix, dir)
            .filter(|e| *e.weight() == rel)
            .filter_map(|e| self.graph.node_weight(if dir == Direction::Outgoing { e.target() } else { e.source() }))
            .collect()
    }

    /// The CENs a container is a member of, sorted by id.
    pub fn cens_of(&self, key: &ContainerKey) -> Vec<&CenRec> {
        let mut v: Vec<&CenRec> = self
            .neighbors(self.containers.get(key).copied(), Direction::Incoming, Rel::Member)
            .into_iter()
            .filter_map(|r| if let Record::Cen(c) = r { Some(c) } else { None })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// The CINs laid over a CEN, sorted by id.
    pub fn cins_over(&self, cen: &str) -> Vec<&CinRec> {
        let mut v: Vec<&CinRec> = self
            .neighbors(self.cens.get(cen).copied(), Direction::Incoming, Rel::Over)
            .into_iter()
            .filter_map(|r| if let Record::Cin(c) = r { Some(c) } else { None })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// The containers of a host, sorted by id.
    pub fn containers_of_host(&self, host: &str) -> Vec<&ContainerRec> {
        let mut v: Vec<&ContainerRec> = self
            .neighbors(self.hosts.get(host).copied(), Direction::Outgoing, Rel::Hosts)
            .into_iter()
            .filter_map(|r| if let Record::Container(c) = r { Some(c) } else { None })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Whether a container is a member of a CEN (one edge lookup).
    pub fn is_member(&self, key: &ContainerKey, cen: &str) -> bool {
        match (self.cens.get(cen), self.containers.get(key)) {
            (Some(c), Some(k)) => self.graph.find_edge(*c, *k).is_some(),
            _ => false,
        }
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
    /// Callers keep the references valid: a container's host, a CEN's
    /// members and a CIN's CENs exist before the record is put.
    pub(crate) fn put(&mut self, rec: Record) {
        let key = rec.key();
        self.remember(&key);
        let ix = match self.index_of(&key) {
            Some(ix) => {
                self.graph[ix] = rec;
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
                };
                if let EntityKey::Container(k) = &key {
                    if let Some(h) = self.hosts.get(&k.host).copied() {
                        self.graph.add_edge(h, ix, Rel::Hosts);
                    }
                }
                ix
            }
        };
        let targets: Option<(Rel, Vec<NodeIndex>)> = match &self.graph[ix] {
            Record::Cen(c) => {
                Some((Rel::Member, c.members.iter().filter_map(|m| self.containers.get(&m.key()).copied()).collect()))
            }
            Record::Cin(c) => Some((Rel::Over, c.cens.iter().filter_map(|id| self.cens.get(id).copied()).collect())),
            _ => None,
        };
        if let Some((rel, targets)) = targets {
            let old: Vec<_> = self.graph.edges_directed(ix, Direction::Outgoing).map(|e| e.id()).collect();
            for e in old {
                self.graph.remove_edge(e);
            }
            for t in targets {
                self.graph.add_edge(ix, t, rel);
            }
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
        };
        if let Some(ix) = ix {
            self.graph.remove_node(ix);
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
        for c in self.containers() {
            if self.host(&c.host).is_none() {
                return Err(format!("container {} names missing host", c.key()));
            }
        }
        for cen in self.cens() {
            for m in &cen.members {
                if self.container(&m.key()).is_none() {
                    return Err(format!("CEN {} lists missing container {}", cen.id, m.key()));
                }
            }
        }
        for cin in self.cins() {
            for cen in &cin.cens {
                if self.cen(cen).is_none() {
                    return Err(format!("CIN {} lists missing CEN {cen}", cin.id));
                }
            }
            for k in cin.addresses.keys() {
                if !self.is_member(&ContainerKey::new(&k.host, &k.container), &k.cen) || !cin.cens.contains(&k.cen) {
                    return Err(format!(
                        "CIN {} addresses {}/{} on {} which is not a member",
                        cin.id, k.host, k.container, k.cen
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Topology {
    /// Keys the running command has touched so far.
    pub(crate) fn journal_keys(&self) -> Option<Vec<EntityKey>> {
        self.journal.as_ref().map(|j| j.keys().cloned().collect())
    }
}
