//! The store shared by many hosts: etcd. Layout under the prefix `P`
//! (`--etcd-prefix`, default `/leviathan`):
//!
//! - `P/format`: the layout version, `1`;
//! - `P/revision`: the revision of the last change, in decimal;
//! - `P/records/<kind>/<id>`: each record, as JSON (the SQLite `records`
//!   table);
//! - `P/changes/<revision, 20 digits>`: the change log, as JSON; the floor
//!   (the log holds every change after it) is the revision before the first
//!   key kept, or the revision when the log is empty;
//! - `P/hosts/<host id>`: each running server's announcement (its host id
//!   and VTEP address), attached to a lease the server keeps alive.
//!
//! A commit is one etcd transaction that compares `P/revision` with the
//! revision the change was computed against and, only if equal, writes the
//! records, the change record and the new revision, and deletes the changes
//! the log no longer keeps. Every server watches `P/` from the revision it
//! loaded at; a watch that fell behind compaction is restarted and the
//! server catches up from the change log (which compaction never touches:
//! it only drops old versions, and the log's keys are current).

pub use super::etcd_security::ConnectError;
use super::etcd_security::EtcdSecurity;
use super::{Gone, HostStatus, Remote, Store, StoreError};
use crate::model::{Change, EntityKey, Images, Record};
use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The layout version this build writes and reads.
pub const LAYOUT: &str = "1";
/// Records read per request when loading.
const PAGE: i64 = 500;
/// Largest message taken from etcd (a watch response carries a whole change).
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
        }
    }
}

/// The keys of one prefix.
#[derive(Debug, Clone)]
struct Keys {
    root: String,
    revision: String,
    format: String,
    records: String,
    changes: String,
    hosts: String,
}

impl Keys {
    fn new(prefix: &str) -> anyhow::Result<Keys> {
        let p = prefix.trim_end_matches('/');
        if !prefix.starts_with('/') || p.is_empty() || prefix.len() > 256 || prefix.chars().any(|c| c.is_control()) {
            anyhow::bail!(
                "--etcd-prefix '{}': give a key prefix starting with '/' (e.g. /leviathan), at most 256 characters",
                prefix.escape_debug()
            );
        }
        Ok(Keys {
            root: format!("{p}/"),
            revision: format!("{p}/revision"),
            format: format!("{p}/format"),
            records: format!("{p}/records/"),
            changes: format!("{p}/changes/"),
            hosts: format!("{p}/hosts/"),
        })
    }

    fn record(&self, key: &EntityKey) -> String {
        format!("{}{}/{}", self.records, key.kind(), key.id())
    }

    fn change(&self, revision: u64) -> String {
        format!("{}{revision:020}", self.changes)
    }

    fn change_revision(&self, key: &[u8]) -> Option<u64> {
        std::str::from_utf8(key).ok()?.strip_prefix(&self.changes)?.parse().ok()
    }
}

/// The end of the key range of everything starting with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// State the background tasks keep current.
#[derive(Default)]
struct Shared {
    floor: AtomicU64,
    hosts: Mutex<BTreeMap<String, HostStatus>>,
    /// Whether the watch is running (etcd reachable, as last seen).
    watching: AtomicBool,
}

/// The etcd store (see the module docs).
pub struct EtcdStore {
    client: Client,
    keys: Keys,
    keep: u64,
    timeout: Duration,
    shared: Arc<Shared>,
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

/// Runs one etcd request with the request timeout, classifying failures.
async fn within_once<T>(
    timeout: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, fut).await {
        Err(_) => {
            Err(StoreError::Unavailable(format!("{what}: etcd did not answer within {}s", timeout.as_secs_f64())))
        }
        Ok(Err(e)) => Err(classify(what, e)),
        Ok(Ok(v)) => Ok(v),
    }
}

/// Runs an etcd request with the request timeout; a request that never
/// left (the member it went to refused the connection: it is down) is
/// sent again, so that another member answers it.
async fn within<T, F, Fut>(timeout: Duration, what: &str, mut call: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, call()).await {
            Err(_) => {
                return Err(StoreError::Unavailable(format!(
                    "{what}: etcd did not answer within {}s",
                    timeout.as_secs_f64()
                )))
            }
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) if never_sent(&e) && tokio::time::Instant::now() + RESEND_PAUSE < deadline => {
                tracing::debug!(error = %e, "{what}: an etcd member refused the connection; sending again");
                tokio::time::sleep(RESEND_PAUSE).await;
            }
            Ok(Err(e)) => return Err(classify(what, e)),
        }
    }
}

