//! The topology service: the in-memory graph, the store, the revision and
//! the change stream. Writes are serialized; reads never wait for disk.

mod feed;
mod operations;
mod realization;

use crate::model::{AddrPlan, Command, ModelError, Topology};
use crate::store::{Change, ChangeItem, Store};
use parking_lot::RwLock;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{broadcast, Mutex};

pub use feed::{ChangeFeed, FeedItem, REPLAY_PAGE};
pub use operations::{OperationState, OperationStatus, Operations, MAX_FINISHED_OPERATIONS};
pub use realization::Realization;

/// Capacity of the change stream; a subscriber further behind is told so.
pub const CHANGE_STREAM_CAPACITY: usize = 1024;

pub struct Service {
    topo: RwLock<Topology>,
    writer: Mutex<()>,
    store: Arc<Store>,
    revision: AtomicU64,
    host_id: String,
    changes: broadcast::Sender<Arc<Change>>,
    operations: Operations,
}

/// How a service is opened.
#[derive(Debug, Clone)]
pub struct Options {
    /// This server's own host id.
    pub host_id: String,
    /// How CIN subnets are handed out.
    pub addr_plan: AddrPlan,
    /// Changes the log keeps.
    pub keep_changes: u64,
    /// Capacity of the change stream (how far a subscriber may fall behind
    /// before it is told it lagged).
    pub capacity: usize,
}

impl Options {
    pub fn new(host_id: &str) -> Options {
        Options {
            host_id: host_id.to_string(),
            addr_plan: AddrPlan::default(),
            keep_changes: crate::store::DEFAULT_KEEP_CHANGES,
            capacity: CHANGE_STREAM_CAPACITY,
        }
    }
}

impl Service {
    /// Opens the state file and loads the topology from it.
    pub fn open(state: &Path, host_id: &str) -> anyhow::Result<Arc<Service>> {
        Self::open_with(state, Options::new(host_id))
    }

    /// [`Service::open`] with another capacity of the change stream (how
    /// far a subscriber may fall behind before it is told it lagged).
    pub fn open_with_capacity(state: &Path, host_id: &str, capacity: usize) -> anyhow::Result<Arc<Service>> {
        Self::open_with(state, Options { capacity, ..Options::new(host_id) })
    }

    /// Opens the state file with every option given.
    pub fn open_with(state: &Path, opts: Options) -> anyhow::Result<Arc<Service>> {
        let host_id = opts.host_id.as_str();
        crate::model::ids::check_id("host id", host_id).map_err(|e| anyhow::anyhow!("--host-id: {e}"))?;
        if opts.capacity == 0 {
            anyhow::bail!("the change stream capacity must be at least 1");
        }
        let (store, topo, revision) = Store::open(state, opts.addr_plan, opts.keep_changes)?;
        let (changes, _) = broadcast::channel(opts.capacity);
        Ok(Arc::new(Service {
            topo: RwLock::new(topo),
            writer: Mutex::new(()),
            store: Arc::new(store),
            revision: AtomicU64::new(revision),
            host_id: host_id.to_string(),
            changes,
            operations: Operations::new(),
        }))
    }

    /// This server's own host id (the default wherever a host id is optional).
    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    /// The revision of the last committed change.
    pub fn revision(&self) -> u64 {
        self.revision.load(Ordering::Acquire)
    }

    /// Reads the topology.
    pub fn read<R>(&self, f: impl FnOnce(&Topology) -> R) -> R {
        f(&self.topo.read())
    }

    /// Reads the topology together with the revision it is at.
    pub fn read_at<R>(&self, f: impl FnOnce(&Topology) -> R) -> (R, u64) {
        let t = self.topo.read();
        let rev = self.revision();
        (f(&t), rev)
    }

    /// The raw change stream: every committed change, once, in revision
    /// order. A receiver that falls more than the capacity behind gets
    /// `RecvError::Lagged`; prefer [`Service::feed`], which names the last
    /// revision received, or [`Service::change_stream`], which resumes by
    /// itself.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
    }

    /// A live feed of the changes committed from now on. When it falls
    /// behind it yields [`FeedItem::Lagged`] with the last revision it
    /// delivered; the changes after it are in the store's change log.
    pub fn feed(&self) -> ChangeFeed {
        // Subscribe first, then read the revision: every change above that
        // revision is published after the subscription exists.
        let rx = self.changes.subscribe();
        ChangeFeed::new(rx, self.revision())
    }

    /// Registry of long make/destroy operations and their progress.
    pub fn operations(&self) -> &Operations {
        &self.operations
    }

    /// The store (for the change log).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Applies a command: validates and computes it against the graph,
    /// commits it to the store, then makes it visible and publishes it.
    /// Returns the revision that holds its effect. A command that fails
    /// changes nothing; one that changes nothing keeps the revision.
    ///
    /// The work runs on its own task, so a caller that goes away mid-commit
    /// cannot leave the store and the graph apart.
    pub async fn execute(self: &Arc<Self>, cmd: Command) -> Result<u64, ModelError> {
        self.execute_change(cmd).await.map(|(r, _)| r)
    }

    /// [`Service::execute`], also returning the committed change (`None`
    /// when the command changed nothing).
    pub async fn execute_change(self: &Arc<Self>, cmd: Command) -> Result<(u64, Option<Arc<Change>>), ModelError> {
        let this = Arc::clone(self);
        tokio::spawn(async move { this.execute_inner(cmd).await })
            .await
            .map_err(|e| ModelError::internal(format!("command task failed: {e}")))?
    }

    async fn execute_inner(self: Arc<Self>, cmd: Command) -> Result<(u64, Option<Arc<Change>>), ModelError> {
        let _serial = self.writer.lock().await;
        let (images, items) = {
            let mut t = self.topo.write();
            let after = t.prepare(&cmd)?;
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
        let change = Arc::new(Change { revision, mutation: cmd.name().to_string(), at_ms, at_us, items });
        let store = Arc::clone(&self.store);
        let (images, change) = tokio::task::spawn_blocking(move || {
            let r = store.commit(&images, &change);
            r.map(|()| (images, change))
        })
        .await
        .map_err(|e| ModelError::internal(format!("store task failed: {e}")))?
        .map_err(|e| {
            tracing::error!(error = %e, "commit failed");
            ModelError::internal(format!("could not commit the change: {e}"))
        })?;
        {
            let mut t = self.topo.write();
            t.commit(&images);
            self.revision.store(revision, Ordering::Release);
        }
        // The one place subscribers are notified: once per committed change,
        // in revision order (the writer lock is still held).
        let _ = self.changes.send(Arc::clone(&change));
        Ok((revision, Some(change)))
    }
}
