//! Storage benchmark, four parts:
//!
//! 1. Sustained readings/s into each durable destination at batch sizes 1, 100 and 1000: the
//!    SQLite store (the baseline of each batch size), the MariaDB store, the DuckDB analytics
//!    sink, and the Parquet archive on a local folder and on Azurite. A run at one batch size
//!    writes simulated readings (glucose and device telemetry) batch after batch for a few
//!    seconds and stops the clock when every batch is durable there (for the archive: when
//!    the last file is uploaded).
//! 2. The dashboard's analytics queries on 10 M glucose readings in DuckDB, against a full
//!    scan (`count(*)`, `avg`) of the same table as the baseline.
//! 3. The measurement behind the analytics sink's dedupe strategy, at 10 M rows.
//! 4. The measurement behind staging small batches together (the archive's rolls, the
//!    analytics sink's group commit), each against staging them one by one.
//!
//! `cargo bench -p glucoguard --bench sinks -- queries` (or `sinks`, `dedupe`, `staging`)
//! runs one part.
//!
//! `cargo xtask bench` (or `cargo bench -p glucoguard --bench sinks`). Needs MariaDB on
//! 127.0.0.1:3306 (or `GLUCOGUARD_TEST_MYSQL_URL`) and Azurite from `npm ci`.
//! `GLUCOGUARD_BENCH_SECS` sets the seconds per run (default 3); `GLUCOGUARD_BENCH_READINGS`
//! the analytics size (default 10 000 000).

#[path = "../tests/it/archive/azurite.rs"]
#[allow(dead_code)] // the tests' harness; the bench does not restart Azurite
mod azurite;

use glucoguard::analytics::{Analytics, AnalyticsSink};
use glucoguard::archive::{ArchiveConfig, ArchiveSink, AzureBackend, Backend};
use glucoguard::model::Reading;
use glucoguard::model::batch::WriteBatch;
use glucoguard::sinks::{Durable, StorageSink};
use glucoguard::store::Store;
use glucoguard::store::mysql::{MySqlOptions, MySqlStore, MySqlUrl};
use glucoguard::store::sqlite::SqliteStore;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const BATCH_SIZES: [usize; 3] = [1, 100, 1000];
const DAY_MS: i64 = 86_400_000;
/// Where the bench hands Azurite's public development key to the archive, as production
/// hands a real key.
const AZURITE_KEY_ENV: &str = "GG_BENCH_AZURITE_KEY";

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Simulated readings: the five profiles round-robin, CGM cadence, with telemetry.
fn readings(patients: usize, days: i64, telemetry: bool) -> impl Iterator<Item = Reading> {
    glucoguard_simulator::Simulator::new(glucoguard_simulator::SimConfig {
        seed: 77,
        patients,
        duration: chrono::Duration::days(days),
        telemetry,
        ..glucoguard_simulator::SimConfig::default()
    })
    .map(|e| glucoguard::model::parse::parse_reading(e.to_json_line().as_bytes()).unwrap())
}

fn batches(pool: &[Reading], size: usize) -> impl Iterator<Item = WriteBatch> + '_ {
    pool.chunks(size).enumerate().map(|(i, c)| WriteBatch {
        readings: c.to_vec(),
        received_at_ms: 1_800_000_000_000 + i as i64,
        ..WriteBatch::default()
    })
}

/// Where a run writes.
enum Target {
    Store(Arc<dyn Store>),
    Sink(Arc<dyn StorageSink>),
}

