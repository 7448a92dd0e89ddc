//! rtnetlink calls: one connection per namespace, dumps into [`NsState`],
//! and the kernel side of each plan operation.
//!
//! One verb per object, the words of [`Op`](super::Op): `add_` (create),
//! `del_`, `get_` (one object, asked for by name), `dump_` (all of a kind
//! in a namespace), `set_`. Every failure is a [`KernelError`] keeping the
//! kernel's errno; the answers that mean success anyway (EEXIST on an add
//! that found its object, ENODEV/ENOENT on a delete that found nothing)
//! are compared as [`Errno`]s.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};

use futures_util::{StreamExt, TryStreamExt};
use rtnetlink::packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_ECHO, NLM_F_EXCL, NLM_F_REQUEST,
};
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteProtocol, RouteType};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::sys::TokioSocket;
use rtnetlink::{
    AddressMessageBuilder, Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder,
};

use nix::errno::Errno;

use super::error::KernelError;
use super::naming;
use super::netns::Opened;
use super::observed::{LinkKind, LinkState, NsId, NsState, RouteState};

/// An open namespace: a netlink connection bound inside it and, except for
/// managed container namespaces, its fd (for IFLA_NET_NS_FD and setns).
/// A managed namespace's fd is not kept: with ten thousand of them, two
/// descriptors each would pass common open-files limits; it is opened from
/// `/run/netns` when a veth end is created there. Dropping the handle
/// closes everything, so the kernel can free a deleted namespace.
pub struct NsHandle {
    pub handle: Handle,
    fd: Option<OwnedFd>,
    /// (device, inode) of the kept namespace, read once when opened: what
    /// a bound path must still lead to (see `handles.rs`), without a
    /// system call per check.
    ident: Option<(u64, u64)>,
    /// Where to open the namespace again when `fd` is not kept.
    path: std::path::PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for NsHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NsHandle {
    /// Wrap a socket opened in a namespace into an rtnetlink connection;
    /// `keep_fd` keeps the namespace's fd open. Must run inside the tokio
    /// runtime.
    pub fn new(opened: Opened, path: std::path::PathBuf, keep_fd: bool) -> Self {
        let Opened { fd, socket, .. } = opened;
        // SAFETY: the fd comes from a netlink socket we own and hand over.
        let sock = unsafe { TokioSocket::from_raw_fd(socket.into_raw_fd()) };
        let (conn, handle, _) = rtnetlink::from_socket(sock);
        let task = tokio::spawn(conn);
        let fd = keep_fd.then_some(fd);
        let ident = fd.as_ref().and_then(|f| nix::sys::stat::fstat(f).ok()).map(|s| (s.st_dev, s.st_ino));
        NsHandle { handle, fd, ident, path, task }
    }

    /// (device, inode) of the kept namespace, as opened.
    pub fn kept_ident(&self) -> Option<(u64, u64)> {
        self.ident
    }

    /// The namespace's fd when it is kept (every namespace but managed ones).
    pub fn kept_fd(&self) -> Option<&OwnedFd> {
        self.fd.as_ref()
    }

    /// The namespace's fd: a duplicate of the kept one, or opened again.
    pub fn ns_fd(&self) -> Result<OwnedFd, KernelError> {
        let path = || self.path.display().to_string();
        match &self.fd {
            Some(fd) => fd.try_clone().map_err(|e| KernelError::io("dup", path(), &e).context("dup")),
            None => std::fs::File::open(&self.path)
                .map(OwnedFd::from)
                .map_err(|e| KernelError::io("open", path(), &e).context(format!("opening {}", path()))),
        }
    }
}

/// Success, or a refusal that means the same (`benign`: EEXIST on an add
/// that found its object, ENODEV/ENOENT on a delete that found nothing).
fn ok_if(
    r: Result<(), rtnetlink::Error>,
    op: &'static str,
    object: impl FnOnce() -> String,
    benign: &[Errno],
) -> Result<(), KernelError> {
    match r {
        Ok(()) => Ok(()),
        Err(e) => {
            let e = KernelError::netlink(op, object(), &e);
            if e.is_any(benign) {
                Ok(())
            } else {
                Err(e)
            }
        }
    }
}

fn parse_link(m: &LinkMessage, prefix: &str, ns: &NsId) -> LinkState {
    let mut name = String::new();
    let mut group = 0;
    let mut master = None;
    let mut peer = None;
    let mut kind = None;
    let mut mtu = 0;
    let mut vni = None;
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => name = n.clone(),
            LinkAttribute::Mtu(v) => mtu = *v,
            LinkAttribute::Group(g) => group = *g,
            LinkAttribute::Controller(c) => master = Some(*c),
            LinkAttribute::Link(l) => peer = Some(*l),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => {
                            kind = Some(match k {
                                InfoKind::Veth => LinkKind::Veth,
                                InfoKind::Bridge => LinkKind::Bridge,
                                InfoKind::Vxlan => LinkKind::Vxlan,
                                other => LinkKind::Other(other.to_string()),
                            })
                        }
                        LinkInfo::Data(InfoData::Vxlan(v)) => {
                            vni = v.iter().find_map(|x| if let InfoVxlan::Id(id) = x { Some(*id) } else { None })
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let kind = match kind {
        Some(k) => k,
        None if m.header.link_layer_type == LinkLayerType::Loopback => LinkKind::Loopback,
        None => LinkKind::Other(String::new()),
    };
    let ours = match kind {
        LinkKind::Veth => veth_is_ours(ns, &name, prefix, group),
        LinkKind::Loopback => false,
        _ => match ns {
            NsId::Managed(_) | NsId::Fabric => true,
            NsId::Host => name.starts_with(prefix),
            NsId::Path(_) => false,
        },
    };
    let vni = if kind == LinkKind::Vxlan { vni } else { None };
    LinkState {
        index: m.header.index,
        name,
        kind,
        group,
        master,
        peer,
        peer_ns: None,
        up: m.header.flags.contains(LinkFlags::Up),
        ours,
        addresses: Vec::new(),
        mtu,
        vni,
        ..Default::default()
    }
}

/// Whether leviathan owns a veth end named `name` in `group` in `ns`: every
/// one in its own namespaces, its prefix's in the host's, its groups' in a
/// bound one.
pub fn veth_is_ours(ns: &NsId, name: &str, prefix: &str, group: u32) -> bool {
    match ns {
        NsId::Managed(_) | NsId::Fabric => true,
        NsId::Host => name.starts_with(prefix),
        NsId::Path(_) => naming::is_our_group(prefix, group),
    }
}

/// All links of the namespace (without addresses).
pub async fn dump_links(h: &Handle, prefix: &str, ns: &NsId) -> Result<Vec<LinkState>, KernelError> {
    let msgs: Vec<LinkMessage> = h.link().get().execute().try_collect().await.map_err(|e| {
        KernelError::netlink("dump_links", ns.to_string(), &e).context(format!("listing links in {ns}"))
    })?;
    Ok(msgs.iter().map(|m| parse_link(m, prefix, ns)).collect())
}

/// IPv4 addresses: (ifindex, address, prefix length).
pub async fn dump_addrs(h: &Handle, ns: &NsId) -> Result<Vec<(u32, Ipv4Addr, u8)>, KernelError> {
    let msgs: Vec<_> = h.address().get().execute().try_collect().await.map_err(|e| {
        KernelError::netlink("dump_addrs", ns.to_string(), &e).context(format!("listing addresses in {ns}"))
    })?;
    let mut out = Vec::new();
    for m in msgs {
        if m.header.family != AddressFamily::Inet {
            continue;
        }
        let mut ip = None;
        for a in &m.attributes {
            match a {
                AddressAttribute::Local(IpAddr::V4(v)) => ip = Some(*v),
                AddressAttribute::Address(IpAddr::V4(v)) if ip.is_none() => ip = Some(*v),
                _ => {}
            }
        }
        if let Some(ip) = ip {
            out.push((m.header.index, ip, m.header.prefix_len));
        }
    }
    Ok(out)
}

/// IPv4 main-table unicast routes through a gateway, as `ip route add` makes.
pub async fn dump_routes(h: &Handle, ns: &NsId) -> Result<Vec<RouteState>, KernelError> {
    let req = RouteMessageBuilder::<Ipv4Addr>::new().build();
    let msgs: Vec<_> = h.route().get(req).execute().try_collect().await.map_err(|e| {
        KernelError::netlink("dump_routes", ns.to_string(), &e).context(format!("listing routes in {ns}"))
    })?;
    let mut out = Vec::new();
    for m in msgs {
        if m.header.address_family != AddressFamily::Inet
            || m.header.kind != RouteType::Unicast
            || !matches!(m.header.protocol, RouteProtocol::Static | RouteProtocol::Boot)
        {
            continue;
        }
        let mut table = u32::from(m.header.table);
        let (mut dest, mut via, mut oif) = (Ipv4Addr::UNSPECIFIED, None, None);
        for a in &m.attributes {
            match a {
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::Destination(RouteAddress::Inet(d)) => dest = *d,
                RouteAttribute::Gateway(RouteAddress::Inet(g)) => via = Some(*g),
                RouteAttribute::Oif(o) => oif = Some(*o),
                _ => {}
            }
        }
        if table != 254 {
            continue;
        }
        if let (Some(via), Some(oif)) = (via, oif) {
            out.push(RouteState { dest, prefix_len: m.header.destination_prefix_length, via, oif });
        }
    }
    Ok(out)
}

/// Links, addresses and routes of one namespace (namespaces are observed
/// concurrently by the caller).
pub async fn dump_ns(h: &Handle, prefix: &str, ns: &NsId, forwarding: Option<bool>) -> Result<NsState, KernelError> {
    // One dump at a time per socket: the kernel answers EBUSY to a second
    // dump while one is running on the same socket.
    let links = dump_links(h, prefix, ns).await;
    let addrs = dump_addrs(h, ns).await;
    let routes = dump_routes(h, ns).await;
    let mut st = NsState::new(links?, routes?, forwarding);
    for (idx, ip, plen) in addrs? {
        if let Some(l) = st.link_mut(idx) {
            l.addresses.push((ip, plen));
        }
    }
    // VXLAN devices and their bridges live in the fabric.
    if matches!(ns, NsId::Fabric | NsId::Host) {
        let (fdb, neighbours) = dump_l2(h, ns).await?;
        for (idx, mac, remote) in fdb {
            if let Some(l) = st.link_mut(idx).filter(|l| l.kind == LinkKind::Vxlan) {
                if mac == [0; 6] {
                    l.fdb.insert(remote);
                } else {
                    l.macs.insert(mac, remote);
                }
            }
        }
        for (idx, ip, mac) in neighbours {
            if let Some(l) = st.link_mut(idx).filter(|l| l.kind == LinkKind::Bridge) {
                l.neighbours.insert(ip, mac);
            }
        }
    }
    Ok(st)
}

/// What [`dump_l2`] finds: FDB entries with a remote VTEP (ifindex, MAC,
/// address; the all-zeros MAC for flood entries) and neighbours (ifindex,
/// address, MAC).
pub type L2Entries = (Vec<(u32, [u8; 6], Ipv4Addr)>, Vec<(u32, Ipv4Addr, [u8; 6])>);

/// The FDB entries of VXLAN devices that name a remote VTEP and the
/// permanent IPv4 neighbour entries of a namespace. Read at adoption only,
/// in the fabric.
pub async fn dump_l2(h: &Handle, ns: &NsId) -> Result<L2Entries, KernelError> {
    let fdb: Vec<NeighbourMessage> =
        h.neighbours().get().set_address_family(AddressFamily::Bridge).execute().try_collect().await.map_err(|e| {
            KernelError::netlink("dump_fdb", ns.to_string(), &e).context(format!("listing the FDB in {ns}"))
        })?;
    let mut remotes = Vec::new();
    for m in &fdb {
        let mac = m.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(l) => <[u8; 6]>::try_from(l.as_slice()).ok(),
            _ => None,
        });
        // Only a VXLAN device's entries name a destination.
        let dst = m.attributes.iter().find_map(|a| match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
            _ => None,
        });
        if let (Some(mac), Some(dst)) = (mac, dst) {
            remotes.push((m.header.ifindex, mac, dst));
        }
    }
    let arp: Vec<NeighbourMessage> =
        h.neighbours().get().set_address_family(AddressFamily::Inet).execute().try_collect().await.map_err(|e| {
            KernelError::netlink("dump_neighs", ns.to_string(), &e).context(format!("listing neighbours in {ns}"))
        })?;
    let mut neighbours = Vec::new();
    for m in arp.iter().filter(|m| m.header.state == NeighbourState::Permanent) {
        let mut ip = None;
        let mut mac = None;
        for a in &m.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => ip = Some(*v),
                NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                    let mut x = [0u8; 6];
                    x.copy_from_slice(l);
                    mac = Some(x);
                }
                _ => {}
            }
        }
        if let (Some(ip), Some(mac)) = (ip, mac) {
            neighbours.push((m.header.ifindex, ip, mac));
        }
    }
    Ok((remotes, neighbours))
}

