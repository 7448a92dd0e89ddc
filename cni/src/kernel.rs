//! What the kernel says about a container's network namespace, read from
//! inside it: its interfaces (MAC, IPv4 addresses) and its IPv4 routes.
//! The plugin asks the server to change things; it only ever reads here
//! (the interface check before ADD, the MAC of the result, CHECK).
//!
//! The reading runs on a thread of its own that enters the namespace
//! (`setns`) and ends with it, so the rest of the process never leaves its
//! own namespace. ADD, which needs only whether one interface exists, its
//! MAC and its veth's other end, uses an [`NsSocket`] instead: sockets
//! opened inside the namespace (the calling thread enters it for that one
//! call and returns before anything else), with no thread and no dump of
//! the namespace. An ioctl says whether the interface exists; a netlink
//! link request gives its MAC and finds the host side of its veth: the container
//! end names its peer by index and by the peer namespace's id as seen from
//! the container's (`IFLA_LINK`, `IFLA_LINK_NETNSID`), and a link request
//! aimed at that id (`IFLA_TARGET_NETNSID`) answers the peer's name and MAC
//! without entering its namespace.

use std::ffi::CStr;
use std::net::Ipv4Addr;

/// One interface of the namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Iface {
    pub name: String,
    /// `aa:bb:cc:dd:ee:ff`, when it has one.
    pub mac: Option<String>,
    /// Its IPv4 addresses with their prefix lengths.
    pub addrs: Vec<(Ipv4Addr, u8)>,
}

/// One IPv4 route of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub iface: String,
    pub dst: Ipv4Addr,
    pub prefix: u8,
    /// `None` for a directly connected route.
    pub gw: Option<Ipv4Addr>,
}

/// A namespace as read.
#[derive(Debug, Default)]
pub struct NsView {
    pub ifaces: Vec<Iface>,
    pub routes: Vec<Route>,
}

impl NsView {
    pub fn iface(&self, name: &str) -> Option<&Iface> {
        self.ifaces.iter().find(|i| i.name == name)
    }
}

/// Reads the namespace at `path` (a bind-mounted or `/proc/PID/ns/net`
/// file).
pub fn read_netns(path: &str) -> Result<NsView, String> {
    let path = path.to_string();
    std::thread::spawn(move || -> Result<NsView, String> {
        let ns = std::fs::File::open(&path).map_err(|e| format!("opening the network namespace {path}: {e}"))?;
        // SAFETY: the descriptor is open for this call; setns changes only
        // this thread's namespace, and the thread ends after reading.
        if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("entering the network namespace {path}: {}", std::io::Error::last_os_error()));
        }
        let ifaces = interfaces()?;
        let routes =
            std::fs::read_to_string("/proc/thread-self/net/route").map(|t| parse_routes(&t)).unwrap_or_default();
        Ok(NsView { ifaces, routes })
    })
    .join()
    .map_err(|_| "reading the network namespace failed".to_string())?
}

/// A socket inside a container's namespace: interface lookups by name
/// there, from the calling thread.
pub struct NsSocket {
    fd: std::os::fd::OwnedFd,
    /// A NETLINK_ROUTE socket of the same namespace.
    nl: std::os::fd::OwnedFd,
    path: String,
}

impl NsSocket {
    /// Opens a socket inside the namespace at `path`: the calling thread
    /// enters the namespace, opens the socket and returns to its own
    /// namespace (an error if it cannot, so nothing else runs there).
    pub fn open(path: &str) -> Result<NsSocket, String> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let own = std::fs::File::open("/proc/thread-self/ns/net")
            .map_err(|e| format!("opening this process's network namespace: {e}"))?;
        let ns = std::fs::File::open(path).map_err(|e| format!("opening the network namespace {path}: {e}"))?;
        // SAFETY: both descriptors are open for these calls; setns changes
        // only the calling thread's namespace, and it is changed back
        // before this function returns.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("entering the network namespace {path}: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: socket has no preconditions; its result is checked below.
        let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        let opened = std::io::Error::last_os_error();
        // SAFETY: as above.
        let raw_nl =
            unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_ROUTE) };
        let opened_nl = std::io::Error::last_os_error();
        // SAFETY: each socket opened is owned here once, and nowhere else.
        let (fd, nl) = unsafe {
            ((raw >= 0).then(|| OwnedFd::from_raw_fd(raw)), (raw_nl >= 0).then(|| OwnedFd::from_raw_fd(raw_nl)))
        };
        // SAFETY: as above.
        if unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("returning from the network namespace {path}: {}", std::io::Error::last_os_error()));
        }
        let fd = fd.ok_or_else(|| format!("opening a socket in the network namespace {path}: {opened}"))?;
        let nl = nl.ok_or_else(|| format!("opening a netlink socket in the network namespace {path}: {opened_nl}"))?;
        Ok(NsSocket { fd, nl, path: path.to_string() })
    }

    /// One interface ioctl by name; `None` when no interface has it.
    fn ask(&self, name: &str, request: libc::c_ulong) -> Result<Option<libc::ifreq>, String> {
        use std::os::fd::AsRawFd;
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
            return Err(format!("'{name}' is not an interface name"));
        }
        // SAFETY: ifreq is plain data; all zeros is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, b) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *d = b as libc::c_char;
        }
        // SAFETY: `req` is an ifreq with a NUL-terminated name, as both
        // requests used here expect, and outlives the call.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), request as _, &mut req) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENODEV) {
                return Ok(None);
            }
            return Err(format!("looking up interface '{name}' in {}: {e}", self.path));
        }
        Ok(Some(req))
    }

    /// Whether an interface named `name` exists there.
    pub fn has(&self, name: &str) -> Result<bool, String> {
        Ok(self.ask(name, libc::SIOCGIFINDEX)?.is_some())
    }
}