/// Writes batches of `size` for about `secs` seconds; readings per second until durable.
async fn sustained(target: &Target, pool: &[Reading], size: usize, secs: f64) -> (u64, f64) {
    let durable = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let (mut written, mut batches_sent) = (0u64, 0u64);
    for batch in batches(pool, size) {
        match target {
            Target::Store(s) => {
                s.write_batch(&batch).await.unwrap();
                durable.fetch_add(1, Ordering::SeqCst);
            }
            Target::Sink(s) => {
                let d = durable.clone();
                s.write(
                    &batch,
                    Durable::new(move || {
                        d.fetch_add(1, Ordering::SeqCst);
                    }),
                )
                .await
                .unwrap();
            }
        }
        written += batch.readings.len() as u64;
        batches_sent += 1;
        if started.elapsed().as_secs_f64() >= secs {
            break;
        }
    }
    if let Target::Sink(s) = target {
        s.flush().await.unwrap();
    }
    while durable.load(Ordering::SeqCst) < batches_sent {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (written, written as f64 / started.elapsed().as_secs_f64())
}

fn mysql_url() -> MySqlUrl {
    let url = std::env::var("GLUCOGUARD_TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".to_owned());
    MySqlUrl::parse(&url).unwrap()
}

/// A fresh MariaDB database for one run (dropped and recreated).
async fn mariadb(name: &str) -> Arc<dyn Store> {
    use sqlx::Connection;
    let server = mysql_url();
    let mut admin = sqlx::MySqlConnection::connect_with(server.connect_options())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "MariaDB is not reachable at {server}: {e}. Start it with: \
                 start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd"
            )
        });
    sqlx::raw_sql(&format!(
        "DROP DATABASE IF EXISTS `{name}`; CREATE DATABASE `{name}`"
    ))
    .execute(&mut admin)
    .await
    .unwrap();
    Arc::new(
        MySqlStore::open(&server.with_database(name), &MySqlOptions::default())
            .await
            .unwrap(),
    )
}

