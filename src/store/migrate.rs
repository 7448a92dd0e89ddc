//! State format 1 -> 2: a CEN's member list and a CIN's address list become
//! membership records (one per container and CEN, carrying its addresses);
//! a CIN's `net` (second octet of its /16) becomes its subnet. The change
//! log of format 1 describes records in the old shape, so it is dropped and
//! the floor set to the current revision: a client resuming from before it
//! is told to re-read the state.

use anyhow::{bail, Context};
use rusqlite::{params, Connection};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

type MemberId = (String, String, String); // (cen, host, container)

pub fn from_v1(conn: &mut Connection) -> anyhow::Result<()> {
    let tx = conn.transaction()?;
    let rows: Vec<(String, String, String)> = {
        let mut stmt = tx.prepare("SELECT kind, id, body FROM records WHERE kind IN ('cen', 'cin')")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    let mut members: BTreeMap<MemberId, Map<String, Value>> = BTreeMap::new();
    let mut rewritten: Vec<(String, String, Value)> = Vec::new();
    let mut addresses: Vec<(MemberId, String, Value)> = Vec::new();
    for (kind, id, body) in rows {
        let mut v: Map<String, Value> =
            serde_json::from_str(&body).with_context(|| format!("unreadable {kind} record '{id}'"))?;
        match kind.as_str() {
            "cen" => {
                let list = v.remove("members").unwrap_or(Value::Array(vec![]));
                for (seq, m) in list.as_array().into_iter().flatten().enumerate() {
                    let (Some(host), Some(container), Some(ifname)) =
                        (m["host"].as_str(), m["container"].as_str(), m["ifname"].as_str())
                    else {
                        bail!("CEN '{id}' has a malformed member");
                    };
                    let mut rec = Map::new();
                    rec.insert("kind".into(), json!("member"));
                    rec.insert("cen".into(), json!(id));
                    rec.insert("host".into(), json!(host));
                    rec.insert("container".into(), json!(container));
                    rec.insert("ifname".into(), json!(ifname));
                    rec.insert("seq".into(), json!(seq));
                    members.insert((id.clone(), host.to_string(), container.to_string()), rec);
                }
            }
            _ => {
                let Some(net) = v.remove("net").and_then(|n| n.as_u64()).filter(|n| *n <= 255) else {
                    bail!("CIN '{id}' has no valid net");
                };
                v.insert("subnet".into(), json!(format!("10.{net}.0.0")));
                v.insert("prefix_len".into(), json!(16));
                for a in v.remove("addresses").and_then(|a| a.as_array().cloned()).unwrap_or_default() {
                    let (Some(host), Some(container), Some(cen)) =
                        (a["host"].as_str(), a["container"].as_str(), a["cen"].as_str())
                    else {
                        bail!("CIN '{id}' has a malformed address");
                    };
                    addresses.push(((cen.into(), host.into(), container.into()), id.clone(), a["ip"].clone()));
                }
            }
        }
        rewritten.push((kind, id, Value::Object(v)));
    }
    for (member, cin, ip) in addresses {
        if let Some(rec) = members.get_mut(&member) {
            let map = rec.entry("addresses").or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = map {
                m.insert(cin, ip);
            }
        }
    }
    {
        let mut put = tx.prepare("INSERT OR REPLACE INTO records (kind, id, body) VALUES (?1, ?2, ?3)")?;
        for (kind, id, v) in rewritten {
            put.execute(params![kind, id, v.to_string()])?;
        }
        for ((cen, host, container), rec) in members {
            put.execute(params!["member", format!("{cen}/{host}/{container}"), Value::Object(rec).to_string()])?;
        }
    }
    let revision: String = tx.query_row("SELECT value FROM meta WHERE key = 'revision'", [], |r| r.get(0))?;
    tx.execute("DELETE FROM changes", [])?;
    tx.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('floor', ?1)", params![revision])?;
    tx.pragma_update(None, "user_version", super::FORMAT)?;
    tx.commit()?;
    Ok(())
}
