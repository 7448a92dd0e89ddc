//! The member view behind `cinMonitor`: the members of one CIN (or, legacy,
//! of one CEN) kept up to date from the change records themselves, so that
//! each event describes exactly what one revision did.
//!
//! A member is one container interface: (host, container, CEN) with its
//! address in the CIN and the container's tag. In CEN mode the address is
//! the one the first CIN over that CEN (by id) gives it, or none.

use crate::model::Change;
use crate::model::{ContainerKey, EntityKey, MemberKey, MemberRec, Record, Topology};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

/// Which interface a member is: a container's membership in a CEN.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AddrKey {
    pub host: String,
    pub container: String,
    pub cen: String,
}

impl From<&MemberKey> for AddrKey {
    fn from(k: &MemberKey) -> Self {
        AddrKey { host: k.host.clone(), container: k.container.clone(), cen: k.cen.clone() }
    }
}

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

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Cin(String),
    Cen(String),
}

impl Target {
    /// Whether a membership belongs to the target, and with which address.
    /// Every address change of a CIN is a change of a membership record, so
    /// the view follows those records alone.
    fn admit(&self, m: &MemberRec) -> Option<Option<Ipv4Addr>> {
        match self {
            Target::Cin(id) => m.addresses.get(id).map(|ip| Some(*ip)),
            // The address the first CIN over the CEN (by id) gives.
            Target::Cen(id) => (m.cen == *id).then(|| m.addresses.values().next().copied()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct MemberView {
    target: Target,
    tag_filter: Option<String>,
    /// Every interface of the target with its address (before the filter).
    raw: BTreeMap<AddrKey, Option<Ipv4Addr>>,
    /// Tags of the containers of `raw`, with how many interfaces each has.
    tags: HashMap<ContainerKey, (Option<String>, usize)>,
    /// What subscribers have seen (after the filter).
    members: BTreeMap<AddrKey, Member>,
}

fn tag_in(t: &Topology, k: &ContainerKey) -> Option<String> {
    t.container(k).and_then(|c| c.tag.clone())
}

fn ckey(k: &AddrKey) -> ContainerKey {
    ContainerKey::new(&k.host, &k.container)
}

impl MemberView {
    /// The view of a CIN, or of a CEN where no CIN has that id; `None` when
    /// neither exists.
    pub fn open(t: &Topology, id: &str, tag_filter: Option<String>) -> Option<Self> {
        let target = if t.cin(id).is_some() {
            Target::Cin(id.to_string())
        } else if t.cen(id).is_some() {
            Target::Cen(id.to_string())
        } else {
            return None;
        };
        let mut view =
            MemberView { target, tag_filter, raw: BTreeMap::new(), tags: HashMap::new(), members: BTreeMap::new() };
        view.load(t);
        view.members = view.filtered();
        Some(view)
    }

    /// Reads the target's interfaces from the topology.
    fn load(&mut self, t: &Topology) {
        self.raw.clear();
        self.tags.clear();
        let cens: Vec<String> = match &self.target {
            Target::Cin(id) => t.cin(id).map(|c| c.cens.clone()).unwrap_or_default(),
            Target::Cen(id) => vec![id.clone()],
        };
        for cen in &cens {
            for m in t.members(cen) {
                if let Some(address) = self.target.admit(m) {
                    let key = AddrKey::from(&m.member_key());
                    self.tags.entry(m.key()).or_insert_with(|| (tag_in(t, &m.key()), 0)).1 += 1;
                    self.raw.insert(key, address);
                }
            }
        }
    }

    fn member(&self, key: &AddrKey) -> Option<Member> {
        let address = *self.raw.get(key)?;
        let tag = self.tags.get(&ckey(key)).and_then(|(t, _)| t.clone());
        if self.tag_filter.as_ref().is_some_and(|f| tag.as_ref() != Some(f)) {
            return None;
        }
        Some(Member { key: key.clone(), address, tag })
    }

    fn filtered(&self) -> BTreeMap<AddrKey, Member> {
        self.raw.keys().filter_map(|k| self.member(k).map(|m| (k.clone(), m))).collect()
    }

    /// Whether this view follows a CEN (the legacy reading of the id).
    pub fn is_cen(&self) -> bool {
        matches!(self.target, Target::Cen(_))
    }

    /// The current members, in address order (members without an address
    /// last), then by host, container and CEN.
    pub fn members(&self) -> Vec<Member> {
        sorted(self.members.values().cloned().collect())
    }

    /// Re-evaluates the given interfaces against what subscribers saw.
    fn diff(&mut self, keys: BTreeSet<AddrKey>) -> Diff {
        let mut diff = Diff::default();
        for k in keys {
            match (self.member(&k), self.members.get(&k)) {
                (Some(m), None) => {
                    diff.created.push(m.clone());
                    self.members.insert(k, m);
                }
                (Some(m), Some(old)) if *old != m => {
                    diff.updated.push(m.clone());
                    self.members.insert(k, m);
                }
                (None, Some(_)) => {
                    if let Some(old) = self.members.remove(&k) {
                        diff.deleted.push(old);
                    }
                }
                _ => {}
            }
        }
        diff.created = sorted(diff.created);
        diff.updated = sorted(diff.updated);
        diff.deleted = sorted(diff.deleted);
        diff
    }

    /// Applies one committed change: only the interfaces and containers it
    /// names are looked at. `lookup` gives the tag of a container that
    /// becomes a member without its record being in the change.
    pub fn apply(&mut self, change: &Change, lookup: &dyn Fn(&ContainerKey) -> Option<String>) -> Diff {
        let mut touched = BTreeSet::new();
        let mut fresh: HashMap<ContainerKey, Option<String>> = HashMap::new();
        for item in &change.items {
            if let EntityKey::Container(k) = &item.key {
                if let Some(Record::Container(c)) = &item.after {
                    fresh.insert(k.clone(), c.tag.clone());
                }
            }
        }
        for item in &change.items {
            match &item.key {
                EntityKey::Member(mk) => {
                    let key = AddrKey::from(mk);
                    let now = match &item.after {
                        Some(Record::Member(m)) => self.target.admit(m),
                        _ => None,
                    };
                    let had = self.raw.contains_key(&key);
                    match now {
                        Some(address) => {
                            if !had {
                                let ck = ckey(&key);
                                let tag = fresh.get(&ck).cloned();
                                let e =
                                    self.tags.entry(ck).or_insert_with_key(|k| (tag.unwrap_or_else(|| lookup(k)), 0));
                                e.1 += 1;
                            }
                            self.raw.insert(key.clone(), address);
                            touched.insert(key);
                        }
                        None if had => {
                            self.raw.remove(&key);
                            let ck = ckey(&key);
                            if let Some(e) = self.tags.get_mut(&ck) {
                                e.1 -= 1;
                                if e.1 == 0 {
                                    self.tags.remove(&ck);
                                }
                            }
                            touched.insert(key);
                        }
                        None => {}
                    }
                }
                EntityKey::Container(k) => {
                    if let (Some(e), Some(tag)) = (self.tags.get_mut(k), fresh.get(k)) {
                        if e.0 != *tag {
                            e.0 = tag.clone();
                            // One range: the index is ordered by host, container, CEN.
                            let from = AddrKey { host: k.host.clone(), container: k.id.clone(), cen: String::new() };
                            touched.extend(
                                self.raw
                                    .range(from..)
                                    .take_while(|(a, _)| a.host == k.host && a.container == k.id)
                                    .map(|(a, _)| a.clone()),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
        self.diff(touched)
    }

    /// Rebuilds the view from the topology (after missing changes) and
    /// returns the difference to what subscribers last saw.
    pub fn resync(&mut self, t: &Topology) -> Diff {
        self.load(t);
        let keys: BTreeSet<AddrKey> = self.raw.keys().chain(self.members.keys()).cloned().collect();
        self.diff(keys)
    }
}

fn sorted(mut v: Vec<Member>) -> Vec<Member> {
    v.sort_by(|a, b| (a.address.is_none(), a.address, &a.key).cmp(&(b.address.is_none(), b.address, &b.key)));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ChangeItem;
    use crate::model::{CenSpec, CinSpec, Command};

    fn run(t: &mut Topology, rev: u64, cmd: Command) -> Change {
        let before = t.clone();
        let images = t.execute(&cmd).unwrap();
        let items = images
            .into_iter()
            .map(|(key, after)| ChangeItem { before: before.get(&key).cloned(), key, after })
            .collect();
        Change { revision: rev, mutation: cmd.name().into(), at_ms: 0, at_us: 0, actor: String::new(), items }
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
