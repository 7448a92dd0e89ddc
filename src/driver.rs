//! The realization driver: follows the change stream, derives the desired
//! kernel state of just the CENs each change touched, has the realizer
//! apply those, and reports status back through the service like any other
//! change. A full derivation and a full apply happen at start and on
//! reconcile only.
//!
//! Only the containers of this server's own host are realized here; the
//! members of a CEN on other hosts wait for their host's server.

use crate::model::{self, CenRec, EntityKey, Realization, Record, Status, StatusReport, Topology};
use crate::realize::{self, Addr, CenNet, ContainerNet, Desired, Member, NetnsRef, Route, Vxlan};
use crate::service::{Realization as RealizationHandle, Service};
use crate::store::Change;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// The desired kernel state of one made CEN (its members on `host`), put
/// into `d`; an unmade or missing CEN is taken out.
pub fn put_cen(t: &Topology, host: &str, id: &str, d: &mut Desired) {
    match t.cen(id).filter(|c| c.made) {
        Some(cen) => {
            let (net, containers) = cen_net(t, host, cen);
            for (key, c) in containers {
                d.put_container(&key, c);
            }
            d.put_cen(id, net);
        }
        None => d.remove_cen(id),
    }
}

/// The VXLAN side of a CEN present on `host` and on others: its VNI, the
/// VTEPs of the other hosts, and the addresses and MACs of the members
/// there (the anycast gateway answers its own ARP requests locally, so it
/// could never learn them).
fn vxlan_of(t: &Topology, host: &str, cen: &CenRec, hosts: &BTreeSet<&str>, made_cins: &[&model::CinRec]) -> Vxlan {
    let remotes = hosts.iter().filter(|h| **h != host).filter_map(|h| t.host(h).and_then(|r| r.vtep)).collect();
    let mut neighbours = BTreeMap::new();
    for m in t.members(&cen.id).filter(|m| m.host != host) {
        let mac = realize::member_mac(&cen.id, &m.key().to_string());
        for cin in made_cins {
            if let Some(ip) = m.addresses.get(&cin.id) {
                neighbours.insert(*ip, mac);
            }
        }
    }
    Vxlan { vni: cen.vni, remotes, neighbours }
}

/// Whether this host's server announced a VTEP address: then CENs spanning
/// hosts are joined by VXLAN; without one it wires its own members only, as
/// on a single host.
fn has_vtep(t: &Topology, host: &str) -> bool {
    t.host(host).is_some_and(|h| h.vtep.is_some())
}

