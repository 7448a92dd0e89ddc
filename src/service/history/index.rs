//! The in-memory index of the kept change log: undo blocks (the periodic
//! snapshots `at` reads from), the revisions that touched each record, and
//! the changes of the block being filled.
//!
//! Invariants:
//! - block `b` covers revisions `(b·K, (b+1)·K]`; its images are, for each
//!   record a recorded change of the block touched, the image the record
//!   had at `b·K` (the first before-image; `None` for a record that did
//!   not exist). So the image of a record at any revision before the block
//!   whose first touch after that revision lies in the block is the
//!   block's image; `delta` is how many records of each kind the block's
//!   changes made minus those they deleted;
//! - `touched` holds, per record (in key order, so the records of a kind,
//!   a CEN's memberships or a host's containers are one range), the
//!   recorded revisions that touched it, oldest first; `members` holds
//!   the touched memberships again by container, for a container's
//!   memberships; each key is allocated once, in `touched`, and shared
//!   (`Arc`) by the blocks' images and `behind`;
//! - after each trim (the history trims after every commit), the images
//!   of every block but the last are frozen into a sorted slice
//!   ([`Images`]);
//! - `current` holds the changes of the block `last` is in (fewer than K);
//!   when the next block starts they are handed to its `done` slot, where
//!   a view at a revision inside that block finds them (the index drops
//!   them then);
//! - `last` is the last revision recorded; changes are recorded in order,
//!   one revision after the other (a gap makes the index not ready, to be
//!   rebuilt from the store's log); every change in `(start, last]` is
//!   recorded;
//! - `start` is the log's floor (the oldest kept revision) as last
//!   trimmed to; a read at `N >= start` needs, of record `k`, only the
//!   first revision after `N` that touched it, and when that lies in a
//!   block starting at or after `N`, that block's image (a read inside a
//!   block takes its own block's changes after `N` from the log). So
//!   nothing at or below `start` is held:
//!   - no block ending at or below it;
//!   - no image of a block starting below it (`passed`: the block the
//!     floor lies in, whose images no kept revision reads; a block the
//!     floor passed before its first change never gets any);
//!   - no revision at or below it in `touched`, but for a record touched
//!     in the floor's block both at or below the floor and above it,
//!     whose revisions there stay until the floor passes its last one
//!     there (so at most one block's revisions linger);
//!   - a passed block keeps, in `behind`, each record it touched above
//!     the floor with (at least) its last revision in the block, in
//!     revision order, so that the floor moving on finds what it passes
//!     without a walk: a trim costs what it drops;
//! - so the images cover the blocks starting at or after the floor (at
//!   most one per record and block), and `touched` the kept log's
//!   revisions (plus those lingering in the floor's block);
//! - `generation` differs between every two indexes a service builds, so a
//!   view made on one knows when it was replaced.

use crate::model::{Change, EntityKey, Record};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Arc, OnceLock};

/// The changes of one block after some revision, in revision order.
pub(super) type Log = Arc<[Arc<Change>]>;
/// Where the changes of a block are put once it is complete.
pub(super) type Slot = Arc<OnceLock<Log>>;

/// Records made minus records deleted, per kind, in [`kind_index`] order.
pub(super) type Delta = [i64; 6];

/// The position of a key's kind in a [`Delta`].
pub(super) fn kind_index(key: &EntityKey) -> usize {
    match key {
        EntityKey::Host(_) => 0,
        EntityKey::Container(_) => 1,
        EntityKey::Cen(_) => 2,
        EntityKey::Cin(_) => 3,
        EntityKey::Cpool(_) => 4,
        EntityKey::Member(_) => 5,
    }
}

/// Adds what one change made and deleted to `d`.
pub(super) fn add_delta(d: &mut Delta, c: &Change) {
    for it in &c.items {
        d[kind_index(&it.key)] += i64::from(it.after.is_some()) - i64::from(it.before.is_some());
    }
}

