//! The example rules end to end through a started host: `rate-of-change` judges each reading
//! against the `previous` reading the host supplies (latest strictly earlier by event time,
//! ties: largest value), and `device-health` sees device telemetry — which reaches device
//! rules only, never the glucose rules nor the glucose windows.

use crate::support::*;
use glucoguard::app::App;
use glucoguard::model::parse::given_reading_id;
use glucoguard::model::{ReadingKind, Severity};
use std::collections::BTreeMap;
use std::time::Duration;

/// What the tests compare of one stored alert.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    severity: Severity,
    value: Option<f64>,
    kind: ReadingKind,
    patient_id: Option<u64>,
    device_id: u64,
}

type Alerts = BTreeMap<(String, String, String), Seen>;

/// Every stored alert: (rule, reading id as sent, code) → what it says.
async fn stored_alerts(app: &App) -> Alerts {
    let mut out = BTreeMap::new();
    for (a, _status) in app.store.alerts(10_000).await.unwrap() {
        let key = (
            a.rule.name.clone(),
            given_reading_id(&a.reading_id).to_owned(),
            a.code.clone(),
        );
        let seen = Seen {
            severity: a.severity,
            value: a.value,
            kind: a.kind,
            patient_id: a.patient_id,
            device_id: a.device_id,
        };
        assert!(out.insert(key, seen).is_none(), "duplicate alert {a:?}");
    }
    out
}

/// Device telemetry as producers send it: `fields` among battery_level, connectivity_status,
/// firmware_version, error_codes.
fn device_json(id: &str, device: u64, at_ms: i64, fields: serde_json::Value) -> String {
    let mut v = serde_json::json!({
        "reading_id": id,
        "device_id": device,
        "timestamp": glucoguard::model::format_ms(at_ms),
    });
    v.as_object_mut()
        .unwrap()
        .extend(fields.as_object().unwrap().clone());
    v.to_string()
}

fn glucose_alert(severity: Severity, value: f64, patient: u64) -> Seen {
    Seen {
        severity,
        value: Some(value),
        kind: ReadingKind::Glucose,
        patient_id: Some(patient),
        device_id: 1000 + patient,
    }
}

fn key(rule: &str, reading: &str, code: &str) -> (String, String, String) {
    (rule.to_owned(), reading.to_owned(), code.to_owned())
}

