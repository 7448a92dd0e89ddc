//! Many rtnetlink requests of one namespace in one `sendmsg`: the FDB and
//! neighbour entries of VXLAN across hosts (one per remote member, so a
//! host of a CEN spanning three hosts asks for hundreds at once), and the
//! ARP/ND suppression flag of each VXLAN device made in a phase (one per
//! CEN spanning hosts).
//!
//! Sent one by one, each entry costs a request through the namespace's
//! rtnetlink connection, a `sendto`, two `recvfrom` and an acknowledgement
//! decoded and routed back, for a kernel update of a few microseconds. Here
//! a chunk of requests goes in one `sendto` (the kernel handles the
//! messages of one datagram in order, each on its own); only the last of a
//! chunk asks for an acknowledgement, and the kernel answers the others
//! only when it refuses them (with their sequence number). The
//! acknowledgement of the last one therefore closes the chunk: every
//! refusal of the chunk was queued before it.
//!
//! Invariants: one result per request, in order; a request the kernel did
//! not refuse before the chunk's closing acknowledgement succeeded; a chunk
//! whose answers could not be read (a receive error, a full buffer, none
//! within [`ANSWER_WITHIN`]) fails as a whole, so its namespace is looked
//! at again; the socket is opened on a thread of its own that entered the
//! namespace (never `setns` on a tokio worker).

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::sched::{setns, CloneFlags};
use rtnetlink::packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST,
};
use rtnetlink::packet_route::link::InfoBridgePort;
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::RouteType;
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use rtnetlink::LinkBridgePort;

use super::error::KernelError;
use super::plan::FLOOD;

/// Requests per `sendto`. Bounds the answers one chunk may queue (each
/// refusal is one small message, see `open_here`) well within the socket's
/// receive buffer.
const CHUNK: usize = 128;

/// Receive buffer asked for (the kernel caps it at `net.core.rmem_max`).
const RECEIVE_BUFFER: usize = 1 << 20;

/// How long a chunk's closing acknowledgement is waited for (the kernel
/// handles a chunk within its `sendto`, so it is there at once; this only
/// bounds the wait should it never come).
const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// One request of a batch.
#[derive(Debug, Clone)]
pub struct Request {
    msg: RouteNetlinkMessage,
    /// NLM_F_* besides NLM_F_REQUEST (the batch adds NLM_F_ACK where it
    /// needs one).
    flags: u16,
    /// Refusals that mean success (EEXIST on an add that found its entry,
    /// ENOENT/ENODEV on a delete that found nothing).
    benign: &'static [Errno],
    /// The call, in the words of `nl` (`add_fdb`, ...).
    op: &'static str,
    /// What it is about, as shown to people.
    object: String,
}

fn fdb_msg(index: u32, mac: [u8; 6], remote: Ipv4Addr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = index;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(remote)));
    m
}

impl Request {
    /// One FDB entry on a VXLAN device. The all-zeros MAC (a remote VTEP to
    /// flood to) may have many destinations: the second and later need
    /// NLM_F_APPEND (a plain add answers EEXIST, replace is refused for
    /// it). Any other MAC has one: NLM_F_REPLACE moves it to the host it is
    /// on now.
    pub fn add_fdb(index: u32, mac: [u8; 6], remote: Ipv4Addr) -> Request {
        let how = if mac == FLOOD { NLM_F_APPEND } else { NLM_F_REPLACE };
        Request {
            msg: RouteNetlinkMessage::NewNeighbour(fdb_msg(index, mac, remote)),
            flags: NLM_F_CREATE | how,
            benign: &[Errno::EEXIST],
            op: "add_fdb",
            object: format!("link {index}"),
        }
    }

    /// Removes one FDB entry (a MAC and its remote VTEP) from a VXLAN
    /// device.
    pub fn del_fdb(index: u32, mac: [u8; 6], remote: Ipv4Addr) -> Request {
        Request {
            msg: RouteNetlinkMessage::DelNeighbour(fdb_msg(index, mac, remote)),
            flags: 0,
            benign: &[Errno::ENOENT, Errno::ENODEV],
            op: "del_fdb",
            object: format!("link {index}"),
        }
    }

    /// A permanent IPv4 neighbour entry (replacing one the kernel learned).
    pub fn add_neigh(index: u32, ip: Ipv4Addr, mac: [u8; 6]) -> Request {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = index;
        m.header.state = NeighbourState::Permanent;
        m.header.kind = RouteType::Unspec;
        m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        Request {
            msg: RouteNetlinkMessage::NewNeighbour(m),
            flags: NLM_F_CREATE | NLM_F_REPLACE,
            benign: &[],
            op: "add_neigh",
            object: format!("link {index}"),
        }
    }

