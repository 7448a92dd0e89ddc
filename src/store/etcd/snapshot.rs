//! Loading the model (the latest snapshot, then the log after it),
//! writing snapshots in the background, trimming the log, and sweeping
//! what commits and snapshots left behind.
//!
//! A snapshot is every record at a revision, as JSON, in chunks under
//! `snapshots/<revision>/<id>/`; it counts once the pointer `snapshot`
//! names it, written by a transaction that only succeeds if the pointer
//! did not change since it was read (so the pointer only moves forward).
//!
//! Invariants: everything a load reads is read at one etcd revision (a
//! compaction in between makes it start again); the log is trimmed only up
//! to the pointer's revision and up to `head - keep`, so a load always finds
//! the snapshot and every entry after it; chunks are deleted only when no
//! log entry can ever name them (their revision is at or below `head` and
//! the entry there has another commit id, or the entry was trimmed).

use super::keys::prefix_end;
use super::log::{commit_id, CHUNK};
use super::request::{compacted, within, Request};
use super::{Core, LAYOUT, MAX_MESSAGE};
use crate::model::{Images, Record};
use crate::store::StoreError;
use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};
use std::sync::atomic::Ordering;

/// By default, a snapshot is due after this many changes since the last
/// one...
pub const SNAPSHOT_CHANGES: u64 = 10_000;
/// ... or this many bytes of changes.
pub const SNAPSHOT_BYTES: u64 = 64 * 1024 * 1024;
/// Keys listed per request by the sweep.
const SWEEP_PAGE: i64 = 1000;

/// The pointer to the current snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Pointer {
    pub revision: u64,
    pub id: String,
    pub chunks: usize,
    pub bytes: usize,
}

/// What a first read finds under the prefix.
struct Top {
    at: i64,
    head: u64,
    pointer: Option<(Pointer, i64)>,
}

impl Core {
    /// Every record, the revision, and the etcd revision they were read at:
    /// the snapshot, then the log after it.
    pub(super) async fn read_all(&self) -> Result<(Images, u64, i64), StoreError> {
        let mut tries = 0;
        loop {
            match self.read_all_once().await {
                Err(e) if compacted(&e) && tries < 3 => tries += 1,
                r => return r,
            }
        }
    }

