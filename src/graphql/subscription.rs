//! Subscription root: the change feed (resumable by revision), the CIN
//! monitor, and the progress of long operations.

use super::monitor::{Diff, Member, MemberView};
use super::types::*;
use super::{error, gql};
use crate::model::Change;
use crate::model::{ids::check_id, ids::check_tag, ErrorCode, Record};
use crate::service::{FeedItem, OperationState as OpState, OperationStatus};
use async_graphql::{Context, Enum, Object, Result, SimpleObject, Subscription, Union, ID};
use futures_util::{Stream, StreamExt};
use std::collections::VecDeque;
use std::sync::Arc;

pub struct SubscriptionRoot;

/// Most entries in a `kinds` or `ids` filter.
pub const MAX_FILTER_ENTRIES: usize = 1000;

/// Kind of a topology object.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum EntityKind {
    /// A host (`Host`).
    Host,
    /// A container (`Container`).
    Container,
    /// A CEN (`Cen`).
    Cen,
    /// A CIN (`Cin`).
    Cin,
    /// A container pool (`Cpool`).
    Cpool,
    /// A container's membership in a CEN (joins and leaves).
    Membership,
}

/// What a change did to one object.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum ChangeOp {
    /// The object is new.
    Create,
    /// The object existed and still does, changed.
    Update,
    /// The object is gone.
    Delete,
}

/// Any topology object.
#[derive(Union)]
pub enum Entity {
    Host(Host),
    Container(Container),
    Cen(Cen),
    Cin(Cin),
    Cpool(Cpool),
    Membership(Membership),
}

impl Entity {
    fn from_record(r: &Record) -> Entity {
        match r {
            Record::Host(h) => Entity::Host(Host::from_rec(h)),
            Record::Container(c) => Entity::Container(Container::from_rec(c)),
            Record::Cen(c) => Entity::Cen(Cen::from_rec(c)),
            Record::Cin(c) => Entity::Cin(Cin::from_rec(c)),
            Record::Cpool(p) => Entity::Cpool(Cpool::from_rec(p)),
            Record::Member(m) => Entity::Membership(Membership { rec: m.clone() }),
        }
    }
}

/// One committed change (one revision), with the objects it changed.
pub struct ChangeEvent {
    change: Arc<Change>,
    /// Indexes of the items that pass the subscription's filters.
    items: Vec<usize>,
}

/// One committed change (one revision), with the objects it changed.
#[Object]
impl ChangeEvent {
    /// The revision this change produced; resume after it with
    /// `changes(since: revision)`.
    async fn revision(&self) -> i64 {
        self.change.revision as i64
    }
    /// The mutation that made the change (`status` for a realization
    /// status report).
    async fn mutation(&self) -> &str {
        &self.change.mutation
    }
    /// Commit time, in milliseconds since the Unix epoch (fractional).
    async fn at_ms(&self) -> f64 {
        self.change.at_millis()
    }
    /// Who made the change: the name of the token used, `unix:uid=N` (a
    /// peer of the local socket), `anonymous` (a server without tokens) or
    /// `leviathan` (the server itself: status reports, resyncs). Null for
    /// changes recorded before actors were.
    async fn actor(&self) -> Option<&str> {
        Some(self.change.actor.as_str()).filter(|a| !a.is_empty())
    }
    /// The objects changed (those passing the filters), in kind order.
    async fn items(&self) -> Vec<EntityChange> {
        self.items
            .iter()
            .filter_map(|i| self.change.items.get(*i))
            .map(|item| {
                let (kind, host_id, id) = key_parts(&item.key);
                let op = match (&item.before, &item.after) {
                    (None, Some(_)) => ChangeOp::Create,
                    (Some(_), None) => ChangeOp::Delete,
                    _ => ChangeOp::Update,
                };
                EntityChange { kind, id: ID(id), host_id: host_id.map(ID), op, record: item.after.clone() }
            })
            .collect()
    }
}

