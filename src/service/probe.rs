//! What `/healthz` asks of the service: whether the store answers, at which
//! revision. With a store only this server writes (SQLite) the store is
//! asked then (a read of the change log, bounded by [`PROBE_TIMEOUT`]).
//! With a shared store (etcd) a background task asks it every
//! [`PROBE_EVERY`] and `/healthz` answers at once from the last known
//! state ([`StoreHealth`]), which the commit path keeps current too: a
//! commit that found the store down marks it down at once, so the writes
//! queued behind it fail fast (see `commit`).

use super::Service;
use parking_lot::Mutex;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How long the store has to answer a probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Probes made in a row before a shared store counts as down.
const PROBE_TRIES: usize = 3;
/// How often the background probe asks a shared store.
pub const PROBE_EVERY: Duration = Duration::from_millis(500);

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

/// The last known state of a shared store.
#[derive(Debug)]
pub struct StoreHealth {
    /// Why the store is down, while it is.
    down: Mutex<Option<String>>,
    /// When the store last took a request.
    progress: Mutex<Instant>,
    /// Whether a background probe keeps this current.
    probed: bool,
}

impl StoreHealth {
    pub fn new(probed: bool) -> StoreHealth {
        StoreHealth { down: Mutex::new(None), progress: Mutex::new(Instant::now()), probed }
    }

    /// The store answered.
    pub fn progress(&self) {
        *self.progress.lock() = Instant::now();
        if let Some(was) = self.down.lock().take() {
            tracing::info!(was = %was, "the shared store answers again");
        }
    }

    /// The store did not answer, for `why`.
    pub fn mark_down(&self, why: &str) {
        let mut d = self.down.lock();
        if d.is_none() {
            tracing::warn!(error = %why, "the shared store is down");
        }
        *d = Some(why.to_string());
    }

    /// Why the store is down, if it is (as last known).
    pub fn down(&self) -> Option<String> {
        self.down.lock().clone()
    }

    /// How long since the store last took a request.
    pub fn stalled_for(&self) -> Duration {
        self.progress.lock().elapsed()
    }
}

/// Asks the store every [`PROBE_EVERY`] while the service lives, each
/// answer bounded by `timeout`.
pub(super) async fn keep_probing(service: Weak<Service>, health: Arc<StoreHealth>, timeout: Duration) {
    loop {
        let Some(s) = service.upgrade() else { return };
        let store = Arc::clone(s.store());
        let revision = s.revision();
        drop(s);
        // A failed probe is made again at once (another member of the
        // cluster may answer) while the time allows.
        let deadline = tokio::time::Instant::now() + timeout;
        let mut failure = None;
        for _ in 0..PROBE_TRIES {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            failure = match tokio::time::timeout(left, store.changes_after(revision, 1)).await {
                Ok(Ok(_)) | Ok(Err(crate::store::StoreError::Gone(_))) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("no answer within {} s", timeout.as_secs_f64())),
            };
            if failure.is_none() || tokio::time::Instant::now() >= deadline {
                break;
            }
        }
        match failure {
            None => health.progress(),
            Some(why) => health.mark_down(&why),
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// The store's own `/metrics` gauges (the largest etcd request sent).
pub fn write_store_metrics(out: &mut String) {
    crate::store::etcd::request::write_metrics(out);
}

impl Service {
    /// The store's health: asked now and bounded by [`PROBE_TIMEOUT`], or
    /// for a shared store the last known state (answers at once).
    pub async fn probe(&self) -> Probe {
        let store = self.store();
        let revision = self.revision();
        if self.health.probed {
            return Probe { revision, store_kind: store.kind(), store_error: self.health.down() };
        }
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
    use super::StoreHealth;
    use crate::service::Service;

    #[tokio::test]
    async fn a_store_that_answers_is_healthy() {
        let dir = tempfile::tempdir().unwrap();
        let s = Service::open(&dir.path().join("s.db"), "h1").unwrap();
        let p = s.probe().await;
        assert!(p.ok(), "{p:?}");
        assert_eq!((p.revision, p.store_kind), (s.revision(), "sqlite"));
    }

    #[test]
    fn the_last_known_state_follows_what_the_store_did() {
        let h = StoreHealth::new(true);
        assert_eq!(h.down(), None);
        h.mark_down("no answer within 2 s");
        assert_eq!(h.down().as_deref(), Some("no answer within 2 s"));
        h.progress();
        assert_eq!(h.down(), None);
        assert!(h.stalled_for() < std::time::Duration::from_secs(60));
    }
}
