//! The store of one host: a SQLite file in WAL mode holding every record of
//! the topology and the change log. One transaction per change: the new
//! images of the records it touched, the change record, and the revision.
//! The log keeps the last `keep` changes; older ones are dropped in the same
//! transaction, and the revision below which the log is gone is recorded.
//!
//! Disk is returned: the file is in `auto_vacuum = INCREMENTAL` mode (set
//! before the first table of a new file; an older file is switched once at
//! open by a full `VACUUM`), and each commit that leaves free pages returns
//! at most [`VACUUM_STEP`] of them to the file system, inside its own
//! transaction. The file thus stays proportional to what is kept (records plus
//! the last `keep` changes); the write path never runs a full `VACUUM`.
//!
//! Checkpoints (copying the WAL back into the file) run off the write
//! path: the writing connection never checkpoints (`wal_autocheckpoint =
//! 0`); every [`CHECKPOINT_EVERY`] commits wake a thread of its own, with
//! its own connection, that runs a PASSIVE checkpoint (it waits for no
//! lock and blocks no writer; what it cannot copy yet waits for the next
//! one). Commits stay `synchronous = FULL`: a change is on disk (in the
//! WAL) before it is acknowledged, checkpointed or not.

use super::{migrate, Gone, HostStatus, Store, StoreError};
use crate::model::{AddrPlan, Change, Images, Record, Topology};
use anyhow::{bail, Context};
use async_trait::async_trait;
use parking_lot::Mutex;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// `PRAGMA application_id` of a leviathan state file ("LEVI").
pub const APPLICATION_ID: i64 = 0x4C45_5649;
/// The state file format this build writes and reads (2: memberships are
/// records of their own, CINs carry their subnet). Format 1 files are
/// migrated on open.
pub const FORMAT: i64 = 2;
/// Free pages returned to the file system after a commit, at most (4 MiB
/// with the default 4 KiB pages): bounds the work added to a write while
/// outpacing what one commit frees in steady churn.
pub const VACUUM_STEP: i64 = 1024;
/// Commits between two background checkpoints: each commit adds a few
/// pages to the WAL, so it stays far below SQLite's automatic 1000 pages
/// (which another connection to the file, the realizer's ledger, would
/// otherwise run inside its own commit).
pub const CHECKPOINT_EVERY: u64 = 64;
/// `PRAGMA auto_vacuum` of a file whose free pages can be returned in steps.
const AUTO_VACUUM_INCREMENTAL: i64 = 2;
/// Why SQLite could not open a state file: a missing directory is named
/// (it is not created); anything else keeps SQLite's reason.
fn open_error(path: &Path, e: rusqlite::Error) -> anyhow::Error {
    match path.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
        Some(dir) => anyhow::anyhow!(
            "opening state file {}: the directory {} does not exist (leviathan does not create it): create it, or choose another --state",
            path.display(),
            dir.display()
        ),
        None => anyhow::anyhow!("opening state file {}: {e}: choose another --state, or fix its permissions", path.display()),
    }
}

/// The state file.
pub struct SqliteStore {
    inner: Arc<Inner>,
    /// This server's host and the VTEP address it was given.
    own: Option<(String, Option<String>)>,
}

struct Inner {
    conn: Mutex<Connection>,
    keep: u64,
    /// The log holds every change after this revision.
    floor: AtomicU64,
    path: std::path::PathBuf,
    /// Commits since the checkpointer was last woken.
    since_checkpoint: AtomicU64,
    /// Wakes the checkpointer (none: the writing connection checkpoints
    /// by itself, as SQLite does by default); dropped with the store, which
    /// ends the checkpointer.
    checkpointer: Option<Checkpointer>,
}

