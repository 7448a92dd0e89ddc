//! Noticing at once what happens outside leviathan: a bound workload whose
//! process exits (a pidfd per bound `/proc/<pid>/ns/net`, readable when the
//! process ends), and our interfaces or addresses deleted by hand (a
//! netlink socket subscribed to link and IPv4 address notifications in the
//! fabric, the host namespace in host mode, and each bound namespace).
//!
//! Managed container namespaces get no listener: with 10,000 of them that
//! would be 10,000 sockets. A bridged member's interface there has its
//! peer in the fabric, so deleting it is seen there (a veth dies as a
//! pair); the rest (an address removed inside a managed namespace, a wire
//! between two managed namespaces) is repaired by the periodic reconcile.
//!
//! The watches run as small tokio tasks (no setns anywhere: a pidfd is a
//! plain fd polled by the runtime) and send [`Event`]s on a channel the
//! driver listens to; the driver then applies just the CENs concerned.

use std::collections::HashMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc::UnboundedSender;

use super::observed::NsId;

/// Something seen in the kernel that the driver should act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The process of a bound namespace exited.
    Gone(NsId),
    /// One of our links went (deleted by hand, or by us).
    LinkGone { ns: NsId, index: u32 },
    /// An IPv4 address went from a link.
    AddrGone { ns: NsId, index: u32, ip: std::net::Ipv4Addr, prefix_len: u8 },
    /// Notifications were lost (the socket's buffer overflowed): what we
    /// know of the namespace may be stale.
    Overrun(NsId),
}

/// Link deletions someone waits to see announced: (namespace, ifindex) ->
/// the waiters. The kernel announces a deletion (RTM_DELLINK) once the link
/// is out of the namespace and off its bridge, before the RCU grace periods
/// that the request itself still waits for.
#[derive(Clone, Default)]
pub struct Departures(Arc<parking_lot::Mutex<HashMap<(NsId, u32), Waiters>>>);

/// Who waits for one link's deletion to be announced.
type Waiters = Vec<tokio::sync::oneshot::Sender<()>>;

impl Departures {
    /// Resolves once the deletion of `index` in `ns` is announced (register
    /// before asking for the deletion).
    pub fn expect(&self, ns: &NsId, index: u32) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.0.lock().entry((ns.clone(), index)).or_default().push(tx);
        rx
    }

    /// Stops waiting for `index` in `ns` (the deletion ended otherwise).
    pub fn forget(&self, ns: &NsId, index: u32) {
        self.0.lock().remove(&(ns.clone(), index));
    }

    fn announce(&self, ns: &NsId, index: u32) {
        let waiting = self.0.lock().remove(&(ns.clone(), index));
        for tx in waiting.into_iter().flatten() {
            let _ = tx.send(());
        }
    }
}

/// Listens to a namespace's link and address notifications (a socket opened
/// there by [`super::netns::open_listeners`]) and sends the deletions of
/// our links and of addresses as [`Event`]s; the deletions awaited in
/// `departures` are told at once.
pub fn listen(
    ns: NsId,
    socket: rtnetlink::sys::Socket,
    prefix: String,
    tx: UnboundedSender<Event>,
    departures: Departures,
) -> Watch {
    use futures_util::StreamExt;
    use rtnetlink::packet_core::NetlinkPayload;
    use rtnetlink::packet_route::address::AddressAttribute;
    use rtnetlink::packet_route::link::LinkAttribute;
    use rtnetlink::packet_route::RouteNetlinkMessage;
    use std::os::fd::IntoRawFd;
    // SAFETY: the fd comes from a netlink socket we own and hand over.
    let sock = unsafe { rtnetlink::sys::TokioSocket::from_raw_fd(socket.into_raw_fd()) };
    let (conn, _handle, mut messages) = rtnetlink::from_socket(sock);
    Watch(tokio::spawn(async move {
        let conn = tokio::spawn(conn);
        let _stop = Watch(conn);
        while let Some((msg, _)) = messages.next().await {
            let event = match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)) => {
                    // (A port leaving its bridge is announced as a DelLink
                    // of the bridge family: the link itself is still there.)
                    if m.header.interface_family != rtnetlink::packet_route::AddressFamily::Bridge {
                        departures.announce(&ns, m.header.index);
                    }
                    let group = m.attributes.iter().find_map(|a| match a {
                        LinkAttribute::Group(g) => Some(*g),
                        _ => None,
                    });
                    match group {
                        Some(g) if g != 0 && super::naming::is_our_group(&prefix, g) => {
                            Some(Event::LinkGone { ns: ns.clone(), index: m.header.index })
                        }
                        _ => None,
                    }
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelAddress(m)) => {
                    let ip = m.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Local(std::net::IpAddr::V4(v)) => Some(*v),
                        _ => None,
                    });
                    ip.map(|ip| Event::AddrGone {
                        ns: ns.clone(),
                        index: m.header.index,
                        ip,
                        prefix_len: m.header.prefix_len,
                    })
                }
                NetlinkPayload::Overrun(_) => {
                    tracing::warn!("link notifications of {ns} were lost; it will be looked at again");
                    Some(Event::Overrun(ns.clone()))
                }
                _ => None,
            };
            if let Some(e) = event {
                if tx.send(e).is_err() {
                    break;
                }
            }
        }
        tracing::debug!("stopped listening in {ns}");
    }))
}

