//! Applying a plan: what is about to be made is recorded first, then the
//! plan's phases run in order (the steps of a phase concurrently), each
//! step's effect is absorbed into the observed state, and new links are
//! learned; the report says, per CEN and CIN, what went wrong.
//!
//! Invariants: nothing is made before the ledger holds it; a CEN that
//! failed in one phase has its later steps skipped (and its CINs told
//! why); a namespace whose step failed is marked dirty and looked at
//! again on the next apply; bound namespaces nobody wants are let go.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::desired::{self, Desired};
use super::error::{KernelError, LedgerError};
use super::exec::Effect;
use super::observed::{LinkState, NsId, NsState, Observed};
use super::plan::{self, GroupIndex, Op, Plan, Scope, Step, FLOOD};
use super::report::{ApplyError, ApplyReport};
use super::{blocking, ledger, Progress, Realizer};

/// Whether the ledger records each link made in a namespace (one that is
/// not ours alone: the host's, the fabric, one bound by path), not just the
/// namespace.
fn links_recorded(ns: &NsId) -> bool {
    matches!(ns, NsId::Host | NsId::Path(_) | NsId::Fabric)
}

impl Realizer {
    /// Make the kernel match `desired`, looking at everything (adoption,
    /// reconcile). Never fails as a whole: the report says, per CEN and per
    /// CIN, what went wrong; the next apply converges.
    pub async fn apply(&mut self, desired: &Desired, progress: Option<Progress<'_>>) -> ApplyReport {
        let index = desired::Index::of(desired);
        self.groups = GroupIndex::of(desired, &self.cfg.prefix);
        self.apply_with(desired, &index, Scope::All, progress).await
    }

    /// Make the kernel match `desired` for the given CENs only (those a
    /// change touched): their members' namespaces and their links. Cost
    /// follows the size of those CENs, not of the topology. `desired` must
    /// be kept with [`Desired::put_cen`] / [`Desired::remove_cen`].
    ///
    /// `released` names the namespaces whose containers no desired CEN uses
    /// any more (from [`Desired::take_released`]): they go. `focus` names,
    /// per CEN, the members that alone changed (see [`plan::Focus`]): only
    /// their namespaces are opened and checked, and only their links
    /// planned; a CEN it does not name, or that cannot be focused, is
    /// looked at whole.
    pub async fn apply_cens(
        &mut self,
        desired: &Desired,
        cens: &BTreeSet<String>,
        released: &BTreeSet<NsId>,
        focus: &plan::Focus,
        progress: Option<Progress<'_>>,
    ) -> ApplyReport {
        for cen in cens {
            self.groups.set(&self.cfg.prefix, cen, desired.cens.contains_key(cen));
        }
        let focus: plan::Focus = focus
            .iter()
            .filter(|(c, _)| cens.contains(*c) && self.groups.focusable(&self.cfg.prefix, desired, c))
            .map(|(c, f)| (c.clone(), f.clone()))
            .collect();
        self.apply_with(desired, desired.index(), Scope::Cens(cens, released, &focus), progress).await
    }

    /// Opens what the scope needs, plans, records, then runs the plan's
    /// phases in order; the report says what failed.
    async fn apply_with(
        &mut self,
        desired: &Desired,
        index: &desired::Index,
        scope: Scope<'_>,
        progress: Option<Progress<'_>>,
    ) -> ApplyReport {
        let started = std::time::Instant::now();
        let want_paths = self.open_paths(desired, scope).await;
        let opened_us = started.elapsed().as_micros() as u64;
        let mut plan = plan::plan_scoped(&self.observed, desired, index, &self.cfg, scope, &self.groups);
        let planned_us = started.elapsed().as_micros() as u64;
        let report =
            ApplyReport { steps: plan.steps.len(), unavailable: plan.unavailable.clone(), ..ApplyReport::default() };
        // What is about to be made is recorded first, durably: a crash
        // after this point leaves nothing unaccounted for.
        if let Err(e) = self.record(&plan).await {
            tracing::error!(error = %e, "not realizing: ownership could not be recorded");
            let mut report = report;
            for c in &plan.cens {
                report.cens.insert(c.clone(), Err(ApplyError::NotRecorded(e.clone())));
            }
            return report;
        }
        let recorded_us = started.elapsed().as_micros() as u64;
        let gone_names = self.names_of_doomed_groups(&plan);
        let total = plan.steps.len();
        let done = AtomicUsize::new(0);
        let tick = || {
            let n = done.fetch_add(1, Ordering::Relaxed) + 1;
            if let Some(p) = progress {
                p(n, total);
            }
        };
        let mut failed = Failures::refused(&plan);
        for (phase, steps) in by_phase(std::mem::take(&mut plan.steps)).into_iter().enumerate() {
            if steps.is_empty() {
                continue;
            }
            let run = failed.skip_failed(steps, &tick);
            if phase == 0 {
                // Close our handles on namespaces about to go, so the kernel
                // can free them.
                for s in &run {
                    if let Op::DeleteNetns { ns } = &s.op {
                        self.close(ns);
                    }
                }
            }
            let results = self.run_phase(&run, &tick).await;
            self.settle(&run, results, &gone_names, &mut failed).await;
        }
        let kernel_us = started.elapsed().as_micros() as u64;
        self.let_go_of_paths(&want_paths, index, scope);
        self.let_go_of_unwired(index);
        self.start_listeners().await;
        tracing::debug!(
            opened_us,
            planned_us,
            recorded_us,
            kernel_us,
            done_us = started.elapsed().as_micros() as u64,
            steps = report.steps,
            "apply timing"
        );
        failed.report(report, &plan)
    }

