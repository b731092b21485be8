//! Catch-up: copies into DuckDB what the OLTP store received since DuckDB's newest row, so
//! a new, deleted or stale analytics file is complete again when the host starts.

use super::{Analytics, AnalyticsError, Appended, Table};
use crate::model::{EpochMs, ReadingKind};
use crate::store::{Cursor, Store};
use serde::Serialize;

/// Rows per page read from the store (and per DuckDB transaction).
pub(crate) const PAGE_ROWS: u32 = 10_000;

/// What one catch-up did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CatchUp {
    /// Rows read from the store (pages overlap DuckDB by the rows received at its newest
    /// receive time, so this counts some rows DuckDB already had).
    pub read: u64,
    /// Rows DuckDB lacked and now holds.
    pub glucose_readings: u64,
    pub device_readings: u64,
    pub alerts: u64,
}

impl Analytics {
    /// Copies from `store` every reading, telemetry row and alert received at or after the
    /// newest receive time DuckDB holds for that table (everything when the table is empty),
    /// in pages of 10 000, deduplicated like the sink. A second run adds nothing.
    pub async fn catch_up(&self, store: &dyn Store) -> Result<CatchUp, AnalyticsError> {
        self.catch_up_paged(store, PAGE_ROWS).await
    }

    /// [`catch_up`](Self::catch_up) with a page size (tests use small pages).
    pub async fn catch_up_paged(
        &self,
        store: &dyn Store,
        page_rows: u32,
    ) -> Result<CatchUp, AnalyticsError> {
        let page_rows = page_rows.max(1);
        // Every start point first, so rows a live sink writes meanwhile cannot move them.
        let glucose = self.start_cursor(Table::GlucoseReadings).await?;
        let device = self.start_cursor(Table::DeviceReadings).await?;
        let alerts = self.start_cursor(Table::Alerts).await?;
        let mut done = CatchUp::default();
        for (kind, mut cursor) in [
            (ReadingKind::Glucose, glucose),
            (ReadingKind::Device, device),
        ] {
            loop {
                let page = store.readings_since(kind, &cursor, page_rows).await?;
                let Some(last) = page.last() else { break };
                cursor = last.cursor(&last.item.id);
                let full = page.len() == page_rows as usize;
                done.read += page.len() as u64;
                let added = self
                    .blocking(move |a| {
                        let rows: Vec<_> =
                            page.iter().map(|r| (&r.item, r.received_at_ms)).collect();
                        a.append_rows(&rows, &[])
                    })
                    .await?;
                add(&mut done, added);
                if !full {
                    break;
                }
            }
        }
        let mut cursor = alerts;
        loop {
            let page = store.alerts_since(&cursor, page_rows).await?;
            let Some(last) = page.last() else { break };
            cursor = last.cursor(&last.item.0.id);
            let full = page.len() == page_rows as usize;
            done.read += page.len() as u64;
            let added = self
                .blocking(move |a| {
                    let rows: Vec<_> = page
                        .iter()
                        .map(|r| (&r.item.0, r.item.1, r.received_at_ms))
                        .collect();
                    a.append_rows(&[], &rows)
                })
                .await?;
            add(&mut done, added);
            if !full {
                break;
            }
        }
        tracing::info!(
            read = done.read,
            glucose = done.glucose_readings,
            device = done.device_readings,
            alerts = done.alerts,
            "analytics caught up with the store"
        );
        Ok(done)
    }

    pub(crate) async fn start_cursor(&self, table: Table) -> Result<Cursor, AnalyticsError> {
        let newest: Option<EpochMs> = self.blocking(move |a| a.newest_received(table)).await?;
        Ok(newest.map(Cursor::at).unwrap_or_default())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Analytics) -> Result<T, AnalyticsError> + Send + 'static,
    ) -> Result<T, AnalyticsError> {
        let a = self.clone();
        tokio::task::spawn_blocking(move || f(&a))
            .await
            .map_err(|e| AnalyticsError::Worker(e.to_string()))?
    }
}

fn add(done: &mut CatchUp, a: Appended) {
    done.glucose_readings += a.glucose_readings;
    done.device_readings += a.device_readings;
    done.alerts += a.alerts;
}
