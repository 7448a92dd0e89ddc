//! The ledger of what leviathan made in the kernel: every namespace it
//! created, and every link it created in a namespace that is not its own
//! (the host's, in `--fabric host`, or one bound by path). Written durably
//! before the kernel work, so that after any crash adoption, reconcile and
//! destroy touch only what is recorded here; something that merely carries
//! the prefix is someone else's (CNI's and containerlab's rule).
//!
//! Links inside a managed container namespace are its own with the
//! namespace. The fabric namespace is shared ground (an operator may add a
//! link or bridge there), so each link leviathan makes in it is recorded
//! too; one it did not make is foreign like any other. A ledger written
//! before fabric links were recorded is marked as such (no `fabric_links`
//! row in `ledger_meta`): the fabric's links present at its first adoption
//! are taken as recorded then, as they were treated before.
//! The ledger is a table of the state file (SQLite), or of a file of its
//! own beside an etcd-backed server: what one host made is that host's.

use parking_lot::Mutex;
use rusqlite::{params, Connection};
use std::collections::BTreeSet;
use std::path::Path;

use super::error::LedgerError;
use super::observed::NsId;

/// An owned object: a namespace (`link` empty) or a link in a namespace.
pub type Entry = (String, String);

/// The key of a namespace in the ledger.
pub fn ns_key(ns: &NsId, prefix: &str) -> String {
    match ns {
        NsId::Host => "host".into(),
        NsId::Fabric => super::naming::fabric_netns_name(prefix),
        NsId::Managed(id) => super::naming::netns_name(prefix, id),
        NsId::Path(p) => format!("path:{p}"),
    }
}

pub struct Ledger {
    conn: Mutex<Connection>,
    /// Everything recorded, for lookups without a query.
    owned: Mutex<BTreeSet<Entry>>,
    /// Whether the links made in the fabric are recorded (false for a
    /// ledger from a build that did not record them, until adopted).
    fabric_links: Mutex<bool>,
}

/// The `ledger_meta` row saying fabric links are recorded.
const FABRIC_LINKS: &str = "fabric_links";

