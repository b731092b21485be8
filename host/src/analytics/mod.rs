//! DuckDB analytics: a storage sink keeping a columnar copy of readings, telemetry and
//! alerts, the catch-up that fills it from the OLTP store, and the queries the dashboard
//! draws from it.
//!
//! - **One file, one writer.** [`Analytics`] owns the DuckDB database (a file, or `:memory:`
//!   in tests). Writes go through one connection behind a mutex; each query opens its own
//!   connection to the same database ([`Analytics::connection`]), so a slow dashboard query
//!   never holds up the sink (DuckDB's MVCC lets them read beside the writer). Everything here
//!   is blocking: async callers run it in `spawn_blocking`, as [`AnalyticsSink`] and
//!   [`Analytics::catch_up`] do.
//! - **Dedupe.** Each fact table has `PRIMARY KEY (id)` (the OLTP ids). A write appends its
//!   rows through DuckDB appenders into TEMP staging tables (the first of an id repeated in
//!   the write wins), then, in one transaction, inserts the staged rows whose id is not among
//!   the table's rows *in the staged event-time range* and empties the staging tables. Zone
//!   maps on `at_ms` skip the rest of the table, so a write costs what its batch costs (10–30
//!   ms at 10M rows); `INSERT OR IGNORE` alone scans the whole table (DuckDB runs it as a hash
//!   join: ≈ 0.5 s a batch at 10M rows, whatever its size; `tests::dedupe_cost`). The range is
//!   exact while an id keeps its event time (alert ids embed it, content-hash reading ids hash
//!   it); if a producer reuses a `reading_id` with another time, the key refuses the insert and
//!   the write is redone with `INSERT OR IGNORE`. Replays add nothing; a failed write leaves
//!   nothing. The key's index costs disk: 771 MiB against 196 MiB for 10M readings.
//! - **Alert status** is the one the alert was first written with, like the OLTP store
//!   ("rows already present are left as they are"): a repeated alert id is ignored, not
//!   updated, so DuckDB never disagrees with the store about a row it copied.
//! - **Catch-up** ([`Analytics::catch_up`]) copies, per table, what the OLTP store received at
//!   or after the newest receive time DuckDB already holds (everything when DuckDB is empty),
//!   page by page in (received time, id) order, deduplicated like the sink. It does not fill
//!   holes *older* than that time (a DuckDB file restored from an old copy after newer writes,
//!   say), nor rows the store no longer has (retention): those come back from the archive
//!   (`glucoguard archive restore`). Its cursors are taken when it starts, so it may run
//!   beside a live sink.
//! - **Windows** have the rule engine's semantics: the window of a reading at `t` over `d`
//!   holds the patient's readings in `(t − d, t]`, the reading itself and equal timestamps
//!   included, one exactly `d` older excluded. With integer milliseconds that is
//!   `RANGE BETWEEN d − 1 PRECEDING AND CURRENT ROW`. Readings before a query's period count
//!   toward the moving average of the period's first points (the average at a reading does
//!   not depend on the period it is viewed in).
//! - **Periods** are `[from_ms, to_ms)` in event time; days and times of day are UTC.

mod catch_up;
mod queries;
mod sink;
pub mod tables;

pub use catch_up::CatchUp;
pub use queries::{AgpBin, CgmMetrics, DailyAverage, PatientSummary, SeriesPoint};
pub use sink::AnalyticsSink;
pub use tables::{Appended, Table};

use crate::model::batch::{AlertStatus, WriteBatch};
use crate::model::{Alert, EpochMs, Reading};
use crate::store::StoreError;
use duckdb::Connection;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// Version of the analytics tables' layout, kept in `_meta`.
pub const SCHEMA_VERSION: i64 = 1;

/// Suffix of the TEMP staging tables writes go through.
const STAGING: &str = "_staging";

#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error("cannot open analytics database {path}: {source}")]
    Open { path: String, source: duckdb::Error },
    #[error("analytics database: {0}")]
    DuckDb(#[from] duckdb::Error),
    #[error("analytics catch-up: reading the store failed: {0}")]
    Store(#[from] StoreError),
    #[error(
        "analytics database {path} has schema version {found}; this host writes version {SCHEMA_VERSION}"
    )]
    SchemaVersion { path: String, found: String },
    #[error("invalid analytics query: {0}")]
    Invalid(String),
    #[error("analytics worker stopped: {0}")]
    Worker(String),
}

/// The DuckDB analytics database. Cheap to clone (shared).
#[derive(Clone)]
pub struct Analytics {
    inner: Arc<Inner>,
}

