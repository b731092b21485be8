//! The production OLTP store on MySQL / MariaDB (sqlx): a connection pool, the SQLite schema in
//! MySQL's dialect (`migrations/mysql`), and batched multi-row idempotent writes.
//!
//! The connection URL comes from the environment variable the config names (`url_env`, default
//! `GLUCOGUARD_MYSQL_URL`), never from the file: `mysql://user:password@host:3306/database`.
//! TLS is part of the URL, parsed by sqlx: `ssl-mode` = `disabled` | `preferred` (the default:
//! TLS when the server offers it, certificate not checked) | `required` | `verify_ca` |
//! `verify_identity`, with `ssl-ca=/path/ca.pem` for a private CA (otherwise Mozilla's roots)
//! and `ssl-cert` / `ssl-key` for a client certificate.
//!
//! Availability: at start an unreachable server is retried with capped exponential backoff for
//! `startup_timeout_secs`, then start fails naming the host (never the password). While
//! streaming, a query waits at most `acquire_timeout_secs` for a connection; a failed write is
//! an error, which the pipeline retries with backoff, and the pool reconnects once the server is
//! back (every pooled connection is pinged before use).

use super::rows as decode;
use super::sql::{Arg, Dialect, Q, Row, Sql, SqlEngine, SqlTx};
use super::{
    BoxFuture, Cursor, FeedCursor, IngestStore, Migration, Purged, PurgedDiagnostics, Received,
    RetentionStore, StoreError, WriteBatch, WriteOutcome, ingest,
};
use crate::model::{
    Alert, Body, DeviceTelemetry, EpochMs, Glucose, Reading, ReadingKind, RuleFault, now_ms,
};
use serde::{Deserialize, Serialize};
use sqlx::mysql::{
    MySql, MySqlConnectOptions, MySqlConnection, MySqlDatabaseError, MySqlPool, MySqlPoolOptions,
    MySqlRow,
};
use sqlx::query_builder::Separated;
use sqlx::{Connection, Executor, QueryBuilder, Row as _};
use std::str::FromStr;
use std::time::{Duration, Instant};

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "prototype",
        sql: include_str!("../../migrations/mysql/0001_prototype.sql"),
    },
    Migration {
        version: 2,
        name: "platform",
        sql: include_str!("../../migrations/mysql/0002_platform.sql"),
    },
    Migration {
        version: 3,
        name: "received order",
        sql: include_str!("../../migrations/mysql/0003_received_order.sql"),
    },
    Migration {
        version: 4,
        name: "faults and sink cursors",
        sql: include_str!("../../migrations/mysql/0004_faults_and_sink_cursors.sql"),
    },
    Migration {
        version: 5,
        name: "accounts and lifecycle",
        sql: include_str!("../../migrations/mysql/0005_accounts_and_lifecycle.sql"),
    },
    Migration {
        version: 6,
        name: "rule scope",
        sql: include_str!("../../migrations/mysql/0006_rule_scope.sql"),
    },
    Migration {
        version: 7,
        name: "user glucose unit",
        sql: include_str!("../../migrations/mysql/0007_user_glucose_unit.sql"),
    },
];

/// The environment variable that holds the URL unless the config names another.
pub const DEFAULT_URL_ENV: &str = "GLUCOGUARD_MYSQL_URL";

/// Bound values one statement may carry: MySQL's limit (a 16-bit count).
const MAX_PLACEHOLDERS: usize = 65_535;

/// Data one multi-row INSERT may carry, well under `max_allowed_packet` (MariaDB's default is
/// 16 MiB, MySQL 8's 64 MiB): dead letters hold up to 48 KiB each.
const MAX_STATEMENT_BYTES: usize = 4 << 20;

