//! Each scenario produces what it promises, for the patient and window it targets, and they compose.

use chrono::{Duration, Timelike};
use glucoguard_simulator::{
    ConnectivityStatus, Event, Model, Scenario, ScenarioKind, ScenarioTime, SimConfig,
};

use crate::common::{by_event_time, config, glucose_of, run, telemetry_of};

fn with(scenarios: Vec<Scenario>) -> SimConfig {
    SimConfig {
        scenarios,
        ..config(5, 3, 21)
    }
}

#[test]
fn night_hypo_goes_below_70_at_night_for_that_patient() {
    // Patient 2 is an athlete, who otherwise almost never goes low.
    let s = Scenario::new(ScenarioKind::NightHypo).for_patient(2);
    let cfg = with(vec![s.clone()]);
    let (from, to) = s.window(cfg.start);
    let events = run(cfg);
    let inside: Vec<_> = glucose_of(&events, 2)
        .into_iter()
        .filter(|r| from <= r.timestamp && r.timestamp < to)
        .collect();
    assert!(inside.len() > 20);
    assert!(inside.iter().all(|r| r.timestamp.hour() < 6));
    let low = inside.iter().filter(|r| r.glucose_level < 70.0).count();
    assert!(low >= 10, "{low} readings below 70");
    assert!(inside.iter().any(|r| r.glucose_level < 60.0));
    // And it recovers afterwards.
    let after: Vec<_> = glucose_of(&events, 2)
        .into_iter()
        .filter(|r| r.timestamp >= to + Duration::hours(1) && r.timestamp < to + Duration::hours(3))
        .collect();
    assert!(after.iter().all(|r| r.glucose_level > 60.0));
}

#[test]
fn night_hypo_works_with_the_prototype_model_too() {
    let s = Scenario::new(ScenarioKind::NightHypo).for_patient(5);
    let cfg = SimConfig {
        model: Model::Prototype,
        ..with(vec![s.clone()])
    };
    let (from, to) = s.window(cfg.start);
    let events = run(cfg);
    let low = glucose_of(&events, 5)
        .into_iter()
        .filter(|r| from <= r.timestamp && r.timestamp < to && r.glucose_level < 70.0)
        .count();
    assert!(low >= 10);
}

#[test]
fn missed_insulin_yields_a_sustained_high() {
    let s = Scenario::new(ScenarioKind::MissedInsulin)
        .for_patient(1)
        .starting(ScenarioTime::AfterStart(Duration::hours(30)));
    let cfg = with(vec![s.clone()]);
    let (from, to) = s.window(cfg.start);
    let events = run(cfg);
    let high: Vec<_> = by_event_time(glucose_of(&events, 1))
        .into_iter()
        .filter(|r| from <= r.timestamp && r.timestamp < to && r.glucose_level > 250.0)
        .collect();
    // At least two hours above 250.
    assert!(high.len() >= 24, "{} readings above 250", high.len());
    assert!(high.last().unwrap().timestamp - high[0].timestamp >= Duration::hours(2));
}

#[test]
fn sensor_failure_has_error_codes_flat_and_implausible_values_and_a_gap() {
    let s = Scenario::new(ScenarioKind::SensorFailure).for_patient(3);
    let cfg = with(vec![s.clone()]);
    let (from, to) = s.window(cfg.start);
    let events = run(cfg);
    let codes: Vec<String> = telemetry_of(&events, 3)
        .into_iter()
        .filter(|d| from <= d.timestamp && d.timestamp < to)
        .flat_map(|d| d.error_codes.clone())
        .collect();
    for code in ["E301", "E302", "E303"] {
        assert!(
            codes.iter().any(|c| c == code),
            "{code} missing from {codes:?}"
        );
    }
    let r: Vec<_> = by_event_time(glucose_of(&events, 3))
        .into_iter()
        .filter(|r| from <= r.timestamp && r.timestamp < to)
        .collect();
    let longest_flat = r
        .windows(2)
        .fold((1, 1), |(best, run), w| {
            let run = if w[0].glucose_level == w[1].glucose_level {
                run + 1
            } else {
                1
            };
            (best.max(run), run)
        })
        .0;
    assert!(longest_flat >= 10, "flat run {longest_flat}");
    let jumps = r
        .windows(2)
        .filter(|w| (w[1].glucose_level - w[0].glucose_level).abs() > 100.0)
        .count();
    assert!(jumps >= 3, "{jumps} implausible jumps");
    let last = r.last().unwrap().timestamp;
    assert!(
        to - last >= Duration::minutes(45),
        "no gap at the end of the window"
    );
}

