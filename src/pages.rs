//! The pages a person opens: `/` (where everything is), `/topology` (the
//! live topology, cytoscape.js vendored under `assets/topology/`). Served
//! from the binary, so they work without Internet access.

use crate::server::{json_error, AppState};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The topology page's scripts (public library code: no token needed).
pub const TOPOLOGY_ASSETS: &str = "/topology/assets/";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/topology", get(topology))
        .route("/topology/assets/{file}", get(topology_asset))
}

async fn home() -> Html<&'static str> {
    Html(include_str!("../assets/home.html"))
}

async fn topology() -> Html<&'static str> {
    Html(include_str!("../assets/topology/index.html"))
}

async fn topology_asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let body: &'static [u8] = match file.as_str() {
        "cytoscape.min.js" => include_bytes!("../assets/topology/cytoscape.min.js"),
        "topology.js" => include_bytes!("../assets/topology/topology.js"),
        _ => return json_error(StatusCode::NOT_FOUND, "NOT_FOUND", &format!("no topology asset '{file}'")),
    };
    ([(header::CONTENT_TYPE, "text/javascript"), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}
