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
use super::{
    AlertStatus, BoxFuture, Counts, Cursor, FeedCursor, Migration, Purged, PurgedDiagnostics,
    Received, RuleState, RuleVersionRecord, Store, StoreError, WriteBatch, WriteOutcome,
};
use crate::model::dims::Dimensions;
use crate::model::{
    Alert, Body, DeadLetter, DeviceTelemetry, EpochMs, Glucose, Reading, ReadingKind, RuleFault,
    RuleInfo, RuleRef, now_ms,
};
use serde::{Deserialize, Serialize};
use sqlx::mysql::{
    MySql, MySqlConnectOptions, MySqlConnection, MySqlDatabaseError, MySqlPool, MySqlPoolOptions,
    MySqlRow,
};
use sqlx::query_builder::Separated;
use sqlx::{Connection, Executor, QueryBuilder, Row};
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
            |row, (a, _)| {
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
            },
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

    async fn upsert_dimensions(&self, d: &Dimensions) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        insert(
            &mut tx,
            "INSERT INTO Patient (PatientID, FirstName, LastName, DateOfBirth, Sex, Email, Phone, Profile, DiabetesType, CreatedAtMs) ",
            10,
            &d.patients,
            |p| {
                p.first_name.len()
                    + p.last_name.len()
                    + text_len(&p.birth_date)
                    + text_len(&p.sex)
                    + text_len(&p.email)
                    + text_len(&p.phone)
                    + text_len(&p.profile)
                    + text_len(&p.diabetes_type)
            },
            |row, p| {
                row.push_bind(p.patient_id as i64)
                    .push_bind(&p.first_name)
                    .push_bind(&p.last_name)
                    .push_bind(&p.birth_date)
                    .push_bind(&p.sex)
                    .push_bind(&p.email)
                    .push_bind(&p.phone)
                    .push_bind(&p.profile)
                    .push_bind(&p.diabetes_type)
                    .push_bind(now);
            },
            " ON DUPLICATE KEY UPDATE FirstName = VALUES(FirstName), LastName = VALUES(LastName), \
             DateOfBirth = VALUES(DateOfBirth), Sex = VALUES(Sex), Email = VALUES(Email), \
             Phone = VALUES(Phone), Profile = VALUES(Profile), DiabetesType = VALUES(DiabetesType)",
        )
        .await?;
        insert(
            &mut tx,
            "INSERT INTO Manufacturer (ManufacturerID, Name, Country) ",
            3,
            &d.manufacturers,
            |m| m.name.len() + text_len(&m.country),
            |row, m| {
                row.push_bind(m.manufacturer_id as i64)
                    .push_bind(&m.name)
                    .push_bind(&m.country);
            },
            " ON DUPLICATE KEY UPDATE Name = VALUES(Name), Country = VALUES(Country)",
        )
        .await?;
        insert(
            &mut tx,
            "INSERT INTO DeviceStaticInfo (DeviceID, ManufacturerID, PatientID, Model, SerialNumber, DeviceType, FirmwareVersion) ",
            7,
            &d.devices,
            |dev| 64 + dev.serial_number.len() + text_len(&dev.firmware_version),
            |row, dev| {
                let model = d.device_models.iter().find(|m| m.model_id == dev.model_id);
                row.push_bind(dev.device_id as i64)
                    .push_bind(model.map(|m| m.manufacturer_id as i64))
                    .push_bind(dev.patient_id as i64)
                    .push_bind(model.map(|m| m.name.as_str()))
                    .push_bind(&dev.serial_number)
                    .push_bind(model.map(|m| m.kind.as_str()))
                    .push_bind(&dev.firmware_version);
            },
            " ON DUPLICATE KEY UPDATE ManufacturerID = VALUES(ManufacturerID), PatientID = VALUES(PatientID), \
             Model = VALUES(Model), SerialNumber = VALUES(SerialNumber), DeviceType = VALUES(DeviceType), \
             FirmwareVersion = VALUES(FirmwareVersion)",
        )
        .await?;
        insert(
            &mut tx,
            "INSERT INTO Subscriber (SubscriberID, Name, Role, TelegramChatID, Email) ",
            5,
            &d.subscribers,
            |s| s.name.len() + s.role.len() + text_len(&s.email),
            |row, s| {
                row.push_bind(s.subscriber_id as i64)
                    .push_bind(&s.name)
                    .push_bind(&s.role)
                    .push_bind(s.telegram_chat_id)
                    .push_bind(&s.email);
            },
            " ON DUPLICATE KEY UPDATE Name = VALUES(Name), Role = VALUES(Role), \
             TelegramChatID = VALUES(TelegramChatID), Email = VALUES(Email)",
        )
        .await?;
        insert(
            &mut tx,
            "INSERT INTO SubscribedPatients (SubscriberID, PatientID) ",
            2,
            &d.subscriptions,
            |_| 0,
            |row, s| {
                row.push_bind(s.subscriber_id as i64)
                    .push_bind(s.patient_id as i64);
            },
            " ON DUPLICATE KEY UPDATE SubscriberID = SubscriberID",
        )
        .await?;
        tx.commit().await?;
        Ok(())
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

