//! The accept loop: HTTP/1.1 connections with a header-read timeout that
//! also ends idle keep-alive connections, a cap on open connections,
//! upgrades for the websockets, and graceful shutdown: on the signal, stop
//! accepting, let requests in flight finish within the grace period, tell
//! websockets to close (1001), then return.
//!
//! At the cap, a new client is still answered: the idlest connection is
//! shed to make room for it - first one that has sent nothing at all (the
//! oldest), else an idle keep-alive between requests (the longest idle).
//! A connection with a request in flight is never shed (a slow body is
//! ended by the body timeout instead); when every connection is busy, the
//! new client waits until one closes (so a flood cannot exhaust file
//! descriptors). A connection upgraded to a websocket leaves this count
//! for the websockets' own caps.

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};

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
    /// HTTPS: the certificate in use (re-read on SIGHUP); `None`: plain HTTP.
    pub tls: Option<Arc<crate::http::tls::Tls>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_connections: 2048,
            header_timeout: Duration::from_secs(30),
            grace: Duration::from_secs(10),
            tls: None,
        }
    }
}

pub use crate::shutdown::{Live, Shutdown};

/// Connections the kernel queues for the accept loop (it caps this at
/// `net.core.somaxconn`, 4096 by default): room for a burst of clients
/// while the loop sheds, where the usual 1024 would drop their SYNs.
pub const BACKLOG: u32 = 4096;

/// A listening socket on `addr` with a backlog of [`BACKLOG`].
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

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
    let conns = Registry::default();
    tokio::pin!(signal);
    loop {
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
        if slots.available_permits() == 0 && conns.shed_idlest() {
            tracing::debug!("at --max-connections: shed the idlest connection for a new client");
        }
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = &mut signal => break,
        };
        let _ = stream.set_nodelay(true);
        let conn = conns.add(std::os::fd::AsRawFd::as_raw_fd(&stream));
        match &opts.tls {
            None => {
                tokio::spawn(serve_connection(
                    stream,
                    app.clone(),
                    opts.header_timeout,
                    shutdown.clone(),
                    conn,
                    permit,
                ));
            }
            Some(tls) => {
                let acceptor = tls.acceptor();
                let (app, timeout, shutdown) = (app.clone(), opts.header_timeout, shutdown.clone());
                tokio::spawn(serve_tls_connection(stream, acceptor, app, timeout, shutdown, conn, permit));
            }
        }
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

/// Serves one connection until it ends, the server shuts down (graceful)
/// or it is shed (dropped at once: it has no request in flight).
async fn serve_connection(
    stream: TcpStream,
    app: Router,
    header_timeout: Duration,
    shutdown: Shutdown,
    conn: Arc<Conn>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let inner = TowerToHyperService::new(app);
    let busy_of = Arc::clone(&conn);
    let service = hyper::service::service_fn(move |req| {
        let busy = Busy::enter(&busy_of);
        let fut = hyper::service::Service::call(&inner, req);
        async move {
            let r = fut.await;
            drop(busy);
            r
        }
    });
    let io = Watched { inner: stream, conn: Arc::clone(&conn) };
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout).keep_alive(true);
    let served = builder.serve_connection(TokioIo::new(io), service).with_upgrades();
    tokio::pin!(served);
    tokio::select! {
        _ = served.as_mut() => {}
        () = conn.shed.notified() => {}
        () = shutdown.signalled() => {
            served.as_mut().graceful_shutdown();
            let _ = served.await;
        }
    }
    conn.registry_remove();
    drop(permit);
}

/// What a plain-HTTP client sent to the TLS port is told.
const PLAIN_TO_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: 62\r\n\r\nthis server speaks HTTPS only: use https:// for this address\r\n";

/// Serves one TLS connection: the handshake (bounded by `header_timeout`,
/// shed like an idle connection), then HTTP/2 or HTTP/1.1 by ALPN.
async fn serve_tls_connection(
    stream: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    header_timeout: Duration,
    shutdown: Shutdown,
    conn: Arc<Conn>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let handshake = async {
        let mut first = [0u8; 1];
        // A TLS handshake record starts with 0x16; a letter is plain HTTP.
        if matches!(stream.peek(&mut first).await, Ok(1) if first[0].is_ascii_alphabetic()) {
            let mut stream = stream;
            let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, PLAIN_TO_TLS).await;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
            return None;
        }
        let io = Watched { inner: stream, conn: Arc::clone(&conn) };
        match acceptor.accept(io).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
        }
    };
    let tls = tokio::select! {
        r = tokio::time::timeout(header_timeout, handshake) => r.ok().flatten(),
        () = conn.shed.notified() => None,
        () = shutdown.signalled() => None,
    };
    if let Some(tls) = tls {
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        serve_http(tls, h2, app, header_timeout, &shutdown, &conn).await;
    }
    conn.registry_remove();
    drop(permit);
}

