//! Query root.

use super::types::*;
use crate::model::{check_host_arg, ContainerKey};
use async_graphql::{Context, Object, Result, ID};
use std::collections::BTreeSet;

pub struct QueryRoot;

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
    async fn host(&self, ctx: &Context<'_>, id: ID) -> Option<Host> {
        svc(ctx).read(|t| t.host(&id).map(|h| Host { id: h.id.clone() }))
    }
    async fn hosts(&self, ctx: &Context<'_>) -> Vec<Host> {
        svc(ctx).read(|t| t.hosts().into_iter().map(|h| Host { id: h.id.clone() }).collect())
    }
    async fn container(&self, ctx: &Context<'_>, host_id: Option<ID>, id: ID) -> Result<Option<Container>> {
        let s = svc(ctx);
        let host = check_host_arg(host_id.as_ref().map(|h| h.as_str()), s.host_id()).map_err(super::gql)?;
        Ok(s.read(|t| Container::lookup(t, &ContainerKey::new(host, id.as_str()))))
    }
    /// Containers, sorted by host and id; every filter given must match.
    async fn containers(
        &self,
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
    async fn cen(&self, ctx: &Context<'_>, id: ID) -> Option<Cen> {
        svc(ctx).read(|t| t.cen(&id).map(Cen::from_rec))
    }
    async fn cens(&self, ctx: &Context<'_>) -> Vec<Cen> {
        svc(ctx).read(|t| t.cens().into_iter().map(Cen::from_rec).collect())
    }
    async fn cin(&self, ctx: &Context<'_>, id: ID) -> Option<Cin> {
        svc(ctx).read(|t| t.cin(&id).map(Cin::from_rec))
    }
    async fn cins(&self, ctx: &Context<'_>) -> Vec<Cin> {
        svc(ctx).read(|t| t.cins().into_iter().map(Cin::from_rec).collect())
    }
    async fn cpool(&self, ctx: &Context<'_>, id: ID) -> Option<Cpool> {
        svc(ctx).read(|t| t.cpool(&id).map(Cpool::from_rec))
    }
    async fn cpools(&self, ctx: &Context<'_>) -> Vec<Cpool> {
        svc(ctx).read(|t| t.cpools().into_iter().map(Cpool::from_rec).collect())
    }
}
