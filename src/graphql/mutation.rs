//! Mutation root: one input object each, a payload with the changed objects
//! and the revision that holds the change.

use super::types::*;
use super::{error, gql};
use crate::model::{check_host_arg, CenSpec, CinSpec, Command, ContainerKey, CpoolSpec, EntityKey, ErrorCode, PoolCin};
use crate::service::{Realization, Service};
use async_graphql::{Context, InputObject, Object, Result, SimpleObject, ID};
use std::sync::Arc;

pub struct MutationRoot;

/// The realizer's handle, where the kernel is realized.
fn realization<'a>(ctx: &'a Context<'_>) -> Option<&'a Arc<dyn Realization>> {
    ctx.data_opt::<Arc<dyn Realization>>()
}

/// Applies a command and, where a realizer runs and the change touches
/// something made, answers once the kernel reflects it (a member joining a
/// made CEN is wired when this returns). A change that touches nothing made
/// answers as soon as it is durable.
async fn run(ctx: &Context<'_>, cmd: Command) -> Result<i64> {
    let wait = !matches!(cmd, Command::CenSetMade { .. } | Command::CinSetMade { .. });
    let (revision, change) = svc(ctx).execute_change(cmd).await.map_err(gql)?;
    let needs = match (realization(ctx), &change) {
        (Some(r), Some(c)) => r.needs_kernel(svc(ctx), c),
        _ => false,
    };
    settle(ctx, revision as i64, wait && needs).await;
    Ok(revision as i64)
}

/// After a make/destroy: with `wait`, answers once the realizer has applied
/// the change (or after `MAKE_WAIT_LIMIT`); the payload then shows the
/// resulting statuses.
async fn settle(ctx: &Context<'_>, revision: i64, wait: bool) {
    if let (true, Some(r)) = (wait, realization(ctx)) {
        if !r.wait_applied(revision as u64, MAKE_WAIT_LIMIT).await {
            tracing::warn!(revision, "answered before the realizer caught up");
        }
    }
}

/// What a make/destroy works on.
#[derive(Clone, Copy)]
enum Realized {
    Cens,
    Cins,
}

/// Makes or destroys CENs or CINs: commits the change, and either waits for
/// the realizer (`wait`) or registers an operation whose progress the
/// `operation` subscription reports. Returns the ids, the revision and the
/// operation id.
async fn set_made(
    ctx: &Context<'_>,
    what: Realized,
    ids_in: &[ID],
    made: bool,
    wait: bool,
) -> Result<(Vec<String>, i64, Option<ID>)> {
    let list = ids(ids_in);
    let realizing = realization(ctx).is_some();
    let (cmd, kind) = match what {
        Realized::Cens => {
            (Command::CenSetMade { ids: list.clone(), made, realizing }, if made { "cenMake" } else { "cenDestroy" })
        }
        Realized::Cins => {
            (Command::CinSetMade { ids: list.clone(), made, realizing }, if made { "cinMake" } else { "cinDestroy" })
        }
    };
    let revision = run(ctx, cmd).await?;
    let operation_id = realization(ctx).filter(|_| !wait).map(|driver| {
        let targets = list
            .iter()
            .map(|i| match what {
                Realized::Cens => EntityKey::Cen(i.clone()),
                Realized::Cins => EntityKey::Cin(i.clone()),
            })
            .collect();
        ID(driver.track(svc(ctx), kind, revision as u64, targets, made))
    });
    settle(ctx, revision, wait).await;
    Ok((list, revision, operation_id))
}

/// Longest a waiting make/destroy waits for the realizer.
pub const MAKE_WAIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

fn host_of(s: &Arc<Service>, host_id: &Option<ID>) -> Result<String> {
    check_host_arg(host_id.as_ref().map(|h| h.as_str()), s.host_id()).map(str::to_string).map_err(gql)
}

fn ids(v: &[ID]) -> Vec<String> {
    v.iter().map(|i| i.to_string()).collect()
}

// ---- inputs ----

