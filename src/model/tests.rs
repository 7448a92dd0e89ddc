//! Unit tests of the model's rules, and property tests of its invariants.

use super::*;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

const H: &str = "host1";

fn cen_import(t: &mut Topology, cens: &[(&str, &[&str])]) -> Result<Images> {
    t.execute(&Command::CenImport {
        host: H.into(),
        cens: cens
            .iter()
            .map(|(id, cs)| CenSpec { id: id.to_string(), containers: cs.iter().map(|c| c.to_string()).collect() })
            .collect(),
    })
}

fn cin_import(t: &mut Topology, cins: &[(&str, &[&str])]) -> Result<Images> {
    t.execute(&Command::CinImport {
        cins: cins
            .iter()
            .map(|(id, cs)| CinSpec { id: id.to_string(), cens: cs.iter().map(|c| c.to_string()).collect() })
            .collect(),
    })
}

/// The CEN file of the original documentation.
const FIXTURE_CENS: &[(&str, &[&str])] = &[
    ("cen1", &["c1", "c2", "c13", "c14"]),
    ("cen2", &["c4", "c5", "c6", "c7"]),
    ("cen3", &["c15", "c16", "c9", "c10", "c11"]),
    ("cen4", &["c11", "c12"]),
    ("cen5", &["c2", "c3"]),
];

fn fixture() -> Topology {
    let mut t = Topology::new();
    cen_import(&mut t, FIXTURE_CENS).unwrap();
    t
}

/// Everything observable: the records, and the relations the graph's edges
/// and indexes answer (a rollback that broke an edge would show here).
fn state(t: &Topology) -> (Vec<Record>, Vec<String>) {
    let mut rel = Vec::new();
    for h in t.hosts() {
        let cs: Vec<String> = t.containers_of_host(&h.id).iter().map(|c| c.id.clone()).collect();
        rel.push(format!("host {} hosts {cs:?}", h.id));
    }
    for c in t.containers() {
        let cens: Vec<String> = t.cens_of(&c.key()).iter().map(|c| c.id.clone()).collect();
        rel.push(format!("container {} in {cens:?}", c.key()));
    }
    for cen in t.cens() {
        let cins: Vec<String> = t.cins_over(&cen.id).iter().map(|c| c.id.clone()).collect();
        rel.push(format!("cen {} under {cins:?}", cen.id));
        for m in t.members(&cen.id) {
            rel.push(format!("cen {} member {} {}", cen.id, m.key(), t.is_member(&m.key(), &cen.id)));
        }
        rel.push(format!("cen {} size {}", cen.id, t.member_count(&cen.id)));
    }
    (t.records(), rel)
}

fn key(id: &str) -> ContainerKey {
    ContainerKey::new(H, id)
}

fn addr(t: &Topology, cin: &str, c: &str, cen: &str) -> Option<Ipv4Addr> {
    t.cin(cin)?;
    t.member(&MemberKey::new(cen, &key(c)))?.addresses.get(cin).copied()
}

fn wiring(t: &Topology, cen: &str) -> Option<Wiring> {
    t.wiring(t.cen(cen).unwrap())
}

#[test]
fn wiring_follows_size() {
    let mut t = fixture();
    assert_eq!(wiring(&t, "cen1"), Some(Wiring::Bridge));
    assert_eq!(wiring(&t, "cen3"), Some(Wiring::Bridge));
    assert_eq!(wiring(&t, "cen4"), Some(Wiring::Wire));
    assert_eq!(wiring(&t, "cen5"), Some(Wiring::Wire));
    t.execute(&Command::CenCreate { id: "empty".into() }).unwrap();
    assert_eq!(wiring(&t, "empty"), None);
    t.execute(&Command::ContainerJoinCen { host: H.into(), container: "x".into(), cen: "empty".into() }).unwrap();
    assert_eq!(wiring(&t, "empty"), None);
    t.execute(&Command::ContainerJoinCen { host: H.into(), container: "c12".into(), cen: "cen5".into() }).unwrap();
    assert_eq!(wiring(&t, "cen5"), Some(Wiring::Bridge));
}

