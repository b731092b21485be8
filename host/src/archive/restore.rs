//! Loading a period of the archive back into DuckDB (`glucoguard archive restore`): list the
//! partitions the period touches, download their objects, and insert the period's rows that
//! the database does not hold yet.

use super::layout::{self, HOUR_MS, Scratch, quote};
use super::{ArchiveConfig, ArchiveError};
use crate::analytics::tables::Table;
use crate::model::EpochMs;
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use std::path::{Path, PathBuf};

const DAY_MS: i64 = 24 * HOUR_MS;

/// A half-open interval of event time, `[from_ms, to_ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from_ms: EpochMs,
    pub to_ms: EpochMs,
}

impl Period {
    pub fn new(from_ms: EpochMs, to_ms: EpochMs) -> Result<Period, String> {
        if from_ms >= to_ms {
            return Err(format!(
                "the period is empty: --from ({}) must be before --to ({})",
                crate::model::format_ms(from_ms),
                crate::model::format_ms(to_ms)
            ));
        }
        Ok(Period { from_ms, to_ms })
    }

    /// Parses `--from` / `--to`: RFC 3339 (`2026-11-19T10:00:00Z`), `YYYY-MM-DD HH:MM:SS`
    /// (UTC) or a date `YYYY-MM-DD` (its midnight UTC).
    pub fn parse(from: &str, to: &str) -> Result<Period, String> {
        let one = |s: &str, flag: &str| {
            let s = s.trim();
            let full = if s.len() == 10 {
                format!("{s}T00:00:00Z")
            } else {
                s.to_owned()
            };
            crate::model::parse::parse_timestamp(&full).map_err(|_| {
                format!(
                    "{flag} {s:?} is neither a date (YYYY-MM-DD), RFC 3339 nor `YYYY-MM-DD \
                     HH:MM:SS` (UTC)"
                )
            })
        };
        Period::new(one(from, "--from")?, one(to, "--to")?)
    }

    fn touches_hour(&self, hour_ms: EpochMs) -> bool {
        hour_ms < self.to_ms && hour_ms + HOUR_MS > self.from_ms
    }
}

/// What a restore did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Objects downloaded.
    pub objects: usize,
    pub bytes: u64,
    /// Rows inserted per table (rows of the period the database already held are not counted).
    pub glucose_readings: u64,
    pub device_readings: u64,
    pub alerts: u64,
}

impl RestoreReport {
    pub fn rows(&self) -> u64 {
        self.glucose_readings + self.device_readings + self.alerts
    }
}

/// A period's objects, downloaded into a scratch folder that is removed when this is dropped.
pub struct Fetched {
    scratch: Scratch,
    files: Vec<(Table, PathBuf)>,
    period: Period,
    bytes: u64,
}

impl std::fmt::Debug for Fetched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetched")
            .field("folder", &self.scratch.path())
            .field("objects", &self.files.len())
            .field("period", &self.period)
            .finish()
    }
}

/// Downloads the objects of every partition the period touches.
pub async fn fetch(
    store: &dyn ObjectStore,
    cfg: &ArchiveConfig,
    period: Period,
) -> Result<Fetched, ArchiveError> {
    let scratch = Scratch::new("restore")?;
    let mut files = Vec::new();
    let mut bytes = 0;
    let first_day = period.from_ms.div_euclid(DAY_MS);
    let last_day = (period.to_ms - 1).div_euclid(DAY_MS);
    for table in Table::ALL {
        let folder = layout::table_folder(&cfg.prefix, table);
        for day in first_day..=last_day {
            let date = ObjectPath::from(format!("{folder}/{}", layout::date_segment(day)));
            for hour_folder in store
                .list_with_delimiter(Some(&date))
                .await?
                .common_prefixes
            {
                let Some(hour) = hour_folder
                    .filename()
                    .and_then(|s| s.strip_prefix("hour="))
                    .and_then(|h| h.parse::<i64>().ok())
                    .filter(|h| (0..24).contains(h))
                else {
                    continue;
                };
                let hour_ms = day * DAY_MS + hour * HOUR_MS;
                if !period.touches_hour(hour_ms) {
                    continue;
                }
                for object in store.list_with_delimiter(Some(&hour_folder)).await?.objects {
                    if !object.location.as_ref().ends_with(".parquet") {
                        continue;
                    }
                    let data = store.get(&object.location).await?.bytes().await?;
                    let file = scratch.file(&format!("{}-{}.parquet", table.name(), files.len()));
                    tokio::fs::write(&file, &data).await?;
                    bytes += data.len() as u64;
                    files.push((table, file));
                }
            }
        }
    }
    Ok(Fetched {
        scratch,
        files,
        period,
        bytes,
    })
}

