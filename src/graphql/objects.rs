//! GraphQL objects of pools and memberships (the rest are in `types.rs`).
//! Like those, each holds a snapshot of its record taken when it was
//! resolved; a pool's containers are read from its [`Source`], a
//! membership's CEN and container from the live topology.

use super::cost::{self, List};
use super::page;
use super::types::{svc, Cen, Container, Source};
use crate::model::{self, Read};
use async_graphql::{Context, Object, Result, SimpleObject, ID};

/// A container pool (the legacy `POST /cpool` file): containers
/// `<id>-<n>` joined to the CENs of its CINs.
pub struct Cpool {
    pub rec: model::CpoolRec,
    pub src: Source,
}

impl Cpool {
    pub fn from_rec(rec: &model::CpoolRec) -> Self {
        Cpool { rec: rec.clone(), src: Source::default() }
    }
    /// A pool read from `src`.
    pub fn from_rec_in(rec: &model::CpoolRec, src: &Source) -> Self {
        Cpool { rec: rec.clone(), src: src.clone() }
    }
    /// The id lists of pools are paged by.
    pub fn id_str(&self) -> &str {
        &self.rec.id
    }
}

/// A container pool (the legacy `POST /cpool` file): containers
/// `<id>-<n>` joined to the CENs of its CINs.
#[Object]
impl Cpool {
    /// The pool id (unique).
    async fn id(&self) -> ID {
        ID(self.rec.id.clone())
    }
    /// The container image type named by the pool file.
    #[graphql(name = "type")]
    async fn image(&self) -> &str {
        &self.rec.image
    }
    /// How many containers the pool starts with (the legacy `startWith`).
    async fn start_with(&self) -> i32 {
        i32::try_from(self.rec.start_with).unwrap_or(i32::MAX)
    }
    /// The CINs the pool's containers join, as listed.
    #[graphql(complexity = "cost::all(List::PoolCins, child_complexity)")]
    async fn cins(&self) -> Vec<CpoolCin> {
        self.rec.cins.iter().map(|c| CpoolCin { cin_id: ID(c.cin.clone()), default_route: c.default_route }).collect()
    }
    /// The pool's containers, sorted by id.
    #[graphql(complexity = "cost::list(List::PoolContainers, first, child_complexity)")]
    async fn containers(
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
    ) -> Result<Vec<Container>> {
        let all = self.src.read(ctx, |t| {
            t.pool_containers(&self.rec.id).into_iter().map(|c| Container::from_rec_in(c, &self.src)).collect()
        })?;
        page::by_id(all, |c: &Container| c.rec.id.as_str(), first, after)
    }
}

/// One CIN of a pool.
#[derive(SimpleObject)]
pub struct CpoolCin {
    /// A CIN id, or (legacy) a CEN id.
    pub cin_id: ID,
    /// Whether the pool's containers get their default route through it.
    pub default_route: bool,
}

/// A container's membership in a CEN: a record of its own, so a join or a
/// leave is one small change however large the CEN.
pub struct Membership {
    pub rec: model::MemberRec,
}

/// A container's membership in a CEN: a record of its own, so a join or a
/// leave is one small change however large the CEN.
#[Object]
impl Membership {
    /// The CEN joined (the legacy `cenID`).
    async fn cen_id(&self) -> ID {
        ID(self.rec.cen.clone())
    }
    /// The member container's host (the legacy `hostID`).
    async fn host_id(&self) -> ID {
        ID(self.rec.host.clone())
    }
    /// The member container's id on its host (the legacy `containerID`).
    async fn container_id(&self) -> ID {
        ID(self.rec.container.clone())
    }
    /// The CEN's interface name inside the container.
    async fn ifname(&self) -> &str {
        &self.rec.ifname
    }
    /// The interface's addresses, one per CIN over the CEN.
    async fn addresses(&self) -> Vec<MembershipAddress> {
        self.rec
            .addresses
            .iter()
            .map(|(cin, ip)| MembershipAddress { cin_id: ID(cin.clone()), address: ip.to_string() })
            .collect()
    }
    /// The CEN, as it is now; null once deleted.
    async fn cen(&self, ctx: &Context<'_>) -> Option<Cen> {
        svc(ctx).read(|t| t.cen(&self.rec.cen).map(Cen::from_rec))
    }
    /// The container, as it is now; null once deleted.
    async fn container(&self, ctx: &Context<'_>) -> Option<Container> {
        svc(ctx).read(|t| Container::lookup(t, &self.rec.key()))
    }
}

/// One address of a membership's interface.
#[derive(SimpleObject)]
pub struct MembershipAddress {
    /// The CIN that allocated the address (the legacy `cinID`).
    pub cin_id: ID,
    /// The address, dotted quad (the legacy `ipaddress`, e.g. `10.10.0.10`).
    pub address: String,
}