    /// Removes a neighbour entry.
    pub fn del_neigh(index: u32, ip: Ipv4Addr) -> Request {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = index;
        m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        Request {
            msg: RouteNetlinkMessage::DelNeighbour(m),
            flags: 0,
            benign: &[Errno::ENOENT, Errno::ENODEV],
            op: "del_neigh",
            object: format!("link {index}"),
        }
    }

    /// Turns on ARP and ND suppression on a bridge port (`neigh_suppress`,
    /// Linux 4.15 and later), named in the namespace of the batch: the
    /// bridge answers its ports' ARP requests for members on other hosts
    /// from its permanent neighbour entries instead of flooding them to
    /// every host. A kernel that does not know the flag refuses it
    /// (EOPNOTSUPP or EINVAL): that is success, ARP is then flooded.
    pub fn set_neigh_suppress(name: &str) -> Request {
        let msg =
            LinkBridgePort::new(0).name(name.to_string()).append_info_data(InfoBridgePort::NeighSupress(true)).build();
        Request {
            msg: RouteNetlinkMessage::NewLink(msg),
            flags: 0,
            benign: &[Errno::EOPNOTSUPP, Errno::EINVAL],
            op: "set_neigh_suppress",
            object: name.to_string(),
        }
    }

    /// The kernel's answer to this request: success, or why not.
    fn answer(&self, code: Option<std::num::NonZeroI32>) -> Result<(), KernelError> {
        let Some(code) = code else { return Ok(()) };
        let errno = Errno::from_raw(-code.get());
        if self.benign.contains(&errno) {
            return Ok(());
        }
        let cause = std::io::Error::from_raw_os_error(-code.get());
        Err(KernelError::io(self.op, self.object.clone(), &cause))
    }
}

/// Sends `reqs` from a thread entered into the namespace `fd`, in chunks of
/// [`CHUNK`]; one result per request, in order. Blocks until done (call it
/// off the tokio workers).
pub fn send_in(fd: OwnedFd, reqs: Vec<Request>) -> Vec<Result<(), KernelError>> {
    let n = reqs.len();
    let h = std::thread::Builder::new().name("lev-netns-batch".into()).spawn(move || {
        match setns(fd.as_fd(), CloneFlags::CLONE_NEWNET)
            .map_err(|e| KernelError::nix("setns", "", e).context("setns"))
            .and_then(|()| open())
        {
            Ok(s) => send_all(&s, &reqs),
            Err(e) => reqs.iter().map(|_| Err(e.clone())).collect(),
        }
    });
    match h {
        Ok(h) => h.join().unwrap_or_else(|_| (0..n).map(|_| Err(KernelError::panicked())).collect()),
        Err(e) => {
            let e = KernelError::io("spawn", "", &e).context("cannot start a namespace thread");
            (0..n).map(|_| Err(e.clone())).collect()
        }
    }
}

/// A netlink socket in the calling thread's namespace whose refusals carry
/// only the refused request's header (NETLINK_CAP_ACK), with room for a
/// chunk's answers.
fn open() -> Result<Socket, KernelError> {
    let cannot = |e: std::io::Error| KernelError::io("socket", "", &e).context("cannot open a netlink socket");
    let s = Socket::new(NETLINK_ROUTE).map_err(cannot)?;
    s.set_cap_ack(true).map_err(cannot)?;
    // Capped by net.core.rmem_max; a chunk's answers fit the default too.
    let _ = s.set_rx_buf_sz(RECEIVE_BUFFER);
    let tv = libc::timeval { tv_sec: ANSWER_WITHIN.as_secs() as libc::time_t, tv_usec: 0 };
    // SAFETY: SO_RCVTIMEO on a socket we own, with a timeval that lives
    // through the call and its size.
    let r = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&s),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            std::ptr::addr_of!(tv).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(cannot(std::io::Error::last_os_error()));
    }
    Ok(s)
}

/// Every request, chunk by chunk.
fn send_all(s: &Socket, reqs: &[Request]) -> Vec<Result<(), KernelError>> {
    let mut out = Vec::with_capacity(reqs.len());
    for (i, chunk) in reqs.chunks(CHUNK).enumerate() {
        // Sequence numbers from 1, unique over the batch.
        out.extend(send_chunk(s, chunk, (i * CHUNK) as u32 + 1));
    }
    out
}

