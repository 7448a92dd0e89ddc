//! Adoption: taking in what the kernel holds under the prefix. At start
//! (and on refresh) every namespace we own is opened and dumped once;
//! after a create, each new link is asked for by name (or taken in from
//! its peer's answer), never by a dump of its namespace.
//!
//! Invariants: with a ledger, only what it records is ours; anything else
//! under the prefix (a namespace, a link in the host's or a bound
//! namespace, any link in the fabric) is reported as foreign and never
//! touched. A namespace whose dump failed is left dirty and looked at
//! again on the next apply.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::error::{KernelError, RealizeError};
use super::naming::{self, ns_file, ns_path};
use super::nl::{self, NsHandle};
use super::observed::{LinkKind, LinkState, NsId, NsState, Observed};
use super::plan::{GroupIndex, VethEnd};
use super::{
    blocking, config, handles, ledger, netns, watch, Config, FabricMode, LinkName, Realizer, CREATE_CHUNK, IN_FLIGHT,
};

/// What the ledger should learn from one namespace's dump.
enum LedgerWork {
    None,
    /// A ledger from before fabric links were recorded: these are ours.
    AdoptFabric(Vec<ledger::Entry>),
    /// Recorded links that are no longer there.
    Forget(Vec<ledger::Entry>),
}

impl Realizer {
    /// Adopt what exists under the prefix: open every namespace we own
    /// (and the host's in host mode) and observe its links, addresses and
    /// routes, so the next [`apply`](Self::apply) repairs drift both ways.
    pub async fn new(cfg: Config) -> Result<Realizer, RealizeError> {
        config::check_config(&cfg)?;
        let mut r = Realizer::blank(cfg, None)?;
        r.adopt().await?;
        Ok(r)
    }

    fn blank(cfg: Config, ledger: Option<std::sync::Arc<ledger::Ledger>>) -> Result<Realizer, RealizeError> {
        super::handles::reserve_descriptors();
        let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
        let underlay = match cfg.underlay {
            Some(_) => {
                let (mut conn, handle, _) = rtnetlink::new_connection().map_err(|e| {
                    KernelError::io("socket", "", &e).context("opening netlink in the underlay's namespace")
                })?;
                // A make's VXLAN devices are asked for here, many at once.
                super::netns::request_buffer(rtnetlink::sys::AsyncSocket::socket_ref(conn.socket_mut()));
                Some((handle, tokio::spawn(conn)))
            }
            None => None,
        };
        Ok(Realizer {
            cfg,
            observed: Observed::default(),
            handles: BTreeMap::new(),
            dirty: BTreeSet::new(),
            groups: GroupIndex::default(),
            watches: BTreeMap::new(),
            events_tx,
            events_rx: Some(events_rx),
            listeners: BTreeMap::new(),
            departures: watch::Departures::default(),
            listen_pending: BTreeSet::new(),
            listen_opened: BTreeMap::new(),
            entering: netns::Entering::default(),
            warmed: BTreeMap::new(),
            warm_keep: super::handles::WARM_KEEP,
            ledger,
            foreign: BTreeSet::new(),
            underlay,
        })
    }

    /// [`Realizer::new`] for a server: only what `ledger` records is
    /// adopted, changed or deleted; the rest under the prefix is foreign.
    pub async fn with_ledger(cfg: Config, ledger: ledger::Ledger) -> Result<Realizer, RealizeError> {
        config::check_config(&cfg)?;
        let mut r = Realizer::blank(cfg, Some(std::sync::Arc::new(ledger)))?;
        r.adopt().await?;
        Ok(r)
    }

    /// Forget everything and observe the kernel again (repairs runtime drift
    /// on the next apply).
    pub async fn refresh(&mut self) -> Result<(), RealizeError> {
        let paths: Vec<NsId> = self.handles.keys().filter(|n| matches!(n, NsId::Path(_))).cloned().collect();
        self.handles.retain(|k, _| matches!(k, NsId::Path(_)));
        self.listeners.retain(|k, _| matches!(k, NsId::Path(_)));
        self.observed.retain_ns(|k| matches!(k, NsId::Path(_)));
        self.adopt().await?;
        self.dirty.extend(paths);
        let dirty = std::mem::take(&mut self.dirty);
        self.observe_set(dirty).await;
        self.observed.pair_peers();
        Ok(())
    }

