//! The answer cache: the serialized bytes of read-only answers, kept by
//! the SHA-256 of what they are a function of (the document, the operation
//! name, the variables, and whoever shapes the bytes: GraphQL over HTTP or
//! one legacy route), each with the topology revision it was computed at.
//!
//! Invariants:
//! - an entry answers only while the service is at the revision it was
//!   computed at ([`AnswerCache::get`] compares); an entry of an older
//!   revision is a miss and is replaced by the next answer of its key, so
//!   stale answers never answer and never pile up;
//! - the bytes accounted for the entries (the answer, its key and the
//!   map's bookkeeping) never exceed the bound: the least recently used
//!   entries are evicted first, and an answer larger than a quarter of a
//!   shard's share is not kept;
//! - no global lock: an entry is found under the lock of one of
//!   [`super::SHARDS`] shards, chosen by its key (`lru.rs`).
//!
//! What may be kept at all (which documents read nothing but the topology
//! at the revision) is decided by `pure.rs`; only answers without errors
//! are kept (the callers check).

use super::lru::{Lru, Seen};
use super::Key;
use axum::body::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};

/// The answer cache's default bound, in bytes (`--answer-cache-bytes`).
pub const DEFAULT_ANSWER_BYTES: usize = 64 * 1024 * 1024;

/// Bytes accounted for an entry on top of its answer: its key twice (map
/// and order), the map's and the order's nodes, the `Bytes` handle.
const OVERHEAD: usize = 160;

/// What a miss hands the caller: where to keep the answer it is about to
/// make, and the revision it is computed at (read before execution starts,
/// so an answer that saw a later change is kept under an older revision
/// and never answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub key: Key,
    pub revision: u64,
}

/// An answer kept, with the revision it answers at.
pub struct Kept {
    revision: u64,
    body: Bytes,
}

/// Counters of the answer cache's use (`/metrics`).
#[derive(Debug, Default)]
pub struct AnswerStats {
    /// Answers served from the cache.
    pub hits: AtomicU64,
    /// Cacheable requests that found no answer of the current revision.
    pub misses: AtomicU64,
    /// Requests whose document selects a field outside the allow-list
    /// (or that are not queries): always executed.
    pub uncacheable: AtomicU64,
    /// Entries evicted to stay within the bound.
    pub evictions: AtomicU64,
    /// Entries dropped because the topology moved past their revision.
    pub stale: AtomicU64,
    /// Answers not kept: over a quarter of a shard's share.
    pub too_large: AtomicU64,
}

/// Serialized answers by key, bounded in bytes.
pub struct AnswerCache {
    entries: Lru<Kept>,
    pub stats: AnswerStats,
}

impl AnswerCache {
    /// A cache of at most `bytes` bytes (0: nothing is kept).
    pub fn new(bytes: usize) -> AnswerCache {
        AnswerCache { entries: Lru::new(bytes), stats: AnswerStats::default() }
    }

    /// Whether the cache keeps anything.
    pub fn enabled(&self) -> bool {
        self.entries.share() > 0
    }

