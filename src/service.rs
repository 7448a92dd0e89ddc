//! The topology service: the in-memory graph, the store, the revision and
//! the change stream. Writes are serialized; reads never wait for disk.

mod changelog;
pub mod cni_queue;
mod commit;
mod connecting;
mod feed;
pub mod history;
mod operations;
pub mod probe;
mod realization;
mod workloads;

use crate::model::{AddrPlan, Change, ChangeItem, Command, EntityKey, ModelError, Record, Topology};
use crate::store::{ConnectError, EtcdConfig, EtcdStore, HostStatus, Remote, SqliteStore, Store, StoreError};
use crate::workload::Workloads;
use parking_lot::RwLock;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use tokio::sync::{broadcast, Mutex};

pub use changelog::log_changes;
pub use commit::LOCK_AFTER;
pub use connecting::{backoff, Connecting, FIRST_RETRY, MAX_RETRY};
pub use feed::{ChangeFeed, FeedItem, REPLAY_PAGE};
pub use operations::{OperationState, OperationStatus, Operations, MAX_FINISHED_OPERATIONS};
pub use probe::StoreHealth;
pub use realization::Realization;

/// Capacity of the change stream; a subscriber further behind is told so.
pub const CHANGE_STREAM_CAPACITY: usize = 1024;

pub struct Service {
    topo: RwLock<Topology>,
    writer: Mutex<()>,
    store: Arc<dyn Store>,
    revision: AtomicU64,
    host_id: String,
    changes: broadcast::Sender<Arc<Change>>,
    operations: Operations,
    workloads: Workloads,
    /// The store's last known state (kept by a background probe for a
    /// shared store).
    health: Arc<StoreHealth>,
    /// With a shared store: how long a write may wait for its turn while
    /// the store takes nothing (see `commit`).
    write_timeout: Option<std::time::Duration>,
    /// Undo blocks and the per-record index of the kept log (`at`, `diff`,
    /// `history`).
    history: history::History,
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
    /// This host's underlay (VTEP) address, announced with its host id.
    pub vtep_address: Option<String>,
    /// What workloads containers may be bound to.
    pub workloads: Workloads,
    /// Revisions per undo block of the history (`--history-every`).
    pub history_every: u64,
}