    /// Opens every namespace we own (and the host's in host mode) and
    /// dumps each once.
    async fn adopt(&mut self) -> Result<(), RealizeError> {
        let mut ids = self.owned_namespaces().await?;
        if self.cfg.fabric == FabricMode::Host {
            ids.push(NsId::Host);
        }
        self.open_owned(ids).await?;
        let dirty = std::mem::take(&mut self.dirty);
        self.observe_set(dirty).await;
        self.observed.pair_peers();
        Ok(())
    }

    /// The named namespaces under the prefix that are ours; the others are
    /// reported as foreign, and recorded ones that are gone are forgotten.
    async fn owned_namespaces(&mut self) -> Result<Vec<NsId>, RealizeError> {
        let prefix = self.cfg.prefix.clone();
        let fabric_file = naming::fabric_netns_name(&prefix);
        let names = {
            let p = prefix.clone();
            blocking(move || {
                netns::prepare_run_netns()?;
                netns::list_named(&p)
            })
            .await
            .and_then(|r| r)?
        };
        self.foreign.clear();
        let mut ids: Vec<NsId> = Vec::new();
        for n in &names {
            if self.ledger.as_ref().is_some_and(|l| !l.contains(n, "")) {
                tracing::warn!(namespace = %n, "a namespace under the prefix that this leviathan did not make: left alone");
                self.foreign.insert(format!("namespace {n}"));
                continue;
            }
            ids.push(if *n == fabric_file { NsId::Fabric } else { NsId::Managed(n[prefix.len()..].to_string()) });
        }
        // Recorded namespaces that are gone (deleted by hand, or a crash
        // between the record and the create): forget them.
        if let Some(l) = &self.ledger {
            let present: BTreeSet<&String> = names.iter().collect();
            let gone: Vec<ledger::Entry> = l
                .namespaces()
                .into_iter()
                .filter(|n| !n.starts_with("path:") && n != "host" && !present.contains(n))
                .map(|n| (n, String::new()))
                .collect();
            if let Err(e) = l.forget(&gone) {
                tracing::warn!(error = %e, "forgetting namespaces that are gone");
            }
            // A ledger from before fabric links were recorded, with no
            // fabric to adopt: every fabric link from now on is recorded.
            if !l.fabric_links_recorded() && !present.contains(&fabric_file) {
                if let Err(e) = l.adopt_fabric_links(&[]) {
                    tracing::warn!(error = %e, "marking the ledger as recording fabric links");
                }
            }
        }
        Ok(ids)
    }

    /// Opens the namespaces adopted, each marked dirty (to be dumped). In
    /// chunks, each turned into handles at once (a managed namespace's fd
    /// is closed there): never two descriptors for each of thousands of
    /// namespaces.
    async fn open_owned(&mut self, ids: Vec<NsId>) -> Result<(), RealizeError> {
        let prefix = self.cfg.prefix.clone();
        let mut stale = Vec::new();
        for chunk in ids.chunks(CREATE_CHUNK) {
            let paths: Vec<(PathBuf, netns::Role)> =
                chunk.iter().map(|n| (ns_path(&prefix, n), handles::role(n))).collect();
            let opened = blocking(move || netns::open_paths(paths)).await?;
            for (id, o) in chunk.iter().zip(opened) {
                match o {
                    Ok(o) => {
                        let fwd = o.forwarding;
                        let h = NsHandle::new(o, ns_path(&prefix, id), !matches!(id, NsId::Managed(_)));
                        self.handles.insert(id.clone(), h);
                        self.listen_pending.insert(id.clone());
                        self.observed.insert_ns(id.clone(), NsState::new(vec![], vec![], fwd));
                        self.dirty.insert(id.clone());
                    }
                    Err(e) if *id == NsId::Host => return Err(RealizeError::System(e)),
                    // A file under our prefix that is no namespace: the
                    // remains of an interrupted create. Remove it.
                    Err(_) => stale.extend(ns_file(&prefix, id)),
                }
            }
        }
        if !stale.is_empty() {
            let _ = blocking(move || netns::del_named_many(stale)).await;
        }
        Ok(())
    }

