//! The embedded OLTP store on SQLite (sqlx): one file, WAL mode, batched idempotent writes.

use super::rows as decode;
use super::sql::{Arg, Dialect, Q, Row, Sql, SqlEngine, SqlTx};
use super::{
    BoxFuture, Cursor, FeedCursor, IngestStore, Migration, Purged, PurgedDiagnostics, Received,
    RetentionStore, StoreError, WriteBatch, WriteOutcome, ingest,
};
use crate::model::{Alert, Body, DeviceTelemetry, EpochMs, Glucose, Reading, ReadingKind, now_ms};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row as _, Sqlite};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "prototype",
        sql: include_str!("../../migrations/sqlite/0001_prototype.sql"),
    },
    Migration {
        version: 2,
        name: "platform",
        sql: include_str!("../../migrations/sqlite/0002_platform.sql"),
    },
    Migration {
        version: 3,
        name: "received order",
        sql: include_str!("../../migrations/sqlite/0003_received_order.sql"),
    },
    Migration {
        version: 4,
        name: "faults and sink cursors",
        sql: include_str!("../../migrations/sqlite/0004_faults_and_sink_cursors.sql"),
    },
    Migration {
        version: 5,
        name: "accounts and lifecycle",
        sql: include_str!("../../migrations/sqlite/0005_accounts_and_lifecycle.sql"),
    },
    Migration {
        version: 6,
        name: "rule scope",
        sql: include_str!("../../migrations/sqlite/0006_rule_scope.sql"),
    },
    Migration {
        version: 7,
        name: "user glucose unit",
        sql: include_str!("../../migrations/sqlite/0007_user_glucose_unit.sql"),
    },
];

/// Rows per multi-row INSERT (SQLite allows 32 766 bound variables; the widest row has 13).
const ROWS_PER_INSERT: usize = 500;

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