    /// Takes in the results of one phase: effects absorbed, failures noted
    /// (the namespace marked dirty), deleted objects forgotten by the
    /// ledger, and the ifindexes of new links learned (needed for masters,
    /// addresses and routes): from the kernel's answer to the create where
    /// it told them (bridges and veths, `nl::add_link`), else asked for one
    /// link at a time.
    async fn settle(
        &mut self,
        run: &[Step],
        results: Vec<Result<Effect, KernelError>>,
        gone_names: &BTreeMap<(NsId, u32), Vec<String>>,
        failed: &mut Failures,
    ) {
        let prefix = self.cfg.prefix.clone();
        let mut created: BTreeSet<(NsId, String)> = BTreeSet::new();
        let mut told = Vec::new();
        let mut unmade: Vec<ledger::Entry> = Vec::new();
        for (s, r) in run.iter().zip(results) {
            match r {
                // Links the kernel's answer told of are not asked for.
                Ok(effect @ (Effect::Made(..) | Effect::MadeVeth(..))) => {
                    self.absorb(effect);
                    continue;
                }
                Ok(effect) => {
                    unmade.extend(self.unmade(&s.op, gone_names));
                    self.absorb(effect)
                }
                Err(error) => {
                    let e = ApplyError::Step { step: s.op.describe(&prefix), error };
                    tracing::warn!("{e}");
                    if let Some(ns) = s.op.ns() {
                        self.dirty.insert(ns.clone());
                    }
                    failed.note(s, e);
                    continue;
                }
            }
            match &s.op {
                Op::CreateBridge { ns, name, .. } | Op::CreateVxlan { ns, name, .. } => {
                    created.insert((ns.clone(), name.clone()));
                }
                Op::CreateVeth { a, b, group } => {
                    created.insert((b.ns.clone(), b.name.clone()));
                    told.push((a.clone(), (b.ns.clone(), b.name.clone()), *group));
                }
                _ => {}
            }
        }
        self.forget_unmade(unmade).await;
        if !created.is_empty() {
            self.learn(created, &[]).await;
        }
        let (untold, pairs) = self.take_in_told(told);
        if !untold.is_empty() {
            self.learn(untold, &pairs).await;
        }
    }