#[test]
fn memberships_from_fixture() {
    let t = fixture();
    let ids = |c: &str| t.cens_of(&key(c)).iter().map(|c| c.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids("c2"), ["cen1", "cen5"]);
    assert_eq!(ids("c11"), ["cen3", "cen4"]);
    assert_eq!(t.counts().1, 15);
    t.check_integrity().unwrap();
}

#[test]
fn cin_addressing_single_cen() {
    let mut t = fixture();
    cin_import(&mut t, &[("cin1", &["cen1"]), ("cin2", &["cen2"])]).unwrap();
    let cin1 = t.cin("cin1").unwrap();
    assert_eq!((cin1.subnet, cin1.prefix_len), (Ipv4Addr::new(10, 10, 0, 0), 16));
    assert_eq!(t.gateway(cin1, "cen1"), Some(Ipv4Addr::new(10, 10, 0, 1)));
    assert_eq!(addr(&t, "cin1", "c1", "cen1"), Some(Ipv4Addr::new(10, 10, 0, 10)));
    assert_eq!(addr(&t, "cin1", "c2", "cen1"), Some(Ipv4Addr::new(10, 10, 0, 11)));
    assert_eq!(addr(&t, "cin1", "c13", "cen1"), Some(Ipv4Addr::new(10, 10, 0, 12)));
    assert_eq!(addr(&t, "cin1", "c14", "cen1"), Some(Ipv4Addr::new(10, 10, 0, 13)));
    assert_eq!(t.cin("cin2").unwrap().subnet, Ipv4Addr::new(10, 11, 0, 0));
    let ifs = t.interfaces(&key("c2"));
    assert_eq!(ifs.len(), 2);
    assert_eq!(ifs[0].addresses[0].ip, Ipv4Addr::new(10, 10, 0, 11));
    assert_eq!(ifs[0].addresses[0].prefix_len, 16);
    assert!(ifs[1].addresses.is_empty());
}

#[test]
fn wire_cin_has_no_gateway() {
    let mut t = fixture();
    cin_import(&mut t, &[("cin4", &["cen4"])]).unwrap();
    let cin = t.cin("cin4").unwrap();
    assert_eq!(t.gateway(cin, "cen4"), None);
    assert_eq!(addr(&t, "cin4", "c11", "cen4"), Some(Ipv4Addr::new(10, 10, 0, 10)));
}

#[test]
fn multi_cen_cin_slices_and_bridges() {
    let mut t = fixture();
    cin_import(&mut t, &[("multi", &["cen4", "cen5"])]).unwrap();
    assert_eq!(wiring(&t, "cen4"), Some(Wiring::Bridge));
    assert_eq!(wiring(&t, "cen5"), Some(Wiring::Bridge));
    let cin = t.cin("multi").unwrap();
    assert_eq!(t.slice(cin, "cen5").unwrap().to_cidr(), "10.10.1.0/24");
    assert_eq!(t.gateway(cin, "cen4"), Some(Ipv4Addr::new(10, 10, 0, 1)));
    assert_eq!(t.gateway(cin, "cen5"), Some(Ipv4Addr::new(10, 10, 1, 1)));
    assert_eq!(addr(&t, "multi", "c11", "cen4"), Some(Ipv4Addr::new(10, 10, 0, 10)));
    assert_eq!(addr(&t, "multi", "c2", "cen5"), Some(Ipv4Addr::new(10, 10, 1, 10)));
    assert_eq!(addr(&t, "multi", "c3", "cen5"), Some(Ipv4Addr::new(10, 10, 1, 11)));
}

#[test]
fn addresses_are_stable_and_freed_ones_reused() {
    let mut t = fixture();
    cin_import(&mut t, &[("cin1", &["cen1"])]).unwrap();
    t.execute(&Command::ContainerLeaveCen { host: H.into(), container: "c2".into(), cen: "cen1".into() }).unwrap();
    assert_eq!(addr(&t, "cin1", "c2", "cen1"), None);
    assert_eq!(addr(&t, "cin1", "c13", "cen1"), Some(Ipv4Addr::new(10, 10, 0, 12)), "others keep theirs");
    t.execute(&Command::ContainerJoinCen { host: H.into(), container: "new".into(), cen: "cen1".into() }).unwrap();
    assert_eq!(addr(&t, "cin1", "new", "cen1"), Some(Ipv4Addr::new(10, 10, 0, 11)), "freed address reused");
}

