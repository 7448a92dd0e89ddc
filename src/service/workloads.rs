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

    /// Whether a binding's path still leads to the namespace it was bound
    /// to (a workload that restarted has a new one).
    pub fn still_bound(&self, binding: &NetnsBinding) -> bool {
        workload::still_bound(binding)
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

#[cfg(test)]
mod tests {
    use crate::model::ErrorCode;
    use crate::service::{Options, Service};
    use crate::workload::Workloads;

    #[tokio::test]
    async fn another_hosts_path_waits_for_its_server_and_the_rest_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Service::open(&dir.path().join("s.db"), "h1").unwrap();
        assert_eq!(s.bind_workload("h2", "/proc/1/ns/net").await.unwrap(), None);
        let e = s.bind_workload("h2", "pid:1").await.unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.contains("only the server of host 'h2'"), "{}", e.message);
        let e = s.bind_workload("h1", "/etc/passwd").await.unwrap_err();
        assert!(e.message.contains("not a network namespace"), "{}", e.message);
    }

    #[tokio::test]
    async fn the_host_namespace_is_bound_only_when_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let refused = Service::open(&dir.path().join("a.db"), "h1").unwrap();
        let e = refused.resolve_netns("/proc/self/ns/net").await.unwrap_err();
        assert!(e.message.contains("--allow-host-netns"), "{}", e.message);
        let opts = Options { workloads: Workloads { allow_host_netns: true }, ..Options::new("h1") };
        let allowed = Service::open_with(&dir.path().join("b.db"), opts).unwrap();
        let b = allowed.bind_workload("h1", "/proc/self/ns/net").await.unwrap();
        assert_eq!(b.map(|b| b.path), Some("/proc/self/ns/net".to_string()));
    }
}
