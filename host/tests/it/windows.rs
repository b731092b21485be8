//! Window semantics and thresholds of the default rule, end to end through the Wasm component:
//! through `backtest` (which evaluates with exact event-time semantics), and through a started
//! host (the streaming path, whose history is trimmed to lookback + lateness).

use crate::support::*;
use glucoguard::app::App;
use glucoguard::backtest;
use glucoguard::model::ParamValue;
use glucoguard::model::parse::given_reading_id;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Runs the default rule over lines; returns (reading_id, code) of every alert.
fn alerts(lines: &[String], params: &[(&str, f64)]) -> BTreeSet<(String, String)> {
    let engine = engine();
    let rule = load(&engine, "glucoguard_default_rule");
    let overrides: BTreeMap<String, ParamValue> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), ParamValue::Float(*v)))
        .collect();
    let mut out = Vec::new();
    let s = backtest::run(rule, &overrides, lines.join("\n").as_bytes(), &mut out).unwrap();
    assert_eq!(s.faults, 0);
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["reading_id"].as_str().unwrap().to_owned(),
                v["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn ids(set: &BTreeSet<(String, String)>) -> BTreeSet<&str> {
    set.iter().map(|(id, _)| id.as_str()).collect()
}

#[test]
fn a_reading_exactly_ten_minutes_older_is_outside_the_window() {
    let lines = vec![
        glucose_json("a", 1, T0, 113.0),
        glucose_json("b", 1, T0 + 10 * MIN, 100.0), // alone: 100; with a: 106.5
        glucose_json("c", 2, T0, 113.0),
        glucose_json("d", 2, T0 + 10 * MIN - 1, 100.0), // a millisecond inside: 106.5
    ];
    let got = alerts(&lines, &[]);
    assert!(!ids(&got).contains("b"), "b must not see a: {got:?}");
    assert!(
        got.contains(&("d".into(), "high-average".into())),
        "d must see c: {got:?}"
    );
}

#[test]
fn equal_timestamps_are_in_each_others_window() {
    let lines = vec![
        glucose_json("a", 1, T0, 100.0),
        glucose_json("b", 1, T0, 112.0),
    ];
    // Each alone stays under both thresholds; together the average is 106.
    let got = alerts(&lines, &[]);
    assert_eq!(ids(&got), BTreeSet::from(["a", "b"]), "{got:?}");
}

#[test]
fn exactly_115_and_an_average_of_exactly_105_do_not_alert() {
    // Average threshold out of the way: only the reading threshold is tested.
    let got = alerts(
        &[
            glucose_json("at", 1, T0, 115.0),
            glucose_json("above", 2, T0, 115.1),
        ],
        &[("avg_high_mg_dl", 600.0)],
    );
    assert_eq!(ids(&got), BTreeSet::from(["above"]), "{got:?}");
    // Average of exactly 105 (100 and 110), then just above it.
    let got = alerts(
        &[
            glucose_json("p1", 1, T0, 100.0),
            glucose_json("p2", 1, T0 + 5 * MIN, 110.0),
            glucose_json("q1", 2, T0, 100.0),
            glucose_json("q2", 2, T0 + 5 * MIN, 110.2),
        ],
        &[],
    );
    assert!(
        !ids(&got).contains("p2"),
        "mean exactly 105 must not alert: {got:?}"
    );
    assert!(
        got.contains(&("q2".into(), "high-average".into())),
        "{got:?}"
    );
}

#[test]
fn backtest_result_does_not_depend_on_file_order() {
    let mut lines = Vec::new();
    for p in 0..5u64 {
        for i in 0..200i64 {
            let v = 90.0 + ((i * 7 + p as i64 * 13) % 40) as f64;
            lines.push(glucose_json(&format!("{p}-{i}"), p, T0 + i * 5 * MIN, v));
        }
    }
    let sorted = alerts(&lines, &[]);
    assert!(
        sorted.len() > 50,
        "the data set should alert often, got {}",
        sorted.len()
    );
    let mut shuffled = lines.clone();
    shuffled.reverse();
    shuffled.swap(3, 700);
    shuffled.rotate_left(333);
    assert_eq!(alerts(&shuffled, &[]), sorted);
}

