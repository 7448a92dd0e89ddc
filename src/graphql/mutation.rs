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
pub(super) fn realization<'a>(ctx: &'a Context<'_>) -> Option<&'a Arc<dyn Realization>> {
    ctx.data_opt::<Arc<dyn Realization>>()
}

/// Applies a command and, where a realizer runs and the change touches
/// something made, answers once the kernel reflects it (a member joining a
/// made CEN is wired when this returns). A change that touches nothing made
/// answers as soon as it is durable.
pub(super) async fn run(ctx: &Context<'_>, cmd: Command) -> Result<i64> {
    let wait = !matches!(cmd, Command::CenSetMade { .. } | Command::CinSetMade { .. });
    let started = std::time::Instant::now();
    let actor = super::access::caller_of(ctx.data_opt::<crate::auth::Caller>()).actor;
    let (revision, change) = svc(ctx).execute_change_as(cmd, &actor).await.map_err(gql)?;
    let committed_us = started.elapsed().as_micros() as u64;
    let needs = match (realization(ctx), &change) {
        (Some(r), Some(c)) => r.needs_kernel(svc(ctx), c),
        _ => false,
    };
    settle(ctx, revision as i64, wait && needs).await;
    tracing::debug!(revision, committed_us, settled_us = started.elapsed().as_micros() as u64, "mutation timing");
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
    if wait && realizing {
        settled(ctx, what, &list).await;
    }
    Ok((list, revision, operation_id))
}

