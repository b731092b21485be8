//! The admin API (the admin UI builds on it): reads the stores and steers the pipeline
//! through its handle; it never holds a source or sink client. `/health` and `/ready` report
//! liveness and backlog, never patient data.
//!
//! One error type turns client mistakes into 4xx with a clear message and internal failures
//! into a logged 500 that reveals nothing.

pub mod tls;

pub mod api;
pub mod auth;
pub mod dashboard;

use crate::model::dims::Dimensions;
use crate::pipeline::{PipelineHandle, PipelineHealth};
use crate::store::{AdminStore, StoreError};
use auth::{Access, Denied, Principal};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use axum::{Extension, Json, Router};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct AdminState {
    /// The admin's share of the store: it cannot write reading batches or purge.
    pub store: Arc<dyn AdminStore>,
    pub pipeline: PipelineHandle,
    pub throttle: Arc<auth::Throttle>,
    /// Session cookies carry `Secure` (the listener serves TLS).
    pub secure_cookies: bool,
    /// The live alert feed, for `GET /api/alerts/live` (server-sent events).
    pub live: Option<crate::sinks::LiveFeed>,
    /// The DuckDB analytics the dashboard reads (`[analytics]`); without it the dashboard
    /// routes answer 503 `analytics_off`.
    pub analytics: Option<Arc<crate::analytics::AnalyticsSink>>,
}

impl AdminState {
    pub fn new(store: Arc<dyn AdminStore>, pipeline: PipelineHandle, secure_cookies: bool) -> Self {
        AdminState {
            store,
            pipeline,
            throttle: Arc::new(auth::Throttle::default()),
            secure_cookies,
            live: None,
            analytics: None,
        }
    }

    /// Serves the live alert feed to signed-in staff.
    pub fn with_live(mut self, live: crate::sinks::LiveFeed) -> Self {
        self.live = Some(live);
        self
    }

    /// Serves the dashboard from this analytics sink's database.
    pub fn with_analytics(mut self, analytics: Arc<crate::analytics::AnalyticsSink>) -> Self {
        self.analytics = Some(analytics);
        self
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// A refusal with a stable machine code (an upload check).
    #[error("{message}")]
    Refused {
        status: StatusCode,
        code: &'static str,
        message: String,
    },
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("too many attempts; try again in {0:?}")]
    TooMany(Duration),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal: {0}")]
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ApiError::Conflict(m),
            StoreError::NotFound(m) => ApiError::NotFound(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<crate::pipeline::rules::RuleError> for ApiError {
    fn from(e: crate::pipeline::rules::RuleError) -> Self {
        use crate::pipeline::rules::RuleError;
        match e {
            RuleError::Load(l) => ApiError::BadRequest(format!("rule rejected: {l}")),
            RuleError::Store(s) => s.into(),
            RuleError::Invalid(m) => ApiError::BadRequest(m),
            q @ RuleError::Quarantined { .. } => ApiError::Conflict(q.to_string()),
            RuleError::Stopped => ApiError::Unavailable("the pipeline has stopped".to_owned()),
        }
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        match d {
            Denied::Unauthenticated(m) => ApiError::Unauthenticated(m.to_owned()),
            Denied::Forbidden(m) => ApiError::Forbidden(m),
        }
    }
}

fn error_body(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": message, "code": code })),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        match self {
            ApiError::BadRequest(_) => error_body(StatusCode::BAD_REQUEST, "bad_request", message),
            ApiError::Refused { status, code, .. } => error_body(status, code, message),
            ApiError::Unauthenticated(_) => {
                let mut r = error_body(StatusCode::UNAUTHORIZED, "unauthenticated", message);
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"glucoguard\""),
                );
                r
            }
            ApiError::Forbidden(_) => error_body(StatusCode::FORBIDDEN, "forbidden", message),
            ApiError::NotFound(_) => error_body(StatusCode::NOT_FOUND, "not_found", message),
            ApiError::Conflict(_) => error_body(StatusCode::CONFLICT, "conflict", message),
            ApiError::TooMany(wait) => {
                let mut r = error_body(StatusCode::TOO_MANY_REQUESTS, "throttled", message);
                if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                r
            }
            ApiError::Unavailable(_) => {
                error_body(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
            ApiError::Internal(e) => {
                tracing::error!(error = %e, "admin request failed");
                error_body(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the server log".to_owned(),
                )
            }
        }
    }
}

/// One route: its method and path, who may call it, and its handler.
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub handler: MethodRouter,
}