#[derive(InputObject)]
pub struct HostCreateInput {
    pub id: ID,
}
#[derive(InputObject)]
pub struct HostDeleteInput {
    pub id: ID,
}

#[derive(InputObject)]
pub struct CenImportItem {
    pub id: ID,
    pub container_ids: Vec<ID>,
}
#[derive(InputObject)]
pub struct CenImportInput {
    /// Host of the containers (default: this server's host).
    pub host_id: Option<ID>,
    pub cens: Vec<CenImportItem>,
}
#[derive(InputObject)]
pub struct CenCreateInput {
    pub id: ID,
}
#[derive(InputObject)]
pub struct CenDeleteInput {
    pub id: ID,
}
#[derive(InputObject)]
pub struct CenMakeInput {
    pub ids: Vec<ID>,
    /// Answer when the work is applied (default) or at once.
    #[graphql(default = true)]
    pub wait: bool,
}
#[derive(InputObject)]
pub struct CenDestroyInput {
    pub ids: Vec<ID>,
    #[graphql(default = true)]
    pub wait: bool,
}

#[derive(InputObject)]
pub struct CinImportItem {
    pub id: ID,
    pub cen_ids: Vec<ID>,
}
#[derive(InputObject)]
pub struct CinImportInput {
    pub cins: Vec<CinImportItem>,
}
#[derive(InputObject)]
pub struct CinDeleteInput {
    pub id: ID,
}
#[derive(InputObject)]
pub struct CinMakeInput {
    pub ids: Vec<ID>,
    #[graphql(default = true)]
    pub wait: bool,
}
#[derive(InputObject)]
pub struct CinDestroyInput {
    pub ids: Vec<ID>,
    #[graphql(default = true)]
    pub wait: bool,
}

#[derive(InputObject)]
pub struct ContainerCreateInput {
    pub host_id: Option<ID>,
    pub id: ID,
    pub tag: Option<String>,
    /// Bind to an existing namespace (e.g. `/proc/<pid>/ns/net`) instead of
    /// a managed one; leviathan wires it but never deletes it.
    pub netns_path: Option<String>,
}
#[derive(InputObject)]
pub struct ContainerDeleteInput {
    pub host_id: Option<ID>,
    pub id: ID,
}
#[derive(InputObject)]
pub struct ContainerSetTagInput {
    pub host_id: Option<ID>,
    pub id: ID,
    /// The new tag; null clears it.
    pub tag: Option<String>,
}
#[derive(InputObject)]
pub struct ContainerJoinCenInput {
    pub host_id: Option<ID>,
    pub container_id: ID,
    pub cen_id: ID,
}
#[derive(InputObject)]
pub struct ContainerLeaveCenInput {
    pub host_id: Option<ID>,
    pub container_id: ID,
    pub cen_id: ID,
}

#[derive(InputObject)]
pub struct CpoolCinInput {
    /// A CIN id, or (legacy) a CEN id where no CIN has that id.
    pub cin_id: ID,
    #[graphql(default = false)]
    pub default_route: bool,
}
#[derive(InputObject)]
pub struct CpoolImportItem {
    pub id: ID,
    #[graphql(name = "type")]
    pub image: String,
    pub start_with: i32,
    pub cins: Vec<CpoolCinInput>,
}
#[derive(InputObject)]
pub struct CpoolImportInput {
    pub host_id: Option<ID>,
    pub pools: Vec<CpoolImportItem>,
}
#[derive(InputObject)]
pub struct ReconcileInput {
    /// Answer when the reconcile is done (default) or at once.
    #[graphql(default = true)]
    pub wait: bool,
}

#[derive(SimpleObject)]
pub struct ReconcilePayload {
    /// Whether a reconcile that started after the request has finished.
    pub done: bool,
    pub revision: i64,
}

#[derive(InputObject)]
pub struct CpoolDeleteInput {
    pub id: ID,
}

// ---- payloads ----

