//! The background tasks of a store: the watch of the log and the hosts'
//! announcements, and this server's own announcement under a lease.
//!
//! Invariants: the watch follows `hosts/`, `lock/` and `log/` only (small
//! values; a chunked entry's chunks are read by key range); it moves past
//! an event only once it was handled; a watch that fell behind compaction
//! starts again at etcd's oldest revision and the server catches up from
//! the log ([`Remote::CatchUp`]), which re-lists the model if the log no
//! longer reaches back.

use super::request::{classify, within, within_once};
use super::{Core, MAX_MESSAGE};
use crate::store::{HostStatus, Remote, StoreError};
use etcd_client::{Client, EventType, GetOptions, PutOptions, WatchOptions};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The watch of the prefix: feeds changes to the service and keeps the
/// hosts' announcements and the floor current.
pub(super) struct Watch {
    pub core: Arc<Core>,
    pub tx: mpsc::Sender<Remote>,
}

impl Watch {
    pub async fn run(self, mut next: i64) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.tx.is_closed() {
                return;
            }
            match self.session(&mut next).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    if self.core.shared.watching.swap(false, Ordering::AcqRel) {
                        tracing::warn!(error = %e, "lost the watch on etcd; reconnecting");
                    } else {
                        tracing::debug!(error = %e, "etcd still unreachable");
                    }
                }
            }
            self.core.shared.watching.store(false, Ordering::Release);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// One watch from `next` until it ends; `next` moves past every event
    /// handled.
    async fn session(&self, next: &mut i64) -> Result<(), StoreError> {
        self.snapshot_hosts().await?;
        let wc = self.core.client.watch_client().max_decoding_message_size(MAX_MESSAGE);
        let opts = WatchOptions::new()
            .with_range(self.core.keys.watch_end())
            .with_start_revision(*next)
            .with_progress_notify();
        let mut stream = within(self.core.timeout, "watching", || {
            let (mut wc, opts, key) = (wc.clone(), opts.clone(), self.core.keys.hosts.clone());
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
                if !self.core.shared.watching.swap(true, Ordering::AcqRel) {
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
        if let Some(rev) = self.core.keys.entry_revision(key) {
            match ty {
                EventType::Put => match self.core.change_of(kv, 0).await {
                    Ok((c, bytes)) => {
                        self.core.note_committed(c.revision, bytes as u64);
                        let _ = self.tx.send(Remote::Change(Arc::new(c))).await;
                    }
                    Err(e) => {
                        tracing::warn!(revision = rev, error = %e, "could not read a change from etcd; catching up");
                        let _ = self.tx.send(Remote::CatchUp).await;
                    }
                },
                EventType::Delete => {
                    self.core.shared.floor.fetch_max(rev, Ordering::AcqRel);
                }
            }
        } else if let Some(host) = std::str::from_utf8(key).ok().and_then(|k| k.strip_prefix(&self.core.keys.hosts)) {
            let mut hosts = self.core.shared.hosts.lock();
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
        let kv = self.core.client.kv_client();
        let resp = within(self.core.timeout, "reading the hosts", || {
            let (mut kv, key) = (kv.clone(), self.core.keys.hosts.clone());
            async move { kv.get(key, Some(GetOptions::new().with_prefix().with_limit(100_000))).await }
        })
        .await?;
        let mut hosts = self.core.shared.hosts.lock();
        for h in hosts.values_mut() {
            h.up = false;
        }
        for kv in resp.kvs() {
            if let Some(host) = std::str::from_utf8(kv.key()).ok().and_then(|k| k.strip_prefix(&self.core.keys.hosts)) {
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
pub(super) struct Announce {
    pub client: Client,
    pub key: String,
    pub value: String,
    pub ttl: i64,
    pub timeout: Duration,
}

impl Announce {
    pub async fn run(self) {
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
