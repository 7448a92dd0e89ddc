//! The store shared by many hosts: etcd, within its default limits (128
//! operations and 1.5 MiB per request), under the prefix `P`
//! (`--etcd-prefix`, default `/leviathan`), so that leviathan can share a
//! cluster. Layout 2:
//!
//! - `P/format`: the layout version, `2`;
//! - `P/head`: the revision of the last change, in decimal;
//! - `P/log/<revision, 20 digits>`: the change log, the unit of
//!   atomicity: each entry is `{"id": <commit id>, "change": {...}}`, or
//!   for a change whose JSON is over 1 MiB a manifest `{"id", "chunks",
//!   "bytes"}` naming its chunks;
//! - `P/chunks/<revision>/<commit id>/<n, 6 digits>`: a large change's
//!   JSON in chunks of 1 MiB, written before its commit;
//! - `P/snapshot`: the pointer `{"revision", "id", "chunks", "bytes"}` to
//!   the current snapshot, `P/snapshots/<revision>/<id>/<n>`: every
//!   record at that revision as one JSON array, in chunks;
//! - `P/fence/<commit id>`: a commit fenced off while its outcome was
//!   found out (see [`log`]);
//! - `P/lock/commit/...`: etcd's lock that writers losing the commit race
//!   queue for (see [`lock`]);
//! - `P/hosts/<host id>`: each running server's announcement (its host id
//!   and VTEP address), attached to a lease the server keeps alive.
//!
//! A commit is chunks (if any), then one small guarded transaction: if
//! `P/head` is the revision the change was computed against, put `P/head`
//! and the log entry (see [`log`]). Records are not stored apart: every
//! server derives them from the log, applying each change to its model
//! (its own at commit, others' from the watch). A load at start reads the
//! snapshot, then the log after it, all at one etcd revision (see
//! [`snapshot`]). Snapshots are written in the background (every 10,000
//! changes or 64 MiB of changes), never on the commit path; the log is then trimmed to what the
//! snapshot and `--keep-changes` still need, and a sweep deletes chunks no
//! entry names (a lost race, a server killed between its chunks and its
//! commit). Every request is built by [`request`], which refuses one over
//! the limits and counts the largest sent (`/metrics`).
//!
//! The floor (the log holds every change after it, for `since`) is
//! `head - keep`, or the revision before the first entry kept if higher.
//!
//! Every server watches `P/hosts/` to `P/log/` (small values) from the
//! revision it loaded at; a watch that fell behind compaction starts again
//! and the server catches up from the log, or re-lists the model if the log
//! no longer reaches back (see [`watch`]).
//!
//! A prefix of layout 1 (records written next to the log in one
//! transaction, by earlier builds) is migrated at start: its records
//! become the first snapshot, at its revision, and its log is dropped (a
//! client resuming from before it is told `GONE`). Stop every server of the
//! earlier build first: their commits fail once the prefix is migrated.

pub use super::etcd_security::ConnectError;
use super::etcd_security::EtcdSecurity;
use super::{HostStatus, Remote, Store, StoreError};
use crate::model::{Change, Images, Record};
use async_trait::async_trait;
use etcd_client::{Client, ConnectOptions};
use keys::Keys;
use parking_lot::Mutex;
use request::within;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

mod keys;
mod layout;
pub mod lock;
pub mod log;
pub mod request;
pub mod snapshot;
mod watch;

pub use request::largest_request;

/// The layout version this build writes and reads.
pub const LAYOUT: &str = "2";
/// Largest message taken from etcd (a page of the log, of chunks).
const MAX_MESSAGE: usize = 64 * 1024 * 1024;
/// Queue of remote changes between the watch and the service.
const REMOTE_QUEUE: usize = 1024;

