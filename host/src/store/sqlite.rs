//! The embedded OLTP store on SQLite (sqlx): one file, WAL mode, batched idempotent writes.

use super::rows as decode;
use super::{
    AlertStatus, BoxFuture, Counts, Cursor, FeedCursor, Migration, Purged, PurgedDiagnostics,
    Received, RuleState, RuleVersionRecord, Store, StoreError, WriteBatch, WriteOutcome,
};
use crate::model::dims::Dimensions;
use crate::model::{
    Alert, Body, DeadLetter, DeviceTelemetry, EpochMs, Glucose, Reading, ReadingKind, RuleFault,
    RuleInfo, RuleRef, now_ms,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};
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
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT OR IGNORE INTO Alerts (AlertID, ReadingID, PatientID, DeviceID, Kind, RuleName, RuleVersion, Code, Severity, Message, Value, TimestampMs, CreatedAtMs) ",
            );
            q.push_values(chunk, |mut row, (a, _)| {
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
                    .push_bind(b.received_at_ms);
            });
            q.build().execute(&mut *tx).await?;
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

fn u64_col(row: &sqlx::sqlite::SqliteRow, col: &str) -> Result<u64, StoreError> {
    let v: i64 = row.try_get(col)?;
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col} = {v}")))
}

impl Store for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

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
            let newest: Option<i64> = sqlx::query_scalar(
                "SELECT MAX(t) FROM (SELECT MAX(TimestampMs) AS t FROM GlucoseReadings WHERE TimestampMs <= ?1 \
                 UNION ALL SELECT MAX(TimestampMs) FROM DeviceOperationalData WHERE TimestampMs <= ?1)",
            )
            .bind(not_after_ms)
            .fetch_one(&self.pool)
            .await?;
            let Some(newest) = newest else {
                return Ok(Vec::new());
            };
            let since = newest - lookback_ms;
            let mut out = Vec::new();
            for row in sqlx::query(
                "SELECT * FROM GlucoseReadings WHERE TimestampMs > ? AND TimestampMs <= ? ORDER BY TimestampMs",
            )
            .bind(since)
            .bind(newest)
            .fetch_all(&self.pool)
            .await?
            {
                out.push(decode::glucose_reading(&row)?);
            }
            for row in sqlx::query(
                "SELECT * FROM DeviceOperationalData WHERE TimestampMs > ? AND TimestampMs <= ? ORDER BY TimestampMs",
            )
            .bind(since)
            .bind(newest)
            .fetch_all(&self.pool)
            .await?
            {
                out.push(decode::device_reading(&row)?);
            }
            out.sort_by_key(|r| r.at_ms);
            Ok(out)
        })
    }

    fn readings_by_id<'a>(
        &'a self,
        ids: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<Reading>, StoreError>> {
        Box::pin(async move {
            let mut out = Vec::new();
            for chunk in ids.chunks(decode::IDS_PER_LOOKUP) {
                for (table, glucose) in
                    [("GlucoseReadings", true), ("DeviceOperationalData", false)]
                {
                    let mut q = QueryBuilder::<Sqlite>::new(format!(
                        "SELECT * FROM {table} WHERE ReadingID IN "
                    ));
                    q.push_tuples(chunk, |mut row, id| {
                        row.push_bind(*id);
                    });
                    for row in q.build().fetch_all(&self.pool).await? {
                        out.push(if glucose {
                            decode::glucose_reading(&row)?
                        } else {
                            decode::device_reading(&row)?
                        });
                    }
                }
            }
            Ok(out)
        })
    }

    fn notified_alerts_since(
        &self,
        since_ms: EpochMs,
    ) -> BoxFuture<'_, Result<Vec<Alert>, StoreError>> {
        Box::pin(async move {
            sqlx::query(decode::NOTIFIED_ALERTS_SINCE)
                .bind(since_ms)
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|row| decode::alert_with_status(row).map(|(a, _)| a))
                .collect()
        })
    }

    fn put_rule_version<'a>(
        &'a self,
        info: &'a RuleInfo,
        sha256: &'a str,
        wasm: &'a [u8],
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let existing: Option<String> = sqlx::query_scalar(
                "SELECT Sha256 FROM RuleVersions WHERE RuleName = ? AND Version = ?",
            )
            .bind(&info.name)
            .bind(&info.version)
            .fetch_optional(&self.pool)
            .await?;
            match existing {
                Some(s) if s == sha256 => Ok(()),
                Some(_) => Err(StoreError::Conflict(format!(
                    "{}@{} is already stored with different bytes; released versions are immutable, bump the version",
                    info.name, info.version
                ))),
                None => {
                    let info_json = serde_json::to_string(info)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    sqlx::query("INSERT INTO RuleVersions (RuleName, Version, Sha256, Wasm, Info, UploadedAtMs) VALUES (?, ?, ?, ?, ?, ?)")
                        .bind(&info.name)
                        .bind(&info.version)
                        .bind(sha256)
                        .bind(wasm)
                        .bind(info_json)
                        .bind(now_ms())
                        .execute(&self.pool)
                        .await?;
                    Ok(())
                }
            }
        })
    }

    fn rule_versions(&self) -> BoxFuture<'_, Result<Vec<RuleVersionRecord>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT Info, Sha256, Status, QuarantineReason, UploadedAtMs FROM RuleVersions ORDER BY RuleName, UploadedAtMs, rowid",
            )
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    let info: String = row.try_get("Info")?;
                    Ok(RuleVersionRecord {
                        info: serde_json::from_str(&info)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                        sha256: row.try_get("Sha256")?,
                        quarantine_reason: row.try_get("QuarantineReason")?,
                        uploaded_at_ms: row.try_get("UploadedAtMs")?,
                    })
                })
                .collect()
        })
    }

    fn rule_wasm<'a>(&'a self, rule: &'a RuleRef) -> BoxFuture<'a, Result<Vec<u8>, StoreError>> {
        Box::pin(async move {
            sqlx::query_scalar("SELECT Wasm FROM RuleVersions WHERE RuleName = ? AND Version = ?")
                .bind(&rule.name)
                .bind(&rule.version)
                .fetch_optional(&self.pool)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("rule version {rule}")))
        })
    }

    fn put_rule_state<'a>(&'a self, s: &'a RuleState) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let params =
                serde_json::to_string(&s.params).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            sqlx::query(
                "INSERT INTO Rules (RuleName, ActiveVersion, Enabled, Params, UpdatedAtMs) VALUES (?, ?, ?, ?, ?) \
                 ON CONFLICT (RuleName) DO UPDATE SET ActiveVersion = excluded.ActiveVersion, Enabled = excluded.Enabled, \
                 Params = excluded.Params, UpdatedAtMs = excluded.UpdatedAtMs",
            )
            .bind(&s.name)
            .bind(&s.active_version)
            .bind(s.enabled)
            .bind(params)
            .bind(s.updated_at_ms)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn rule_states(&self) -> BoxFuture<'_, Result<Vec<RuleState>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT RuleName, ActiveVersion, Enabled, Params, UpdatedAtMs FROM Rules ORDER BY RuleName")
                .fetch_all(&self.pool)
                .await?;
            rows.iter()
                .map(|row| {
                    let params: String = row.try_get("Params")?;
                    Ok(RuleState {
                        name: row.try_get("RuleName")?,
                        active_version: row.try_get("ActiveVersion")?,
                        enabled: row.try_get("Enabled")?,
                        params: serde_json::from_str(&params)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                        updated_at_ms: row.try_get("UpdatedAtMs")?,
                    })
                })
                .collect()
        })
    }

    fn release_quarantine<'a>(
        &'a self,
        rule: &'a RuleRef,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query("UPDATE RuleVersions SET Status = 'ok', QuarantineReason = NULL WHERE RuleName = ? AND Version = ?")
                .bind(&rule.name)
                .bind(&rule.version)
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn counts(&self) -> BoxFuture<'_, Result<Counts, StoreError>> {
        Box::pin(async move {
            let row = sqlx::query(
                "SELECT (SELECT COUNT(*) FROM Patient) AS p, (SELECT COUNT(*) FROM DeviceStaticInfo) AS dev, \
                 (SELECT COUNT(*) FROM Subscriber) AS s, (SELECT COUNT(*) FROM SubscribedPatients) AS sp, \
                 (SELECT COUNT(*) FROM GlucoseReadings) AS g, (SELECT COUNT(*) FROM DeviceOperationalData) AS d, \
                 (SELECT COUNT(*) FROM Alerts) AS a, (SELECT COUNT(*) FROM DeadLetters) AS dl, (SELECT COUNT(*) FROM RuleFaults) AS f",
            )
            .fetch_one(&self.pool)
            .await?;
            Ok(Counts {
                patients: u64_col(&row, "p")?,
                devices: u64_col(&row, "dev")?,
                subscribers: u64_col(&row, "s")?,
                subscriptions: u64_col(&row, "sp")?,
                glucose_readings: u64_col(&row, "g")?,
                device_readings: u64_col(&row, "d")?,
                alerts: u64_col(&row, "a")?,
                dead_letters: u64_col(&row, "dl")?,
                rule_faults: u64_col(&row, "f")?,
            })
        })
    }

    fn put_dimensions<'a>(&'a self, d: &'a Dimensions) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let now = now_ms();
            let mut tx = self.pool.begin().await?;
            for p in &d.patients {
                sqlx::query(
                    "INSERT INTO Patient (PatientID, FirstName, LastName, DateOfBirth, Sex, Email, Phone, Profile, DiabetesType, CreatedAtMs) \
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (PatientID) DO UPDATE SET FirstName = excluded.FirstName, \
                     LastName = excluded.LastName, DateOfBirth = excluded.DateOfBirth, Sex = excluded.Sex, Email = excluded.Email, \
                     Phone = excluded.Phone, Profile = excluded.Profile, DiabetesType = excluded.DiabetesType",
                )
                .bind(p.patient_id as i64)
                .bind(&p.first_name)
                .bind(&p.last_name)
                .bind(&p.birth_date)
                .bind(&p.sex)
                .bind(&p.email)
                .bind(&p.phone)
                .bind(&p.profile)
                .bind(&p.diabetes_type)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            for m in &d.manufacturers {
                sqlx::query(
                    "INSERT INTO Manufacturer (ManufacturerID, Name, Country) VALUES (?, ?, ?) \
                     ON CONFLICT (ManufacturerID) DO UPDATE SET Name = excluded.Name, Country = excluded.Country",
                )
                .bind(m.manufacturer_id as i64)
                .bind(&m.name)
                .bind(&m.country)
                .execute(&mut *tx)
                .await?;
            }
            for dev in &d.devices {
                let model = d.device_models.iter().find(|m| m.model_id == dev.model_id);
                sqlx::query(
                    "INSERT INTO DeviceStaticInfo (DeviceID, ManufacturerID, PatientID, Model, SerialNumber, DeviceType, FirmwareVersion) \
                     VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (DeviceID) DO UPDATE SET ManufacturerID = excluded.ManufacturerID, \
                     PatientID = excluded.PatientID, Model = excluded.Model, SerialNumber = excluded.SerialNumber, \
                     DeviceType = excluded.DeviceType, FirmwareVersion = excluded.FirmwareVersion",
                )
                .bind(dev.device_id as i64)
                .bind(model.map(|m| m.manufacturer_id as i64))
                .bind(dev.patient_id as i64)
                .bind(model.map(|m| m.name.as_str()))
                .bind(&dev.serial_number)
                .bind(model.map(|m| m.kind.as_str()))
                .bind(&dev.firmware_version)
                .execute(&mut *tx)
                .await?;
            }
            for s in &d.subscribers {
                sqlx::query(
                    "INSERT INTO Subscriber (SubscriberID, Name, Role, TelegramChatID, Email) VALUES (?, ?, ?, ?, ?) \
                     ON CONFLICT (SubscriberID) DO UPDATE SET Name = excluded.Name, Role = excluded.Role, \
                     TelegramChatID = excluded.TelegramChatID, Email = excluded.Email",
                )
                .bind(s.subscriber_id as i64)
                .bind(&s.name)
                .bind(&s.role)
                .bind(s.telegram_chat_id)
                .bind(&s.email)
                .execute(&mut *tx)
                .await?;
            }
            for s in &d.subscriptions {
                sqlx::query("INSERT OR IGNORE INTO SubscribedPatients (SubscriberID, PatientID) VALUES (?, ?)")
                    .bind(s.subscriber_id as i64)
                    .bind(s.patient_id as i64)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn dead_letters(&self, limit: u32) -> BoxFuture<'_, Result<Vec<DeadLetter>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT Origin, Reason, Payload, ReceivedAtMs FROM DeadLetters ORDER BY ReceivedAtMs DESC, rowid DESC LIMIT ?")
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(decode::dead_letter).collect()
        })
    }

    fn alerts(&self, limit: u32) -> BoxFuture<'_, Result<Vec<(Alert, AlertStatus)>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT a.*, l.Status FROM Alerts a JOIN AlertLifecycle l ON l.AlertID = a.AlertID \
                 ORDER BY a.CreatedAtMs DESC, a.rowid DESC LIMIT ?",
            )
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(decode::alert_with_status).collect()
        })
    }

    fn rule_faults(&self, limit: u32) -> BoxFuture<'_, Result<Vec<RuleFault>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT * FROM RuleFaults ORDER BY FaultID DESC LIMIT ?")
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(decode::rule_fault).collect()
        })
    }

    fn readings_since<'a>(
        &'a self,
        kind: ReadingKind,
        after: &'a Cursor,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<Received<Reading>>, StoreError>> {
        Box::pin(async move {
            let sql = match kind {
                ReadingKind::Glucose => decode::GLUCOSE_SINCE,
                ReadingKind::Device => decode::DEVICE_SINCE,
            };
            let rows = sqlx::query(sql)
                .bind(after.received_at_ms)
                .bind(after.received_at_ms)
                .bind(&after.id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
            rows.iter()
                .map(|r| decode::received_reading(r, kind))
                .collect()
        })
    }

    fn alerts_since<'a>(
        &'a self,
        after: &'a Cursor,
        limit: u32,
    ) -> BoxFuture<'a, Result<super::AlertPage, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(decode::ALERTS_SINCE)
                .bind(after.received_at_ms)
                .bind(after.received_at_ms)
                .bind(&after.id)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
            rows.iter().map(decode::received_alert).collect()
        })
    }

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
            let mut purged = PurgedDiagnostics::default();
            for (table, time) in decode::DIAGNOSTICS {
                // The time of the row just past the newest `keep_rows`: it and older go.
                let past: Option<i64> =
                    sqlx::query_scalar(&decode::diagnostics_cut_sql(table, time))
                        .bind(i64::try_from(keep_rows).unwrap_or(i64::MAX))
                        .fetch_optional(&self.pool)
                        .await?;
                let cut = decode::diagnostics_cut(past, before_ms);
                let sql = format!("DELETE FROM {table} WHERE {time} < ?");
                let n = sqlx::query(&sql)
                    .bind(cut)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                if table == "DeadLetters" {
                    purged.dead_letters = n;
                } else {
                    purged.rule_faults = n;
                }
            }
            Ok(purged)
        })
    }

    fn sink_cursor<'a>(
        &'a self,
        sink: &'a str,
    ) -> BoxFuture<'a, Result<Option<FeedCursor>, StoreError>> {
        Box::pin(async move {
            decode::decode_cursor(
                sqlx::query_scalar(decode::SINK_CURSOR_SELECT)
                    .bind(sink)
                    .fetch_optional(&self.pool)
                    .await?,
            )
        })
    }

    fn put_sink_cursor<'a>(
        &'a self,
        sink: &'a str,
        cursor: &'a FeedCursor,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let json = decode::encode_cursor(cursor);
            sqlx::query(
                "INSERT INTO SinkCursors (Sink, CursorJson, UpdatedAtMs) VALUES (?, ?, ?) \
                 ON CONFLICT (Sink) DO UPDATE SET CursorJson = excluded.CursorJson, UpdatedAtMs = excluded.UpdatedAtMs",
            )
            .bind(sink)
            .bind(json)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
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
}
