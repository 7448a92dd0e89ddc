//! Durable state behind one contract ([`Store`]) with two implementations:
//! a SQLite file for one host ([`SqliteStore`]) and etcd shared by many
//! hosts ([`EtcdStore`]).
//!
//! The contract: the store holds every record of the topology, the change
//! log and the revision. A change is committed atomically (SQLite: the new
//! images of the records it touched, the change record and the revision in
//! one transaction; etcd: the log entry, from which every server derives
//! the records), and only if the store is still at the revision the change
//! was computed against; otherwise the commit is refused with
//! [`StoreError::Conflict`] and nothing is written. The log keeps the last
//! `keep` changes, and a `since` below what is kept is refused with
//! [`Gone`]. An answer about a commit is true: success means committed;
//! a failure means not committed; [`StoreError::UnknownOutcome`] is kept
//! for when the store cannot be asked.

use crate::model::{AddrPlan, Change, Images, Record, Topology};
use async_trait::async_trait;
use std::sync::Arc;

#[cfg(test)]
mod contract;
pub mod etcd;
mod etcd_security;
mod migrate;
mod sqlite;
#[doc(hidden)]
pub mod testing;

pub use etcd::{ConnectError, EtcdConfig, EtcdStore};
pub use etcd_security::{EtcdSecurity, EtcdSecurityFlags};
pub use sqlite::{SqliteStore, APPLICATION_ID, FORMAT};

/// Changes kept in the log by default.
pub const DEFAULT_KEEP_CHANGES: u64 = 100_000;

/// A `since` older than what the change log keeps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "changes up to revision {floor} are no longer kept (the log keeps the last {keep}); read the current state and resume from its revision"
)]
pub struct Gone {
    /// The log holds the changes after this revision.
    pub floor: u64,
    pub keep: u64,
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store is no longer at the revision the change was computed
    /// against (another server committed first). Nothing was written:
    /// catch up and compute the change again.
    #[error("the store moved on from revision {expected}: another server committed first")]
    Conflict { expected: u64 },
    /// The log no longer holds what was asked for.
    #[error(transparent)]
    Gone(#[from] Gone),
    /// The store cannot be reached (or did not answer in time). For a
    /// commit: it was not committed (the store made sure of it).
    #[error("the shared store is unavailable: {0}")]
    Unavailable(String),
    /// The store stopped answering a commit and could not be asked
    /// whether it applied: the change `id` may or may not be at
    /// `revision`. If it is, it arrives like any change made elsewhere.
    #[error(
        "the shared store stopped answering ({reason}) and could not be asked whether the change committed: \
         look for revision {revision} in the change log (commit id {id})"
    )]
    UnknownOutcome { id: String, revision: u64, reason: String },
    /// Anything else (unreadable data, refused request, I/O).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// What this server knows of a host's own leviathan (see `Host.up`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostStatus {
    /// The underlay (VTEP) address the host announced, if any.
    pub vtep_address: Option<String>,
    /// Whether the host's leviathan is announced right now.
    pub up: bool,
}

/// What a shared store tells the server about changes made elsewhere.
#[derive(Debug, Clone)]
pub enum Remote {
    /// A change committed (possibly by another server), in revision order
    /// as far as one watch goes.
    Change(Arc<Change>),
    /// The store may hold changes this server has not seen (the watch was
    /// (re)started): catch up from the log.
    CatchUp,
}

/// A durable store of the topology (see the module docs for the contract).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// A short name of the implementation ("sqlite", "etcd").
    fn kind(&self) -> &'static str;

    /// How many changes the log keeps.
    fn keep(&self) -> u64;

    /// The log holds every change after this revision (as last known to
    /// this server; [`Store::changes_after`] checks it for real).
    fn floor(&self) -> u64;

    /// Refuses a `since` the log (as last known) no longer covers.
    fn check_since(&self, since: u64) -> Result<(), Gone> {
        let floor = self.floor();
        if since < floor {
            return Err(Gone { floor, keep: self.keep() });
        }
        Ok(())
    }

    /// Every record and the revision they are at.
    async fn load(&self) -> Result<(Images, u64), StoreError>;

    /// Makes a change durable: the new images, the change record and the
    /// revision `change.revision`, in one transaction, provided the store
    /// is at `change.revision - 1` ([`StoreError::Conflict`] otherwise).
    /// Drops what the log no longer keeps. Returns once committed.
    async fn commit(&self, images: Arc<Images>, change: Arc<Change>) -> Result<(), StoreError>;

    /// The changes after `revision`, oldest first, at most `limit`; a
    /// revision the log no longer covers is [`StoreError::Gone`].
    async fn changes_after(&self, revision: u64, limit: usize) -> Result<Vec<Change>, StoreError>;

    /// Changes made by other servers, for a store shared with them: taken
    /// once, by the service. `None` for a store only this server writes.
    fn follow(&self) -> Option<tokio::sync::mpsc::Receiver<Remote>> {
        None
    }

    /// What is known of a host's leviathan.
    fn host_status(&self, host: &str) -> HostStatus;

    /// Makes this server's next commits take their turn in order with the
    /// other servers' (a writer that keeps losing the commit race calls
    /// it); for a store only this server writes, nothing to do.
    async fn lock_commits(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Ends what [`Store::lock_commits`] began.
    async fn unlock_commits(&self) {}

    /// Whether a snapshot of the model at `revision` should be written
    /// ([`Store::snapshot`]); never for a store that keeps records itself.
    fn snapshot_due(&self, _revision: u64) -> bool {
        false
    }

    /// Writes every record at `revision` as the store's snapshot, in the
    /// background (never on the commit path).
    async fn snapshot(&self, _revision: u64, _records: Vec<Record>) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Builds a topology from loaded records, refusing an inconsistent one.
pub fn topology_of(images: &Images, plan: AddrPlan, origin: &str) -> anyhow::Result<Topology> {
    let mut topo = Topology::with_plan(plan);
    topo.commit(images);
    topo.fill_vnis();
    if let Err(e) = topo.check_integrity() {
        anyhow::bail!("{origin} is inconsistent: {e}");
    }
    Ok(topo)
}
