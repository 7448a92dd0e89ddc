//! Address arithmetic for CINs: a /16 per CIN from 10.10.0.0/16 upward, the
//! whole /16 for a CIN over one CEN, a /24 slice per CEN otherwise, gateway
//! at `.1` of a slice, members from `.10` upward.

use std::net::Ipv4Addr;

/// Lowest second octet a CIN may use (`10.10.0.0/16`).
pub const FIRST_NET: u8 = 10;
/// Offset of the first member address in a slice.
pub const FIRST_MEMBER: u32 = 10;
/// Most CENs a CIN can span (one /24 slice each within its /16).
pub const MAX_CENS_PER_CIN: usize = 256;

/// The subnet of a CIN.
pub fn subnet(net: u8) -> (Ipv4Addr, u8) {
    (Ipv4Addr::new(10, net, 0, 0), 16)
}

/// The lowest free `/16` (second octet) given those in use.
pub fn lowest_free_net(used: impl IntoIterator<Item = u8>) -> Option<u8> {
    let mut taken = [false; 256];
    for n in used {
        taken[n as usize] = true;
    }
    (FIRST_NET..=u8::MAX).find(|n| !taken[*n as usize])
}

/// The addresses one CEN gets within a CIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    pub base: Ipv4Addr,
    pub prefix_len: u8,
}

impl Slice {
    /// Slice `k` of CIN `net`; `multi` when the CIN spans several CENs.
    pub fn of(net: u8, k: usize, multi: bool) -> Slice {
        if multi {
            Slice { base: Ipv4Addr::new(10, net, k as u8, 0), prefix_len: 24 }
        } else {
            Slice { base: Ipv4Addr::new(10, net, 0, 0), prefix_len: 16 }
        }
    }

    fn size(&self) -> u32 {
        1u32 << (32 - u32::from(self.prefix_len))
    }

    /// Highest member offset (the broadcast address is excluded).
    pub fn last_member(&self) -> u32 {
        self.size() - 2
    }

    pub fn addr(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + offset)
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.addr(1)
    }

    /// The member offset of `ip` if it is a member address of this slice.
    pub fn member_offset(&self, ip: Ipv4Addr) -> Option<u32> {
        let off = u32::from(ip).checked_sub(u32::from(self.base))?;
        (FIRST_MEMBER..=self.last_member()).contains(&off).then_some(off)
    }

    pub fn to_cidr(&self) -> String {
        format!("{}/{}", self.base, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_cin_is_10_10() {
        assert_eq!(lowest_free_net([]), Some(10));
        assert_eq!(lowest_free_net([10, 11, 13]), Some(12));
        assert_eq!(lowest_free_net(FIRST_NET..=255), None);
    }

    #[test]
    fn slices() {
        let whole = Slice::of(10, 0, false);
        assert_eq!(whole.to_cidr(), "10.10.0.0/16");
        assert_eq!(whole.gateway(), Ipv4Addr::new(10, 10, 0, 1));
        assert_eq!(whole.addr(FIRST_MEMBER), Ipv4Addr::new(10, 10, 0, 10));
        assert_eq!(whole.addr(whole.last_member()), Ipv4Addr::new(10, 10, 255, 254));
        let s = Slice::of(12, 3, true);
        assert_eq!(s.to_cidr(), "10.12.3.0/24");
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 12, 3, 1));
        assert_eq!(s.member_offset(Ipv4Addr::new(10, 12, 3, 10)), Some(10));
        assert_eq!(s.member_offset(Ipv4Addr::new(10, 12, 3, 255)), None);
        assert_eq!(s.member_offset(Ipv4Addr::new(10, 12, 3, 1)), None);
        assert_eq!(s.member_offset(Ipv4Addr::new(10, 12, 4, 10)), None);
    }
}
