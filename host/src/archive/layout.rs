//! Where a row goes in the archive (its partition and object key) and how a partition's
//! Parquet object is rewritten with new rows: merged, one row per id, through an in-memory
//! DuckDB.

use super::ArchiveError;
use crate::analytics::tables::{Table, append_batches};
use crate::model::batch::WriteBatch;
use crate::model::{Body, EpochMs};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The file name of a partition's object.
pub const OBJECT_NAME: &str = "data.parquet";

pub(crate) const HOUR_MS: i64 = 3_600_000;

/// One table's rows of one UTC hour of event time: one object in the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Partition {
    pub table: Table,
    /// Start of the hour, epoch ms.
    pub hour_ms: EpochMs,
}

impl Partition {
    /// The partition of a row of `table` with event time `at_ms`.
    pub fn of(table: Table, at_ms: EpochMs) -> Partition {
        Partition {
            table,
            hour_ms: at_ms.div_euclid(HOUR_MS) * HOUR_MS,
        }
    }

    /// `date=YYYY-MM-DD`
    pub fn date_segment(&self) -> String {
        date_segment(self.hour_ms.div_euclid(24 * HOUR_MS))
    }

    /// `hour=HH`
    pub fn hour_segment(&self) -> String {
        format!(
            "hour={:02}",
            self.hour_ms.rem_euclid(24 * HOUR_MS) / HOUR_MS
        )
    }

    /// `<prefix>/<table>/date=YYYY-MM-DD/hour=HH/data.parquet`
    pub fn object_path(&self, prefix: &str) -> object_store::path::Path {
        let mut key = table_folder(prefix, self.table);
        key.push('/');
        key.push_str(&self.date_segment());
        key.push('/');
        key.push_str(&self.hour_segment());
        key.push('/');
        key.push_str(OBJECT_NAME);
        object_store::path::Path::from(key)
    }
}

/// `<prefix>/<table>` (no trailing slash).
pub(crate) fn table_folder(prefix: &str, table: Table) -> String {
    if prefix.is_empty() {
        table.name().to_owned()
    } else {
        format!("{prefix}/{}", table.name())
    }
}

/// `date=YYYY-MM-DD` of a day number since 1970-01-01 (proleptic Gregorian, any year).
pub(crate) fn date_segment(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("date={y:04}-{m:02}-{d:02}")
}

/// Howard Hinnant's `civil_from_days`: total over i64 days, unlike chrono's range.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Splits a batch into one sub-batch per partition (readings, telemetry, alerts; the batch's
/// receive time kept). Dead letters, faults and quarantines are not archived.
pub(crate) fn split(batch: &WriteBatch) -> BTreeMap<Partition, WriteBatch> {
    let mut parts: BTreeMap<Partition, WriteBatch> = BTreeMap::new();
    for r in &batch.readings {
        let p = Partition::of(Table::of_reading(r.kind()), r.at_ms);
        parts
            .entry(p)
            .or_insert_with(|| empty_like(batch))
            .readings
            .push(r.clone());
    }
    for a in &batch.alerts {
        let p = Partition::of(Table::Alerts, a.0.at_ms);
        parts
            .entry(p)
            .or_insert_with(|| empty_like(batch))
            .alerts
            .push(a.clone());
    }
    parts
}

fn empty_like(batch: &WriteBatch) -> WriteBatch {
    WriteBatch {
        received_at_ms: batch.received_at_ms,
        ..WriteBatch::default()
    }
}

/// A rough in-memory size of a sub-batch's rows: what the buffer limits count.
pub(crate) fn estimate_bytes(b: &WriteBatch) -> usize {
    let readings: usize = b
        .readings
        .iter()
        .map(|r| {
            96 + r.id.len()
                + match &r.body {
                    Body::Glucose(g) => g.location.as_ref().map_or(0, String::len),
                    Body::Device(d) => {
                        d.firmware_version.as_ref().map_or(0, String::len)
                            + d.error_codes.iter().map(|c| c.len() + 24).sum::<usize>()
                    }
                }
        })
        .sum();
    let alerts: usize = b
        .alerts
        .iter()
        .map(|(a, _)| {
            160 + a.id.len()
                + a.rule.name.len()
                + a.rule.version.len()
                + a.reading_id.len()
                + a.code.len()
                + a.message.len()
        })
        .sum();
    readings + alerts
}

pub(crate) fn rows(b: &WriteBatch) -> usize {
    b.readings.len() + b.alerts.len()
}