/// How the SQLite file trades safety for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOptions {
    /// `true` (the default): every commit is synced (`synchronous = FULL`), so an
    /// acknowledged batch survives power loss. `false` (`synchronous = NORMAL`): fewer fsyncs,
    /// and acknowledged batches may be lost on power loss or OS crash, never on a process
    /// crash.
    pub durable_on_power_loss: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            durable_on_power_loss: true,
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file with the safe defaults and applies
    /// pending migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, SqliteOptions::default()).await
    }

    /// Opens (creating if needed) the database file and applies pending migrations.
    pub async fn open_with(path: &Path, options: SqliteOptions) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        }
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // In WAL mode FULL syncs the log on every commit; NORMAL only at checkpoints, so
            // the last commits before a power loss can vanish after they were acknowledged.
            .synchronous(if options.durable_on_power_loss {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // A 64 MiB page cache and memory-mapped reads: without them SQLite re-reads evicted
            // B-tree pages through read(2) and the kernel copies dominate ingest (profiled).
            .pragma("cache_size", "-65536")
            .pragma("mmap_size", "268435456")
            .pragma("temp_store", "memory")
            // Checkpoint every ~16 MiB of WAL instead of 4 MiB: fewer fsyncs under load.
            .pragma("wal_autocheckpoint", "4000");
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        if !options.durable_on_power_loss {
            tracing::warn!(
                path = %path.display(),
                "store.durable_on_power_loss = false: acknowledged batches may be lost on power loss or OS crash"
            );
        }
        let store = SqliteStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS _glucoguard_migrations (Version INTEGER PRIMARY KEY, Name TEXT NOT NULL, AppliedAtMs INTEGER NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        for m in MIGRATIONS {
            let mut tx = self.pool.begin().await?;
            let done: Option<i64> =
                sqlx::query_scalar("SELECT Version FROM _glucoguard_migrations WHERE Version = ?")
                    .bind(m.version)
                    .fetch_optional(&mut *tx)
                    .await?;
            if done.is_some() {
                continue;
            }
            sqlx::raw_sql(m.sql).execute(&mut *tx).await?;
            sqlx::query(
                "INSERT INTO _glucoguard_migrations (Version, Name, AppliedAtMs) VALUES (?, ?, ?)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        }
        Ok(())
    }

    async fn write(&self, b: &WriteBatch) -> Result<WriteOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut outcome = WriteOutcome::default();
        let glucose: Vec<(&Reading, &Glucose)> = b
            .readings
            .iter()
            .filter_map(|r| match &r.body {
                Body::Glucose(g) => Some((r, g)),
                Body::Device(_) => None,
            })
            .collect();
        for chunk in glucose.chunks(ROWS_PER_INSERT) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT OR IGNORE INTO GlucoseReadings (ReadingID, PatientID, DeviceID, GlucoseLevel, TimestampMs, Location, ReceivedAtMs) ",
            );
            q.push_values(chunk, |mut row, (r, g)| {
                row.push_bind(&r.id)
                    .push_bind(g.patient_id as i64)
                    .push_bind(g.device_id as i64)
                    .push_bind(g.mg_dl)
                    .push_bind(r.at_ms)
                    .push_bind(g.location.as_deref())
                    .push_bind(b.received_at_ms);
            });
            q.build().execute(&mut *tx).await?;
        }
        let device: Vec<(&Reading, &DeviceTelemetry)> = b
            .readings
            .iter()
            .filter_map(|r| match &r.body {
                Body::Device(d) => Some((r, d)),
                Body::Glucose(_) => None,
            })
            .collect();
        for chunk in device.chunks(ROWS_PER_INSERT) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT OR IGNORE INTO DeviceOperationalData (ReadingID, DeviceID, TimestampMs, BatteryLevel, FirmwareVersion, ConnectivityStatus, ErrorCodes, ReceivedAtMs) ",
            );
            q.push_values(chunk, |mut row, (r, d)| {
                row.push_bind(&r.id)
                    .push_bind(d.device_id as i64)
                    .push_bind(r.at_ms)
                    .push_bind(d.battery_pct)
                    .push_bind(d.firmware_version.as_deref())
                    .push_bind(d.connectivity.as_str())
                    .push_bind(d.error_codes.join(","))
                    .push_bind(b.received_at_ms);
            });
            q.build().execute(&mut *tx).await?;
        }
        for chunk in b.alerts.chunks(ROWS_PER_INSERT) {
            let mut q = QueryBuilder::<Sqlite>::new("SELECT AlertID FROM Alerts WHERE AlertID IN ");
            q.push_tuples(chunk, |mut row, (a, _)| {
                row.push_bind(&a.id);
            });
            let stored: std::collections::HashSet<String> = q
                .build_query_scalar::<String>()
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .collect();
            outcome.new_alert_ids.extend(
                chunk
                    .iter()
                    .filter(|(a, _)| !stored.contains(&a.id))
                    .map(|(a, _)| a.id.clone()),
            );
            alerts_insert("Alerts", chunk.iter().map(|(a, _)| a), b.received_at_ms)
                .build()
                .execute(&mut *tx)
                .await?;
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT OR IGNORE INTO AlertLifecycle (AlertID, Status, UpdatedAtMs) ",
            );
            q.push_values(chunk, |mut row, (a, status)| {
                row.push_bind(&a.id)
                    .push_bind(status.as_str())
                    .push_bind(b.received_at_ms);
            });
            q.build().execute(&mut *tx).await?;
        }
        for chunk in b.shadow_alerts.chunks(ROWS_PER_INSERT) {
            alerts_insert("ShadowAlerts", chunk, b.received_at_ms)
                .build()
                .execute(&mut *tx)
                .await?;
        }
        for chunk in b.dead_letters.chunks(ROWS_PER_INSERT) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT OR IGNORE INTO DeadLetters (Fingerprint, Origin, Reason, Payload, ReceivedAtMs) ",
            );
            q.push_values(chunk, |mut row, d| {
                row.push_bind(d.fingerprint())
                    .push_bind(&d.origin)
                    .push_bind(&d.reason)
                    .push_bind(&d.payload)
                    .push_bind(d.received_at_ms);
            });
            q.build().execute(&mut *tx).await?;
        }
        for (i, f) in b.faults.iter().enumerate() {
            sqlx::query("INSERT OR IGNORE INTO RuleFaults (FaultKey, RuleName, Version, Kind, Detail, AtMs) VALUES (?, ?, ?, ?, ?, ?)")
                .bind(decode::fault_key(f, b.received_at_ms, i))
                .bind(&f.rule.name)
                .bind(&f.rule.version)
                .bind(f.kind.as_str())
                .bind(&f.detail)
                .bind(f.at_ms)
                .execute(&mut *tx)
                .await?;
        }
        for (rule, reason) in &b.quarantined {
            sqlx::query("UPDATE RuleVersions SET Status = 'quarantined', QuarantineReason = ? WHERE RuleName = ? AND Version = ?")
                .bind(reason)
                .bind(&rule.name)
                .bind(&rule.version)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }
}

