//! The store contract and the pipeline on a real MariaDB: `mysql://root@127.0.0.1:3306/test`,
//! or the server `GLUCOGUARD_TEST_MYSQL_URL` names. Each test works in a database of its own,
//! `gg_test_<pid>_<n>`, dropped at its end (and swept by the next test if a panic skipped that).
//!
//! The fault test stops and restarts the shared server, so these tests run one at a time: the
//! nextest group `mariadb` (`.config/nextest.toml`) inside one run, and a lock file across runs
//! (and under plain `cargo test`). When the server is unreachable every test here fails, naming
//! the command that starts it.

use crate::store;
use crate::support::*;
use glucoguard::app;
use glucoguard::config::{Config, RuleConfig, StoreConfig};
use glucoguard::model::ParamValue;
use glucoguard::pipeline::PipelineConfig;
use glucoguard::store::mysql::{MIGRATIONS, MySqlOptions, MySqlStore, MySqlUrl};
use glucoguard::store::prelude::*;
use glucoguard::store::{Store, WriteBatch};
use sqlx::{Connection, MySqlConnection};
use std::future::Future;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const DEFAULT_URL: &str = "mysql://root@127.0.0.1:3306/test";
const START_ARGS: [&str; 5] = [
    "--start",
    "--oknodo",
    "--background",
    "--exec",
    "/usr/sbin/mariadbd",
];
const STOP_ARGS: [&str; 5] = ["--stop", "--exec", "/usr/sbin/mariadbd", "--retry", "30"];

fn start_command() -> String {
    format!("start-stop-daemon {}", START_ARGS.join(" "))
}

