//! The change log: committing a change, and reading it back.
//!
//! A commit is (a) for a change whose JSON is over [`INLINE_MAX`], its
//! chunks written first under `chunks/<revision>/<commit id>/` (one
//! request each); then (b) one small guarded transaction: if `head` is
//! the expected revision, the commit's fence does not exist, and the
//! commit lock is free (or held by this server), put `head` and the log
//! entry (the change inline, or a manifest naming its chunks), both
//! carrying the commit id. A commit that lost the race deletes its chunks
//! at once.
//!
//! Invariants: a change is in the log exactly when `head` reached its
//! revision; an answer about a commit is true: after a timeout or a lost
//! connection the outcome is found out ((`Core::resolve`)) before
//! answering, and is [`StoreError::UnknownOutcome`] only while etcd cannot
//! be asked.

use super::keys::{prefix_end, Keys};
use super::request::{classify, compacted, never_sent, with_causes, within, Request};
use super::{Core, MAX_MESSAGE};
use crate::model::Change;
use crate::store::{Gone, StoreError};
use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A change whose JSON is larger is written as chunks before its commit.
pub const INLINE_MAX: usize = 1024 * 1024;
/// The size of a chunk (of a change or a snapshot): one per request.
pub const CHUNK: usize = 1024 * 1024;
/// Entries read per request (at most [`INLINE_MAX`] each).
const ENTRY_PAGE: usize = 32;
/// Chunks read per request.
pub const CHUNK_PAGE: i64 = 16;
/// How long the outcome of a commit is sought after etcd stopped
/// answering it, before the answer is [`StoreError::UnknownOutcome`].
pub const RESOLVE_FOR: Duration = Duration::from_millis(750);

/// A log entry as stored: the commit id, and the change inline or the
/// size of its chunks.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Entry {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<Change>,
    #[serde(default)]
    pub chunks: usize,
    #[serde(default)]
    pub bytes: usize,
}

