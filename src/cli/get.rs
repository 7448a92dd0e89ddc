//! `leviathan get KIND [ID] [--at REV]`: lists as aligned tables, or the
//! API's own JSON (`-o json`) or YAML; with `--at`, as the topology stood
//! right after revision REV (read through `at(revision:)`, so every kind
//! and filter works the same in the past).

use super::client::Client;
use super::Output;
use anyhow::bail;
use comfy_table::presets::NOTHING;
use comfy_table::{CellAlignment, Table};
use serde_json::{json, Value};

/// The kinds `get` lists (singular names too: `get cin public`).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Kind {
    #[value(alias = "host")]
    Hosts,
    #[value(alias = "container")]
    Containers,
    #[value(alias = "cen")]
    Cens,
    #[value(alias = "cin")]
    Cins,
    #[value(alias = "pool", alias = "cpool", alias = "cpools")]
    Pools,
}

/// The container filters of the API.
#[derive(Debug, Default, clap::Args)]
pub struct Filters {
    /// Containers on this host (with an ID: the container's host).
    #[arg(long)]
    pub host: Option<String>,
    /// Containers in this CEN.
    #[arg(long)]
    pub cen: Option<String>,
    /// Containers with an address in this CIN.
    #[arg(long)]
    pub cin: Option<String>,
    /// Containers with this tag.
    #[arg(long)]
    pub tag: Option<String>,
}

const HOST: &str = "id containers { id }";
const CONTAINER: &str =
    "id host { id } tag netnsPath pool { id } cens { id } interfaces { name cen { id } address } status statusMessage";
const CEN: &str = "id wiringType size made status statusMessage containers { id host { id } } cins { id }";
const CIN: &str =
    "id subnet cens { id } gateways members { container { id host { id } } address } made status statusMessage";
const POOL: &str = "id type startWith cins { cinId defaultRoute } containers { id host { id } }";

/// The query `get` sends, and the field its answer is under: the live
/// topology, or with `at` the topology as it stood right after that
/// revision (`at(revision:)`, the same fields and arguments).
pub fn query(
    kind: Kind,
    id: Option<&str>,
    f: &Filters,
    at: Option<i64>,
) -> anyhow::Result<(String, &'static str, Value)> {
    let container_filters = f.cen.is_some() || f.cin.is_some() || f.tag.is_some() || f.host.is_some();
    if container_filters && !matches!(kind, Kind::Containers) {
        bail!("--host, --cen, --cin and --tag filter containers only");
    }
    // (variable declarations, selection, field, variables)
    let (decls, selection, field, mut vars) = match (kind, id) {
        (Kind::Hosts, None) => ("", format!("hosts {{ {HOST} }}"), "hosts", json!({})),
        (Kind::Hosts, Some(id)) => ("$id: ID!", format!("host(id: $id) {{ {HOST} }}"), "host", json!({"id": id})),
        (Kind::Containers, None) => (
            "$h: ID, $cen: ID, $cin: ID, $tag: String",
            format!("containers(hostId: $h, cenId: $cen, cinId: $cin, tag: $tag) {{ {CONTAINER} }}"),
            "containers",
            json!({"h": f.host, "cen": f.cen, "cin": f.cin, "tag": f.tag}),
        ),
        (Kind::Containers, Some(id)) => {
            if f.cen.is_some() || f.cin.is_some() || f.tag.is_some() {
                bail!("with an ID, only --host applies");
            }
            (
                "$h: ID, $id: ID!",
                format!("container(hostId: $h, id: $id) {{ {CONTAINER} }}"),
                "container",
                json!({"h": f.host, "id": id}),
            )
        }
        (Kind::Cens, None) => ("", format!("cens {{ {CEN} }}"), "cens", json!({})),
        (Kind::Cens, Some(id)) => ("$id: ID!", format!("cen(id: $id) {{ {CEN} }}"), "cen", json!({"id": id})),
        (Kind::Cins, None) => ("", format!("cins {{ {CIN} }}"), "cins", json!({})),
        (Kind::Cins, Some(id)) => ("$id: ID!", format!("cin(id: $id) {{ {CIN} }}"), "cin", json!({"id": id})),
        (Kind::Pools, None) => ("", format!("cpools {{ {POOL} }}"), "cpools", json!({})),
        (Kind::Pools, Some(id)) => ("$id: ID!", format!("cpool(id: $id) {{ {POOL} }}"), "cpool", json!({"id": id})),
    };
    let q = match at {
        None if decls.is_empty() => format!("{{ {selection} }}"),
        None => format!("query({decls}) {{ {selection} }}"),
        Some(rev) => {
            vars["at"] = json!(rev);
            let sep = if decls.is_empty() { "" } else { ", " };
            format!("query({decls}{sep}$at: Int!) {{ at(revision: $at) {{ {selection} }} }}")
        }
    };
    Ok((q, field, vars))
}

pub async fn run(
    client: &Client,
    kind: Kind,
    id: Option<&str>,
    f: &Filters,
    at: Option<i64>,
    out: Output,
) -> anyhow::Result<String> {
    let (q, field, vars) = query(kind, id, f, at)?;
    let data = client.gql(&q, vars).await?;
    let value = match at {
        None => data[field].clone(),
        Some(_) => data["at"][field].clone(),
    };
    if value.is_null() {
        match at {
            None => bail!("no {} '{}'", singular(kind), id.unwrap_or("")),
            Some(rev) => bail!("no {} '{}' at revision {rev}", singular(kind), id.unwrap_or("")),
        }
    }
    Ok(match out {
        Output::Json => format!("{}\n", serde_json::to_string_pretty(&value)?),
        Output::Yaml => yaml_serde::to_string(&value)?,
        Output::Table => {
            let rows = match value {
                Value::Array(a) => a,
                one => vec![one],
            };
            table(kind, &rows)
        }
    })
}