fn server_url_text() -> String {
    std::env::var("GLUCOGUARD_TEST_MYSQL_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn server_url() -> MySqlUrl {
    MySqlUrl::parse(&server_url_text()).unwrap_or_else(|e| panic!("GLUCOGUARD_TEST_MYSQL_URL: {e}"))
}

/// Store options for tests: a down server is noticed within a second.
fn test_options() -> MySqlOptions {
    MySqlOptions {
        max_connections: 4,
        acquire_timeout_secs: 1,
        startup_timeout_secs: 10,
        startup_backoff_max_ms: 500,
        ..MySqlOptions::default()
    }
}

/// Held for a test's whole run: one MariaDB test at a time on this machine.
struct Serial(#[allow(dead_code)] std::fs::File);

fn serial() -> Serial {
    let path = std::env::temp_dir().join("glucoguard-mariadb-tests.lock");
    let file = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", path.display()));
    Serial(file)
}

async fn connect_or_fail(url: &MySqlUrl) -> MySqlConnection {
    let outcome = tokio::time::timeout(
        Duration::from_secs(10),
        MySqlConnection::connect_with(url.connect_options()),
    )
    .await;
    match outcome {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => panic!(
            "MariaDB is not reachable at {url}: {e}.\nStart it with: {}\n(or point GLUCOGUARD_TEST_MYSQL_URL at another server)",
            start_command()
        ),
        Err(_) => panic!(
            "MariaDB at {url} did not answer within 10 s.\nStart it with: {}",
            start_command()
        ),
    }
}

/// A fresh database on the test server, for one test.
struct TestDb {
    _serial: Serial,
    server: MySqlUrl,
    url: MySqlUrl,
    name: String,
}

impl TestDb {
    async fn create() -> TestDb {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let serial = serial();
        let server = server_url();
        let mut admin = connect_or_fail(&server).await;
        // Databases left by tests that panicked before their cleanup. The lock is ours, so no
        // other test is using one.
        let stale: Vec<String> = sqlx::query_scalar(
            r"SELECT CAST(SCHEMA_NAME AS CHAR) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'gg\_test\_%'",
        )
        .fetch_all(&mut admin)
        .await
        .unwrap();
        for name in stale {
            sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS `{name}`"))
                .execute(&mut admin)
                .await
                .unwrap();
        }
        let name = format!(
            "gg_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        sqlx::raw_sql(&format!(
            "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        ))
        .execute(&mut admin)
        .await
        .unwrap();
        admin.close().await.ok();
        TestDb {
            _serial: serial,
            url: server.with_database(&name),
            server,
            name,
        }
    }

    async fn store(&self) -> MySqlStore {
        MySqlStore::open(&self.url, &test_options())
            .await
            .unwrap_or_else(|e| panic!("open {}: {e}", self.url))
    }

    async fn drop_database(self) {
        let mut admin = connect_or_fail(&self.server).await;
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS `{}`", self.name))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.ok();
    }
}

/// Runs one suite function of `store.rs` against a fresh database.
async fn on_mariadb<F, Fut>(suite: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()>,
{
    let db = TestDb::create().await;
    suite(Arc::new(db.store().await)).await;
    db.drop_database().await;
}

#[tokio::test]
async fn writes_are_idempotent() {
    on_mariadb(store::writes_are_idempotent).await;
}

#[tokio::test]
async fn recent_readings_cover_the_lookback() {
    on_mariadb(store::recent_readings_cover_the_lookback).await;
}

#[tokio::test]
async fn readings_are_found_by_id_and_new_alerts_reported_once() {
    on_mariadb(store::readings_are_found_by_id_and_new_alerts_reported_once).await;
}

#[tokio::test]
async fn dead_letters_and_rule_faults_are_bounded_by_count_and_age() {
    on_mariadb(store::dead_letters_and_rule_faults_are_bounded_by_count_and_age).await;
}

#[tokio::test]
async fn sink_cursors_round_trip() {
    on_mariadb(store::sink_cursors_round_trip).await;
}

#[tokio::test]
async fn a_retried_batch_stores_its_rule_faults_once() {
    on_mariadb(store::a_retried_batch_stores_its_rule_faults_once).await;
}

#[tokio::test]
async fn rule_versions_are_immutable() {
    on_mariadb(store::rule_versions_are_immutable).await;
}

#[tokio::test]
async fn dimensions_are_upserted_in_one_transaction() {
    on_mariadb(store::dimensions_are_upserted_in_one_transaction).await;
}

#[tokio::test]
async fn large_batches_are_written_whole() {
    on_mariadb(store::large_batches_are_written_whole).await;
}

#[tokio::test]
async fn ids_compare_exactly() {
    on_mariadb(store::ids_compare_exactly).await;
}

#[tokio::test]
async fn pages_since_a_cursor_cover_every_row_once() {
    on_mariadb(store::pages_since_a_cursor_cover_every_row_once).await;
}

#[tokio::test]
async fn retention_purges_only_old_readings() {
    on_mariadb(store::retention_purges_only_old_readings).await;
}

#[tokio::test]
async fn migrations_run_once_even_when_hosts_start_together() {
    let db = TestDb::create().await;
    // Two hosts opening an empty database at once: the migration lock lets one migrate.
    let (a, b) = tokio::join!(db.store(), db.store());
    let batch = WriteBatch {
        readings: vec![glucose("m1", 1, T0, 120.0)],
        received_at_ms: 1,
        ..WriteBatch::default()
    };
    a.write_batch(&batch).await.unwrap();
    drop((a, b));
    let s = db.store().await;
    assert_eq!(s.counts().await.unwrap().glucose_readings, 1);
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _glucoguard_migrations")
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert_eq!(applied as usize, MIGRATIONS.len());
    let tables: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT CAST(TABLE_NAME AS CHAR), CAST(ENGINE AS CHAR), CAST(TABLE_COLLATION AS CHAR) \
         FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME",
    )
    .fetch_all(s.pool())
    .await
    .unwrap();
    let names: Vec<&str> = tables.iter().map(|t| t.0.as_str()).collect();
    for expected in [
        "AlertLifecycle",
        "Alerts",
        "DeadLetters",
        "DeviceOperationalData",
        "DeviceStaticInfo",
        "GlucoseReadings",
        "Manufacturer",
        "Patient",
        "RuleFaults",
        "RuleVersions",
        "Rules",
        "SubscribedPatients",
        "Subscriber",
    ] {
        assert!(names.contains(&expected), "{expected} missing: {names:?}");
    }
    for (name, engine, collation) in &tables {
        assert_eq!(engine, "InnoDB", "{name}");
        assert!(collation.starts_with("utf8mb4"), "{name}: {collation}");
    }
    drop(s);
    db.drop_database().await;
}

#[tokio::test]
async fn ssl_mode_in_the_url_is_honoured() {
    let db = TestDb::create().await;
    let mut admin = connect_or_fail(&db.server).await;
    let have_ssl: Option<(String, String)> = sqlx::query_as(
        "SELECT CAST(VARIABLE_NAME AS CHAR), CAST(VARIABLE_VALUE AS CHAR) \
         FROM information_schema.GLOBAL_VARIABLES WHERE VARIABLE_NAME = 'HAVE_SSL'",
    )
    .fetch_optional(&mut admin)
    .await
    .unwrap();
    admin.close().await.ok();
    let server_tls = have_ssl.is_none_or(|(_, v)| v.eq_ignore_ascii_case("YES"));
    let with_mode = |mode: &str| {
        let raw = server_url_text();
        let sep = if raw.contains('?') { '&' } else { '?' };
        MySqlUrl::parse(&format!("{raw}{sep}ssl-mode={mode}"))
            .unwrap()
            .with_database(&db.name)
    };
    let plain = MySqlStore::open(&with_mode("disabled"), &test_options()).await;
    assert!(plain.is_ok(), "ssl-mode=disabled: {:?}", plain.err());
    let started = Instant::now();
    let required = MySqlStore::open(&with_mode("required"), &test_options()).await;
    if server_tls {
        assert!(required.is_ok(), "server offers TLS: {:?}", required.err());
    } else {
        let err = required.expect_err("ssl-mode=required against a server without TLS");
        let text = err.to_string();
        assert!(text.to_lowercase().contains("tls"), "{text}");
        assert!(text.contains(&db.server.endpoint()), "{text}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "a TLS refusal is not retried"
        );
    }
    drop(plain);
    db.drop_database().await;
}

/// Runs `start-stop-daemon` with `args`, panicking with its output when it fails.
fn daemon(args: &[&str]) {
    let out = Command::new("start-stop-daemon")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run start-stop-daemon (needs root): {e}"));
    assert!(
        out.status.success(),
        "start-stop-daemon {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Restarts MariaDB when dropped armed: a failing fault test never leaves the server down.
struct RestartGuard {
    armed: bool,
}

impl Drop for RestartGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        eprintln!("restarting MariaDB after a failed fault test");
        let _ = Command::new("start-stop-daemon").args(START_ARGS).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline
            && std::net::TcpStream::connect(("127.0.0.1", 3306)).is_err()
        {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Starts MariaDB and waits until it accepts a MySQL connection.
async fn start_mariadb(server: &MySqlUrl) -> Duration {
    tokio::task::spawn_blocking(|| daemon(&START_ARGS))
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(2),
            MySqlConnection::connect_with(server.connect_options()),
        )
        .await;
        if let Ok(Ok(conn)) = attempt {
            conn.close().await.ok();
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "MariaDB did not accept connections within 60 s of `{}`",
            start_command()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for(what: &str, limit: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// MariaDB stops in the middle of a stream and comes back: the source waits (nothing is
/// acknowledged while the database is down), the pipeline retries its write, the pool
/// reconnects, and every reading is stored exactly once with its alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_makes_the_source_wait_and_loses_nothing() {
    const N: usize = 3000;
    const QUEUE: usize = 64;
    const BATCH: usize = 32;
    let db = TestDb::create().await;
    let endpoint = db.server.endpoint();
    assert!(
        endpoint.starts_with("127.") || endpoint.starts_with("localhost:"),
        "the fault test stops and starts the local mariadbd; GLUCOGUARD_TEST_MYSQL_URL points at {endpoint}"
    );
    let config = Config {
        store: StoreConfig::Mysql {
            url: db.url.clone(),
            options: test_options(),
        },
        engine: test_engine_config(),
        pipeline: PipelineConfig {
            max_batch: BATCH,
            max_wait_ms: 2,
            queue_capacity: QUEUE,
            ..PipelineConfig::default()
        },
        sources: vec![],
        rules: vec![RuleConfig {
            path: plugin_path("glucoguard_default_rule"),
            enabled: true,
            // Every reading (200 mg/dL) alerts.
            params: [("high_mg_dl".to_owned(), ParamValue::Float(40.0))].into(),
        }],
        console: false,
        listen: None,
        ..Config::default()
    };
    let app = app::start(&config).await.unwrap();
    let source = app.handle.embedded_source("fault");
    let sent = Arc::new(AtomicU64::new(0));
    let acked = AckCounter::default();
    let producer = {
        let (sent, acked) = (sent.clone(), acked.clone());
        tokio::spawn(async move {
            for i in 0..N {
                let payload = glucose_json(
                    &format!("f{i}"),
                    (i % 10) as u64,
                    T0 + i as i64 * 1000,
                    200.0,
                );
                source
                    .send_with_ack(payload.into_bytes(), acked.ack())
                    .await
                    .unwrap();
                sent.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    wait_for("a third of the stream", Duration::from_secs(60), || {
        acked.count() >= (N / 3) as u64
    })
    .await;

    let mut guard = RestartGuard { armed: true };
    let stopping = Instant::now();
    tokio::task::spawn_blocking(|| daemon(&STOP_ARGS))
        .await
        .unwrap();
    let stop_took = stopping.elapsed();
    let down_since = Instant::now();
    let acked_at_stop = acked.count();
    // Keep the stream coming while the database is down.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (sent_down, acked_down) = (sent.load(Ordering::SeqCst), acked.count());
    assert_eq!(
        acked_down, acked_at_stop,
        "nothing is acknowledged while the database is down"
    );
    assert!(
        sent_down < N as u64 && sent_down - acked_down <= (QUEUE + BATCH + 1) as u64,
        "the source waits: {sent_down} sent, {acked_down} acknowledged"
    );

    let accepting_after = start_mariadb(&db.server).await;
    let down_for = down_since.elapsed();
    guard.armed = false;
    let resumed = Instant::now();
    producer.await.unwrap();
    wait_for(
        "every reading acknowledged",
        Duration::from_secs(120),
        || acked.count() >= N as u64,
    )
    .await;
    let drained_in = resumed.elapsed();
    // Published once the batch that was retrying is written.
    let retries = app.handle.stats().store_retries;
    assert!(
        retries > 0,
        "the pipeline retried its write while the database was down"
    );

    let counts = app.store.counts().await.unwrap();
    assert_eq!(counts.glucose_readings, N as u64, "every reading stored");
    assert_eq!(counts.alerts, N as u64, "one alert per reading");
    let check = db.store().await;
    let (rows, distinct, ours): (i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT ReadingID), COUNT(CASE WHEN ReadingID LIKE 'g:%:f%' THEN 1 END) FROM GlucoseReadings",
    )
    .fetch_one(check.pool())
    .await
    .unwrap();
    assert_eq!(
        (rows, distinct, ours),
        (N as i64, N as i64, N as i64),
        "stored exactly once"
    );
    let (alerts, alerted, lifecycle): (i64, i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COUNT(DISTINCT ReadingID), (SELECT COUNT(*) FROM AlertLifecycle) FROM Alerts",
    )
    .fetch_one(check.pool())
    .await
    .unwrap();
    assert_eq!(
        (alerts, alerted, lifecycle),
        (N as i64, N as i64, N as i64),
        "an alert for every reading, none twice"
    );
    println!(
        "fault test: stream of {N}, stopped after {acked_at_stop} acknowledged; stop took {stop_took:?}; \
         database down {down_for:?} (accepting {accepting_after:?} after the start command); \
         {sent_down} sent / {acked_down} acknowledged while down; {retries} store retries; \
         the rest drained {drained_in:?} after the restart"
    );
    drop(check);
    stop(app).await;
    db.drop_database().await;
}

/// The README's production shape, through the real binary: `glucoguard run` with a config
/// naming MariaDB, DuckDB and the archive on Azure Blob Storage (Azurite); readings over
/// HTTP; then `archive restore` into fresh DuckDB files and `retention apply` on the OLTP
/// store.
#[tokio::test]
async fn run_with_mariadb_duckdb_and_archive_then_restore_and_retention() {
    const N: usize = 60;
    let db = TestDb::create().await;
    let azurite = crate::archive::azurite::Azurite::start("archive");
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("glucoguard.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[store]
kind = "mysql"
url_env = "GG_TEST_RUN_MYSQL_URL"

[analytics]
path = "analytics.duckdb"

[archive]
prefix = "prod"
max_age_secs = 1
[archive.backend]
kind = "azure"
account = "{account}"
container = "archive"
key_env = "GG_TEST_RUN_ARCHIVE_KEY"
endpoint = "{endpoint}"

[pipeline]
max_wait_ms = 5

[[rules]]
path = "{}"

[notify]
console = false

[http]
listen = "127.0.0.1:{port}"
"#,
            plugin_path("glucoguard_default_rule").display(),
            account = crate::archive::azurite::ACCOUNT,
            endpoint = azurite.endpoint(),
        ),
    )
    .unwrap();
    // The test server's root has no password, so the URL prints whole.
    let url = db.url.to_string();
    let token = crate::support::cli_token_with(&config, &[("GG_TEST_RUN_MYSQL_URL", &url)]);
    let mut host = std::process::Command::new(env!("CARGO_BIN_EXE_glucoguard"))
        .args(["run", "--config"])
        .arg(&config)
        .env("GG_TEST_RUN_MYSQL_URL", &url)
        .env("GG_TEST_RUN_ARCHIVE_KEY", crate::archive::azurite::KEY)
        .env("GLUCOGUARD_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A failing assertion must not leave the host running: kill it on the way out.
    let guard = KillOnDrop(Some(host.id()));
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while ureq::get(&format!("{base}/health")).call().is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "glucoguard run did not answer /health within 60 s"
        );
        assert!(host.try_wait().unwrap().is_none(), "glucoguard run exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Readings every 5 min for 5 h, alternately 100 and 200 mg/dL: half of them alert.
    let body: Vec<serde_json::Value> = (0..N)
        .map(|i| {
            serde_json::from_str(&glucose_json(
                &format!("run-{i}"),
                1 + (i % 3) as u64,
                T0 + i as i64 * 5 * MIN,
                if i % 2 == 0 { 100.0 } else { 200.0 },
            ))
            .unwrap()
        })
        .collect();
    let sent = Instant::now();
    let admin = base.clone();
    let ingest_token = token.clone();
    let answer = tokio::task::spawn_blocking(move || {
        ureq::post(&format!("{base}/api/ingest"))
            .header("Content-Type", "application/json")
            .header("Authorization", &crate::support::bearer(&ingest_token))
            .send(serde_json::to_string(&body).unwrap())
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap()
    })
    .await
    .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["accepted"], N, "{answer}");
    // The answer does not wait for the archive's upload (max_age_secs = 1): the store is the
    // log the sinks are fed from.
    let _answered_in = sent.elapsed();
    // Both storage sinks report themselves: soon everything durable, nothing failing.
    let started = Instant::now();
    let sinks: serde_json::Value = loop {
        let admin = admin.clone();
        let token = token.clone();
        let sinks: serde_json::Value = tokio::task::spawn_blocking(move || {
            let text = ureq::get(&format!("{admin}/api/sinks"))
                .header("Authorization", &crate::support::bearer(&token))
                .call()
                .unwrap()
                .body_mut()
                .read_to_string()
                .unwrap();
            serde_json::from_str(&text).unwrap()
        })
        .await
        .unwrap();
        let done =
            sinks.as_array().unwrap().iter().all(|s| {
                s["pending_rows"] == 0 && s["batches_completed"].as_u64().unwrap_or(0) >= 1
            });
        if done {
            break sinks;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the sinks did not catch up: {sinks}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let sinks = sinks.as_array().unwrap();
    let names: Vec<&str> = sinks.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["duckdb", "archive"]);
    for s in sinks {
        assert_eq!(s["pending_rows"], 0, "{s}");
        assert_eq!(s["failures"], 0, "{s}");
        assert!(s["last_error"].is_null(), "{s}");
        assert!(s["batches_completed"].as_u64().unwrap() >= 1, "{s}");
    }
    let status = Command::new("kill")
        .args(["-INT", &host.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || host.wait().unwrap())
        .await
        .unwrap();
    let mut guard = guard;
    guard.0 = None;
    assert!(
        exit.success(),
        "glucoguard run exits cleanly on Ctrl-C: {exit}"
    );

    // Every destination holds the readings once.
    let store = db.store().await;
    let counts = store.counts().await.unwrap();
    assert_eq!(
        (counts.glucose_readings, counts.alerts),
        (N as u64, (N / 2) as u64)
    );
    let analytics =
        glucoguard::analytics::Analytics::open(dir.path().join("analytics.duckdb")).unwrap();
    use glucoguard::analytics::Table;
    assert_eq!(analytics.count(Table::GlucoseReadings).unwrap(), N as u64);
    assert_eq!(analytics.count(Table::Alerts).unwrap(), (N / 2) as u64);
    drop(analytics);
    // (The archive's Parquet contents are compared row by row in `archive.rs`; here the
    // restores below read them back from Azurite.)

    // Restore the first two hours into a fresh DuckDB file: readings 0..24 (5-min steps).
    let glucoguard = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_glucoguard"))
            .args(args)
            .arg("--config")
            .arg(&config)
            .env("GG_TEST_RUN_MYSQL_URL", &url)
            .env("GG_TEST_RUN_ARCHIVE_KEY", crate::archive::azurite::KEY)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "glucoguard {args:?} failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let fresh = dir.path().join("restored.duckdb");
    let from = glucoguard::model::format_ms(T0);
    let to = glucoguard::model::format_ms(T0 + 120 * MIN);
    let out = glucoguard(&[
        "archive",
        "restore",
        "--from",
        &from,
        "--to",
        &to,
        "--duckdb",
        fresh.to_str().unwrap(),
    ]);
    assert!(out.contains("restored 24 glucose readings"), "{out}");
    let restored = glucoguard::analytics::Analytics::open(&fresh).unwrap();
    assert_eq!(restored.count(Table::GlucoseReadings).unwrap(), 24);
    assert_eq!(restored.count(Table::Alerts).unwrap(), 12);
    drop(restored);
    let again = glucoguard(&[
        "archive",
        "restore",
        "--from",
        &from,
        "--to",
        &to,
        "--duckdb",
        fresh.to_str().unwrap(),
    ]);
    assert!(
        again.contains("restored 0 glucose readings"),
        "a second restore adds nothing: {again}"
    );

    // The readings are from 2026-11-18: a retention of one day removes them from MariaDB and
    // keeps the alerts.
    let out = glucoguard(&["retention", "apply", "--older-than-days", "1"]);
    assert!(
        out.contains(&format!("removed {N} glucose readings")),
        "{out}"
    );
    let counts = store.counts().await.unwrap();
    assert_eq!(
        (counts.glucose_readings, counts.alerts),
        (0, (N / 2) as u64)
    );
    db.drop_database().await;
}

/// Sends SIGKILL to a child process when dropped, unless disarmed (`.0 = None`).
struct KillOnDrop(Option<u32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}
