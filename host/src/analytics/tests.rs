//! Unit tests of the write path.

use super::*;
use crate::model::{Body, Glucose};

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