/// The interface holding an IPv4 address in the socket's namespace:
/// (ifindex, MTU).
pub async fn get_underlay(h: &Handle, local: Ipv4Addr) -> Result<Option<(u32, u32)>, KernelError> {
    let ns = NsId::Host;
    let Some(index) = dump_addrs(h, &ns).await?.into_iter().find(|(_, ip, _)| *ip == local).map(|(i, _, _)| i) else {
        return Ok(None);
    };
    let links = dump_links(h, "", &ns).await?;
    Ok(links.into_iter().find(|l| l.index == index).map(|l| (l.index, l.mtu)))
}

/// One RTM_NEWLINK sent in the underlay's namespace (where the kernel
/// keeps the device's UDP socket) creating a VXLAN device directly in the
/// namespace `ns` (no move afterwards), attached to `master` there, up,
/// learning off, bound to the underlay interface and address.
#[allow(clippy::too_many_arguments)]
pub async fn add_vxlan(
    underlay: &Handle,
    name: &str,
    vni: u32,
    local: Ipv4Addr,
    dev: u32,
    ns: RawFd,
    master: u32,
    group: u32,
) -> Result<(), KernelError> {
    let msg = LinkVxlan::new(name, vni)
        .dev(dev)
        .local(local)
        .port(super::VXLAN_PORT)
        .learning(false)
        .setns_by_fd(ns)
        .controller(master)
        .link_group(group)
        .up()
        .build();
    // A VNI stays registered with the underlay's UDP socket until the
    // kernel has finished freeing a namespace deleted just before (the
    // fabric, on a destroy followed by a make): wait for that, a while.
    let mut tries = 0;
    loop {
        match underlay.link().add(msg.clone()).execute().await {
            Err(e) if KernelError::netlink("add_vxlan", name, &e).is(Errno::EEXIST) && tries < VNI_RETRIES => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            r => return ok_if(r, "add_vxlan", || name.to_string(), &[]),
        }
    }
}