    /// Takes what was deleted out of the ledger.
    async fn forget_unmade(&self, unmade: Vec<ledger::Entry>) {
        let (Some(l), false) = (self.ledger.clone(), unmade.is_empty()) else { return };
        match blocking(move || l.forget(&unmade)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "forgetting what was deleted"),
            Err(e) => tracing::warn!(error = %e, "forgetting what was deleted"),
        }
    }

    /// Drops path namespaces nobody wants any more (holding them would keep
    /// a dead container's namespace alive). A full apply looks at every
    /// bound one held (they sort last: a range, not a walk of every
    /// handle); a scoped one only at those whose last desired container
    /// went since the last apply (`released`): no other can have become
    /// unwanted, so its cost follows the change, not the host's namespaces.
    fn let_go_of_paths(&mut self, want_paths: &BTreeSet<NsId>, index: &desired::Index, scope: Scope<'_>) {
        let gone: Vec<NsId> = match scope {
            Scope::All => self
                .handles
                .range(NsId::Path(String::new())..)
                .map(|(n, _)| n)
                .filter(|n| matches!(n, NsId::Path(_)) && !want_paths.contains(*n))
                .cloned()
                .collect(),
            Scope::Cens(_, released, _) => released
                .iter()
                .filter(|n| matches!(n, NsId::Path(_)) && self.handles.contains_key(*n))
                .filter(|n| !want_paths.contains(*n) && index.in_ns(n).is_none())
                .cloned()
                .collect(),
        };
        for ns in gone {
            self.let_go_of(&ns);
        }
    }

    /// Records in the ledger every namespace the plan creates and every
    /// link it creates in a namespace that is not ours alone (the host's,
    /// the fabric, one bound by path).
    async fn record(&self, plan: &Plan) -> Result<(), LedgerError> {
        let Some(l) = self.ledger.clone() else { return Ok(()) };
        let prefix = &self.cfg.prefix;
        let mut entries: Vec<ledger::Entry> = Vec::new();
        for s in &plan.steps {
            match &s.op {
                Op::CreateNetns { ns } => entries.push((ledger::ns_key(ns, prefix), String::new())),
                Op::CreateBridge { ns, name, .. } | Op::CreateVxlan { ns, name, .. } if links_recorded(ns) => {
                    entries.push((ledger::ns_key(ns, prefix), name.clone()))
                }
                Op::CreateVeth { a, b, .. } => {
                    for end in [a, b] {
                        if links_recorded(&end.ns) {
                            entries.push((ledger::ns_key(&end.ns, prefix), end.name.clone()));
                        }
                    }
                }
                _ => {}
            }
        }
        if entries.is_empty() {
            return Ok(());
        }
        blocking(move || l.record(&entries)).await.map_err(|e| LedgerError::new(e.context.clone(), &e.cause))?
    }

    /// Names of the links a group delete in a namespace whose links are
    /// recorded takes (to forget them once gone).
    fn names_of_doomed_groups(&self, plan: &Plan) -> BTreeMap<(NsId, u32), Vec<String>> {
        let mut out = BTreeMap::new();
        for s in &plan.steps {
            if let Op::DeleteGroup { ns, group } = &s.op {
                if links_recorded(ns) {
                    let names = self
                        .observed
                        .in_group(*group)
                        .filter(|(n, _)| n == ns)
                        .filter_map(|(n, i)| self.observed.ns(n).and_then(|st| st.link_by_index(*i)))
                        .map(|l| l.name.clone())
                        .collect();
                    out.insert((ns.clone(), *group), names);
                }
            }
        }
        out
    }

    /// What a successful delete takes out of the ledger.
    fn unmade(&self, op: &Op, groups: &BTreeMap<(NsId, u32), Vec<String>>) -> Vec<ledger::Entry> {
        if self.ledger.is_none() {
            return Vec::new();
        }
        let prefix = &self.cfg.prefix;
        match op {
            // The namespace, and the recorded ends of its veths elsewhere
            // (the kernel deletes them with it).
            Op::DeleteNetns { ns } => {
                let mut out = vec![(ledger::ns_key(ns, prefix), String::new())];
                let peers = self.observed.ns(ns).into_iter().flat_map(|st| st.links()).filter_map(|l| {
                    let pns = l.peer_ns.as_ref().filter(|p| *p != ns && links_recorded(p))?;
                    let peer = self.observed.ns(pns)?.link_by_index(l.peer?)?;
                    Some((ledger::ns_key(pns, prefix), peer.name.clone()))
                });
                out.extend(peers);
                out
            }
            Op::DeleteLink { ns, name, .. } if links_recorded(ns) => {
                vec![(ledger::ns_key(ns, prefix), name.clone())]
            }
            Op::DeleteGroup { ns, group } => groups
                .get(&(ns.clone(), *group))
                .into_iter()
                .flatten()
                .map(|n| (ledger::ns_key(ns, prefix), n.clone()))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Takes in what a finished step changed.
    fn absorb(&mut self, effect: Effect) {
        let obs = &mut self.observed;
        match effect {
            Effect::None => {}
            Effect::Opened(ns, h, forwarding) => {
                let lo = LinkState::new_loopback();
                obs.insert_ns(ns.clone(), NsState::new(vec![lo], vec![], forwarding));
                self.handles.insert(ns.clone(), *h);
                self.listen_pending.insert(ns);
            }
            Effect::NsGone(ns) => {
                obs.drop_peers_of(&ns);
                obs.remove_ns(&ns);
                self.close(&ns);
            }
            Effect::LinkGone(..) | Effect::GroupGone(..) | Effect::Up(..) | Effect::Forwarding(..) => {
                absorb_link(obs, effect)
            }
            Effect::Made(ns, link) => obs.insert_link(&ns, *link),
            Effect::MadeVeth(ends) => {
                for (ns, link) in *ends {
                    obs.insert_link(&ns, link);
                }
            }
            _ => absorb_entry(obs, effect),
        }
    }
}

/// A link gone or set up, or forwarding set, in the observed state.
fn absorb_link(obs: &mut Observed, effect: Effect) {
    match effect {
        Effect::LinkGone(ns, index) => obs.remove_link(&ns, index),
        Effect::GroupGone(ns, group) => {
            let idxs: Vec<u32> = obs.in_group(group).filter(|(n, _)| *n == ns).map(|(_, i)| *i).collect();
            for i in idxs {
                obs.remove_link(&ns, i);
            }
        }
        Effect::Up(ns, name) => {
            let idx = obs.link(&ns, &name).map(|l| l.index);
            if let Some(l) = idx.and_then(|i| obs.ns_mut(&ns).and_then(|s| s.link_mut(i))) {
                l.up = true;
            }
        }
        Effect::Forwarding(ns, on) => {
            if let Some(s) = obs.ns_mut(&ns) {
                s.forwarding = Some(on);
            }
        }
        _ => {}
    }
}

/// An address, route, FDB or neighbour entry added or removed in the
/// observed state.
fn absorb_entry(obs: &mut Observed, effect: Effect) {
    match effect {
        Effect::Addr(ns, idx, ip, plen) => {
            if let Some(l) = obs.ns_mut(&ns).and_then(|s| s.link_mut(idx)) {
                if !l.addresses.contains(&(ip, plen)) {
                    l.addresses.push((ip, plen));
                }
            }
        }
        Effect::AddrGone(ns, idx, ip, plen) => {
            if let Some(l) = obs.ns_mut(&ns).and_then(|s| s.link_mut(idx)) {
                l.addresses.retain(|a| *a != (ip, plen));
            }
        }
        Effect::Route(ns, r) => {
            if let Some(s) = obs.ns_mut(&ns) {
                s.routes.push(r);
            }
        }
        Effect::RouteGone(ns, r) => {
            if let Some(s) = obs.ns_mut(&ns) {
                s.routes.retain(|x| *x != r);
            }
        }
        Effect::Fdb(ns, idx, mac, remote, present) => {
            if let Some(l) = obs.ns_mut(&ns).and_then(|s| s.link_mut(idx)) {
                match (mac == FLOOD, present) {
                    (true, true) => _ = l.fdb.insert(remote),
                    (true, false) => _ = l.fdb.remove(&remote),
                    (false, true) => _ = l.macs.insert(mac, remote),
                    (false, false) => _ = l.macs.remove(&mac),
                }
            }
        }
        Effect::Neigh(ns, idx, ip, mac) => {
            if let Some(l) = obs.ns_mut(&ns).and_then(|s| s.link_mut(idx)) {
                match mac {
                    Some(mac) => l.neighbours.insert(ip, mac),
                    None => l.neighbours.remove(&ip),
                };
            }
        }
        _ => {}
    }
}

/// The steps of a plan by phase, in order.
fn by_phase(steps: Vec<Step>) -> Vec<Vec<Step>> {
    let mut phases: Vec<Vec<Step>> = vec![Vec::new(); Op::PHASES];
    for s in steps {
        let p = s.op.phase();
        phases[p].push(s);
    }
    phases
}

/// The first failure of each CEN and CIN met in one apply, and the
/// failures of teardown, in the order met.
struct Failures {
    cens: BTreeMap<String, ApplyError>,
    cins: BTreeMap<String, ApplyError>,
    teardown: Vec<ApplyError>,
}

impl Failures {
    /// Starts with the CENs the planner refused.
    fn refused(plan: &Plan) -> Failures {
        let cens = plan.errors.iter().map(|(k, why)| (k.clone(), ApplyError::Refused(why.clone()))).collect();
        Failures { cens, cins: BTreeMap::new(), teardown: Vec::new() }
    }

    /// The steps still to run: those of CENs that already failed are
    /// skipped (counted as done), and their CINs told why.
    fn skip_failed(&mut self, steps: Vec<Step>, tick: &dyn Fn()) -> Vec<Step> {
        let mut run = Vec::new();
        for s in steps {
            if let Some(c) = s.cens.iter().find(|c| self.cens.contains_key(*c)) {
                if let Some(cin) = &s.cin {
                    self.cins.entry(cin.clone()).or_insert_with(|| ApplyError::CenNotWired(c.clone()));
                }
                tick();
            } else {
                run.push(s);
            }
        }
        run
    }

    /// A step failed: its CIN, its CENs, or the teardown.
    fn note(&mut self, s: &Step, e: ApplyError) {
        if let Some(cin) = &s.cin {
            self.cins.entry(cin.clone()).or_insert(e);
        } else if s.cens.is_empty() {
            self.teardown.push(e);
        } else {
            for c in &s.cens {
                self.cens.entry(c.clone()).or_insert_with(|| e.clone());
            }
        }
    }

    /// The report: every CEN and CIN of the plan, Ok or its first error.
    fn report(self, mut report: ApplyReport, plan: &Plan) -> ApplyReport {
        for c in &plan.cens {
            report.cens.insert(c.clone(), self.cens.get(c).map_or(Ok(()), |e| Err(e.clone())));
        }
        for c in &plan.cins {
            report.cins.insert(c.clone(), self.cins.get(c).map_or(Ok(()), |e| Err(e.clone())));
        }
        report.teardown_errors = self.teardown;
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realize::error::KernelError;
    use nix::errno::Errno;

    fn step(op: Op, cens: &[&str], cin: Option<&str>) -> Step {
        Step { op, cens: cens.iter().map(|c| c.to_string()).collect(), cin: cin.map(String::from) }
    }

    fn addr(cin: &str) -> Step {
        let op = Op::AddAddr {
            ns: NsId::Managed("c1".into()),
            name: "cen1".into(),
            ip: std::net::Ipv4Addr::new(10, 10, 0, 10),
            prefix_len: 16,
        };
        step(op, &["cen1"], Some(cin))
    }

    fn kernel_said_no(s: &Step) -> ApplyError {
        ApplyError::Step { step: s.op.describe("t-"), error: KernelError::nix("add_addr", "c1", Errno::EPERM) }
    }

    #[test]
    fn a_failed_cen_skips_its_later_steps_and_tells_its_cins() {
        let mut plan = Plan::default();
        plan.cens.extend(["cen1".to_string(), "cen2".to_string()]);
        plan.cins.insert("n1".into());
        plan.errors.insert("cen1".into(), "wiring Wire does not fit 3 members".into());
        let mut failed = Failures::refused(&plan);
        let ticks = std::cell::Cell::new(0);
        let tick = || ticks.set(ticks.get() + 1);
        let up = step(Op::SetUp { ns: NsId::Fabric, name: "b2".into() }, &["cen2"], None);
        let run = failed.skip_failed(vec![addr("n1"), up.clone()], &tick);
        assert_eq!(run, vec![up], "the refused CEN's step is skipped");
        assert_eq!(ticks.get(), 1, "a skipped step counts as done");
        let report = failed.report(ApplyReport::default(), &plan);
        assert_eq!(report.cens["cen1"], Err(ApplyError::Refused("wiring Wire does not fit 3 members".into())));
        assert_eq!(report.cens["cen2"], Ok(()));
        assert_eq!(report.cins["n1"], Err(ApplyError::CenNotWired("cen1".into())));
    }

    #[test]
    fn a_failed_step_goes_to_its_cin_its_cens_or_the_teardown() {
        let mut plan = Plan::default();
        plan.cens.insert("cen1".into());
        plan.cins.insert("n1".into());
        let mut failed = Failures::refused(&plan);
        let a = addr("n1");
        failed.note(&a, kernel_said_no(&a));
        let gone = step(Op::DeleteGroup { ns: NsId::Fabric, group: 0x10 }, &[], None);
        failed.note(&gone, kernel_said_no(&gone));
        let report = failed.report(ApplyReport::default(), &plan);
        assert_eq!(report.cens["cen1"], Ok(()), "a CIN's failure is the CIN's");
        let cin = report.cins["n1"].as_ref().err().and_then(ApplyError::kernel).and_then(|k| k.errno);
        assert_eq!(cin, Some(Errno::EPERM));
        assert_eq!(report.teardown_errors.len(), 1);
        assert!(report.errors()[0].starts_with("CIN n1: adding 10.10.0.10/16 to cen1 in "), "{:?}", report.errors());
    }

    #[test]
    fn phases_keep_plan_order() {
        let first = step(Op::SetUp { ns: NsId::Fabric, name: "a".into() }, &[], None);
        let second = step(Op::SetUp { ns: NsId::Fabric, name: "b".into() }, &[], None);
        let ns = step(Op::CreateNetns { ns: NsId::Fabric }, &[], None);
        let phases = by_phase(vec![first.clone(), ns.clone(), second.clone()]);
        assert_eq!(phases.len(), Op::PHASES);
        assert_eq!(phases[1], vec![ns]);
        assert_eq!(phases[2], vec![first, second]);
    }
}
