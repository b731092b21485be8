//! HTTP ingest: `POST /api/ingest` takes one reading (a JSON object) or a batch (a JSON
//! array). Every item goes to the pipeline, valid or not, so nothing is lost (invalid ones
//! become dead letters); the response says which items were rejected and why, and is sent
//! only once every item is durable, so a client that retries after a failure duplicates
//! nothing (writes are idempotent).

use super::{Ack, EmbeddedSource};
use crate::model::parse;
use axum::Json;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;
use serde_json::value::RawValue;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 8 << 20;
/// Items per request.
pub const MAX_ITEMS: usize = 10_000;
/// How long a request waits for its items to become durable.
const DURABLE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize, PartialEq)]
pub struct Rejected {
    pub index: usize,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct IngestResponse {
    pub received: usize,
    pub accepted: usize,
    pub rejected: Vec<Rejected>,
}

#[derive(Clone)]
struct IngestState {
    source: EmbeddedSource,
}

/// `POST /api/ingest` for this source, with its body limit. The admin route table guards
/// it (devices and admins only, with a token).
pub fn ingest_route(source: EmbeddedSource) -> axum::routing::MethodRouter {
    post(ingest)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(IngestState { source })
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

async fn ingest(State(state): State<IngestState>, body: axum::body::Bytes) -> Response {
    let items: Vec<Vec<u8>> = match serde_json::from_slice::<&RawValue>(&body) {
        Ok(raw) if raw.get().trim_start().starts_with('[') => {
            match serde_json::from_str::<Vec<&RawValue>>(raw.get()) {
                Ok(list) => list
                    .into_iter()
                    .map(|r| r.get().as_bytes().to_vec())
                    .collect(),
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        format!("malformed JSON array: {e}"),
                    );
                }
            }
        }
        Ok(raw) => vec![raw.get().as_bytes().to_vec()],
        Err(e) => {
            // Not JSON at all: keep it as one dead letter, and say so.
            let reason = format!("malformed JSON: {e}");
            if deliver(&state.source, vec![body.to_vec()]).await.is_err() {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the pipeline is not accepting input",
                );
            }
            return error(StatusCode::BAD_REQUEST, reason);
        }
    };
    if items.len() > MAX_ITEMS {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} items exceed the limit of {MAX_ITEMS} per request",
                items.len()
            ),
        );
    }
    let rejected: Vec<Rejected> = items
        .iter()
        .enumerate()
        .filter_map(|(index, item)| {
            parse::parse_reading(item)
                .err()
                .map(|e| Rejected { index, reason: e.0 })
        })
        .collect();
    let received = items.len();
    match deliver(&state.source, items).await {
        Ok(()) => Json(IngestResponse {
            received,
            accepted: received - rejected.len(),
            rejected,
        })
        .into_response(),
        Err(DeliverError::Closed) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the pipeline is not accepting input",
        ),
        Err(DeliverError::Timeout) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "items queued but not yet durable; retrying is safe (ingestion is idempotent)",
        ),
    }
}

enum DeliverError {
    Closed,
    Timeout,
}

/// Sends items and waits until all are acknowledged (durable).
async fn deliver(source: &EmbeddedSource, items: Vec<Vec<u8>>) -> Result<(), DeliverError> {
    let total = items.len();
    let acked = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    for item in items {
        let (acked, done) = (acked.clone(), done.clone());
        let ack = Ack::new(move || {
            if acked.fetch_add(1, Ordering::AcqRel) + 1 == total {
                done.notify_one();
            }
        });
        source
            .send_with_ack(item, ack)
            .await
            .map_err(|_| DeliverError::Closed)?;
    }
    if acked.load(Ordering::Acquire) == total {
        return Ok(());
    }
    tokio::time::timeout(DURABLE_TIMEOUT, done.notified())
        .await
        .map_err(|_| DeliverError::Timeout)
}