/// The background checkpointer: its wake-up and its thread.
struct Checkpointer {
    wake: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Checkpointer {
    /// Ends the thread and waits for it, so that its connection is closed
    /// when the store is: the last connection to close checkpoints and
    /// removes the `-wal` and `-shm` files, which a process exiting with
    /// the thread still running would leave behind.
    fn drop(&mut self) {
        drop(self.wake.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl SqliteStore {
    /// Opens (or creates) a state file and loads the topology (whose new
    /// CINs get subnets from `plan`) and revision, keeping the last `keep`
    /// changes in the log. A file that is not a leviathan state file, or
    /// was written in a newer format, is refused with a message saying so;
    /// it is never misread.
    pub fn open(path: &Path, plan: AddrPlan, keep: u64) -> anyhow::Result<(SqliteStore, Topology, u64)> {
        if keep == 0 {
            bail!("--keep-changes must be at least 1");
        }
        let mut conn = Connection::open(path).map_err(|e| open_error(path, e))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let app: i64 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        if app == 0 && version == 0 && tables == 0 {
            init(&conn)?;
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
        // A server that cannot write its state file must not start (its
        // first change would fail): write something that changes nothing.
        conn.execute("UPDATE meta SET value = value WHERE key = 'revision'", []).map_err(|e| {
            anyhow::anyhow!(
                "state file {} cannot be written ({e}): make it writable, or give another --state",
                path.display()
            )
        })?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        switch_to_incremental_vacuum(&conn, path)?;

        let (images, revision) = read_all(&conn, path)?;
        let topo = super::topology_of(&images, plan, &path.display().to_string())?;
        let floor = meta(&conn, "floor")?.unwrap_or(0);
        let checkpointer = start_checkpointer(path, &conn);
        let inner = Inner {
            conn: Mutex::new(conn),
            keep,
            floor: AtomicU64::new(floor),
            path: path.to_path_buf(),
            since_checkpoint: AtomicU64::new(0),
            checkpointer,
        };
        Ok((SqliteStore { inner: Arc::new(inner), own: None }, topo, revision))
    }

    /// Names this server's host (and its VTEP address): the one host this
    /// store reports as up.
    pub fn announcing(mut self, host: &str, vtep_address: Option<String>) -> Self {
        self.own = Some((host.to_string(), vtep_address));
        self
    }

    /// Runs blocking work on the connection off the async runtime (or
    /// inline when there is none).
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = Arc::clone(&self.inner);
        match tokio::runtime::Handle::try_current() {
            Ok(_) => tokio::task::spawn_blocking(move || f(&inner))
                .await
                .map_err(|e| StoreError::Other(anyhow::anyhow!("store task failed: {e}")))?,
            Err(_) => f(&inner),
        }
    }
}

fn meta(conn: &Connection, key: &str) -> anyhow::Result<Option<u64>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get::<_, String>(0))
        .optional()?
        .map(|v| v.parse::<u64>())
        .transpose()
        .with_context(|| format!("reading {key}"))
}

fn read_all(conn: &Connection, path: &Path) -> anyhow::Result<(Images, u64)> {
    let mut images = Images::new();
    let mut stmt = conn.prepare("SELECT kind, id, body FROM records")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
    for row in rows {
        let (kind, id, body) = row?;
        let rec: Record = serde_json::from_str(&body)
            .with_context(|| format!("{}: unreadable {kind} record '{id}'", path.display()))?;
        images.insert(rec.key(), Some(rec));
    }
    Ok((images, meta(conn, "revision")?.unwrap_or(0)))
}

/// Switches a file written without incremental vacuum (before this build,
/// or by `auto_vacuum = NONE`): SQLite only changes the mode of a file
/// with tables by rebuilding it, so this runs one full `VACUUM` (needs
/// free disk about the size of the live data for the copy; it takes time
/// in proportion to the live data: 0.3 s for a 110 MB file holding 30 MB,
/// measured on a build host). Done once: the mode is kept in the file.
fn switch_to_incremental_vacuum(conn: &Connection, path: &Path) -> anyhow::Result<()> {
    let mode: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
    if mode == AUTO_VACUUM_INCREMENTAL {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let before = file_pages(conn)?;
    conn.execute_batch(&format!("PRAGMA auto_vacuum = {AUTO_VACUUM_INCREMENTAL}; VACUUM;")).with_context(|| {
        format!(
            "switching {} to incremental vacuum (a one-time VACUUM; it needs free disk about the size of the file)",
            path.display()
        )
    })?;
    let after = file_pages(conn)?;
    tracing::info!(
        state = %path.display(),
        pages_before = before.0,
        free_before = before.1,
        pages_after = after.0,
        took_ms = started.elapsed().as_millis() as u64,
        "state file switched to incremental vacuum (once)"
    );
    Ok(())
}

/// The pages of the file and how many of them are free.
fn file_pages(conn: &Connection) -> anyhow::Result<(i64, i64)> {
    let pages = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    Ok((pages, free))
}

/// Returns at most [`VACUUM_STEP`] free pages to the file system.
fn return_free_pages(conn: &Connection) -> anyhow::Result<()> {
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    if free == 0 {
        return Ok(());
    }
    // SQLite quirk: incremental_vacuum frees one page per step of the
    // statement, so the statement is stepped to its end (a single
    // `execute_batch` step would free one page only).
    let mut stmt = conn.prepare_cached(&format!("PRAGMA incremental_vacuum({VACUUM_STEP})"))?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    Ok(())
}

/// Starts the background checkpointer of the file at `path` and turns
/// automatic checkpoints off on `conn`, the writing connection. When its
/// connection or thread cannot be had, `conn` keeps checkpointing by
/// itself (SQLite's default) and the reason is logged.
fn start_checkpointer(path: &Path, conn: &Connection) -> Option<Checkpointer> {
    let opened = Connection::open(path).and_then(|c| {
        c.busy_timeout(std::time::Duration::from_secs(5))?;
        c.pragma_update(None, "synchronous", "FULL")?;
        Ok(c)
    });
    let ckpt = match opened {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(state = %path.display(), error = %e, "no background checkpoints: commits checkpoint");
            return None;
        }
    };
    let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
    let shown = path.display().to_string();
    let spawned = std::thread::Builder::new().name("lev-checkpoint".into()).spawn(move || {
        // Ends when the store (the sender) is dropped.
        while rx.recv().is_ok() {
            let r = ckpt.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            });
            match r {
                Ok((busy, log, copied)) => tracing::debug!(state = %shown, busy, log, copied, "checkpoint"),
                Err(e) => tracing::warn!(state = %shown, error = %e, "checkpoint failed; the next one tries again"),
            }
        }
    });
    let thread = match spawned {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(state = %path.display(), error = %e, "no background checkpoints: commits checkpoint");
            return None;
        }
    };
    if let Err(e) = conn.pragma_update(None, "wal_autocheckpoint", 0) {
        tracing::warn!(state = %path.display(), error = %e, "commits keep checkpointing");
    }
    Some(Checkpointer { wake: Some(tx), thread: Some(thread) })
}