/// Pool and availability options of `[store] kind = "mysql"`. Units are in the names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MySqlOptions {
    /// Environment variable holding the connection URL (credentials never live in the file).
    pub url_env: String,
    /// Most connections the pool opens.
    pub max_connections: u32,
    /// Connections kept open even when idle.
    pub min_connections: u32,
    /// How long a query waits for a pooled connection, including (re)connecting to the server,
    /// before it fails; the pipeline then retries the batch with backoff.
    pub acquire_timeout_secs: u64,
    /// Idle connections are closed after this long; 0 keeps them.
    pub idle_timeout_secs: u64,
    /// Connections are replaced after this long; 0 keeps them.
    pub max_lifetime_secs: u64,
    /// How long start-up keeps retrying a server that does not accept connections; 0 tries once.
    pub startup_timeout_secs: u64,
    /// Cap of the backoff between start-up attempts (it starts at 100 ms and doubles).
    pub startup_backoff_max_ms: u64,
}

impl Default for MySqlOptions {
    fn default() -> Self {
        MySqlOptions {
            url_env: DEFAULT_URL_ENV.to_owned(),
            max_connections: 8,
            min_connections: 0,
            acquire_timeout_secs: 10,
            idle_timeout_secs: 600,
            max_lifetime_secs: 1800,
            startup_timeout_secs: 60,
            startup_backoff_max_ms: 5000,
        }
    }
}

impl MySqlOptions {
    /// What is wrong with these options, one line per problem.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.url_env.trim().is_empty() {
            problems.push("store.url_env must name an environment variable".to_owned());
        }
        if self.max_connections == 0 {
            problems.push("store.max_connections must be at least 1".to_owned());
        }
        if self.min_connections > self.max_connections {
            problems.push("store.min_connections must not exceed store.max_connections".to_owned());
        }
        if self.acquire_timeout_secs == 0 {
            problems.push("store.acquire_timeout_secs must be positive".to_owned());
        }
        if self.startup_backoff_max_ms == 0 {
            problems.push("store.startup_backoff_max_ms must be positive".to_owned());
        }
        problems
    }
}

/// A parsed MySQL URL. It prints without the password, so configs and errors holding it are
/// safe to log.
#[derive(Clone)]
pub struct MySqlUrl {
    options: Box<MySqlConnectOptions>,
    redacted: String,
}

impl MySqlUrl {
    /// Parses `mysql://user:password@host:port/database?ssl-mode=…`. The error never repeats the
    /// URL, which holds the password.
    pub fn parse(url: &str) -> Result<MySqlUrl, String> {
        let options = MySqlConnectOptions::from_str(url).map_err(|e| {
            format!("not a MySQL URL ({e}); expected mysql://user:password@host:3306/database")
        })?;
        let database = options
            .get_database()
            .ok_or("the MySQL URL names no database: mysql://user:password@host:3306/database")?
            .to_owned();
        let endpoint = endpoint(&options);
        let redacted = format!("mysql://{}@{endpoint}/{database}", options.get_username());
        Ok(MySqlUrl {
            options: Box::new(options),
            redacted,
        })
    }

    /// The same server with another database, e.g. for a test's own database.
    pub fn with_database(&self, database: &str) -> MySqlUrl {
        let options = Box::new((*self.options).clone().database(database));
        let redacted = format!(
            "mysql://{}@{}/{database}",
            options.get_username(),
            endpoint(&options)
        );
        MySqlUrl { options, redacted }
    }

    /// `host:port`, or the socket path: where the server is, for messages.
    pub fn endpoint(&self) -> String {
        endpoint(&self.options)
    }

    pub fn connect_options(&self) -> &MySqlConnectOptions {
        &self.options
    }
}

fn endpoint(o: &MySqlConnectOptions) -> String {
    match o.get_socket() {
        Some(socket) => socket.display().to_string(),
        None => format!("{}:{}", o.get_host(), o.get_port()),
    }
}

impl std::fmt::Debug for MySqlUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl std::fmt::Display for MySqlUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

#[derive(Debug, Clone)]
pub struct MySqlStore {
    pool: MySqlPool,
}

