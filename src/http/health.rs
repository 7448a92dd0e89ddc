//! What the server tells of itself: `/healthz` (asks the service, which
//! asks its store; the same body while the server still waits for its
//! store) and `/metrics` (Prometheus text).

use crate::http::graphql::InFlight;
use crate::http::state::AppState;
use crate::http::ws::WsEndpoint;
use crate::service::probe::Probe;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::fmt::Write as _;

/// What `/metrics` shows of the HTTP side: websocket connections open,
/// GraphQL requests running and abandoned.
#[derive(Clone)]
pub struct Gauges {
    pub ws: WsEndpoint,
    pub graphql: InFlight,
}

/// Health, honestly: the service asks its store for something (a read of
/// the change log, bounded by a timeout), and the answer is 503 when it
/// does not answer; the realizer is running whenever the server is (a
/// server that cannot realize refuses to start), or off with `--no-realize`.
pub async fn healthz(State(state): State<AppState>) -> Response {
    let probe = state.service.probe().await;
    let realizer = if state.http.realizing { "running" } else { "off (--no-realize)" };
    answer(&probe, realizer)
}

/// The `/healthz` answer for a probe: 200 and `"status": "ok"` when the
/// store answered, 503 and `"unavailable"` otherwise, with the store's
/// kind and error and what the realizer is doing. The one shape of the
/// body, also while a server waits for its store (`http::waiting`).
pub fn answer(probe: &Probe, realizer: &str) -> Response {
    let ok = probe.ok();
    let body = json!({
        "status": if ok { "ok" } else { "unavailable" },
        "version": crate::VERSION,
        "revision": probe.revision,
        "store": {"kind": probe.store_kind, "ok": ok, "error": probe.store_error},
        "realizer": realizer,
    });
    let code = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// Prometheus text exposition: the revision, objects by kind, CENs and
/// CINs by realization status, operations under way, open `/graphql/ws`
/// connections, GraphQL requests over HTTP running and abandoned.
pub async fn metrics(State(state): State<AppState>, axum::Extension(gauges): axum::Extension<Gauges>) -> Response {
    let mut out = String::new();
    model_metrics(&state, &mut out);
    http_metrics(&gauges, &mut out);
    if let Some(engine) = crate::graphql::Engine::of(&state.schema) {
        cache_metrics(engine, &mut out);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The revision, objects by kind, realization statuses, operations.
fn model_metrics(state: &AppState, out: &mut String) {
    let service = &state.service;
    let ((counts, statuses), revision) = service.read_at(|t| {
        let mut statuses: std::collections::BTreeMap<(&str, String), usize> = Default::default();
        for c in t.cens() {
            *statuses.entry(("cen", format!("{:?}", c.making.realization.status).to_uppercase())).or_default() += 1;
        }
        for c in t.cins() {
            *statuses.entry(("cin", format!("{:?}", c.making.realization.status).to_uppercase())).or_default() += 1;
        }
        (t.counts(), statuses)
    });
    let _ = writeln!(out, "# HELP leviathan_revision Revision of the last committed change.");
    let _ = writeln!(out, "# TYPE leviathan_revision gauge\nleviathan_revision {revision}");
    let _ = writeln!(out, "# HELP leviathan_objects Objects in the topology, by kind.");
    let _ = writeln!(out, "# TYPE leviathan_objects gauge");
    let (hosts, containers, cens, cins, cpools) = counts;
    for (kind, n) in [("host", hosts), ("container", containers), ("cen", cens), ("cin", cins), ("cpool", cpools)] {
        let _ = writeln!(out, "leviathan_objects{{kind=\"{kind}\"}} {n}");
    }
    let _ = writeln!(out, "# HELP leviathan_realization CENs and CINs by realization status.");
    let _ = writeln!(out, "# TYPE leviathan_realization gauge");
    for ((kind, status), n) in statuses {
        let _ = writeln!(out, "leviathan_realization{{kind=\"{kind}\",status=\"{status}\"}} {n}");
    }
    let running = service.operations().running();
    let _ = writeln!(out, "# HELP leviathan_operations_running Make/destroy operations under way.");
    let _ = writeln!(out, "# TYPE leviathan_operations_running gauge\nleviathan_operations_running {running}");
    crate::service::probe::write_store_metrics(out);
    history_metrics(&service.history_stats(), out);
}

/// What the history keeps (`at`, `diff`, `history`): its undo blocks (the
/// snapshots), the per-object index and the changes of the block being
/// filled.
fn history_metrics(h: &crate::service::history::HistoryStats, out: &mut String) {
    let gauges = [
        (
            "history_snapshots",
            "Undo blocks (snapshots of every --history-every revisions) the history keeps.",
            h.blocks,
        ),
        ("history_snapshot_images", "Record images the history's undo blocks hold.", h.images),
        ("history_snapshot_bytes", "Estimated bytes of the history's undo blocks (in memory; none on disk).", h.bytes),
        ("history_index_revisions", "Revisions in the history's per-object index.", h.revisions),
        ("history_index_objects", "Objects in the history's per-object index.", h.records),
        ("history_recent_changes", "Changes of the history block being filled, held in memory.", h.recent),
        ("history_logged_changes", "Changes of older history blocks read from the log for reads, held.", h.logged),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(out, "# HELP leviathan_{name} {help}");
        let _ = writeln!(out, "# TYPE leviathan_{name} gauge\nleviathan_{name} {v}");
    }
}

/// The document cache's and the answer cache's use.
fn cache_metrics(engine: &crate::graphql::Engine, out: &mut String) {
    use std::sync::atomic::Ordering::Relaxed;
    let (d, a) = (&engine.cache.stats, &engine.answers.stats);
    let counters = [
        ("document_cache_hits_total", "GraphQL documents found parsed in the document cache.", d.hits.load(Relaxed)),
        ("document_cache_misses_total", "GraphQL documents not in the document cache.", d.misses.load(Relaxed)),
        ("answer_cache_hits_total", "Answers served from the answer cache.", a.hits.load(Relaxed)),
        (
            "answer_cache_misses_total",
            "Cacheable reads that found no answer of the current revision in the answer cache.",
            a.misses.load(Relaxed),
        ),
        (
            "answer_cache_uncacheable_total",
            "Reads whose document selects a field that is not a pure read of the topology: always run.",
            a.uncacheable.load(Relaxed),
        ),
        (
            "answer_cache_evictions_total",
            "Answers evicted to stay within --answer-cache-bytes.",
            a.evictions.load(Relaxed),
        ),
        ("answer_cache_stale_total", "Answers dropped because the topology changed since.", a.stale.load(Relaxed)),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(out, "# HELP leviathan_{name} {help}");
        let _ = writeln!(out, "# TYPE leviathan_{name} counter\nleviathan_{name} {v}");
    }
    let gauges = [
        ("document_cache_bytes", "Bytes accounted for the documents the document cache holds.", engine.cache.bytes()),
        ("answer_cache_bytes", "Bytes accounted for the answers the answer cache holds.", engine.answers.bytes()),
        ("answer_cache_entries", "Answers the answer cache holds.", engine.answers.len()),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(out, "# HELP leviathan_{name} {help}");
        let _ = writeln!(out, "# TYPE leviathan_{name} gauge\nleviathan_{name} {v}");
    }
}

/// Open websockets, GraphQL requests running and abandoned.
fn http_metrics(gauges: &Gauges, out: &mut String) {
    let ws_open = gauges.ws.open();
    let _ = writeln!(out, "# HELP leviathan_ws_connections Open websocket connections on /graphql/ws.");
    let _ = writeln!(out, "# TYPE leviathan_ws_connections gauge\nleviathan_ws_connections {ws_open}");
    let _ = writeln!(out, "# HELP leviathan_graphql_requests_running GraphQL requests over HTTP being run.");
    let _ = writeln!(
        out,
        "# TYPE leviathan_graphql_requests_running gauge\nleviathan_graphql_requests_running {}",
        gauges.graphql.running()
    );
    let _ = writeln!(
        out,
        "# HELP leviathan_graphql_requests_abandoned_total GraphQL requests over HTTP whose work was dropped \
         before it finished (the client went away)."
    );
    let _ = writeln!(
        out,
        "# TYPE leviathan_graphql_requests_abandoned_total counter\nleviathan_graphql_requests_abandoned_total {}",
        gauges.graphql.abandoned()
    );
}
