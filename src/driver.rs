//! The realization driver: follows the change stream, derives the desired
//! kernel state from the model, has the realizer apply it, and reports
//! status back through the service like any other change.

use crate::model::{self, EntityKey, Realization, Status, StatusReport, Topology};
use crate::realize::{self, Addr, CenNet, ContainerNet, Desired, Member, NetnsRef, Route};
use crate::service::Service;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// The desired kernel state of a topology: every made CEN with its members,
/// the addresses and routes of made CINs over made CENs.
pub fn desired(t: &Topology) -> Desired {
    let mut d = Desired::default();
    for cen in t.cens() {
        if !cen.made {
            continue;
        }
        let wiring = match t.wiring(cen) {
            Some(model::Wiring::Bridge) => realize::Wiring::Bridge,
            Some(model::Wiring::Wire) => realize::Wiring::Wire,
            None => realize::Wiring::None,
        };
        let made_cins: Vec<&model::CinRec> = t.cins_over(&cen.id).into_iter().filter(|c| c.made).collect();
        let mut gateways = Vec::new();
        for cin in &made_cins {
            if let (Some(gw), Some(slice)) = (t.gateway(cin, &cen.id), t.slice(cin, &cen.id)) {
                gateways.push(Addr { cin: cin.id.clone(), ip: gw, prefix_len: slice.prefix_len });
            }
        }
        let mut members = Vec::with_capacity(cen.members.len());
        for m in &cen.members {
            let key = m.key();
            let Some(c) = t.container(&key) else { continue };
            let akey = model::AddrKey { host: m.host.clone(), container: m.container.clone(), cen: cen.id.clone() };
            let mut addresses = Vec::new();
            let mut routes = Vec::new();
            for cin in &made_cins {
                let (Some(ip), Some(slice)) = (cin.addresses.get(&akey), t.slice(cin, &cen.id)) else { continue };
                addresses.push(Addr { cin: cin.id.clone(), ip: *ip, prefix_len: slice.prefix_len });
                if cin.cens.len() > 1 {
                    if let Some(gw) = t.gateway(cin, &cen.id) {
                        let (net, len) = model::addressing::subnet(cin.net);
                        routes.push(Route { cin: cin.id.clone(), dest: net, prefix_len: len, via: gw });
                    }
                }
            }
            if let Some((gw, cin, via_cen)) = t.default_gateway_of(c) {
                let cin_made = made_cins.iter().any(|m| m.id == cin);
                if via_cen == cen.id && cin_made {
                    routes.push(Route { cin, dest: Ipv4Addr::UNSPECIFIED, prefix_len: 0, via: gw });
                }
            }
            d.containers.entry(key.to_string()).or_insert_with(|| ContainerNet {
                id: c.id.clone(),
                netns: match &c.netns_path {
                    Some(p) => NetnsRef::Path(p.clone()),
                    None => NetnsRef::Managed,
                },
            });
            members.push(Member { container: key.to_string(), ifname: m.ifname.clone(), addresses, routes });
        }
        d.cens.insert(cen.id.clone(), CenNet { wiring, members, gateways });
    }
    d.forwarding =
        t.cins().iter().any(|c| c.made && c.cens.len() > 1 && c.cens.iter().any(|id| d.cens.contains_key(id)));
    d
}

