//! The document cache: parsed, limit-checked GraphQL documents kept by the
//! SHA-256 of their text, so that a document seen before skips parsing,
//! and, once validated, validation too (`engine.rs`).
//!
//! ```text
//! mod.rs     DocumentCache: shards of an LRU map bounded in bytes; Entry
//! engine.rs  Engine: a request's way through the cache (persisted queries,
//!            the validation memo, the fast path without per-field hooks,
//!            the answer cache's look-up); Api, the executor of the legacy
//!            routes over the same cache, and LegacyAnswers, their answers
//! answers.rs AnswerCache: serialized answers of pure queries, by document,
//!            operation and variables, valid at one topology revision
//! pure.rs    which queries are pure: the allow-list of fields that read
//!            nothing but the topology at the revision
//! lru.rs     Lru: the sharded map bounded in bytes both caches keep
//!            their entries in
//! ```
//!
//! Invariants:
//! - only documents that parsed and passed every limit that depends on the
//!   text alone (size, tokens, aliases, selections) are cached; limits that
//!   depend on the topology or the variables (depth and cost, variable
//!   values) are checked again whenever what they depend on changed;
//! - the bytes accounted for the entries (an over-estimate of what a
//!   document and its parse take) never exceed the cache's bound: the
//!   least recently used entries are evicted first, and a document larger
//!   than a shard's share is not cached at all;
//! - no global lock: an entry is found under the lock of one of
//!   [`SHARDS`] shards, chosen by its key (`lru.rs`).

mod answers;
mod engine;
mod lru;
mod pure;

pub use answers::{answer_key, AnswerCache, AnswerStats, Ticket, DEFAULT_ANSWER_BYTES};
pub(crate) use engine::Slot;
pub use engine::{Api, Engine, LegacyAnswers, Lookup, Verbatim, FAST_COST, PERSISTED_QUERY_NOT_FOUND};
pub use lru::{Lru, Seen};
pub use pure::{Pure, ALLOWED};

use super::cost::Bounds;
use async_graphql::parser::types::{ExecutableDocument, Field, OperationType, Selection};
use async_graphql::{Positioned, ValidationResult};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Shards of the cache, each under its own lock.
pub const SHARDS: usize = 16;

/// The cache's default bound, in bytes (`--document-cache-bytes`).
pub const DEFAULT_CACHE_BYTES: usize = 16 * 1024 * 1024;

/// Validation results kept per document (one per operation name and kind
/// of variables, the most recent first).
const MEMOS: usize = 4;

/// The SHA-256 of a document's text: the cache key, and the hash of
/// Apollo's persisted queries.
pub type Key = [u8; 32];

/// SHA-256 of a text.
pub fn key_of(text: &str) -> Key {
    let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut k = [0u8; 32];
    k.copy_from_slice(d.as_ref());
    k
}

/// A key from its lowercase or uppercase hex form (64 digits).
pub fn key_from_hex(hex: &str) -> Option<Key> {
    let b = hex.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut k = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let d = |c: u8| (c as char).to_digit(16);
        k[i] = (d(pair[0])? * 16 + d(pair[1])?) as u8;
    }
    Some(k)
}

/// What a variable's value is, as far as validation can tell: the memo of
/// a document's validation holds for requests whose variables have the same
/// kinds (and, for `Int`, which `first:` arguments read, the same values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VarKind {
    Absent,
    Null,
    Text,
    Bool,
    Int(i64),
}

/// One validation that passed: for an operation, variables of these kinds
/// and these list bounds.
#[derive(Clone)]
pub(crate) struct Memo {
    pub operation: Option<String>,
    pub vars: Vec<VarKind>,
    pub bounds: Bounds,
    pub result: ValidationResult,
}

/// A cached document.
pub struct Entry {
    /// The SHA-256 of its text.
    pub key: Key,
    /// The document's text (a persisted query is run from it).
    pub query: Arc<str>,
    /// Its parse, which passed the limits of the text.
    pub doc: ExecutableDocument,
    /// Bytes accounted for it.
    pub bytes: usize,
    memos: Mutex<Vec<Memo>>,
    /// Per operation: its name, and whether its answers may be kept by the
    /// answer cache ([`Pure::operations`]; decided once per document).
    pure: Vec<(Option<String>, bool)>,
}

impl Entry {
    /// A parsed document and its text, with its size worked out.
    pub fn new(query: Arc<str>, doc: ExecutableDocument) -> Entry {
        let bytes = entry_bytes(&query, &doc);
        Entry { key: key_of(&query), query, doc, bytes, memos: Mutex::new(Vec::new()), pure: Vec::new() }
    }

