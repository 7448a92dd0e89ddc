//! The pure translation model -> desired kernel state: for one host, what
//! its kernel should hold for a made CEN (bridge or wire, members with
//! their addresses and routes, the gateways, the VXLAN side where the CEN
//! spans hosts), and whether the fabric forwards between CIN slices.
//!
//! Invariants: a function of the model and the host only (no I/O, no
//! async); only the containers of `host` are wired here, the members on
//! other hosts wait for their host's server; an unmade or missing CEN has
//! no desired state (it is taken out).

use crate::model::{self, CenRec, CinRec, MemberRec, Topology};
use crate::realize::{self, Addr, CenNet, ContainerNet, Desired, Member, NetnsRef, Route, Vxlan};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// The desired kernel state of the whole topology (the containers of
/// `host`): every made CEN with its members, the addresses and routes of
/// made CINs over made CENs.
pub fn desired(t: &Topology, host: &str) -> Desired {
    let mut d = Desired::default();
    for cen in t.cens_iter().filter(|c| c.making.made) {
        put_cen(t, host, &cen.id, &mut d);
    }
    d.forwarding = t.cins_iter().any(|c| forwards(t, c));
    d
}

/// The desired kernel state of one made CEN (its members on `host`), put
/// into `d`; an unmade or missing CEN is taken out.
pub fn put_cen(t: &Topology, host: &str, id: &str, d: &mut Desired) {
    put_cen_focused(t, host, id, d, &BTreeSet::new());
}

/// As [`put_cen`], and says which members alone need looking at (a
/// [`realize::Focus`] entry): those new, those whose interface or container
/// changed, and those `changed` names (container keys a change touched, a
/// retry among them). `None` when the whole CEN does: it is new, taken
/// out, not READY (a failure is retried whole), a member left, or its
/// wiring, gateways or VXLAN side changed.
pub fn put_cen_focused(
    t: &Topology,
    host: &str,
    id: &str,
    d: &mut Desired,
    changed: &BTreeSet<String>,
) -> Option<BTreeSet<String>> {
    let Some(cen) = t.cen(id).filter(|c| c.making.made) else {
        d.remove_cen(id);
        return None;
    };
    let (net, containers) = cen_net(t, host, cen);
    let focus = d.cens.get(id).filter(|_| cen.making.realization.status == model::Status::Ready).and_then(|old| {
        let same_cen = old.wiring == net.wiring && old.gateways == net.gateways && old.vxlan == net.vxlan;
        let now: BTreeMap<&str, &Member> = net.members.iter().map(|m| (m.container.as_str(), m)).collect();
        let kept = old.members.iter().all(|m| now.contains_key(m.container.as_str()));
        (same_cen && kept).then(|| {
            let before: BTreeMap<&str, &Member> = old.members.iter().map(|m| (m.container.as_str(), m)).collect();
            let net_of: BTreeMap<&str, &ContainerNet> = containers.iter().map(|(k, c)| (k.as_str(), c)).collect();
            now.iter()
                .filter(|(k, m)| {
                    changed.contains(**k)
                        || before.get(**k) != Some(*m)
                        || d.containers.get(**k) != net_of.get(**k).copied()
                })
                .map(|(k, _)| k.to_string())
                .collect()
        })
    });
    for (key, c) in containers {
        d.put_container(&key, c);
    }
    d.put_cen(id, net);
    focus
}

/// Whether a CIN asks for forwarding between slices in the fabric.
pub(super) fn forwards(t: &Topology, cin: &CinRec) -> bool {
    cin.making.made && cin.cens.len() > 1 && cin.cens.iter().any(|id| t.cen(id).is_some_and(|c| c.making.made))
}

/// Whether this host's server announced a VTEP address: then CENs spanning
/// hosts are joined by VXLAN; without one it wires its own members only, as
/// on a single host.
pub(super) fn has_vtep(t: &Topology, host: &str) -> bool {
    t.host(host).is_some_and(|h| h.vtep.is_some())
}

