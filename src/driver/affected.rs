//! Which records a committed change affects in the kernel: the CENs whose
//! desired state it may alter (their derivation is redone, and only theirs)
//! and the CINs whose status it may alter.
//!
//! Invariants: a function of the model (as it is after the change) and the
//! change's before/after images only; status reports alone affect nothing
//! (else every report would cause another round); it may name more CENs
//! than changed (deriving one again is cheap, missing one is drift).

use crate::model::{CenRec, Change, ChangeItem, CinRec, ContainerKey, EntityKey, MemberKey, Record, Status, Topology};
use std::collections::BTreeSet;

/// What a round has to look at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Affected {
    /// The CENs whose kernel state the changes may alter.
    pub cens: BTreeSet<String>,
    /// The CINs the changes touched.
    pub cins: BTreeSet<String>,
    /// Of `cens`, those a change of the CEN itself, of a CIN over it or of
    /// a host's VTEP touched: looked at whole (the others may be looked at
    /// through their changed members only).
    pub whole: BTreeSet<String>,
    /// The containers (`host/id`) whose membership or namespace changed.
    pub containers: BTreeSet<String>,
}

impl Affected {
    /// What `change` affects, read against `t` as it is after it.
    pub fn of(t: &Topology, change: &Change) -> Affected {
        let mut a = Affected::default();
        a.add(t, change);
        a
    }

    /// Adds what `change` affects.
    pub fn add(&mut self, t: &Topology, change: &Change) {
        for item in &change.items {
            match &item.key {
                EntityKey::Cen(id) => self.whole_of(|a| a.cen(t, id, item)),
                EntityKey::Member(k) => self.member(t, k),
                EntityKey::Cin(id) => self.whole_of(|a| a.cin(item, id)),
                EntityKey::Container(k) => self.container(t, k, item),
                EntityKey::Host(h) => self.whole_of(|a| a.host(t, h, item)),
                EntityKey::Cpool(_) => {}
            }
        }
    }

    /// Adds what `f` finds, every CEN of it to be looked at whole.
    fn whole_of(&mut self, f: impl FnOnce(&mut Affected)) {
        let mut a = Affected::default();
        f(&mut a);
        self.whole.extend(a.cens.iter().cloned());
        self.cens.extend(a.cens);
        self.cins.extend(a.cins);
    }

    /// A CEN made or destroyed (or retried): it, and the CINs over it; the
    /// hosts present on it are present on those CINs' other CENs too.
    fn cen(&mut self, t: &Topology, id: &str, item: &ChangeItem) {
        let (b, a) = (cen_of(&item.before), cen_of(&item.after));
        let st = |c: Option<&CenRec>| c.map(|c| (c.making.made, c.making.realization.status));
        if made_changed(st(b), st(a)) {
            self.cens.insert(id.to_string());
            self.cins.extend(t.cins_over(id).into_iter().map(|c| c.id.clone()));
            self.other_slices(t, id);
        }
    }

    /// A join or leave (or new addresses) changes its CEN; where default
    /// routes and routes between slices go may change on the container's
    /// other CENs too; and the hosts the CEN's CINs are present on may
    /// change, with their other CENs.
    fn member(&mut self, t: &Topology, k: &MemberKey) {
        self.containers.insert(k.container_key().to_string());
        self.cens.insert(k.cen.clone());
        made_cens_of(t, &k.container_key(), &mut self.cens);
        self.other_slices(t, &k.cen);
    }

    /// A CIN made or destroyed (or retried), or reshaped: it and its CENs,
    /// before and after.
    fn cin(&mut self, item: &ChangeItem, id: &str) {
        let (b, a) = (cin_of(&item.before), cin_of(&item.after));
        let st = |c: Option<&CinRec>| c.map(|c| (c.making.made, c.making.realization.status));
        let shape = |c: Option<&CinRec>| c.map(|c| (c.cens.clone(), c.subnet, c.prefix_len));
        if made_changed(st(b), st(a)) || shape(b) != shape(a) {
            self.cins.insert(id.to_string());
            for c in b.into_iter().chain(a) {
                self.cens.extend(c.cens.iter().cloned());
            }
        }
    }

    /// A container's namespace or default route changed, or it was retried:
    /// its made CENs.
    fn container(&mut self, t: &Topology, k: &ContainerKey, item: &ChangeItem) {
        let shape = |r: &Option<Record>| match r {
            Some(Record::Container(c)) => Some((c.netns_path.clone(), c.netns.clone(), c.default_route.clone())),
            _ => None,
        };
        // A container whose gone workload was bound again (its FAILED
        // status cleared by the user's command) is a retry.
        let failed =
            |r: &Option<Record>| matches!(r, Some(Record::Container(c)) if c.realization.status == Status::Failed);
        let retry = failed(&item.before) && !failed(&item.after);
        if shape(&item.before) != shape(&item.after) || retry {
            self.containers.insert(k.to_string());
            made_cens_of(t, k, &mut self.cens);
        }
    }

    /// A host's VTEP address changed: the CENs it shares with others send
    /// elsewhere.
    fn host(&mut self, t: &Topology, h: &str, item: &ChangeItem) {
        let vtep = |r: &Option<Record>| match r {
            Some(Record::Host(h)) => h.vtep,
            _ => None,
        };
        if vtep(&item.before) == vtep(&item.after) {
            return;
        }
        for c in t.containers_of_host(h) {
            for m in t.memberships_of(&c.key()) {
                if t.cen(&m.cen).is_some_and(|c| c.making.made) && self.cens.insert(m.cen.clone()) {
                    self.other_slices(t, &m.cen);
                }
            }
        }
    }

