//! `leviathan diff REV [REV2]`: what changed between two kept revisions
//! (REV2 defaults to the current one), read page by page through
//! `diff(from, to, first, after)` and printed with the marks of `apply`'s
//! plan (`+` created, `~` changed, `-` deleted, `^` made, `v` destroyed):
//! the entries become a [`Plan`] and are rendered by [`Plan::render`], so
//! a line of `diff` reads as the line `apply` would print for the same
//! change. What a plan never changes (statuses, addresses, subnets) is
//! listed after it, field by field, so every entry the server answers is
//! shown. `-o json` prints the entries as the server gives them.
//!
//! Without REV2 the current revision is read first and every page asks
//! for it explicitly, so the pages of one run describe one pair of
//! revisions even while changes keep coming.

use super::client::Client;
use super::plan::{Plan, PoolWant};
use super::state::{show_key, Key};
use super::ChangeFormat;
use anyhow::{anyhow, bail};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// Entries per request (the server bounds every list; this stays well
/// within its query cost limit).
const PAGE: i64 = 500;

/// One object whose image differs between the two revisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub kind: String,
    pub id: String,
    #[serde(default)]
    pub host_id: Option<String>,
    #[serde(default)]
    pub container: Option<String>,
    pub op: String,
    #[serde(default)]
    pub before: Value,
    #[serde(default)]
    pub after: Value,
}

/// The server's answer: its host, the two revisions, the entries.
#[derive(Debug)]
pub struct Diff {
    pub host_id: String,
    pub from: i64,
    pub to: i64,
    pub entries: Vec<Entry>,
}

const QUERY: &str = "query($from: Int!, $to: Int, $first: Int, $after: String) {
  diff(from: $from, to: $to, first: $first, after: $after) { kind id hostId container op before after cursor } }";

/// Reads every page of the diff from `from` to `to` (the current revision
/// when `None`).
pub async fn fetch(client: &Client, from: i64, to: Option<i64>) -> anyhow::Result<Diff> {
    let root = client.gql("{ hostId revision }", json!({})).await?;
    let host_id = root["hostId"].as_str().ok_or_else(|| anyhow!("the server's answer lacks its hostId"))?.to_string();
    let to = match to {
        Some(t) => t,
        None => root["revision"].as_i64().ok_or_else(|| anyhow!("the server's answer lacks its revision"))?,
    };
    let mut entries = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let d = client.gql(QUERY, json!({"from": from, "to": to, "first": PAGE, "after": after})).await?;
        let page = d["diff"].as_array().cloned().unwrap_or_default();
        let n = page.len();
        let next = page.last().and_then(|e| e["cursor"].as_str()).map(str::to_string);
        for e in page {
            entries.push(serde_json::from_value::<Entry>(e).map_err(|e| anyhow!("a diff entry of the server: {e}"))?);
        }
        if (n as i64) < PAGE || next.is_none() || next == after {
            break;
        }
        after = next;
    }
    Ok(Diff { host_id, from, to, entries })
}

pub async fn run(client: &Client, from: i64, to: Option<i64>, out: ChangeFormat) -> anyhow::Result<String> {
    if from < 0 || to.is_some_and(|t| t < 0) {
        bail!("a revision is 0 or more");
    }
    if let Some(t) = to {
        if from > t {
            bail!("diff {from} {t}: the first revision must not be after the second");
        }
    }
    let d = fetch(client, from, to).await?;
    Ok(match out {
        ChangeFormat::Json => format!("{}\n", serde_json::to_string_pretty(&d.entries)?),
        ChangeFormat::Text => render(&d),
    })
}

/// The text of `diff`: a header, the plan's lines, the other changes, and
/// the counts.
pub fn render(d: &Diff) -> String {
    if d.entries.is_empty() {
        return format!("No changes from revision {} to {}.\n", d.from, d.to);
    }
    let (plan, other) = to_plan(&d.entries, &d.host_id);
    let mut out = format!("Changes from revision {} to {}:\n", d.from, d.to);
    out.push_str(&plan.render(&d.host_id));
    for line in other {
        let _ = writeln!(out, "  ~ {line}");
    }
    let count = |op: &str| d.entries.iter().filter(|e| e.op.starts_with(op)).count();
    let _ = writeln!(out, "{} created, {} changed, {} deleted.", count("CREATE"), count("UPDATE"), count("DELETE"));
    out
}