/// The VXLAN side of a CEN present on `host` and on others: its VNI, the
/// VTEPs of the other hosts, the members there by MAC with their host's
/// VTEP (so unicast to them goes to that host only), and their addresses
/// and MACs (the anycast gateway answers its own ARP requests locally, so
/// it could never learn them).
fn vxlan_of(t: &Topology, host: &str, cen: &CenRec, hosts: &BTreeSet<&str>, made_cins: &[&CinRec]) -> Vxlan {
    let remotes = hosts.iter().filter(|h| **h != host).filter_map(|h| t.host(h).and_then(|r| r.vtep)).collect();
    let mut neighbours = BTreeMap::new();
    let mut macs = BTreeMap::new();
    for m in t.members(&cen.id).filter(|m| m.host != host) {
        let mac = realize::member_mac(&cen.id, &m.key().to_string());
        if let Some(vtep) = t.host(&m.host).and_then(|h| h.vtep) {
            macs.insert(mac, vtep);
        }
        for cin in made_cins {
            if let Some(ip) = m.addresses.get(&cin.id) {
                neighbours.insert(*ip, mac);
            }
        }
    }
    Vxlan { vni: cen.vni, remotes, neighbours, macs }
}

/// The gateways of a bridged CEN, one per made CIN over it (the bridge
/// carries them), and each CIN's gateway by CIN id.
fn gateways<'a>(t: &Topology, cen: &CenRec, made_cins: &[&'a CinRec]) -> (Vec<Addr>, BTreeMap<&'a str, Ipv4Addr>) {
    let mut gateways = Vec::new();
    let mut gw_of = BTreeMap::new();
    for cin in made_cins {
        if let Some(slice) = t.slice(cin, &cen.id) {
            gateways.push(Addr { cin: cin.id.clone(), ip: slice.gateway(), prefix_len: slice.prefix_len });
            gw_of.insert(cin.id.as_str(), slice.gateway());
        }
    }
    (gateways, gw_of)
}

/// What a CEN's members and CINs over it ask of one host.
struct CenView<'a> {
    cen: &'a CenRec,
    made_cins: Vec<&'a CinRec>,
    /// The gateway of this CEN in each made CIN (bridged CENs only).
    gw_of: BTreeMap<&'a str, Ipv4Addr>,
}

/// What a CEN is on one host apart from its members there: derived
/// without walking them (the VXLAN side walks those elsewhere).
struct Shape<'a> {
    view: CenView<'a>,
    /// The model's wiring (a bridge wherever the CEN spans hosts).
    model_wiring: Option<model::Wiring>,
    /// Whether a bridged CEN has its bridge here (with VXLAN, only on the
    /// hosts it is present on).
    bridged_here: bool,
    gateways: Vec<Addr>,
    vxlan: Option<Vxlan>,
}

impl Shape<'_> {
    fn of<'a>(t: &'a Topology, host: &str, cen: &'a CenRec) -> Shape<'a> {
        let hosts = t.presence(&cen.id);
        // Present here and elsewhere: a bridge on each host, joined by VXLAN.
        let spans = has_vtep(t, host) && hosts.contains(host) && hosts.len() > 1;
        let model_wiring = if spans { Some(model::Wiring::Bridge) } else { t.wiring(cen) };
        let made_cins: Vec<&CinRec> = t.cins_over(&cen.id).into_iter().filter(|c| c.making.made).collect();
        let (gateways, gw_of) =
            if model_wiring == Some(model::Wiring::Bridge) { gateways(t, cen, &made_cins) } else { Default::default() };
        let vxlan = spans.then(|| vxlan_of(t, host, cen, &hosts, &made_cins));
        let bridged_here = !has_vtep(t, host) || hosts.contains(host);
        Shape { view: CenView { cen, made_cins, gw_of }, model_wiring, bridged_here, gateways, vxlan }
    }

    /// The wiring here, with `local` members on this host.
    fn wiring(&self, local: usize) -> realize::Wiring {
        match self.model_wiring {
            Some(model::Wiring::Bridge) if self.bridged_here => realize::Wiring::Bridge,
            // A wire with an end on another host has nothing to wire here.
            Some(model::Wiring::Wire) if local == 2 => realize::Wiring::Wire,
            _ => realize::Wiring::None,
        }
    }

    /// Whether the CEN is wired here as `old` is, bridge, gateways and
    /// VXLAN side alike (its members aside).
    fn same_as(&self, old: &CenNet, local: usize) -> bool {
        old.wiring == self.wiring(local) && old.gateways == self.gateways && old.vxlan == self.vxlan
    }
}

