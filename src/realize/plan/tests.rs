//! The planner against a simulated kernel.

use super::*;
use crate::realize::desired::{Addr, CenNet, ContainerNet, Member, NetnsRef, Route};
use crate::realize::observed::{LinkKind, NsState};

fn cfg() -> Config {
    Config { prefix: "t-".into(), fabric: FabricMode::Netns, underlay: None }
}

fn desired(cens: &[(&str, &[&str])]) -> Desired {
    let mut d = Desired::default();
    for (cen, members) in cens {
        for c in *members {
            d.containers
                .insert(format!("h/{c}"), ContainerNet { id: c.to_string(), netns: NetnsRef::Managed, ident: None });
        }
        let wiring = match members.len() {
            0 | 1 => Wiring::None,
            2 => Wiring::Wire,
            _ => Wiring::Bridge,
        };
        d.cens.insert(
            cen.to_string(),
            CenNet {
                wiring,
                members: members
                    .iter()
                    .map(|c| Member {
                        container: format!("h/{c}"),
                        ifname: cen.to_string(),
                        addresses: vec![],
                        routes: vec![],
                    })
                    .collect(),
                gateways: vec![],
                vxlan: None,
            },
        );
    }
    d
}

/// Pretend every step succeeded: a tiny kernel model.
fn simulate(obs: &mut Observed, plan: &Plan, prefix: &str) {
    let mut next: u32 = obs.namespaces().values().flat_map(|s| s.links().map(|l| l.index)).max().unwrap_or(0) + 100;
    let link = |st: &NsState, name: &str| st.link(name).map(|l| l.index);
    for s in &plan.steps {
        match &s.op {
            Op::DeleteNetns { ns } => {
                // The kernel drops the namespace's links, veth peers included.
                obs.drop_peers_of(ns);
                obs.remove_ns(ns);
            }
            Op::CreateNetns { ns } => {
                obs.insert_ns(ns.clone(), NsState::new(vec![LinkState::new_loopback()], vec![], Some(false)));
            }
            Op::DeleteGroup { ns, group } => {
                let gone: Vec<u32> = obs.in_group(*group).filter(|(n, _)| n == ns).map(|(_, i)| *i).collect();
                for i in gone {
                    obs.remove_link(ns, i);
                }
            }
            Op::DeleteLink { ns, index, .. } => obs.remove_link(ns, *index),
            Op::SetUp { ns, name } | Op::SetUpNew { ns, name } => {
                let i = obs.ns(ns).and_then(|st| link(st, name));
                if let Some(l) = i.and_then(|i| obs.ns_mut(ns).and_then(|s| s.link_mut(i))) {
                    l.up = true;
                }
            }
            Op::SetForwarding { ns, on } => {
                if let Some(s) = obs.ns_mut(ns) {
                    s.forwarding = Some(*on);
                }
            }
            Op::SetAlias { .. } => {}
            Op::CreateBridge { .. } | Op::CreateVeth { .. } | Op::CreateVxlan { .. } => {
                simulate_create(obs, &s.op, &mut next)
            }
            Op::AddFdb { ns, name, mac, remote } => {
                let i = obs.link(ns, name).expect("vxlan").index;
                let l = obs.ns_mut(ns).and_then(|s| s.link_mut(i)).expect("vxlan");
                if *mac == FLOOD {
                    l.fdb.insert(*remote);
                } else {
                    l.macs.insert(*mac, *remote);
                }
            }
            Op::DeleteFdb { ns, index, mac, remote } => {
                let l = obs.ns_mut(ns).and_then(|s| s.link_mut(*index)).expect("vxlan");
                if *mac == FLOOD {
                    l.fdb.remove(remote);
                } else {
                    l.macs.remove(mac);
                }
            }
            Op::AddNeigh { ns, name, ip, mac } => {
                let i = obs.link(ns, name).expect("bridge").index;
                obs.ns_mut(ns).and_then(|s| s.link_mut(i)).expect("bridge").neighbours.insert(*ip, *mac);
            }
            Op::DeleteNeigh { ns, index, ip } => {
                obs.ns_mut(ns).and_then(|s| s.link_mut(*index)).expect("bridge").neighbours.remove(ip);
            }
            Op::AddAddr { ns, name, ip, prefix_len } => {
                let i = obs.link(ns, name).expect("link").index;
                obs.ns_mut(ns).and_then(|s| s.link_mut(i)).expect("link").addresses.push((*ip, *prefix_len));
            }
            Op::DeleteAddr { ns, index, ip, prefix_len } => {
                if let Some(l) = obs.ns_mut(ns).and_then(|s| s.link_mut(*index)) {
                    l.addresses.retain(|a| *a != (*ip, *prefix_len));
                }
            }
            Op::AddRoute { ns, name, dest, prefix_len, via } => {
                let oif = obs.link(ns, name).expect("link").index;
                obs.ns_mut(ns).expect("ns").routes.push(crate::realize::observed::RouteState {
                    dest: *dest,
                    prefix_len: *prefix_len,
                    via: *via,
                    oif,
                });
            }
            Op::DeleteRoute { ns, dest, prefix_len, via, oif } => {
                if let Some(st) = obs.ns_mut(ns) {
                    st.routes.retain(|r| {
                        !(r.dest == *dest && r.prefix_len == *prefix_len && r.via == *via && r.oif == *oif)
                    });
                }
            }
        }
    }
    let _ = prefix;
}

