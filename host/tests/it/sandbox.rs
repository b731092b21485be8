//! Misbehaving guests are contained: the host stays up, the other rules still see every
//! reading, faults are counted by kind, and a rule is quarantined after the threshold.

use crate::support::*;
use glucoguard::engine::history::History;
use glucoguard::engine::{LoadError, RuleSet};
use glucoguard::model::{Reading, Severity};

fn batch(n: usize, mg_dl: impl Fn(usize) -> f64) -> (Vec<Reading>, History) {
    let mut h = History::new(None);
    let readings: Vec<Reading> = (0..n)
        .map(|i| {
            glucose(
                &format!("r{i}"),
                i as u64 % 3,
                T0 + i as i64 * MIN,
                mg_dl(i),
            )
        })
        .collect();
    for r in &readings {
        h.insert(r.subject(), r.at_ms, &r.id, r.window_value().unwrap());
    }
    (readings, h)
}

/// The default rule with thresholds that make every reading alert, beside a bad guest.
fn set_with(bad: &str) -> RuleSet {
    let e = engine();
    RuleSet::new(vec![
        active(&e, bad, &[]),
        active(&e, "glucoguard_default_rule", &[("high_mg_dl", 40.0)]),
    ])
}

fn default_alerts(eval: &glucoguard::engine::Evaluation) -> usize {
    eval.alerts
        .iter()
        .filter(|a| a.rule.name == "default-glucose")
        .count()
}

#[test]
fn a_rule_that_loops_forever_times_out_and_is_quarantined() {
    let mut set = set_with("loop_forever");
    let (readings, h) = batch(8, |_| 150.0);
    let eval = set.evaluate(&readings, &h);
    assert_eq!(default_alerts(&eval), 8, "the other rule saw every reading");
    assert!(
        eval.faults
            .iter()
            .all(|f| f.kind == glucoguard::model::FaultKind::Timeout),
        "{:?}",
        eval.faults
    );
    assert_eq!(
        eval.faults.len(),
        3,
        "batch, retry, then the first isolated reading: quarantine at 3"
    );
    assert_eq!(eval.quarantined.len(), 1);
    let looping = &set.rules()[0];
    assert!(looping.quarantined().unwrap().contains("timeout"));
    assert_eq!(looping.metrics().errors["timeout"], 3);
    // The host keeps going; the quarantined rule is skipped from now on.
    let eval = set.evaluate(&readings, &h);
    assert_eq!(default_alerts(&eval), 8);
    assert!(eval.faults.is_empty());
}

#[test]
fn a_rule_that_allocates_without_bound_hits_the_memory_cap() {
    let mut set = set_with("alloc_forever");
    let (readings, h) = batch(4, |_| 150.0);
    let eval = set.evaluate(&readings, &h);
    assert_eq!(default_alerts(&eval), 4);
    assert!(!eval.faults.is_empty());
    assert!(
        eval.faults
            .iter()
            .all(|f| f.kind == glucoguard::model::FaultKind::MemoryLimit),
        "{:?}",
        eval.faults
    );
    assert!(set.rules()[0].quarantined().is_some());
}