impl Ledger {
    /// Opens (or creates) the ledger in the SQLite file `path`.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        let what =
            |e: rusqlite::Error| LedgerError::new(format!("the ledger of owned objects in {}", path.display()), e);
        let conn = Connection::open(path).map_err(what)?;
        conn.busy_timeout(std::time::Duration::from_secs(5)).map_err(what)?;
        // On disk before the kernel work, against a crash of the process;
        // what it records (namespaces in /run, links) does not outlive the
        // machine, so it needs no flush to the platter (WAL, NORMAL).
        conn.pragma_update(None, "journal_mode", "WAL").map_err(what)?;
        conn.pragma_update(None, "synchronous", "NORMAL").map_err(what)?;
        let existed: bool = conn
            .query_row("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'owned'", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(what)?
            > 0;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS owned (ns TEXT NOT NULL, link TEXT NOT NULL, PRIMARY KEY (ns, link)) WITHOUT ROWID;
             CREATE TABLE IF NOT EXISTS ledger_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
        )
        .map_err(what)?;
        if !existed {
            conn.execute("INSERT OR IGNORE INTO ledger_meta VALUES (?1, '1')", [FABRIC_LINKS]).map_err(what)?;
        }
        let fabric_links: bool = conn
            .query_row("SELECT count(*) FROM ledger_meta WHERE key = ?1", [FABRIC_LINKS], |r| r.get::<_, i64>(0))
            .map_err(what)?
            > 0;
        let owned = {
            let mut stmt = conn.prepare("SELECT ns, link FROM owned").map_err(what)?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))).map_err(what)?;
            rows.collect::<Result<BTreeSet<Entry>, _>>().map_err(what)?
        };
        Ok(Ledger { conn: Mutex::new(conn), owned: Mutex::new(owned), fabric_links: Mutex::new(fabric_links) })
    }

    /// Leaves the checkpoints of the file to the state store, whose own
    /// connection checkpoints it in the background: for a ledger kept in
    /// the state file. Otherwise a record that found the WAL past SQLite's
    /// automatic threshold would copy it into the file, fsync included,
    /// inside a join's realization (the slowest joins were those).
    pub fn leave_checkpoints_to_the_store(&self) -> Result<(), LedgerError> {
        self.conn
            .lock()
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(|e| LedgerError::new("turning the ledger's own checkpoints off".to_string(), e))
    }

    /// Whether the links made in the fabric are recorded (see the module
    /// docs); until then every link in the fabric is taken as ours.
    pub fn fabric_links_recorded(&self) -> bool {
        *self.fabric_links.lock()
    }

    /// The links recorded in one namespace.
    pub fn links_in(&self, ns: &str) -> Vec<String> {
        let owned = self.owned.lock();
        owned
            .range((ns.to_string(), String::new())..)
            .take_while(|(n, _)| n == ns)
            .filter(|(_, l)| !l.is_empty())
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// Records the fabric links of a ledger written before they were
    /// recorded (what its first adoption finds there) and marks it as
    /// recording them from now on, in one transaction.
    pub fn adopt_fabric_links(&self, entries: &[Entry]) -> Result<(), LedgerError> {
        let adopting = |e: rusqlite::Error| LedgerError::new("recording the fabric's links", e);
        let mut conn = self.conn.lock();
        let tx = conn.transaction().map_err(adopting)?;
        {
            let mut put =
                tx.prepare_cached("INSERT OR IGNORE INTO owned (ns, link) VALUES (?1, ?2)").map_err(adopting)?;
            for (ns, link) in entries {
                put.execute(params![ns, link]).map_err(adopting)?;
            }
        }
        tx.execute("INSERT OR IGNORE INTO ledger_meta VALUES (?1, '1')", [FABRIC_LINKS]).map_err(adopting)?;
        tx.commit().map_err(adopting)?;
        self.owned.lock().extend(entries.iter().cloned());
        *self.fabric_links.lock() = true;
        Ok(())
    }

    pub fn contains(&self, ns: &str, link: &str) -> bool {
        self.owned.lock().contains(&(ns.to_string(), link.to_string()))
    }

    /// Every recorded namespace key.
    pub fn namespaces(&self) -> BTreeSet<String> {
        self.owned.lock().iter().filter(|(_, l)| l.is_empty()).map(|(n, _)| n.clone()).collect()
    }

    /// How many objects are recorded.
    pub fn len(&self) -> usize {
        self.owned.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.owned.lock().is_empty()
    }

    /// Records objects about to be made; returns once on disk.
    pub fn record(&self, entries: &[Entry]) -> Result<(), LedgerError> {
        let fresh: Vec<&Entry> = {
            let owned = self.owned.lock();
            entries.iter().filter(|e| !owned.contains(*e)).collect()
        };
        if fresh.is_empty() {
            return Ok(());
        }
        let recording = |e: rusqlite::Error| LedgerError::new("recording ownership", e);
        let mut conn = self.conn.lock();
        let tx = conn.transaction().map_err(recording)?;
        {
            let mut put =
                tx.prepare_cached("INSERT OR IGNORE INTO owned (ns, link) VALUES (?1, ?2)").map_err(recording)?;
            for (ns, link) in &fresh {
                put.execute(params![ns, link]).map_err(recording)?;
            }
        }
        tx.commit().map_err(recording)?;
        self.owned.lock().extend(fresh.into_iter().cloned());
        Ok(())
    }

    /// Forgets objects that are gone; a namespace takes its links with it.
    pub fn forget(&self, entries: &[Entry]) -> Result<(), LedgerError> {
        if entries.is_empty() {
            return Ok(());
        }
        let forgetting = |e: rusqlite::Error| LedgerError::new("forgetting ownership", e);
        let mut conn = self.conn.lock();
        let tx = conn.transaction().map_err(forgetting)?;
        {
            let mut del_one = tx.prepare_cached("DELETE FROM owned WHERE ns = ?1 AND link = ?2").map_err(forgetting)?;
            let mut del_ns = tx.prepare_cached("DELETE FROM owned WHERE ns = ?1").map_err(forgetting)?;
            for (ns, link) in entries {
                if link.is_empty() {
                    del_ns.execute(params![ns]).map_err(forgetting)?;
                } else {
                    del_one.execute(params![ns, link]).map_err(forgetting)?;
                }
            }
        }
        tx.commit().map_err(forgetting)?;
        let mut owned = self.owned.lock();
        for (ns, link) in entries {
            if link.is_empty() {
                // The namespace and its links: the entries from (ns, "")
                // on that name it (a range, not a walk of the whole set).
                let doomed: Vec<Entry> =
                    owned.range((ns.clone(), String::new())..).take_while(|(n, _)| n == ns).cloned().collect();
                for e in doomed {
                    owned.remove(&e);
                }
            } else {
                owned.remove(&(ns.clone(), link.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Left to the store, a record never checkpoints: the WAL keeps every
    /// frame it wrote, where SQLite's automatic checkpoint (threshold
    /// lowered to one page here) would have copied them into the file.
    #[test]
    fn a_ledger_leaving_checkpoints_to_the_store_never_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let wal_after_records = |leave: bool| {
            let path = dir.path().join(format!("l{leave}.db"));
            let l = Ledger::open(&path).unwrap();
            l.conn.lock().pragma_update(None, "wal_autocheckpoint", 1).unwrap();
            if leave {
                l.leave_checkpoints_to_the_store().unwrap();
            }
            let frames = |l: &Ledger| -> i64 {
                l.conn.lock().query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1)).unwrap()
            };
            for i in 0..20 {
                l.record(&[(format!("lev-c{i}"), String::new())]).unwrap();
            }
            frames(&l)
        };
        let (kept, left) = (wal_after_records(false), wal_after_records(true));
        assert!(left >= 20, "every record's frames are still in the WAL: {left}");
        assert!(kept < left, "with automatic checkpoints the WAL was restarted: {kept} against {left}");
    }

    #[test]
    fn records_survive_reopening_and_namespaces_take_their_links() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.db");
        let l = Ledger::open(&path).unwrap();
        let e = |n: &str, l: &str| (n.to_string(), l.to_string());
        l.record(&[e("lev-c1", ""), e("path:/proc/9/ns/net", "cen1"), e("path:/proc/9/ns/net", "")]).unwrap();
        drop(l);
        let l = Ledger::open(&path).unwrap();
        assert!(l.contains("lev-c1", "") && l.contains("path:/proc/9/ns/net", "cen1"));
        assert_eq!(l.namespaces().len(), 2);
        l.record(&[e("path:/proc/9/ns/net1", ""), e("path:/proc/9/ns/net1", "cen1")]).unwrap();
        l.forget(&[e("path:/proc/9/ns/net", "")]).unwrap();
        assert!(!l.contains("path:/proc/9/ns/net", "cen1"));
        // A namespace whose key starts with the forgotten one's stays.
        assert!(l.contains("path:/proc/9/ns/net1", "") && l.contains("path:/proc/9/ns/net1", "cen1"));
        l.forget(&[e("path:/proc/9/ns/net1", "")]).unwrap();
        drop(l);
        let l = Ledger::open(&path).unwrap();
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn a_ledger_from_before_fabric_links_were_recorded_adopts_them_once() {
        let dir = tempfile::tempdir().unwrap();
        let e = |n: &str, l: &str| (n.to_string(), l.to_string());
        // A new ledger records them from the start.
        let fresh = Ledger::open(&dir.path().join("new.db")).unwrap();
        assert!(fresh.fabric_links_recorded());
        // An old one: the table without the mark.
        let path = dir.path().join("old.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "CREATE TABLE owned (ns TEXT NOT NULL, link TEXT NOT NULL, PRIMARY KEY (ns, link)) WITHOUT ROWID;
                 INSERT INTO owned VALUES ('t-fabric', '');",
            )
            .unwrap();
        }
        let l = Ledger::open(&path).unwrap();
        assert!(!l.fabric_links_recorded());
        l.adopt_fabric_links(&[e("t-fabric", "t-b1"), e("t-fabric", "t-v1")]).unwrap();
        assert!(l.fabric_links_recorded());
        assert_eq!(l.links_in("t-fabric"), ["t-b1", "t-v1"], "the namespace's own row is not a link");
        drop(l);
        let l = Ledger::open(&path).unwrap();
        assert!(l.fabric_links_recorded(), "the mark is kept");
        assert!(l.contains("t-fabric", "t-b1") && l.contains("t-fabric", ""));
    }
}
