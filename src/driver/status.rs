//! The status derivation: from the model and what an apply reported, the
//! statuses the model should show (`READY`, `FAILED` with the reason, back
//! to `PENDING` once destroyed), as [`StatusReport`]s the service records
//! like any other change; the transitional statuses before a full apply;
//! and how a tracked make/destroy ended.
//!
//! Invariants: pure functions of the model and the apply report (no I/O,
//! no async); a report is produced only where the status differs from what
//! the model shows, so recording them and deriving again yields nothing
//! (the loop never feeds itself); with a VTEP address, an object present on
//! several hosts is reported per host (this server's part only), one
//! present nowhere as a whole.

use super::affected::Affected;
use super::desired::has_vtep;
use crate::model::{
    CenRec, CinRec, ContainerKey, EntityKey, MemberKey, MemberRec, Record, Standing, Status, StatusReport, Topology,
};
use crate::realize::{ApplyReport, Focus};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;

/// Statuses the model should show after an apply of `scope.cens` (and the
/// CINs over them, and `scope.cins`), where they differ from what it shows
/// now.
pub(super) fn status_reports(t: &Topology, host: &str, scope: &Affected, report: &ApplyReport) -> Vec<StatusReport> {
    status_reports_focused(t, host, scope, &Focus::new(), report)
}

/// [`status_reports`] after an apply that looked at some CENs through
/// their members in `focus` alone: of those CENs, only those members'
/// containers are looked at (the others' namespaces were not looked at,
/// so what the report says of them did not change), so the cost follows
/// the members that changed, not the size of their CENs.
pub(super) fn status_reports_focused(
    t: &Topology,
    host: &str,
    scope: &Affected,
    focus: &Focus,
    report: &ApplyReport,
) -> Vec<StatusReport> {
    let d = Derivation { t, host, multi: has_vtep(t, host), report, focus };
    let mut out = Vec::new();
    let mut all_cins: BTreeSet<&str> = scope.cins.iter().map(String::as_str).collect();
    for cen in scope.cens.iter().filter_map(|id| t.cen(id)) {
        all_cins.extend(t.cins_over(&cen.id).into_iter().map(|c| c.id.as_str()));
        d.cen(cen, &mut out);
    }
    for cin in all_cins.into_iter().filter_map(|id| t.cin(id)) {
        d.cin(cin, &scope.cens, &mut out);
    }
    out.extend(d.containers(&scope.cens));
    out
}

/// What one derivation reads.
struct Derivation<'a> {
    t: &'a Topology,
    host: &'a str,
    /// This host announced a VTEP address: objects present on hosts have a
    /// part per host.
    multi: bool,
    report: &'a ApplyReport,
    /// The members alone looked at, of the CENs it names.
    focus: &'a Focus,
}