/// The links a create step makes, in the tiny kernel model.
fn simulate_create(obs: &mut Observed, op: &Op, next: &mut u32) {
    match op {
        Op::CreateBridge { ns, name, group, .. } => {
            *next += 1;
            obs.insert_link(
                ns,
                LinkState {
                    index: *next,
                    name: name.clone(),
                    kind: LinkKind::Bridge,
                    group: *group,
                    master: None,
                    peer: None,
                    peer_ns: None,
                    up: true,
                    ours: true,
                    addresses: vec![],
                    ..Default::default()
                },
            );
        }
        Op::CreateVeth { a, b, group } => {
            let (ia, ib) = (*next + 1, *next + 2);
            *next += 2;
            let master = a.master.as_ref().map(|m| obs.link(&a.ns, m).expect("bridge").index);
            assert!(obs.ns(&a.ns).is_some() && obs.ns(&b.ns).is_some(), "veth into a missing namespace");
            obs.insert_link(
                &a.ns,
                LinkState {
                    index: ia,
                    name: a.name.clone(),
                    kind: LinkKind::Veth,
                    group: *group,
                    master,
                    peer: Some(ib),
                    peer_ns: Some(b.ns.clone()),
                    up: true,
                    ours: true,
                    addresses: vec![],
                    mtu: a.mtu.unwrap_or(1500),
                    ..Default::default()
                },
            );
            obs.insert_link(
                &b.ns,
                LinkState {
                    index: ib,
                    name: b.name.clone(),
                    kind: LinkKind::Veth,
                    group: *group,
                    master: None,
                    peer: Some(ia),
                    peer_ns: Some(a.ns.clone()),
                    up: false,
                    ours: true,
                    addresses: vec![],
                    mtu: b.mtu.unwrap_or(1500),
                    ..Default::default()
                },
            );
        }
        Op::CreateVxlan { ns, name, vni, master, group } => {
            *next += 1;
            let master = Some(obs.link(ns, master).expect("bridge").index);
            obs.insert_link(
                ns,
                LinkState {
                    index: *next,
                    name: name.clone(),
                    kind: LinkKind::Vxlan,
                    group: *group,
                    master,
                    up: true,
                    ours: true,
                    mtu: 1450,
                    vni: Some(*vni),
                    ..Default::default()
                },
            );
        }
        _ => {}
    }
}

fn del_link(obs: &mut Observed, ns: &NsId, index: u32) {
    obs.remove_link(ns, index);
}

fn converge(obs: &mut Observed, d: &Desired) -> Plan {
    let p = plan(obs, d, &cfg());
    simulate(obs, &p, "t-");
    let again = plan(obs, d, &cfg());
    assert!(again.is_empty(), "not idempotent: {:#?}", again.steps);
    p
}

#[test]
fn make_from_nothing_creates_directly() {
    let d = desired(&[("cen1", &["c1", "c2", "c3"]), ("cen5", &["c2", "c4"])]);
    let mut obs = Observed::default();
    let p = converge(&mut obs, &d);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    let count = |f: fn(&Op) -> bool| p.steps.iter().filter(|s| f(&s.op)).count();
    assert_eq!(count(|o| matches!(o, Op::CreateNetns { .. })), 5); // 4 containers + fabric
    assert_eq!(count(|o| matches!(o, Op::CreateBridge { .. })), 1);
    assert_eq!(count(|o| matches!(o, Op::CreateVeth { .. })), 4);
    assert_eq!(count(|o| matches!(o, Op::DeleteLink { .. } | Op::DeleteGroup { .. })), 0);
    // Phases are ordered.
    assert!(p.steps.windows(2).all(|w| w[0].op.phase() <= w[1].op.phase()));
    // Each container namespace has one interface per CEN.
    assert!(obs.namespaces()[&NsId::Managed("c2".into())].link("cen1").is_some());
    assert!(obs.namespaces()[&NsId::Managed("c2".into())].link("cen5").is_some());
}

