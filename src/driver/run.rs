//! The driver's async side: [`Driver::start`] spawns the loop, which
//! waits for a trigger (changes on the stream, a wake-up, a reconcile
//! request, what the kernel listeners noticed), works out what it affects,
//! has the realizer apply it and records the statuses; the [`Driver`]
//! handle lets the API wait for a revision, follow a make/destroy and ask
//! for a reconcile. Between rounds it also opens the namespaces an attach
//! is about to bind (a hint sent before the attach commits), so the round
//! that wires one finds it open and looked at.
//!
//! Invariants: one round at a time, and every change received is handled
//! by a round (a lagging stream forces a full one); the revision told to
//! waiters only grows; a reconcile asked for while a round runs is honoured
//! by the next one; the statuses a round records are changes like any
//! other, but they affect nothing, so they never cause another apply.

use super::affected::{made_cens_of, Affected};
use super::desired::{desired, forwards, put_cen, put_cen_members};
use super::status::{operation_outcome, status_reports, status_reports_focused, transition_reports};
use crate::model::{self, Change, EntityKey, Record, StatusReport};
use crate::realize::{self, Desired, Realizer};
use crate::service::{Realization, Service};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

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
    /// Namespaces to open ahead of the change that is to wire them.
    warm: tokio::sync::mpsc::Sender<Warm>,
}

/// A namespace to open ahead: its path and the (device, inode) bound.
type Warm = (String, (u64, u64));

/// Namespaces waiting to be opened ahead, at most: past that, a hint is
/// dropped (the round opens the namespace itself, as without one).
const WARM_QUEUE: usize = 1024;

