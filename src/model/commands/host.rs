//! Host commands: create, delete (only when empty), announce a VTEP address.

use super::{check_id, EntityKey, HostRec, ModelError, Record, Result, Topology};
use std::net::Ipv4Addr;

impl Topology {
    pub(super) fn host_create(&mut self, id: &str) -> Result<()> {
        check_id("host id", id)?;
        self.ensure_host(id);
        Ok(())
    }

    /// A host goes only once it has no containers.
    pub(super) fn host_delete(&mut self, id: &str) -> Result<()> {
        check_id("host id", id)?;
        if self.host(id).is_none() {
            return Err(ModelError::not_found(format!("no host '{id}'")));
        }
        let n = self.containers_of_host(id).len();
        if n > 0 {
            return Err(ModelError::conflict(format!("host '{id}' still has {n} containers")));
        }
        self.remove(&EntityKey::Host(id.to_string()));
        Ok(())
    }

    /// A host's leviathan says where its underlay (VTEP) address is; the
    /// host is created if new.
    pub(super) fn host_announce(&mut self, id: &str, vtep: Option<Ipv4Addr>) -> Result<()> {
        check_id("host id", id)?;
        self.ensure_host(id);
        if self.host(id).is_some_and(|h| h.vtep != vtep) {
            self.put(Record::Host(HostRec { id: id.to_string(), vtep }));
        }
        Ok(())
    }

    pub(super) fn ensure_host(&mut self, id: &str) {
        if self.host(id).is_none() {
            self.put(Record::Host(HostRec { id: id.to_string(), vtep: None }));
        }
    }
}