impl Derivation<'_> {
    /// A CEN's status from its result in the apply.
    fn cen(&self, cen: &CenRec, out: &mut Vec<StatusReport>) {
        let present = if self.multi { self.t.presence(&cen.id) } else { BTreeSet::new() };
        let next = outcome(cen.making.made, self.report.cens.get(&cen.id));
        let now = (&cen.making.realization, &cen.making.parts);
        self.push(out, EntityKey::Cen(cen.id.clone()), cen.making.made, now, &present, next);
    }

    /// A CIN's status: PENDING while none of its CENs is made, FAILED when
    /// one of its made CENs failed (in this apply, or before and not applied
    /// now), else its own result in the apply.
    fn cin(&self, cin: &CinRec, applied: &BTreeSet<String>, out: &mut Vec<StatusReport>) {
        let t = self.t;
        let made_cens: Vec<&CenRec> = cin.cens.iter().filter_map(|c| t.cen(c)).filter(|c| c.making.made).collect();
        let present = if self.multi { t.cin_presence(cin) } else { BTreeSet::new() };
        // The CEN statuses (this host's parts) as this round leaves them.
        let mine = |c: &CenRec| {
            let r = if self.multi { c.making.parts.get(self.host) } else { None };
            r.unwrap_or(&c.making.realization).status
        };
        let failed_cen = made_cens.iter().find_map(|c| match self.report.cens.get(&c.id) {
            Some(Err(_)) => Some(c.id.clone()),
            None if mine(c) == Status::Failed && !applied.contains(&c.id) => Some(c.id.clone()),
            _ => None,
        });
        let next = if cin.making.made && made_cens.is_empty() {
            // Addresses need interfaces: nothing to realize until a CEN is made.
            Standing { status: Status::Pending, message: Some("none of its CENs is made".into()) }
        } else if let (true, Some(c)) = (cin.making.made, &failed_cen) {
            Standing { status: Status::Failed, message: Some(format!("CEN {c} failed")) }
        } else {
            outcome(cin.making.made, self.report.cins.get(&cin.id))
        };
        self.push(
            out,
            EntityKey::Cin(cin.id.clone()),
            cin.making.made,
            (&cin.making.realization, &cin.making.parts),
            &present,
            next,
        );
    }

    /// Containers on their own: FAILED while their bound workload is gone
    /// (their CENs are wired without them), back to derived once wired.
    fn containers(&self, cens: &BTreeSet<String>) -> Vec<StatusReport> {
        let t = self.t;
        let mut own = Vec::new();
        let mut seen = BTreeSet::new();
        for cen in cens.iter().filter_map(|id| t.cen(id)) {
            let members: Vec<&MemberRec> = match self.focus.get(&cen.id) {
                Some(keys) => keys
                    .iter()
                    .filter_map(|k| k.split_once('/'))
                    .filter_map(|(h, c)| t.member(&MemberKey::new(&cen.id, &ContainerKey::new(h, c))))
                    .collect(),
                None => t.members_in_order(&cen.id),
            };
            for m in members.into_iter().filter(|m| m.host == self.host) {
                let key = m.key();
                let Some(c) = t.container(&key) else { continue };
                let next = match self.report.unavailable.get(&key.to_string()) {
                    Some(why) => Standing { status: Status::Failed, message: Some(why.clone()) },
                    None => Standing::default(),
                };
                if c.realization != next && seen.insert(key.clone()) {
                    own.push(StatusReport {
                        host: None,
                        made: t.container_is_made(&key),
                        target: EntityKey::Container(key),
                        realization: next,
                    });
                }
            }
        }
        own
    }

    /// Reports `next` for an object showing `now` (its status as a whole
    /// and its hosts' parts) where it differs: this host's part where the
    /// object is present here (taken back once it is gone from here), the
    /// whole where it is present nowhere or on a single host.
    fn push(
        &self,
        out: &mut Vec<StatusReport>,
        target: EntityKey,
        made: bool,
        now: (&Standing, &BTreeMap<String, Standing>),
        present: &BTreeSet<&str>,
        next: Standing,
    ) {
        let (whole, parts) = now;
        let host = self.host;
        if self.multi && (present.contains(host) || parts.contains_key(host)) {
            let next = if present.contains(host) { next } else { Standing::default() };
            if parts.get(host).cloned().unwrap_or_default() != next {
                out.push(StatusReport { target, realization: next, made, host: Some(host.to_string()) });
            }
        } else if (!self.multi || present.is_empty()) && *whole != next {
            out.push(StatusReport { target, realization: next, made, host: None });
        }
    }
}

/// The status of an object from its result in the apply: READY, or FAILED
/// with the error; PENDING once unmade.
fn outcome<E: Display>(made: bool, result: Option<&Result<(), E>>) -> Standing {
    if !made {
        return Standing::default();
    }
    match result {
        Some(Err(e)) => Standing { status: Status::Failed, message: Some(e.to_string()) },
        _ => Standing { status: Status::Ready, message: None },
    }
}

/// Transitional statuses before a full apply: PREPARING for made objects
/// not yet READY, DESTROYING for unmade ones that were realized.
pub(super) fn transition_reports(t: &Topology) -> Vec<StatusReport> {
    let mut out = Vec::new();
    let mut consider = |target: EntityKey, made: bool, current: &Standing| {
        let next = match (made, current.status) {
            (true, Status::Pending) => Some(Status::Preparing),
            (false, Status::Ready | Status::Failed | Status::Preparing) => Some(Status::Destroying),
            _ => None,
        };
        if let Some(status) = next {
            out.push(StatusReport { target, realization: Standing { status, message: None }, made, host: None });
        }
    };
    for cen in t.cens_iter() {
        consider(EntityKey::Cen(cen.id.clone()), cen.making.made, &cen.making.realization);
    }
    for cin in t.cins_iter() {
        consider(EntityKey::Cin(cin.id.clone()), cin.making.made, &cin.making.realization);
    }
    out
}