#[test]
fn a_poison_reading_is_isolated_to_dead_letters_and_the_rest_still_evaluated() {
    let e = engine();
    let mut set = RuleSet::new(vec![
        active(&e, "trap_on_poison", &[]),
        active(&e, "glucoguard_default_rule", &[("high_mg_dl", 40.0)]),
    ]);
    let (readings, h) = batch(10, |i| if i == 6 { 333.0 } else { 150.0 });
    let eval = set.evaluate(&readings, &h);
    assert_eq!(
        default_alerts(&eval),
        10,
        "the default rule saw the poison reading too"
    );
    let trap_alerted: Vec<&str> = eval
        .alerts
        .iter()
        .filter(|a| a.rule.name == "trap-on-poison")
        .map(|a| a.reading_id.as_str())
        .collect();
    assert_eq!(
        trap_alerted.len(),
        9,
        "every other reading evaluated by the trapping rule: {trap_alerted:?}"
    );
    assert!(!trap_alerted.contains(&"r6"));
    assert_eq!(eval.poison.len(), 1);
    assert!(
        eval.poison[0].payload.contains("\"r6\""),
        "{}",
        eval.poison[0].payload
    );
    assert!(eval.poison[0].reason.contains("trap-on-poison@0.1.0"));
    assert!(
        eval.poison[0].reason.contains("333"),
        "the guest's panic message is captured: {}",
        eval.poison[0].reason
    );
    assert!(
        set.rules()[0].quarantined().is_none(),
        "one poison reading does not quarantine the rule"
    );
    // Next batch: the rule works normally again.
    let (clean, h2) = batch(3, |_| 150.0);
    let eval = set.evaluate(&clean, &h2);
    assert_eq!(
        eval.alerts
            .iter()
            .filter(|a| a.rule.name == "trap-on-poison")
            .count(),
        3
    );
    assert!(eval.faults.is_empty());
}

#[test]
fn a_rule_returning_a_huge_output_is_refused() {
    let mut set = set_with("huge_output");
    let (readings, h) = batch(2, |_| 150.0);
    let eval = set.evaluate(&readings, &h);
    assert_eq!(default_alerts(&eval), 2);
    assert!(
        eval.alerts.iter().all(|a| a.rule.name == "default-glucose"),
        "nothing of the huge output got through"
    );
    assert!(!eval.faults.is_empty());
    assert!(
        eval.faults.iter().all(|f| matches!(
            f.kind,
            glucoguard::model::FaultKind::OutputLimit | glucoguard::model::FaultKind::MemoryLimit
        )),
        "{:?}",
        eval.faults
    );
}

#[test]
fn chatty_stderr_is_bounded_and_not_a_fault() {
    let mut set = set_with("stderr_spammer");
    let (readings, h) = batch(3, |_| 150.0);
    for _ in 0..3 {
        let eval = set.evaluate(&readings, &h);
        assert!(eval.faults.is_empty(), "{:?}", eval.faults);
        assert_eq!(default_alerts(&eval), 3);
    }
}

#[test]
fn forbidden_imports_and_invalid_descriptions_are_rejected_at_load() {
    let e = engine();
    match e.load(&plugin("forbidden_import")) {
        Err(LoadError::ForbiddenImports(names)) => {
            assert!(
                names.iter().any(|n| n.starts_with("wasi:filesystem/")),
                "{names:?}"
            )
        }
        other => panic!("expected ForbiddenImports, got {other:?}"),
    }
    match e.load(&plugin("bad_describe")) {
        Err(LoadError::InvalidInfo(msg)) => assert!(
            msg.contains("0 s") && msg.contains("above the maximum"),
            "{msg}"
        ),
        other => panic!("expected InvalidInfo, got {other:?}"),
    }
    match e.load(b"\0asm\x01\0\0\0") {
        Err(LoadError::NotAComponent(_)) => {}
        other => panic!("a core module is not a component: {other:?}"),
    }
}

#[test]
fn alerts_carry_severity_and_deterministic_ids() {
    let e = engine();
    let mut set = RuleSet::new(vec![active(&e, "glucoguard_default_rule", &[])]);
    let (readings, h) = batch(2, |i| if i == 0 { 300.0 } else { 120.0 });
    let first = set.evaluate(&readings, &h);
    assert_eq!(first.alerts[0].severity, Severity::Critical);
    assert_eq!(first.alerts[1].severity, Severity::Warning);
    let again = set.evaluate(&readings, &h);
    let ids = |v: &glucoguard::engine::Evaluation| {
        v.alerts.iter().map(|a| a.id.clone()).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(&first),
        ids(&again),
        "a replay yields the same alert ids"
    );
}
