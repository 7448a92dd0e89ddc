//! The etcd store on stock etcd (default limits): large changes in chunks,
//! loads from a snapshot and the log after it, trimming, the sweep of
//! orphan chunks, the migration of layout 1, and the largest request.

use super::keys::Keys;
use super::*;
use crate::model::{CenSpec, ChangeItem, Command, Topology};
use crate::store::testing::{etcd_available, EtcdProcess};
use etcd_client::GetOptions;

fn cfg(e: &EtcdProcess, keep: u64) -> EtcdConfig {
    EtcdConfig { keep, ..EtcdConfig::new(vec![e.client_url.clone()], "h1") }
}

/// The images and change of `cmd` against `topo` at `revision`.
fn change_of(topo: &mut Topology, cmd: Command, revision: u64) -> (Arc<Images>, Arc<Change>) {
    let images = topo.prepare(&cmd).unwrap();
    let items = images
        .iter()
        .map(|(k, a)| ChangeItem { key: k.clone(), before: topo.get(k).cloned(), after: a.clone() })
        .collect();
    topo.commit(&images);
    (
        Arc::new(images),
        Arc::new(Change { revision, mutation: cmd.name().into(), at_ms: 1, at_us: 1000, actor: String::new(), items }),
    )
}

/// `n` CENs `<tag>0..` of 10 containers each, in one import.
fn import(tag: &str, n: usize) -> Command {
    Command::CenImport {
        host: "h1".into(),
        cens: (0..n)
            .map(|g| CenSpec {
                id: format!("{tag}{g}"),
                containers: (0..10).map(|i| format!("{tag}{g}-container-{i}")).collect(),
            })
            .collect(),
    }
}

fn model(topo: &Topology) -> Images {
    topo.records().into_iter().map(|r| (r.key(), Some(r))).collect()
}

