//! Address arithmetic for CINs. The address plan hands each CIN an aligned
//! block of the pool (`--cin-pool`, default `10.0.0.0/8`) of size
//! `--cin-prefix-len` (default /16), lowest free first, starting at
//! `10.10.0.0` when the pool holds it (the legacy rule: the first CIN is
//! `10.10.0.0/16`). A CIN over one CEN uses its whole block; over several
//! CENs, the block is split into equal slices of `/(len + 8)` (at most /28),
//! one per CEN. Gateway at `.1` of a slice, members from `.10` upward.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Offset of the first member address in a slice.
pub const FIRST_MEMBER: u32 = 10;
/// Longest CIN prefix: a /28 still holds a gateway and five members.
pub const MAX_CIN_PREFIX_LEN: u8 = 28;
/// Where the legacy plan starts handing out CINs.
pub const LEGACY_START: Ipv4Addr = Ipv4Addr::new(10, 10, 0, 0);

/// How CIN subnets are allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddrPlan {
    pool: u32,
    pool_len: u8,
    cin_len: u8,
    /// First address handed out (block aligned).
    start: u32,
}

impl Default for AddrPlan {
    fn default() -> Self {
        AddrPlan::new(Ipv4Addr::new(10, 0, 0, 0), 8, 16).expect("the legacy plan is valid")
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

fn size(len: u8) -> u64 {
    1u64 << (32 - u32::from(len))
}

impl AddrPlan {
    /// A plan over `pool/pool_len` with CINs of `/cin_len`. Refuses what
    /// cannot work, saying why.
    pub fn new(pool: Ipv4Addr, pool_len: u8, cin_len: u8) -> Result<AddrPlan, String> {
        if pool_len > 32 {
            return Err(format!("--cin-pool {pool}/{pool_len}: a prefix length is at most 32"));
        }
        let base = u32::from(pool);
        if base & !mask(pool_len) != 0 {
            return Err(format!(
                "--cin-pool {pool}/{pool_len}: not a network address (did you mean {}/{pool_len}?)",
                Ipv4Addr::from(base & mask(pool_len))
            ));
        }
        if cin_len > MAX_CIN_PREFIX_LEN {
            return Err(format!(
                "--cin-prefix-len {cin_len}: at most {MAX_CIN_PREFIX_LEN} (a CIN needs a gateway and room for members from .{FIRST_MEMBER})"
            ));
        }
        if cin_len < pool_len {
            return Err(format!("--cin-prefix-len {cin_len} is shorter than the pool's /{pool_len}: no CIN fits"));
        }
        let legacy = u32::from(LEGACY_START);
        let start = if base & mask(pool_len) == legacy & mask(pool_len) { legacy & mask(cin_len) } else { base };
        Ok(AddrPlan { pool: base, pool_len, cin_len, start })
    }

    /// The pool, as `a.b.c.d/len`.
    pub fn pool(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.pool), self.pool_len)
    }

    pub fn cin_len(&self) -> u8 {
        self.cin_len
    }

    /// The lowest free block given the CIN subnets in use (base -> last
    /// address, with a count where several overlap); `None` when the pool
    /// is full.
    pub fn lowest_free(&self, used: &BTreeMap<u32, (u32, u32)>) -> Option<Ipv4Addr> {
        let block = size(self.cin_len);
        let end = u64::from(self.pool) + size(self.pool_len); // one past the pool
        let mut cand = u64::from(self.start);
        // Ranges that start before the candidate may still cover it: look
        // from the block of the pool's size below.
        let from = u32::try_from(cand.saturating_sub(size(self.pool_len.min(self.cin_len)))).unwrap_or(0);
        for (&b, &(last, _)) in used.range(from..) {
            if cand + block > end {
                return None;
            }
            let (b, last) = (u64::from(b), u64::from(last));
            if last < cand {
                continue;
            }
            if b >= cand + block {
                break;
            }
            // Overlaps: move past it, to the next aligned block.
            cand = (last + 1).div_ceil(block) * block;
        }
        (cand + block <= end).then(|| Ipv4Addr::from(cand as u32))
    }

    /// How many CENs one CIN can span.
    pub fn max_cens(cin_len: u8) -> usize {
        1usize << (slice_len(cin_len) - cin_len)
    }
}

/// The prefix length of the slices of a CIN over several CENs.
pub fn slice_len(cin_len: u8) -> u8 {
    (cin_len + 8).min(MAX_CIN_PREFIX_LEN).max(cin_len)
}

/// The last address of a subnet.
pub fn last_of(base: Ipv4Addr, len: u8) -> u32 {
    (u64::from(u32::from(base)) + size(len) - 1) as u32
}

/// The addresses one CEN gets within a CIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    pub base: Ipv4Addr,
    pub prefix_len: u8,
}

impl Slice {
    /// Slice `k` of the CIN `base/len`; `multi` when the CIN spans several
    /// CENs. `None` when `k` is past the last slice.
    pub fn of(base: Ipv4Addr, len: u8, k: usize, multi: bool) -> Option<Slice> {
        if !multi {
            return Some(Slice { base, prefix_len: len });
        }
        let sl = slice_len(len);
        if k >= 1usize << (sl - len) {
            return None;
        }
        let b = u64::from(u32::from(base)) + (k as u64) * size(sl);
        Some(Slice { base: Ipv4Addr::from(b as u32), prefix_len: sl })
    }