/// How many times (20 ms apart) a VXLAN device whose VNI is still held by
/// a device being freed is asked for again.
const VNI_RETRIES: u32 = 500;

/// One link, asked for by name (one RTM_GETLINK, not a dump); `None` when
/// the kernel has no such link.
pub async fn get_link(h: &Handle, prefix: &str, ns: &NsId, name: &str) -> Result<Option<LinkState>, KernelError> {
    let r: Result<Vec<LinkMessage>, _> = h.link().get().match_name(name.to_string()).execute().try_collect().await;
    match r {
        Ok(msgs) => Ok(msgs.first().map(|m| parse_link(m, prefix, ns))),
        Err(e) => {
            let e = KernelError::netlink("get_link", format!("{name} in {ns}"), &e);
            if e.is(Errno::ENODEV) {
                Ok(None)
            } else {
                Err(e.context(format!("reading link {name} in {ns}")))
            }
        }
    }
}

/// Deletes one link (gone already is success).
pub async fn del_link(h: &Handle, index: u32) -> Result<(), KernelError> {
    ok_if(h.link().del(index).execute().await, "del_link", || format!("link {index}"), &[Errno::ENODEV])
}

/// Delete every link of `group` in one request (one unregister batch).
pub async fn del_group(h: &Handle, group: u32) -> Result<(), KernelError> {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::Group(group));
    let r = h.link().del_with_message(msg).execute().await;
    ok_if(r, "del_group", || format!("link group {group:#x}"), &[Errno::ENODEV])
}

