//! `apply`, `destroy`, `delete`: the difference between a file and the
//! server as a plan of GraphQL mutations, printed, then sent in order:
//! creates and changes, destroys, deletes, makes (so that the kernel work
//! happens on the final topology). Make and destroy run without waiting
//! and are followed through the `operation` subscription.
//!
//! Pool containers belong to their pools: they are never listed as CEN
//! members, joined, left or deleted by a plan; their pool is.

use super::client::Client;
use super::file::{split_member, CinSpec, Kind, Loaded};
use super::progress;
use super::state::{show_key, Current, Key};
use anyhow::bail;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// CENs or CINs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Realized {
    Cen,
    Cin,
}

impl Realized {
    fn word(self) -> &'static str {
        match self {
            Realized::Cen => "cen",
            Realized::Cin => "cin",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct PoolWant {
    pub id: String,
    pub host: String,
    pub image: String,
    pub start_with: u32,
    pub cins: Vec<(String, bool)>,
}

/// What to send, in order.
#[derive(Debug, Default)]
pub struct Plan {
    pub hosts_create: Vec<String>,
    /// New containers: key, tag, namespace.
    pub containers_create: Vec<(Key, Option<String>, Option<String>)>,
    /// Tag changes: key, old, new.
    pub containers_tag: Vec<(Key, Option<String>, Option<String>)>,
    /// Empty new CENs.
    pub cens_create: Vec<String>,
    /// Membership by host: host -> CEN -> the members on that host after.
    pub cen_import: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    /// Lines describing the CEN changes.
    pub cen_lines: Vec<(char, String)>,
    /// CINs: id, new, CENs after.
    pub cins_import: Vec<(String, bool, Vec<String>)>,
    pub cin_lines: Vec<(char, String)>,
    pub pools_import: Vec<(PoolWant, bool)>,
    pub cins_destroy: Vec<String>,
    pub cens_destroy: Vec<String>,
    pub pools_delete: Vec<String>,
    pub cins_delete: Vec<String>,
    pub cens_delete: Vec<String>,
    pub containers_delete: Vec<Key>,
    pub hosts_delete: Vec<String>,
    pub cens_make: Vec<String>,
    pub cins_make: Vec<String>,
    /// Of the makes, those that retry a FAILED one.
    pub retries: BTreeSet<(Realized, String)>,
}

/// Counts by what happens.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub created: usize,
    pub changed: usize,
    pub made: usize,
    pub destroyed: usize,
    pub deleted: usize,
}

impl Counts {
    pub fn total(&self) -> usize {
        self.created + self.changed + self.made + self.destroyed + self.deleted
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} created, {} changed, {} made, {} destroyed, {} deleted",
            self.created, self.changed, self.made, self.destroyed, self.deleted
        )
    }
}