fn cen_net(t: &Topology, host: &str, cen: &CenRec) -> (CenNet, Vec<(String, ContainerNet)>) {
    let hosts = t.presence(&cen.id);
    // Present here and elsewhere: a bridge on each host, joined by VXLAN.
    let spans = has_vtep(t, host) && hosts.contains(host) && hosts.len() > 1;
    let model_wiring = if spans { Some(model::Wiring::Bridge) } else { t.wiring(cen) };
    let made_cins: Vec<&model::CinRec> = t.cins_over(&cen.id).into_iter().filter(|c| c.made).collect();
    // The gateway of this CEN in each made CIN (a bridge carries them).
    let mut gateways = Vec::new();
    let mut gw_of: BTreeMap<&str, Ipv4Addr> = BTreeMap::new();
    if model_wiring == Some(model::Wiring::Bridge) {
        for cin in &made_cins {
            if let Some(slice) = t.slice(cin, &cen.id) {
                gateways.push(Addr { cin: cin.id.clone(), ip: slice.gateway(), prefix_len: slice.prefix_len });
                gw_of.insert(cin.id.as_str(), slice.gateway());
            }
        }
    }
    let vxlan = spans.then(|| vxlan_of(t, host, cen, &hosts, &made_cins));
    let local: Vec<&model::MemberRec> = t.members_in_order(&cen.id).into_iter().filter(|m| m.host == host).collect();
    let wiring = match model_wiring {
        // (With VXLAN, only on the hosts the CEN is present on.)
        Some(model::Wiring::Bridge) if !has_vtep(t, host) || hosts.contains(host) => realize::Wiring::Bridge,
        // A wire with an end on another host has nothing to wire here.
        Some(model::Wiring::Wire) if local.len() == 2 => realize::Wiring::Wire,
        _ => realize::Wiring::None,
    };
    let mut members = Vec::with_capacity(local.len());
    let mut containers = Vec::with_capacity(local.len());
    for m in local {
        let key = m.key();
        let Some(c) = t.container(&key) else { continue };
        let mut addresses = Vec::new();
        let mut routes = Vec::new();
        for cin in &made_cins {
            let (Some(ip), Some(slice)) = (m.addresses.get(&cin.id), t.slice(cin, &cen.id)) else { continue };
            addresses.push(Addr { cin: cin.id.clone(), ip: *ip, prefix_len: slice.prefix_len });
            // Between the slices of a CIN over several CENs: one route to
            // the CIN's subnet, through the first made CEN of the CIN the
            // container is on (it is directly on the others).
            if cin.cens.len() > 1 {
                let first = cin.cens.iter().find(|c| t.is_member(&key, c) && t.cen(c).is_some_and(|r| r.made));
                if let (Some(gw), Some(first)) = (gw_of.get(cin.id.as_str()), first) {
                    if *first == cen.id {
                        routes.push(Route {
                            cin: cin.id.clone(),
                            dest: cin.subnet,
                            prefix_len: cin.prefix_len,
                            via: *gw,
                        });
                    }
                }
            }
        }
        if c.default_route.is_some() {
            if let Some((cin, via_cen)) = t.default_route_of(c) {
                if let Some(gw) = gw_of.get(cin.as_str()).filter(|_| via_cen == cen.id) {
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
        containers.push((key.to_string(), net));
        members.push(Member { container: key.to_string(), ifname: m.ifname.clone(), addresses, routes });
    }
    (CenNet { wiring, members, gateways, vxlan }, containers)
}

/// Whether a CIN asks for forwarding between slices in the fabric.
fn forwards(t: &Topology, cin: &model::CinRec) -> bool {
    cin.made && cin.cens.len() > 1 && cin.cens.iter().any(|id| t.cen(id).is_some_and(|c| c.made))
}

/// The desired kernel state of the whole topology (the containers of
/// `host`): every made CEN with its members, the addresses and routes of
/// made CINs over made CENs.
pub fn desired(t: &Topology, host: &str) -> Desired {
    let mut d = Desired::default();
    for cen in t.cens_iter().filter(|c| c.made) {
        put_cen(t, host, &cen.id, &mut d);
    }
    d.forwarding = t.cins_iter().any(|c| forwards(t, c));
    d
}

/// The made CENs of a container.
fn made_cens_of(t: &Topology, key: &model::ContainerKey, out: &mut BTreeSet<String>) {
    out.extend(t.cens_of(key).into_iter().filter(|c| c.made).map(|c| c.id.clone()));
}

fn cen_of(r: &Option<Record>) -> Option<&CenRec> {
    match r {
        Some(Record::Cen(c)) => Some(c),
        _ => None,
    }
}

fn cin_of(r: &Option<Record>) -> Option<&model::CinRec> {
    match r {
        Some(Record::Cin(c)) => Some(c),
        _ => None,
    }
}

/// Whether a CEN or CIN change matters to the kernel: made flipped, or a
/// retry of a failed make (back to PREPARING). Status reports alone do not.
fn made_changed(before: Option<(bool, Status)>, after: Option<(bool, Status)>) -> bool {
    let made = |x: Option<(bool, Status)>| x.is_some_and(|(m, _)| m);
    let retry =
        after.is_some_and(|(m, s)| m && s == Status::Preparing) && before.is_some_and(|(_, s)| s != Status::Preparing);
    made(before) != made(after) || retry
}

/// The CENs whose kernel state a change may alter, and the CINs it touched.
fn affected(t: &Topology, change: &Change, cens: &mut BTreeSet<String>, cins: &mut BTreeSet<String>) {
    for item in &change.items {
        match &item.key {
            EntityKey::Cen(id) => {
                let (b, a) = (cen_of(&item.before), cen_of(&item.after));
                let st = |c: Option<&CenRec>| c.map(|c| (c.made, c.realization.status));
                if made_changed(st(b), st(a)) {
                    cens.insert(id.clone());
                    for cin in t.cins_over(id) {
                        cins.insert(cin.id.clone());
                        // Its hosts are present on the CIN's other CENs.
                        if cin.made && cin.cens.len() > 1 {
                            cens.extend(cin.cens.iter().cloned());
                        }
                    }
                }
            }
            EntityKey::Member(k) => {
                // A join or leave (or new addresses) changes its CEN; where
                // default routes and routes between slices go may change on
                // the container's other CENs too; and the hosts the CEN's
                // CINs are present on may change, with their other CENs.
                cens.insert(k.cen.clone());
                made_cens_of(t, &k.container_key(), cens);
                for cin in t.cins_over(&k.cen).into_iter().filter(|c| c.made && c.cens.len() > 1) {
                    cens.extend(cin.cens.iter().cloned());
                }
            }
            EntityKey::Cin(id) => {
                let (b, a) = (cin_of(&item.before), cin_of(&item.after));
                let st = |c: Option<&model::CinRec>| c.map(|c| (c.made, c.realization.status));
                let shape = |c: Option<&model::CinRec>| c.map(|c| (c.cens.clone(), c.subnet, c.prefix_len));
                if made_changed(st(b), st(a)) || shape(b) != shape(a) {
                    cins.insert(id.clone());
                    for c in b.into_iter().chain(a) {
                        cens.extend(c.cens.iter().cloned());
                    }
                }
            }
            EntityKey::Container(k) => {
                let shape = |r: &Option<Record>| match r {
                    Some(Record::Container(c)) => {
                        Some((c.netns_path.clone(), c.netns.clone(), c.default_route.clone()))
                    }
                    _ => None,
                };
                // A container whose gone workload was bound again (its
                // FAILED status cleared by the user's command) is a retry.
                let failed = |r: &Option<Record>| matches!(r, Some(Record::Container(c)) if c.realization.status == Status::Failed);
                let retry = failed(&item.before) && !failed(&item.after);
                if shape(&item.before) != shape(&item.after) || retry {
                    made_cens_of(t, k, cens);
                }
            }
            EntityKey::Host(h) => {
                // A host's VTEP address changed: the CENs it shares with
                // others send elsewhere.
                let vtep = |r: &Option<Record>| match r {
                    Some(Record::Host(h)) => h.vtep,
                    _ => None,
                };
                if vtep(&item.before) != vtep(&item.after) {
                    for c in t.containers_of_host(h) {
                        for m in t.memberships_of(&c.key()) {
                            if t.cen(&m.cen).is_some_and(|c| c.made) && cens.insert(m.cen.clone()) {
                                for cin in t.cins_over(&m.cen).into_iter().filter(|c| c.made && c.cens.len() > 1) {
                                    cens.extend(cin.cens.iter().cloned());
                                }
                            }
                        }
                    }
                }
            }
            EntityKey::Cpool(_) => {}
        }
    }
}

/// Statuses the model should show after an apply of `cens` (and the CINs
/// over them), where they differ from what it shows now.
fn status_reports(
    t: &Topology,
    host: &str,
    cens: &BTreeSet<String>,
    cins: &BTreeSet<String>,
    report: &realize::ApplyReport,
    unavailable: Option<&str>,
) -> Vec<StatusReport> {
    let mut out = Vec::new();
    // With a VTEP address, a CEN or CIN present on hosts has a part per
    // host: this server reports its own (and takes it back once the object
    // is gone from here); one present nowhere is reported as a whole, as on
    // a single host.
    let multi = has_vtep(t, host);
    let mut push = |target: EntityKey,
                    made: bool,
                    rec: (&Realization, &BTreeMap<String, Realization>),
                    present: &BTreeSet<&str>,
                    next: Realization| {
        let (whole, parts) = rec;
        if multi && (present.contains(host) || parts.contains_key(host)) {
            let next = if present.contains(host) { next } else { Realization::default() };
            if parts.get(host).cloned().unwrap_or_default() != next {
                out.push(StatusReport { target, realization: next, made, host: Some(host.to_string()) });
            }
        } else if (!multi || present.is_empty()) && *whole != next {
            out.push(StatusReport { target, realization: next, made, host: None });
        }
    };
    let outcome = |made: bool, result: Option<&Result<(), realize::ApplyError>>| -> Realization {
        if !made {
            return Realization::default();
        }
        if let Some(why) = unavailable {
            return Realization { status: Status::Failed, message: Some(why.to_string()) };
        }
        match result {
            Some(Err(e)) => Realization { status: Status::Failed, message: Some(e.to_string()) },
            _ => Realization { status: Status::Ready, message: None },
        }
    };
    // Containers on their own: FAILED while their bound workload is gone
    // (their CENs are wired without them), back to derived once wired.
    let mut own = Vec::new();
    let mut seen = BTreeSet::new();
    if unavailable.is_none() {
        for cen in cens.iter().filter_map(|id| t.cen(id)) {
            for m in t.members_in_order(&cen.id).into_iter().filter(|m| m.host == host) {
                let key = m.key();
                let Some(c) = t.container(&key) else { continue };
                let next = match report.unavailable.get(&key.to_string()) {
                    Some(why) => Realization { status: Status::Failed, message: Some(why.clone()) },
                    None => Realization::default(),
                };
                if c.realization != next && seen.insert(key.clone()) {
                    own.push(StatusReport {
                        host: None,
                        target: EntityKey::Container(key.clone()),
                        realization: next,
                        made: t.container_is_made(&key),
                    });
                }
            }
        }
    }
    let mut all_cins: BTreeSet<&str> = cins.iter().map(String::as_str).collect();
    for cen in cens.iter().filter_map(|id| t.cen(id)) {
        all_cins.extend(t.cins_over(&cen.id).into_iter().map(|c| c.id.as_str()));
        let present = if multi { t.presence(&cen.id) } else { BTreeSet::new() };
        let next = outcome(cen.made, report.cens.get(&cen.id));
        push(EntityKey::Cen(cen.id.clone()), cen.made, (&cen.realization, &cen.parts), &present, next);
    }
    for cin in all_cins.into_iter().filter_map(|id| t.cin(id)) {
        let made_cens: Vec<&CenRec> = cin.cens.iter().filter_map(|c| t.cen(c)).filter(|c| c.made).collect();
        let present = if multi { t.cin_presence(cin) } else { BTreeSet::new() };
        // The CEN statuses (this host's parts) as this round leaves them.
        let mine = |c: &CenRec| {
            let r = if multi { c.parts.get(host) } else { None };
            r.unwrap_or(&c.realization).status
        };
        let failed_cen = made_cens.iter().find_map(|c| match report.cens.get(&c.id) {
            Some(Err(_)) => Some(c.id.clone()),
            None if mine(c) == Status::Failed && !cens.contains(&c.id) => Some(c.id.clone()),
            _ => None,
        });
        let next = if cin.made && made_cens.is_empty() {
            // Addresses need interfaces: nothing to realize until a CEN is made.
            Realization { status: Status::Pending, message: Some("none of its CENs is made".into()) }
        } else if let (true, Some(c), None) = (cin.made, &failed_cen, unavailable) {
            Realization { status: Status::Failed, message: Some(format!("CEN {c} failed")) }
        } else {
            outcome(cin.made, report.cins.get(&cin.id))
        };
        push(EntityKey::Cin(cin.id.clone()), cin.made, (&cin.realization, &cin.parts), &present, next);
    }
    out.extend(own);
    out
}

/// Transitional statuses before a full apply: PREPARING for made objects
/// not yet READY, DESTROYING for unmade ones that were realized.
fn transition_reports(t: &Topology) -> Vec<StatusReport> {
    let mut out = Vec::new();
    let mut consider = |target: EntityKey, made: bool, current: &Realization| {
        let next = match (made, current.status) {
            (true, Status::Pending) => Some(Status::Preparing),
            (false, Status::Ready | Status::Failed | Status::Preparing) => Some(Status::Destroying),
            _ => None,
        };
        if let Some(status) = next {
            out.push(StatusReport { target, realization: Realization { status, message: None }, made, host: None });
        }
    };
    for cen in t.cens_iter() {
        consider(EntityKey::Cen(cen.id.clone()), cen.made, &cen.realization);
    }
    for cin in t.cins_iter() {
        consider(EntityKey::Cin(cin.id.clone()), cin.made, &cin.realization);
    }
    out
}

/// A make/destroy whose progress the `operation` subscription reports.
#[derive(Debug, Clone)]
struct Tracked {
    id: String,
    /// The revision holding the make/destroy.
    revision: u64,
    /// The objects, as `cen:<id>` / `cin:<id>`.
    targets: Vec<EntityKey>,
    /// Making (READY wanted) or destroying (PENDING wanted).
    make: bool,
}

/// Handle to the running driver.
#[derive(Clone)]
pub struct Driver {
    /// The revision of the model that the kernel was last brought to.
    applied: watch::Receiver<u64>,
    /// Full reconciles completed (each looks at the kernel again).
    reconciled: watch::Receiver<u64>,
    kick: Arc<Kick>,
    tracked: Arc<parking_lot::Mutex<Vec<Tracked>>>,
    foreign: Arc<parking_lot::Mutex<Vec<String>>>,
}

impl Driver {
    /// Starts the driver. With `realizer` an error (it could not start),
    /// every made object is reported FAILED with the reason.
    pub fn start(service: Arc<Service>, realizer: Result<realize::Realizer, String>) -> Driver {
        let (applied_tx, applied) = watch::channel(0u64);
        let (reconciled_tx, reconciled) = watch::channel(0u64);
        let kick = Arc::new(Kick::default());
        let changes = service.subscribe();
        let tracked = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let signals = Signals { applied: applied_tx, reconciled: reconciled_tx };
        let foreign = Arc::new(parking_lot::Mutex::new(match &realizer {
            Ok(r) => r.foreign(),
            Err(_) => Vec::new(),
        }));
        let looper = Loop {
            foreign: Arc::clone(&foreign),
            host: service.host_id().to_string(),
            service,
            desired: Desired::default(),
            forwarding: BTreeSet::new(),
            last_steps: 0,
        };
        tokio::spawn(looper.run(realizer, changes, Arc::clone(&kick), signals, Arc::clone(&tracked)));
        Driver { applied, reconciled, kick, tracked, foreign }
    }

    /// Reconciles every `every` in the background (drift made by hand, or by
    /// anything else, is repaired without a restart).
    pub fn reconcile_every(&self, every: Duration) {
        let kick = Arc::clone(&self.kick);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                kick.wake(true);
            }
        });
    }
}

