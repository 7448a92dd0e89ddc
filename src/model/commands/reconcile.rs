//! After a command, before its images are taken: addresses and host parts
//! where the command needs them, and nowhere else (so a join costs one
//! membership however large the CEN or CIN).
//!
//! Addresses: a member of a CEN has one address per CIN over the CEN, in
//! that CEN's slice, held by it alone. A valid address stays; a missing or
//! invalid one gets the lowest free address of the slice, in join order.

use super::{EntityKey, MemberKey, MemberRec, ModelError, Record, Result, Slice, Topology};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

impl Topology {
    /// Gives addresses where the running command needs them: every
    /// interface of a CIN whose CEN list changed (a new CIN, CENs added,
    /// removed or reordered), and every membership it created or changed.
    /// Nothing else is looked at, so a join costs one membership.
    pub(super) fn reconcile_touched(&mut self) -> Result<()> {
        let Some(journal) = self.journal_keys() else { return Ok(()) };
        let mut members: Vec<MemberKey> = Vec::new();
        let mut spread: BTreeSet<EntityKey> = BTreeSet::new();
        for key in journal {
            match &key {
                EntityKey::Member(k) => {
                    spread.insert(EntityKey::Cen(k.cen.clone()));
                    for cin in self.cins_over(&k.cen).into_iter().filter(|c| c.making.made) {
                        spread.insert(EntityKey::Cin(cin.id.clone()));
                        if cin.cens.len() > 1 {
                            spread.extend(cin.cens.iter().map(|c| EntityKey::Cen(c.clone())));
                        }
                    }
                }
                EntityKey::Cen(_) | EntityKey::Cin(_) => {
                    spread.insert(key.clone());
                }
                _ => {}
            }
            match key {
                EntityKey::Cin(id) => {
                    let before: Vec<String> = match self.journal_before(&EntityKey::Cin(id.clone())) {
                        Some(Record::Cin(c)) => c.cens.clone(),
                        _ => Vec::new(),
                    };
                    let after: Vec<String> = self.cin(&id).map(|c| c.cens.clone()).unwrap_or_default();
                    if before != after {
                        for cen in before.iter().filter(|c| !after.contains(c)) {
                            self.strip_cin(&id, cen);
                        }
                        self.reconcile_cin(&id)?;
                    }
                }
                EntityKey::Member(k) => members.push(k),
                _ => {}
            }
        }
        // In join order, so pools and imports hand out addresses in order.
        let mut members: Vec<(String, u64, MemberKey)> =
            members.into_iter().filter_map(|k| self.member(&k).map(|m| (m.cen.clone(), m.seq, k))).collect();
        members.sort();
        for (_, _, k) in members {
            self.reconcile_member(&k)?;
        }
        for key in spread {
            self.spread_parts(&key);
        }
        Ok(())
    }

    /// A made CEN or CIN gets a part, PREPARING, for each host it is now
    /// present on that announced a VTEP address and has none yet (hosts
    /// that left report their part gone themselves).
    fn spread_parts(&mut self, key: &EntityKey) {
        let (hosts, making) = match key {
            EntityKey::Cen(id) => match self.cen(id) {
                Some(c) => (self.presence(id), &c.making),
                None => return,
            },
            EntityKey::Cin(id) => match self.cin(id) {
                Some(c) => (self.cin_presence(c), &c.making),
                None => return,
            },
            _ => return,
        };
        let new: Vec<String> = hosts
            .into_iter()
            .filter(|h| !making.parts.contains_key(*h) && self.host(h).is_some_and(|r| r.vtep.is_some()))
            .map(str::to_string)
            .collect();
        if !making.made || new.is_empty() {
            return;
        }
        match self.get(key).cloned() {
            Some(Record::Cen(mut c)) => {
                c.making.add_parts(new);
                self.put(Record::Cen(c));
            }
            Some(Record::Cin(mut c)) => {
                c.making.add_parts(new);
                self.put(Record::Cin(c));
            }
            _ => {}
        }
    }

    /// Takes CIN `cin`'s addresses off the members of `cen`.
    fn strip_cin(&mut self, cin: &str, cen: &str) {
        let holding: Vec<MemberRec> = self.members(cen).filter(|m| m.addresses.contains_key(cin)).cloned().collect();
        for mut m in holding {
            m.addresses.remove(cin);
            self.put(Record::Member(m));
        }
    }

    /// Whether `ip` is a valid address of a member in this slice, held by
    /// it alone.
    fn address_ok(&self, cin: &str, slice: &Slice, ip: Ipv4Addr) -> bool {
        slice.member_offset(ip).is_some() && !self.address_shared(cin, ip)
    }

    /// One membership's addresses: one per CIN over its CEN; a valid one
    /// stays, a missing or invalid one gets the lowest free address of the
    /// slice.
    fn reconcile_member(&mut self, k: &MemberKey) -> Result<()> {
        let Some(mut m) = self.member(k).cloned() else { return Ok(()) };
        let cins: Vec<(String, Slice)> =
            self.cins_over(&k.cen).into_iter().filter_map(|c| Some((c.id.clone(), self.slice(c, &k.cen)?))).collect();
        let before = m.addresses.len();
        m.addresses.retain(|cin, _| cins.iter().any(|(c, _)| c == cin));
        if m.addresses.len() != before {
            self.put(Record::Member(m.clone()));
        }
        for (cin, slice) in cins {
            if m.addresses.get(&cin).is_some_and(|ip| self.address_ok(&cin, &slice, *ip)) {
                continue;
            }
            if m.addresses.remove(&cin).is_some() {
                self.put(Record::Member(m.clone()));
            }
            let ip = self.free_address(&cin, &slice, None).ok_or_else(|| {
                ModelError::conflict(format!(
                    "CIN '{cin}' has no free address left in {} for container '{}' on CEN '{}'",
                    slice.to_cidr(),
                    k.container,
                    k.cen
                ))
            })?;
            m.addresses.insert(cin, ip);
            self.put(Record::Member(m.clone()));
        }
        Ok(())
    }

    /// Gives every member interface of a CIN an address: existing addresses
    /// that are still valid stay, freed ones are reused lowest first, new
    /// members get the lowest free address of their CEN's slice in join order.
    fn reconcile_cin(&mut self, id: &str) -> Result<()> {
        let Some(cin) = self.cin(id).cloned() else { return Ok(()) };
        for cen_id in &cin.cens {
            let Some(slice) = self.slice(&cin, cen_id) else { continue };
            let mut pending = Vec::new();
            for m in self.members_in_order(cen_id) {
                match m.addresses.get(id) {
                    Some(ip) if self.address_ok(id, &slice, *ip) => {}
                    _ => pending.push(m.clone()),
                }
            }
            // Free the invalid ones first, so they can be handed out again.
            for m in &mut pending {
                if m.addresses.remove(id).is_some() {
                    self.put(Record::Member(m.clone()));
                }
            }
            let mut cursor = None;
            for mut m in pending {
                let ip = self.free_address(id, &slice, cursor).ok_or_else(|| {
                    ModelError::conflict(format!(
                        "CIN '{id}' has no free address left in {} for container '{}' on CEN '{cen_id}'",
                        slice.to_cidr(),
                        m.container
                    ))
                })?;
                cursor = Some(u32::from(ip));
                m.addresses.insert(id.to_string(), ip);
                self.put(Record::Member(m));
            }
        }
        Ok(())
    }
}