    /// The answer of a key computed at `revision`, marked as just used. An
    /// entry of an older revision is dropped (a miss).
    pub fn get(&self, key: &Key, revision: u64) -> Option<Bytes> {
        let found = self.find(key, revision);
        if found.is_none() {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// [`AnswerCache::get`] counting hits only (a miss is counted by the
    /// look-up that follows it).
    pub fn find(&self, key: &Key, revision: u64) -> Option<Bytes> {
        let seen = self.entries.get(key, |k| {
            if k.revision == revision {
                Seen::Use(k.body.clone())
            } else if k.revision < revision {
                Seen::Drop
            } else {
                // Computed at a later revision than the caller read: kept.
                Seen::Leave
            }
        });
        match seen {
            Some(Seen::Use(body)) => {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                Some(body)
            }
            Some(Seen::Drop) => {
                self.stats.stale.fetch_add(1, Ordering::Relaxed);
                None
            }
            Some(Seen::Leave) | None => None,
        }
    }

    /// Keeps an answer, evicting the least recently used entries of its
    /// shard until the shard is within its share. An answer over a quarter
    /// of the share is not kept; nor is one older than what is kept.
    pub fn insert(&self, ticket: Ticket, body: Bytes) {
        let cost = body.len() + OVERHEAD;
        if cost > self.entries.share() / 4 {
            if self.enabled() {
                self.stats.too_large.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let kept = Kept { revision: ticket.revision, body };
        let evicted = self.entries.insert(ticket.key, kept, cost, |old| old.revision > ticket.revision);
        self.stats.evictions.fetch_add(evicted as u64, Ordering::Relaxed);
    }
}

/// Its bytes, entries and bound: those of its map.
impl std::ops::Deref for AnswerCache {
    type Target = Lru<Kept>;
    fn deref(&self) -> &Lru<Kept> {
        &self.entries
    }
}

/// The key of an answer: who shapes it (`"graphql"`, or a legacy route's
/// name), the document's key, the operation name and the variables as
/// serialized JSON (an order of object members other than the one seen
/// first is only another key: a miss, never a wrong answer).
pub fn answer_key(shape: &str, doc: &Key, operation: Option<&str>, variables: &[u8]) -> Key {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [shape.as_bytes(), doc.as_slice(), operation.unwrap_or("").as_bytes(), variables] {
        ctx.update(&(part.len() as u64).to_le_bytes());
        ctx.update(part);
    }
    // An absent operation name and an empty one differ.
    ctx.update(&[u8::from(operation.is_some())]);
    let d = ctx.finish();
    let mut k = [0u8; 32];
    k.copy_from_slice(d.as_ref());
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graphql::cache::SHARDS;

    fn key(i: u32) -> Key {
        answer_key("graphql", &[7; 32], None, &i.to_le_bytes())
    }

    #[test]
    fn hostile_keys_stay_within_the_bound() {
        let cache = AnswerCache::new(64 * 1024);
        for i in 0..20_000u32 {
            let body = Bytes::from(vec![b'x'; (i as usize * 37) % 700]);
            cache.insert(Ticket { key: key(i), revision: 1 }, body);
            assert!(cache.bytes() <= cache.bound(), "{} bytes over the bound {}", cache.bytes(), cache.bound());
        }
        assert!(cache.stats.evictions.load(Ordering::Relaxed) > 10_000);
        assert!(!cache.is_empty());
        // An answer over a quarter of a shard's share is not kept.
        let big = Ticket { key: key(99_999), revision: 1 };
        cache.insert(big, Bytes::from(vec![b'y'; cache.bound() / SHARDS / 4]));
        assert_eq!(cache.get(&big.key, 1), None);
        assert_eq!(cache.stats.too_large.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn an_entry_answers_only_at_its_revision_and_is_replaced() {
        let cache = AnswerCache::new(1024 * 1024);
        let t = Ticket { key: key(1), revision: 5 };
        cache.insert(t, Bytes::from_static(b"five"));
        assert_eq!(cache.get(&t.key, 5).as_deref(), Some(&b"five"[..]));
        // The topology moved: the entry is dropped, not served.
        assert_eq!(cache.get(&t.key, 6), None);
        assert!(cache.is_empty());
        assert_eq!(cache.bytes(), 0);
        cache.insert(Ticket { key: t.key, revision: 6 }, Bytes::from_static(b"six"));
        // An answer computed at an older revision never replaces a newer one.
        cache.insert(t, Bytes::from_static(b"five"));
        assert_eq!(cache.get(&t.key, 6).as_deref(), Some(&b"six"[..]));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn zero_keeps_nothing() {
        let cache = AnswerCache::new(0);
        assert!(!cache.enabled());
        cache.insert(Ticket { key: key(1), revision: 1 }, Bytes::from_static(b"a"));
        assert!(cache.is_empty());
    }

    #[test]
    fn keys_separate_their_parts() {
        let d = [1; 32];
        let all = [
            answer_key("graphql", &d, None, b"{}"),
            answer_key("graphql", &d, Some(""), b"{}"),
            answer_key("graphql", &d, Some("Q"), b"{}"),
            answer_key("graphql", &d, None, b"{\"a\":1}"),
            answer_key("cen", &d, None, b"{}"),
            answer_key("graphql", &[2; 32], None, b"{}"),
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }
}