/// Sets a link up.
pub async fn set_up(h: &Handle, index: u32) -> Result<(), KernelError> {
    let r = h.link().set(LinkUnspec::new_with_index(index).up().build()).execute().await;
    ok_if(r, "set_up", || format!("link {index}"), &[])
}

/// A bridge with its MAC address pinned at creation: otherwise the kernel
/// gives a bridge the lowest MAC of its ports and changes it as ports come
/// and go, so the gateway's MAC would change under its members.
/// The bridge as the kernel made it, from its answer (see [`add_link`]).
pub async fn add_bridge(
    h: &Handle,
    name: &str,
    group: u32,
    mac: [u8; 6],
    learn: (&str, &NsId),
) -> Result<Option<LinkState>, KernelError> {
    let msg = LinkBridge::new(name).link_group(group).address(mac.to_vec()).build();
    add_link(h, msg, learn).await.map_err(|e| KernelError::netlink("add_bridge", name, &e))
}

/// One RTM_NEWLINK creating a link, asking for its echo (NLM_F_ECHO, Linux
/// 6.1 and later): the kernel answers with the new link as it announces it
/// (index, peer, master, flags), parsed as a link of `ns` (with `prefix`),
/// so the link need not be asked for again. `None` where the kernel sent
/// no echo: the caller asks for the link by name.
async fn add_link(
    h: &Handle,
    msg: LinkMessage,
    (prefix, ns): (&str, &NsId),
) -> Result<Option<LinkState>, rtnetlink::Error> {
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewLink(msg));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO;
    let mut answers = h.clone().request(req)?;
    let mut made = None;
    while let Some(m) = answers.next().await {
        match m.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => made = Some(parse_link(&l, prefix, ns)),
            NetlinkPayload::Error(e) if e.code.is_some() => return Err(rtnetlink::Error::NetlinkError(e)),
            _ => {}
        }
    }
    Ok(made)
}

