//! GraphQL object types. Each holds a snapshot of its record taken when it
//! was resolved; relations are looked up in the topology when asked for,
//! through the primitive reads ([`model::Read`]) and the reads derived from
//! them ([`model::View`]), so the live topology and a view at a revision
//! answer through the same code.

use super::cost::{self, List};
use super::page;
use crate::model::{self, ContainerKey, Read, View};
use crate::service::history::{AtView, Reader};
use crate::service::Service;
use async_graphql::{Context, Enum, Object, Result, SimpleObject, ID};
use std::sync::Arc;

pub use super::objects::{Cpool, CpoolCin, Membership, MembershipAddress};

pub(crate) fn svc<'a>(ctx: &Context<'a>) -> &'a Arc<Service> {
    ctx.data_unchecked::<Arc<Service>>()
}

/// The topology an object reads its relations (and derived fields) from:
/// the live one, or the view at a revision for the objects reached through
/// `Query.at` (read through the live one and the history's index, see
/// `service::history::view`). The live one costs nothing more than before.
#[derive(Clone, Default)]
pub struct Source(Option<Arc<AtView>>);

impl Source {
    /// The topology as it stood at a view's revision.
    pub fn at(view: Arc<AtView>) -> Source {
        Source(Some(view))
    }
    /// Reads the topology this source names. Only a read at a revision
    /// fails: once the kept log no longer covers it (`GONE`), or after the
    /// model was reloaded (`UNAVAILABLE`).
    pub fn read<R>(&self, ctx: &Context<'_>, f: impl FnOnce(&Reader<'_>) -> R) -> Result<R> {
        svc(ctx).read_in(self.0.as_deref(), f).map_err(super::gql)
    }
}

/// Realization status: how far the kernel is from what the model asks for.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Status {
    /// Not made, or made but not yet worked on.
    Pending,
    /// Being made in the kernel.
    Preparing,
    /// Made: the kernel has it.
    Ready,
    /// Being taken out of the kernel.
    Destroying,
    /// The kernel work failed; `statusMessage` says why. Making it again retries.
    Failed,
}

impl From<model::Status> for Status {
    fn from(s: model::Status) -> Self {
        match s {
            model::Status::Pending => Status::Pending,
            model::Status::Preparing => Status::Preparing,
            model::Status::Ready => Status::Ready,
            model::Status::Destroying => Status::Destroying,
            model::Status::Failed => Status::Failed,
        }
    }
}

/// How a CEN is wired.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum WiringType {
    /// A Linux bridge with one veth pair per member.
    Bridge,
    /// One veth pair straight between two containers.
    Wire,
}

impl From<model::Wiring> for WiringType {
    fn from(w: model::Wiring) -> Self {
        match w {
            model::Wiring::Bridge => WiringType::Bridge,
            model::Wiring::Wire => WiringType::Wire,
        }
    }
}

/// A machine that runs containers (the legacy API's `hostID`).
pub struct Host {
    pub id: String,
    pub src: Source,
}

impl Host {
    pub fn from_rec(rec: &model::HostRec) -> Self {
        Host { id: rec.id.clone(), src: Source::default() }
    }
    /// A host read from `src`.
    pub fn from_rec_in(rec: &model::HostRec, src: &Source) -> Self {
        Host { id: rec.id.clone(), src: src.clone() }
    }
    /// The id lists of hosts are paged by.
    pub fn id_str(&self) -> &str {
        &self.id
    }
}

/// A machine that runs containers (the legacy API's `hostID`).
#[Object]
impl Host {
    /// The host id (unique).
    async fn id(&self) -> ID {
        ID(self.id.clone())
    }
    /// The host's underlay address (`--vtep-address` of its leviathan), as
    /// last announced; null if its leviathan never announced one to this
    /// server. With a SQLite state file only this server's own host is known.
    async fn vtep_address(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        let announced = self.src.read(ctx, |t| t.host(&self.id).and_then(|h| h.vtep))?;
        Ok(announced.map(|a| a.to_string()).or_else(|| svc(ctx).host_status(&self.id).vtep_address))
    }
    /// Whether the host's leviathan is running: with etcd, true while its
    /// announcement's lease lives (false once it expired); with a SQLite
    /// state file, true for this server's own host only.
    async fn up(&self, ctx: &Context<'_>) -> bool {
        svc(ctx).host_status(&self.id).up
    }
    /// The containers on this host, sorted by id.
    #[graphql(complexity = "cost::list(List::HostContainers, first, child_complexity)")]
    async fn containers(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "At most this many containers (see `Query.containers`).")] first: Option<i32>,
        #[graphql(desc = "Only the containers after this id (the last id of the previous page).")] after: Option<
            String,
        >,
    ) -> Result<Vec<Container>> {
        let all = self.src.read(ctx, |t| {
            t.containers_of_host(&self.id).into_iter().map(|c| Container::from_rec_in(c, &self.src)).collect()
        })?;
        page::by_id(all, |c: &Container| c.rec.id.as_str(), first, after)
    }
}