#[async_trait::async_trait]
impl RealizationHandle for Driver {
    fn needs_kernel(&self, service: &Service, change: &Change) -> bool {
        service.read(|t| {
            let (mut cens, mut cins) = (BTreeSet::new(), BTreeSet::new());
            affected(t, change, &mut cens, &mut cins);
            let made_now = cens.iter().any(|c| t.cen(c).is_some_and(|c| c.made));
            // Something made before this change (a destroy, a delete).
            let made_before = change.items.iter().any(|i| match &i.before {
                Some(Record::Cen(c)) => c.made,
                Some(Record::Cin(c)) => c.made,
                _ => false,
            });
            made_now || made_before
        })
    }

    async fn wait_applied(&self, revision: u64, limit: Duration) -> bool {
        let mut rx = self.applied.clone();
        tokio::time::timeout(limit, rx.wait_for(|r| *r >= revision)).await.is_ok_and(|r| r.is_ok())
    }

    fn track(&self, service: &Service, kind: &str, revision: u64, targets: Vec<EntityKey>, make: bool) -> String {
        let names = targets.iter().map(|k| k.id()).collect();
        let id = service.operations().start(kind, names, 0);
        self.tracked.lock().push(Tracked { id: id.clone(), revision, targets, make });
        // Wake the loop (without a full reconcile) in case it already went
        // past this revision.
        self.kick.wake(false);
        id
    }

