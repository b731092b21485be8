//! The admin API (the admin UI builds on it): reads the stores and steers the pipeline
//! through its handle; it never holds a source or sink client. `/health` and `/ready` report
//! liveness and backlog, never patient data.
//!
//! One error type turns client mistakes into 4xx with a clear message and internal failures
//! into a logged 500 that reveals nothing.

use crate::model::dims::Dimensions;
use crate::pipeline::{PipelineHandle, PipelineHealth};
use crate::store::{Store, StoreError};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct AdminState {
    pub store: Arc<dyn Store>,
    pub pipeline: PipelineHandle,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Internal(#[from] StoreError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::BadRequest(m) => (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({ "error": m })),
            )
                .into_response(),
            ApiError::Internal(e) => {
                tracing::error!(error = %e, "admin request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(serde_json::json!({ "error": "internal error; see the server log" })),
                )
                    .into_response()
            }
        }
    }
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/api/stats", get(stats))
        .route("/api/sinks", get(sinks))
        .route("/api/counts", get(counts))
        .route("/api/dimensions", post(put_dimensions))
        .with_state(state)
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

async fn ping(store: &dyn Store) -> StoreHealth {
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
    body: axum::body::Bytes,
) -> Result<Json<crate::store::Counts>, ApiError> {
    let dims: Dimensions = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("not a dimensions document: {e}")))?;
    dims.validate().map_err(ApiError::BadRequest)?;
    s.store.put_dimensions(&dims).await?;
    Ok(Json(s.store.counts().await?))
}
