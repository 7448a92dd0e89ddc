//! The SQLite state file returns disk: under churn with a small
//! `--keep-changes`, what the log no longer keeps (and deleted records) is
//! given back in bounded steps, so the file stays proportional to what is
//! kept; a file written without incremental vacuum is switched at open.
//! Sizes are read from SQLite (page_count, freelist_count), not timed.

use leviathan::model::{CenSpec, Command};
use leviathan::service::{Options, Service};
use std::path::Path;
use std::sync::Arc;

/// (pages, free pages, page size) of a state file, read beside the server.
fn pages(path: &Path) -> (i64, i64, i64) {
    let c = rusqlite::Connection::open(path).unwrap();
    let q = |p: &str| c.query_row(&format!("PRAGMA {p}"), [], |r| r.get::<_, i64>(0)).unwrap();
    (q("page_count"), q("freelist_count"), q("page_size"))
}

fn auto_vacuum(path: &Path) -> i64 {
    let c = rusqlite::Connection::open(path).unwrap();
    c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap()
}

/// 200 small changes: a CEN with a long id created and deleted.
async fn small_round(svc: &Arc<Service>, round: usize) {
    for i in 0..100 {
        let id = format!("churn-{round}-{i}-{}", "x".repeat(40));
        svc.execute(Command::CenCreate { id: id.clone() }).await.unwrap();
        svc.execute(Command::CenDelete { id }).await.unwrap();
    }
}

/// One large change (600 CENs imported at once), then each deleted:
/// pages the kept state no longer needs once the log has moved on.
/// Returns the file's pages after the import.
async fn burst(svc: &Arc<Service>, path: &Path, round: usize) -> i64 {
    let cens: Vec<CenSpec> =
        (0..600).map(|i| CenSpec { id: format!("burst-{round}-{i}-{}", "y".repeat(40)), containers: vec![] }).collect();
    let ids: Vec<String> = cens.iter().map(|c| c.id.clone()).collect();
    svc.execute(Command::CenImport { host: "h1".into(), cens }).await.unwrap();
    let grown = pages(path).0;
    for id in ids {
        svc.execute(Command::CenDelete { id }).await.unwrap();
    }
    grown
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_with_a_small_keep_leaves_the_file_proportional_to_what_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let svc = Service::open_with(&path, Options { keep_changes: 50, ..Options::new("h1") }).unwrap();
    assert_eq!(auto_vacuum(&path), 2, "a new file is created with incremental vacuum");
    small_round(&svc, 0).await;
    let (first, free, page) = pages(&path);
    println!("state file after round 1: {} KiB ({first} pages, {free} free)", first * page / 1024);
    let mut peak = first;
    for round in 1..=3 {
        peak = peak.max(burst(&svc, &path, round).await);
        small_round(&svc, round).await;
        let (now, free, _) = pages(&path);
        println!(
            "state file after round {}: {} KiB ({now} pages, {free} free; peak so far {} KiB)",
            round + 1,
            now * page / 1024,
            peak * page / 1024
        );
        assert!(
            now <= 2 * first,
            "round {}: {now} pages, more than twice the {first} after round 1 (peak {peak})",
            round + 1
        );
    }
    assert!(peak > 4 * first, "the bursts did grow the file ({peak} vs {first} pages): the test measures something");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_without_incremental_vacuum_is_switched_at_open_and_keeps_its_content() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let revision = {
        let svc = Service::open(&path, "h1").unwrap();
        svc.execute(Command::CenCreate { id: "kept".into() }).await.unwrap()
    };
    {
        // As written by a build before incremental vacuum.
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("PRAGMA auto_vacuum = NONE; VACUUM;").unwrap();
    }
    assert_eq!(auto_vacuum(&path), 0);
    let svc = Service::open(&path, "h1").unwrap();
    assert_eq!(auto_vacuum(&path), 2, "switched once at open");
    assert_eq!(svc.revision(), revision);
    assert!(svc.read(|t| t.cen("kept").is_some()), "the content survives the switch");
}