#[derive(SimpleObject)]
pub struct HostPayload {
    pub host: Option<Host>,
    pub revision: i64,
}
#[derive(SimpleObject)]
pub struct DeletePayload {
    pub deleted_id: ID,
    pub revision: i64,
}
#[derive(SimpleObject)]
pub struct CenPayload {
    pub cen: Option<Cen>,
    pub revision: i64,
}
#[derive(SimpleObject)]
pub struct CensPayload {
    pub cens: Vec<Cen>,
    pub revision: i64,
    /// With `wait: false`: the operation whose progress the `operation`
    /// subscription reports.
    pub operation_id: Option<ID>,
}
#[derive(SimpleObject)]
pub struct CinsPayload {
    pub cins: Vec<Cin>,
    pub revision: i64,
    /// With `wait: false`: the operation whose progress the `operation`
    /// subscription reports.
    pub operation_id: Option<ID>,
}
#[derive(SimpleObject)]
pub struct ContainerPayload {
    pub container: Option<Container>,
    pub revision: i64,
}
#[derive(SimpleObject)]
pub struct MembershipPayload {
    pub container: Option<Container>,
    pub cen: Option<Cen>,
    pub revision: i64,
}
#[derive(SimpleObject)]
pub struct CpoolsPayload {
    pub cpools: Vec<Cpool>,
    pub revision: i64,
}

/// Joins (or leaves) a CEN; answers with the container and the CEN.
async fn membership(
    ctx: &Context<'_>,
    host_id: Option<ID>,
    container_id: ID,
    cen_id: ID,
    join: bool,
) -> Result<MembershipPayload> {
    let s = svc(ctx);
    let host = host_of(s, &host_id)?;
    let key = ContainerKey::new(&host, container_id.as_str());
    let (container, cen) = (container_id.to_string(), cen_id.to_string());
    let cmd = if join {
        Command::ContainerJoinCen { host, container, cen }
    } else {
        Command::ContainerLeaveCen { host, container, cen }
    };
    let revision = run(ctx, cmd).await?;
    let (container, cen) = s.read(|t| (Container::lookup(t, &key), t.cen(&cen_id).map(Cen::from_rec)));
    Ok(MembershipPayload { container, cen, revision })
}

fn cens_payload(s: &Arc<Service>, ids: &[String], revision: i64) -> CensPayload {
    let cens = s.read(|t| ids.iter().filter_map(|id| t.cen(id)).map(Cen::from_rec).collect());
    CensPayload { cens, revision, operation_id: None }
}

fn cins_payload(s: &Arc<Service>, ids: &[String], revision: i64) -> CinsPayload {
    let cins = s.read(|t| ids.iter().filter_map(|id| t.cin(id)).map(Cin::from_rec).collect());
    CinsPayload { cins, revision, operation_id: None }
}

fn container_payload(s: &Arc<Service>, key: &ContainerKey, revision: i64) -> ContainerPayload {
    ContainerPayload { container: s.read(|t| Container::lookup(t, key)), revision }
}

#[Object(name = "Mutation")]
impl MutationRoot {
    async fn host_create(&self, ctx: &Context<'_>, input: HostCreateInput) -> Result<HostPayload> {
        let revision = run(ctx, Command::HostCreate { id: input.id.to_string() }).await?;
        let host = svc(ctx).read(|t| t.host(&input.id).map(|h| Host { id: h.id.clone() }));
        Ok(HostPayload { host, revision })
    }

    async fn host_delete(&self, ctx: &Context<'_>, input: HostDeleteInput) -> Result<DeletePayload> {
        let revision = run(ctx, Command::HostDelete { id: input.id.to_string() }).await?;
        Ok(DeletePayload { deleted_id: input.id, revision })
    }

    /// Creates or updates every CEN of a CEN file to match it; containers
    /// are created as needed. Importing the same file again changes nothing.
    async fn cen_import(&self, ctx: &Context<'_>, input: CenImportInput) -> Result<CensPayload> {
        let s = svc(ctx);
        let host = host_of(s, &input.host_id)?;
        let cens: Vec<CenSpec> =
            input.cens.iter().map(|c| CenSpec { id: c.id.to_string(), containers: ids(&c.container_ids) }).collect();
        let names: Vec<String> = cens.iter().map(|c| c.id.clone()).collect();
        let revision = run(ctx, Command::CenImport { host, cens }).await?;
        Ok(cens_payload(s, &names, revision))
    }