fn u64_col(row: &MySqlRow, col: &str) -> Result<u64, StoreError> {
    let v: i64 = row.try_get(col)?;
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{col} = {v}")))
}

fn corrupt(e: serde_json::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

impl Store for MySqlStore {
    fn kind(&self) -> &'static str {
        "mysql"
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
                "SELECT MAX(t) FROM (SELECT MAX(TimestampMs) AS t FROM GlucoseReadings WHERE TimestampMs <= ? \
                 UNION ALL SELECT MAX(TimestampMs) FROM DeviceOperationalData WHERE TimestampMs <= ?) AS newest",
            )
            .bind(not_after_ms)
            .bind(not_after_ms)
            .fetch_one(&self.pool)
            .await?;
            let Some(newest) = newest else {
                return Ok(Vec::new());
            };
            let since = newest - lookback_ms;
            let mut out = Vec::new();
            for row in sqlx::query(
                "SELECT ReadingID, PatientID, DeviceID, GlucoseLevel, TimestampMs, Location \
                 FROM GlucoseReadings WHERE TimestampMs > ? AND TimestampMs <= ? ORDER BY TimestampMs",
            )
            .bind(since)
            .bind(newest)
            .fetch_all(&self.pool)
            .await?
            {
                out.push(decode::glucose_reading(&row)?);
            }
            for row in sqlx::query(
                "SELECT ReadingID, DeviceID, TimestampMs, BatteryLevel, FirmwareVersion, ConnectivityStatus, ErrorCodes \
                 FROM DeviceOperationalData WHERE TimestampMs > ? AND TimestampMs <= ? ORDER BY TimestampMs",
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
                for (head, glucose) in [
                    (
                        "SELECT ReadingID, PatientID, DeviceID, GlucoseLevel, TimestampMs, Location \
                         FROM GlucoseReadings WHERE ReadingID IN ",
                        true,
                    ),
                    (
                        "SELECT ReadingID, DeviceID, TimestampMs, BatteryLevel, FirmwareVersion, \
                         ConnectivityStatus, ErrorCodes FROM DeviceOperationalData WHERE ReadingID IN ",
                        false,
                    ),
                ] {
                    let mut q = QueryBuilder::<MySql>::new(head);
                    q.push_tuples(chunk, |mut row, id| {
                        row.push_bind(*id);
                    });
                    for row in q.build().persistent(false).fetch_all(&self.pool).await? {
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
            let stored_sha = || {
                sqlx::query("SELECT Sha256 FROM RuleVersions WHERE RuleName = ? AND Version = ?")
                    .bind(&info.name)
                    .bind(&info.version)
                    .fetch_optional(&self.pool)
            };
            let mut existing = stored_sha()
                .await?
                .map(|r| text(&r, "Sha256"))
                .transpose()?;
            if existing.is_none() {
                let info_json = serde_json::to_string(info).map_err(corrupt)?;
                // Two hosts may upload at once: the loser's insert is a no-op, and the check
                // below compares against whichever bytes won.
                sqlx::query(
                    "INSERT INTO RuleVersions (RuleName, Version, Sha256, Wasm, Info, UploadedAtMs) \
                     VALUES (?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE RuleName = RuleName",
                )
                .bind(&info.name)
                .bind(&info.version)
                .bind(sha256)
                .bind(wasm)
                .bind(info_json)
                .bind(now_ms())
                .execute(&self.pool)
                .await?;
                existing = stored_sha()
                    .await?
                    .map(|r| text(&r, "Sha256"))
                    .transpose()?;
            }
            match existing {
                Some(s) if s == sha256 => Ok(()),
                Some(_) => Err(StoreError::Conflict(format!(
                    "{}@{} is already stored with different bytes; released versions are immutable, bump the version",
                    info.name, info.version
                ))),
                None => Err(StoreError::NotFound(format!(
                    "rule version {}@{} vanished while being stored",
                    info.name, info.version
                ))),
            }
        })
    }

    fn rule_versions(&self) -> BoxFuture<'_, Result<Vec<RuleVersionRecord>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT Info, Sha256, QuarantineReason, UploadedAtMs FROM RuleVersions \
                 ORDER BY RuleName, UploadedAtMs, Seq",
            )
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(RuleVersionRecord {
                        info: serde_json::from_str(&text(row, "Info")?).map_err(corrupt)?,
                        sha256: text(row, "Sha256")?,
                        quarantine_reason: opt_text(row, "QuarantineReason")?,
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
            let params = serde_json::to_string(&s.params).map_err(corrupt)?;
            sqlx::query(
                "INSERT INTO Rules (RuleName, ActiveVersion, Enabled, Params, UpdatedAtMs) VALUES (?, ?, ?, ?, ?) \
                 ON DUPLICATE KEY UPDATE ActiveVersion = VALUES(ActiveVersion), Enabled = VALUES(Enabled), \
                 Params = VALUES(Params), UpdatedAtMs = VALUES(UpdatedAtMs)",
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
            let rows = sqlx::query(
                "SELECT RuleName, ActiveVersion, Enabled, Params, UpdatedAtMs FROM Rules ORDER BY RuleName",
            )
            .fetch_all(&self.pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(RuleState {
                        name: text(row, "RuleName")?,
                        active_version: text(row, "ActiveVersion")?,
                        enabled: row.try_get("Enabled")?,
                        params: serde_json::from_str(&text(row, "Params")?).map_err(corrupt)?,
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
        Box::pin(self.upsert_dimensions(d))
    }

    fn dead_letters(&self, limit: u32) -> BoxFuture<'_, Result<Vec<DeadLetter>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT Origin, Reason, Payload, ReceivedAtMs FROM DeadLetters \
                 ORDER BY ReceivedAtMs DESC, Seq DESC LIMIT ?",
            )
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(decode::dead_letter).collect()
        })
    }

    fn alerts(&self, limit: u32) -> BoxFuture<'_, Result<Vec<(Alert, AlertStatus)>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT a.AlertID, a.ReadingID, a.PatientID, a.DeviceID, a.Kind, a.RuleName, a.RuleVersion, \
                 a.Code, a.Severity, a.Message, a.Value, a.TimestampMs, l.Status \
                 FROM Alerts a JOIN AlertLifecycle l ON l.AlertID = a.AlertID \
                 ORDER BY a.CreatedAtMs DESC, a.Seq DESC LIMIT ?",
            )
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(decode::alert_with_status).collect()
        })
    }

    fn rule_faults(&self, limit: u32) -> BoxFuture<'_, Result<Vec<RuleFault>, StoreError>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT RuleName, Version, Kind, Detail, AtMs FROM RuleFaults ORDER BY FaultID DESC LIMIT ?",
            )
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
            let mut purged = PurgedDiagnostics::default();
            for (table, time) in decode::DIAGNOSTICS {
                // The time of the row just past the newest `keep_rows`: it and older go.
                let past: Option<i64> =
                    sqlx::query_scalar(&decode::diagnostics_cut_sql(table, time))
                        .bind(i64::try_from(keep_rows).unwrap_or(i64::MAX))
                        .fetch_optional(&self.pool)
                        .await?;
                let cut = decode::diagnostics_cut(past, before_ms);
                let sql = format!("DELETE FROM {table} WHERE {time} < ? LIMIT ?");
                let mut n = 0;
                loop {
                    let done = sqlx::query(&sql)
                        .bind(cut)
                        .bind(decode::PURGE_CHUNK)
                        .execute(&self.pool)
                        .await?
                        .rows_affected();
                    n += done;
                    if done < u64::from(decode::PURGE_CHUNK) {
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
                 ON DUPLICATE KEY UPDATE CursorJson = VALUES(CursorJson), UpdatedAtMs = VALUES(UpdatedAtMs)",
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
