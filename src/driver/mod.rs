//! The realization driver: makes the model real on this server's host.
//!
//! How a change flows through it, one round at a time:
//!
//! 1. **change stream**: the loop ([`run`]) receives the committed changes
//!    from the service (or a wake-up, a reconcile request, or what the
//!    kernel listeners noticed);
//! 2. **affected records**: [`affected`] names the CENs whose kernel state
//!    the changes may alter, and the CINs they touched;
//! 3. **desired**: [`desired`] derives the desired kernel state of just
//!    those CENs ([`put_cen`]) into the desired state kept between rounds;
//! 4. **realize**: the realizer diffs that against what it put in the
//!    kernel and applies the plan, answering with an apply report;
//! 5. **status reports**: [`status`] turns the report into the statuses the
//!    model should show where they differ from what it shows, and the loop
//!    records them through the service, which publishes them like any
//!    other change.
//!
//! At start, on reconcile, and when the change stream was lost, the round
//! is a full one instead: the whole desired state, the whole kernel.
//!
//! Invariants: steps 2, 3 and 5 are pure functions of the model (and the
//! apply report), tested without tokio; the async side lives in [`run`]
//! alone. Only the containers of this server's own host are realized here;
//! the members of a CEN on other hosts wait for their host's server. The
//! driver sees the model and the changes, never the store; the API sees the
//! driver only as [`crate::service::Realization`].

mod affected;
mod desired;
mod run;
mod status;
#[cfg(test)]
mod testing;

pub use desired::{desired, put_cen};
pub use run::Driver;