/// HTTP/2 or HTTP/1.1 over an established TLS stream, until it ends.
async fn serve_http<I>(io: I, h2: bool, app: Router, header_timeout: Duration, shutdown: &Shutdown, conn: &Arc<Conn>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let inner = TowerToHyperService::new(app);
    let busy_of = Arc::clone(conn);
    let service = hyper::service::service_fn(move |req| {
        let busy = Busy::enter(&busy_of);
        let fut = hyper::service::Service::call(&inner, req);
        async move {
            let r = fut.await;
            drop(busy);
            r
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout).keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(header_timeout))
        .keep_alive_timeout(header_timeout);
    let builder = if h2 { builder.http2_only() } else { builder.http1_only() };
    let served = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(served);
    let tick = (header_timeout / 4).max(Duration::from_millis(50));
    let mut idle_check = tokio::time::interval(tick);
    loop {
        tokio::select! {
            _ = served.as_mut() => return,
            () = conn.shed.notified() => return,
            () = shutdown.signalled() => break,
            _ = idle_check.tick(), if h2 => {
                if conn.busy.load(Ordering::SeqCst) == 0 && conn.idle_for() > header_timeout {
                    break;
                }
            }
        }
    }
    served.as_mut().graceful_shutdown();
    let _ = served.await;
}

/// The open connections and how idle each is.
#[derive(Default, Clone)]
struct Registry {
    inner: Arc<parking_lot::Mutex<RegistryInner>>,
}

#[derive(Default)]
struct RegistryInner {
    next: u64,
    open: HashMap<u64, Arc<Conn>>,
}

/// One open connection, as the shedding policy sees it.
struct Conn {
    id: u64,
    registry: std::sync::Weak<parking_lot::Mutex<RegistryInner>>,
    /// The socket (for a peek at unread bytes while in the registry).
    fd: std::os::fd::RawFd,
    accepted: Instant,
    /// Whether the client sent a byte yet.
    spoke: AtomicBool,
    /// Milliseconds after `accepted` of the last byte received or the end
    /// of the last request.
    last_active_ms: AtomicU64,
    /// Requests in flight.
    busy: AtomicUsize,
    shed: Notify,
}

impl Conn {
    fn touch(&self) {
        let ms = u64::try_from(self.accepted.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }
    /// Time since the client last sent something or a request ended.
    fn idle_for(&self) -> Duration {
        self.accepted.elapsed().saturating_sub(Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed)))
    }
    fn registry_remove(&self) {
        if let Some(r) = self.registry.upgrade() {
            r.lock().open.remove(&self.id);
        }
    }
}

impl Registry {
    fn add(&self, fd: std::os::fd::RawFd) -> Arc<Conn> {
        let mut r = self.inner.lock();
        r.next += 1;
        let conn = Arc::new(Conn {
            id: r.next,
            registry: Arc::downgrade(&self.inner),
            fd,
            accepted: Instant::now(),
            spoke: AtomicBool::new(false),
            last_active_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            shed: Notify::new(),
        });
        r.open.insert(conn.id, Arc::clone(&conn));
        conn
    }

    /// Closes the idlest connection that has no request in flight: one
    /// that never sent a byte (the oldest), else the longest idle
    /// keep-alive. `false` when every connection is busy.
    ///
    /// A client arriving at the cap pays one pass over the open
    /// connections keeping the few idlest (no sort of them all, no
    /// allocation that grows with them); only when each of those few turns
    /// out to have bytes waiting are all of them ordered.
    fn shed_idlest(&self) -> bool {
        let mut r = self.inner.lock();
        let idle = r.open.values().filter(|c| c.busy.load(Ordering::SeqCst) == 0);
        let mut few: Vec<((bool, Instant), u64, std::os::fd::RawFd)> = Vec::with_capacity(FEW + 1);
        for c in idle.clone() {
            let key = idleness(c);
            if few.len() == FEW && few.last().is_some_and(|l| key >= l.0) {
                continue;
            }
            let at = few.partition_point(|x| x.0 <= key);
            few.insert(at, (key, c.id, c.fd));
            few.truncate(FEW);
        }
        // A connection whose first bytes wait unread (its task has not run
        // yet) has spoken: skip it.
        let speaks = |spoke: bool, fd| spoke || !has_unread_bytes(fd);
        let mut victim = few.iter().find(|((spoke, _), _, fd)| speaks(*spoke, *fd)).map(|x| x.1);
        if victim.is_none() && few.len() == FEW {
            let mut all: Vec<_> = idle.map(|c| (idleness(c), c.id, c.fd)).collect();
            all.sort_unstable_by_key(|x| x.0);
            victim = all.iter().find(|((spoke, _), _, fd)| speaks(*spoke, *fd)).map(|x| x.1);
        }
        let Some(conn) = victim.and_then(|id| r.open.remove(&id)) else {
            return false;
        };
        // `notify_one` keeps the wake-up if the task is not waiting yet.
        conn.shed.notify_one();
        true
    }
}

/// How many of the idlest connections [`Registry::shed_idlest`] keeps in
/// its one pass.
const FEW: usize = 8;

/// The order connections are shed in: those that never sent a byte first,
/// the oldest of them first; then the longest idle.
fn idleness(c: &Conn) -> (bool, Instant) {
    let spoke = c.spoke.load(Ordering::Relaxed);
    let since = c.accepted + Duration::from_millis(c.last_active_ms.load(Ordering::Relaxed));
    (spoke, if spoke { since } else { c.accepted })
}

/// Whether bytes (or the peer's close) wait unread on a socket.
fn has_unread_bytes(fd: std::os::fd::RawFd) -> bool {
    let mut byte = 0u8;
    // SAFETY: the buffer is one valid byte, and a peek takes nothing from
    // the socket. The socket stays open while its connection is in the
    // registry (it is removed, under the registry's lock, before the
    // socket is dropped); were it closed, recv fails with EBADF.
    let n = unsafe { libc::recv(fd, (&raw mut byte).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
    n >= 0
}

/// A request in flight on a connection: it cannot be shed meanwhile.
struct Busy(Arc<Conn>);

impl Busy {
    fn enter(conn: &Arc<Conn>) -> Busy {
        conn.busy.fetch_add(1, Ordering::SeqCst);
        Busy(Arc::clone(conn))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The socket, noting when the client last sent something.
struct Watched {
    inner: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.spoke.store(true, Ordering::Relaxed);
            self.conn.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
