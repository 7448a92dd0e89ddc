//! The accept loop: HTTP/1.1 connections with a header-read timeout that
//! also ends idle keep-alive connections, a cap on open connections (no
//! more are accepted until one closes, so a flood of idle sockets cannot
//! exhaust file descriptors), upgrades for the websockets, and graceful
//! shutdown: on the signal, stop accepting, let requests in flight finish
//! within the grace period, tell websockets to close (1001), then return.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// Connection limits and timers (`serve` options).
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Most HTTP connections open at once (websockets have their own caps).
    pub max_connections: usize,
    /// Time a client has to send a request's headers; also how long an
    /// idle keep-alive connection stays open.
    pub header_timeout: Duration,
    /// Time requests in flight get to finish after SIGTERM/SIGINT.
    pub grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions { max_connections: 2048, header_timeout: Duration::from_secs(30), grace: Duration::from_secs(10) }
    }
}

pub use crate::shutdown::{Live, Shutdown};

/// Serves `app` on `listener` until `signal` resolves, then shuts down
/// gracefully through `trigger` (whose [`Shutdown`] the websockets watch).
pub async fn run(
    listener: TcpListener,
    app: Router,
    opts: ServeOptions,
    trigger: watch::Sender<bool>,
    shutdown: Shutdown,
    signal: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(opts.max_connections.max(1)));
    tokio::pin!(signal);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = &mut signal => break,
        };
        let (stream, _peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors or a transient error: wait a
                    // little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut signal => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let header_timeout = opts.header_timeout;
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(header_timeout).keep_alive(true);
            let conn = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = shutdown.signalled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections; waiting for requests in flight");
    let _ = trigger.send(true);
    let max = opts.max_connections.max(1);
    let drained = tokio::time::timeout(opts.grace, async {
        while slots.available_permits() < max || shutdown.live() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            grace_ms = opts.grace.as_millis() as u64,
            "requests still running at the end of the grace period are dropped"
        );
    }
}
