//! Binding containers to workloads that already run, for the resolvers and
//! the driver alike, under the service's own `Workloads` options: the I/O
//! (namespace files, the runtime's CLI) happens here, before a command,
//! never in the model. Only this server's own host's workloads can be
//! looked at.

use super::Service;
use crate::model::{ModelError, NetnsBinding};
use crate::workload::{self, Target};

impl Service {
    /// Resolves a `netnsPath` on this server's host to the namespace it
    /// names, checked (see `Workloads::resolve`).
    pub async fn resolve_netns(&self, said: &str) -> Result<NetnsBinding, ModelError> {
        self.workloads.resolve(said).await
    }

    /// The binding of a container of `host` to the workload `said` names:
    /// resolved when `host` is this server's; for another host, a path is
    /// left for that host's server to check when wiring (`None`), and
    /// anything that needs looking at (a pid, a runtime's container) is
    /// refused: only that host's server can resolve it.
    pub async fn bind_workload(&self, host: &str, said: &str) -> Result<Option<NetnsBinding>, ModelError> {
        if host == self.host_id() {
            return self.resolve_netns(said).await.map(Some);
        }
        match workload::parse(said)? {
            Target::Path(_) => Ok(None),
            _ => Err(ModelError::bad_request(format!(
                "netnsPath '{}': only the server of host '{host}' can resolve it; send the request there",
                said.escape_debug()
            ))),
        }
    }
}
