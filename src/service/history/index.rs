//! The in-memory index of the kept change log: undo blocks (the periodic
//! snapshots `at` starts from) and the revisions that touched each record.
//!
//! Invariants:
//! - block `b` covers revisions `(b·K, (b+1)·K]`; its images are, for each
//!   record a recorded change of the block touched, the image the record
//!   had at `b·K` (the first before-image; `None` for a record that did
//!   not exist). Applied to the topology at any revision inside the block
//!   (or at its end), they give the topology at `b·K`: a record touched
//!   only after that revision had the same image there as at `b·K`;
//! - `last` is the last revision recorded; changes are recorded in order,
//!   one revision after the other (a gap makes the index not ready, to be
//!   rebuilt from the store's log);
//! - what lies wholly at or below the log's floor is dropped: the blocks
//!   ending there and their revisions in `touched` (so both are bounded by
//!   the kept log plus one block).

use crate::model::{Change, EntityKey, Images, Record};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

/// The index (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Index {
    /// Whether it covers every kept change up to `last`.
    pub ready: bool,
    pub last: u64,
    pub blocks: BTreeMap<u64, Block>,
    /// The revisions that touched each record, oldest first.
    pub touched: HashMap<EntityKey, VecDeque<u64>>,
    /// Estimated bytes of the blocks' images.
    pub bytes: usize,
    /// Images held by the blocks.
    pub images: usize,
    /// Revisions held by `touched`.
    pub revisions: usize,
}

/// The images of one block (see the module docs). Shared, so that a
/// materialization takes them without holding the index while it applies
/// them (the block being filled is copied on its next change then).
#[derive(Debug, Default)]
pub(super) struct Block {
    pub undo: Arc<Images>,
    pub bytes: usize,
}

/// An estimate of the memory one kept image takes: its map entry and key,
/// plus the record's serialized size (its strings dominate).
fn approx_bytes(key: &EntityKey, rec: &Option<Record>) -> usize {
    let entry = std::mem::size_of::<(EntityKey, Option<Record>)>() + 32;
    let key_heap = key.id().len();
    let rec_heap = rec.as_ref().and_then(|r| serde_json::to_vec(r).ok()).map_or(0, |v| v.len());
    entry + key_heap + rec_heap
}

impl Index {
    /// An empty index, ready, whose next change is `floor + 1`.
    pub fn starting_at(floor: u64) -> Index {
        Index { ready: true, last: floor, ..Index::default() }
    }

    /// Records one committed change; a change out of order makes the
    /// index not ready (and empties it).
    pub fn record(&mut self, c: &Change, every: u64) {
        if !self.ready || c.revision <= self.last {
            return;
        }
        if c.revision != self.last + 1 {
            *self = Index::default();
            return;
        }
        let block = self.blocks.entry((c.revision - 1) / every).or_default();
        for it in &c.items {
            if !block.undo.contains_key(&it.key) {
                let bytes = approx_bytes(&it.key, &it.before);
                block.bytes += bytes;
                self.bytes += bytes;
                self.images += 1;
                Arc::make_mut(&mut block.undo).insert(it.key.clone(), it.before.clone());
            }
            let revs = self.touched.entry(it.key.clone()).or_default();
            if revs.back() != Some(&c.revision) {
                revs.push_back(c.revision);
                self.revisions += 1;
            }
        }
        self.last = c.revision;
    }

    /// Drops the blocks that end at or below `floor`, and their revisions.
    pub fn trim(&mut self, floor: u64, every: u64) {
        while let Some((&b, _)) = self.blocks.first_key_value() {
            let end = (b + 1).saturating_mul(every);
            if end > floor {
                break;
            }
            let Some(block) = self.blocks.remove(&b) else { break };
            for key in block.undo.keys() {
                if let Some(revs) = self.touched.get_mut(key) {
                    while revs.front().is_some_and(|r| *r <= end) {
                        revs.pop_front();
                        self.revisions -= 1;
                    }
                    if revs.is_empty() {
                        self.touched.remove(key);
                    }
                }
            }
            self.bytes -= block.bytes;
            self.images -= block.undo.len();
        }
    }

    /// The records touched by a change in `(from, to]` (and possibly some
    /// more of the blocks at either end: a superset), in key order.
    pub fn touched_between(&self, from: u64, to: u64, every: u64) -> Vec<EntityKey> {
        if to <= from {
            return Vec::new();
        }
        let mut keys: std::collections::BTreeSet<&EntityKey> = std::collections::BTreeSet::new();
        for (_, block) in self.blocks.range(from / every..=(to - 1) / every) {
            keys.extend(block.undo.keys());
        }
        keys.into_iter().cloned().collect()
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

    fn change(revision: u64, id: &str, before: Option<Record>, after: Option<Record>) -> Change {
        let key = EntityKey::Cen(id.into());
        Change {
            revision,
            mutation: "m".into(),
            at_ms: 0,
            at_us: 0,
            actor: String::new(),
            items: vec![ChangeItem { key, before, after }],
        }
    }

    /// A block keeps the first before-image of each record; a gap empties
    /// the index; trimming drops whole blocks and their revisions.
    #[test]
    fn blocks_keep_first_images_and_trim_whole() {
        let mut ix = Index::starting_at(0);
        ix.record(&change(1, "a", None, Some(cen("a", 1))), 3);
        ix.record(&change(2, "a", Some(cen("a", 1)), Some(cen("a", 2))), 3);
        ix.record(&change(3, "b", None, Some(cen("b", 1))), 3);
        ix.record(&change(4, "a", Some(cen("a", 2)), Some(cen("a", 3))), 3);
        assert_eq!(ix.blocks.len(), 2);
        assert_eq!(ix.blocks[&0].undo.get(&EntityKey::Cen("a".into())), Some(&None));
        assert_eq!(ix.blocks[&1].undo.get(&EntityKey::Cen("a".into())), Some(&Some(cen("a", 2))));
        assert_eq!(ix.touched[&EntityKey::Cen("a".into())], [1, 2, 4]);
        assert_eq!((ix.images, ix.revisions), (3, 4));
        assert_eq!(ix.touched_between(3, 4, 3), vec![EntityKey::Cen("a".into())]);
        // The floor inside block 1 keeps it; at its end, it goes.
        ix.trim(2, 3);
        assert_eq!(ix.blocks.len(), 2);
        ix.trim(3, 3);
        assert_eq!(ix.blocks.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(ix.touched[&EntityKey::Cen("a".into())], [4]);
        assert!(!ix.touched.contains_key(&EntityKey::Cen("b".into())));
        assert_eq!((ix.images, ix.revisions), (1, 1));
        assert_eq!(ix.bytes, ix.blocks[&1].bytes);
        // A gap: not ready, empty; later changes are ignored.
        ix.record(&change(6, "c", None, Some(cen("c", 1))), 3);
        assert!(!ix.ready && ix.blocks.is_empty() && ix.touched.is_empty());
        ix.record(&change(7, "c", None, Some(cen("c", 1))), 3);
        assert!(ix.blocks.is_empty());
    }
}