    fn size(&self) -> u32 {
        size(self.prefix_len) as u32
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

    /// The first member address and the last one, as `u32`.
    pub fn member_range(&self) -> (u32, u32) {
        (u32::from(self.base) + FIRST_MEMBER, u32::from(self.base) + self.last_member())
    }

    pub fn to_cidr(&self) -> String {
        format!("{}/{}", self.base, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn used(list: &[(Ipv4Addr, u8)]) -> BTreeMap<u32, (u32, u32)> {
        list.iter().map(|(b, l)| (u32::from(*b), (last_of(*b, *l), 1))).collect()
    }

    #[test]
    fn first_cin_is_10_10() {
        let p = AddrPlan::default();
        assert_eq!(p.lowest_free(&BTreeMap::new()), Some(Ipv4Addr::new(10, 10, 0, 0)));
        let u = used(&[(Ipv4Addr::new(10, 10, 0, 0), 16), (Ipv4Addr::new(10, 11, 0, 0), 16)]);
        assert_eq!(p.lowest_free(&u), Some(Ipv4Addr::new(10, 12, 0, 0)));
        let all: Vec<(Ipv4Addr, u8)> = (10..=255u8).map(|n| (Ipv4Addr::new(10, n, 0, 0), 16)).collect();
        assert_eq!(p.lowest_free(&used(&all)), None);
        // 246 CINs fit, as always.
        assert_eq!(all.len(), 246);
    }

    #[test]
    fn small_cins_fill_the_pool_in_order() {
        let p = AddrPlan::new(Ipv4Addr::new(10, 0, 0, 0), 8, 24).unwrap();
        let mut u = BTreeMap::new();
        for i in 0..1000u32 {
            let b = p.lowest_free(&u).unwrap();
            assert_eq!(u32::from(b), u32::from(Ipv4Addr::new(10, 10, 0, 0)) + i * 256);
            u.insert(u32::from(b), (last_of(b, 24), 1));
        }
        // A /16 made under another plan is skipped over.
        let p16 = AddrPlan::new(Ipv4Addr::new(10, 0, 0, 0), 8, 16).unwrap();
        assert_eq!(p16.lowest_free(&u), Some(Ipv4Addr::new(10, 14, 0, 0)));
        // Another pool starts at its own start.
        let q = AddrPlan::new(Ipv4Addr::new(172, 16, 0, 0), 12, 24).unwrap();
        assert_eq!(q.lowest_free(&BTreeMap::new()), Some(Ipv4Addr::new(172, 16, 0, 0)));
    }

    #[test]
    fn impossible_plans_are_refused() {
        assert!(AddrPlan::new(Ipv4Addr::new(10, 1, 0, 0), 8, 16).unwrap_err().contains("network address"));
        assert!(AddrPlan::new(Ipv4Addr::new(10, 0, 0, 0), 8, 30).unwrap_err().contains("at most 28"));
        assert!(AddrPlan::new(Ipv4Addr::new(10, 0, 0, 0), 16, 8).unwrap_err().contains("shorter"));
        assert!(AddrPlan::new(Ipv4Addr::new(10, 0, 0, 0), 33, 33).is_err());
    }

    #[test]
    fn slices() {
        let b = Ipv4Addr::new(10, 10, 0, 0);
        let whole = Slice::of(b, 16, 0, false).unwrap();
        assert_eq!(whole.to_cidr(), "10.10.0.0/16");
        assert_eq!(whole.gateway(), Ipv4Addr::new(10, 10, 0, 1));
        assert_eq!(whole.addr(FIRST_MEMBER), Ipv4Addr::new(10, 10, 0, 10));
        assert_eq!(whole.addr(whole.last_member()), Ipv4Addr::new(10, 10, 255, 254));
        let s = Slice::of(Ipv4Addr::new(10, 12, 0, 0), 16, 3, true).unwrap();
        assert_eq!(s.to_cidr(), "10.12.3.0/24");
        assert_eq!(s.gateway(), Ipv4Addr::new(10, 12, 3, 1));
        assert_eq!(s.member_offset(Ipv4Addr::new(10, 12, 3, 10)), Some(10));
        assert_eq!(s.member_offset(Ipv4Addr::new(10, 12, 3, 255)), None);
        assert_eq!(s.member_offset(Ipv4Addr::new(10, 12, 3, 1)), None);
        assert_eq!(s.member_offset(Ipv4Addr::new(10, 12, 4, 10)), None);
        assert_eq!(AddrPlan::max_cens(16), 256);
        // A /24 CIN splits into /28s.
        let s = Slice::of(Ipv4Addr::new(10, 10, 5, 0), 24, 2, true).unwrap();
        assert_eq!(s.to_cidr(), "10.10.5.32/28");
        assert_eq!(AddrPlan::max_cens(24), 16);
        assert!(Slice::of(Ipv4Addr::new(10, 10, 5, 0), 24, 16, true).is_none());
        assert_eq!(AddrPlan::max_cens(28), 1);
    }
}