fn key(e: &Entry, h: &str) -> Key {
    (e.host_id.clone().unwrap_or_else(|| h.to_string()), e.id.clone())
}

fn string(v: &Value, field: &str) -> Option<String> {
    v[field].as_str().map(str::to_string)
}

fn made(v: &Value) -> bool {
    v["made"].as_bool().unwrap_or(false)
}

fn strings(v: &Value, field: &str) -> Vec<String> {
    v[field].as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

/// A value as a diff line shows it: absent as `(none)`, a string as is, a
/// status with its message, anything else as compact JSON.
fn shown(v: &Value) -> String {
    match v {
        Value::Null => "(none)".into(),
        Value::String(s) => s.clone(),
        Value::Object(o) if o.contains_key("status") => match o.get("message").and_then(Value::as_str) {
            Some(m) => format!("{} ({m})", shown(&o["status"])),
            None => shown(&o["status"]),
        },
        other => other.to_string(),
    }
}

/// `field old -> new` for every top-level field that differs, but those in
/// `skip` (which the plan's own lines show).
pub fn changed_fields(before: &Value, after: &Value, skip: &[&str]) -> Vec<String> {
    let empty = Map::new();
    let b = before.as_object().unwrap_or(&empty);
    let a = after.as_object().unwrap_or(&empty);
    let fields: BTreeSet<&String> = b.keys().chain(a.keys()).collect();
    fields
        .into_iter()
        .filter(|f| !skip.contains(&f.as_str()))
        .filter_map(|f| {
            let (old, new) = (b.get(f).unwrap_or(&Value::Null), a.get(f).unwrap_or(&Value::Null));
            let name = if f == "realization" { "status" } else { f.as_str() };
            (old != new).then(|| format!("{name} {} -> {}", shown(old), shown(new)))
        })
        .collect()
}

/// Joins and leaves of one CEN, and its changed memberships.
#[derive(Default)]
struct Members {
    joins: Vec<String>,
    leaves: Vec<String>,
}

/// `C`reate, `U`pdate or `D`elete.
fn op(e: &Entry) -> char {
    e.op.chars().next().unwrap_or('?')
}

/// The joins and leaves of each CEN (those of a deleted CEN go with it);
/// a changed membership (its addresses) goes to `other`.
fn memberships<'a>(entries: &'a [Entry], h: &str, other: &mut Vec<String>) -> BTreeMap<&'a str, Members> {
    let deleted_cens: BTreeSet<&str> =
        entries.iter().filter(|e| e.kind == "CEN" && op(e) == 'D').map(|e| e.id.as_str()).collect();
    let mut members: BTreeMap<&str, Members> = BTreeMap::new();
    for e in entries.iter().filter(|e| e.kind == "MEMBERSHIP") {
        let who =
            show_key(&(e.host_id.clone().unwrap_or_else(|| h.to_string()), e.container.clone().unwrap_or_default()), h);
        match op(e) {
            'C' => members.entry(&e.id).or_default().joins.push(who),
            'D' if !deleted_cens.contains(e.id.as_str()) => members.entry(&e.id).or_default().leaves.push(who),
            'D' => {}
            _ => {
                for f in changed_fields(&e.before, &e.after, &[]) {
                    other.push(format!("member {who} of cen {}: {f}", e.id));
                }
            }
        }
    }
    members
}

/// A pool as the plan shows it (its host is not in its record).
fn pool_want(e: &Entry) -> PoolWant {
    let a = &e.after;
    let cins = a["cins"]
        .as_array()
        .map(|l| l.iter().map(|c| (c["cin"].as_str().unwrap_or("?").to_string(), c["default_route"] == true)).collect())
        .unwrap_or_default();
    let start_with = a["start_with"].as_u64().unwrap_or(0).min(u64::from(u32::MAX)) as u32;
    PoolWant { id: e.id.clone(), host: String::new(), image: string(a, "image").unwrap_or_default(), start_with, cins }
}

