//! The history against the truth: the topology recorded live at every
//! revision, for random command sequences, with blocks of a few
//! revisions, before and after a restart.

use super::*;
use crate::model::{CinSpec, Command, ErrorCode};
use crate::service::Options;
use proptest::prelude::*;
use std::collections::BTreeMap;

const H: &str = "h1";

#[derive(Debug, Clone)]
enum Op {
    Join(u8, u8),
    Leave(u8, u8),
    Delete(u8),
    Tag(u8, u8),
    Cin(u8, Vec<u8>),
    DropCin(u8),
    DropCen(u8),
    Cen(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..8, 0u8..4).prop_map(|(c, e)| Op::Join(c, e)),
        2 => (0u8..8, 0u8..4).prop_map(|(c, e)| Op::Leave(c, e)),
        1 => (0u8..8).prop_map(Op::Delete),
        2 => (0u8..8, 0u8..3).prop_map(|(c, t)| Op::Tag(c, t)),
        2 => (0u8..3, proptest::collection::vec(0u8..4, 1..3)).prop_map(|(i, cs)| Op::Cin(i, cs)),
        1 => (0u8..3).prop_map(Op::DropCin),
        1 => (0u8..4).prop_map(Op::DropCen),
        1 => (0u8..4).prop_map(Op::Cen),
    ]
}

fn command(op: &Op) -> Command {
    match op {
        Op::Join(c, e) => {
            Command::ContainerJoinCen { host: H.into(), container: format!("c{c}"), cen: format!("e{e}") }
        }
        Op::Leave(c, e) => {
            Command::ContainerLeaveCen { host: H.into(), container: format!("c{c}"), cen: format!("e{e}") }
        }
        Op::Delete(c) => Command::ContainerDelete { host: H.into(), id: format!("c{c}") },
        Op::Tag(c, t) => Command::ContainerSetTag { host: H.into(), id: format!("c{c}"), tag: Some(format!("t{t}")) },
        Op::Cin(i, cs) => {
            let mut cens: Vec<String> = Vec::new();
            for c in cs {
                let id = format!("e{c}");
                if !cens.contains(&id) {
                    cens.push(id);
                }
            }
            Command::CinImport { cins: vec![CinSpec { id: format!("n{i}"), cens }] }
        }
        Op::DropCin(i) => Command::CinDelete { id: format!("n{i}") },
        Op::DropCen(e) => Command::CenDelete { id: format!("e{e}") },
        Op::Cen(e) => Command::CenCreate { id: format!("e{e}") },
    }
}

fn open(dir: &tempfile::TempDir, keep: u64, every: u64) -> Arc<Service> {
    let opts = Options { keep_changes: keep, history_every: every, ..Options::new(H) };
    Service::open_with(&dir.path().join("h.db"), opts).unwrap()
}

/// Runs the commands, returning the live records at every revision.
async fn run(s: &Arc<Service>, ops: &[Op]) -> BTreeMap<u64, Vec<Record>> {
    let mut truth = BTreeMap::new();
    truth.insert(s.revision(), s.read(|t| t.records()));
    let cens = (0..4).map(|c| Command::CenCreate { id: format!("e{c}") });
    for cmd in cens.chain(ops.iter().map(command)) {
        let _ = s.execute(cmd).await;
        let (recs, rev) = s.read_at(|t| t.records());
        truth.insert(rev, recs);
    }
    truth
}

fn as_map(recs: &[Record]) -> BTreeMap<EntityKey, Record> {
    recs.iter().map(|r| (r.key(), r.clone())).collect()
}

