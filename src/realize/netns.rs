//! Named network namespaces and per-namespace netlink sockets.
//!
//! `setns`/`unshare` change the namespace of the calling *thread*, so they
//! never run on a tokio worker (which would then serve other tasks in the
//! wrong namespace). Every function here that switches namespace does so on
//! a short-lived `std::thread` of its own, which ends right after, or, on
//! the path of a join, on the one [`Entering`] thread, which returns to its
//! own namespace after each job; the netlink sockets opened there stay
//! bound to the namespace they were opened in and are handed back to async
//! code.
//!
//! Named namespaces are made like `ip netns add`: an empty file in
//! `/run/netns`, `unshare(CLONE_NEWNET)`, and a bind mount of the thread's
//! namespace onto the file. `/run/netns` is made a shared mount first (as
//! iproute2 does) so the bind mounts propagate to other mount namespaces.
//!
//! Every failure is a [`KernelError`]: the call, the object, the errno
//! (kept as [`Errno`]) and the words the message has always had.

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket};

use super::error::KernelError;

/// Where named namespaces live.
pub const NETNS_DIR: &str = "/run/netns";

/// How many threads create namespaces at once (the kernel work of a new
/// namespace partly runs in parallel).
pub const CREATE_THREADS: usize = 2;

/// What a namespace is opened as.
///
/// Only a fabric's `net.ipv4.ip_forward` matters, so only a fabric's is
/// read: looking a path up under `/proc/sys/net` walks a dentry chain as
/// long as the number of namespaces that ever looked at it (the sysctl
/// dentries of every namespace hash alike), which would make each new
/// container namespace cost more than the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A container's namespace (managed or bound): only its links matter.
    Container,
    /// The leviathan-owned fabric namespace: its forwarding is read, and
    /// IPv6 is switched off there (see [`quiet_ipv6`]).
    Fabric,
    /// The host's own namespace acting as the fabric: its forwarding is
    /// read; nothing else of the host's is changed.
    HostFabric,
}

/// A namespace opened for work: a handle on it (for IFLA_NET_NS_FD) and a
/// netlink socket bound inside it.
#[derive(Debug)]
pub struct Opened {
    pub fd: OwnedFd,
    pub socket: Socket,
    /// `net.ipv4.ip_forward` there, if readable.
    pub forwarding: Option<bool>,
}

pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// A refusal through `nix`, saying what was being done.
fn nix_err(op: &'static str, object: impl Into<String>, what: impl Into<String>, e: Errno) -> KernelError {
    KernelError::nix(op, object, e).context(what)
}

/// A refusal through `std::io`, saying what was being done.
fn io_err(op: &'static str, object: impl Into<String>, what: impl Into<String>, e: &io::Error) -> KernelError {
    KernelError::io(op, object, e).context(what)
}

/// A namespace thread that could not be started.
fn no_thread(e: &io::Error) -> KernelError {
    io_err("spawn", "", "cannot start a namespace thread", e)
}

static RUN_NETNS_READY: Mutex<bool> = Mutex::new(false);