/// A network endpoint: one network namespace (the legacy API's container,
/// `containerID`). Identified by its host and its id.
pub struct Container {
    pub rec: model::ContainerRec,
    pub src: Source,
}

impl Container {
    pub fn from_rec(rec: &model::ContainerRec) -> Self {
        Container { rec: rec.clone(), src: Source::default() }
    }
    /// A container read from `src`.
    pub fn from_rec_in(rec: &model::ContainerRec, src: &Source) -> Self {
        Container { rec: rec.clone(), src: src.clone() }
    }
    pub fn lookup(t: &model::Topology, key: &ContainerKey) -> Option<Self> {
        t.container(key).map(Self::from_rec)
    }
    /// [`Container::lookup`] in `src`'s topology.
    pub fn lookup_in(t: &impl Read, key: &ContainerKey, src: &Source) -> Option<Self> {
        t.container(key).map(|c| Self::from_rec_in(c, src))
    }
    fn key(&self) -> ContainerKey {
        self.rec.key()
    }
}

/// A network endpoint: one network namespace (the legacy API's container,
/// `containerID`). Identified by its host and its id.
#[Object]
impl Container {
    /// The container id (unique on its host; the legacy `containerID`).
    async fn id(&self) -> ID {
        ID(self.rec.id.clone())
    }
    /// The host the container runs on.
    async fn host(&self) -> Host {
        Host { id: self.rec.host.clone(), src: self.src.clone() }
    }
    /// Who made it: the API, or a container runtime's plugin call.
    async fn origin(&self) -> super::ContainerOrigin {
        super::ContainerOrigin::of(self.rec.runtime.as_ref())
    }
    /// The runtime's own id of the container (`CNI_CONTAINERID`); null for
    /// containers made through the API.
    async fn runtime_id(&self) -> Option<&str> {
        self.rec.runtime.as_ref().map(|r| r.id.as_str())
    }
    /// A free-form label (the legacy `container_tag`), used by filters and
    /// monitors; null when unset.
    async fn tag(&self) -> Option<&str> {
        self.rec.tag.as_deref()
    }
    /// The existing namespace this container is bound to, as the user gave
    /// it (a path, `pid:`, `docker:` or `podman:`); null for a namespace
    /// leviathan manages.
    async fn netns_path(&self) -> Option<&str> {
        self.rec.netns_path.as_deref()
    }
    /// What `netnsPath` resolved to when it was bound: the namespace file
    /// opened and its identity; null for a managed namespace (and for
    /// bindings made before identities were kept).
    async fn netns(&self) -> Option<NetnsBinding> {
        self.rec.netns.as_ref().map(|b| NetnsBinding {
            path: b.path.clone(),
            device: b.device.to_string(),
            inode: b.inode.to_string(),
        })
    }
    /// The CENs this container is a member of, sorted by id.
    #[graphql(complexity = "cost::list(List::ContainerCens, first, child_complexity)")]
    async fn cens(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "At most this many items (0 or more; all when absent). The query cost counts the list at `first` items, or without it at the longest such list in the topology."
        )]
        first: Option<i32>,
        #[graphql(
            desc = "Only the items after this cursor: the id of the last item of the previous page (items come in id order)."
        )]
        after: Option<String>,
    ) -> Result<Vec<Cen>> {
        let all = self
            .src
            .read(ctx, |t| t.cens_of(&self.key()).into_iter().map(|c| Cen::from_rec_in(c, &self.src)).collect())?;
        page::by_id(all, |c: &Cen| c.rec.id.as_str(), first, after)
    }
    /// The CINs that give this container an address, sorted by id.
    #[graphql(complexity = "cost::list(List::ContainerCins, first, child_complexity)")]
    async fn cins(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "At most this many items (0 or more; all when absent). The query cost counts the list at `first` items, or without it at the longest such list in the topology."
        )]
        first: Option<i32>,
        #[graphql(
            desc = "Only the items after this cursor: the id of the last item of the previous page (items come in id order)."
        )]
        after: Option<String>,
    ) -> Result<Vec<Cin>> {
        let all = self.src.read(ctx, |t| {
            let mut ids: Vec<String> =
                t.interfaces(&self.key()).into_iter().flat_map(|i| i.addresses.into_iter().map(|a| a.cin)).collect();
            ids.sort();
            ids.dedup();
            ids.iter().filter_map(|id| t.cin(id)).map(|c| Cin::from_rec_in(c, &self.src)).collect()
        })?;
        page::by_id(all, |c: &Cin| c.rec.id.as_str(), first, after)
    }
    /// One interface per CEN, named as it is inside the container, in the
    /// order of the CEN ids.
    #[graphql(complexity = "cost::all(List::ContainerCens, child_complexity)")]
    async fn interfaces(&self, ctx: &Context<'_>) -> Result<Vec<Interface>> {
        self.src.read(ctx, |t| {
            t.interfaces(&self.key()).into_iter().map(|inner| Interface { inner, src: self.src.clone() }).collect()
        })
    }
    /// The default route this container asked for, and its gateway.
    async fn default_route(&self, ctx: &Context<'_>) -> Result<Option<DefaultRoute>> {
        let Some(via) = self.rec.default_route.clone() else { return Ok(None) };
        self.src.read(ctx, |t| {
            let resolved = t.default_route_of(&self.rec);
            let gateway = t.default_gateway_of(&self.rec).map(|(gw, _, _)| gw.to_string());
            Some(DefaultRoute {
                via,
                cin_id: resolved.as_ref().map(|(cin, _)| ID(cin.clone())),
                cen_id: resolved.map(|(_, cen)| ID(cen)),
                gateway,
            })
        })
    }
    /// The pool that created this container.
    async fn pool(&self, ctx: &Context<'_>) -> Result<Option<Cpool>> {
        let Some(id) = self.rec.pool.as_deref() else { return Ok(None) };
        self.src.read(ctx, |t| t.cpool(id).map(|p| Cpool::from_rec_in(p, &self.src)))
    }
    /// Derived from the CENs it is in (see `Cen.status`), and FAILED on its
    /// own when its bound workload is gone while its CENs are fine. A
    /// container of another host is PENDING here: each server realizes only
    /// its own host's containers.
    async fn status(&self, ctx: &Context<'_>) -> Result<Status> {
        Ok(realization_here(ctx, &self.src, &self.key())?.status.into())
    }
    /// Why the status is FAILED (the kernel's error), or why a container is
    /// not realized by this server; null otherwise.
    async fn status_message(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        Ok(realization_here(ctx, &self.src, &self.key())?.message)
    }
}

