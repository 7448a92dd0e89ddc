//! The store's contract, run against both implementations: the same test
//! functions with a SQLite file and with a throwaway etcd.

use super::testing::{etcd_available, EtcdProcess};
use super::*;
use crate::model::{ChangeItem, Command, EntityKey, Topology};

enum Backend {
    Sqlite(tempfile::TempDir),
    Etcd(EtcdProcess),
}

impl Backend {
    fn sqlite() -> Backend {
        Backend::Sqlite(tempfile::tempdir().unwrap())
    }

    fn etcd(test: &str) -> Option<Backend> {
        etcd_available(test).then(|| Backend::Etcd(EtcdProcess::start("contract")))
    }

    /// Opens (or reopens) the store, keeping `keep` changes.
    async fn open(&self, keep: u64) -> (Arc<dyn Store>, Images, u64) {
        match self {
            Backend::Sqlite(dir) => {
                let (s, topo, rev) = SqliteStore::open(&dir.path().join("s.db"), AddrPlan::default(), keep).unwrap();
                let images = topo.records().into_iter().map(|r| (r.key(), Some(r))).collect();
                (Arc::new(s), images, rev)
            }
            Backend::Etcd(e) => {
                let cfg = EtcdConfig { keep, ..EtcdConfig::new(vec![e.client_url.clone()], "h1") };
                let (s, images, rev) = EtcdStore::connect(cfg).await.unwrap();
                (Arc::new(s), images, rev)
            }
        }
    }
}

/// The images and change record of a command run against `topo`.
pub(super) fn change_of(topo: &mut Topology, cmd: Command, revision: u64) -> (Arc<Images>, Arc<Change>) {
    let images = topo.prepare(&cmd).unwrap();
    let items = images
        .iter()
        .map(|(k, a)| ChangeItem { key: k.clone(), before: topo.get(k).cloned(), after: a.clone() })
        .collect();
    topo.commit(&images);
    let change = Change { revision, mutation: cmd.name().into(), at_ms: 1, at_us: 1000, actor: "tester".into(), items };
    (Arc::new(images), Arc::new(change))
}

fn cen(id: &str) -> Command {
    Command::CenCreate { id: id.into() }
}

/// Commits CENs `c1..=cn` one change each, starting at revision 1.
async fn commit_cens(store: &dyn Store, topo: &mut Topology, from: u64, n: u64) {
    for r in from..from + n {
        let (images, change) = change_of(topo, cen(&format!("c{r}")), r);
        store.commit(images, change).await.unwrap();
    }
}

async fn commits_are_logged_and_loaded(b: Backend) {
    let (store, images, rev) = b.open(100).await;
    assert!(images.is_empty());
    assert_eq!(rev, 0);
    let mut topo = Topology::new();
    commit_cens(&*store, &mut topo, 1, 3).await;
    let log = store.changes_after(0, 100).await.unwrap();
    assert_eq!(log.iter().map(|c| c.revision).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(log[1].mutation, "cenCreate");
    assert_eq!(log[1].items[0].after, topo.get(&EntityKey::Cen("c2".into())).cloned());
    assert_eq!(store.changes_after(1, 1).await.unwrap().iter().map(|c| c.revision).collect::<Vec<_>>(), vec![2]);
    assert!(store.changes_after(3, 100).await.unwrap().is_empty());
    let (images, rev) = store.load().await.unwrap();
    assert_eq!(rev, 3);
    assert_eq!(images.len(), 3);
    assert_eq!(images, topo.records().into_iter().map(|r| (r.key(), Some(r))).collect());
}

async fn a_stale_commit_is_refused_and_writes_nothing(b: Backend) {
    let (store, _, _) = b.open(100).await;
    let mut topo = Topology::new();
    commit_cens(&*store, &mut topo, 1, 2).await;
    // Computed against revision 1, but the store is at 2.
    let mut stale = Topology::new();
    let (images, change) = change_of(&mut stale, cen("late"), 2);
    match store.commit(images, change).await {
        Err(StoreError::Conflict { expected }) => assert_eq!(expected, 1),
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Ahead of the store is refused just the same.
    let (images, change) = change_of(&mut stale, cen("early"), 5);
    assert!(matches!(store.commit(images, change).await, Err(StoreError::Conflict { expected: 4 })));
    let (images, rev) = store.load().await.unwrap();
    assert_eq!(rev, 2);
    assert!(!images.contains_key(&EntityKey::Cen("late".into())));
    assert_eq!(store.changes_after(0, 100).await.unwrap().len(), 2);
}

async fn the_log_keeps_the_last_n_and_says_gone(b: Backend) {
    let (store, _, _) = b.open(3).await;
    assert_eq!(store.keep(), 3);
    let mut topo = Topology::new();
    commit_cens(&*store, &mut topo, 1, 6).await;
    assert_eq!(store.floor(), 3);
    match store.changes_after(2, 100).await {
        Err(StoreError::Gone(g)) => assert_eq!(g, Gone { floor: 3, keep: 3 }),
        other => panic!("expected GONE, got {other:?}"),
    }
    assert_eq!(store.check_since(2), Err(Gone { floor: 3, keep: 3 }));
    assert_eq!(store.check_since(3), Ok(()));
    let log = store.changes_after(3, 100).await.unwrap();
    assert_eq!(log.iter().map(|c| c.revision).collect::<Vec<_>>(), vec![4, 5, 6]);
    // A reopened store knows the floor.
    drop(store);
    let (store, _, rev) = b.open(3).await;
    assert_eq!(rev, 6);
    assert!(matches!(store.changes_after(0, 100).await, Err(StoreError::Gone(_))));
    assert_eq!(store.floor(), 3);
}

async fn removals_and_reopening_keep_the_model(b: Backend) {
    let (store, _, _) = b.open(100).await;
    let mut topo = Topology::new();
    commit_cens(&*store, &mut topo, 1, 2).await;
    let (images, change) = change_of(&mut topo, Command::CenDelete { id: "c1".into() }, 3);
    assert_eq!(images.get(&EntityKey::Cen("c1".into())), Some(&None));
    store.commit(images, change).await.unwrap();
    drop(store);
    let (store, images, rev) = b.open(100).await;
    assert_eq!(rev, 3);
    assert_eq!(images.keys().cloned().collect::<Vec<_>>(), vec![EntityKey::Cen("c2".into())]);
    // It goes on from where it was.
    commit_cens(&*store, &mut topo, 4, 1).await;
    assert_eq!(store.load().await.unwrap().1, 4);
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(super::Backend::sqlite()).await;
                }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(b) = super::Backend::etcd(concat!("store::contract::etcd::", stringify!($name))) {
                        super::$name(b).await;
                    }
                }
            )*
        }
    };
}

contract!(
    commits_are_logged_and_loaded,
    a_stale_commit_is_refused_and_writes_nothing,
    the_log_keeps_the_last_n_and_says_gone,
    removals_and_reopening_keep_the_model,
);