/// The index (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Index {
    /// Whether it covers every kept change up to `last`.
    pub ready: bool,
    pub generation: u64,
    pub start: u64,
    pub last: u64,
    pub blocks: BTreeMap<u64, Block>,
    /// The revisions that touched each record, oldest first. Each key is
    /// allocated once, shared by the blocks' images and `behind`.
    pub touched: BTreeMap<Arc<EntityKey>, Revs>,
    /// The touched memberships as (host, container, CEN).
    pub members: BTreeSet<(String, String, String)>,
    /// The changes of the block being filled.
    pub current: Option<Current>,
    /// Estimated bytes of the blocks' images.
    pub bytes: usize,
    /// Images held by the blocks.
    pub images: usize,
    /// Revisions held by `touched`.
    pub revisions: usize,
}

/// The revisions that touched one record, oldest first; never empty. One
/// revision (most records) takes no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Revs {
    One(u64),
    Many(Vec<u64>),
}

impl std::ops::Deref for Revs {
    type Target = [u64];
    fn deref(&self) -> &[u64] {
        match self {
            Revs::One(r) => std::slice::from_ref(r),
            Revs::Many(v) => v,
        }
    }
}

impl Revs {
    fn push(&mut self, r: u64) {
        match self {
            Revs::One(first) => *self = Revs::Many(vec![*first, r]),
            Revs::Many(v) if v.is_empty() => *self = Revs::One(r),
            Revs::Many(v) => v.push(r),
        }
    }

    /// Drops the revisions at or below `end`; how many, and whether any
    /// is left.
    fn drop_through(&mut self, end: u64) -> (usize, bool) {
        let k = self.partition_point(|r| *r <= end);
        let left = self.len() - k;
        if let Revs::Many(v) = self {
            v.drain(..k);
            if let [one] = v[..] {
                *self = Revs::One(one);
            }
        }
        (k, left > 0)
    }
}

/// One block (see the module docs). Images are boxed: a record is large
/// inline, and most images of a block that made many records are `None`,
/// which then takes one word.
#[derive(Debug, Default)]
pub(super) struct Block {
    /// The images at the block's start, while the floor is at or below it.
    pub undo: Images,
    pub bytes: usize,
    pub delta: Delta,
    /// Whether the floor passed the block's start (its images are gone).
    pub passed: bool,
    /// Once passed: the records with revisions in the block above the
    /// floor, each with (at least) the last of them, oldest first, so that
    /// the floor moving on finds the revisions it leaves behind.
    pub behind: VecDeque<(u64, Arc<EntityKey>)>,
}

/// A record's image at a block's start (`None`: it did not exist).
pub(super) type Image = Option<Box<Record>>;

/// A block's images by key: a map while the block is filled, then (once
/// the next block has started, at the trim after that commit) a sorted
/// slice of exactly its size, without the slack of a map's nodes (which
/// keys coming in order leave about half full).
#[derive(Debug)]
pub(super) enum Images {
    Open(BTreeMap<Arc<EntityKey>, Image>),
    Closed(Box<[(Arc<EntityKey>, Image)]>),
}

impl Default for Images {
    fn default() -> Images {
        Images::Open(BTreeMap::new())
    }
}

impl Images {
    /// The image of a record at the block's start, if the block touched it.
    pub fn get(&self, key: &EntityKey) -> Option<&Image> {
        match self {
            Images::Open(m) => m.get(key),
            Images::Closed(v) => v.binary_search_by(|(k, _)| (**k).cmp(key)).ok().map(|i| &v[i].1),
        }
    }

    pub fn contains_key(&self, key: &EntityKey) -> bool {
        self.get(key).is_some()
    }

    pub fn len(&self) -> usize {
        match self {
            Images::Open(m) => m.len(),
            Images::Closed(v) => v.len(),
        }
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records the block touched, in key order.
    pub fn keys(&self) -> Box<dyn Iterator<Item = &EntityKey> + '_> {
        match self {
            Images::Open(m) => Box::new(m.keys().map(|k| &**k)),
            Images::Closed(v) => Box::new(v.iter().map(|(k, _)| &**k)),
        }
    }