/// A multi-row insert of alerts into `Alerts` or `ShadowAlerts` (same columns); rows already
/// present are left as they are.
fn alerts_insert<'a>(
    table: &str,
    alerts: impl IntoIterator<Item = &'a Alert>,
    received_at_ms: EpochMs,
) -> QueryBuilder<'a, Sqlite> {
    let mut q = QueryBuilder::<Sqlite>::new(format!(
        "INSERT OR IGNORE INTO {table} (AlertID, ReadingID, PatientID, DeviceID, Kind, RuleName, RuleVersion, Code, Severity, Message, Value, TimestampMs, CreatedAtMs) "
    ));
    q.push_values(alerts, |mut row, a| {
        row.push_bind(&a.id)
            .push_bind(&a.reading_id)
            .push_bind(a.patient_id.map(|p| p as i64))
            .push_bind(a.device_id as i64)
            .push_bind(a.kind.as_str())
            .push_bind(&a.rule.name)
            .push_bind(&a.rule.version)
            .push_bind(&a.code)
            .push_bind(a.severity.as_str())
            .push_bind(&a.message)
            .push_bind(a.value)
            .push_bind(a.at_ms)
            .push_bind(received_at_ms);
    });
    q
}

impl IngestStore for SqliteStore {
    fn write_batch<'a>(
        &'a self,
        batch: &'a WriteBatch,
    ) -> BoxFuture<'a, Result<WriteOutcome, StoreError>> {
        Box::pin(self.write(batch))
    }

    fn recent_readings(
        &self,
        lookback_ms: EpochMs,
        not_after_ms: EpochMs,
    ) -> BoxFuture<'_, Result<Vec<Reading>, StoreError>> {
        Box::pin(async move {
            ingest::recent_readings(&mut *self.pooled(), lookback_ms, not_after_ms).await
        })
    }

    fn subject_readings<'a>(
        &'a self,
        patients: &'a [u64],
        devices: &'a [u64],
        since_ms: EpochMs,
        until_ms: EpochMs,
    ) -> BoxFuture<'a, Result<Vec<Reading>, StoreError>> {
        Box::pin(async move {
            ingest::subject_readings(&mut *self.pooled(), patients, devices, since_ms, until_ms)
                .await
        })
    }

    fn readings_by_id<'a>(
        &'a self,
        ids: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<Reading>, StoreError>> {
        Box::pin(async move { ingest::readings_by_id(&mut *self.pooled(), ids).await })
    }

    fn notified_alerts_since(
        &self,
        since_ms: EpochMs,
    ) -> BoxFuture<'_, Result<Vec<Alert>, StoreError>> {
        Box::pin(async move { ingest::notified_alerts_since(&mut *self.pooled(), since_ms).await })
    }

    fn readings_since<'a>(
        &'a self,
        kind: ReadingKind,
        after: &'a Cursor,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<Received<Reading>>, StoreError>> {
        Box::pin(
            async move { ingest::readings_since(&mut *self.pooled(), kind, after, limit).await },
        )
    }

    fn alerts_since<'a>(
        &'a self,
        after: &'a Cursor,
        limit: u32,
    ) -> BoxFuture<'a, Result<super::AlertPage, StoreError>> {
        Box::pin(async move { ingest::alerts_since(&mut *self.pooled(), after, limit).await })
    }

    fn sink_cursor<'a>(
        &'a self,
        sink: &'a str,
    ) -> BoxFuture<'a, Result<Option<FeedCursor>, StoreError>> {
        Box::pin(async move { ingest::sink_cursor(&mut *self.pooled(), sink).await })
    }

    fn put_sink_cursor<'a>(
        &'a self,
        sink: &'a str,
        cursor: &'a FeedCursor,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { ingest::put_sink_cursor(&mut *self.pooled(), sink, cursor).await })
    }

    fn source_checkpoint<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        Box::pin(async move { ingest::source_checkpoint(&mut *self.pooled(), key).await })
    }

    fn put_source_checkpoint<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(
            async move { ingest::put_source_checkpoint(&mut *self.pooled(), key, value).await },
        )
    }
}

