//! What `/healthz` asks of the service: whether the store answers (a read
//! of the change log, bounded by [`PROBE_TIMEOUT`]), at which revision.

use super::Service;
use std::time::Duration;

/// How long the store has to answer a probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The service's health, as `/healthz` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The revision of the last committed change.
    pub revision: u64,
    /// The kind of store (`sqlite`, `etcd`).
    pub store_kind: &'static str,
    /// Why the store did not answer; `None` when it did.
    pub store_error: Option<String>,
}

impl Probe {
    /// Whether the store answered.
    pub fn ok(&self) -> bool {
        self.store_error.is_none()
    }
}

impl Service {
    /// Asks the store for something (one change after the current
    /// revision) and says whether it answered within [`PROBE_TIMEOUT`].
    pub async fn probe(&self) -> Probe {
        let store = self.store();
        let revision = self.revision();
        let answer = tokio::time::timeout(PROBE_TIMEOUT, store.changes_after(revision, 1)).await;
        let store_error = match answer {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
        };
        Probe { revision, store_kind: store.kind(), store_error }
    }
}

#[cfg(test)]
mod tests {
    use crate::service::Service;

    #[tokio::test]
    async fn a_store_that_answers_is_healthy() {
        let dir = tempfile::tempdir().unwrap();
        let s = Service::open(&dir.path().join("s.db"), "h1").unwrap();
        let p = s.probe().await;
        assert!(p.ok(), "{p:?}");
        assert_eq!((p.revision, p.store_kind), (s.revision(), "sqlite"));
    }
}
