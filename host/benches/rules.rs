//! Rule evaluation benchmark: the default rule natively vs. as a Wasm component at several
//! batch sizes, with and without the epoch deadline, plus `backtest` throughput on a file of
//! one million readings. Everything runs on the same generated readings in one process, and
//! is reported as ratios to the native baseline measured in the same run.
//!
//! `cargo xtask bench` (or `cargo bench -p glucoguard --bench rules`). Rounds are interleaved
//! across configurations and the median round is reported, to damp noise on shared machines.

use glucoguard::backtest;
use glucoguard::engine::history::History;
use glucoguard::engine::{ActiveRule, Engine, EngineConfig, RuleSet};
use glucoguard::model::{Alert, Reading, RuleRef, parse};
use glucoguard_sdk as sdk;
use std::collections::BTreeMap;
use std::hint::black_box;

use std::time::Instant;

const PATIENTS: u64 = 100;
const READINGS: usize = 100_000;
const ROUNDS: usize = 7;
const BACKTEST_READINGS: usize = 1_000_000;

/// Simulated CGM data (physiological model, the five profiles round-robin): the same
/// generator the demo and the tests use. Glucose readings only, as JSON lines.
fn json_lines(n: usize) -> Vec<String> {
    let days = (n as f64 / PATIENTS as f64 / 288.0 * 1.1).ceil() as i64 + 1;
    let config = glucoguard_simulator::SimConfig {
        seed: 2026,
        patients: PATIENTS as usize,
        duration: chrono::Duration::days(days),
        telemetry: false,
        ..glucoguard_simulator::SimConfig::default()
    };
    glucoguard_simulator::Simulator::new(config)
        .take(n)
        .map(|e| e.to_json_line())
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The host's work for one batch with the rule called natively instead of in Wasm:
/// the same window look-ups, the same input records, the same alert records.
fn native_batch(batch: &[Reading], history: &History, high: f64, avg_high: f64) -> Vec<Alert> {
    let rule = RuleRef {
        name: "default-glucose".into(),
        version: "1.0.0".into(),
    };
    let mut readings = Vec::with_capacity(batch.len());
    let mut stats = Vec::with_capacity(batch.len());
    for r in batch {
        let s = r.subject();
        let prev = history.previous(s, r.at_ms);
        let w = history.window(s, r.at_ms, 600_000);
        readings.push(sdk::Reading {
            subject: s.id,
            at_ms: r.at_ms,
            measurement: sdk::Measurement::Glucose(r.window_value().unwrap_or_default()),
            previous: prev.map(|p| sdk::PreviousReading {
                value: p.value,
                at_ms: p.at_ms,
            }),
        });
        stats.push(sdk::WindowStats {
            count: w.count,
            mean: w.mean,
            min: w.min,
            max: w.max,
        });
    }
    let windows = sdk::Windows::new(&stats, 1, readings.len()).expect("one window per reading");
    glucoguard_default_rule::evaluate_batch(high, avg_high, &readings, &windows)
        .into_iter()
        .map(|a| {
            let r = &batch[a.index as usize];
            Alert {
                id: Alert::derive_id(&rule, &r.id, &a.code, r.at_ms),
                rule: rule.clone(),
                reading_id: r.id.clone(),
                patient_id: r.patient_id(),
                device_id: r.device_id(),
                kind: r.kind(),
                at_ms: r.at_ms,
                code: a.code,
                severity: match a.severity {
                    sdk::Severity::Info => glucoguard::model::Severity::Info,
                    sdk::Severity::Warning => glucoguard::model::Severity::Warning,
                    sdk::Severity::Critical => glucoguard::model::Severity::Critical,
                },
                message: a.message,
                value: a.value,
            }
        })
        .collect()
}

/// Only the host's preparation (window look-ups, input records), no rule at all.
fn prep_only(batch: &[Reading], history: &History) -> f64 {
    let mut acc = 0.0;
    for r in batch {
        let s = r.subject();
        acc += history.window(s, r.at_ms, 600_000).mean;
        acc += history.previous(s, r.at_ms).map_or(0.0, |p| p.value);
    }
    acc
}

#[allow(clippy::too_many_arguments)]
fn table(
    title: &str,
    wasm: &[u8],
    readings: &[Reading],
    history: &History,
    with_epoch: &Engine,
    without_epoch: &Engine,
    high: f64,
    avg_high: f64,
) {
    let params: BTreeMap<String, glucoguard::model::ParamValue> = [
        (
            "high_mg_dl".to_owned(),
            glucoguard::model::ParamValue::Float(high),
        ),
        (
            "avg_high_mg_dl".to_owned(),
            glucoguard::model::ParamValue::Float(avg_high),
        ),
    ]
    .into();
    let set = |e: &Engine| {
        RuleSet::new(vec![
            ActiveRule::new(e.load(wasm).unwrap(), &params).unwrap(),
        ])
    };

    // The same alert set from both paths (ids, codes, severities, values) before timing
    // anything: equal counts alone could hide one path alerting on other readings.
    let key = |a: &Alert| {
        (
            a.id.clone(),
            a.code.clone(),
            a.severity,
            a.value.map(f64::to_bits),
        )
    };
    let native: std::collections::BTreeSet<_> = readings
        .chunks(64)
        .flat_map(|c| native_batch(c, history, high, avg_high))
        .map(|a| key(&a))
        .collect();
    let mut check = set(with_epoch);
    let wasm: std::collections::BTreeSet<_> = readings
        .chunks(64)
        .flat_map(|c| check.evaluate(c, history).alerts)
        .map(|a| key(&a))
        .collect();
    assert!(
        native == wasm,
        "native and Wasm disagree: {} vs {} alerts, {} in common",
        native.len(),
        wasm.len(),
        native.intersection(&wasm).count()
    );
    let wasm_alerts = wasm.len();
    println!(
        "\n{title}: {} readings, {} patients, {} alerts per pass ({:.1} %); median of {ROUNDS} interleaved rounds",
        READINGS,
        PATIENTS,
        wasm_alerts,
        100.0 * wasm_alerts as f64 / READINGS as f64
    );

    let configs: Vec<(&str, usize, Option<&Engine>)> = vec![
        ("host preparation only (no rule)", 64, None),
        ("native rule", 64, None),
        ("wasm, batch 1, epoch deadline", 1, Some(with_epoch)),
        ("wasm, batch 64, epoch deadline", 64, Some(with_epoch)),
        ("wasm, batch 1024, epoch deadline", 1024, Some(with_epoch)),
        ("wasm, batch 1, no deadline", 1, Some(without_epoch)),
        ("wasm, batch 64, no deadline", 64, Some(without_epoch)),
        ("wasm, batch 1024, no deadline", 1024, Some(without_epoch)),
    ];
    let mut sets: Vec<Option<RuleSet>> = configs.iter().map(|(_, _, e)| e.map(set)).collect();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); configs.len()];
    for _ in 0..ROUNDS {
        for (i, (name, batch, _)) in configs.iter().enumerate() {
            let start = Instant::now();
            for chunk in readings.chunks(*batch) {
                match (&mut sets[i], *name) {
                    (Some(s), _) => {
                        black_box(s.evaluate(chunk, history));
                    }
                    (None, "native rule") => {
                        black_box(native_batch(chunk, history, high, avg_high));
                    }
                    (None, _) => {
                        black_box(prep_only(chunk, history));
                    }
                }
            }
            samples[i].push(start.elapsed().as_nanos() as f64 / READINGS as f64);
        }
    }
    let ns: Vec<f64> = samples.into_iter().map(median).collect();
    let native = ns[1];
    println!("\n| configuration | ns per reading | × native |\n|---|---:|---:|");
    for ((name, _, _), v) in configs.iter().zip(&ns) {
        println!("| {name} | {v:.0} | {:.2} |", v / native);
    }
}

