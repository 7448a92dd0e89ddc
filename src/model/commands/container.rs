//! Container commands: create (and bind to a namespace), delete, tag, join
//! and leave a CEN; and the building blocks the other rooms use to add
//! containers to CENs and take them out. A membership is its own record,
//! so a join or a leave is one small record however large the CEN is.

use super::{
    check_container_id, check_id, check_tag, interface_name, ContainerKey, ContainerRec, EntityKey, MemberKey,
    MemberRec, ModelError, NetnsBinding, Record, Result, Standing, Status, Topology, MAX_NETNS_PATH,
};
use std::collections::{BTreeMap, BTreeSet};

fn check_netns_path(p: &str, binding: Option<&NetnsBinding>) -> Result<()> {
    if let Some(b) = binding {
        check_abs_path(&b.path)?;
        if p.is_empty() || p.len() > MAX_NETNS_PATH || p.contains('\0') {
            return Err(ModelError::bad_request(format!("invalid netnsPath '{}'", p.escape_debug())));
        }
        return Ok(());
    }
    check_abs_path(p)
}

fn check_abs_path(p: &str) -> Result<()> {
    if !p.starts_with('/') || p.len() > MAX_NETNS_PATH || p.contains('\0') || p.split('/').any(|s| s == "..") {
        return Err(ModelError::bad_request(format!(
            "invalid netnsPath '{}': an absolute path without '..' is required",
            p.escape_debug()
        )));
    }
    Ok(())
}

impl Topology {
    /// Creates a container if new; sets its tag, and binds it to
    /// `netns_path` (as resolved to `netns`) when given.
    pub(super) fn container_create(
        &mut self,
        host: &str,
        id: &str,
        tag: Option<&str>,
        netns_path: Option<&str>,
        netns: Option<&NetnsBinding>,
    ) -> Result<()> {
        check_id("host id", host)?;
        check_container_id(id)?;
        if let Some(t) = tag {
            check_tag(t)?;
        }
        if let Some(p) = netns_path {
            check_netns_path(p, netns)?;
        }
        let key = ContainerKey::new(host, id);
        let mut rec = self.ensure_container(&key).clone();
        if let Some(p) = netns_path {
            if rec.netns_path.is_none() && self.container_is_made(&key) {
                return Err(ModelError::conflict(format!(
                    "container '{key}' is realized in a managed namespace; destroy its CENs before binding it"
                )));
            }
            // Binding again (the workload restarted, or moved) is
            // allowed: the realizer wires the new namespace with the
            // same interfaces and addresses (they live in the
            // memberships).
            // Binding a container whose workload was reported gone
            // is a retry even when nothing differs (namespace inode
            // numbers are reused: a namespace made again under the
            // same name may have the same identity).
            let retry = rec.realization.status == Status::Failed;
            if rec.netns_path.as_deref() != Some(p) || rec.netns.as_ref() != netns || retry {
                rec.netns_path = Some(p.to_string());
                rec.netns = netns.cloned();
                rec.realization = Standing::default();
            }
        }
        if tag.is_some() {
            rec.tag = tag.map(str::to_string);
        }
        self.put(Record::Container(rec));
        Ok(())
    }

    pub(super) fn container_delete(&mut self, host: &str, id: &str) -> Result<()> {
        let key = self.existing_container(host, id)?;
        self.delete_containers(std::slice::from_ref(&key));
        Ok(())
    }

    /// Sets or (with `None`) clears a container's tag.
    pub(super) fn container_set_tag(&mut self, host: &str, id: &str, tag: Option<&str>) -> Result<()> {
        if let Some(t) = tag {
            check_tag(t)?;
        }
        let key = self.existing_container(host, id)?;
        let mut rec = self.container(&key).cloned().ok_or_else(|| ModelError::internal("container vanished"))?;
        rec.tag = tag.map(str::to_string);
        self.put(Record::Container(rec));
        Ok(())
    }