fn cen_net(t: &Topology, host: &str, cen: &CenRec) -> (CenNet, Vec<(String, ContainerNet)>) {
    let shape = Shape::of(t, host, cen);
    let local: Vec<&MemberRec> = t.members_in_order(&cen.id).into_iter().filter(|m| m.host == host).collect();
    let wiring = shape.wiring(local.len());
    let (containers, members) = local.into_iter().filter_map(|m| member_net(t, &shape.view, m)).unzip();
    (CenNet { wiring, members, gateways: shape.gateways, vxlan: shape.vxlan }, containers)
}

/// [`put_cen_focused`] for a CEN that only its members' own changes
/// touched (`changed` names them; a change of the CEN itself, of a CIN
/// over it or of a VTEP would have asked for the whole CEN): when it is a
/// READY bridge here, wired as before, only the changed members are
/// derived and put in place, each found by its join order in a binary
/// search, so a join costs the same whatever the size of the CEN. Else
/// (not READY, not a bridge, wired otherwise now, a member left) the CEN
/// is derived whole, as [`put_cen_focused`] does.
pub(super) fn put_cen_members(
    t: &Topology,
    host: &str,
    id: &str,
    d: &mut Desired,
    changed: &BTreeSet<String>,
) -> Option<BTreeSet<String>> {
    match members_only(t, host, id, d, changed) {
        Some(focus) => Some(focus),
        None => put_cen_focused(t, host, id, d, changed),
    }
}

/// The changed members of a READY bridge put in place, and the focus they
/// make; `None` (nothing changed) where the CEN must be derived whole.
fn members_only(
    t: &Topology,
    host: &str,
    id: &str,
    d: &mut Desired,
    changed: &BTreeSet<String>,
) -> Option<BTreeSet<String>> {
    let cen = t.cen(id).filter(|c| c.making.made && c.making.realization.status == model::Status::Ready)?;
    let shape = Shape::of(t, host, cen);
    let old = d.cens.get(id)?;
    // A bridge here does not depend on how many members are here.
    if shape.wiring(0) != realize::Wiring::Bridge || !shape.same_as(old, 0) {
        return None;
    }
    let seq_of = |key: &str| {
        let (h, c) = key.split_once('/')?;
        t.member(&model::MemberKey::new(id, &model::ContainerKey::new(h, c))).map(|m| m.seq)
    };
    let mut puts = Vec::new();
    for key in changed {
        let Some((h, c)) = key.split_once('/').filter(|(h, _)| *h == host) else { continue };
        let Some(m) = t.member(&model::MemberKey::new(id, &model::ContainerKey::new(h, c))) else {
            if old.members.iter().any(|o| &o.container == key) {
                return None; // It left.
            }
            continue;
        };
        // Where it is, or goes, in join order; its neighbours confirm it.
        let i = old.members.partition_point(|o| seq_of(&o.container).is_some_and(|s| s < m.seq));
        let at = if old.members.get(i).is_some_and(|o| &o.container == key) { Ok(i) } else { Err(i) };
        let after = at.map_or(i, |i| i + 1);
        let fits = (i == 0 || seq_of(&old.members[i - 1].container).is_some_and(|s| s < m.seq))
            && old.members.get(after).is_none_or(|o| seq_of(&o.container).is_some_and(|s| s > m.seq));
        if !fits {
            return None;
        }
        puts.push((member_net(t, &shape.view, m)?, at, m.seq));
    }
    // Put from the last place back, so that each place found stays right:
    // at one place, the member there is replaced before others go before
    // it, the later joiner first.
    puts.sort_by_key(|(_, at, seq)| {
        (std::cmp::Reverse(at.unwrap_or_else(|i| i)), at.is_err(), std::cmp::Reverse(*seq))
    });
    let mut focus = BTreeSet::new();
    for (((key, net), member), at, _) in puts {
        d.put_container(&key, net);
        if !d.put_member(id, member, at) {
            // Cannot happen (the places were checked): derive it whole.
            return None;
        }
        focus.insert(key);
    }
    Some(focus)
}