// ---------------------------------------------------------------------------------------------
// The streaming path: a started host, readings through the embedded source.
// ---------------------------------------------------------------------------------------------

/// The default rule's lookback: its one window, `avg-10m`.
const LOOKBACK_MS: i64 = 10 * MIN;

/// Starts a host on a fresh SQLite file under `dir` with the default rule and `params`.
async fn host(
    dir: &Path,
    max_batch: usize,
    tune: impl FnOnce(&mut glucoguard::config::Config),
    params: &[(&str, f64)],
) -> App {
    let mut config = sqlite_host_config(
        &dir.join("w.db"),
        max_batch,
        vec![rule("glucoguard_default_rule", params)],
    );
    tune(&mut config);
    glucoguard::app::start(&config).await.unwrap()
}

/// Every stored alert (suppressed ones included): (reading id as sent, code) → value.
async fn stored_alerts(app: &App) -> BTreeMap<(String, String), Option<f64>> {
    let alerts = app.store.alerts(100_000).await.unwrap();
    let mut out = BTreeMap::new();
    for (a, _status) in alerts {
        let key = (given_reading_id(&a.reading_id).to_owned(), a.code.clone());
        assert!(
            out.insert(key, a.value).is_none(),
            "two alerts of one code on one reading: {a:?}"
        );
    }
    out
}

/// The default rule over `lines` through `backtest`: (reading id, code) → value.
fn backtest_alerts(
    lines: &[String],
    params: &[(&str, f64)],
) -> BTreeMap<(String, String), Option<f64>> {
    let engine = engine();
    let rule = load(&engine, "glucoguard_default_rule");
    let overrides: BTreeMap<String, ParamValue> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), ParamValue::Float(*v)))
        .collect();
    let mut out = Vec::new();
    let s = backtest::run(rule, &overrides, lines.join("\n").as_bytes(), &mut out).unwrap();
    assert_eq!((s.faults, s.invalid), (0, 0));
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                (
                    v["reading_id"].as_str().unwrap().to_owned(),
                    v["code"].as_str().unwrap().to_owned(),
                ),
                v["value"].as_f64(),
            )
        })
        .collect()
}

fn avg(id: &str, value: f64) -> ((String, String), Option<f64>) {
    ((id.to_owned(), "high-average".to_owned()), Some(value))
}

