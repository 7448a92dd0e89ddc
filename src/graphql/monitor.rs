//! The member view behind `cinMonitor`: the members of one CIN (or, legacy,
//! of one CEN) kept up to date from the change records themselves, so that
//! each event describes exactly what one revision did.
//!
//! A member is one container interface: (host, container, CEN) with its
//! address in the CIN and the container's tag. In CEN mode the address is
//! the one the first CIN over that CEN (by id) gives it, or none.

use crate::model::{AddrKey, CenRec, CinRec, ContainerKey, EntityKey, Record, Topology};
use crate::store::Change;
use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub key: AddrKey,
    pub address: Option<Ipv4Addr>,
    pub tag: Option<String>,
}

/// What one change (or a resync) did to the member set.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub created: Vec<Member>,
    pub updated: Vec<Member>,
    pub deleted: Vec<Member>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.updated.is_empty() && self.deleted.is_empty()
    }
}

#[derive(Debug, Clone)]
enum Target {
    Cin { id: String, rec: Option<CinRec> },
    Cen { id: String, rec: Option<CenRec>, cins: BTreeMap<String, CinRec> },
}

#[derive(Debug, Clone)]
pub struct MemberView {
    target: Target,
    tag_filter: Option<String>,
    /// Tags of the containers of the current (unfiltered) members.
    tags: HashMap<ContainerKey, Option<String>>,
    members: BTreeMap<AddrKey, Member>,
}

fn tag_in(t: &Topology, k: &ContainerKey) -> Option<String> {
    t.container(k).and_then(|c| c.tag.clone())
}

impl MemberView {
    /// The view of a CIN, or of a CEN where no CIN has that id; `None` when
    /// neither exists.
    pub fn open(t: &Topology, id: &str, tag_filter: Option<String>) -> Option<Self> {
        let target = if let Some(cin) = t.cin(id) {
            Target::Cin { id: id.to_string(), rec: Some(cin.clone()) }
        } else if let Some(cen) = t.cen(id) {
            let cins = t.cins_over(id).into_iter().map(|c| (c.id.clone(), c.clone())).collect();
            Target::Cen { id: id.to_string(), rec: Some(cen.clone()), cins }
        } else {
            return None;
        };
        let mut view = MemberView { target, tag_filter, tags: HashMap::new(), members: BTreeMap::new() };
        view.members = view.compute(&HashMap::new(), &|k| tag_in(t, k));
        Some(view)
    }

    /// Whether this view follows a CEN (the legacy reading of the id).
    pub fn is_cen(&self) -> bool {
        matches!(self.target, Target::Cen { .. })
    }

    /// The current members, in address order (members without an address
    /// last), then by host, container and CEN.
    pub fn members(&self) -> Vec<Member> {
        sorted(self.members.values().cloned().collect())
    }

    /// The interfaces that belong to the target, with their addresses.
    fn raw(&self) -> Vec<(AddrKey, Option<Ipv4Addr>)> {
        match &self.target {
            Target::Cin { rec, .. } => {
                rec.iter().flat_map(|c| c.addresses.iter().map(|(k, ip)| (k.clone(), Some(*ip)))).collect()
            }
            Target::Cen { id, rec, cins } => rec
                .iter()
                .flat_map(|cen| cen.members.iter())
                .map(|m| {
                    let key = AddrKey { host: m.host.clone(), container: m.container.clone(), cen: id.clone() };
                    let ip = cins.values().find_map(|c| c.addresses.get(&key).copied());
                    (key, ip)
                })
                .collect(),
        }
    }

