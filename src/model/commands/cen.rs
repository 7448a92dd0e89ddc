//! CEN commands: create, delete, import a CEN file (one host's members),
//! make and destroy. A new CEN gets the lowest free VNI.

use super::{
    check_container_id, check_id, check_unique, CenRec, CenSpec, ContainerKey, EntityKey, Making, ModelError, Record,
    Result, Topology, FIRST_VNI, LAST_VNI,
};
use std::collections::BTreeSet;

impl Topology {
    /// Creates a CEN unless it exists.
    pub(super) fn cen_create(&mut self, id: &str) -> Result<()> {
        check_id("CEN id", id)?;
        if self.cen(id).is_none() {
            self.new_cen(id)?;
        }
        Ok(())
    }

    /// Deletes a CEN with its memberships, and takes it off the CINs over it.
    pub(super) fn cen_delete(&mut self, id: &str) -> Result<()> {
        self.existing_cen(id)?;
        let members: Vec<EntityKey> = self.members(id).map(|m| EntityKey::Member(m.member_key())).collect();
        for k in members {
            self.remove(&k);
        }
        for mut cin in self.cins_over(id).into_iter().cloned().collect::<Vec<_>>() {
            cin.cens.retain(|c| c != id);
            self.put(Record::Cin(cin));
        }
        self.remove(&EntityKey::Cen(id.to_string()));
        Ok(())
    }

    /// Imports one host's CEN file: every id is checked before anything
    /// changes.
    pub(super) fn cen_import(&mut self, host: &str, cens: &[CenSpec]) -> Result<()> {
        check_id("host id", host)?;
        for spec in cens {
            check_id("CEN id", &spec.id)?;
            for c in &spec.containers {
                check_container_id(c)?;
            }
        }
        check_unique("CEN id", cens.iter().map(|s| &s.id))?;
        for spec in cens {
            self.import_cen(host, spec)?;
        }
        Ok(())
    }

    /// Marks CENs made or not (all must exist).
    pub(super) fn cen_set_made(&mut self, ids: &[String], made: bool, realizing: bool) -> Result<()> {
        for id in ids {
            self.existing_cen(id)?;
        }
        for id in ids {
            self.set_cen_made(id, made, realizing);
        }
        Ok(())
    }

    pub(super) fn existing_cen(&self, id: &str) -> Result<()> {
        check_id("CEN id", id)?;
        if self.cen(id).is_none() {
            return Err(ModelError::not_found(format!("no CEN '{id}'")));
        }
        Ok(())
    }

    /// A new CEN, with the lowest free VNI.
    pub(super) fn new_cen(&mut self, id: &str) -> Result<()> {
        let vni = self.free_vni().ok_or_else(|| {
            ModelError::conflict(format!("no VNI is left for CEN '{id}' (all {FIRST_VNI}..={LAST_VNI} are in use)"))
        })?;
        self.put(Record::Cen(CenRec { id: id.to_string(), vni, making: Making::default() }));
        Ok(())
    }

    /// Makes or destroys one CEN (a CIN made makes its CENs this way too).
    pub(super) fn set_cen_made(&mut self, id: &str, made: bool, realizing: bool) {
        if let Some(mut rec) = self.cen(id).cloned() {
            if rec.making.set_made(made, realizing) {
                self.put(Record::Cen(rec));
            }
        }
    }

    fn import_cen(&mut self, host: &str, spec: &CenSpec) -> Result<()> {
        if self.cen(&spec.id).is_none() {
            self.new_cen(&spec.id)?;
        }
        let mut wanted: Vec<ContainerKey> = Vec::with_capacity(spec.containers.len());
        let mut seen = BTreeSet::new();
        for c in &spec.containers {
            if seen.insert(c.as_str()) {
                wanted.push(ContainerKey::new(host, c.as_str()));
            }
        }
        for key in &wanted {
            self.ensure_container(key);
        }
        // Members of this host not in the file leave; members of other hosts
        // stay; new ones join in file order after those already present.
        let leaving: BTreeSet<ContainerKey> = self
            .members(&spec.id)
            .filter(|m| m.host == host && !seen.contains(m.container.as_str()))
            .map(|m| m.key())
            .collect();
        self.leave_many(&spec.id, &leaving);
        self.join_many(&spec.id, &wanted)
    }
}
