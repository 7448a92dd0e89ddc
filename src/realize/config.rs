//! How a realizer is set up: its prefix, where the fabric lives, and this
//! host's underlay for CENs that span hosts. Checked before anything is
//! done with it ([`check_prefix`]): a prefix names everything leviathan
//! makes, so a bad one is refused up front, never half-used.

use serde::{Deserialize, Serialize};

use super::error::{KernelError, RealizeError};
use super::{naming, nl};

/// Where the host side (bridges, bridge-side veth ends) lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum FabricMode {
    /// In the leviathan-owned namespace `<prefix>fabric` (default).
    #[default]
    Netns,
    /// In the host's own namespace (the legacy look).
    Host,
}

/// Realizer configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Carried by everything created (namespace files, fabric link names).
    /// At most 9 characters of `[A-Za-z0-9._-]`.
    pub prefix: String,
    pub fabric: FabricMode,
    /// This host's underlay, where CENs spanning hosts send their VXLAN
    /// traffic; `None` on a single host (a CEN with members elsewhere then
    /// fails with a message saying so).
    #[serde(default)]
    pub underlay: Option<Underlay>,
}

impl Default for Config {
    fn default() -> Self {
        Config { prefix: "lev-".into(), fabric: FabricMode::Netns, underlay: None }
    }
}

/// The interface holding this host's VTEP address, in the namespace the
/// server runs in (where VXLAN sockets are opened).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Underlay {
    /// The VTEP address (VXLAN's local address).
    pub local: std::net::Ipv4Addr,
    /// The interface's index.
    pub ifindex: u32,
    /// The interface's MTU: VXLAN costs 50 bytes of it, so members of
    /// CENs get `mtu - 50`.
    pub mtu: u32,
}

/// UDP port of VXLAN (IANA).
pub const VXLAN_PORT: u16 = 4789;
/// Bytes VXLAN over IPv4 adds to a frame (outer IPv4, UDP, VXLAN and
/// Ethernet headers).
pub const VXLAN_OVERHEAD: u32 = 50;

impl Underlay {
    /// Finds the interface holding `local` in the calling thread's network
    /// namespace.
    pub async fn find(local: std::net::Ipv4Addr) -> Result<Underlay, RealizeError> {
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| KernelError::io("socket", "", &e).context("opening netlink"))?;
        let task = tokio::spawn(conn);
        let r = nl::get_underlay(&handle, local).await;
        task.abort();
        let (ifindex, mtu) = r?.ok_or(RealizeError::NoUnderlay(local))?;
        if mtu <= VXLAN_OVERHEAD + 68 {
            return Err(RealizeError::UnderlayMtu(mtu));
        }
        Ok(Underlay { local, ifindex, mtu })
    }

    /// The MTU of member interfaces and VXLAN devices.
    pub fn member_mtu(&self) -> u32 {
        self.mtu - VXLAN_OVERHEAD
    }
}

/// Refuses a configuration whose prefix cannot name what is made.
pub(super) fn check_config(cfg: &Config) -> Result<(), RealizeError> {
    if !naming::valid_prefix(&cfg.prefix) {
        return Err(RealizeError::Config(format!("prefix {:?} must be {}", cfg.prefix, naming::PREFIX_RULE)));
    }
    Ok(())
}

/// Checks a prefix before anything is done with it.
pub fn check_prefix(prefix: &str) -> Result<(), RealizeError> {
    check_config(&Config { prefix: prefix.to_string(), fabric: FabricMode::Netns, underlay: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_checked_before_use() {
        assert!(check_prefix("lev-").is_ok());
        let e = check_prefix("much-too-long-a-prefix").err();
        assert!(matches!(e, Some(RealizeError::Config(ref m)) if m.contains("much-too-long-a-prefix")), "{e:?}");
        assert!(check_prefix("bad/one").is_err());
    }

    #[test]
    fn members_leave_room_for_vxlan() {
        let u = Underlay { local: std::net::Ipv4Addr::LOCALHOST, ifindex: 1, mtu: 1500 };
        assert_eq!(u.member_mtu(), 1450);
    }
}
