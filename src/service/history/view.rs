//! Reads at a kept revision, record by record, through the live topology
//! and the history's index: no copy of the topology is made.
//!
//! The image of record `k` at revision `N`: if a change in `(N, now]`
//! touched `k`, its before-image in the first such change; else `k` as it
//! is live. The first touch after `N` is found in `touched`; when it lies
//! in a block starting at or after `N`, that block's image is the answer;
//! when it lies in `N`'s own block, the change itself (from [`AtView`]'s
//! log of that block after `N`: read once from the store's log when the
//! view is made, or the index's changes of the block being filled).
//!
//! Lists at `N` are the live list merged with the keys of that kind (or
//! range: a CEN's memberships, a host's containers) touched after the
//! floor, each resolved as above. Counts are the live counts minus what
//! the changes after `N` made (per-block deltas, plus the changes of `N`'s
//! own block after `N`): O(blocks + K). A CEN's member count walks the
//! touched memberships of that CEN. The CINs over a CEN and a pool's
//! containers walk every touched CIN or container (few, and rarely read).
//!
//! Consistency: an [`AtRead`] is made under the live topology's read lock
//! with the index's read lock taken inside it. The index records a change
//! inside the live topology's write lock (`Service::apply`), so under both
//! locks the index has recorded exactly the changes the live topology
//! shows. Between two reads of one view the live topology may move on:
//! each read checks that the index still covers `(N, now]` (same
//! generation, not trimmed past `N`) and otherwise fails (`UNAVAILABLE`
//! after a reload, `GONE` once `N` left the kept log).

use super::index::{add_delta, Delta, Index, Slot};
use crate::model::{
    CenRec, Change, CinRec, ContainerKey, ContainerRec, CpoolRec, EntityKey, HostRec, MemberKey, MemberRec, ModelError,
    Read, Record, Topology,
};
use std::cmp::Ordering;
use std::sync::Arc;

/// A read at one kept revision, shared by every object a query reaches
/// through `at` (see the module docs).
#[derive(Debug)]
pub struct AtView {
    revision: u64,
    /// The end of `revision`'s block (`revision` itself at a block's end).
    boundary: u64,
    /// `revision`'s block, whose changes after it are in `partial`.
    block: u64,
    every: u64,
    generation: u64,
    /// The changes of `revision`'s block after it; unset while that block
    /// is being filled (the index holds them then).
    partial: Slot,
}

impl AtView {
    /// A view at `revision` whose own block's later changes are in `partial`.
    pub(super) fn new(revision: u64, every: u64, generation: u64, partial: Slot) -> AtView {
        AtView {
            revision,
            boundary: revision.div_ceil(every).saturating_mul(every),
            block: revision / every,
            every,
            generation,
            partial,
        }
    }

    /// The revision read.
    pub fn revision(&self) -> u64 {
        self.revision
    }
}

/// The reads of one [`AtView`] under the locks (see the module docs).
pub struct AtRead<'a> {
    live: &'a Topology,
    ix: &'a Index,
    view: &'a AtView,
    partial: &'a [Arc<Change>],
}

impl<'a> AtRead<'a> {
    /// The reads of `view`, if the index still covers it.
    pub(super) fn new(live: &'a Topology, ix: &'a Index, view: &'a AtView) -> Result<AtRead<'a>, ModelError> {
        if !ix.ready || ix.generation != view.generation {
            return Err(ModelError::unavailable(format!(
                "the history was rebuilt (the model was reloaded) while revision {} was read; read again",
                view.revision
            )));
        }
        if ix.start > view.revision {
            return Err(ModelError::gone(format!(
                "revision {} left the kept log while it was read: the oldest kept revision is {}",
                view.revision, ix.start
            )));
        }
        let partial: &[Arc<Change>] = match view.partial.get() {
            Some(log) => log,
            None => match &ix.current {
                Some(cur) if cur.block == view.block => &cur.changes,
                _ => {
                    return Err(ModelError::internal(format!(
                        "the changes after revision {} are neither kept by the read nor by the history",
                        view.revision
                    )))
                }
            },
        };
        Ok(AtRead { live, ix, view, partial })
    }

    /// The image of a record at the view's revision.
    pub fn get(&self, key: &EntityKey) -> Option<&'a Record> {
        let Some(revs) = self.ix.touched.get(key) else { return self.live.get(key) };
        let n = self.view.revision;
        let Some(&r) = revs.get(revs.partition_point(|r| *r <= n)) else { return self.live.get(key) };
        if r <= self.view.boundary {
            let i = self.partial.partition_point(|c| c.revision < r);
            let change = self.partial.get(i).filter(|c| c.revision == r)?;
            return change.items.iter().find(|it| it.key == *key).and_then(|it| it.before.as_ref());
        }
        self.ix.blocks.get(&((r - 1) / self.view.every))?.undo.get(key)?.as_deref()
    }

