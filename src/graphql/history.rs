//! Time travel in the API: `at` (the topology as it stood right after a
//! kept revision, with the same read fields as `Query`), `diff` (what
//! differs between two revisions), `history` (the changes that touched one
//! object) and `keptRevisions`. The work is the service's
//! (`service::history`); here are the arguments, the errors (`GONE` names
//! the oldest kept revision in `extensions.oldest`) and the pages.
//!
//! Objects reached through `at` carry the view at that revision
//! ([`Source`]) and read their relations and status through it.

use super::cost;
use super::query::{CenFields, CinFields, ContainerFields, CpoolFields, HostFields};
use super::subscription::{ChangeOp, EntityKind};
use super::types::{svc, Source};
use super::{error, gql};
use crate::model::{check_host_arg, ContainerKey, EntityKey, ErrorCode, MemberKey, ModelError, Record};
use crate::service::history::MAX_PAGE;
use crate::service::Service;
use async_graphql::{Context, ErrorExtensions, Json, Object, Result, SimpleObject, ID};
use serde_json::Value;

/// `at`, `diff`, `history`, `keptRevisions`: flattened into `Query`.
pub struct HistoryFields;

/// A revision argument: not negative.
fn revision_arg(name: &str, v: i64) -> Result<u64> {
    u64::try_from(v)
        .map_err(|_| error(ErrorCode::BadRequest, format!("{name}: {v} is negative (revisions are 0 or more)")))
}

/// A page size: 0 ..= [`MAX_PAGE`], [`MAX_PAGE`] when absent.
fn page_arg(first: Option<i32>) -> Result<usize> {
    match first {
        None => Ok(MAX_PAGE),
        Some(n) if n >= 0 && (n as usize) <= MAX_PAGE => Ok(n as usize),
        Some(n) => {
            Err(error(ErrorCode::BadRequest, format!("first: {n} is outside 0..={MAX_PAGE} (the most one page holds)")))
        }
    }
}

/// A service error; `GONE` also names the oldest kept revision.
fn kept_error(s: &Service, e: ModelError) -> async_graphql::Error {
    if e.code == ErrorCode::Gone {
        let oldest = s.kept_revisions().0 as i64;
        return gql(e).extend_with(|_, x| x.set("oldest", oldest));
    }
    gql(e)
}

/// The JSON image of a record: its own record, as the change log stores it.
fn image(r: &Record) -> Option<Json<Value>> {
    let v = match r {
        Record::Host(x) => serde_json::to_value(x),
        Record::Container(x) => serde_json::to_value(x),
        Record::Cen(x) => serde_json::to_value(x),
        Record::Cin(x) => serde_json::to_value(x),
        Record::Cpool(x) => serde_json::to_value(x),
        Record::Member(x) => serde_json::to_value(x),
    };
    v.ok().map(Json)
}

fn op_of(before: &Option<Record>, after: &Option<Record>) -> ChangeOp {
    match (before, after) {
        (None, Some(_)) => ChangeOp::Create,
        (Some(_), None) => ChangeOp::Delete,
        _ => ChangeOp::Update,
    }
}

/// Kind, id, host and container of a key, as `DiffEntry` names them.
fn parts(key: &EntityKey) -> (EntityKind, String, Option<String>, Option<String>) {
    match key {
        EntityKey::Host(id) => (EntityKind::Host, id.clone(), None, None),
        EntityKey::Container(k) => (EntityKind::Container, k.id.clone(), Some(k.host.clone()), None),
        EntityKey::Cen(id) => (EntityKind::Cen, id.clone(), None, None),
        EntityKey::Cin(id) => (EntityKind::Cin, id.clone(), None, None),
        EntityKey::Cpool(id) => (EntityKind::Cpool, id.clone(), None, None),
        EntityKey::Member(m) => {
            (EntityKind::Membership, m.cen.clone(), Some(m.host.clone()), Some(m.container.clone()))
        }
    }
}

/// The key `history` names.
fn key_of(s: &Service, kind: EntityKind, id: &str, host: Option<&str>, container: Option<&str>) -> Result<EntityKey> {
    let host = || check_host_arg(host, s.host_id()).map(str::to_string).map_err(gql);
    Ok(match kind {
        EntityKind::Host => EntityKey::Host(id.to_string()),
        EntityKind::Container => EntityKey::Container(ContainerKey::new(host()?, id)),
        EntityKind::Cen => EntityKey::Cen(id.to_string()),
        EntityKind::Cin => EntityKey::Cin(id.to_string()),
        EntityKind::Cpool => EntityKey::Cpool(id.to_string()),
        EntityKind::Membership => {
            let Some(c) = container else {
                return Err(error(
                    ErrorCode::BadRequest,
                    "container: required for a membership (id is the CEN, hostId and container the member)",
                ));
            };
            EntityKey::Member(MemberKey::new(id, &ContainerKey::new(host()?, c)))
        }
    })
}

