//! Opening the service on etcd when etcd may not answer yet: the store is
//! tried, and while etcd cannot be reached tried again with a backoff
//! ([`FIRST_RETRY`] doubling to [`MAX_RETRY`]), each failed attempt logged.
//! [`Connecting`] tells the server's early answers (`/healthz`, the API's
//! `UNAVAILABLE`) how far it got.
//!
//! Invariants: only an unreachable etcd is waited for; etcd refusing this
//! server (its certificate, its password, its permissions, another layout
//! under the prefix) ends the wait with that error at once, since no retry
//! can mend it. Nothing of the model is served before the store is open and
//! the whole state loaded.

use super::{Options, Service};
use crate::store::{ConnectError, EtcdConfig};
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Pause after the first failed attempt.
pub const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Longest pause between attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(10);

/// How far a server waiting for etcd got: the attempts made and why the
/// last one failed.
#[derive(Debug)]
pub struct Connecting {
    endpoints: String,
    attempts: AtomicU64,
    /// The last failed attempt and why it failed.
    last_error: Mutex<Option<(u64, String)>>,
}

impl Connecting {
    /// Nothing tried yet on the etcd at `endpoints`.
    pub fn new(endpoints: &[String]) -> Arc<Connecting> {
        Arc::new(Connecting {
            endpoints: endpoints.join(","),
            attempts: AtomicU64::new(0),
            last_error: Mutex::new(None),
        })
    }

    /// Attempts made so far (the one under way included).
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Acquire)
    }

    /// Why the server does not serve yet, for `/healthz` and the API.
    pub fn status(&self) -> String {
        match &*self.last_error.lock() {
            None => format!("connecting to etcd at {} (first attempt)", self.endpoints),
            Some((n, e)) => format!("etcd not reached after {n} attempts (trying again): {e}"),
        }
    }
}

/// The pause after `attempts` failed attempts: [`FIRST_RETRY`], doubling,
/// at most [`MAX_RETRY`].
pub fn backoff(attempts: u64) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16) as u32;
    FIRST_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY)
}

impl Service {
    /// [`Service::open_etcd`], waiting for etcd: an unreachable etcd is
    /// tried again (see the module docs) until it answers; a refusal is
    /// returned at once.
    pub async fn open_etcd_waiting(
        cfg: EtcdConfig,
        opts: Options,
        connecting: &Connecting,
    ) -> anyhow::Result<Arc<Service>> {
        loop {
            let attempt = connecting.attempts.fetch_add(1, Ordering::AcqRel) + 1;
            match Self::try_open_etcd(cfg.clone(), opts.clone()).await {
                Ok(service) => {
                    if attempt > 1 {
                        tracing::info!(attempt, "etcd answered");
                    }
                    return Ok(service);
                }
                Err(ConnectError::Refused(e)) => return Err(e),
                Err(ConnectError::Unreachable(e)) => {
                    let pause = backoff(attempt);
                    tracing::warn!(
                        attempt,
                        retry_in_s = pause.as_secs_f64(),
                        error = %e,
                        "etcd cannot be reached; trying again (/healthz answers 503 meanwhile)"
                    );
                    *connecting.last_error.lock() = Some((attempt, e));
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_half_a_second_to_ten() {
        let pauses: Vec<f64> = (1..=8).map(|n| backoff(n).as_secs_f64()).collect();
        assert_eq!(pauses, vec![0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]);
        assert_eq!(backoff(u64::MAX), MAX_RETRY);
    }

    #[test]
    fn the_status_says_how_far_it_got() {
        let c = Connecting::new(&["http://127.0.0.1:1".into()]);
        assert_eq!(c.status(), "connecting to etcd at http://127.0.0.1:1 (first attempt)");
        *c.last_error.lock() = Some((3, "connection refused".into()));
        assert_eq!(c.status(), "etcd not reached after 3 attempts (trying again): connection refused");
    }

    /// Nothing listens at the address: the attempts go on (none ends the
    /// wait), each recorded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_etcd_is_waited_for() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("http://127.0.0.1:{port}");
        let c = Connecting::new(std::slice::from_ref(&url));
        let cfg = EtcdConfig { request_timeout: Duration::from_millis(200), ..EtcdConfig::new(vec![url], "h1") };
        let task = {
            let c = Arc::clone(&c);
            tokio::spawn(async move { Service::open_etcd_waiting(cfg, Options::new("h1"), &c).await.map(|_| ()) })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while c.attempts() < 3 {
            assert!(!task.is_finished(), "the wait ended: {:?}", task.await);
            assert!(std::time::Instant::now() < deadline, "only {} attempts within 60 s", c.attempts());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!task.is_finished(), "the wait ended: {:?}", task.await);
        assert!(c.status().starts_with("etcd not reached after "), "{}", c.status());
        task.abort();
    }
}
