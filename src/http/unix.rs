//! The local socket (`serve --unix-socket PATH`): the same router as the
//! TCP listener, for agents on this host such as `leviathan-cni`, without
//! TLS or tokens. The peer is authenticated by the kernel (`SO_PEERCRED`):
//! root, the server's own user, or a member of the socket's group; anyone
//! else gets 403 `FORBIDDEN` on every route.
//!
//! Invariants: the socket file appears at PATH only once it has its mode
//! (0660; bound under a temporary name, then renamed into place), so there
//! is no moment where it is more open than that; a stale socket left by a
//! killed server is replaced, a live one (another server answers) is never
//! taken over; the file is removed when the server stops. Every request
//! carries the [`UnixCaller`] it came from, which the token check accepts
//! as an authenticated caller.

use crate::http::error::HttpError;
use crate::model::ErrorCode;
use crate::shutdown::Shutdown;
use axum::response::IntoResponse;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

/// Mode of the socket file: owner and group may connect.
pub const SOCKET_MODE: u32 = 0o660;

/// The peer of a request that came over the local socket, as the kernel
/// says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixCaller {
    pub uid: u32,
    pub gid: u32,
}

impl UnixCaller {
    /// The actor recorded for this caller's changes.
    pub fn actor(&self) -> String {
        format!("unix:uid={}", self.uid)
    }
}

/// What a request over the socket carries: the peer, and the admin
/// [`Caller`](crate::auth::Caller) `unix:uid=N` the token check takes as is
/// (the socket's mode and the peer check are its authentication).
fn mark_caller<B>(req: &mut axum::http::Request<B>, caller: &UnixCaller) {
    req.extensions_mut().insert(caller.clone());
    req.extensions_mut().insert(crate::auth::Caller::unix(caller.uid));
}

/// The bound socket; its file is removed when this is dropped.
pub struct UnixSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl UnixSocket {
    /// Binds `path` (its directory is created if missing): mode 0660,
    /// owned by the server's user (root when it runs as root).
    pub fn bind(path: &Path) -> anyhow::Result<UnixSocket> {
        let shown = path.display();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| anyhow::anyhow!("--unix-socket {shown}: give a file path"))?;
        if path.as_os_str().len() > 90 {
            anyhow::bail!("--unix-socket {shown}: a socket path must be at most 90 bytes");
        }
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("--unix-socket: creating {}: {e}", dir.display()))?;
        replace_stale(path)?;
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let listener = std::os::unix::net::UnixListener::bind(&tmp)
            .map_err(|e| anyhow::anyhow!("--unix-socket: binding {}: {e}", tmp.display()))?;
        let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(SOCKET_MODE))
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&tmp);
            anyhow::bail!("--unix-socket {shown}: {e}");
        }
        listener.set_nonblocking(true)?;
        let listener = UnixListener::from_std(listener)?;
        Ok(UnixSocket { path: path.to_path_buf(), listener })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A socket file already at `path`: removed when nobody answers on it (a
/// server that was killed), refused when a server does, or when it is not
/// a socket at all.
fn replace_stale(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else { return Ok(()) };
    if !meta.file_type().is_socket() {
        anyhow::bail!(
            "--unix-socket {}: the file exists and is not a socket; remove it or give another path",
            path.display()
        );
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        anyhow::bail!("--unix-socket {}: another server answers on it; stop it or give another path", path.display());
    }
    std::fs::remove_file(path)
        .map_err(|e| anyhow::anyhow!("--unix-socket {}: removing the stale socket: {e}", path.display()))
}

/// Whether the peer may use the socket: root, the server's own user, or a
/// member of the socket file's group (primary or supplementary).
fn allowed(caller: &UnixCaller, pid: Option<i32>, socket: &Path) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let own = unsafe { libc::geteuid() };
    if caller.uid == 0 || caller.uid == own {
        return true;
    }
    let Ok(group) = std::fs::metadata(socket).map(|m| m.gid()) else { return false };
    caller.gid == group || pid.is_some_and(|p| supplementary_groups(p).contains(&group))
}

/// The supplementary groups of a process (`Groups:` of its status).
fn supplementary_groups(pid: i32) -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return Vec::new() };
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|g| g.split_whitespace().filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default()
}

/// Serves `app` on the socket until `shutdown` is signalled (requests in
/// flight are then finished gracefully), at most `max_connections` at
/// once; the socket file is removed on return.
pub async fn run(
    socket: UnixSocket,
    app: Router,
    max_connections: usize,
    header_timeout: Duration,
    shutdown: Shutdown,
) {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = shutdown.signalled() => break,
        };
        let stream = tokio::select! {
            r = socket.listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept on the unix socket failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.signalled() => break,
        };
        let Ok(cred) = stream.peer_cred() else { continue };
        let caller = UnixCaller { uid: cred.uid(), gid: cred.gid() };
        let app = if allowed(&caller, cred.pid(), socket.path()) {
            app.clone()
        } else {
            tracing::warn!(uid = caller.uid, gid = caller.gid, "refused a peer on the unix socket");
            refusing_router(&caller)
        };
        tokio::spawn(serve_connection(stream, app, caller, header_timeout, shutdown.clone(), permit));
    }
    drop(socket);
}

/// The answer to every request of a peer that may not use the socket.
fn refusing_router(caller: &UnixCaller) -> Router {
    let message = format!(
        "uid {} may not use this socket: it is for root and the members of the socket file's group",
        caller.uid
    );
    Router::new().fallback(move |req: axum::extract::Request| {
        let message = message.clone();
        async move { HttpError::of(ErrorCode::Forbidden, message).for_path(req.uri().path()).into_response() }
    })
}

async fn serve_connection(
    stream: UnixStream,
    app: Router,
    caller: UnixCaller,
    header_timeout: Duration,
    shutdown: Shutdown,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let inner = TowerToHyperService::new(app);
    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        mark_caller(&mut req, &caller);
        hyper::service::Service::call(&inner, req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout).keep_alive(true);
    let served = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
    tokio::pin!(served);
    tokio::select! {
        _ = served.as_mut() => {}
        () = shutdown.signalled() => {
            served.as_mut().graceful_shutdown();
            let _ = served.await;
        }
    }
    drop(permit);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_names_the_uid() {
        assert_eq!(UnixCaller { uid: 1000, gid: 1000 }.actor(), "unix:uid=1000");
    }

    #[test]
    fn a_live_socket_is_not_taken_over_and_a_stale_one_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = replace_stale(&path).unwrap_err().to_string();
        assert!(err.contains("another server answers"), "{err}");
        drop(live);
        replace_stale(&path).unwrap();
        assert!(!path.exists());
        std::fs::write(&path, b"x").unwrap();
        let err = replace_stale(&path).unwrap_err().to_string();
        assert!(err.contains("not a socket"), "{err}");
    }

    #[tokio::test]
    async fn bound_with_its_mode_and_removed_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/l.sock");
        let s = UnixSocket::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, SOCKET_MODE);
        let names: Vec<_> =
            std::fs::read_dir(dir.path().join("sub")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("l.sock")], "no temporary name left behind");
        drop(s);
        assert!(!path.exists());
    }
}
