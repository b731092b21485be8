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
        8,
        "one fault per reading it could not evaluate"
    );
    assert_eq!(
        eval.poison.len(),
        8,
        "each of them is a dead letter naming the rule"
    );
    assert!(
        eval.poison
            .iter()
            .all(|d| d.reason.contains("loop-forever"))
    );
    assert_eq!(
        eval.quarantined.len(),
        1,
        "faulting on every reading quarantines"
    );
    let looping = &set.rules()[0];
    assert!(looping.quarantined().unwrap().contains("timeout"));
    assert_eq!(looping.metrics().errors["timeout"], 8);
    // The host keeps going; the quarantined rule is skipped from now on.
    let eval = set.evaluate(&readings, &h);
    assert_eq!(default_alerts(&eval), 8);
    assert!(eval.faults.is_empty());
}

/// Readings of `n` at 150 mg/dL with 333 (poison for `trap-on-poison`) at `poison`.
fn with_poison(n: usize, poison: &[usize]) -> (Vec<Reading>, History) {
    batch(n, |i| if poison.contains(&i) { 333.0 } else { 150.0 })
}

fn trap_set() -> RuleSet {
    let e = engine();
    RuleSet::new(vec![
        active(&e, "trap_on_poison", &[]),
        active(&e, "glucoguard_default_rule", &[("high_mg_dl", 40.0)]),
    ])
}

fn trap_alerts(eval: &glucoguard::engine::Evaluation) -> usize {
    eval.alerts
        .iter()
        .filter(|a| a.rule.name == "trap-on-poison")
        .count()
}

#[test]
fn one_poison_reading_never_quarantines_wherever_it_sits_in_the_batch() {
    for n in [1usize, 2, 3, 10, 64] {
        for at in [0, n / 2, n - 1] {
            let mut set = trap_set();
            let (readings, h) = with_poison(n, &[at]);
            let eval = set.evaluate(&readings, &h);
            assert!(
                set.rules()[0].quarantined().is_none(),
                "poison at {at} of {n} quarantined the rule"
            );
            assert_eq!(eval.poison.len(), 1, "poison at {at} of {n}");
            assert_eq!(eval.faults.len(), 1, "the poison reading counts once");
            assert_eq!(set.rules()[0].metrics().errors["trap"], 1);
            assert_eq!(trap_alerts(&eval), n - 1, "every other reading evaluated");
            assert_eq!(default_alerts(&eval), n);
        }
    }
}

#[test]
fn poison_at_the_end_of_one_batch_and_the_start_of_the_next_does_not_quarantine() {
    let mut set = trap_set();
    let (first, h1) = with_poison(10, &[9]);
    let eval = set.evaluate(&first, &h1);
    assert_eq!((eval.poison.len(), trap_alerts(&eval)), (1, 9));
    let (second, h2) = with_poison(10, &[0]);
    let eval = set.evaluate(&second, &h2);
    assert_eq!((eval.poison.len(), trap_alerts(&eval)), (1, 9));
    assert!(set.rules()[0].quarantined().is_none());
    // A steady trickle of poison among good readings never quarantines either.
    for _ in 0..20 {
        let (b, h) = with_poison(10, &[3]);
        set.evaluate(&b, &h);
    }
    assert!(set.rules()[0].quarantined().is_none());
}

#[test]
fn a_rule_faulting_on_every_other_reading_is_quarantined() {
    let mut set = trap_set();
    let mut quarantined_after = None;
    for round in 0..10 {
        // Alternating batches: all poison, then all good.
        let (b, h) = if round % 2 == 0 {
            with_poison(4, &[0, 1, 2, 3])
        } else {
            with_poison(4, &[])
        };
        let eval = set.evaluate(&b, &h);
        assert_eq!(default_alerts(&eval), 4, "the other rule is unaffected");
        if !eval.quarantined.is_empty() {
            quarantined_after = Some(round);
            break;
        }
    }
    assert_eq!(quarantined_after, Some(0), "four of four readings faulted");
    let mut set = trap_set();
    for round in 0..40 {
        // Every other batch fails whole: a consecutive-fault count would never quarantine.
        let (b, h) = with_poison(2, if round % 2 == 0 { &[0, 1] } else { &[] });
        set.evaluate(&b, &h);
    }
    assert!(
        set.rules()[0].quarantined().is_some(),
        "half its readings faulting marks the rule faulty, even interleaved with good batches"
    );
}

#[test]
fn isolating_a_batch_that_always_faults_costs_a_bounded_number_of_calls() {
    let e = engine();
    let mut set = RuleSet::new(vec![active(&e, "trap_on_poison", &[])]);
    let (readings, h) = batch(1024, |_| 333.0);
    let eval = set.evaluate(&readings, &h);
    let rule = &set.rules()[0];
    let limit = test_engine_config().max_faulty_calls_per_batch as u64;
    assert!(
        rule.metrics().calls <= limit,
        "{} calls for one batch (limit {limit})",
        rule.metrics().calls
    );
    assert_eq!(
        eval.poison.len(),
        1024,
        "every reading is accounted for as a dead letter"
    );
    assert!(
        eval.poison
            .iter()
            .any(|d| d.reason.contains("not evaluated")),
        "the readings left when the budget ran out say so"
    );
    assert!(rule.quarantined().is_some());
}

#[test]
fn a_rule_returning_non_finite_values_is_refused() {
    let mut set = set_with("non_finite_value");
    // 150 gets a finite value, 250 NaN, 350 infinity.
    let (readings, h) = batch(3, |i| [150.0, 250.0, 350.0][i]);
    let eval = set.evaluate(&readings, &h);
    assert_eq!(default_alerts(&eval), 3, "the other rule is unaffected");
    let values: Vec<f64> = eval
        .alerts
        .iter()
        .filter(|a| a.rule.name == "non-finite-value")
        .filter_map(|a| a.value)
        .collect();
    assert_eq!(values, vec![150.0], "only the finite value got through");
    assert_eq!(eval.poison.len(), 2);
    assert!(
        eval.faults
            .iter()
            .all(|f| f.kind == glucoguard::model::FaultKind::InvalidOutput
                && f.detail.contains("finite")),
        "{:?}",
        eval.faults
    );
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
    assert!(!trap_alerted.iter().any(|id| id.ends_with(":r6")));
    assert_eq!(eval.poison.len(), 1);
    assert!(
        eval.poison[0].payload.contains(":r6\""),
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