/// Make `/run/netns` exist and be a shared mount point, like iproute2.
pub fn prepare_run_netns() -> Result<(), KernelError> {
    let mut ready = RUN_NETNS_READY.lock().unwrap_or_else(|p| p.into_inner());
    if *ready && Path::new(NETNS_DIR).is_dir() {
        return Ok(());
    }
    fs::create_dir_all(NETNS_DIR).map_err(|e| io_err("mkdir", NETNS_DIR, "cannot create /run/netns", &e))?;
    let shared = || mount(Some("none"), NETNS_DIR, Some("none"), MsFlags::MS_SHARED | MsFlags::MS_REC, None::<&str>);
    match shared() {
        Ok(()) => {}
        Err(Errno::EINVAL) => {
            // Not a mount point yet: bind it onto itself, then share it.
            mount(Some(NETNS_DIR), NETNS_DIR, Some("none"), MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
                .map_err(|e| nix_err("mount", NETNS_DIR, "cannot bind-mount /run/netns", e))?;
            shared().map_err(|e| nix_err("mount", NETNS_DIR, "cannot make /run/netns shared", e))?;
        }
        Err(e) => return Err(nix_err("mount", NETNS_DIR, "cannot make /run/netns shared", e)),
    }
    *ready = true;
    Ok(())
}

fn read_forwarding() -> Option<bool> {
    let mut s = String::new();
    fs::File::open("/proc/sys/net/ipv4/ip_forward").ok()?.read_to_string(&mut s).ok()?;
    Some(s.trim() == "1")
}

/// Switches IPv6 off in the calling thread's namespace (existing links and
/// those made later). Meant for the fabric: its bridges and host-side veth
/// ends only switch frames and carry IPv4 gateways, and with IPv6 on every
/// link there adds routes to the namespace's one IPv6 table, which the
/// kernel walks whole on each link going down or away, so that each veth
/// deleted or brought down would cost in proportion to all the others.
/// Frames between containers, IPv6 ones included, are bridged as before.
fn quiet_ipv6() -> Result<(), KernelError> {
    for which in ["default", "all"] {
        let path = format!("/proc/sys/net/ipv6/conf/{which}/disable_ipv6");
        match fs::OpenOptions::new().write(true).open(&path) {
            Ok(mut f) => f.write_all(b"1\n").map_err(|e| io_err("write", &path, format!("cannot write {path}"), &e))?,
            // A kernel without IPv6 has nothing to switch off.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("open", &path, format!("cannot open {path}"), &e)),
        }
    }
    Ok(())
}

fn open_here(fd: OwnedFd, role: Role) -> Result<Opened, KernelError> {
    if role == Role::Fabric {
        quiet_ipv6()?;
    }
    let socket = Socket::new(NETLINK_ROUTE).map_err(|e| io_err("socket", "", "cannot open a netlink socket", &e))?;
    request_buffer(&socket);
    let forwarding = match role {
        Role::Container => None,
        Role::Fabric | Role::HostFabric => read_forwarding(),
    };
    Ok(Opened { fd, socket, forwarding })
}

fn open_self_ns() -> Result<OwnedFd, KernelError> {
    let own = "/proc/thread-self/ns/net";
    fs::File::open(own).map(OwnedFd::from).map_err(|e| io_err("open", own, "cannot open own namespace", &e))
}

/// Create one named namespace on the calling (dedicated) thread, leaving the
/// thread inside it.
fn create_one(name: &str, role: Role) -> Result<Opened, KernelError> {
    let path = netns_path(name);
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(&path)
        .map_err(|e| io_err("create", name, format!("cannot create {}", path.display()), &e))?;
    let undo = |e: KernelError| {
        let _ = fs::remove_file(&path);
        e
    };
    unshare(CloneFlags::CLONE_NEWNET).map_err(|e| undo(nix_err("unshare", name, "unshare(CLONE_NEWNET)", e)))?;
    mount(Some("/proc/thread-self/ns/net"), &path, Some("none"), MsFlags::MS_BIND, None::<&str>)
        .map_err(|e| undo(nix_err("mount", name, format!("cannot bind-mount {}", path.display()), e)))?;
    let fd = open_self_ns()?;
    open_here(fd, role)
}

/// Create named namespaces on dedicated threads; one result per name, in
/// order.
pub fn add_named(names: Vec<(String, Role)>) -> Vec<Result<Opened, KernelError>> {
    if names.is_empty() {
        return Vec::new();
    }
    if let Err(e) = prepare_run_netns() {
        return names.iter().map(|_| Err(e.clone())).collect();
    }
    let threads = CREATE_THREADS.clamp(1, names.len());
    let chunk = names.len().div_ceil(threads);
    let mut handles = Vec::new();
    for part in names.chunks(chunk) {
        let part = part.to_vec();
        let n = part.len();
        let h = std::thread::Builder::new()
            .name("lev-netns-add".into())
            .spawn(move || part.iter().map(|(name, role)| create_one(name, *role)).collect::<Vec<_>>());
        handles.push((n, h));
    }
    let mut out = Vec::with_capacity(names.len());
    for (n, h) in handles {
        match h {
            Ok(h) => match h.join() {
                Ok(v) => out.extend(v),
                Err(_) => out.extend((0..n).map(|_| Err(KernelError::panicked()))),
            },
            Err(e) => out.extend((0..n).map(|_| Err(no_thread(&e)))),
        }
    }
    out
}

/// Open existing namespaces (named or by path) on one dedicated thread:
/// enter each, open a socket there. One result per path, in order.
pub fn open_paths(paths: Vec<(PathBuf, Role)>) -> Vec<Result<Opened, KernelError>> {
    open_paths_with(paths, false).into_iter().map(|r| r.map(|(o, _)| o)).collect()
}

/// [`open_paths`], and with `listen` also a notification listener in each
/// namespace opened (see [`open_listeners`]), from the same thread: one
/// thread for both.
pub fn open_paths_with(paths: Vec<(PathBuf, Role)>, listen: bool) -> Vec<Result<(Opened, Listener), KernelError>> {
    if paths.is_empty() {
        return Vec::new();
    }
    let n = paths.len();
    let h = std::thread::Builder::new().name("lev-netns-open".into()).spawn(move || open_paths_here(&paths, listen));
    match h {
        Ok(h) => h.join().unwrap_or_else(|_| (0..n).map(|_| Err(KernelError::panicked())).collect()),
        Err(e) => (0..n).map(|_| Err(no_thread(&e))).collect(),
    }
}

/// [`open_paths_with`] from the calling thread, which is left in the last
/// namespace entered: only for a dedicated thread that ends right after,
/// or an [`Entering`] thread, which returns to its own namespace.
pub fn open_paths_here(paths: &[(PathBuf, Role)], listen: bool) -> Vec<Result<(Opened, Listener), KernelError>> {
    paths
        .iter()
        .map(|(p, role)| {
            let fd: OwnedFd = fs::File::open(p)
                .map(OwnedFd::from)
                .map_err(|e| io_err("open", p.display().to_string(), format!("cannot open {}", p.display()), &e))?;
            setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
                nix_err("setns", p.display().to_string(), format!("{} is not a network namespace", p.display()), e)
            })?;
            let listener = listen.then(listener_here);
            Ok((open_here(fd, *role)?, listener))
        })
        .collect()
}

