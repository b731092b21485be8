//! Retention: raw readings and telemetry older than the configured age leave the OLTP store.
//! They remain in the archive (the config refuses retention without one) and in analytics;
//! alerts and their lifecycle stay in the OLTP store.
//!
//! `glucoguard retention apply` runs one pass; `app::start` runs [`spawn`] when `[retention]`
//! is configured: a pass at start, then one every `every`. A pass never deletes a reading the
//! archive has not confirmed: it is bounded by the archive's cursor in the store.

use crate::config::{DiagnosticsConfig, RetentionConfig};
use crate::model::{EpochMs, now_ms};
use crate::store::{Purged, PurgedDiagnostics, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// The event-time cut: readings strictly older than this are purged.
pub fn cut_ms(now_ms: EpochMs, max_age: Duration) -> EpochMs {
    now_ms.saturating_sub(i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX))
}

/// The storage sink whose confirmed position bounds retention.
pub const ARCHIVE_SINK: &str = "archive";

/// One retention pass at `now_ms`: readings older than `max_age` that the archive has
/// confirmed (received before its cursor) leave the store; nothing before the archive has
/// confirmed anything.
pub async fn apply(
    store: &dyn Store,
    max_age: Duration,
    now_ms: EpochMs,
) -> Result<Purged, StoreError> {
    let Some(archived) = store.sink_cursor(ARCHIVE_SINK).await? else {
        tracing::warn!("retention skipped: the archive has not confirmed any reading yet");
        return Ok(Purged::default());
    };
    let purged = store
        .purge_readings_before(cut_ms(now_ms, max_age), Some(&archived))
        .await?;
    tracing::info!(
        glucose_readings = purged.glucose_readings,
        device_readings = purged.device_readings,
        max_age_days = max_age.as_secs() / 86_400,
        "retention pass done"
    );
    Ok(purged)
}

/// The scheduled job: a pass now, then one every `config.every`. A failed pass is logged and
/// tried again at the next tick; the job never stops the host.
pub fn spawn(store: Arc<dyn Store>, config: RetentionConfig) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(config.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = apply(store.as_ref(), config.max_age, now_ms()).await {
                tracing::warn!(store = store.kind(), error = %e, "retention pass failed; retrying at the next tick");
            }
        }
    })
}

/// One diagnostics pass at `now_ms`: dead letters and rule faults older than the bound's age,
/// or beyond its newest `max_rows`, leave the store.
pub async fn apply_diagnostics(
    store: &dyn Store,
    bound: DiagnosticsConfig,
    now_ms: EpochMs,
) -> Result<PurgedDiagnostics, StoreError> {
    let before = now_ms.saturating_sub(i64::from(bound.max_age_days) * 86_400_000);
    let purged = store.purge_diagnostics(bound.max_rows, before).await?;
    if purged != PurgedDiagnostics::default() {
        tracing::info!(
            dead_letters = purged.dead_letters,
            rule_faults = purged.rule_faults,
            max_rows = bound.max_rows,
            max_age_days = bound.max_age_days,
            "diagnostics bounded"
        );
    }
    Ok(purged)
}

/// The diagnostics job: a pass now, then one every `every_secs`; never stops the host.
pub fn spawn_diagnostics(store: Arc<dyn Store>, bound: DiagnosticsConfig) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(bound.every_secs.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = apply_diagnostics(store.as_ref(), bound, now_ms()).await {
                tracing::warn!(store = store.kind(), error = %e, "diagnostics pass failed; retrying at the next tick");
            }
        }
    })
}