    /// The CENs of the made CINs over `cen` that span several CENs: a host
    /// present on `cen` routes between all of their slices.
    fn other_slices(&mut self, t: &Topology, cen: &str) {
        for cin in t.cins_over(cen).into_iter().filter(|c| c.making.made && c.cens.len() > 1) {
            self.cens.extend(cin.cens.iter().cloned());
        }
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

/// The made CENs of a container.
pub(super) fn made_cens_of(t: &Topology, key: &ContainerKey, out: &mut BTreeSet<String>) {
    out.extend(t.cens_of(key).into_iter().filter(|c| c.making.made).map(|c| c.id.clone()));
}

fn cen_of(r: &Option<Record>) -> Option<&CenRec> {
    match r {
        Some(Record::Cen(c)) => Some(c),
        _ => None,
    }
}

fn cin_of(r: &Option<Record>) -> Option<&CinRec> {
    match r {
        Some(Record::Cin(c)) => Some(c),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::desired::desired;
    use crate::driver::tests::{change_of, spread};
    use crate::model::{Command, Standing, StatusReport};

    fn set(ids: &[&str]) -> BTreeSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_join_from_a_new_host_touches_the_cen_and_its_cins_other_cens() {
        let mut t = spread();
        t.execute(&Command::HostAnnounce { id: "h3".into(), vtep: Some("192.0.2.3".parse().unwrap()) }).unwrap();
        let change = change_of(
            &mut t,
            &Command::ContainerJoinCen { host: "h3".into(), container: "c13".into(), cen: "cen4".into() },
        );
        let a = Affected::of(&t, &change);
        assert_eq!(a.cens, set(&["cen3", "cen4"]));
        assert!(a.whole.is_empty(), "a join is looked at through its member");
        assert_eq!(a.containers, set(&["h3/c13"]));
        let d = desired(&t, "h1");
        let remotes: Vec<String> =
            d.cens["cen3"].vxlan.as_ref().unwrap().remotes.iter().map(|a| a.to_string()).collect();
        assert_eq!(remotes, vec!["192.0.2.2", "192.0.2.3"], "h3 now routes n34 too");
    }

    #[test]
    fn status_reports_alone_affect_nothing() {
        let mut t = spread();
        let report = StatusReport {
            target: EntityKey::Cen("cen5".into()),
            realization: Standing { status: Status::Ready, message: None },
            made: true,
            host: Some("h1".into()),
        };
        let change = change_of(&mut t, &Command::SetStatus { reports: vec![report] });
        assert!(!change.items.is_empty(), "the report changed the record");
        assert_eq!(Affected::of(&t, &change), Affected::default());
    }

    #[test]
    fn a_destroy_names_the_cen_and_the_cins_over_it_and_a_retry_does_too() {
        let mut t = spread();
        let change = change_of(&mut t, &Command::CenSetMade { ids: vec!["cen5".into()], made: false, realizing: true });
        let a = Affected::of(&t, &change);
        assert_eq!((&a.cens, a.cins), (&set(&["cen5"]), set(&["n5"])));
        assert_eq!(a.whole, a.cens, "a destroy is looked at whole");

        // Made again, failed, made again: the retry is a change for the kernel.
        change_of(&mut t, &Command::CenSetMade { ids: vec!["cen5".into()], made: true, realizing: true });
        let failed = StatusReport {
            target: EntityKey::Cen("cen5".into()),
            realization: Standing { status: Status::Failed, message: Some("no".into()) },
            made: true,
            host: None,
        };
        change_of(&mut t, &Command::SetStatus { reports: vec![failed] });
        let retry = change_of(&mut t, &Command::CenSetMade { ids: vec!["cen5".into()], made: true, realizing: true });
        assert_eq!(Affected::of(&t, &retry).cens, set(&["cen5"]));
    }

    #[test]
    fn a_cin_destroyed_names_its_cens_and_a_vtep_moved_the_cens_its_host_shares() {
        let mut t = spread();
        let change = change_of(&mut t, &Command::CinSetMade { ids: vec!["n34".into()], made: false, realizing: true });
        let a = Affected::of(&t, &change);
        assert_eq!((a.cens, a.cins), (set(&["cen3", "cen4"]), set(&["n34"])));

        let mut t = spread();
        t.execute(&Command::CenSetMade {
            ids: vec!["cen3".into(), "cen4".into(), "cen5".into()],
            made: true,
            realizing: false,
        })
        .unwrap();
        let moved =
            change_of(&mut t, &Command::HostAnnounce { id: "h2".into(), vtep: Some("192.0.2.22".parse().unwrap()) });
        // h2 has members on cen3 and cen4 (n34's slices); none on cen5.
        assert_eq!(Affected::of(&t, &moved).cens, set(&["cen3", "cen4"]));
        let same =
            change_of(&mut t, &Command::HostAnnounce { id: "h2".into(), vtep: Some("192.0.2.22".parse().unwrap()) });
        assert_eq!(Affected::of(&t, &same), Affected::default());
    }
}