#[test]
fn joiner_and_leaver_touch_only_their_links() {
    let mut obs = Observed::default();
    converge(&mut obs, &desired(&[("cen1", &["c1", "c2", "c3"])]));
    let before = obs.clone();
    let p = converge(&mut obs, &desired(&[("cen1", &["c1", "c2", "c3", "c4"])]));
    assert_eq!(p.steps.len(), 5, "{:#?}", p.steps); // netns, lo up, veth, peer up, host side's alias
    for c in ["c1", "c2", "c3"] {
        let ns = NsId::Managed(c.into());
        assert_eq!(
            before.namespaces()[&ns].link("cen1").map(|l| l.index),
            obs.namespaces()[&ns].link("cen1").map(|l| l.index)
        );
    }
    // c2 leaves: one link delete in the fabric, nothing else.
    let p = converge(&mut obs, &desired(&[("cen1", &["c1", "c3", "c4"])]));
    assert_eq!(p.steps.len(), 2, "{:#?}", p.steps);
    assert!(p.steps.iter().any(|s| matches!(&s.op, Op::DeleteNetns { ns } if *ns == NsId::Managed("c2".into()))));
    assert!(p.steps.iter().any(|s| matches!(&s.op, Op::DeleteLink { ns: NsId::Fabric, .. })));
}

/// A CEN spanning hosts: the i-th neighbour is a member on the i-th remote.
fn spanning(remotes: &[&str], neighbours: &[(&str, u8)]) -> Desired {
    let mut d = desired(&[("s", &["c1", "c2", "c3"])]);
    d.cens.get_mut("s").expect("cen").vxlan = Some(crate::realize::desired::Vxlan {
        vni: 4100,
        remotes: remotes.iter().map(|r| r.parse().expect("ip")).collect(),
        neighbours: neighbours.iter().map(|(ip, m)| (ip.parse().expect("ip"), [2, 0, 0, 0, 0, *m])).collect(),
        macs: neighbours.iter().zip(remotes).map(|((_, m), r)| ([2, 0, 0, 0, 0, *m], r.parse().expect("ip"))).collect(),
    });
    d
}

fn underlay_cfg() -> Config {
    let underlay = crate::realize::Underlay { local: "192.0.2.1".parse().expect("ip"), ifindex: 2, mtu: 1500 };
    Config { underlay: Some(underlay), ..cfg() }
}

fn converge_with(obs: &mut Observed, d: &Desired, cfg: &Config) -> Plan {
    let p = plan(obs, d, cfg);
    simulate(obs, &p, "t-");
    let again = plan(obs, d, cfg);
    assert!(again.is_empty(), "not idempotent: {:#?}", again.steps);
    p
}

