//! Backtest diff benchmark: what a clinic's "what would this rule version change?" costs
//! over a month of stored history, against the baseline measured in the same run.
//!
//! A temporary SQLite store is seeded with 30 days × 100 patients of simulated 5-minute CGM
//! readings (about 864 000; the simulator's physiological model, the demo's generator), plus
//! the rule's lookback before the period. Then, timed:
//!
//! - (a) loading the period from the store: paging `readings_since` (the catch-up order) and
//!   keeping the readings in the period and its lookback, as the admin route does until the
//!   store has a period query;
//! - (b) `backtest::diff::diff` of the default rule (active, default parameters) against the
//!   default rule with `high_mg_dl` = 140 (candidate): both versions on two threads, then the
//!   per-patient comparison;
//! - (c) the baseline: the same two versions backtested over the same period one after the
//!   other on one thread (`backtest::run_period`, the path `backtest::run` takes), without
//!   comparing their alerts (which favours the baseline).
//!
//! - (d) for reading the ratio: the two `run_period`s of (c) on two threads, still without
//!   comparing. (b) against (d) is what the comparison costs; (d) against (c) shows whether
//!   the machine gave the run its two cores (other work on a shared machine takes them).
//!
//! Before printing, the diff's totals are checked against the difference of the two full
//! runs' alert sets (by reading id and code). Rounds of (b) and (c) are interleaved and the
//! median is reported, to damp noise on shared machines.
//!
//! `cargo bench -p glucoguard --bench backtest_diff`. Knobs: `GLUCOGUARD_BENCH_DAYS`
//! (default 30), `GLUCOGUARD_BENCH_PATIENTS` (100), `GLUCOGUARD_BENCH_ROUNDS` (3).

use glucoguard::backtest::diff::diff;
use glucoguard::backtest::{self, Period};
use glucoguard::engine::{Engine, EngineConfig};
use glucoguard::model::batch::{Cursor, WriteBatch};
use glucoguard::model::{EpochMs, ParamValue, Reading, ReadingKind, parse};
use glucoguard::store::IngestStore;
use glucoguard::store::sqlite::{SqliteOptions, SqliteStore};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// Readings written per store transaction while seeding, and read per page while loading.
const SEED_BATCH: usize = 5_000;
const PAGE: u32 = 10_000;
const CANDIDATE_HIGH_MG_DL: f64 = 140.0;
const EXAMPLES_PER_PATIENT: usize = 5;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Simulated glucose readings from `lookback_ms` before the period to its end.
fn simulated(patients: usize, days: i64, lookback_ms: EpochMs) -> (Period, Vec<Reading>) {
    let config = glucoguard_simulator::SimConfig {
        seed: 2026,
        patients,
        duration: chrono::Duration::days(days) + chrono::Duration::milliseconds(lookback_ms),
        telemetry: false,
        ..glucoguard_simulator::SimConfig::default()
    };
    let from_ms = config.start.timestamp_millis() + lookback_ms;
    let period = Period {
        from_ms,
        to_ms: from_ms + days * 86_400_000,
    };
    let readings = glucoguard_simulator::Simulator::new(config)
        .map(|e| parse::parse_reading(e.to_json_line().as_bytes()).expect("simulated is valid"))
        .collect();
    (period, readings)
}

/// (a): every stored glucose reading, page by page in receive order, keeping those in the
/// period and its lookback.
async fn load(store: &SqliteStore, period: Period, lookback_ms: EpochMs) -> Vec<Reading> {
    let mut cursor = Cursor::default();
    let mut kept = Vec::new();
    loop {
        let page = store
            .readings_since(ReadingKind::Glucose, &cursor, PAGE)
            .await
            .expect("page");
        let Some(last) = page.last() else { break };
        cursor = last.cursor(&last.item.id);
        let full = page.len() == PAGE as usize;
        kept.extend(
            page.into_iter()
                .map(|r| r.item)
                .filter(|r| (period.from_ms - lookback_ms..period.to_ms).contains(&r.at_ms)),
        );
        if !full {
            break;
        }
    }
    kept
}