/// Every kept revision reads as it was live; `diff` between any two is
/// the difference of the two; `history` lists exactly the revisions that
/// touched a record.
async fn check(s: &Arc<Service>, truth: &BTreeMap<u64, Vec<Record>>) {
    let (oldest, newest) = s.kept_revisions();
    assert_eq!(newest, *truth.keys().next_back().unwrap());
    let log = s.change_log(oldest, 100_000).await.unwrap();
    // Newest first, then oldest first: both directions of a scrub.
    let order: Vec<u64> = (oldest..=newest).rev().chain(oldest..=newest).collect();
    for n in order {
        let Some(want) = truth.range(..=n).next_back().map(|(_, r)| r) else { continue };
        let t = s.topology_at(n).await.unwrap();
        assert_eq!(&t.records(), want, "at {n}");
        t.check_integrity().unwrap();
    }
    for from in oldest..=newest {
        for to in (from..=newest).step_by(3) {
            let a = as_map(&truth.range(..=from).next_back().unwrap().1.clone());
            let b = as_map(&truth.range(..=to).next_back().unwrap().1.clone());
            let mut keys: Vec<&EntityKey> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            let want: Vec<DiffItem> = keys
                .into_iter()
                .filter(|k| a.get(k) != b.get(k))
                .map(|k| DiffItem { key: k.clone(), before: a.get(k).cloned(), after: b.get(k).cloned() })
                .collect();
            let got = s.diff(from, to, None, usize::MAX).await.unwrap();
            assert_eq!(got, want, "diff {from}..{to}");
            // Paged by two: the same entries.
            let mut paged = Vec::new();
            loop {
                let page = s.diff(from, to, paged.last().map(|d: &DiffItem| &d.key), 2).await.unwrap();
                if page.is_empty() {
                    break;
                }
                paged.extend(page);
            }
            assert_eq!(paged, want, "paged diff {from}..{to}");
        }
    }
    let mut touched: BTreeMap<EntityKey, Vec<u64>> = BTreeMap::new();
    for c in &log {
        for i in &c.items {
            touched.entry(i.key.clone()).or_default().push(c.revision);
        }
    }
    for (key, revs) in &touched {
        let got = s.history_of(key, None, usize::MAX).await.unwrap();
        let got_revs: Vec<u64> = got.iter().map(|c| c.revision).collect();
        let want: Vec<u64> = revs.iter().rev().copied().collect();
        assert_eq!(got_revs, want, "history of {key:?}");
        assert!(got.iter().all(|c| c.items.len() == 1 && c.items[0].key == *key));
        // Paged: `before` the second gives the rest.
        if want.len() > 2 {
            let rest = s.history_of(key, Some(want[1]), usize::MAX).await.unwrap();
            assert_eq!(rest.iter().map(|c| c.revision).collect::<Vec<_>>(), want[2..].to_vec());
        }
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// With blocks of 3 revisions and the whole log kept, then a log that
    /// keeps 12 and a restart.
    #[test]
    fn at_diff_and_history_match_the_live_topology(ops in proptest::collection::vec(op(), 0..40), keep in 12u64..200) {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let s = open(&dir, keep, 3);
            let truth = run(&s, &ops).await;
            check(&s, &truth).await;
            drop(s);
            let s = open(&dir, keep, 3);
            check(&s, &truth).await;
        });
    }
}

/// A revision from the future is BAD_REQUEST; one older than kept GONE;
/// `from` after `to` BAD_REQUEST.
#[tokio::test]
async fn revisions_outside_the_kept_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, 5, 2);
    for i in 0..8 {
        s.execute(Command::CenCreate { id: format!("e{i}") }).await.unwrap();
    }
    assert_eq!(s.kept_revisions(), (3, 8));
    let e = s.topology_at(9).await.err().unwrap();
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(e.message.contains("revision 9 is ahead of the current revision 8"), "{}", e.message);
    let e = s.topology_at(2).await.err().unwrap();
    assert_eq!(e.code, ErrorCode::Gone);
    assert!(e.message.contains("the oldest kept revision is 3"), "{}", e.message);
    let e = s.diff(5, 4, None, 10).await.err().unwrap();
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert_eq!(s.diff(1, 8, None, 10).await.err().unwrap().code, ErrorCode::Gone);
    // The oldest kept reads: CENs e0..e2.
    let t = s.topology_at(3).await.unwrap();
    assert_eq!(t.counts().2, 3);
    // The history index is bounded with the log.
    let stats = s.history_stats();
    assert!(stats.ready && stats.blocks <= 4 && stats.revisions <= 6, "{stats:?}");
    assert!(stats.cached >= 1 && stats.cached <= CACHED, "{stats:?}");
}