impl MySqlStore {
    /// Waits for the server (bounded, see [`MySqlOptions::startup_timeout_secs`]), opens the
    /// pool and applies pending migrations.
    pub async fn open(url: &MySqlUrl, options: &MySqlOptions) -> Result<Self, StoreError> {
        wait_for_server(url, options).await?;
        let secs = |s: u64| (s > 0).then(|| Duration::from_secs(s));
        let pool = MySqlPoolOptions::new()
            .max_connections(options.max_connections)
            .min_connections(options.min_connections)
            .acquire_timeout(Duration::from_secs(options.acquire_timeout_secs))
            .idle_timeout(secs(options.idle_timeout_secs))
            .max_lifetime(secs(options.max_lifetime_secs))
            // A connection that died with the server is found by a ping and replaced.
            .test_before_acquire(true)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    // Strict mode whatever the server's default: a value that does not fit is an
                    // error, never silently truncated.
                    conn.execute(
                        "SET SESSION sql_mode = CONCAT(@@SESSION.sql_mode, ',STRICT_ALL_TABLES')",
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect_with((*url.options).clone())
            .await?;
        let store = MySqlStore { pool };
        store.migrate().await?;
        tracing::info!(url = %url, "mysql store open");
        Ok(store)
    }

    pub fn pool(&self) -> &MySqlPool {
        &self.pool
    }

    /// Applies pending migrations once each. MySQL commits DDL implicitly, so a migration is not
    /// one transaction as in SQLite: its statements are written to be re-runnable (`IF NOT
    /// EXISTS`), and a named lock keeps two hosts starting together from racing.
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        let locked: Option<i64> = sqlx::query_scalar(
            "SELECT GET_LOCK(LEFT(CONCAT('glucoguard.migrate.', DATABASE()), 64), 60)",
        )
        .fetch_one(&mut *conn)
        .await?;
        if locked != Some(1) {
            return Err(StoreError::Unavailable(
                "another host held the migration lock for 60 s".to_owned(),
            ));
        }
        let result = apply_migrations(&mut conn).await;
        let released =
            sqlx::query("SELECT RELEASE_LOCK(LEFT(CONCAT('glucoguard.migrate.', DATABASE()), 64))")
                .execute(&mut *conn)
                .await;
        result?;
        released?;
        Ok(())
    }

