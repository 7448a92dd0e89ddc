//! Realization on Linux: desired state → plan (pure diff) → netlink apply.
//!
//! - [`Desired`] is what the model wants (plain data, see `desired.rs`).
//! - [`Observed`] is what is in the kernel under our prefix, filled at
//!   adoption ([`Realizer::new`]) and kept current by [`Realizer::apply`].
//! - [`plan()`] diffs the two into [`Op`]s, grouped in phases; the ops of a
//!   phase are pipelined (many netlink requests in flight).
//! - [`cleanup`] removes everything under a prefix.
//!
//! The rooms: `config.rs` (prefix, fabric, underlay), `adopt.rs` (taking
//! in what the kernel holds: start, refresh, links learned after a
//! create), `handles.rs` (namespace handles, bound paths, kernel
//! listeners), `apply.rs` (record, run the plan's phases, absorb what each
//! step did), `exec.rs` (one plan step in the kernel), `batch.rs` (many FDB and
//! neighbour requests in one `sendmsg`), `report.rs` (what
//! an apply says per CEN and CIN), `error.rs` (typed kernel errors),
//! `cleanup.rs`; `nl.rs` and `netns.rs` talk to the kernel, `plan/` is
//! pure. This file holds the [`Realizer`] and the public face.
//!
//! Kernel rules followed here (see DESIGN.md): namespaces are created on
//! dedicated threads, never by setns on a tokio worker; veth peers are
//! created directly in their namespaces in one RTM_NEWLINK and attached to
//! their bridge at creation; teardown deletes namespaces and link groups.

mod adopt;
mod apply;
mod batch;
mod cleanup;
mod config;
pub mod desired;
pub mod error;
mod exec;
mod handles;
pub mod ledger;
mod naming;
mod netns;
mod nl;
pub mod observed;
pub mod plan;
mod report;
pub mod watch;

use std::collections::{BTreeMap, BTreeSet};

pub use cleanup::{cleanup, CleanupReport};
pub use config::{check_prefix, Config, FabricMode, Underlay, VXLAN_OVERHEAD, VXLAN_PORT};
pub use desired::{Addr, CenNet, ContainerNet, Desired, Member, NetnsRef, Route, Vxlan, Wiring};
pub use error::{KernelError, LedgerError, RealizeError};
pub use naming::{
    bridge_name, cen_group, fabric_netns_name, mac_text, member_mac, netns_name, veth_fabric_name, vxlan_name,
};
pub use netns::NETNS_DIR;
pub use observed::{LinkKind, LinkState, NsId, NsState, Observed, RouteState};
pub use plan::{plan, plan_scoped, Focus, GroupIndex, Op, Plan, Scope, Step, VethEnd};
pub use report::{ApplyError, ApplyReport};

use nl::NsHandle;

/// A link by namespace and name.
type LinkName = (NsId, String);

/// Progress callback: (steps done, steps total).
pub type Progress<'a> = &'a (dyn Fn(usize, usize) + Send + Sync);

/// Requests in flight at once (per apply phase).
const IN_FLIGHT: usize = 64;

/// Namespaces made per call to the namespace threads (see `run_phase`).
const CREATE_CHUNK: usize = 256;

/// Keeps the kernel in line with a [`Desired`] state, under one prefix.
pub struct Realizer {
    cfg: Config,
    observed: Observed,
    handles: BTreeMap<NsId, NsHandle>,
    /// Namespaces whose observed state may be stale (after an error).
    dirty: BTreeSet<NsId>,
    /// Desired CENs by link group, as of the last apply.
    groups: GroupIndex,
    /// A pidfd watch per bound namespace of a process we hold open.
    watches: BTreeMap<NsId, watch::Watch>,
    events_tx: tokio::sync::mpsc::UnboundedSender<watch::Event>,
    events_rx: Option<tokio::sync::mpsc::UnboundedReceiver<watch::Event>>,
    /// A link/address notification listener per fabric, host and bound
    /// namespace (see `watch.rs` for why not per managed namespace).
    listeners: BTreeMap<NsId, watch::Watch>,
    /// Link deletions awaited from the listeners.
    departures: watch::Departures,
    /// Namespaces opened since the last apply that want a listener.
    listen_pending: BTreeSet<NsId>,
    /// Listeners opened together with their namespace, not started yet.
    listen_opened: BTreeMap<NsId, Result<rtnetlink::sys::Socket, KernelError>>,
    /// The thread that opens bound namespaces on the path of a join.
    entering: netns::Entering,
    /// Namespaces opened ahead of the change that is to wire them
    /// ([`Realizer::warm`]), with when; a round that wires one takes it
    /// off, one that none wired is let go of after `warm_keep`.
    warmed: BTreeMap<NsId, std::time::Instant>,
    /// [`handles::WARM_KEEP`] unless set otherwise.
    warm_keep: std::time::Duration,
    /// What this instance made; without one, everything under the prefix
    /// counts as its own (tests and tools that own their prefix outright).
    ledger: Option<std::sync::Arc<ledger::Ledger>>,
    /// Objects under the prefix that the ledger does not hold, as of the
    /// last full look at the kernel: reported, never touched.
    foreign: BTreeSet<String>,
    /// A netlink connection in the server's own namespace, where VXLAN
    /// devices are created from (with an underlay only).
    underlay: Option<(rtnetlink::Handle, tokio::task::JoinHandle<()>)>,
}

impl Drop for Realizer {
    fn drop(&mut self) {
        if let Some((_, task)) = &self.underlay {
            task.abort();
        }
    }
}

impl Realizer {
    /// Objects under the prefix that are not this instance's (as of the
    /// last full look at the kernel).
    pub fn foreign(&self) -> Vec<String> {
        self.foreign.iter().cloned().collect()
    }

    /// What this instance records as its own, when it keeps a ledger.
    pub fn ledger(&self) -> Option<&ledger::Ledger> {
        self.ledger.as_deref()
    }

    /// How long a namespace opened ahead ([`Realizer::warm`]) is kept for
    /// the change that is to wire it (30 s unless set).
    pub fn keep_warmed_for(&mut self, keep: std::time::Duration) {
        self.warm_keep = keep;
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// What the realizer notices outside applies (a bound workload's
    /// process exited): the driver takes this once and listens.
    pub fn take_events(&mut self) -> Option<tokio::sync::mpsc::UnboundedReceiver<watch::Event>> {
        self.events_rx.take()
    }

    /// What the realizer believes is in the kernel.
    pub fn observed(&self) -> &Observed {
        &self.observed
    }
}

/// Runs `f` off the tokio workers (namespace work blocks its thread).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, KernelError> {
    tokio::task::spawn_blocking(f).await.map_err(KernelError::worker)
}
