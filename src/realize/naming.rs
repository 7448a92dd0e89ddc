//! Deterministic names and link groups for everything the realizer creates.
//!
//! Interface names are limited to 15 bytes. Fabric-side names carry the
//! prefix so that, in `FabricMode::Host`, adoption and cleanup can tell
//! leviathan's links from the host's. Link groups (IFLA_GROUP) tag every
//! link with its CEN, so a CEN can be torn down by one group delete per
//! namespace, and links in namespaces that are not ours (bound by path) can
//! be recognised as ours.

use std::path::PathBuf;

use super::observed::NsId;

/// Kernel limit on interface names (IFNAMSIZ - 1).
pub const IFNAME_MAX: usize = 15;
/// Longest prefix accepted: leaves room for a tag and 5 hash characters.
pub const PREFIX_MAX: usize = 9;

/// Bit set in the group of links that belong to a bridged CEN (their peer,
/// if any, is in the fabric).
/// (Bit 31 stays clear: iproute2 only accepts groups up to `i32::MAX`.)
pub const GROUP_BRIDGE_BIT: u32 = 0x4000_0000;
const GROUP_TAG_SHIFT: u32 = 20;
const GROUP_TAG_MASK: u32 = 0x3ff;
const GROUP_CEN_MASK: u32 = 0xf_ffff;

/// FNV-1a, 64 bits, over parts separated by a NUL byte.
pub fn hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        for b in p.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