/// A commit id: unique per commit, usable in a key.
pub(super) fn commit_id(host: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let host: String = host.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(64).collect();
    format!("{host}.{}.{nanos:x}.{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

/// The entry value of a change of JSON `json`: inline, or a manifest (the
/// chunks are then written apart).
fn entry_value(id: &str, json: &[u8]) -> Result<Vec<u8>, StoreError> {
    if json.len() <= INLINE_MAX {
        let head = serde_json::to_vec(&serde_json::json!({ "id": id })).map_err(|e| StoreError::Other(e.into()))?;
        // `{"id":"..."}` + `,"change":<json>}`.
        let mut out = head[..head.len() - 1].to_vec();
        out.extend_from_slice(b",\"change\":");
        out.extend_from_slice(json);
        out.push(b'}');
        return Ok(out);
    }
    let m = Entry { id: id.into(), change: None, chunks: json.len().div_ceil(CHUNK), bytes: json.len() };
    serde_json::to_vec(&m).map_err(|e| StoreError::Other(e.into()))
}

impl Core {
    /// Writes `bytes` as chunks under `dir`, one request each.
    pub(super) async fn put_chunks(&self, what: &'static str, dir: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let kv = self.client.kv_client();
        for (n, part) in bytes.chunks(CHUNK).enumerate() {
            let key = Keys::chunk(dir, n);
            let txn = Request::new(what).then(TxnOp::put(key.clone(), part, None), key.len() + part.len()).txn()?;
            within(self.timeout, what, || {
                let (mut kv, txn) = (kv.clone(), txn.clone());
                async move { kv.txn(txn).await }
            })
            .await?;
        }
        Ok(())
    }

    /// Deletes a directory of chunks (best effort: a sweep removes what
    /// is left).
    pub(super) async fn delete_dir(&self, dir: &str) {
        let end = prefix_end(dir);
        let r = Request::new("deleting chunks")
            .then(TxnOp::delete(dir, Some(DeleteOptions::new().with_range(end.clone()))), dir.len() + end.len())
            .txn();
        let Ok(txn) = r else { return };
        let mut kv = self.client.kv_client();
        if let Err(e) = super::request::within_once(self.timeout, "deleting chunks", kv.txn(txn)).await {
            tracing::debug!(error = %e, dir, "could not delete chunks; the sweep will");
        }
    }

    /// Commits `change` (see the module docs).
    pub(super) async fn commit_change(&self, change: &Change) -> Result<(), StoreError> {
        let revision = change.revision;
        let Some(expected) = revision.checked_sub(1) else {
            return Err(StoreError::Conflict { expected: 0 });
        };
        let id = commit_id(&self.host_id);
        let json = serde_json::to_vec(change).map_err(|e| StoreError::Other(e.into()))?;
        let value = entry_value(&id, &json)?;
        let dir = (json.len() > INLINE_MAX).then(|| self.keys.chunk_dir(revision, &id));
        if let Some(dir) = &dir {
            if let Err(e) = self.put_chunks("writing a change's chunks", dir, &json).await {
                // The commit itself was never sent: it cannot apply.
                self.delete_dir(dir).await;
                return Err(e);
            }
        }
        let fence = self.keys.fence(&id);
        let entry = self.keys.entry(revision);
        let head = self.keys.head.clone();
        let mut req = Request::new("committing the change")
            .when(Compare::value(head.clone(), CompareOp::Equal, expected.to_string()), head.len() + 20)
            .when(Compare::version(fence.clone(), CompareOp::Equal, 0), fence.len());
        req = match self.lock_key() {
            Some(own) => req.when(Compare::version(own.clone(), CompareOp::Greater, 0), own.len()),
            None => {
                let end = prefix_end(&format!("{}/", self.keys.lock));
                let start = format!("{}/", self.keys.lock);
                let bytes = start.len() + end.len();
                req.when(Compare::version(start, CompareOp::Equal, 0).with_range(end), bytes)
            }
        };
        let bytes = entry.len() + value.len();
        let txn = req
            .then(TxnOp::put(head.clone(), revision.to_string(), None), head.len() + 20)
            .then(TxnOp::put(entry, value, None), bytes)
            .txn()?;
        let outcome = self.send_commit(txn, &id, revision).await;
        if let (Err(_), Some(dir)) = (&outcome, &dir) {
            if !matches!(outcome, Err(StoreError::UnknownOutcome { .. })) {
                self.delete_dir(dir).await;
            }
        }
        if outcome.is_ok() {
            // The bytes are counted when the watch brings the entry back.
            self.note_committed(revision, 0);
        }
        outcome
    }

    /// Sends the commit transaction: sent again while it never reached
    /// etcd (a member refused the connection), its outcome found out if
    /// etcd stopped answering it.
    async fn send_commit(&self, txn: etcd_client::Txn, id: &str, revision: u64) -> Result<(), StoreError> {
        let what = "committing the change";
        let deadline = tokio::time::Instant::now() + self.timeout;
        let kv = self.client.kv_client();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let mut kv = kv.clone();
            match tokio::time::timeout(left, kv.txn(txn.clone())).await {
                Ok(Ok(resp)) if resp.succeeded() => return Ok(()),
                Ok(Ok(_)) => return Err(StoreError::Conflict { expected: revision - 1 }),
                // Refused before it reached etcd: it cannot apply.
                Ok(Err(e)) if never_sent(&e) => {
                    if tokio::time::Instant::now() + RESEND >= deadline {
                        let why = with_causes(&e);
                        return Err(StoreError::Unavailable(format!("{what}: {why}; the change was not committed")));
                    }
                    tokio::time::sleep(RESEND).await;
                }
                Ok(Err(e)) => {
                    return match classify(what, e) {
                        StoreError::Unavailable(why) => self.resolve(id, revision, &why).await,
                        e => Err(e),
                    }
                }
                Err(_) => {
                    let why = format!("{what}: etcd did not answer within {}s", self.timeout.as_secs_f64());
                    return self.resolve(id, revision, &why).await;
                }
            }
        }
    }

    /// Finds out whether the commit `id` of `revision` applied, after etcd
    /// stopped answering it: fences it (if `head` is still below
    /// `revision`, the fence makes the commit fail forever), or reads the
    /// entry at `revision` and compares its id.
    pub(super) async fn resolve(&self, id: &str, revision: u64, why: &str) -> Result<(), StoreError> {
        let expected = revision - 1;
        let deadline = tokio::time::Instant::now() + RESOLVE_FOR;
        let (head, fence, entry) = (self.keys.head.clone(), self.keys.fence(id), self.keys.entry(revision));
        loop {
            let txn = Request::new("finding out whether the change committed")
                .when(Compare::value(head.clone(), CompareOp::Equal, expected.to_string()), head.len() + 20)
                .then(TxnOp::put(fence.clone(), expected.to_string(), None), fence.len() + 20)
                .otherwise(TxnOp::get(entry.clone(), None), entry.len())
                .txn()?;
            // Short attempts: one stuck on a member that went away must not
            // use up the time another member would answer in. A fence that
            // applies late is harmless (it only ever blocks this commit).
            let left = deadline.saturating_duration_since(tokio::time::Instant::now()).min(ATTEMPT);
            let mut kv = self.client.kv_client().max_decoding_message_size(MAX_MESSAGE);
            match super::request::within_once(left, "finding out whether the change committed", kv.txn(txn)).await {
                Ok(resp) if resp.succeeded() => {
                    tracing::info!(id, revision, "a commit etcd did not answer was fenced: it did not apply");
                    return Err(StoreError::Unavailable(format!("{why}; the change was not committed (made sure)")));
                }
                Ok(resp) => {
                    let mine = resp.op_responses().into_iter().any(|r| match r {
                        TxnOpResponse::Get(g) => g.kvs().first().is_some_and(|kv| {
                            serde_json::from_slice::<Entry>(kv.value()).map(|e| e.id == id).unwrap_or(false)
                        }),
                        _ => false,
                    });
                    if mine {
                        tracing::info!(id, revision, "a commit etcd did not answer in time had applied");
                        return Ok(());
                    }
                    // Another change holds the revision: this one can never
                    // apply (its compare on `head` fails forever).
                    return Err(StoreError::Conflict { expected });
                }
                Err(StoreError::Unavailable(_)) if tokio::time::Instant::now() + RESEND < deadline => {
                    tokio::time::sleep(RESEND).await;
                }
                Err(e) => {
                    tracing::warn!(id, revision, error = %e, "the outcome of a commit is unknown");
                    return Err(StoreError::UnknownOutcome { id: id.to_string(), revision, reason: why.to_string() });
                }
            }
        }
    }

    /// Up to `limit` changes after `revision`, as the log holds them now,
    /// with the floor checked.
    pub(super) async fn read_changes(&self, revision: u64, limit: usize) -> Result<Vec<Change>, StoreError> {
        let mut tries = 0;
        loop {
            match self.read_changes_once(revision, limit).await {
                Err(e) if compacted(&e) && tries < 3 => tries += 1,
                r => return r,
            }
        }
    }

    async fn read_changes_once(&self, revision: u64, limit: usize) -> Result<Vec<Change>, StoreError> {
        let log = self.keys.log.clone();
        let txn = Request::new("reading the change log")
            .then(TxnOp::get(log.clone(), Some(GetOptions::new().with_prefix().with_limit(1).with_keys_only())), 64)
            .then(TxnOp::get(self.keys.head.clone(), None), 64)
            .txn()?;
        let kv = self.client.kv_client();
        let resp = within(self.timeout, "reading the change log", || {
            let (mut kv, txn) = (kv.clone(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await?;
        let at = super::header_revision(resp.header());
        let mut gets = resp.op_responses().into_iter().filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g),
            _ => None,
        });
        let (Some(first), Some(head)) = (gets.next(), gets.next()) else {
            return Err(StoreError::Other(anyhow::anyhow!("etcd answered the change log read incompletely")));
        };
        let head = match head.kvs().first() {
            Some(kv) => super::parse_u64("head", kv.value())?,
            None => 0,
        };
        let kept = match first.kvs().first() {
            Some(kv) => self.keys.entry_revision(kv.key()).map(|r| r.saturating_sub(1)).unwrap_or(head),
            None => head,
        };
        let floor = kept.max(head.saturating_sub(self.keep));
        self.shared.floor.fetch_max(floor, Ordering::AcqRel);
        if revision < floor {
            return Err(StoreError::Gone(Gone { floor, keep: self.keep }));
        }
        let upto = head.min(revision.saturating_add(limit.clamp(1, 100_000) as u64));
        self.entries(revision, upto, at).await
    }

    /// The changes `after+1..=upto` as etcd held them at `at`, gapless.
    pub(super) async fn entries(&self, after: u64, upto: u64, at: i64) -> Result<Vec<Change>, StoreError> {
        let mut out = Vec::new();
        let kv = self.client.kv_client().max_decoding_message_size(MAX_MESSAGE);
        let end = self.keys.entry(upto.saturating_add(1));
        let mut from = after + 1;
        while from <= upto {
            let opts = GetOptions::new().with_range(end.clone()).with_limit(ENTRY_PAGE as i64).with_revision(at);
            let key = self.keys.entry(from);
            super::request::record(key.len() + end.len(), 1);
            let resp = within(self.timeout, "reading the change log", || {
                let (mut kv, key, opts) = (kv.clone(), key.clone(), opts.clone());
                async move { kv.get(key, Some(opts)).await }
            })
            .await?;
            if resp.kvs().is_empty() {
                break;
            }
            for kv in resp.kvs() {
                let (change, _) = self.change_of(kv, at).await?;
                if change.revision != from {
                    return Err(StoreError::Other(anyhow::anyhow!(
                        "the change log has a gap: revision {} where {from} was expected",
                        change.revision
                    )));
                }
                from += 1;
                out.push(change);
            }
        }
        Ok(out)
    }

    /// The change of a log entry, its chunks read (at `at`, or the latest
    /// revision when 0), and the bytes it takes in etcd (the entry, or its
    /// chunks). The entry is decoded once.
    pub(super) async fn change_of(&self, kv: &KeyValue, at: i64) -> Result<(Change, usize), StoreError> {
        let unreadable = |e: String| {
            StoreError::Other(anyhow::anyhow!("unreadable change {}: {e}", String::from_utf8_lossy(kv.key())))
        };
        let entry: Entry = serde_json::from_slice(kv.value()).map_err(|e| unreadable(e.to_string()))?;
        let size = entry.bytes.max(kv.value().len());
        if let Some(c) = entry.change {
            return Ok((c, size));
        }
        let rev = self.keys.entry_revision(kv.key()).ok_or_else(|| unreadable("not a log key".into()))?;
        let bytes = self.read_chunks(&self.keys.chunk_dir(rev, &entry.id), entry.chunks, entry.bytes, at).await?;
        let change = serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
        Ok((change, size))
    }

    /// The `chunks` chunks under `dir`, `bytes` in all, read at `at`.
    pub(super) async fn read_chunks(
        &self,
        dir: &str,
        chunks: usize,
        bytes: usize,
        at: i64,
    ) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::with_capacity(bytes.min(1 << 30));
        let kv = self.client.kv_client().max_decoding_message_size(MAX_MESSAGE);
        let end = prefix_end(dir);
        let mut from = Keys::chunk(dir, 0);
        let mut seen = 0;
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(CHUNK_PAGE);
            if at > 0 {
                opts = opts.with_revision(at);
            }
            super::request::record(from.len() + end.len(), 1);
            let resp = within(self.timeout, "reading chunks", || {
                let (mut kv, key, opts) = (kv.clone(), from.clone(), opts.clone());
                async move { kv.get(key, Some(opts)).await }
            })
            .await?;
            for kv in resp.kvs() {
                out.extend_from_slice(kv.value());
                seen += 1;
            }
            match resp.kvs().last() {
                Some(_) if resp.more() => from = Keys::chunk(dir, seen),
                _ => break,
            }
        }
        if seen != chunks || out.len() != bytes {
            return Err(StoreError::Other(anyhow::anyhow!(
                "the chunks under {dir} are incomplete: {seen} of {chunks}, {} of {bytes} bytes",
                out.len()
            )));
        }
        Ok(out)
    }
}

/// Pause before the outcome of a commit is asked again.
const RESEND: Duration = Duration::from_millis(50);
/// How long one attempt to find out the outcome may take.
const ATTEMPT: Duration = Duration::from_millis(300);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_inline_entry_carries_the_change_and_its_id() {
        let c = Change {
            revision: 3,
            mutation: "cenCreate".into(),
            at_ms: 1,
            at_us: 1000,
            actor: String::new(),
            items: vec![],
        };
        let json = serde_json::to_vec(&c).unwrap();
        let e: Entry = serde_json::from_slice(&entry_value("h.1.2.3", &json).unwrap()).unwrap();
        assert_eq!(e.id, "h.1.2.3");
        assert_eq!(e.change.unwrap().revision, 3);
        let big = vec![b' '; INLINE_MAX + 1];
        let e: Entry = serde_json::from_slice(&entry_value("x", &big).unwrap()).unwrap();
        assert_eq!((e.change.is_none(), e.chunks, e.bytes), (true, 2, INLINE_MAX + 1));
        assert_ne!(commit_id("h1"), commit_id("h1"));
        assert!(!commit_id("a/b c").contains(['/', ' ']));
    }
}