/// The guard every route passes: authenticates the caller, checks the route's [`Access`]
/// (and CSRF for cookie sessions), and hands the handler its [`Principal`].
async fn guard(
    State((state, access)): State<(AdminState, Access)>,
    mut req: Request,
    next: Next,
) -> Response {
    let principal = match auth::authenticate(state.store.as_ref(), req.headers()).await {
        Ok(p) => p,
        // Public routes answer whoever asks, even with a stale cookie.
        Err(_) if access == Access::Public => None,
        Err(d) => return refuse(&req, d),
    };
    if let Err(d) = auth::authorize(access, principal.as_ref(), req.method(), req.headers()) {
        return refuse(&req, d);
    }
    if let Some(p) = principal {
        req.extensions_mut().insert(p);
    }
    next.run(req).await
}

/// A refusal: JSON for the API, and for a page the login page (anonymous) or an error page.
fn refuse(req: &Request, d: Denied) -> Response {
    if crate::web::is_page(req.uri().path()) {
        let target = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/web");
        return crate::web::denied_page(target, matches!(d, Denied::Unauthenticated(_)));
    }
    ApiError::from(d).into_response()
}

/// The whole HTTP surface: every route comes from [`routes`], each behind the guard, so a
/// route cannot exist without an access rule.
pub fn router(state: AdminState, ingest: crate::sources::EmbeddedSource) -> Router {
    let mut by_path: Vec<(&'static str, MethodRouter)> = Vec::new();
    for spec in routes(state.clone(), ingest) {
        let guarded = spec.handler.layer(axum::middleware::from_fn_with_state(
            (state.clone(), spec.access),
            guard,
        ));
        match by_path.iter_mut().find(|(p, _)| *p == spec.path) {
            Some((_, mr)) => *mr = std::mem::take(mr).merge(guarded),
            None => by_path.push((spec.path, guarded)),
        }
    }
    let mut router = Router::new();
    for (path, mr) in by_path {
        router = router.route(path, mr);
    }
    // Unknown paths get the same JSON error shape.
    router.fallback(|| async { ApiError::NotFound("no such route".to_owned()) })
}

/// Every route with its access rule. Tests iterate this table: a route added here without
/// an expectation there fails them.
pub fn routes(s: AdminState, ingest: crate::sources::EmbeddedSource) -> Vec<RouteSpec> {
    use auth::{ADMIN, INGEST, SIGNED_IN, STAFF};
    let r = |method: Method, path, access, handler: MethodRouter<AdminState>| RouteSpec {
        method,
        path,
        access,
        handler: handler.with_state(s.clone()),
    };
    let mut v = vec![
        r(Method::GET, "/health", Access::Public, get(health)),
        r(Method::GET, "/ready", Access::Public, get(ready)),
        r(
            Method::GET,
            "/api/openapi.json",
            Access::Public,
            get(openapi_json),
        ),
        r(Method::POST, "/api/login", Access::Public, post(api::login)),
        r(Method::POST, "/api/logout", SIGNED_IN, post(api::logout)),
        r(Method::GET, "/api/me", SIGNED_IN, get(api::me)),
        r(
            Method::PUT,
            "/api/me/preferences",
            SIGNED_IN,
            put(api::put_preferences),
        ),
        r(Method::GET, "/api/stats", STAFF, get(stats)),
        r(Method::GET, "/api/sinks", ADMIN, get(sinks)),
        r(Method::GET, "/api/counts", ADMIN, get(counts)),
        r(Method::POST, "/api/dimensions", ADMIN, post(put_dimensions)),
    ];
    v.extend(api::routes().into_iter().map(|(m, p, a, h)| r(m, p, a, h)));
    v.extend(
        dashboard::routes()
            .into_iter()
            .map(|(m, p, a, h)| r(m, p, a, h)),
    );
    v.extend(
        crate::web::routes()
            .into_iter()
            .map(|(m, p, a, h)| r(m, p, a, h)),
    );
    v.push(RouteSpec {
        method: Method::POST,
        path: "/api/ingest",
        access: INGEST,
        handler: crate::sources::http::ingest_route(ingest),
    });
    v
}

/// `GET /api/openapi.json`: the routes as an OpenAPI 3.1 document, built from the same table
/// the router is (so it cannot drift from it): each operation with its path parameters, who
/// may call it (`x-roles`, and the security schemes), and the error answers every route
/// shares. Request and response bodies are not described yet.
pub fn openapi(table: &[RouteSpec]) -> serde_json::Value {
    let mut paths = serde_json::Map::new();
    for spec in table.iter().filter(|s| crate::web::is_api(s.path)) {
        let params: Vec<serde_json::Value> = spec
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                serde_json::json!({
                    "name": name, "in": "path", "required": true, "schema": { "type": "string" }
                })
            })
            .collect();
        let method = spec.method.as_str().to_lowercase();
        let operation_id = format!(
            "{method}{}",
            spec.path
                .split(['/', '{', '}', '-', '.'])
                .filter(|s| !s.is_empty())
                .map(|s| {
                    let mut c = s.chars();
                    c.next()
                        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                        .unwrap_or_default()
                })
                .collect::<String>()
        );
        let mut op = serde_json::json!({
            "operationId": operation_id,
            "parameters": params,
            "responses": {
                "200": { "description": "done (some routes answer 201 or 204)" },
                "400": { "$ref": "#/components/responses/Error" },
                "404": { "$ref": "#/components/responses/Error" },
                "409": { "$ref": "#/components/responses/Error" },
            },
        });
        match spec.access {
            Access::Public => {
                op["security"] = serde_json::json!([]);
                op["x-roles"] = serde_json::json!([]);
            }
            Access::Roles(roles) => {
                op["security"] = serde_json::json!([{ "bearer": [] }, { "session": [] }]);
                op["x-roles"] =
                    serde_json::json!(roles.iter().map(|r| r.as_str()).collect::<Vec<_>>());
                op["responses"]["401"] =
                    serde_json::json!({ "$ref": "#/components/responses/Error" });
                op["responses"]["403"] =
                    serde_json::json!({ "$ref": "#/components/responses/Error" });
            }
        }
        paths
            .entry(spec.path.to_owned())
            .or_insert_with(|| serde_json::json!({}))
            .as_object_mut()
            .expect("a path item is an object")
            .insert(method, op);
    }
    serde_json::json!({
        "openapi": "3.1.0",
        "info": {
            "title": "GlucoGuard admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Deny by default: every operation lists the roles that may call it in x-roles; an empty list is public.",
        },
        "paths": paths,
        "security": [{ "bearer": [] }, { "session": [] }],
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "description": "an API token gg_<id>_<secret>" },
                "session": { "type": "apiKey", "in": "cookie", "name": auth::SESSION_COOKIE,
                    "description": "from POST /api/login; unsafe methods also need the x-csrf-token header" },
            },
            "responses": {
                "Error": {
                    "description": "an error with a stable code",
                    "content": { "application/json": { "schema": {
                        "type": "object", "required": ["error", "code"],
                        "properties": { "error": { "type": "string" }, "code": { "type": "string" } },
                    } } },
                },
            },
        },
    })
}