#[Object]
impl HistoryFields {
    /// The topology as it stood right after `revision` (read-only). A
    /// revision older than the oldest kept answers GONE naming the oldest
    /// kept one (extensions: code GONE, oldest: Int); a revision after the
    /// current one answers BAD_REQUEST.
    async fn at(&self, ctx: &Context<'_>, #[graphql(desc = "A kept revision.")] revision: i64) -> Result<TopologyAt> {
        let s = svc(ctx);
        let rev = revision_arg("revision", revision)?;
        let view = s.at(rev).await.map_err(|e| kept_error(s, e))?;
        let at_ms = s.revision_time(rev).await;
        Ok(TopologyAt { revision: rev, at_ms, src: Source::at(view) })
    }

    /// What changed between two revisions: one entry per object whose image
    /// at `from` differs from its image at `to` (an object made and deleted
    /// in between is none), in the order of kind then key (containers by
    /// host and id, memberships by CEN, host and container), paged by
    /// `first` and `after` (an entry's `cursor`). Same GONE / BAD_REQUEST
    /// rules for both ends; `from` after `to` is BAD_REQUEST.
    #[graphql(complexity = "cost::paged(first, MAX_PAGE, child_complexity)")]
    async fn diff(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The earlier revision.")] from: i64,
        #[graphql(desc = "The later revision; the current one when absent.")] to: Option<i64>,
        #[graphql(desc = "At most this many entries, 0 to 1000 (1000 when absent): page with `after`.")] first: Option<
            i32,
        >,
        #[graphql(desc = "Only the entries after this cursor (the `cursor` of the last entry of the previous page).")]
        after: Option<String>,
    ) -> Result<Vec<DiffEntry>> {
        let s = svc(ctx);
        let from = revision_arg("from", from)?;
        let to = match to {
            Some(t) => revision_arg("to", t)?,
            None => s.revision(),
        };
        let first = page_arg(first)?;
        let after = match after {
            Some(a) => Some(serde_json::from_str::<EntityKey>(&a).map_err(|_| {
                error(ErrorCode::BadRequest, format!("after: '{a}' is not a cursor of diff (give an entry's `cursor`)"))
            })?),
            None => None,
        };
        let items = s.diff(from, to, after.as_ref(), first).await.map_err(|e| kept_error(s, e))?;
        Ok(items
            .into_iter()
            .map(|d| {
                let (kind, id, host_id, container) = parts(&d.key);
                DiffEntry {
                    kind,
                    id: ID(id),
                    host_id: host_id.map(ID),
                    container: container.map(ID),
                    op: op_of(&d.before, &d.after),
                    before: d.before.as_ref().and_then(image),
                    after: d.after.as_ref().and_then(image),
                    cursor: serde_json::to_string(&d.key).unwrap_or_default(),
                }
            })
            .collect())
    }

    /// The kept changes that touched one object, newest first: `first` of
    /// them, `after` a revision: only changes older than it. A container is
    /// named by `id` plus `hostId` (this server's host when absent); a
    /// membership by `id` = CEN id, `hostId`, and `container`.
    #[graphql(complexity = "cost::paged(first, MAX_PAGE, child_complexity)")]
    #[allow(clippy::too_many_arguments)]
    async fn history(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The object's kind.")] kind: EntityKind,
        #[graphql(desc = "Its id (a membership: the CEN's).")] id: ID,
        #[graphql(desc = "A container's (or a membership's) host; this server's host when absent.")] host_id: Option<
            ID,
        >,
        #[graphql(desc = "A membership's container.")] container: Option<ID>,
        #[graphql(desc = "At most this many changes, 0 to 1000 (1000 when absent).")] first: Option<i32>,
        #[graphql(desc = "Only the changes older than this revision (the last revision of the previous page).")]
        after: Option<i64>,
    ) -> Result<Vec<HistoryEntry>> {
        let s = svc(ctx);
        let key =
            key_of(s, kind, id.as_str(), host_id.as_ref().map(|h| h.as_str()), container.as_ref().map(|c| c.as_str()))?;
        let first = page_arg(first)?;
        let before = after.map(|a| revision_arg("after", a)).transpose()?;
        let changes = s.history_of(&key, before, first).await.map_err(|e| kept_error(s, e))?;
        Ok(changes
            .into_iter()
            .filter_map(|c| {
                let item = c.items.into_iter().next()?;
                Some(HistoryEntry {
                    revision: c.revision as i64,
                    at_ms: if c.at_us > 0 { c.at_us as f64 / 1000.0 } else { c.at_ms as f64 },
                    actor: Some(c.actor).filter(|a| !a.is_empty()),
                    mutation: c.mutation,
                    op: op_of(&item.before, &item.after),
                    before: item.before.as_ref().and_then(image),
                    after: item.after.as_ref().and_then(image),
                })
            })
            .collect())
    }