/// The network namespace a container is bound to, as resolved.
#[derive(SimpleObject)]
pub struct NetnsBinding {
    /// The namespace file opened (e.g. `/proc/1234/ns/net`).
    pub path: String,
    /// The device of the namespace file (`st_dev`), in decimal.
    pub device: String,
    /// The namespace's inode number (`st_ino`), in decimal: the identity
    /// `ip netns identify` and `lsns` show.
    pub inode: String,
}

/// A requested default route.
#[derive(SimpleObject)]
pub struct DefaultRoute {
    /// The CIN (or, legacy, CEN) named in the request.
    pub via: String,
    /// The CIN the route goes through, once resolved; null before.
    pub cin_id: Option<ID>,
    /// The CEN (the interface) the route leaves by, once resolved.
    pub cen_id: Option<ID>,
    /// The gateway the route goes through, once it exists.
    pub gateway: Option<String>,
}

/// A container's interface on one CEN (a veth end inside the container).
pub struct Interface {
    inner: model::Interface,
    src: Source,
}

/// A container's interface on one CEN (a veth end inside the container).
#[Object]
impl Interface {
    /// The interface name inside the container.
    async fn name(&self) -> &str {
        &self.inner.name
    }
    /// The CEN this interface joins.
    async fn cen(&self, ctx: &Context<'_>) -> Result<Option<Cen>> {
        self.src.read(ctx, |t| t.cen(&self.inner.cen).map(|c| Cen::from_rec_in(c, &self.src)))
    }
    /// The first address on this interface (null until a CIN allocates one).
    async fn address(&self) -> Option<String> {
        self.inner.addresses.first().map(|a| a.ip.to_string())
    }
    /// Every address on this interface, with its CIN and prefix length.
    #[graphql(complexity = "cost::all(List::ContainerCins, child_complexity)")]
    async fn addresses(&self) -> Vec<InterfaceAddress> {
        self.inner
            .addresses
            .iter()
            .map(|a| InterfaceAddress {
                cin_id: ID(a.cin.clone()),
                address: a.ip.to_string(),
                prefix_length: i32::from(a.prefix_len),
            })
            .collect()
    }
}

