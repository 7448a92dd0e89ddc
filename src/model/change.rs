//! A committed change as everyone downstream of the store sees it: which
//! records a command (or a status report) touched, each as it was before
//! and as it is after, under the revision it was committed at.
//!
//! Pure data about the model's records: the store writes and reads it, the
//! service publishes it on the change stream, the GraphQL subscriptions,
//! the legacy monitor and the driver read it. Its serialized form is the
//! stored change log's: do not change it.

use super::records::{EntityKey, Record};
use super::topology::Images;
use serde::{Deserialize, Serialize};

/// The actor of changes the server makes itself (realization status
/// reports, this host's announcement, resyncs).
pub const SYSTEM_ACTOR: &str = "leviathan";

/// One record's change inside a committed change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeItem {
    pub key: EntityKey,
    pub before: Option<Record>,
    pub after: Option<Record>,
}

/// A committed change: what a command (or a status report) did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub revision: u64,
    /// The mutation (or `status`) that made the change.
    pub mutation: String,
    /// Milliseconds since the Unix epoch at commit.
    pub at_ms: u64,
    /// Microseconds since the Unix epoch at commit (0 in changes written
    /// before it was recorded; use `at_ms` then).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub at_us: u64,
    /// Who made the change: a token's name, `unix:uid=N` (a local
    /// socket's peer), `anonymous` (a server without tokens) or
    /// `leviathan` (the server itself: status reports, resyncs). Empty in
    /// changes written before it was recorded (left out when empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub actor: String,
    pub items: Vec<ChangeItem>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Change {
    /// Commit time in milliseconds since the Unix epoch, with microsecond
    /// precision where it was recorded.
    pub fn at_millis(&self) -> f64 {
        if self.at_us > 0 {
            self.at_us as f64 / 1000.0
        } else {
            self.at_ms as f64
        }
    }

    /// The images this change leaves: each touched record as it is after.
    pub fn images(&self) -> Images {
        self.items.iter().map(|i| (i.key.clone(), i.after.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::CenRec;

    /// The stored change log holds this form: field names, `at_us` left
    /// out when zero and read back as zero when absent.
    #[test]
    fn the_serialized_form_is_the_change_logs() {
        let cen: CenRec = serde_json::from_value(serde_json::json!({"id": "c1"})).expect("a CEN from its id");
        let item = ChangeItem { key: EntityKey::Cen("c1".into()), before: None, after: Some(Record::Cen(cen)) };
        let change = Change {
            revision: 7,
            mutation: "cenCreate".into(),
            at_ms: 5,
            at_us: 0,
            actor: String::new(),
            items: vec![item],
        };
        let json = serde_json::to_value(&change).expect("serializes");
        let mut keys: Vec<&str> = json.as_object().expect("an object").keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["at_ms", "items", "mutation", "revision"]);
        assert_eq!(json["items"][0]["before"], serde_json::Value::Null);
        assert_eq!(serde_json::from_value::<Change>(json).expect("reads back"), change);
        let with_us = Change { at_us: 5_001, ..change };
        let json = serde_json::to_value(&with_us).expect("serializes");
        assert_eq!(json["at_us"], 5_001);
        assert_eq!(with_us.at_millis(), 5.001);
        // The actor: left out when empty (the form above), kept when set.
        let with_actor = Change { actor: "ci".into(), ..with_us };
        let json = serde_json::to_value(&with_actor).expect("serializes");
        assert_eq!(json["actor"], "ci");
        assert_eq!(serde_json::from_value::<Change>(json).expect("reads back"), with_actor);
    }

    /// A change stored before the actor was recorded reads back with an
    /// empty actor.
    #[test]
    fn an_old_change_reads_with_no_actor() {
        let old = serde_json::json!({"revision": 3, "mutation": "cenCreate", "at_ms": 9, "items": []});
        let change: Change = serde_json::from_value(old).expect("an old change reads");
        assert_eq!(change.actor, "");
        assert_eq!(change.at_millis(), 9.0);
    }
}