#[test]
fn a_spanning_cen_gets_vxlan_and_hosts_come_and_go_one_entry_each() {
    let cfg = underlay_cfg();
    let mut obs = Observed::default();
    let p = converge_with(&mut obs, &spanning(&["192.0.2.2"], &[("10.0.0.5", 5)]), &cfg);
    let count = |p: &Plan, f: &dyn Fn(&Op) -> bool| p.steps.iter().filter(|s| f(&s.op)).count();
    assert_eq!(count(&p, &|o| matches!(o, Op::CreateVxlan { vni: 4100, .. })), 1, "{:#?}", p.steps);
    assert_eq!(count(&p, &|o| matches!(o, Op::AddFdb { mac: FLOOD, .. })), 1);
    assert_eq!(
        count(
            &p,
            &|o| matches!(o, Op::AddFdb { mac: [2, 0, 0, 0, 0, 5], remote, .. } if remote.to_string() == "192.0.2.2")
        ),
        1
    );
    assert_eq!(count(&p, &|o| matches!(o, Op::AddNeigh { .. })), 1);
    // Every member interface, both ends, is made at the underlay's MTU less 50.
    for s in &p.steps {
        if let Op::CreateVeth { a, b, .. } = &s.op {
            assert_eq!((a.mtu, b.mtu), (Some(1450), Some(1450)));
        }
    }
    let links: Vec<(NsId, String, u32)> = obs
        .namespaces()
        .iter()
        .flat_map(|(ns, st)| st.links().map(move |l| (ns.clone(), l.name.clone(), l.index)))
        .collect();
    // A third host joins: its flood entry, its member's MAC and neighbour, nothing else.
    let p = converge_with(&mut obs, &spanning(&["192.0.2.2", "192.0.2.3"], &[("10.0.0.5", 5), ("10.0.0.6", 6)]), &cfg);
    assert_eq!(p.steps.len(), 3, "{:#?}", p.steps);
    assert_eq!(
        count(&p, &|o| matches!(o, Op::AddFdb { mac: FLOOD, remote, .. } if remote.to_string() == "192.0.2.3")),
        1
    );
    assert_eq!(
        count(
            &p,
            &|o| matches!(o, Op::AddFdb { mac: [2, 0, 0, 0, 0, 6], remote, .. } if remote.to_string() == "192.0.2.3")
        ),
        1
    );
    assert_eq!(count(&p, &|o| matches!(o, Op::AddNeigh { mac: [2, 0, 0, 0, 0, 6], .. })), 1);
    // Its member moves to the second host: its MAC entry is replaced in place, one step.
    let mut moved = spanning(&["192.0.2.2", "192.0.2.3"], &[("10.0.0.5", 5), ("10.0.0.6", 6)]);
    if let Some(vx) = moved.cens.get_mut("s").and_then(|c| c.vxlan.as_mut()) {
        vx.macs.insert([2, 0, 0, 0, 0, 6], "192.0.2.2".parse().expect("ip"));
    }
    let p = converge_with(&mut obs, &moved, &cfg);
    assert_eq!(p.steps.len(), 1, "{:#?}", p.steps);
    assert_eq!(
        count(
            &p,
            &|o| matches!(o, Op::AddFdb { mac: [2, 0, 0, 0, 0, 6], remote, .. } if remote.to_string() == "192.0.2.2")
        ),
        1
    );
    // The host leaves: the same three, deleted.
    let p = converge_with(&mut obs, &spanning(&["192.0.2.2"], &[("10.0.0.5", 5)]), &cfg);
    assert_eq!(p.steps.len(), 3, "{:#?}", p.steps);
    assert_eq!(count(&p, &|o| matches!(o, Op::DeleteFdb { .. } | Op::DeleteNeigh { .. })), 3);
    let after: Vec<(NsId, String, u32)> = obs
        .namespaces()
        .iter()
        .flat_map(|(ns, st)| st.links().map(move |l| (ns.clone(), l.name.clone(), l.index)))
        .collect();
    assert_eq!(links, after, "no link was made again");
    // No longer spanning: the VXLAN device and the neighbours go; the bridge stays.
    let mut alone = spanning(&[], &[]);
    alone.cens.get_mut("s").expect("cen").vxlan = None;
    let p = converge_with(&mut obs, &alone, &cfg);
    assert_eq!(count(&p, &|o| matches!(o, Op::DeleteLink { name, .. } if name == "t-xs")), 1, "{:#?}", p.steps);
    assert_eq!(count(&p, &|o| matches!(o, Op::DeleteNeigh { .. })), 1);
    assert!(obs.link(&NsId::Fabric, "t-bs").is_some());
}

#[test]
fn a_spanning_cen_without_an_underlay_fails_with_a_reason() {
    let p = plan(&Observed::default(), &spanning(&["192.0.2.2"], &[]), &cfg());
    assert!(p.errors["s"].contains("--vtep-address"), "{:?}", p.errors);
}

#[test]
fn destroy_all_deletes_namespaces_only() {
    let mut obs = Observed::default();
    converge(&mut obs, &desired(&[("cen1", &["c1", "c2", "c3"]), ("cen4", &["c3", "c5"])]));
    let p = converge(&mut obs, &Desired::default());
    assert!(p.steps.iter().all(|s| matches!(s.op, Op::DeleteNetns { .. })), "{:#?}", p.steps);
    assert!(obs.namespaces().is_empty());
}

#[test]
fn destroying_one_bridge_cen_is_one_group_delete() {
    let mut obs = Observed::default();
    converge(&mut obs, &desired(&[("cen1", &["c1", "c2", "c3"]), ("cen2", &["c1", "c2", "c3"])]));
    let p = converge(&mut obs, &desired(&[("cen1", &["c1", "c2", "c3"])]));
    assert_eq!(p.steps.len(), 1, "{:#?}", p.steps);
    assert!(matches!(p.steps[0].op, Op::DeleteGroup { ns: NsId::Fabric, .. }));
}