/// How a make (READY wanted) or destroy (PENDING wanted) of `targets`
/// ended: every target in the wanted state, or why not.
pub(super) fn operation_outcome(t: &Topology, targets: &[EntityKey], make: bool) -> Result<(), String> {
    let want = if make { Status::Ready } else { Status::Pending };
    let mut problems = Vec::new();
    for key in targets {
        let realization = match t.get(key) {
            Some(Record::Cen(c)) => &c.making.realization,
            Some(Record::Cin(c)) => &c.making.realization,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::tests::{join, spread};
    use crate::model::{CinSpec, Command, ContainerKey};
    use crate::realize::ApplyError;

    fn scope(cens: &[&str], cins: &[&str]) -> Affected {
        Affected {
            cens: cens.iter().map(|s| s.to_string()).collect(),
            cins: cins.iter().map(|s| s.to_string()).collect(),
            ..Affected::default()
        }
    }

    fn ok(ids: &[&str]) -> BTreeMap<String, Result<(), ApplyError>> {
        ids.iter().map(|s| (s.to_string(), Ok(()))).collect()
    }

    fn ready() -> Standing {
        Standing { status: Status::Ready, message: None }
    }

    /// Records the reports as the loop does, then derives again: nothing
    /// more to say.
    fn record_and_derive_again(
        t: &mut Topology,
        host: &str,
        s: &Affected,
        r: &ApplyReport,
        reports: Vec<StatusReport>,
    ) {
        t.execute(&Command::SetStatus { reports }).unwrap();
        assert_eq!(status_reports(t, host, s, r), vec![], "a second derivation after recording says nothing");
    }

    /// One host, no VTEP: a CEN of two and a CIN over it, made; the apply
    /// went well: both READY as a whole.
    fn one_host() -> Topology {
        let mut t = Topology::new();
        t.execute(&Command::CenCreate { id: "w".into() }).unwrap();
        join(&mut t, "h", "a", "w");
        join(&mut t, "h", "b", "w");
        t.execute(&Command::CinImport { cins: vec![CinSpec { id: "n".into(), cens: vec!["w".into()] }] }).unwrap();
        t.execute(&Command::CinSetMade { ids: vec!["n".into()], made: true, realizing: true }).unwrap();
        t
    }

    #[test]
    fn on_one_host_a_good_apply_reports_the_cen_and_its_cins_ready_as_a_whole() {
        let mut t = one_host();
        let s = scope(&["w"], &[]);
        let report = ApplyReport { cens: ok(&["w"]), cins: ok(&["n"]), ..Default::default() };
        let got = status_reports(&t, "h", &s, &report);
        let targets: Vec<(EntityKey, Standing, Option<String>)> =
            got.iter().map(|r| (r.target.clone(), r.realization.clone(), r.host.clone())).collect();
        assert_eq!(
            targets,
            vec![(EntityKey::Cen("w".into()), ready(), None), (EntityKey::Cin("n".into()), ready(), None)]
        );
        assert!(got.iter().all(|r| r.made));
        record_and_derive_again(&mut t, "h", &s, &report, got);
        assert_eq!(t.cen("w").unwrap().making.realization, ready());
    }

    #[test]
    fn a_failed_cen_fails_with_its_error_and_its_cins_name_it() {
        let t = one_host();
        let report = ApplyReport {
            cens: [("w".to_string(), Err(ApplyError::Refused("EEXIST".to_string())))].into(),
            ..Default::default()
        };
        let got = status_reports(&t, "h", &scope(&["w"], &[]), &report);
        let cen = got.iter().find(|r| r.target == EntityKey::Cen("w".into())).unwrap();
        assert_eq!(cen.realization, Standing { status: Status::Failed, message: Some("EEXIST".into()) });
        let cin = got.iter().find(|r| r.target == EntityKey::Cin("n".into())).unwrap();
        assert_eq!(cin.realization, Standing { status: Status::Failed, message: Some("CEN w failed".into()) });
    }

    #[test]
    fn a_made_cin_without_a_made_cen_is_pending_and_destroyed_objects_go_back_to_pending() {
        let mut t = one_host();
        let report = ApplyReport { cens: ok(&["w"]), cins: ok(&["n"]), ..Default::default() };
        let s = scope(&["w"], &[]);
        let first = status_reports(&t, "h", &s, &report);
        t.execute(&Command::SetStatus { reports: first }).unwrap();
        t.execute(&Command::CenSetMade { ids: vec!["w".into()], made: false, realizing: true }).unwrap();
        let got = status_reports(&t, "h", &s, &ApplyReport::default());
        let by = |k: EntityKey| got.iter().find(|r| r.target == k).map(|r| r.realization.clone());
        assert_eq!(by(EntityKey::Cen("w".into())), Some(Standing::default()));
        let waiting = Standing { status: Status::Pending, message: Some("none of its CENs is made".into()) };
        assert_eq!(by(EntityKey::Cin("n".into())), Some(waiting));
    }

    /// A CEN looked at through some members: only their containers are
    /// derived; what the others show stays (their namespaces were not
    /// looked at).
    #[test]
    fn a_focused_cen_derives_its_focused_members_alone() {
        let t = one_host();
        let s = scope(&["w"], &[]);
        let gone = ApplyReport {
            cens: ok(&["w"]),
            cins: ok(&["n"]),
            unavailable: [("h/a".to_string(), "gone".to_string()), ("h/b".to_string(), "gone".to_string())].into(),
            ..Default::default()
        };
        let containers = |got: Vec<StatusReport>| -> Vec<EntityKey> {
            got.into_iter().map(|r| r.target).filter(|k| matches!(k, EntityKey::Container(_))).collect()
        };
        let focus: Focus = [("w".to_string(), ["h/b".to_string()].into())].into();
        let focused = containers(status_reports_focused(&t, "h", &s, &focus, &gone));
        assert_eq!(focused, vec![EntityKey::Container(ContainerKey::new("h", "b"))]);
        let whole = containers(status_reports(&t, "h", &s, &gone));
        assert_eq!(whole.len(), 2, "unfocused, every member is derived");
    }

    #[test]
    fn a_container_whose_workload_is_gone_fails_on_its_own_and_is_cleared_once_wired() {
        let mut t = one_host();
        let s = scope(&["w"], &[]);
        let gone = ApplyReport {
            cens: ok(&["w"]),
            cins: ok(&["n"]),
            unavailable: [("h/a".to_string(), "its namespace is gone".to_string())].into(),
            ..Default::default()
        };
        let got = status_reports(&t, "h", &s, &gone);
        let own: Vec<&StatusReport> = got.iter().filter(|r| matches!(r.target, EntityKey::Container(_))).collect();
        assert_eq!(own.len(), 1);
        assert_eq!(own[0].target, EntityKey::Container(ContainerKey::new("h", "a")));
        assert_eq!(own[0].realization.status, Status::Failed);
        assert!(own[0].made);
        record_and_derive_again(&mut t, "h", &s, &gone, got);
        let wired = ApplyReport { cens: ok(&["w"]), cins: ok(&["n"]), ..Default::default() };
        let got = status_reports(&t, "h", &s, &wired);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].realization, Standing::default());
    }

    /// The multi-host case: each server reports its own host's part of a
    /// CEN or CIN present on several hosts; the whole follows the parts.
    #[test]
    fn a_cen_on_several_hosts_is_reported_per_host_and_taken_back_once_gone() {
        let mut t = spread();
        let s = scope(&["cen3", "cen4", "cen5"], &[]);
        let report =
            ApplyReport { cens: ok(&["cen3", "cen4", "cen5"]), cins: ok(&["n34", "n5"]), ..Default::default() };
        let h1 = status_reports(&t, "h1", &s, &report);
        let part = |got: &[StatusReport], k: EntityKey| got.iter().find(|r| r.target == k).cloned();
        // cen3 spans h1 and h2: h1's part.
        let cen3 = part(&h1, EntityKey::Cen("cen3".into())).unwrap();
        assert_eq!((cen3.host.as_deref(), cen3.realization.clone()), (Some("h1"), ready()));
        // cen4 has no member on h1, but h1 is present on it (n34 routes).
        assert_eq!(part(&h1, EntityKey::Cen("cen4".into())).unwrap().host.as_deref(), Some("h1"));
        // n34 is present on h1 and h2 (members of its made CENs there).
        assert_eq!(part(&h1, EntityKey::Cin("n34".into())).unwrap().host.as_deref(), Some("h1"));
        // cen5 is on h1 alone: still a part (h1 is where it is present).
        assert_eq!(part(&h1, EntityKey::Cen("cen5".into())).unwrap().host.as_deref(), Some("h1"));
        record_and_derive_again(&mut t, "h1", &s, &report, h1);
        // h1's part is READY; h2's (given when made) waits for h2's server,
        // and so does the whole.
        let cen3 = t.cen("cen3").unwrap();
        assert_eq!(cen3.making.parts.get("h1"), Some(&ready()));
        assert_eq!(cen3.making.parts.get("h2").map(|r| r.status), Some(Status::Preparing));
        assert_eq!(cen3.making.realization.status, Status::Preparing);

        // h2 fails on cen3: its part FAILED, the whole names h2.
        let bad = ApplyReport {
            cens: [("cen3".to_string(), Err(ApplyError::Refused("no VXLAN".to_string())))].into(),
            ..Default::default()
        };
        let h2 = status_reports(&t, "h2", &scope(&["cen3"], &[]), &bad);
        let cen3 = part(&h2, EntityKey::Cen("cen3".into())).unwrap();
        assert_eq!(cen3.host.as_deref(), Some("h2"));
        assert_eq!(cen3.realization.status, Status::Failed);
        t.execute(&Command::SetStatus { reports: h2 }).unwrap();
        let whole = &t.cen("cen3").unwrap().making.realization;
        assert_eq!((whole.status, whole.message.as_deref()), (Status::Failed, Some("on host h2: no VXLAN")));

        // h1's member leaves cen3: h1 is no longer present on it, and takes
        // its part back (PENDING removes it).
        t.execute(&Command::ContainerLeaveCen { host: "h1".into(), container: "c9".into(), cen: "cen3".into() })
            .unwrap();
        let after = status_reports(&t, "h1", &scope(&["cen3"], &[]), &report);
        let cen3 = part(&after, EntityKey::Cen("cen3".into())).unwrap();
        assert_eq!((cen3.host.as_deref(), cen3.realization.clone()), (Some("h1"), Standing::default()));
        t.execute(&Command::SetStatus { reports: after }).unwrap();
        assert!(!t.cen("cen3").unwrap().making.parts.contains_key("h1"));
    }

    #[test]
    fn before_a_full_apply_made_objects_prepare_and_realized_unmade_ones_destroy() {
        // Made without a transition (as a store written before them holds).
        let mut t = Topology::new();
        for cen in ["w", "idle"] {
            t.execute(&Command::CenCreate { id: cen.into() }).unwrap();
        }
        join(&mut t, "h", "a", "w");
        join(&mut t, "h", "b", "w");
        t.execute(&Command::CinImport { cins: vec![CinSpec { id: "n".into(), cens: vec!["w".into()] }] }).unwrap();
        t.execute(&Command::CinSetMade { ids: vec!["n".into()], made: true, realizing: false }).unwrap();
        let transitions = |t: &Topology| -> Vec<(EntityKey, Status)> {
            transition_reports(t).into_iter().map(|r| (r.target, r.realization.status)).collect()
        };
        let (w, n) = (EntityKey::Cen("w".into()), EntityKey::Cin("n".into()));
        assert_eq!(transitions(&t), vec![(w.clone(), Status::Preparing), (n.clone(), Status::Preparing)]);
        let ready_report = StatusReport { target: n.clone(), realization: ready(), made: true, host: None };
        t.execute(&Command::SetStatus { reports: vec![ready_report] }).unwrap();
        t.execute(&Command::CinSetMade { ids: vec!["n".into()], made: false, realizing: false }).unwrap();
        assert_eq!(transitions(&t), vec![(w, Status::Preparing), (n, Status::Destroying)]);
    }

    #[test]
    fn an_operation_ends_well_when_every_target_reached_the_wanted_status() {
        let mut t = one_host();
        let targets = vec![EntityKey::Cen("w".into()), EntityKey::Cin("n".into()), EntityKey::Cen("gone".into())];
        let err = operation_outcome(&t, &targets, true).unwrap_err();
        assert_eq!(err, "cen w: Preparing; cin n: Preparing");
        let reports = status_reports(
            &t,
            "h",
            &scope(&["w"], &[]),
            &ApplyReport { cens: ok(&["w"]), cins: ok(&["n"]), ..Default::default() },
        );
        t.execute(&Command::SetStatus { reports }).unwrap();
        assert_eq!(operation_outcome(&t, &targets, true), Ok(()));
        assert!(operation_outcome(&t, &targets, false).is_err());
    }
}
