//! Time travel: the topology as it stood right after any kept revision,
//! what changed between two revisions, and the changes that touched one
//! record.
//!
//! What it keeps, in memory only (the store's change log is the only thing
//! on disk; nothing is added to the state file or to etcd):
//! - undo blocks, the periodic snapshots: for each block of `every`
//!   revisions (`--history-every`), the image each record touched in the
//!   block had at the block's start ([`index`]). Changes carry full before
//!   images, so the topology at `N` is a later topology with the blocks in
//!   between undone, then fewer than `every` changes read from the log;
//! - per record, the revisions that touched it (for `history`), trimmed
//!   with the log;
//! - the last [`CACHED`] materialized topologies, so a scrub of a timeline
//!   or repeated reads cost only their answer.
//!
//! Bounds: the blocks hold at most one image per record and block (a
//!   creation only its key), the per-record index one revision per record
//!   and change; both cover the kept log (plus one block at the floor) and
//!   are dropped as it is trimmed. Both are reported in `/metrics`.
//!
//! Cost of `at(N)`: one copy of the nearest materialized topology at or
//! after `N` (cached, or the live one: O(n)), the blocks in between undone
//! (each at most the distinct records its changes touched), and fewer than
//! `every` changes read from the store's log and undone. The live path
//! pays only the recording of each change (O(change)).
//!
//! After a start (or a reload that skipped revisions) the index is rebuilt
//! from the store's log in the background; start never waits for it, the
//! first history read does.

mod index;

use super::{Service, REPLAY_PAGE};
use crate::model::{Change, EntityKey, Images, ModelError, Record, Topology};
use index::Index;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;

/// Revisions per undo block by default (`--history-every`): an `at` read
/// reads and undoes fewer than this many changes from the log.
pub const DEFAULT_HISTORY_EVERY: u64 = 1_000;
/// Materialized topologies kept for repeated reads.
pub const CACHED: usize = 2;
/// Most entries of one page of `diff` or `history`.
pub const MAX_PAGE: usize = 1_000;

/// The history of one service (see the module docs).
#[derive(Debug)]
pub(crate) struct History {
    every: u64,
    index: Mutex<Index>,
    cache: Mutex<VecDeque<(u64, Arc<Topology>)>>,
    /// One build or materialization at a time.
    building: tokio::sync::Mutex<()>,
}

/// What the history holds, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryStats {
    /// Revisions per block.
    pub every: u64,
    /// Whether the index is built.
    pub ready: bool,
    /// Undo blocks held (the snapshots).
    pub blocks: usize,
    /// Images the blocks hold.
    pub images: usize,
    /// Estimated bytes of those images.
    pub bytes: usize,
    /// Revisions in the per-record index.
    pub revisions: usize,
    /// Records in the per-record index.
    pub records: usize,
    /// Materialized topologies cached, and the records they hold.
    pub cached: usize,
    pub cached_records: usize,
}

/// One record's images at two revisions (an entry of [`Service::diff`]).
#[derive(Debug, Clone, PartialEq)]
pub struct DiffItem {
    pub key: EntityKey,
    pub before: Option<Record>,
    pub after: Option<Record>,
}

impl History {
    pub(crate) fn new(every: u64) -> History {
        History {
            every: every.max(1),
            index: Mutex::new(Index::default()),
            cache: Mutex::new(VecDeque::new()),
            building: tokio::sync::Mutex::new(()),
        }
    }

    /// Records a committed change (before the live topology shows it) and
    /// drops what the log no longer keeps.
    pub(crate) fn record(&self, change: &Change, floor: u64) {
        let mut ix = self.index.lock();
        ix.record(change, self.every);
        ix.trim(floor, self.every);
    }

    /// Forgets the index (revisions skipped by a reload): rebuilt on the
    /// next read.
    pub(crate) fn reset(&self) {
        *self.index.lock() = Index::default();
    }

    fn cached(&self, revision: u64) -> Option<Arc<Topology>> {
        let mut cache = self.cache.lock();
        let i = cache.iter().position(|(r, _)| *r == revision)?;
        let hit = cache.remove(i)?;
        let t = Arc::clone(&hit.1);
        cache.push_front(hit);
        Some(t)
    }

    /// The cached topology at the lowest revision at or after `revision`.
    fn nearest_after(&self, revision: u64) -> Option<(u64, Arc<Topology>)> {
        let cache = self.cache.lock();
        cache.iter().filter(|(r, _)| *r >= revision).min_by_key(|(r, _)| *r).map(|(r, t)| (*r, Arc::clone(t)))
    }