    /// Members from the records held, with tags from `fresh` (this change's
    /// container records), then the cache, then `lookup`.
    fn compute(
        &mut self,
        fresh: &HashMap<ContainerKey, Option<String>>,
        lookup: &dyn Fn(&ContainerKey) -> Option<String>,
    ) -> BTreeMap<AddrKey, Member> {
        let raw = self.raw();
        let mut tags = HashMap::with_capacity(raw.len());
        let mut out = BTreeMap::new();
        for (key, address) in raw {
            let ck = ContainerKey::new(&key.host, &key.container);
            let tag = match fresh.get(&ck).or_else(|| self.tags.get(&ck)) {
                Some(t) => t.clone(),
                None => lookup(&ck),
            };
            tags.insert(ck, tag.clone());
            if self.tag_filter.as_ref().is_some_and(|f| tag.as_ref() != Some(f)) {
                continue;
            }
            out.insert(key.clone(), Member { key, address, tag });
        }
        self.tags = tags;
        out
    }

    fn replace(&mut self, new: BTreeMap<AddrKey, Member>) -> Diff {
        let mut diff = Diff::default();
        for (k, m) in &new {
            match self.members.get(k) {
                None => diff.created.push(m.clone()),
                Some(old) if old != m => diff.updated.push(m.clone()),
                Some(_) => {}
            }
        }
        for (k, m) in &self.members {
            if !new.contains_key(k) {
                diff.deleted.push(m.clone());
            }
        }
        self.members = new;
        diff.created = sorted(diff.created);
        diff.updated = sorted(diff.updated);
        diff.deleted = sorted(diff.deleted);
        diff
    }

    /// Applies one committed change. `lookup` gives the tag of a container
    /// that becomes a member without its record being in the change.
    pub fn apply(&mut self, change: &Change, lookup: &dyn Fn(&ContainerKey) -> Option<String>) -> Diff {
        let mut relevant = false;
        let mut fresh = HashMap::new();
        for item in &change.items {
            match (&item.key, &mut self.target) {
                (EntityKey::Cin(cin), Target::Cin { id, rec }) if cin == id => {
                    *rec = match &item.after {
                        Some(Record::Cin(c)) => Some(c.clone()),
                        _ => None,
                    };
                    relevant = true;
                }
                (EntityKey::Cin(cin), Target::Cen { id, cins, .. }) => match &item.after {
                    Some(Record::Cin(c)) if c.cens.contains(id) => {
                        cins.insert(cin.clone(), c.clone());
                        relevant = true;
                    }
                    _ => relevant |= cins.remove(cin).is_some(),
                },
                (EntityKey::Cen(cen), Target::Cen { id, rec, .. }) if cen == id => {
                    *rec = match &item.after {
                        Some(Record::Cen(c)) => Some(c.clone()),
                        _ => None,
                    };
                    relevant = true;
                }
                (EntityKey::Container(k), _) => {
                    let tag = match &item.after {
                        Some(Record::Container(c)) => c.tag.clone(),
                        _ => None,
                    };
                    relevant |= self.tags.contains_key(k);
                    fresh.insert(k.clone(), tag);
                }
                _ => {}
            }
        }
        if !relevant {
            return Diff::default();
        }
        let new = self.compute(&fresh, lookup);
        self.replace(new)
    }

    /// Rebuilds the view from the topology (after missing changes) and
    /// returns the difference to what subscribers last saw.
    pub fn resync(&mut self, t: &Topology) -> Diff {
        let id = match &self.target {
            Target::Cin { id, .. } | Target::Cen { id, .. } => id.clone(),
        };
        self.target = match &self.target {
            Target::Cin { .. } => Target::Cin { rec: t.cin(&id).cloned(), id },
            Target::Cen { .. } => Target::Cen {
                rec: t.cen(&id).cloned(),
                cins: t.cins_over(&id).into_iter().map(|c| (c.id.clone(), c.clone())).collect(),
                id,
            },
        };
        self.tags.clear();
        let new = self.compute(&HashMap::new(), &|k| tag_in(t, k));
        self.replace(new)
    }
}

