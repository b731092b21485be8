//! `backtest::diff`: what a candidate rule version would add and remove compared with the
//! active one over a period, checked against an independent computation of the default
//! rule's alerts in plain Rust; plus the edges (no active version, identical versions, a
//! candidate that faults or is quarantined) and the period backtest it is built on.

use crate::support::*;
use glucoguard::backtest::diff::{BacktestDiff, diff};
use glucoguard::backtest::{self, BacktestError, Period};
use glucoguard::model::{Body, ParamValue, Reading};
use std::collections::{BTreeMap, BTreeSet};

const DEFAULT_RULE: &str = "glucoguard_default_rule";
/// The default rule's defaults (plugins/default-rule) and the candidate's other threshold.
const HIGH: i64 = 115;
const AVG_HIGH: i64 = 105;
const CANDIDATE_HIGH: i64 = 130;
const WINDOW_MS: i64 = 600_000;
const PERIOD: Period = Period {
    from_ms: T0,
    to_ms: T0 + 8 * 60 * MIN,
};

fn params(pairs: &[(&str, f64)]) -> BTreeMap<String, ParamValue> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), ParamValue::Float(*v)))
        .collect()
}

/// Deterministic pseudo-random numbers (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Several patients' 5-minute readings (with jitter) from 30 minutes before the period to 30
/// minutes after it, some sharing a timestamp, a few sent twice, all shuffled. Values are
/// whole mg/dL, so window sums are exact in any order and the threshold comparisons of the
/// independent computation cannot differ from the rule's by a rounding. Patient 99 has a
/// high reading in the lookback that makes its first reading in the period alert.
fn generated(seed: u64) -> Vec<Reading> {
    let mut rng = Rng(seed);
    let mut readings = Vec::new();
    for patient in 1..=8u64 {
        let mut t = PERIOD.from_ms - 30 * MIN + rng.below(60_000) as i64;
        let mut n = 0;
        while t < PERIOD.to_ms + 30 * MIN {
            let mg_dl = 80 + rng.below(70) as i64 + if rng.below(6) == 0 { 40 } else { 0 };
            readings.push(glucose(
                &format!("p{patient}-{n}"),
                patient,
                t,
                mg_dl as f64,
            ));
            n += 1;
            if rng.below(15) == 0 {
                // Another reading of the same patient at the same time: in each other's window.
                let other = 90 + rng.below(60) as i64;
                readings.push(glucose(
                    &format!("p{patient}-{n}"),
                    patient,
                    t,
                    other as f64,
                ));
                n += 1;
            }
            t += 5 * MIN + rng.below(40_000) as i64 - 20_000;
        }
    }
    readings.push(glucose(
        "lookback-high",
        99,
        PERIOD.from_ms - 5 * MIN,
        200.0,
    ));
    readings.push(glucose("first-in-period", 99, PERIOD.from_ms, 100.0));
    let repeats: Vec<Reading> = (0..readings.len() / 30)
        .map(|_| readings[rng.below(readings.len() as u64) as usize].clone())
        .collect();
    readings.extend(repeats);
    for i in (1..readings.len()).rev() {
        readings.swap(i, rng.below(i as u64 + 1) as usize);
    }
    readings
}

/// (reading id, code) of the alerts the default rule raises with thresholds `high` and
/// `avg_high` on the readings in the period, per patient, computed from the rule's documented
/// semantics: a reading above `high` is `high-reading`; otherwise a mean over the patient's
/// readings in (t − 10 min, t] (itself and equal times included) above `avg_high` is
/// `high-average`. Repeats of a reading count once.
fn expected(
    readings: &[Reading],
    high: i64,
    avg_high: i64,
) -> BTreeMap<u64, BTreeSet<(String, String)>> {
    let mut unique: BTreeMap<&str, (u64, i64, i64)> = BTreeMap::new();
    for r in readings {
        let Body::Glucose(g) = &r.body else { continue };
        unique.insert(&r.id, (g.patient_id, r.at_ms, g.mg_dl as i64));
    }
    let mut out: BTreeMap<u64, BTreeSet<(String, String)>> = BTreeMap::new();
    for (id, &(patient, t, mg_dl)) in &unique {
        if !PERIOD.contains(t) {
            continue;
        }
        let window: Vec<i64> = unique
            .values()
            .filter(|&&(p, u, _)| p == patient && t - WINDOW_MS < u && u <= t)
            .map(|&(_, _, v)| v)
            .collect();
        let (sum, count) = (window.iter().sum::<i64>(), window.len() as i64);
        let code = if mg_dl > high {
            "high-reading"
        } else if sum > avg_high * count {
            "high-average"
        } else {
            continue;
        };
        out.entry(patient)
            .or_default()
            .insert(((*id).to_owned(), code.to_owned()));
    }
    out
}

