//! Window semantics and thresholds of the default rule, end to end through the Wasm component
//! and `backtest` (which evaluates with exact event-time semantics).

use crate::support::*;
use glucoguard::backtest;
use glucoguard::model::ParamValue;
use std::collections::{BTreeMap, BTreeSet};

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