    /// The entry with which of its operations are pure.
    pub fn with_pure(mut self, pure: &Pure) -> Entry {
        self.pure = pure.operations(&self.doc);
        self.bytes += self.pure.iter().map(|(n, _)| 32 + n.as_ref().map_or(0, String::len)).sum::<usize>();
        self
    }

    /// Whether the answers of the operation a request names may be kept
    /// (`false` for no such operation, or several and no name).
    pub fn pure(&self, name: Option<&str>) -> bool {
        match name {
            Some(n) => self.pure.iter().any(|(o, p)| *p && o.as_deref() == Some(n)),
            None => matches!(self.pure.as_slice(), [(_, true)]),
        }
    }

    /// The kind of the operation a request names (`None`: no such
    /// operation, or several and no name).
    pub fn operation(&self, name: Option<&str>) -> Option<OperationType> {
        let mut ops = self.doc.operations.iter();
        match name {
            Some(n) => ops.find(|(o, _)| o.is_some_and(|o| o.as_str() == n)).map(|(_, op)| op.node.ty),
            None => {
                let first = ops.next().map(|(_, op)| op.node.ty);
                if ops.next().is_some() {
                    None
                } else {
                    first
                }
            }
        }
    }

    /// The validation result remembered for these circumstances.
    pub(crate) fn memo(&self, operation: Option<&str>, vars: &[VarKind], bounds: &Bounds) -> Option<ValidationResult> {
        let memos = self.memos.lock();
        memos
            .iter()
            .find(|m| m.operation.as_deref() == operation && m.vars == vars && m.bounds == *bounds)
            .map(|m| m.result)
    }

    /// Remembers a validation that passed (the oldest memo makes room).
    pub(crate) fn remember(&self, memo: Memo) {
        let mut memos = self.memos.lock();
        memos.retain(|m| !(m.operation == memo.operation && m.vars == memo.vars));
        memos.insert(0, memo);
        memos.truncate(MEMOS);
    }
}

/// Bytes accounted for a document: its text twice (the text, and the names
/// and strings the parse copies out of it), and for every token, room for
/// the largest node a token can make (every node comes from at least one
/// token), and the memos.
fn entry_bytes(query: &str, doc: &ExecutableDocument) -> usize {
    const NODE: usize = std::mem::size_of::<Positioned<Selection>>()
        + std::mem::size_of::<Positioned<Field>>()
        + std::mem::size_of::<(Positioned<async_graphql::Name>, Positioned<async_graphql::Value>)>()
        + 64;
    let tokens = super::limits::count_tokens(query, usize::MAX);
    let fragments =
        doc.fragments.len() * std::mem::size_of::<Positioned<async_graphql::parser::types::FragmentDefinition>>();
    std::mem::size_of::<Entry>()
        + 2 * query.len()
        + tokens.saturating_mul(NODE)
        + fragments
        + MEMOS * std::mem::size_of::<Memo>()
}

/// Counters of the cache's use.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub evictions: AtomicU64,
    /// Documents not cached: larger than a shard's share.
    pub too_large: AtomicU64,
}

/// Parsed documents by the SHA-256 of their text, bounded in bytes.
pub struct DocumentCache {
    entries: Lru<Arc<Entry>>,
    pub stats: CacheStats,
}

impl DocumentCache {
    /// A cache of at most `bytes` bytes (0: nothing is cached).
    pub fn new(bytes: usize) -> DocumentCache {
        DocumentCache { entries: Lru::new(bytes), stats: CacheStats::default() }
    }

    /// The entry of a key, marked as just used.
    pub fn get(&self, key: &Key) -> Option<Arc<Entry>> {
        let found = match self.entries.get(key, |e| Seen::Use(Arc::clone(e))) {
            Some(Seen::Use(e)) => Some(e),
            _ => None,
        };
        let counter = if found.is_some() { &self.stats.hits } else { &self.stats.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Keeps an entry, evicting the least recently used ones of its shard
    /// until the shard is within its share; an entry larger than the share
    /// is not kept.
    pub fn insert(&self, key: Key, entry: Arc<Entry>) {
        if entry.bytes > self.entries.share() {
            self.stats.too_large.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let cost = entry.bytes;
        let evicted = self.entries.insert(key, entry, cost, |_| false);
        self.stats.evictions.fetch_add(evicted as u64, Ordering::Relaxed);
    }
}

/// Its bytes, entries and bound: those of its map.
impl std::ops::Deref for DocumentCache {
    type Target = Lru<Arc<Entry>>;
    fn deref(&self) -> &Lru<Arc<Entry>> {
        &self.entries
    }
}

#[cfg(test)]
mod answer_tests;
#[cfg(test)]
mod tests;