    /// Adds a record's image (reopening a closed block, which the index
    /// never adds to).
    fn insert(&mut self, key: Arc<EntityKey>, image: Image) {
        if let Images::Closed(v) = self {
            *self = Images::Open(std::mem::take(v).into_vec().into_iter().collect());
        }
        if let Images::Open(m) = self {
            m.insert(key, image);
        }
    }

    /// Freezes the images of a complete block (costs their number, once).
    fn close(&mut self) {
        if let Images::Open(m) = self {
            *self = Images::Closed(std::mem::take(m).into_iter().collect());
        }
    }

    fn into_keys(self) -> Vec<Arc<EntityKey>> {
        match self {
            Images::Open(m) => m.into_keys().collect(),
            Images::Closed(v) => v.into_vec().into_iter().map(|(k, _)| k).collect(),
        }
    }
}

/// The changes of the block being filled, and where they go when it is
/// complete.
#[derive(Debug, Default)]
pub(super) struct Current {
    pub block: u64,
    pub changes: Vec<Arc<Change>>,
    pub done: Slot,
}

/// An estimate of the memory one kept image takes: its entry (the key is
/// shared with `touched`), plus, for a record, its box and its serialized
/// size (its strings dominate).
fn approx_bytes(rec: &Option<Record>) -> usize {
    let entry = std::mem::size_of::<(Arc<EntityKey>, Image)>();
    let rec_heap =
        rec.as_ref().and_then(|r| serde_json::to_vec(r).ok()).map_or(0, |v| v.len() + std::mem::size_of::<Record>());
    entry + rec_heap
}

/// A membership's entry in [`Index::members`].
fn by_container(key: &EntityKey) -> Option<(String, String, String)> {
    match key {
        EntityKey::Member(m) => Some((m.host.clone(), m.container.clone(), m.cen.clone())),
        _ => None,
    }
}

/// The per-record parts of the index, borrowed for trimming.
struct Touched<'a> {
    map: &'a mut BTreeMap<Arc<EntityKey>, Revs>,
    members: &'a mut BTreeSet<(String, String, String)>,
    revisions: &'a mut usize,
}

impl Touched<'_> {
    /// Drops a record's revisions at or below `floor`, and the record when
    /// none is left.
    fn drop_through(&mut self, key: &EntityKey, floor: u64) {
        let Some(revs) = self.map.get_mut(key) else { return };
        let (dropped, left) = revs.drop_through(floor);
        *self.revisions -= dropped;
        if !left {
            self.map.remove(key);
            if let Some(m) = by_container(key) {
                self.members.remove(&m);
            }
        }
    }
}

impl Index {
    /// An empty index, ready, whose next change is `floor + 1`.
    pub fn starting_at(floor: u64, generation: u64) -> Index {
        Index { ready: true, generation, start: floor, last: floor, ..Index::default() }
    }

    /// Empties the index and makes it not ready (to be rebuilt); views made
    /// on it see that it is.
    pub fn reset(&mut self) {
        *self = Index { generation: self.generation, ..Index::default() };
    }

    /// Records one committed change; a change out of order makes the
    /// index not ready (and empties it). In a block the floor has passed
    /// no image is kept, only the record's revision to drop later.
    pub fn record(&mut self, c: &Arc<Change>, every: u64) {
        if !self.ready || c.revision <= self.last {
            return;
        }
        if c.revision != self.last + 1 {
            self.reset();
            return;
        }
        let b = (c.revision - 1) / every;
        if self.current.as_ref().is_none_or(|cur| cur.block != b) {
            if let Some(done) = self.current.take() {
                let _ = done.done.set(Log::from(done.changes));
            }
            self.current = Some(Current { block: b, ..Current::default() });
        }
        if let Some(cur) = self.current.as_mut() {
            cur.changes.push(Arc::clone(c));
        }
        let block = self.blocks.entry(b).or_default();
        block.passed |= b.saturating_mul(every) < self.start;
        add_delta(&mut block.delta, c);
        for it in &c.items {
            let key = match self.touched.get_key_value(&it.key) {
                Some((key, _)) => Arc::clone(key),
                None => {
                    if let Some(m) = by_container(&it.key) {
                        self.members.insert(m);
                    }
                    Arc::new(it.key.clone())
                }
            };
            if block.passed {
                block.behind.push_back((c.revision, Arc::clone(&key)));
            } else if !block.undo.contains_key(&it.key) {
                let bytes = approx_bytes(&it.before);
                block.bytes += bytes;
                self.bytes += bytes;
                self.images += 1;
                block.undo.insert(Arc::clone(&key), it.before.clone().map(Box::new));
            }
            let revs = self.touched.entry(key).or_insert_with(|| Revs::Many(Vec::new()));
            if revs.last() != Some(&c.revision) {
                revs.push(c.revision);
                self.revisions += 1;
            }
        }
        self.last = c.revision;
    }