async fn count(store: &EtcdStore, prefix: &str) -> i64 {
    let mut kv = store.core.client.kv_client();
    kv.get(prefix, Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_of_several_mib_round_trips_within_the_default_limits() {
    if !etcd_available("store::etcd::tests::a_change_of_several_mib_round_trips_within_the_default_limits") {
        return;
    }
    let e = EtcdProcess::start("large");
    let (a, _, _) = EtcdStore::connect(cfg(&e, 100)).await.unwrap();
    let (b, _, _) = EtcdStore::connect(cfg(&e, 100)).await.unwrap();
    let mut follow = b.follow().unwrap();
    let mut topo = Topology::new();
    let (images, change) = change_of(&mut topo, import("c", 2_000), 1);
    let json = serde_json::to_vec(&*change).unwrap().len();
    assert!(json > 3 * log::CHUNK, "the change is {json} bytes");
    a.commit(images, Arc::clone(&change)).await.unwrap();
    assert_eq!(count(&a, &a.core.keys.chunks).await as usize, json.div_ceil(log::CHUNK));
    // Read back from the log, from the watch, and by a load.
    assert_eq!(a.changes_after(0, 10).await.unwrap(), vec![(*change).clone()]);
    let heard = loop {
        match tokio::time::timeout(std::time::Duration::from_secs(60), follow.recv()).await.unwrap().unwrap() {
            Remote::Change(c) => break c,
            Remote::CatchUp => continue,
        }
    };
    assert_eq!(*heard, *change);
    let (images, rev) = b.load().await.unwrap();
    assert_eq!((rev, images), (1, model(&topo)));
    let (bytes, ops) = largest_request();
    assert!(bytes as usize <= request::MAX_REQUEST_BYTES && ops as usize <= request::MAX_OPS, "{bytes} {ops}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_loads_the_snapshot_and_the_log_after_it_and_the_log_is_trimmed() {
    if !etcd_available("store::etcd::tests::a_restart_loads_the_snapshot_and_the_log_after_it_and_the_log_is_trimmed") {
        return;
    }
    let e = EtcdProcess::start("snapshot");
    let (s, _, _) = EtcdStore::connect(cfg(&e, 3)).await.unwrap();
    let mut topo = Topology::new();
    for r in 1..=5 {
        let (images, change) = change_of(&mut topo, Command::CenCreate { id: format!("c{r}") }, r);
        s.commit(images, change).await.unwrap();
    }
    assert!(!s.snapshot_due(5), "due after 10,000 changes or 64 MiB");
    s.snapshot(5, topo.records()).await.unwrap();
    for r in 6..=7 {
        let cmd = match r {
            6 => Command::CenDelete { id: "c2".into() },
            _ => Command::CenCreate { id: "c7".into() },
        };
        let (images, change) = change_of(&mut topo, cmd, r);
        s.commit(images, change).await.unwrap();
    }
    // For `since`, the log keeps the last 3; the snapshot at 5 trimmed
    // what neither it nor `keep` needed then: up to min(5, 5 - 3).
    let log: Vec<u64> = s.changes_after(4, 10).await.unwrap().iter().map(|c| c.revision).collect();
    assert_eq!(log, vec![5, 6, 7]);
    assert!(matches!(s.changes_after(3, 10).await, Err(StoreError::Gone(_))));
    assert_eq!(count(&s, &s.core.keys.log).await, 5);
    drop(s);
    let (s, images, rev) = EtcdStore::connect(cfg(&e, 3)).await.unwrap();
    assert_eq!((rev, images), (7, model(&topo)));
    assert!(matches!(s.changes_after(3, 10).await, Err(StoreError::Gone(_))));
    // A snapshot older than the current one changes nothing.
    s.snapshot(4, Vec::new()).await.unwrap();
    assert_eq!(s.load().await.unwrap().0, model(&topo));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_deletes_chunks_no_entry_names_and_fences_passed() {
    if !etcd_available("store::etcd::tests::the_sweep_deletes_chunks_no_entry_names_and_fences_passed") {
        return;
    }
    let e = EtcdProcess::start("sweep");
    let (s, _, _) = EtcdStore::connect(cfg(&e, 100)).await.unwrap();
    let mut topo = Topology::new();
    let (images, change) = change_of(&mut topo, import("big", 600), 1);
    s.commit(images, change).await.unwrap();
    let named = count(&s, &s.core.keys.chunks).await;
    assert!(named >= 2, "{named}");
    // A server killed between its chunks and its commit at revision 1
    // (decided: orphan), and one still writing for revision 2 (kept).
    let k = &s.core.keys;
    s.core.put_chunks("test", &k.chunk_dir(1, "dead.1"), &[b'x'; 10]).await.unwrap();
    s.core.put_chunks("test", &k.chunk_dir(2, "busy.1"), &[b'x'; 10]).await.unwrap();
    let mut kv = s.core.client.kv_client();
    kv.put(k.fence("old"), "0", None).await.unwrap();
    kv.put(k.fence("current"), "1", None).await.unwrap();
    s.core.sweep().await.unwrap();
    assert_eq!(count(&s, &k.chunk_dir(1, "dead.1")).await, 0);
    assert_eq!(count(&s, &k.chunk_dir(2, "busy.1")).await, 1);
    assert_eq!(count(&s, &k.chunks_of(1)).await, named);
    assert_eq!(count(&s, &k.fences).await, 1);
    assert_eq!(s.load().await.unwrap().0, model(&topo));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefix_of_layout_1_is_migrated_to_a_snapshot() {
    if !etcd_available("store::etcd::tests::a_prefix_of_layout_1_is_migrated_to_a_snapshot") {
        return;
    }
    let e = EtcdProcess::start("migrate");
    let mut topo = Topology::new();
    change_of(&mut topo, import("m", 3), 1);
    let k = Keys::new("/leviathan").unwrap();
    let client = etcd_client::Client::connect([e.client_url.clone()], None).await.unwrap();
    let mut kv = client.kv_client();
    for r in topo.records() {
        kv.put(k.v1_record(&r.key()), serde_json::to_vec(&r).unwrap(), None).await.unwrap();
    }
    kv.put(k.v1_revision.clone(), "41", None).await.unwrap();
    kv.put(k.format.clone(), "1", None).await.unwrap();
    kv.put(format!("{}{:020}", k.v1_changes, 41), "{}", None).await.unwrap();
    let (s, images, rev) = EtcdStore::connect(cfg(&e, 100)).await.unwrap();
    assert_eq!((rev, images), (41, model(&topo)));
    assert_eq!(count(&s, &k.v1_records).await + count(&s, &k.v1_changes).await, 0);
    assert!(matches!(s.changes_after(40, 10).await, Err(StoreError::Gone(_))));
    assert_eq!(s.changes_after(41, 10).await.unwrap(), vec![]);
    // It goes on from there.
    let (images, change) = change_of(&mut topo, Command::CenCreate { id: "after".into() }, 42);
    s.commit(images, change).await.unwrap();
    drop(s);
    let (_, images, rev) = EtcdStore::connect(cfg(&e, 100)).await.unwrap();
    assert_eq!((rev, images), (42, model(&topo)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outcome_of_an_unanswered_commit_is_found_out() {
    if !etcd_available("store::etcd::tests::the_outcome_of_an_unanswered_commit_is_found_out") {
        return;
    }
    let e = EtcdProcess::start("resolve");
    let (s, _, _) = EtcdStore::connect(cfg(&e, 100)).await.unwrap();
    let k = s.core.keys.clone();
    let mut kv = s.core.client.kv_client();
    // Not applied, head still below: fenced, so it can never apply.
    match s.core.resolve("never", 1, "test").await {
        Err(StoreError::Unavailable(m)) => assert!(m.contains("not committed"), "{m}"),
        other => panic!("expected not committed, got {other:?}"),
    }
    assert_eq!(count(&s, &k.fence("never")).await, 1);
    // Applied (the entry at its revision carries its id): committed.
    let change = Change {
        revision: 1,
        mutation: "cenCreate".into(),
        at_ms: 1,
        at_us: 1000,
        actor: String::new(),
        items: vec![],
    };
    let entry = log::Entry { id: "mine".into(), change: Some(change), chunks: 0, bytes: 0 };
    kv.put(k.entry(1), serde_json::to_vec(&entry).unwrap(), None).await.unwrap();
    kv.put(k.head.clone(), "1", None).await.unwrap();
    assert!(s.core.resolve("mine", 1, "test").await.is_ok());
    // Another commit holds the revision: this one lost the race.
    assert!(matches!(s.core.resolve("theirs", 1, "test").await, Err(StoreError::Conflict { expected: 0 })));
    // With etcd stalled, nobody can say: UNKNOWN_OUTCOME naming the commit.
    e.signal("STOP");
    let r = s.core.resolve("stalled", 2, "test").await;
    e.signal("CONT");
    match r {
        Err(StoreError::UnknownOutcome { id, revision, .. }) => assert_eq!((id.as_str(), revision), ("stalled", 2)),
        other => panic!("expected an unknown outcome, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_a_server_holds_the_commit_lock_only_it_commits() {
    if !etcd_available("store::etcd::tests::while_a_server_holds_the_commit_lock_only_it_commits") {
        return;
    }
    let e = EtcdProcess::start("lock");
    let (a, _, _) = EtcdStore::connect(cfg(&e, 100)).await.unwrap();
    let (b, _, _) = EtcdStore::connect(cfg(&e, 100)).await.unwrap();
    let (mut ta, mut tb) = (Topology::new(), Topology::new());
    a.lock_commits().await.unwrap();
    // B computed against the right revision, but the lock is taken.
    let (images, change) = change_of(&mut tb, Command::CenCreate { id: "b".into() }, 1);
    assert!(matches!(b.commit(images.clone(), change.clone()).await, Err(StoreError::Conflict { expected: 0 })));
    let (ia, ca) = change_of(&mut ta, Command::CenCreate { id: "a".into() }, 1);
    a.commit(ia, ca).await.unwrap();
    a.unlock_commits().await;
    assert_eq!(count(&a, &a.core.keys.lock).await, 0, "the lock's key went with its lease");
    let (images, change) = change_of(&mut ta, Command::CenCreate { id: "b".into() }, 2);
    b.commit(images, change).await.unwrap();
    assert_eq!(b.changes_after(0, 10).await.unwrap().len(), 2);
}