/// How to reach etcd and what to announce there.
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Client URLs of the etcd members (`http://127.0.0.1:2379`).
    pub endpoints: Vec<String>,
    /// Prefix of every key (`/leviathan`).
    pub prefix: String,
    /// Changes the log keeps.
    pub keep: u64,
    /// This server's host id, announced under a lease.
    pub host_id: String,
    /// This host's underlay address, announced with it.
    pub vtep_address: Option<String>,
    /// Seconds the announcement outlives a server that stopped renewing it.
    pub lease_ttl: i64,
    /// How long one etcd request may take before the store counts as
    /// unavailable.
    pub request_timeout: Duration,
    /// TLS and etcd user (none by default).
    pub security: EtcdSecurity,
    /// A snapshot is due after this many changes, or this many bytes of
    /// changes, since the last one.
    pub snapshot_every: (u64, u64),
}

impl EtcdConfig {
    pub fn new(endpoints: Vec<String>, host_id: &str) -> EtcdConfig {
        EtcdConfig {
            endpoints,
            prefix: "/leviathan".into(),
            keep: super::DEFAULT_KEEP_CHANGES,
            host_id: host_id.into(),
            vtep_address: None,
            lease_ttl: 10,
            request_timeout: Duration::from_secs(5),
            security: EtcdSecurity::default(),
            snapshot_every: (snapshot::SNAPSHOT_CHANGES, snapshot::SNAPSHOT_BYTES),
        }
    }
}

/// State the background tasks keep current.
#[derive(Default)]
struct Shared {
    floor: AtomicU64,
    hosts: Mutex<BTreeMap<String, HostStatus>>,
    /// Whether the watch is running (etcd reachable, as last seen).
    watching: AtomicBool,
    /// The revision of the latest snapshot known.
    snapshot: AtomicU64,
    /// Bytes of changes seen since then.
    log_bytes: AtomicU64,
    /// Whether this server is writing a snapshot.
    snapshotting: AtomicBool,
}

/// What the store's requests and tasks share.
pub(super) struct Core {
    client: Client,
    keys: Keys,
    keep: u64,
    timeout: Duration,
    host_id: String,
    shared: Shared,
    /// The commit lock, while held.
    held: Mutex<Option<lock::Held>>,
    /// See [`EtcdConfig::snapshot_every`].
    snapshot_every: (u64, u64),
}

impl Core {
    /// Notes a change committed (here or elsewhere) at `revision`.
    fn note_committed(&self, revision: u64, bytes: u64) {
        self.shared.floor.fetch_max(revision.saturating_sub(self.keep), Ordering::AcqRel);
        self.shared.log_bytes.fetch_add(bytes, Ordering::AcqRel);
    }
}

/// The etcd store (see the module docs).
pub struct EtcdStore {
    core: Arc<Core>,
    remote: Mutex<Option<mpsc::Receiver<Remote>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

pub(super) fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.map_or(0, |h| h.revision())
}

pub(super) fn parse_u64(what: &str, v: &[u8]) -> Result<u64, StoreError> {
    std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()).ok_or_else(|| {
        StoreError::Other(anyhow::anyhow!("etcd holds an unreadable {what} ({:?})", String::from_utf8_lossy(v)))
    })
}

impl EtcdStore {
    /// Connects, creates the layout under the prefix if it is new, and
    /// loads every record and the revision. Starts watching for changes
    /// made elsewhere and announcing this host. A failure says whether
    /// trying again may help ([`ConnectError`]).
    pub async fn connect(cfg: EtcdConfig) -> Result<(EtcdStore, Images, u64), ConnectError> {
        let endpoints = cfg.endpoints.join(",");
        let (security, members, timeout) = (cfg.security.clone(), cfg.endpoints.clone(), cfg.request_timeout);
        match Self::connect_checked(cfg).await {
            Ok(opened) => Ok(opened),
            Err(ConnectError::Unreachable(m)) => match security.tls_refusal(&members, timeout).await {
                Some(alert) => Err(ConnectError::Refused(anyhow::anyhow!("{m}; {alert}"))),
                None => Err(ConnectError::Unreachable(m)),
            },
            Err(e) => Err(e),
        }
        .map_err(|e| e.at(&endpoints, &security))
    }