/// One IPv4 address of an interface.
#[derive(SimpleObject)]
pub struct InterfaceAddress {
    /// The CIN that allocated the address.
    pub cin_id: ID,
    /// The address, dotted quad (e.g. `10.10.0.10`).
    pub address: String,
    /// Its prefix length in bits (16 for a CIN over one CEN, 24 for a slice).
    pub prefix_length: i32,
}

/// The fields of how a CEN or a CIN is made and stands ([`model::Making`]):
/// `made`, `status`, `statusMessage` and `hostStatuses`, resolved once
/// here and flattened into `Cen` and `Cin` (`#[graphql(flatten)]`), so both
/// show the same four fields. Each kind has its own object only because
/// the descriptions of `made` and `hostStatuses` name the kind; neither
/// object appears in the schema on its own.
macro_rules! making_fields {
    (
        $name:ident,
        $(#[doc = $made_doc:tt])* made,
        $(#[doc = $parts_doc:tt])* host_statuses
    ) => {
        /// How a CEN or a CIN stands, flattened into its object.
        pub struct $name<'a>(&'a model::Making);

        #[Object]
        impl $name<'_> {
            $(#[doc = $made_doc])*
            async fn made(&self) -> bool {
                self.0.made
            }
            /// How far the kernel is from what the model asks for.
            async fn status(&self) -> Status {
                self.0.realization.status.into()
            }
            /// Why the status is FAILED (the kernel's error); null otherwise.
            async fn status_message(&self) -> Option<&str> {
                self.0.realization.message.as_deref()
            }
            $(#[doc = $parts_doc])*
            async fn host_statuses(&self) -> Vec<HostPart> {
                HostPart::list(&self.0.parts)
            }
        }
    };
}

/// A container Ethernet network: a layer-2 segment joining containers (the
/// legacy API's CEN, `cenID`).
pub struct Cen {
    pub rec: model::CenRec,
    pub src: Source,
}

impl Cen {
    pub fn from_rec(rec: &model::CenRec) -> Self {
        Cen { rec: rec.clone(), src: Source::default() }
    }
    /// A CEN read from `src`.
    pub fn from_rec_in(rec: &model::CenRec, src: &Source) -> Self {
        Cen { rec: rec.clone(), src: src.clone() }
    }
    /// The id lists of CENs are paged by.
    pub fn id_str(&self) -> &str {
        &self.rec.id
    }
}

/// A container Ethernet network: a layer-2 segment joining containers (the
/// legacy API's CEN, `cenID`).
#[Object]
impl Cen {
    /// The CEN id (unique; the legacy `cenID`).
    async fn id(&self) -> ID {
        ID(self.rec.id.clone())
    }
    /// BRIDGE or WIRE (the legacy `wiring_type`); null below 2 members
    /// (nothing to wire).
    async fn wiring_type(&self, ctx: &Context<'_>) -> Result<Option<WiringType>> {
        self.src.read(ctx, |t| t.wiring(&self.rec).map(Into::into))
    }
    /// Members (the legacy `contIDs`), sorted by host and id.
    #[graphql(complexity = "cost::list(List::CenMembers, first, child_complexity)")]
    async fn containers(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "At most this many items (0 or more; all when absent). The query cost counts the list at `first` items, or without it at the longest such list in the topology."
        )]
        first: Option<i32>,
        #[graphql(desc = "Only the members after this cursor: `hostId/containerId`, or a container id on this \
                          server's host.")]
        after: Option<String>,
    ) -> Result<Vec<Container>> {
        let keys: Vec<ContainerKey> =
            self.src.read(ctx, |t| t.members(&self.rec.id).into_iter().map(|m| m.key()).collect())?;
        let keys = page::by_container(keys, |k| (k.host.as_str(), k.id.as_str()), svc(ctx).host_id(), first, after)?;
        self.src.read(ctx, |t| keys.iter().filter_map(|k| Container::lookup_in(t, k, &self.src)).collect())
    }
    /// The VXLAN network identifier this CEN uses between hosts where it
    /// spans several (the same on every host; given at creation, the lowest
    /// free from 4096 up).
    async fn vni(&self) -> i32 {
        self.rec.vni as i32
    }
    /// Number of members.
    async fn size(&self, ctx: &Context<'_>) -> Result<i32> {
        Ok(self.src.read(ctx, |t| t.member_count(&self.rec.id))? as i32)
    }
    /// The CINs laid over this CEN, sorted by id.
    #[graphql(complexity = "cost::list(List::CenCins, first, child_complexity)")]
    async fn cins(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "At most this many items (0 or more; all when absent). The query cost counts the list at `first` items, or without it at the longest such list in the topology."
        )]
        first: Option<i32>,
        #[graphql(
            desc = "Only the items after this cursor: the id of the last item of the previous page (items come in id order)."
        )]
        after: Option<String>,
    ) -> Result<Vec<Cin>> {
        let all = self
            .src
            .read(ctx, |t| t.cins_over(&self.rec.id).into_iter().map(|c| Cin::from_rec_in(c, &self.src)).collect())?;
        page::by_id(all, |c: &Cin| c.rec.id.as_str(), first, after)
    }
    /// `made`, `status`, `statusMessage`, `hostStatuses`.
    #[graphql(flatten)]
    async fn making(&self) -> CenMaking<'_> {
        CenMaking(&self.rec.making)
    }
}

