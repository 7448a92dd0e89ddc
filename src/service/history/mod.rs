//! Time travel: the topology as it stood right after any kept revision,
//! what changed between two revisions, and the changes that touched one
//! record.
//!
//! What it keeps, in memory only (the store's change log is the only thing
//! on disk; nothing is added to the state file or to etcd):
//! - undo blocks, the periodic snapshots: for each block of `every`
//!   revisions (`--history-every`) starting at or after the log's floor,
//!   the image each record touched in the block had at the block's start,
//!   and how many records of each kind the block made and deleted
//!   ([`index`]);
//! - per record (in key order), the kept revisions that touched it;
//! - the changes of the block being filled (fewer than `every`; shared
//!   with the change stream);
//! - the changes of the last [`LOGS`] older blocks read from the store's
//!   log for views (so reads around one revision, a timeline's scrub,
//!   read the log once).
//!
//! No topology is materialized or cached: a read at `N` answers from the
//! live topology and the index, record by record ([`view`]).
//!
//! Bounds: nothing at or below the log's floor is kept, as no read at a
//!   kept revision needs it: a read at `N` needs, of each record, its
//!   first touch after `N`, and a block's images serve only reads at or
//!   before the block's start (a read inside a block takes the block's
//!   changes after it from the log). So the images are at most one per
//!   record and block for the blocks starting at or after the floor (a
//!   creation only its key), the per-record index one revision per record
//!   and kept change (plus, for a record touched on both sides of the
//!   floor within the floor's block, its revisions there until the floor
//!   passes them); an import older than the floor costs nothing, even
//!   while its block is still kept. Trimming costs what it drops (the
//!   floor's block keeps its records in order of their last revision
//!   there). Both are reported in `/metrics`. A read in progress at a
//!   revision inside a block holds that block's changes after the
//!   revision (fewer than `every`) until it ends.
//!
//! Cost of an `at` read: making the view reads at most `every` changes
//! from the store's log (none when the revision's block is the one being
//! filled or one of the last [`LOGS`] read); then each record read costs
//! a few index lookups, each list the live list plus the touched keys of
//! its range, counts the number of blocks plus `every`. Nothing grows
//! with the topology but the answer. The live path pays only the recording of each change
//! (O(change), inside the live topology's write lock, so that a read
//! under its read lock finds the index at exactly the live revision).
//!
//! A query's cost is bounded before it runs, with the live topology's
//! list sizes (`graphql::cost`), reads through `at` included: a list at a
//! revision longer than any live one is costed at the live bound (or at
//! its `first`).
//!
//! After a start (or a reload that skipped revisions) the index is rebuilt
//! from the store's log in the background; start never waits for it, the
//! first history read does.

mod index;
pub mod view;

use super::{Service, REPLAY_PAGE};
use crate::model::{Change, EntityKey, ErrorCode, ModelError, Record};
use index::{Index, Log, Slot};
use parking_lot::{Mutex, RwLock};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
pub use view::{AtRead, AtView, Reader};

/// Revisions per undo block by default (`--history-every`): making a view
/// at a revision reads fewer than this many changes from the log.
pub const DEFAULT_HISTORY_EVERY: u64 = 1_000;
/// Most entries of one page of `diff` or `history`.
pub const MAX_PAGE: usize = 1_000;
/// Blocks whose changes read from the store's log are kept for the next
/// views in them.
pub const LOGS: usize = 4;