/// Alert values are rates and means computed in floating point: compare them to 1e-9.
fn assert_same(got: &Alerts, expected: &Alerts) {
    let close = |a: &Seen, b: &Seen| {
        let values = match (a.value, b.value) {
            (Some(x), Some(y)) => (x - y).abs() < 1e-9,
            (x, y) => x == y,
        };
        values
            && Seen {
                value: None,
                ..a.clone()
            } == Seen {
                value: None,
                ..b.clone()
            }
    };
    let same = got.len() == expected.len()
        && got
            .iter()
            .all(|(k, a)| expected.get(k).is_some_and(|b| close(a, b)));
    assert!(same, "got:\n{got:#?}\nexpected:\n{expected:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_of_change_alerts_come_from_the_previous_reading_the_host_supplies() {
    let dir = tempfile::tempdir().unwrap();
    let app = glucoguard::app::start(&sqlite_host_config(
        &dir.path().join("r.db"),
        1,
        vec![
            rule("glucoguard_rate_of_change", &[]),
            rule("glucoguard_device_health", &[]),
        ],
    ))
    .await
    .unwrap();
    // Patient 7 (its glucose device is 1007). Device 7 — the same number as the patient —
    // reports a battery of 50 %: if telemetry leaked into the patient's glucose history, a
    // glucose reading's `previous` would be 50 and the rates below would be wrong.
    let battery =
        |id: &str, at: i64| device_json(id, 7, at, serde_json::json!({"battery_level": 50}));
    let lines = [
        glucose_json("g0", 7, T0, 120.0), // no previous: not judged
        glucose_json("g1", 7, T0 + 5 * MIN, 109.0), // −11 in 5 min: −2.2/min, falling
        battery("b1", T0 + 7 * MIN),
        glucose_json("g2", 7, T0 + 10 * MIN, 65.0), // −8.8/min and below 70: critical
        battery("b2", T0 + 14 * MIN),
        glucose_json("g3", 7, T0 + 15 * MIN, 85.0), // +4.0/min from g2 (not from b2's 50)
        glucose_json("g4", 7, T0 + 20 * MIN, 95.0), // +2.0/min: under the rise limit
        glucose_json("g5", 7, T0 + 40 * MIN, 200.0), // 20 min gap (> 15): not judged
        // Two readings at one time: each has g5 as previous.
        glucose_json("g6a", 7, T0 + 45 * MIN, 100.0), // −20/min
        glucose_json("g6b", 7, T0 + 45 * MIN, 140.0), // −12/min
        // Previous of a tie is the largest value (140): −3/min; 100 would give a rise.
        glucose_json("g7", 7, T0 + 50 * MIN, 125.0),
        glucose_json("g8", 7, T0 + 60 * MIN, 125.0), // 0/min from g7
        // Late: previous by event time is g7 (T0 + 50), not g8, which arrived before it;
        // g8 is not judged again (against g9 it would be a rise of 5/min).
        glucose_json("g9", 7, T0 + 55 * MIN, 100.0), // −5/min
    ];
    send_each(&app, &lines).await;
    let got = stored_alerts(&app).await;
    let handle = app.handle.clone();
    stop(app).await;
    let roc = |id: &str, code: &str, severity, rate| {
        (
            key("rate-of-change", id, code),
            glucose_alert(severity, rate, 7),
        )
    };
    let expected: Alerts = BTreeMap::from([
        roc("g1", "falling-fast", Severity::Warning, -2.2),
        roc("g2", "falling-fast", Severity::Critical, -8.8),
        roc("g3", "rising-fast", Severity::Warning, 4.0),
        roc("g6a", "falling-fast", Severity::Warning, -20.0),
        roc("g6b", "falling-fast", Severity::Warning, -12.0),
        roc("g7", "falling-fast", Severity::Warning, -3.0),
        roc("g9", "falling-fast", Severity::Warning, -5.0),
    ]);
    assert_same(&got, &expected);
    let readings = |name: &str| {
        handle
            .stats()
            .rules
            .iter()
            .find(|r| r.rule.name == name)
            .map(|r| r.metrics.readings)
    };
    assert_eq!(
        readings("rate-of-change"),
        Some(11),
        "glucose readings only"
    );
    assert_eq!(readings("device-health"), Some(2), "telemetry only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_health_alerts_on_telemetry_and_device_readings_reach_only_device_rules() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sqlite_host_config(
        &dir.path().join("d.db"),
        64,
        vec![
            rule("glucoguard_default_rule", &[]),
            rule("glucoguard_rate_of_change", &[]),
            rule("glucoguard_device_health", &[]),
        ],
    );
    // One mixed batch: each rule gets its kinds' readings out of it, and its alerts must land
    // on the right readings.
    config.pipeline.max_wait_ms = 500;
    let app = glucoguard::app::start(&config).await.unwrap();
    let dev = |id: &str, device, at, fields| device_json(id, device, at, fields);
    let lines = [
        // Device 8 reports a 5 % battery just before patient 8's reading: mixed into the
        // patient's glucose window it would pull the 10-minute average of 110 under 105.
        dev(
            "d1",
            8,
            T0,
            serde_json::json!({"battery_level": 5, "connectivity_status": "Disconnected", "error_codes": ["E12", "E40"]}),
        ),
        glucose_json("p8", 8, T0 + MIN, 110.0), // default rule: high-average 110
        dev(
            "d2",
            7,
            T0 + MIN,
            serde_json::json!({"battery_level": 15, "connectivity_status": "Connected"}),
        ), // exactly 15 %: fine
        dev(
            "d3",
            7,
            T0 + 2 * MIN,
            serde_json::json!({"battery_level": 14.9, "connectivity_status": "Poor Connection"}),
        ), // low battery; poor is not disconnected
        glucose_json("p7", 7, T0 + 2 * MIN, 250.0), // default rule: high-reading, critical
        dev(
            "d4",
            9,
            T0 + 3 * MIN,
            serde_json::json!({"connectivity_status": "Connected", "error_codes": "E7"}),
        ), // error codes as one string; no battery reported
        dev(
            "d5",
            9,
            T0 + 4 * MIN,
            serde_json::json!({"firmware_version": "2.1.0"}),
        ), // nothing wrong
        // Patient 7's glucose device reports telemetry too: the alert names that device.
        dev(
            "d6",
            1007,
            T0 + 4 * MIN,
            serde_json::json!({"battery_level": 3}),
        ),
    ];
    let source = app.handle.embedded_source("t");
    let acked = AckCounter::default();
    for l in &lines {
        source
            .send_with_ack(l.clone().into_bytes(), acked.ack())
            .await
            .unwrap();
    }
    acked
        .wait_for(lines.len() as u64, Duration::from_secs(30))
        .await;
    let got = stored_alerts(&app).await;
    let messages: BTreeMap<String, String> = app
        .store
        .alerts(100)
        .await
        .unwrap()
        .into_iter()
        .map(|(a, _)| {
            (
                format!("{}/{}", given_reading_id(&a.reading_id), a.code),
                a.message,
            )
        })
        .collect();
    let handle = app.handle.clone();
    stop(app).await;

    let device = |id: &str, code: &str, device_id, value| {
        (
            key("device-health", id, code),
            Seen {
                severity: Severity::Warning,
                value,
                kind: ReadingKind::Device,
                patient_id: None,
                device_id,
            },
        )
    };
    let expected: Alerts = BTreeMap::from([
        device("d1", "low-battery", 8, Some(5.0)),
        device("d1", "disconnected", 8, None),
        device("d1", "device-error", 8, None),
        device("d3", "low-battery", 7, Some(14.9)),
        device("d4", "device-error", 9, None),
        device("d6", "low-battery", 1007, Some(3.0)),
        (
            key("default-glucose", "p8", "high-average"),
            glucose_alert(Severity::Warning, 110.0, 8),
        ),
        (
            key("default-glucose", "p7", "high-reading"),
            glucose_alert(Severity::Critical, 250.0, 7),
        ),
    ]);
    assert_same(&got, &expected);
    assert!(
        messages["d1/device-error"].contains("E12, E40"),
        "{messages:?}"
    );
    assert!(messages["d4/device-error"].contains("E7"), "{messages:?}");

    let stats = handle.stats();
    assert_eq!(stats.batches, 1, "the readings should share one batch");
    let readings: BTreeMap<&str, u64> = stats
        .rules
        .iter()
        .map(|r| (r.rule.name.as_str(), r.metrics.readings))
        .collect();
    assert_eq!(
        readings,
        BTreeMap::from([
            ("default-glucose", 2),
            ("rate-of-change", 2),
            ("device-health", 6)
        ]),
        "device readings reach the device rule only, glucose readings the glucose rules only"
    );
}