    fn reconcile(&self) {
        self.kick.wake(true);
    }

    fn foreign(&self) -> Vec<String> {
        self.foreign.lock().clone()
    }

    async fn reconcile_and_wait(&self, limit: Duration) -> bool {
        let mut rx = self.reconciled.clone();
        // A round under way may have looked at the kernel before this call:
        // wait for the one after it.
        let target = *rx.borrow_and_update() + 2;
        let waited = tokio::time::timeout(limit, async {
            while *rx.borrow_and_update() < target {
                // Keep one forced round queued until the one that counts ran.
                self.kick.wake(true);
                if rx.changed().await.is_err() {
                    return false;
                }
            }
            true
        })
        .await;
        waited.unwrap_or(false)
    }
}

/// How an operation ended: every target in the wanted state, or why not.
fn operation_outcome(t: &Topology, op: &Tracked) -> Result<(), String> {
    let want = if op.make { Status::Ready } else { Status::Pending };
    let mut problems = Vec::new();
    for key in &op.targets {
        let realization = match t.get(key) {
            Some(model::Record::Cen(c)) => &c.realization,
            Some(model::Record::Cin(c)) => &c.realization,
            _ => continue,
        };
        if realization.status != want {
            let why = realization.message.as_deref().unwrap_or("");
            problems
                .push(format!("{} {}: {:?} {why}", key.kind(), key.id(), realization.status).trim_end().to_string());
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// What the loop tells waiters.
struct Signals {
    applied: watch::Sender<u64>,
    reconciled: watch::Sender<u64>,
}

/// What woke the loop.
struct Trigger {
    /// A full reconcile was asked for (or the change stream was lost).
    full: bool,
    /// The changes received, in revision order.
    changes: Vec<Arc<Change>>,
    /// What the realizer noticed in the kernel meanwhile.
    events: Vec<realize::watch::Event>,
}

/// The driver's loop and what it keeps between rounds.
struct Loop {
    service: Arc<Service>,
    host: String,
    /// The desired state as of the last round, kept up to date per CEN.
    desired: Desired,
    /// Made CINs that ask for forwarding in the fabric.
    forwarding: BTreeSet<String>,
    /// Steps of the latest apply: an operation registered just after the
    /// round that did its work reports those.
    last_steps: usize,
    /// What the last full look at the kernel found that is not ours.
    foreign: Arc<parking_lot::Mutex<Vec<String>>>,
}

impl Loop {
    async fn run(
        mut self,
        realizer: Result<realize::Realizer, String>,
        mut changes: broadcast::Receiver<Arc<Change>>,
        kick: Arc<Kick>,
        signals: Signals,
        tracked: Arc<parking_lot::Mutex<Vec<Tracked>>>,
    ) {
        let (mut realizer, unavailable) = match realizer {
            Ok(r) => (Some(r), None),
            Err(e) => (None, Some(format!("realizer unavailable: {e}"))),
        };
        let mut events = realizer.as_mut().and_then(realize::Realizer::take_events);
        let mut trigger = Trigger { full: true, changes: Vec::new(), events: Vec::new() };
        let mut first = true;
        let mut applied = 0u64;
        loop {
            let revision = if trigger.full {
                self.full_round(realizer.as_mut(), unavailable.as_deref(), first, &tracked).await
            } else {
                // A change is applied once it was received and worked on:
                // the model may already be past it, but the revision told to
                // waiters is that of the last change handled.
                let last = trigger.changes.iter().map(|c| c.revision).max().unwrap_or(applied);
                let mut noticed = self.noticed_cens(&trigger.events);
                if let Some(r) = realizer.as_mut() {
                    noticed.extend(r.absorb_events(&trigger.events));
                }
                self.scoped_round(realizer.as_mut(), unavailable.as_deref(), &trigger.changes, &noticed, &tracked)
                    .await;
                last
            };
            first = false;
            applied = applied.max(revision);
            let revision = applied;
            signals.applied.send_replace(revision);
            if trigger.full {
                signals.reconciled.send_modify(|n| *n += 1);
            }
            self.finish_ops(revision, &tracked);
            trigger = next_trigger(&mut changes, &kick, events.as_mut()).await;
        }
    }

    /// Operations whose change the rounds so far covered.
    fn take_ops(&self, revision: u64, tracked: &parking_lot::Mutex<Vec<Tracked>>) -> Vec<Tracked> {
        let mut all = tracked.lock();
        let (mine, later): (Vec<Tracked>, Vec<Tracked>) = all.drain(..).partition(|o| o.revision <= revision);
        *all = later;
        mine
    }

    fn finish_ops(&self, revision: u64, tracked: &parking_lot::Mutex<Vec<Tracked>>) {
        for op in self.take_ops(revision, tracked) {
            let ops = self.service.operations();
            if ops.get(&op.id).is_some_and(|o| o.steps_total == 0) {
                ops.progress(&op.id, self.last_steps as u32, self.last_steps as u32);
            }
            let outcome = self.service.read(|t| operation_outcome(t, &op));
            ops.finish(&op.id, outcome);
        }
    }

    fn progress(
        &self,
        tracked: &parking_lot::Mutex<Vec<Tracked>>,
        revision: u64,
    ) -> impl Fn(usize, usize) + Send + Sync {
        let svc = Arc::clone(&self.service);
        let ids: Vec<String> = tracked.lock().iter().filter(|o| o.revision <= revision).map(|o| o.id.clone()).collect();
        move |done: usize, total: usize| {
            for id in &ids {
                svc.operations().progress(id, done as u32, total as u32);
            }
        }
    }

    async fn record(&self, reports: Vec<StatusReport>, what: &str) {
        if reports.is_empty() {
            return;
        }
        if let Err(e) = self.service.execute(model::Command::SetStatus { reports }).await {
            tracing::error!(error = %e, "recording {what}");
        }
    }

    /// Containers bound through a runtime (`docker:NAME`, `podman:NAME`)
    /// whose workload is gone are resolved again: a container the runtime
    /// restarted runs as a new process, and is bound to it (the same
    /// interfaces and addresses are then wired there).
    async fn rebind_restarted(&self) {
        let gone: Vec<model::ContainerRec> = self.service.read(|t| {
            t.containers_of_host(&self.host)
                .into_iter()
                .filter(|c| {
                    let by_runtime =
                        c.netns_path.as_deref().is_some_and(|p| p.starts_with("docker:") || p.starts_with("podman:"));
                    by_runtime && c.netns.as_ref().is_some_and(|b| !crate::workload::still_bound(b))
                })
                .cloned()
                .collect()
        });
        let resolved = futures_util::future::join_all(gone.iter().map(|c| async move {
            let said = c.netns_path.clone().unwrap_or_default();
            (c, crate::workload::resolve(&said).await)
        }))
        .await;
        for (c, r) in resolved {
            match r {
                Ok(b) if Some(&b) != c.netns.as_ref() => {
                    tracing::info!(container = %c.key(), path = %b.path, "bound again to its restarted workload");
                    let cmd = model::Command::ContainerCreate {
                        host: c.host.clone(),
                        id: c.id.clone(),
                        tag: None,
                        netns_path: c.netns_path.clone(),
                        netns: Some(b),
                    };
                    if let Err(e) = self.service.execute(cmd).await {
                        tracing::warn!(container = %c.key(), error = %e, "binding again");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::debug!(container = %c.key(), error = %e.message, "not running again yet"),
            }
        }
    }

    /// Looks at the whole kernel and the whole model (start, reconcile, or
    /// after the change stream was lost).
    async fn full_round(
        &mut self,
        realizer: Option<&mut realize::Realizer>,
        unavailable: Option<&str>,
        first: bool,
        tracked: &parking_lot::Mutex<Vec<Tracked>>,
    ) -> u64 {
        if realizer.is_some() {
            self.rebind_restarted().await;
        }
        let transitions = self.service.read(transition_reports);
        self.record(transitions, "transitional statuses").await;
        let host = self.host.clone();
        let ((want, forwarding, cens, cins), revision) = self.service.read_at(|t| {
            let d = desired(t, &host);
            let fwd: BTreeSet<String> = t.cins_iter().filter(|c| forwards(t, c)).map(|c| c.id.clone()).collect();
            let cens: BTreeSet<String> = t.cens_iter().map(|c| c.id.clone()).collect();
            let cins: BTreeSet<String> = t.cins_iter().map(|c| c.id.clone()).collect();
            (d, fwd, cens, cins)
        });
        let report = match realizer {
            Some(r) => {
                if !first {
                    if let Err(e) = r.refresh().await {
                        tracing::warn!(error = %e, "looking at the kernel again");
                    }
                }
                let progress = self.progress(tracked, revision);
                let report = r.apply(&want, Some(&progress)).await;
                *self.foreign.lock() = r.foreign();
                report
            }
            None => realize::ApplyReport::default(),
        };
        for e in report.errors() {
            tracing::warn!(error = %e, "realization");
        }
        self.last_steps = report.steps;
        self.desired = want;
        self.forwarding = forwarding;
        let reports = self.service.read(|t| status_reports(t, &host, &cens, &cins, &report, unavailable));
        self.record(reports, "statuses").await;
        revision
    }

    /// The made CENs of the containers living in the namespaces events
    /// name (a few lookups per container there, not a walk of the model).
    fn noticed_cens(&self, events: &[realize::watch::Event]) -> BTreeSet<String> {
        let mut keys = Vec::new();
        for e in events {
            if let realize::watch::Event::Gone(ns) = e {
                keys.extend(self.desired.index().in_ns(ns).into_iter().flatten().cloned());
            }
        }
        let mut cens = BTreeSet::new();
        if keys.is_empty() {
            return cens;
        }
        self.service.read(|t| {
            for k in &keys {
                if let Some((host, id)) = k.split_once('/') {
                    made_cens_of(t, &model::ContainerKey::new(host, id), &mut cens);
                }
            }
        });
        cens
    }

    /// Applies what the received changes touched (and the CENs `noticed`
    /// outside them), and nothing else.
    async fn scoped_round(
        &mut self,
        realizer: Option<&mut realize::Realizer>,
        unavailable: Option<&str>,
        changes: &[Arc<Change>],
        noticed: &BTreeSet<String>,
        tracked: &parking_lot::Mutex<Vec<Tracked>>,
    ) -> u64 {
        let host = self.host.clone();
        let desired = &mut self.desired;
        let forwarding = &mut self.forwarding;
        let ((cens, cins), revision) = self.service.read_at(|t| {
            let (mut cens, mut cins) = (noticed.clone(), BTreeSet::new());
            for c in changes {
                affected(t, c, &mut cens, &mut cins);
            }
            for id in &cens {
                put_cen(t, &host, id, desired);
                cins.extend(t.cins_over(id).into_iter().map(|c| c.id.clone()));
            }
            for id in &cins {
                match t.cin(id) {
                    Some(c) if forwards(t, c) => forwarding.insert(id.clone()),
                    _ => forwarding.remove(id),
                };
            }
            desired.forwarding = !forwarding.is_empty();
            (cens, cins)
        });
        if cens.is_empty() && cins.is_empty() {
            return revision;
        }
        let released = self.desired.take_released();
        let report = match realizer {
            Some(r) => {
                let progress = self.progress(tracked, revision);
                r.apply_cens(&self.desired, &cens, &released, Some(&progress)).await
            }
            None => realize::ApplyReport::default(),
        };
        for e in report.errors() {
            tracing::warn!(error = %e, "realization");
        }
        self.last_steps = report.steps;
        let reports = self.service.read(|t| status_reports(t, &host, &cens, &cins, &report, unavailable));
        self.record(reports, "statuses").await;
        revision
    }
}

/// Waits for changes, a wake-up or a reconcile request, and takes every
/// change already queued.
async fn next_trigger(
    changes: &mut broadcast::Receiver<Arc<Change>>,
    kick: &Kick,
    mut events: Option<&mut tokio::sync::mpsc::UnboundedReceiver<realize::watch::Event>>,
) -> Trigger {
    let mut got = Vec::new();
    let mut noticed = Vec::new();
    let mut lost = false;
    let event = async {
        match events.as_deref_mut() {
            Some(rx) => rx.recv().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        r = changes.recv() => match r {
            Ok(c) => got.push(c),
            Err(broadcast::error::RecvError::Lagged(_)) => lost = true,
            Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
        },
        _ = kick.notify.notified() => {}
        Some(e) = event => noticed.push(e),
    }
    if let Some(rx) = events {
        while let Ok(e) = rx.try_recv() {
            noticed.push(e);
        }
    }
    loop {
        match changes.try_recv() {
            Ok(c) => got.push(c),
            Err(broadcast::error::TryRecvError::Lagged(_)) => lost = true,
            Err(_) => break,
        }
    }
    // A reconcile asked for at any point (even while a round ran) is
    // honoured by the next round; a lost change forces one too.
    let forced = kick.force.swap(false, std::sync::atomic::Ordering::AcqRel);
    Trigger { full: forced || lost, changes: got, events: noticed }
}

/// Wakes the loop; `force` asks for a full reconcile. Wake-ups are never
/// lost (a permit is kept when the loop is busy) and never block.
#[derive(Default)]
struct Kick {
    notify: tokio::sync::Notify,
    force: std::sync::atomic::AtomicBool,
}

impl Kick {
    fn wake(&self, force: bool) {
        if force {
            self.force.store(true, std::sync::atomic::Ordering::Release);
        }
        self.notify.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Command;

    fn join(t: &mut Topology, host: &str, c: &str, cen: &str) {
        t.execute(&Command::ContainerJoinCen { host: host.into(), container: c.into(), cen: cen.into() }).unwrap();
    }

    /// cen3 (c9 on h1, c10 on h2), cen4 (c11, c12 on h2), cen5 (c1, c2 on h1),
    /// a CIN over cen3 and cen4, one over cen5; h1 and h2 announced.
    fn spread() -> Topology {
        let mut t = Topology::new();
        for (h, a) in [("h1", "192.0.2.1"), ("h2", "192.0.2.2")] {
            t.execute(&Command::HostAnnounce { id: h.into(), vtep: Some(a.parse().unwrap()) }).unwrap();
        }
        for cen in ["cen3", "cen4", "cen5"] {
            t.execute(&Command::CenCreate { id: cen.into() }).unwrap();
        }
        join(&mut t, "h1", "c9", "cen3");
        join(&mut t, "h2", "c10", "cen3");
        join(&mut t, "h2", "c11", "cen4");
        join(&mut t, "h2", "c12", "cen4");
        join(&mut t, "h1", "c1", "cen5");
        join(&mut t, "h1", "c2", "cen5");
        let cins = vec![
            model::CinSpec { id: "n34".into(), cens: vec!["cen3".into(), "cen4".into()] },
            model::CinSpec { id: "n5".into(), cens: vec!["cen5".into()] },
        ];
        t.execute(&Command::CinImport { cins }).unwrap();
        t.execute(&Command::CinSetMade { ids: vec!["n34".into(), "n5".into()], made: true, realizing: false }).unwrap();
        t
    }

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
        let c10 = t.member(&model::MemberKey::new("cen3", &model::ContainerKey::new("h2", "c10"))).unwrap();
        let ip = c10.addresses["n34"];
        assert_eq!(vx.neighbours.get(&ip), Some(&realize::member_mac("cen3", "h2/c10")));
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

    #[test]
    fn a_join_from_a_new_host_touches_the_cen_and_its_cins_other_cens() {
        let mut t = spread();
        t.execute(&Command::HostAnnounce { id: "h3".into(), vtep: Some("192.0.2.3".parse().unwrap()) }).unwrap();
        let rev = 100;
        let after = t
            .prepare(&Command::ContainerJoinCen { host: "h3".into(), container: "c13".into(), cen: "cen4".into() })
            .unwrap();
        let before = t.images_of(after.keys());
        t.commit(&after);
        let items = after
            .iter()
            .map(|(k, a)| crate::store::ChangeItem { key: k.clone(), before: before[k].clone(), after: a.clone() })
            .collect();
        let change = Change { revision: rev, mutation: "containerJoinCen".into(), at_ms: 0, at_us: 0, items };
        let (mut cens, mut cins) = (BTreeSet::new(), BTreeSet::new());
        affected(&t, &change, &mut cens, &mut cins);
        assert_eq!(cens, ["cen3", "cen4"].iter().map(|s| s.to_string()).collect());
        let d = desired(&t, "h1");
        let remotes: Vec<String> =
            d.cens["cen3"].vxlan.as_ref().unwrap().remotes.iter().map(|a| a.to_string()).collect();
        assert_eq!(remotes, vec!["192.0.2.2", "192.0.2.3"], "h3 now routes n34 too");
    }
}