    async fn read_top(&self) -> Result<Top, StoreError> {
        let k = &self.keys;
        let txn = Request::new("reading the head")
            .then(TxnOp::get(k.head.clone(), None), k.head.len())
            .then(TxnOp::get(k.format.clone(), None), k.format.len())
            .then(TxnOp::get(k.snapshot.clone(), None), k.snapshot.len())
            .txn()?;
        let kv = self.client.kv_client();
        let resp = within(self.timeout, "reading the head", || {
            let (mut kv, txn) = (kv.clone(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await?;
        let at = super::header_revision(resp.header());
        let mut values = resp.op_responses().into_iter().map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().map(|kv| (kv.value().to_vec(), kv.mod_revision())),
            _ => None,
        });
        let head = match values.next().flatten() {
            Some((v, _)) => super::parse_u64("head", &v)?,
            None => 0,
        };
        if let Some((f, _)) = values.next().flatten() {
            if f != LAYOUT.as_bytes() {
                return Err(StoreError::Other(anyhow::anyhow!(
                    "the prefix {} holds layout {:?}; this build reads layout {LAYOUT}. Upgrade leviathan or use another --etcd-prefix",
                    k.root,
                    String::from_utf8_lossy(&f)
                )));
            }
        }
        let pointer = match values.next().flatten() {
            Some((v, m)) => Some((
                serde_json::from_slice::<Pointer>(&v).map_err(|e| {
                    StoreError::Other(anyhow::anyhow!("unreadable snapshot pointer {}: {e}", k.snapshot))
                })?,
                m,
            )),
            None => None,
        };
        Ok(Top { at, head, pointer })
    }

    async fn read_all_once(&self) -> Result<(Images, u64, i64), StoreError> {
        let Top { at, head, pointer } = self.read_top().await?;
        let mut images = Images::new();
        let mut from = 0;
        if let Some((p, _)) = &pointer {
            let dir = self.keys.snapshot_dir(p.revision, &p.id);
            let bytes = self.read_chunks(&dir, p.chunks, p.bytes, at).await?;
            let records: Vec<Record> = tokio::task::spawn_blocking(move || serde_json::from_slice(&bytes))
                .await
                .map_err(|e| StoreError::Other(e.into()))?
                .map_err(|e| {
                    StoreError::Other(anyhow::anyhow!("unreadable snapshot at revision {}: {e}", p.revision))
                })?;
            for r in records {
                images.insert(r.key(), Some(r));
            }
            from = p.revision;
            self.shared.snapshot.fetch_max(p.revision, Ordering::AcqRel);
        }
        // The log after the snapshot, a page at a time.
        while from < head {
            let upto = head.min(from + 256);
            let page = self.entries(from, upto, at).await?;
            if page.len() as u64 != upto - from {
                return Err(StoreError::Other(anyhow::anyhow!(
                    "the change log lacks revisions {} to {upto} after the snapshot at {}",
                    from + 1 + page.len() as u64,
                    pointer.as_ref().map_or(0, |(p, _)| p.revision)
                )));
            }
            for c in page {
                for (k, after) in c.images() {
                    match after {
                        Some(r) => images.insert(k, Some(r)),
                        None => images.remove(&k),
                    };
                }
                from = c.revision;
            }
        }
        Ok((images, head, at))
    }

    /// Whether this server should write a snapshot at `revision`.
    pub(super) fn due(&self, revision: u64) -> bool {
        let since = revision.saturating_sub(self.shared.snapshot.load(Ordering::Acquire));
        !self.shared.snapshotting.load(Ordering::Acquire)
            && (since >= self.snapshot_every.0
                || self.shared.log_bytes.load(Ordering::Acquire) >= self.snapshot_every.1)
    }

    /// Writes `records` (the model at `revision`) as the snapshot, then
    /// trims the log and sweeps. Never on the commit path.
    pub(super) async fn snapshot(&self, revision: u64, records: Vec<Record>) -> Result<(), StoreError> {
        if self.shared.snapshotting.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let r = self.snapshot_inner(revision, records).await;
        self.shared.snapshotting.store(false, Ordering::Release);
        // Trimming and sweeping do not hold up the next snapshot.
        if let Ok(Some(head)) = r {
            self.trim(revision, head.max(revision)).await?;
            self.sweep().await?;
        }
        r.map(|_| ())
    }

    /// Writes the snapshot; `head` as read before, if it became current.
    async fn snapshot_inner(&self, revision: u64, records: Vec<Record>) -> Result<Option<u64>, StoreError> {
        let top = self.read_top().await?;
        if let Some((p, _)) = &top.pointer {
            self.shared.snapshot.fetch_max(p.revision, Ordering::AcqRel);
            if p.revision >= revision {
                return Ok(None);
            }
        }
        let bytes = tokio::task::spawn_blocking(move || serde_json::to_vec(&records))
            .await
            .map_err(|e| StoreError::Other(e.into()))?
            .map_err(|e| StoreError::Other(e.into()))?;
        let id = commit_id(&self.host_id);
        let dir = self.keys.snapshot_dir(revision, &id);
        if let Err(e) = self.put_chunks("writing a snapshot", &dir, &bytes).await {
            self.delete_dir(&dir).await;
            return Err(e);
        }
        let p = Pointer { revision, id, chunks: bytes.len().div_ceil(CHUNK), bytes: bytes.len() };
        let value = serde_json::to_vec(&p).map_err(|e| StoreError::Other(e.into()))?;
        let k = &self.keys;
        let seen = top.pointer.as_ref().map_or(0, |(_, m)| *m);
        let txn = Request::new("pointing at a snapshot")
            .when(Compare::mod_revision(k.snapshot.clone(), CompareOp::Equal, seen), k.snapshot.len())
            .then(TxnOp::put(k.snapshot.clone(), value.clone(), None), k.snapshot.len() + value.len())
            .txn()?;
        let mut kv = self.client.kv_client();
        let resp = super::request::within_once(self.timeout, "pointing at a snapshot", kv.txn(txn)).await?;
        if !resp.succeeded() {
            self.delete_dir(&dir).await;
            return Ok(None);
        }
        tracing::info!(revision, bytes = p.bytes, "snapshot written");
        self.shared.snapshot.fetch_max(revision, Ordering::AcqRel);
        self.shared.log_bytes.store(0, Ordering::Release);
        if let Some((old, _)) = top.pointer {
            self.delete_dir(&self.keys.snapshot_dir(old.revision, &old.id)).await;
        }
        Ok(Some(top.head))
    }

    /// Deletes the log entries (and their chunks) at or below
    /// `min(snapshot, head - keep)`.
    async fn trim(&self, snapshot: u64, head: u64) -> Result<(), StoreError> {
        let upto = snapshot.min(head.saturating_sub(self.keep));
        if upto == 0 {
            return Ok(());
        }
        let k = &self.keys;
        let (log_end, chunks_end) = (k.entry(upto + 1), k.chunks_of(upto + 1));
        let txn = Request::new("trimming the change log")
            .then(
                TxnOp::delete(k.log.clone(), Some(DeleteOptions::new().with_range(log_end.clone()))),
                k.log.len() + log_end.len(),
            )
            .then(
                TxnOp::delete(k.chunks.clone(), Some(DeleteOptions::new().with_range(chunks_end.clone()))),
                k.chunks.len() + chunks_end.len(),
            )
            .txn()?;
        let mut kv = self.client.kv_client();
        super::request::within_once(self.timeout, "trimming the change log", kv.txn(txn)).await?;
        self.shared.floor.fetch_max(upto, Ordering::AcqRel);
        Ok(())
    }

    /// Deletes chunks no log entry can name, snapshots older than the
    /// pointer's, and fences of revisions passed.
    pub(super) async fn sweep(&self) -> Result<(), StoreError> {
        let top = self.read_top().await?;
        let kv = self.client.kv_client().max_decoding_message_size(MAX_MESSAGE);
        // Chunks of decided revisions whose entry names another commit.
        let mut dead: Vec<String> = Vec::new();
        let end = self.keys.chunks_of(top.head + 1).into_bytes();
        let mut last: Option<(u64, String)> = None;
        for key in self.list_keys(&self.keys.chunks, end).await? {
            let Some(owner) = self.keys.chunk_owner(&key) else { continue };
            if last.as_ref() == Some(&owner) {
                continue;
            }
            let entry = self.keys.entry(owner.0);
            let mut kv = kv.clone();
            let resp = super::request::within_once(self.timeout, "sweeping", kv.get(entry, None)).await?;
            let named = resp
                .kvs()
                .first()
                .is_some_and(|e| serde_json::from_slice::<super::log::Entry>(e.value()).is_ok_and(|e| e.id == owner.1));
            if !named {
                dead.push(self.keys.chunk_dir(owner.0, &owner.1));
            }
            last = Some(owner);
        }
        // Snapshots other than the pointer's, below it.
        let current = top.pointer.as_ref().map(|(p, _)| (p.revision, p.id.clone()));
        let below = current.as_ref().map_or(0, |(r, _)| *r);
        let mut last = None;
        for key in self.list_keys(&self.keys.snapshots, self.keys.snapshot_dir(below + 1, "").into_bytes()).await? {
            let Some(owner) = self.keys.snapshot_owner(&key) else { continue };
            if last.as_ref() != Some(&owner) && current.as_ref() != Some(&owner) {
                dead.push(self.keys.snapshot_dir(owner.0, &owner.1));
            }
            last = Some(owner);
        }
        for dir in &dead {
            self.delete_dir(dir).await;
        }
        // Fences of revisions `head` has passed.
        let mut kv = kv.clone();
        let fences = super::request::within_once(
            self.timeout,
            "sweeping",
            kv.get(self.keys.fences.clone(), Some(GetOptions::new().with_prefix().with_limit(SWEEP_PAGE))),
        )
        .await?;
        for f in fences.kvs() {
            if super::parse_u64("fence", f.value()).is_ok_and(|e| e < top.head) {
                let _ = super::request::within_once(self.timeout, "sweeping", kv.delete(f.key(), None)).await;
            }
        }
        if !dead.is_empty() {
            tracing::info!(removed = dead.len(), "swept chunks no change or snapshot names");
        }
        Ok(())
    }

    /// The keys from `prefix` up to `end`, a page at a time.
    async fn list_keys(&self, prefix: &str, end: Vec<u8>) -> Result<Vec<Vec<u8>>, StoreError> {
        let kv = self.client.kv_client();
        let mut out = Vec::new();
        let mut from = prefix.as_bytes().to_vec();
        let end = end.min(prefix_end(prefix));
        loop {
            let opts = GetOptions::new().with_range(end.clone()).with_keys_only().with_limit(SWEEP_PAGE);
            let resp = within(self.timeout, "sweeping", || {
                let (mut kv, from, opts) = (kv.clone(), from.clone(), opts.clone());
                async move { kv.get(from, Some(opts)).await }
            })
            .await?;
            out.extend(resp.kvs().iter().map(|kv| kv.key().to_vec()));
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(out),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_chunk_key_sorts_below_the_chunks_of_later_revisions() {
        let k = super::super::keys::Keys::new("/p").unwrap();
        assert!(super::super::keys::Keys::chunk(&k.chunk_dir(5, "zz"), 999_999) < k.chunks_of(6));
        assert!(k.snapshot_dir(5, "zz") < k.snapshot_dir(6, ""));
    }
}
