//! Unit tests of the write path, and the measurement behind the dedupe strategy.

use super::*;
use crate::model::{Body, Glucose};
use std::time::Instant;

const PROBE_IDS: usize = 1000;

fn glucose(id: &str, at_ms: EpochMs, mg_dl: f64) -> Reading {
    Reading {
        id: id.into(),
        at_ms,
        body: Body::Glucose(Glucose {
            patient_id: 1,
            device_id: 1001,
            mg_dl,
            location: None,
        }),
    }
}

#[test]
fn ids_repeated_inside_one_write_keep_the_first_row() {
    let a = Analytics::open(":memory:").unwrap();
    let batch = WriteBatch {
        readings: vec![
            glucose("x", 1, 100.0),
            glucose("x", 1, 200.0),
            glucose("y", 2, 50.0),
        ],
        received_at_ms: 7,
        ..WriteBatch::default()
    };
    let added = a.append_batch(&batch).unwrap();
    assert_eq!(added.glucose_readings, 2);
    let v: f64 = a
        .connection()
        .unwrap()
        .query_row(
            "SELECT mg_dl FROM glucose_readings WHERE id = 'x'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(v, 100.0);
    // The staging tables are empty again.
    let staged: i64 = lock(&a.inner.writer)
        .query_row(
            "SELECT count(*) FROM temp.main.glucose_readings_staging",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(staged, 0);
}

#[test]
fn an_id_back_with_another_event_time_is_still_stored_once() {
    let a = Analytics::open(":memory:").unwrap();
    let write = |at_ms, mg_dl| {
        a.append_batch(&WriteBatch {
            readings: vec![
                glucose("reused", at_ms, mg_dl),
                glucose(&format!("n{at_ms}"), at_ms, 1.0),
            ],
            received_at_ms: at_ms,
            ..WriteBatch::default()
        })
        .unwrap()
    };
    assert_eq!(write(1_000, 100.0).glucose_readings, 2);
    // Far outside the first write's time range: the range dedupe misses it, the key refuses
    // it, the whole-table pass keeps the first row and still adds the new one.
    assert_eq!(write(9_000_000, 200.0).glucose_readings, 1);
    let (n, v): (i64, f64) = a
        .connection()
        .unwrap()
        .query_row(
            "SELECT count(*), max(mg_dl) FROM glucose_readings WHERE id = 'reused'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((n, v), (1, 100.0));
    assert_eq!(a.count(Table::GlucoseReadings).unwrap(), 3);
}

#[test]
fn a_file_with_another_schema_version_is_refused_and_a_reopen_keeps_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.duckdb");
    {
        let a = Analytics::open(&path).unwrap();
        a.append_batch(&WriteBatch {
            readings: vec![glucose("x", 1, 100.0)],
            received_at_ms: 7,
            ..WriteBatch::default()
        })
        .unwrap();
    }
    let a = Analytics::open(&path).unwrap();
    assert_eq!(a.count(Table::GlucoseReadings).unwrap(), 1);
    a.connection()
        .unwrap()
        .execute_batch("UPDATE _meta SET value = '99' WHERE key = 'schema_version'")
        .unwrap();
    drop(a);
    let err = Analytics::open(&path).unwrap_err();
    assert!(
        matches!(&err, AnalyticsError::SchemaVersion { found, .. } if found == "99"),
        "{err}"
    );
}

/// The measurement behind the dedupe strategy: rows already in a table with `PRIMARY KEY (id)`,
/// then batches of half replayed, half new rows deduplicated by
/// - `ignore`: `INSERT OR IGNORE … SELECT * FROM staging` (DuckDB runs it as a MERGE: a hash
///   join that scans the whole table),
/// - `probe`: looking the batch's ids up in the key's index (`WHERE id IN (?, …)`, chunks of
///   1000) and inserting the rest, which is what [`Analytics`] does,
/// - `range`: an anti-join against the rows in the batch's event-time range only (zone maps
///   prune the rest; exact only while an id never changes its time).
///
/// Run with `GLUCOGUARD_DEDUPE_ROWS=10000000 cargo nextest run -p glucoguard --lib dedupe_cost
/// --run-ignored only --no-capture`.
#[test]
#[ignore = "a measurement: minutes at 10M rows"]
fn dedupe_cost() {
    let rows: u64 = std::env::var("GLUCOGUARD_DEDUPE_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
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
            eprintln!(
                "{rows} rows, {strategy:>6}, batch {batch:>5}: dedupe {:?} per batch, \
                 {per:?} per batch in all, {:.0} rows/s",
                dedupe / rounds,
                batch as f64 / per.as_secs_f64()
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
}