/// Sets a link's alias (IFLA_IFALIAS), shown by `ip link`.
pub async fn set_alias(h: &Handle, index: u32, alias: &str) -> Result<(), KernelError> {
    let mut msg = LinkUnspec::new_with_index(index).build();
    msg.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
    ok_if(h.link().set(msg).execute().await, "set_alias", || format!("link {index}"), &[])
}

/// One RTM_NEWLINK: end `a` in the socket's namespace, up and attached to
/// `master` at creation; its peer `b` created directly in the namespace
/// `b_ns` (down: the kernel refuses a peer created up in another namespace,
/// see `Op::SetUpNew`). Both in `group`. No move afterwards. End `a` as the
/// kernel made it (its IFLA_LINK is `b`'s index), from its answer (see
/// [`add_link`]).
///
/// Each end is asked for with one transmit and one receive queue, which
/// is what a veth ends up with anyway: without them the kernel makes one
/// per possible CPU, then cuts each end down to one behind an expedited
/// RCU grace period (`veth_init_queues`), which doubled the time of a
/// create here (0.63 ms against 0.31 ms a pair, `ip link add` of 100).
#[allow(clippy::too_many_arguments)]
pub async fn add_veth(
    h: &Handle,
    a: &str,
    a_mac: Option<[u8; 6]>,
    master: Option<u32>,
    b: &str,
    b_mac: Option<[u8; 6]>,
    b_ns: RawFd,
    group: u32,
    mtu: Option<u32>,
    learn: (&str, &NsId),
) -> Result<Option<LinkState>, KernelError> {
    let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(b.to_string())
        .link_group(group)
        .setns_by_fd(b_ns)
        .append_extra_attribute(LinkAttribute::NumTxQueues(1))
        .append_extra_attribute(LinkAttribute::NumRxQueues(1));
    if let Some(mac) = b_mac {
        peer = peer.address(mac.to_vec());
    }
    if let Some(mtu) = mtu {
        peer = peer.mtu(mtu);
    }
    let peer = peer.build();
    let mut main = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(a.to_string())
        .link_group(group)
        .append_extra_attribute(LinkAttribute::NumTxQueues(1))
        .append_extra_attribute(LinkAttribute::NumRxQueues(1))
        .up();
    if let Some(m) = master {
        main = main.controller(m);
    }
    if let Some(mac) = a_mac {
        main = main.address(mac.to_vec());
    }
    if let Some(mtu) = mtu {
        main = main.mtu(mtu);
    }
    let msg = main.set_info_data(InfoData::Veth(InfoVeth::Peer(peer))).build();
    add_link(h, msg, learn).await.map_err(|e| KernelError::netlink("add_veth", format!("{a} <-> {b}"), &e))
}