/// The entries as a plan (what `apply` would print for these changes),
/// and the changes a plan has no line for.
pub fn to_plan(entries: &[Entry], h: &str) -> (Plan, Vec<String>) {
    let mut plan = Plan::default();
    let mut other = Vec::new();
    let created_cens: BTreeSet<&str> =
        entries.iter().filter(|e| e.kind == "CEN" && op(e) == 'C').map(|e| e.id.as_str()).collect();
    let mut members = memberships(entries, h, &mut other);
    for e in entries {
        let (b, a) = (&e.before, &e.after);
        match (e.kind.as_str(), op(e)) {
            ("HOST", 'C') => plan.hosts_create.push(e.id.clone()),
            ("HOST", 'D') => plan.hosts_delete.push(e.id.clone()),
            ("CONTAINER", 'C') => {
                plan.containers_create.push((key(e, h), string(a, "tag"), string(a, "netns_path")));
            }
            ("CONTAINER", 'D') => plan.containers_delete.push(key(e, h)),
            ("CONTAINER", _) if b["tag"] != a["tag"] => {
                plan.containers_tag.push((key(e, h), string(b, "tag"), string(a, "tag")));
                for f in changed_fields(b, a, &["tag"]) {
                    other.push(format!("container {}: {f}", show_key(&key(e, h), h)));
                }
            }
            ("CEN", 'C') => {
                let joins = members.remove(e.id.as_str()).map(|m| m.joins).unwrap_or_default();
                if joins.is_empty() {
                    plan.cen_lines.push(('+', format!("cen {} (no members)", e.id)));
                } else {
                    plan.cen_lines.push(('+', format!("cen {}: {}", e.id, joins.join(", "))));
                }
                if made(a) {
                    plan.cens_make.push(e.id.clone());
                }
            }
            ("CEN", 'D') => plan.cens_delete.push(e.id.clone()),
            ("CIN", 'C') => {
                plan.cin_lines.push(('+', format!("cin {} over {}", e.id, strings(a, "cens").join(", "))));
                if made(a) {
                    plan.cins_make.push(e.id.clone());
                }
            }
            ("CIN", 'D') => plan.cins_delete.push(e.id.clone()),
            ("CIN", _) if b["cens"] != a["cens"] => {
                let line = format!(
                    "cin {}: over {} -> {}",
                    e.id,
                    strings(b, "cens").join(", "),
                    strings(a, "cens").join(", ")
                );
                plan.cin_lines.push(('~', line));
                made_changed(&mut plan, &mut other, e);
            }
            ("CPOOL", 'C' | 'U') => plan.pools_import.push((pool_want(e), op(e) == 'C')),
            ("CPOOL", 'D') => plan.pools_delete.push(e.id.clone()),
            ("MEMBERSHIP", _) => {}
            (kind, 'U') => {
                let word = match kind {
                    "CONTAINER" => "container",
                    "HOST" => "host",
                    "CEN" => "cen",
                    "CIN" => "cin",
                    other => other,
                };
                if matches!(kind, "CEN" | "CIN") {
                    made_changed(&mut plan, &mut other, e);
                } else {
                    let who = if kind == "CONTAINER" { show_key(&key(e, h), h) } else { e.id.clone() };
                    for f in changed_fields(b, a, &[]) {
                        other.push(format!("{word} {who}: {f}"));
                    }
                }
            }
            (kind, _) => other.push(format!("{} {}: {}", kind.to_ascii_lowercase(), e.id, e.op)),
        }
    }
    for (cen, m) in members {
        if created_cens.contains(cen) {
            continue;
        }
        let mut parts: Vec<String> = m.joins.iter().map(|j| format!("+{j}")).collect();
        parts.extend(m.leaves.iter().map(|l| format!("-{l}")));
        if !parts.is_empty() {
            plan.cen_lines.push(('~', format!("cen {cen}: {}", parts.join(" "))));
        }
    }
    (plan, other)
}

