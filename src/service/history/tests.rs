//! The history against the truth: the topology recorded live at every
//! revision, for random command sequences, with blocks of a few
//! revisions, before and after a restart. Reads at a revision go through
//! the view over the live topology; every read (records, lists, counts,
//! members, derived reads, GraphQL pages) is compared with the same read
//! of a topology materialized from the recorded records, including views
//! made while the writes went on and read after them.

use super::*;
use crate::model::{CenSpec, CinSpec, Command, ContainerKey, ErrorCode, Images, Read, Topology, View};
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

/// Runs the commands, returning the live records at every revision, and
/// views made at each revision as it was reached (read later, after the
/// writes that followed: a reader racing the writers, made deterministic).
async fn run(s: &Arc<Service>, ops: &[Op]) -> (BTreeMap<u64, Vec<Record>>, Vec<Arc<AtView>>) {
    let cens = (0..4).map(|c| Command::CenCreate { id: format!("e{c}") });
    run_commands(s, cens.chain(ops.iter().map(command))).await
}

/// [`run`] after one change that imports the CENs with containers (many
/// records at one revision, as `cenImport` makes them); after each
/// command the index holds nothing at or below the floor.
async fn run_after_import(s: &Arc<Service>, ops: &[Op]) -> (BTreeMap<u64, Vec<Record>>, Vec<Arc<AtView>>) {
    let cens = (0..4)
        .map(|e| CenSpec { id: format!("e{e}"), containers: (0..e + 2).map(|c| format!("c{c}")).collect() })
        .collect();
    let import = Command::CenImport { host: H.into(), cens };
    run_commands(s, std::iter::once(import).chain(ops.iter().map(command))).await
}

async fn run_commands(
    s: &Arc<Service>,
    commands: impl Iterator<Item = Command>,
) -> (BTreeMap<u64, Vec<Record>>, Vec<Arc<AtView>>) {
    let mut truth = BTreeMap::new();
    let mut views = Vec::new();
    truth.insert(s.revision(), s.read(|t| t.records()));
    for cmd in commands {
        let _ = s.execute(cmd).await;
        let (recs, rev) = s.read_at(|t| t.records());
        truth.insert(rev, recs);
        views.push(s.at(rev).await.unwrap());
        s.history.index.read().check_invariants(s.history.every, s.kept_revisions().0);
    }
    (truth, views)
}

/// A topology materialized from records (the reference).
fn materialized(recs: &[Record]) -> Topology {
    let images: Images = recs.iter().map(|r| (r.key(), Some(r.clone()))).collect();
    let mut t = Topology::new();
    t.apply_images(&images);
    t
}

/// Every read of a topology, primitive and derived, over the ids the
/// commands use and a few absent ones, as lines to compare.
fn reads(t: &(impl Read + ?Sized)) -> Vec<String> {
    let mut out = vec![
        format!("hosts {:?}", t.hosts()),
        format!("containers {:?}", t.containers()),
        format!("cens {:?}", t.cens()),
        format!("cins {:?}", t.cins()),
        format!("cpools {:?}", t.cpools()),
        format!("counts {:?}", t.counts()),
    ];
    let cens: Vec<String> = (0..5).map(|e| format!("e{e}")).collect();
    for host in [H, "hx"] {
        out.push(format!("host {host} {:?} {:?}", t.host(host), t.containers_of_host(host)));
    }
    out.push(format!("pool p0 {:?} {:?}", t.cpool("p0"), t.pool_containers("p0")));
    for cen in &cens {
        out.push(format!("cen {cen} {:?}", t.cen(cen)));
        out.push(format!("  members {:?} count {}", t.members(cen), t.member_count(cen)));
        out.push(format!("  in order {:?} hosts {:?}", t.members_in_order(cen), t.member_hosts(cen)));
        out.push(format!("  cins over {:?} presence {:?}", t.cins_over(cen), t.presence(cen)));
        out.push(format!("  wiring {:?}", t.cen(cen).map(|c| t.wiring(c))));
    }
    for c in 0..9 {
        let key = ContainerKey::new(H, format!("c{c}"));
        let rec = t.container(&key);
        out.push(format!("container {key} {rec:?}"));
        out.push(format!("  memberships {:?} cens {:?}", t.memberships_of(&key), t.cens_of(&key)));
        out.push(format!("  interfaces {:?}", t.interfaces(&key)));
        out.push(format!("  realization {:?} made {}", t.container_realization(&key), t.container_is_made(&key)));
        out.push(format!("  route {:?}", rec.map(|r| (t.default_route_of(r), t.default_gateway_of(r)))));
        let member: Vec<bool> = cens.iter().map(|e| t.is_member(&key, e)).collect();
        out.push(format!("  member of {member:?}"));
    }
    for n in 0..4 {
        let id = format!("n{n}");
        let Some(cin) = t.cin(&id) else {
            out.push(format!("cin {id} none"));
            continue;
        };
        out.push(format!("cin {id} {cin:?} presence {:?}", t.cin_presence(cin)));
        out.push(format!("  members {:?} containers {:?}", t.cin_members(cin), t.cin_containers(cin)));
        let gw: Vec<_> = cens.iter().map(|e| t.gateway(cin, e)).collect();
        out.push(format!("  gateways {gw:?}"));
    }
    out
}