    async fn connect_checked(cfg: EtcdConfig) -> Result<(EtcdStore, Images, u64), ConnectError> {
        if cfg.keep == 0 {
            return Err(ConnectError::Refused(anyhow::anyhow!("--keep-changes must be at least 1")));
        }
        if cfg.endpoints.is_empty() || cfg.endpoints.len() > 64 {
            return Err(ConnectError::Refused(anyhow::anyhow!("--etcd: give 1 to 64 client URLs, comma-separated")));
        }
        if !(1..=3600).contains(&cfg.lease_ttl) {
            return Err(ConnectError::Refused(anyhow::anyhow!("--host-ttl: give 1 to 3600 seconds")));
        }
        let keys = Keys::new(&cfg.prefix).map_err(ConnectError::Refused)?;
        let timeout = cfg.request_timeout;
        let opts = cfg.security.apply(
            ConnectOptions::new()
                .with_connect_timeout(timeout)
                .with_timeout(timeout)
                .with_keep_alive(Duration::from_secs(2), timeout)
                .with_keep_alive_while_idle(true)
                .with_require_leader(true),
        );
        let client =
            within(timeout, "connecting to etcd", || Client::connect(cfg.endpoints.clone(), Some(opts.clone())))
                .await?;
        let core = Arc::new(Core {
            client,
            keys,
            keep: cfg.keep,
            timeout,
            host_id: cfg.host_id.clone(),
            shared: Shared::default(),
            held: Mutex::new(None),
            snapshot_every: cfg.snapshot_every,
        });
        core.init().await?;
        let (images, revision, header) = core.read_all().await?;
        // The floor, as the log stands now.
        core.read_changes(revision, 1).await?;
        let mut store = EtcdStore { core: Arc::clone(&core), remote: Mutex::new(None), tasks: Vec::new() };

        let (tx, rx) = mpsc::channel(REMOTE_QUEUE);
        *store.remote.lock() = Some(rx);
        let watch = watch::Watch { core: Arc::clone(&core), tx };
        store.tasks.push(tokio::spawn(watch.run(header + 1)));
        store.tasks.push(tokio::spawn({
            let core = Arc::clone(&core);
            async move {
                if let Err(e) = core.sweep().await {
                    tracing::debug!(error = %e, "could not sweep the prefix at start");
                }
            }
        }));
        let announce = watch::Announce {
            client: core.client.clone(),
            key: format!("{}{}", core.keys.hosts, cfg.host_id),
            value: serde_json::json!({"id": cfg.host_id, "vtep_address": cfg.vtep_address}).to_string(),
            ttl: cfg.lease_ttl,
            timeout,
        };
        store.tasks.push(tokio::spawn(announce.run()));
        Ok((store, images, revision))
    }
}

#[async_trait]
impl Store for EtcdStore {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    fn keep(&self) -> u64 {
        self.core.keep
    }

    fn floor(&self) -> u64 {
        self.core.shared.floor.load(Ordering::Acquire)
    }

    async fn load(&self) -> Result<(Images, u64), StoreError> {
        let (images, revision, _) = self.core.read_all().await?;
        Ok((images, revision))
    }

    async fn commit(&self, _images: Arc<Images>, change: Arc<Change>) -> Result<(), StoreError> {
        self.core.commit_change(&change).await
    }

    async fn changes_after(&self, revision: u64, limit: usize) -> Result<Vec<Change>, StoreError> {
        self.core.read_changes(revision, limit).await
    }

    fn follow(&self) -> Option<mpsc::Receiver<Remote>> {
        self.remote.lock().take()
    }

    fn host_status(&self, host: &str) -> HostStatus {
        self.core.shared.hosts.lock().get(host).cloned().unwrap_or_default()
    }

    async fn lock_commits(&self) -> Result<(), StoreError> {
        let wait = (self.core.timeout * 6).max(Duration::from_secs(30));
        self.core.lock_commits(wait).await
    }

    async fn unlock_commits(&self) {
        self.core.unlock_commits().await
    }

    fn snapshot_due(&self, revision: u64) -> bool {
        self.core.due(revision)
    }

    async fn snapshot(&self, revision: u64, records: Vec<Record>) -> Result<(), StoreError> {
        self.core.snapshot(revision, records).await
    }
}

impl EtcdStore {
    /// Whether the watch on etcd is running (etcd reachable, as last seen).
    pub fn watching(&self) -> bool {
        self.core.shared.watching.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests;