fn key_parts(key: &crate::model::EntityKey) -> (EntityKind, Option<String>, String) {
    use crate::model::EntityKey as K;
    match key {
        K::Host(id) => (EntityKind::Host, None, id.clone()),
        K::Container(k) => (EntityKind::Container, Some(k.host.clone()), k.id.clone()),
        K::Cen(id) => (EntityKind::Cen, None, id.clone()),
        K::Cin(id) => (EntityKind::Cin, None, id.clone()),
        K::Cpool(id) => (EntityKind::Cpool, None, id.clone()),
        K::Member(k) => (EntityKind::Membership, Some(k.host.clone()), format!("{}/{}", k.cen, k.container)),
    }
}

/// One object's change within a revision.
pub struct EntityChange {
    kind: EntityKind,
    id: ID,
    host_id: Option<ID>,
    op: ChangeOp,
    record: Option<Record>,
}

/// One object's change within a revision.
#[Object]
impl EntityChange {
    /// What kind of object changed.
    async fn kind(&self) -> EntityKind {
        self.kind
    }
    /// The object's id (for a container, its id on its host).
    async fn id(&self) -> &ID {
        &self.id
    }
    /// The host of a container; null for other kinds.
    async fn host_id(&self) -> Option<&ID> {
        self.host_id.as_ref()
    }
    /// What the change did to it.
    async fn op(&self) -> ChangeOp {
        self.op
    }
    /// The object as this change left it; null when deleted. Its own fields
    /// are as of this revision; related objects are looked up as they are
    /// now.
    async fn after(&self) -> Option<Entity> {
        self.record.as_ref().map(Entity::from_record)
    }
}

struct ChangeFilter {
    kinds: Option<Vec<EntityKind>>,
    ids: Option<Vec<String>>,
}

impl ChangeFilter {
    fn event(&self, change: Arc<Change>) -> Option<ChangeEvent> {
        let items: Vec<usize> = change
            .items
            .iter()
            .enumerate()
            .filter(|(_, item)| {
                let (kind, host, id) = key_parts(&item.key);
                self.kinds.as_ref().is_none_or(|k| k.contains(&kind))
                    && self.ids.as_ref().is_none_or(|ids| {
                        ids.iter()
                            .any(|want| *want == id || host.as_ref().is_some_and(|h| *want == format!("{h}/{id}")))
                    })
            })
            .map(|(i, _)| i)
            .collect();
        (!items.is_empty()).then_some(ChangeEvent { change, items })
    }
}

/// What a monitor event says.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum MonitorEventKind {
    /// The members at subscription time (always the first event).
    State,
    /// Members joined (got an address).
    Create,
    /// Members' address or tag changed.
    Update,
    /// Members left.
    Delete,
}

/// A member of a monitored CIN: one container interface.
#[derive(SimpleObject, Clone)]
pub struct MonitorMember {
    /// The container's id on its host (the legacy `containerID`).
    pub container_id: ID,
    /// The container's host (the legacy `hostID`).
    pub host_id: ID,
    /// The CEN of the interface.
    pub cen_id: ID,
    /// Its address in the CIN (in CEN mode: null unless a CIN over the CEN
    /// gives one).
    pub address: Option<String>,
    /// The container's tag (the legacy `tag`); null when unset.
    pub tag: Option<String>,
}

impl From<Member> for MonitorMember {
    fn from(m: Member) -> Self {
        MonitorMember {
            container_id: ID(m.key.container),
            host_id: ID(m.key.host),
            cen_id: ID(m.key.cen),
            address: m.address.map(|a| a.to_string()),
            tag: m.tag,
        }
    }
}

/// An event of `cinMonitor`.
#[derive(SimpleObject)]
pub struct CinMonitorEvent {
    /// What the event says: the first is always STATE (the legacy
    /// `response` state), then CREATE, UPDATE or DELETE (the legacy
    /// `event`).
    pub kind: MonitorEventKind,
    /// The revision the event reflects.
    pub revision: i64,
    /// The monitored id.
    pub cin_id: ID,
    /// True when the id named no CIN and the monitor follows that CEN.
    pub cen_mode: bool,
    /// The members concerned (for STATE: all current members).
    pub members: Vec<MonitorMember>,
}

