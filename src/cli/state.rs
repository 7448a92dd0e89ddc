//! The server's topology as the CLI sees it: read with one query (live, or
//! as it stood at a kept revision), and written back out as a topology file
//! (`export`, `export --at`) or a picture.

use super::client::Client;
use super::file::{CenSpec, CinSpec, ContainerSpec, Name, PoolCin, PoolSpec, TopologyFile};
use anyhow::{anyhow, Context};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};

/// A container: (host, id).
pub type Key = (String, String);

pub fn show_key(k: &Key, default_host: &str) -> String {
    if k.0 == default_host {
        k.1.clone()
    } else {
        format!("{}/{}", k.0, k.1)
    }
}

#[derive(Debug, Clone)]
pub struct CurContainer {
    pub tag: Option<String>,
    pub netns_path: Option<String>,
    pub pool: Option<String>,
    pub in_cens: usize,
}

#[derive(Debug, Clone)]
pub struct CurCen {
    /// In the server's order (join order).
    pub members: Vec<Key>,
    pub made: bool,
    pub status: String,
}

#[derive(Debug, Clone)]
pub struct CurCin {
    pub cens: Vec<String>,
    pub made: bool,
    pub status: String,
}

#[derive(Debug, Clone)]
pub struct CurPool {
    pub image: String,
    pub start_with: u32,
    pub cins: Vec<(String, bool)>,
    /// The host of its containers (None when it has none).
    pub host: Option<String>,
}

/// The server's topology.
#[derive(Debug, Clone)]
pub struct Current {
    pub host_id: String,
    pub revision: i64,
    pub hosts: BTreeSet<String>,
    pub containers: BTreeMap<Key, CurContainer>,
    /// Sorted by id.
    pub cens: BTreeMap<String, CurCen>,
    pub cins: BTreeMap<String, CurCin>,
    pub pools: BTreeMap<String, CurPool>,
}

/// The lists read, live (the root) or at a revision (`TopologyAt`).
const LISTS: &str = "hosts { id }
  containers { id host { id } tag netnsPath pool { id } cens { id } }
  cens { id made status containers { id host { id } } }
  cins { id made status cens { id } }
  cpools { id type startWith cins { cinId defaultRoute } containers { id host { id } } }";

fn s(v: &Value) -> anyhow::Result<String> {
    v.as_str().map(str::to_string).ok_or_else(|| anyhow!("the server's answer lacks a string where one was expected"))
}