impl Fetched {
    pub fn objects(&self) -> usize {
        self.files.len()
    }

    /// Inserts the period's rows into `conn`'s tables (created with the analytics layout and a
    /// primary key when missing), one row per id, skipping ids the tables already hold; in
    /// one transaction. Blocking: call from `spawn_blocking`.
    pub fn load_into(&self, conn: &duckdb::Connection) -> Result<RestoreReport, ArchiveError> {
        let mut report = RestoreReport {
            objects: self.files.len(),
            bytes: self.bytes,
            ..RestoreReport::default()
        };
        conn.execute_batch("BEGIN TRANSACTION")?;
        let result = (|| -> Result<(), ArchiveError> {
            for table in Table::ALL {
                conn.execute_batch(&table.create_sql(table.name(), true, false))?;
                let files: Vec<String> = self
                    .files
                    .iter()
                    .filter(|(t, _)| *t == table)
                    .map(|(_, f)| quote(&f.to_string_lossy()))
                    .collect();
                if files.is_empty() {
                    continue;
                }
                let t = table.name();
                let cols = layout::column_names(table).join(", ");
                let received = layout::received_column(table);
                let n = conn.execute(
                    &format!(
                        "INSERT INTO {t} ({cols}) SELECT {cols} FROM read_parquet([{}]) s \
                         WHERE s.at_ms >= ? AND s.at_ms < ? \
                         AND NOT EXISTS (SELECT 1 FROM {t} e WHERE e.id = s.id) \
                         QUALIFY row_number() OVER (PARTITION BY s.id ORDER BY s.{received}) = 1",
                        files.join(", ")
                    ),
                    duckdb::params![self.period.from_ms, self.period.to_ms],
                )? as u64;
                match table {
                    Table::GlucoseReadings => report.glucose_readings = n,
                    Table::DeviceReadings => report.device_readings = n,
                    Table::Alerts => report.alerts = n,
                }
            }
            Ok(())
        })();
        match result {
            Ok(()) => {
                conn.execute_batch("COMMIT")?;
                Ok(report)
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }
}

/// Restores a period of the archive into the DuckDB file at `db` (created if missing).
/// DuckDB allows one process to write a file: stop a host whose analytics sink has it open.
pub async fn restore(
    store: &dyn ObjectStore,
    cfg: &ArchiveConfig,
    db: &Path,
    period: Period,
) -> Result<RestoreReport, ArchiveError> {
    let fetched = fetch(store, cfg, period).await?;
    let db = db.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let conn = duckdb::Connection::open(&db)?;
        fetched.load_into(&conn)
    })
    .await
    .map_err(|e| ArchiveError::Worker(e.to_string()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_dates_and_timestamps() {
        let p = Period::parse("2026-11-19", "2026-11-19T12:00:00Z").unwrap();
        assert_eq!(p.to_ms - p.from_ms, 12 * HOUR_MS);
        assert!(p.touches_hour(p.from_ms));
        assert!(!p.touches_hour(p.to_ms));
        assert!(p.touches_hour(p.to_ms - HOUR_MS));
        assert!(Period::parse("2026-11-19", "2026-11-18").is_err());
        let e = Period::parse("yesterday", "2026-11-18").unwrap_err();
        assert!(e.contains("--from"), "{e}");
    }
}
