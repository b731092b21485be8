//! Shared helpers: configs, running a simulation, picking events apart.

use chrono::{DateTime, Duration, TimeZone, Utc};
use glucoguard_simulator::{DeviceTelemetry, Event, GlucoseReading, SimConfig, Simulator};

/// Monday 2026-01-05 00:00 UTC, the default start.
pub fn monday() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).unwrap()
}

pub fn config(patients: usize, days: i64, seed: u64) -> SimConfig {
    SimConfig {
        seed,
        patients,
        start: monday(),
        duration: Duration::days(days),
        ..SimConfig::default()
    }
}

pub fn run(config: SimConfig) -> Vec<Event> {
    Simulator::new(config).collect()
}

pub fn json_lines(events: &[Event]) -> String {
    events.iter().map(|e| e.to_json_line() + "\n").collect()
}

pub fn glucose_of(events: &[Event], patient: u64) -> Vec<&GlucoseReading> {
    events
        .iter()
        .filter_map(Event::as_glucose)
        .filter(|r| r.patient_id == patient)
        .collect()
}

pub fn telemetry_of(events: &[Event], patient: u64) -> Vec<&DeviceTelemetry> {
    events
        .iter()
        .filter_map(Event::as_device)
        .filter(|d| d.patient_id == patient)
        .collect()
}

/// Readings sorted by event time (as a store would see them).
pub fn by_event_time(mut readings: Vec<&GlucoseReading>) -> Vec<&GlucoseReading> {
    readings.sort_by_key(|r| r.timestamp);
    readings
}

pub fn median(mut v: Vec<i64>) -> i64 {
    v.sort_unstable();
    v[v.len() / 2]
}