/// The column names of a table, in order.
pub(crate) fn column_names(table: Table) -> Vec<&'static str> {
    table
        .columns()
        .split(',')
        .filter_map(|c| c.split_whitespace().next())
        .collect()
}

/// The column a table's rows carry their receive time in.
pub(crate) fn received_column(table: Table) -> &'static str {
    match table {
        Table::Alerts => "created_at_ms",
        Table::GlucoseReadings | Table::DeviceReadings => "received_at_ms",
    }
}

/// A SQL string literal.
pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A folder under the system's temp dir, removed with everything in it when dropped.
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    pub(crate) fn new(what: &str) -> std::io::Result<Scratch> {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "glucoguard-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A partition's new object.
pub(crate) struct Merged {
    pub bytes: Vec<u8>,
    /// Rows in the new object.
    pub rows: u64,
    /// Rows that were not archived before.
    pub added: u64,
    /// Whether the object differs from the existing one (false: every buffered row was
    /// already archived, nothing to upload).
    pub changed: bool,
}

/// Builds a partition's object from the existing one (if any) and the buffered sub-batches:
/// one row per id, the archived row winning over buffered ones and the first buffered over
/// later ones, ordered by (at_ms, id). Blocking: call from `spawn_blocking`.
pub(crate) fn merge(
    table: Table,
    existing: Option<&[u8]>,
    batches: &[Arc<WriteBatch>],
) -> Result<Merged, ArchiveError> {
    let scratch = Scratch::new("archive")?;
    let conn = duckdb::Connection::open_in_memory()?;
    let staged = format!("{}_staged", table.name());
    conn.execute_batch(&table.create_sql(&staged, false, true))?;
    append_batches(&conn, batches, "temp", "_staged")?;
    let cols = column_names(table).join(", ");
    let (old_rows, old_select) = match existing {
        Some(bytes) => {
            let old = scratch.file("old.parquet");
            std::fs::write(&old, bytes)?;
            let src = format!("read_parquet({})", quote(&old.to_string_lossy()));
            let n: i64 =
                conn.query_row(&format!("SELECT count(*) FROM {src}"), [], |r| r.get(0))?;
            (
                n as u64,
                format!("SELECT {cols}, 0 AS src_, 0 AS seq_ FROM {src} UNION ALL "),
            )
        }
        None => (0, String::new()),
    };
    let out = scratch.file("new.parquet");
    conn.execute_batch(&format!(
        "COPY (SELECT {cols} FROM ({old_select}SELECT {cols}, 1 AS src_, rowid AS seq_ FROM \
         temp.main.{staged}) QUALIFY row_number() OVER (PARTITION BY id ORDER BY src_, seq_) = 1 \
         ORDER BY at_ms, id) TO {} (FORMAT PARQUET, COMPRESSION ZSTD)",
        quote(&out.to_string_lossy())
    ))?;
    let rows: i64 = conn.query_row(
        &format!(
            "SELECT count(*) FROM read_parquet({})",
            quote(&out.to_string_lossy())
        ),
        [],
        |r| r.get(0),
    )?;
    let rows = rows as u64;
    let changed = existing.is_none() || rows != old_rows;
    let bytes = if changed {
        std::fs::read(&out)?
    } else {
        Vec::new()
    };
    Ok(Merged {
        bytes,
        rows,
        added: rows.saturating_sub(old_rows),
        changed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_utc_hours_named_hive_style() {
        // 2026-11-18T11:06:40Z
        let p = Partition::of(Table::GlucoseReadings, 1_795_000_000_000);
        assert_eq!(
            p.object_path("gg/x").as_ref(),
            "gg/x/glucose_readings/date=2026-11-18/hour=11/data.parquet"
        );
        assert_eq!(
            Partition::of(Table::Alerts, 0).object_path("").as_ref(),
            "alerts/date=1970-01-01/hour=00/data.parquet"
        );
        assert_eq!(
            Partition::of(Table::Alerts, -1).object_path("").as_ref(),
            "alerts/date=1969-12-31/hour=23/data.parquet"
        );
        assert_eq!(date_segment(19_782), "date=2024-02-29");
    }

    #[test]
    fn column_names_follow_the_table_layout() {
        assert_eq!(
            column_names(Table::GlucoseReadings),
            [
                "id",
                "patient_id",
                "device_id",
                "at_ms",
                "mg_dl",
                "location",
                "received_at_ms"
            ]
        );
        assert_eq!(column_names(Table::Alerts).len(), 14);
    }
}