fn keys(examples: &[glucoguard::backtest::diff::AlertExample]) -> BTreeSet<(String, String)> {
    examples
        .iter()
        .map(|e| (e.reading_id.clone(), e.code.clone()))
        .collect()
}

fn default_vs_candidate(readings: &[Reading], examples: usize) -> BacktestDiff {
    let engine = engine();
    let rule = load(&engine, DEFAULT_RULE);
    let candidate = params(&[("high_mg_dl", CANDIDATE_HIGH as f64)]);
    diff(
        Some((rule.clone(), &BTreeMap::new())),
        (rule, &candidate),
        readings,
        PERIOD,
        examples,
    )
    .unwrap()
}

#[test]
fn the_diff_per_patient_equals_an_independent_computation() {
    let readings = generated(2026);
    let base = expected(&readings, HIGH, AVG_HIGH);
    let candidate = expected(&readings, CANDIDATE_HIGH, AVG_HIGH);
    assert!(
        base[&99].contains(&("g:1099:first-in-period".into(), "high-average".into())),
        "the lookback warms the window of the period's first reading: {:?}",
        base.get(&99)
    );

    let d = default_vs_candidate(&readings, usize::MAX);
    let patients: BTreeSet<u64> = base.keys().chain(candidate.keys()).copied().collect();
    assert_eq!(
        d.patients
            .iter()
            .map(|p| p.patient_id.unwrap())
            .collect::<Vec<_>>(),
        patients.iter().copied().collect::<Vec<_>>(),
        "every patient with an alert, sorted by id"
    );
    let empty = BTreeSet::new();
    let (mut added, mut removed, mut unchanged) = (0, 0, 0);
    for p in &d.patients {
        let id = p.patient_id.unwrap();
        let (b, c) = (
            base.get(&id).unwrap_or(&empty),
            candidate.get(&id).unwrap_or(&empty),
        );
        let want_added: BTreeSet<_> = c.difference(b).cloned().collect();
        let want_removed: BTreeSet<_> = b.difference(c).cloned().collect();
        assert_eq!(keys(&p.added_examples), want_added, "added, patient {id}");
        assert_eq!(
            keys(&p.removed_examples),
            want_removed,
            "removed, patient {id}"
        );
        assert_eq!(p.added, want_added.len() as u64, "patient {id}");
        assert_eq!(p.removed, want_removed.len() as u64, "patient {id}");
        assert_eq!(
            p.unchanged,
            b.intersection(c).count() as u64,
            "patient {id}"
        );
        assert_eq!(p.severity_changed, 0, "no value reaches 250 mg/dL");
        for e in p.added_examples.iter().chain(&p.removed_examples) {
            assert!(PERIOD.contains(e.at_ms), "{e:?}");
            assert!(e.value.is_some() && !e.message.is_empty(), "{e:?}");
        }
        added += p.added;
        removed += p.removed;
        unchanged += p.unchanged;
    }
    assert!(
        added > 0 && removed > 0 && unchanged > 0,
        "{added} {removed} {unchanged}"
    );
    assert_eq!(
        (d.added, d.removed, d.unchanged),
        (added, removed, unchanged)
    );
    assert_eq!(
        d.base_alerts,
        base.values().map(|s| s.len() as u64).sum::<u64>()
    );
    assert_eq!(
        d.candidate_alerts,
        candidate.values().map(|s| s.len() as u64).sum::<u64>()
    );
    assert_eq!(d.base_alerts, unchanged + removed);
    assert_eq!(d.candidate_alerts, unchanged + added);

    let unique: BTreeMap<&str, i64> = readings.iter().map(|r| (r.id.as_str(), r.at_ms)).collect();
    let in_period = unique.values().filter(|&&t| PERIOD.contains(t)).count() as u64;
    let lookback = unique.values().filter(|&&t| t < PERIOD.from_ms).count() as u64;
    let before_end = readings.iter().filter(|r| r.at_ms < PERIOD.to_ms).count() as u64;
    assert_eq!(d.readings_evaluated, in_period);
    assert_eq!(d.lookback_readings, lookback);
    assert_eq!(d.duplicates, before_end - in_period - lookback);
    assert!(d.duplicates > 0, "the data set repeats some readings");
    assert_eq!(d.base_faults, Default::default());
    assert_eq!(d.candidate_faults, Default::default());
    assert_eq!(
        (
            d.base.as_ref().unwrap().name.as_str(),
            d.candidate.name.as_str()
        ),
        ("default-glucose", "default-glucose")
    );
}