/// One local member of a CEN: its container's namespace, and its interface
/// with the addresses and routes of the made CINs over the CEN.
fn member_net(t: &Topology, view: &CenView, m: &MemberRec) -> Option<((String, ContainerNet), Member)> {
    let key = m.key();
    let c = t.container(&key)?;
    let mut addresses = Vec::new();
    let mut routes = Vec::new();
    for cin in &view.made_cins {
        let (Some(ip), Some(slice)) = (m.addresses.get(&cin.id), t.slice(cin, &view.cen.id)) else { continue };
        addresses.push(Addr { cin: cin.id.clone(), ip: *ip, prefix_len: slice.prefix_len });
        routes.extend(slices_route(t, view, &key, cin));
    }
    if c.default_route.is_some() {
        if let Some((cin, via_cen)) = t.default_route_of(c) {
            if let Some(gw) = view.gw_of.get(cin.as_str()).filter(|_| via_cen == view.cen.id) {
                routes.push(Route { cin, dest: Ipv4Addr::UNSPECIFIED, prefix_len: 0, via: *gw });
            }
        }
    }
    let net = ContainerNet {
        id: c.id.clone(),
        netns: match c.netns_target() {
            Some(p) => NetnsRef::Path(p.to_string()),
            None => NetnsRef::Managed,
        },
        ident: c.netns.as_ref().map(|b| (b.device, b.inode)),
    };
    let member = Member { container: key.to_string(), ifname: m.ifname.clone(), addresses, routes };
    Some(((key.to_string(), net), member))
}

