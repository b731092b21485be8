//! DuckDB analytics: the sink, catch-up and the dashboard queries against hand-computed fixtures.

use crate::support::*;
use glucoguard::analytics::{AgpBin, Analytics, AnalyticsSink, CatchUp, DailyAverage, Table};
use glucoguard::app;
use glucoguard::model::{Alert, Reading};
use glucoguard::sinks::{Durable, StorageSink};
use glucoguard::store::sqlite::SqliteStore;
use glucoguard::store::{AlertStatus, Store, WriteBatch};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;
/// UTC midnight of T0's day (2026-11-18T00:00:00Z).
const DAY0: i64 = T0 - T0 % DAY;

fn analytics() -> Analytics {
    Analytics::open(":memory:").unwrap()
}

/// A batch of readings received at `received_at_ms`.
fn batch(readings: Vec<Reading>, received_at_ms: i64) -> WriteBatch {
    WriteBatch {
        readings,
        received_at_ms,
        ..WriteBatch::default()
    }
}

/// Appends `(id, patient, at_ms, mg/dL)` readings in one batch.
fn load(a: &Analytics, rows: &[(&str, u64, i64, f64)]) {
    let readings = rows
        .iter()
        .map(|&(id, p, at, v)| glucose(id, p, at, v))
        .collect();
    a.append_batch(&batch(readings, 1)).unwrap();
}

fn close(actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() < 1e-9,
        "{actual} is not {expected}"
    );
}

fn close_some(actual: Option<f64>, expected: f64) {
    close(actual.expect("a value"), expected);
}

fn device(id: &str, device_id: u64, at_ms: i64) -> Reading {
    glucoguard::model::parse::parse_reading(
        serde_json::json!({
            "reading_id": id,
            "device_id": device_id,
            "timestamp": glucoguard::model::format_ms(at_ms),
            "battery_level": 40,
            "connectivity_status": "Connected",
            "error_codes": ["E7"],
        })
        .to_string()
        .as_bytes(),
    )
    .unwrap()
}

fn alert(reading: &str, at_ms: i64) -> Alert {
    test_alert(reading, at_ms, 60.0)
}