impl Driver {
    /// Starts the driver on a realizer that started (the caller deals with
    /// one that could not): its first round is a full one.
    pub fn start(service: Arc<Service>, realizer: Realizer) -> Driver {
        let (applied_tx, applied) = watch::channel(0u64);
        let (reconciled_tx, reconciled) = watch::channel(0u64);
        let kick = Arc::new(Kick::default());
        let changes = service.subscribe();
        let tracked = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let signals = Signals { applied: applied_tx, reconciled: reconciled_tx };
        let foreign = Arc::new(parking_lot::Mutex::new(realizer.foreign()));
        let (warm, warm_rx) = tokio::sync::mpsc::channel(WARM_QUEUE);
        let looper = Loop {
            foreign: Arc::clone(&foreign),
            host: service.host_id().to_string(),
            service,
            desired: Desired::default(),
            forwarding: BTreeSet::new(),
            last_steps: 0,
        };
        let inputs = Inputs { changes, kick: Arc::clone(&kick), warm: warm_rx };
        tokio::spawn(looper.run(realizer, inputs, signals, Arc::clone(&tracked)));
        Driver { applied, reconciled, kick, tracked, foreign, warm }
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
impl Realization for Driver {
    fn needs_kernel(&self, service: &Service, change: &Change) -> bool {
        service.read(|t| {
            let made_now = Affected::of(t, change).cens.iter().any(|c| t.cen(c).is_some_and(|c| c.making.made));
            // Something made before this change (a destroy, a delete).
            let made_before = change.items.iter().any(|i| match &i.before {
                Some(Record::Cen(c)) => c.making.made,
                Some(Record::Cin(c)) => c.making.made,
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

    fn warm(&self, path: &str, ident: (u64, u64)) {
        // A hint: when the queue is full the round opens it, as without.
        let _ = self.warm.try_send((path.to_string(), ident));
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

/// What the loop tells waiters.
struct Signals {
    applied: watch::Sender<u64>,
    reconciled: watch::Sender<u64>,
}

/// What the loop waits on.
struct Inputs {
    changes: broadcast::Receiver<Arc<Change>>,
    kick: Arc<Kick>,
    warm: tokio::sync::mpsc::Receiver<Warm>,
}

/// What woke the loop.
struct Trigger {
    /// A full reconcile was asked for (or the change stream was lost).
    full: bool,
    /// The changes received, in revision order.
    changes: Vec<Arc<Change>>,
    /// What the realizer noticed in the kernel meanwhile.
    events: Vec<realize::watch::Event>,
    /// Namespaces to open ahead of their change.
    warm: Vec<Warm>,
    /// No round is due: only namespaces to open ahead, or the time to let
    /// go of those no round wired.
    no_round: bool,
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
        mut realizer: Realizer,
        mut inputs: Inputs,
        signals: Signals,
        tracked: Arc<parking_lot::Mutex<Vec<Tracked>>>,
    ) {
        let mut events = realizer.take_events();
        let mut trigger =
            Trigger { full: true, changes: Vec::new(), events: Vec::new(), warm: Vec::new(), no_round: false };
        let mut first = true;
        let mut applied = 0u64;
        loop {
            if !trigger.warm.is_empty() {
                realizer.warm(std::mem::take(&mut trigger.warm)).await;
            }
            if trigger.no_round {
                // Rounds let go of what none wired too; between them, this.
                realizer.let_go_of_unwired(self.desired.index());
                let until = realizer.unwired_until();
                trigger = next_trigger(&mut inputs, events.as_mut(), until).await;
                continue;
            }
            let revision = if trigger.full {
                self.full_round(&mut realizer, first, &tracked).await
            } else {
                // A change is applied once it was received and worked on:
                // the model may already be past it, but the revision told to
                // waiters is that of the last change handled.
                let last = trigger.changes.iter().map(|c| c.revision).max().unwrap_or(applied);
                let mut noticed = self.noticed_cens(&trigger.events);
                noticed.extend(realizer.absorb_events(&trigger.events));
                self.scoped_round(&mut realizer, &trigger.changes, noticed, &tracked).await;
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
            let until = realizer.unwired_until();
            trigger = next_trigger(&mut inputs, events.as_mut(), until).await;
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
            let outcome = self.service.read(|t| operation_outcome(t, &op.targets, op.make));
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
                    by_runtime && c.netns.as_ref().is_some_and(|b| !self.service.still_bound(b))
                })
                .cloned()
                .collect()
        });
        let resolved = futures_util::future::join_all(gone.iter().map(|c| async move {
            let said = c.netns_path.clone().unwrap_or_default();
            (c, self.service.resolve_netns(&said).await)
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
        realizer: &mut Realizer,
        first: bool,
        tracked: &parking_lot::Mutex<Vec<Tracked>>,
    ) -> u64 {
        self.rebind_restarted().await;
        let transitions = self.service.read(transition_reports);
        self.record(transitions, "transitional statuses").await;
        let host = self.host.clone();
        let ((want, forwarding, everything), revision) = self.service.read_at(|t| {
            let d = desired(t, &host);
            let fwd: BTreeSet<String> = t.cins_iter().filter(|c| forwards(t, c)).map(|c| c.id.clone()).collect();
            let cens: BTreeSet<String> = t.cens_iter().map(|c| c.id.clone()).collect();
            let cins: BTreeSet<String> = t.cins_iter().map(|c| c.id.clone()).collect();
            (d, fwd, Affected { cens, cins, ..Affected::default() })
        });
        if !first {
            if let Err(e) = realizer.refresh().await {
                tracing::warn!(error = %e, "looking at the kernel again");
            }
        }
        let progress = self.progress(tracked, revision);
        let report = realizer.apply(&want, Some(&progress)).await;
        *self.foreign.lock() = realizer.foreign();
        for e in report.errors() {
            tracing::warn!(error = %e, "realization");
        }
        self.last_steps = report.steps;
        self.desired = want;
        self.forwarding = forwarding;
        let reports = self.service.read(|t| status_reports(t, &host, &everything, &report));
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
        realizer: &mut Realizer,
        changes: &[Arc<Change>],
        noticed: BTreeSet<String>,
        tracked: &parking_lot::Mutex<Vec<Tracked>>,
    ) -> u64 {
        let started = std::time::Instant::now();
        let host = self.host.clone();
        let desired = &mut self.desired;
        let forwarding = &mut self.forwarding;
        let ((scope, focus), revision) = self.service.read_at(|t| {
            // What the kernel listeners noticed is looked at whole.
            let mut scope = Affected { whole: noticed.clone(), cens: noticed, ..Affected::default() };
            for c in changes {
                scope.add(t, c);
            }
            let mut focus = realize::Focus::new();
            for id in &scope.cens {
                if scope.whole.contains(id) {
                    put_cen(t, &host, id, desired);
                } else if let Some(members) = put_cen_members(t, &host, id, desired, &scope.containers) {
                    focus.insert(id.clone(), members);
                }
                scope.cins.extend(t.cins_over(id).into_iter().map(|c| c.id.clone()));
            }
            for id in &scope.cins {
                match t.cin(id) {
                    Some(c) if forwards(t, c) => forwarding.insert(id.clone()),
                    _ => forwarding.remove(id),
                };
            }
            desired.forwarding = !forwarding.is_empty();
            (scope, focus)
        });
        if scope.cens.is_empty() && scope.cins.is_empty() {
            return revision;
        }
        let desired_us = started.elapsed().as_micros() as u64;
        let released = self.desired.take_released();
        let progress = self.progress(tracked, revision);
        let report = realizer.apply_cens(&self.desired, &scope.cens, &released, &focus, Some(&progress)).await;
        for e in report.errors() {
            tracing::warn!(error = %e, "realization");
        }
        let applied_us = started.elapsed().as_micros() as u64;
        self.last_steps = report.steps;
        let reports = self.service.read(|t| status_reports_focused(t, &host, &scope, &focus, &report));
        let statuses = reports.len();
        self.record(reports, "statuses").await;
        tracing::debug!(
            revision,
            desired_us,
            applied_us,
            statuses,
            recorded_us = started.elapsed().as_micros() as u64,
            "round timing"
        );
        revision
    }
}

/// Waits for changes, a wake-up, a reconcile request, namespaces to open
/// ahead or (`until`) the time to let go of those no round wired, and takes
/// every change, event and namespace already queued. The namespaces are
/// taken last: each is hinted before its change commits, so a change taken
/// comes with its namespace.
async fn next_trigger(
    inputs: &mut Inputs,
    mut events: Option<&mut tokio::sync::mpsc::UnboundedReceiver<realize::watch::Event>>,
    until: Option<std::time::Instant>,
) -> Trigger {
    let Inputs { changes, kick, warm } = inputs;
    let mut got = Vec::new();
    let mut noticed = Vec::new();
    let mut warms = Vec::new();
    let mut woken = false;
    let mut lost = false;
    let later = std::time::Instant::now() + Duration::from_secs(3600);
    let expiry = tokio::time::sleep_until(until.unwrap_or(later).into());
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
        _ = kick.notify.notified() => woken = true,
        Some(e) = event => noticed.push(e),
        Some(w) = warm.recv() => warms.push(w),
        _ = expiry, if until.is_some() => {}
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
    while warms.len() < WARM_QUEUE {
        match warm.try_recv() {
            Ok(w) => warms.push(w),
            Err(_) => break,
        }
    }
    // A reconcile asked for at any point (even while a round ran) is
    // honoured by the next round; a lost change forces one too.
    let forced = kick.force.swap(false, std::sync::atomic::Ordering::AcqRel);
    let no_round = !woken && !forced && !lost && got.is_empty() && noticed.is_empty();
    Trigger { full: forced || lost, changes: got, events: noticed, warm: warms, no_round }
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
    use tokio::sync::mpsc;

    struct Ends {
        changes: broadcast::Sender<Arc<Change>>,
        warm: mpsc::Sender<Warm>,
        inputs: Inputs,
    }

    fn ends() -> Ends {
        let (changes, rx) = broadcast::channel(16);
        let (warm, warm_rx) = mpsc::channel(WARM_QUEUE);
        Ends { changes, warm, inputs: Inputs { changes: rx, kick: Arc::new(Kick::default()), warm: warm_rx } }
    }

    fn change(revision: u64) -> Arc<Change> {
        Arc::new(Change {
            revision,
            mutation: "containerAttach".into(),
            at_ms: 0,
            at_us: 0,
            actor: String::new(),
            items: Vec::new(),
        })
    }

    const A: (u64, u64) = (1, 2);

    /// The next trigger, within a bound that only catches a hang (a
    /// wake-up or a change lost would leave the loop waiting).
    async fn next(inputs: &mut Inputs, until: Option<std::time::Instant>) -> Trigger {
        tokio::time::timeout(Duration::from_secs(60), next_trigger(inputs, None, until))
            .await
            .expect("the loop is woken")
    }

    #[tokio::test]
    async fn a_hint_alone_runs_no_round() {
        let mut e = ends();
        e.warm.try_send(("/run/netns/a".into(), A)).unwrap();
        let t = next(&mut e.inputs, None).await;
        assert!(t.no_round && !t.full && t.changes.is_empty());
        assert_eq!(t.warm, vec![("/run/netns/a".to_string(), A)]);
    }

    #[tokio::test]
    async fn a_hint_with_a_wake_up_or_a_change_still_runs_the_round() {
        let mut e = ends();
        e.warm.try_send(("/run/netns/a".into(), A)).unwrap();
        e.inputs.kick.wake(false);
        let t = next(&mut e.inputs, None).await;
        // Whichever woke the loop, the wake-up is not lost: this trigger
        // or the next one runs a round.
        let t = if t.no_round { next(&mut e.inputs, None).await } else { t };
        assert!(!t.no_round);

        // A change whose hint was sent before it committed: whichever
        // woke the loop, one trigger has both (the loop opens the
        // namespace, then runs the round).
        let mut e = ends();
        e.warm.try_send(("/run/netns/b".into(), A)).unwrap();
        e.changes.send(change(7)).unwrap();
        let t = next(&mut e.inputs, None).await;
        assert_eq!(t.changes.iter().map(|c| c.revision).collect::<Vec<_>>(), vec![7]);
        assert_eq!(t.warm.len(), 1);
        assert!(!t.no_round);
    }

    #[tokio::test]
    async fn the_time_to_let_go_wakes_the_loop_without_a_round() {
        let mut e = ends();
        let until = std::time::Instant::now() + Duration::from_millis(20);
        let t = next(&mut e.inputs, Some(until)).await;
        assert!(t.no_round && t.warm.is_empty() && t.changes.is_empty());
        assert!(std::time::Instant::now() >= until);
    }
}
