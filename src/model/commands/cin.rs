//! CIN commands: import a CIN map, delete, make and destroy. A new CIN
//! takes the lowest free subnet of the pool; making a CIN makes its CENs
//! (addresses need interfaces).

use super::{
    check_id, check_unique, AddrPlan, CinRec, CinSpec, EntityKey, Making, ModelError, Record, Result, Topology,
};

impl Topology {
    /// Imports CINs: every id, CEN list and size is checked before anything
    /// changes.
    pub(super) fn cin_import(&mut self, cins: &[CinSpec]) -> Result<()> {
        for spec in cins {
            check_id("CIN id", &spec.id)?;
            for c in &spec.cens {
                check_id("CEN id", c)?;
            }
            check_unique(&format!("CEN id in CIN '{}'", spec.id), spec.cens.iter())?;
            let len = self.cin(&spec.id).map_or(self.addr_plan().cin_len(), |c| c.prefix_len);
            let max = AddrPlan::max_cens(len);
            if spec.cens.len() > max {
                return Err(ModelError::bad_request(format!(
                    "CIN '{}' lists {} CENs; at most {max} fit its /{len}",
                    spec.id,
                    spec.cens.len()
                )));
            }
        }
        check_unique("CIN id", cins.iter().map(|s| &s.id))?;
        for spec in cins {
            for c in &spec.cens {
                if self.cen(c).is_none() {
                    return Err(ModelError::not_found(format!("no CEN '{c}' (listed by CIN '{}')", spec.id)));
                }
            }
        }
        for spec in cins {
            self.import_cin(spec)?;
        }
        Ok(())
    }

    pub(super) fn cin_delete(&mut self, id: &str) -> Result<()> {
        self.existing_cin(id)?;
        self.remove(&EntityKey::Cin(id.to_string()));
        Ok(())
    }

    /// Marks CINs made or not (all must exist); making a CIN makes its CENs.
    pub(super) fn cin_set_made(&mut self, ids: &[String], made: bool, realizing: bool) -> Result<()> {
        for id in ids {
            self.existing_cin(id)?;
        }
        for id in ids {
            let mut cin = self.cin(id).cloned().ok_or_else(|| ModelError::internal("CIN vanished"))?;
            if made {
                // Addresses need interfaces: making a CIN makes its CENs.
                for cen in &cin.cens {
                    self.set_cen_made(cen, true, realizing);
                }
            }
            if cin.making.set_made(made, realizing) {
                self.put(Record::Cin(cin));
            }
        }
        Ok(())
    }

    fn existing_cin(&self, id: &str) -> Result<()> {
        check_id("CIN id", id)?;
        if self.cin(id).is_none() {
            return Err(ModelError::not_found(format!("no CIN '{id}'")));
        }
        Ok(())
    }

    /// A new CIN gets the lowest free subnet; an existing one keeps its
    /// subnet and takes the new CEN list.
    fn import_cin(&mut self, spec: &CinSpec) -> Result<()> {
        let rec = match self.cin(&spec.id).cloned() {
            Some(mut rec) => {
                rec.cens = spec.cens.clone();
                rec
            }
            None => {
                let subnet = self.free_subnet().ok_or_else(|| {
                    ModelError::conflict(format!(
                        "no free /{} left in the CIN pool {} for CIN '{}'",
                        self.addr_plan().cin_len(),
                        self.addr_plan().pool(),
                        spec.id
                    ))
                })?;
                CinRec {
                    id: spec.id.clone(),
                    cens: spec.cens.clone(),
                    subnet,
                    prefix_len: self.addr_plan().cin_len(),
                    making: Making::default(),
                }
            }
        };
        if self.cin(&spec.id) != Some(&rec) {
            self.put(Record::Cin(rec));
        }
        Ok(())
    }
}