    /// In a namespace that is not ours alone (the host's, the fabric, or
    /// one bound by path), a link is ours only if the ledger records it;
    /// the others (carrying our prefix or group; in the fabric, any) are
    /// someone else's, reported and left alone. Returns what the ledger
    /// should learn from this dump.
    fn own(&mut self, ns: &NsId, st: &mut NsState) -> LedgerWork {
        let Some(l) = self.ledger.clone() else { return LedgerWork::None };
        if !matches!(ns, NsId::Host | NsId::Path(_) | NsId::Fabric) {
            return LedgerWork::None;
        }
        let key = ledger::ns_key(ns, &self.cfg.prefix);
        if *ns == NsId::Fabric && !l.fabric_links_recorded() {
            // A ledger from before fabric links were recorded: what is
            // there now was taken as ours then, and still is.
            return LedgerWork::AdoptFabric(
                st.links().filter(|x| x.ours).map(|x| (key.clone(), x.name.clone())).collect(),
            );
        }
        let strangers: Vec<(u32, String)> =
            st.links().filter(|x| x.ours && !l.contains(&key, &x.name)).map(|x| (x.index, x.name.clone())).collect();
        for (idx, name) in strangers {
            if let Some(x) = st.link_mut(idx) {
                x.ours = false;
            }
            match ns {
                NsId::Fabric => {
                    tracing::warn!(link = %name, "{ns}: a link that this leviathan did not make: left alone")
                }
                _ => tracing::warn!(
                    link = %name,
                    "{ns}: a link carrying the prefix that this leviathan did not make: left alone"
                ),
            }
            self.foreign.insert(format!("link {name} in {ns}"));
        }
        if matches!(ns, NsId::Fabric | NsId::Host) {
            // Recorded links that are gone (deleted by hand, or taken with
            // the container namespace of their peer): forgotten.
            let gone: Vec<ledger::Entry> =
                l.links_in(&key).into_iter().filter(|n| st.link(n).is_none()).map(|n| (key.clone(), n)).collect();
            if !gone.is_empty() {
                return LedgerWork::Forget(gone);
            }
        }
        LedgerWork::None
    }