#[test]
fn wire_becomes_bridge() {
    let mut obs = Observed::default();
    converge(&mut obs, &desired(&[("cen1", &["c1", "c2"])]));
    assert!(!obs.namespaces().contains_key(&NsId::Fabric));
    converge(&mut obs, &desired(&[("cen1", &["c1", "c2", "c3"])]));
    let l = obs.namespaces()[&NsId::Managed("c1".into())].link("cen1").expect("link");
    assert!(l.group & naming::GROUP_BRIDGE_BIT != 0);
    converge(&mut obs, &desired(&[("cen1", &["c1"])]));
    assert!(obs.namespaces()[&NsId::Managed("c1".into())].link("cen1").is_none());
}

#[test]
fn drift_is_repaired() {
    let mut obs = Observed::default();
    converge(&mut obs, &desired(&[("cen1", &["c1", "c2", "c3"])]));
    // Someone deletes c2's container end (and so its peer).
    let ns = NsId::Managed("c2".into());
    let idx = obs.namespaces()[&ns].link("cen1").expect("link").index;
    del_link(&mut obs, &ns, idx);
    let p = converge(&mut obs, &desired(&[("cen1", &["c1", "c2", "c3"])]));
    assert_eq!(p.steps.len(), 3); // veth, peer up, alias
    assert!(matches!(p.steps[0].op, Op::CreateVeth { .. }));
    // A stray link of ours in the fabric goes.
    obs.insert_link(
        &NsId::Fabric,
        LinkState {
            index: 999,
            name: "t-bold".into(),
            kind: LinkKind::Bridge,
            group: 7,
            master: None,
            peer: None,
            peer_ns: None,
            up: true,
            ours: true,
            addresses: vec![],
            ..Default::default()
        },
    );
    let p = converge(&mut obs, &desired(&[("cen1", &["c1", "c2", "c3"])]));
    assert_eq!(p.steps.len(), 1);
}

#[test]
fn addresses_routes_and_forwarding() {
    let mut d = desired(&[("cen1", &["c1", "c2", "c3"])]);
    let cen = d.cens.get_mut("cen1").expect("cen");
    cen.gateways.push(Addr { cin: "cin1".into(), ip: Ipv4Addr::new(10, 12, 0, 1), prefix_len: 24 });
    for (i, m) in cen.members.iter_mut().enumerate() {
        m.addresses.push(Addr { cin: "cin1".into(), ip: Ipv4Addr::new(10, 12, 0, 10 + i as u8), prefix_len: 24 });
        m.routes.push(Route {
            cin: "cin1".into(),
            dest: Ipv4Addr::new(10, 12, 0, 0),
            prefix_len: 16,
            via: Ipv4Addr::new(10, 12, 0, 1),
        });
    }
    d.forwarding = true;
    let mut obs = Observed::default();
    let p = converge(&mut obs, &d);
    assert!(p.cins.contains("cin1"));
    assert_eq!(p.steps.iter().filter(|s| matches!(s.op, Op::AddAddr { .. })).count(), 4);
    assert_eq!(p.steps.iter().filter(|s| matches!(s.op, Op::AddRoute { .. })).count(), 3);
    assert_eq!(obs.namespaces()[&NsId::Fabric].forwarding, Some(true));
    // Change one address: delete old, add new, nothing else.
    d.cens.get_mut("cen1").expect("cen").members[0].addresses[0].ip = Ipv4Addr::new(10, 12, 0, 99);
    let p = converge(&mut obs, &d);
    assert_eq!(p.steps.len(), 2, "{:#?}", p.steps);
}

#[test]
fn bad_input_is_reported_not_panicked() {
    let mut d = desired(&[("cen1", &["c1", "c2", "c3"]), ("cen2", &["c1", "c2"])]);
    d.cens.get_mut("cen2").expect("cen").members[0].ifname = "cen1".into(); // clash in c1
    d.cens.insert("cen3".into(), CenNet { wiring: Wiring::Wire, members: vec![], gateways: vec![], vxlan: None });
    d.cens.insert(
        "cen4".into(),
        CenNet {
            wiring: Wiring::Bridge,
            members: vec![Member { container: "nobody".into(), ifname: "x".into(), addresses: vec![], routes: vec![] }],
            gateways: vec![],
            vxlan: None,
        },
    );
    let mut obs = Observed::default();
    let p = plan(&obs, &d, &cfg());
    assert!(p.errors.contains_key("cen2") && p.errors.contains_key("cen3") && p.errors.contains_key("cen4"));
    assert!(!p.errors.contains_key("cen1"));
    simulate(&mut obs, &p, "t-");
    assert!(plan(&obs, &d, &cfg()).is_empty());
}