    /// Creates an empty CEN (nothing happens if it exists).
    async fn cen_create(&self, ctx: &Context<'_>, input: CenCreateInput) -> Result<CenPayload> {
        let revision = run(ctx, Command::CenCreate { id: input.id.to_string() }).await?;
        Ok(CenPayload { cen: svc(ctx).read(|t| t.cen(&input.id).map(Cen::from_rec)), revision })
    }

    /// Deletes a CEN (and takes it out of the CINs over it).
    async fn cen_delete(&self, ctx: &Context<'_>, input: CenDeleteInput) -> Result<DeletePayload> {
        let revision = run(ctx, Command::CenDelete { id: input.id.to_string() }).await?;
        Ok(DeletePayload { deleted_id: input.id, revision })
    }

    /// Marks CENs to be realized.
    async fn cen_make(&self, ctx: &Context<'_>, input: CenMakeInput) -> Result<CensPayload> {
        let (list, revision, operation_id) = set_made(ctx, Realized::Cens, &input.ids, true, input.wait).await?;
        Ok(CensPayload { operation_id, ..cens_payload(svc(ctx), &list, revision) })
    }

    /// Undoes `cenMake`; destroying an unmade CEN is a success.
    async fn cen_destroy(&self, ctx: &Context<'_>, input: CenDestroyInput) -> Result<CensPayload> {
        let (list, revision, operation_id) = set_made(ctx, Realized::Cens, &input.ids, false, input.wait).await?;
        Ok(CensPayload { operation_id, ..cens_payload(svc(ctx), &list, revision) })
    }

    /// Creates or updates CINs; allocates their subnets and addresses.
    async fn cin_import(&self, ctx: &Context<'_>, input: CinImportInput) -> Result<CinsPayload> {
        let cins: Vec<CinSpec> =
            input.cins.iter().map(|c| CinSpec { id: c.id.to_string(), cens: ids(&c.cen_ids) }).collect();
        let names: Vec<String> = cins.iter().map(|c| c.id.clone()).collect();
        let revision = run(ctx, Command::CinImport { cins }).await?;
        Ok(cins_payload(svc(ctx), &names, revision))
    }

    async fn cin_delete(&self, ctx: &Context<'_>, input: CinDeleteInput) -> Result<DeletePayload> {
        let revision = run(ctx, Command::CinDelete { id: input.id.to_string() }).await?;
        Ok(DeletePayload { deleted_id: input.id, revision })
    }

    /// Puts the CINs' addresses and routes on their (made) interfaces; makes
    /// their CENs too.
    async fn cin_make(&self, ctx: &Context<'_>, input: CinMakeInput) -> Result<CinsPayload> {
        let (list, revision, operation_id) = set_made(ctx, Realized::Cins, &input.ids, true, input.wait).await?;
        Ok(CinsPayload { operation_id, ..cins_payload(svc(ctx), &list, revision) })
    }

    /// Removes the CINs' addresses and routes; the CINs stay defined.
    async fn cin_destroy(&self, ctx: &Context<'_>, input: CinDestroyInput) -> Result<CinsPayload> {
        let (list, revision, operation_id) = set_made(ctx, Realized::Cins, &input.ids, false, input.wait).await?;
        Ok(CinsPayload { operation_id, ..cins_payload(svc(ctx), &list, revision) })
    }

    /// Creates a container (or updates its tag); idempotent.
    async fn container_create(&self, ctx: &Context<'_>, input: ContainerCreateInput) -> Result<ContainerPayload> {
        let s = svc(ctx);
        let host = host_of(s, &input.host_id)?;
        let key = ContainerKey::new(&host, input.id.as_str());
        let revision = run(
            ctx,
            Command::ContainerCreate { host, id: input.id.to_string(), tag: input.tag, netns_path: input.netns_path },
        )
        .await?;
        Ok(container_payload(s, &key, revision))
    }

