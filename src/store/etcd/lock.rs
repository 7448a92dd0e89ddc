//! The commit lock: how a writer that keeps losing the commit race gets
//! its turn.
//!
//! A writer takes etcd's lock `lock/commit` (the Lock API, on a lease this
//! server keeps alive while it holds it). While any key exists under it
//! (the holder's or a waiter's), commits made without the lock fail their
//! compare and their writers, after a few lost races, queue for the lock
//! too; the holder's commit compares that its own key exists. So under
//! contention writers commit in the lock's order, large ones included.
//!
//! Invariants: a holder that dies frees the lock when its lease expires
//! ([`LOCK_TTL`]); the lock is released (and its lease revoked) once the
//! write is answered; waiting for it is bounded ([`Core::lock_commits`]).

use super::request::within_once;
use super::Core;
use crate::store::StoreError;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Seconds the lock outlives a holder that stopped renewing it.
pub const LOCK_TTL: i64 = 10;

/// The lock as held by this server.
pub(super) struct Held {
    key: Vec<u8>,
    lease: i64,
    keeper: JoinHandle<()>,
}

impl Core {
    /// The key of the lock, while this server holds it.
    pub(super) fn lock_key(&self) -> Option<Vec<u8>> {
        self.held.lock().as_ref().map(|h| h.key.clone())
    }

    /// Takes the commit lock, waiting at most `wait` for it.
    pub(super) async fn lock_commits(&self, wait: Duration) -> Result<(), StoreError> {
        if self.held.lock().is_some() {
            return Ok(());
        }
        let mut leases = self.client.lease_client();
        let grant = within_once(self.timeout, "granting the commit lock's lease", leases.grant(LOCK_TTL, None)).await?;
        let lease = grant.id();
        let keeper = tokio::spawn({
            let mut leases = leases.clone();
            async move {
                let Ok((mut keeper, mut stream)) = leases.keep_alive(lease).await else { return };
                loop {
                    tokio::time::sleep(Duration::from_secs((LOCK_TTL / 3).max(1) as u64)).await;
                    if keeper.keep_alive().await.is_err() || stream.message().await.is_err() {
                        return;
                    }
                }
            }
        });
        let name = self.keys.lock.clone();
        super::request::record(name.len() + 8, 1);
        let mut locks = self.client.lock_client();
        let opts = etcd_client::LockOptions::new().with_lease(lease);
        match within_once(wait, "waiting for the commit lock", locks.lock(name, Some(opts))).await {
            Ok(resp) => {
                *self.held.lock() = Some(Held { key: resp.key().to_vec(), lease, keeper });
                Ok(())
            }
            Err(e) => {
                keeper.abort();
                // The lease ends the wait's key with it.
                let _ = within_once(self.timeout, "revoking a lease", leases.revoke(lease)).await;
                Err(e)
            }
        }
    }

    /// Releases the commit lock if this server holds it.
    pub(super) async fn unlock_commits(&self) {
        let Some(held) = self.held.lock().take() else { return };
        held.keeper.abort();
        let mut leases = self.client.lease_client();
        // Revoking the lease deletes the lock's key: the next waiter's turn.
        if let Err(e) = within_once(self.timeout, "releasing the commit lock", leases.revoke(held.lease)).await {
            tracing::debug!(error = %e, "could not release the commit lock; it lapses with its lease");
        }
    }
}