/// Where an operation is.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum OperationState {
    /// The kernel work is under way.
    Running,
    /// Done: every target is realized (or taken out) as asked.
    Succeeded,
    /// The kernel work failed; `message` says why.
    Failed,
}

/// Progress of a long make/destroy.
#[derive(SimpleObject)]
pub struct Operation {
    /// The operation id (the `operationId` of the mutation that started it).
    pub id: ID,
    /// The mutation that started it.
    pub kind: String,
    /// The CENs or CINs it works on.
    pub target_ids: Vec<ID>,
    /// Targets finished so far.
    pub steps_done: i32,
    /// Targets in all.
    pub steps_total: i32,
    /// Running, succeeded or failed.
    pub state: OperationState,
    /// Why it failed.
    pub message: Option<String>,
}

impl From<OperationStatus> for Operation {
    fn from(s: OperationStatus) -> Self {
        Operation {
            id: ID(s.id),
            kind: s.kind,
            target_ids: s.targets.into_iter().map(ID).collect(),
            steps_done: i32::try_from(s.steps_done).unwrap_or(i32::MAX),
            steps_total: i32::try_from(s.steps_total).unwrap_or(i32::MAX),
            state: match s.state {
                OpState::Running => OperationState::Running,
                OpState::Succeeded => OperationState::Succeeded,
                OpState::Failed => OperationState::Failed,
            },
            message: s.message,
        }
    }
}

fn monitor_events(diff: Diff, revision: u64, cin_id: &str, cen_mode: bool) -> Vec<CinMonitorEvent> {
    if diff.is_empty() {
        return Vec::new();
    }
    [
        (MonitorEventKind::Delete, diff.deleted),
        (MonitorEventKind::Update, diff.updated),
        (MonitorEventKind::Create, diff.created),
    ]
    .into_iter()
    .filter(|(_, m)| !m.is_empty())
    .map(|(kind, members)| CinMonitorEvent {
        kind,
        revision: revision as i64,
        cin_id: ID(cin_id.to_string()),
        cen_mode,
        members: members.into_iter().map(Into::into).collect(),
    })
    .collect()
}

fn check_list<T>(what: &str, v: &Option<Vec<T>>) -> Result<()> {
    match v {
        Some(v) if v.is_empty() => Err(error(
            ErrorCode::BadRequest,
            format!(
                "{what} must not be empty (leave it out to get every {what_one})",
                what_one = &what[..what.len() - 1]
            ),
        )),
        Some(v) if v.len() > MAX_FILTER_ENTRIES => {
            Err(error(ErrorCode::BadRequest, format!("{what} has {} entries (at most {MAX_FILTER_ENTRIES})", v.len())))
        }
        _ => Ok(()),
    }
}