    /// The revisions `at` can answer: the oldest kept and the current one
    /// (for a timeline).
    async fn kept_revisions(&self, ctx: &Context<'_>) -> KeptRevisions {
        let (oldest, newest) = svc(ctx).kept_revisions();
        KeptRevisions { oldest: oldest as i64, newest: newest as i64 }
    }
}

/// The revisions `at` can answer.
#[derive(SimpleObject)]
pub struct KeptRevisions {
    /// The oldest kept revision (the log holds every change after it).
    pub oldest: i64,
    /// The current revision.
    pub newest: i64,
}

/// One object that differs between two revisions.
#[derive(SimpleObject)]
pub struct DiffEntry {
    /// Its kind.
    pub kind: EntityKind,
    /// Its id (a membership: the CEN's).
    pub id: ID,
    /// A container's or a membership's host; null for other kinds.
    pub host_id: Option<ID>,
    /// A membership's container; null for other kinds.
    pub container: Option<ID>,
    /// CREATE: absent at `from`; DELETE: absent at `to`; UPDATE otherwise.
    pub op: ChangeOp,
    /// Its record's JSON image at `from` (as the change log stores it);
    /// null when absent there.
    pub before: Option<Json<Value>>,
    /// Its record's JSON image at `to`; null when absent there.
    pub after: Option<Json<Value>>,
    /// Pass as `after` for the next page.
    pub cursor: String,
}

/// One change that touched an object.
#[derive(SimpleObject)]
pub struct HistoryEntry {
    /// The revision of the change.
    pub revision: i64,
    /// Its commit time, ms since the Unix epoch (fractional).
    pub at_ms: f64,
    /// Who made it; null for changes recorded before actors were.
    pub actor: Option<String>,
    /// The mutation that made it (`status` for a status report).
    pub mutation: String,
    /// What it did to the object.
    pub op: ChangeOp,
    /// The object's JSON image before the change; null when it was made.
    pub before: Option<Json<Value>>,
    /// The object's JSON image after the change; null when deleted.
    pub after: Option<Json<Value>>,
}

/// The topology at one revision: the same read fields, arguments and
/// paging as `Query`'s. Objects reached through it answer as of that
/// revision too, status fields included (what was recorded then).
pub struct TopologyAt {
    revision: u64,
    at_ms: Option<f64>,
    src: Source,
}

/// The topology at one revision: the same read fields, arguments and
/// paging as `Query`'s. Objects reached through it answer as of that
/// revision too, status fields included (what was recorded then).
#[Object]
impl TopologyAt {
    /// The revision read.
    async fn revision(&self) -> i64 {
        self.revision as i64
    }
    /// Commit time of that revision, ms since the Unix epoch (fractional);
    /// null if unknown (the oldest kept revision's change is no longer kept).
    async fn at_ms(&self) -> Option<f64> {
        self.at_ms
    }
    /// `host`, `hosts`, `hostCount`.
    #[graphql(flatten)]
    async fn host_fields(&self) -> HostFields {
        HostFields(self.src.clone())
    }
    /// `container`, `containers`, `containerCount`.
    #[graphql(flatten)]
    async fn container_fields(&self) -> ContainerFields {
        ContainerFields(self.src.clone())
    }
    /// `cen`, `cens`, `cenCount`.
    #[graphql(flatten)]
    async fn cen_fields(&self) -> CenFields {
        CenFields(self.src.clone())
    }
    /// `cin`, `cins`, `cinCount`.
    #[graphql(flatten)]
    async fn cin_fields(&self) -> CinFields {
        CinFields(self.src.clone())
    }
    /// `cpool`, `cpools`, `cpoolCount`.
    #[graphql(flatten)]
    async fn cpool_fields(&self) -> CpoolFields {
        CpoolFields(self.src.clone())
    }
}