/// What an [`Entering`] thread runs: the work, which answers with how to
/// deliver its result once the thread is back in its own namespace.
type Job = Box<dyn FnOnce() -> Box<dyn FnOnce() + Send> + Send>;

/// A dedicated thread kept for namespace work on the path of a join
/// (opening a bound namespace with its listener): it enters namespaces for
/// one job at a time and returns to its own namespace after each, so such
/// work starts no thread. On a busy host a thread just started waits for
/// its first turn on a CPU behind the tasks already running (several ms
/// were measured), where a thread asleep in wait for work runs as soon as
/// it is woken.
///
/// Invariants: a job's result is delivered only once the thread is back in
/// its own namespace; a thread that cannot get back closes its queue first
/// (no later job reaches it), delivers, and ends, and the next job starts
/// another thread. The thread never is a tokio worker, and ends when its
/// `Entering` is dropped.
#[derive(Default)]
pub struct Entering {
    queue: Option<std::sync::mpsc::Sender<Job>>,
}

impl Entering {
    /// Runs `work` on the thread (started if none runs): its result
    /// arrives on the receiver, which fails if the thread ended without
    /// running it (a panic).
    pub fn run<T: Send + 'static>(
        &mut self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<tokio::sync::oneshot::Receiver<T>, KernelError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let out = work();
            Box::new(move || {
                let _ = tx.send(out);
            })
        });
        let job = match &self.queue {
            Some(q) => match q.send(job) {
                Ok(()) => return Ok(rx),
                // That thread ended: another one takes the job.
                Err(std::sync::mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let queue = start_entering().map_err(|e| no_thread(&e))?;
        // A thread that could not open its own namespace has ended already:
        // the job is dropped with the queue, and the receiver says so.
        let _ = queue.send(job);
        self.queue = Some(queue);
        Ok(rx)
    }
}

fn start_entering() -> io::Result<std::sync::mpsc::Sender<Job>> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    std::thread::Builder::new().name("lev-netns".into()).spawn(move || {
        let opened = open_self_ns().map_err(|e| tracing::warn!(error = %e, "a namespace thread has no way back"));
        let Ok(home) = opened else { return };
        while let Ok(job) = rx.recv() {
            let deliver = job();
            if let Err(e) = setns(home.as_fd(), CloneFlags::CLONE_NEWNET) {
                tracing::warn!(error = %e, "a namespace thread could not return to its own namespace; it ends");
                drop(rx);
                deliver();
                return;
            }
            deliver();
        }
    })?;
    Ok(tx)
}

/// A listener opened with a namespace, when asked for: the socket, or why
/// it could not be opened.
pub type Listener = Option<Result<Socket, KernelError>>;

/// A netlink socket in the calling thread's namespace, subscribed to link
/// and IPv4 address notifications.
fn listener_here() -> Result<Socket, KernelError> {
    use rtnetlink::constants::{RTMGRP_IPV4_IFADDR, RTMGRP_LINK};
    use rtnetlink::sys::SocketAddr;
    let mut s = Socket::new(NETLINK_ROUTE).map_err(|e| io_err("socket", "", "cannot open a netlink socket", &e))?;
    s.bind(&SocketAddr::new(0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR))
        .map_err(|e| io_err("bind", "", "cannot subscribe to link notifications", &e))?;
    // Room for the burst of a large teardown; an overflow is reported, not
    // fatal.
    receive_buffer(&s, LISTEN_BUFFER);
    Ok(s)
}