    async fn write(&self, b: &WriteBatch) -> Result<WriteOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut outcome = WriteOutcome::default();
        for chunk in b.alerts.chunks(decode::IDS_PER_LOOKUP) {
            let mut q = QueryBuilder::<MySql>::new("SELECT AlertID FROM Alerts WHERE AlertID IN ");
            q.push_tuples(chunk, |mut row, (a, _)| {
                row.push_bind(&a.id);
            });
            let stored: std::collections::HashSet<String> = q
                .build()
                .persistent(false)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|row| text(row, "AlertID"))
                .collect::<Result<_, _>>()?;
            outcome.new_alert_ids.extend(
                chunk
                    .iter()
                    .filter(|(a, _)| !stored.contains(&a.id))
                    .map(|(a, _)| a.id.clone()),
            );
        }
        let glucose: Vec<(&Reading, &Glucose)> = b
            .readings
            .iter()
            .filter_map(|r| match &r.body {
                Body::Glucose(g) => Some((r, g)),
                Body::Device(_) => None,
            })
            .collect();
        insert(
            &mut tx,
            "INSERT INTO GlucoseReadings (ReadingID, PatientID, DeviceID, GlucoseLevel, TimestampMs, Location, ReceivedAtMs) ",
            7,
            &glucose,
            |(r, g)| r.id.len() + text_len(&g.location),
            |row, (r, g)| {
                row.push_bind(&r.id)
                    .push_bind(g.patient_id as i64)
                    .push_bind(g.device_id as i64)
                    .push_bind(g.mg_dl)
                    .push_bind(r.at_ms)
                    .push_bind(g.location.as_deref())
                    .push_bind(b.received_at_ms);
            },
            " ON DUPLICATE KEY UPDATE ReadingID = ReadingID",
        )
        .await?;
        let device: Vec<(&Reading, &DeviceTelemetry)> = b
            .readings
            .iter()
            .filter_map(|r| match &r.body {
                Body::Device(d) => Some((r, d)),
                Body::Glucose(_) => None,
            })
            .collect();
        insert(
            &mut tx,
            "INSERT INTO DeviceOperationalData (ReadingID, DeviceID, TimestampMs, BatteryLevel, FirmwareVersion, ConnectivityStatus, ErrorCodes, ReceivedAtMs) ",
            8,
            &device,
            |(r, d)| {
                r.id.len()
                    + text_len(&d.firmware_version)
                    + d.error_codes.iter().map(|c| c.len() + 1).sum::<usize>()
            },
            |row, (r, d)| {
                row.push_bind(&r.id)
                    .push_bind(d.device_id as i64)
                    .push_bind(r.at_ms)
                    .push_bind(d.battery_pct)
                    .push_bind(d.firmware_version.as_deref())
                    .push_bind(d.connectivity.as_str())
                    .push_bind(d.error_codes.join(","))
                    .push_bind(b.received_at_ms);
            },
            " ON DUPLICATE KEY UPDATE ReadingID = ReadingID",
        )
        .await?;
        insert(
            &mut tx,
            "INSERT INTO Alerts (AlertID, ReadingID, PatientID, DeviceID, Kind, RuleName, RuleVersion, Code, Severity, Message, Value, TimestampMs, CreatedAtMs) ",
            13,
            &b.alerts,
            |(a, _)| {
                a.id.len()
                    + a.reading_id.len()
                    + a.rule.name.len()
                    + a.rule.version.len()
                    + a.code.len()
                    + a.message.len()
            },
            |row, (a, _)| bind_alert(row, a, b.received_at_ms),
            " ON DUPLICATE KEY UPDATE AlertID = AlertID",
        )
        .await?;
        insert(
            &mut tx,
            "INSERT INTO ShadowAlerts (AlertID, ReadingID, PatientID, DeviceID, Kind, RuleName, RuleVersion, Code, Severity, Message, Value, TimestampMs, CreatedAtMs) ",
            13,
            &b.shadow_alerts,
            |a| a.id.len() + a.reading_id.len() + a.rule.name.len() + a.rule.version.len() + a.code.len() + a.message.len(),
            |row, a| bind_alert(row, a, b.received_at_ms),
            " ON DUPLICATE KEY UPDATE AlertID = AlertID",
        )
        .await?;
        // A replay leaves the lifecycle as it is (an acknowledged alert stays acknowledged).
        insert(
            &mut tx,
            "INSERT INTO AlertLifecycle (AlertID, Status, UpdatedAtMs) ",
            3,
            &b.alerts,
            |(a, _)| a.id.len(),
            |row, (a, status)| {
                row.push_bind(&a.id)
                    .push_bind(status.as_str())
                    .push_bind(b.received_at_ms);
            },
            " ON DUPLICATE KEY UPDATE AlertID = AlertID",
        )
        .await?;
        insert(
            &mut tx,
            "INSERT INTO DeadLetters (Fingerprint, Origin, Reason, Payload, ReceivedAtMs) ",
            5,
            &b.dead_letters,
            |d| 32 + d.origin.len() + d.reason.len() + d.payload.len(),
            |row, d| {
                row.push_bind(d.fingerprint())
                    .push_bind(&d.origin)
                    .push_bind(&d.reason)
                    .push_bind(&d.payload)
                    .push_bind(d.received_at_ms);
            },
            " ON DUPLICATE KEY UPDATE Fingerprint = Fingerprint",
        )
        .await?;
        let keyed_faults: Vec<(String, &RuleFault)> = b
            .faults
            .iter()
            .enumerate()
            .map(|(i, f)| (decode::fault_key(f, b.received_at_ms, i), f))
            .collect();
        insert(
            &mut tx,
            "INSERT INTO RuleFaults (FaultKey, RuleName, Version, Kind, Detail, AtMs) ",
            6,
            &keyed_faults,
            |(k, f)| k.len() + f.rule.name.len() + f.rule.version.len() + f.detail.len(),
            |row, (k, f)| {
                row.push_bind(k)
                    .push_bind(&f.rule.name)
                    .push_bind(&f.rule.version)
                    .push_bind(f.kind.as_str())
                    .push_bind(&f.detail)
                    .push_bind(f.at_ms);
            },
            " ON DUPLICATE KEY UPDATE FaultKey = FaultKey",
        )
        .await?;
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