#[test]
fn path_namespaces_are_never_deleted_and_foreign_links_kept() {
    let mut d = desired(&[("cen1", &["c1", "c2"])]);
    d.containers.get_mut("h/c2").expect("c2").netns = NetnsRef::Path("/proc/1/ns/net".into());
    let pns = NsId::Path("/proc/1/ns/net".into());
    let mut obs = Observed::default();
    let eth0 = LinkState {
        index: 2,
        name: "eth0".into(),
        kind: LinkKind::Veth,
        group: 0,
        master: None,
        peer: Some(9),
        peer_ns: None,
        up: true,
        ours: false,
        addresses: vec![],
        ..Default::default()
    };
    obs.insert_ns(pns.clone(), NsState::new(vec![eth0], vec![], None));
    converge(&mut obs, &d);
    assert!(obs.namespaces()[&pns].link("cen1").is_some());
    let p = converge(&mut obs, &Desired::default());
    assert!(!p.steps.iter().any(|s| matches!(&s.op, Op::DeleteNetns { ns } if *ns == pns)));
    assert!(obs.namespaces()[&pns].link("eth0").is_some());
    assert!(obs.namespaces()[&pns].link("cen1").is_none());
}

#[test]
fn links_in_the_fabric_that_are_not_ours_are_kept_and_so_is_the_fabric() {
    let stranger = |index: u32, name: &str, kind: LinkKind, peer: Option<u32>| LinkState {
        index,
        name: name.into(),
        kind,
        peer,
        peer_ns: peer.map(|_| NsId::Fabric),
        up: true,
        ours: false,
        ..Default::default()
    };
    let mut obs = Observed::default();
    converge(&mut obs, &desired(&[("cen1", &["c1", "c2", "c3"])]));
    for l in [
        stranger(901, "t-fh0", LinkKind::Veth, Some(902)),
        stranger(902, "t-fh1", LinkKind::Veth, Some(901)),
        stranger(903, "t-fbr", LinkKind::Bridge, None),
    ] {
        obs.insert_link(&NsId::Fabric, l);
    }
    let fabric_names = |obs: &Observed| -> Vec<String> {
        let mut v: Vec<String> = obs.namespaces()[&NsId::Fabric].links().map(|l| l.name.clone()).collect();
        v.sort();
        v
    };
    // Nothing to do about them while the CEN is made.
    let p = converge(&mut obs, &desired(&[("cen1", &["c1", "c2", "c3"])]));
    assert!(p.is_empty(), "{:#?}", p.steps);
    // Destroyed: our links go, theirs and the fabric holding them stay.
    let p = converge(&mut obs, &Desired::default());
    assert!(!p.steps.iter().any(|s| matches!(&s.op, Op::DeleteNetns { ns: NsId::Fabric })), "{:#?}", p.steps);
    assert_eq!(fabric_names(&obs), ["lo", "t-fbr", "t-fh0", "t-fh1"]);
    // Without them, an unwanted fabric goes as before.
    for i in [901, 902, 903] {
        obs.remove_link(&NsId::Fabric, i);
    }
    let p = converge(&mut obs, &Desired::default());
    assert!(p.steps.iter().any(|s| matches!(&s.op, Op::DeleteNetns { ns: NsId::Fabric })), "{:#?}", p.steps);
}

#[test]
fn a_gone_member_is_left_out_and_reported_alone() {
    let mut d = desired(&[("cen1", &["c1", "c2", "c3"]), ("cen2", &["c2", "c4"])]);
    let pns = NsId::Path("/proc/4242/ns/net".into());
    d.containers.get_mut("h/c2").expect("c2").netns = NetnsRef::Path("/proc/4242/ns/net".into());
    let mut obs = Observed::default();
    obs.unavailable.insert(pns.clone(), "the workload is gone".into());
    let p = plan(&obs, &d, &cfg());
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(p.unavailable.get("h/c2").map(String::as_str), Some("the workload is gone"));
    simulate(&mut obs, &p, "t-");
    assert!(plan(&obs, &d, &cfg()).is_empty());
    for c in ["c1", "c3"] {
        assert!(obs.namespaces()[&NsId::Managed(c.into())].link("cen1").is_some(), "{c} is wired");
    }
    // cen2 is a wire missing an end: nothing to wire, no failure.
    assert!(obs.namespaces()[&NsId::Managed("c4".into())].link("cen2").is_none());
    assert!(!p.steps.iter().any(|s| s.op.ns() == Some(&pns)));
    // Back: wired again.
    obs.unavailable.clear();
    obs.insert_ns(pns.clone(), NsState::new(vec![], vec![], None));
    converge(&mut obs, &d);
    assert!(obs.namespaces()[&pns].link("cen1").is_some());
    assert!(obs.namespaces()[&pns].link("cen2").is_some());
}

