//! The shutdown signal shared by the HTTP server and the websocket loops:
//! neither layer owns it, so both depend on this module alone.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// The shutdown signal as the websocket loops see it, and a count of the
/// connections still open that shutdown waits for.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    rx: Option<watch::Receiver<bool>>,
    live: Arc<AtomicUsize>,
}

/// Held by an open websocket; shutdown waits until every one is dropped.
#[derive(Debug)]
pub struct Live(Arc<AtomicUsize>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Shutdown {
    /// A signal and the sender that fires it.
    pub fn new() -> (watch::Sender<bool>, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (tx, Shutdown { rx: Some(rx), live: Default::default() })
    }

    /// Resolves once shutdown has begun (never, for a server without one).
    pub async fn signalled(&self) {
        if let Some(rx) = &self.rx {
            let mut rx = rx.clone();
            if rx.wait_for(|v| *v).await.is_ok() {
                return;
            }
        }
        std::future::pending::<()>().await
    }

    /// The raw signal, for code that cannot name this type.
    pub fn receiver(&self) -> Option<watch::Receiver<bool>> {
        self.rx.clone()
    }

    /// Counts an open connection until the guard is dropped.
    pub fn track(&self) -> Live {
        self.live.fetch_add(1, Ordering::SeqCst);
        Live(Arc::clone(&self.live))
    }

    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }
}