impl Options {
    pub fn new(host_id: &str) -> Options {
        Options {
            host_id: host_id.to_string(),
            addr_plan: AddrPlan::default(),
            keep_changes: crate::store::DEFAULT_KEEP_CHANGES,
            capacity: CHANGE_STREAM_CAPACITY,
            vtep_address: None,
            workloads: Workloads::default(),
            history_every: history::DEFAULT_HISTORY_EVERY,
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
        Self::check_options(&opts)?;
        let (store, topo, revision) = SqliteStore::open(state, opts.addr_plan, opts.keep_changes)?;
        let store = store.announcing(&opts.host_id, opts.vtep_address.clone());
        Ok(Self::with_store(Arc::new(store), topo, revision, &opts, None))
    }

    /// Connects to etcd (shared with the servers of other hosts), loads the
    /// topology from it and follows the changes committed there.
    pub async fn open_etcd(cfg: EtcdConfig, opts: Options) -> anyhow::Result<Arc<Service>> {
        Ok(Self::try_open_etcd(cfg, opts).await?)
    }

    /// [`Service::open_etcd`], saying whether trying again may help.
    async fn try_open_etcd(cfg: EtcdConfig, opts: Options) -> Result<Arc<Service>, ConnectError> {
        Self::check_options(&opts).map_err(ConnectError::Refused)?;
        let cfg = EtcdConfig {
            keep: opts.keep_changes,
            host_id: opts.host_id.clone(),
            vtep_address: opts.vtep_address.clone(),
            ..cfg
        };
        let timeout = cfg.request_timeout;
        let (store, images, revision) = EtcdStore::connect(cfg).await?;
        let topo =
            crate::store::topology_of(&images, opts.addr_plan, "the model in etcd").map_err(ConnectError::Refused)?;
        let store: Arc<dyn Store> = Arc::new(store);
        let remote = store.follow();
        let service = Self::with_store(store, topo, revision, &opts, Some(timeout));
        if let Some(rx) = remote {
            tokio::spawn(follow(Arc::downgrade(&service), rx));
        }
        tokio::spawn(probe::keep_probing(Arc::downgrade(&service), Arc::clone(&service.health), timeout));
        Ok(service)
    }

    fn check_options(opts: &Options) -> anyhow::Result<()> {
        crate::model::ids::check_id("host id", &opts.host_id).map_err(|e| anyhow::anyhow!("--host-id: {e}"))?;
        if opts.capacity == 0 {
            anyhow::bail!("the change stream capacity must be at least 1");
        }
        if opts.history_every == 0 {
            anyhow::bail!("--history-every: 0 revisions per block; give 1 or more");
        }
        Ok(())
    }

    /// The service over an opened store; `write_timeout` for a shared one.
    fn with_store(
        store: Arc<dyn Store>,
        topo: Topology,
        revision: u64,
        opts: &Options,
        write_timeout: Option<std::time::Duration>,
    ) -> Arc<Service> {
        let (changes, _) = broadcast::channel(opts.capacity);
        let service = Arc::new(Service {
            topo: RwLock::new(topo),
            writer: Mutex::new(()),
            store,
            revision: AtomicU64::new(revision),
            host_id: opts.host_id.clone(),
            changes,
            operations: Operations::new(),
            workloads: opts.workloads,
            health: Arc::new(StoreHealth::new(write_timeout.is_some())),
            write_timeout,
            history: history::History::new(opts.history_every),
        });
        service.build_history_soon();
        service
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

    /// The store (for the change log and the health probe).
    fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// What is known of a host's own leviathan: the VTEP address it
    /// announced and whether it is up. With SQLite only this server's host
    /// is known (up, with `--vtep-address`); with etcd, every host whose
    /// server announced itself, up while its lease lives.
    pub fn host_status(&self, host: &str) -> HostStatus {
        self.store.host_status(host)
    }

    /// Applies a command: validates and computes it against the graph,
    /// commits it to the store, then makes it visible and publishes it.
    /// Returns the revision that holds its effect. A command that fails
    /// changes nothing; one that changes nothing keeps the revision.
    ///
    /// The work runs on its own task, so a caller that goes away mid-commit
    /// cannot leave the store and the graph apart.
    ///
    /// The change's actor is the server itself ([`crate::model::SYSTEM_ACTOR`]);
    /// a client's request goes through [`Service::execute_as`].
    pub async fn execute(self: &Arc<Self>, cmd: Command) -> Result<u64, ModelError> {
        self.execute_change(cmd).await.map(|(r, _)| r)
    }

    /// [`Service::execute`] on behalf of `actor` (a token's name,
    /// `unix:uid=N`, `anonymous`), whom the change records.
    pub async fn execute_as(self: &Arc<Self>, cmd: Command, actor: &str) -> Result<u64, ModelError> {
        self.execute_change_as(cmd, actor).await.map(|(r, _)| r)
    }

    /// [`Service::execute`], also returning the committed change (`None`
    /// when the command changed nothing).
    pub async fn execute_change(self: &Arc<Self>, cmd: Command) -> Result<(u64, Option<Arc<Change>>), ModelError> {
        self.execute_change_as(cmd, crate::model::SYSTEM_ACTOR).await
    }

    /// [`Service::execute_change`] on behalf of `actor`.
    pub async fn execute_change_as(
        self: &Arc<Self>,
        cmd: Command,
        actor: &str,
    ) -> Result<(u64, Option<Arc<Change>>), ModelError> {
        let this = Arc::clone(self);
        let actor = actor.to_string();
        tokio::spawn(async move { this.execute_inner(cmd, actor).await })
            .await
            .map_err(|e| ModelError::internal(format!("command task failed: {e}")))?
    }

    /// Makes committed images visible and publishes their change. The
    /// caller holds the writer lock; `change` is the next revision.
    fn apply(&self, images: &crate::model::Images, change: Arc<Change>) {
        {
            let mut t = self.topo.write();
            t.commit(images);
            // Inside the write lock: a read at a revision, under the read
            // lock, finds the history at exactly the live revision.
            self.history.record(&change);
            self.revision.store(change.revision, Ordering::Release);
        }
        self.history.trim(self.store.floor());
        // The one place subscribers are notified: once per committed change,
        // in revision order (the writer lock is held).
        let _ = self.changes.send(change);
        self.maybe_snapshot();
    }

    /// Applies a change committed elsewhere if it is the next one; a later
    /// one means some were missed: catch up from the log. The caller holds
    /// the writer lock.
    async fn apply_remote(&self, change: Arc<Change>) -> Result<(), ModelError> {
        let current = self.revision();
        if change.revision <= current {
            return Ok(());
        }
        if change.revision == current + 1 {
            self.apply(&change.images(), change);
            return Ok(());
        }
        self.catch_up().await
    }

    /// Applies every change the log holds after the current revision. If
    /// the log no longer reaches back that far, reloads the whole model and
    /// publishes the difference as one change (see [`Service::relist`]).
    /// The caller holds the writer lock.
    async fn catch_up(&self) -> Result<(), ModelError> {
        loop {
            let current = self.revision();
            let page = match self.store.changes_after(current, REPLAY_PAGE).await {
                Ok(p) => p,
                Err(StoreError::Gone(g)) => {
                    tracing::warn!(revision = current, floor = g.floor, "behind the change log; reloading the model");
                    return self.relist().await;
                }
                Err(e) => return Err(self.commit_error(e)),
            };
            let full = page.len() >= REPLAY_PAGE;
            for c in page {
                if c.revision == self.revision() + 1 {
                    let c = Arc::new(c);
                    self.apply(&c.images(), c);
                }
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// Reloads the whole model from the store and publishes what differs
    /// from the model held as one change, `mutation: "resync"`, at the
    /// store's revision. The revisions in between are not published one by
    /// one (the log no longer has them): a subscriber sees the revision
    /// jump, and one resuming from inside the jump is told `GONE`.
    async fn relist(&self) -> Result<(), ModelError> {
        let (images, revision) = self.store.load().await.map_err(|e| self.commit_error(e))?;
        let plan = *self.topo.read().addr_plan();
        let fresh = crate::store::topology_of(&images, plan, "the reloaded model")
            .map_err(|e| ModelError::internal(e.to_string()))?;
        let items = {
            let old = self.topo.read();
            let mut keys: std::collections::BTreeSet<EntityKey> = images.keys().cloned().collect();
            keys.extend(old.records().iter().map(Record::key));
            keys.into_iter()
                .filter_map(|k| {
                    let before = old.get(&k).cloned();
                    let after = fresh.get(&k).cloned();
                    (before != after).then_some(ChangeItem { key: k, before, after })
                })
                .collect::<Vec<_>>()
        };
        let at_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let actor = crate::model::SYSTEM_ACTOR.to_string();
        let change = Arc::new(Change { revision, mutation: "resync".into(), at_ms: at_us / 1000, at_us, actor, items });
        self.history.reset();
        {
            let mut t = self.topo.write();
            *t = fresh;
            self.revision.store(revision, Ordering::Release);
        }
        let _ = self.changes.send(change);
        Ok(())
    }
}

/// Follows the changes committed by other servers: each is applied to the
/// model and published exactly like a local one, in revision order. A
/// catch-up that failed (etcd unreachable) is tried again every second
/// until it succeeds.
async fn follow(service: Weak<Service>, mut rx: tokio::sync::mpsc::Receiver<Remote>) {
    let mut behind = false;
    loop {
        let next = if behind {
            match tokio::time::timeout(std::time::Duration::from_secs(1), rx.recv()).await {
                Ok(n) => n,
                Err(_) => Some(Remote::CatchUp),
            }
        } else {
            rx.recv().await
        };
        let Some(event) = next else { return };
        let Some(service) = service.upgrade() else { return };
        let _serial = service.writer.lock().await;
        let r = match event {
            Remote::Change(c) => service.apply_remote(c).await,
            Remote::CatchUp => service.catch_up().await,
        };
        behind = match r {
            Ok(()) => false,
            Err(e) => {
                tracing::debug!(error = %e, "could not catch up with the store yet");
                true
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{etcd_available, EtcdProcess};

    /// A server that fell behind what the log keeps reloads the model and
    /// publishes the difference as one change at the current revision.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_server_behind_the_log_reloads_and_publishes_the_difference() {
        if !etcd_available("service::tests::a_server_behind_the_log_reloads_and_publishes_the_difference") {
            return;
        }
        let etcd = EtcdProcess::start("relist");
        let opts = |host: &str| Options { keep_changes: 2, ..Options::new(host) };
        let cfg = || EtcdConfig::new(vec![etcd.client_url.clone()], "unused");
        let a = Service::open_etcd(cfg(), opts("ha")).await.unwrap();
        // B without its follower: it hears nothing until it catches up.
        let (store, images, revision) = EtcdStore::connect(EtcdConfig { keep: 2, ..cfg() }).await.unwrap();
        let topo = crate::store::topology_of(&images, AddrPlan::default(), "test").unwrap();
        let store: Arc<dyn Store> = Arc::new(store);
        drop(store.follow());
        let b = Service::with_store(store, topo, revision, &opts("hb"), None);
        a.execute(Command::CenCreate { id: "gone".into() }).await.unwrap();
        for i in 0..4 {
            a.execute(Command::CenCreate { id: format!("c{i}") }).await.unwrap();
        }
        a.execute(Command::CenDelete { id: "gone".into() }).await.unwrap();
        let mut rx = b.subscribe();
        {
            let _serial = b.writer.lock().await;
            b.catch_up().await.unwrap();
        }
        assert_eq!(b.revision(), 6);
        let ids = |s: &Arc<Service>| s.read(|t| t.cens().iter().map(|c| c.id.clone()).collect::<Vec<_>>());
        assert_eq!(ids(&b), ids(&a));
        let c = rx.recv().await.unwrap();
        assert_eq!((c.revision, c.mutation.as_str()), (6, "resync"));
        let keys: Vec<String> = c.items.iter().map(|i| i.key.id()).collect();
        assert_eq!(keys, vec!["c0", "c1", "c2", "c3"], "only what differs");
        // From there on it follows the log again.
        a.execute(Command::CenCreate { id: "c9".into() }).await.unwrap();
        {
            let _serial = b.writer.lock().await;
            b.catch_up().await.unwrap();
        }
        let c = rx.recv().await.unwrap();
        assert_eq!((c.revision, c.mutation.as_str()), (7, "cenCreate"));
    }

    /// Snapshots are written in the background as changes go by; a server
    /// started later loads the latest one and the log after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn snapshots_are_written_as_changes_go_by_and_loaded_at_start() {
        if !etcd_available("service::tests::snapshots_are_written_as_changes_go_by_and_loaded_at_start") {
            return;
        }
        let etcd = EtcdProcess::start("snapshots");
        let opts = |host: &str| Options { keep_changes: 2, ..Options::new(host) };
        let cfg =
            || EtcdConfig { snapshot_every: (3, u64::MAX), ..EtcdConfig::new(vec![etcd.client_url.clone()], "x") };
        let a = Service::open_etcd(cfg(), opts("ha")).await.unwrap();
        let mut kv = etcd_client::Client::connect([etcd.client_url.clone()], None).await.unwrap();
        let snapshot_at = |at: u64| {
            let mut kv = kv.clone();
            async move {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
                loop {
                    let r = kv.get("/leviathan/snapshot", None).await.unwrap();
                    let p = r.kvs().first().map(|k| serde_json::from_slice::<serde_json::Value>(k.value()).unwrap());
                    if p.as_ref().and_then(|p| p["revision"].as_u64()) == Some(at) {
                        return;
                    }
                    assert!(std::time::Instant::now() < deadline, "no snapshot at {at} within 60 s: {p:?}");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        };
        // Every 3 changes: at 3, then at 6 (the first one done by then).
        for i in 1..=7 {
            a.execute(Command::CenCreate { id: format!("c{i}") }).await.unwrap();
            if i % 3 == 0 {
                snapshot_at(i).await;
            }
        }
        // The log was trimmed, at the snapshot at 6, to what it and `keep`
        // need: after min(6, 6 - 2).
        let first =
            kv.get("/leviathan/log/", Some(etcd_client::GetOptions::new().with_prefix().with_limit(1))).await.unwrap();
        let first = first.kvs().first().map(|k| String::from_utf8_lossy(k.key()).to_string());
        assert_eq!(first, Some(format!("/leviathan/log/{:020}", 5)));
        let b = Service::open_etcd(cfg(), opts("hb")).await.unwrap();
        let ids = |s: &Arc<Service>| s.read(|t| t.cens().iter().map(|c| c.id.clone()).collect::<Vec<_>>());
        assert_eq!((b.revision(), ids(&b)), (7, ids(&a)));
    }
}
