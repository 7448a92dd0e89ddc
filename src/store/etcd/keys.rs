//! The keys of one prefix (see the layout in the parent module's docs).
//!
//! Invariant: every key the store reads or writes starts with the prefix;
//! revisions in keys are 20 decimal digits, so that key order is revision
//! order; the keys a server watches (`hosts/`, `lock/`, `log/`) form one
//! contiguous range, and the large values (`chunks/`, `snapshots/`) lie
//! outside it.

#[cfg(test)]
use crate::model::EntityKey;

/// The keys of one prefix.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    pub root: String,
    pub format: String,
    pub head: String,
    pub log: String,
    pub chunks: String,
    pub snapshot: String,
    pub snapshots: String,
    pub hosts: String,
    pub fences: String,
    pub lock: String,
    /// Layout 1's keys (read when migrating).
    pub v1_revision: String,
    pub v1_records: String,
    pub v1_changes: String,
}

impl Keys {
    pub fn new(prefix: &str) -> anyhow::Result<Keys> {
        let p = prefix.trim_end_matches('/');
        if !prefix.starts_with('/') || p.is_empty() || prefix.len() > 256 || prefix.chars().any(|c| c.is_control()) {
            anyhow::bail!(
                "--etcd-prefix '{}': give a key prefix starting with '/' (e.g. /leviathan), at most 256 characters",
                prefix.escape_debug()
            );
        }
        Ok(Keys {
            root: format!("{p}/"),
            format: format!("{p}/format"),
            head: format!("{p}/head"),
            log: format!("{p}/log/"),
            chunks: format!("{p}/chunks/"),
            snapshot: format!("{p}/snapshot"),
            snapshots: format!("{p}/snapshots/"),
            hosts: format!("{p}/hosts/"),
            fences: format!("{p}/fence/"),
            lock: format!("{p}/lock/commit"),
            v1_revision: format!("{p}/revision"),
            v1_records: format!("{p}/records/"),
            v1_changes: format!("{p}/changes/"),
        })
    }

    /// The log entry of `revision`.
    pub fn entry(&self, revision: u64) -> String {
        format!("{}{revision:020}", self.log)
    }

    /// The revision of a log entry's key.
    pub fn entry_revision(&self, key: &[u8]) -> Option<u64> {
        std::str::from_utf8(key).ok()?.strip_prefix(&self.log)?.parse().ok()
    }

    /// Where the chunks of every commit aiming at `revision` start.
    pub fn chunks_of(&self, revision: u64) -> String {
        format!("{}{revision:020}/", self.chunks)
    }

    /// The chunks of commit `id` aiming at `revision`.
    pub fn chunk_dir(&self, revision: u64, id: &str) -> String {
        format!("{}{id}/", self.chunks_of(revision))
    }

    /// Chunk `n` of a directory of chunks.
    pub fn chunk(dir: &str, n: usize) -> String {
        format!("{dir}{n:06}")
    }

    /// (revision, commit id) of a chunk's key.
    pub fn chunk_owner(&self, key: &[u8]) -> Option<(u64, String)> {
        let rest = std::str::from_utf8(key).ok()?.strip_prefix(&self.chunks)?;
        let mut parts = rest.split('/');
        let rev = parts.next()?.parse().ok()?;
        Some((rev, parts.next()?.to_string()))
    }

    /// The chunks of snapshot `id` at `revision`.
    pub fn snapshot_dir(&self, revision: u64, id: &str) -> String {
        format!("{}{revision:020}/{id}/", self.snapshots)
    }

    /// (revision, id) of a snapshot chunk's key.
    pub fn snapshot_owner(&self, key: &[u8]) -> Option<(u64, String)> {
        let rest = std::str::from_utf8(key).ok()?.strip_prefix(&self.snapshots)?;
        let mut parts = rest.split('/');
        let rev = parts.next()?.parse().ok()?;
        Some((rev, parts.next()?.to_string()))
    }

    /// The fence of commit `id`.
    pub fn fence(&self, id: &str) -> String {
        format!("{}{id}", self.fences)
    }

    /// The first key after the watched range (`hosts/` to `log/`).
    pub fn watch_end(&self) -> Vec<u8> {
        prefix_end(&self.log)
    }

    /// A record's key in layout 1.
    #[cfg(test)]
    pub fn v1_record(&self, key: &EntityKey) -> String {
        format!("{}{}/{}", self.v1_records, key.kind(), key.id())
    }
}

/// The end of the key range of everything starting with `prefix`.
pub(super) fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watched_keys_are_one_range_without_the_large_values() {
        let k = Keys::new("/lev").unwrap();
        let inside = |key: &str| key.as_bytes() >= k.hosts.as_bytes() && key.as_bytes() < k.watch_end().as_slice();
        assert!(inside(&k.entry(7)) && inside("/lev/hosts/h1") && inside(&format!("{}/abc", k.lock)));
        for outside in [Keys::chunk(&k.chunk_dir(7, "x"), 0), k.snapshot.clone(), k.head.clone(), k.fence("x")] {
            assert!(!inside(&outside), "{outside}");
        }
        assert_eq!(k.entry_revision(k.entry(42).as_bytes()), Some(42));
        assert_eq!(k.chunk_owner(Keys::chunk(&k.chunk_dir(9, "id1"), 3).as_bytes()), Some((9, "id1".into())));
        assert!(k.entry(9) < k.entry(10));
        assert!(Keys::new("lev").is_err());
    }
}