fn main() {
    let days: i64 = env_or("GLUCOGUARD_BENCH_DAYS", 30);
    let patients: usize = env_or("GLUCOGUARD_BENCH_PATIENTS", 100);
    let rounds: usize = env_or::<usize>("GLUCOGUARD_BENCH_ROUNDS", 3).max(1);
    let dir = glucoguard::app::built_plugin_dir();
    let wasm = std::fs::read(dir.join("glucoguard_default_rule.wasm")).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the guests first with `cargo xtask build-plugins`",
            dir.display()
        )
    });
    let engine = Engine::new(EngineConfig::default()).expect("engine");
    let rule = engine.load(&wasm).expect("default rule loads");
    let lookback_ms = rule.info().lookback_ms();
    let base_params = BTreeMap::new();
    let candidate_params: BTreeMap<String, ParamValue> = [(
        "high_mg_dl".to_owned(),
        ParamValue::Float(CANDIDATE_HIGH_MG_DL),
    )]
    .into();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let store = rt
        .block_on(SqliteStore::open_with(
            &tmp.path().join("history.db"),
            // Seeding speed only; loading reads the same pages whatever the sync mode.
            SqliteOptions {
                durable_on_power_loss: false,
            },
        ))
        .expect("store");
    let started = Instant::now();
    let (period, readings) = simulated(patients, days, lookback_ms);
    let seeded = readings.len();
    rt.block_on(async {
        for (i, chunk) in readings.chunks(SEED_BATCH).enumerate() {
            let batch = WriteBatch {
                readings: chunk.to_vec(),
                received_at_ms: period.to_ms + i as i64,
                ..WriteBatch::default()
            };
            store.write_batch(&batch).await.expect("seed");
        }
    });
    drop(readings);
    println!(
        "seeded {seeded} readings ({patients} patients, {days} days of 5-minute CGM + {} min lookback) in {:.1} s",
        lookback_ms / 60_000,
        started.elapsed().as_secs_f64()
    );

    // (a) Loading the period.
    let mut load_secs = Vec::new();
    let mut loaded = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        loaded = rt.block_on(load(&store, period, lookback_ms));
        load_secs.push(t.elapsed().as_secs_f64());
    }
    assert_eq!(
        loaded.len(),
        seeded,
        "the period and lookback hold every seeded reading"
    );

    // (b) and (c), interleaved.
    let (mut diff_secs, mut baseline_secs, mut parallel_secs) =
        (Vec::new(), Vec::new(), Vec::new());
    let mut last = None;
    for _ in 0..rounds {
        let t = Instant::now();
        let d = diff(
            Some((rule.clone(), &base_params)),
            (rule.clone(), &candidate_params),
            &loaded,
            period,
            EXAMPLES_PER_PATIENT,
        )
        .expect("diff");
        diff_secs.push(t.elapsed().as_secs_f64());

        let t = Instant::now();
        let base = backtest::run_period(rule.clone(), &base_params, &loaded, period).unwrap();
        let candidate =
            backtest::run_period(rule.clone(), &candidate_params, &loaded, period).unwrap();
        baseline_secs.push(t.elapsed().as_secs_f64());

        let t = Instant::now();
        let (b, c) = std::thread::scope(|s| {
            let b = s.spawn(|| backtest::run_period(rule.clone(), &base_params, &loaded, period));
            let c = backtest::run_period(rule.clone(), &candidate_params, &loaded, period);
            (b.join().unwrap().unwrap(), c.unwrap())
        });
        parallel_secs.push(t.elapsed().as_secs_f64());
        assert_eq!(
            (b.alerts.len(), c.alerts.len()),
            (base.alerts.len(), candidate.alerts.len())
        );
        last = Some((d, base, candidate));
    }
    let (d, base, candidate) = last.expect("at least one round");

    // Correctness before any number is printed.
    let set = |run: &backtest::PeriodRun| -> BTreeSet<(String, String)> {
        run.alerts
            .iter()
            .map(|a| (a.reading_id.clone(), a.code.clone()))
            .collect()
    };
    let (b, c) = (set(&base), set(&candidate));
    assert_eq!(d.base_alerts, b.len() as u64);
    assert_eq!(d.candidate_alerts, c.len() as u64);
    assert_eq!(d.added, c.difference(&b).count() as u64);
    assert_eq!(d.removed, b.difference(&c).count() as u64);
    assert_eq!(d.unchanged, b.intersection(&c).count() as u64);
    assert_eq!(d.readings_evaluated, base.readings);
    assert_eq!(d.lookback_readings, base.lookback_readings);
    assert_eq!(d.patients.len(), patients, "every simulated patient alerts");
    assert_eq!(d.candidate_faults, Default::default());
    assert_eq!(d.base_faults, Default::default());
    assert!(d.added > 0 && d.removed > 0, "the thresholds differ");

    let (load_s, diff_s, base_s, par_s) = (
        median(load_secs),
        median(diff_secs),
        median(baseline_secs),
        median(parallel_secs),
    );
    let per_sec = |s: f64| d.readings_evaluated as f64 / s / 1e6;
    println!(
        "\nperiod: {} readings evaluated (+{} lookback); default rule (115 / 105 mg/dL) vs high_mg_dl = {CANDIDATE_HIGH_MG_DL}: {} vs {} alerts, {} added, {} removed, {} unchanged (checked against the two full runs); median of {rounds} rounds, {} cores",
        d.readings_evaluated,
        d.lookback_readings,
        d.base_alerts,
        d.candidate_alerts,
        d.added,
        d.removed,
        d.unchanged,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!(
            "load average at the end (1, 5, 15 min): {}",
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    println!("\n| step | seconds | M readings/s | × baseline |\n|---|---:|---:|---:|");
    println!(
        "| (a) load period + lookback from SQLite (`readings_since` pages of {PAGE}) | {load_s:.3} | {:.2} | |",
        per_sec(load_s)
    );
    println!(
        "| (b) `diff`: both versions on two threads + per-patient comparison | {diff_s:.3} | {:.2} | {:.2} |",
        per_sec(diff_s),
        diff_s / base_s
    );
    println!(
        "| (c) baseline: `run_period` base then candidate, one thread, no comparison | {base_s:.3} | {:.2} | 1.00 |",
        per_sec(base_s)
    );
    println!(
        "| (d) `run_period` base and candidate on two threads, no comparison | {par_s:.3} | {:.2} | {:.2} |",
        per_sec(par_s),
        par_s / base_s
    );
    println!(
        "| (a) + (b): what the admin route costs | {:.3} | {:.2} | |",
        load_s + diff_s,
        per_sec(load_s + diff_s)
    );
}
