//! Pool commands: import a CPool file (one host's pools) and delete a pool.
//! A pool of size n is the containers `<id>-1` to `<id>-n` on its host,
//! joined to the CENs of its CINs; importing again resizes it and moves it
//! between CENs in one change per CEN, however large the pool.

use super::{
    check_container_id, check_id, check_unique, ContainerKey, CpoolRec, CpoolSpec, EntityKey, ModelError, Record,
    Result, Topology, MAX_POOL_SIZE,
};
use std::collections::BTreeSet;

/// Checks one pool of a file on its own: id, size, image, CIN list, and at
/// most one default route.
fn check_pool(p: &CpoolSpec) -> Result<()> {
    check_id("pool id", &p.id)?;
    if p.start_with > MAX_POOL_SIZE {
        return Err(ModelError::bad_request(format!(
            "pool '{}': start_with {} is over the limit of {MAX_POOL_SIZE}",
            p.id, p.start_with
        )));
    }
    if p.image.len() > 256 || p.image.chars().any(char::is_control) {
        return Err(ModelError::bad_request(format!("pool '{}': invalid type", p.id)));
    }
    for c in &p.cins {
        check_id("CIN id", &c.cin)?;
    }
    check_unique(&format!("CIN id in pool '{}'", p.id), p.cins.iter().map(|c| &c.cin))?;
    let defaults: Vec<&str> = p.cins.iter().filter(|c| c.default_route).map(|c| c.cin.as_str()).collect();
    if defaults.len() > 1 {
        return Err(ModelError::conflict(format!(
            "pool '{}' asks for {} default routes ({}); a container has at most one",
            p.id,
            defaults.len(),
            defaults.join(", ")
        )));
    }
    Ok(())
}

impl Topology {
    /// Imports one host's pools: every pool is checked before anything
    /// changes.
    pub(super) fn cpool_import(&mut self, host: &str, pools: &[CpoolSpec]) -> Result<()> {
        check_id("host id", host)?;
        for p in pools {
            check_pool(p)?;
        }
        check_unique("pool id", pools.iter().map(|p| &p.id))?;
        for p in pools {
            self.import_pool(host, p)?;
        }
        Ok(())
    }

    /// Deletes a pool and its containers.
    pub(super) fn cpool_delete(&mut self, id: &str) -> Result<()> {
        check_id("pool id", id)?;
        let pool = self.cpool(id).cloned().ok_or_else(|| ModelError::not_found(format!("no pool '{id}'")))?;
        let keys = self.pool_members(&pool.id);
        self.delete_containers(&keys);
        self.remove(&EntityKey::Cpool(id.to_string()));
        Ok(())
    }

    /// The CENs a pool entry names: a CIN's CENs, or (legacy) a CEN.
    fn pool_target_cens(&self, pool: &str, name: &str) -> Result<Vec<String>> {
        if let Some(cin) = self.cin(name) {
            return Ok(cin.cens.clone());
        }
        if self.cen(name).is_some() {
            return Ok(vec![name.to_string()]);
        }
        Err(ModelError::not_found(format!("no CIN or CEN named '{name}' (listed by pool '{pool}')")))
    }

    /// Resizes one pool, moves it to its CINs' CENs and sets its
    /// containers' default route.
    fn import_pool(&mut self, host: &str, spec: &CpoolSpec) -> Result<()> {
        let old = self.cpool(&spec.id).cloned();
        let mut targets: Vec<String> = Vec::new();
        for c in &spec.cins {
            for cen in self.pool_target_cens(&spec.id, &c.cin)? {
                if !targets.contains(&cen) {
                    targets.push(cen);
                }
            }
        }
        let default_route = spec.cins.iter().find(|c| c.default_route).map(|c| c.cin.clone());
        let old_targets: Vec<String> = match &old {
            Some(o) => o
                .cins
                .iter()
                .filter_map(|c| self.pool_target_cens(&o.id, &c.cin).ok())
                .flatten()
                .filter(|cen| !targets.contains(cen))
                .collect(),
            None => Vec::new(),
        };
        // Containers past the new size go.
        let past: Vec<ContainerKey> = self
            .pool_members(&spec.id)
            .into_iter()
            .filter(|key| {
                let n = key.id.strip_prefix(&format!("{}-", spec.id)).and_then(|n| n.parse::<u32>().ok());
                key.host != host || n.is_none_or(|n| n == 0 || n > spec.start_with)
            })
            .collect();
        self.delete_containers(&past);
        let mut members = Vec::with_capacity(spec.start_with as usize);
        for n in 1..=spec.start_with {
            let id = format!("{}-{n}", spec.id);
            check_container_id(&id)?;
            let key = ContainerKey::new(host, &id);
            let mut rec = self.ensure_container(&key).clone();
            if let (Some(have), Some(want)) = (&rec.default_route, &default_route) {
                if have != want && rec.pool.as_deref() != Some(spec.id.as_str()) {
                    return Err(ModelError::conflict(format!(
                        "container '{key}' already has a default route via '{have}'; pool '{}' asks for one via '{want}'",
                        spec.id
                    )));
                }
            }
            rec.pool = Some(spec.id.clone());
            rec.default_route = default_route.clone();
            if self.container(&key) != Some(&rec) {
                self.put(Record::Container(rec));
            }
            members.push(key);
        }
        // One change per CEN, however large the pool.
        let set: BTreeSet<ContainerKey> = members.iter().cloned().collect();
        for cen in &old_targets {
            self.leave_many(cen, &set);
        }
        for cen in &targets {
            self.join_many(cen, &members)?;
        }
        let rec = CpoolRec {
            id: spec.id.clone(),
            image: spec.image.clone(),
            start_with: spec.start_with,
            cins: spec.cins.clone(),
        };
        if old.as_ref() != Some(&rec) {
            self.put(Record::Cpool(rec));
        }
        Ok(())
    }
}
