//! JSON lines parse back and carry exactly the documented fields, types and formats.

use chrono::DateTime;
use serde_json::{Map, Value};

use glucoguard_simulator::{Scenario, ScenarioKind, SimConfig};

use crate::common::{config, json_lines, run};

const GLUCOSE_KEYS: [&str; 6] = [
    "reading_id",
    "patient_id",
    "device_id",
    "glucose_level",
    "timestamp",
    "location",
];
const DEVICE_KEYS: [&str; 7] = [
    "reading_id",
    "device_id",
    "timestamp",
    "battery_level",
    "firmware_version",
    "connectivity_status",
    "error_codes",
];

fn keys(obj: &Map<String, Value>) -> Vec<&str> {
    obj.keys().map(String::as_str).collect()
}

#[test]
fn every_line_parses_back_with_exactly_the_documented_fields() {
    let cfg = SimConfig {
        scenarios: vec![
            Scenario::new(ScenarioKind::SensorFailure),
            Scenario::new(ScenarioKind::LateBurst).for_patient(2),
        ],
        ..config(5, 2, 77)
    };
    let text = json_lines(&run(cfg));
    let (mut glucose, mut device) = (0, 0);
    for line in text.lines() {
        let value: Value = serde_json::from_str(line).unwrap();
        let obj = value.as_object().unwrap();
        let ts = obj["timestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z') && ts.len() == 20, "{ts}");
        DateTime::parse_from_rfc3339(ts).unwrap();
        assert!(obj["reading_id"].as_str().is_some());
        assert!(obj["device_id"].as_u64().is_some());
        if obj.contains_key("glucose_level") {
            glucose += 1;
            let mut k = keys(obj);
            k.sort_unstable();
            let mut want = GLUCOSE_KEYS.to_vec();
            want.sort_unstable();
            assert_eq!(k, want, "{line}");
            assert!(obj["patient_id"].as_u64().is_some());
            let level = obj["glucose_level"].as_f64().unwrap();
            assert!(
                line.contains(&format!("\"glucose_level\":{level:.1}")),
                "{line}"
            );
            assert!(["home", "work", "gym", "out"].contains(&obj["location"].as_str().unwrap()));
            assert!(obj["reading_id"].as_str().unwrap().starts_with("g-"));
        } else {
            device += 1;
            let mut k = keys(obj);
            k.sort_unstable();
            let mut want = DEVICE_KEYS.to_vec();
            want.sort_unstable();
            assert_eq!(k, want, "{line}");
            let battery = obj["battery_level"].as_f64().unwrap();
            assert!((0.0..=100.0).contains(&battery));
            assert!(!obj["firmware_version"].as_str().unwrap().is_empty());
            assert!(
                ["Connected", "Disconnected", "Poor Connection"]
                    .contains(&obj["connectivity_status"].as_str().unwrap())
            );
            for code in obj["error_codes"].as_array().unwrap() {
                let code = code.as_str().unwrap();
                assert!(code.starts_with('E') && code.len() == 4, "{code}");
            }
            assert!(obj["reading_id"].as_str().unwrap().starts_with("d-"));
        }
    }
    assert!(glucose > 2000 && device > 800, "{glucose} {device}");
}

#[test]
fn field_order_is_the_documented_order() {
    let events = run(config(2, 1, 1));
    let g = events
        .iter()
        .find(|e| e.as_glucose().is_some())
        .unwrap()
        .to_json_line();
    let d = events
        .iter()
        .find(|e| e.as_device().is_some())
        .unwrap()
        .to_json_line();
    let positions = |line: &str, keys: &[&str]| {
        keys.iter()
            .map(|k| line.find(&format!("\"{k}\":")).unwrap())
            .collect::<Vec<_>>()
    };
    assert!(positions(&g, &GLUCOSE_KEYS).is_sorted(), "{g}");
    assert!(positions(&d, &DEVICE_KEYS).is_sorted(), "{d}");
}

#[test]
fn reading_ids_are_deterministic_and_follow_event_time_per_patient() {
    let events = run(config(3, 1, 1));
    for p in 1..=3u64 {
        let mut r = crate::common::glucose_of(&events, p);
        r.sort_by_key(|x| x.timestamp);
        for (i, x) in r.iter().enumerate() {
            assert_eq!(x.reading_id, format!("g-{p}-{}", i + 1));
        }
    }
}