async fn openapi_json(State(s): State<AdminState>) -> Json<serde_json::Value> {
    let source = s.pipeline.embedded_source("openapi");
    Json(openapi(&routes(s, source)))
}

/// How long `/health` and `/ready` wait for the store to answer before calling it unreachable.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /health`: what is true of the host now. 200 when the pipeline runs and the store
/// answers, else 503; the body says which and how far behind the host is.
#[derive(Debug, Serialize)]
pub struct Health {
    /// The pipeline runs and the store answers.
    pub healthy: bool,
    pub pipeline: PipelineHealth,
    pub store: StoreHealth,
    /// Each storage sink's backlog, in the order batches reach them.
    pub sinks: Vec<SinkBacklog>,
    /// Each configured source (`[[sources]]`): taking input, counters, last error. A source
    /// that is down does not make the host unhealthy (the others and HTTP ingest go on).
    pub sources: Vec<crate::sources::SourceStatus>,
}

#[derive(Debug, Serialize)]
pub struct StoreHealth {
    pub kind: &'static str,
    pub reachable: bool,
    /// Why not, when it is not (the store's errors never carry a password).
    pub error: Option<String>,
}

/// A storage sink's backlog (its last error is in `GET /api/sinks`).
#[derive(Debug, Serialize)]
pub struct SinkBacklog {
    pub name: &'static str,
    /// Rows accepted and not yet durable in the sink.
    pub pending_rows: u64,
    /// Failed attempts so far (each retried).
    pub failures: u64,
    /// The sink's latest attempt failed and it is retrying.
    pub failing: bool,
    /// The sink has confirmed everything the store held at its last look (sinks are fed
    /// from the store after the readings were acknowledged, so a sink that is down only
    /// falls behind).
    pub caught_up: bool,
    /// How far behind now the newest row the sink confirmed was received (none confirmed
    /// yet: `None`).
    pub confirmed_lag_ms: Option<u64>,
}