    /// Removes a container from every CEN and from its host.
    async fn container_delete(&self, ctx: &Context<'_>, input: ContainerDeleteInput) -> Result<DeletePayload> {
        let host = host_of(svc(ctx), &input.host_id)?;
        let revision = run(ctx, Command::ContainerDelete { host, id: input.id.to_string() }).await?;
        Ok(DeletePayload { deleted_id: input.id, revision })
    }

    async fn container_set_tag(&self, ctx: &Context<'_>, input: ContainerSetTagInput) -> Result<ContainerPayload> {
        let s = svc(ctx);
        let host = host_of(s, &input.host_id)?;
        let key = ContainerKey::new(&host, input.id.as_str());
        let revision = run(ctx, Command::ContainerSetTag { host, id: input.id.to_string(), tag: input.tag }).await?;
        Ok(container_payload(s, &key, revision))
    }

    /// Adds a container to a CEN (the container is created if new).
    async fn container_join_cen(&self, ctx: &Context<'_>, input: ContainerJoinCenInput) -> Result<MembershipPayload> {
        membership(ctx, input.host_id, input.container_id, input.cen_id, true).await
    }

    /// Removes a container from a CEN (a non-member is left as it is).
    async fn container_leave_cen(&self, ctx: &Context<'_>, input: ContainerLeaveCenInput) -> Result<MembershipPayload> {
        membership(ctx, input.host_id, input.container_id, input.cen_id, false).await
    }

    /// Creates or updates pools: each pool's containers `<id>-<n>` joined to
    /// the CENs of its CINs, with a default route where asked.
    async fn cpool_import(&self, ctx: &Context<'_>, input: CpoolImportInput) -> Result<CpoolsPayload> {
        let s = svc(ctx);
        let host = host_of(s, &input.host_id)?;
        let mut pools = Vec::with_capacity(input.pools.len());
        for p in &input.pools {
            let start_with = u32::try_from(p.start_with).map_err(|_| {
                error(ErrorCode::BadRequest, format!("pool '{}': startWith must not be negative", p.id.as_str()))
            })?;
            pools.push(CpoolSpec {
                id: p.id.to_string(),
                image: p.image.clone(),
                start_with,
                cins: p
                    .cins
                    .iter()
                    .map(|c| PoolCin { cin: c.cin_id.to_string(), default_route: c.default_route })
                    .collect(),
            });
        }
        let names: Vec<String> = pools.iter().map(|p| p.id.clone()).collect();
        let revision = run(ctx, Command::CpoolImport { host, pools }).await?;
        let cpools = s.read(|t| names.iter().filter_map(|id| t.cpool(id)).map(Cpool::from_rec).collect());
        Ok(CpoolsPayload { cpools, revision })
    }

    /// Looks at the kernel again and repairs any drift from the model
    /// (links or namespaces changed by hand), whether or not the model
    /// changed. A server that realizes nothing answers CONFLICT.
    async fn reconcile(&self, ctx: &Context<'_>, input: ReconcileInput) -> Result<ReconcilePayload> {
        let Some(driver) = realization(ctx) else {
            return Err(error(ErrorCode::Conflict, "this server realizes nothing (started with --no-realize)"));
        };
        let done = if input.wait {
            driver.reconcile_and_wait(MAKE_WAIT_LIMIT).await
        } else {
            driver.reconcile();
            false
        };
        Ok(ReconcilePayload { done, revision: svc(ctx).revision() as i64 })
    }

    /// Deletes a pool and its containers.
    async fn cpool_delete(&self, ctx: &Context<'_>, input: CpoolDeleteInput) -> Result<DeletePayload> {
        let revision = run(ctx, Command::CpoolDelete { id: input.id.to_string() }).await?;
        Ok(DeletePayload { deleted_id: input.id, revision })
    }
}