    /// Drops what no read at or after `floor` needs: the blocks that end at
    /// or below it; the images of the block it lies in (a read inside a
    /// block takes that block's changes from the log, so a block's images
    /// serve only reads at or before its start); and every revision at or
    /// below it in `touched` (a read at `N >= floor` looks for the first
    /// touch after `N`). Costs what it drops: the block the floor lies in
    /// keeps its records by their last revision in it (`behind`), so the
    /// floor moving within it finds the revisions it passes without a walk.
    pub fn trim(&mut self, floor: u64, every: u64) {
        self.close_complete();
        if floor <= self.start {
            return;
        }
        self.start = floor;
        let mut t = Touched { map: &mut self.touched, members: &mut self.members, revisions: &mut self.revisions };
        while let Some(mut entry) = self.blocks.first_entry() {
            let b = *entry.key();
            if b.saturating_mul(every) >= floor {
                break;
            }
            let end = (b + 1).saturating_mul(every);
            let block = entry.get_mut();
            if !block.passed {
                block.passed = true;
                self.bytes -= block.bytes;
                self.images -= block.undo.len();
                block.bytes = 0;
                let mut behind = Vec::new();
                for key in std::mem::replace(&mut block.undo, Images::Closed(Box::default())).into_keys() {
                    // The record's last revision in the block.
                    let last = t.map.get(&key).and_then(|revs| {
                        let i = revs.partition_point(|r| *r <= end);
                        i.checked_sub(1).map(|i| revs[i])
                    });
                    t.drop_through(&key, floor);
                    if let Some(last) = last.filter(|last| *last > floor) {
                        behind.push((last, key));
                    }
                }
                behind.sort_unstable_by_key(|(r, _)| *r);
                block.behind = behind.into();
            }
            while block.behind.front().is_some_and(|(r, _)| *r <= floor) {
                if let Some((_, key)) = block.behind.pop_front() {
                    t.drop_through(&key, floor);
                }
            }
            if block.behind.len() < block.behind.capacity() / 4 {
                block.behind.shrink_to_fit();
            }
            if end > floor {
                break;
            }
            entry.remove();
            if self.current.as_ref().is_some_and(|cur| cur.block == b) {
                self.current = None;
            }
        }
    }

    /// Freezes the images of the complete blocks (all but the last; see
    /// [`Images`]), once each: outside the live topology's write lock,
    /// as the history trims after each commit.
    fn close_complete(&mut self) {
        for (_, block) in self.blocks.iter_mut().rev().skip(1) {
            if matches!(block.undo, Images::Closed(_)) {
                break;
            }
            block.undo.close();
        }
    }

    /// The records touched by a change in `(from, to]` (and possibly some
    /// more of the blocks `to` lies in: a superset), in key order;
    /// `partial` holds the changes of `from`'s block after `from` (those
    /// of a view at `from`), the blocks starting at or after `from` the
    /// rest.
    pub fn touched_between(&self, from: u64, to: u64, every: u64, partial: &[Arc<Change>]) -> Vec<EntityKey> {
        if to <= from {
            return Vec::new();
        }
        let mut keys: BTreeSet<&EntityKey> = BTreeSet::new();
        for c in partial.iter().filter(|c| c.revision > from && c.revision <= to) {
            keys.extend(c.items.iter().map(|i| &i.key));
        }
        let (first, last) = (from.div_ceil(every), (to - 1) / every);
        if first <= last {
            for (_, block) in self.blocks.range(first..=last) {
                keys.extend(block.undo.keys());
            }
        }
        keys.into_iter().cloned().collect()
    }

