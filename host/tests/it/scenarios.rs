//! The simulator's scenarios make the rules alert when they should: a missed-insulin high
//! raises critical alerts from the default rule, a night hypo raises level-2 alerts from the
//! low-glucose rule and nothing from the default rule.

use crate::support::*;
use glucoguard::backtest;
use glucoguard_simulator::{Scenario, SimConfig, Simulator};
use std::collections::BTreeMap;

/// Alerts of `rule` over a simulation, as (patient, timestamp, code, severity).
fn alerts(rule: &str, config: SimConfig) -> Vec<(u64, String, String, String)> {
    let lines: Vec<String> = Simulator::new(config).map(|e| e.to_json_line()).collect();
    let mut out = Vec::new();
    let engine = engine();
    backtest::run(
        load(&engine, rule),
        &BTreeMap::new(),
        lines.join("\n").as_bytes(),
        &mut out,
    )
    .unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["patient_id"].as_u64().unwrap(),
                v["timestamp"].as_str().unwrap().to_owned(),
                v["code"].as_str().unwrap().to_owned(),
                v["severity"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn sim(scenario: &str) -> SimConfig {
    // Patient 2 is an athlete: normally in range, so what alerts is the scenario.
    SimConfig {
        patients: 2,
        profiles: Some(vec![
            "diabetic".parse().unwrap(),
            "athlete".parse().unwrap(),
        ]),
        duration: chrono::Duration::days(2),
        scenarios: vec![scenario.parse::<Scenario>().unwrap()],
        ..SimConfig::default()
    }
}

#[test]
fn missed_insulin_raises_critical_alerts_from_the_default_rule() {
    let with = alerts("glucoguard_default_rule", sim("missed-insulin:patient=2"));
    let without = alerts(
        "glucoguard_default_rule",
        SimConfig {
            scenarios: vec![],
            ..sim("missed-insulin:patient=2")
        },
    );
    let critical = |v: &[(u64, String, String, String)]| {
        v.iter().filter(|a| a.0 == 2 && a.3 == "critical").count()
    };
    assert_eq!(
        critical(&without),
        0,
        "an athlete alone never reaches 250 mg/dL"
    );
    assert!(
        critical(&with) >= 3,
        "missed insulin: {} critical alerts",
        critical(&with)
    );
}

#[test]
fn a_night_hypo_raises_low_alerts_and_no_high_alerts() {
    let low = alerts("glucoguard_low_glucose", sim("night-hypo:patient=2"));
    let level2: Vec<_> = low
        .iter()
        .filter(|a| a.0 == 2 && a.3 == "critical")
        .collect();
    assert!(!level2.is_empty(), "the hypo goes below 54 mg/dL: {low:?}");
    assert!(
        level2
            .iter()
            .all(|a| a.1[11..13].parse::<u32>().unwrap() < 8),
        "at night: {level2:?}"
    );
    let high = alerts("glucoguard_default_rule", sim("night-hypo:patient=2"));
    let during: Vec<_> = high
        .iter()
        .filter(|a| a.0 == 2 && level2.iter().any(|l| l.1 == a.1))
        .collect();
    assert!(
        during.is_empty(),
        "the default rule stays quiet during the hypo: {during:?}"
    );
}
