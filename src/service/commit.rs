//! The commit path: a command computed against the model, committed to the
//! store, then applied and published; and what a client is told when the
//! store fails.
//!
//! Invariants:
//! - commits are serial on a server (the writer lock); under contention
//!   between servers a command that lost the race is computed again, and
//!   after [`LOCK_AFTER`] lost races it takes the store's commit lock so
//!   that it gets its turn: no write fails for losing the race while the
//!   store answers;
//! - with a shared store (etcd) a write has a deadline from its arrival:
//!   while the store is known to be down, writes waiting for their turn are
//!   answered `UNAVAILABLE` at once (none waits for the one before it to
//!   time out), and none waits for its turn longer than the request timeout
//!   unless the store made progress meanwhile;
//! - every answer is true: success means committed, `UNAVAILABLE` means
//!   not committed, `UNKNOWN_OUTCOME` (naming the revision and commit id)
//!   only when the store could not be asked.

use super::Service;
use crate::model::{Change, ChangeItem, Command, ModelError};
use crate::store::StoreError;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lost commit races after which a command takes the commit lock.
pub const LOCK_AFTER: u32 = 2;
/// Lost races while holding the lock (it was lost with its lease) before
/// the write fails: only a store misbehaving gets there.
const MAX_LOCKED_ATTEMPTS: u32 = 16;

impl Service {
    pub(super) async fn execute_inner(
        self: Arc<Self>,
        cmd: Command,
        actor: String,
    ) -> Result<(u64, Option<Arc<Change>>), ModelError> {
        let arrived = Instant::now();
        let _serial = self.wait_turn(arrived).await?;
        let mut lost = 0;
        let r = loop {
            let r = self.try_commit(&cmd, &actor).await;
            match r {
                Err(Retry::Conflict(expected)) => {
                    lost += 1;
                    tracing::debug!(expected, lost, "lost the commit race; catching up");
                    if lost == LOCK_AFTER {
                        if let Err(e) = self.store.lock_commits().await {
                            // Not the store down: its turn did not come.
                            break Err(ModelError::unavailable(format!(
                                "the change lost the commit race {lost} times and {e}; it was not committed. Retry later"
                            )));
                        }
                    }
                    if lost >= LOCK_AFTER + MAX_LOCKED_ATTEMPTS {
                        break Err(ModelError::unavailable(format!(
                            "the change lost the commit race {lost} times, under the commit lock too (last at revision {expected}); retry later"
                        )));
                    }
                    if let Err(e) = self.catch_up().await {
                        break Err(e);
                    }
                }
                Err(Retry::Failed(e)) => break Err(e),
                Ok(done) => break Ok(done),
            }
        };
        if lost >= LOCK_AFTER {
            self.store.unlock_commits().await;
        }
        r
    }

    /// Waits for the writer lock, bounded with a shared store: see the
    /// module docs.
    async fn wait_turn(&self, arrived: Instant) -> Result<tokio::sync::MutexGuard<'_, ()>, ModelError> {
        let Some(timeout) = self.write_timeout else {
            return Ok(self.writer.lock().await);
        };
        loop {
            if let Some(why) = self.health.down() {
                return Err(ModelError::unavailable(format!(
                    "the shared store is unavailable: {why}; the change was not committed. Retry later"
                )));
            }
            match tokio::time::timeout(Duration::from_millis(100), self.writer.lock()).await {
                Ok(guard) => {
                    if let Some(why) = self.health.down() {
                        return Err(ModelError::unavailable(format!(
                            "the shared store is unavailable: {why}; the change was not committed. Retry later"
                        )));
                    }
                    return Ok(guard);
                }
                Err(_) if arrived.elapsed() > timeout && self.health.stalled_for() > timeout => {
                    return Err(ModelError::unavailable(format!(
                        "the shared store took no change for {} s; the change was not committed. Retry later",
                        timeout.as_secs_f64()
                    )));
                }
                Err(_) => {}
            }
        }
    }

    /// Computes the command against the model and commits it once.
    async fn try_commit(&self, cmd: &Command, actor: &str) -> Result<(u64, Option<Arc<Change>>), Retry> {
        let started = Instant::now();
        let (images, items) = {
            let mut t = self.topo.write();
            let after = t.prepare(cmd).map_err(Retry::Failed)?;
            let items: Vec<ChangeItem> = after
                .iter()
                .map(|(k, a)| ChangeItem { key: k.clone(), before: t.get(k).cloned(), after: a.clone() })
                .collect();
            (after, items)
        };
        if images.is_empty() {
            return Ok((self.revision(), None));
        }
        let revision = self.revision() + 1;
        let at_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let at_ms = at_us / 1000;
        let mutation = cmd.name().to_string();
        let change = Arc::new(Change { revision, mutation, at_ms, at_us, actor: actor.to_string(), items });
        let images = Arc::new(images);
        let prepared_us = started.elapsed().as_micros() as u64;
        match self.store.commit(Arc::clone(&images), Arc::clone(&change)).await {
            Ok(()) => {
                let stored_us = started.elapsed().as_micros() as u64;
                self.health.progress();
                self.apply(&images, change.clone());
                let published_us = started.elapsed().as_micros() as u64;
                tracing::debug!(revision, prepared_us, stored_us, published_us, "change timing");
                Ok((revision, Some(change)))
            }
            Err(StoreError::Conflict { expected }) => {
                self.health.progress();
                Err(Retry::Conflict(expected))
            }
            Err(e) => Err(Retry::Failed(self.commit_error(e))),
        }
    }

    /// The error a client sees for a store failure; a store that stopped
    /// answering is noted as down (the writes queued behind fail at once).
    pub(super) fn commit_error(&self, e: StoreError) -> ModelError {
        match e {
            StoreError::Unavailable(m) => {
                self.health.mark_down(&m);
                let m = m.trim_end_matches("; the change was not committed (made sure)");
                let m = m.trim_end_matches("; the change was not committed");
                ModelError::unavailable(format!("{m}; the change was not committed. Retry later"))
            }
            e @ StoreError::UnknownOutcome { .. } => {
                self.health.mark_down(&e.to_string());
                ModelError::unknown_outcome(e.to_string())
            }
            StoreError::Conflict { expected } => ModelError::unavailable(format!(
                "the change lost the commit race (last at revision {expected}); retry later"
            )),
            StoreError::Gone(g) => ModelError::gone(g.to_string()),
            StoreError::Other(e) => {
                tracing::error!(error = %e, "commit failed");
                ModelError::internal(format!("could not commit the change: {e}"))
            }
        }
    }

    /// Writes a snapshot in the background if the store wants one at the
    /// current revision (the model is read once, under the read lock).
    pub(super) fn maybe_snapshot(&self) {
        let revision = self.revision();
        if !self.store.snapshot_due(revision) {
            return;
        }
        let (records, at) = self.read_at(|t| t.records());
        let store = Arc::clone(&self.store);
        tokio::spawn(async move {
            if let Err(e) = store.snapshot(at, records).await {
                tracing::warn!(revision = at, error = %e, "could not write a snapshot; trying again later");
            }
        });
    }
}

/// Why one attempt did not commit.
enum Retry {
    /// Another server committed first (at this expected revision).
    Conflict(u64),
    /// The write fails with this error.
    Failed(ModelError),
}