    /// Joins a container (created if new) to an existing CEN.
    pub(super) fn container_join_cen(&mut self, host: &str, container: &str, cen: &str) -> Result<()> {
        check_id("host id", host)?;
        check_container_id(container)?;
        self.existing_cen(cen)?;
        let key = ContainerKey::new(host, container);
        self.ensure_container(&key);
        self.join_many(cen, std::slice::from_ref(&key))
    }

    pub(super) fn container_leave_cen(&mut self, host: &str, container: &str, cen: &str) -> Result<()> {
        let key = self.existing_container(host, container)?;
        self.existing_cen(cen)?;
        self.remove(&EntityKey::Member(MemberKey::new(cen, &key)));
        Ok(())
    }

    /// The key of a container that must exist.
    pub(super) fn existing_container(&self, host: &str, id: &str) -> Result<ContainerKey> {
        check_id("host id", host)?;
        check_container_id(id)?;
        let key = ContainerKey::new(host, id);
        if self.container(&key).is_none() {
            return Err(ModelError::not_found(format!("no container '{id}' on host '{host}'")));
        }
        Ok(key)
    }

    /// A container, created (with its host) if new.
    pub(super) fn ensure_container(&mut self, key: &ContainerKey) -> &ContainerRec {
        if self.container(key).is_none() {
            self.ensure_host(&key.host);
            self.put(Record::Container(ContainerRec {
                host: key.host.clone(),
                id: key.id.clone(),
                tag: None,
                netns_path: None,
                netns: None,
                realization: Standing::default(),
                default_route: None,
                pool: None,
                runtime: None,
            }));
        }
        self.container(key).expect("container was just ensured")
    }

    /// Adds containers (in order) to a CEN they are not yet in: one
    /// membership record each. An interface name the container already uses
    /// for another CEN is a conflict.
    pub(super) fn join_many(&mut self, cen: &str, keys: &[ContainerKey]) -> Result<()> {
        if self.cen(cen).is_none() {
            return Ok(());
        }
        let ifname = interface_name(cen);
        let mut seq = self.next_seq(cen);
        for key in keys {
            if self.is_member(key, cen) {
                continue;
            }
            self.check_ifname_free(key, cen, &ifname)?;
            self.put(Record::Member(MemberRec {
                cen: cen.to_string(),
                host: key.host.clone(),
                container: key.id.clone(),
                ifname: ifname.clone(),
                seq,
                addresses: BTreeMap::new(),
            }));
            seq += 1;
        }
        Ok(())
    }

    /// A container's interfaces need distinct names: joining `cen` must not
    /// reuse the name of another CEN's interface in it.
    pub(super) fn check_ifname_free(&self, key: &ContainerKey, cen: &str, ifname: &str) -> Result<()> {
        match self.memberships_of(key).into_iter().find(|m| m.cen != cen && m.ifname == ifname) {
            Some(other) => Err(ModelError::conflict(format!(
                "container '{key}' already has an interface named '{ifname}' (for CEN '{}'); CEN '{cen}' would use the same name",
                other.cen
            ))),
            None => Ok(()),
        }
    }

    /// Takes containers out of a CEN: one membership record each.
    pub(super) fn leave_many(&mut self, cen: &str, keys: &BTreeSet<ContainerKey>) {
        for key in keys {
            let k = MemberKey::new(cen, key);
            if self.member(&k).is_some() {
                self.remove(&EntityKey::Member(k));
            }
        }
    }

    /// Removes containers from every CEN (their memberships, and with them
    /// their addresses) and from their hosts.
    pub(super) fn delete_containers(&mut self, keys: &[ContainerKey]) {
        for key in keys {
            let memberships: Vec<EntityKey> =
                self.memberships_of(key).into_iter().map(|m| EntityKey::Member(m.member_key())).collect();
            for m in memberships {
                self.remove(&m);
            }
        }
        for key in keys {
            self.remove(&EntityKey::Container(key.clone()));
        }
    }
}
