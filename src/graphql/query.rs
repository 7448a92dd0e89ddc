//! Query root: lookups by id, lists paged with `first` and `after`, and
//! their counts.
//!
//! Hosts, CENs, CINs and pools each have the same three fields (`cen`,
//! `cens`, `cenCount`): [`trio!`] writes them, flattened into `Query`.
//! Containers have filters and a cursor of their own, so theirs are written
//! out here.

use super::cost::{self, List};
use super::page;
use super::types::*;
use crate::model::{check_host_arg, ContainerKey, Read, View};
use crate::service::history::Reader;
use async_graphql::{Context, Object, Result, ID};
use std::collections::BTreeSet;

pub struct QueryRoot;

/// The three `Query` fields of one kind of record, as an object to flatten
/// into `Query`: `<one>(id)` looks one up (null if there is none),
/// `<many>(first, after)` lists them in id order, a page at a time, and
/// `<count>` counts them. Each closure reads the topology; each field takes
/// the documentation written above its name.
///
/// The paging arguments are written here once for the four lists.
/// async-graphql takes an argument's description only as a literal, so
/// the other lists (fields of the object types) repeat it; the test
/// `every_list_pages_alike` below holds them all to this one text.
macro_rules! trio {
    (
        $fields:ident of $item:ty, costed as $list:expr;
        $(#[doc = $one_doc:tt])* $one:ident(id: $id_doc:tt) => $lookup:expr;
        $(#[doc = $many_doc:tt])* $many:ident => $all:expr;
        $(#[doc = $count_doc:tt])* $count:ident => $counted:expr;
    ) => {
        /// Flattened into `Query` (live) and `TopologyAt` (at a revision).
        pub struct $fields(pub Source);

        #[Object]
        impl $fields {
            $(#[doc = $one_doc])*
            async fn $one(&self, ctx: &Context<'_>, #[graphql(desc = $id_doc)] id: ID) -> Result<Option<$item>> {
                self.0.read(ctx, |t| ($lookup)(t, &self.0, id.as_str()))
            }
            $(#[doc = $many_doc])*
            #[graphql(complexity = cost::list($list, first, child_complexity))]
            async fn $many(
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
            ) -> Result<Vec<$item>> {
                let all: Vec<$item> = self.0.read(ctx, |t| ($all)(t, &self.0))?;
                page::by_id(all, |x: &$item| x.id_str(), first, after)
            }
            $(#[doc = $count_doc])*
            async fn $count(&self, ctx: &Context<'_>) -> Result<i32> {
                Ok(self.0.read(ctx, $counted)? as i32)
            }
        }
    };
}

trio! {
    HostFields of Host, costed as List::Hosts;
    /// A host by id; null if there is none.
    host(id: "The host id.") => |t: &Reader<'_>, s: &Source, id: &str| t.host(id).map(|r| Host::from_rec_in(r, s));
    /// Every host, sorted by id.
    hosts => |t: &Reader<'_>, s: &Source| t.hosts().into_iter().map(|r| Host::from_rec_in(r, s)).collect();
    /// How many hosts there are.
    host_count => |t: &Reader<'_>| t.counts().0;
}

trio! {
    CenFields of Cen, costed as List::Cens;
    /// A CEN by id (the legacy `GET /cen/{cenID}`); null if there is none.
    cen(id: "The CEN id.") => |t: &Reader<'_>, s: &Source, id: &str| t.cen(id).map(|r| Cen::from_rec_in(r, s));
    /// Every CEN, sorted by id.
    cens => |t: &Reader<'_>, s: &Source| t.cens().into_iter().map(|r| Cen::from_rec_in(r, s)).collect();
    /// How many CENs there are.
    cen_count => |t: &Reader<'_>| t.counts().2;
}

trio! {
    CinFields of Cin, costed as List::Cins;
    /// A CIN by id; null if there is none.
    cin(id: "The CIN id.") => |t: &Reader<'_>, s: &Source, id: &str| t.cin(id).map(|r| Cin::from_rec_in(r, s));
    /// Every CIN, sorted by id.
    cins => |t: &Reader<'_>, s: &Source| t.cins().into_iter().map(|r| Cin::from_rec_in(r, s)).collect();
    /// How many CINs there are.
    cin_count => |t: &Reader<'_>| t.counts().3;
}

trio! {
    CpoolFields of Cpool, costed as List::Cpools;
    /// A container pool by id; null if there is none.
    cpool(id: "The pool id.") => |t: &Reader<'_>, s: &Source, id: &str| t.cpool(id).map(|r| Cpool::from_rec_in(r, s));
    /// Every container pool, sorted by id.
    cpools => |t: &Reader<'_>, s: &Source| t.cpools().into_iter().map(|r| Cpool::from_rec_in(r, s)).collect();
    /// How many container pools there are.
    cpool_count => |t: &Reader<'_>| t.counts().4;
}

/// The container fields of `Query` and `TopologyAt` (containers have
/// filters and a cursor of their own).
pub struct ContainerFields(pub Source);

#[Object]
impl ContainerFields {
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
        self.0.read(ctx, |t| Container::lookup_in(t, &ContainerKey::new(host, id.as_str()), &self.0))
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
        let all = self.filtered(ctx, host_id, cen_id, cin_id, tag)?;
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
    ) -> Result<i32> {
        if host_id.is_none() && cen_id.is_none() && cin_id.is_none() && tag.is_none() {
            return self.0.read(ctx, |t| t.counts().1 as i32);
        }
        // A count costs 1 but scans: it spends a unit of the task's budget
        // itself, so that a document of many of them yields to the runtime
        // (deadline, client gone) even without per-field hooks.
        tokio::task::consume_budget().await;
        Ok(self.filtered(ctx, host_id, cen_id, cin_id, tag)?.len() as i32)
    }
}

impl ContainerFields {
    /// The containers that pass every filter given, sorted by host and id.
    fn filtered(
        &self,
        ctx: &Context<'_>,
        host_id: Option<ID>,
        cen_id: Option<ID>,
        cin_id: Option<ID>,
        tag: Option<String>,
    ) -> Result<Vec<Container>> {
        self.0.read(ctx, |t| {
            // Each filter is a set computed once (a per-container lookup in
            // a large CEN or CIN would make this quadratic).
            let in_cin: Option<BTreeSet<ContainerKey>> = cin_id
                .as_ref()
                .map(|cin| t.cin(cin).map(|c| t.cin_containers(c).into_iter().collect()).unwrap_or_default());
            let mut keys: Vec<ContainerKey> = match (&cen_id, &in_cin) {
                (Some(cen), _) => t.members(cen).into_iter().map(|m| m.key()).collect(),
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
                .map(|c| Container::from_rec_in(c, &self.0))
                .collect()
        })
    }
}

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
    /// `host`, `hosts`, `hostCount`.
    #[graphql(flatten)]
    async fn host_fields(&self) -> HostFields {
        HostFields(Source::default())
    }
    /// `container`, `containers`, `containerCount`.
    #[graphql(flatten)]
    async fn container_fields(&self) -> ContainerFields {
        ContainerFields(Source::default())
    }
    /// `cen`, `cens`, `cenCount`.
    #[graphql(flatten)]
    async fn cen_fields(&self) -> CenFields {
        CenFields(Source::default())
    }
    /// `cin`, `cins`, `cinCount`.
    #[graphql(flatten)]
    async fn cin_fields(&self) -> CinFields {
        CinFields(Source::default())
    }
    /// `cpool`, `cpools`, `cpoolCount`.
    #[graphql(flatten)]
    async fn cpool_fields(&self) -> CpoolFields {
        CpoolFields(Source::default())
    }
    /// `at`, `diff`, `history`, `keptRevisions`: reads of kept revisions.
    #[graphql(flatten)]
    async fn history_fields(&self) -> super::history::HistoryFields {
        super::history::HistoryFields
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::parser::types::{TypeKind, TypeSystemDefinition};

    /// The description of `first` on every paged list.
    const FIRST: &str = "At most this many items (0 or more; all when absent). The query cost counts the list at \
                         `first` items, or without it at the longest such list in the topology.";
    /// The description of `after` on every list paged by id.
    const AFTER_ID: &str =
        "Only the items after this cursor: the id of the last item of the previous page (items come in id order).";
    /// The lists paged by id, whose `after` is [`AFTER_ID`].
    const BY_ID: [&str; 12] = [
        "Query.hosts",
        "Query.cens",
        "Query.cins",
        "Query.cpools",
        "TopologyAt.hosts",
        "TopologyAt.cens",
        "TopologyAt.cins",
        "TopologyAt.cpools",
        "Container.cens",
        "Container.cins",
        "Cen.cins",
        "Cpool.containers",
    ];

    /// Every list takes `first` and `after`, described alike: `first` as
    /// [`FIRST`] (but `Host.containers`, which points to
    /// `Query.containers`, and `diff` and `history`, whose pages are
    /// bounded), `after` as [`AFTER_ID`] on the lists paged by id.
    #[test]
    fn every_list_pages_alike() {
        let doc = async_graphql::parser::parse_schema(crate::graphql::sdl()).unwrap();
        let mut lists = Vec::new();
        for def in &doc.definitions {
            let TypeSystemDefinition::Type(t) = def else { continue };
            let TypeKind::Object(o) = &t.node.kind else { continue };
            for f in &o.fields {
                let arg = |name: &str| {
                    f.node
                        .arguments
                        .iter()
                        .find(|a| a.node.name.node == name)
                        .map(|a| a.node.description.as_ref().map(|d| d.node.clone()).unwrap_or_default())
                };
                let (Some(first), Some(after)) = (arg("first"), arg("after")) else { continue };
                let name = format!("{}.{}", t.node.name.node, f.node.name.node);
                if !["Host.containers", "Query.diff", "Query.history"].contains(&name.as_str()) {
                    assert_eq!(first, FIRST, "{name}: first");
                }
                if BY_ID.contains(&name.as_str()) {
                    assert_eq!(after, AFTER_ID, "{name}: after");
                }
                lists.push(name);
            }
        }
        assert_eq!(lists.len(), 20, "paged lists: {lists:?}");
    }
}
