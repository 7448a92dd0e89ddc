//! The route table and its handlers. Each path has one handler that
//! dispatches on the method itself, so that a wrong method gets the legacy
//! 405 body with the exact `Allow` of that path, and so that `/cen/make`
//! under GET, PUT and DELETE is the CEN called `make`.
//!
//! Order of checks in every handler: method (405), body size (413), body
//! JSON and shape (400), ids (400), then the GraphQL operation (its code).

use crate::body;
use crate::error::CompatError;
use crate::ids::check_id;
use crate::ops::{self, run};
use crate::Compat;
use async_graphql::Executor;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use serde::Serialize;
use serde_json::json;

const ALLOW_POST: &str = "POST";
const ALLOW_GET: &str = "GET, HEAD";
const ALLOW_CEN: &str = "GET, HEAD, PUT, DELETE";
const ALLOW_CEN_ACTION: &str = "POST, GET, HEAD, PUT, DELETE";
const ALLOW_MEMBERSHIP: &str = "PUT, DELETE";
const ALLOW_CONTAINER: &str = "GET, HEAD, PUT, DELETE";

type Outcome = Result<Response, CompatError>;

pub fn routes<E: Executor>() -> Router<Compat<E>> {
    Router::new()
        .route("/cen/{cen_id}", any(cen_entry::<E>))
        .route("/cin/{action}", any(cin_action::<E>))
        .route("/cpool", any(cpool::<E>))
        .route("/host/{host_id}/{container_id}/{cen_id}", any(membership::<E>))
        .route("/host/{host_id}/{container_id}", any(container::<E>))
        .route("/version", any(version::<E>))
        .route(crate::MONITOR_PATH, any(crate::monitor::handler::<E>))
}

fn finish(outcome: Outcome) -> Response {
    outcome.unwrap_or_else(IntoResponse::into_response)
}

fn no_content() -> Outcome {
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn encode(v: &impl Serialize) -> Result<Vec<u8>, CompatError> {
    serde_json::to_vec(v).map_err(|e| CompatError::internal(format!("encoding the answer: {e}")))
}

fn json_bytes(body: axum::body::Bytes) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

/// A read: its body from the answers kept (`CompatConfig::answers`) when
/// one of this state of the topology is, else run, shaped and kept.
async fn read<E: Executor>(
    st: &Compat<E>,
    query: &'static str,
    vars: serde_json::Value,
    shape: impl FnOnce(&serde_json::Value) -> Result<Vec<u8>, CompatError>,
) -> Outcome {
    let answers = st.cfg.answers.as_deref();
    let ticket = match answers.map(|a| a.lookup(query, &vars)) {
        Some(crate::Cached::Hit(body)) => return Ok(json_bytes(body)),
        Some(crate::Cached::Miss(t)) => Some(t),
        Some(crate::Cached::Skip) | None => None,
    };
    let data = run(&st.executor, query, vars).await?;
    let body = axum::body::Bytes::from(shape(&data)?);
    if let (Some(a), Some(t)) = (answers, ticket) {
        a.keep(t, body.clone());
    }
    Ok(json_bytes(body))
}

fn ok_true() -> Outcome {
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], "true").into_response())
}

fn path_err(e: PathRejection) -> CompatError {
    CompatError::bad_request(format!("invalid path: {}", e.body_text()))
}

fn is_get(m: &Method) -> bool {
    m == Method::GET || m == Method::HEAD
}

/// Reads (and drops) a body the route does not use, so that the limit
/// holds on every route.
async fn no_body<E>(st: &Compat<E>, b: Body) -> Result<(), CompatError> {
    body::read(&st.cfg, b).await.map(drop)
}

/// `POST /cen/import|make|destroy`, and `GET|PUT|DELETE /cen/{cenId}`.
async fn cen_entry<E: Executor>(
    State(st): State<Compat<E>>,
    method: Method,
    uri: Uri,
    path: Result<Path<String>, PathRejection>,
    b: Body,
) -> Response {
    finish(
        async move {
            let Path(id) = path.map_err(path_err)?;
            let action = matches!(id.as_str(), "import" | "make" | "destroy");
            if method == Method::POST && action {
                let taken = body::read(&st.cfg, b).await?;
                let bytes = taken.bytes();
                let v = body::json(bytes)?;
                let (doc, vars) = match id.as_str() {
                    "import" => (ops::CEN_IMPORT, ops::cen_import_vars(body::cen_file(&v)?)),
                    "make" => (ops::CEN_MAKE, json!({"ids": body::id_list(&v, "body", "CEN id")?})),
                    _ => (ops::CEN_DESTROY, json!({"ids": body::id_list(&v, "body", "CEN id")?})),
                };
                ops::run_realize(&st.executor, doc, vars).await?;
                return no_content();
            }
            let allow = if action { ALLOW_CEN_ACTION } else { ALLOW_CEN };
            if !(is_get(&method) || method == Method::PUT || method == Method::DELETE) {
                return Err(CompatError::method_not_allowed(method.as_str(), uri.path(), allow));
            }
            no_body(&st, b).await?;
            check_id("CEN id", &id)?;
            let vars = json!({ "id": id });
            if is_get(&method) {
                read(&st, ops::CEN_GET, vars, |data| encode(&ops::shape_cen(data, &id)?)).await
            } else if method == Method::PUT {
                run(&st.executor, ops::CEN_CREATE, vars).await?;
                ok_true()
            } else {
                // Destroy its realization, then remove it: two operations, so
                // that a failing destroy leaves the CEN in place.
                ops::run_realize(&st.executor, ops::CEN_DESTROY, json!({ "ids": [id] })).await?;
                run(&st.executor, ops::CEN_DELETE, vars).await?;
                no_content()
            }
        }
        .await,
    )
}

