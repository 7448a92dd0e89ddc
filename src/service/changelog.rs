//! The server's log of committed changes: one concise line per change at
//! the default level, naming its revision, its mutation and what it
//! touched and who did it (its actor); for status reports, each CEN's and
//! CIN's new status.

use crate::model::{Change, EntityKey, Record};
use std::sync::Arc;
use tokio::sync::broadcast;

/// One concise line per committed change at the default level: the
/// mutation and what it touched; for status reports (the end of a make or
/// destroy), each CEN's and CIN's new status.
pub async fn log_changes(mut rx: broadcast::Receiver<Arc<Change>>) {
    use tokio::sync::broadcast::error::RecvError;
    const SHOWN: usize = 6;
    loop {
        let change = match rx.recv().await {
            Ok(c) => c,
            Err(RecvError::Lagged(n)) => {
                tracing::info!("{n} changes not logged (the log fell behind)");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        let mut parts: Vec<String> = change
            .items
            .iter()
            .take(SHOWN)
            .map(|it| {
                let op = match (&it.before, &it.after) {
                    (None, Some(_)) => "+",
                    (Some(_), None) => "-",
                    _ => "~",
                };
                let status = match &it.after {
                    Some(Record::Cen(c)) if change.mutation == "status" => {
                        format!(" {:?}", c.making.realization.status).to_uppercase()
                    }
                    Some(Record::Cin(c)) if change.mutation == "status" => {
                        format!(" {:?}", c.making.realization.status).to_uppercase()
                    }
                    _ => String::new(),
                };
                let key = match &it.key {
                    EntityKey::Host(id) => format!("host {id}"),
                    EntityKey::Container(k) => format!("container {k}"),
                    EntityKey::Cen(id) => format!("cen {id}"),
                    EntityKey::Cin(id) => format!("cin {id}"),
                    EntityKey::Cpool(id) => format!("pool {id}"),
                    EntityKey::Member(m) => format!("member {}/{} in {}", m.host, m.container, m.cen),
                };
                format!("{op}{key}{status}")
            })
            .collect();
        if change.items.len() > SHOWN {
            parts.push(format!("and {} more", change.items.len() - SHOWN));
        }
        let actor = if change.actor.is_empty() { "unknown" } else { &change.actor };
        tracing::info!("rev {} {}: {} (by {actor})", change.revision, change.mutation, parts.join(", "));
    }
}