/// The pages of one list of `at(revision)` through GraphQL, two at a time.
async fn pages(schema: &crate::graphql::LeviathanSchema, rev: u64, field: &str, key: &str) -> Vec<String> {
    let mut got = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let q = format!(
            "query($r: Int!, $a: String) {{ at(revision: $r) {{ {field}(first: 2, after: $a) {{ {key} }} }} }}"
        );
        let vars = serde_json::json!({"r": rev, "a": after});
        let resp =
            schema.execute(async_graphql::Request::new(q).variables(async_graphql::Variables::from_json(vars))).await;
        assert!(resp.errors.is_empty(), "{field} at {rev}: {:?}", resp.errors);
        let data = resp.data.into_json().unwrap();
        let page: Vec<String> = data["at"][field.split('(').next().unwrap()]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x[key].as_str().unwrap().to_string())
            .collect();
        if page.is_empty() {
            return got;
        }
        assert!(page.len() <= 2);
        after = page.last().cloned();
        got.extend(page);
    }
}

/// The reads at `n` through `view` are those of the reference topology,
/// and the records are what was live at `n`.
fn check_view(s: &Service, view: &AtView, want: &[Record]) {
    let n = view.revision();
    let reference = materialized(want);
    let (recs, got) = s.read_in(Some(view), |r| (r.records(), reads(r))).unwrap();
    assert_eq!(&recs, want, "at {n}");
    // The records read form a whole topology.
    materialized(&recs).check_integrity().unwrap();
    let want_reads = reads(&reference);
    for (g, w) in got.iter().zip(&want_reads) {
        assert_eq!(g, w, "at {n}");
    }
    assert_eq!(got.len(), want_reads.len());
}

fn as_map(recs: &[Record]) -> BTreeMap<EntityKey, Record> {
    recs.iter().map(|r| (r.key(), r.clone())).collect()
}

/// Views made as the writes went on, read after them: the same, or GONE
/// once their revision left the kept log.
fn check_views_made_before(s: &Service, truth: &BTreeMap<u64, Vec<Record>>, views: &[Arc<AtView>]) {
    let floor = s.kept_revisions().0;
    for view in views {
        let n = view.revision();
        let want = truth.range(..=n).next_back().unwrap().1;
        match s.read_in(Some(view), |r| r.records()) {
            Ok(_) => check_view(s, view, want),
            Err(e) => assert!(e.code == ErrorCode::Gone && n < floor, "at {n} (floor {floor}): {e:?}"),
        }
    }
}

