//! Topology files: what `apply`, `destroy` and `delete` read and `export`
//! writes.
//!
//! A topology file (YAML for `.yaml`/`.yml`, JSON otherwise) lists hosts,
//! containers, CENs with their members, CINs over CENs, pools, and whether
//! each CEN and CIN is made. The legacy files of the original documentation
//! (`cen.json` with `cenList`, `cin.json` mapping CIN ids to CEN ids,
//! `cpool.json` with `cpoolList`) are read as they are.
//!
//! Every error names the line and column (YAML and JSON) and the path of
//! the field (`cens[1].members[0]`). Errors found after parsing (a
//! duplicate id, a CIN over a CEN the file does not have) get their line
//! the same way: the file is parsed a second time with the offending value
//! marked, so that the parser itself reports where it is. Nothing is sent
//! to a server before the whole file is valid.

use serde::de::{Deserializer, Error as _};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Largest file read.
pub const MAX_FILE: u64 = 16 * 1024 * 1024;
/// Longest id accepted (the server has its own, stricter rules).
const MAX_ID: usize = 253;

thread_local! {
    /// Counts names as they are parsed, in document order.
    static NEXT_NAME: Cell<u32> = const { Cell::new(0) };
    /// The name (by its number) the second parse fails at.
    static FAIL_AT: Cell<u32> = const { Cell::new(u32::MAX) };
}

/// An id or reference as written in the file, with its place among the
/// file's names (to point back at it in an error).
#[derive(Debug, Clone, Default)]
pub struct Name {
    pub value: String,
    seq: u32,
}

impl Name {
    pub fn new(value: impl Into<String>) -> Name {
        Name { value: value.into(), seq: u32::MAX }
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.value)
    }
}

// The message of the error the second parse raises.
thread_local! {
    static FAIL_MESSAGE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = String::deserialize(d)?;
        let seq = NEXT_NAME.with(|n| {
            let v = n.get();
            n.set(v.saturating_add(1));
            v
        });
        if FAIL_AT.with(Cell::get) == seq {
            return Err(D::Error::custom(FAIL_MESSAGE.with(|m| m.borrow().clone())));
        }
        if value.is_empty() {
            return Err(D::Error::custom("empty id"));
        }
        if value.len() > MAX_ID {
            return Err(D::Error::custom(format!("id longer than {MAX_ID} characters")));
        }
        if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(D::Error::custom(format!("id {value:?} has a space or control character")));
        }
        Ok(Name { value, seq })
    }
}

