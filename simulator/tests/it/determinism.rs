//! Same config, same bytes; different seed, different bytes; emission order and id uniqueness.

use std::collections::HashSet;

use glucoguard_simulator::{Cadence, Model, Scenario, ScenarioKind, SimConfig};

use crate::common::{config, glucose_of, json_lines, run, telemetry_of};

fn with_everything(seed: u64) -> SimConfig {
    SimConfig {
        scenarios: ScenarioKind::ALL
            .iter()
            .enumerate()
            .map(|(i, k)| Scenario::new(*k).for_patient(i as u64 + 1))
            .collect(),
        ..config(6, 3, seed)
    }
}

#[test]
fn same_config_gives_byte_identical_output() {
    for cfg in [
        with_everything(11),
        SimConfig {
            model: Model::Prototype,
            ..with_everything(11)
        },
        SimConfig {
            cadence: Cadence::Meter,
            ..with_everything(11)
        },
    ] {
        let a = json_lines(&run(cfg.clone()));
        let b = json_lines(&run(cfg));
        assert!(a.len() > 10_000);
        assert_eq!(a, b);
    }
}

#[test]
fn different_seed_gives_different_output() {
    let a = json_lines(&run(with_everything(11)));
    let b = json_lines(&run(with_everything(12)));
    assert_ne!(a, b);
    // Not just ids or timestamps: the values differ too.
    let va: Vec<f64> = glucose_of(&run(config(1, 1, 1)), 1)
        .iter()
        .map(|r| r.glucose_level)
        .collect();
    let vb: Vec<f64> = glucose_of(&run(config(1, 1, 2)), 1)
        .iter()
        .map(|r| r.glucose_level)
        .collect();
    assert_ne!(va, vb);
}

#[test]
fn a_scenario_for_one_patient_leaves_the_others_untouched() {
    let plain = run(config(3, 2, 5));
    let cfg = SimConfig {
        scenarios: vec![Scenario::new(ScenarioKind::LateBurst).for_patient(2)],
        ..config(3, 2, 5)
    };
    let with = run(cfg);
    for p in [1, 3] {
        assert_eq!(glucose_of(&plain, p), glucose_of(&with, p), "patient {p}");
        assert_eq!(
            telemetry_of(&plain, p),
            telemetry_of(&with, p),
            "patient {p}"
        );
    }
    assert_ne!(glucose_of(&plain, 2), glucose_of(&with, 2));
}

#[test]
fn adding_patients_does_not_change_existing_ones() {
    let small = run(config(2, 2, 9));
    let big = run(config(7, 2, 9));
    for p in [1, 2] {
        assert_eq!(glucose_of(&small, p), glucose_of(&big, p));
    }
}

#[test]
fn emission_order_is_non_decreasing_and_ids_are_unique() {
    let events = run(with_everything(3));
    assert!(
        events
            .windows(2)
            .all(|w| w[0].emitted_at() <= w[1].emitted_at())
    );
    let ids: HashSet<&str> = events.iter().map(|e| e.reading_id()).collect();
    assert_eq!(ids.len(), events.len());
    for e in &events {
        assert!(e.emitted_at() >= e.timestamp(), "{e:?}");
    }
}