/// Only the average decides: the reading threshold is out of the way.
const AVERAGE_ONLY: f64 = 600.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_a_reading_exactly_ten_minutes_older_is_outside_the_window() {
    let dir = tempfile::tempdir().unwrap();
    // 130 alone is above 110; 100 alone is not; together (115) they are.
    let params = [("high_mg_dl", AVERAGE_ONLY), ("avg_high_mg_dl", 110.0)];
    let app = host(dir.path(), 1, |_| {}, &params).await;
    let lines = [
        glucose_json("a", 1, T0, 130.0),
        glucose_json("b", 1, T0 + 10 * MIN, 100.0), // exactly 10 min after a: alone
        glucose_json("c", 2, T0, 130.0),
        glucose_json("d", 2, T0 + 10 * MIN - 1, 100.0), // one ms less: sees c
    ];
    send_each(&app, &lines).await;
    let got = stored_alerts(&app).await;
    stop(app).await;
    assert_eq!(
        got,
        BTreeMap::from([avg("a", 130.0), avg("c", 130.0), avg("d", 115.0)]),
        "b must not see a (exactly 10 min older); d must see c (one ms inside)"
    );
    assert_eq!(got, backtest_alerts(&lines, &params), "same as backtest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_a_late_reading_sees_the_readings_before_it_and_changes_no_earlier_alert() {
    let dir = tempfile::tempdir().unwrap();
    let params = [("high_mg_dl", AVERAGE_ONLY), ("avg_high_mg_dl", 110.0)];
    // Default lateness: 3600 s.
    let app = host(dir.path(), 1, |_| {}, &params).await;
    let on_time = [
        glucose_json("r1", 1, T0, 130.0),
        glucose_json("r2", 1, T0 + 4 * MIN, 130.0),
        glucose_json("r3", 1, T0 + 8 * MIN, 160.0),
        glucose_json("s1", 2, T0, 130.0),
        glucose_json("s2", 2, T0 + 55 * MIN, 100.0),
    ];
    send_each(&app, &on_time).await;
    let before = stored_alerts(&app).await;
    assert_eq!(
        before,
        BTreeMap::from([
            avg("r1", 130.0),
            avg("r2", 130.0),
            avg("r3", 140.0), // (130 + 130 + 160) / 3
            avg("s1", 130.0),
        ])
    );
    let late = [
        // 2 min behind patient 1's newest: window (T0 − 4 min, T0 + 6 min] by event time holds
        // r1, r2 and itself (120), not r3, which arrived before it but is later.
        glucose_json("late1", 1, T0 + 6 * MIN, 100.0),
        // 50 min behind patient 2's newest, still within the lateness: sees s1 (115).
        glucose_json("late2", 2, T0 + 5 * MIN, 100.0),
    ];
    send_each(&app, &late).await;
    let after = stored_alerts(&app).await;
    stop(app).await;
    let mut expected = before.clone();
    expected.extend([avg("late1", 120.0), avg("late2", 115.0)]);
    assert_eq!(
        after, expected,
        "the late readings see the readings before them by event time; r3's alert (whose window \
         late1 falls into) is not re-evaluated"
    );
    // What arrived on time is exactly what backtest says about the whole, except r3, which
    // backtest sees with late1 in its window.
    let all: Vec<String> = on_time.iter().chain(&late).cloned().collect();
    let mut exact = backtest_alerts(&all, &params);
    assert_eq!(
        exact.remove(&("r3".into(), "high-average".into())),
        Some(Some(130.0))
    );
    let mut streamed = after;
    streamed.remove(&("r3".to_owned(), "high-average".to_owned()));
    assert_eq!(streamed, exact);
}

/// A seeded stream for 3 patients in event-time order: readings 3 to 7 minutes apart, values
/// 88..=135 mg/dL, so both the reading and the average threshold are crossed often.
fn stream(readings_per_patient: i64) -> Vec<String> {
    let mut rows = Vec::new();
    for p in 1..=3u64 {
        let mut t = T0 + p as i64 * 17_000;
        for i in 0..readings_per_patient {
            let k = i * 31 + p as i64 * 7;
            t += (3 + k % 5) * MIN + (k % 11) * 1000;
            let v = 88.0 + ((k * 13) % 48) as f64;
            rows.push((t, glucose_json(&format!("p{p}-{i}"), p, t, v)));
        }
    }
    rows.sort();
    rows.into_iter().map(|(_, l)| l).collect()
}

/// Runs `lines` through a host with batches of at most `max_batch` readings (all sent at once,
/// a partial batch waiting up to `max_wait_ms` for more); returns the alerts and the number of
/// batches the pipeline made.
async fn streamed(
    lines: &[String],
    max_batch: usize,
    max_wait_ms: u64,
) -> (BTreeMap<(String, String), Option<f64>>, u64) {
    let dir = tempfile::tempdir().unwrap();
    let app = host(
        dir.path(),
        max_batch,
        |c| c.pipeline.max_wait_ms = max_wait_ms,
        &[],
    )
    .await;
    send_all(&app, lines.iter().cloned()).await;
    let got = stored_alerts(&app).await;
    let handle = app.handle.clone();
    stop(app).await;
    (got, handle.stats().batches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_in_batches_of_one_gives_the_backtest_alerts() {
    let lines = stream(150);
    let expected = backtest_alerts(&lines, &[]);
    assert!(
        expected.keys().any(|(_, c)| c == "high-average")
            && expected.keys().any(|(_, c)| c == "high-reading"),
        "the stream should raise both codes: {expected:?}"
    );
    let (got, batches) = streamed(&lines, 1, 2).await;
    assert_eq!(batches, lines.len() as u64, "every reading its own batch");
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_in_large_batches_gives_the_backtest_alerts() {
    // 450 readings over about 13 hours: one batch holds far more than lookback + lateness
    // (70 min) of every patient's readings, in event-time order — nothing is late.
    let lines = stream(150);
    let expected = backtest_alerts(&lines, &[]);
    let (got, batches) = streamed(&lines, 1024, 1000).await;
    assert!(
        batches <= 5,
        "the readings should share a few batches, got {batches}"
    );
    let missing: Vec<_> = expected
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .collect();
    let extra: Vec<_> = got
        .iter()
        .filter(|(k, v)| expected.get(*k) != Some(*v))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "in {batches} batch(es), {} of {} backtest alerts are missing or carry another value, \
         {} are streaming only; e.g. backtest {:?}, streaming {:?}",
        missing.len(),
        expected.len(),
        extra.len(),
        &missing[..missing.len().min(5)],
        &extra[..extra.len().min(5)],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_a_reading_later_than_the_lateness_sees_only_the_retention() {
    let dir = tempfile::tempdir().unwrap();
    let params = [("high_mg_dl", AVERAGE_ONLY), ("avg_high_mg_dl", 100.0)];
    // Retention = lookback (10 min) + lateness (1 min) = 11 min behind the subject's newest.
    let lateness_secs = 60;
    let retention_ms = LOOKBACK_MS + lateness_secs as i64 * 1000;
    let app = host(
        dir.path(),
        1,
        |c| c.pipeline.lateness_secs = lateness_secs,
        &params,
    )
    .await;
    let newest = T0 + 20 * MIN;
    let horizon = newest - retention_ms; // T0 + 9 min: readings at or before it are gone
    let on_time = [
        glucose_json("a", 1, T0 + 6 * MIN, 90.0), // before the horizon once n arrived
        glucose_json("b", 1, T0 + 10 * MIN, 150.0), // after it
        glucose_json("n", 1, newest, 90.0),
    ];
    send_each(&app, &on_time).await;
    let late = [
        // 5 min behind the newest (lateness: 1 min). Its window (T0 + 5, T0 + 15] by event
        // time holds a, b and itself (mean 120), but a is older than the retention: it sees
        // b and itself only, mean 135.
        glucose_json("late", 1, T0 + 15 * MIN, 120.0),
        // 12 min behind the newest, itself before the horizon: its window (T0 − 2, T0 + 8]
        // would hold a and itself (mean 105), but a is gone: it sees itself only (120). It
        // is evaluated before the batch is trimmed, so it is in its own window; the trim
        // drops it right after.
        glucose_json("too-late", 1, T0 + 8 * MIN, 120.0),
    ];
    // a (T0 + 6) and too-late (T0 + 8) at or before the horizon, b (T0 + 10) after it.
    assert!((T0 + 8 * MIN..T0 + 10 * MIN).contains(&horizon));
    send_each(&app, &late).await;
    let got = stored_alerts(&app).await;
    let counts = app.store.counts().await.unwrap();
    stop(app).await;
    assert_eq!(
        counts.glucose_readings, 5,
        "every reading is stored, late or not"
    );
    assert_eq!(
        got,
        BTreeMap::from([
            avg("b", 120.0), // (90 + 150) / 2: on time, a full window
            avg("late", 135.0),
            avg("too-late", 120.0),
        ]),
        "a reading later than the lateness sees only what lies within the retention"
    );
    // With everything kept (backtest), the same readings see their whole window.
    let all: Vec<String> = on_time.iter().chain(&late).cloned().collect();
    let exact = backtest_alerts(&all, &params);
    assert_eq!(
        exact.get(&("late".into(), "high-average".into())),
        Some(&Some(120.0))
    );
    assert_eq!(
        exact.get(&("too-late".into(), "high-average".into())),
        Some(&Some(105.0))
    );
}