/// A topology file.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TopologyFile {
    /// Hosts to create (those of containers are created with them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<Name>,
    /// Containers with a tag or a bound namespace; containers named only
    /// as CEN members are created plain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cens: Vec<CenSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cins: Vec<CinSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PoolSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ContainerSpec {
    pub id: Name,
    /// Default: the server's own host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// Bind to an existing namespace (e.g. `/proc/<pid>/ns/net`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_path: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CenSpec {
    pub id: Name,
    /// Container ids (`c1`, on the server's host) or `host/c1`.
    #[serde(default)]
    pub members: Vec<Name>,
    /// Realized in the kernel (default false; a CEN under a made CIN is
    /// made with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CinSpec {
    pub id: Name,
    /// The CENs, in slice order.
    pub cens: Vec<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub made: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PoolSpec {
    pub id: Name,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Name>,
    /// The container image type.
    #[serde(rename = "type")]
    pub image: String,
    pub start_with: u32,
    #[serde(default)]
    pub cins: Vec<PoolCin>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PoolCin {
    /// A CIN id (or, legacy, a CEN id).
    pub cin: Name,
    /// The pool's containers route by default through this CIN's gateway.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default_route: bool,
}

// ---- legacy files, as the original documentation has them ----

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LegacyCenFile {
    cen_list: Vec<LegacyCen>,
}

#[derive(Deserialize)]
struct LegacyCen {
    #[serde(rename = "cenID")]
    id: Name,
    #[serde(rename = "containerIDs", default)]
    containers: Vec<Name>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LegacyPoolFile {
    cpool_list: Vec<LegacyPool>,
}

#[derive(Deserialize)]
struct LegacyPool {
    #[serde(rename = "cpoolID")]
    id: Name,
    #[serde(rename = "type")]
    image: String,
    start_with: u32,
    #[serde(default)]
    cins: Vec<LegacyPoolCin>,
}

#[derive(Deserialize)]
struct LegacyPoolCin {
    #[serde(rename = "cinID")]
    cin: Name,
    /// `"true"`, `true`, or absent.
    #[serde(default)]
    default_route: Option<LegacyBool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum LegacyBool {
    Bool(bool),
    Text(String),
}

/// What kind of file was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Topology,
    LegacyCen,
    LegacyCin,
    LegacyPool,
}

/// A file, read and checked.
#[derive(Debug)]
pub struct Loaded {
    pub kind: Kind,
    pub topology: TopologyFile,
}

impl Loaded {
    /// Legacy files say nothing of made: apply leaves it as it is.
    pub fn manages_made(&self) -> bool {
        self.kind == Kind::Topology
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Format {
    Yaml,
    Json,
}

/// Reads and checks a topology or legacy file.
pub fn load(path: &Path) -> anyhow::Result<Loaded> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    if !meta.is_file() {
        anyhow::bail!("{shown}: not a regular file");
    }
    if meta.len() > MAX_FILE {
        anyhow::bail!("{shown}: {} bytes, over the limit of {MAX_FILE}", meta.len());
    }
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    let text = String::from_utf8(bytes).map_err(|e| anyhow::anyhow!("{shown}: not UTF-8 text ({e})"))?;
    let format = match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("yaml" | "yml") => Format::Yaml,
        _ => Format::Json,
    };
    parse(&text, format == Format::Yaml).map_err(|e| anyhow::anyhow!("{shown}: {e}"))
}

/// Parses file text (YAML or JSON) and checks it.
pub fn parse(text: &str, yaml: bool) -> Result<Loaded, String> {
    let format = if yaml { Format::Yaml } else { Format::Json };
    let kind = if yaml { Kind::Topology } else { sniff(text) };
    let loaded = match kind {
        Kind::Topology => Loaded { kind, topology: de::<TopologyFile>(text, format)? },
        Kind::LegacyCen => {
            let f: LegacyCenFile = de(text, format)?;
            let cens =
                f.cen_list.into_iter().map(|c| CenSpec { id: c.id, members: c.containers, made: None }).collect();
            Loaded { kind, topology: TopologyFile { cens, ..Default::default() } }
        }
        Kind::LegacyCin => {
            let f: Vec<(Name, Vec<Name>)> = de::<LegacyCinMap>(text, format)?.0;
            let cins = f.into_iter().map(|(id, cens)| CinSpec { id, cens, made: None }).collect();
            Loaded { kind, topology: TopologyFile { cins, ..Default::default() } }
        }
        Kind::LegacyPool => {
            let f: LegacyPoolFile = de(text, format)?;
            let pools = f
                .cpool_list
                .into_iter()
                .map(|p| PoolSpec {
                    id: p.id,
                    host: None,
                    image: p.image,
                    start_with: p.start_with,
                    cins: p
                        .cins
                        .into_iter()
                        .map(|c| PoolCin {
                            cin: c.cin,
                            default_route: match c.default_route {
                                Some(LegacyBool::Bool(b)) => b,
                                Some(LegacyBool::Text(t)) => t.eq_ignore_ascii_case("true"),
                                None => false,
                            },
                        })
                        .collect(),
                })
                .collect();
            Loaded { kind, topology: TopologyFile { pools, ..Default::default() } }
        }
    };
    if let Err((at, message)) = check(&loaded) {
        return Err(locate(text, format, kind, at, &message));
    }
    Ok(loaded)
}

/// The legacy CIN map, keeping the file's order.
struct LegacyCinMap(Vec<(Name, Vec<Name>)>);

impl<'de> Deserialize<'de> for LegacyCinMap {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = LegacyCinMap;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of CIN ids to lists of CEN ids")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<LegacyCinMap, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<Name, Vec<Name>>()? {
                    out.push((k, v));
                }
                Ok(LegacyCinMap(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Which kind of JSON file this is, from its top-level keys.
fn sniff(text: &str) -> Kind {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text) else {
        return Kind::Topology;
    };
    if map.contains_key("cenList") {
        return Kind::LegacyCen;
    }
    if map.contains_key("cpoolList") {
        return Kind::LegacyPool;
    }
    let ours = ["hosts", "containers", "cens", "cins", "pools"];
    let legacy_cin = !map.is_empty()
        && map.iter().all(|(k, v)| {
            !ours.contains(&k.as_str()) && v.as_array().is_some_and(|a| a.iter().all(serde_json::Value::is_string))
        });
    if legacy_cin {
        Kind::LegacyCin
    } else {
        Kind::Topology
    }
}

/// Deserializes with the path of the field in errors, and the line.
fn de<T: serde::de::DeserializeOwned>(text: &str, format: Format) -> Result<T, String> {
    NEXT_NAME.with(|n| n.set(0));
    match format {
        Format::Yaml => {
            let d = yaml_serde::Deserializer::from_str(text);
            serde_path_to_error::deserialize(d).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let at = inner.location().map(|l| format!("line {}, column {}: ", l.line(), l.column()));
                // the YAML parser puts the path and the place in its own text too.
                let msg = inner.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
                // the YAML parser prefixes the path of the enclosing value: ours is longer.
                let msg = match msg.split_once(": ") {
                    Some((head, rest)) if path.starts_with(head) => rest.to_string(),
                    _ => msg,
                };
                format!("{}{}{msg}", at.unwrap_or_default(), field(&path))
            })
        }
        Format::Json => {
            let mut d = serde_json::Deserializer::from_str(text);
            let v: T = serde_path_to_error::deserialize(&mut d).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let msg = inner.to_string();
                let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
                format!("line {}, column {}: {}{msg}", inner.line(), inner.column(), field(&path))
            })?;
            d.end().map_err(|e| format!("line {}, column {}: {e}", e.line(), e.column()))?;
            Ok(v)
        }
    }
}