    /// Does what [`Realizer::own`] found the ledger should learn.
    async fn ledger_work(&self, work: LedgerWork) {
        let Some(l) = self.ledger.clone() else { return };
        let (what, r) = match work {
            LedgerWork::None => return,
            LedgerWork::AdoptFabric(entries) => {
                ("recording the fabric's links", blocking(move || l.adopt_fabric_links(&entries)).await)
            }
            LedgerWork::Forget(entries) => {
                ("forgetting links that are gone", blocking(move || l.forget(&entries)).await)
            }
        };
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "{what}"),
            Err(e) => tracing::warn!(error = %e, "{what}"),
        }
    }

    /// Dump the given namespaces again (links, addresses, routes).
    pub(super) async fn observe_set(&mut self, set: BTreeSet<NsId>) {
        let prefix = self.cfg.prefix.clone();
        let futs: Vec<_> = set
            .iter()
            .filter_map(|ns| {
                let h = self.handles.get(ns)?;
                let fwd = self.observed.ns(ns).and_then(|s| s.forwarding);
                let prefix = prefix.clone();
                Some(async move {
                    let dump = nl::dump_ns(&h.handle, &prefix, ns, fwd);
                    (ns.clone(), nl::answered("dump_ns", || ns.to_string(), dump).await)
                })
            })
            .collect();
        for (ns, r) in nl::bounded(futs, IN_FLIGHT).await {
            match r {
                Ok(mut st) => {
                    let work = self.own(&ns, &mut st);
                    self.observed.insert_ns(ns, st);
                    self.ledger_work(work).await;
                }
                Err(e) => {
                    tracing::warn!("observing {ns}: {e}");
                    self.dirty.insert(ns);
                }
            }
        }
    }

    /// Learns links just created by asking for each by name (one
    /// RTM_GETLINK each, never a dump of the namespace); `pairs` names the
    /// two ends of each veth created, so each knows where its peer is.
    pub(super) async fn learn(&mut self, links: BTreeSet<LinkName>, pairs: &[(LinkName, LinkName)]) {
        let prefix = self.cfg.prefix.clone();
        let futs: Vec<_> = links
            .iter()
            .filter_map(|(ns, name)| {
                let h = self.handles.get(ns)?;
                let prefix = prefix.clone();
                Some(async move {
                    let get = nl::get_link(&h.handle, &prefix, ns, name);
                    (ns.clone(), name.clone(), nl::answered("get_link", || format!("{name} in {ns}"), get).await)
                })
            })
            .collect();
        for (ns, name, r) in nl::bounded(futs, IN_FLIGHT).await {
            match r {
                Ok(Some(l)) => self.observed.insert_link(&ns, l),
                Ok(None) => tracing::warn!("{name} in {ns} was created but is not there"),
                Err(e) => {
                    tracing::warn!("{e}");
                    self.dirty.insert(ns);
                }
            }
        }
        for ((an, a), (bn, b)) in pairs {
            let ia = self.observed.link(an, a).map(|l| (l.index, l.peer));
            let ib = self.observed.link(bn, b).map(|l| (l.index, l.peer));
            if let (Some((ia, pa)), Some((ib, pb))) = (ia, ib) {
                if pa == Some(ib) && pb == Some(ia) {
                    if let Some(l) = self.observed.ns_mut(an).and_then(|s| s.link_mut(ia)) {
                        l.peer_ns = Some(bn.clone());
                    }
                    if let Some(l) = self.observed.ns_mut(bn).and_then(|s| s.link_mut(ib)) {
                        l.peer_ns = Some(an.clone());
                    }
                }
            }
        }
    }

    /// Takes in the `a` end of each veth just made as the kernel's answer
    /// about its peer `b` tells it (IFLA_LINK there is `a`'s ifindex) and as
    /// it was made (name, group, up, attached to its bridge): one
    /// RTM_GETLINK per pair instead of two. Every message about a veth end
    /// in the fabric costs the kernel a walk of the fabric's namespace ids
    /// (one per container namespace), so this is one walk fewer per join.
    /// The ends that cannot be told so are returned, with their pairs, to
    /// be asked for.
    pub(super) fn take_in_told(
        &mut self,
        told: Vec<(VethEnd, LinkName, u32)>,
    ) -> (BTreeSet<LinkName>, Vec<(LinkName, LinkName)>) {
        let prefix = self.cfg.prefix.clone();
        let mut untold = BTreeSet::new();
        let mut pairs = Vec::new();
        for (a, (bns, bname), group) in told {
            let b = self.observed.link(&bns, &bname).map(|l| (l.index, l.peer));
            let master = match &a.master {
                Some(br) => self.observed.link(&a.ns, br).map(|l| Some(l.index)),
                None => Some(None),
            };
            let (Some((bi, Some(ai))), Some(master)) = (b, master) else {
                untold.insert((a.ns.clone(), a.name.clone()));
                pairs.push(((a.ns.clone(), a.name.clone()), (bns, bname)));
                continue;
            };
            // Whose it is, by the rule `nl::parse_link` applies to a veth.
            let ours = match &a.ns {
                NsId::Managed(_) | NsId::Fabric => true,
                NsId::Host => a.name.starts_with(&prefix),
                NsId::Path(_) => naming::is_our_group(&prefix, group),
            };
            let link = LinkState {
                index: ai,
                name: a.name.clone(),
                kind: LinkKind::Veth,
                group,
                master,
                peer: Some(bi),
                peer_ns: Some(bns.clone()),
                up: true,
                ours,
                addresses: Vec::new(),
                // As asked at creation (a veth's default otherwise).
                mtu: a.mtu.unwrap_or(1500),
                ..Default::default()
            };
            self.observed.insert_link(&a.ns, link);
            if let Some(l) = self.observed.ns_mut(&bns).and_then(|s| s.link_mut(bi)) {
                l.peer_ns = Some(a.ns.clone());
            }
        }
        (untold, pairs)
    }
}
