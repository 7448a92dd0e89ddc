//! The longest lists of each kind, kept as records come and go, so that a
//! query's cost can be bounded without a pass over the whole topology.
//!
//! Each count is kept by [`Topology`](super::Topology)'s `index`/`unindex`
//! alone (so undoing a command restores it exactly), and a change costs
//! `O(log n)` per list it touches. Invariant: every figure equals what a full
//! recount of the records gives ([`Tally::recount`], checked by the model's
//! property tests).

use super::records::{ContainerKey, Record};
use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// How many items each key has, and how many keys have each count, so the
/// largest count is one lookup.
#[derive(Debug, Clone)]
pub struct Counter<K: Hash + Eq> {
    per_key: HashMap<K, usize>,
    keys_with: BTreeMap<usize, usize>,
}

impl<K: Hash + Eq> Default for Counter<K> {
    fn default() -> Self {
        Counter { per_key: HashMap::new(), keys_with: BTreeMap::new() }
    }
}

impl<K: Hash + Eq> Counter<K> {
    fn moved(&mut self, from: usize, to: usize) {
        if from > 0 {
            if let Some(n) = self.keys_with.get_mut(&from) {
                *n -= 1;
                if *n == 0 {
                    self.keys_with.remove(&from);
                }
            }
        }
        if to > 0 {
            *self.keys_with.entry(to).or_default() += 1;
        }
    }

    /// One more item under `key`.
    pub fn add(&mut self, key: K) {
        let n = self.per_key.entry(key).or_default();
        *n += 1;
        let now = *n;
        self.moved(now - 1, now);
    }

    /// One item fewer under `key` (nothing if it has none).
    pub fn sub(&mut self, key: &K) {
        let Some(n) = self.per_key.get_mut(key) else { return };
        *n -= 1;
        let now = *n;
        if now == 0 {
            self.per_key.remove(key);
        }
        self.moved(now + 1, now);
    }

    /// The largest count of any key (0 when empty).
    pub fn max(&self) -> usize {
        self.keys_with.keys().next_back().copied().unwrap_or(0)
    }
}

/// A multiset of lengths, with its largest.
#[derive(Debug, Clone, Default)]
pub struct Lengths(BTreeMap<usize, usize>);

impl Lengths {
    fn add(&mut self, len: usize) {
        *self.0.entry(len).or_default() += 1;
    }
    fn sub(&mut self, len: usize) {
        if let Some(n) = self.0.get_mut(&len) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(&len);
            }
        }
    }
    /// The largest length (0 when empty).
    pub fn max(&self) -> usize {
        self.0.keys().next_back().copied().unwrap_or(0)
    }
}

/// The list sizes a query's cost is bounded by.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Containers per host.
    pub host_containers: Counter<String>,
    /// Containers per pool.
    pub pool_containers: Counter<String>,
    /// Members per CEN.
    pub cen_members: Counter<String>,
    /// CENs per container (its interfaces).
    pub container_cens: Counter<ContainerKey>,
    /// CINs laid over each CEN.
    pub cen_cins: Counter<String>,
    /// Member interfaces with an address in each CIN.
    pub cin_members: Counter<String>,
    /// How many CENs each CIN is over.
    pub cin_cens: Lengths,
    /// How many CINs each pool has.
    pub pool_cins: Lengths,
}

impl Tally {
    /// Counts a record in.
    pub(crate) fn add(&mut self, rec: &Record) {
        match rec {
            Record::Container(c) => {
                self.host_containers.add(c.host.clone());
                if let Some(p) = &c.pool {
                    self.pool_containers.add(p.clone());
                }
            }
            Record::Member(m) => {
                self.cen_members.add(m.cen.clone());
                self.container_cens.add(m.key());
                for cin in m.addresses.keys() {
                    self.cin_members.add(cin.clone());
                }
            }
            Record::Cin(c) => {
                self.cin_cens.add(c.cens.len());
                for cen in &c.cens {
                    self.cen_cins.add(cen.clone());
                }
            }
            Record::Cpool(p) => self.pool_cins.add(p.cins.len()),
            Record::Host(_) | Record::Cen(_) => {}
        }
    }

    /// Counts a record out.
    pub(crate) fn sub(&mut self, rec: &Record) {
        match rec {
            Record::Container(c) => {
                self.host_containers.sub(&c.host);
                if let Some(p) = &c.pool {
                    self.pool_containers.sub(p);
                }
            }
            Record::Member(m) => {
                self.cen_members.sub(&m.cen);
                self.container_cens.sub(&m.key());
                for cin in m.addresses.keys() {
                    self.cin_members.sub(cin);
                }
            }
            Record::Cin(c) => {
                self.cin_cens.sub(c.cens.len());
                for cen in &c.cens {
                    self.cen_cins.sub(cen);
                }
            }
            Record::Cpool(p) => self.pool_cins.sub(p.cins.len()),
            Record::Host(_) | Record::Cen(_) => {}
        }
    }

    /// The largest figures: (containers per host, per pool, members per
    /// CEN, CENs per container, CINs per CEN, members per CIN, CENs per
    /// CIN, CINs per pool).
    pub fn maxima(&self) -> [usize; 8] {
        [
            self.host_containers.max(),
            self.pool_containers.max(),
            self.cen_members.max(),
            self.container_cens.max(),
            self.cen_cins.max(),
            self.cin_members.max(),
            self.cin_cens.max(),
            self.pool_cins.max(),
        ]
    }

    /// The same figures counted from scratch over every record (for tests).
    pub fn recount(t: &super::Topology) -> Tally {
        let mut fresh = Tally::default();
        for r in t.records() {
            fresh.add(&r);
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_keeps_its_largest_through_adds_and_removals() {
        let mut c: Counter<&str> = Counter::default();
        assert_eq!(c.max(), 0);
        c.add("a");
        c.add("a");
        c.add("b");
        assert_eq!(c.max(), 2);
        c.sub(&"a");
        assert_eq!(c.max(), 1);
        c.sub(&"a");
        c.sub(&"a"); // none left: nothing happens
        assert_eq!(c.max(), 1);
        c.sub(&"b");
        assert_eq!(c.max(), 0);
        assert!(c.per_key.is_empty() && c.keys_with.is_empty());
    }

    #[test]
    fn lengths_keep_their_largest() {
        let mut l = Lengths::default();
        l.add(3);
        l.add(5);
        l.add(5);
        l.sub(5);
        assert_eq!(l.max(), 5);
        l.sub(5);
        assert_eq!(l.max(), 3);
        l.sub(7);
        assert_eq!(l.max(), 3);
    }
}
