//! Durable state: a SQLite file in WAL mode holding every record of the
//! topology and the change log. One transaction per change: the new images
//! of the records it touched, the change record, and the revision. The log
//! keeps the last `keep` changes; older ones are dropped in the same
//! transaction, and the revision below which the log is gone is recorded.

use crate::model::{AddrPlan, EntityKey, Images, Record, Topology};

mod migrate;
use anyhow::{bail, Context};
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// `PRAGMA application_id` of a leviathan state file ("LEVI").
pub const APPLICATION_ID: i64 = 0x4C45_5649;
/// The state file format this build writes and reads (2: memberships are
/// records of their own, CINs carry their subnet). Format 1 files are
/// migrated on open.
pub const FORMAT: i64 = 2;
/// Changes kept in the log by default.
pub const DEFAULT_KEEP_CHANGES: u64 = 100_000;

/// One record's change inside a committed change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeItem {
    pub key: EntityKey,
    pub before: Option<Record>,
    pub after: Option<Record>,
}

/// A committed change: what a command (or a status report) did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub revision: u64,
    /// The mutation (or `status`) that made the change.
    pub mutation: String,
    /// Milliseconds since the Unix epoch at commit.
    pub at_ms: u64,
    /// Microseconds since the Unix epoch at commit (0 in changes written
    /// before it was recorded; use `at_ms` then).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub at_us: u64,
    pub items: Vec<ChangeItem>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Change {
    /// Commit time in milliseconds since the Unix epoch, with microsecond
    /// precision where it was recorded.
    pub fn at_millis(&self) -> f64 {
        if self.at_us > 0 {
            self.at_us as f64 / 1000.0
        } else {
            self.at_ms as f64
        }
    }
}

/// A `since` older than what the change log keeps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "changes up to revision {floor} are no longer kept (the log keeps the last {keep}); read the current state and resume from its revision"
)]
pub struct Gone {
    /// The log holds the changes after this revision.
    pub floor: u64,
    pub keep: u64,
}

/// The state file.
pub struct Store {
    conn: Mutex<Connection>,
    keep: u64,
    /// The log holds every change after this revision.
    floor: std::sync::atomic::AtomicU64,
}

impl Store {
    /// Opens (or creates) a state file and loads the topology (whose new
    /// CINs get subnets from `plan`) and revision, keeping the last `keep`
    /// changes in the log. A file that is not a leviathan state file, or
    /// was written in a newer format, is refused with a message saying so;
    /// it is never misread.
    pub fn open(path: &Path, plan: AddrPlan, keep: u64) -> anyhow::Result<(Store, Topology, u64)> {
        if keep == 0 {
            bail!("--keep-changes must be at least 1");
        }
        let mut conn = Connection::open(path).with_context(|| format!("opening state file {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let app: i64 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        if app == 0 && version == 0 && tables == 0 {
            Self::init(&conn)?;
        } else if app != APPLICATION_ID {
            bail!("{} is not a leviathan state file (application id {app:#x}); refusing to use it", path.display());
        } else if version > FORMAT {
            bail!(
                "{} was written by a newer leviathan (state format {version}); this build reads format {FORMAT}. Upgrade leviathan or use another --state file",
                path.display()
            );
        } else if version == 1 {
            migrate::from_v1(&mut conn).with_context(|| format!("migrating {} from state format 1", path.display()))?;
        } else if version != FORMAT {
            bail!("{} has state format {version}, which this build (format {FORMAT}) cannot read", path.display());
        }
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;

        let mut images = Images::new();
        {
            let mut stmt = conn.prepare("SELECT kind, id, body FROM records")?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
            for row in rows {
                let (kind, id, body) = row?;
                let rec: Record = serde_json::from_str(&body)
                    .with_context(|| format!("{}: unreadable {kind} record '{id}'", path.display()))?;
                images.insert(rec.key(), Some(rec));
            }
        }
        let mut topo = Topology::with_plan(plan);
        topo.commit(&images);
        if let Err(e) = topo.check_integrity() {
            bail!("{} is inconsistent: {e}", path.display());
        }
        let meta = |key: &str| -> anyhow::Result<Option<u64>> {
            conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get::<_, String>(0))
                .optional()?
                .map(|v| v.parse::<u64>())
                .transpose()
                .with_context(|| format!("reading {key}"))
        };
        let revision = meta("revision")?.unwrap_or(0);
        let floor = meta("floor")?.unwrap_or(0);
        let store = Store { conn: Mutex::new(conn), keep, floor: std::sync::atomic::AtomicU64::new(floor) };
        Ok((store, topo, revision))
    }

    /// How many changes the log keeps.
    pub fn keep(&self) -> u64 {
        self.keep
    }

    /// The log holds every change after this revision.
    pub fn floor(&self) -> u64 {
        self.floor.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Refuses a `since` the log no longer covers.
    pub fn check_since(&self, since: u64) -> Result<(), Gone> {
        let floor = self.floor();
        if since < floor {
            return Err(Gone { floor, keep: self.keep });
        }
        Ok(())
    }

    fn init(conn: &Connection) -> anyhow::Result<()> {
        conn.execute_batch(&format!(
            "BEGIN;
             CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE records (kind TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL,
                                   PRIMARY KEY (kind, id)) WITHOUT ROWID;
             CREATE TABLE changes (revision INTEGER PRIMARY KEY, body TEXT NOT NULL);
             INSERT INTO meta VALUES ('revision', '0');
             PRAGMA application_id = {APPLICATION_ID};
             PRAGMA user_version = {FORMAT};
             COMMIT;"
        ))?;
        Ok(())
    }

    /// Makes a change durable: the new images, the change record and the
    /// revision, in one transaction, dropping what the log no longer keeps.
    /// Returns once committed to disk.
    pub fn commit(&self, images: &Images, change: &Change) -> anyhow::Result<()> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        let floor = change.revision.saturating_sub(self.keep).max(self.floor());
        {
            let mut upsert =
                tx.prepare_cached("INSERT OR REPLACE INTO records (kind, id, body) VALUES (?1, ?2, ?3)")?;
            let mut delete = tx.prepare_cached("DELETE FROM records WHERE kind = ?1 AND id = ?2")?;
            for (key, rec) in images {
                match rec {
                    Some(rec) => upsert.execute(params![key.kind(), key.id(), serde_json::to_string(rec)?])?,
                    None => delete.execute(params![key.kind(), key.id()])?,
                };
            }
            tx.prepare_cached("INSERT INTO changes (revision, body) VALUES (?1, ?2)")?
                .execute(params![change.revision as i64, serde_json::to_string(change)?])?;
            tx.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'revision'")?
                .execute(params![change.revision.to_string()])?;
            if floor > self.floor() {
                tx.prepare_cached("DELETE FROM changes WHERE revision <= ?1")?.execute(params![floor as i64])?;
                tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES ('floor', ?1)")?
                    .execute(params![floor.to_string()])?;
            }
        }
        tx.commit()?;
        self.floor.store(floor, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// The changes after `revision`, oldest first, at most `limit`; a
    /// revision the log no longer covers is an error ([`Gone`]).
    pub fn changes_after(&self, revision: u64, limit: usize) -> anyhow::Result<Vec<Change>> {
        let conn = self.conn.lock();
        self.check_since(revision)?;
        let mut stmt =
            conn.prepare_cached("SELECT body FROM changes WHERE revision > ?1 ORDER BY revision LIMIT ?2")?;
        let rows = stmt.query_map(params![revision as i64, limit as i64], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for body in rows {
            out.push(serde_json::from_str(&body?)?);
        }
        Ok(out)
    }
}