impl RetentionStore for SqliteStore {
    fn purge_readings_before<'a>(
        &'a self,
        before_ms: EpochMs,
        kept_by: Option<&'a FeedCursor>,
    ) -> BoxFuture<'a, Result<Purged, StoreError>> {
        Box::pin(async move {
            let mut purged = Purged::default();
            for (table, kind, n) in [
                (
                    "GlucoseReadings",
                    ReadingKind::Glucose,
                    &mut purged.glucose_readings,
                ),
                (
                    "DeviceOperationalData",
                    ReadingKind::Device,
                    &mut purged.device_readings,
                ),
            ] {
                let bound = decode::kept_bound(kept_by, kind);
                // SQLite has no DELETE … LIMIT by default: delete by rowid chunks.
                let sql = format!(
                    "DELETE FROM {table} WHERE rowid IN \
                     (SELECT rowid FROM {table} WHERE TimestampMs < ? \
                     AND (ReceivedAtMs < ? OR (ReceivedAtMs = ? AND ReadingID <= ?)) LIMIT ?)"
                );
                loop {
                    let done = sqlx::query(&sql)
                        .bind(before_ms)
                        .bind(bound.received_at_ms)
                        .bind(bound.received_at_ms)
                        .bind(&bound.id)
                        .bind(decode::PURGE_CHUNK)
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
                    *n += done;
                    if done < u64::from(decode::PURGE_CHUNK) {
                        break;
                    }
                }
            }
            Ok(purged)
        })
    }

    fn purge_diagnostics(
        &self,
        keep_rows: u64,
        before_ms: EpochMs,
    ) -> BoxFuture<'_, Result<PurgedDiagnostics, StoreError>> {
        Box::pin(async move {
            ingest::purge_diagnostics(&mut *self.pooled(), keep_rows, before_ms, None).await
        })
    }
}
impl decode::Columns for sqlx::sqlite::SqliteRow {
    fn text(&self, col: &str) -> Result<String, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn int(&self, col: &str) -> Result<i64, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn opt_int(&self, col: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn float(&self, col: &str) -> Result<f64, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn opt_float(&self, col: &str) -> Result<Option<f64>, StoreError> {
        Ok(self.try_get(col)?)
    }
    fn bytes(&self, col: &str) -> Result<Vec<u8>, StoreError> {
        Ok(self.try_get(col)?)
    }
}

/// Binds engine-neutral arguments to a SQLite statement.
fn bind_sqlite<'q>(
    sql: &'q str,
    args: &'q [Arg<'q>],
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    let mut query = sqlx::query(sql);
    for a in args {
        query = match a {
            Arg::Int(v) => query.bind(*v),
            Arg::Real(v) => query.bind(*v),
            Arg::Text(v) => query.bind(v.as_deref()),
            Arg::Blob(b) => query.bind(b.as_ref()),
        };
    }
    query
}

fn boxed(rows: Vec<sqlx::sqlite::SqliteRow>) -> Vec<Row> {
    rows.into_iter().map(|r| Box::new(r) as Row).collect()
}

/// Statements on the pool.
struct Pooled<'p>(&'p SqlitePool);

impl Sql for Pooled<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }
    fn run<'a>(&'a mut self, q: Q<'a>) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let done = bind_sqlite(&q.sql, &q.args)
                .persistent(!q.transient)
                .execute(self.0)
                .await?;
            Ok(done.rows_affected())
        })
    }
    fn rows<'a>(&'a mut self, q: Q<'a>) -> BoxFuture<'a, Result<Vec<Row>, StoreError>> {
        Box::pin(async move {
            let rows = bind_sqlite(&q.sql, &q.args)
                .persistent(!q.transient)
                .fetch_all(self.0)
                .await?;
            Ok(boxed(rows))
        })
    }
}

struct Tx(sqlx::Transaction<'static, Sqlite>);

impl Sql for Tx {
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }
    fn run<'a>(&'a mut self, q: Q<'a>) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let done = bind_sqlite(&q.sql, &q.args)
                .persistent(!q.transient)
                .execute(&mut *self.0)
                .await?;
            Ok(done.rows_affected())
        })
    }
    fn rows<'a>(&'a mut self, q: Q<'a>) -> BoxFuture<'a, Result<Vec<Row>, StoreError>> {
        Box::pin(async move {
            let rows = bind_sqlite(&q.sql, &q.args)
                .persistent(!q.transient)
                .fetch_all(&mut *self.0)
                .await?;
            Ok(boxed(rows))
        })
    }
}

impl SqlTx for Tx {
    fn commit(self: Box<Self>) -> BoxFuture<'static, Result<(), StoreError>> {
        Box::pin(async move { Ok(self.0.commit().await?) })
    }
}

impl SqlEngine for SqliteStore {
    fn engine_name(&self) -> &'static str {
        "sqlite"
    }
    fn dialect(&self) -> Dialect {
        Dialect::Sqlite
    }
    fn pooled(&self) -> Box<dyn Sql + '_> {
        Box::new(Pooled(&self.pool))
    }
    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn SqlTx>, StoreError>> {
        Box::pin(async move { Ok(Box::new(Tx(self.pool.begin().await?)) as Box<dyn SqlTx>) })
    }
}