making_fields! {
    CenMaking,
    /// Marked to be realized (made, by `cenMake` or the legacy
    /// `POST /cen/make`).
    made,
    /// Where it spans hosts whose servers announced a VTEP address: each
    /// host's part, as that host's server reported it (`status` is READY
    /// once every part is); empty otherwise.
    host_statuses
}

/// One host's part of a CEN or CIN that spans hosts.
#[derive(SimpleObject)]
pub struct HostPart {
    /// The host.
    pub host_id: ID,
    /// How far that host's kernel is from what the model asks for.
    pub status: Status,
    /// Why that host's part is FAILED; null otherwise.
    pub status_message: Option<String>,
}

impl HostPart {
    fn list(parts: &std::collections::BTreeMap<String, model::Standing>) -> Vec<HostPart> {
        parts
            .iter()
            .map(|(h, r)| HostPart {
                host_id: ID(h.clone()),
                status: r.status.into(),
                status_message: r.message.clone(),
            })
            .collect()
    }
}

/// A container IP network over one or more CENs (the legacy API's CIN,
/// `cinID`): a /16 from 10.10.0.0 up, sliced in /24s when over several CENs.
pub struct Cin {
    pub rec: model::CinRec,
    pub src: Source,
}

impl Cin {
    pub fn from_rec(rec: &model::CinRec) -> Self {
        Cin { rec: rec.clone(), src: Source::default() }
    }
    /// A CIN read from `src`.
    pub fn from_rec_in(rec: &model::CinRec, src: &Source) -> Self {
        Cin { rec: rec.clone(), src: src.clone() }
    }
    /// The id lists of CINs are paged by.
    pub fn id_str(&self) -> &str {
        &self.rec.id
    }
}

