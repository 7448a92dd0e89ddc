//! Query root.

use super::cost::{self, List};
use super::page;
use super::types::*;
use crate::model::{check_host_arg, ContainerKey};
use async_graphql::{Context, Object, Result, ID};
use std::collections::BTreeSet;

pub struct QueryRoot;

/// The root of every read: lookups by id, lists (paged with `first` and
/// `after`) and their counts.
#[Object(name = "Query")]
impl QueryRoot {
    /// The server's version.
    async fn version(&self) -> &'static str {
        crate::VERSION
    }
    /// The revision of the last committed change.
    async fn revision(&self, ctx: &Context<'_>) -> i64 {
        svc(ctx).revision() as i64
    }
    /// This server's own host id (the default wherever `hostId` is optional).
    async fn host_id(&self, ctx: &Context<'_>) -> ID {
        ID(svc(ctx).host_id().to_string())
    }
    /// A host by id; null if there is none.
    async fn host(&self, ctx: &Context<'_>, #[graphql(desc = "The host id.")] id: ID) -> Option<Host> {
        svc(ctx).read(|t| t.host(&id).map(|h| Host { id: h.id.clone() }))
    }
    /// Every host, sorted by id.
    #[graphql(complexity = "cost::list(List::Hosts, first, child_complexity)")]
    async fn hosts(
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
    ) -> Result<Vec<Host>> {
        let all = svc(ctx).read(|t| t.hosts().into_iter().map(|h| Host { id: h.id.clone() }).collect());
        page::by_id(all, |h: &Host| h.id.as_str(), first, after)
    }
    /// How many hosts there are.
    async fn host_count(&self, ctx: &Context<'_>) -> i32 {
        svc(ctx).read(|t| t.counts().0 as i32)
    }
    /// A container by host and id (the legacy `GET /host/{hostID}/{containerID}`);
    /// null if there is none.
    async fn container(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The container's host; this server's host when absent.")] host_id: Option<ID>,
        #[graphql(desc = "The container id.")] id: ID,
    ) -> Result<Option<Container>> {
        let s = svc(ctx);
        let host = check_host_arg(host_id.as_ref().map(|h| h.as_str()), s.host_id()).map_err(super::gql)?;
        Ok(s.read(|t| Container::lookup(t, &ContainerKey::new(host, id.as_str()))))
    }
    /// Containers, sorted by host and id; every filter given must match.
    #[graphql(complexity = "cost::list(List::Containers, first, child_complexity)")]
    #[allow(clippy::too_many_arguments)]
    async fn containers(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only the containers on this host.")] host_id: Option<ID>,
        #[graphql(desc = "Only the members of this CEN.")] cen_id: Option<ID>,
        #[graphql(desc = "Only the containers with an address in this CIN.")] cin_id: Option<ID>,
        #[graphql(desc = "Only the containers with this tag (the legacy `container_tag`).")] tag: Option<String>,
        #[graphql(
            desc = "At most this many items (0 or more; all when absent). The query cost counts the list at `first` items, or without it at the longest such list in the topology."
        )]
        first: Option<i32>,
        #[graphql(desc = "Only the containers after this cursor: `hostId/containerId`, or a container id on this \
                          server's host.")]
        after: Option<String>,
    ) -> Result<Vec<Container>> {
        let all = Self::filtered(ctx, host_id, cen_id, cin_id, tag);
        page::by_container(all, |c| (c.rec.host.as_str(), c.rec.id.as_str()), svc(ctx).host_id(), first, after)
    }
    /// How many containers match the filters (the same as `containers`).
    async fn container_count(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only the containers on this host.")] host_id: Option<ID>,
        #[graphql(desc = "Only the members of this CEN.")] cen_id: Option<ID>,
        #[graphql(desc = "Only the containers with an address in this CIN.")] cin_id: Option<ID>,
        #[graphql(desc = "Only the containers with this tag.")] tag: Option<String>,
    ) -> i32 {
        if host_id.is_none() && cen_id.is_none() && cin_id.is_none() && tag.is_none() {
            return svc(ctx).read(|t| t.counts().1 as i32);
        }
        Self::filtered(ctx, host_id, cen_id, cin_id, tag).len() as i32
    }
    /// A CEN by id (the legacy `GET /cen/{cenID}`); null if there is none.
    async fn cen(&self, ctx: &Context<'_>, #[graphql(desc = "The CEN id.")] id: ID) -> Option<Cen> {
        svc(ctx).read(|t| t.cen(&id).map(Cen::from_rec))
    }
    /// Every CEN, sorted by id.
    #[graphql(complexity = "cost::list(List::Cens, first, child_complexity)")]
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
        let all = svc(ctx).read(|t| t.cens().into_iter().map(Cen::from_rec).collect());
        page::by_id(all, |c: &Cen| c.rec.id.as_str(), first, after)
    }
    /// How many CENs there are.
    async fn cen_count(&self, ctx: &Context<'_>) -> i32 {
        svc(ctx).read(|t| t.counts().2 as i32)
    }
    /// A CIN by id; null if there is none.
    async fn cin(&self, ctx: &Context<'_>, #[graphql(desc = "The CIN id.")] id: ID) -> Option<Cin> {
        svc(ctx).read(|t| t.cin(&id).map(Cin::from_rec))
    }
    /// Every CIN, sorted by id.
    #[graphql(complexity = "cost::list(List::Cins, first, child_complexity)")]
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
        let all = svc(ctx).read(|t| t.cins().into_iter().map(Cin::from_rec).collect());
        page::by_id(all, |c: &Cin| c.rec.id.as_str(), first, after)
    }
    /// How many CINs there are.
    async fn cin_count(&self, ctx: &Context<'_>) -> i32 {
        svc(ctx).read(|t| t.counts().3 as i32)
    }
    /// A container pool by id; null if there is none.
    async fn cpool(&self, ctx: &Context<'_>, #[graphql(desc = "The pool id.")] id: ID) -> Option<Cpool> {
        svc(ctx).read(|t| t.cpool(&id).map(Cpool::from_rec))
    }
    /// Every container pool, sorted by id.
    #[graphql(complexity = "cost::list(List::Cpools, first, child_complexity)")]
    async fn cpools(
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
    ) -> Result<Vec<Cpool>> {
        let all = svc(ctx).read(|t| t.cpools().into_iter().map(Cpool::from_rec).collect());
        page::by_id(all, |p: &Cpool| p.rec.id.as_str(), first, after)
    }
    /// How many container pools there are.
    async fn cpool_count(&self, ctx: &Context<'_>) -> i32 {
        svc(ctx).read(|t| t.counts().4 as i32)
    }
}