/// Retries connecting with capped exponential backoff until the server accepts a connection or
/// `startup_timeout_secs` ran out. Errors that waiting cannot fix (bad password, unknown
/// database, TLS refused) end it at once.
async fn wait_for_server(url: &MySqlUrl, o: &MySqlOptions) -> Result<(), StoreError> {
    let budget = Duration::from_secs(o.startup_timeout_secs);
    let cap = Duration::from_millis(o.startup_backoff_max_ms.max(1));
    let per_attempt = Duration::from_secs(o.acquire_timeout_secs.max(1));
    let started = Instant::now();
    let mut delay = Duration::from_millis(100).min(cap);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let error = match tokio::time::timeout(
            per_attempt,
            MySqlConnection::connect_with(url.connect_options()),
        )
        .await
        {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
                if attempts > 1 {
                    tracing::info!(url = %url, attempts, "mysql server reachable");
                }
                return Ok(());
            }
            Ok(Err(e)) if !is_transient(&e) => {
                return Err(StoreError::Unavailable(format!(
                    "connecting to MySQL at {} failed: {e}",
                    url.endpoint()
                )));
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} s", per_attempt.as_secs()),
        };
        if started.elapsed() + delay > budget {
            return Err(StoreError::Unavailable(format!(
                "MySQL at {} is unreachable after {attempts} attempt(s) over {:.1} s: {error}. \
                 Is the server running, and does ${} hold the right URL?",
                url.endpoint(),
                started.elapsed().as_secs_f64(),
                o.url_env
            )));
        }
        tracing::warn!(endpoint = %url.endpoint(), attempts, retry_in_ms = delay.as_millis() as u64, %error, "mysql server not reachable yet; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(cap);
    }
}

/// Whether waiting might help: the network, or a server starting, stopping or full.
fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            // Too many connections, shutdown in progress, connection killed.
            .is_some_and(|m| matches!(m.number(), 1040 | 1053 | 1927)),
        _ => false,
    }
}

async fn apply_migrations(conn: &mut MySqlConnection) -> Result<(), StoreError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS _glucoguard_migrations (Version BIGINT NOT NULL PRIMARY KEY, \
         Name VARCHAR(128) NOT NULL, AppliedAtMs BIGINT NOT NULL) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4",
    )
    .execute(&mut *conn)
    .await?;
    let applied: Vec<i64> = sqlx::query_scalar("SELECT Version FROM _glucoguard_migrations")
        .fetch_all(&mut *conn)
        .await?;
    for m in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        // DDL is not transactional in MySQL: a migration interrupted half-way runs again from
        // its first statement. Tables are created `IF NOT EXISTS`; an index that is already
        // there (error 1061, "duplicate key name") or a column (1060, "duplicate column name")
        // counts as added.
        for statement in m.sql.split(";\n").filter(|s| {
            s.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with("--"))
        }) {
            match sqlx::raw_sql(statement).execute(&mut *conn).await {
                Ok(_) => {}
                Err(sqlx::Error::Database(db))
                    if db
                        .try_downcast_ref::<MySqlDatabaseError>()
                        .is_some_and(|e| matches!(e.number(), 1060 | 1061)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        sqlx::query(
            "INSERT INTO _glucoguard_migrations (Version, Name, AppliedAtMs) VALUES (?, ?, ?)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(now_ms())
        .execute(&mut *conn)
        .await?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "mysql migration applied"
        );
    }
    Ok(())
}

fn text_len(s: &Option<String>) -> usize {
    s.as_ref().map_or(0, String::len)
}

/// Splits rows into runs that each fit one INSERT of `columns` values per row: at most
/// [`MAX_PLACEHOLDERS`] bound values and about [`MAX_STATEMENT_BYTES`] of data (a single row
/// larger than that still goes, alone).
fn chunks<T>(rows: &[T], columns: usize, bytes: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let max_rows = (MAX_PLACEHOLDERS / columns.max(1)).max(1);
    let mut out = Vec::new();
    let (mut start, mut size) = (0, 0);
    for (i, row) in rows.iter().enumerate() {
        let b = bytes(row) + 8 * columns;
        if i > start && (i - start == max_rows || size + b > MAX_STATEMENT_BYTES) {
            out.push(&rows[start..i]);
            (start, size) = (i, 0);
        }
        size += b;
    }
    if start < rows.len() {
        out.push(&rows[start..]);
    }
    out
}

/// Writes rows with multi-row INSERTs, chunked by [`chunks`]. `tail` (e.g. `ON DUPLICATE KEY
/// UPDATE k = k`) makes them idempotent; unlike `INSERT IGNORE` it keeps strict mode's errors
/// for values that do not fit instead of truncating them.
async fn insert<'r, T>(
    conn: &mut MySqlConnection,
    head: &'static str,
    columns: usize,
    rows: &'r [T],
    bytes: impl Fn(&T) -> usize,
    mut bind: impl FnMut(&mut Separated<'_, 'r, MySql, &'static str>, &'r T),
    tail: &'static str,
) -> Result<(), StoreError> {
    for chunk in chunks(rows, columns, &bytes) {
        let mut q = QueryBuilder::<MySql>::new(head);
        q.push_values(chunk, |mut row, item| bind(&mut row, item));
        q.push(tail);
        // Not cached: every batch size is another statement text.
        q.build().persistent(false).execute(&mut *conn).await?;
    }
    Ok(())
}