/// Receive buffer of a notification listener, in bytes.
const LISTEN_BUFFER: usize = 4 << 20;

/// Receive buffer of a namespace's request socket, in bytes. Its
/// rtnetlink connection sends every request queued for it before it reads
/// again, so the answers of up to `IN_FLIGHT` requests (each an
/// acknowledgement, and for a link made the link as the kernel made it)
/// can wait there at once. An answer that finds the buffer full is dropped
/// by the kernel, and its request would wait for it forever (bounded by
/// `nl::ANSWER_WITHIN`). The default (`net.core.rmem_default`, 208 KiB)
/// overflowed on a server running one worker thread (a one-CPU host's
/// default) while it made a CEN's VXLAN devices and veths across hosts.
pub(super) const REQUEST_BUFFER: usize = 4 << 20;

/// Gives a socket that requests are sent on room for the answers of a
/// phase (see [`REQUEST_BUFFER`]).
pub fn request_buffer(s: &Socket) {
    receive_buffer(s, REQUEST_BUFFER);
}

/// Sets a netlink socket's receive buffer to `bytes`: past
/// `net.core.rmem_max` with SO_RCVBUFFORCE (CAP_NET_ADMIN, which realizing
/// needs anyway), within it where that is refused. It is a limit, not an
/// allocation: memory is taken only by what waits to be read.
fn receive_buffer(s: &Socket, bytes: usize) {
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: SO_RCVBUFFORCE on a socket we own, with an int that lives
    // through the call and its size.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            std::ptr::addr_of!(size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        let _ = s.set_rx_buf_sz(bytes);
    }
}

/// Opens, inside each namespace, a netlink socket subscribed to link and
/// IPv4 address notifications (on one dedicated thread, entering each
/// namespace in turn). One result per namespace, in order.
pub fn open_listeners(fds: Vec<OwnedFd>) -> Vec<Result<Socket, KernelError>> {
    if fds.is_empty() {
        return Vec::new();
    }
    let n = fds.len();
    let h = std::thread::Builder::new().name("lev-netns-listen".into()).spawn(move || {
        fds.iter()
            .map(|fd| {
                setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| nix_err("setns", "", "setns", e))?;
                listener_here()
            })
            .collect::<Vec<_>>()
    });
    match h {
        Ok(h) => h.join().unwrap_or_else(|_| (0..n).map(|_| Err(KernelError::panicked())).collect()),
        Err(e) => (0..n).map(|_| Err(no_thread(&e))).collect(),
    }
}

/// Unmount and remove a named namespace. Missing is success. The kernel
/// destroys the namespace (and its links) once nothing holds it.
pub fn del_named(name: &str) -> Result<(), KernelError> {
    let path = netns_path(name);
    match umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(nix_err("umount", name, format!("cannot unmount {}", path.display()), e)),
    }
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("unlink", name, format!("cannot remove {}", path.display()), &e)),
    }
}

/// Delete many named namespaces, spread over a few threads.
pub fn del_named_many(names: Vec<String>) -> Vec<Result<(), KernelError>> {
    if names.is_empty() {
        return Vec::new();
    }
    let threads = CREATE_THREADS.clamp(1, names.len());
    let chunk = names.len().div_ceil(threads);
    let mut out = Vec::with_capacity(names.len());
    let mut handles = Vec::new();
    for part in names.chunks(chunk) {
        let part = part.to_vec();
        let n = part.len();
        handles.push((
            n,
            std::thread::Builder::new()
                .name("lev-netns-del".into())
                .spawn(move || part.iter().map(|n| del_named(n)).collect::<Vec<_>>()),
        ));
    }
    for (n, h) in handles {
        match h {
            Ok(h) => out.extend(h.join().unwrap_or_else(|_| (0..n).map(|_| Err(KernelError::panicked())).collect())),
            Err(e) => out.extend((0..n).map(|_| Err(no_thread(&e)))),
        }
    }
    out
}

/// Names of namespace files in /run/netns.
pub type Names = Vec<String>;