/// Planning one join against 10,000 realized containers looks only at
/// the joined CEN: counted in operations and lookups, not timed.
#[test]
fn one_join_touches_only_its_cen() {
    let groups: Vec<(String, Vec<String>)> =
        (0..1000).map(|g| (format!("cen{g}"), (0..10).map(|i| format!("c{g}x{i}")).collect())).collect();
    let refs: Vec<(&str, Vec<&str>)> =
        groups.iter().map(|(c, m)| (c.as_str(), m.iter().map(String::as_str).collect())).collect();
    let slices: Vec<(&str, &[&str])> = refs.iter().map(|(c, m)| (*c, m.as_slice())).collect();
    let full = desired(&slices);
    let mut obs = Observed::default();
    converge(&mut obs, &full);
    assert_eq!(obs.namespaces().len(), 10_001);
    // The driver's way: a desired state kept per CEN, with its index.
    let (mut d, groups_ix) = with_newbie(&full, "cen500");
    let scope: BTreeSet<String> = ["cen500".to_string()].into();
    let released = d.take_released();
    let p = plan_scoped(&obs, &d, d.index(), &cfg(), Scope::Cens(&scope, &released, &Focus::new()), &groups_ix);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    // netns, lo up, veth, peer up, the host side's alias: nothing else.
    assert_eq!(p.steps.len(), 5, "{:#?}", p.steps);
    let touched: BTreeSet<&NsId> = p.steps.iter().filter_map(|s| s.op.ns()).collect();
    assert!(
        touched.iter().all(|ns| matches!(ns, NsId::Fabric) || **ns == NsId::Managed("newbie".into())),
        "{touched:?}"
    );
    // The CEN's 11 pairs, its bridge, its addresses and its links by
    // group: a few lookups per member of that CEN (66 today), against
    // 10,000 containers.
    assert!(p.lookups <= 8 * 11, "{} lookups", p.lookups);
    // And the whole-topology plan, for comparison, looks at everything.
    let all = plan(&obs, &d, &cfg());
    assert!(all.lookups > 20_000, "{} lookups", all.lookups);
    assert_eq!(all.steps.len(), 5);
}

/// A join to a CEN of 300 members, planned through the joiner only: the
/// same five operations as a plan of the whole CEN, a few lookups instead
/// of several per member, and the others' links left alone (a whole plan
/// afterwards has nothing to do).
#[test]
fn a_join_planned_through_its_member_costs_the_same_whatever_the_cen() {
    let names: Vec<String> = (0..300).map(|i| format!("m{i}")).collect();
    let members: Vec<&str> = names.iter().map(String::as_str).collect();
    let full = desired(&[("big", members.as_slice()), ("pair", &["p1", "p2"])]);
    let mut obs = Observed::default();
    converge(&mut obs, &full);
    let (mut d, groups_ix) = with_newbie(&full, "big");
    let scope: BTreeSet<String> = ["big".to_string()].into();
    let released = d.take_released();
    let whole = plan_scoped(&obs, &d, d.index(), &cfg(), Scope::Cens(&scope, &released, &Focus::new()), &groups_ix);
    let focus: Focus = [("big".to_string(), ["h/newbie".to_string()].into())].into();
    let p = plan_scoped(&obs, &d, d.index(), &cfg(), Scope::Cens(&scope, &released, &focus), &groups_ix);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    // netns, lo up, veth, peer up, the host side's alias: nothing else.
    assert_eq!(p.steps.len(), 5, "{:#?}", p.steps);
    assert_eq!(p.steps, whole.steps, "the same operations as a plan of the whole CEN");
    assert!(whole.lookups > 300, "the whole CEN looks at each member: {}", whole.lookups);
    assert!(p.lookups <= 8, "the joiner's pair, the bridge, the joiner's addresses: {} lookups", p.lookups);
    let touched: BTreeSet<&NsId> = p.steps.iter().filter_map(|s| s.op.ns()).collect();
    assert!(
        touched.iter().all(|ns| matches!(ns, NsId::Fabric) || **ns == NsId::Managed("newbie".into())),
        "{touched:?}"
    );
    simulate(&mut obs, &p, "t-");
    assert!(plan(&obs, &d, &cfg()).is_empty(), "every member is wired, nothing is stray");

    // A wire cannot be planned through one end: looked at whole.
    let pair: BTreeSet<String> = ["pair".to_string()].into();
    let focus: Focus = [("pair".to_string(), BTreeSet::new())].into();
    assert!(!groups_ix.focusable("t-", &d, "pair"));
    let p2 = NsId::Managed("p2".into());
    let end = obs.link(&p2, "pair").unwrap().index;
    del_link(&mut obs, &p2, end);
    let p = plan_scoped(&obs, &d, d.index(), &cfg(), Scope::Cens(&pair, &released, &focus), &groups_ix);
    assert!(p.steps.iter().any(|s| matches!(&s.op, Op::CreateVeth { .. })), "{:#?}", p.steps);
}