/// Adds an IPv4 address (there already is success).
pub async fn add_addr(h: &Handle, index: u32, ip: Ipv4Addr, prefix_len: u8) -> Result<(), KernelError> {
    let r = h.address().add(index, IpAddr::V4(ip), prefix_len).execute().await;
    ok_if(r, "add_addr", || format!("{ip}/{prefix_len} on link {index}"), &[Errno::EEXIST])
}

/// Removes an IPv4 address (gone already is success).
pub async fn del_addr(h: &Handle, index: u32, ip: Ipv4Addr, prefix_len: u8) -> Result<(), KernelError> {
    let msg = AddressMessageBuilder::<Ipv4Addr>::new().index(index).address(ip, prefix_len).build();
    let r = h.address().del(msg).execute().await;
    ok_if(r, "del_addr", || format!("{ip}/{prefix_len} on link {index}"), &[Errno::EADDRNOTAVAIL, Errno::ENODEV])
}

fn route_msg(dest: Ipv4Addr, prefix_len: u8, via: Ipv4Addr, oif: u32) -> rtnetlink::packet_route::route::RouteMessage {
    RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dest, prefix_len)
        .gateway(via)
        .output_interface(oif)
        .build()
}

/// Adds a route through a gateway.
pub async fn add_route(h: &Handle, dest: Ipv4Addr, prefix_len: u8, via: Ipv4Addr, oif: u32) -> Result<(), KernelError> {
    let r = h.route().add(route_msg(dest, prefix_len, via, oif)).execute().await;
    ok_if(r, "add_route", || format!("{dest}/{prefix_len} via {via}"), &[])
}

/// Removes a route (gone already is success).
pub async fn del_route(h: &Handle, dest: Ipv4Addr, prefix_len: u8, via: Ipv4Addr, oif: u32) -> Result<(), KernelError> {
    let r = h.route().del(route_msg(dest, prefix_len, via, oif)).execute().await;
    ok_if(r, "del_route", || format!("{dest}/{prefix_len} via {via}"), &[Errno::ESRCH, Errno::ENOENT, Errno::ENODEV])
}

/// How long the answer to a request is waited for. The kernel answers a
/// request within its `sendto`, so the answer is there at once; this bounds
/// only the wait for one that was lost (dropped when the socket's receive
/// buffer was full, see `netns::REQUEST_BUFFER`), which would otherwise hold
/// the round, and every change after it, forever. The step fails instead,
/// its namespace is looked at again, and the next round repairs it.
pub const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

/// `fut`'s result, or a failure of `op` on `object` when the kernel's
/// answer did not come within [`ANSWER_WITHIN`].
pub async fn answered<T>(
    op: &'static str,
    object: impl FnOnce() -> String,
    fut: impl std::future::Future<Output = Result<T, KernelError>>,
) -> Result<T, KernelError> {
    answered_within(ANSWER_WITHIN, op, object, fut).await
}

async fn answered_within<T>(
    limit: std::time::Duration,
    op: &'static str,
    object: impl FnOnce() -> String,
    fut: impl std::future::Future<Output = Result<T, KernelError>>,
) -> Result<T, KernelError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(KernelError::other(
            op,
            object(),
            format!("no answer from the kernel within {limit:?} (lost to a full receive buffer?)"),
        )),
    }
}

