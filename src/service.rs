//! The topology service: the in-memory graph, the store, the revision and
//! the change stream. Writes are serialized; reads never wait for disk.

use crate::model::{Command, ModelError, Topology};
use crate::store::{Change, ChangeItem, Store};
use parking_lot::RwLock;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{broadcast, Mutex};

/// Capacity of the change stream; a subscriber further behind is told so.
pub const CHANGE_STREAM_CAPACITY: usize = 1024;

pub struct Service {
    topo: RwLock<Topology>,
    writer: Mutex<()>,
    store: Arc<Store>,
    revision: AtomicU64,
    host_id: String,
    changes: broadcast::Sender<Arc<Change>>,
}

impl Service {
    /// Opens the state file and loads the topology from it.
    pub fn open(state: &Path, host_id: &str) -> anyhow::Result<Arc<Service>> {
        crate::model::ids::check_id("host id", host_id).map_err(|e| anyhow::anyhow!("--host-id: {e}"))?;
        let (store, topo, revision) = Store::open(state)?;
        let (changes, _) = broadcast::channel(CHANGE_STREAM_CAPACITY);
        Ok(Arc::new(Service {
            topo: RwLock::new(topo),
            writer: Mutex::new(()),
            store: Arc::new(store),
            revision: AtomicU64::new(revision),
            host_id: host_id.to_string(),
            changes,
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

    /// The change stream.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Change>> {
        self.changes.subscribe()
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
        let this = Arc::clone(self);
        tokio::spawn(async move { this.execute_inner(cmd).await })
            .await
            .map_err(|e| ModelError::internal(format!("command task failed: {e}")))?
    }

    async fn execute_inner(self: Arc<Self>, cmd: Command) -> Result<u64, ModelError> {
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
            return Ok(self.revision());
        }
        let revision = self.revision() + 1;
        let at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let change = Arc::new(Change { revision, mutation: cmd.name().to_string(), at_ms, items });
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
        let _ = self.changes.send(change);
        Ok(revision)
    }
}
