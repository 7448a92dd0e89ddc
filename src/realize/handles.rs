//! Namespace handles and kernel listeners: opening the namespaces bound by
//! path (and checking they still lead to the workload that was bound),
//! also ahead of the change that binds them ([`Realizer::warm`]), closing
//! what we hold, and the link/address listeners that tell us of deletions
//! made behind our back.
//!
//! Invariants: one handle per namespace; a bound namespace whose path no
//! longer leads to the namespace bound is let go of (never opened as a
//! stranger) and reported unavailable; a namespace opened ahead that no
//! round wires is let go of [`WARM_KEEP`] after it was opened (by the
//! round then under way, or by the driver between rounds), or by the next
//! full round; a handle is closed before its namespace is deleted, so the
//! kernel can free it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::desired::{Desired, NetnsRef};
use super::error::KernelError;
use super::naming::ns_path;
use super::nl::NsHandle;
use super::observed::NsId;
use super::plan::Scope;
use super::{blocking, netns, watch, Realizer};

/// What a namespace is to the netns helpers.
pub(super) fn role(ns: &NsId) -> netns::Role {
    match ns {
        NsId::Fabric => netns::Role::Fabric,
        NsId::Host => netns::Role::HostFabric,
        NsId::Managed(_) | NsId::Path(_) => netns::Role::Container,
    }
}

/// Descriptors the process's table is grown to hold up front, at most.
pub(super) const RESERVED_DESCRIPTORS: u64 = 1 << 16;

/// Grows the process's descriptor table once, up front, to as many
/// descriptors as the open-files limit allows (at most
/// [`RESERVED_DESCRIPTORS`]; 512 KiB of kernel memory): the handles,
/// sockets, listeners and pidfds held per namespace then never grow it.
/// The kernel grows the table of a multi-threaded process behind a full
/// RCU grace period (`expand_files`), which stalled the one join that
/// crossed each power of two for 10 to 20 ms here, so the slowest joins
/// of a growing host were those. The table is never shrunk, and a fork
/// copies only the part in use, so this costs nothing afterwards. Where it
/// cannot be done the table grows as before.
pub(super) fn reserve_descriptors() {
    use nix::fcntl::{fcntl, FcntlArg};
    use nix::sys::resource::{getrlimit, Resource};
    let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) else { return };
    let highest = soft.min(RESERVED_DESCRIPTORS).saturating_sub(1);
    let Ok(highest) = i32::try_from(highest) else { return };
    let Ok(null) = std::fs::File::open("/dev/null") else { return };
    match fcntl(&null, FcntlArg::F_DUPFD_CLOEXEC(highest)) {
        // SAFETY: the descriptor was just made by F_DUPFD and is owned by
        // nobody else; closing it leaves the table grown.
        Ok(fd) => drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }),
        Err(e) => tracing::debug!(error = %e, highest, "the descriptor table grows as needed"),
    }
}

/// How long a namespace opened ahead ([`Realizer::warm`]) is kept for the
/// change that is to wire it: one that no round wired by then (its change
/// failed, or never came) is let go of then (by the round under way, or by
/// the driver between rounds), unless a full round let go of it before.
pub(super) const WARM_KEEP: std::time::Duration = std::time::Duration::from_secs(30);