fn sorted(mut v: Vec<Member>) -> Vec<Member> {
    v.sort_by(|a, b| (a.address.is_none(), a.address, &a.key).cmp(&(b.address.is_none(), b.address, &b.key)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CenSpec, CinSpec, Command};
    use crate::store::ChangeItem;

    fn run(t: &mut Topology, rev: u64, cmd: Command) -> Change {
        let before = t.clone();
        let images = t.execute(&cmd).unwrap();
        let items = images
            .into_iter()
            .map(|(key, after)| ChangeItem { before: before.get(&key).cloned(), key, after })
            .collect();
        Change { revision: rev, mutation: cmd.name().into(), at_ms: 0, at_us: 0, items }
    }

    fn ids(v: &[Member]) -> Vec<String> {
        v.iter()
            .map(|m| format!("{}@{}", m.key.container, m.address.map(|a| a.to_string()).unwrap_or_default()))
            .collect()
    }

    #[test]
    fn follows_joins_tags_and_leaves() {
        let mut t = Topology::new();
        run(&mut t, 1, Command::HostCreate { id: "host1".into() });
        run(
            &mut t,
            2,
            Command::CenImport {
                host: "host1".into(),
                cens: vec![CenSpec { id: "cen1".into(), containers: vec!["c1".into(), "c2".into()] }],
            },
        );
        run(&mut t, 3, Command::CinImport { cins: vec![CinSpec { id: "cin1".into(), cens: vec!["cen1".into()] }] });
        let mut all = MemberView::open(&t, "cin1", None).unwrap();
        let mut red = MemberView::open(&t, "cin1", Some("red".into())).unwrap();
        let mut cen = MemberView::open(&t, "cen1", None).unwrap();
        assert!(cen.is_cen() && !all.is_cen());
        assert_eq!(ids(&all.members()), ["c1@10.10.0.10", "c2@10.10.0.11"]);
        assert!(red.members().is_empty());
        assert!(MemberView::open(&t, "nope", None).is_none());

        let c = run(
            &mut t,
            4,
            Command::ContainerJoinCen { host: "host1".into(), container: "c3".into(), cen: "cen1".into() },
        );
        let lookup = |k: &ContainerKey| tag_in(&t, k);
        let d = all.apply(&c, &lookup);
        assert_eq!(ids(&d.created), ["c3@10.10.0.12"]);
        assert!(d.updated.is_empty() && d.deleted.is_empty());
        assert!(red.apply(&c, &lookup).is_empty());
        assert_eq!(ids(&cen.apply(&c, &lookup).created), ["c3@10.10.0.12"]);

        let c =
            run(&mut t, 5, Command::ContainerSetTag { host: "host1".into(), id: "c3".into(), tag: Some("red".into()) });
        let lookup = |k: &ContainerKey| tag_in(&t, k);
        let d = all.apply(&c, &lookup);
        assert_eq!(ids(&d.updated), ["c3@10.10.0.12"]);
        assert_eq!(d.updated[0].tag.as_deref(), Some("red"));
        assert_eq!(ids(&red.apply(&c, &lookup).created), ["c3@10.10.0.12"]);

        let c = run(
            &mut t,
            6,
            Command::ContainerLeaveCen { host: "host1".into(), container: "c3".into(), cen: "cen1".into() },
        );
        let lookup = |k: &ContainerKey| tag_in(&t, k);
        assert_eq!(ids(&all.apply(&c, &lookup).deleted), ["c3@10.10.0.12"]);
        assert_eq!(ids(&red.apply(&c, &lookup).deleted), ["c3@10.10.0.12"]);
        assert_eq!(ids(&cen.apply(&c, &lookup).deleted), ["c3@10.10.0.12"]);

        // A resync after missed changes finds what changed meanwhile.
        run(&mut t, 7, Command::ContainerJoinCen { host: "host1".into(), container: "c4".into(), cen: "cen1".into() });
        let d = all.resync(&t);
        assert_eq!(ids(&d.created), ["c4@10.10.0.12"]);
        assert!(all.resync(&t).is_empty());
    }
}