/// Every kept revision reads as it was live; `diff` between any two is
/// the difference of the two; `history` lists exactly the revisions that
/// touched a record.
async fn check(s: &Arc<Service>, truth: &BTreeMap<u64, Vec<Record>>) {
    let (oldest, newest) = s.kept_revisions();
    assert_eq!(newest, *truth.keys().next_back().unwrap());
    let log = s.change_log(oldest, 100_000).await.unwrap();
    let schema = crate::graphql::schema(Arc::clone(s));
    // Newest first, then oldest first: both directions of a scrub.
    let order: Vec<u64> = (oldest..=newest).rev().chain(oldest..=newest).collect();
    for n in order {
        let Some(want) = truth.range(..=n).next_back().map(|(_, r)| r) else { continue };
        let view = s.at(n).await.unwrap();
        check_view(s, &view, want);
    }
    // Pages through the API, against the reference's lists.
    for n in oldest..=newest {
        let Some(want) = truth.range(..=n).next_back().map(|(_, r)| materialized(r)) else { continue };
        let containers: Vec<String> = want.containers().iter().map(|c| c.id.clone()).collect();
        assert_eq!(pages(&schema, n, "containers", "id").await, containers, "containers at {n}");
        let cens: Vec<String> = want.cens().iter().map(|c| c.id.clone()).collect();
        assert_eq!(pages(&schema, n, "cens", "id").await, cens, "cens at {n}");
        let cins: Vec<String> = want.cins().iter().map(|c| c.id.clone()).collect();
        assert_eq!(pages(&schema, n, "cins", "id").await, cins, "cins at {n}");
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
            let (truth, views) = run(&s, &ops).await;
            check(&s, &truth).await;
            check_views_made_before(&s, &truth, &views);
            drop(s);
            let s = open(&dir, keep, 3);
            check(&s, &truth).await;
        });
    }

    /// An import first, then a log keeping fewer changes than the commands
    /// make, in blocks of 2 to 4 revisions: the floor moves through the
    /// blocks (past the import, within blocks and across their ends), and
    /// every kept revision still reads as it was; then a restart, whose
    /// index starts inside a block.
    #[test]
    fn trimming_through_blocks_after_an_import(
        ops in proptest::collection::vec(op(), 0..40),
        keep in 1u64..14,
        every in 2u64..5,
    ) {
        rt().block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let s = open(&dir, keep, every);
            let (truth, views) = run_after_import(&s, &ops).await;
            check(&s, &truth).await;
            check_views_made_before(&s, &truth, &views);
            drop(s);
            let s = open(&dir, keep, every);
            check(&s, &truth).await;
            s.history.index.read().check_invariants(every, s.kept_revisions().0);
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
    let e = s.at(9).await.err().unwrap();
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert!(e.message.contains("revision 9 is ahead of the current revision 8"), "{}", e.message);
    let e = s.at(2).await.err().unwrap();
    assert_eq!(e.code, ErrorCode::Gone);
    assert!(e.message.contains("the oldest kept revision is 3"), "{}", e.message);
    let e = s.diff(5, 4, None, 10).await.err().unwrap();
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert_eq!(s.diff(1, 8, None, 10).await.err().unwrap().code, ErrorCode::Gone);
    // The oldest kept reads: CENs e0..e2.
    let view = s.at(3).await.unwrap();
    assert_eq!(s.read_in(Some(&view), |t| t.counts().2).unwrap(), 3);
    // The history index is bounded with the log; of the block being
    // filled (revisions 7 and 8), its changes only.
    let stats = s.history_stats();
    assert!(stats.ready && stats.blocks <= 4 && stats.revisions <= 6, "{stats:?}");
    assert_eq!(stats.recent, 2, "{stats:?}");
    // The view at 3 read the change of its block after it (4) from the log.
    assert_eq!(stats.logged, 1, "{stats:?}");
    // Once the log moves past it, a view made before fails GONE.
    for i in 8..12 {
        s.execute(Command::CenCreate { id: format!("e{i}") }).await.unwrap();
    }
    let e = s.read_in(Some(&view), |t| t.counts()).err().unwrap();
    assert_eq!(e.code, ErrorCode::Gone, "{e:?}");
    // After a reload, views made before fail UNAVAILABLE; new ones read.
    let view = s.at(10).await.unwrap();
    s.history.reset();
    let e = s.read_in(Some(&view), |t| t.counts()).err().unwrap();
    assert_eq!(e.code, ErrorCode::Unavailable, "{e:?}");
    let view = s.at(10).await.unwrap();
    assert_eq!(s.read_in(Some(&view), |t| t.counts().2).unwrap(), 10);
}