/// Pause before a request that never left is sent again.
const RESEND_PAUSE: Duration = Duration::from_millis(50);

/// Whether a request failed before it reached etcd (so sending it again
/// cannot apply it twice).
fn never_sent(e: &etcd_client::Error) -> bool {
    let s = format!("{e:?}");
    s.contains("ConnectError") || s.contains("tcp connect error")
}

/// A request etcd refused (too large, too many operations, permissions) is
/// an error of its own; anything else (connection refused, no leader,
/// timeouts) means etcd is unavailable.
fn classify(what: &str, e: etcd_client::Error) -> StoreError {
    if let etcd_client::Error::GRpcStatus(s) = &e {
        // InvalidArgument, PermissionDenied, ResourceExhausted,
        // FailedPrecondition, OutOfRange, Unauthenticated.
        if matches!(i32::from(s.code()), 3 | 7 | 8 | 9 | 11 | 16) {
            return StoreError::Other(anyhow::anyhow!("{what}: etcd refused the request: {}", s.message()));
        }
    }
    StoreError::Unavailable(format!("{what}: {}", with_causes(&e)))
}

/// An error with its causes (`a: b: c`), each said once; for a gRPC
/// status, its message and causes (not its debug dump).
fn with_causes(e: &etcd_client::Error) -> String {
    let (mut out, mut source) = match e {
        etcd_client::Error::GRpcStatus(s) => (s.message().to_string(), std::error::Error::source(s)),
        e => (e.to_string(), std::error::Error::source(e)),
    };
    while let Some(s) = source {
        let part = s.to_string();
        if !out.contains(&part) {
            out = format!("{out}: {part}");
        }
        source = s.source();
    }
    out
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> i64 {
    h.map_or(0, |h| h.revision())
}

fn parse_u64(what: &str, v: &[u8]) -> Result<u64, StoreError> {
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
        let mut store = EtcdStore {
            client,
            keys,
            keep: cfg.keep,
            timeout,
            shared: Arc::new(Shared::default()),
            remote: Mutex::new(None),
            tasks: Vec::new(),
        };
        store.init().await?;
        let (images, revision, header) = store.read_all().await?;
        // The floor, as the log stands now.
        store.changes_after(revision, 1).await?;

        let (tx, rx) = mpsc::channel(REMOTE_QUEUE);
        *store.remote.lock() = Some(rx);
        let watch = Watch {
            client: store.client.clone(),
            keys: store.keys.clone(),
            shared: Arc::clone(&store.shared),
            tx,
            timeout,
        };
        store.tasks.push(tokio::spawn(watch.run(header + 1)));
        let announce = Announce {
            client: store.client.clone(),
            key: format!("{}{}", store.keys.hosts, cfg.host_id),
            value: serde_json::json!({"id": cfg.host_id, "vtep_address": cfg.vtep_address}).to_string(),
            ttl: cfg.lease_ttl,
            timeout,
        };
        store.tasks.push(tokio::spawn(announce.run()));
        Ok((store, images, revision))
    }

    /// The prefix's layout, created if missing; a layout of another
    /// version is refused.
    async fn init(&self) -> Result<(), StoreError> {
        let txn = Txn::new().when([Compare::version(self.keys.revision.clone(), CompareOp::Equal, 0)]).and_then([
            TxnOp::put(self.keys.revision.clone(), "0", None),
            TxnOp::put(self.keys.format.clone(), LAYOUT, None),
        ]);
        let kv = self.client.kv_client();
        within(self.timeout, "creating the layout", || {
            let (mut kv, txn) = (kv.clone(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await?;
        Ok(())
    }

    /// Every record, the revision, and the etcd revision they were read at.
    async fn read_all(&self) -> Result<(Images, u64, i64), StoreError> {
        let kv = self.client.kv_client().max_decoding_message_size(MAX_MESSAGE);
        let txn = Txn::new()
            .and_then([TxnOp::get(self.keys.revision.clone(), None), TxnOp::get(self.keys.format.clone(), None)]);
        let resp = within(self.timeout, "reading the revision", || {
            let (mut kv, txn) = (kv.clone(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await?;
        let header = header_revision(resp.header());
        let mut values = resp.op_responses().into_iter().map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
            _ => None,
        });
        let revision = match values.next().flatten() {
            Some(v) => parse_u64("revision", &v)?,
            None => 0,
        };
        if let Some(f) = values.next().flatten() {
            if f != LAYOUT.as_bytes() {
                return Err(StoreError::Other(anyhow::anyhow!(
                    "the prefix {} holds layout {:?}; this build reads layout {LAYOUT}. Upgrade leviathan or use another --etcd-prefix",
                    self.keys.root,
                    String::from_utf8_lossy(&f)
                )));
            }
        }
        let mut images = Images::new();
        let end = prefix_end(&self.keys.records);
        let mut from = self.keys.records.clone().into_bytes();
        loop {
            let opts = GetOptions::new().with_range(end.clone()).with_revision(header).with_limit(PAGE);
            let resp = within(self.timeout, "reading the records", || {
                let (mut kv, from, opts) = (kv.clone(), from.clone(), opts.clone());
                async move { kv.get(from, Some(opts)).await }
            })
            .await?;
            for kv in resp.kvs() {
                let rec: Record = serde_json::from_slice(kv.value()).map_err(|e| {
                    StoreError::Other(anyhow::anyhow!("unreadable record {}: {e}", String::from_utf8_lossy(kv.key())))
                })?;
                images.insert(rec.key(), Some(rec));
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        Ok((images, revision, header))
    }
}

#[async_trait]
impl Store for EtcdStore {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    fn keep(&self) -> u64 {
        self.keep
    }

    fn floor(&self) -> u64 {
        self.shared.floor.load(Ordering::Acquire)
    }

    async fn load(&self) -> Result<(Images, u64), StoreError> {
        let (images, revision, _) = self.read_all().await?;
        Ok((images, revision))
    }

    async fn commit(&self, images: Arc<Images>, change: Arc<Change>) -> Result<(), StoreError> {
        let revision = change.revision;
        let Some(expected) = revision.checked_sub(1) else {
            return Err(StoreError::Conflict { expected: 0 });
        };
        let mut ops = Vec::with_capacity(images.len() + 3);
        for (key, rec) in images.iter() {
            ops.push(match rec {
                Some(rec) => TxnOp::put(
                    self.keys.record(key),
                    serde_json::to_vec(rec).map_err(|e| StoreError::Other(e.into()))?,
                    None,
                ),
                None => TxnOp::delete(self.keys.record(key), None),
            });
        }
        ops.push(TxnOp::put(
            self.keys.change(revision),
            serde_json::to_vec(&*change).map_err(|e| StoreError::Other(e.into()))?,
            None,
        ));
        ops.push(TxnOp::put(self.keys.revision.clone(), revision.to_string(), None));
        let floor = revision.saturating_sub(self.keep);
        if floor > 0 {
            ops.push(TxnOp::delete(
                self.keys.changes.clone(),
                Some(DeleteOptions::new().with_range(self.keys.change(floor + 1))),
            ));
        }
        let txn = Txn::new()
            .when([Compare::value(self.keys.revision.clone(), CompareOp::Equal, expected.to_string())])
            .and_then(ops);
        let kv = self.client.kv_client();
        let resp = within(self.timeout, "committing the change", || {
            let (mut kv, txn) = (kv.clone(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await?;
        if !resp.succeeded() {
            return Err(StoreError::Conflict { expected });
        }
        self.shared.floor.fetch_max(floor, Ordering::AcqRel);
        Ok(())
    }

    async fn changes_after(&self, revision: u64, limit: usize) -> Result<Vec<Change>, StoreError> {
        let limit = i64::try_from(limit.clamp(1, 100_000)).unwrap_or(1);
        let end = prefix_end(&self.keys.changes);
        let txn = Txn::new().and_then([
            TxnOp::get(self.keys.changes.clone(), Some(GetOptions::new().with_prefix().with_limit(1).with_keys_only())),
            TxnOp::get(
                self.keys.change(revision.saturating_add(1)),
                Some(GetOptions::new().with_range(end).with_limit(limit)),
            ),
            TxnOp::get(self.keys.revision.clone(), None),
        ]);
        let kv = self.client.kv_client().max_decoding_message_size(MAX_MESSAGE);
        let resp = within(self.timeout, "reading the change log", || {
            let (mut kv, txn) = (kv.clone(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await?;
        let mut gets = resp.op_responses().into_iter().filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g),
            _ => None,
        });
        let (Some(first), Some(page), Some(current)) = (gets.next(), gets.next(), gets.next()) else {
            return Err(StoreError::Other(anyhow::anyhow!("etcd answered the change log read incompletely")));
        };
        let current = match current.kvs().first() {
            Some(kv) => parse_u64("revision", kv.value())?,
            None => 0,
        };
        let floor = match first.kvs().first() {
            Some(kv) => self.keys.change_revision(kv.key()).map(|r| r.saturating_sub(1)).unwrap_or(current),
            None => current,
        };
        self.shared.floor.fetch_max(floor, Ordering::AcqRel);
        if revision < floor {
            return Err(StoreError::Gone(Gone { floor, keep: self.keep }));
        }
        let mut out = Vec::with_capacity(page.kvs().len());
        for (expect, kv) in (revision + 1..).zip(page.kvs()) {
            let change: Change = serde_json::from_slice(kv.value()).map_err(|e| {
                StoreError::Other(anyhow::anyhow!("unreadable change {}: {e}", String::from_utf8_lossy(kv.key())))
            })?;
            if change.revision != expect {
                return Err(StoreError::Other(anyhow::anyhow!(
                    "the change log has a gap: revision {} where {expect} was expected",
                    change.revision
                )));
            }
            out.push(change);
        }
        Ok(out)
    }

    fn follow(&self) -> Option<mpsc::Receiver<Remote>> {
        self.remote.lock().take()
    }

    fn host_status(&self, host: &str) -> HostStatus {
        self.shared.hosts.lock().get(host).cloned().unwrap_or_default()
    }
}

impl EtcdStore {
    /// Whether the watch on etcd is running (etcd reachable, as last seen).
    pub fn watching(&self) -> bool {
        self.shared.watching.load(Ordering::Acquire)
    }
}

/// The watch of the prefix: feeds changes to the service and keeps the
/// hosts' announcements and the floor current.
struct Watch {
    client: Client,
    keys: Keys,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Remote>,
    timeout: Duration,
}

impl Watch {
    async fn run(self, mut next: i64) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.tx.is_closed() {
                return;
            }
            match self.session(&mut next).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    if self.shared.watching.swap(false, Ordering::AcqRel) {
                        tracing::warn!(error = %e, "lost the watch on etcd; reconnecting");
                    } else {
                        tracing::debug!(error = %e, "etcd still unreachable");
                    }
                }
            }
            self.shared.watching.store(false, Ordering::Release);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// One watch from `next` until it ends; `next` moves past every event
    /// handled.
    async fn session(&self, next: &mut i64) -> Result<(), StoreError> {
        self.snapshot_hosts().await?;
        let wc = self.client.watch_client().max_decoding_message_size(MAX_MESSAGE);
        let opts = WatchOptions::new().with_prefix().with_start_revision(*next).with_progress_notify();
        let mut stream = within(self.timeout, "watching", || {
            let (mut wc, opts, key) = (wc.clone(), opts.clone(), self.keys.root.clone());
            async move { wc.watch(key, Some(opts)).await }
        })
        .await?;
        let mut caught_up = false;
        loop {
            let resp = match stream.message().await {
                Ok(Some(r)) => r,
                Ok(None) => return Err(StoreError::Unavailable("the watch ended".into())),
                Err(e) => return Err(classify("watching", e)),
            };
            if resp.compact_revision() > 0 {
                // Fell behind compaction: watch again from what etcd still
                // has; the catch-up from the log covers what was missed.
                tracing::info!(from = *next, compacted = resp.compact_revision(), "watch fell behind compaction");
                *next = (*next).max(resp.compact_revision());
                return Ok(());
            }
            if resp.canceled() {
                return Err(StoreError::Unavailable(format!("etcd canceled the watch: {}", resp.cancel_reason())));
            }
            if !caught_up {
                // The watch exists: whatever was committed before it started
                // is in the log.
                caught_up = true;
                if !self.shared.watching.swap(true, Ordering::AcqRel) {
                    tracing::info!(from = *next, "watching etcd");
                }
                if self.tx.send(Remote::CatchUp).await.is_err() {
                    return Ok(());
                }
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                *next = (*next).max(kv.mod_revision() + 1);
                self.handle(ev.event_type(), kv).await;
            }
        }
    }

    async fn handle(&self, ty: EventType, kv: &etcd_client::KeyValue) {
        let key = kv.key();
        if let Some(rev) = self.keys.change_revision(key) {
            match ty {
                EventType::Put => match serde_json::from_slice::<Change>(kv.value()) {
                    Ok(c) => {
                        let _ = self.tx.send(Remote::Change(Arc::new(c))).await;
                    }
                    Err(e) => {
                        tracing::error!(revision = rev, error = %e, "unreadable change in etcd");
                        let _ = self.tx.send(Remote::CatchUp).await;
                    }
                },
                EventType::Delete => {
                    self.shared.floor.fetch_max(rev, Ordering::AcqRel);
                }
            }
        } else if let Some(host) = std::str::from_utf8(key).ok().and_then(|k| k.strip_prefix(&self.keys.hosts)) {
            let mut hosts = self.shared.hosts.lock();
            match ty {
                EventType::Put => {
                    hosts.insert(host.to_string(), HostStatus { vtep_address: vtep_of(kv.value()), up: true });
                }
                EventType::Delete => {
                    if let Some(h) = hosts.get_mut(host) {
                        h.up = false;
                    }
                }
            }
        }
    }

    /// Reads every announcement: hosts not announced any more are down.
    async fn snapshot_hosts(&self) -> Result<(), StoreError> {
        let kv = self.client.kv_client();
        let resp = within(self.timeout, "reading the hosts", || {
            let (mut kv, key) = (kv.clone(), self.keys.hosts.clone());
            async move { kv.get(key, Some(GetOptions::new().with_prefix().with_limit(100_000))).await }
        })
        .await?;
        let mut hosts = self.shared.hosts.lock();
        for h in hosts.values_mut() {
            h.up = false;
        }
        for kv in resp.kvs() {
            if let Some(host) = std::str::from_utf8(kv.key()).ok().and_then(|k| k.strip_prefix(&self.keys.hosts)) {
                hosts.insert(host.to_string(), HostStatus { vtep_address: vtep_of(kv.value()), up: true });
            }
        }
        Ok(())
    }
}

fn vtep_of(value: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(value).ok()?;
    v.get("vtep_address")?.as_str().map(str::to_string)
}

/// This server's announcement under a lease, renewed every third of its
/// time to live, and made again (with a new lease) after an outage.
struct Announce {
    client: Client,
    key: String,
    value: String,
    ttl: i64,
    timeout: Duration,
}

impl Announce {
    async fn run(self) {
        loop {
            if let Err(e) = self.session().await {
                tracing::debug!(error = %e, "host announcement lapsed; announcing again");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn session(&self) -> Result<(), StoreError> {
        let lease = self.client.lease_client();
        let ttl = self.ttl;
        let grant = within(self.timeout, "granting the host lease", || {
            let mut lease = lease.clone();
            async move { lease.grant(ttl, None).await }
        })
        .await?;
        let id = grant.id();
        let kv = self.client.kv_client();
        within(self.timeout, "announcing the host", || {
            let (mut kv, key, value) = (kv.clone(), self.key.clone(), self.value.clone());
            async move { kv.put(key, value, Some(PutOptions::new().with_lease(id))).await }
        })
        .await?;
        let mut lease = lease.clone();
        tracing::info!(key = %self.key, "host announced");
        let (mut keeper, mut stream) =
            within_once(self.timeout, "keeping the host lease", lease.keep_alive(id)).await?;
        let period = Duration::from_millis((self.ttl as u64 * 1000 / 3).max(200));
        loop {
            tokio::time::sleep(period).await;
            within_once(self.timeout, "renewing the host lease", keeper.keep_alive()).await?;
            match within_once(self.timeout, "renewing the host lease", stream.message()).await? {
                Some(r) if r.ttl() > 0 => {}
                _ => return Err(StoreError::Unavailable("the host lease expired".into())),
            }
        }
    }
}
