//! Containers a runtime attaches through its own hook (CNI ADD/DEL,
//! netavark setup/teardown): one command binds the container to the
//! runtime's namespace and joins it to a CEN under the interface name the
//! runtime chose; one takes it out again.
//!
//! Invariants: a runtime never takes over a container made through the API
//! (a conflict); a detach deletes only the runtime's own container of that
//! runtime id (a pod made again under the same name is left alone when the
//! old sandbox is deleted late); a container leaves the model when its last
//! CEN is detached.

use super::{
    check_container_id, check_id, ContainerKey, EntityKey, MemberKey, MemberRec, ModelError, NetnsBinding, Record,
    Result, RuntimeRef, Topology,
};
use crate::model::ids::{MAX_IFNAME_LEN, RESERVED_IFNAMES};
use std::collections::BTreeMap;

/// Longest runtime container id kept (CNI ids are 64 hex characters).
pub const MAX_RUNTIME_ID: usize = 256;

/// An interface name the kernel accepts and that no namespace has already.
fn check_ifname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IFNAME_LEN
        && name != "."
        && name != ".."
        && !RESERVED_IFNAMES.contains(&name)
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if ok {
        Ok(())
    } else {
        Err(ModelError::bad_request(format!(
            "invalid interface name '{}': 1 to {MAX_IFNAME_LEN} visible characters without '/' or ':', not 'lo'",
            name.escape_debug()
        )))
    }
}

fn check_runtime(r: &RuntimeRef) -> Result<()> {
    if r.id.is_empty() || r.id.len() > MAX_RUNTIME_ID || !r.id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ModelError::bad_request(format!(
            "invalid runtime container id '{}': 1 to {MAX_RUNTIME_ID} visible characters",
            r.id.escape_debug()
        )));
    }
    Ok(())
}

impl Topology {
    /// Binds a container (created if new) to the runtime's namespace and
    /// joins it to `cen` as `ifname`. Attaching again the same way changes
    /// nothing; a new namespace (the sandbox was made again) is bound.
    pub(super) fn container_attach(
        &mut self,
        host: &str,
        id: &str,
        (netns_path, netns): (&str, Option<&NetnsBinding>),
        cen: &str,
        ifname: &str,
        runtime: &RuntimeRef,
    ) -> Result<()> {
        check_id("host id", host)?;
        check_container_id(id)?;
        check_ifname(ifname)?;
        check_runtime(runtime)?;
        self.existing_cen(cen)?;
        let key = ContainerKey::new(host, id);
        if let Some(c) = self.container(&key) {
            match &c.runtime {
                None => {
                    return Err(ModelError::conflict(format!(
                        "container '{key}' was made through the API, not by a container runtime; a runtime cannot attach it"
                    )))
                }
                Some(r) if r.origin != runtime.origin => {
                    return Err(ModelError::conflict(format!(
                        "container '{key}' was attached by another kind of runtime ({:?})",
                        r.origin
                    )))
                }
                Some(_) => {}
            }
        }
        self.container_create(host, id, None, Some(netns_path), netns)?;
        let mut rec = self.container(&key).cloned().ok_or_else(|| ModelError::internal("container vanished"))?;
        if rec.runtime.as_ref() != Some(runtime) {
            rec.runtime = Some(runtime.clone());
            self.put(Record::Container(rec));
        }
        if let Some(m) = self.member(&MemberKey::new(cen, &key)) {
            if m.ifname != ifname {
                return Err(ModelError::conflict(format!(
                    "container '{key}' is in CEN '{cen}' already, as interface '{}' (not '{ifname}')",
                    m.ifname
                )));
            }
            return Ok(());
        }
        self.check_ifname_free(&key, cen, ifname)?;
        let seq = self.next_seq(cen);
        self.put(Record::Member(MemberRec {
            cen: cen.to_string(),
            host: host.to_string(),
            container: id.to_string(),
            ifname: ifname.to_string(),
            seq,
            addresses: BTreeMap::new(),
        }));
        Ok(())
    }