fn field(path: &str) -> String {
    if path.is_empty() || path == "." {
        String::new()
    } else {
        format!("{path}: ")
    }
}

/// Reports an error at a name found after parsing: parses again and fails
/// at that name, so the parser says where it is.
fn locate(text: &str, format: Format, kind: Kind, at: u32, message: &str) -> String {
    FAIL_AT.with(|f| f.set(at));
    FAIL_MESSAGE.with(|m| *m.borrow_mut() = message.to_string());
    let err = match kind {
        Kind::Topology => de::<TopologyFile>(text, format).err(),
        Kind::LegacyCen => de::<LegacyCenFile>(text, format).err(),
        Kind::LegacyCin => de::<LegacyCinMap>(text, format).err(),
        Kind::LegacyPool => de::<LegacyPoolFile>(text, format).err(),
    };
    FAIL_AT.with(|f| f.set(u32::MAX));
    err.unwrap_or_else(|| message.to_string())
}

/// Checks what parsing cannot: unique ids, references that resolve, made
/// flags that agree. Returns the name the error is about.
fn check(loaded: &Loaded) -> Result<(), (u32, String)> {
    let t = &loaded.topology;
    unique("host", t.hosts.iter())?;
    let mut seen = BTreeSet::new();
    for c in &t.containers {
        if let Some(h) = &c.host {
            check_plain(h, "host id")?;
        }
        check_plain(&c.id, "container id")?;
        let key = (c.host.as_ref().map(|h| h.value.clone()), c.id.value.clone());
        if !seen.insert(key) {
            return Err((c.id.seq, format!("container '{}' is listed twice", c.id.value)));
        }
        if let Some(t) = &c.tag {
            if t.len() > MAX_ID || t.chars().any(char::is_control) {
                return Err((
                    c.id.seq,
                    format!("container '{}': tag is too long or has control characters", c.id.value),
                ));
            }
        }
        if let Some(p) = &c.netns_path {
            if let Err(e) = leviathan::workload::parse(p) {
                return Err((c.id.seq, format!("container '{}': {}", c.id.value, e.message)));
            }
        }
    }
    unique("CEN", t.cens.iter().map(|c| &c.id))?;
    for c in &t.cens {
        check_plain(&c.id, "CEN id")?;
        let mut members = BTreeSet::new();
        for m in &c.members {
            let (host, id) = split_member(&m.value);
            if host.is_some_and(str::is_empty) || id.is_empty() || id.contains('/') {
                return Err((m.seq, format!("member '{}' is not 'container' or 'host/container'", m.value)));
            }
            if !members.insert(&m.value) {
                return Err((m.seq, format!("CEN '{}' lists member '{}' twice", c.id.value, m.value)));
            }
        }
    }
    unique("CIN", t.cins.iter().map(|c| &c.id))?;
    let cen_ids: BTreeSet<&str> = t.cens.iter().map(|c| c.id.value.as_str()).collect();
    let mut made_by_cin: BTreeMap<&str, &Name> = BTreeMap::new();
    for c in &t.cins {
        check_plain(&c.id, "CIN id")?;
        unique(&format!("CEN of CIN '{}'", c.id.value), c.cens.iter())?;
        for cen in &c.cens {
            // A legacy CIN map names CENs the server has; a topology file
            // has its CENs in it.
            if loaded.kind == Kind::Topology && !cen_ids.contains(cen.value.as_str()) {
                return Err((
                    cen.seq,
                    format!("CIN '{}' is over CEN '{}', which the file does not have", c.id.value, cen.value),
                ));
            }
            if c.made == Some(true) {
                made_by_cin.insert(&cen.value, &c.id);
            }
        }
    }
    for c in &t.cens {
        if c.made == Some(false) {
            if let Some(cin) = made_by_cin.get(c.id.value.as_str()) {
                return Err((
                    c.id.seq,
                    format!(
                        "CEN '{}' has made: false, but CIN '{}' over it is made (which makes it)",
                        c.id.value, cin.value
                    ),
                ));
            }
        }
    }
    unique("pool", t.pools.iter().map(|p| &p.id))?;
    let cin_ids: BTreeSet<&str> = t.cins.iter().map(|c| c.id.value.as_str()).collect();
    for p in &t.pools {
        check_plain(&p.id, "pool id")?;
        unique(&format!("CIN of pool '{}'", p.id.value), p.cins.iter().map(|c| &c.cin))?;
        let defaults: Vec<&PoolCin> = p.cins.iter().filter(|c| c.default_route).collect();
        if defaults.len() > 1 {
            return Err((defaults[1].cin.seq, format!("pool '{}' asks for more than one default route", p.id.value)));
        }
        for c in &p.cins {
            let known = cin_ids.contains(c.cin.value.as_str()) || cen_ids.contains(c.cin.value.as_str());
            if loaded.kind == Kind::Topology && !known {
                return Err((
                    c.cin.seq,
                    format!("pool '{}' names '{}', which is no CIN or CEN of the file", p.id.value, c.cin.value),
                ));
            }
        }
    }
    Ok(())
}