    /// The changes of the view's block it holds (those after its revision,
    /// and possibly some before).
    pub(super) fn partial(&self) -> &'a [Arc<Change>] {
        self.partial
    }

    /// The touched keys from `from` on while `within` holds.
    fn touched_from(&self, from: EntityKey, within: impl Fn(&EntityKey) -> bool) -> Vec<&'a EntityKey> {
        self.ix.touched.range(from..).map(|(k, _)| &**k).take_while(|k| within(k)).collect()
    }

    /// What the changes after the view's revision made, per kind.
    fn delta(&self) -> Delta {
        let mut d = Delta::default();
        for c in self.partial.iter().filter(|c| c.revision > self.view.revision) {
            add_delta(&mut d, c);
        }
        for (_, b) in self.ix.blocks.range(self.view.boundary / self.view.every..) {
            for (x, y) in d.iter_mut().zip(b.delta) {
                *x += y;
            }
        }
        d
    }

    /// Every record at the view's revision, in key order.
    pub fn records(&self) -> Vec<Record> {
        let mut out: Vec<Record> = Vec::new();
        out.extend(self.hosts().into_iter().map(|r| Record::Host(r.clone())));
        out.extend(self.containers().into_iter().map(|r| Record::Container(r.clone())));
        let cens = self.cens();
        out.extend(cens.iter().map(|r| Record::Cen((*r).clone())));
        out.extend(self.cins().into_iter().map(|r| Record::Cin(r.clone())));
        out.extend(self.cpools().into_iter().map(|r| Record::Cpool(r.clone())));
        for cen in cens {
            out.extend(self.members(&cen.id).into_iter().map(|m| Record::Member(m.clone())));
        }
        out
    }
}

/// A live list (sorted) merged with the touched keys of its range (sorted),
/// each of those resolved at the revision (`at`); `cmp` orders a record
/// against a key.
fn merge<'a, T: 'a>(
    live: impl IntoIterator<Item = &'a T>,
    touched: &[&EntityKey],
    cmp: impl Fn(&T, &EntityKey) -> Ordering,
    at: impl Fn(&EntityKey) -> Option<&'a T>,
) -> Vec<&'a T> {
    let mut out = Vec::new();
    let mut j = 0;
    for rec in live {
        while let Some(k) = touched.get(j).filter(|k| cmp(rec, k) == Ordering::Greater) {
            out.extend(at(k));
            j += 1;
        }
        match touched.get(j) {
            Some(k) if cmp(rec, k) == Ordering::Equal => {
                out.extend(at(k));
                j += 1;
            }
            _ => out.push(rec),
        }
    }
    for k in touched.get(j..).unwrap_or_default() {
        out.extend(at(k));
    }
    out
}

macro_rules! as_kind {
    ($rec:expr, $variant:ident) => {
        match $rec {
            Some(Record::$variant(r)) => Some(r),
            _ => None,
        }
    };
}

fn host_of(k: &EntityKey) -> Option<&str> {
    match k {
        EntityKey::Container(c) => Some(&c.host),
        _ => None,
    }
}

fn id_of(k: &EntityKey) -> &str {
    match k {
        EntityKey::Host(s) | EntityKey::Cen(s) | EntityKey::Cin(s) | EntityKey::Cpool(s) => s,
        EntityKey::Container(c) => &c.id,
        EntityKey::Member(m) => &m.container,
    }
}

fn container_cmp(c: &ContainerRec, k: &EntityKey) -> Ordering {
    match k {
        EntityKey::Container(k) => (c.host.as_str(), c.id.as_str()).cmp(&(k.host.as_str(), k.id.as_str())),
        _ => Ordering::Less,
    }
}