    /// Where the changes of `block` go once it is complete: the block being
    /// filled, or the next one (started here, empty; the one being filled
    /// before it is complete then, and handed over).
    pub fn slot_for(&mut self, block: u64) -> Slot {
        if let Some(cur) = self.current.as_ref().filter(|c| c.block == block) {
            return Arc::clone(&cur.done);
        }
        if let Some(done) = self.current.take() {
            let _ = done.done.set(Log::from(done.changes));
        }
        let cur = Current { block, ..Current::default() };
        let slot = Arc::clone(&cur.done);
        self.current = Some(cur);
        slot
    }

    /// Changes held for the block being filled.
    pub fn recent(&self) -> usize {
        self.current.as_ref().map_or(0, |c| c.changes.len())
    }
}

#[cfg(test)]
impl Index {
    /// Asserts the invariants (see the module docs) with the log's floor:
    /// nothing at or below it is held, and every revision above it is
    /// found again when the floor passes it.
    pub fn check_invariants(&self, every: u64, floor: u64) {
        if !self.ready {
            return;
        }
        assert!(self.start <= floor && self.start <= self.last, "start {} floor {floor}", self.start);
        let mut revisions = 0;
        for (key, revs) in &self.touched {
            assert!(!revs.is_empty() && revs.windows(2).all(|w| w[0] < w[1]), "{key:?} {revs:?}");
            assert!(revs[revs.len() - 1] > self.start && revs[revs.len() - 1] <= self.last, "{key:?} {revs:?}");
            revisions += revs.len();
            for r in revs.iter() {
                let block = &self.blocks[&((r - 1) / every)];
                if *r <= self.start {
                    // Left behind only with a later revision in the same
                    // block, whose entry drops it.
                    let later = block.behind.iter().any(|(b, k)| k == key && *b > self.start);
                    assert!(block.passed && later, "{key:?} at {r} at or below {}", self.start);
                } else if block.passed {
                    assert!(block.behind.iter().any(|(b, k)| k == key && b >= r), "{key:?} at {r} not behind");
                } else {
                    assert!(block.undo.contains_key(key), "{key:?} at {r}: no image");
                }
            }
        }
        assert_eq!(revisions, self.revisions);
        let members: BTreeSet<_> = self.touched.keys().filter_map(|k| by_container(k)).collect();
        assert_eq!(members, self.members);
        let (mut images, mut bytes) = (0, 0);
        for (b, block) in &self.blocks {
            assert!((b + 1) * every > self.start, "block {b} ends at or below {}", self.start);
            assert_eq!(block.passed, b * every < self.start, "block {b} start {}", self.start);
            if block.passed {
                assert!(block.undo.is_empty() && block.bytes == 0, "block {b} keeps images");
                assert!(block.behind.iter().zip(block.behind.iter().skip(1)).all(|(x, y)| x.0 <= y.0));
            } else {
                assert!(block.behind.is_empty());
            }
            let open = matches!(block.undo, Images::Open(_));
            assert!(!open || Some(b) == self.blocks.keys().next_back(), "block {b} is complete but open");
            images += block.undo.len();
            bytes += block.bytes;
        }
        assert_eq!((images, bytes), (self.images, self.bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CenRec, ChangeItem};

    fn cen(id: &str, vni: u32) -> Record {
        let mut c: CenRec = serde_json::from_value(serde_json::json!({"id": id})).unwrap();
        c.vni = vni;
        Record::Cen(c)
    }

    fn change(revision: u64, id: &str, before: Option<Record>, after: Option<Record>) -> Arc<Change> {
        let key = EntityKey::Cen(id.into());
        Arc::new(Change {
            revision,
            mutation: "m".into(),
            at_ms: 0,
            at_us: 0,
            actor: String::new(),
            items: vec![ChangeItem { key, before, after }],
        })
    }

    fn key(id: &str) -> EntityKey {
        EntityKey::Cen(id.into())
    }

    /// The floor passing a block's start drops its images and, as it moves
    /// within the block, every revision it passes: an import at revision 1
    /// is gone from the index once the floor is at 1, while its block goes
    /// on; a block the floor has passed keeps no image of later changes.
    #[test]
    fn the_floor_within_a_block_drops_what_it_passes() {
        let mut ix = Index::starting_at(0, 1);
        let mut import = (*change(1, "a", None, Some(cen("a", 1)))).clone();
        for id in ["b", "c"] {
            import.items.push(ChangeItem { key: key(id), before: None, after: Some(cen(id, 1)) });
        }
        ix.record(&Arc::new(import), 10);
        ix.record(&change(2, "a", Some(cen("a", 1)), Some(cen("a", 2))), 10);
        ix.record(&change(3, "d", None, Some(cen("d", 1))), 10);
        assert_eq!((ix.images, ix.revisions, ix.touched.len()), (4, 5, 4));
        ix.check_invariants(10, 0);
        ix.trim(1, 10);
        assert_eq!((ix.images, ix.bytes, ix.revisions), (0, 0, 2));
        assert_eq!(ix.touched.keys().map(|k| (**k).clone()).collect::<Vec<_>>(), [key("a"), key("d")]);
        let behind: Vec<(u64, EntityKey)> = ix.blocks[&0].behind.iter().map(|(r, k)| (*r, (**k).clone())).collect();
        assert_eq!(behind, [(2, key("a")), (3, key("d"))]);
        assert_eq!(ix.start, 1);
        ix.check_invariants(10, 1);
        ix.record(&change(4, "a", Some(cen("a", 2)), Some(cen("a", 3))), 10);
        assert_eq!((ix.images, ix.revisions), (0, 3));
        ix.trim(2, 10);
        assert_eq!(*ix.touched[&key("a")], [4]);
        ix.check_invariants(10, 2);
        ix.trim(4, 10);
        assert!(ix.touched.is_empty() && ix.blocks[&0].behind.is_empty());
        assert_eq!((ix.revisions, ix.blocks.len()), (0, 1));
        ix.check_invariants(10, 4);
        // The next block, started above the floor, keeps its images; the
        // floor passing its start drops them.
        for r in 5..=12 {
            ix.record(&change(r, "e", (r > 5).then(|| cen("e", 1)), Some(cen("e", 1))), 10);
        }
        assert_eq!((ix.images, ix.blocks[&1].undo.len()), (1, 1));
        ix.trim(10, 10);
        assert_eq!((ix.blocks.len(), ix.images, ix.revisions), (1, 1, 2));
        ix.trim(11, 10);
        assert_eq!((ix.images, ix.revisions), (0, 1));
        assert_eq!(ix.blocks[&1].behind, [(12, Arc::new(key("e")))]);
        ix.check_invariants(10, 11);
        // An index started inside a block keeps no image of that block.
        let mut ix = Index::starting_at(5, 2);
        ix.record(&change(6, "a", None, Some(cen("a", 1))), 10);
        assert!(ix.blocks[&0].passed);
        assert_eq!((ix.images, ix.revisions), (0, 1));
        ix.check_invariants(10, 5);
        ix.trim(6, 10);
        assert!(ix.touched.is_empty() && ix.blocks[&0].behind.is_empty());
    }

    /// A block keeps the first before-image of each record; a gap empties
    /// the index; trimming drops whole blocks and their revisions.
    #[test]
    fn blocks_keep_first_images_and_trim_whole() {
        let mut ix = Index::starting_at(0, 1);
        ix.record(&change(1, "a", None, Some(cen("a", 1))), 3);
        ix.record(&change(2, "a", Some(cen("a", 1)), Some(cen("a", 2))), 3);
        ix.record(&change(3, "b", None, Some(cen("b", 1))), 3);
        ix.record(&change(4, "a", Some(cen("a", 2)), Some(cen("a", 3))), 3);
        assert_eq!(ix.blocks.len(), 2);
        // Block 0 is complete: trimming (after each commit) freezes its
        // images, which read the same.
        ix.trim(0, 3);
        assert!(matches!(ix.blocks[&0].undo, Images::Closed(_)) && matches!(ix.blocks[&1].undo, Images::Open(_)));
        assert_eq!(ix.blocks[&0].undo.get(&EntityKey::Cen("a".into())), Some(&None));
        assert_eq!(ix.blocks[&0].undo.get(&EntityKey::Cen("c".into())), None);
        assert_eq!(ix.blocks[&1].undo.get(&EntityKey::Cen("a".into())), Some(&Some(Box::new(cen("a", 2)))));
        assert_eq!(*ix.touched[&EntityKey::Cen("a".into())], [1, 2, 4]);
        assert_eq!((ix.images, ix.revisions), (3, 4));
        assert_eq!(ix.touched_between(3, 4, 3, &[]), vec![EntityKey::Cen("a".into())]);
        // The floor inside block 1 keeps it; at its end, it goes.
        ix.trim(2, 3);
        assert_eq!(ix.blocks.len(), 2);
        ix.trim(3, 3);
        assert_eq!(ix.blocks.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(*ix.touched[&EntityKey::Cen("a".into())], [4]);
        assert_eq!(ix.touched[&EntityKey::Cen("a".into())], Revs::One(4));
        assert!(!ix.touched.contains_key(&EntityKey::Cen("b".into())));
        assert_eq!((ix.images, ix.revisions), (1, 1));
        assert_eq!(ix.bytes, ix.blocks[&1].bytes);
        // Deltas per kind: block 1 (an update) made and deleted none.
        assert_eq!(ix.blocks[&1].delta, [0; 6]);
        assert_eq!(ix.start, 3);
        // The block being filled holds its changes; when the next starts,
        // they go to its slot, where a view finds them.
        assert_eq!(ix.recent(), 1);
        let slot = ix.slot_for(1);
        assert!(slot.get().is_none());
        ix.record(&change(5, "a", Some(cen("a", 3)), Some(cen("a", 4))), 3);
        ix.record(&change(7, "a", Some(cen("a", 4)), None), 3);
        assert!(!ix.ready, "a gap (6 missing) empties the index");
        let mut ix = Index::starting_at(3, 2);
        ix.record(&change(4, "a", Some(cen("a", 2)), Some(cen("a", 3))), 3);
        let slot = ix.slot_for(1);
        ix.record(&change(5, "b", None, Some(cen("b", 1))), 3);
        ix.record(&change(6, "b", Some(cen("b", 1)), None), 3);
        assert!(slot.get().is_none());
        ix.record(&change(7, "c", None, Some(cen("c", 1))), 3);
        let done: Vec<u64> = slot.get().unwrap().iter().map(|c| c.revision).collect();
        assert_eq!(done, [4, 5, 6]);
        assert_eq!((ix.blocks[&1].delta[2], ix.blocks[&2].delta[2]), (0, 1));
        assert_eq!(ix.recent(), 1);
        // A view of the next block, not started yet, gets its slot now.
        let next = ix.slot_for(3);
        assert_eq!(ix.recent(), 0);
        assert!(next.get().is_none());
        let mut ix = Index::starting_at(0, 3);
        ix.record(&change(1, "a", None, Some(cen("a", 1))), 3);
        ix.record(&change(2, "a", Some(cen("a", 1)), Some(cen("a", 2))), 3);
        ix.record(&change(3, "b", None, Some(cen("b", 1))), 3);
        ix.record(&change(4, "a", Some(cen("a", 2)), Some(cen("a", 3))), 3);
        // A gap: not ready, empty; later changes are ignored.
        ix.record(&change(6, "c", None, Some(cen("c", 1))), 3);
        assert!(!ix.ready && ix.blocks.is_empty() && ix.touched.is_empty());
        ix.record(&change(7, "c", None, Some(cen("c", 1))), 3);
        assert!(ix.blocks.is_empty());
    }
}
