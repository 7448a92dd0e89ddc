//! The pages a person opens and what they load, served from the binary so
//! they work without Internet access: `/` (where everything is), `/graphiql`
//! (the explorer), `/topology` (the live topology, cytoscape.js vendored
//! under `assets/topology/`), their assets, `/schema.graphql`; and the
//! answer to a path that is none of the routes.
//!
//! The assets are public library code: they need no token (see
//! [`is_public_asset`]); the pages themselves do, and may carry it as
//! `?token=` because a browser opens them by address ([`is_page`]).

use crate::http::error::HttpError;
use crate::http::state::AppState;
use axum::extract::State;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The topology page's scripts.
pub const TOPOLOGY_ASSETS: &str = "/topology/assets/";

/// The explorer's scripts and styles.
pub const GRAPHIQL_ASSETS: &str = "/graphiql/assets/";

/// The pages, their assets and the schema.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/topology", get(topology))
        .route("/topology/assets/{file}", get(topology_asset))
        .route("/graphiql", get(graphiql))
        .route("/graphiql/assets/{file}", get(graphiql_asset))
        .route("/schema.graphql", get(schema_sdl))
}

/// Pages a browser opens by address, which can carry `?token=`.
pub fn is_page(path: &str) -> bool {
    matches!(path, "/" | "/graphiql" | "/topology")
}

/// Whether a path is one of the pages' vendored assets (no token needed).
pub fn is_public_asset(path: &str) -> bool {
    path.starts_with(GRAPHIQL_ASSETS) || path.starts_with(TOPOLOGY_ASSETS)
}

async fn home() -> Html<&'static str> {
    Html(include_str!("../../assets/home.html"))
}

async fn topology() -> Html<&'static str> {
    Html(include_str!("../../assets/topology/index.html"))
}

async fn topology_asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let body: &'static [u8] = match file.as_str() {
        "cytoscape.min.js" => include_bytes!("../../assets/topology/cytoscape.min.js"),
        "topology.js" => include_bytes!("../../assets/topology/topology.js"),
        _ => return HttpError::not_found(format!("no topology asset '{file}'")).into_response(),
    };
    ([(header::CONTENT_TYPE, "text/javascript"), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// The explorer: GraphiQL served from the binary itself (no CDN), so it
/// works on machines without Internet access.
async fn graphiql() -> Html<&'static str> {
    Html(include_str!("../../assets/graphiql/index.html"))
}

async fn graphiql_asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, kind): (&'static [u8], &str) = match file.as_str() {
        "graphiql.min.js" => (include_bytes!("../../assets/graphiql/graphiql.min.js"), "text/javascript"),
        "graphiql.min.css" => (include_bytes!("../../assets/graphiql/graphiql.min.css"), "text/css"),
        "react.production.min.js" => {
            (include_bytes!("../../assets/graphiql/react.production.min.js"), "text/javascript")
        }
        "react-dom.production.min.js" => {
            (include_bytes!("../../assets/graphiql/react-dom.production.min.js"), "text/javascript")
        }
        _ => return HttpError::not_found(format!("no explorer asset '{file}'")).into_response(),
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "public, max-age=86400")], body).into_response()
}

async fn schema_sdl(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], state.schema.sdl()).into_response()
}

/// Unknown paths; a path with a trailing slash is redirected (308, which
/// keeps the method and body) to the same path without it.
pub async fn not_found(method: Method, uri: axum::http::Uri) -> Response {
    let path = uri.path();
    let trimmed = path.trim_end_matches('/');
    if trimmed.len() < path.len() && !trimmed.is_empty() {
        let target = match uri.query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&target) {
            return HttpError::new(
                StatusCode::PERMANENT_REDIRECT,
                crate::model::ErrorCode::NotFound,
                format!("no route for {method} {path}; it is {trimmed} (without the trailing slash)"),
            )
            .with_header(header::LOCATION, v)
            .into_response();
        }
    }
    HttpError::not_found(format!("no route for {method} {path}")).into_response()
}
