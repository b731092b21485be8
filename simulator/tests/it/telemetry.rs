//! Device telemetry: cadence, battery, firmware, and consistency between connectivity and the reading stream.

use chrono::{DateTime, Utc};
use glucoguard_simulator::{ConnectivityStatus, Event, dimensions};

use crate::common::{config, glucose_of, median, run, telemetry_of};

#[test]
fn every_fifteen_minutes_per_device() {
    let events = run(config(5, 2, 1));
    for p in 1..=5 {
        let t = telemetry_of(&events, p);
        assert!(t.iter().all(|d| d.device_id == 100_000 + p));
        let gaps: Vec<i64> = t
            .windows(2)
            .map(|w| (w[1].timestamp - w[0].timestamp).num_seconds())
            .collect();
        let m = median(gaps.clone());
        assert!((880..=920).contains(&m), "median {m}");
        assert!(gaps.iter().all(|&g| (850..=950).contains(&g)));
        assert!((180..=195).contains(&t.len()), "{}", t.len());
    }
}

#[test]
fn battery_drains_and_recharges_and_firmware_belongs_to_the_model() {
    let events = run(config(10, 14, 4));
    let dims = dimensions(4, 10);
    let mut upgrades = 0;
    for p in 1..=10 {
        let t = telemetry_of(&events, p);
        assert!(t.iter().all(|d| (0.0..=100.0).contains(&d.battery_level)));
        let drops = t
            .windows(2)
            .filter(|w| w[1].battery_level < w[0].battery_level)
            .count();
        let rises = t
            .windows(2)
            .filter(|w| w[1].battery_level > w[0].battery_level)
            .count();
        assert!(
            drops > rises && rises > 0,
            "patient {p}: drops {drops} rises {rises}"
        );
        let device = dims
            .devices
            .iter()
            .find(|d| d.device_id == t[0].device_id)
            .unwrap();
        let model = dims
            .device_models
            .iter()
            .find(|m| m.model_id == device.model_id)
            .unwrap();
        assert_eq!(t[0].firmware_version, device.firmware_version);
        for d in &t {
            assert!(
                model.firmware_versions.contains(&d.firmware_version),
                "{}",
                d.firmware_version
            );
        }
        upgrades += t
            .windows(2)
            .filter(|w| w[1].firmware_version != w[0].firmware_version)
            .count();
        // Low battery raises E101.
        for d in &t {
            assert_eq!(
                d.battery_level < 15.0,
                d.error_codes.iter().any(|e| e == "E101"),
                "{d:?}"
            );
        }
    }
    // Firmware never goes backwards, and over 140 device-days at least one upgrade is expected.
    assert!(upgrades >= 1);
}

/// Disconnected spans from the telemetry: `[report time, next report time)`.
fn disconnected_spans(events: &[Event], patient: u64) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let t = telemetry_of(events, patient);
    t.windows(2)
        .filter(|w| w[0].connectivity_status == ConnectivityStatus::Disconnected)
        .map(|w| (w[0].timestamp, w[1].timestamp))
        .collect()
}

#[test]
fn no_live_reading_inside_a_disconnected_span() {
    let events = run(config(20, 14, 5));
    let mut spans_seen = 0;
    let mut late_seen = 0;
    let mut poor_seen = 0;
    for p in 1..=20 {
        let spans = disconnected_spans(&events, p);
        spans_seen += spans.len();
        poor_seen += telemetry_of(&events, p)
            .iter()
            .filter(|d| d.connectivity_status == ConnectivityStatus::PoorConnection)
            .count();
        for r in glucose_of(&events, p) {
            if let Some((_, end)) = spans
                .iter()
                .find(|(from, to)| *from <= r.timestamp && r.timestamp < *to)
            {
                assert!(
                    r.emitted_at > r.timestamp,
                    "live reading while disconnected: {r:?}"
                );
                assert!(r.emitted_at >= *end, "uploaded before reconnecting: {r:?}");
                late_seen += 1;
            } else {
                assert_eq!(
                    r.emitted_at, r.timestamp,
                    "late reading outside a disconnection: {r:?}"
                );
            }
        }
    }
    assert!(spans_seen > 20, "{spans_seen}");
    assert!(poor_seen > 20, "{poor_seen}");
    // Some disconnections are uploaded later (backfill), some are lost.
    assert!(late_seen > 0);
}

#[test]
fn readings_thin_out_under_poor_connection() {
    let events = run(config(20, 14, 6));
    let (mut poor_blocks, mut poor_readings, mut ok_blocks, mut ok_readings) = (0, 0, 0, 0);
    for p in 1..=20 {
        let t = telemetry_of(&events, p);
        let g = glucose_of(&events, p);
        for w in t.windows(2) {
            let n = g
                .iter()
                .filter(|r| w[0].timestamp <= r.timestamp && r.timestamp < w[1].timestamp)
                .count();
            match w[0].connectivity_status {
                ConnectivityStatus::PoorConnection => {
                    poor_blocks += 1;
                    poor_readings += n;
                }
                ConnectivityStatus::Connected => {
                    ok_blocks += 1;
                    ok_readings += n;
                }
                ConnectivityStatus::Disconnected => {}
            }
        }
    }
    let poor = poor_readings as f64 / poor_blocks as f64;
    let ok = ok_readings as f64 / ok_blocks as f64;
    assert!(
        ok > 2.9 && poor < 0.9 * ok,
        "per block: connected {ok}, poor {poor}"
    );
}

#[test]
fn telemetry_partition_key_is_the_patient() {
    let events = run(config(4, 1, 7));
    for e in events.iter().filter(|e| e.as_device().is_some()) {
        assert_eq!(e.partition_key(), e.device_id() - 100_000);
    }
    for e in events.iter().filter(|e| e.as_glucose().is_some()) {
        assert_eq!(e.partition_key(), e.as_glucose().unwrap().patient_id);
    }
}

#[test]
fn telemetry_can_be_switched_off() {
    let cfg = glucoguard_simulator::SimConfig {
        telemetry: false,
        ..config(3, 1, 1)
    };
    let events = run(cfg);
    assert!(events.iter().all(|e| e.as_glucose().is_some()));
    assert!(events.len() > 800);
}
