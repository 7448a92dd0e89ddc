//! What a server answers before its store is open (with `--etcd`, while
//! etcd cannot be reached yet), and the [`Gate`] that hands every request
//! to the real router once it is.
//!
//! Meanwhile, after the same `Host`/`Origin` and token checks as the real
//! router: `/healthz` answers 503 with its usual body, `"status":
//! "unavailable"` and the store's error saying how far the connection got;
//! every other route answers 503 `UNAVAILABLE` in its route's shape
//! (`{"errors": [...]}` on the GraphQL routes), with `Retry-After`.
//!
//! Invariants: nothing of the model is answered before the store is open
//! and the state loaded; the gate opens once and stays open, and
//! connections accepted before it opened (keep-alive) get the real router
//! from then on.

use crate::http::config::HttpConfig;
use crate::http::error::HttpError;
use crate::http::{guard, health, token};
use crate::model::ErrorCode;
use crate::service::probe::Probe;
use crate::service::Connecting;
use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Router;
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;

/// What the early answers need.
#[derive(Clone)]
pub struct Waiting {
    /// The tokens requests must carry, if any.
    pub token: Option<Arc<crate::auth::Auth>>,
    /// The browser-safety settings.
    pub http: Arc<HttpConfig>,
    /// How far the connection to the store got.
    pub connecting: Arc<Connecting>,
    /// The kind of store waited for (`etcd`).
    pub store_kind: &'static str,
}

impl Waiting {
    /// The router answering every request while the store is not open.
    pub fn router(self) -> Router {
        Router::new().fallback(move |req: Request| {
            let waiting = self.clone();
            async move { waiting.answer(&req) }
        })
    }

    fn answer(&self, req: &Request) -> Response {
        if let Some(refused) = guard::refusal(&self.http, req).or_else(|| token::refusal(self.token.as_deref(), req)) {
            return refused;
        }
        let status = self.connecting.status();
        if req.uri().path() == "/healthz" {
            let probe = Probe { revision: 0, store_kind: self.store_kind, store_error: Some(status) };
            let realizer =
                if self.http.realizing { "not started (waiting for the store)" } else { "off (--no-realize)" };
            return health::answer(&probe, realizer);
        }
        HttpError::of(
            ErrorCode::Unavailable,
            format!("the server is starting and has not loaded its state yet: {status}; retry later"),
        )
        .for_path(req.uri().path())
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
        .into_response()
    }
}

/// The router of a server whose store opens later: each request goes to
/// the waiting router until [`Gate::open`], to the real one from then on.
#[derive(Clone)]
pub struct Gate {
    ready: Arc<OnceLock<Router>>,
    waiting: Router,
}

impl Gate {
    /// A closed gate in front of `waiting`.
    pub fn new(waiting: Router) -> Gate {
        Gate { ready: Arc::new(OnceLock::new()), waiting }
    }

    /// The router to serve: it asks the gate on every request.
    pub fn router(&self) -> Router {
        let gate = self.clone();
        Router::new().fallback(move |req: Request| {
            let gate = gate.clone();
            async move {
                let router = gate.ready.get().cloned().unwrap_or_else(|| gate.waiting.clone());
                match router.oneshot(req).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                }
            }
        })
    }

    /// Hands every request to `router` from now on. A gate opens once: a
    /// second router is refused (`false`).
    pub fn open(&self, router: Router) -> bool {
        self.ready.set(router).is_ok()
    }

    /// Whether the gate is open.
    pub fn is_open(&self) -> bool {
        self.ready.get().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::StatusCode;
    use serde_json::Value;

    fn waiting(token: Option<&str>) -> Waiting {
        let http = HttpConfig { loopback: true, realizing: false, ..HttpConfig::default() };
        Waiting {
            token: token.map(|t| crate::auth::Auth::new(crate::auth::Tokens::single(t))),
            http: Arc::new(http),
            connecting: Connecting::new(&["http://127.0.0.1:1".into()]),
            store_kind: "etcd",
        }
    }

    async fn call(router: &Router, req: Request) -> (StatusCode, Value) {
        let resp = router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    fn get(path: &str) -> Request {
        Request::get(path).header("host", "127.0.0.1").body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn before_the_store_opens_health_and_the_api_say_unavailable() {
        let gate = Gate::new(waiting(None).router());
        let router = gate.router();
        let (status, body) = call(&router, get("/healthz")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "unavailable");
        assert_eq!((body["store"]["kind"].as_str(), body["store"]["ok"].as_bool()), (Some("etcd"), Some(false)));
        assert!(body["store"]["error"].as_str().unwrap().contains("http://127.0.0.1:1"), "{body}");
        assert_eq!(body["realizer"], "off (--no-realize)");
        let post = Request::post("/graphql")
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Body::from(r#"{"query":"{ revision }"}"#))
            .unwrap();
        let (status, body) = call(&router, post).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["errors"][0]["extensions"]["code"], "UNAVAILABLE", "{body}");
        assert!(body.get("status").is_none(), "GraphQL shape: {body}");

        // Once open, the same router (and any connection holding it) gets
        // the real one.
        let real = Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
        assert!(gate.open(real));
        assert!(gate.is_open());
        assert!(!gate.open(Router::new()), "a gate opens once");
        let resp = router.clone().oneshot(get("/healthz")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }

    #[tokio::test]
    async fn the_token_and_host_checks_come_first() {
        let router = Gate::new(waiting(Some("sixteen-characters")).router()).router();
        let (status, body) = call(&router, get("/healthz")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
        let req = Request::get("/healthz").header("host", "evil.example").body(Body::empty()).unwrap();
        assert_eq!(call(&router, req).await.0, StatusCode::FORBIDDEN);
        let req = Request::get("/healthz")
            .header("host", "127.0.0.1")
            .header("authorization", "Bearer sixteen-characters")
            .body(Body::empty())
            .unwrap();
        assert_eq!(call(&router, req).await.0, StatusCode::SERVICE_UNAVAILABLE);
    }
}
