//! One plan step in the kernel: namespace creates and deletes batched on
//! dedicated threads, FDB and neighbour entries (and the ARP/ND
//! suppression of the VXLAN devices a phase made) batched per namespace in
//! few `sendmsg` calls (`batch.rs`), every other step a netlink request
//! (many in flight at once), each answered with the [`Effect`] it has on
//! the observed state.
//!
//! Invariants: `setns` never runs on a tokio worker (namespace work and
//! link deletions go to threads of their own); every result comes back in
//! the slot of its step.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::batch;
use super::error::KernelError;
use super::naming::{ns_file, ns_path};
use super::nl::{self, NsHandle};
use super::observed::{LinkKind, LinkState, NsId, RouteState};
use super::plan::{Op, Step, VethEnd};
use super::{blocking, handles, netns, Realizer, CREATE_CHUNK, IN_FLIGHT};

/// What a finished step changes in the observed state.
pub(super) enum Effect {
    None,
    /// A namespace made: our handle on it, and its forwarding (fabric).
    Opened(NsId, Box<NsHandle>, Option<bool>),
    NsGone(NsId),
    LinkGone(NsId, u32),
    GroupGone(NsId, u32),
    Up(NsId, String),
    Forwarding(NsId, bool),
    Addr(NsId, u32, Ipv4Addr, u8),
    AddrGone(NsId, u32, Ipv4Addr, u8),
    Route(NsId, RouteState),
    RouteGone(NsId, RouteState),
    Fdb(NsId, u32, [u8; 6], Ipv4Addr, bool),
    Neigh(NsId, u32, Ipv4Addr, Option<[u8; 6]>),
    /// A link made, as the kernel's answer told it (not asked for again).
    Made(NsId, Box<LinkState>),
    /// Both ends of a veth made, as the kernel's answer about the first
    /// told them (its IFLA_LINK is the second's index).
    MadeVeth(Box<[(NsId, LinkState); 2]>),
}

/// Whether a step is an FDB or neighbour entry (they run in batches).
fn is_l2(op: &Op) -> bool {
    matches!(op, Op::AddFdb { .. } | Op::DeleteFdb { .. } | Op::AddNeigh { .. } | Op::DeleteNeigh { .. })
}

/// The result of one step, by its place in the phase.
type Slot = (usize, Result<Effect, KernelError>);

impl Realizer {
    /// Runs the steps of one phase: namespace creation and deletion as
    /// batches on dedicated threads, the rest as netlink requests; one
    /// result per step, in order.
    pub(super) async fn run_phase(&self, steps: &[Step], tick: &(dyn Fn() + Sync)) -> Vec<Result<Effect, KernelError>> {
        let batch = async {
            let mut res = self.create_netns(steps).await;
            res.extend(self.delete_netns(steps).await);
            for _ in &res {
                tick();
            }
            res
        };
        let nl_futs: Vec<_> = steps
            .iter()
            .enumerate()
            .filter(|(_, s)| !matches!(s.op, Op::CreateNetns { .. } | Op::DeleteNetns { .. }) && !is_l2(&s.op))
            .map(|(i, s)| async move {
                let r =
                    nl::answered("exec", || s.op.ns().map(NsId::to_string).unwrap_or_default(), self.exec(&s.op)).await;
                tick();
                (i, r)
            })
            .collect();
        let mut l2: BTreeMap<&NsId, Vec<(usize, &Op)>> = BTreeMap::new();
        for (i, s) in steps.iter().enumerate().filter(|(_, s)| is_l2(&s.op)) {
            if let Some(ns) = s.op.ns() {
                l2.entry(ns).or_default().push((i, &s.op));
            }
        }
        let l2_futs = l2.into_iter().map(|(ns, ops)| async move {
            let res = self.run_l2(ns, ops).await;
            for _ in &res {
                tick();
            }
            res
        });
        let batches = futures_util::future::join_all(l2_futs);
        let (batch_res, nl_res, l2_res) =
            futures_util::future::join3(batch, nl::bounded(nl_futs, IN_FLIGHT), batches).await;
        let mut out: Vec<Option<Result<Effect, KernelError>>> = steps.iter().map(|_| None).collect();
        for (i, r) in batch_res.into_iter().chain(nl_res).chain(l2_res.into_iter().flatten()) {
            if let Some(slot) = out.get_mut(i) {
                *slot = Some(r);
            }
        }
        self.suppress_arp(steps, &mut out).await;
        out.into_iter().map(|r| r.unwrap_or_else(|| Err(KernelError::state("run", "", "not run")))).collect()
    }