#[test]
fn the_diff_does_not_depend_on_reading_order_and_its_examples_are_the_earliest() {
    let readings = generated(7);
    let full = default_vs_candidate(&readings, usize::MAX);
    let mut sorted = readings.clone();
    sorted.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
    let mut reversed = sorted.clone();
    reversed.reverse();
    let mut unique = sorted.clone();
    unique.dedup_by(|a, b| a.id == b.id);
    let short = default_vs_candidate(&readings, 2);
    assert!(short.duplicates > 0);
    assert_eq!(
        default_vs_candidate(&sorted, 2),
        short,
        "sorted, with repeats"
    );
    let borrowed = default_vs_candidate(&unique, 2);
    assert_eq!(borrowed.duplicates, 0);
    assert_eq!(
        BacktestDiff {
            duplicates: short.duplicates,
            ..borrowed
        },
        short,
        "sorted without repeats (borrowed, not copied)"
    );
    let reversed = default_vs_candidate(&reversed, 2);
    assert_eq!(
        serde_json::to_string(&reversed).unwrap(),
        serde_json::to_string(&short).unwrap(),
        "reversed: byte-identical JSON"
    );
    assert_eq!(short.duplicates, full.duplicates);
    for (s, f) in short.patients.iter().zip(&full.patients) {
        assert_eq!(
            (s.added, s.removed, s.unchanged),
            (f.added, f.removed, f.unchanged)
        );
        assert!(s.added_examples.len() <= 2 && s.removed_examples.len() <= 2);
        assert_eq!(
            s.added_examples[..],
            f.added_examples[..s.added_examples.len()]
        );
        assert_eq!(
            s.removed_examples[..],
            f.removed_examples[..s.removed_examples.len()]
        );
        let order = |e: &glucoguard::backtest::diff::AlertExample| {
            (e.at_ms, e.reading_id.clone(), e.code.clone())
        };
        assert!(f.added_examples.is_sorted_by_key(order), "earliest first");
        assert!(f.removed_examples.is_sorted_by_key(order), "earliest first");
    }
}

#[test]
fn without_an_active_version_every_alert_is_added() {
    let readings = generated(11);
    let engine = engine();
    let d = diff(
        None,
        (load(&engine, DEFAULT_RULE), &BTreeMap::new()),
        &readings,
        PERIOD,
        usize::MAX,
    )
    .unwrap();
    let want = expected(&readings, HIGH, AVG_HIGH);
    assert_eq!(d.base, None);
    assert_eq!((d.base_alerts, d.removed, d.unchanged), (0, 0, 0));
    assert_eq!(d.added, d.candidate_alerts);
    assert_eq!(d.added, want.values().map(|s| s.len() as u64).sum::<u64>());
    for p in &d.patients {
        assert_eq!(keys(&p.added_examples), want[&p.patient_id.unwrap()]);
        assert!(p.removed_examples.is_empty());
    }
}

#[test]
fn identical_versions_change_nothing() {
    let readings = generated(13);
    let engine = engine();
    let rule = load(&engine, DEFAULT_RULE);
    // The defaults spelt out resolve to the same parameters as no overrides at all.
    let spelt_out = params(&[("high_mg_dl", 115.0), ("avg_high_mg_dl", 105.0)]);
    let d = diff(
        Some((rule.clone(), &BTreeMap::new())),
        (rule, &spelt_out),
        &readings,
        PERIOD,
        3,
    )
    .unwrap();
    assert!(d.base_alerts > 0);
    assert_eq!((d.added, d.removed, d.severity_changed), (0, 0, 0));
    assert_eq!(d.unchanged, d.base_alerts);
    assert_eq!(d.candidate_alerts, d.base_alerts);
    assert!(
        d.patients.iter().all(|p| p.added_examples.is_empty()
            && p.removed_examples.is_empty()
            && p.unchanged > 0)
    );
}

#[test]
fn a_candidate_that_faults_is_reported_not_hidden() {
    // `trap_on_poison` traps on a batch holding a 333.0 mg/dL reading and otherwise raises
    // `high-reading` above 115: the poison reading in the period is isolated and reported;
    // the one in the lookback is never evaluated, so it does not fault.
    let mut readings = generated(17);
    readings.push(glucose("poison", 3, PERIOD.from_ms + 61 * MIN, 333.0));
    readings.push(glucose(
        "poison-in-lookback",
        4,
        PERIOD.from_ms - 7 * MIN,
        333.0,
    ));
    let engine = engine();
    let d = diff(
        Some((load(&engine, DEFAULT_RULE), &BTreeMap::new())),
        (load(&engine, "trap_on_poison"), &BTreeMap::new()),
        &readings,
        PERIOD,
        usize::MAX,
    )
    .unwrap();
    let f = &d.candidate_faults;
    assert_eq!(f.faulted_readings, 1, "{f:?}");
    assert_eq!(f.by_kind, BTreeMap::from([("trap".to_owned(), 1)]));
    assert_eq!(f.quarantined, None);
    assert_eq!(f.not_evaluated, 0);
    assert_eq!(f.examples.len(), 1);
    assert_eq!(f.examples[0].reading_id, "g:1003:poison");
    assert_eq!(f.examples[0].at_ms, PERIOD.from_ms + 61 * MIN);
    assert_eq!(d.base_faults, Default::default());
    // The base alerted on the poison reading; the candidate has no alert on it.
    let p3 = d.patients.iter().find(|p| p.patient_id == Some(3)).unwrap();
    assert!(
        p3.removed_examples
            .iter()
            .any(|e| e.reading_id == "g:1003:poison" && e.code == "high-reading"),
        "{p3:?}"
    );
    // Every other reading was still evaluated: the candidate's `high-reading` alerts are
    // the base's on every reading above 115 but the poison one.
    let base_high: u64 = expected(&readings, HIGH, AVG_HIGH)
        .values()
        .flatten()
        .filter(|(_, code)| code == "high-reading")
        .count() as u64;
    assert_eq!(d.candidate_alerts, base_high - 1);
}