fn singular(kind: Kind) -> &'static str {
    match kind {
        Kind::Hosts => "host",
        Kind::Containers => "container",
        Kind::Cens => "CEN",
        Kind::Cins => "CIN",
        Kind::Pools => "pool",
    }
}

fn ids(v: &Value) -> String {
    let list: Vec<&str> = v.as_array().map(|a| a.iter().filter_map(|x| x["id"].as_str()).collect()).unwrap_or_default();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(",")
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn status(v: &Value) -> String {
    match v["statusMessage"].as_str() {
        Some(m) => format!("{}: {m}", text(&v["status"])),
        None => text(&v["status"]),
    }
}

fn count(v: &Value) -> String {
    v.as_array().map_or(0, Vec::len).to_string()
}

/// An aligned table, no borders, headers in capitals (as `kubectl get`).
fn table(kind: Kind, rows: &[Value]) -> String {
    let (header, numeric): (&[&str], &[usize]) = match kind {
        Kind::Hosts => (&["ID", "CONTAINERS"], &[1]),
        Kind::Containers => (&["HOST", "ID", "TAG", "CENS", "ADDRESSES", "POOL", "STATUS"], &[]),
        Kind::Cens => (&["ID", "WIRING", "MEMBERS", "CINS", "MADE", "STATUS"], &[2]),
        Kind::Cins => (&["ID", "SUBNET", "CENS", "MEMBERS", "MADE", "STATUS"], &[3]),
        Kind::Pools => (&["ID", "TYPE", "START WITH", "CINS", "CONTAINERS"], &[2, 4]),
    };
    let mut t = Table::new();
    t.load_style(NOTHING);
    t.set_header(header.iter().copied());
    for r in rows {
        let row: Vec<String> = match kind {
            Kind::Hosts => vec![text(&r["id"]), count(&r["containers"])],
            Kind::Containers => {
                let addrs: Vec<String> = r["interfaces"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|i| i["address"].as_str().map(|ad| format!("{}={ad}", text(&i["name"]))))
                            .collect()
                    })
                    .unwrap_or_default();
                vec![
                    text(&r["host"]["id"]),
                    text(&r["id"]),
                    text(&r["tag"]),
                    ids(&r["cens"]),
                    if addrs.is_empty() { "-".into() } else { addrs.join(",") },
                    text(&r["pool"]["id"]),
                    status(r),
                ]
            }
            Kind::Cens => vec![
                text(&r["id"]),
                text(&r["wiringType"]),
                text(&r["size"]),
                ids(&r["cins"]),
                text(&r["made"]),
                status(r),
            ],
            Kind::Cins => vec![
                text(&r["id"]),
                text(&r["subnet"]),
                ids(&r["cens"]),
                count(&r["members"]),
                text(&r["made"]),
                status(r),
            ],
            Kind::Pools => {
                let cins: Vec<String> = r["cins"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .map(|c| {
                                let id = text(&c["cinId"]);
                                if c["defaultRoute"] == true {
                                    format!("{id}(default)")
                                } else {
                                    id
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                vec![
                    text(&r["id"]),
                    text(&r["type"]),
                    text(&r["startWith"]),
                    if cins.is_empty() { "-".into() } else { cins.join(",") },
                    count(&r["containers"]),
                ]
            }
        };
        t.add_row(row);
    }
    for &i in numeric {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut out = String::new();
    for line in t.to_string().lines() {
        // The preset pads every cell by one space: drop the first column's.
        out.push_str(line.strip_prefix(' ').unwrap_or(line).trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_wraps_the_same_selection_in_at_revision() {
        let f = Filters { host: Some("h2".into()), tag: Some("web".into()), ..Filters::default() };
        let (live, field, vars) = query(Kind::Containers, None, &f, None).unwrap();
        let (past, field_at, vars_at) = query(Kind::Containers, None, &f, Some(7)).unwrap();
        assert_eq!((field, field_at), ("containers", "containers"));
        let selection = live.split_once(") { ").unwrap().1.trim_end_matches(" }");
        assert!(past.contains(&format!("at(revision: $at) {{ {selection} }}")), "{past}");
        assert!(past.starts_with("query($h: ID, $cen: ID, $cin: ID, $tag: String, $at: Int!)"), "{past}");
        assert_eq!(vars["h"], "h2");
        assert_eq!(vars_at["at"], 7);
        assert!(vars.get("at").is_none());
        // Without variables of its own, the query declares only $at.
        let (q, _, v) = query(Kind::Cens, None, &Filters::default(), Some(3)).unwrap();
        assert!(q.starts_with("query($at: Int!) { at(revision: $at) { cens {"), "{q}");
        assert_eq!(v, json!({"at": 3}));
        let (q, _, _) = query(Kind::Pools, Some("p"), &Filters::default(), None).unwrap();
        assert!(q.starts_with("query($id: ID!) { cpool(id: $id) {"), "{q}");
        assert!(query(Kind::Cens, None, &f, Some(3)).is_err(), "filters are for containers");
    }
}
