//! Reading history, read-only: what a backtest on stored data (and later the dashboard)
//! reads. Written once for every engine.

use super::rows;
use super::sql::{Arg, SqlEngine, placeholders, q};
use super::{BoxFuture, StoreError};
use crate::model::{EpochMs, Reading};

pub trait HistoryStore: Send + Sync + 'static {
    /// Glucose readings with event time in `[from_ms, to_ms)`, of the listed patients (all
    /// when `None`), in event-time order (ties by id).
    fn glucose_between<'a>(
        &'a self,
        from_ms: EpochMs,
        to_ms: EpochMs,
        patients: Option<&'a [u64]>,
    ) -> BoxFuture<'a, Result<Vec<Reading>, StoreError>>;
}

/// Patients per `IN (…)` list.
const PATIENTS_PER_QUERY: usize = 500;

impl<E: SqlEngine> HistoryStore for E {
    fn glucose_between<'a>(
        &'a self,
        from_ms: EpochMs,
        to_ms: EpochMs,
        patients: Option<&'a [u64]>,
    ) -> BoxFuture<'a, Result<Vec<Reading>, StoreError>> {
        Box::pin(async move {
            const COLS: &str = "SELECT ReadingID, PatientID, DeviceID, GlucoseLevel, TimestampMs, Location FROM GlucoseReadings";
            let mut out = Vec::new();
            match patients {
                None => {
                    for row in q(format!(
                        "{COLS} WHERE TimestampMs >= ? AND TimestampMs < ? ORDER BY TimestampMs, ReadingID"
                    ))
                    .bind(from_ms)
                    .bind(to_ms)
                    .fetch_all(&mut *self.pooled())
                    .await?
                    {
                        out.push(rows::glucose_reading(&*row)?);
                    }
                }
                Some(ids) => {
                    for chunk in ids.chunks(PATIENTS_PER_QUERY) {
                        for row in q(format!(
                            "{COLS} WHERE PatientID IN {} AND TimestampMs >= ? AND TimestampMs < ?",
                            placeholders(chunk.len())
                        ))
                        .bind_all(chunk.iter().map(|&p| Arg::id(p)))
                        .bind(from_ms)
                        .bind(to_ms)
                        .transient()
                        .fetch_all(&mut *self.pooled())
                        .await?
                        {
                            out.push(rows::glucose_reading(&*row)?);
                        }
                    }
                    out.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then_with(|| a.id.cmp(&b.id)));
                }
            }
            Ok(out)
        })
    }
}
