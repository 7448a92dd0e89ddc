//! What the API layers ask of whatever makes the model real: wait until a
//! change is in the kernel, follow a long make/destroy, reconcile. The
//! driver implements it; the GraphQL layer knows only this handle.

use super::Service;
use crate::model::{Change, EntityKey};
use std::time::Duration;

#[async_trait::async_trait]
pub trait Realization: Send + Sync {
    /// Whether the kernel has work to do for this committed change (it
    /// touches something made, or something made before it).
    fn needs_kernel(&self, service: &Service, change: &Change) -> bool;

    /// Waits until the kernel reflects revision `revision` (or `limit`
    /// passes); true when it does.
    async fn wait_applied(&self, revision: u64, limit: Duration) -> bool;

    /// Registers a make/destroy (committed at `revision`) as an operation
    /// whose progress the `operation` subscription reports; returns its id.
    fn track(&self, service: &Service, kind: &str, revision: u64, targets: Vec<EntityKey>, make: bool) -> String;

    /// Asks for a full reconcile: the kernel is looked at again and drift
    /// is repaired.
    fn reconcile(&self);

    /// A hint that a change about to commit binds a container to the
    /// namespace at `path` (identity `ident`: device, inode) and wires it:
    /// the namespace may be opened and looked at meanwhile, so the round
    /// that wires it has that done. Never changes the kernel; never waits.
    fn warm(&self, path: &str, ident: (u64, u64));

    /// Objects under the prefix that are not this server's, as of the last
    /// full look at the kernel.
    fn foreign(&self) -> Vec<String>;

    /// Runs a full reconcile and waits (up to `limit`) until one that
    /// started after this call has finished; true when it has.
    async fn reconcile_and_wait(&self, limit: Duration) -> bool;
}