/// (device, inode) of what a namespace path leads to now; `None` when it
/// leads nowhere (the process exited, the file was removed).
fn workload_ident(path: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Each namespace bound by path that the scope's containers use (of a
/// focused CEN, its members in focus), with the identity it had when bound.
fn bound_idents(desired: &Desired, scope: Scope<'_>) -> BTreeMap<NsId, Option<(u64, u64)>> {
    let keys: Vec<&String> = match scope {
        Scope::All => desired.containers.keys().collect(),
        Scope::Cens(set, _, focus) => set
            .iter()
            .filter_map(|c| desired.cens.get(c).map(|net| (net, focus.get(c))))
            .flat_map(|(net, f)| {
                net.members.iter().map(|m| &m.container).filter(move |k| f.is_none_or(|f| f.contains(*k)))
            })
            .collect(),
    };
    let mut idents: BTreeMap<NsId, Option<(u64, u64)>> = BTreeMap::new();
    for c in keys.into_iter().filter_map(|k| desired.containers.get(k)) {
        if let NetnsRef::Path(p) = &c.netns {
            if !p.is_empty() {
                let e = idents.entry(NsId::Path(p.clone())).or_default();
                *e = e.or(c.ident);
            }
        }
    }
    idents
}

impl Realizer {
    /// Opens the namespaces bound by path that the scope needs and looks at
    /// them again (they are not ours; anything may have changed there).
    pub(super) async fn open_paths(&mut self, desired: &Desired, scope: Scope<'_>) -> BTreeSet<NsId> {
        let idents = bound_idents(desired, scope);
        let want_paths: BTreeSet<NsId> = idents.keys().cloned().collect();
        match scope {
            Scope::All => self.observed.unavailable.clear(),
            Scope::Cens(..) => self.observed.unavailable.retain(|k, _| !want_paths.contains(k)),
        }
        self.check_bound(&idents);
        let new_paths: Vec<NsId> = want_paths
            .iter()
            .filter(|p| !self.handles.contains_key(*p) && !self.observed.unavailable.contains_key(*p))
            .cloned()
            .collect();
        self.open_bound(new_paths).await;
        self.look_again(&want_paths, scope).await;
        want_paths
    }

    /// Opens and looks at namespaces that containers are about to be bound
    /// to, ahead of the change that will wire them (a runtime's ADD opens
    /// the container's namespace while its change commits): the round then
    /// finds each held, observed and listened to, as it would after opening
    /// it itself. Each is given as its path and the (device, inode) it was
    /// bound with; one that the path no longer leads to, or that is held
    /// already, is skipped, and one that cannot be opened is left for the
    /// round to open and report. Reads only: nothing in the kernel changes.
    pub async fn warm(&mut self, paths: Vec<(String, (u64, u64))>) {
        let new: BTreeMap<NsId, (u64, u64)> = paths
            .into_iter()
            .filter(|(p, ident)| workload_ident(p) == Some(*ident))
            .map(|(p, ident)| (NsId::Path(p), ident))
            .filter(|(ns, _)| !self.handles.contains_key(ns))
            .collect();
        if new.is_empty() {
            return;
        }
        self.open_bound(new.keys().cloned().collect()).await;
        let mut opened = BTreeSet::new();
        for (ns, ident) in new {
            match self.handles.get(&ns).map(|h| h.kept_ident()) {
                Some(held) if held == Some(ident) => {
                    opened.insert(ns);
                }
                // The path led elsewhere by the time it was opened.
                Some(_) => self.close(&ns),
                // Not reported from here: the round that needs it tries again.
                None => {
                    self.observed.unavailable.remove(&ns);
                }
            }
        }
        let now = std::time::Instant::now();
        self.warmed.extend(opened.iter().map(|ns| (ns.clone(), now)));
        self.observe_set(opened.clone()).await;
        for ns in &opened {
            self.pair_ns(ns);
        }
        self.start_listeners().await;
    }

    /// Namespaces opened ahead that a desired container (in `index`) now
    /// uses are simply held; those none uses, opened longer ago than they
    /// are kept for ([`WARM_KEEP`]), are let go of. Every round ends with
    /// this; the driver also calls it when [`Realizer::unwired_until`]
    /// comes between rounds.
    pub fn let_go_of_unwired(&mut self, index: &super::desired::Index) {
        if self.warmed.is_empty() {
            return;
        }
        let (now, keep) = (std::time::Instant::now(), self.warm_keep);
        let mut gone = Vec::new();
        self.warmed.retain(|ns, at| {
            if index.in_ns(ns).is_some() || !self.handles.contains_key(ns) {
                return false;
            }
            if now.duration_since(*at) < keep {
                return true;
            }
            gone.push(ns.clone());
            false
        });
        for ns in gone {
            self.let_go_of(&ns);
        }
    }

    /// When the first namespace opened ahead and not wired yet is due to
    /// be let go of, if any is.
    pub fn unwired_until(&self) -> Option<std::time::Instant> {
        self.warmed.values().min().map(|at| *at + self.warm_keep)
    }

    /// Closes what we hold on a namespace that lives on (a bound one no
    /// longer wanted) and forgets what was observed there.
    pub(super) fn let_go_of(&mut self, ns: &NsId) {
        self.close(ns);
        self.observed.remove_ns(ns);
        self.dirty.remove(ns);
    }

    /// Is each bound namespace still the workload that was bound? A path
    /// that no longer exists, or leads to another namespace than the one
    /// we hold or the one bound, means the workload is gone: let go of what
    /// we hold (the namespace, and with it our interfaces there, can then
    /// be freed) and report it, without opening a stranger.
    fn check_bound(&mut self, idents: &BTreeMap<NsId, Option<(u64, u64)>>) {
        for (ns, want) in idents {
            let NsId::Path(p) = ns else { continue };
            let now = workload_ident(p);
            let held = self.handles.get(ns).and_then(|h| h.kept_ident());
            let gone = match (now, want) {
                (None, _) => Some(format!("the workload is gone: {p} no longer exists")),
                (Some(now), Some(want)) if now != *want => Some(format!(
                    "the workload is gone: {p} is now another namespace (inode {}, bound to inode {})",
                    now.1, want.1
                )),
                _ => None,
            };
            if let Some(why) = gone {
                self.forget_path(ns);
                self.observed.unavailable.insert(ns.clone(), why);
            } else if held.is_some() && held != now {
                // Bound again to what the path leads to now: open that.
                self.forget_path(ns);
            }
        }
    }

    /// Opens bound namespaces not held yet, with a pidfd watch on their
    /// process; one that cannot be opened is unavailable, saying why.
    async fn open_bound(&mut self, new_paths: Vec<NsId>) {
        if new_paths.is_empty() {
            return;
        }
        let prefix = self.cfg.prefix.clone();
        let paths: Vec<(PathBuf, netns::Role)> =
            new_paths.iter().map(|n| (ns_path(&prefix, n), netns::Role::Container)).collect();
        // Each with its listener, opened on the same thread, one kept for
        // this (see `netns::Entering`).
        let results = match self.entering.run(move || netns::open_paths_here(&paths, true)) {
            Ok(answer) => {
                answer.await.unwrap_or_else(|_| new_paths.iter().map(|_| Err(KernelError::panicked())).collect())
            }
            Err(e) => new_paths.iter().map(|_| Err(e.clone())).collect(),
        };
        for (ns, r) in new_paths.iter().zip(results) {
            match r {
                Ok((o, listener)) => {
                    self.handles.insert(ns.clone(), NsHandle::new(o, ns_path(&prefix, ns), true));
                    if let Some(l) = listener {
                        self.listen_opened.insert(ns.clone(), l);
                    }
                    self.listen_pending.insert(ns.clone());
                    if let Some(w) = watch::watch_pid(ns, self.events_tx.clone()) {
                        self.watches.insert(ns.clone(), w);
                    }
                }
                Err(e) => {
                    self.observed.unavailable.insert(ns.clone(), e.to_string());
                }
            }
        }
    }

    /// Dumps the dirty namespaces and the bound ones held that need it, and
    /// works out their veths' peers again. A full round looks at every
    /// bound namespace; a scoped one only at those not observed yet and
    /// those no running listener covers: in the others, what happens
    /// behind our back (our links or addresses deleted, notifications
    /// lost) is told by their listener, and what we do is absorbed as we
    /// do it, so a scoped round costs the same whatever the size of its
    /// CENs (the rest, such as a route deleted by hand, is repaired by the
    /// periodic reconcile, as in managed namespaces).
    async fn look_again(&mut self, want_paths: &BTreeSet<NsId>, scope: Scope<'_>) {
        let mut again: BTreeSet<NsId> = std::mem::take(&mut self.dirty);
        let full = matches!(scope, Scope::All);
        again.extend(
            want_paths
                .iter()
                .filter(|p| self.handles.contains_key(*p))
                .filter(|p| {
                    full || self.observed.ns(p).is_none() || !self.listeners.get(*p).is_some_and(|w| w.running())
                })
                .cloned(),
        );
        self.observe_set(again.clone()).await;
        for ns in want_paths {
            if self.handles.contains_key(ns) && self.observed.ns(ns).is_none() {
                self.observed.unavailable.entry(ns.clone()).or_insert_with(|| "could not be observed".into());
            }
        }
        if matches!(scope, Scope::All) {
            self.observed.pair_peers();
        } else {
            for ns in &again {
                self.pair_ns(ns);
            }
        }
    }

    /// Closes what we hold on a namespace: its handle, its watches.
    pub(super) fn close(&mut self, ns: &NsId) {
        self.handles.remove(ns);
        self.watches.remove(ns);
        self.listeners.remove(ns);
        self.listen_pending.remove(ns);
        self.listen_opened.remove(ns);
    }

    /// Starts listening to link and address notifications in the fabric,
    /// host and bound namespaces opened since the last call (managed
    /// container namespaces are not listened to: see `watch.rs`).
    pub(super) async fn start_listeners(&mut self) {
        let pending: Vec<NsId> = std::mem::take(&mut self.listen_pending)
            .into_iter()
            .filter(|ns| !matches!(ns, NsId::Managed(_)) && !self.listeners.contains_key(ns))
            .collect();
        let mut want = Vec::new();
        let mut fds = Vec::new();
        let mut opened = Vec::new();
        for ns in pending {
            if let Some(s) = self.listen_opened.remove(&ns) {
                opened.push((ns, s));
            } else if let Some(fd) = self.handles.get(&ns).and_then(|h| h.kept_fd()).and_then(|f| f.try_clone().ok()) {
                want.push(ns);
                fds.push(fd);
            }
        }
        self.listen_opened.clear();
        let sockets = match want.is_empty() {
            true => Vec::new(),
            false => blocking(move || netns::open_listeners(fds)).await.unwrap_or_default(),
        };
        for (ns, s) in want.into_iter().zip(sockets).chain(opened) {
            match s {
                Ok(s) => {
                    let w = watch::listen(
                        ns.clone(),
                        s,
                        self.cfg.prefix.clone(),
                        self.events_tx.clone(),
                        self.departures.clone(),
                    );
                    self.listeners.insert(ns, w);
                }
                Err(e) => tracing::warn!("not listening to {ns}: {e}; the reconcile repairs drift there"),
            }
        }
    }

    /// Takes in what the listeners saw, where it is news (our own deletes
    /// were already taken in when they were made), and returns the CENs
    /// whose interfaces it concerns: a scoped apply of those repairs it.
    pub fn absorb_events(&mut self, events: &[watch::Event]) -> BTreeSet<String> {
        let mut groups = BTreeSet::new();
        for e in events {
            match e {
                watch::Event::Gone(_) => {}
                watch::Event::Overrun(ns) => {
                    // Looked at again on the next apply.
                    self.dirty.insert(ns.clone());
                }
                watch::Event::LinkGone { ns, index } => {
                    let Some(l) = self.observed.ns(ns).and_then(|s| s.link_by_index(*index)) else { continue };
                    groups.insert(l.group);
                    let (peer, peer_ns) = (l.peer, l.peer_ns.clone());
                    self.observed.remove_link(ns, *index);
                    // A veth dies as a pair: its peer too (it may be in a
                    // namespace nobody listens to).
                    if let (Some(p), Some(pns)) = (peer, peer_ns) {
                        self.observed.remove_link(&pns, p);
                    }
                }
                watch::Event::AddrGone { ns, index, ip, prefix_len } => {
                    let Some(l) = self.observed.ns_mut(ns).and_then(|s| s.link_mut(*index)) else { continue };
                    if l.addresses.contains(&(*ip, *prefix_len)) {
                        l.addresses.retain(|a| *a != (*ip, *prefix_len));
                        groups.insert(l.group);
                    }
                }
            }
        }
        groups.iter().flat_map(|g| self.groups.sharing(*g).cloned().collect::<Vec<_>>()).collect()
    }

    /// Lets go of a bound namespace: its handle (so the kernel may free
    /// it), what was observed there, and the peers we knew of.
    pub(super) fn forget_path(&mut self, ns: &NsId) {
        self.close(ns);
        self.observed.drop_peers_of(ns);
        self.observed.remove_ns(ns);
        self.dirty.remove(ns);
    }

    /// Works out where the peers of one namespace's veths are, through the
    /// links of the same group (a re-observed namespace's links do not say).
    pub(super) fn pair_ns(&mut self, ns: &NsId) {
        let links: Vec<(u32, u32, u32)> = self
            .observed
            .ns(ns)
            .map(|s| s.links().filter_map(|l| Some((l.index, l.peer?, l.group))).collect())
            .unwrap_or_default();
        for (idx, peer, group) in links {
            let found = self.observed.in_group(group).find(|(pn, pi)| {
                pn != ns
                    && *pi == peer
                    && self.observed.ns(pn).and_then(|s| s.link_by_index(*pi)).is_some_and(|l| l.peer == Some(idx))
            });
            let Some((pn, pi)) = found.cloned() else { continue };
            if let Some(l) = self.observed.ns_mut(ns).and_then(|s| s.link_mut(idx)) {
                l.peer_ns = Some(pn.clone());
            }
            if let Some(l) = self.observed.ns_mut(&pn).and_then(|s| s.link_mut(pi)) {
                l.peer_ns = Some(ns.clone());
            }
        }
    }

    /// Our handle on a namespace, or why there is none.
    pub(super) fn handle(&self, ns: &NsId) -> Result<&NsHandle, KernelError> {
        self.handles.get(ns).ok_or_else(|| KernelError::state("open", ns.to_string(), format!("{ns} is not open")))
    }

    /// The ifindex of a link we know of, or why it is not known.
    pub(super) fn index(&self, ns: &NsId, name: &str) -> Result<u32, KernelError> {
        self.observed.link(ns, name).map(|l| l.index).ok_or_else(|| {
            KernelError::state("get_link", format!("{name} in {ns}"), format!("no interface {name} in {ns}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realize::desired::{CenNet, ContainerNet, Member, Wiring};

    fn member(key: &str) -> Member {
        Member { container: key.into(), ifname: "cen1".into(), addresses: vec![], routes: vec![] }
    }

    fn desired() -> Desired {
        let mut d = Desired::default();
        let bound = |p: &str, ident| ContainerNet { id: "x".into(), netns: NetnsRef::Path(p.into()), ident };
        d.containers.insert("h/a".into(), bound("/proc/1/ns/net", Some((1, 10))));
        d.containers.insert("h/b".into(), bound("/proc/1/ns/net", None));
        d.containers.insert("h/c".into(), bound("/proc/2/ns/net", None));
        d.containers.insert("h/e".into(), bound("", None));
        d.containers.insert("h/m".into(), ContainerNet { id: "m".into(), netns: NetnsRef::Managed, ident: None });
        let cen = |keys: &[&str]| CenNet {
            wiring: Wiring::Bridge,
            members: keys.iter().map(|k| member(k)).collect(),
            gateways: vec![],
            vxlan: None,
        };
        d.cens.insert("cen1".into(), cen(&["h/b", "h/a", "h/m", "h/e"]));
        d.cens.insert("cen2".into(), cen(&["h/c"]));
        d
    }

    #[test]
    fn bound_namespaces_keep_the_identity_they_were_bound_with() {
        let d = desired();
        let all = bound_idents(&d, Scope::All);
        let p1 = NsId::Path("/proc/1/ns/net".into());
        let p2 = NsId::Path("/proc/2/ns/net".into());
        // Two containers share one bound namespace: the identity one of
        // them knows is kept; managed and empty paths are not bound ones.
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(all.get(&p1), Some(&Some((1, 10))));
        assert_eq!(all.get(&p2), Some(&None));
        let cens: BTreeSet<String> = ["cen2".to_string()].into();
        let released = BTreeSet::new();
        let scoped = bound_idents(&d, Scope::Cens(&cens, &released, &Default::default()));
        assert_eq!(scoped.keys().collect::<Vec<_>>(), vec![&p2], "a scoped apply opens only its CENs' namespaces");
    }

    #[test]
    fn roles_follow_what_a_namespace_is() {
        assert_eq!(role(&NsId::Fabric), netns::Role::Fabric);
        assert_eq!(role(&NsId::Host), netns::Role::HostFabric);
        assert_eq!(role(&NsId::Managed("c".into())), netns::Role::Container);
        assert_eq!(role(&NsId::Path("/p".into())), netns::Role::Container);
        assert_eq!(workload_ident("/nonexistent/leviathan/ns"), None);
    }
}
