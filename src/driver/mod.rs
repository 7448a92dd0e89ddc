//! The realization driver: makes the model real on this server's host.
//!
//! How a change flows through it, one round at a time:
//!
//! 1. **change stream**: the loop (`run.rs`) receives the committed changes
//!    from the service (or a wake-up, a reconcile request, or what the
//!    kernel listeners noticed);
//! 2. **affected records**: `affected.rs` names the CENs whose kernel state
//!    the changes may alter, and the CINs they touched;
//! 3. **desired**: `desired.rs` derives the desired kernel state of just
//!    those CENs ([`put_cen`]) into the desired state kept between rounds,
//!    and says, for a CEN whose wiring, gateways and VXLAN side stayed and
//!    that no member left, which members alone changed (a join: the
//!    joiner), unless a change of the CEN itself, of a CIN over it or of a
//!    VTEP, or the kernel listeners, ask for the whole CEN; a READY bridge
//!    that only its members' changes touched has just those members
//!    derived and put in place, so a join costs the same whatever the
//!    size of the CEN;
//! 4. **realize**: the realizer diffs that against what it put in the
//!    kernel and applies the plan, answering with an apply report; a CEN
//!    focused on some members has only their namespaces opened and checked
//!    and only their links planned (with the CEN's bridge and layer-2
//!    entries), so a join costs the same whatever the size of the CEN;
//! 5. **status reports**: `status.rs` turns the report into the statuses
//!    the model should show where they differ from what it shows (of a
//!    focused CEN, the focused members' containers only), and the
//!    loop records them through the service, which publishes them like any
//!    other change (they affect nothing, so they cause no further round).
//!
//! At start, on reconcile, and when the change stream was lost, the round
//! is a full one instead: the whole desired state ([`desired()`]), the
//! whole kernel.
//!
//! Invariants: steps 2, 3 and 5 are pure functions of the model (and the
//! apply report), unit-tested without tokio; the async side lives in
//! `run.rs` alone. Only the containers of this server's own host are
//! realized here; the members of a CEN on other hosts wait for their host's
//! server. The driver sees the model and its changes, never the store; the
//! API sees the driver only as [`crate::service::Realization`].

mod affected;
mod desired;
mod run;
mod status;
#[cfg(test)]
mod tests;

pub use desired::{desired, put_cen};
pub use run::Driver;