#[test]
fn device_silent_means_nothing_at_all_for_hours() {
    let s = Scenario::new(ScenarioKind::DeviceSilent).for_patient(4);
    let cfg = with(vec![s.clone()]);
    let (from, to) = s.window(cfg.start);
    assert!(to - from >= Duration::hours(2));
    let events = run(cfg);
    let inside = |e: &&Event| e.patient_id() == 4 && from <= e.timestamp() && e.timestamp() < to;
    assert_eq!(events.iter().filter(inside).count(), 0);
    // Nothing is uploaded later either, and the others keep reporting.
    assert!(
        events
            .iter()
            .filter(|e| e.patient_id() == 4)
            .all(|e| !e.is_late() || e.timestamp() < from || e.timestamp() >= to)
    );
    let others = events
        .iter()
        .filter(|e| e.patient_id() != 4 && from <= e.timestamp() && e.timestamp() < to)
        .count();
    assert!(others > 100);
    // And patient 4 resumes afterwards.
    assert!(glucose_of(&events, 4).iter().any(|r| r.timestamp >= to));
}

#[test]
fn late_burst_uploads_out_of_order_after_reconnecting() {
    let s = Scenario::new(ScenarioKind::LateBurst).for_patient(2);
    let cfg = with(vec![s.clone()]);
    let (from, to) = s.window(cfg.start);
    let events = run(cfg);
    let late: Vec<_> = events
        .iter()
        .filter(|e| e.patient_id() == 2 && e.is_late())
        .filter_map(Event::as_glucose)
        .collect();
    let in_window: Vec<_> = late
        .iter()
        .filter(|r| from <= r.timestamp && r.timestamp < to)
        .collect();
    assert!(
        in_window.len() >= 20,
        "{} late readings in the window",
        in_window.len()
    );
    assert!(in_window.iter().all(|r| r.emitted_at >= to));
    // Out of order: in emission order, event times go backwards somewhere.
    let backwards = in_window
        .windows(2)
        .filter(|w| w[1].timestamp < w[0].timestamp)
        .count();
    assert!(backwards >= 5, "{backwards}");
    // The telemetry says Disconnected through the window.
    let statuses: Vec<_> = telemetry_of(&events, 2)
        .into_iter()
        .filter(|d| from <= d.timestamp && d.timestamp < to)
        .map(|d| d.connectivity_status)
        .collect();
    assert!(
        !statuses.is_empty()
            && statuses
                .iter()
                .all(|s| *s == ConnectivityStatus::Disconnected),
        "{statuses:?}"
    );
}

#[test]
fn scenarios_compose() {
    let scenarios = vec![
        Scenario::new(ScenarioKind::NightHypo).for_patient(1),
        Scenario::new(ScenarioKind::MissedInsulin).for_patient(1),
        Scenario::new(ScenarioKind::LateBurst).for_patient(1),
        Scenario::new(ScenarioKind::DeviceSilent)
            .for_patient(1)
            .starting(ScenarioTime::AfterStart(Duration::hours(40))),
    ];
    let cfg = with(scenarios.clone());
    let start = cfg.start;
    let events = run(cfg);
    let g = glucose_of(&events, 1);
    let within = |s: &Scenario| {
        let (from, to) = s.window(start);
        g.iter()
            .filter(move |r| from <= r.timestamp && r.timestamp < to)
    };
    assert!(within(&scenarios[0]).any(|r| r.glucose_level < 70.0));
    assert!(within(&scenarios[1]).any(|r| r.glucose_level > 250.0));
    assert!(within(&scenarios[2]).any(|r| r.emitted_at > r.timestamp));
    assert_eq!(within(&scenarios[3]).count(), 0);
}

#[test]
fn scenario_text_form() {
    let s: Scenario = "missed-insulin:patient=3,at=2026-01-06T11:00:00Z,for=4h"
        .parse()
        .unwrap();
    assert_eq!(s.kind, ScenarioKind::MissedInsulin);
    assert_eq!(s.patient_id, 3);
    assert_eq!(s.duration, Some(Duration::hours(4)));
    let err = "late-burst:patient=x"
        .parse::<Scenario>()
        .unwrap_err()
        .to_string();
    assert!(err.contains("patient"), "{err}");
    let cfg = SimConfig {
        scenarios: vec![Scenario::new(ScenarioKind::NightHypo).for_patient(9)],
        ..config(5, 1, 1)
    };
    assert!(cfg.validate().is_err());
}