/// A CEN or CIN that changed: made or destroyed as the plan says it, and
/// its other fields (status, parts) listed apart. The CIN's CEN list is
/// the plan's own line.
fn made_changed(plan: &mut Plan, other: &mut Vec<String>, e: &Entry) {
    let cen = e.kind == "CEN";
    match (made(&e.before), made(&e.after)) {
        (false, true) if cen => plan.cens_make.push(e.id.clone()),
        (false, true) => plan.cins_make.push(e.id.clone()),
        (true, false) if cen => plan.cens_destroy.push(e.id.clone()),
        (true, false) => plan.cins_destroy.push(e.id.clone()),
        _ => {}
    }
    let word = if cen { "cen" } else { "cin" };
    for f in changed_fields(&e.before, &e.after, &["made", "cens"]) {
        other.push(format!("{word} {}: {f}", e.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &str, id: &str, op: &str, before: Value, after: Value) -> Entry {
        Entry { kind: kind.into(), id: id.into(), host_id: None, container: None, op: op.into(), before, after }
    }

    fn member(cen: &str, host: &str, c: &str, op: &str) -> Entry {
        let image = json!({"cen": cen, "host": host, "container": c, "ifname": "eth1", "seq": 1});
        let (before, after) = if op == "CREATE" { (Value::Null, image) } else { (image, Value::Null) };
        Entry { host_id: Some(host.into()), container: Some(c.into()), ..entry("MEMBERSHIP", cen, op, before, after) }
    }

    #[test]
    fn entries_read_as_the_lines_apply_prints() {
        let ctr = |tag: &str| json!({"host": "host1", "id": "web1", "tag": tag, "netns_path": null});
        let entries = vec![
            entry("CEN", "back", "UPDATE", json!({"id": "back", "made": false}), json!({"id": "back", "made": true})),
            entry("CEN", "new", "CREATE", Value::Null, json!({"id": "new", "made": false})),
            entry("CEN", "old", "DELETE", json!({"id": "old", "made": false}), Value::Null),
            entry("CIN", "priv", "CREATE", Value::Null, json!({"id": "priv", "cens": ["back"], "made": true})),
            entry(
                "CIN",
                "pub",
                "UPDATE",
                json!({"id": "pub", "cens": ["front"]}),
                json!({"id": "pub", "cens": ["front", "back"]}),
            ),
            Entry { host_id: Some("host1".into()), ..entry("CONTAINER", "web1", "UPDATE", ctr("web"), ctr("edge")) },
            Entry {
                host_id: Some("host2".into()),
                ..entry("CONTAINER", "x", "CREATE", Value::Null, json!({"tag": "db"}))
            },
            entry("CPOOL", "p", "DELETE", json!({"id": "p"}), Value::Null),
            member("front", "host1", "web3", "CREATE"),
            member("front", "host2", "x", "DELETE"),
            member("new", "host1", "web1", "CREATE"),
            member("old", "host1", "web1", "DELETE"),
        ];
        let (plan, other) = to_plan(&entries, "host1");
        let text = plan.render("host1");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "  + container host2/x tag db",
                "  ~ container web1: tag web -> edge",
                "  + cen new: web1",
                "  ~ cen front: +web3 -host2/x",
                "  + cin priv over back",
                "  ~ cin pub: over front -> front, back",
                "  - pool p",
                "  - cen old",
                "  ^ make cen back",
                "  ^ make cin priv",
            ]
        );
        assert!(other.is_empty(), "{other:?}");
    }

    #[test]
    fn what_a_plan_never_changes_is_listed_field_by_field() {
        let cen = |status: &str| json!({"id": "n", "made": true, "realization": {"status": status}});
        let failed = json!({"id": "n", "made": true, "realization": {"status": "FAILED", "message": "no bridge"}});
        let m = |addr: &str| json!({"cen": "n", "host": "host1", "container": "c1", "addresses": {"cin1": addr}});
        let entries = vec![
            entry("CEN", "n", "UPDATE", cen("READY"), failed),
            Entry {
                host_id: Some("host1".into()),
                container: Some("c1".into()),
                ..entry("MEMBERSHIP", "n", "UPDATE", m("10.0.0.2"), m("10.0.0.3"))
            },
            entry(
                "CIN",
                "i",
                "UPDATE",
                json!({"id": "i", "cens": ["n"], "subnet": "10.0.0.0"}),
                json!({"id": "i", "cens": ["n"], "subnet": "10.1.0.0"}),
            ),
        ];
        let d = Diff { host_id: "host1".into(), from: 3, to: 9, entries };
        let text = render(&d);
        assert_eq!(
            text,
            "Changes from revision 3 to 9:\n\
             \x20 ~ member c1 of cen n: addresses {\"cin1\":\"10.0.0.2\"} -> {\"cin1\":\"10.0.0.3\"}\n\
             \x20 ~ cen n: status READY -> FAILED (no bridge)\n\
             \x20 ~ cin i: subnet 10.0.0.0 -> 10.1.0.0\n\
             0 created, 3 changed, 0 deleted.\n"
        );
        let none = Diff { host_id: "host1".into(), from: 4, to: 4, entries: vec![] };
        assert_eq!(render(&none), "No changes from revision 4 to 4.\n");
    }
}
