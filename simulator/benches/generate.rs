//! Generation throughput benchmark (`cargo bench -p glucoguard-simulator`): readings per second for generation alone and
//! for generation plus writing JSON lines to a file. No criterion: one warm-up and three timed runs, best reported.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{Duration as SimDuration, TimeZone, Utc};
use glucoguard_simulator::{JsonLinesPublisher, Pacing, SimConfig, Simulator, stream};

const PATIENTS: usize = 100;
const DAYS: i64 = 14;

fn config() -> SimConfig {
    SimConfig {
        seed: 1,
        patients: PATIENTS,
        start: Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).unwrap(),
        duration: SimDuration::days(DAYS),
        ..SimConfig::default()
    }
}

/// Runs `f` (which returns (glucose readings, events)) once to warm up and three times timed; returns the best.
fn best_of(mut f: impl FnMut() -> (u64, u64)) -> (u64, u64, Duration) {
    f();
    let mut best = (0, 0, Duration::MAX);
    for _ in 0..3 {
        let started = Instant::now();
        let (readings, events) = f();
        let took = started.elapsed();
        if took < best.2 {
            best = (readings, events, took);
        }
    }
    best
}

fn report(name: &str, (readings, events, took): (u64, u64, Duration)) {
    let secs = took.as_secs_f64();
    println!(
        "{name:<28} {readings:>9} readings {events:>9} events in {:>7.1} ms: {:>11.0} readings/s {:>11.0} events/s",
        secs * 1000.0,
        readings as f64 / secs,
        events as f64 / secs
    );
}

fn main() {
    println!("{PATIENTS} patients x {DAYS} days, physiological model, CGM, telemetry on");

    let generation = best_of(|| {
        let (mut readings, mut events) = (0, 0);
        for e in Simulator::new(config()) {
            readings += e.as_glucose().is_some() as u64;
            events += 1;
            black_box(&e);
        }
        (readings, events)
    });
    report("generation", generation);

    let path =
        std::env::temp_dir().join(format!("glucoguard-sim-bench-{}.jsonl", std::process::id()));
    let with_io = best_of(|| {
        let mut publisher = JsonLinesPublisher::create(&path).expect("temp file");
        let stats = stream(
            Simulator::new(config()),
            Pacing::AsFastAsPossible,
            &mut publisher,
            1000,
            false,
        )
        .expect("stream");
        (stats.glucose_readings, stats.events)
    });
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&path);
    report("generation + JSON lines file", with_io);
    println!("file size {:.1} MiB", bytes as f64 / (1024.0 * 1024.0));
}