/// Statuses the model should show after an apply, where they differ from
/// what it shows now.
fn status_reports(
    t: &Topology,
    made: &(BTreeSet<String>, BTreeSet<String>),
    report: &realize::ApplyReport,
    unavailable: Option<&str>,
) -> Vec<StatusReport> {
    let mut out = Vec::new();
    let mut push = |target: EntityKey, made: bool, current: &Realization, next: Realization| {
        if *current != next {
            out.push(StatusReport { target, realization: next, made });
        }
    };
    let outcome = |made: bool, result: Option<&Result<(), String>>| -> Realization {
        if !made {
            return Realization::default();
        }
        if let Some(why) = unavailable {
            return Realization { status: Status::Failed, message: Some(why.to_string()) };
        }
        match result {
            Some(Err(e)) => Realization { status: Status::Failed, message: Some(e.clone()) },
            _ => Realization { status: Status::Ready, message: None },
        }
    };
    // Objects made or unmade since the desired state was read wait for
    // the next round.
    for cen in t.cens().into_iter().filter(|c| c.made == made.0.contains(&c.id)) {
        push(EntityKey::Cen(cen.id.clone()), cen.made, &cen.realization, outcome(cen.made, report.cens.get(&cen.id)));
    }
    for cin in t.cins().into_iter().filter(|c| c.made == made.1.contains(&c.id)) {
        let next = if cin.made && !cin.cens.iter().any(|c| made.0.contains(c)) {
            // Addresses need interfaces: nothing to realize until a CEN is made.
            Realization { status: Status::Pending, message: Some("none of its CENs is made".into()) }
        } else {
            outcome(cin.made, report.cins.get(&cin.id))
        };
        push(EntityKey::Cin(cin.id.clone()), cin.made, &cin.realization, next);
    }
    out
}

