//! The last pass of a plan: the CIN slices' addresses and routes on the
//! accepted CENs' interfaces, and, on bridges spanning hosts, the FDB
//! entries (remote VTEPs, and remote members' MACs) and neighbours, each
//! added or removed one by one.
//!
//! Invariant: an entry that is there is left alone; one we made that is no
//! longer wanted is removed.

use std::net::Ipv4Addr;

use super::super::observed::LinkState;
use super::{Addrs, Op, Planner, Step, FLOOD, L2};

impl<'a> Planner<'a> {
    /// Addresses and routes of the accepted CENs' interfaces, and their
    /// bridges' FDB and neighbour entries.
    pub(super) fn addresses_and_routes(&mut self) {
        let l2 = std::mem::take(&mut self.l2);
        for x in &l2 {
            if !self.out.errors.contains_key(&x.cen) {
                self.l2_of(x);
            }
        }
        let addrs = std::mem::take(&mut self.addrs);
        for a in &addrs {
            if self.out.errors.contains_key(&a.cen) {
                continue;
            }
            let fresh = self.recreated.contains(&(a.ns.clone(), a.name.clone()));
            let link = if fresh { None } else { self.find(&a.ns, &a.name) };
            self.addresses_of(a, link);
            self.routes_of(a, link);
        }
    }

    fn l2_of(&mut self, x: &L2) {
        let fabric = self.fabric.clone();
        let cens = vec![x.cen.clone()];
        if let Some(vx) = &x.vxlan {
            let fresh = self.recreated.contains(&(fabric.clone(), vx.clone()));
            let link = if fresh { None } else { self.find(&fabric, vx) };
            for remote in &x.remotes {
                if !link.is_some_and(|l| l.fdb.contains(remote)) {
                    self.steps.push(Step {
                        op: Op::AddFdb { ns: fabric.clone(), name: vx.clone(), mac: FLOOD, remote: *remote },
                        cens: cens.clone(),
                        cin: None,
                    });
                }
            }
            if let Some(l) = link {
                for remote in l.fdb.difference(&x.remotes) {
                    self.steps.push(Step {
                        op: Op::DeleteFdb { ns: fabric.clone(), index: l.index, mac: FLOOD, remote: *remote },
                        cens: vec![],
                        cin: None,
                    });
                }
            }
            // One entry per member elsewhere: a MAC that moved to another
            // host is replaced in place.
            for (mac, remote) in &x.macs {
                if link.and_then(|l| l.macs.get(mac)) != Some(remote) {
                    self.steps.push(Step {
                        op: Op::AddFdb { ns: fabric.clone(), name: vx.clone(), mac: *mac, remote: *remote },
                        cens: cens.clone(),
                        cin: None,
                    });
                }
            }
            if let Some(l) = link {
                for (mac, remote) in l.macs.iter().filter(|(m, _)| !x.macs.contains_key(*m)) {
                    self.steps.push(Step {
                        op: Op::DeleteFdb { ns: fabric.clone(), index: l.index, mac: *mac, remote: *remote },
                        cens: vec![],
                        cin: None,
                    });
                }
            }
        }
        let fresh = self.recreated.contains(&(fabric.clone(), x.bridge.clone()));
        let link = if fresh { None } else { self.find(&fabric, &x.bridge) };
        for (ip, mac) in &x.neighbours {
            if link.and_then(|l| l.neighbours.get(ip)) != Some(mac) {
                self.steps.push(Step {
                    op: Op::AddNeigh { ns: fabric.clone(), name: x.bridge.clone(), ip: *ip, mac: *mac },
                    cens: cens.clone(),
                    cin: None,
                });
            }
        }
        if let Some(l) = link {
            for ip in l.neighbours.keys().filter(|ip| !x.neighbours.contains_key(*ip)) {
                self.steps.push(Step {
                    op: Op::DeleteNeigh { ns: fabric.clone(), index: l.index, ip: *ip },
                    cens: vec![],
                    cin: None,
                });
            }
        }
    }

    fn addresses_of(&mut self, a: &Addrs, link: Option<&LinkState>) {
        let have: &[(Ipv4Addr, u8)] = link.map(|l| l.addresses.as_slice()).unwrap_or(&[]);
        for (cin, ip, plen) in &a.addrs {
            if !have.contains(&(*ip, *plen)) {
                self.steps.push(Step {
                    op: Op::AddAddr { ns: a.ns.clone(), name: a.name.clone(), ip: *ip, prefix_len: *plen },
                    cens: vec![a.cen.clone()],
                    cin: Some(cin.clone()),
                });
            }
        }
        if let Some(l) = link {
            for (ip, plen) in have {
                if !a.addrs.iter().any(|(_, i, p)| i == ip && p == plen) {
                    self.steps.push(Step {
                        op: Op::DeleteAddr { ns: a.ns.clone(), index: l.index, ip: *ip, prefix_len: *plen },
                        cens: vec![],
                        cin: None,
                    });
                }
            }
        }
    }

    fn routes_of(&mut self, a: &Addrs, link: Option<&LinkState>) {
        let routes_have: Vec<(Ipv4Addr, u8, Ipv4Addr)> = match (link, self.cur.ns(&a.ns)) {
            (Some(l), Some(st)) => {
                st.routes.iter().filter(|r| r.oif == l.index).map(|r| (r.dest, r.prefix_len, r.via)).collect()
            }
            _ => Vec::new(),
        };
        for (cin, dest, plen, via) in &a.routes {
            if !routes_have.contains(&(*dest, *plen, *via)) {
                self.steps.push(Step {
                    op: Op::AddRoute {
                        ns: a.ns.clone(),
                        name: a.name.clone(),
                        dest: *dest,
                        prefix_len: *plen,
                        via: *via,
                    },
                    cens: vec![a.cen.clone()],
                    cin: Some(cin.clone()),
                });
            }
        }
        if let Some(l) = link {
            for (dest, plen, via) in &routes_have {
                if !a.routes.iter().any(|(_, d, p, v)| d == dest && p == plen && v == via) {
                    self.steps.push(Step {
                        op: Op::DeleteRoute {
                            ns: a.ns.clone(),
                            dest: *dest,
                            prefix_len: *plen,
                            via: *via,
                            oif: l.index,
                        },
                        cens: vec![],
                        cin: None,
                    });
                }
            }
        }
    }
}