fn check_plain(n: &Name, what: &str) -> Result<(), (u32, String)> {
    if n.value.contains('/') {
        return Err((n.seq, format!("{what} '{}' has a '/'", n.value)));
    }
    Ok(())
}

fn unique<'a>(what: &str, names: impl Iterator<Item = &'a Name>) -> Result<(), (u32, String)> {
    let mut seen = BTreeSet::new();
    for n in names {
        if !seen.insert(n.value.as_str()) {
            return Err((n.seq, format!("{what} '{}' is listed twice", n.value)));
        }
    }
    Ok(())
}

/// `host/c1` → (Some("host"), "c1"); `c1` → (None, "c1").
pub fn split_member(m: &str) -> (Option<&str>, &str) {
    match m.split_once('/') {
        Some((h, c)) => (Some(h), c),
        None => (None, m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_errors_name_line_and_field() {
        let e = parse("cens:\n  - id: cen1\n    membrs: [c1]\n", true).unwrap_err();
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("membrs"), "{e}");
        let e = parse("cens:\n  - id: cen1\n    members: [c1]\n    made: perhaps\n", true).unwrap_err();
        assert!(e.contains("line 4") && e.contains("cens[0].made"), "{e}");
    }

    #[test]
    fn yaml_errors_name_line_column_and_field() {
        let e = parse("cens:\n  - id: cen1\n    membrs: [c1]\n", true).unwrap_err();
        assert!(e.starts_with("line 3, column 5: cens[0].membrs: unknown field `membrs`"), "{e}");
        let e = parse("cens:\n  - id: cen1\n    made: perhaps\n", true).unwrap_err();
        assert!(e.starts_with("line 3, column 11: cens[0].made: "), "{e}");
        let e = parse("cins:\n  - id: i\n    cens: [a, \"\"]\n", true).unwrap_err();
        assert!(e.starts_with("line 3, column 11: cins[0].cens[1]: empty id"), "{e}");
    }

    #[test]
    fn errors_after_parsing_get_their_line_too() {
        let text = "cens:\n  - id: cen1\n  - id: cen2\ncins:\n  - id: cin1\n    cens: [cen1, cen9]\n";
        let e = parse(text, true).unwrap_err();
        assert!(e.contains("line 6") && e.contains("cen9") && e.contains("cins[0].cens[1]"), "{e}");
        let e = parse("cens:\n  - id: a\n  - id: a\n", true).unwrap_err();
        assert!(e.contains("line 3") && e.contains("listed twice"), "{e}");
        let json = "{\"cens\": [{\"id\": \"a\"},\n {\"id\": \"a\"}]}";
        let e = parse(json, false).unwrap_err();
        assert!(e.contains("line 2") && e.contains("cens[1].id"), "{e}");
    }

    #[test]
    fn legacy_files_are_recognised() {
        let cen = parse(r#"{"cenList":[{"cenID":"cen1","containerIDs":["c1","c2"]}]}"#, false).unwrap();
        assert_eq!(cen.kind, Kind::LegacyCen);
        assert_eq!(cen.topology.cens[0].members.len(), 2);
        let cin = parse(r#"{"cin2":["cen2"],"cin1":["cen1"]}"#, false).unwrap();
        assert_eq!(cin.kind, Kind::LegacyCin);
        assert_eq!(cin.topology.cins[0].id.value, "cin2");
        let pool = parse(
            r#"{"cpoolList":[{"cpoolID":"p","type":"t","start_with":3,"cins":[{"cinID":"cen1","default_route":"true"}]}]}"#,
            false,
        )
        .unwrap();
        assert!(pool.topology.pools[0].cins[0].default_route);
    }

    #[test]
    fn no_panic_on_odd_input() {
        for text in ["", "[]", "null", "{", "cens: 3", "- - -", "{\"cens\": [{}]}", "\u{0}"] {
            let _ = parse(text, true);
            let _ = parse(text, false);
        }
    }
}