/// One chunk in one `sendto`, its answers read up to the acknowledgement
/// of its last request.
fn send_chunk(s: &Socket, reqs: &[Request], first_seq: u32) -> Vec<Result<(), KernelError>> {
    let whole = |e: KernelError| reqs.iter().map(|_| Err(e.clone())).collect::<Vec<_>>();
    let mut buf = Vec::new();
    for (i, r) in reqs.iter().enumerate() {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | r.flags;
        if i + 1 == reqs.len() {
            header.flags |= NLM_F_ACK;
        }
        header.sequence_number = first_seq + i as u32;
        let mut msg = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(r.msg.clone()));
        msg.finalize();
        let at = buf.len();
        buf.resize(at + msg.buffer_len(), 0);
        msg.serialize(&mut buf[at..]);
    }
    let op = reqs.first().map_or("batch", |r| r.op);
    if let Err(e) = s.send_to(&buf, &SocketAddr::new(0, 0), 0) {
        return whole(KernelError::io(op, "", &e).context(format!("sending {} requests", reqs.len())));
    }
    let mut out: Vec<Result<(), KernelError>> = reqs.iter().map(|_| Ok(())).collect();
    let last = first_seq + reqs.len() as u32 - 1;
    let mut rx = vec![0u8; 64 * 1024];
    loop {
        let n = match s.recv(&mut &mut rx[..], 0) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return whole(KernelError::io(op, "", &e).context("reading the kernel's answers")),
        };
        let mut off = 0;
        while off + 16 <= n {
            let reply = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[off..n]) {
                Ok(m) => m,
                Err(e) => return whole(KernelError::other(op, "", e).context("reading the kernel's answers")),
            };
            let seq = reply.header.sequence_number;
            if let (NetlinkPayload::Error(e), Some(i)) = (&reply.payload, seq.checked_sub(first_seq)) {
                if let (Some(r), Some(slot)) = (reqs.get(i as usize), out.get_mut(i as usize)) {
                    *slot = r.answer(e.code);
                }
                if seq == last {
                    return out;
                }
            }
            let len = reply.header.length as usize;
            if len == 0 {
                break;
            }
            off += (len + 3) & !3;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_that_mean_success_are_success_and_others_keep_their_errno() {
        let add = Request::add_fdb(7, FLOOD, Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(add.answer(None), Ok(()));
        assert_eq!(add.answer(std::num::NonZeroI32::new(-(Errno::EEXIST as i32))), Ok(()));
        let e = add.answer(std::num::NonZeroI32::new(-(Errno::ENODEV as i32))).unwrap_err();
        assert_eq!((e.op, e.errno, e.object.as_str()), ("add_fdb", Some(Errno::ENODEV), "link 7"));
        let del = Request::del_neigh(7, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(del.answer(std::num::NonZeroI32::new(-(Errno::ENOENT as i32))), Ok(()));
        let e = Request::add_neigh(7, Ipv4Addr::new(10, 0, 0, 1), [2, 0, 0, 0, 0, 1])
            .answer(std::num::NonZeroI32::new(-(Errno::EEXIST as i32)));
        assert_eq!(e.map_err(|e| e.errno), Err(Some(Errno::EEXIST)), "a neighbour add replaces: EEXIST is news");
    }

    #[test]
    fn a_kernel_without_neigh_suppress_is_no_failure() {
        let r = Request::set_neigh_suppress("lev-xcen1");
        assert_eq!(r.flags, 0, "a change of an existing link: no create flags");
        for benign in [Errno::EOPNOTSUPP, Errno::EINVAL] {
            assert_eq!(r.answer(std::num::NonZeroI32::new(-(benign as i32))), Ok(()));
        }
        let e = r.answer(std::num::NonZeroI32::new(-(Errno::ENODEV as i32))).unwrap_err();
        assert_eq!((e.op, e.errno, e.object.as_str()), ("set_neigh_suppress", Some(Errno::ENODEV), "lev-xcen1"));
    }

    #[test]
    fn flood_entries_append_and_member_entries_replace() {
        let remote = Ipv4Addr::new(192, 0, 2, 3);
        assert_eq!(Request::add_fdb(1, FLOOD, remote).flags, NLM_F_CREATE | NLM_F_APPEND);
        assert_eq!(Request::add_fdb(1, [2, 1, 2, 3, 4, 5], remote).flags, NLM_F_CREATE | NLM_F_REPLACE);
    }
}