fn member_cmp(m: &MemberRec, k: &EntityKey) -> Ordering {
    match k {
        EntityKey::Member(k) => (m.cen.as_str(), m.host.as_str(), m.container.as_str()).cmp(&(
            k.cen.as_str(),
            k.host.as_str(),
            k.container.as_str(),
        )),
        _ => Ordering::Less,
    }
}

/// The list of one kind keyed by a plain id (hosts, CENs, CINs, pools).
macro_rules! by_id {
    ($self:ident, $variant:ident, $live:expr) => {{
        let touched = $self.touched_from(EntityKey::$variant(String::new()), |k| matches!(k, EntityKey::$variant(_)));
        merge($live, &touched, |r, k| r.id.as_str().cmp(id_of(k)), |k| as_kind!($self.get(k), $variant))
    }};
}

impl Read for AtRead<'_> {
    fn host(&self, id: &str) -> Option<&HostRec> {
        as_kind!(self.get(&EntityKey::Host(id.to_string())), Host)
    }
    fn container(&self, key: &ContainerKey) -> Option<&ContainerRec> {
        as_kind!(self.get(&EntityKey::Container(key.clone())), Container)
    }
    fn cen(&self, id: &str) -> Option<&CenRec> {
        as_kind!(self.get(&EntityKey::Cen(id.to_string())), Cen)
    }
    fn cin(&self, id: &str) -> Option<&CinRec> {
        as_kind!(self.get(&EntityKey::Cin(id.to_string())), Cin)
    }
    fn cpool(&self, id: &str) -> Option<&CpoolRec> {
        as_kind!(self.get(&EntityKey::Cpool(id.to_string())), Cpool)
    }
    fn member(&self, key: &MemberKey) -> Option<&MemberRec> {
        as_kind!(self.get(&EntityKey::Member(key.clone())), Member)
    }
    fn hosts(&self) -> Vec<&HostRec> {
        by_id!(self, Host, self.live.hosts_iter())
    }
    fn containers(&self) -> Vec<&ContainerRec> {
        let touched = self
            .touched_from(EntityKey::Container(ContainerKey::new("", "")), |k| matches!(k, EntityKey::Container(_)));
        merge(self.live.containers_iter(), &touched, container_cmp, |k| as_kind!(self.get(k), Container))
    }
    fn cens(&self) -> Vec<&CenRec> {
        by_id!(self, Cen, self.live.cens_iter())
    }
    fn cins(&self) -> Vec<&CinRec> {
        by_id!(self, Cin, self.live.cins_iter())
    }
    fn cpools(&self) -> Vec<&CpoolRec> {
        by_id!(self, Cpool, self.live.cpools_iter())
    }
    fn counts(&self) -> (usize, usize, usize, usize, usize) {
        let (h, c, e, i, p) = self.live.counts();
        let d = self.delta();
        let at = |live: usize, kind: usize| usize::try_from(live as i64 - d[kind]).unwrap_or(0);
        (at(h, 0), at(c, 1), at(e, 2), at(i, 3), at(p, 4))
    }
    fn members(&self, cen: &str) -> Vec<&MemberRec> {
        let from = EntityKey::Member(MemberKey { cen: cen.to_string(), host: String::new(), container: String::new() });
        let touched = self.touched_from(from, |k| matches!(k, EntityKey::Member(m) if m.cen == cen));
        merge(self.live.members(cen), &touched, member_cmp, |k| as_kind!(self.get(k), Member))
    }
    fn member_count(&self, cen: &str) -> usize {
        let from = EntityKey::Member(MemberKey { cen: cen.to_string(), host: String::new(), container: String::new() });
        let touched = self.touched_from(from, |k| matches!(k, EntityKey::Member(m) if m.cen == cen));
        let mut n = self.live.member_count(cen) as i64;
        for k in touched {
            n += i64::from(self.get(k).is_some()) - i64::from(self.live.get(k).is_some());
        }
        usize::try_from(n).unwrap_or(0)
    }
    fn memberships_of(&self, key: &ContainerKey) -> Vec<&MemberRec> {
        let from = (key.host.clone(), key.id.clone(), String::new());
        let mut touched: Vec<EntityKey> = self
            .ix
            .members
            .range(from..)
            .take_while(|(h, c, _)| *h == key.host && *c == key.id)
            .map(|(_, _, cen)| EntityKey::Member(MemberKey::new(cen.clone(), key)))
            .collect();
        touched.sort();
        let touched: Vec<&EntityKey> = touched.iter().collect();
        let cen_cmp = |m: &MemberRec, k: &EntityKey| match k {
            EntityKey::Member(k) => m.cen.cmp(&k.cen),
            _ => Ordering::Less,
        };
        merge(self.live.memberships_of(key), &touched, cen_cmp, |k| as_kind!(self.get(k), Member))
    }
    fn cins_over(&self, cen: &str) -> Vec<&CinRec> {
        let live = self.live.cins_over(cen);
        let touched = self.touched_from(EntityKey::Cin(String::new()), |k| matches!(k, EntityKey::Cin(_)));
        let mut ids: Vec<&str> = live.iter().map(|c| c.id.as_str()).chain(touched.into_iter().map(id_of)).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter().filter_map(|id| Read::cin(self, id)).filter(|c| c.cens.iter().any(|e| e == cen)).collect()
    }
    fn containers_of_host(&self, host: &str) -> Vec<&ContainerRec> {
        let touched =
            self.touched_from(EntityKey::Container(ContainerKey::new(host, "")), |k| host_of(k) == Some(host));
        merge(self.live.containers_of_host(host), &touched, container_cmp, |k| as_kind!(self.get(k), Container))
    }
    fn pool_containers(&self, pool: &str) -> Vec<&ContainerRec> {
        let touched = self
            .touched_from(EntityKey::Container(ContainerKey::new("", "")), |k| matches!(k, EntityKey::Container(_)));
        let live = Read::pool_containers(self.live, pool);
        merge(live, &touched, container_cmp, |k| as_kind!(self.get(k), Container))
            .into_iter()
            .filter(|c| c.pool.as_deref() == Some(pool))
            .collect()
    }
}

