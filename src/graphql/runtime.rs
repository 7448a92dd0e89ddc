//! The mutations container runtimes use through `leviathan-cni`:
//! `containerAttach` (CNI ADD, netavark setup) and `containerDetach` (CNI
//! DEL, netavark teardown), and how a container says which runtime made it.
//!
//! Invariants: an attach answers once the kernel has the container wired
//! (or has failed to), like a join; a detach of a container that is gone,
//! or that another sandbox of the same name took over, changes nothing and
//! succeeds, so a runtime may repeat it.

use super::mutation::{host_of, realization, run, MembershipPayload};
use super::types::{svc, Cen, Container};
use crate::model::{Command, ContainerKey, ErrorCode, Origin, RuntimeRef};
use async_graphql::{Context, Enum, InputObject, Result, SimpleObject, ID};

/// Who made a container.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ContainerOrigin {
    /// The API (a mutation, a legacy route, a pool).
    Api,
    /// A container runtime's CNI plugin call (`leviathan-cni`).
    Cni,
    /// Podman's netavark plugin call (`leviathan-cni netavark`).
    Netavark,
}

impl ContainerOrigin {
    pub fn of(runtime: Option<&RuntimeRef>) -> Self {
        match runtime.map(|r| r.origin) {
            None => ContainerOrigin::Api,
            Some(Origin::Cni) => ContainerOrigin::Cni,
            Some(Origin::Netavark) => ContainerOrigin::Netavark,
        }
    }

    fn runtime(self, id: String) -> Result<RuntimeRef> {
        let origin = match self {
            ContainerOrigin::Cni => Origin::Cni,
            ContainerOrigin::Netavark => Origin::Netavark,
            ContainerOrigin::Api => {
                return Err(super::error(
                    ErrorCode::BadRequest,
                    "origin API is for containers made through the API; a runtime says CNI or NETAVARK",
                ))
            }
        };
        Ok(RuntimeRef { origin, id })
    }
}

/// Input of `containerAttach`.
#[derive(InputObject)]
pub struct ContainerAttachInput {
    /// The container's host (default: this server's host).
    pub host_id: Option<ID>,
    /// The container id (`cni-<12 hex>` or `<namespace>.<pod>` from
    /// `leviathan-cni`).
    pub id: ID,
    /// The runtime's network namespace (`CNI_NETNS`).
    pub netns_path: String,
    /// The CEN it joins.
    pub cen_id: ID,
    /// The interface name inside the container (`CNI_IFNAME`).
    pub interface_name: String,
    /// The runtime's own id of the container (`CNI_CONTAINERID`).
    pub runtime_id: String,
    /// Which hook of the runtime calls (CNI or NETAVARK).
    #[graphql(default_with = "ContainerOrigin::Cni")]
    pub origin: ContainerOrigin,
}

/// Input of `containerDetach`.
#[derive(InputObject)]
pub struct ContainerDetachInput {
    /// The container's host (default: this server's host).
    pub host_id: Option<ID>,
    /// The container id given to `containerAttach`.
    pub id: ID,
    /// The CEN it leaves (it is deleted once it is in none); every CEN
    /// when absent.
    pub cen_id: Option<ID>,
    /// The runtime's own id of the container: a container attached under
    /// another runtime id is left alone.
    pub runtime_id: String,
    /// Which hook of the runtime calls (CNI or NETAVARK).
    #[graphql(default_with = "ContainerOrigin::Cni")]
    pub origin: ContainerOrigin,
}

/// What `containerDetach` answers.
#[derive(SimpleObject)]
pub struct DetachPayload {
    /// The container as the change left it (null once deleted).
    pub container: Option<Container>,
    /// The revision that holds the change.
    pub revision: i64,
}

pub(super) async fn attach(ctx: &Context<'_>, input: ContainerAttachInput) -> Result<MembershipPayload> {
    let started = std::time::Instant::now();
    let s = svc(ctx);
    let host = host_of(s, &input.host_id)?;
    let runtime = input.origin.runtime(input.runtime_id)?;
    let key = ContainerKey::new(&host, input.id.as_str());
    let netns = s.bind_workload(&host, &input.netns_path).await.map_err(super::gql)?;
    let bound_us = started.elapsed().as_micros() as u64;
    let cen = input.cen_id.to_string();
    // The realizer opens the namespace while the change commits: the round
    // that wires it then has that done (only where there is one to wire).
    if let (Some(b), Some(r)) = (&netns, realization(ctx)) {
        if s.read(|t| t.cen(&cen).is_some_and(|c| c.making.made)) {
            r.warm(&b.path, (b.device, b.inode));
        }
    }
    let cmd = Command::ContainerAttach {
        host,
        id: input.id.to_string(),
        netns_path: input.netns_path,
        netns,
        cen: cen.clone(),
        ifname: input.interface_name,
        runtime,
    };
    let revision = run(ctx, cmd).await?;
    let ran_us = started.elapsed().as_micros() as u64;
    let (container, cen) = s.read(|t| (Container::lookup(t, &key), t.cen(&cen).map(Cen::from_rec)));
    tracing::debug!(revision, bound_us, ran_us, read_us = started.elapsed().as_micros() as u64, "attach timing");
    Ok(MembershipPayload { container, cen, revision })
}

pub(super) async fn detach(ctx: &Context<'_>, input: ContainerDetachInput) -> Result<DetachPayload> {
    let s = svc(ctx);
    let host = host_of(s, &input.host_id)?;
    let runtime = input.origin.runtime(input.runtime_id)?;
    let key = ContainerKey::new(&host, input.id.as_str());
    let cmd =
        Command::ContainerDetach { host, id: input.id.to_string(), cen: input.cen_id.map(|c| c.to_string()), runtime };
    let revision = run(ctx, cmd).await?;
    Ok(DetachPayload { container: s.read(|t| Container::lookup(t, &key)), revision })
}