/// Between the slices of a CIN over several CENs: one route to the CIN's
/// subnet, through the first made CEN of the CIN the container is on (it is
/// directly on the others); none on the other CENs.
fn slices_route(t: &Topology, view: &CenView, key: &model::ContainerKey, cin: &CinRec) -> Option<Route> {
    if cin.cens.len() <= 1 {
        return None;
    }
    let first = cin.cens.iter().find(|c| t.is_member(key, c) && t.cen(c).is_some_and(|r| r.making.made))?;
    let gw = view.gw_of.get(cin.id.as_str())?;
    (*first == view.cen.id).then(|| Route {
        cin: cin.id.clone(),
        dest: cin.subnet,
        prefix_len: cin.prefix_len,
        via: *gw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::tests::{join, spread};
    use crate::model::{Command, ContainerKey, MemberKey};

    #[test]
    fn cens_spanning_hosts_get_vxlan_to_the_others_and_their_members_as_neighbours() {
        let t = spread();
        let d = desired(&t, "h1");
        let cen3 = &d.cens["cen3"];
        assert_eq!(cen3.wiring, realize::Wiring::Bridge);
        assert_eq!(cen3.members.len(), 1, "only this host's members are wired here");
        let vx = cen3.vxlan.as_ref().expect("cen3 spans h1 and h2");
        assert_eq!(vx.vni, t.cen("cen3").unwrap().vni);
        assert_eq!(vx.remotes.iter().map(|a| a.to_string()).collect::<Vec<_>>(), vec!["192.0.2.2"]);
        let c10 = t.member(&MemberKey::new("cen3", &ContainerKey::new("h2", "c10"))).unwrap();
        let ip = c10.addresses["n34"];
        assert_eq!(vx.neighbours.get(&ip), Some(&realize::member_mac("cen3", "h2/c10")));
        // Each member elsewhere has its MAC pointed at its host's VTEP, and
        // only those: unicast to it goes to that host alone.
        let h2 = t.host("h2").and_then(|h| h.vtep).expect("h2 has a VTEP");
        assert_eq!(vx.macs.get(&realize::member_mac("cen3", "h2/c10")), Some(&h2));
        assert_eq!(vx.macs.len(), t.members("cen3").filter(|m| m.host != "h1").count());
        assert!(!vx.macs.contains_key(&realize::member_mac("cen3", "h1/c9")), "no entry for a member here");
        // cen4 has no member on h1, but h1 routes between n34's slices: it
        // has cen4's bridge, gateway and VXLAN too, with no member.
        let cen4 = &d.cens["cen4"];
        assert!(cen4.members.is_empty());
        assert_eq!(cen4.wiring, realize::Wiring::Bridge);
        assert_eq!(cen4.gateways.len(), 1);
        assert_eq!(cen4.vxlan.as_ref().map(|v| v.neighbours.len()), Some(2));
        // cen5 is all on h1: wired as on one host, no VXLAN.
        assert!(d.cens["cen5"].vxlan.is_none());
        // On h2, cen5 is not there at all.
        let d2 = desired(&t, "h2");
        assert!(d2.cens["cen5"].members.is_empty() && d2.cens["cen5"].wiring == realize::Wiring::None);
        assert_eq!(d2.cens["cen3"].vxlan.as_ref().map(|v| v.remotes.len()), Some(1));
    }

    /// One host, no VTEP: a CEN of two is a wire, of three a bridge with
    /// the gateway of each made CIN; unmade CENs and CINs are absent.
    #[test]
    fn on_one_host_two_members_are_a_wire_and_more_a_bridge_with_gateways() {
        let mut t = model::Topology::new();
        for cen in ["w", "b", "idle"] {
            t.execute(&Command::CenCreate { id: cen.into() }).unwrap();
        }
        join(&mut t, "h", "a", "w");
        join(&mut t, "h", "b1", "w");
        for c in ["c1", "c2", "c3"] {
            join(&mut t, "h", c, "b");
        }
        let cins = vec![model::CinSpec { id: "n".into(), cens: vec!["b".into()] }];
        t.execute(&Command::CinImport { cins }).unwrap();
        t.execute(&Command::CenSetMade { ids: vec!["w".into(), "b".into()], made: true, realizing: false }).unwrap();
        let d = desired(&t, "h");
        assert!(!d.cens.contains_key("idle"), "an unmade CEN has no desired state");
        assert_eq!(d.cens["w"].wiring, realize::Wiring::Wire);
        assert_eq!(d.cens["b"].wiring, realize::Wiring::Bridge);
        assert!(d.cens["b"].gateways.is_empty(), "the CIN is not made: no gateway, no addresses");
        assert!(d.cens["b"].members.iter().all(|m| m.addresses.is_empty()));
        assert!(!d.forwarding);

        t.execute(&Command::CinSetMade { ids: vec!["n".into()], made: true, realizing: false }).unwrap();
        let d = desired(&t, "h");
        let b = &d.cens["b"];
        assert_eq!(b.gateways.len(), 1);
        assert_eq!(b.members.len(), 3);
        for m in &b.members {
            assert_eq!(m.addresses.len(), 1, "{} has its address in n", m.container);
            assert_eq!(m.addresses[0].prefix_len, b.gateways[0].prefix_len);
            assert!(m.routes.is_empty(), "one CEN, no default route asked: no route");
        }
        assert!(!d.forwarding, "a CIN over one CEN needs no forwarding");
        assert!(d.containers.contains_key("h/c1"));

        // Taken out by put_cen once unmade.
        t.execute(&Command::CenSetMade { ids: vec!["b".into()], made: false, realizing: false }).unwrap();
        let mut d = d;
        put_cen(&t, "h", "b", &mut d);
        assert!(!d.cens.contains_key("b"));
    }

    /// A CIN over two CENs: the fabric forwards, and a container on both
    /// gets its route to the CIN's subnet on the first made one only.
    #[test]
    fn a_cin_over_two_cens_forwards_and_routes_through_the_first_made_cen() {
        let mut t = model::Topology::new();
        for cen in ["x", "y"] {
            t.execute(&Command::CenCreate { id: cen.into() }).unwrap();
        }
        for c in ["c1", "c2", "both"] {
            join(&mut t, "h", c, "x");
        }
        for c in ["c3", "c4", "both"] {
            join(&mut t, "h", c, "y");
        }
        let cins = vec![model::CinSpec { id: "n".into(), cens: vec!["x".into(), "y".into()] }];
        t.execute(&Command::CinImport { cins }).unwrap();
        t.execute(&Command::CinSetMade { ids: vec!["n".into()], made: true, realizing: false }).unwrap();
        t.execute(&Command::CenSetMade { ids: vec!["x".into(), "y".into()], made: true, realizing: false }).unwrap();
        let d = desired(&t, "h");
        assert!(d.forwarding);
        let routes = |cen: &str, who: &str| -> Vec<Route> {
            d.cens[cen].members.iter().find(|m| m.container == who).map(|m| m.routes.clone()).unwrap()
        };
        let via_x = routes("x", "h/both");
        assert_eq!(via_x.len(), 1);
        assert_eq!((via_x[0].dest, via_x[0].prefix_len), (t.cin("n").unwrap().subnet, t.cin("n").unwrap().prefix_len));
        assert_eq!(via_x[0].via, d.cens["x"].gateways[0].ip);
        assert!(routes("y", "h/both").is_empty(), "directly on y: routed through x only");
        assert_eq!(routes("y", "h/c3").len(), 1, "c3 is on y only: its route goes through y");
    }
    fn ready(t: &mut Topology, cen: &str) {
        let report = model::StatusReport {
            target: model::EntityKey::Cen(cen.into()),
            realization: model::Standing { status: model::Status::Ready, message: None },
            made: true,
            host: None,
        };
        t.execute(&Command::SetStatus { reports: vec![report] }).unwrap();
    }

    /// A CIN `n` over `cen`, both made, and `cen` READY.
    fn made_ready(t: &mut Topology, cen: &str) {
        let cins = vec![model::CinSpec { id: "n".into(), cens: vec![cen.into()] }];
        t.execute(&Command::CinImport { cins }).unwrap();
        t.execute(&Command::CinSetMade { ids: vec!["n".into()], made: true, realizing: false }).unwrap();
        t.execute(&Command::CenSetMade { ids: vec![cen.into()], made: true, realizing: false }).unwrap();
        ready(t, cen);
    }

    fn keys(ids: &[&str]) -> Option<BTreeSet<String>> {
        Some(ids.iter().map(|s| s.to_string()).collect())
    }

    /// Through its changed members alone, a READY bridge ends up as it is
    /// when derived whole: joiners go last in join order, a member changed
    /// in the middle is replaced where it is, and the index follows (the
    /// namespace it leaves is released); a leave is derived whole.
    #[test]
    fn a_bridge_put_through_its_changed_members_is_the_whole_derivation() {
        let bind = |path: &str| {
            let netns = model::NetnsBinding { path: path.into(), device: 1, inode: path.len() as u64 };
            Command::ContainerCreate {
                host: "h".into(),
                id: "c2".into(),
                tag: None,
                netns_path: Some(path.into()),
                netns: Some(netns),
            }
        };
        let mut t = model::Topology::new();
        t.execute(&Command::CenCreate { id: "b".into() }).unwrap();
        t.execute(&bind("/run/netns/first")).unwrap();
        for c in ["c1", "c2", "c3"] {
            join(&mut t, "h", c, "b");
        }
        made_ready(&mut t, "b");
        let mut d = desired(&t, "h");
        let same_as_whole = |t: &Topology, d: &Desired| {
            let whole = desired(t, "h");
            assert_eq!((&d.cens, &d.containers), (&whole.cens, &whole.containers), "the same as derived whole");
        };

        join(&mut t, "h", "c4", "b");
        assert_eq!(put_cen_members(&t, "h", "b", &mut d, &keys(&["h/c4"]).unwrap()), keys(&["h/c4"]));
        same_as_whole(&t, &d);
        let c4 = realize::NsId::Managed("c4".into());
        assert!(d.index().in_ns(&c4).is_some_and(|k| k.contains("h/c4")), "the joiner's namespace is in use");

        // Its workload restarted: bound again, elsewhere.
        t.execute(&bind("/run/netns/elsewhere")).unwrap();
        assert_eq!(put_cen_members(&t, "h", "b", &mut d, &keys(&["h/c2"]).unwrap()), keys(&["h/c2"]));
        same_as_whole(&t, &d);
        assert_eq!(d.cens["b"].members[1].container, "h/c2", "replaced where it was");
        let first = realize::NsId::Path("/run/netns/first".into());
        assert!(d.take_released().contains(&first), "the namespace it left is let go");

        join(&mut t, "h", "c5", "b");
        join(&mut t, "h", "c6", "b");
        assert_eq!(put_cen_members(&t, "h", "b", &mut d, &keys(&["h/c6", "h/c5"]).unwrap()), keys(&["h/c5", "h/c6"]));
        same_as_whole(&t, &d);

        t.execute(&Command::ContainerLeaveCen { host: "h".into(), container: "c1".into(), cen: "b".into() }).unwrap();
        assert_eq!(put_cen_members(&t, "h", "b", &mut d, &keys(&["h/c1"]).unwrap()), None, "a member left");
        same_as_whole(&t, &d);
    }

    /// A join to a READY bridged CEN is looked at through the joiner (and
    /// the containers a change named); a CEN whose wiring changes, one that
    /// is not READY, or one a member left, is looked at whole.
    #[test]
    fn a_join_focuses_on_its_member_and_a_leave_or_a_new_wiring_does_not() {
        let mut t = model::Topology::new();
        t.execute(&Command::CenCreate { id: "b".into() }).unwrap();
        for c in ["c1", "c2"] {
            join(&mut t, "h", c, "b");
        }
        made_ready(&mut t, "b");
        let mut d = desired(&t, "h");
        let none = BTreeSet::new();

        join(&mut t, "h", "c3", "b");
        assert_eq!(put_cen_focused(&t, "h", "b", &mut d, &none), None, "a wire became a bridge");
        assert_eq!(d.cens["b"].members.len(), 3);

        join(&mut t, "h", "c4", "b");
        assert_eq!(put_cen_focused(&t, "h", "b", &mut d, &none), keys(&["h/c4"]));
        let whole = desired(&t, "h");
        assert_eq!((&d.cens, &d.containers), (&whole.cens, &whole.containers), "the same as derived whole");
        assert_eq!(put_cen_focused(&t, "h", "b", &mut d, &keys(&["h/c1"]).unwrap()), keys(&["h/c1"]), "a retry");
        assert_eq!(put_cen_focused(&t, "h", "b", &mut d, &none), keys(&[]), "nothing changed");

        t.execute(&Command::ContainerLeaveCen { host: "h".into(), container: "c2".into(), cen: "b".into() }).unwrap();
        assert_eq!(put_cen_focused(&t, "h", "b", &mut d, &none), None, "a member left");

        let failed = model::StatusReport {
            target: model::EntityKey::Cen("b".into()),
            realization: model::Standing { status: model::Status::Failed, message: Some("no".into()) },
            made: true,
            host: None,
        };
        t.execute(&Command::SetStatus { reports: vec![failed] }).unwrap();
        join(&mut t, "h", "c5", "b");
        assert_eq!(put_cen_focused(&t, "h", "b", &mut d, &none), None, "a failed CEN is retried whole");
    }
}
