//! The layout under the prefix: created when the prefix is new, and a
//! prefix of layout 1 migrated to layout 2 (see the parent module's docs).
//!
//! Invariants: creation and migration are each one guarded transaction,
//! so servers starting together agree; a migration takes the records of
//! layout 1 at one etcd revision and only commits if layout 1's revision
//! did not move meanwhile; a layout this build does not know is refused,
//! untouched.

use super::keys::prefix_end;
use super::log::{commit_id, CHUNK};
use super::request::{within, within_once, Request};
use super::snapshot::Pointer;
use super::{Core, LAYOUT};
use crate::model::Record;
use crate::store::StoreError;
use etcd_client::{Compare, CompareOp, DeleteOptions, GetOptions, TxnOp, TxnOpResponse};

/// Records read per request when migrating.
const PAGE: i64 = 500;

impl Core {
    /// The prefix's layout, created if missing, migrated from layout 1.
    pub(super) async fn init(&self) -> Result<(), StoreError> {
        for _ in 0..3 {
            let (format, head) = (self.keys.format.clone(), self.keys.head.clone());
            let txn = Request::new("creating the layout")
                .when(Compare::version(format.clone(), CompareOp::Equal, 0), format.len())
                .then(TxnOp::put(format.clone(), LAYOUT, None), format.len() + 1)
                .then(TxnOp::put(head.clone(), "0", None), head.len() + 1)
                .otherwise(TxnOp::get(format.clone(), None), format.len())
                .txn()?;
            let kv = self.client.kv_client();
            let resp = within(self.timeout, "creating the layout", || {
                let (mut kv, txn) = (kv.clone(), txn.clone());
                async move { kv.txn(txn).await }
            })
            .await?;
            if resp.succeeded() {
                return Ok(());
            }
            let found = resp.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
                _ => None,
            });
            match found.as_deref() {
                Some(b"1") => self.migrate_v1().await?,
                // This layout, or one refused (with its name) by the load.
                _ => return Ok(()),
            }
        }
        Ok(())
    }

    /// Layout 1 to 2: its records become the snapshot at its revision.
    async fn migrate_v1(&self) -> Result<(), StoreError> {
        let k = &self.keys;
        let kv = self.client.kv_client().max_decoding_message_size(super::MAX_MESSAGE);
        let mut c = kv.clone();
        let resp = within_once(self.timeout, "reading layout 1", c.get(k.v1_revision.clone(), None)).await?;
        let at = super::header_revision(resp.header());
        let (revision, seen) = match resp.kvs().first() {
            Some(kv) => (super::parse_u64("revision", kv.value())?, kv.mod_revision()),
            None => (0, 0),
        };
        let mut records = Vec::new();
        let end = prefix_end(&k.v1_records);
        let mut from = k.v1_records.clone().into_bytes();
        loop {
            let opts = GetOptions::new().with_range(end.clone()).with_revision(at).with_limit(PAGE);
            let mut c = kv.clone();
            let resp = within_once(self.timeout, "reading layout 1", c.get(from.clone(), Some(opts))).await?;
            for kv in resp.kvs() {
                let rec: Record = serde_json::from_slice(kv.value()).map_err(|e| {
                    StoreError::Other(anyhow::anyhow!("unreadable record {}: {e}", String::from_utf8_lossy(kv.key())))
                })?;
                records.push(rec);
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        let count = records.len();
        let bytes = serde_json::to_vec(&records).map_err(|e| StoreError::Other(e.into()))?;
        let id = commit_id(&self.host_id);
        let dir = k.snapshot_dir(revision, &id);
        self.put_chunks("migrating layout 1", &dir, &bytes).await?;
        let p = Pointer { revision, id, chunks: bytes.len().div_ceil(CHUNK), bytes: bytes.len() };
        let pointer = serde_json::to_vec(&p).map_err(|e| StoreError::Other(e.into()))?;
        let range = |from: &str| TxnOp::delete(from, Some(DeleteOptions::new().with_range(prefix_end(from))));
        let txn = Request::new("migrating layout 1")
            .when(Compare::value(k.format.clone(), CompareOp::Equal, "1"), k.format.len() + 1)
            .when(Compare::mod_revision(k.v1_revision.clone(), CompareOp::Equal, seen), k.v1_revision.len())
            .then(TxnOp::put(k.format.clone(), LAYOUT, None), k.format.len() + 1)
            .then(TxnOp::put(k.head.clone(), revision.to_string(), None), k.head.len() + 20)
            .then(TxnOp::put(k.snapshot.clone(), pointer.clone(), None), k.snapshot.len() + pointer.len())
            .then(TxnOp::delete(k.v1_revision.clone(), None), k.v1_revision.len())
            .then(range(&k.v1_records), 2 * k.v1_records.len())
            .then(range(&k.v1_changes), 2 * k.v1_changes.len())
            .txn()?;
        let mut c = kv.clone();
        let resp = within_once(self.timeout, "migrating layout 1", c.txn(txn)).await?;
        if resp.succeeded() {
            tracing::info!(revision, records = count, "migrated the prefix from layout 1 to layout 2");
        } else {
            // Another server migrated it, or the revision moved: look again.
            self.delete_dir(&dir).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::keys::Keys;
    use crate::model::EntityKey;

    #[test]
    fn layout_1_keys_are_where_earlier_builds_wrote_them() {
        let k = Keys::new("/p").unwrap();
        assert_eq!(k.v1_record(&EntityKey::Cen("c".into())), "/p/records/cen/c");
        assert_eq!((k.v1_revision.as_str(), k.v1_changes.as_str()), ("/p/revision", "/p/changes/"));
    }
}