fn opt(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

fn key(c: &Value) -> anyhow::Result<Key> {
    Ok((s(&c["host"]["id"])?, s(&c["id"])?))
}

fn list(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

impl Current {
    pub async fn fetch(client: &Client) -> anyhow::Result<Current> {
        let q = format!("{{ hostId revision {LISTS} }}");
        let d = client.gql(&q, json!({})).await.context("reading the server's topology")?;
        Current::from_data(&d)
    }

    /// The topology as it stood right after `revision` (`at(revision:)`),
    /// with the server's own host id (which the past does not change).
    pub async fn fetch_at(client: &Client, revision: i64) -> anyhow::Result<Current> {
        let q = format!("query($r: Int!) {{ hostId at(revision: $r) {{ revision {LISTS} }} }}");
        let d = client
            .gql(&q, json!({"r": revision}))
            .await
            .with_context(|| format!("reading the topology at revision {revision}"))?;
        let mut at = d["at"].clone();
        if let Some(o) = at.as_object_mut() {
            o.insert("hostId".into(), d["hostId"].clone());
        }
        Current::from_data(&at)
    }

    fn from_data(d: &Value) -> anyhow::Result<Current> {
        let mut cur = Current {
            host_id: s(&d["hostId"])?,
            revision: d["revision"].as_i64().unwrap_or(0),
            hosts: BTreeSet::new(),
            containers: BTreeMap::new(),
            cens: BTreeMap::new(),
            cins: BTreeMap::new(),
            pools: BTreeMap::new(),
        };
        for h in list(&d["hosts"]) {
            cur.hosts.insert(s(&h["id"])?);
        }
        for c in list(&d["containers"]) {
            cur.containers.insert(
                key(c)?,
                CurContainer {
                    tag: opt(&c["tag"]),
                    netns_path: opt(&c["netnsPath"]),
                    pool: opt(&c["pool"]["id"]),
                    in_cens: list(&c["cens"]).len(),
                },
            );
        }
        for c in list(&d["cens"]) {
            let members = list(&c["containers"]).iter().map(key).collect::<anyhow::Result<Vec<_>>>()?;
            cur.cens.insert(
                s(&c["id"])?,
                CurCen { members, made: c["made"].as_bool().unwrap_or(false), status: s(&c["status"])? },
            );
        }
        for c in list(&d["cins"]) {
            let cens = list(&c["cens"]).iter().map(|x| s(&x["id"])).collect::<anyhow::Result<Vec<_>>>()?;
            cur.cins.insert(
                s(&c["id"])?,
                CurCin { cens, made: c["made"].as_bool().unwrap_or(false), status: s(&c["status"])? },
            );
        }
        for p in list(&d["cpools"]) {
            let cins = list(&p["cins"])
                .iter()
                .map(|c| Ok((s(&c["cinId"])?, c["defaultRoute"].as_bool().unwrap_or(false))))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let host = list(&p["containers"]).first().map(key).transpose()?.map(|k| k.0);
            cur.pools.insert(
                s(&p["id"])?,
                CurPool { image: s(&p["type"])?, start_with: p["startWith"].as_u64().unwrap_or(0) as u32, cins, host },
            );
        }
        Ok(cur)
    }

    pub fn is_pool_container(&self, k: &Key) -> bool {
        self.containers.get(k).is_some_and(|c| c.pool.is_some())
    }

    /// The topology as a file that `apply` accepts and finds nothing to
    /// change in: pool containers are the pools' (not listed); containers
    /// are listed when they carry a tag or namespace or are in no CEN.
    pub fn to_file(&self) -> TopologyFile {
        let h = &self.host_id;
        let host_of = |x: &str| if x == h { None } else { Some(Name::new(x)) };
        let containers = self
            .containers
            .iter()
            .filter(|(_, c)| c.pool.is_none() && (c.tag.is_some() || c.netns_path.is_some() || c.in_cens == 0))
            .map(|(k, c)| ContainerSpec {
                id: Name::new(&k.1),
                host: host_of(&k.0),
                tag: c.tag.clone(),
                netns_path: c.netns_path.clone(),
            })
            .collect();
        let cens = self
            .cens
            .iter()
            .map(|(id, c)| CenSpec {
                id: Name::new(id),
                members: c
                    .members
                    .iter()
                    .filter(|k| !self.is_pool_container(k))
                    .map(|k| Name::new(show_key(k, h)))
                    .collect(),
                made: c.made.then_some(true),
            })
            .collect();
        let cins = self
            .cins
            .iter()
            .map(|(id, c)| CinSpec {
                id: Name::new(id),
                cens: c.cens.iter().map(Name::new).collect(),
                made: c.made.then_some(true),
            })
            .collect();
        let pools = self
            .pools
            .iter()
            .map(|(id, p)| PoolSpec {
                id: Name::new(id),
                host: p.host.as_deref().and_then(host_of),
                image: p.image.clone(),
                start_with: p.start_with,
                cins: p.cins.iter().map(|(c, d)| PoolCin { cin: Name::new(c), default_route: *d }).collect(),
            })
            .collect();
        let hosts = self.hosts.iter().filter(|x| *x != h).map(Name::new).collect();
        TopologyFile { hosts, containers, cens, cins, pools }
    }

    /// Graphviz: hosts as clusters of containers, CENs as boxes, CINs as
    /// notes over their CENs. A label of two lines is one DOT string with
    /// DOT's own line break (`\n` in the file), each line escaped apart, so
    /// that Graphviz draws two lines and never a backslash.
    pub fn to_dot(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::from("graph leviathan {\n  rankdir=LR;\n  node [fontname=\"sans-serif\"];\n");
        let q = |x: &str| format!("\"{}\"", dot_escape(x));
        let lines = |a: &str, b: &str| format!("\"{}\\n{}\"", dot_escape(a), dot_escape(b));
        let mut by_host: BTreeMap<&str, Vec<&Key>> = BTreeMap::new();
        for k in self.containers.keys() {
            by_host.entry(&k.0).or_default().push(k);
        }
        for (i, (host, keys)) in by_host.iter().enumerate() {
            let _ = writeln!(out, "  subgraph cluster_{i} {{\n    label={};", q(&format!("host {host}")));
            for k in keys {
                let c = &self.containers[*k];
                let label = match &c.tag {
                    Some(t) => lines(&k.1, &format!("[{t}]")),
                    None => q(&k.1),
                };
                let _ = writeln!(out, "    {} [shape=ellipse, label={label}];", q(&format!("c:{}/{}", k.0, k.1)));
            }
            out.push_str("  }\n");
        }
        for (id, c) in &self.cens {
            let _ = writeln!(
                out,
                "  {} [shape=box, style=filled, fillcolor={}, label={}];",
                q(&format!("cen:{id}")),
                q(status_colour(&c.status)),
                lines(id, &c.status)
            );
            for k in &c.members {
                let _ = writeln!(out, "  {} -- {};", q(&format!("cen:{id}")), q(&format!("c:{}/{}", k.0, k.1)));
            }
        }
        for (id, c) in &self.cins {
            let _ = writeln!(out, "  {} [shape=note, label={}];", q(&format!("cin:{id}")), lines(id, &c.status));
            for cen in &c.cens {
                let _ = writeln!(out, "  {} -- {} [style=dashed];", q(&format!("cin:{id}")), q(&format!("cen:{cen}")));
            }
        }
        out.push_str("}\n");
        out
    }

    /// Mermaid flowchart, for Markdown documentation.
    pub fn to_mermaid(&self) -> String {
        use std::fmt::Write as _;
        // Mermaid ids are kept to [A-Za-z0-9_]; labels carry the real ids.
        let mut ids: BTreeMap<String, String> = BTreeMap::new();
        let mut id = |raw: String| {
            let n = ids.len();
            ids.entry(raw).or_insert_with(|| format!("n{n}")).clone()
        };
        let label = |x: &str| x.replace('"', "#quot;");
        let mut out = String::from("flowchart LR\n");
        let mut by_host: BTreeMap<&str, Vec<&Key>> = BTreeMap::new();
        for k in self.containers.keys() {
            by_host.entry(&k.0).or_default().push(k);
        }
        for (host, keys) in &by_host {
            let _ = writeln!(out, "  subgraph {}[\"host {}\"]", id(format!("h:{host}")), label(host));
            for k in keys {
                let _ = writeln!(out, "    {}([\"{}\"])", id(format!("c:{}/{}", k.0, k.1)), label(&k.1));
            }
            out.push_str("  end\n");
        }
        for (cen, c) in &self.cens {
            let n = id(format!("cen:{cen}"));
            let _ = writeln!(out, "  {n}[\"{} ({})\"]", label(cen), c.status);
            for k in &c.members {
                let _ = writeln!(out, "  {n} --- {}", id(format!("c:{}/{}", k.0, k.1)));
            }
        }
        for (cin, c) in &self.cins {
            let n = id(format!("cin:{cin}"));
            let _ = writeln!(out, "  {n}{{{{\"{} ({})\"}}}}", label(cin), c.status);
            for cen in &c.cens {
                let _ = writeln!(out, "  {n} -.- {}", id(format!("cen:{cen}")));
            }
        }
        out
    }
}

/// Text inside a DOT string: backslashes and quotes escaped (so an id can
/// never end the string or start an escape), line breaks as DOT's `\n`.
fn dot_escape(x: &str) -> String {
    x.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn status_colour(status: &str) -> &'static str {
    match status {
        "READY" => "palegreen",
        "FAILED" => "salmon",
        "PREPARING" | "DESTROYING" => "khaki",
        _ => "lightgrey",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_labels_break_lines_the_dot_way_and_escape_the_rest() {
        let plain = CurContainer { tag: None, netns_path: None, pool: None, in_cens: 1 };
        let mut cur = Current {
            host_id: "host1".into(),
            revision: 1,
            hosts: ["host1".to_string()].into(),
            containers: [
                (("host1".into(), "db1".into()), CurContainer { tag: Some("db".into()), ..plain.clone() }),
                (("host1".into(), "q\"\\".into()), plain),
            ]
            .into(),
            cens: BTreeMap::new(),
            cins: BTreeMap::new(),
            pools: BTreeMap::new(),
        };
        cur.cens.insert("back".into(), CurCen { members: vec![], made: false, status: "PENDING".into() });
        let dot = cur.to_dot();
        assert!(dot.contains(r#"label="db1\n[db]""#), "{dot}");
        assert!(dot.contains(r#"label="back\nPENDING""#), "{dot}");
        assert!(dot.contains(r#"label="q\"\\""#), "{dot}");
        assert!(!dot.contains(r"\\n"), "{dot}");
    }
}