fn init(conn: &Connection) -> anyhow::Result<()> {
    // Before the first table: the mode cannot change cheaply afterwards.
    conn.pragma_update(None, "auto_vacuum", AUTO_VACUUM_INCREMENTAL)?;
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

impl Inner {
    fn floor(&self) -> u64 {
        self.floor.load(Ordering::Acquire)
    }

    fn check_since(&self, since: u64) -> Result<(), Gone> {
        let floor = self.floor();
        if since < floor {
            return Err(Gone { floor, keep: self.keep });
        }
        Ok(())
    }

    fn commit(&self, images: &Images, change: &Change) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let mut conn = self.conn.lock();
        // Immediate: the write lock is taken (waiting up to the busy
        // timeout) before the revision is read. A deferred transaction that
        // read first could not upgrade to a write once another connection
        // to the file (the realizer's ledger) had written meanwhile: SQLite
        // answers that at once with "database is locked", no waiting.
        let tx =
            conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).map_err(anyhow::Error::from)?;
        let expected = change.revision.saturating_sub(1);
        let at = meta(&tx, "revision")?.unwrap_or(0);
        if at != expected || change.revision == 0 {
            return Err(StoreError::Conflict { expected });
        }
        let floor = change.revision.saturating_sub(self.keep).max(self.floor());
        let write = || -> anyhow::Result<()> {
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
            Ok(())
        };
        write()?;
        let written_us = started.elapsed().as_micros() as u64;
        // Returning disk rides in the same transaction (no second sync per
        // write); it is housekeeping that a later commit retries, never a
        // reason to fail the write.
        if let Err(e) = return_free_pages(&tx) {
            tracing::warn!(error = %e, state = %self.path.display(), "could not return free pages of the state file");
        }
        let vacuumed_us = started.elapsed().as_micros() as u64;
        tx.commit().map_err(anyhow::Error::from)?;
        self.floor.store(floor, Ordering::Release);
        self.after_commit();
        tracing::debug!(
            revision = change.revision,
            written_us,
            vacuumed_us,
            committed_us = started.elapsed().as_micros() as u64,
            "commit timing"
        );
        Ok(())
    }

    /// Wakes the checkpointer every [`CHECKPOINT_EVERY`] commits (never
    /// waiting: a wake-up already pending covers this one).
    fn after_commit(&self) {
        let Some(tx) = self.checkpointer.as_ref().and_then(|c| c.wake.as_ref()) else { return };
        if self.since_checkpoint.fetch_add(1, Ordering::AcqRel) + 1 >= CHECKPOINT_EVERY {
            self.since_checkpoint.store(0, Ordering::Release);
            let _ = tx.try_send(());
        }
    }

    fn changes_after(&self, revision: u64, limit: usize) -> Result<Vec<Change>, StoreError> {
        let conn = self.conn.lock();
        self.check_since(revision)?;
        let read = || -> anyhow::Result<Vec<Change>> {
            let mut stmt =
                conn.prepare_cached("SELECT body FROM changes WHERE revision > ?1 ORDER BY revision LIMIT ?2")?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let rows = stmt.query_map(params![revision as i64, limit], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for body in rows {
                out.push(serde_json::from_str(&body?)?);
            }
            Ok(out)
        };
        Ok(read()?)
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn keep(&self) -> u64 {
        self.inner.keep
    }

    fn floor(&self) -> u64 {
        self.inner.floor()
    }

    async fn load(&self) -> Result<(Images, u64), StoreError> {
        self.blocking(|inner| Ok(read_all(&inner.conn.lock(), &inner.path)?)).await
    }

    async fn commit(&self, images: Arc<Images>, change: Arc<Change>) -> Result<(), StoreError> {
        self.blocking(move |inner| inner.commit(&images, &change)).await
    }

    async fn changes_after(&self, revision: u64, limit: usize) -> Result<Vec<Change>, StoreError> {
        self.blocking(move |inner| inner.changes_after(revision, limit)).await
    }

    /// The server's own host is up (with the VTEP address it was given);
    /// nothing is known of any other host.
    fn host_status(&self, host: &str) -> HostStatus {
        match &self.own {
            Some((own, vtep)) if own == host => HostStatus { vtep_address: vtep.clone(), up: true },
            _ => HostStatus::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Command;

    /// Commits CEN `c<revision>` as the change of `revision`.
    fn commit_cen(store: &SqliteStore, topo: &mut Topology, revision: u64) {
        let cmd = Command::CenCreate { id: format!("c{revision}") };
        let (images, change) = crate::store::contract::change_of(topo, cmd, revision);
        store.inner.commit(&images, &change).unwrap();
    }

    #[test]
    fn checkpoints_run_off_the_write_path_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let (store, mut topo, _) = SqliteStore::open(&path, AddrPlan::default(), 1000).unwrap();
        let auto: i64 = store.inner.conn.lock().query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0)).unwrap();
        assert_eq!(auto, 0, "the writing connection never checkpoints");
        let before = std::fs::metadata(&path).unwrap().len();
        let n = 3 * CHECKPOINT_EVERY;
        for r in 1..=n {
            commit_cen(&store, &mut topo, r);
        }
        // The pages reach the file itself only through a checkpoint, which
        // the writer does not run: the checkpointer did.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::fs::metadata(&path).unwrap().len() <= before {
            assert!(std::time::Instant::now() < deadline, "no checkpoint copied the WAL into {}", path.display());
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        drop(store);
        let (_, topo, revision) = SqliteStore::open(&path, AddrPlan::default(), 1000).unwrap();
        assert_eq!(revision, n);
        assert_eq!(topo.cens_iter().count() as u64, n, "every committed change is kept");
    }
}