    /// The phase's namespace creates, in chunks, each turned into handles
    /// at once: a managed namespace's fd is closed there (only its socket
    /// is kept), so a make of thousands never holds two descriptors for
    /// each.
    async fn create_netns(&self, steps: &[Step]) -> Vec<Slot> {
        let prefix = &self.cfg.prefix;
        let creates: Vec<(usize, &NsId)> = steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match &s.op {
                Op::CreateNetns { ns } => Some((i, ns)),
                _ => None,
            })
            .collect();
        let mut res = Vec::new();
        for chunk in creates.chunks(CREATE_CHUNK) {
            let names: Vec<(String, netns::Role)> =
                chunk.iter().map(|(_, ns)| (ns_file(prefix, ns).unwrap_or_default(), handles::role(ns))).collect();
            let made = match blocking(move || netns::add_named(names)).await {
                Ok(v) => v,
                Err(e) => chunk.iter().map(|_| Err(e.clone())).collect(),
            };
            for ((i, ns), r) in chunk.iter().zip(made) {
                let opened = r.map(|o| {
                    let fwd = o.forwarding;
                    let keep = !matches!(ns, NsId::Managed(_));
                    let h = NsHandle::new(o, ns_path(prefix, ns), keep);
                    Effect::Opened((*ns).clone(), Box::new(h), fwd)
                });
                res.push((*i, opened));
            }
        }
        res
    }

    /// The phase's namespace deletes, spread over a few threads.
    async fn delete_netns(&self, steps: &[Step]) -> Vec<Slot> {
        let prefix = &self.cfg.prefix;
        let deletes: Vec<(usize, &NsId)> = steps
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match &s.op {
                Op::DeleteNetns { ns } => Some((i, ns)),
                _ => None,
            })
            .collect();
        if deletes.is_empty() {
            return Vec::new();
        }
        let names: Vec<String> = deletes.iter().map(|(_, ns)| ns_file(prefix, ns).unwrap_or_default()).collect();
        let gone = match blocking(move || netns::del_named_many(names)).await {
            Ok(v) => v,
            Err(e) => deletes.iter().map(|_| Err(e.clone())).collect(),
        };
        deletes.iter().zip(gone).map(|((i, ns), r)| (*i, r.map(|()| Effect::NsGone((*ns).clone())))).collect()
    }

    /// Deletes one link, off the tokio workers (see [`netns::del_links`]).
    /// Where a listener hears the namespace, the link is gone as soon as it
    /// announces so (out of the namespace, off its bridge); the request
    /// then finishes its RCU waits in the background.
    async fn del_link(&self, ns: &NsId, index: u32) -> Result<(), KernelError> {
        let fd = self.handle(ns)?.ns_fd()?;
        let heard = self.listeners.contains_key(ns).then(|| self.departures.expect(ns, index));
        let mut request = tokio::task::spawn_blocking(move || netns::del_links(fd, vec![netns::Deletion::Link(index)]));
        let Some(heard) = heard else {
            return first(request.await.map_err(KernelError::worker));
        };
        tokio::select! {
            r = &mut request => {
                self.departures.forget(ns, index);
                first(r.map_err(KernelError::worker))
            }
            Ok(()) = heard => {
                let what = format!("deleting link {index} in {ns}");
                tokio::spawn(async move {
                    if let Err(e) = first(request.await.map_err(KernelError::worker)) {
                        tracing::warn!("{what} (announced gone): {e}");
                    }
                });
                Ok(())
            }
        }
    }

    /// Deletes a link group in one request, off the tokio workers.
    async fn del_group(&self, ns: &NsId, group: u32) -> Result<Effect, KernelError> {
        let fd = self.handle(ns)?.ns_fd()?;
        first(blocking(move || netns::del_links(fd, vec![netns::Deletion::Group(group)])).await)
            .map(|()| Effect::GroupGone(ns.clone(), group))
    }

    /// Sets `net.ipv4.ip_forward` in a namespace, on a thread entered there.
    async fn set_forwarding(&self, ns: &NsId, on: bool) -> Result<Effect, KernelError> {
        let fd = self.handle(ns)?.ns_fd()?;
        blocking(move || netns::set_forwarding_in(&fd, on))
            .await
            .and_then(|r| r)
            .map(|()| Effect::Forwarding(ns.clone(), on))
    }

    /// One step in the kernel (namespace ops run in batches, see
    /// [`run_phase`](Self::run_phase)).
    async fn exec(&self, op: &Op) -> Result<Effect, KernelError> {
        match op {
            Op::CreateNetns { .. } | Op::DeleteNetns { .. } => {
                Err(KernelError::state("exec", "", "namespace ops run in batches"))
            }
            Op::DeleteGroup { ns, group } => self.del_group(ns, *group).await,
            Op::DeleteLink { ns, index, .. } => {
                self.del_link(ns, *index).await.map(|()| Effect::LinkGone(ns.clone(), *index))
            }
            Op::SetUp { ns, name } | Op::SetUpNew { ns, name } => {
                let idx = self.index(ns, name)?;
                nl::set_up(&self.handle(ns)?.handle, idx).await.map(|()| Effect::Up(ns.clone(), name.clone()))
            }
            Op::SetForwarding { ns, on } => self.set_forwarding(ns, *on).await,
            Op::CreateBridge { ns, name, group, mac } => {
                let made = nl::add_bridge(&self.handle(ns)?.handle, name, *group, *mac, (&self.cfg.prefix, ns)).await?;
                Ok(made.map_or(Effect::None, |l| Effect::Made(ns.clone(), Box::new(l))))
            }
            Op::SetAlias { ns, name, alias } => {
                let idx = self.index(ns, name)?;
                nl::set_alias(&self.handle(ns)?.handle, idx, alias).await.map(|()| Effect::None)
            }
            Op::CreateVeth { a, b, group } => self.add_veth(a, b, *group).await,
            Op::CreateVxlan { ns, name, vni, master, group } => self.add_vxlan(ns, name, *vni, master, *group).await,
            Op::DeleteAddr { .. } | Op::DeleteRoute { .. } | Op::AddAddr { .. } | Op::AddRoute { .. } => {
                self.exec_l3(op).await
            }
            Op::AddFdb { .. } | Op::DeleteFdb { .. } | Op::AddNeigh { .. } | Op::DeleteNeigh { .. } => {
                Err(KernelError::state("exec", "", "FDB and neighbour entries run in batches"))
            }
        }
    }

    /// One RTM_NEWLINK making both ends of a veth, each in its namespace.
    async fn add_veth(&self, a: &VethEnd, b: &VethEnd, group: u32) -> Result<Effect, KernelError> {
        let master = match &a.master {
            Some(m) => Some(self.index(&a.ns, m)?),
            None => None,
        };
        let bfd = self.handle(&b.ns)?.ns_fd()?;
        let h = &self.handle(&a.ns)?.handle;
        let learn = (self.cfg.prefix.as_str(), &a.ns);
        let made =
            nl::add_veth(h, &a.name, a.mac, master, &b.name, b.mac, netns::raw(&bfd), group, a.mtu, learn).await?;
        // End `b` as it was made: down, in `group`, no master, the MTU
        // asked for (a veth's default otherwise), peer of `a`.
        let (Some(mut made), None) = (made, &b.master) else { return Ok(Effect::None) };
        let Some(bi) = made.peer.filter(|_| made.kind == LinkKind::Veth) else { return Ok(Effect::None) };
        made.peer_ns = Some(b.ns.clone());
        // The kernel announces a new link before attaching it to its
        // master (which it does before answering).
        made.master = made.master.or(master);
        let peer = LinkState {
            index: bi,
            name: b.name.clone(),
            kind: LinkKind::Veth,
            group,
            peer: Some(made.index),
            peer_ns: Some(a.ns.clone()),
            up: false,
            ours: nl::veth_is_ours(&b.ns, &b.name, &self.cfg.prefix, group),
            mtu: a.mtu.unwrap_or(1500),
            ..Default::default()
        };
        Ok(Effect::MadeVeth(Box::new([(a.ns.clone(), made), (b.ns.clone(), peer)])))
    }

    /// A VXLAN device made from the underlay's namespace into `ns`.
    async fn add_vxlan(
        &self,
        ns: &NsId,
        name: &str,
        vni: u32,
        master: &str,
        group: u32,
    ) -> Result<Effect, KernelError> {
        let (Some((underlay, _)), Some(u)) = (&self.underlay, self.cfg.underlay) else {
            return Err(KernelError::state("add_vxlan", name, "no underlay is configured (--vtep-address)"));
        };
        let master = self.index(ns, master)?;
        let fd = self.handle(ns)?.ns_fd()?;
        nl::add_vxlan(underlay, name, vni, u.local, u.ifindex, netns::raw(&fd), master, group).await?;
        // ARP/ND suppression follows for all the phase's devices at once
        // (see `suppress_arp`).
        Ok(Effect::None)
    }

    /// Addresses and routes.
    async fn exec_l3(&self, op: &Op) -> Result<Effect, KernelError> {
        match op {
            Op::DeleteAddr { ns, index, ip, prefix_len } => {
                nl::del_addr(&self.handle(ns)?.handle, *index, *ip, *prefix_len)
                    .await
                    .map(|()| Effect::AddrGone(ns.clone(), *index, *ip, *prefix_len))
            }
            Op::DeleteRoute { ns, dest, prefix_len, via, oif } => {
                let route = RouteState { dest: *dest, prefix_len: *prefix_len, via: *via, oif: *oif };
                nl::del_route(&self.handle(ns)?.handle, *dest, *prefix_len, *via, *oif)
                    .await
                    .map(|()| Effect::RouteGone(ns.clone(), route))
            }
            Op::AddAddr { ns, name, ip, prefix_len } => {
                let idx = self.index(ns, name)?;
                nl::add_addr(&self.handle(ns)?.handle, idx, *ip, *prefix_len)
                    .await
                    .map(|()| Effect::Addr(ns.clone(), idx, *ip, *prefix_len))
            }
            Op::AddRoute { ns, name, dest, prefix_len, via } => {
                let oif = self.index(ns, name)?;
                let route = RouteState { dest: *dest, prefix_len: *prefix_len, via: *via, oif };
                nl::add_route(&self.handle(ns)?.handle, *dest, *prefix_len, *via, oif)
                    .await
                    .map(|()| Effect::Route(ns.clone(), route))
            }
            _ => Err(KernelError::state("exec", "", "not an address or route step")),
        }
    }

    /// Turns on ARP/ND suppression on the VXLAN devices the phase made, one
    /// batch per namespace (see `batch.rs`) instead of a request each; a
    /// device whose flag the kernel refused has its step failed.
    async fn suppress_arp(&self, steps: &[Step], out: &mut [Option<Result<Effect, KernelError>>]) {
        let mut made: BTreeMap<&NsId, Vec<(usize, &str)>> = BTreeMap::new();
        for (i, s) in steps.iter().enumerate() {
            if let (Op::CreateVxlan { ns, name, .. }, Some(Some(Ok(_)))) = (&s.op, out.get(i)) {
                made.entry(ns).or_default().push((i, name));
            }
        }
        for (ns, devices) in made {
            let reqs = devices.iter().map(|(_, name)| batch::Request::set_neigh_suppress(name)).collect();
            let sent = match self.handle(ns).and_then(|h| h.ns_fd()) {
                Ok(fd) => blocking(move || batch::send_in(fd, reqs)).await,
                Err(e) => Err(e),
            };
            let results = match sent {
                Ok(v) => v,
                Err(e) => devices.iter().map(|_| Err(e.clone())).collect(),
            };
            for ((i, _), r) in devices.iter().zip(results) {
                if let (Err(e), Some(slot)) = (r, out.get_mut(*i)) {
                    *slot = Some(Err(e));
                }
            }
        }
    }

    /// The FDB and neighbour entries of a phase in one namespace (VXLAN
    /// across hosts), sent as one batch (see `batch.rs`).
    async fn run_l2(&self, ns: &NsId, ops: Vec<(usize, &Op)>) -> Vec<Slot> {
        let mut out = Vec::with_capacity(ops.len());
        let mut reqs = Vec::with_capacity(ops.len());
        let mut effects = Vec::with_capacity(ops.len());
        for (i, op) in ops {
            match self.l2_request(op) {
                Ok((req, effect)) => {
                    reqs.push(req);
                    effects.push((i, effect));
                }
                Err(e) => out.push((i, Err(e))),
            }
        }
        if reqs.is_empty() {
            return out;
        }
        let sent = match self.handle(ns).and_then(|h| h.ns_fd()) {
            Ok(fd) => blocking(move || batch::send_in(fd, reqs)).await,
            Err(e) => Err(e),
        };
        match sent {
            Ok(results) => out.extend(effects.into_iter().zip(results).map(|((i, eff), r)| (i, r.map(|()| eff)))),
            Err(e) => out.extend(effects.into_iter().map(|(i, _)| (i, Err(e.clone())))),
        }
        out
    }

    /// The request of an FDB or neighbour step, and its effect once done.
    fn l2_request(&self, op: &Op) -> Result<(batch::Request, Effect), KernelError> {
        Ok(match op {
            Op::AddFdb { ns, name, mac, remote } => {
                let idx = self.index(ns, name)?;
                (batch::Request::add_fdb(idx, *mac, *remote), Effect::Fdb(ns.clone(), idx, *mac, *remote, true))
            }
            Op::DeleteFdb { ns, index, mac, remote } => {
                (batch::Request::del_fdb(*index, *mac, *remote), Effect::Fdb(ns.clone(), *index, *mac, *remote, false))
            }
            Op::AddNeigh { ns, name, ip, mac } => {
                let idx = self.index(ns, name)?;
                (batch::Request::add_neigh(idx, *ip, *mac), Effect::Neigh(ns.clone(), idx, *ip, Some(*mac)))
            }
            Op::DeleteNeigh { ns, index, ip } => {
                (batch::Request::del_neigh(*index, *ip), Effect::Neigh(ns.clone(), *index, *ip, None))
            }
            _ => return Err(KernelError::state("exec", "", "not a layer-2 step")),
        })
    }
}

/// The one result of a one-element batch.
fn first(r: Result<Vec<Result<(), KernelError>>, KernelError>) -> Result<(), KernelError> {
    r.and_then(|v| v.into_iter().next().unwrap_or_else(|| Err(KernelError::state("run", "", "no result"))))
}