struct Inner {
    path: String,
    /// The one connection that writes; it owns the TEMP staging tables.
    writer: Mutex<Connection>,
    /// Only cloned into per-query connections, so readers never wait for a write.
    readers: Mutex<Connection>,
}

impl std::fmt::Debug for Analytics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analytics")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Analytics {
    /// Opens (creating if needed) the analytics database at `path`; `":memory:"` gives a
    /// private in-memory one. Creates the tables on first open and refuses a file written
    /// with another schema version.
    pub fn open(path: impl AsRef<Path>) -> Result<Analytics, AnalyticsError> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let open_err = |source| AnalyticsError::Open {
            path: shown.clone(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        init_schema(&mut conn, &shown)?;
        for t in Table::ALL {
            conn.execute_batch(&t.create_sql(&format!("{}{STAGING}", t.name()), false, true))?;
        }
        let readers = conn.try_clone()?;
        Ok(Analytics {
            inner: Arc::new(Inner {
                path: shown,
                writer: Mutex::new(conn),
                readers: Mutex::new(readers),
            }),
        })
    }

    /// A new connection to this database, for reading (dashboard queries, tests) or for bulk
    /// loads that dedupe themselves (`INSERT OR IGNORE INTO <table> SELECT …`).
    pub fn connection(&self) -> Result<Connection, AnalyticsError> {
        Ok(lock(&self.inner.readers).try_clone()?)
    }

    /// Appends a pipeline batch's readings, telemetry and alerts, deduplicated, in one
    /// transaction. Returns the rows actually added. Blocking.
    pub fn append_batch(&self, batch: &WriteBatch) -> Result<Appended, AnalyticsError> {
        self.ingest(|conn| tables::append_batch(conn, batch, "temp", STAGING))
    }

    /// Appends several batches in one transaction, like [`append_batch`](Self::append_batch)
    /// (the sink's group commit). Blocking.
    pub fn append_batches(&self, batches: &[WriteBatch]) -> Result<Appended, AnalyticsError> {
        self.ingest(|conn| tables::append_batches(conn, batches, "temp", STAGING))
    }

    /// Appends rows that carry their own receive times (catch-up pages), like
    /// [`append_batch`](Self::append_batch). Blocking.
    pub fn append_rows(
        &self,
        readings: &[(&Reading, EpochMs)],
        alerts: &[(&Alert, AlertStatus, EpochMs)],
    ) -> Result<Appended, AnalyticsError> {
        self.ingest(|conn| tables::append_rows(conn, readings, alerts, "temp", STAGING))
    }

    /// Row count of one table.
    pub fn count(&self, table: Table) -> Result<u64, AnalyticsError> {
        let conn = self.connection()?;
        Ok(
            conn.query_row(&format!("SELECT count(*) FROM {}", table.name()), [], |r| {
                r.get(0)
            })?,
        )
    }

    /// Writes everything to the database file and truncates its WAL (shutdown). Blocking.
    pub fn checkpoint(&self) -> Result<(), AnalyticsError> {
        lock(&self.inner.writer).execute_batch("CHECKPOINT")?;
        Ok(())
    }

    /// Stages rows with `stage`, moves the ones with new ids into the real tables and empties
    /// the staging tables, all in one transaction. Dedupes against the rows in the staged
    /// event-time range; if an id turns out to exist outside it (the key refuses the insert),
    /// does it all again against the whole table.
    fn ingest(
        &self,
        stage: impl Fn(&Connection) -> duckdb::Result<Appended>,
    ) -> Result<Appended, AnalyticsError> {
        let mut conn = lock(&self.inner.writer);
        match ingest_with(&mut conn, &stage, Dedupe::TimeRange) {
            Err(e) if is_key_violation(&e) => {
                tracing::debug!(
                    error = %e,
                    "an id came back with another event time: deduplicating against whole tables"
                );
                Ok(ingest_with(&mut conn, &stage, Dedupe::WholeTable)?)
            }
            other => Ok(other?),
        }
    }

    /// The newest receive time held in `table`, where catch-up resumes.
    fn newest_received(&self, table: Table) -> Result<Option<EpochMs>, AnalyticsError> {
        let conn = self.connection()?;
        Ok(conn.query_row(
            &format!(
                "SELECT max({}) FROM {}",
                received_column(table),
                table.name()
            ),
            [],
            |r| r.get(0),
        )?)
    }
}