#[test]
fn freed_subnets_are_reused() {
    let mut t = fixture();
    cin_import(&mut t, &[("a", &["cen1"]), ("b", &["cen2"])]).unwrap();
    t.execute(&Command::CinDelete { id: "a".into() }).unwrap();
    cin_import(&mut t, &[("c", &["cen3"])]).unwrap();
    assert_eq!(t.cin("c").unwrap().subnet, Ipv4Addr::new(10, 10, 0, 0));
}

#[test]
fn import_twice_changes_nothing() {
    let mut t = fixture();
    let again = cen_import(&mut t, FIXTURE_CENS).unwrap();
    assert!(again.is_empty(), "{again:?}");
    cin_import(&mut t, &[("cin1", &["cen1"])]).unwrap();
    assert!(cin_import(&mut t, &[("cin1", &["cen1"])]).unwrap().is_empty());
}

#[test]
fn import_updates_to_match_the_file() {
    let mut t = fixture();
    cin_import(&mut t, &[("cin1", &["cen1"])]).unwrap();
    cen_import(&mut t, &[("cen1", &["c1", "c14", "z"])]).unwrap();
    let members: Vec<_> = t.members_in_order("cen1").iter().map(|m| m.container.clone()).collect();
    assert_eq!(members, ["c1", "c14", "z"]);
    assert!(t.container(&key("c2")).is_some(), "a container leaving a CEN stays on its host");
    assert_eq!(addr(&t, "cin1", "c14", "cen1"), Some(Ipv4Addr::new(10, 10, 0, 13)));
    assert_eq!(addr(&t, "cin1", "z", "cen1"), Some(Ipv4Addr::new(10, 10, 0, 11)));
}

#[test]
fn failed_commands_change_nothing() {
    let mut t = fixture();
    cin_import(&mut t, &[("cin1", &["cen1"])]).unwrap();
    let before = state(&t);
    let bad = [
        Command::CenImport { host: H.into(), cens: vec![CenSpec { id: "ok".into(), containers: vec!["a b".into()] }] },
        Command::CenImport {
            host: H.into(),
            cens: vec![CenSpec { id: "x".into(), containers: vec![] }, CenSpec { id: "x".into(), containers: vec![] }],
        },
        Command::CinImport {
            cins: vec![
                CinSpec { id: "new".into(), cens: vec!["cen2".into()] },
                CinSpec { id: "bad".into(), cens: vec!["nope".into()] },
            ],
        },
        Command::CenSetMade { ids: vec!["cen1".into(), "cen9".into()], made: true, realizing: false },
        Command::CinSetMade { ids: vec!["cin1".into(), "cin9".into()], made: true, realizing: false },
        Command::ContainerDelete { host: H.into(), id: "nope".into() },
        Command::ContainerJoinCen { host: H.into(), container: "n".into(), cen: "nope".into() },
        Command::CenDelete { id: "nope".into() },
        Command::HostDelete { id: H.into() },
        Command::CpoolImport {
            host: H.into(),
            pools: vec![CpoolSpec {
                id: "p".into(),
                image: "i".into(),
                start_with: 2,
                cins: vec![
                    PoolCin { cin: "cin1".into(), default_route: true },
                    PoolCin { cin: "nope".into(), default_route: false },
                ],
            }],
        },
    ];
    for cmd in bad {
        assert!(t.execute(&cmd).is_err(), "{cmd:?} should fail");
        assert_eq!(state(&t), before, "{cmd:?} changed something");
        t.check_integrity().unwrap();
    }
}

#[test]
fn error_codes() {
    let mut t = fixture();
    let code = |t: &mut Topology, c: Command| t.execute(&c).unwrap_err().code;
    assert_eq!(code(&mut t, Command::CenCreate { id: ".x".into() }), ErrorCode::BadRequest);
    assert_eq!(code(&mut t, Command::CenDelete { id: "zz".into() }), ErrorCode::NotFound);
    assert_eq!(code(&mut t, Command::HostDelete { id: H.into() }), ErrorCode::Conflict);
    let e =
        t.execute(&Command::CinImport { cins: vec![CinSpec { id: "c".into(), cens: vec!["zz".into()] }] }).unwrap_err();
    assert!(e.message.contains("'zz'"), "{}", e.message);
}