/// `full` kept the driver's way (per CEN, with its index), its link groups
/// as they stood, then container `h/newbie` joined to `cen`.
fn with_newbie(full: &Desired, cen: &str) -> (Desired, GroupIndex) {
    let mut d = Desired::default();
    for (key, c) in &full.containers {
        d.put_container(key, c.clone());
    }
    for (id, c) in &full.cens {
        d.put_cen(id, c.clone());
    }
    let groups_ix = GroupIndex::of(&d, "t-");
    let mut joined = d.cens[cen].clone();
    let mut m = joined.members[0].clone();
    m.container = "h/newbie".into();
    joined.members.push(m);
    d.put_container("h/newbie", ContainerNet { id: "newbie".into(), netns: NetnsRef::Managed, ident: None });
    d.put_cen(cen, joined);
    (d, groups_ix)
}

/// A plan of the CENs `scope` names alone, none of them focused.
fn plan_of_cens(obs: &Observed, d: &Desired, scope: &BTreeSet<String>) -> Plan {
    plan_scoped(
        obs,
        d,
        &Index::of(d),
        &cfg(),
        Scope::Cens(scope, &BTreeSet::new(), &Focus::new()),
        &GroupIndex::of(d, "t-"),
    )
}

/// A made CEN without members has the fabric namespace made ahead (a
/// first join, a runtime's, is bridged, and would otherwise wait for the
/// namespace); that join then makes no namespace but its member's, whole
/// plan or scoped; the fabric goes once nothing wants it.
#[test]
fn an_empty_cen_has_the_fabric_made_ahead_of_its_first_join() {
    let mut obs = Observed::default();
    let empty = desired(&[("cen1", &[])]);
    let p = converge(&mut obs, &empty);
    assert!(p.steps.iter().any(|s| matches!(&s.op, Op::CreateNetns { ns: NsId::Fabric })), "{:#?}", p.steps);
    assert_eq!(p.steps.len(), 1, "{:#?}", p.steps);
    // The first member joins, bridged (as a runtime's is).
    let mut first = desired(&[("cen1", &["c1"])]);
    first.cens.get_mut("cen1").expect("cen1").wiring = Wiring::Bridge;
    let scope: BTreeSet<String> = ["cen1".to_string()].into();
    let scoped = plan_of_cens(&obs, &first, &scope);
    assert!(scoped.errors.is_empty(), "{:?}", scoped.errors);
    let made: Vec<&NsId> = scoped
        .steps
        .iter()
        .filter_map(|s| match &s.op {
            Op::CreateNetns { ns } => Some(ns),
            _ => None,
        })
        .collect();
    assert_eq!(made, [&NsId::Managed("c1".into())], "{:#?}", scoped.steps);
    assert!(scoped.steps.iter().any(|s| matches!(&s.op, Op::CreateBridge { .. })), "{:#?}", scoped.steps);
    let p = converge(&mut obs, &first);
    assert!(!p.steps.iter().any(|s| matches!(&s.op, Op::CreateNetns { ns: NsId::Fabric })), "{:#?}", p.steps);
    // Wired straight between two members, nothing wants the fabric.
    converge(&mut obs, &desired(&[("cen1", &["c1", "c2"])]));
    assert!(!obs.namespaces().contains_key(&NsId::Fabric));
    // A member not bridged: the CEN no longer awaits, the fabric stays away.
    converge(&mut obs, &desired(&[("cen1", &["c1"])]));
    assert!(!obs.namespaces().contains_key(&NsId::Fabric));
    // Destroyed while still empty: a plan of that CEN alone lets it go.
    let mut obs = Observed::default();
    converge(&mut obs, &empty);
    let none = Desired::default();
    let p = plan_of_cens(&obs, &none, &scope);
    assert!(p.steps.iter().any(|s| matches!(&s.op, Op::DeleteNetns { ns: NsId::Fabric })), "{:#?}", p.steps);
    // In host mode the host is the fabric: nothing is made ahead.
    let host = Config { fabric: FabricMode::Host, ..cfg() };
    let p = plan(&Observed::default(), &empty, &host);
    assert!(p.is_empty(), "{:#?}", p.steps);
}