    /// Takes the runtime's container out of `cen` (of every CEN when
    /// `None`), and out of the model once it is in none. A container that
    /// is gone, or is not this runtime's of that id, is left as it is.
    pub(super) fn container_detach(
        &mut self,
        host: &str,
        id: &str,
        cen: Option<&str>,
        runtime: &RuntimeRef,
    ) -> Result<()> {
        check_id("host id", host)?;
        check_container_id(id)?;
        check_runtime(runtime)?;
        let key = ContainerKey::new(host, id);
        let Some(c) = self.container(&key) else { return Ok(()) };
        if c.runtime.as_ref() != Some(runtime) {
            return Ok(());
        }
        if let Some(cen) = cen {
            let member = MemberKey::new(cen, &key);
            if self.member(&member).is_some() {
                self.remove(&EntityKey::Member(member));
            }
            if !self.memberships_of(&key).is_empty() {
                return Ok(());
            }
        }
        self.delete_containers(std::slice::from_ref(&key));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::model::{Command, ContainerKey, ErrorCode, Origin, RuntimeRef, Topology, Wiring};

    fn attach(id: &str, rid: &str, ifname: &str) -> Command {
        Command::ContainerAttach {
            host: "h".into(),
            id: id.into(),
            netns_path: format!("/run/netns/{id}"),
            netns: None,
            cen: "front".into(),
            ifname: ifname.into(),
            runtime: RuntimeRef { origin: Origin::Cni, id: rid.into() },
        }
    }

    fn detach(id: &str, rid: &str) -> Command {
        Command::ContainerDetach {
            host: "h".into(),
            id: id.into(),
            cen: Some("front".into()),
            runtime: RuntimeRef { origin: Origin::Cni, id: rid.into() },
        }
    }

    #[test]
    fn attach_detach_and_the_bridge_from_the_first_runtime_container() {
        let mut t = Topology::new();
        t.execute(&Command::CenCreate { id: "front".into() }).unwrap();
        t.execute(&attach("cni-a", "a1", "eth0")).unwrap();
        let cen = t.cen("front").unwrap().clone();
        assert_eq!(t.wiring(&cen), Some(Wiring::Bridge), "one runtime container already has its interface");
        let key = ContainerKey::new("h", "cni-a");
        assert_eq!(t.memberships_of(&key)[0].ifname, "eth0");
        // Again the same way: nothing changes.
        assert!(t.prepare(&attach("cni-a", "a1", "eth0")).unwrap().is_empty());
        assert_eq!(t.execute(&attach("cni-a", "a1", "net1")).unwrap_err().code, ErrorCode::Conflict);
        assert_eq!(t.execute(&attach("cni-a", "a1", "a/b")).unwrap_err().code, ErrorCode::BadRequest);
        assert_eq!(t.execute(&attach("cni-a", "a1", "lo")).unwrap_err().code, ErrorCode::BadRequest);
        // A container of the API is not taken over.
        t.execute(&Command::ContainerCreate {
            host: "h".into(),
            id: "api".into(),
            tag: None,
            netns_path: None,
            netns: None,
        })
        .unwrap();
        assert_eq!(t.execute(&attach("api", "x", "eth0")).unwrap_err().code, ErrorCode::Conflict);
        // Another sandbox of the same name took the container over: the
        // old one's late DEL leaves it alone.
        t.execute(&attach("cni-a", "a2", "eth0")).unwrap();
        assert!(t.prepare(&detach("cni-a", "a1")).unwrap().is_empty());
        t.execute(&detach("cni-a", "a2")).unwrap();
        assert!(t.container(&key).is_none());
        // Gone: a repeated DEL changes nothing and succeeds.
        assert!(t.prepare(&detach("cni-a", "a2")).unwrap().is_empty());
        assert_eq!(t.execute(&attach("cni-b", "b", "eth0")).map(|_| ()), Ok(()));
        let mut to_nowhere = attach("cni-c", "c", "eth0");
        if let Command::ContainerAttach { cen, .. } = &mut to_nowhere {
            *cen = "nope".into();
        }
        let e = t.execute(&to_nowhere).unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
    }
}