/// Transitional statuses before an apply: PREPARING for made objects not
/// yet READY, DESTROYING for unmade ones that were realized.
fn transition_reports(t: &Topology) -> Vec<StatusReport> {
    let mut out = Vec::new();
    let mut consider = |target: EntityKey, made: bool, current: &Realization| {
        let next = match (made, current.status) {
            (true, Status::Pending) => Some(Status::Preparing),
            (false, Status::Ready | Status::Failed | Status::Preparing) => Some(Status::Destroying),
            _ => None,
        };
        if let Some(status) = next {
            out.push(StatusReport { target, realization: Realization { status, message: None }, made });
        }
    };
    for cen in t.cens() {
        consider(EntityKey::Cen(cen.id.clone()), cen.made, &cen.realization);
    }
    for cin in t.cins() {
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
        tokio::spawn(run(service, realizer, changes, Arc::clone(&kick), signals, Arc::clone(&tracked)));
        Driver { applied, reconciled, kick, tracked }
    }

    /// Registers a make/destroy (committed at `revision`) as an operation
    /// whose progress the `operation` subscription reports; returns its id.
    pub fn track(&self, service: &Service, kind: &str, revision: u64, targets: Vec<EntityKey>, make: bool) -> String {
        let names = targets.iter().map(|k| k.id()).collect();
        let id = service.operations().start(kind, names, 0);
        self.tracked.lock().push(Tracked { id: id.clone(), revision, targets, make });
        // Wake the loop (without a full reconcile) in case it already went
        // past this revision.
        self.kick.wake(false);
        id
    }

    /// Waits until the kernel reflects revision `revision` (or `limit`
    /// passes); true when it does.
    pub async fn wait_applied(&self, revision: u64, limit: Duration) -> bool {
        let mut rx = self.applied.clone();
        tokio::time::timeout(limit, rx.wait_for(|r| *r >= revision)).await.is_ok_and(|r| r.is_ok())
    }

    /// Asks for a full reconcile: the kernel is looked at again and drift
    /// is repaired, whether or not the model changed.
    pub fn reconcile(&self) {
        self.kick.wake(true);
    }

    /// Runs a full reconcile and waits (up to `limit`) until one that
    /// started after this call has finished; true when it has.
    pub async fn reconcile_and_wait(&self, limit: Duration) -> bool {
        let mut rx = self.reconciled.clone();
        // A round under way may have looked at the kernel before this call:
        // wait for the one after it.
        let target = *rx.borrow_and_update() + 2;
        let waited = tokio::time::timeout(limit, async {
            while *rx.borrow_and_update() < target {
                // Keep one forced round queued until the one that counts ran.
                self.reconcile();
                if rx.changed().await.is_err() {
                    return false;
                }
            }
            true
        })
        .await;
        waited.unwrap_or(false)
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

/// Whether something made waits for the realizer (a retry of a failed
/// make changes the status only, not the desired state).
fn preparing(t: &Topology) -> bool {
    t.cens().iter().any(|c| c.made && c.realization.status == Status::Preparing)
        || t.cins().iter().any(|c| c.made && c.realization.status == Status::Preparing)
}

/// What the loop tells waiters.
struct Signals {
    applied: watch::Sender<u64>,
    reconciled: watch::Sender<u64>,
}

/// What was made when the desired state was read.
fn made_sets(t: &Topology) -> (BTreeSet<String>, BTreeSet<String>) {
    (
        t.cens().iter().filter(|c| c.made).map(|c| c.id.clone()).collect(),
        t.cins().iter().filter(|c| c.made).map(|c| c.id.clone()).collect(),
    )
}

async fn run(
    service: Arc<Service>,
    realizer: Result<realize::Realizer, String>,
    mut changes: broadcast::Receiver<Arc<crate::store::Change>>,
    kick: Arc<Kick>,
    signals: Signals,
    tracked: Arc<parking_lot::Mutex<Vec<Tracked>>>,
) {
    let (mut realizer, unavailable) = match realizer {
        Ok(r) => (Some(r), None),
        Err(e) => (None, Some(format!("realizer unavailable: {e}"))),
    };
    let mut last: Option<Desired> = None;
    // Steps of the latest apply: an operation registered just after the
    // round that did its work reports those.
    let mut last_steps = 0usize;
    let mut force = true;
    loop {
        let ((want, made, retrying), revision) = service.read_at(|t| (desired(t), made_sets(t), preparing(t)));
        // Operations whose change this round covers.
        let ops: Vec<Tracked> = {
            let mut all = tracked.lock();
            let (mine, later): (Vec<Tracked>, Vec<Tracked>) = all.drain(..).partition(|o| o.revision <= revision);
            *all = later;
            mine
        };
        if force || retrying || last.as_ref() != Some(&want) {
            let transitions = service.read(transition_reports);
            if !transitions.is_empty() {
                if let Err(e) = service.execute(model::Command::SetStatus { reports: transitions }).await {
                    tracing::error!(error = %e, "recording transitional statuses");
                }
            }
            let report = match realizer.as_mut() {
                Some(r) => {
                    if force && last.is_some() {
                        if let Err(e) = r.refresh().await {
                            tracing::warn!(error = %e, "looking at the kernel again");
                        }
                    }
                    let svc = Arc::clone(&service);
                    let ids: Vec<String> = ops.iter().map(|o| o.id.clone()).collect();
                    let progress = move |done: usize, total: usize| {
                        for id in &ids {
                            svc.operations().progress(id, done as u32, total as u32);
                        }
                    };
                    r.apply(&want, Some(&progress)).await
                }
                None => realize::ApplyReport::default(),
            };
            for e in report.errors() {
                tracing::warn!(error = %e, "realization");
            }
            last_steps = report.steps;
            let reports = service.read(|t| status_reports(t, &made, &report, unavailable.as_deref()));
            if !reports.is_empty() {
                if let Err(e) = service.execute(model::Command::SetStatus { reports }).await {
                    tracing::error!(error = %e, "recording statuses");
                }
            }
            last = Some(want);
        }
        signals.applied.send_replace(revision);
        if force {
            signals.reconciled.send_modify(|n| *n += 1);
        }
        for op in ops {
            if service.operations().get(&op.id).is_some_and(|o| o.steps_total == 0) {
                service.operations().progress(&op.id, last_steps as u32, last_steps as u32);
            }
            let outcome = service.read(|t| operation_outcome(t, &op));
            service.operations().finish(&op.id, outcome);
        }
        force = next_trigger(&mut changes, &kick).await;
    }
}

/// Waits for a change, a wake-up or a reconcile request; true for the last.
async fn next_trigger(changes: &mut broadcast::Receiver<Arc<crate::store::Change>>, kick: &Kick) -> bool {
    tokio::select! {
        r = changes.recv() => {
            if matches!(r, Err(broadcast::error::RecvError::Closed)) {
                std::future::pending::<()>().await;
            }
        }
        _ = kick.notify.notified() => {}
    }
    // Coalesce whatever else arrived meanwhile.
    while let Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) = changes.try_recv() {}
    // A reconcile asked for at any point (even while a round ran) is
    // honoured by the next round.
    kick.force.swap(false, std::sync::atomic::Ordering::AcqRel)
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