/// How a write finds the staged ids a table already holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dedupe {
    /// Anti-join against the table's rows in the staged rows' event-time range: zone maps on
    /// `at_ms` skip the rest of the table, so the cost follows the batch, not the table. Exact
    /// as long as an id keeps its event time (alert ids contain it, content-hash reading ids
    /// hash it); otherwise the primary key refuses the insert.
    TimeRange,
    /// `INSERT OR IGNORE`: exact whatever the times, but DuckDB runs it as a hash join over the
    /// whole table (≈ 0.5 s a batch at 10M rows, see `tests::dedupe_cost`).
    WholeTable,
}

fn ingest_with(
    conn: &mut Connection,
    stage: &impl Fn(&Connection) -> duckdb::Result<Appended>,
    dedupe: Dedupe,
) -> duckdb::Result<Appended> {
    let tx = conn.transaction()?;
    let staged = stage(&tx)?;
    let mut added = Appended::default();
    for t in Table::ALL {
        if staged_rows(&staged, t) == 0 {
            continue;
        }
        let name = t.name();
        let n = match dedupe {
            Dedupe::TimeRange => {
                let (lo, hi): (i64, i64) = tx
                    .prepare_cached(&format!(
                        "SELECT min(at_ms), max(at_ms) FROM temp.main.{name}{STAGING}"
                    ))?
                    .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                // Literal bounds (integers), so the scan can skip row groups by zone map.
                tx.execute(
                    &format!(
                        "INSERT INTO main.{name} SELECT s.* FROM ({}) s ANTI JOIN \
                         (SELECT id FROM main.{name} WHERE at_ms BETWEEN {lo} AND {hi}) USING (id)",
                        staged_once(t)
                    ),
                    [],
                )?
            }
            Dedupe::WholeTable => tx.execute(
                &format!("INSERT OR IGNORE INTO main.{name} {}", staged_once(t)),
                [],
            )?,
        } as u64;
        tx.prepare_cached(&format!("DELETE FROM temp.main.{name}{STAGING}"))?
            .execute([])?;
        match t {
            Table::GlucoseReadings => added.glucose_readings = n,
            Table::DeviceReadings => added.device_readings = n,
            Table::Alerts => added.alerts = n,
        }
    }
    tx.commit()?;
    Ok(added)
}

fn staged_rows(a: &Appended, t: Table) -> u64 {
    match t {
        Table::GlucoseReadings => a.glucose_readings,
        Table::DeviceReadings => a.device_readings,
        Table::Alerts => a.alerts,
    }
}

/// The staged rows, the first of any id staged more than once in one write.
fn staged_once(t: Table) -> String {
    format!(
        "SELECT * EXCLUDE (staged_order) FROM ( \
             SELECT *, row_number() OVER (PARTITION BY id ORDER BY rowid) AS staged_order \
             FROM temp.main.{}{STAGING}) \
         WHERE staged_order = 1",
        t.name()
    )
}

/// The primary key refused a row: an id already in the table outside the staged time range.
fn is_key_violation(e: &duckdb::Error) -> bool {
    matches!(e, duckdb::Error::DuckDBFailure(_, Some(msg)) if msg.contains("Constraint Error"))
}

/// The column holding the time the host received a row.
fn received_column(t: Table) -> &'static str {
    match t {
        Table::GlucoseReadings | Table::DeviceReadings => "received_at_ms",
        Table::Alerts => "created_at_ms",
    }
}

fn init_schema(conn: &mut Connection, path: &str) -> Result<(), AnalyticsError> {
    let tx = conn.transaction()?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS _meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
    )?;
    let found: Option<String> = match tx.query_row(
        "SELECT value FROM _meta WHERE key = 'schema_version'",
        [],
        |r| r.get(0),
    ) {
        Ok(v) => Some(v),
        Err(duckdb::Error::QueryReturnedNoRows) => None,
        Err(e) => return Err(e.into()),
    };
    match found {
        Some(v) if v == SCHEMA_VERSION.to_string() => {}
        Some(found) => {
            return Err(AnalyticsError::SchemaVersion {
                path: path.to_owned(),
                found,
            });
        }
        None => {
            for t in Table::ALL {
                tx.execute_batch(&t.create_sql(t.name(), true, false))?;
            }
            tx.execute(
                "INSERT INTO _meta VALUES ('schema_version', ?)",
                [SCHEMA_VERSION.to_string()],
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// A poisoned lock only means a panic elsewhere; DuckDB rolled the open transaction back when
/// its `Transaction` was dropped, so the connection is still usable.
fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;