/// A bounded buffer (16 MiB), so a run measures uploads, not how much memory can absorb
/// writes before the final flush.
fn archive_config(backend: Backend) -> ArchiveConfig {
    ArchiveConfig {
        backend,
        prefix: "bench".into(),
        max_bytes: 8 << 20,
        max_buffer_bytes: 16 << 20,
        flush_timeout_secs: 900,
        ..ArchiveConfig::default()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn sink_throughput(rt: &tokio::runtime::Runtime) {
    let secs: f64 = env_or("GLUCOGUARD_BENCH_SECS", 3.0);
    // Enough for the fastest destination to run `secs` at batch 1000.
    let pool: Vec<Reading> = readings(200, 14, true).take(1_000_000).collect();
    let mut azurite = azurite::Azurite::start("bench");
    let names = [
        "SQLite store",
        "MariaDB store",
        "DuckDB analytics sink",
        "archive, local folder",
        "archive, Azurite",
    ];
    let mut results = vec![vec![(0u64, 0f64); BATCH_SIZES.len()]; names.len()];
    for (b, &size) in BATCH_SIZES.iter().enumerate() {
        for (t, name) in names.iter().enumerate() {
            let dir = tempfile::tempdir().unwrap();
            let analytics = (t == 2).then(|| Analytics::open(dir.path().join("b.duckdb")).unwrap());
            let mut store_target = None;
            let r = rt.block_on(async {
                let target = match t {
                    0 => Target::Store(Arc::new(
                        SqliteStore::open(&dir.path().join("b.db")).await.unwrap(),
                    )),
                    1 => Target::Store(mariadb("gg_bench_sinks").await),
                    2 => Target::Sink(Arc::new(AnalyticsSink::new(analytics.clone().unwrap()))),
                    3 => Target::Sink(Arc::new(
                        ArchiveSink::connect(&archive_config(Backend::Local {
                            path: dir.path().join("archive"),
                        }))
                        .await
                        .unwrap(),
                    )),
                    _ => {
                        let container = format!("bench{b}");
                        azurite.create_container(&container);
                        let cfg = archive_config(Backend::Azure(AzureBackend {
                            account: azurite::ACCOUNT.into(),
                            container,
                            key_env: Some(AZURITE_KEY_ENV.into()),
                            sas_env: None,
                            endpoint: Some(azurite.endpoint()),
                        }));
                        let store = glucoguard::archive::build_store_with(&cfg, |k| {
                            (k == AZURITE_KEY_ENV).then(|| azurite::KEY.to_owned())
                        })
                        .unwrap();
                        Target::Sink(Arc::new(ArchiveSink::new(store, &cfg)))
                    }
                };
                if let Target::Store(st) = &target {
                    store_target = Some(st.clone());
                }
                sustained(&target, &pool, size, secs).await
            });
            // What was timed landed: every row written is in the destination, once.
            let landed = match t {
                0 | 1 => rt.block_on(async {
                    let c = store_target.as_ref().unwrap().counts().await.unwrap();
                    Some(c.glucose_readings + c.device_readings)
                }),
                2 => {
                    let a = analytics.as_ref().unwrap();
                    Some(
                        a.count(glucoguard::analytics::Table::GlucoseReadings)
                            .unwrap()
                            + a.count(glucoguard::analytics::Table::DeviceReadings)
                                .unwrap(),
                    )
                }
                3 => {
                    let conn = duckdb::Connection::open_in_memory().unwrap();
                    let count = |table: &str| -> u64 {
                        let glob =
                            format!("{}/archive/**/{table}/**/*.parquet", dir.path().display());
                        conn.query_row(
                            &format!("SELECT count(*) FROM read_parquet('{glob}')"),
                            [],
                            |r| r.get::<_, i64>(0),
                        )
                        .unwrap() as u64
                    };
                    Some(count("glucose_readings") + count("device_readings"))
                }
                // Azurite: the archive suite reads objects back row by row (tests/it/archive.rs).
                _ => None,
            };
            if let Some(landed) = landed {
                assert_eq!(
                    landed, r.0,
                    "{name} batch {size}: rows written vs rows landed"
                );
            }
            eprintln!(
                "{name:<24} batch {size:>4}: {:>9.0} readings/s ({} written)",
                r.1, r.0
            );
            results[t][b] = r;
        }
    }
    azurite.stop();
    println!(
        "\n### Sustained readings/s into each destination ({secs} s per run, glucose + telemetry)\n"
    );
    println!("| destination | batch 1 | batch 100 | batch 1000 | × SQLite at 1 / 100 / 1000 |");
    println!("|---|---:|---:|---:|---|");
    for (t, name) in names.iter().enumerate() {
        let rates: Vec<String> = results[t].iter().map(|r| format!("{:.0}", r.1)).collect();
        let ratios: Vec<String> = (0..BATCH_SIZES.len())
            .map(|b| format!("{:.2}", results[t][b].1 / results[0][b].1))
            .collect();
        println!(
            "| {name} | {} | {} | {} | {} |",
            rates[0],
            rates[1],
            rates[2],
            ratios.join(" / ")
        );
    }
}

/// A DuckDB file with `n` simulated glucose readings, built once and kept under the target
/// dir (building 10 M takes a minute or two).
fn analytics_file(n: usize) -> (std::path::PathBuf, usize) {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("bench-data");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("analytics-{n}.duckdb"));
    let patients = 400;
    if !path.exists() {
        let partial = dir.join(format!("analytics-{n}.partial.duckdb"));
        let _ = std::fs::remove_file(&partial);
        let analytics = Analytics::open(&partial).unwrap();
        let days = (n as f64 / patients as f64 / 288.0 * 1.15).ceil() as i64 + 1;
        let started = Instant::now();
        let mut chunk = Vec::with_capacity(100_000);
        let mut stored = 0;
        for r in readings(patients, days, false).take(n) {
            chunk.push(r);
            if chunk.len() == chunk.capacity() {
                stored += chunk.len();
                analytics
                    .append_batch(&WriteBatch {
                        readings: std::mem::take(&mut chunk),
                        received_at_ms: 1,
                        ..WriteBatch::default()
                    })
                    .unwrap();
                chunk.reserve(100_000);
            }
        }
        stored += chunk.len();
        analytics
            .append_batch(&WriteBatch {
                readings: chunk,
                received_at_ms: 1,
                ..WriteBatch::default()
            })
            .unwrap();
        analytics.checkpoint().unwrap();
        drop(analytics);
        std::fs::rename(&partial, &path).unwrap();
        eprintln!(
            "built {} with {stored} readings in {:.0} s",
            path.display(),
            started.elapsed().as_secs_f64()
        );
    }
    (path, patients)
}

fn query_times() {
    let n: usize = env_or("GLUCOGUARD_BENCH_READINGS", 10_000_000);
    let (path, _patients) = analytics_file(n);
    let analytics = Analytics::open(&path).unwrap();
    let conn = analytics.connection().unwrap();
    let (count, first, last): (i64, i64, i64) = conn
        .query_row(
            "SELECT count(*), min(at_ms), max(at_ms) FROM glucose_readings",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let to = last + 1;
    let two_weeks = to - 14 * DAY_MS;
    let month = (to - 30 * DAY_MS).max(first);
    type Query<'a> = (&'a str, Box<dyn Fn() -> usize + 'a>);
    let queries: Vec<Query> = vec![
        (
            "full scan: count(*), avg(mg_dl) (baseline)",
            Box::new(|| {
                let n: i64 = conn
                    .query_row(
                        "SELECT count(*) FROM glucose_readings WHERE mg_dl >= 0",
                        [],
                        |r| r.get(0),
                    )
                    .unwrap();
                n as usize
            }),
        ),
        (
            "patient_series: one patient, 30 days, 2-day moving average",
            Box::new(|| analytics.patient_series(7, month, to).unwrap().len()),
        ),
        (
            "patient_summaries: all patients, whole period",
            Box::new(|| analytics.patient_summaries(first, to).unwrap().len()),
        ),
        (
            "daily_averages: all patients, 30 days",
            Box::new(|| analytics.daily_averages(&[], month, to).unwrap().len()),
        ),
        (
            "daily_averages: 5 patients, 30 days",
            Box::new(|| {
                analytics
                    .daily_averages(&[1, 2, 3, 4, 5], month, to)
                    .unwrap()
                    .len()
            }),
        ),
        (
            "cgm_metrics: one patient, 14 days",
            Box::new(|| analytics.cgm_metrics(7, two_weeks, to, 300).unwrap().count as usize),
        ),
        (
            "agp: one patient, 14 days, 15-min bins",
            Box::new(|| analytics.agp(7, two_weeks, to, 15).unwrap().len()),
        ),
    ];
    const ROUNDS: usize = 7;
    let mut times = vec![Vec::new(); queries.len()];
    let mut rows = vec![0; queries.len()];
    for (i, (_, q)) in queries.iter().enumerate() {
        rows[i] = q(); // warm-up
    }
    for _ in 0..ROUNDS {
        for (i, (_, q)) in queries.iter().enumerate() {
            let started = Instant::now();
            assert_eq!(q(), rows[i], "the same answer every round");
            times[i].push(started.elapsed().as_secs_f64() * 1e3);
        }
    }
    let base = median(times[0].clone());
    println!(
        "\n### Analytics queries on {count} glucose readings in DuckDB (median of {ROUNDS} rounds)\n"
    );
    println!("| query | rows out | ms | × full scan |\n|---|---:|---:|---:|");
    for (i, (name, _)) in queries.iter().enumerate() {
        let ms = median(times[i].clone());
        println!("| {name} | {} | {ms:.1} | {:.2} |", rows[i], ms / base);
    }
}

/// The measurement behind the dedupe strategy: rows already in a table with `PRIMARY KEY (id)`,
/// then batches of half replayed, half new rows deduplicated by
/// - `ignore`: `INSERT OR IGNORE … SELECT * FROM staging` (DuckDB runs it as a MERGE: a hash
///   join that scans the whole table),
/// - `probe`: looking the batch's ids up in the key's index (`WHERE id IN (?, …)`, chunks of
///   1000) and inserting the rest,
/// - `range`: an anti-join against the rows in the batch's event-time range only (zone maps
///   prune the rest; exact only while an id never changes its time).
///
/// The analytics sink uses `range` (see `glucoguard::analytics`).
fn dedupe_cost() {
    use duckdb::Connection;
    use glucoguard::analytics::Table;
    const PROBE_IDS: usize = 1000;
    let rows: u64 = env_or("GLUCOGUARD_BENCH_READINGS", 10_000_000);
    let mut table = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.duckdb");
    let conn = Connection::open(&path).unwrap();
    let t = Table::GlucoseReadings;
    conn.execute_batch(&t.create_sql(t.name(), true, false))
        .unwrap();
    conn.execute_batch(&t.create_sql("s", false, true)).unwrap();
    // Ids shaped like alert ids (hex, time-prefixed), 5-minute readings of 1000 patients.
    let fill = |lo: u64, hi: u64| {
        format!(
            "SELECT printf('%012x%020x', i * 300, hash(i)), i % 1000, 1000 + i % 1000, \
                    i * 300, 70 + (i % 200), 'home', i * 300 \
             FROM range({lo}, {hi}) r(i)"
        )
    };
    let start = Instant::now();
    let mut lo = 0;
    while lo < rows {
        let hi = (lo + 1_000_000).min(rows);
        conn.execute_batch(&format!("INSERT INTO glucose_readings {}", fill(lo, hi)))
            .unwrap();
        lo = hi;
    }
    conn.execute_batch("CHECKPOINT").unwrap();
    eprintln!(
        "loaded {rows} rows in {:?}; file {} MiB",
        start.elapsed(),
        std::fs::metadata(&path).unwrap().len() >> 20
    );
    let mut next = rows;
    for strategy in ["ignore", "probe", "range"] {
        for batch in [1u64, 100, 1000, 10_000] {
            let rounds = 10;
            let (replayed, fresh) = (batch / 2, batch - batch / 2);
            let mut dedupe = std::time::Duration::ZERO;
            let started = Instant::now();
            for _ in 0..rounds {
                conn.execute_batch("BEGIN").unwrap();
                conn.execute_batch(&format!(
                    "INSERT INTO s {}; INSERT INTO s {}",
                    fill(next - replayed, next),
                    fill(next, next + fresh),
                ))
                .unwrap();
                let m = Instant::now();
                let added = match strategy {
                    "ignore" => conn
                        .execute("INSERT OR IGNORE INTO glucose_readings SELECT * FROM s", [])
                        .unwrap(),
                    "probe" => {
                        let ids: Vec<String> = conn
                            .prepare("SELECT id FROM s")
                            .unwrap()
                            .query_map([], |r| r.get(0))
                            .unwrap()
                            .collect::<Result<_, _>>()
                            .unwrap();
                        let mut existing = Vec::new();
                        for chunk in ids.chunks(PROBE_IDS) {
                            let sql = format!(
                                "SELECT id FROM glucose_readings WHERE id IN ({})",
                                vec!["?"; chunk.len()].join(",")
                            );
                            let mut st = conn.prepare_cached(&sql).unwrap();
                            let found = st
                                .query_map(duckdb::params_from_iter(chunk), |r| {
                                    r.get::<_, String>(0)
                                })
                                .unwrap();
                            for id in found {
                                existing.push(id.unwrap());
                            }
                        }
                        conn.execute_batch("CREATE OR REPLACE TEMP TABLE e (id VARCHAR)")
                            .unwrap();
                        let mut app = conn
                            .appender_to_catalog_and_db("e", "temp", "main")
                            .unwrap();
                        for id in &existing {
                            app.append_row([id]).unwrap();
                        }
                        drop(app);
                        conn.execute(
                            "INSERT INTO glucose_readings SELECT * FROM s ANTI JOIN e USING (id)",
                            [],
                        )
                        .unwrap()
                    }
                    _ => {
                        let (lo, hi): (i64, i64) = conn
                            .query_row("SELECT min(at_ms), max(at_ms) FROM s", [], |r| {
                                Ok((r.get(0)?, r.get(1)?))
                            })
                            .unwrap();
                        conn.execute(
                            &format!(
                                "INSERT INTO glucose_readings SELECT * FROM s ANTI JOIN \
                                 (SELECT id FROM glucose_readings WHERE at_ms BETWEEN {lo} AND {hi}) \
                                 USING (id)"
                            ),
                            [],
                        )
                        .unwrap()
                    }
                };
                dedupe += m.elapsed();
                assert_eq!(added as u64, fresh);
                conn.execute_batch("DELETE FROM s; COMMIT").unwrap();
                next += fresh;
            }
            let per = started.elapsed() / rounds;
            table.push((strategy, batch, (dedupe / rounds).as_secs_f64() * 1e3));
            eprintln!(
                "{rows} rows, {strategy:>6}, batch {batch:>5}: dedupe {:?} per batch, \
                 {per:?} per batch in all",
                dedupe / rounds,
            );
        }
    }
    let n: i64 = conn
        .query_row(
            "SELECT count(*) - count(DISTINCT id) FROM glucose_readings",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0, "no duplicates");
    println!(
        "\n### Dedupe of one batch (half replayed, half new) against {rows} rows with PRIMARY KEY (id), ms\n"
    );
    println!(
        "| strategy | batch 1 | batch 100 | batch 1000 | batch 10000 |\n|---|---:|---:|---:|---:|"
    );
    for strategy in ["ignore", "probe", "range"] {
        let cells: Vec<String> = table
            .iter()
            .filter(|(s, _, _)| *s == strategy)
            .map(|(_, _, ms)| format!("{ms:.1}"))
            .collect();
        println!("| {strategy} | {} |", cells.join(" | "));
    }
}

/// Why both sinks stage many small batches together. The archive's roll stages every
/// buffered batch of a partition in an in-memory DuckDB: with one appender per batch, each
/// appender's flush is a transaction of its own, so a roll costs what its batch count costs.
/// The analytics sink pays a commit (staging, dedupe, WAL) per transaction, so it commits
/// whatever queued up behind the last commit at once. Both baselines run here, in the same
/// run as the way the sinks work.
fn staging_cost() {
    use glucoguard::analytics::Table;
    use glucoguard::analytics::tables::{append_batch, append_batches};
    const STAGED: usize = 5_000;
    const COMMITS: usize = 200;
    let pool: Vec<Reading> = readings(50, 2, true).take(STAGED).collect();
    let one_each: Vec<WriteBatch> = batches(&pool, 1).collect();
    let stage = |together: bool| -> (f64, i64) {
        let conn = duckdb::Connection::open_in_memory().unwrap();
        for t in Table::ALL {
            conn.execute_batch(&t.create_sql(&format!("{}_staged", t.name()), false, true))
                .unwrap();
        }
        let started = Instant::now();
        if together {
            append_batches(&conn, &one_each, "temp", "_staged").unwrap();
        } else {
            for b in &one_each {
                append_batch(&conn, b, "temp", "_staged").unwrap();
            }
        }
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let n: i64 = conn
            .query_row(
                "SELECT (SELECT count(*) FROM temp.main.glucose_readings_staged) \
                      + (SELECT count(*) FROM temp.main.device_readings_staged)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        (ms, n)
    };
    let (apart, n_apart) = stage(false);
    let (together, n_together) = stage(true);
    assert_eq!((n_apart, n_together), (STAGED as i64, STAGED as i64));
    eprintln!(
        "staging {STAGED} one-reading batches: {apart:.1} ms apart, {together:.1} ms together"
    );

    let commit = |together: bool| -> (f64, u64) {
        let dir = tempfile::tempdir().unwrap();
        let a = Analytics::open(dir.path().join("c.duckdb")).unwrap();
        let started = Instant::now();
        if together {
            a.append_batches(&one_each[..COMMITS]).unwrap();
        } else {
            for b in &one_each[..COMMITS] {
                a.append_batch(b).unwrap();
            }
        }
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let n = a.count(Table::GlucoseReadings).unwrap() + a.count(Table::DeviceReadings).unwrap();
        (ms, n)
    };
    let (c_apart, n_apart) = commit(false);
    let (c_together, n_together) = commit(true);
    assert_eq!((n_apart, n_together), (COMMITS as u64, COMMITS as u64));
    eprintln!(
        "committing {COMMITS} one-reading batches: {c_apart:.1} ms apart, {c_together:.1} ms together"
    );
    println!("\n### Small batches apart and together (one reading each), ms\n");
    println!("| work | apart (baseline) | together | × baseline |\n|---|---:|---:|---:|");
    println!(
        "| archive roll: stage {STAGED} batches in DuckDB (an appender per batch / one) | {apart:.1} | {together:.1} | {:.4} |",
        together / apart
    );
    println!(
        "| analytics: commit {COMMITS} batches (a transaction per batch / one) | {c_apart:.1} | {c_together:.1} | {:.4} |",
        c_together / c_apart
    );
}

fn main() {
    // `cargo bench` passes `--bench`; anything else selects a part.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let only = args.first().map(String::as_str);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if only.is_none() || only == Some("sinks") {
        sink_throughput(&rt);
    }
    if only.is_none() || only == Some("queries") {
        query_times();
    }
    if only.is_none() || only == Some("dedupe") {
        dedupe_cost();
    }
    if only.is_none() || only == Some("staging") {
        staging_cost();
    }
}