/// The root of every live feed (on `/graphql/ws`, with the
/// `graphql-transport-ws` or `graphql-ws` subprotocol): the change feed, the
/// CIN monitor (the legacy `/leviathan/monitor`) and operation progress.
#[Subscription]
impl SubscriptionRoot {
    /// Every committed change, one event per revision, in revision order.
    /// With `since`, the changes after that revision are replayed from the
    /// change log first, then live ones follow with no gap and no
    /// duplicate (across restarts too). `kinds` and `ids` keep the items of
    /// those kinds / ids (a container matches its id or `host/id`);
    /// revisions with no item left are skipped.
    async fn changes(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Replay the changes after this revision from the change log first (a revision \
                          the log no longer holds answers GONE); only live changes when absent.")]
        since: Option<i64>,
        #[graphql(desc = "Only items of these kinds (1 to 1000 entries; every kind when absent).")] kinds: Option<
            Vec<EntityKind>,
        >,
        #[graphql(desc = "Only items with these ids; a container matches its id or `hostId/id` (1 to 1000 \
                          entries; every id when absent).")]
        ids: Option<Vec<ID>>,
    ) -> Result<impl Stream<Item = Result<ChangeEvent>>> {
        let since = match since {
            Some(s) => Some(
                u64::try_from(s)
                    .map_err(|_| error(ErrorCode::BadRequest, format!("since must not be negative (got {s})")))?,
            ),
            None => None,
        };
        check_list("kinds", &kinds)?;
        check_list("ids", &ids)?;
        let filter = ChangeFilter { kinds, ids: ids.map(|v| v.into_iter().map(|i| i.0).collect()) };
        let stream = svc(ctx).change_stream(since).map_err(gql)?;
        Ok(stream.filter_map(move |item| {
            futures_util::future::ready(match item {
                Ok(change) => filter.event(change).map(Ok),
                Err(e) => Some(Err(gql(e))),
            })
        }))
    }

    /// The members of a CIN: first its current members (`STATE`), then
    /// `DELETE`, `UPDATE` and `CREATE` events as members leave, change
    /// address or tag, and join (in that order within one revision). With
    /// `containerTag`, only members with that tag (a container whose tag
    /// changes to or from it joins or leaves the view). An id naming no CIN
    /// but a CEN monitors that CEN's containers (legacy).
    async fn cin_monitor(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The CIN to monitor (the legacy `cinID`); a CEN id where no CIN has that id.")] cin_id: ID,
        #[graphql(desc = "Only members with this tag (the legacy `container_tag`); all when absent.")]
        container_tag: Option<String>,
    ) -> Result<impl Stream<Item = CinMonitorEvent>> {
        check_id("CIN id", &cin_id).map_err(gql)?;
        if let Some(tag) = &container_tag {
            check_tag(tag).map_err(gql)?;
        }
        let service = Arc::clone(svc(ctx));
        // Subscribe before the snapshot, then drop what it already holds.
        let mut feed = service.feed();
        let (view, revision) = service.read_at(|t| MemberView::open(t, &cin_id, container_tag));
        let Some(view) = view else {
            return Err(error(ErrorCode::NotFound, format!("no CIN or CEN named '{}'", cin_id.as_str())));
        };
        feed.caught_up(revision);
        let cen_mode = view.is_cen();
        let id = cin_id.0;
        let first = CinMonitorEvent {
            kind: MonitorEventKind::State,
            revision: revision as i64,
            cin_id: ID(id.clone()),
            cen_mode,
            members: view.members().into_iter().map(Into::into).collect(),
        };
        let pending: VecDeque<CinMonitorEvent> = VecDeque::from([first]);
        Ok(futures_util::stream::unfold(
            (service, feed, view, pending),
            move |(service, mut feed, mut view, mut pending)| {
                let id = id.clone();
                async move {
                    loop {
                        if let Some(ev) = pending.pop_front() {
                            return Some((ev, (service, feed, view, pending)));
                        }
                        match feed.recv().await? {
                            FeedItem::Change(change) => {
                                let lookup = |k: &crate::model::ContainerKey| {
                                    service.read(|t| t.container(k).and_then(|c| c.tag.clone()))
                                };
                                let diff = view.apply(&change, &lookup);
                                pending.extend(monitor_events(diff, change.revision, &id, cen_mode));
                            }
                            FeedItem::Lagged { .. } => {
                                let (diff, revision) = service.read_at(|t| view.resync(t));
                                feed.caught_up(revision);
                                pending.extend(monitor_events(diff, revision, &id, cen_mode));
                            }
                        }
                    }
                }
            },
        ))
    }

    /// Progress of a long make/destroy: its current state first, then each
    /// change, ending after the outcome (`SUCCEEDED` or `FAILED`).
    async fn operation(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "The `operationId` a make or destroy answered with `wait: false`.")] id: ID,
    ) -> Result<impl Stream<Item = Operation>> {
        let Some(rx) = svc(ctx).operations().watch(&id) else {
            return Err(error(ErrorCode::NotFound, format!("no operation '{}'", id.as_str())));
        };
        Ok(futures_util::stream::unfold((rx, true, false), |(mut rx, first, done)| async move {
            if done {
                return None;
            }
            if !first && rx.changed().await.is_err() {
                return None;
            }
            let status = rx.borrow_and_update().clone();
            let done = status.is_finished();
            Some((Operation::from(status), (rx, false, done)))
        }))
    }
}