/// Aborts its task when dropped.
pub struct Watch(tokio::task::JoinHandle<()>);

impl Watch {
    /// Whether the watch still listens (its task has not ended).
    pub fn running(&self) -> bool {
        !self.0.is_finished()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The pid in a `/proc/<pid>/ns/net` path.
pub fn pid_of(path: &str) -> Option<i32> {
    let rest = path.strip_prefix("/proc/")?.strip_suffix("/ns/net")?;
    rest.parse::<i32>().ok().filter(|p| *p > 0 && rest.bytes().all(|b| b.is_ascii_digit()))
}

fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: a plain syscall; on success it returns a new fd we own.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Watches the process of a bound namespace, when its path names one:
/// sends [`Event::Gone`] once it exits. `None` where there is no pid to
/// watch or pidfds are not supported (the reconcile still notices).
pub fn watch_pid(ns: &NsId, tx: UnboundedSender<Event>) -> Option<Watch> {
    let NsId::Path(p) = ns else { return None };
    let pid = pid_of(p)?;
    let fd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error().map(nix::errno::Errno::from_raw) == Some(nix::errno::Errno::ESRCH) => {
            // Already gone: say so now.
            let _ = tx.send(Event::Gone(ns.clone()));
            return None;
        }
        Err(e) => {
            tracing::debug!("no pidfd for pid {pid}: {e}; the reconcile will notice its exit");
            return None;
        }
    };
    // SAFETY: the OwnedFd is moved in and stays open, unchanged, for the
    // AsyncFd's whole life.
    let afd = match unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) } {
        Ok(a) => a,
        Err(_) => {
            tracing::debug!("cannot poll the pidfd of pid {pid}; the reconcile will notice its exit");
            return None;
        }
    };
    let ns = ns.clone();
    Some(Watch(tokio::spawn(async move {
        if afd.readable().await.is_ok() {
            tracing::info!(pid, "the process of {ns} exited");
            let _ = tx.send(Event::Gone(ns));
        }
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_departure_tells_its_waiters_once() {
        let d = Departures::default();
        let mut first = d.expect(&NsId::Fabric, 7);
        let mut second = d.expect(&NsId::Fabric, 7);
        let mut other = d.expect(&NsId::Fabric, 8);
        d.announce(&NsId::Managed("c1".into()), 7);
        assert!(first.try_recv().is_err(), "another namespace's link 7 is not ours");
        d.announce(&NsId::Fabric, 7);
        assert_eq!((first.try_recv(), second.try_recv()), (Ok(()), Ok(())));
        d.forget(&NsId::Fabric, 8);
        assert!(other.try_recv().is_err(), "forgotten, never told");
        assert!(d.0.lock().is_empty());
    }

    #[test]
    fn pids_from_paths() {
        assert_eq!(pid_of("/proc/123/ns/net"), Some(123));
        assert_eq!(pid_of("/proc/self/ns/net"), None);
        assert_eq!(pid_of("/run/netns/x"), None);
        assert_eq!(pid_of("/proc/+1/ns/net"), None);
        assert_eq!(pid_of("/proc/0/ns/net"), None);
    }

    #[tokio::test]
    async fn an_exiting_process_is_noticed() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().expect("sleep");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let ns = NsId::Path(format!("/proc/{}/ns/net", child.id()));
        let Some(_w) = watch_pid(&ns, tx) else {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("pidfd_open is not supported here");
            return;
        };
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert_eq!(rx.recv().await, Some(Event::Gone(ns)));
    }
}
