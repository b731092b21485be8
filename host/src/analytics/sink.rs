//! [`AnalyticsSink`]: the pipeline's storage sink into the DuckDB analytics database.

use super::{Analytics, AnalyticsError};
use crate::model::batch::WriteBatch;
use crate::sinks::{BoxFuture, Durable, SinkError, StorageSink};

const NAME: &str = "duckdb";

/// Appends every batch's readings, telemetry and alerts to [`Analytics`], deduplicated, and
/// completes the batch once the DuckDB transaction committed (DuckDB's WAL makes a commit
/// durable). Dead letters, faults and quarantines stay in the OLTP store only.
#[derive(Debug, Clone)]
pub struct AnalyticsSink {
    analytics: Analytics,
}

impl AnalyticsSink {
    pub fn new(analytics: Analytics) -> Self {
        AnalyticsSink { analytics }
    }

    pub fn analytics(&self) -> &Analytics {
        &self.analytics
    }
}

fn sink_error(what: &str, e: AnalyticsError) -> SinkError {
    SinkError {
        sink: NAME,
        message: format!("{what}: {e}"),
    }
}

impl StorageSink for AnalyticsSink {
    fn name(&self) -> &'static str {
        NAME
    }

    fn write<'a>(
        &'a self,
        batch: &'a WriteBatch,
        durable: Durable,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            if batch.readings.is_empty() && batch.alerts.is_empty() {
                durable.complete();
                return Ok(());
            }
            // Only what DuckDB keeps crosses into the blocking task.
            let rows = WriteBatch {
                readings: batch.readings.clone(),
                alerts: batch.alerts.clone(),
                received_at_ms: batch.received_at_ms,
                ..WriteBatch::default()
            };
            let analytics = self.analytics.clone();
            let added = tokio::task::spawn_blocking(move || analytics.append_batch(&rows))
                .await
                .map_err(|e| {
                    sink_error("append task failed", AnalyticsError::Worker(e.to_string()))
                })?
                .map_err(|e| {
                    sink_error(
                        &format!(
                            "appending a batch of {} readings and {} alerts",
                            batch.readings.len(),
                            batch.alerts.len()
                        ),
                        e,
                    )
                })?;
            tracing::debug!(
                sink = NAME,
                glucose = added.glucose_readings,
                device = added.device_readings,
                alerts = added.alerts,
                "batch appended"
            );
            durable.complete();
            Ok(())
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            // Commits are already durable; a checkpoint folds the WAL into the file.
            let analytics = self.analytics.clone();
            tokio::task::spawn_blocking(move || analytics.checkpoint())
                .await
                .map_err(|e| {
                    sink_error(
                        "checkpoint task failed",
                        AnalyticsError::Worker(e.to_string()),
                    )
                })?
                .map_err(|e| sink_error("checkpoint", e))
        })
    }
}
