//! The shared half of ingest and catch-up: the reads the pipeline makes on start and per
//! batch, the pages the storage feeds copy, sink cursors, and bounding the diagnostics
//! tables. Each engine's `IngestStore` calls these and keeps only `write_batch` (its
//! statement limits differ) and the chunked raw-data deletes (their syntax differs).

use super::rows;
use super::sql::{Arg, Sql, placeholders, q};
use super::{AlertPage, Cursor, FeedCursor, PurgedDiagnostics, Received, StoreError};
use crate::model::{Alert, EpochMs, Reading, ReadingKind, now_ms};

const GLUCOSE_COLS: &str = "ReadingID, PatientID, DeviceID, GlucoseLevel, TimestampMs, Location";
const DEVICE_COLS: &str = "ReadingID, DeviceID, TimestampMs, BatteryLevel, FirmwareVersion, ConnectivityStatus, ErrorCodes";

pub async fn recent_readings(
    c: &mut (dyn Sql + '_),
    lookback_ms: EpochMs,
    not_after_ms: EpochMs,
) -> Result<Vec<Reading>, StoreError> {
    let newest = q("SELECT MAX(t) AS newest FROM (SELECT MAX(TimestampMs) AS t FROM GlucoseReadings WHERE TimestampMs <= ? \
                    UNION ALL SELECT MAX(TimestampMs) AS t FROM DeviceOperationalData WHERE TimestampMs <= ?) AS m")
        .bind(not_after_ms)
        .bind(not_after_ms)
        .fetch_one(&mut *c)
        .await?
        .opt_int("newest")?;
    let Some(newest) = newest else {
        return Ok(Vec::new());
    };
    let since = newest - lookback_ms;
    let mut out = Vec::new();
    for row in q(format!(
        "SELECT {GLUCOSE_COLS} FROM GlucoseReadings WHERE TimestampMs > ? AND TimestampMs <= ? ORDER BY TimestampMs"
    ))
    .bind(since)
    .bind(newest)
    .fetch_all(&mut *c)
    .await?
    {
        out.push(rows::glucose_reading(&*row)?);
    }
    for row in q(format!(
        "SELECT {DEVICE_COLS} FROM DeviceOperationalData WHERE TimestampMs > ? AND TimestampMs <= ? ORDER BY TimestampMs"
    ))
    .bind(since)
    .bind(newest)
    .fetch_all(&mut *c)
    .await?
    {
        out.push(rows::device_reading(&*row)?);
    }
    out.sort_by_key(|r| r.at_ms);
    Ok(out)
}

/// The readings of these subjects (glucose: patient ids; telemetry: device ids) with event
/// time in (`since_ms`, `until_ms`], in no particular order: how the pipeline refreshes a
/// subject's window that another host may have extended (a taken-over partition).
pub async fn subject_readings(
    c: &mut (dyn Sql + '_),
    patients: &[u64],
    devices: &[u64],
    since_ms: EpochMs,
    until_ms: EpochMs,
) -> Result<Vec<Reading>, StoreError> {
    let mut out = Vec::new();
    for (ids, table, cols, column, glucose) in [
        (patients, "GlucoseReadings", GLUCOSE_COLS, "PatientID", true),
        (
            devices,
            "DeviceOperationalData",
            DEVICE_COLS,
            "DeviceID",
            false,
        ),
    ] {
        for chunk in ids.chunks(rows::IDS_PER_LOOKUP) {
            let list = placeholders(chunk.len());
            let found = q(format!(
                "SELECT {cols} FROM {table} WHERE {column} IN {list} AND TimestampMs > ? AND TimestampMs <= ?"
            ))
            .bind_all(chunk.iter().map(|&id| Arg::from(id as i64)))
            .bind(since_ms)
            .bind(until_ms)
            .transient()
            .fetch_all(&mut *c)
            .await?;
            for row in found {
                out.push(if glucose {
                    rows::glucose_reading(&*row)?
                } else {
                    rows::device_reading(&*row)?
                });
            }
        }
    }
    Ok(out)
}

pub async fn readings_by_id(
    c: &mut (dyn Sql + '_),
    ids: &[&str],
) -> Result<Vec<Reading>, StoreError> {
    let mut out = Vec::new();
    for chunk in ids.chunks(rows::IDS_PER_LOOKUP) {
        let list = placeholders(chunk.len());
        for (table, cols, glucose) in [
            ("GlucoseReadings", GLUCOSE_COLS, true),
            ("DeviceOperationalData", DEVICE_COLS, false),
        ] {
            let found = q(format!(
                "SELECT {cols} FROM {table} WHERE ReadingID IN {list}"
            ))
            .bind_all(chunk.iter().map(|&id| Arg::from(id)))
            .transient()
            .fetch_all(&mut *c)
            .await?;
            for row in found {
                out.push(if glucose {
                    rows::glucose_reading(&*row)?
                } else {
                    rows::device_reading(&*row)?
                });
            }
        }
    }
    Ok(out)
}

pub async fn notified_alerts_since(
    c: &mut (dyn Sql + '_),
    since_ms: EpochMs,
) -> Result<Vec<Alert>, StoreError> {
    q(rows::NOTIFIED_ALERTS_SINCE)
        .bind(since_ms)
        .fetch_all(c)
        .await?
        .iter()
        .map(|row| rows::alert_with_status(&**row).map(|(a, _)| a))
        .collect()
}

pub async fn readings_since(
    c: &mut (dyn Sql + '_),
    kind: ReadingKind,
    after: &Cursor,
    limit: u32,
) -> Result<Vec<Received<Reading>>, StoreError> {
    let sql = match kind {
        ReadingKind::Glucose => rows::GLUCOSE_SINCE,
        ReadingKind::Device => rows::DEVICE_SINCE,
    };
    q(sql)
        .bind(after.received_at_ms)
        .bind(after.received_at_ms)
        .bind(&after.id)
        .bind(limit)
        .fetch_all(c)
        .await?
        .iter()
        .map(|r| rows::received_reading(&**r, kind))
        .collect()
}

pub async fn alerts_since(
    c: &mut (dyn Sql + '_),
    after: &Cursor,
    limit: u32,
) -> Result<AlertPage, StoreError> {
    q(rows::ALERTS_SINCE)
        .bind(after.received_at_ms)
        .bind(after.received_at_ms)
        .bind(&after.id)
        .bind(limit)
        .fetch_all(c)
        .await?
        .iter()
        .map(|r| rows::received_alert(&**r))
        .collect()
}

pub async fn sink_cursor(
    c: &mut (dyn Sql + '_),
    sink: &str,
) -> Result<Option<FeedCursor>, StoreError> {
    rows::decode_cursor(source_checkpoint(c, sink).await?)
}

pub async fn put_sink_cursor(
    c: &mut (dyn Sql + '_),
    sink: &str,
    cursor: &FeedCursor,
) -> Result<(), StoreError> {
    put_source_checkpoint(c, sink, &rows::encode_cursor(cursor)).await
}

/// The JSON kept under `key` in `SinkCursors`: a sink's cursor, or a source's recorded
/// position (its own JSON, keys `src:…`).
pub async fn source_checkpoint(
    c: &mut (dyn Sql + '_),
    key: &str,
) -> Result<Option<String>, StoreError> {
    q(rows::SINK_CURSOR_SELECT)
        .bind(key)
        .fetch_optional(c)
        .await?
        .map(|r| r.text("CursorJson"))
        .transpose()
}

pub async fn put_source_checkpoint(
    c: &mut (dyn Sql + '_),
    key: &str,
    value: &str,
) -> Result<(), StoreError> {
    let upsert = c
        .dialect()
        .upsert(&["Sink"], &["CursorJson", "UpdatedAtMs"]);
    q(format!(
        "INSERT INTO SinkCursors (Sink, CursorJson, UpdatedAtMs) VALUES (?, ?, ?){upsert}"
    ))
    .bind(key)
    .bind(value)
    .bind(now_ms())
    .execute(c)
    .await?;
    Ok(())
}

/// Bounds the diagnostics tables, deleting with `delete_sql(table, time)` (the engine's
/// chunked or plain delete, taking the cut as its only bind) until it removes fewer than
/// `chunk` rows (`None`: one statement).
pub async fn purge_diagnostics(
    c: &mut (dyn Sql + '_),
    keep_rows: u64,
    before_ms: EpochMs,
    chunk: Option<u32>,
) -> Result<PurgedDiagnostics, StoreError> {
    let mut purged = PurgedDiagnostics::default();
    for (table, time) in rows::DIAGNOSTICS {
        // The time of the row just past the newest `keep_rows`: it and older go.
        let past = q(rows::diagnostics_cut_sql(table, time))
            .bind(i64::try_from(keep_rows).unwrap_or(i64::MAX))
            .fetch_optional(&mut *c)
            .await?
            .map(|r| r.int(time))
            .transpose()?;
        let cut = rows::diagnostics_cut(past, before_ms);
        let mut n = 0;
        loop {
            let done = match chunk {
                Some(limit) => {
                    q(format!("DELETE FROM {table} WHERE {time} < ? LIMIT ?"))
                        .bind(cut)
                        .bind(limit)
                        .execute(&mut *c)
                        .await?
                }
                None => {
                    q(format!("DELETE FROM {table} WHERE {time} < ?"))
                        .bind(cut)
                        .execute(&mut *c)
                        .await?
                }
            };
            n += done;
            if chunk.is_none_or(|limit| done < u64::from(limit)) {
                break;
            }
        }
        if table == "DeadLetters" {
            purged.dead_letters = n;
        } else {
            purged.rule_faults = n;
        }
    }
    Ok(purged)
}
