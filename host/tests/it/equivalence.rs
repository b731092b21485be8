//! The default rule gives exactly the same alerts as a Wasm component in the host as its own
//! logic run natively (through the SDK's independent window computation) on a generated
//! data set: several simulated patients over days, with scenarios and late uploads.

use crate::support::*;
use glucoguard::backtest;
use glucoguard::model::{Body, parse};
use glucoguard_default_rule::DefaultRule;
use glucoguard_simulator::{Scenario, SimConfig, Simulator};
use std::collections::{BTreeMap, BTreeSet};

/// (reading id, code, severity, message); the value is compared separately within 1e-9
/// because the SDK helper sums windows in another order (last-bit differences).
type Key = (String, String, String, String);

#[test]
fn wasm_and_native_default_rule_agree_on_a_simulated_data_set() {
    let config = SimConfig {
        seed: 7,
        patients: 15,
        duration: chrono::Duration::days(3),
        scenarios: [
            "missed-insulin:patient=1",
            "night-hypo:patient=2",
            "late-burst:patient=3",
            "sensor-failure:patient=4",
        ]
        .iter()
        .map(|s| s.parse::<Scenario>().unwrap())
        .collect(),
        ..SimConfig::default()
    };
    let lines: Vec<String> = Simulator::new(config).map(|e| e.to_json_line()).collect();
    assert!(
        lines.len() > 10_000,
        "a substantial data set: {}",
        lines.len()
    );

    // Wasm, through the host.
    let engine = engine();
    let mut out = Vec::new();
    let summary = backtest::run(
        load(&engine, "glucoguard_default_rule"),
        &BTreeMap::new(),
        lines.join("\n").as_bytes(),
        &mut out,
    )
    .unwrap();
    assert_eq!(summary.invalid, 0, "{:?}", summary.invalid_examples);
    let wasm: BTreeMap<Key, f64> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let key = (
                v["reading_id"].as_str().unwrap().to_owned(),
                v["code"].as_str().unwrap().to_owned(),
                v["severity"].as_str().unwrap().to_owned(),
                v["message"].as_str().unwrap().to_owned(),
            );
            (key, v["value"].as_f64().unwrap())
        })
        .collect();

    // Native: the rule's own logic, windows computed by the SDK's test helpers.
    let glucose: Vec<(String, u64, i64, f64)> = lines
        .iter()
        .filter_map(|l| {
            let r = parse::parse_reading(l.as_bytes()).unwrap();
            match r.body {
                Body::Glucose(g) => Some((
                    parse::given_reading_id(&r.id).to_owned(),
                    g.patient_id,
                    r.at_ms,
                    g.mg_dl,
                )),
                Body::Device(_) => None,
            }
        })
        .collect();
    let series: Vec<(u64, i64, f64)> = glucose.iter().map(|(_, p, t, v)| (*p, *t, *v)).collect();
    let native: BTreeMap<Key, f64> =
        glucoguard_sdk::testing::evaluate_series::<DefaultRule>(&[], &series)
            .unwrap()
            .into_iter()
            .map(|a| {
                let severity = match a.severity {
                    glucoguard_sdk::Severity::Info => "info",
                    glucoguard_sdk::Severity::Warning => "warning",
                    glucoguard_sdk::Severity::Critical => "critical",
                };
                (
                    (
                        glucose[a.index as usize].0.clone(),
                        a.code,
                        severity.to_owned(),
                        a.message,
                    ),
                    a.value.unwrap(),
                )
            })
            .collect();

    assert!(
        wasm.len() > 1000,
        "the data set exercises the rule: {} alerts",
        wasm.len()
    );
    let codes: BTreeSet<&str> = wasm.keys().map(|k| k.1.as_str()).collect();
    assert_eq!(
        codes,
        BTreeSet::from(["high-average", "high-reading"]),
        "both conditions occur"
    );
    assert!(
        wasm.keys().any(|k| k.2 == "critical"),
        "critical highs occur (missed-insulin)"
    );
    let only_wasm: Vec<_> = wasm
        .keys()
        .filter(|k| !native.contains_key(*k))
        .take(3)
        .collect();
    let only_native: Vec<_> = native
        .keys()
        .filter(|k| !wasm.contains_key(*k))
        .take(3)
        .collect();
    assert!(
        only_wasm.is_empty() && only_native.is_empty(),
        "wasm-only {only_wasm:?}\nnative-only {only_native:?}"
    );
    for (k, v) in &wasm {
        assert!(
            (v - native[k]).abs() <= 1e-9 * v.abs(),
            "{k:?}: wasm {v} native {}",
            native[k]
        );
    }
}