/// The history of one service (see the module docs).
#[derive(Debug)]
pub(crate) struct History {
    every: u64,
    index: RwLock<Index>,
    /// The generation of the next index built.
    generations: AtomicU64,
    /// The changes of blocks read from the store's log, newest read first:
    /// (block, the revision they start after, the changes).
    logs: Mutex<VecDeque<(u64, u64, Log)>>,
    /// One build at a time.
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
    /// Changes of the block being filled held.
    pub recent: usize,
    /// Changes of older blocks held, read from the log for views.
    pub logged: usize,
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
            index: RwLock::new(Index::default()),
            generations: AtomicU64::new(1),
            logs: Mutex::new(VecDeque::new()),
            building: tokio::sync::Mutex::new(()),
        }
    }

    /// Records a committed change. Called inside the live topology's write
    /// lock, with the change that lock makes visible (see the module docs).
    pub(crate) fn record(&self, change: &Arc<Change>) {
        self.index.write().record(change, self.every);
    }

    /// Drops what the log no longer keeps (after the live topology's write
    /// lock is released: freeing a block is not the commit's business).
    pub(crate) fn trim(&self, floor: u64) {
        self.index.write().trim(floor, self.every);
    }

    /// Forgets the index (revisions skipped by a reload): rebuilt on the
    /// next read; views made before it fail from now on.
    pub(crate) fn reset(&self) {
        self.index.write().reset();
        self.logs.lock().clear();
    }

    /// The changes of `block` after `revision`, if read before.
    fn log_of(&self, block: u64, revision: u64) -> Option<Log> {
        let mut logs = self.logs.lock();
        let i = logs.iter().position(|(b, from, _)| *b == block && *from <= revision)?;
        let hit = logs.remove(i)?;
        let log = Arc::clone(&hit.2);
        logs.push_front(hit);
        Some(log)
    }

    /// Keeps the changes of `block` after `from` for the next views.
    fn keep_log(&self, block: u64, from: u64, log: Log) {
        let mut logs = self.logs.lock();
        logs.retain(|(b, _, _)| *b != block);
        logs.push_front((block, from, log));
        logs.truncate(LOGS);
    }

    fn next_generation(&self) -> u64 {
        self.generations.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn stats(&self) -> HistoryStats {
        let ix = self.index.read();
        HistoryStats {
            every: self.every,
            ready: ix.ready,
            blocks: ix.blocks.len(),
            images: ix.images,
            bytes: ix.bytes,
            revisions: ix.revisions,
            records: ix.touched.len(),
            recent: ix.recent(),
            logged: self.logs.lock().iter().map(|(_, _, l)| l.len()).sum(),
        }
    }
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
        if self.history.index.read().ready {
            return Ok(());
        }
        let _one = self.history.building.lock().await;
        self.build_index().await
    }

    /// [`Service::history_ready`], the caller holding `building`.
    async fn build_index(&self) -> Result<(), ModelError> {
        if self.history.index.read().ready {
            return Ok(());
        }
        let every = self.history.every;
        let mut ix = Index::starting_at(self.store.floor(), self.history.next_generation());
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
        *self.history.index.write() = ix;
        Ok(())
    }

    /// Reads the log after the index's last revision into it, restarting
    /// from the floor if the log moved past it meanwhile.
    async fn read_into(&self, ix: &mut Index) -> Result<(), ModelError> {
        loop {
            let page = match self.store.changes_after(ix.last, REPLAY_PAGE * 4).await {
                Ok(p) => p,
                Err(crate::store::StoreError::Gone(g)) => {
                    *ix = Index::starting_at(g.floor, ix.generation);
                    continue;
                }
                Err(e) => return Err(ModelError::unavailable(format!("could not read the change log: {e}"))),
            };
            let Some(last) = page.last().map(|c| c.revision) else { return Ok(()) };
            for c in page {
                ix.record(&Arc::new(c), self.history.every);
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

    /// A view of the topology as it stood right after `revision`
    /// (read-only): read it with [`Service::read_in`]. Reads fewer than
    /// `every` changes from the store's log (those of the revision's block
    /// after it), none when that block is the one being filled.
    pub async fn at(&self, revision: u64) -> Result<Arc<AtView>, ModelError> {
        self.check_kept(revision)?;
        self.history_ready().await?;
        let every = self.history.every;
        let boundary = revision.div_ceil(every).saturating_mul(every);
        let (generation, slot, from_log) = {
            let mut ix = self.history.index.write();
            if !ix.ready {
                return Err(ModelError::unavailable("the history is being rebuilt; try again".to_string()));
            }
            let block = revision / every;
            if boundary == revision {
                (ix.generation, Arc::new(std::sync::OnceLock::from(Log::from(Vec::new()))), false)
            } else if boundary > ix.last || ix.current.as_ref().is_some_and(|c| c.block == block) {
                // The block is being filled (or is the next one): its
                // changes come to the view as they are recorded.
                (ix.generation, ix.slot_for(block), false)
            } else {
                (ix.generation, Slot::default(), true)
            }
        };
        if from_log {
            let _ = slot.set(self.block_log(revision, boundary).await?);
        }
        Ok(Arc::new(AtView::new(revision, every, generation, slot)))
    }

    /// The changes of `revision`'s block after it, at least: kept from an
    /// earlier view, or read from the store's log (from the block's start
    /// where the log still has it, and kept).
    async fn block_log(&self, revision: u64, boundary: u64) -> Result<Log, ModelError> {
        let every = self.history.every;
        let block = revision / every;
        if let Some(log) = self.history.log_of(block, revision) {
            return Ok(log);
        }
        let mut from = (block * every).max(self.store.floor()).min(revision);
        let limit = |from: u64| usize::try_from(boundary - from).unwrap_or(usize::MAX);
        let page = match self.change_log(from, limit(from)).await {
            // The floor passed the block's start meanwhile: after the
            // revision is all a view needs.
            Err(e) if e.code == ErrorCode::Gone && from < revision => {
                from = revision;
                self.change_log(from, limit(from)).await?
            }
            r => r?,
        };
        let log: Vec<Arc<Change>> = page.into_iter().filter(|c| c.revision <= boundary).map(Arc::new).collect();
        let whole = log.iter().zip(from + 1..).all(|(c, r)| c.revision == r);
        if !whole || log.len() as u64 != boundary - from {
            return Err(ModelError::unavailable(format!(
                "the change log does not hold every change of ({from}, {boundary}]; try again"
            )));
        }
        let log = Log::from(log);
        self.history.keep_log(block, from, Arc::clone(&log));
        Ok(log)
    }

    /// Reads the live topology (`view` `None`) or the topology at a view's
    /// revision. The live read never fails; a view's fails once the kept
    /// log no longer covers it (see [`view`]).
    pub fn read_in<R>(&self, view: Option<&AtView>, f: impl FnOnce(&Reader<'_>) -> R) -> Result<R, ModelError> {
        let live = self.topo.read();
        match view {
            None => Ok(f(&Reader::Live(&live))),
            Some(v) => {
                let ix = self.history.index.read();
                let at = AtRead::new(&live, &ix, v)?;
                Ok(f(&Reader::At(at)))
            }
        }
    }

    /// Reads the topology at two views' revisions at once.
    fn read_two<R>(
        &self,
        a: &AtView,
        b: &AtView,
        f: impl FnOnce(&AtRead<'_>, &AtRead<'_>, &[EntityKey]) -> R,
    ) -> Result<R, ModelError> {
        let live = self.topo.read();
        let ix = self.history.index.read();
        let (x, y) = (AtRead::new(&live, &ix, a)?, AtRead::new(&live, &ix, b)?);
        let keys = ix.touched_between(a.revision(), b.revision(), self.history.every, x.partial());
        Ok(f(&x, &y, &keys))
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
        let old = self.at(from).await?;
        let new = self.at(to).await?;
        self.read_two(&old, &new, |old, new, keys| {
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
            out
        })
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
            let ix = self.history.index.read();
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