/// `POST /cin/import|make|destroy`.
async fn cin_action<E: Executor>(
    State(st): State<Compat<E>>,
    method: Method,
    uri: Uri,
    path: Result<Path<String>, PathRejection>,
    b: Body,
) -> Response {
    finish(
        async move {
            let Path(action) = path.map_err(path_err)?;
            if !matches!(action.as_str(), "import" | "make" | "destroy") {
                return Err(CompatError::not_found(format!("no route for {method} {}", uri.path())));
            }
            if method != Method::POST {
                return Err(CompatError::method_not_allowed(method.as_str(), uri.path(), ALLOW_POST));
            }
            let taken = body::read(&st.cfg, b).await?;
            let bytes = taken.bytes();
            let v = body::json(bytes)?;
            let (doc, vars) = match action.as_str() {
                "import" => (ops::CIN_IMPORT, ops::cin_import_vars(body::cin_file(bytes, &v)?)),
                "make" => (ops::CIN_MAKE, json!({"ids": body::id_list(&v, "body", "CIN id")?})),
                _ => (ops::CIN_DESTROY, json!({"ids": body::id_list(&v, "body", "CIN id")?})),
            };
            ops::run_realize(&st.executor, doc, vars).await?;
            no_content()
        }
        .await,
    )
}

/// `POST /cpool`.
async fn cpool<E: Executor>(State(st): State<Compat<E>>, method: Method, uri: Uri, b: Body) -> Response {
    finish(
        async move {
            if method != Method::POST {
                return Err(CompatError::method_not_allowed(method.as_str(), uri.path(), ALLOW_POST));
            }
            let taken = body::read(&st.cfg, b).await?;
            let bytes = taken.bytes();
            let pools = body::cpool_file(&body::json(bytes)?)?;
            run(&st.executor, ops::CPOOL_IMPORT, ops::cpool_import_vars(pools)).await?;
            no_content()
        }
        .await,
    )
}

/// `PUT|DELETE /host/{hostId}/{containerId}/{cenId}`.
async fn membership<E: Executor>(
    State(st): State<Compat<E>>,
    method: Method,
    uri: Uri,
    path: Result<Path<(String, String, String)>, PathRejection>,
    b: Body,
) -> Response {
    finish(
        async move {
            let Path((host, cont, cen)) = path.map_err(path_err)?;
            if method != Method::PUT && method != Method::DELETE {
                return Err(CompatError::method_not_allowed(method.as_str(), uri.path(), ALLOW_MEMBERSHIP));
            }
            no_body(&st, b).await?;
            check_id("host id", &host)?;
            check_id("container id", &cont)?;
            check_id("CEN id", &cen)?;
            let vars = json!({"h": host, "c": cont, "cen": cen});
            if method == Method::PUT {
                run(&st.executor, ops::CONTAINER_JOIN, vars).await?;
                ok_true()
            } else {
                run(&st.executor, ops::CONTAINER_LEAVE, vars).await?;
                no_content()
            }
        }
        .await,
    )
}

/// `GET|PUT|DELETE /host/{hostId}/{containerId}`.
async fn container<E: Executor>(
    State(st): State<Compat<E>>,
    method: Method,
    uri: Uri,
    path: Result<Path<(String, String)>, PathRejection>,
    b: Body,
) -> Response {
    finish(
        async move {
            let Path((host, cont)) = path.map_err(path_err)?;
            if !(is_get(&method) || method == Method::PUT || method == Method::DELETE) {
                return Err(CompatError::method_not_allowed(method.as_str(), uri.path(), ALLOW_CONTAINER));
            }
            no_body(&st, b).await?;
            check_id("host id", &host)?;
            check_id("container id", &cont)?;
            let vars = json!({"h": host, "c": cont});
            if is_get(&method) {
                read(&st, ops::CONTAINER_GET, vars, |data| encode(&ops::shape_container(data, &host, &cont)?)).await
            } else if method == Method::PUT {
                run(&st.executor, ops::CONTAINER_CREATE, vars).await?;
                ok_true()
            } else {
                run(&st.executor, ops::CONTAINER_DELETE, vars).await?;
                no_content()
            }
        }
        .await,
    )
}

/// `GET /version`.
async fn version<E: Executor>(State(st): State<Compat<E>>, method: Method, uri: Uri, b: Body) -> Response {
    finish(
        async move {
            if !is_get(&method) {
                return Err(CompatError::method_not_allowed(method.as_str(), uri.path(), ALLOW_GET));
            }
            no_body(&st, b).await?;
            read(&st, ops::VERSION, json!({}), |data| encode(&ops::shape_version(data)?)).await
        }
        .await,
    )
}