    /// Caches a materialized topology; the one it evicts is freed off the
    /// request's path (freeing a large topology takes as long as a copy).
    fn remember(&self, revision: u64, t: Arc<Topology>) {
        let evicted = {
            let mut cache = self.cache.lock();
            cache.push_front((revision, t));
            let keep = CACHED.min(cache.len());
            cache.split_off(keep)
        };
        if evicted.is_empty() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || drop(evicted))),
            Err(_) => drop(evicted),
        }
    }

    pub(crate) fn stats(&self) -> HistoryStats {
        let ix = self.index.lock();
        let cache = self.cache.lock();
        HistoryStats {
            every: self.every,
            ready: ix.ready,
            blocks: ix.blocks.len(),
            images: ix.images,
            bytes: ix.bytes,
            revisions: ix.revisions,
            records: ix.touched.len(),
            cached: cache.len(),
            cached_records: cache.iter().map(|(_, t)| t.node_count()).sum(),
        }
    }
}

/// The images that undo a change: each record as it was before it.
fn undo_images(c: &Change) -> Images {
    c.items.iter().map(|i| (i.key.clone(), i.before.clone())).collect()
}

impl Service {
    /// The revisions `at` answers: the oldest kept and the current one.
    pub fn kept_revisions(&self) -> (u64, u64) {
        let current = self.revision();
        (self.store.floor().min(current), current)
    }

    /// What the history holds (for `/metrics`).
    pub fn history_stats(&self) -> HistoryStats {
        self.history.stats()
    }

    /// Refuses a revision outside the kept ones: a future one is
    /// `BAD_REQUEST`, one older than the oldest kept `GONE` naming it.
    pub fn check_kept(&self, revision: u64) -> Result<(), ModelError> {
        let (oldest, current) = self.kept_revisions();
        if revision > current {
            return Err(ModelError::bad_request(format!(
                "revision {revision} is ahead of the current revision {current}"
            )));
        }
        if revision < oldest {
            return Err(ModelError::gone(format!(
                "revision {revision} is no longer kept: the oldest kept revision is {oldest} (the log keeps the last {} changes)",
                self.store.keep()
            )));
        }
        Ok(())
    }

    /// Builds the index from the store's log if it is not built: the kept
    /// log is read without holding anything, then the rest under the
    /// writer lock (so no change slips between), and the index installed.
    async fn history_ready(&self) -> Result<(), ModelError> {
        if self.history.index.lock().ready {
            return Ok(());
        }
        let _one = self.history.building.lock().await;
        self.build_index().await
    }

    /// [`Service::history_ready`], the caller holding `building`.
    async fn build_index(&self) -> Result<(), ModelError> {
        if self.history.index.lock().ready {
            return Ok(());
        }
        let every = self.history.every;
        let mut ix = Index::starting_at(self.store.floor());
        self.read_into(&mut ix).await?;
        let _serial = self.writer.lock().await;
        self.read_into(&mut ix).await?;
        ix.trim(self.store.floor(), every);
        if !ix.ready || ix.last != self.revision() {
            return Err(ModelError::unavailable(format!(
                "the change log reaches revision {} while the model is at {}; try again",
                ix.last,
                self.revision()
            )));
        }
        *self.history.index.lock() = ix;
        Ok(())
    }

    /// Reads the log after the index's last revision into it, restarting
    /// from the floor if the log moved past it meanwhile.
    async fn read_into(&self, ix: &mut Index) -> Result<(), ModelError> {
        loop {
            let page = match self.store.changes_after(ix.last, REPLAY_PAGE * 4).await {
                Ok(p) => p,
                Err(crate::store::StoreError::Gone(g)) => {
                    *ix = Index::starting_at(g.floor);
                    continue;
                }
                Err(e) => return Err(ModelError::unavailable(format!("could not read the change log: {e}"))),
            };
            let Some(last) = page.last().map(|c| c.revision) else { return Ok(()) };
            for c in &page {
                ix.record(c, self.history.every);
            }
            if !ix.ready || ix.last != last {
                return Err(ModelError::internal(format!(
                    "the change log has a gap before revision {last}; its history cannot be read"
                )));
            }
        }
    }

    /// Starts building the history index in the background (at start).
    pub(crate) fn build_history_soon(self: &Arc<Self>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let weak = Arc::downgrade(self);
        rt.spawn(async move {
            let Some(s) = weak.upgrade() else { return };
            if let Err(e) = s.history_ready().await {
                tracing::warn!(error = %e, "could not index the change log yet; the first history read tries again");
            }
        });
    }