/// A container IP network over one or more CENs (the legacy API's CIN,
/// `cinID`): a /16 from 10.10.0.0 up, sliced in /24s when over several CENs.
#[Object]
impl Cin {
    /// The CIN id (unique; the legacy `cinID`).
    async fn id(&self) -> ID {
        ID(self.rec.id.clone())
    }
    /// The CENs, in the order listed (slice k is the k-th); `after` is the
    /// id of the last CEN seen.
    #[graphql(complexity = "cost::list(List::CinCens, first, child_complexity)")]
    async fn cens(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "At most this many items (0 or more; all when absent). The query cost counts the list at `first` items, or without it at the longest such list in the topology."
        )]
        first: Option<i32>,
        #[graphql(desc = "Only the CENs listed after this CEN id.")] after: Option<String>,
    ) -> Result<Vec<Cen>> {
        let all = self.src.read(ctx, |t| {
            self.rec.cens.iter().filter_map(|id| t.cen(id)).map(|c| Cen::from_rec_in(c, &self.src)).collect()
        })?;
        page::by_position(all, |c: &Cen| c.rec.id.as_str(), first, after)
    }
    /// The CIN's subnet, e.g. `10.10.0.0/16` (its size is the server's
    /// `--cin-prefix-len` when it was created).
    async fn subnet(&self) -> String {
        format!("{}/{}", self.rec.subnet, self.rec.prefix_len)
    }
    /// Per CEN: its slice and, for a bridge, its gateway.
    #[graphql(complexity = "cost::all(List::CinCens, child_complexity)")]
    async fn slices(&self, ctx: &Context<'_>) -> Result<Vec<CinSlice>> {
        self.src.read(ctx, |t| {
            self.rec
                .cens
                .iter()
                .filter_map(|cen| {
                    let slice = t.slice(&self.rec, cen)?;
                    Some(CinSlice {
                        cen_id: ID(cen.clone()),
                        subnet: slice.to_cidr(),
                        gateway: t.gateway(&self.rec, cen).map(|g| g.to_string()),
                    })
                })
                .collect()
        })
    }
    /// The gateway addresses (one per bridged CEN), dotted quads.
    #[graphql(complexity = "cost::all(List::CinCens, child_complexity)")]
    async fn gateways(&self, ctx: &Context<'_>) -> Result<Vec<String>> {
        self.src.read(ctx, |t| {
            self.rec.cens.iter().filter_map(|cen| t.gateway(&self.rec, cen)).map(|g| g.to_string()).collect()
        })
    }
    /// Members with their addresses, in address order.
    #[graphql(complexity = "cost::list(List::CinMembers, first, child_complexity)")]
    async fn members(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "At most this many items (0 or more; all when absent). The query cost counts the list at `first` items, or without it at the longest such list in the topology."
        )]
        first: Option<i32>,
        #[graphql(desc = "Only the members after this address (the last address of the previous page).")] after: Option<
            String,
        >,
    ) -> Result<Vec<CinMember>> {
        let all = self.src.read(ctx, |t| {
            t.cin_members(&self.rec)
                .into_iter()
                .map(|m| CinMember {
                    prefix_length: t.slice(&self.rec, &m.cen).map(|s| s.prefix_len).unwrap_or(16),
                    key: m.container,
                    cen: m.cen,
                    address: m.ip.to_string(),
                    src: self.src.clone(),
                })
                .collect()
        })?;
        page::by_address(all, |m: &CinMember| m.address.as_str(), first, after)
    }
    /// `made`, `status`, `statusMessage`, `hostStatuses`.
    #[graphql(flatten)]
    async fn making(&self) -> CinMaking<'_> {
        CinMaking(&self.rec.making)
    }
}

making_fields! {
    CinMaking,
    /// Marked to be realized (made, by `cinMake` or the legacy
    /// `POST /cin/make`).
    made,
    /// Where it spans hosts whose servers announced a VTEP address: each
    /// host's part, as for `Cen.hostStatuses`.
    host_statuses
}

/// A CEN's slice of a CIN.
#[derive(SimpleObject)]
pub struct CinSlice {
    /// The CEN of this slice.
    pub cen_id: ID,
    /// The slice, CIDR (the whole /16 for a CIN over one CEN, else a /24).
    pub subnet: String,
    /// The gateway on this CEN's bridge (`.1` of the slice); null for a wire.
    pub gateway: Option<String>,
}

/// A member interface of a CIN: a container's address on one of its CENs.
pub struct CinMember {
    key: ContainerKey,
    cen: String,
    address: String,
    prefix_length: u8,
    src: Source,
}

/// A member interface of a CIN: a container's address on one of its CENs.
#[Object]
impl CinMember {
    /// The member container.
    async fn container(&self, ctx: &Context<'_>) -> Result<Option<Container>> {
        self.src.read(ctx, |t| Container::lookup_in(t, &self.key, &self.src))
    }
    /// The CEN the address is on.
    async fn cen(&self, ctx: &Context<'_>) -> Result<Option<Cen>> {
        self.src.read(ctx, |t| t.cen(&self.cen).map(|c| Cen::from_rec_in(c, &self.src)))
    }
    /// The address, dotted quad (members from `.10` of the slice).
    async fn address(&self) -> &str {
        &self.address
    }
    /// The address's prefix length in bits.
    async fn prefix_length(&self) -> i32 {
        i32::from(self.prefix_length)
    }
}

/// A container's realization as this server sees it (as recorded in
/// `src`'s topology).
fn realization_here(ctx: &Context<'_>, src: &Source, key: &ContainerKey) -> Result<model::Standing> {
    let s = svc(ctx);
    if key.host != s.host_id() {
        return Ok(model::Standing {
            status: model::Status::Pending,
            message: Some(format!(
                "on host {}: realized by that host's server, not by this one (host {})",
                key.host,
                s.host_id()
            )),
        });
    }
    src.read(ctx, |t| t.container_realization(key))
}