/// Run futures with at most `limit` in flight (netlink pipelining without
/// overrunning the sockets' receive buffers).
pub async fn bounded<F, T>(futs: Vec<F>, limit: usize) -> Vec<T>
where
    F: std::future::Future<Output = T>,
{
    futures_util::stream::iter(futs).buffered(limit.max(1)).collect().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::realize::netns::{self, Role};
    use crate::realize::IN_FLIGHT;

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() == 0 }
    }

    /// A namespace made by `ip netns add`, deleted when dropped, even on
    /// panic.
    struct Ns(String);

    impl Ns {
        fn add(name: String) -> Ns {
            let out = std::process::Command::new("ip").args(["netns", "add", &name]).output().expect("ip");
            assert!(out.status.success(), "ip netns add {name}: {}", String::from_utf8_lossy(&out.stderr));
            Ns(name)
        }
    }

    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    /// A namespace's request socket has room for a phase's answers (the
    /// default buffer dropped some on servers running one worker thread,
    /// see `tests/one_worker.rs`, and their requests waited forever). On
    /// one thread, a connection sends every request queued for it before
    /// it reads an answer: [`IN_FLIGHT`] bridge creates, then as many veths
    /// into them (each answered with the link made and an
    /// acknowledgement), all come back.
    #[tokio::test(flavor = "current_thread")]
    async fn a_request_socket_holds_the_answers_of_a_phase_in_flight() {
        if !is_root() {
            assert!(std::env::var_os("CI").is_none(), "netlink tests need root and must not skip in CI");
            eprintln!("\n!!!!! SKIPPING: this netlink test needs root (it runs, and must pass, in CI) !!!!!\n");
            return;
        }
        let ns = Ns::add(format!("lvnl{}", std::process::id()));
        let path = std::path::PathBuf::from(format!("/run/netns/{}", ns.0));
        let opened = netns::open_paths(vec![(path.clone(), Role::Container)]).pop().expect("one").expect("opened");
        // The kernel keeps twice what is asked for (room for its overhead).
        let room = opened.socket.get_rx_buf_sz().expect("SO_RCVBUF");
        assert!(room >= netns::REQUEST_BUFFER, "receive buffer of {room} bytes");
        let h = NsHandle::new(opened, path, true);
        let id = NsId::Path(ns.0.clone());
        let creates = (0..IN_FLIGHT).map(|i| {
            let name = format!("lvnlbr{i}");
            let mac = [0x02, 0, 0, 0, 0, i as u8];
            let h = &h.handle;
            let id = &id;
            async move { add_bridge(h, &name, 0, mac, ("lvnl", id)).await }
        });
        // A bound far above the milliseconds this takes: it only catches
        // answers that never come.
        let all = tokio::time::timeout(std::time::Duration::from_secs(60), futures_util::future::join_all(creates))
            .await
            .expect("answers were lost: some creates never finished");
        let mut bridges = Vec::new();
        for (i, r) in all.into_iter().enumerate() {
            let made = r.unwrap_or_else(|e| panic!("bridge {i}: {e}"));
            bridges.push(made.map(|l| l.index).unwrap_or_else(|| panic!("bridge {i} came back without the link made")));
        }
        // Then as many veths in those bridges, their peers made directly in
        // another namespace: the fabric's part of a make.
        let other = Ns::add(format!("lvnl{}b", std::process::id()));
        let peer_ns = std::fs::File::open(format!("/run/netns/{}", other.0)).expect("peer namespace");
        let peer_fd = std::os::fd::AsRawFd::as_raw_fd(&peer_ns);
        let creates = bridges.iter().enumerate().map(|(i, master)| {
            let (a, b) = (format!("lvnlv{i}a"), format!("lvnlv{i}b"));
            let h = &h.handle;
            let id = &id;
            async move { add_veth(h, &a, None, Some(*master), &b, None, peer_fd, 0, None, ("lvnl", id)).await }
        });
        let all = tokio::time::timeout(std::time::Duration::from_secs(60), futures_util::future::join_all(creates))
            .await
            .expect("answers were lost: some veth creates never finished");
        for (i, r) in all.into_iter().enumerate() {
            let made = r.unwrap_or_else(|e| panic!("veth {i}: {e}"));
            assert!(made.is_some_and(|l| l.peer.is_some()), "veth {i} came back without the link made");
        }
    }

    #[tokio::test]
    async fn an_answer_that_never_comes_fails_the_step_naming_it() {
        let limit = std::time::Duration::from_millis(10);
        let r: Result<(), KernelError> =
            answered_within(limit, "add_bridge", || "lev-br0".to_string(), std::future::pending()).await;
        let e = r.expect_err("no answer is a failure");
        assert_eq!((e.op, e.object.as_str()), ("add_bridge", "lev-br0"));
        assert!(e.to_string().starts_with("no answer from the kernel within 10ms"), "{e}");
    }
}
