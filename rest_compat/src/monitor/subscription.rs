//! The one place that knows the GraphQL `cinMonitor` subscription: its
//! document, its variables, and the mapping of its events to the legacy
//! monitor's words. Adjust here (and only here) if the schema's shape
//! differs.
//!
//! Assumed shape:
//!
//! ```graphql
//! cinMonitor(cinId: ID!, containerTag: String): CinMonitorEvent!
//! type CinMonitorEvent { kind: CinMonitorEventKind!  members: [CinMonitorMember!]! }
//! enum CinMonitorEventKind { STATE CREATE UPDATE DELETE }
//! type CinMonitorMember { containerId: ID!  hostId: ID!  address: String  tag: String }
//! ```
//!
//! The first event is `STATE` (the current members); then `CREATE` when a
//! container joins the CIN, `DELETE` when it leaves, `UPDATE` when its
//! address or tag changes. A `cinId` naming no CIN but a CEN monitors that
//! CEN's containers; an unknown id is an error (code `NOT_FOUND`).

use serde_json::{json, Value};

/// The subscription document.
pub const DOCUMENT: &str = "subscription LegacyMonitor($cinId: ID!, $tag: String) { \
     cinMonitor(cinId: $cinId, containerTag: $tag) { kind members { containerId hostId address tag } } }";

/// The variables of [`DOCUMENT`].
pub fn variables(cin_id: &str, container_tag: Option<&str>) -> Value {
    json!({ "cinId": cin_id, "tag": container_tag })
}

/// What an event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The current members (the first event; possibly again after a resync).
    State,
    Create,
    Update,
    Delete,
}

impl Kind {
    /// The legacy `event` word; `State` after the first event is sent as an
    /// `update` of every member (the legacy protocol has no resync word).
    pub fn legacy_word(self) -> &'static str {
        match self {
            Kind::Create => "create",
            Kind::Delete => "delete",
            Kind::Update | Kind::State => "update",
        }
    }
}

/// One event of the subscription: its kind and the legacy member list
/// (`[{"containerID", "ipaddress", "tag"}]`).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: Kind,
    pub members: Vec<Value>,
}

/// Reads one event out of a subscription answer's `data`.
pub fn parse_event(data: &Value) -> Result<Event, String> {
    let ev = data.get("cinMonitor").ok_or("the cinMonitor answer lacks its field")?;
    let kind = match ev.get("kind").and_then(Value::as_str) {
        Some("STATE") => Kind::State,
        Some("CREATE") => Kind::Create,
        Some("UPDATE") => Kind::Update,
        Some("DELETE") => Kind::Delete,
        other => return Err(format!("the cinMonitor answer has an unknown kind {other:?}")),
    };
    let members = ev
        .get("members")
        .and_then(Value::as_array)
        .ok_or("the cinMonitor answer lacks members")?
        .iter()
        .map(|m| {
            json!({
                "containerID": m.get("containerId").cloned().unwrap_or(Value::Null),
                "ipaddress": m.get("address").cloned().unwrap_or(Value::Null),
                "tag": m.get("tag").cloned().unwrap_or(Value::Null),
            })
        })
        .collect();
    Ok(Event { kind, members })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_parses() {
        async_graphql::parser::parse_query(DOCUMENT).unwrap();
    }

    #[test]
    fn maps_members() {
        let data = json!({"cinMonitor": {"kind": "CREATE", "members": [
            {"containerId": "c5", "hostId": "host1", "address": "10.10.0.11", "tag": null}]}});
        let ev = parse_event(&data).unwrap();
        assert_eq!(ev.kind, Kind::Create);
        assert_eq!(ev.members, vec![json!({"containerID": "c5", "ipaddress": "10.10.0.11", "tag": null})]);
        assert!(parse_event(&json!({"cinMonitor": {"kind": "X", "members": []}})).is_err());
    }
}