/// Every row of a table, rendered, in id order: what "identical rows" compares.
fn rows(a: &Analytics, t: Table) -> Vec<String> {
    let conn = a.connection().unwrap();
    let mut stmt = conn
        .prepare(&format!(
            "SELECT CAST(t AS VARCHAR) FROM {} t ORDER BY id",
            t.name()
        ))
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn counts(a: &Analytics) -> (u64, u64, u64) {
    (
        a.count(Table::GlucoseReadings).unwrap(),
        a.count(Table::DeviceReadings).unwrap(),
        a.count(Table::Alerts).unwrap(),
    )
}

// ---------------------------------------------------------------- metrics

#[test]
fn cgm_metrics_match_a_hand_computed_fixture() {
    let a = analytics();
    // Ten readings of patient 1 on DAY0, one every 5 minutes, unordered values:
    //   50 65 | 70 100 120 140 180 | 181 250 300
    //   < 54: 50                 → 1/10 = 10 %
    //   < 70: 50, 65             → 2/10 = 20 %
    //   70–180 inclusive: 70 100 120 140 180 → 5/10 = 50 %
    //   > 180: 181 250 300       → 3/10 = 30 %
    //   > 250: 300 (250 is not)  → 1/10 = 10 %
    //   mean = 1456 / 10 = 145.6
    //   Σ(x − 145.6)² = 9139.36 + 6496.36 + 5715.36 + 2079.36 + 655.36 + 31.36 + 1183.36
    //                 + 1253.16 + 10899.36 + 23839.36 = 61292.4
    //   sample SD = √(61292.4 / 9) = √6810.2667 = 82.524340
    //   CV = 82.524340 / 145.6 × 100 = 56.678805 %
    //   GMI = 3.31 + 0.02392 × 145.6 = 3.31 + 3.482752 = 6.792752 %
    //   expected over 24 h at 5 min = 86400 / 300 = 288; sufficiency = 10 / 288 = 3.4722 %
    let values = [
        180.0, 50.0, 250.0, 70.0, 300.0, 100.0, 65.0, 140.0, 181.0, 120.0,
    ];
    let mut fixture: Vec<(String, u64, i64, f64)> = values
        .iter()
        .enumerate()
        .map(|(i, &v)| (format!("m{i}"), 1, DAY0 + i as i64 * 5 * MIN, v))
        .collect();
    // Not counted: another patient, a reading at the period's end, one just before its start.
    fixture.push(("other".into(), 2, DAY0 + HOUR, 40.0));
    fixture.push(("at-end".into(), 1, DAY0 + DAY, 40.0));
    fixture.push(("before".into(), 1, DAY0 - 1, 40.0));
    let rows: Vec<_> = fixture
        .iter()
        .map(|(id, p, at, v)| (id.as_str(), *p, *at, *v))
        .collect();
    load(&a, &rows);

    let m = a.cgm_metrics(1, DAY0, DAY0 + DAY, 300).unwrap();
    assert_eq!(m.count, 10);
    assert_eq!(m.expected, 288);
    close_some(m.below_54_pct, 10.0);
    close_some(m.below_70_pct, 20.0);
    close_some(m.in_range_pct, 50.0);
    close_some(m.above_180_pct, 30.0);
    close_some(m.above_250_pct, 10.0);
    close_some(m.mean_mg_dl, 145.6);
    close_some(m.sd_mg_dl, (61292.4f64 / 9.0).sqrt());
    assert!((m.sd_mg_dl.unwrap() - 82.524340).abs() < 1e-6);
    close_some(m.cv_pct, (61292.4f64 / 9.0).sqrt() / 145.6 * 100.0);
    assert!((m.cv_pct.unwrap() - 56.678805).abs() < 1e-6);
    close_some(m.gmi_pct, 6.792752);
    close_some(m.data_sufficiency_pct, 10.0 / 288.0 * 100.0);
}

#[test]
fn cgm_metrics_of_an_empty_period_are_none_and_of_one_reading_have_no_sd() {
    let a = analytics();
    load(&a, &[("x", 1, DAY0, 100.0)]);
    let empty = a.cgm_metrics(1, DAY0 + HOUR, DAY0 + 2 * HOUR, 300).unwrap();
    assert_eq!(empty.count, 0);
    assert_eq!(empty.expected, 12);
    assert_eq!(empty.data_sufficiency_pct, Some(0.0));
    for v in [
        empty.in_range_pct,
        empty.below_70_pct,
        empty.below_54_pct,
        empty.above_180_pct,
        empty.above_250_pct,
        empty.mean_mg_dl,
        empty.sd_mg_dl,
        empty.cv_pct,
        empty.gmi_pct,
    ] {
        assert_eq!(v, None);
    }
    // JSON carries nulls, never NaN.
    let json = serde_json::to_value(&empty).unwrap();
    assert_eq!(json["mean_mg_dl"], serde_json::Value::Null);
    // A period of zero length expects nothing.
    let none = a.cgm_metrics(1, DAY0, DAY0, 300).unwrap();
    assert_eq!((none.expected, none.data_sufficiency_pct), (0, None));
    // One reading: a mean and GMI, but no sample SD (n − 1 = 0) and so no CV.
    let one = a.cgm_metrics(1, DAY0, DAY0 + HOUR, 300).unwrap();
    assert_eq!(one.count, 1);
    close_some(one.mean_mg_dl, 100.0);
    close_some(one.gmi_pct, 3.31 + 2.392);
    close_some(one.in_range_pct, 100.0);
    assert_eq!((one.sd_mg_dl, one.cv_pct), (None, None));
    assert!(a.cgm_metrics(1, DAY0, DAY0 + HOUR, 0).is_err());
}

#[test]
fn data_sufficiency_counts_the_gaps_and_is_capped_at_100_percent() {
    let a = analytics();
    // One hour at a 5-minute interval expects 60 / 5 = 12 readings. Present: minutes 0, 5, 10
    // and 30, 35, 40, 45, 50, 55 (a 15-minute gap: 15, 20, 25 missing) → 9 / 12 = 75 %.
    let minutes = [0, 5, 10, 30, 35, 40, 45, 50, 55];
    let ids: Vec<String> = minutes.iter().map(|m| format!("s{m}")).collect();
    let rows: Vec<_> = minutes
        .iter()
        .zip(&ids)
        .map(|(m, id)| (id.as_str(), 1, DAY0 + m * MIN, 120.0))
        .collect();
    load(&a, &rows);
    let m = a.cgm_metrics(1, DAY0, DAY0 + HOUR, 300).unwrap();
    assert_eq!((m.count, m.expected), (9, 12));
    close_some(m.data_sufficiency_pct, 75.0);
    // Expecting one reading every 15 minutes: 4 expected, 9 present → capped at 100 %.
    let m = a.cgm_metrics(1, DAY0, DAY0 + HOUR, 900).unwrap();
    assert_eq!(m.expected, 4);
    close_some(m.data_sufficiency_pct, 100.0);
    // A period that is not a whole number of intervals: 62 min / 5 min → 12 expected.
    let m = a.cgm_metrics(1, DAY0, DAY0 + 62 * MIN, 300).unwrap();
    assert_eq!(m.expected, 12);
}

#[test]
fn the_moving_average_covers_two_days_back_with_the_rule_window_semantics() {
    let a = analytics();
    let t = DAY0;
    load(
        &a,
        &[
            ("r1", 1, t, 100.0),
            ("r2", 1, t + DAY, 200.0),
            ("r3", 1, t + 2 * DAY, 300.0),
            ("r4", 1, t + 2 * DAY, 400.0),
            ("r5", 1, t + 3 * DAY - 1, 160.0),
            ("r6", 1, t + 3 * DAY, 140.0),
            ("r7", 1, t + 3 * DAY + 1, 999.0), // at the period's end: excluded
            ("x1", 2, t + 2 * DAY, 10.0),      // another patient
        ],
    );
    // Windows (t − 48 h, t]:
    //   r1 at t:           {r1}             → 100        (n 1)
    //   r2 at t+24h:       {r1, r2}         → 150        (n 2)
    //   r3, r4 at t+48h:   r1 is exactly 48 h older: out; equal timestamps in
    //                      {r2, r3, r4}     → 900/3 = 300 (n 3)
    //   r5 at t+72h−1ms:   window starts after t+24h−1ms, so r2 (t+24h) is in
    //                      {r2, r3, r4, r5} → 1060/4 = 265 (n 4)
    //   r6 at t+72h:       r2 exactly 48 h older: out
    //                      {r3, r4, r5, r6} → 1000/4 = 250 (n 4)
    let whole = a.patient_series(1, t, t + 3 * DAY + 1).unwrap();
    let got: Vec<(&str, f64, u64)> = whole
        .iter()
        .map(|p| {
            (
                glucoguard::model::parse::given_reading_id(&p.reading_id),
                p.moving_avg_2d,
                p.window_count,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("r1", 100.0, 1),
            ("r2", 150.0, 2),
            ("r3", 300.0, 3),
            ("r4", 300.0, 3),
            ("r5", 265.0, 4),
            ("r6", 250.0, 4),
        ]
    );
    assert_eq!((whole[4].at_ms, whole[4].mg_dl), (t + 3 * DAY - 1, 160.0));
    // A period starting at t+48h still averages over the readings before it: the points
    // are the same as in the whole series.
    let later = a.patient_series(1, t + 2 * DAY, t + 3 * DAY + 1).unwrap();
    assert_eq!(later, whole[2..].to_vec());
    assert!(a.patient_series(3, t, t + 4 * DAY).unwrap().is_empty());
}

#[test]
fn agp_percentiles_interpolate_between_readings_per_time_of_day_bin() {
    let a = analytics();
    // 08:00–09:00 UTC on five days, values 260 140 100 180 120 (sorted: 100 120 140 180 260).
    // quantile_cont: position (n − 1) × p = 4p, linear between neighbours:
    //   p5  → 0.2 → 100 + 0.2 × (120 − 100) = 104
    //   p25 → 1.0 → 120;  p50 → 2.0 → 140;  p75 → 3.0 → 180
    //   p95 → 3.8 → 180 + 0.8 × (260 − 180) = 244
    // 23:00–24:00 on two days: 110 at 23:59:59.999 and 90 at 23:00 (n 2, position p):
    //   p5 → 90 + 0.05 × 20 = 91; p25 → 95; p50 → 100; p75 → 105; p95 → 109
    // 09:00 exactly falls into the 09:00 bin; one reading: every percentile is it.
    let h8 = DAY0 + 8 * HOUR;
    load(
        &a,
        &[
            ("a", 1, h8, 260.0),
            ("b", 1, h8 + DAY + 15 * MIN, 140.0),
            ("c", 1, h8 + 2 * DAY + HOUR - 1, 100.0),
            ("d", 1, h8 + 3 * DAY + 30 * MIN, 180.0),
            ("e", 1, h8 + 4 * DAY + 59 * MIN, 120.0),
            ("f", 1, DAY0 + DAY - 1, 110.0),
            ("g", 1, DAY0 + 2 * DAY + 23 * HOUR, 90.0),
            ("h", 1, DAY0 + 9 * HOUR, 77.0),
            ("i", 2, h8, 500.0),            // another patient
            ("j", 1, DAY0 + 5 * DAY, 11.0), // at the period's end
        ],
    );
    let bins = a.agp(1, DAY0, DAY0 + 5 * DAY, 60).unwrap();
    assert_eq!(bins.len(), 3);
    assert_bin(&bins[0], 8 * 60, 5, [104.0, 120.0, 140.0, 180.0, 244.0]);
    assert_bin(&bins[1], 9 * 60, 1, [77.0; 5]);
    assert_bin(&bins[2], 23 * 60, 2, [91.0, 95.0, 100.0, 105.0, 109.0]);
    // 15-minute bins: 08:00 holds a, 08:15 holds b, 08:30 d, 08:45 c and e.
    let fine = a.agp(1, DAY0, DAY0 + 5 * DAY, 15).unwrap();
    let starts: Vec<(u32, u64)> = fine.iter().map(|b| (b.start_minute, b.count)).collect();
    assert_eq!(
        starts,
        vec![
            (480, 1),
            (495, 1),
            (510, 1),
            (525, 2),
            (540, 1),
            (1380, 1),
            (1425, 1)
        ]
    );
    assert!(a.agp(1, DAY0, DAY0 + DAY, 0).is_err());
}

fn assert_bin(bin: &AgpBin, start_minute: u32, count: u64, p: [f64; 5]) {
    assert_eq!(
        (bin.start_minute, bin.count),
        (start_minute, count),
        "{bin:?}"
    );
    for (got, want) in [bin.p5, bin.p25, bin.p50, bin.p75, bin.p95]
        .into_iter()
        .zip(p)
    {
        close(got, want);
    }
}

#[test]
fn daily_averages_split_at_utc_midnight_and_filter_patients() {
    let a = analytics();
    let midnight = DAY0 + DAY;
    load(
        &a,
        &[
            // Patient 1: day 0 → (100 + 120) / 2 = 110; day 1 → (200 + 220) / 2 = 210.
            ("p1a", 1, midnight - HOUR, 100.0),
            ("p1b", 1, midnight - 1, 120.0),
            ("p1c", 1, midnight, 200.0),
            ("p1d", 1, midnight + HOUR, 220.0),
            // Patient 2: day 0 → 150.
            ("p2a", 2, DAY0, 150.0),
            // Patient 3: day 1 → 90.
            ("p3a", 3, midnight + 2 * HOUR, 90.0),
        ],
    );
    let day = |d: u32| chrono::NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
    let two = a.daily_averages(&[2, 1], DAY0, DAY0 + 2 * DAY).unwrap();
    let avg = |patient_id, day, count, mean_mg_dl| DailyAverage {
        patient_id,
        day,
        count,
        mean_mg_dl,
    };
    assert_eq!(
        two,
        vec![
            avg(1, day(18), 2, 110.0),
            avg(1, day(19), 2, 210.0),
            avg(2, day(18), 1, 150.0),
        ]
    );
    assert_eq!(
        serde_json::to_value(&two[0]).unwrap()["day"],
        serde_json::json!("2026-11-18")
    );
    let all = a.daily_averages(&[], DAY0, DAY0 + 2 * DAY).unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[3], avg(3, day(19), 1, 90.0));
    // The period cuts days: only day 1's readings before 01:00 + 1 ms.
    let cut = a.daily_averages(&[1], midnight, midnight + HOUR).unwrap();
    assert_eq!(cut, vec![avg(1, day(19), 1, 200.0)]);
}

#[test]
fn patient_summaries_give_count_mean_min_and_max_per_patient() {
    let a = analytics();
    load(
        &a,
        &[
            ("a", 1, DAY0, 100.0),
            ("b", 1, DAY0 + HOUR, 200.0),
            ("c", 1, DAY0 + 2 * HOUR, 60.0), // (100 + 200 + 60) / 3 = 120
            ("d", 2, DAY0 + HOUR, 90.0),
            ("e", 2, DAY0 + DAY, 300.0), // at the period's end: excluded
            ("f", 3, DAY0 - 1, 300.0),   // before it
        ],
    );
    let s = a.patient_summaries(DAY0, DAY0 + DAY).unwrap();
    let got: Vec<(u64, u64, f64, f64, f64)> = s
        .iter()
        .map(|p| {
            (
                p.patient_id,
                p.count,
                p.mean_mg_dl,
                p.min_mg_dl,
                p.max_mg_dl,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![(1, 3, 120.0, 60.0, 200.0), (2, 1, 90.0, 90.0, 90.0)]
    );
}

// ---------------------------------------------------------------- sink

/// Writes through the `StorageSink` interface and waits (up to 30 s) for the batch's
/// `durable`; returns whether it completed.
async fn write(sink: &AnalyticsSink, b: &WriteBatch) -> bool {
    let done = Arc::new(AtomicU64::new(0));
    write_counted(sink, b, &done).await;
    completes(&done, 1, Duration::from_secs(30)).await
}

/// Whether `counter` reaches `n` within `limit`.
async fn completes(counter: &AtomicU64, n: u64, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while counter.load(Ordering::SeqCst) < n {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

/// A sink write whose completion bumps `done`.
async fn write_counted(sink: &AnalyticsSink, b: &WriteBatch, done: &Arc<AtomicU64>) {
    let d = done.clone();
    sink.write(
        b,
        Durable::new(move || {
            d.fetch_add(1, Ordering::SeqCst);
        }),
    )
    .await
    .unwrap();
}

fn mixed_batch(range: std::ops::Range<i64>, received_at_ms: i64) -> WriteBatch {
    let mut readings = Vec::new();
    let mut alerts = Vec::new();
    for i in range {
        let id = format!("g{i}");
        readings.push(glucose(
            &id,
            1 + (i % 3) as u64,
            T0 + i * MIN,
            100.0 + i as f64,
        ));
        readings.push(device(&format!("d{i}"), 7, T0 + i * MIN));
        if i % 2 == 0 {
            alerts.push((alert(&id, T0 + i * MIN), AlertStatus::Open));
        }
    }
    WriteBatch {
        readings,
        alerts,
        received_at_ms,
        ..WriteBatch::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_keeps_one_row_per_id_when_batches_repeat_or_overlap() {
    let a = analytics();
    let sink = AnalyticsSink::new(a.clone());
    assert_eq!(sink.name(), "duckdb");
    let first = mixed_batch(0..10, 100);
    assert!(write(&sink, &first).await, "durable completed after commit");
    assert_eq!(counts(&a), (10, 10, 5));
    let snapshot = rows(&a, Table::GlucoseReadings);
    // The same batch again: nothing added, nothing changed, still completed.
    assert!(write(&sink, &first).await);
    assert_eq!(counts(&a), (10, 10, 5));
    assert_eq!(rows(&a, Table::GlucoseReadings), snapshot);
    // An overlapping batch (5..15, received later): only 10..15 are new; the rows already
    // there keep their first receive time.
    assert!(write(&sink, &mixed_batch(5..15, 200)).await);
    assert_eq!(counts(&a), (15, 15, 8));
    let dupes: i64 = a
        .connection()
        .unwrap()
        .query_row(
            "SELECT (SELECT count(*) - count(DISTINCT id) FROM glucose_readings) \
                  + (SELECT count(*) - count(DISTINCT id) FROM device_readings) \
                  + (SELECT count(*) - count(DISTINCT id) FROM alerts)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(dupes, 0);
    let received: Vec<(String, i64)> = {
        let conn = a.connection().unwrap();
        let mut stmt = conn
            .prepare("SELECT regexp_extract(id, '[^:]*$') AS given, received_at_ms FROM glucose_readings \
                 WHERE id LIKE '%:g5' OR id LIKE '%:g14' ORDER BY given")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(received, vec![("g14".into(), 200), ("g5".into(), 100)]);
    // A batch with nothing DuckDB keeps completes at once.
    assert!(write(&sink, &WriteBatch::default()).await);
    sink.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_written_back_to_back_share_commits_and_each_completes_after_its_commit() {
    let a = analytics();
    let sink = AnalyticsSink::new(a.clone());
    let done = Arc::new(AtomicU64::new(0));
    // 200 one-reading batches, written without waiting for their commits.
    for i in 0..200 {
        let batch = WriteBatch {
            readings: vec![glucose(&format!("g{i}"), 1, T0 + i * MIN, 100.0)],
            received_at_ms: 1_000 + i,
            ..WriteBatch::default()
        };
        write_counted(&sink, &batch, &done).await;
    }
    sink.flush().await.unwrap();
    // `flush` returned: everything is committed and acknowledged.
    assert_eq!(done.load(Ordering::SeqCst), 200);
    assert_eq!(counts(&a), (200, 0, 0));
    let stats = sink.stats();
    assert_eq!(stats.batches_completed, 200);
    assert_eq!(stats.rows_added, 200);
    assert_eq!(stats.queued_rows, 0);
    assert_eq!(stats.failures, 0);
    // The first commit starts as soon as one batch is queued; the rest queue up behind it
    // and share the next commits.
    assert!((1..200).contains(&stats.commits), "{stats:?}");
    // Receive times are each batch's own, not the commit's.
    let own_time: i64 = a
        .connection()
        .unwrap()
        .query_row(
            &format!(
                "SELECT count(*) FROM glucose_readings \
                 WHERE received_at_ms = 1000 + (at_ms - {T0}) // {MIN}"
            ),
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(own_time, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_makes_writes_wait_and_loses_nothing() {
    let a = analytics();
    // Room for 10 rows: writers of 4-row batches wait for commits to free space.
    let sink = AnalyticsSink::with_max_queued_rows(a.clone(), 10);
    let done = Arc::new(AtomicU64::new(0));
    for b in 0..50 {
        let batch = WriteBatch {
            readings: (0..4)
                .map(|i| glucose(&format!("g{b}-{i}"), 1, T0 + (b * 4 + i) * MIN, 90.0))
                .collect(),
            received_at_ms: b,
            ..WriteBatch::default()
        };
        write_counted(&sink, &batch, &done).await;
        assert!(sink.stats().queued_rows <= 10, "{:?}", sink.stats());
    }
    sink.flush().await.unwrap();
    assert_eq!(done.load(Ordering::SeqCst), 50);
    assert_eq!(counts(&a), (200, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_is_retried_and_completes_once_duckdb_accepts_it() {
    let dir = tempfile::tempdir().unwrap();
    let a = Analytics::open(dir.path().join("a.duckdb")).unwrap();
    // Move the table away from under the sink: commits fail until it is back.
    a.connection()
        .unwrap()
        .execute_batch("ALTER TABLE glucose_readings RENAME TO glucose_readings_away")
        .unwrap();
    let sink = AnalyticsSink::new(a.clone());
    let done = Arc::new(AtomicU64::new(0));
    write_counted(&sink, &mixed_batch(0..2, 1), &done).await;
    // Two failed attempts: the first and a retry.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while sink.stats().failures < 2 {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", sink.stats());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stats = sink.stats();
    let error = stats.last_error.clone().unwrap();
    assert!(error.contains("glucose_readings"), "{error}");
    assert_eq!(
        stats.queued_rows, 5,
        "2 + 2 readings and 1 alert stay queued"
    );
    assert_eq!(
        done.load(Ordering::SeqCst),
        0,
        "nothing acknowledged before its commit"
    );
    // Nothing of a failed commit is left behind (one transaction): the device rows staged
    // beside the failing ones are not there.
    assert_eq!(a.count(Table::DeviceReadings).unwrap(), 0);
    // Put the table back: the next retry commits the batch, whole, once.
    a.connection()
        .unwrap()
        .execute_batch("ALTER TABLE glucose_readings_away RENAME TO glucose_readings")
        .unwrap();
    assert!(
        completes(&done, 1, Duration::from_secs(30)).await,
        "{:?}",
        sink.stats()
    );
    sink.flush().await.unwrap();
    assert_eq!(counts(&a), (2, 2, 1));
    let stats = sink.stats();
    assert_eq!(stats.last_error, None);
    assert_eq!(stats.queued_rows, 0);
}

// ---------------------------------------------------------------- catch-up

async fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
    (Arc::new(s), dir)
}

/// Five batches of 4 glucose readings, 4 telemetry rows and 2 alerts, received at 100..500.
fn five_batches() -> Vec<WriteBatch> {
    (0..5)
        .map(|b| mixed_batch(b * 4..b * 4 + 4, 100 * (b + 1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_copies_the_store_into_an_empty_duckdb_identically_and_only_once() {
    let (store, _dir) = sqlite().await;
    let batches = five_batches();
    // The reference: the same batches through the sink.
    let reference = analytics();
    let sink = AnalyticsSink::new(reference.clone());
    for b in &batches {
        store.write_batch(b).await.unwrap();
        assert!(write(&sink, b).await);
    }
    assert_eq!(counts(&reference), (20, 20, 10));

    let a = analytics();
    // Pages of 3 rows: many pages, some ending inside one receive time.
    let done = a.catch_up_paged(store.as_ref(), 3).await.unwrap();
    assert_eq!(
        done,
        CatchUp {
            read: 50,
            glucose_readings: 20,
            device_readings: 20,
            alerts: 10
        }
    );
    for t in Table::ALL {
        assert_eq!(rows(&a, t), rows(&reference, t), "{} differs", t.name());
    }
    // Again: it re-reads only the rows received at DuckDB's newest receive time (the last
    // batch: 4 + 4 + 2) and adds nothing.
    let again = a.catch_up(store.as_ref()).await.unwrap();
    assert_eq!(
        again,
        CatchUp {
            read: 10,
            ..CatchUp::default()
        }
    );
    assert_eq!(counts(&a), (20, 20, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_adds_only_what_a_partly_filled_duckdb_lacks() {
    let (store, _dir) = sqlite().await;
    let batches = five_batches();
    for b in &batches {
        store.write_batch(b).await.unwrap();
    }
    let a = analytics();
    let sink = AnalyticsSink::new(a.clone());
    // DuckDB saw the first two batches (received at 100 and 200) only.
    for b in &batches[..2] {
        assert!(write(&sink, b).await);
    }
    assert_eq!(counts(&a), (8, 8, 4));
    let done = a.catch_up_paged(store.as_ref(), 4).await.unwrap();
    // Read from receive time 200: batches 2..5 (4 batches × 10 rows); new: the last three.
    assert_eq!(
        done,
        CatchUp {
            read: 40,
            glucose_readings: 12,
            device_readings: 12,
            alerts: 6
        }
    );
    assert_eq!(counts(&a), (20, 20, 10));
    let reference = analytics();
    for b in &batches {
        reference.append_batch(b).unwrap();
    }
    for t in Table::ALL {
        assert_eq!(rows(&a, t), rows(&reference, t), "{} differs", t.name());
    }
}

// ---------------------------------------------------------------- end to end

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_stream_reaches_duckdb_whole_and_every_item_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let a = Analytics::open(dir.path().join("analytics.duckdb")).unwrap();
    let config = sqlite_host_config(
        &dir.path().join("g.db"),
        64,
        vec![rule("glucoguard_default_rule", &[])],
    );
    let app = app::start_with(&config, vec![Arc::new(AnalyticsSink::new(a.clone()))])
        .await
        .unwrap();
    let sim = glucoguard_simulator::SimConfig {
        patients: 4,
        duration: chrono::Duration::hours(12),
        ..glucoguard_simulator::SimConfig::default()
    };
    let events: Vec<String> = glucoguard_simulator::Simulator::new(sim)
        .map(|e| e.to_json_line())
        .collect();
    let source = app.handle.embedded_source("simulator");
    let acked = AckCounter::default();
    for e in &events {
        source
            .send_with_ack(e.clone().into_bytes(), acked.ack())
            .await
            .unwrap();
    }
    acked
        .wait_for(events.len() as u64, Duration::from_secs(60))
        .await;
    // Acknowledged once stored; DuckDB is fed from the store right after.
    wait_caught_up(&app, Duration::from_secs(60)).await;
    let store = app.store.counts().await.unwrap();
    assert!(store.glucose_readings > 0 && store.device_readings > 0 && store.alerts > 0);
    assert_eq!(
        counts(&a),
        (store.glucose_readings, store.device_readings, store.alerts)
    );
    // Every reading DuckDB holds was counted once per patient.
    let per_patient: u64 = a
        .patient_summaries(i64::MIN, i64::MAX)
        .unwrap()
        .iter()
        .map(|s| s.count)
        .sum();
    assert_eq!(per_patient, store.glucose_readings);
    stop(app).await;
    assert_eq!(acked.count(), events.len() as u64);
}