#[test]
fn slice_exhaustion_is_a_conflict_and_changes_nothing() {
    let mut t = Topology::new();
    let many: Vec<String> = (0..246).map(|i| format!("m{i}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    cen_import(&mut t, &[("big", &refs), ("small", &["s1"])]).unwrap();
    let before = state(&t);
    let e = cin_import(&mut t, &[("multi", &["big", "small"])]).unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict);
    assert!(e.message.contains("10.10.0.0/24"), "{}", e.message);
    assert_eq!(state(&t), before);
    // 245 fit in a /24 slice (.10 to .254).
    cen_import(&mut t, &[("big", &refs[..245])]).unwrap();
    cin_import(&mut t, &[("multi", &["big", "small"])]).unwrap();
}

#[test]
fn default_routes() {
    let mut t = fixture();
    cin_import(&mut t, &[("cin1", &["cen1"]), ("cin2", &["cen2"])]).unwrap();
    let pool = |routes: &[(&str, bool)]| Command::CpoolImport {
        host: H.into(),
        pools: vec![CpoolSpec {
            id: "pool1".into(),
            image: "ubuntu:14.04".into(),
            start_with: 3,
            cins: routes.iter().map(|(c, d)| PoolCin { cin: c.to_string(), default_route: *d }).collect(),
        }],
    };
    t.execute(&pool(&[("cen1", true), ("cen2", false)])).unwrap();
    let c = t.container(&key("pool1-1")).unwrap().clone();
    assert_eq!(t.default_route_of(&c), Some(("cin1".into(), "cen1".into())));
    assert_eq!(t.default_gateway_of(&c).unwrap().0, Ipv4Addr::new(10, 10, 0, 1));
    assert_eq!(t.cens_of(&key("pool1-3")).len(), 2);
    assert_eq!(t.member_count("cen1"), 7);
    // Two default routes in one pool: a conflict.
    let e = t.execute(&pool(&[("cen1", true), ("cen2", true)])).unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict);
    // Same file twice: nothing.
    assert!(t.execute(&pool(&[("cen1", true), ("cen2", false)])).unwrap().is_empty());
    // Shrinking the pool removes the extra containers.
    let mut smaller = pool(&[("cen1", true), ("cen2", false)]);
    if let Command::CpoolImport { pools, .. } = &mut smaller {
        pools[0].start_with = 1;
    }
    t.execute(&smaller).unwrap();
    assert!(t.container(&key("pool1-2")).is_none());
    assert!(t.container(&key("pool1-1")).is_some());
    t.execute(&Command::CpoolDelete { id: "pool1".into() }).unwrap();
    assert!(t.container(&key("pool1-1")).is_none());
    t.check_integrity().unwrap();
}

#[test]
fn long_cen_ids_get_short_interface_names() {
    let mut t = Topology::new();
    let long = "a-very-long-segment-name";
    cen_import(&mut t, &[(long, &["c1", "c2"])]).unwrap();
    let ifs = t.interfaces(&key("c1"));
    assert_eq!(ifs[0].name, ids::interface_name(long));
    assert!(ifs[0].name.len() <= 15);
}

#[test]
fn deleting_things_cascades_cleanly() {
    let mut t = fixture();
    cin_import(&mut t, &[("cin1", &["cen1", "cen5"])]).unwrap();
    t.execute(&Command::ContainerDelete { host: H.into(), id: "c2".into() }).unwrap();
    let cin1 = t.cin("cin1").unwrap().clone();
    assert!(t.cin_members(&cin1).iter().all(|m| m.container.id != "c2"));
    t.execute(&Command::CenDelete { id: "cen5".into() }).unwrap();
    assert_eq!(t.cin("cin1").unwrap().cens, ["cen1"]);
    t.check_integrity().unwrap();
}

#[test]
fn making_a_cin_makes_its_cens() {
    let mut t = fixture();
    cin_import(&mut t, &[("cin1", &["cen1"])]).unwrap();
    t.execute(&Command::CinSetMade { ids: vec!["cin1".into()], made: true, realizing: false }).unwrap();
    assert!(t.cen("cen1").unwrap().making.made);
    assert!(t.container_is_made(&key("c1")));
    assert!(!t.container_is_made(&key("c4")));
}

