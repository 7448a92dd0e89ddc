//! How things stand: status reports from the realizer, and the transitions
//! a make or a destroy brings in the same change (PREPARING, DESTROYING).
//!
//! A CEN or CIN that spans hosts which announced a VTEP address has one
//! part per host; its overall status is worked out from the parts
//! ([`Standing::of_parts`]). A report names the `made` flag it was worked
//! out for: one about an object made or destroyed since is stale and
//! ignored.

use super::{Making, Record, Result, Standing, Status, StatusReport, Topology};
use std::collections::BTreeMap;

/// The status an object takes, in the same change, when it is made or
/// destroyed: PREPARING until the realizer reports; DESTROYING where
/// something was realized, else straight back to PENDING.
fn transition(current: &Standing, made: bool) -> Standing {
    let status = match (made, current.status) {
        (true, _) => Status::Preparing,
        (false, Status::Pending) => Status::Pending,
        (false, _) => Status::Destroying,
    };
    Standing { status, message: None }
}

/// Parts in the same change as a make (PREPARING) or a destroy
/// (DESTROYING where something was realized).
fn transition_parts(parts: &mut BTreeMap<String, Standing>, made: bool) {
    parts.retain(|_, r| made || r.status != Status::Pending);
    for r in parts.values_mut() {
        *r = transition(r, made);
    }
    parts.retain(|_, r| r.status != Status::Pending);
}

impl Making {
    /// Marks made or not; with `realizing`, the status and the parts move
    /// in the same change. Making what is made but FAILED is a retry: it
    /// goes back to PREPARING (a change, so the realizer tries again).
    /// Returns whether anything changed.
    pub(super) fn set_made(&mut self, made: bool, realizing: bool) -> bool {
        let retry = made && realizing && self.made && self.realization.status == Status::Failed;
        if retry {
            self.realization = transition(&self.realization, true);
            transition_parts(&mut self.parts, true);
            return true;
        }
        if self.made == made {
            return false;
        }
        self.made = made;
        if realizing {
            self.realization = transition(&self.realization, made);
            transition_parts(&mut self.parts, made);
        }
        true
    }

    /// Takes a report: of one host's part (then the whole is worked out from
    /// the parts), or of the whole.
    fn take_report(&mut self, r: &StatusReport) {
        let Some(host) = &r.host else {
            self.realization = r.realization.clone();
            return;
        };
        if r.realization.status == Status::Pending {
            self.parts.remove(host);
        } else {
            self.parts.insert(host.clone(), r.realization.clone());
        }
        // When the last part went, nothing is left to do anywhere.
        let none_left = Standing { status: if self.made { Status::Ready } else { Status::Pending }, message: None };
        self.realization = Standing::of_parts(&self.parts).unwrap_or(none_left);
    }

    /// New hosts' parts, PREPARING; the whole is worked out again.
    pub(super) fn add_parts(&mut self, hosts: Vec<String>) {
        self.parts.extend(hosts.into_iter().map(|h| (h, Standing { status: Status::Preparing, message: None })));
        self.realization = Standing::of_parts(&self.parts).unwrap_or_default();
    }
}

impl Topology {
    /// Takes the realizer's reports; stale ones (about an object made or
    /// destroyed since) and ones about objects gone are ignored.
    pub(super) fn set_status(&mut self, reports: &[StatusReport]) -> Result<()> {
        for r in reports {
            let Some(rec) = self.get(&r.target).cloned() else { continue };
            let rec = match rec {
                Record::Cen(mut c) if c.making.made == r.made => {
                    c.making.take_report(r);
                    Record::Cen(c)
                }
                Record::Cin(mut c) if c.making.made == r.made => {
                    c.making.take_report(r);
                    Record::Cin(c)
                }
                Record::Container(mut c)
                    if c.realization != r.realization && self.container_is_made(&c.key()) == r.made =>
                {
                    c.realization = r.realization.clone();
                    Record::Container(c)
                }
                _ => continue,
            };
            self.put(rec);
        }
        Ok(())
    }
}