/// A text column as `String`. Id columns use `utf8mb4_bin`, which the server reports with the
/// BINARY flag, and sqlx's checked decode refuses BINARY columns as `String`; the bytes are
/// UTF-8 all the same (the decode still checks that).
fn text(row: &MySqlRow, col: &str) -> Result<String, StoreError> {
    Ok(row.try_get_unchecked(col)?)
}

fn opt_text(row: &MySqlRow, col: &str) -> Result<Option<String>, StoreError> {
    Ok(row.try_get_unchecked(col)?)
}

impl IngestStore for MySqlStore {
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

impl RetentionStore for MySqlStore {
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
                let sql = format!(
                    "DELETE FROM {table} WHERE TimestampMs < ? \
                     AND (ReceivedAtMs < ? OR (ReceivedAtMs = ? AND ReadingID <= ?)) LIMIT ?"
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
            ingest::purge_diagnostics(
                &mut *self.pooled(),
                keep_rows,
                before_ms,
                Some(decode::PURGE_CHUNK),
            )
            .await
        })
    }
}

/// Text columns go through `text`/`opt_text` (the unchecked decode, see [`text`]).
impl decode::Columns for MySqlRow {
    fn text(&self, col: &str) -> Result<String, StoreError> {
        text(self, col)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        opt_text(self, col)
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
        Ok(self.try_get_unchecked(col)?)
    }
}

/// The 13 columns of an `Alerts` or `ShadowAlerts` row.
fn bind_alert<'r>(
    row: &mut Separated<'_, 'r, MySql, &'static str>,
    a: &'r Alert,
    received_at_ms: EpochMs,
) {
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
}

/// Binds engine-neutral arguments to a MySQL statement.
fn bind_mysql<'q>(
    sql: &'q str,
    args: &'q [Arg<'q>],
) -> sqlx::query::Query<'q, MySql, sqlx::mysql::MySqlArguments> {
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

fn boxed(rows: Vec<MySqlRow>) -> Vec<Row> {
    rows.into_iter().map(|r| Box::new(r) as Row).collect()
}

/// Statements on the pool.
struct Pooled<'p>(&'p MySqlPool);

impl Sql for Pooled<'_> {
    fn dialect(&self) -> Dialect {
        Dialect::MySql
    }
    fn run<'a>(&'a mut self, q: Q<'a>) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let done = bind_mysql(&q.sql, &q.args)
                .persistent(!q.transient)
                .execute(self.0)
                .await?;
            Ok(done.rows_affected())
        })
    }
    fn rows<'a>(&'a mut self, q: Q<'a>) -> BoxFuture<'a, Result<Vec<Row>, StoreError>> {
        Box::pin(async move {
            let rows = bind_mysql(&q.sql, &q.args)
                .persistent(!q.transient)
                .fetch_all(self.0)
                .await?;
            Ok(boxed(rows))
        })
    }
}

