//! One map bounded in bytes, least recently used out first, in shards
//! each under its own lock: what the document cache and the answer cache
//! keep their entries in (each with its own rules of what to keep and
//! when an entry answers).
//!
//! Invariants:
//! - the bytes accounted for a shard's entries (each entry's cost, given
//!   when it is kept) never exceed the shard's share of the bound: the
//!   least recently used entries of the shard are evicted first, and an
//!   entry costing more than the share is not kept;
//! - no global lock: an entry is found under the lock of one of
//!   [`SHARDS`] shards, chosen by the first byte of its key (a SHA-256
//!   digest, so keys spread evenly).

use super::{Key, SHARDS};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};

struct Slot<V> {
    used: u64,
    cost: usize,
    value: V,
}

struct Shard<V> {
    map: HashMap<Key, Slot<V>>,
    /// Keys by their last use, oldest first.
    order: BTreeMap<u64, Key>,
    bytes: usize,
    tick: u64,
}

impl<V> Default for Shard<V> {
    fn default() -> Self {
        Shard { map: HashMap::new(), order: BTreeMap::new(), bytes: 0, tick: 0 }
    }
}

impl<V> Shard<V> {
    fn remove(&mut self, key: &Key) {
        if let Some(s) = self.map.remove(key) {
            self.order.remove(&s.used);
            self.bytes -= s.cost;
        }
    }
}

/// What [`Lru::get`] makes of the value it finds.
pub enum Seen<R> {
    /// Answers `R`; the entry is marked as just used.
    Use(R),
    /// The entry answers nothing any more: it is dropped.
    Drop,
    /// The entry is left as it is, unanswered.
    Leave,
}

/// Values by key, bounded in bytes.
pub struct Lru<V> {
    shards: Vec<Mutex<Shard<V>>>,
    share: usize,
}

impl<V> Lru<V> {
    /// A map of at most `bytes` bytes (0: nothing is kept).
    pub fn new(bytes: usize) -> Lru<V> {
        Lru { shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(), share: bytes / SHARDS }
    }

    /// Each shard's share of the bound.
    pub fn share(&self) -> usize {
        self.share
    }

    fn shard(&self, key: &Key) -> &Mutex<Shard<V>> {
        &self.shards[usize::from(key[0]) % SHARDS]
    }

    /// What `seen` makes of the value of `key` (done under its shard's
    /// lock); `None` when there is none.
    pub fn get<R>(&self, key: &Key, seen: impl FnOnce(&V) -> Seen<R>) -> Option<Seen<R>> {
        let mut guard = self.shard(key).lock();
        let s = &mut *guard;
        let slot = s.map.get_mut(key)?;
        let found = seen(&slot.value);
        match found {
            Seen::Use(_) => {
                s.tick += 1;
                s.order.remove(&slot.used);
                slot.used = s.tick;
                s.order.insert(s.tick, *key);
            }
            Seen::Drop => s.remove(key),
            Seen::Leave => {}
        }
        Some(found)
    }

    /// Keeps `value`, accounted at `cost` bytes, under `key` (unless
    /// `stays` says the value there now stays), then evicts the least
    /// recently used entries of the shard until it is within its share.
    /// Nothing is kept at a cost over the share. The entries evicted.
    pub fn insert(&self, key: Key, value: V, cost: usize, stays: impl FnOnce(&V) -> bool) -> usize {
        if cost > self.share {
            return 0;
        }
        let mut guard = self.shard(&key).lock();
        let s = &mut *guard;
        if s.map.get(&key).is_some_and(|old| stays(&old.value)) {
            return 0;
        }
        s.remove(&key);
        s.tick += 1;
        s.map.insert(key, Slot { used: s.tick, cost, value });
        s.order.insert(s.tick, key);
        s.bytes += cost;
        let mut evicted = 0;
        while s.bytes > self.share {
            let Some((_, oldest)) = s.order.first_key_value().map(|(t, k)| (*t, *k)) else { break };
            s.remove(&oldest);
            evicted += 1;
        }
        evicted
    }

    /// Bytes accounted for the entries now.
    pub fn bytes(&self) -> usize {
        self.shards.iter().map(|s| s.lock().bytes).sum()
    }

    /// Entries now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map.len()).sum()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound, in bytes.
    pub fn bound(&self) -> usize {
        self.share * SHARDS
    }
}