fn main() {
    let dir = glucoguard::app::built_plugin_dir();
    let wasm = std::fs::read(dir.join("glucoguard_default_rule.wasm")).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the guests first with `cargo xtask build-plugins`",
            dir.display()
        )
    });
    let lines = json_lines(READINGS);
    let mut readings: Vec<Reading> = lines
        .iter()
        .map(|l| parse::parse_reading(l.as_bytes()).unwrap())
        .collect();
    readings.sort_by_key(|r| r.at_ms);
    let mut history = History::new(None);
    for r in &readings {
        history.insert(r.subject(), r.at_ms, &r.id, r.window_value().unwrap());
    }

    let with_epoch = Engine::new(EngineConfig::default()).unwrap();
    let without_epoch = Engine::new(EngineConfig {
        epoch_deadline: false,
        ..EngineConfig::default()
    })
    .unwrap();
    for (title, high, avg_high) in [
        ("default thresholds (115 / 105 mg/dL)", 115.0, 105.0),
        (
            "thresholds 390 / 390 mg/dL: alerts rare, call overhead exposed",
            390.0,
            390.0,
        ),
    ] {
        table(
            title,
            &wasm,
            &readings,
            &history,
            &with_epoch,
            &without_epoch,
            high,
            avg_high,
        );
    }

    // backtest on a 1M-reading file, single thread, parse to alerts written.
    let file: String = json_lines(BACKTEST_READINGS).join("\n");
    let rule = with_epoch.load(&wasm).unwrap();
    for (title, params) in [
        ("default thresholds", BTreeMap::new()),
        (
            "thresholds 390 / 390 (alerts rare)",
            [
                (
                    "high_mg_dl".to_owned(),
                    glucoguard::model::ParamValue::Float(390.0),
                ),
                (
                    "avg_high_mg_dl".to_owned(),
                    glucoguard::model::ParamValue::Float(390.0),
                ),
            ]
            .into(),
        ),
    ] {
        let mut best = f64::MAX;
        let mut summary = None;
        for _ in 0..3 {
            let mut sink = std::io::sink();
            let s = backtest::run(rule.clone(), &params, file.as_bytes(), &mut sink).unwrap();
            best = best.min(s.elapsed_secs);
            summary = Some(s);
        }
        let s = summary.unwrap();
        println!(
            "\nbacktest, {title}: {} readings ({:.0} MB of JSON lines), {} alerts: best of 3 {:.3} s = {:.2} M readings/s on one core",
            s.lines,
            file.len() as f64 / 1e6,
            s.alerts,
            best,
            s.lines as f64 / best / 1e6
        );
        println!(
            "  phases of the last run: parse {:.3} s, history {:.3} s, evaluate {:.3} s, write alerts {:.3} s",
            s.parse_secs, s.history_secs, s.evaluate_secs, s.write_secs
        );
    }
}