/// Waits (at most `MAKE_WAIT_LIMIT`) until none of the objects is still
/// PREPARING or DESTROYING: where they span hosts, until every host whose
/// server is up reported its part (a host whose server is down is not
/// waited for: its part stays as it is until that server is back).
async fn settled(ctx: &Context<'_>, what: Realized, ids: &[String]) {
    let s = svc(ctx);
    let mut changes = s.subscribe();
    let moving = |r: &crate::model::Standing| {
        matches!(r.status, crate::model::Status::Preparing | crate::model::Status::Destroying)
    };
    let busy = || {
        s.read(|t| {
            ids.iter().any(|id| {
                let (whole, parts) = match what {
                    Realized::Cens => match t.cen(id) {
                        Some(c) => (&c.making.realization, &c.making.parts),
                        None => return false,
                    },
                    Realized::Cins => match t.cin(id) {
                        Some(c) => (&c.making.realization, &c.making.parts),
                        None => return false,
                    },
                };
                if parts.is_empty() {
                    moving(whole)
                } else {
                    parts.iter().any(|(h, r)| moving(r) && s.host_status(h).up)
                }
            })
        })
    };
    let waited = tokio::time::timeout(MAKE_WAIT_LIMIT, async {
        while busy() {
            // A report arrives as a change; a host going down does not, so
            // look again now and then.
            tokio::select! {
                r = changes.recv() => {
                    if let Err(tokio::sync::broadcast::error::RecvError::Closed) = r {
                        return;
                    }
                }
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        }
    })
    .await;
    if waited.is_err() {
        tracing::warn!("answered before every host reported");
    }
}

/// Longest a waiting make/destroy waits for the realizer.
pub const MAKE_WAIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(300);

pub(super) fn host_of(s: &Arc<Service>, host_id: &Option<ID>) -> Result<String> {
    check_host_arg(host_id.as_ref().map(|h| h.as_str()), s.host_id()).map(str::to_string).map_err(gql)
}

fn ids(v: &[ID]) -> Vec<String> {
    v.iter().map(|i| i.to_string()).collect()
}

// ---- inputs ----

/// Input of `hostCreate`.
#[derive(InputObject)]
pub struct HostCreateInput {
    /// The new host's id (the legacy `hostID`); creating an existing host
    /// changes nothing.
    pub id: ID,
}
/// Input of `hostDelete`.
#[derive(InputObject)]
pub struct HostDeleteInput {
    /// The id of the host to delete.
    pub id: ID,
}

/// One CEN of a CEN file (an entry of the legacy `cenList`).
#[derive(InputObject)]
pub struct CenImportItem {
    /// The CEN id (the legacy `cenID`).
    pub id: ID,
    /// Its members: exactly these containers afterwards, created where new
    /// (the legacy `containerIDs`).
    pub container_ids: Vec<ID>,
}
/// Input of `cenImport`: a CEN file (the legacy `POST /cen/import` body).
#[derive(InputObject)]
pub struct CenImportInput {
    /// Host of the containers (default: this server's host).
    pub host_id: Option<ID>,
    /// The CENs to create or update (the legacy `cenList`).
    pub cens: Vec<CenImportItem>,
}
/// Input of `cenCreate` (the legacy `PUT /cen/{cenID}`).
#[derive(InputObject)]
pub struct CenCreateInput {
    /// The new CEN's id (the legacy `cenID`).
    pub id: ID,
}
/// Input of `cenDelete` (the legacy `DELETE /cen/{cenID}`).
#[derive(InputObject)]
pub struct CenDeleteInput {
    /// The id of the CEN to delete.
    pub id: ID,
}
/// Input of `cenMake` (the legacy `POST /cen/make`).
#[derive(InputObject)]
pub struct CenMakeInput {
    /// The CENs to make (all of them or, if one is unknown, none).
    pub ids: Vec<ID>,
    /// Answer when the work is applied (default) or at once.
    #[graphql(default = true)]
    pub wait: bool,
}
/// Input of `cenDestroy` (the legacy `POST /cen/destroy`).
#[derive(InputObject)]
pub struct CenDestroyInput {
    /// The CENs to destroy (all of them or, if one is unknown, none).
    pub ids: Vec<ID>,
    /// Answer when the work is applied (default) or at once with an
    /// `operationId`.
    #[graphql(default = true)]
    pub wait: bool,
}

/// One CIN of a CIN file (a `cinID: [cenID, ...]` entry of the legacy file).
#[derive(InputObject)]
pub struct CinImportItem {
    /// The CIN id (the legacy `cinID`).
    pub id: ID,
    /// The CENs it is laid over, in order (slice k is the k-th CEN).
    pub cen_ids: Vec<ID>,
}
/// Input of `cinImport` (the legacy `POST /cin/import` body).
#[derive(InputObject)]
pub struct CinImportInput {
    /// The CINs to create or update.
    pub cins: Vec<CinImportItem>,
}
/// Input of `cinDelete`.
#[derive(InputObject)]
pub struct CinDeleteInput {
    /// The id of the CIN to delete.
    pub id: ID,
}
/// Input of `cinMake` (the legacy `POST /cin/make`).
#[derive(InputObject)]
pub struct CinMakeInput {
    /// The CINs to make (all of them or, if one is unknown, none).
    pub ids: Vec<ID>,
    /// Answer when the work is applied (default) or at once with an
    /// `operationId`.
    #[graphql(default = true)]
    pub wait: bool,
}
/// Input of `cinDestroy` (the legacy `POST /cin/destroy`).
#[derive(InputObject)]
pub struct CinDestroyInput {
    /// The CINs to destroy (all of them or, if one is unknown, none).
    pub ids: Vec<ID>,
    /// Answer when the work is applied (default) or at once with an
    /// `operationId`.
    #[graphql(default = true)]
    pub wait: bool,
}

/// Input of `containerCreate` (the legacy `PUT /host/{hostID}/{containerID}`).
#[derive(InputObject)]
pub struct ContainerCreateInput {
    /// The container's host (default: this server's host; the legacy `hostID`).
    pub host_id: Option<ID>,
    /// The container id (the legacy `containerID`).
    pub id: ID,
    /// A free-form label (the legacy `container_tag`); null for none.
    pub tag: Option<String>,
    /// Bind to a workload that already runs instead of a managed namespace:
    /// a namespace file (`/proc/<pid>/ns/net`, `/run/netns/<name>`),
    /// `pid:<pid>`, `docker:<name>` or `podman:<name>` (resolved through the
    /// runtime's CLI). It must be a network namespace, not the server's own.
    /// leviathan wires it but never deletes it; binding again (the workload
    /// restarted) wires the new namespace with the same addresses.
    pub netns_path: Option<String>,
}
/// Input of `containerDelete` (the legacy `DELETE /host/{hostID}/{containerID}`).
#[derive(InputObject)]
pub struct ContainerDeleteInput {
    /// The container's host (default: this server's host).
    pub host_id: Option<ID>,
    /// The id of the container to delete.
    pub id: ID,
}
/// Input of `containerSetTag`.
#[derive(InputObject)]
pub struct ContainerSetTagInput {
    /// The container's host (default: this server's host).
    pub host_id: Option<ID>,
    /// The container id.
    pub id: ID,
    /// The new tag; null clears it.
    pub tag: Option<String>,
}
/// Input of `containerJoinCen` (the legacy
/// `PUT /host/{hostID}/{containerID}/{cenID}`).
#[derive(InputObject)]
pub struct ContainerJoinCenInput {
    /// The container's host (default: this server's host).
    pub host_id: Option<ID>,
    /// The container that joins (created if new).
    pub container_id: ID,
    /// The CEN it joins.
    pub cen_id: ID,
}
/// Input of `containerLeaveCen` (the legacy
/// `DELETE /host/{hostID}/{containerID}/{cenID}`).
#[derive(InputObject)]
pub struct ContainerLeaveCenInput {
    /// The container's host (default: this server's host).
    pub host_id: Option<ID>,
    /// The container that leaves.
    pub container_id: ID,
    /// The CEN it leaves.
    pub cen_id: ID,
}

/// One CIN of a pool (an entry of the legacy `cins` list of a pool).
#[derive(InputObject)]
pub struct CpoolCinInput {
    /// A CIN id, or (legacy) a CEN id where no CIN has that id (the legacy
    /// `cinID`).
    pub cin_id: ID,
    /// Whether the pool's containers get their default route through this
    /// CIN (the legacy `default_route`, `"true"` or `"false"`).
    #[graphql(default = false)]
    pub default_route: bool,
}
/// One pool of a CPool file (an entry of the legacy `cpoolList`).
#[derive(InputObject)]
pub struct CpoolImportItem {
    /// The pool id (the legacy `cpoolID`); its containers are `<id>-<n>`.
    pub id: ID,
    /// The container image type (the legacy `type`, e.g. `ubuntu:14.04`).
    #[graphql(name = "type")]
    pub image: String,
    /// How many containers the pool has, numbered from 1 (the legacy
    /// `start_with`); 0 or more.
    pub start_with: i32,
    /// The CINs its containers join.
    pub cins: Vec<CpoolCinInput>,
}
/// Input of `cpoolImport`: a CPool file (the legacy `POST /cpool` body).
#[derive(InputObject)]
pub struct CpoolImportInput {
    /// Host of the pools' containers (default: this server's host).
    pub host_id: Option<ID>,
    /// The pools to create or update (the legacy `cpoolList`).
    pub pools: Vec<CpoolImportItem>,
}
/// Input of `reconcile`.
#[derive(InputObject)]
pub struct ReconcileInput {
    /// Answer when the reconcile is done (default) or at once.
    #[graphql(default = true)]
    pub wait: bool,
}

/// What `reconcile` answers.
#[derive(SimpleObject)]
pub struct ReconcilePayload {
    /// Whether a reconcile that started after the request has finished.
    pub done: bool,
    /// The revision of the last committed change when it answered.
    pub revision: i64,
    /// Objects under the server's prefix that it did not make (not in its
    /// ledger), as of the last full look at the kernel: reported, never
    /// touched (e.g. `namespace lev-x`, `link lev-vabc in host namespace`).
    pub foreign: Vec<String>,
}

/// Input of `cpoolDelete`.
#[derive(InputObject)]
pub struct CpoolDeleteInput {
    /// The id of the pool to delete.
    pub id: ID,
}

// ---- payloads ----

/// What `hostCreate` answers.
#[derive(SimpleObject)]
pub struct HostPayload {
    /// The host as the change left it.
    pub host: Option<Host>,
    /// The revision that holds the change.
    pub revision: i64,
}
/// What the `…Delete` mutations answer.
#[derive(SimpleObject)]
pub struct DeletePayload {
    /// The id of the object deleted.
    pub deleted_id: ID,
    /// The revision that holds the change.
    pub revision: i64,
}
/// What `cenCreate` answers.
#[derive(SimpleObject)]
pub struct CenPayload {
    /// The CEN as the change left it.
    pub cen: Option<Cen>,
    /// The revision that holds the change.
    pub revision: i64,
}
/// What `cenImport`, `cenMake` and `cenDestroy` answer.
#[derive(SimpleObject)]
pub struct CensPayload {
    /// The CENs named by the input, as the change left them (with `wait`,
    /// with the statuses the kernel work produced).
    pub cens: Vec<Cen>,
    /// The revision that holds the change.
    pub revision: i64,
    /// With `wait: false`: the operation whose progress the `operation`
    /// subscription reports.
    pub operation_id: Option<ID>,
}
/// What `cinImport`, `cinMake` and `cinDestroy` answer.
#[derive(SimpleObject)]
pub struct CinsPayload {
    /// The CINs named by the input, as the change left them.
    pub cins: Vec<Cin>,
    /// The revision that holds the change.
    pub revision: i64,
    /// With `wait: false`: the operation whose progress the `operation`
    /// subscription reports.
    pub operation_id: Option<ID>,
}
/// What `containerCreate` and `containerSetTag` answer.
#[derive(SimpleObject)]
pub struct ContainerPayload {
    /// The container as the change left it.
    pub container: Option<Container>,
    /// The revision that holds the change.
    pub revision: i64,
}
/// What `containerJoinCen` and `containerLeaveCen` answer.
#[derive(SimpleObject)]
pub struct MembershipPayload {
    /// The container as the change left it.
    pub container: Option<Container>,
    /// The CEN as the change left it.
    pub cen: Option<Cen>,
    /// The revision that holds the change.
    pub revision: i64,
}
/// What `cpoolImport` answers.
#[derive(SimpleObject)]
pub struct CpoolsPayload {
    /// The pools named by the input, as the change left them.
    pub cpools: Vec<Cpool>,
    /// The revision that holds the change.
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

/// The root of every change. Each mutation takes one `input`, validates all
/// of it before changing anything (a failed mutation changes nothing), and
/// answers with the objects it changed and the `revision` that holds the
/// change, once that change is durable.
#[Object(name = "Mutation")]
impl MutationRoot {
    /// Creates a host (nothing happens if it exists).
    async fn host_create(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to change: see `HostCreateInput`.")] input: HostCreateInput,
    ) -> Result<HostPayload> {
        let revision = run(ctx, Command::HostCreate { id: input.id.to_string() }).await?;
        let host = svc(ctx).read(|t| t.host(&input.id).map(Host::from_rec));
        Ok(HostPayload { host, revision })
    }

    /// Deletes a host that has no containers left.
    async fn host_delete(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to change: see `HostDeleteInput`.")] input: HostDeleteInput,
    ) -> Result<DeletePayload> {
        let revision = run(ctx, Command::HostDelete { id: input.id.to_string() }).await?;
        Ok(DeletePayload { deleted_id: input.id, revision })
    }

    /// Creates or updates every CEN of a CEN file to match it; containers
    /// are created as needed. Importing the same file again changes nothing.
    async fn cen_import(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to change: see `CenImportInput`.")] input: CenImportInput,
    ) -> Result<CensPayload> {
        let s = svc(ctx);
        let host = host_of(s, &input.host_id)?;
        let cens: Vec<CenSpec> =
            input.cens.iter().map(|c| CenSpec { id: c.id.to_string(), containers: ids(&c.container_ids) }).collect();
        let names: Vec<String> = cens.iter().map(|c| c.id.clone()).collect();
        let revision = run(ctx, Command::CenImport { host, cens }).await?;
        Ok(cens_payload(s, &names, revision))
    }

    /// Creates an empty CEN (nothing happens if it exists).
    async fn cen_create(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to change: see `CenCreateInput`.")] input: CenCreateInput,
    ) -> Result<CenPayload> {
        let revision = run(ctx, Command::CenCreate { id: input.id.to_string() }).await?;
        Ok(CenPayload { cen: svc(ctx).read(|t| t.cen(&input.id).map(Cen::from_rec)), revision })
    }

    /// Deletes a CEN (and takes it out of the CINs over it).
    async fn cen_delete(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to change: see `CenDeleteInput`.")] input: CenDeleteInput,
    ) -> Result<DeletePayload> {
        let revision = run(ctx, Command::CenDelete { id: input.id.to_string() }).await?;
        Ok(DeletePayload { deleted_id: input.id, revision })
    }

    /// Marks CENs to be realized.
    async fn cen_make(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to change: see `CenMakeInput`.")] input: CenMakeInput,
    ) -> Result<CensPayload> {
        let (list, revision, operation_id) = set_made(ctx, Realized::Cens, &input.ids, true, input.wait).await?;
        Ok(CensPayload { operation_id, ..cens_payload(svc(ctx), &list, revision) })
    }

    /// Undoes `cenMake`; destroying an unmade CEN is a success.
    async fn cen_destroy(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to change: see `CenDestroyInput`.")] input: CenDestroyInput,
    ) -> Result<CensPayload> {
        let (list, revision, operation_id) = set_made(ctx, Realized::Cens, &input.ids, false, input.wait).await?;
        Ok(CensPayload { operation_id, ..cens_payload(svc(ctx), &list, revision) })
    }

    /// Creates or updates CINs; allocates their subnets and addresses.
    async fn cin_import(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to change: see `CinImportInput`.")] input: CinImportInput,
    ) -> Result<CinsPayload> {
        let cins: Vec<CinSpec> =
            input.cins.iter().map(|c| CinSpec { id: c.id.to_string(), cens: ids(&c.cen_ids) }).collect();
        let names: Vec<String> = cins.iter().map(|c| c.id.clone()).collect();
        let revision = run(ctx, Command::CinImport { cins }).await?;
        Ok(cins_payload(svc(ctx), &names, revision))
    }

    /// Deletes a CIN and frees its subnet and addresses.
    async fn cin_delete(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to change: see `CinDeleteInput`.")] input: CinDeleteInput,
    ) -> Result<DeletePayload> {
        let revision = run(ctx, Command::CinDelete { id: input.id.to_string() }).await?;
        Ok(DeletePayload { deleted_id: input.id, revision })
    }

    /// Puts the CINs' addresses and routes on their (made) interfaces; makes
    /// their CENs too.
    async fn cin_make(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to change: see `CinMakeInput`.")] input: CinMakeInput,
    ) -> Result<CinsPayload> {
        let (list, revision, operation_id) = set_made(ctx, Realized::Cins, &input.ids, true, input.wait).await?;
        Ok(CinsPayload { operation_id, ..cins_payload(svc(ctx), &list, revision) })
    }

    /// Removes the CINs' addresses and routes; the CINs stay defined.
    async fn cin_destroy(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to change: see `CinDestroyInput`.")] input: CinDestroyInput,
    ) -> Result<CinsPayload> {
        let (list, revision, operation_id) = set_made(ctx, Realized::Cins, &input.ids, false, input.wait).await?;
        Ok(CinsPayload { operation_id, ..cins_payload(svc(ctx), &list, revision) })
    }

    /// Creates a container (or updates its tag); idempotent.
    async fn container_create(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to change: see `ContainerCreateInput`.")] input: ContainerCreateInput,
    ) -> Result<ContainerPayload> {
        let s = svc(ctx);
        let host = host_of(s, &input.host_id)?;
        let key = ContainerKey::new(&host, input.id.as_str());
        // Binding does I/O (files, the runtime's CLI): the service does it
        // here, before the command, never in the model. Only this server's
        // own host's workloads can be looked at.
        let netns = match &input.netns_path {
            Some(p) => s.bind_workload(&host, p).await.map_err(gql)?,
            None => None,
        };
        let netns_path = input.netns_path;
        let revision =
            run(ctx, Command::ContainerCreate { host, id: input.id.to_string(), tag: input.tag, netns_path, netns })
                .await?;
        Ok(container_payload(s, &key, revision))
    }

    /// Removes a container from every CEN and from its host.
    async fn container_delete(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to change: see `ContainerDeleteInput`.")] input: ContainerDeleteInput,
    ) -> Result<DeletePayload> {
        let host = host_of(svc(ctx), &input.host_id)?;
        let revision = run(ctx, Command::ContainerDelete { host, id: input.id.to_string() }).await?;
        Ok(DeletePayload { deleted_id: input.id, revision })
    }

    /// Sets or clears a container's tag (the legacy `container_tag`).
    async fn container_set_tag(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to change: see `ContainerSetTagInput`.")] input: ContainerSetTagInput,
    ) -> Result<ContainerPayload> {
        let s = svc(ctx);
        let host = host_of(s, &input.host_id)?;
        let key = ContainerKey::new(&host, input.id.as_str());
        let revision = run(ctx, Command::ContainerSetTag { host, id: input.id.to_string(), tag: input.tag }).await?;
        Ok(container_payload(s, &key, revision))
    }

    /// Adds a container to a CEN (the container is created if new).
    async fn container_join_cen(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to change: see `ContainerJoinCenInput`.")] input: ContainerJoinCenInput,
    ) -> Result<MembershipPayload> {
        membership(ctx, input.host_id, input.container_id, input.cen_id, true).await
    }

    /// A container runtime attaches a container (`leviathan-cni`): binds it
    /// to the runtime's namespace and joins one CEN under the runtime's
    /// interface name; answers once the kernel has it wired.
    async fn container_attach(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to change: see `ContainerAttachInput`.")] input: super::runtime::ContainerAttachInput,
    ) -> Result<MembershipPayload> {
        super::runtime::attach(ctx, input).await
    }

    /// A container runtime detaches a container; repeating it succeeds.
    async fn container_detach(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to change: see `ContainerDetachInput`.")] input: super::runtime::ContainerDetachInput,
    ) -> Result<super::runtime::DetachPayload> {
        super::runtime::detach(ctx, input).await
    }

    /// Removes a container from a CEN (a non-member is left as it is).
    async fn container_leave_cen(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to change: see `ContainerLeaveCenInput`.")] input: ContainerLeaveCenInput,
    ) -> Result<MembershipPayload> {
        membership(ctx, input.host_id, input.container_id, input.cen_id, false).await
    }

    /// Creates or updates pools: each pool's containers `<id>-<n>` joined to
    /// the CENs of its CINs, with a default route where asked.
    async fn cpool_import(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to change: see `CpoolImportInput`.")] input: CpoolImportInput,
    ) -> Result<CpoolsPayload> {
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
    async fn reconcile(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to change: see `ReconcileInput`.")] input: ReconcileInput,
    ) -> Result<ReconcilePayload> {
        let Some(driver) = realization(ctx) else {
            return Err(error(ErrorCode::Conflict, "this server realizes nothing (started with --no-realize)"));
        };
        let done = if input.wait {
            driver.reconcile_and_wait(MAKE_WAIT_LIMIT).await
        } else {
            driver.reconcile();
            false
        };
        Ok(ReconcilePayload { done, revision: svc(ctx).revision() as i64, foreign: driver.foreign() })
    }

    /// Deletes a pool and its containers.
    async fn cpool_delete(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "What to change: see `CpoolDeleteInput`.")] input: CpoolDeleteInput,
    ) -> Result<DeletePayload> {
        let revision = run(ctx, Command::CpoolDelete { id: input.id.to_string() }).await?;
        Ok(DeletePayload { deleted_id: input.id, revision })
    }
}