impl QueryRoot {
    /// The containers that pass every filter given, sorted by host and id.
    fn filtered(
        ctx: &Context<'_>,
        host_id: Option<ID>,
        cen_id: Option<ID>,
        cin_id: Option<ID>,
        tag: Option<String>,
    ) -> Vec<Container> {
        svc(ctx).read(|t| {
            // Each filter is a set computed once (a per-container lookup in
            // a large CEN or CIN would make this quadratic).
            let in_cin: Option<BTreeSet<ContainerKey>> = cin_id
                .as_ref()
                .map(|cin| t.cin(cin).map(|c| t.cin_containers(c).into_iter().collect()).unwrap_or_default());
            let mut keys: Vec<ContainerKey> = match (&cen_id, &in_cin) {
                (Some(cen), _) => t.members(cen).map(|m| m.key()).collect(),
                (None, Some(set)) => set.iter().cloned().collect(),
                (None, None) => match &host_id {
                    Some(h) => t.containers_of_host(h).into_iter().map(|c| c.key()).collect(),
                    None => t.containers().into_iter().map(|c| c.key()).collect(),
                },
            };
            keys.sort();
            keys.into_iter()
                .filter(|k| host_id.as_ref().is_none_or(|h| k.host == h.as_str()))
                .filter(|k| in_cin.as_ref().is_none_or(|set| set.contains(k)))
                .filter_map(|k| t.container(&k))
                .filter(|c| tag.as_ref().is_none_or(|tag| c.tag.as_ref() == Some(tag)))
                .map(Container::from_rec)
                .collect()
        })
    }
}
