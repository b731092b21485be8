//! The admin API (the admin UI builds on it): reads the stores and steers the pipeline
//! through its handle; it never holds a source or sink client.
//!
//! One error type turns client mistakes into 4xx with a clear message and internal failures
//! into a logged 500 that reveals nothing.

use crate::model::dims::Dimensions;
use crate::pipeline::PipelineHandle;
use crate::store::{Store, StoreError};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::sync::Arc;

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
        .route("/health", get(|| async { "ok" }))
        .route("/api/stats", get(stats))
        .route("/api/sinks", get(sinks))
        .route("/api/counts", get(counts))
        .route("/api/dimensions", post(put_dimensions))
        .with_state(state)
}

async fn stats(State(s): State<AdminState>) -> Json<crate::pipeline::PipelineStats> {
    Json(s.pipeline.stats())
}

async fn sinks(State(s): State<AdminState>) -> Json<Vec<crate::sinks::SinkStatus>> {
    Json(s.pipeline.sinks())
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