#[test]
fn a_candidate_quarantined_during_the_backtest_reports_what_it_did_not_evaluate() {
    // Every reading is poison: the first batch faults throughout, the engine quarantines the
    // candidate as the streaming host would, and the rest of the period is not evaluated.
    let readings: Vec<Reading> = (0..3000)
        .map(|i| {
            glucose(
                &format!("x{i}"),
                1 + i as u64 % 5,
                PERIOD.from_ms + i * 5_000,
                333.0,
            )
        })
        .collect();
    let engine = engine();
    let d = diff(
        Some((load(&engine, DEFAULT_RULE), &BTreeMap::new())),
        (load(&engine, "trap_on_poison"), &BTreeMap::new()),
        &readings,
        PERIOD,
        1,
    )
    .unwrap();
    let f = &d.candidate_faults;
    assert!(f.quarantined.is_some(), "{f:?}");
    assert!(f.not_evaluated > 0, "{f:?}");
    assert_eq!(f.faulted_readings + f.not_evaluated, d.readings_evaluated);
    assert_eq!(f.examples.len(), backtest::FAULT_EXAMPLES);
    assert!(
        f.examples
            .is_sorted_by_key(|e| (e.at_ms, e.reading_id.clone()))
    );
    assert_eq!(f.examples[0].reading_id, "g:1001:x0");
    assert_eq!((d.candidate_alerts, d.added), (0, 0));
    assert_eq!(d.removed, d.base_alerts);
}

#[test]
fn an_empty_period_and_invalid_parameters_are_refused() {
    let engine = engine();
    let rule = load(&engine, DEFAULT_RULE);
    let readings = generated(19);
    let empty = Period {
        from_ms: T0,
        to_ms: T0,
    };
    let err = diff(None, (rule.clone(), &BTreeMap::new()), &readings, empty, 1).unwrap_err();
    assert!(matches!(err, BacktestError::Period(_)), "{err}");
    let too_low = params(&[("high_mg_dl", 20.0)]);
    let err = diff(
        Some((rule.clone(), &BTreeMap::new())),
        (rule, &too_low),
        &readings,
        PERIOD,
        1,
    )
    .unwrap_err();
    assert!(
        matches!(&err, BacktestError::Params(m) if m.starts_with("candidate version")),
        "{err}"
    );
}

#[test]
fn a_period_backtest_over_everything_gives_the_file_backtest_alerts() {
    let readings = generated(23);
    let engine = engine();
    let rule = load(&engine, DEFAULT_RULE);
    let everything = Period {
        from_ms: i64::MIN,
        to_ms: i64::MAX,
    };
    let run = backtest::run_period(rule.clone(), &BTreeMap::new(), &readings, everything).unwrap();
    let lines: Vec<String> = readings
        .iter()
        .map(|r| {
            let Body::Glucose(g) = &r.body else {
                unreachable!()
            };
            let given = glucoguard::model::parse::given_reading_id(&r.id);
            glucose_json(given, g.patient_id, r.at_ms, g.mg_dl)
        })
        .collect();
    let mut out = Vec::new();
    let summary = backtest::run(
        rule,
        &BTreeMap::new(),
        lines.join("\n").as_bytes(),
        &mut out,
    )
    .unwrap();
    let from_file: BTreeSet<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["alert_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let in_memory: BTreeSet<String> = run.alerts.iter().map(|a| a.id.clone()).collect();
    assert_eq!(in_memory, from_file);
    assert_eq!(run.alerts.len() as u64, summary.alerts);
    assert_eq!(
        (run.readings, run.duplicates),
        (summary.readings, summary.duplicates)
    );
    assert_eq!(run.lookback_readings, 0);
    assert!(run.alerts.is_sorted_by_key(|a| a.at_ms), "event-time order");
}