/// `GET /ready`: whether the host takes readings now.
#[derive(Debug, Serialize)]
pub struct Ready {
    pub ready: bool,
    /// Why not, when it is not.
    pub reasons: Vec<String>,
}

async fn ping(store: &dyn AdminStore) -> StoreHealth {
    let error = match tokio::time::timeout(PING_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {} ms", PING_TIMEOUT.as_millis())),
    };
    StoreHealth {
        kind: store.kind(),
        reachable: error.is_none(),
        error,
    }
}

fn status(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn health(State(s): State<AdminState>) -> (StatusCode, Json<Health>) {
    let pipeline = s.pipeline.health();
    let store = ping(s.store.as_ref()).await;
    let feeds = s.pipeline.feeds();
    let sinks = s
        .pipeline
        .sinks()
        .into_iter()
        .map(|k| {
            let feed = feeds.iter().find(|f| f.sink == k.name);
            SinkBacklog {
                name: k.name,
                pending_rows: k.pending_rows,
                failures: k.failures + feed.map_or(0, |f| f.failures),
                failing: k.last_error.is_some() || feed.is_some_and(|f| f.last_error.is_some()),
                caught_up: feed.is_some_and(|f| f.caught_up),
                confirmed_lag_ms: feed
                    .filter(|f| f.confirmed_received_at_ms > 0)
                    .map(|f| (crate::model::now_ms() - f.confirmed_received_at_ms).max(0) as u64),
            }
        })
        .collect();
    let healthy = pipeline.alive && store.reachable;
    (
        status(healthy),
        Json(Health {
            healthy,
            pipeline,
            store,
            sinks,
            sources: s.pipeline.sources(),
        }),
    )
}

async fn ready(State(s): State<AdminState>) -> (StatusCode, Json<Ready>) {
    let pipeline = s.pipeline.health();
    let mut reasons = Vec::new();
    if !pipeline.alive {
        reasons.push("the pipeline is not running".to_owned());
    } else if s.pipeline.input().is_closed() {
        reasons.push("shutting down: the pipeline takes no more input".to_owned());
    }
    let store = ping(s.store.as_ref()).await;
    if let Some(e) = store.error {
        reasons.push(format!("the {} store is unreachable: {e}", store.kind));
    }
    if pipeline.queued_items >= pipeline.queue_capacity {
        reasons.push(format!(
            "the input queue is full ({} of {} items)",
            pipeline.queued_items, pipeline.queue_capacity
        ));
    }
    let ready = reasons.is_empty();
    (status(ready), Json(Ready { ready, reasons }))
}

async fn stats(State(s): State<AdminState>) -> Json<crate::pipeline::PipelineStats> {
    Json(s.pipeline.stats())
}

/// `GET /api/sinks`: each storage sink's own counters and how far it has caught up with
/// the store.
#[derive(Debug, Serialize)]
pub struct SinkReport {
    #[serde(flatten)]
    pub status: crate::sinks::SinkStatus,
    pub feed: Option<crate::pipeline::feed::FeedStatus>,
}

async fn sinks(State(s): State<AdminState>) -> Json<Vec<SinkReport>> {
    let feeds = s.pipeline.feeds();
    Json(
        s.pipeline
            .sinks()
            .into_iter()
            .map(|status| SinkReport {
                feed: feeds.iter().find(|f| f.sink == status.name).cloned(),
                status,
            })
            .collect(),
    )
}

async fn counts(State(s): State<AdminState>) -> Result<Json<crate::store::Counts>, ApiError> {
    Ok(Json(s.store.counts().await?))
}

async fn put_dimensions(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    body: axum::body::Bytes,
) -> Result<Json<crate::store::Counts>, ApiError> {
    let dims: Dimensions = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("not a dimensions document: {e}")))?;
    dims.validate().map_err(ApiError::BadRequest)?;
    let audit = p
        .actor
        .audit("dimensions.import", "dimensions")
        .with_after(dims.summary());
    s.store.put_dimensions(&dims, &audit).await?;
    // Scoped rules follow the directory: re-resolve them before answering.
    api::reload_after(&s).await?;
    Ok(Json(s.store.counts().await?))
}