#[test]
fn make_and_destroy_move_status_in_the_same_change() {
    let mut t = fixture();
    let set = |t: &mut Topology, made: bool, realizing: bool| {
        t.execute(&Command::CenSetMade { ids: vec!["cen1".into()], made, realizing }).unwrap();
        t.cen("cen1").unwrap().making.realization.status
    };
    assert_eq!(set(&mut t, true, false), Status::Pending, "nothing realizes: status untouched");
    assert_eq!(set(&mut t, false, true), Status::Pending, "never realized: straight back");
    assert_eq!(set(&mut t, true, true), Status::Preparing);
    let ready = Standing { status: Status::Ready, message: None };
    t.execute(&Command::SetStatus {
        reports: vec![StatusReport {
            target: EntityKey::Cen("cen1".into()),
            realization: ready,
            made: true,
            host: None,
        }],
    })
    .unwrap();
    assert_eq!(set(&mut t, false, true), Status::Destroying);
    // A report worked out while the CEN was made is stale once destroyed.
    let stale = Standing { status: Status::Ready, message: None };
    let images = t
        .execute(&Command::SetStatus {
            reports: vec![StatusReport {
                target: EntityKey::Cen("cen1".into()),
                realization: stale,
                made: true,
                host: None,
            }],
        })
        .unwrap();
    assert!(images.is_empty());
    assert_eq!(t.cen("cen1").unwrap().making.realization.status, Status::Destroying);
}