fn base36(mut v: u64, len: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::with_capacity(len);
    for _ in 0..len {
        out.push(DIGITS[(v % 36) as usize]);
        v /= 36;
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Whether `name` is acceptable to the kernel as an interface name.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= IFNAME_MAX
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// Whether `prefix` can be used: short, made of characters valid in both
/// interface and file names, and ending in the delimiter `-`, which it
/// holds nowhere else. So no valid prefix is the start of another (`lev-`
/// and `lev-r-` cannot both be prefixes), and a server's names never fall
/// under another server's prefix.
pub fn valid_prefix(prefix: &str) -> bool {
    let Some(stem) = prefix.strip_suffix('-') else { return false };
    !stem.is_empty()
        && prefix.len() <= PREFIX_MAX
        && stem.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
}

/// Why a prefix is refused, for messages.
pub const PREFIX_RULE: &str =
    "2 to 9 characters: letters, digits, '_' or '.', then one '-' at the end (e.g. lev-), so that no prefix is the start of another";

/// Whether a container id can be part of a namespace file name.
pub fn valid_container_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && id != "fabric"
        && id != "."
        && id != ".."
        && id.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
}

/// Name of the bridge of a CEN: `<prefix>b<cenId>` when it fits, otherwise
/// `<prefix>b<hash>`.
pub fn bridge_name(prefix: &str, cen: &str) -> String {
    let room = IFNAME_MAX.saturating_sub(prefix.len() + 1);
    let readable = format!("{prefix}b{cen}");
    if cen.len() <= room && valid_ifname(&readable) {
        readable
    } else {
        format!("{prefix}b{}", base36(hash(&["bridge", cen]), room))
    }
}

/// Name of the VXLAN device of a CEN: `<prefix>x<cenId>` when it fits,
/// otherwise `<prefix>x<hash>`.
pub fn vxlan_name(prefix: &str, cen: &str) -> String {
    let room = IFNAME_MAX.saturating_sub(prefix.len() + 1);
    let readable = format!("{prefix}x{cen}");
    if cen.len() <= room && valid_ifname(&readable) {
        readable
    } else {
        format!("{prefix}x{}", base36(hash(&["vxlan", cen]), room))
    }
}

/// Name of the fabric end of a member's veth: `<prefix>v<hash>`.
pub fn veth_fabric_name(prefix: &str, cen: &str, container: &str) -> String {
    let room = IFNAME_MAX.saturating_sub(prefix.len() + 1);
    format!("{prefix}v{}", base36(hash(&["veth", cen, container]), room))
}

/// The MAC address of a CEN's bridge: locally administered, unicast, from
/// the CEN id alone (so it is the same on every host, as an anycast gateway
/// needs, and never changes as ports come and go).
pub fn bridge_mac(cen: &str) -> [u8; 6] {
    let h = hash(&["mac", cen]).to_be_bytes();
    [0x02, h[0], h[1], h[2], h[3], h[4]]
}

/// The MAC address of a container's interface on a CEN (locally
/// administered, unicast), the same each time the interface is made.
pub fn member_mac(cen: &str, container: &str) -> [u8; 6] {
    let h = hash(&["member-mac", cen, container]).to_be_bytes();
    [0x02, h[0], h[1], h[2], h[3], h[4]]
}

/// A MAC address as people write it: `02:ab:cd:ef:01:23`.
pub fn mac_text(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// File name (in /run/netns) of a managed container namespace.
pub fn netns_name(prefix: &str, container_id: &str) -> String {
    format!("{prefix}{container_id}")
}

/// File name (in /run/netns) of the fabric namespace.
pub fn fabric_netns_name(prefix: &str) -> String {
    format!("{prefix}fabric")
}

/// The file in `/run/netns` of a namespace leviathan names (fabric and
/// managed containers); `None` for the host's and bound ones.
pub fn ns_file(prefix: &str, ns: &NsId) -> Option<String> {
    match ns {
        NsId::Fabric => Some(fabric_netns_name(prefix)),
        NsId::Managed(id) => Some(netns_name(prefix, id)),
        NsId::Host | NsId::Path(_) => None,
    }
}

/// Where a namespace is opened from.
pub fn ns_path(prefix: &str, ns: &NsId) -> PathBuf {
    match ns {
        NsId::Host => PathBuf::from("/proc/self/ns/net"),
        NsId::Path(p) => PathBuf::from(p),
        other => super::netns::netns_path(&ns_file(prefix, other).unwrap_or_default()),
    }
}

fn prefix_tag(prefix: &str) -> u32 {
    ((hash(&["prefix", prefix]) as u32) & (GROUP_TAG_MASK >> 1)) | ((GROUP_TAG_MASK >> 1) + 1)
}

/// Link group of a CEN's links: bridge bit, a 10-bit tag of the prefix
/// (never zero) and 20 bits of the CEN id's hash. Never 0 (the default group).
pub fn cen_group(prefix: &str, cen: &str, bridged: bool) -> u32 {
    let cen_bits = (hash(&["group", prefix, cen]) as u32) & GROUP_CEN_MASK;
    let bridge = if bridged { GROUP_BRIDGE_BIT } else { 0 };
    bridge | (prefix_tag(prefix) << GROUP_TAG_SHIFT) | cen_bits
}

/// Whether a link group was given by a realizer with this prefix.
pub fn is_our_group(prefix: &str, group: u32) -> bool {
    (group >> GROUP_TAG_SHIFT) & GROUP_TAG_MASK == prefix_tag(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_found_where_they_are_named() {
        let m = NsId::Managed("c1".into());
        assert_eq!(ns_file("lev-", &m).as_deref(), Some("lev-c1"));
        assert_eq!(ns_file("lev-", &NsId::Fabric), Some(fabric_netns_name("lev-")));
        assert_eq!(ns_file("lev-", &NsId::Host), None);
        assert_eq!(ns_path("lev-", &m), PathBuf::from("/run/netns/lev-c1"));
        assert_eq!(ns_path("lev-", &NsId::Host), PathBuf::from("/proc/self/ns/net"));
        assert_eq!(ns_path("lev-", &NsId::Path("/proc/9/ns/net".into())), PathBuf::from("/proc/9/ns/net"));
    }

    #[test]
    fn names_fit_and_are_stable() {
        assert_eq!(bridge_name("lev-", "cen1"), "lev-bcen1");
        let long = bridge_name("lev-", "a-very-long-cen-identifier");
        assert_eq!(long.len(), IFNAME_MAX);
        assert_eq!(long, bridge_name("lev-", "a-very-long-cen-identifier"));
        let v = veth_fabric_name("lt12345-", "cen1", "host1/c1");
        assert_eq!(v.len(), IFNAME_MAX);
        assert!(v.starts_with("lt12345-v"));
        assert_ne!(v, veth_fabric_name("lt12345-", "cen1", "host1/c2"));
        assert!(valid_ifname(&bridge_name("lev-", "has/slash")));
    }

    #[test]
    fn groups_are_tagged() {
        let g = cen_group("lev-", "cen1", true);
        assert_ne!(g, 0);
        assert!(g & GROUP_BRIDGE_BIT != 0);
        assert!(g <= i32::MAX as u32);
        assert!(is_our_group("lev-", g));
        assert!(is_our_group("lev-", cen_group("lev-", "x", false)));
        assert!(!is_our_group("lev-", 0));
        assert_ne!(cen_group("lev-", "cen1", false), 0);
    }

    #[test]
    fn validation() {
        assert!(valid_prefix("lev-"));
        assert!(valid_prefix("t-") && valid_prefix("lt12345-") && valid_prefix("a.b_c-"));
        assert!(!valid_prefix(""));
        assert!(!valid_prefix("much-too-long-"));
        // No prefix is the start of another: the delimiter ends it.
        assert!(!valid_prefix("lev-r-") && !valid_prefix("lev") && !valid_prefix("-") && !valid_prefix("a-b-"));
        assert!(!valid_ifname("eth0/1"));
        assert!(!valid_ifname("sixteen-chars-xx"));
        assert!(!valid_container_id("fabric"));
        assert!(!valid_container_id("a/b"));
    }
}