/// What a GraphQL read reads: the live topology, or a view at a revision.
/// An enum rather than a trait object, so that a read of the live topology
/// is a branch, not an indirect call.
pub enum Reader<'a> {
    Live(&'a Topology),
    At(AtRead<'a>),
}

impl Reader<'_> {
    /// Every record, in key order.
    pub fn records(&self) -> Vec<Record> {
        match self {
            Reader::Live(t) => t.records(),
            Reader::At(a) => a.records(),
        }
    }
}

/// Every read of a [`Reader`], answered by what it holds.
macro_rules! both {
    ($($name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {
        impl Read for Reader<'_> {
            $(
                fn $name(&self $(, $arg: $ty)*) -> $ret {
                    match self {
                        Reader::Live(t) => Read::$name(*t $(, $arg)*),
                        Reader::At(a) => a.$name($($arg),*),
                    }
                }
            )*
        }
    };
}

both! {
    host(id: &str) -> Option<&HostRec>;
    container(key: &ContainerKey) -> Option<&ContainerRec>;
    cen(id: &str) -> Option<&CenRec>;
    cin(id: &str) -> Option<&CinRec>;
    cpool(id: &str) -> Option<&CpoolRec>;
    member(key: &MemberKey) -> Option<&MemberRec>;
    hosts() -> Vec<&HostRec>;
    containers() -> Vec<&ContainerRec>;
    cens() -> Vec<&CenRec>;
    cins() -> Vec<&CinRec>;
    cpools() -> Vec<&CpoolRec>;
    counts() -> (usize, usize, usize, usize, usize);
    members(cen: &str) -> Vec<&MemberRec>;
    member_count(cen: &str) -> usize;
    memberships_of(key: &ContainerKey) -> Vec<&MemberRec>;
    cins_over(cen: &str) -> Vec<&CinRec>;
    containers_of_host(host: &str) -> Vec<&ContainerRec>;
    pool_containers(pool: &str) -> Vec<&ContainerRec>;
    is_member(key: &ContainerKey, cen: &str) -> bool;
    member_hosts(cen: &str) -> Vec<&str>;
}