    /// The topology as it stood right after `revision` (read-only).
    pub async fn topology_at(&self, revision: u64) -> Result<Arc<Topology>, ModelError> {
        self.check_kept(revision)?;
        if let Some(t) = self.history.cached(revision) {
            return Ok(t);
        }
        self.history_ready().await?;
        let _one = self.history.building.lock().await;
        self.build_index().await?;
        if let Some(t) = self.history.cached(revision) {
            return Ok(t);
        }
        let (base_rev, mut t) = match self.history.nearest_after(revision) {
            Some((r, t)) => (r, Topology::clone(&t)),
            None => {
                let (t, r) = self.read_at(Topology::clone);
                (r, t)
            }
        };
        let every = self.history.every;
        // The first block boundary at or after `revision`.
        let boundary = revision.div_ceil(every).saturating_mul(every);
        let upper = if boundary < base_rev {
            // Taken under the index's lock, applied without it: a commit
            // never waits for a materialization.
            let blocks: Vec<Arc<Images>> = {
                let ix = self.history.index.lock();
                if ix.last < base_rev {
                    return Err(ModelError::unavailable(
                        "the history index is behind the model; try again".to_string(),
                    ));
                }
                ix.blocks
                    .range(boundary / every..=(base_rev - 1) / every)
                    .rev()
                    .map(|(_, b)| Arc::clone(&b.undo))
                    .collect()
            };
            for undo in blocks {
                t.commit(&undo);
            }
            boundary
        } else {
            base_rev
        };
        if upper > revision {
            let limit = usize::try_from(upper - revision).unwrap_or(usize::MAX);
            let changes = self.change_log(revision, limit).await?;
            for c in changes.iter().rev().filter(|c| c.revision <= upper) {
                t.commit(&undo_images(c));
            }
        }
        let t = Arc::new(t);
        self.history.remember(revision, Arc::clone(&t));
        Ok(t)
    }

    /// The commit time of a revision (ms since the Unix epoch), if the log
    /// still holds its change.
    pub async fn revision_time(&self, revision: u64) -> Option<f64> {
        let floor = self.store.floor();
        if revision == 0 || revision <= floor {
            return None;
        }
        let page = self.store.changes_after(revision - 1, 1).await.ok()?;
        page.first().filter(|c| c.revision == revision).map(Change::at_millis)
    }

    /// What differs between the topologies at `from` and at `to`: one item
    /// per record whose images differ, in key order, after the key `after`,
    /// at most `first` of them.
    pub async fn diff(
        &self,
        from: u64,
        to: u64,
        after: Option<&EntityKey>,
        first: usize,
    ) -> Result<Vec<DiffItem>, ModelError> {
        if from > to {
            return Err(ModelError::bad_request(format!("from {from} is after to {to}")));
        }
        self.check_kept(from)?;
        self.check_kept(to)?;
        let old = self.topology_at(from).await?;
        let new = self.topology_at(to).await?;
        let keys = self.history.index.lock().touched_between(from, to, self.history.every);
        let start = after.map_or(0, |a| keys.partition_point(|k| k <= a));
        let mut out = Vec::new();
        for key in &keys[start..] {
            if out.len() >= first {
                break;
            }
            let (before, after) = (old.get(key), new.get(key));
            if before != after {
                out.push(DiffItem { key: key.clone(), before: before.cloned(), after: after.cloned() });
            }
        }
        Ok(out)
    }

    /// The kept changes that touched one record, newest first, only those
    /// before revision `before` when given, at most `first`.
    pub async fn history_of(
        &self,
        key: &EntityKey,
        before: Option<u64>,
        first: usize,
    ) -> Result<Vec<Change>, ModelError> {
        self.history_ready().await?;
        let floor = self.store.floor();
        let revisions: Vec<u64> = {
            let ix = self.history.index.lock();
            ix.touched.get(key).map_or_else(Vec::new, |revs| {
                revs.iter()
                    .rev()
                    .filter(|r| **r > floor && before.is_none_or(|b| **r < b))
                    .take(first)
                    .copied()
                    .collect()
            })
        };
        let mut out = Vec::with_capacity(revisions.len());
        for r in revisions {
            let page = self.change_log(r - 1, 1).await?;
            if let Some(mut c) = page.into_iter().next().filter(|c| c.revision == r) {
                c.items.retain(|i| i.key == *key);
                out.push(c);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