impl Plan {
    pub fn counts(&self) -> Counts {
        let new_cens = self.cen_lines.iter().filter(|(c, _)| *c == '+').count();
        let new_cins = self.cins_import.iter().filter(|(_, n, _)| *n).count();
        let new_pools = self.pools_import.iter().filter(|(_, n)| *n).count();
        Counts {
            created: self.hosts_create.len() + self.containers_create.len() + new_cens + new_cins + new_pools,
            changed: self.containers_tag.len()
                + (self.cen_lines.len() - new_cens)
                + (self.cins_import.len() - new_cins)
                + (self.pools_import.len() - new_pools),
            made: self.cens_make.len() + self.cins_make.len(),
            destroyed: self.cens_destroy.len() + self.cins_destroy.len(),
            deleted: self.pools_delete.len()
                + self.cins_delete.len()
                + self.cens_delete.len()
                + self.containers_delete.len()
                + self.hosts_delete.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.counts().total() == 0
    }

    /// One line per change, `+` create, `~` change, `^` make, `v` destroy,
    /// `-` delete, in the order they are sent.
    pub fn render(&self, h: &str) -> String {
        let mut out = String::new();
        let tag = |t: &Option<String>| t.clone().unwrap_or_else(|| "(none)".into());
        for x in &self.hosts_create {
            let _ = writeln!(out, "  + host {x}");
        }
        for (k, t, ns) in &self.containers_create {
            let mut extra = String::new();
            if let Some(t) = t {
                let _ = write!(extra, " tag {t}");
            }
            if let Some(ns) = ns {
                let _ = write!(extra, " netns {ns}");
            }
            let _ = writeln!(out, "  + container {}{extra}", show_key(k, h));
        }
        for (k, from, to) in &self.containers_tag {
            let _ = writeln!(out, "  ~ container {}: tag {} -> {}", show_key(k, h), tag(from), tag(to));
        }
        for (c, line) in self.cen_lines.iter().chain(&self.cin_lines) {
            let _ = writeln!(out, "  {c} {line}");
        }
        for (p, new) in &self.pools_import {
            let cins: Vec<String> =
                p.cins.iter().map(|(c, d)| if *d { format!("{c} (default route)") } else { c.clone() }).collect();
            let _ = writeln!(
                out,
                "  {} pool {}: {} x {} over {}",
                if *new { '+' } else { '~' },
                p.id,
                p.start_with,
                p.image,
                if cins.is_empty() { "nothing".into() } else { cins.join(", ") }
            );
        }
        for x in &self.cins_destroy {
            let _ = writeln!(out, "  v destroy cin {x}");
        }
        for x in &self.cens_destroy {
            let _ = writeln!(out, "  v destroy cen {x}");
        }
        for x in &self.pools_delete {
            let _ = writeln!(out, "  - pool {x}");
        }
        for x in &self.cins_delete {
            let _ = writeln!(out, "  - cin {x}");
        }
        for x in &self.cens_delete {
            let _ = writeln!(out, "  - cen {x}");
        }
        for k in &self.containers_delete {
            let _ = writeln!(out, "  - container {}", show_key(k, h));
        }
        for x in &self.hosts_delete {
            let _ = writeln!(out, "  - host {x}");
        }
        for x in &self.cens_make {
            let retry = if self.retries.contains(&(Realized::Cen, x.clone())) { " (retry: FAILED)" } else { "" };
            let _ = writeln!(out, "  ^ make cen {x}{retry}");
        }
        for x in &self.cins_make {
            let retry = if self.retries.contains(&(Realized::Cin, x.clone())) { " (retry: FAILED)" } else { "" };
            let _ = writeln!(out, "  ^ make cin {x}{retry}");
        }
        out
    }
}

fn resolve(member: &str, h: &str) -> Key {
    match split_member(member) {
        (Some(host), id) => (host.to_string(), id.to_string()),
        (None, id) => (h.to_string(), id.to_string()),
    }
}

/// The plan that makes the server match the file.
pub fn plan_apply(file: &Loaded, cur: &Current, prune: bool) -> anyhow::Result<Plan> {
    let t = &file.topology;
    let mut plan = Plan::default();
    for x in &t.hosts {
        if !cur.hosts.contains(&x.value) {
            plan.hosts_create.push(x.value.clone());
        }
    }
    let mut wanted = plan_containers(&mut plan, file, cur)?;
    wanted.extend(plan_cens(&mut plan, file, cur));
    plan_cins(&mut plan, file, cur);
    let mut hosts = plan_pools(&mut plan, file, cur);
    hosts.extend(t.hosts.iter().map(|x| x.value.clone()));
    hosts.extend(wanted.iter().map(|k| k.0.clone()));
    if file.manages_made() {
        plan_made(&mut plan, file, cur);
    }
    if prune {
        plan_prune(&mut plan, file, cur, &wanted, &hosts);
    }
    Ok(plan)
}

/// Containers listed on their own: created, or their tag set. Returns
/// their keys.
fn plan_containers(plan: &mut Plan, file: &Loaded, cur: &Current) -> anyhow::Result<BTreeSet<Key>> {
    let h = cur.host_id.as_str();
    let mut wanted = BTreeSet::new();
    for c in &file.topology.containers {
        let key = (c.host.as_ref().map_or(h, |x| &x.value).to_string(), c.id.value.clone());
        wanted.insert(key.clone());
        let Some(have) = cur.containers.get(&key) else {
            plan.containers_create.push((key, c.tag.clone(), c.netns_path.clone()));
            continue;
        };
        if let Some(pool) = &have.pool {
            bail!("container '{}' belongs to pool '{pool}': list the pool, not the container", show_key(&key, h));
        }
        if have.netns_path != c.netns_path {
            bail!(
                "container '{}' is bound to {}, the file says {}: delete it first (leviathan delete) to change that",
                show_key(&key, h),
                have.netns_path.as_deref().unwrap_or("a managed namespace"),
                c.netns_path.as_deref().unwrap_or("a managed namespace")
            );
        }
        if have.tag != c.tag {
            plan.containers_tag.push((key, have.tag.clone(), c.tag.clone()));
        }
    }
    Ok(wanted)
}

/// CENs and their members; pool containers are left to their pools, and a
/// legacy CEN file speaks for the server's own host only. Returns the
/// members named.
fn plan_cens(plan: &mut Plan, file: &Loaded, cur: &Current) -> BTreeSet<Key> {
    let h = cur.host_id.as_str();
    let legacy = file.kind != Kind::Topology;
    let mut named = BTreeSet::new();
    for c in &file.topology.cens {
        let want: Vec<Key> = c.members.iter().map(|m| resolve(&m.value, h)).collect();
        named.extend(want.iter().cloned());
        let have: Vec<Key> = cur.cens.get(&c.id.value).map(|x| x.members.clone()).unwrap_or_default();
        let managed = |k: &Key| !cur.is_pool_container(k) && (!legacy || k.0 == h);
        let want_set: BTreeSet<&Key> = want.iter().filter(|k| managed(k)).collect();
        let have_set: BTreeSet<&Key> = have.iter().filter(|k| managed(k)).collect();
        let joins: Vec<String> =
            want.iter().filter(|k| managed(k) && !have_set.contains(k)).map(|k| show_key(k, h)).collect();
        let leaves: Vec<String> =
            have.iter().filter(|k| managed(k) && !want_set.contains(k)).map(|k| show_key(k, h)).collect();
        let new = !cur.cens.contains_key(&c.id.value);
        if new && want.is_empty() {
            plan.cens_create.push(c.id.value.clone());
            plan.cen_lines.push(('+', format!("cen {} (no members)", c.id.value)));
            continue;
        }
        if !new && joins.is_empty() && leaves.is_empty() {
            continue;
        }
        // Every host with a member before or after gets the CEN's list of
        // its members after (the server keeps other hosts' members).
        let hosts: BTreeSet<&str> =
            if legacy { [h].into() } else { want.iter().chain(&have).map(|k| k.0.as_str()).collect() };
        for host in hosts {
            let mut list: Vec<String> =
                have.iter().filter(|k| k.0 == host && cur.is_pool_container(k)).map(|k| k.1.clone()).collect();
            list.extend(want.iter().filter(|k| k.0 == host && !cur.is_pool_container(k)).map(|k| k.1.clone()));
            plan.cen_import.entry(host.to_string()).or_default().insert(c.id.value.clone(), list);
        }
        if new {
            plan.cen_lines.push(('+', format!("cen {}: {}", c.id.value, joins.join(", "))));
        } else {
            let mut parts: Vec<String> = joins.iter().map(|j| format!("+{j}")).collect();
            parts.extend(leaves.iter().map(|l| format!("-{l}")));
            plan.cen_lines.push(('~', format!("cen {}: {}", c.id.value, parts.join(" "))));
        }
    }
    named
}

fn plan_cins(plan: &mut Plan, file: &Loaded, cur: &Current) {
    for c in &file.topology.cins {
        let want: Vec<String> = c.cens.iter().map(|x| x.value.clone()).collect();
        match cur.cins.get(&c.id.value) {
            None => {
                plan.cin_lines.push(('+', format!("cin {} over {}", c.id.value, want.join(", "))));
                plan.cins_import.push((c.id.value.clone(), true, want));
            }
            Some(have) if have.cens != want => {
                let line = format!("cin {}: over {} -> {}", c.id.value, have.cens.join(", "), want.join(", "));
                plan.cin_lines.push(('~', line));
                plan.cins_import.push((c.id.value.clone(), false, want));
            }
            Some(_) => {}
        }
    }
}

/// Pools, created or changed. Returns the hosts they are on.
fn plan_pools(plan: &mut Plan, file: &Loaded, cur: &Current) -> BTreeSet<String> {
    let h = cur.host_id.as_str();
    let mut hosts = BTreeSet::new();
    for p in &file.topology.pools {
        let want = PoolWant {
            id: p.id.value.clone(),
            host: p.host.as_ref().map_or(h, |x| &x.value).to_string(),
            image: p.image.clone(),
            start_with: p.start_with,
            cins: p.cins.iter().map(|c| (c.cin.value.clone(), c.default_route)).collect(),
        };
        hosts.insert(want.host.clone());
        match cur.pools.get(&want.id) {
            None => plan.pools_import.push((want, true)),
            Some(have) => {
                let same_host = have.host.as_deref().is_none_or(|x| x == want.host);
                if have.image != want.image
                    || have.start_with != want.start_with
                    || have.cins != want.cins
                    || !same_host
                {
                    plan.pools_import.push((want, false));
                }
            }
        }
    }
    hosts
}

/// Made or not, as a topology file says (a CEN under a made CIN is made).
fn plan_made(plan: &mut Plan, file: &Loaded, cur: &Current) {
    let t = &file.topology;
    let made_cins: Vec<&CinSpec> = t.cins.iter().filter(|c| c.made == Some(true)).collect();
    let under_made_cin: BTreeSet<&str> =
        made_cins.iter().flat_map(|c| c.cens.iter().map(|x| x.value.as_str())).collect();
    for c in &t.cins {
        let have = cur.cins.get(&c.id.value).map(|x| (x.made, x.status.as_str()));
        decide(plan, Realized::Cin, &c.id.value, c.made == Some(true), have);
    }
    for c in &t.cens {
        let want = c.made == Some(true) || under_made_cin.contains(c.id.value.as_str());
        let have = cur.cens.get(&c.id.value).map(|x| (x.made, x.status.as_str()));
        decide(plan, Realized::Cen, &c.id.value, want, have);
    }
}

/// `--prune`: what the file does not name goes (made objects are
/// destroyed first). A legacy file prunes only its own kind.
fn plan_prune(plan: &mut Plan, file: &Loaded, cur: &Current, containers: &BTreeSet<Key>, hosts: &BTreeSet<String>) {
    let t = &file.topology;
    let all = file.kind == Kind::Topology;
    if all || file.kind == Kind::LegacyPool {
        let keep: BTreeSet<&str> = t.pools.iter().map(|p| p.id.value.as_str()).collect();
        plan.pools_delete = cur.pools.keys().filter(|x| !keep.contains(x.as_str())).cloned().collect();
    }
    if all || file.kind == Kind::LegacyCin {
        let keep: BTreeSet<&str> = t.cins.iter().map(|c| c.id.value.as_str()).collect();
        for (id, c) in cur.cins.iter().filter(|(id, _)| !keep.contains(id.as_str())) {
            if c.made {
                plan.cins_destroy.push(id.clone());
            }
            plan.cins_delete.push(id.clone());
        }
    }
    if all || file.kind == Kind::LegacyCen {
        let keep: BTreeSet<&str> = t.cens.iter().map(|c| c.id.value.as_str()).collect();
        for (id, c) in cur.cens.iter().filter(|(id, _)| !keep.contains(id.as_str())) {
            if c.made {
                plan.cens_destroy.push(id.clone());
            }
            plan.cens_delete.push(id.clone());
        }
    }
    if !all {
        return;
    }
    // Pool containers go with their pools; hosts with a kept pool stay.
    let doomed: BTreeSet<&String> = plan.pools_delete.iter().collect();
    let mut busy: BTreeSet<&str> = BTreeSet::new();
    for (k, c) in &cur.containers {
        match &c.pool {
            None if !containers.contains(k) => plan.containers_delete.push(k.clone()),
            Some(p) if !doomed.contains(p) => {
                busy.insert(&k.0);
            }
            _ => {}
        }
    }
    for x in &cur.hosts {
        if *x != cur.host_id && !hosts.contains(x) && !busy.contains(x.as_str()) {
            plan.hosts_delete.push(x.clone());
        }
    }
}

fn decide(plan: &mut Plan, kind: Realized, id: &str, want: bool, have: Option<(bool, &str)>) {
    let (made, status) = have.unwrap_or((false, "PENDING"));
    fn list(plan: &mut Plan, kind: Realized, make: bool) -> &mut Vec<String> {
        match (kind, make) {
            (Realized::Cen, true) => &mut plan.cens_make,
            (Realized::Cin, true) => &mut plan.cins_make,
            (Realized::Cen, false) => &mut plan.cens_destroy,
            (Realized::Cin, false) => &mut plan.cins_destroy,
        }
    }
    if want && (!made || status == "FAILED") {
        if made {
            plan.retries.insert((kind, id.to_string()));
        }
        list(plan, kind, true).push(id.to_string());
    } else if !want && made {
        list(plan, kind, false).push(id.to_string());
    }
}

/// The plan of `destroy FILE`: unmake what the file makes.
pub fn plan_destroy(file: &Loaded, cur: &Current) -> Plan {
    let t = &file.topology;
    let mut plan = Plan::default();
    for c in &t.cins {
        if cur.cins.get(&c.id.value).is_some_and(|x| x.made) {
            plan.cins_destroy.push(c.id.value.clone());
        }
    }
    for c in &t.cens {
        if cur.cens.get(&c.id.value).is_some_and(|x| x.made) {
            plan.cens_destroy.push(c.id.value.clone());
        }
    }
    plan
}

/// The plan of `delete FILE`: destroy, then delete, what the file names.
pub fn plan_delete(file: &Loaded, cur: &Current) -> Plan {
    let h = cur.host_id.as_str();
    let t = &file.topology;
    let mut plan = plan_destroy(file, cur);
    for p in &t.pools {
        if cur.pools.contains_key(&p.id.value) {
            plan.pools_delete.push(p.id.value.clone());
        }
    }
    for c in &t.cins {
        if cur.cins.contains_key(&c.id.value) {
            plan.cins_delete.push(c.id.value.clone());
        }
    }
    for c in &t.cens {
        if cur.cens.contains_key(&c.id.value) {
            plan.cens_delete.push(c.id.value.clone());
        }
    }
    let mut keys: BTreeSet<Key> = BTreeSet::new();
    for c in &t.containers {
        keys.insert((c.host.as_ref().map_or(h, |x| &x.value).to_string(), c.id.value.clone()));
    }
    for c in &t.cens {
        keys.extend(c.members.iter().map(|m| resolve(&m.value, h)));
    }
    plan.containers_delete =
        keys.into_iter().filter(|k| cur.containers.get(k).is_some_and(|c| c.pool.is_none())).collect();
    for x in &t.hosts {
        let used = cur.containers.keys().any(|k| k.0 == x.value && !plan.containers_delete.contains(k));
        if x.value != h && cur.hosts.contains(&x.value) && !used {
            plan.hosts_delete.push(x.value.clone());
        }
    }
    plan
}

/// What went wrong in a make or destroy: the objects and the kernel's
/// reasons.
#[derive(Debug)]
pub struct Failed(pub String);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Failed {}

/// Sends a plan, in order. Stops at the first error.
pub async fn execute(client: &Client, plan: &Plan) -> anyhow::Result<i64> {
    let mut revision = 0;
    let rev = |d: &Value, field: &str| d[field]["revision"].as_i64().unwrap_or(0);
    for x in &plan.hosts_create {
        let d = client
            .gql("mutation($i: HostCreateInput!) { hostCreate(input: $i) { revision } }", json!({"i": {"id": x}}))
            .await?;
        revision = revision.max(rev(&d, "hostCreate"));
    }
    for ((host, id), tag, ns) in &plan.containers_create {
        let d = client
            .gql(
                "mutation($i: ContainerCreateInput!) { containerCreate(input: $i) { revision } }",
                json!({"i": {"hostId": host, "id": id, "tag": tag, "netnsPath": ns}}),
            )
            .await?;
        revision = revision.max(rev(&d, "containerCreate"));
    }
    for ((host, id), _, tag) in &plan.containers_tag {
        let d = client
            .gql(
                "mutation($i: ContainerSetTagInput!) { containerSetTag(input: $i) { revision } }",
                json!({"i": {"hostId": host, "id": id, "tag": tag}}),
            )
            .await?;
        revision = revision.max(rev(&d, "containerSetTag"));
    }
    for x in &plan.cens_create {
        let d = client
            .gql("mutation($i: CenCreateInput!) { cenCreate(input: $i) { revision } }", json!({"i": {"id": x}}))
            .await?;
        revision = revision.max(rev(&d, "cenCreate"));
    }
    for (host, cens) in &plan.cen_import {
        let cens: Vec<Value> = cens.iter().map(|(id, m)| json!({"id": id, "containerIds": m})).collect();
        let d = client
            .gql(
                "mutation($i: CenImportInput!) { cenImport(input: $i) { revision } }",
                json!({"i": {"hostId": host, "cens": cens}}),
            )
            .await?;
        revision = revision.max(rev(&d, "cenImport"));
    }
    if !plan.cins_import.is_empty() {
        let cins: Vec<Value> = plan.cins_import.iter().map(|(id, _, cens)| json!({"id": id, "cenIds": cens})).collect();
        let d = client
            .gql("mutation($i: CinImportInput!) { cinImport(input: $i) { revision } }", json!({"i": {"cins": cins}}))
            .await?;
        revision = revision.max(rev(&d, "cinImport"));
    }
    let mut pools_by_host: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for (p, _) in &plan.pools_import {
        let cins: Vec<Value> = p.cins.iter().map(|(c, d)| json!({"cinId": c, "defaultRoute": d})).collect();
        pools_by_host
            .entry(&p.host)
            .or_default()
            .push(json!({"id": p.id, "type": p.image, "startWith": p.start_with, "cins": cins}));
    }
    for (host, pools) in pools_by_host {
        let d = client
            .gql(
                "mutation($i: CpoolImportInput!) { cpoolImport(input: $i) { revision } }",
                json!({"i": {"hostId": host, "pools": pools}}),
            )
            .await?;
        revision = revision.max(rev(&d, "cpoolImport"));
    }
    if !plan.cins_destroy.is_empty() {
        revision = revision.max(realize(client, Realized::Cin, false, &plan.cins_destroy).await?);
    }
    if !plan.cens_destroy.is_empty() {
        revision = revision.max(realize(client, Realized::Cen, false, &plan.cens_destroy).await?);
    }
    let deletes: [(&str, &str, &Vec<String>); 3] = [
        ("cpoolDelete", "CpoolDeleteInput", &plan.pools_delete),
        ("cinDelete", "CinDeleteInput", &plan.cins_delete),
        ("cenDelete", "CenDeleteInput", &plan.cens_delete),
    ];
    for (field, input, ids) in deletes {
        for id in ids {
            let q = format!("mutation($i: {input}!) {{ {field}(input: $i) {{ revision }} }}");
            let d = client.gql(&q, json!({"i": {"id": id}})).await?;
            revision = revision.max(rev(&d, field));
        }
    }
    for (host, id) in &plan.containers_delete {
        let d = client
            .gql(
                "mutation($i: ContainerDeleteInput!) { containerDelete(input: $i) { revision } }",
                json!({"i": {"hostId": host, "id": id}}),
            )
            .await?;
        revision = revision.max(rev(&d, "containerDelete"));
    }
    for x in &plan.hosts_delete {
        let d = client
            .gql("mutation($i: HostDeleteInput!) { hostDelete(input: $i) { revision } }", json!({"i": {"id": x}}))
            .await?;
        revision = revision.max(rev(&d, "hostDelete"));
    }
    if !plan.cens_make.is_empty() {
        revision = revision.max(realize(client, Realized::Cen, true, &plan.cens_make).await?);
    }
    if !plan.cins_make.is_empty() {
        revision = revision.max(realize(client, Realized::Cin, true, &plan.cins_make).await?);
    }
    Ok(revision)
}

/// Makes or destroys without waiting, follows the operation with a
/// progress bar, then checks each object's status: anything FAILED is an
/// error naming it and the kernel's reason.
async fn realize(client: &Client, kind: Realized, make: bool, ids: &[String]) -> anyhow::Result<i64> {
    let (field, input, list) = match (kind, make) {
        (Realized::Cen, true) => ("cenMake", "CenMakeInput", "cens"),
        (Realized::Cen, false) => ("cenDestroy", "CenDestroyInput", "cens"),
        (Realized::Cin, true) => ("cinMake", "CinMakeInput", "cins"),
        (Realized::Cin, false) => ("cinDestroy", "CinDestroyInput", "cins"),
    };
    let q = format!("mutation($i: {input}!) {{ {field}(input: $i) {{ revision operationId {list} {{ id }} }} }}");
    let d = client.gql(&q, json!({"i": {"ids": ids, "wait": false}})).await?;
    let revision = d[field]["revision"].as_i64().unwrap_or(0);
    let verb = if make { "make" } else { "destroy" };
    let label = format!("{verb} {} {}", kind.word(), ids.join(", "));
    let outcome = match d[field]["operationId"].as_str() {
        Some(op) => Some(progress::follow(client, op, &label).await?),
        // A server that realizes nothing has no operation to follow.
        None => None,
    };
    // The statuses say which object failed and why.
    let q = format!("{{ {list} {{ id status statusMessage }} }}");
    let d = client.gql(&q, json!({})).await?;
    let wanted: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let mut failed = Vec::new();
    for o in d[list].as_array().map(Vec::as_slice).unwrap_or(&[]) {
        let id = o["id"].as_str().unwrap_or("");
        if wanted.contains(id) && o["status"] == "FAILED" {
            let why = o["statusMessage"].as_str().unwrap_or("no reason given");
            failed.push(format!("{} {id} FAILED: {why}", kind.word()));
        }
    }
    if let Some(o) = &outcome {
        if o.failed && failed.is_empty() {
            failed.push(format!("{label} FAILED: {}", o.message.as_deref().unwrap_or("no reason given")));
        }
    }
    if !failed.is_empty() {
        return Err(Failed(failed.join("\n")).into());
    }
    Ok(revision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::file::parse;
    use crate::cli::state::{CurCen, CurCin, CurContainer, CurPool};

    fn server() -> Current {
        let k = |id: &str| ("host1".to_string(), id.to_string());
        let plain = || CurContainer { tag: None, netns_path: None, pool: None, in_cens: 1 };
        Current {
            host_id: "host1".into(),
            revision: 7,
            hosts: ["host1".to_string()].into(),
            containers: [
                (k("a"), plain()),
                (k("b"), plain()),
                (k("p-1"), CurContainer { pool: Some("p".into()), ..plain() }),
            ]
            .into(),
            cens: [(
                "n".to_string(),
                CurCen { members: vec![k("a"), k("b"), k("p-1")], made: true, status: "FAILED".into() },
            )]
            .into(),
            cins: [("i".to_string(), CurCin { cens: vec!["n".into()], made: false, status: "PENDING".into() })].into(),
            pools: [(
                "p".to_string(),
                CurPool {
                    image: "t".into(),
                    start_with: 1,
                    cins: vec![("i".into(), false)],
                    host: Some("host1".into()),
                },
            )]
            .into(),
        }
    }

    #[test]
    fn a_failed_make_is_retried_and_pool_members_are_left_to_their_pool() {
        let f = parse(
            "cens: [{id: n, members: [a, b], made: true}]\ncins: [{id: i, cens: [n]}]\npools: [{id: p, type: t, startWith: 1, cins: [{cin: i}]}]\n",
            true,
        )
        .unwrap();
        let p = plan_apply(&f, &server(), false).unwrap();
        assert_eq!(p.cens_make, ["n"]);
        assert!(p.retries.contains(&(Realized::Cen, "n".to_string())));
        assert!(p.cen_import.is_empty(), "p-1 is the pool's: {:?}", p.cen_import);
        assert_eq!(p.counts(), Counts { made: 1, ..Counts::default() });
    }

    #[test]
    fn leaving_a_member_keeps_the_pool_members_in_the_import() {
        let f = parse("cens: [{id: n, members: [a], made: true}]\n", true).unwrap();
        let mut cur = server();
        cur.cens.get_mut("n").unwrap().status = "READY".into();
        let p = plan_apply(&f, &cur, false).unwrap();
        assert_eq!(p.cen_lines, [('~', "cen n: -b".to_string())]);
        assert_eq!(p.cen_import["host1"]["n"], ["p-1", "a"]);
    }

    #[test]
    fn legacy_files_leave_made_alone_and_prune_only_their_kind() {
        let f = parse(r#"{"other": ["n"]}"#, false).unwrap();
        let p = plan_apply(&f, &server(), true).unwrap();
        assert!(p.cens_make.is_empty() && p.cens_destroy.is_empty());
        assert_eq!(p.cins_delete, ["i"]);
        assert!(p.cens_delete.is_empty() && p.pools_delete.is_empty() && p.containers_delete.is_empty());
        assert_eq!(p.cins_import, [("other".to_string(), true, vec!["n".to_string()])]);
    }

    #[test]
    fn a_container_cannot_change_namespace_or_be_a_pools() {
        let f = parse("containers: [{id: a, netnsPath: /proc/1/ns/net}]\n", true).unwrap();
        let e = plan_apply(&f, &server(), false).unwrap_err().to_string();
        assert!(e.contains("container 'a' is bound to a managed namespace"), "{e}");
        let f = parse("containers: [{id: p-1}]\n", true).unwrap();
        let e = plan_apply(&f, &server(), false).unwrap_err().to_string();
        assert!(e.contains("belongs to pool 'p'"), "{e}");
    }
}