/// Names in /run/netns that start with `prefix`.
pub fn list_named(prefix: &str) -> Result<Names, KernelError> {
    let rd = match fs::read_dir(NETNS_DIR) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("readdir", NETNS_DIR, "cannot list /run/netns", &e)),
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        if let Some(n) = e.file_name().to_str() {
            if n.starts_with(prefix) {
                out.push(n.to_string());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Set `net.ipv4.ip_forward` inside the namespace `fd` (on its own thread:
/// /proc/sys/net follows the calling thread's namespace).
pub fn set_forwarding_in(fd: &OwnedFd, on: bool) -> Result<(), KernelError> {
    let dup = fd.try_clone().map_err(|e| io_err("dup", "", "dup", &e))?;
    let h = std::thread::Builder::new().name("lev-netns-sysctl".into()).spawn(move || -> Result<(), KernelError> {
        setns(dup.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| nix_err("setns", "", "setns", e))?;
        let file = "/proc/sys/net/ipv4/ip_forward";
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(file)
            .map_err(|e| io_err("open", file, "cannot open ip_forward", &e))?;
        f.write_all(if on { b"1\n" } else { b"0\n" }).map_err(|e| io_err("write", file, "cannot write ip_forward", &e))
    });
    match h {
        Ok(h) => h.join().unwrap_or_else(|_| Err(KernelError::panicked())),
        Err(e) => Err(no_thread(&e)),
    }
}

/// The raw fd of an open namespace handle.
pub fn raw(fd: &OwnedFd) -> RawFd {
    fd.as_raw_fd()
}

/// A link deletion done by [`del_links`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    /// The link with this ifindex.
    Link(u32),
    /// Every link of this group, in one request.
    Group(u32),
}

/// Deletes links in the namespace `fd`, on a thread of its own (entered
/// there, with a netlink socket of its own), one request at a time; one
/// result per deletion, in order. A link already gone is success.
///
/// The kernel does a deletion inside the `sendto` of its request, and only
/// answers after its RCU grace periods (one unregister is ~20 ms here), so
/// a deletion sent on a tokio worker stalls that worker for as long. Sent
/// from here, the workers go on; the caller may also learn sooner that the
/// link is gone from a listener in that namespace (the kernel announces
/// the deletion before those waits).
pub fn del_links(fd: OwnedFd, what: Vec<Deletion>) -> Vec<Result<(), KernelError>> {
    let n = what.len();
    let h = std::thread::Builder::new().name("lev-netns-del".into()).spawn(move || {
        let sock =
            setns(fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| nix_err("setns", "", "setns", e)).and_then(|()| {
                Socket::new(NETLINK_ROUTE).map_err(|e| io_err("socket", "", "cannot open a netlink socket", &e))
            });
        match sock {
            Ok(s) => what.iter().enumerate().map(|(seq, d)| del_one(&s, seq as u32 + 1, *d)).collect(),
            Err(e) => what.iter().map(|_| Err(e.clone())).collect::<Vec<_>>(),
        }
    });
    match h {
        Ok(h) => h.join().unwrap_or_else(|_| (0..n).map(|_| Err(KernelError::panicked())).collect()),
        Err(e) => (0..n).map(|_| Err(no_thread(&e))).collect(),
    }
}

/// One RTM_DELLINK with an acknowledgement, on a blocking socket.
fn del_one(s: &Socket, seq: u32, d: Deletion) -> Result<(), KernelError> {
    use rtnetlink::packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST};
    use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
    use rtnetlink::packet_route::RouteNetlinkMessage;
    use rtnetlink::sys::SocketAddr;
    let what = match d {
        Deletion::Link(i) => format!("deleting link {i}"),
        Deletion::Group(g) => format!("deleting link group {g}"),
    };
    let mut link = LinkMessage::default();
    match d {
        Deletion::Link(i) => link.header.index = i,
        Deletion::Group(g) => link.attributes.push(LinkAttribute::Group(g)),
    }
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    header.sequence_number = seq;
    let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)));
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    let op = match d {
        Deletion::Link(_) => "del_link",
        Deletion::Group(_) => "del_group",
    };
    s.send_to(&buf, &SocketAddr::new(0, 0), 0).map_err(|e| io_err(op, &what, &what, &e))?;
    loop {
        let (data, _) = s.recv_from_full().map_err(|e| io_err(op, &what, &what, &e))?;
        let mut off = 0;
        while off < data.len() {
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..])
                .map_err(|e| KernelError::other(op, &what, e).context(&what))?;
            let len = reply.header.length as usize;
            if reply.header.sequence_number == seq {
                if let NetlinkPayload::Error(e) = reply.payload {
                    // A link already gone (ENODEV) is success.
                    let e = KernelError::netlink(op, &what, &rtnetlink::Error::NetlinkError(e)).context(&what);
                    return match e.errno {
                        None | Some(Errno::ENODEV) => Ok(()),
                        Some(_) => Err(e),
                    };
                }
            }
            if len == 0 {
                break;
            }
            off += (len + 3) & !3;
        }
    }
}