mod props {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Join(u8, u8),
        Leave(u8, u8),
        Delete(u8),
        Cin(u8, Vec<u8>),
        DropCin(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..12, 0u8..5).prop_map(|(c, e)| Op::Join(c, e)),
            2 => (0u8..12, 0u8..5).prop_map(|(c, e)| Op::Leave(c, e)),
            1 => (0u8..12).prop_map(Op::Delete),
            2 => (0u8..3, proptest::collection::vec(0u8..5, 1..4)).prop_map(|(i, cs)| Op::Cin(i, cs)),
            1 => (0u8..3).prop_map(Op::DropCin),
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
        }
    }

    fn apply(t: &mut Topology, op: &Op) {
        let cmd = command(op);
        let before = state(t);
        if t.execute(&cmd).is_err() {
            assert_eq!(state(t), before, "a failed {cmd:?} changed the topology");
        }
    }

    fn base() -> Topology {
        let mut t = Topology::new();
        for e in 0..5 {
            t.execute(&Command::CenCreate { id: format!("e{e}") }).unwrap();
        }
        t
    }

    fn check_invariants(t: &Topology) {
        t.check_integrity().unwrap();
        // The list sizes kept as records change are those of a recount.
        assert_eq!(t.tally().maxima(), tally::Tally::recount(t).maxima());
        let mut nets = BTreeSet::new();
        for cin in t.cins() {
            assert!(nets.insert(cin.subnet), "two CINs share {}", cin.subnet);
            let mut seen = BTreeSet::new();
            for m in t.cin_members(cin) {
                assert!(seen.insert(m.ip), "CIN {} gives {} twice", cin.id, m.ip);
                let slice = t.slice(cin, &m.cen).unwrap();
                assert!(slice.member_offset(m.ip).is_some(), "{} outside {}", m.ip, slice.to_cidr());
            }
            // Every member interface of a CIN has an address.
            for cen in &cin.cens {
                for m in t.members(cen) {
                    assert!(m.addresses.contains_key(&cin.id), "{} on {cen} has no address in {}", m.container, cin.id);
                }
            }
        }
        // Addresses only in CINs over the member's CEN.
        for cen in t.cens() {
            for m in t.members(&cen.id) {
                for cin in m.addresses.keys() {
                    assert!(
                        t.cin(cin).is_some_and(|c| c.cens.contains(&cen.id)),
                        "{} keeps an address of {cin}",
                        m.container
                    );
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

        /// Any sequence of joins, leaves, deletes and CIN changes keeps the
        /// invariants: integrity, unique addresses per CIN, unique subnets,
        /// every member addressed within its slice.
        #[test]
        fn invariants_hold(ops in proptest::collection::vec(op(), 0..60)) {
            let mut t = base();
            for op in &ops {
                apply(&mut t, op);
                check_invariants(&t);
            }
        }

        /// The same sequence gives the same addresses.
        #[test]
        fn allocation_is_deterministic(ops in proptest::collection::vec(op(), 0..40)) {
            let mut a = base();
            let mut b = base();
            for op in &ops {
                apply(&mut a, op);
                apply(&mut b, op);
            }
            prop_assert_eq!(state(&a), state(&b));
        }

        /// An unrelated change (on another CEN, not in the CIN) leaves every
        /// address of the CIN as it was.
        #[test]
        fn addresses_survive_unrelated_changes(ops in proptest::collection::vec(op(), 0..40), c in 0u8..12) {
            let mut t = base();
            for op in &ops {
                apply(&mut t, op);
            }
            t.execute(&Command::CenCreate { id: "elsewhere".into() }).unwrap();
            t.execute(&Command::CinImport { cins: vec![CinSpec { id: "pinned".into(), cens: vec!["e0".into()] }] }).unwrap();
            let pinned = |t: &Topology| { let c = t.cin("pinned").unwrap().clone(); t.cin_members(&c) };
            let before = pinned(&t);
            t.execute(&Command::ContainerJoinCen { host: H.into(), container: format!("c{c}"), cen: "elsewhere".into() }).unwrap();
            t.execute(&Command::ContainerJoinCen { host: H.into(), container: "other".into(), cen: "elsewhere".into() }).unwrap();
            prop_assert_eq!(&pinned(&t), &before);
        }

        /// `prepare` leaves the topology as it was; committing its images
        /// gives what `execute` gives; and a topology rebuilt from its
        /// records (as the store loads it) is the same topology.
        #[test]
        fn prepare_then_commit_equals_execute(ops in proptest::collection::vec(op(), 0..30)) {
            let mut t = base();
            let mut executed = base();
            for op in &ops {
                let before = state(&t);
                let cmd = command(op);
                match t.prepare(&cmd) {
                    Ok(images) => {
                        prop_assert_eq!(state(&t), before, "prepare changed the topology");
                        t.commit(&images);
                        prop_assert!(executed.execute(&cmd).is_ok());
                    }
                    Err(_) => {
                        prop_assert_eq!(state(&t), before);
                        prop_assert!(executed.execute(&cmd).is_err());
                    }
                }
                prop_assert_eq!(state(&t), state(&executed));
            }
            let mut rebuilt = Topology::new();
            let all: Images = t.records().into_iter().map(|r| (r.key(), Some(r))).collect();
            rebuilt.commit(&all);
            prop_assert_eq!(state(&rebuilt), state(&t));
            check_invariants(&rebuilt);
        }
    }
}

#[test]
fn big_pools_import_and_delete() {
    // 20,000 containers into two CENs: one change per CEN, not one per
    // container (each join rewriting its CEN made this quadratic).
    let mut t = fixture();
    t.execute(&Command::CpoolImport {
        host: H.into(),
        pools: vec![CpoolSpec {
            id: "big".into(),
            image: "i".into(),
            start_with: 20_000,
            cins: vec![
                PoolCin { cin: "cen1".into(), default_route: false },
                PoolCin { cin: "cen2".into(), default_route: false },
            ],
        }],
    })
    .unwrap();
    assert_eq!(t.member_count("cen1"), 20_004);
    assert!(t.is_member(&key("big-20000"), "cen2"));
    t.execute(&Command::CpoolDelete { id: "big".into() }).unwrap();
    assert_eq!(t.member_count("cen1"), 4);
    t.check_integrity().unwrap();
}

#[test]
fn interface_names_are_distinct_and_reserved_ids_refused() {
    let mut t = Topology::new();
    // A CEN named `lo` gets a hashed interface name, not the loopback's.
    cen_import(&mut t, &[("lo", &["a", "b"])]).unwrap();
    assert_ne!(t.interfaces(&key("a"))[0].name, "lo");
    // Two CEN ids with the same interface name cannot share a container.
    let long = "abcdefghijklmnopq";
    let short = ids::interface_name(long);
    cen_import(&mut t, &[(long, &["a"])]).unwrap();
    let before = state(&t);
    let e = cen_import(&mut t, &[(short.as_str(), &["a"])]).unwrap_err();
    assert_eq!(e.code, ErrorCode::Conflict, "{}", e.message);
    assert_eq!(state(&t), before);
    let e = t
        .execute(&Command::ContainerCreate {
            host: H.into(),
            id: "fabric".into(),
            tag: None,
            netns_path: None,
            netns: None,
        })
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);
}

#[test]
fn making_a_failed_cen_again_retries() {
    let mut t = fixture();
    t.execute(&Command::CenSetMade { ids: vec!["cen1".into()], made: true, realizing: true }).unwrap();
    let failed = Standing { status: Status::Failed, message: Some("boom".into()) };
    t.execute(&Command::SetStatus {
        reports: vec![StatusReport {
            target: EntityKey::Cen("cen1".into()),
            realization: failed,
            made: true,
            host: None,
        }],
    })
    .unwrap();
    let images = t.execute(&Command::CenSetMade { ids: vec!["cen1".into()], made: true, realizing: true }).unwrap();
    assert!(!images.is_empty(), "a retry is a change");
    assert_eq!(t.cen("cen1").unwrap().making.realization.status, Status::Preparing);
}

fn vni(t: &Topology, cen: &str) -> u32 {
    t.cen(cen).map(|c| c.vni).unwrap_or(0)
}

#[test]
fn vnis_are_the_lowest_free_from_4096_and_come_back() {
    let mut t = fixture();
    let got: Vec<u32> = ["cen1", "cen2", "cen3", "cen4", "cen5"].iter().map(|c| vni(&t, c)).collect();
    assert_eq!(got, vec![4096, 4097, 4098, 4099, 4100]);
    t.execute(&Command::CenDelete { id: "cen2".into() }).unwrap();
    t.execute(&Command::CenCreate { id: "late".into() }).unwrap();
    assert_eq!(vni(&t, "late"), 4097, "a freed VNI is given again, lowest first");
    t.execute(&Command::CenCreate { id: "later".into() }).unwrap();
    assert_eq!(vni(&t, "later"), 4101);
    // A command that fails part-way leaves the VNIs as they were.
    let before = state(&t);
    assert!(cen_import(&mut t, &[("n1", &["x"]), ("n2", &["bad/id"])]).is_err());
    assert_eq!(state(&t), before);
    t.execute(&Command::CenCreate { id: "n1".into() }).unwrap();
    assert_eq!(vni(&t, "n1"), 4102);
}

#[test]
fn cens_loaded_without_a_vni_get_one_in_id_order() {
    let mut t = fixture();
    let mut images = Images::new();
    for r in t.records() {
        let r = match r {
            Record::Cen(mut c) if c.id != "cen3" => {
                c.vni = 0;
                Record::Cen(c)
            }
            other => other,
        };
        images.insert(r.key(), Some(r));
    }
    let mut loaded = Topology::new();
    loaded.commit(&images);
    loaded.fill_vnis();
    let got: Vec<u32> = ["cen1", "cen2", "cen3", "cen4", "cen5"].iter().map(|c| vni(&loaded, c)).collect();
    assert_eq!(got, vec![4096, 4097, 4098, 4099, 4100]);
    t.execute(&Command::CenCreate { id: "z".into() }).unwrap();
    assert_eq!(vni(&t, "z"), 4101);
}

#[test]
fn member_hosts_and_host_announcements() {
    let mut t = fixture();
    for (host, c) in [("h2", "a"), ("h3", "b"), ("h2", "c")] {
        t.execute(&Command::ContainerJoinCen { host: host.into(), container: c.into(), cen: "cen1".into() }).unwrap();
    }
    assert_eq!(t.member_hosts("cen1"), vec!["h2", "h3", H]);
    assert_eq!(t.member_hosts("cen2"), vec![H]);
    assert!(t.member_hosts("nope").is_empty());
    let vtep: Ipv4Addr = "192.0.2.7".parse().unwrap();
    let after = t.execute(&Command::HostAnnounce { id: "h9".into(), vtep: Some(vtep) }).unwrap();
    assert_eq!(t.host("h9").and_then(|h| h.vtep), Some(vtep));
    assert_eq!(after.len(), 1);
    // Saying the same again changes nothing.
    let again = t.execute(&Command::HostAnnounce { id: "h9".into(), vtep: Some(vtep) }).unwrap();
    assert!(again.is_empty(), "{again:?}");
}