struct Tx(sqlx::Transaction<'static, MySql>);

impl Sql for Tx {
    fn dialect(&self) -> Dialect {
        Dialect::MySql
    }
    fn run<'a>(&'a mut self, q: Q<'a>) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(async move {
            let done = bind_mysql(&q.sql, &q.args)
                .persistent(!q.transient)
                .execute(&mut *self.0)
                .await?;
            Ok(done.rows_affected())
        })
    }
    fn rows<'a>(&'a mut self, q: Q<'a>) -> BoxFuture<'a, Result<Vec<Row>, StoreError>> {
        Box::pin(async move {
            let rows = bind_mysql(&q.sql, &q.args)
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

impl SqlEngine for MySqlStore {
    fn engine_name(&self) -> &'static str {
        "mysql"
    }
    fn dialect(&self) -> Dialect {
        Dialect::MySql
    }
    fn pooled(&self) -> Box<dyn Sql + '_> {
        Box::new(Pooled(&self.pool))
    }
    fn begin(&self) -> BoxFuture<'_, Result<Box<dyn SqlTx>, StoreError>> {
        Box::pin(async move { Ok(Box::new(Tx(self.pool.begin().await?)) as Box<dyn SqlTx>) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_respect_the_placeholder_limit_and_the_byte_budget() {
        let rows = vec![0usize; 20_000];
        let by_count = chunks(&rows, 13, |_| 0);
        assert!(by_count.iter().all(|c| c.len() * 13 <= MAX_PLACEHOLDERS));
        assert_eq!(by_count.iter().map(|c| c.len()).sum::<usize>(), 20_000);
        assert_eq!(by_count[0].len(), MAX_PLACEHOLDERS / 13);

        let big = vec![64 << 10; 200];
        let by_bytes = chunks(&big, 5, |b| *b);
        assert!(by_bytes.len() > 1);
        assert!(
            by_bytes
                .iter()
                .all(|c| c.iter().map(|b| b + 40).sum::<usize>() <= MAX_STATEMENT_BYTES)
        );
        assert_eq!(by_bytes.iter().map(|c| c.len()).sum::<usize>(), 200);

        let huge = vec![MAX_STATEMENT_BYTES * 2; 3];
        assert_eq!(
            chunks(&huge, 5, |b| *b).len(),
            3,
            "an oversized row goes alone"
        );
        assert!(chunks::<u8>(&[], 3, |_| 0).is_empty());
    }

    #[test]
    fn migrations_match_sqlite_one_for_one() {
        let names = |ms: &[Migration]| ms.iter().map(|m| (m.version, m.name)).collect::<Vec<_>>();
        assert_eq!(names(MIGRATIONS), names(super::super::sqlite::MIGRATIONS));
    }

    #[test]
    fn urls_print_without_the_password() {
        let url = MySqlUrl::parse("mysql://gg:s3cret@db.example:3307/glucoguard?ssl-mode=required")
            .unwrap();
        assert_eq!(url.to_string(), "mysql://gg@db.example:3307/glucoguard");
        assert_eq!(format!("{url:?}"), "mysql://gg@db.example:3307/glucoguard");
        assert_eq!(url.endpoint(), "db.example:3307");
        let err = MySqlUrl::parse("mysql://gg:s3cret@db.example:3307").unwrap_err();
        assert!(
            err.contains("no database") && !err.contains("s3cret"),
            "{err}"
        );
        let err =
            MySqlUrl::parse("mysql://gg:s3cret@db.example:3307/x?ssl-mode=bogus").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_retried_with_backoff_then_named() {
        // A port nothing listens on: bind one, then let it go.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url =
            MySqlUrl::parse(&format!("mysql://gg:s3cret@127.0.0.1:{port}/glucoguard")).unwrap();
        let options = MySqlOptions {
            startup_timeout_secs: 1,
            startup_backoff_max_ms: 200,
            ..MySqlOptions::default()
        };
        let started = Instant::now();
        let err = MySqlStore::open(&url, &options)
            .await
            .unwrap_err()
            .to_string();
        let took = started.elapsed();
        assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
        assert!(!err.contains("s3cret"), "{err}");
        assert!(err.contains("GLUCOGUARD_MYSQL_URL"), "{err}");
        let attempts: u32 = err
            .split("after ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(attempts >= 3, "retried with backoff: {err}");
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_secs(5),
            "bounded by startup_timeout_secs: {took:?}"
        );
    }
}