/// A container's interface as [`NsSocket::ends`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ends {
    /// `aa:bb:cc:dd:ee:ff`, when it is an Ethernet link.
    pub mac: Option<String>,
    /// The other end of its veth (name, MAC) when that is in another
    /// namespace.
    pub host: Option<(String, Option<String>)>,
}

/// What one link request answered (see [`NsSocket::ends`]).
#[derive(Debug, Default, PartialEq, Eq)]
struct LinkInfo {
    /// The link's index in the namespace that answered.
    index: i32,
    name: Option<String>,
    /// Its MAC, when it is an Ethernet link.
    mac: Option<String>,
    /// The peer's index (`IFLA_LINK`) and its namespace's id, when the
    /// peer is in another namespace (`IFLA_LINK_NETNSID`).
    peer: Option<(i32, i32)>,
}

const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_LINK: u16 = 5;
const IFLA_LINK_NETNSID: u16 = 37;
const IFLA_TARGET_NETNSID: u16 = 46;
/// Room for one link's answer (about 1.5 KiB for a veth).
const ANSWER_ROOM: usize = 16 * 1024;

fn nl_align(n: usize) -> usize {
    (n + 3) & !3
}

/// An RTM_GETLINK request for link `index` (0: by name), with attributes.
fn getlink_request(seq: u32, index: i32, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut m = vec![0u8; 16];
    m[4..6].copy_from_slice(&RTM_GETLINK.to_ne_bytes());
    m[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    // struct ifinfomsg: family, pad, type, index, flags, change.
    let mut info = [0u8; 16];
    info[4..8].copy_from_slice(&index.to_ne_bytes());
    m.extend_from_slice(&info);
    for (kind, data) in attrs {
        let len = 4 + data.len();
        m.extend_from_slice(&(len as u16).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(data);
        m.resize(nl_align(m.len()), 0);
    }
    let total = m.len() as u32;
    m[0..4].copy_from_slice(&total.to_ne_bytes());
    m
}

/// The link of an RTM_NEWLINK answer, `None` for ENODEV, an error for any
/// other error or a message that does not parse.
fn parse_link_answer(buf: &[u8]) -> Result<Option<LinkInfo>, String> {
    let u16_at = |b: &[u8], i: usize| b.get(i..i + 2).map(|x| u16::from_ne_bytes([x[0], x[1]]));
    let u32_at = |b: &[u8], i: usize| b.get(i..i + 4).map(|x| u32::from_ne_bytes([x[0], x[1], x[2], x[3]]));
    let bad = || "the kernel's answer to a link request does not parse".to_string();
    let len = u32_at(buf, 0).ok_or_else(bad)? as usize;
    let kind = u16_at(buf, 4).ok_or_else(bad)?;
    let msg = buf.get(..len).ok_or_else(bad)?;
    if kind == libc::NLMSG_ERROR as u16 {
        let errno = -(u32_at(msg, 16).ok_or_else(bad)? as i32);
        if errno == libc::ENODEV {
            return Ok(None);
        }
        return Err(format!("a link request failed: {}", std::io::Error::from_raw_os_error(errno)));
    }
    if kind != RTM_NEWLINK {
        return Err(bad());
    }
    let mut out = LinkInfo { index: u32_at(msg, 20).ok_or_else(bad)? as i32, ..LinkInfo::default() };
    let ether = u16_at(msg, 18).ok_or_else(bad)? == libc::ARPHRD_ETHER;
    let (mut link, mut netnsid) = (None, None);
    let mut at = 32;
    while at + 4 <= msg.len() {
        let alen = usize::from(u16_at(msg, at).ok_or_else(bad)?);
        let akind = u16_at(msg, at + 2).ok_or_else(bad)? & 0x3fff;
        if alen < 4 {
            return Err(bad());
        }
        let data = msg.get(at + 4..at + alen).ok_or_else(bad)?;
        match akind {
            IFLA_ADDRESS if ether && data.len() == 6 => out.mac = Some(mac_text(data)),
            IFLA_IFNAME => {
                out.name = Some(String::from_utf8_lossy(data.split(|b| *b == 0).next().unwrap_or(data)).into_owned())
            }
            IFLA_LINK => link = u32_at(data, 0).map(|v| v as i32),
            IFLA_LINK_NETNSID => netnsid = u32_at(data, 0).map(|v| v as i32),
            _ => {}
        }
        at += nl_align(alen);
    }
    out.peer = link.zip(netnsid).filter(|(i, n)| *i > 0 && *n >= 0);
    Ok(Some(out))
}

impl NsSocket {
    /// One link request and its answer.
    fn link(&self, index: i32, attrs: &[(u16, &[u8])]) -> Result<Option<LinkInfo>, String> {
        use std::os::fd::AsRawFd;
        let req = getlink_request(1, index, attrs);
        // SAFETY: `req` is a complete message that outlives the call; a
        // zeroed sockaddr_nl with its family is the kernel's address.
        let sent = unsafe {
            let mut to: libc::sockaddr_nl = std::mem::zeroed();
            to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            libc::sendto(
                self.nl.as_raw_fd(),
                req.as_ptr().cast(),
                req.len(),
                0,
                (&to as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(format!("asking the kernel of {} for a link: {}", self.path, std::io::Error::last_os_error()));
        }
        let mut buf = vec![0u8; ANSWER_ROOM];
        // SAFETY: `buf` has room for its length and outlives the call.
        let got = unsafe { libc::recv(self.nl.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if got < 0 {
            return Err(format!(
                "reading the kernel's link answer in {}: {}",
                self.path,
                std::io::Error::last_os_error()
            ));
        }
        parse_link_answer(&buf[..got as usize])
    }

    /// Interface `name` there, when it exists: its MAC (when it is an
    /// Ethernet link) and, when it is one end of a veth whose other end is
    /// in another namespace, that end's name and MAC (the host side).
    pub fn ends(&self, name: &str) -> Result<Option<Ends>, String> {
        let mut cname = name.as_bytes().to_vec();
        cname.push(0);
        let Some(own) = self.link(0, &[(IFLA_IFNAME, &cname)])? else { return Ok(None) };
        let host = match own.peer {
            Some((index, nsid)) => self
                .link(index, &[(IFLA_TARGET_NETNSID, &nsid.to_ne_bytes())])?
                // The peer names this end back (a kernel that ignored the
                // target id would have answered a link of this namespace).
                .filter(|peer| peer.peer.map(|(i, _)| i) == Some(own.index))
                .and_then(|peer| peer.name.map(|n| (n, peer.mac))),
            None => None,
        };
        Ok(Some(Ends { mac: own.mac, host }))
    }
}

fn mac_text(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

fn prefix_of(mask: u32) -> u8 {
    mask.count_ones() as u8
}

/// The interfaces of the calling thread's namespace (getifaddrs).
fn interfaces() -> Result<Vec<Iface>, String> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(format!("listing interfaces: {}", std::io::Error::last_os_error()));
    }
    let mut out: Vec<Iface> = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, valid
        // until freeifaddrs; its name is a NUL-terminated string, and its
        // address is of the family it says.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: a non-null name is NUL-terminated and lives as the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }.to_string_lossy().into_owned();
        let idx = match out.iter().position(|i| i.name == name) {
            Some(i) => i,
            None => {
                out.push(Iface { name, ..Default::default() });
                out.len() - 1
            }
        };
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: a non-null address points to a sockaddr of the family it
        // names (sockaddr_ll for AF_PACKET, sockaddr_in for AF_INET, its
        // netmask likewise), valid as long as the list.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        if family == libc::AF_PACKET {
            let ll = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_ll) };
            let len = usize::from(ll.sll_halen).min(8);
            if len == 6 {
                out[idx].mac = Some(mac_text(&ll.sll_addr[..len]));
            }
        } else if family == libc::AF_INET {
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            let prefix = if ifa.ifa_netmask.is_null() {
                32
            } else {
                let m = unsafe { &*(ifa.ifa_netmask as *const libc::sockaddr_in) };
                prefix_of(u32::from_be(m.sin_addr.s_addr))
            };
            out[idx].addrs.push((ip, prefix));
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

/// `/proc/net/route`: addresses in hex, in the host's byte order.
fn parse_routes(text: &str) -> Vec<Route> {
    let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(|v| Ipv4Addr::from(v.to_ne_bytes()));
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (iface, dst, gw, mask) = (f.first()?, hex(f.get(1)?)?, hex(f.get(2)?)?, hex(f.get(7)?)?);
            Some(Route {
                iface: iface.to_string(),
                dst,
                prefix: prefix_of(u32::from(mask)),
                gw: (!gw.is_unspecified()).then_some(gw),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse() {
        let t = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth0\t00000000\t01000A0A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                 eth0\t00000A0A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let r = parse_routes(t);
        assert_eq!(
            r,
            vec![
                Route {
                    iface: "eth0".into(),
                    dst: Ipv4Addr::UNSPECIFIED,
                    prefix: 0,
                    gw: Some(Ipv4Addr::new(10, 10, 0, 1))
                },
                Route { iface: "eth0".into(), dst: Ipv4Addr::new(10, 10, 0, 0), prefix: 16, gw: None },
            ]
        );
    }

    #[test]
    fn a_namespace_socket_finds_interfaces_by_name() {
        let s = NsSocket::open("/proc/self/ns/net").unwrap();
        assert!(s.has("lo").unwrap());
        assert!(!s.has("no-such-if0").unwrap());
        assert_eq!(s.ends("no-such-if0").unwrap(), None);
        assert_eq!(s.ends("lo").unwrap(), Some(Ends { mac: None, host: None }), "lo: no Ethernet address, no peer");
        assert!(s.has("").is_err());
        assert!(s.has("a-name-far-too-long-for-linux").is_err());
        assert!(NsSocket::open("/nonexistent/ns").is_err());
        // The thread is back in its own namespace.
        let own = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        assert_eq!(own, std::fs::read_link("/proc/self/ns/net").unwrap());
    }

    #[test]
    fn link_requests_and_answers() {
        let req = getlink_request(7, 0, &[(IFLA_IFNAME, b"eth0\0")]);
        assert_eq!(req.len(), 16 + 16 + 12, "header, ifinfomsg, one attribute padded to 4");
        assert_eq!(u32::from_ne_bytes(req[0..4].try_into().unwrap()) as usize, req.len());
        // An answer: header, ifinfomsg, IFLA_IFNAME, IFLA_ADDRESS,
        // IFLA_LINK, IFLA_LINK_NETNSID.
        let mut a = vec![0u8; 32];
        a[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes());
        a[18..20].copy_from_slice(&libc::ARPHRD_ETHER.to_ne_bytes());
        a[20..24].copy_from_slice(&7i32.to_ne_bytes());
        for (kind, data) in [
            (IFLA_IFNAME, b"lt1-vabc\0".to_vec()),
            (IFLA_ADDRESS, vec![2, 0xab, 0, 1, 2, 3]),
            (IFLA_LINK, 12u32.to_ne_bytes().to_vec()),
            (IFLA_LINK_NETNSID, 0u32.to_ne_bytes().to_vec()),
        ] {
            a.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
            a.extend_from_slice(&kind.to_ne_bytes());
            a.extend_from_slice(&data);
            a.resize(nl_align(a.len()), 0);
        }
        let len = a.len() as u32;
        a[0..4].copy_from_slice(&len.to_ne_bytes());
        let l = parse_link_answer(&a).unwrap().unwrap();
        assert_eq!(
            l,
            LinkInfo {
                index: 7,
                name: Some("lt1-vabc".into()),
                mac: Some("02:ab:00:01:02:03".into()),
                peer: Some((12, 0))
            }
        );
        // ENODEV is no link; a truncated answer is an error.
        let mut e = vec![0u8; 36];
        e[0..4].copy_from_slice(&36u32.to_ne_bytes());
        e[4..6].copy_from_slice(&(libc::NLMSG_ERROR as u16).to_ne_bytes());
        e[16..20].copy_from_slice(&(-libc::ENODEV).to_ne_bytes());
        assert_eq!(parse_link_answer(&e).unwrap(), None);
        assert!(parse_link_answer(&a[..20]).is_err());
        // A link that is not Ethernet (lo's type) has no MAC.
        a[18..20].copy_from_slice(&772u16.to_ne_bytes());
        assert_eq!(parse_link_answer(&a).unwrap().unwrap().mac, None);
    }

    #[test]
    fn own_namespace_reads() {
        let v = read_netns("/proc/self/ns/net").unwrap();
        let lo = v.iface("lo").expect("lo is in every namespace");
        assert!(lo.addrs.iter().any(|(ip, p)| *ip == Ipv4Addr::LOCALHOST && *p == 8), "{lo:?}");
    }
}
