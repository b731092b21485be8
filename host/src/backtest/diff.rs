//! Backtest diff: what enabling a candidate rule version would change, compared with the
//! active one, over a period of stored readings — the alerts it would add and remove, per
//! patient, with counts and examples.
//!
//! Both versions replay the same prepared readings with the exact event-time semantics of
//! every backtest (one shared replay loop), each on its own thread. Two alerts are **the
//! same** when they are on the same reading (reading id) with the same alert code. Alert ids
//! cannot be compared: they hash the rule version, so every alert of another version has
//! another id. Severity, value and message are not part of the identity: a candidate with a
//! lower threshold still raises `high-reading` on a reading the active version also alerted
//! on, only its message names the other threshold; such an alert is unchanged (a change of
//! severity is counted apart, as `severity_changed`). The same reading alerted under another
//! code (`high-average` becoming `high-reading`) is one removed and one added alert.

use super::{BacktestError, FaultReport, Period, PeriodRun, Prepared, run_prepared};
use crate::engine::{ActiveRule, CompiledRule};
use crate::model::{Alert, EpochMs, ParamValue, Reading, RuleRef, Severity, format_ms};
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a candidate version would change over a period, compared with the active version.
/// Deterministic: the same readings (in any order) and versions give the same value.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BacktestDiff {
    pub period: Period,
    /// The active version compared against; `None` when no version is active (then every
    /// candidate alert is added).
    pub base: Option<RuleRef>,
    pub candidate: RuleRef,
    /// Readings with event time in the period, repeats dropped.
    pub readings_evaluated: u64,
    /// Readings before the period that only warmed the windows.
    pub lookback_readings: u64,
    /// Repeats of a reading (same subject, time and id) that were dropped.
    pub duplicates: u64,
    /// Distinct alerts (by reading id and code) each version raised in the period.
    pub base_alerts: u64,
    pub candidate_alerts: u64,
    /// Alerts only the candidate raises, only the base raises, and both raise.
    pub added: u64,
    pub removed: u64,
    pub unchanged: u64,
    /// Of the unchanged alerts, those whose severity differs between the versions.
    pub severity_changed: u64,
    /// Faults of each version. A faulting candidate shows here, not only as fewer alerts:
    /// the readings it faulted on (or skipped once quarantined) have none, so they look
    /// "removed".
    pub base_faults: FaultReport,
    pub candidate_faults: FaultReport,
    /// Every patient with an alert from either version, by patient id; alerts with no
    /// patient (device telemetry) come last under `patient_id: null`.
    pub patients: Vec<PatientDiff>,
}

/// One patient's share of a [`BacktestDiff`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatientDiff {
    pub patient_id: Option<u64>,
    pub added: u64,
    pub removed: u64,
    pub unchanged: u64,
    pub severity_changed: u64,
    /// The earliest added and removed alerts (by event time, then reading id and code), at
    /// most `examples_per_patient` of each.
    pub added_examples: Vec<AlertExample>,
    pub removed_examples: Vec<AlertExample>,
}

/// An added or removed alert, as the version that raises it would.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertExample {
    /// The reading's id as the store keeps it (so it can be looked up).
    pub reading_id: String,
    pub at_ms: EpochMs,
    pub timestamp: String,
    pub code: String,
    pub severity: Severity,
    pub value: Option<f64>,
    pub message: String,
}

/// The part of an alert a diff keeps: what identifies it, orders it and shows it as an
/// example. Two versions' alerts over a long period are held at once, so the rest (alert
/// id, rule, device) is dropped as each batch is evaluated.
struct Hit {
    patient_id: Option<u64>,
    at_ms: EpochMs,
    reading_id: String,
    code: String,
    severity: Severity,
    value: Option<f64>,
    message: String,
}

impl From<Alert> for Hit {
    fn from(a: Alert) -> Self {
        Hit {
            patient_id: a.patient_id,
            at_ms: a.at_ms,
            reading_id: a.reading_id,
            code: a.code,
            severity: a.severity,
            value: a.value,
            message: a.message,
        }
    }
}

impl Hit {
    /// The merge order: patient (alerts without one last), then the reading's time, then
    /// the identity (reading id, code). Patient and time belong to the reading, so equal
    /// identities compare equal, and the walk meets each patient's alerts together and in
    /// time order, which makes the examples the earliest ones.
    fn cmp_key(&self, other: &Hit) -> Ordering {
        self.key().cmp(&other.key())
    }

    fn key(&self) -> (bool, Option<u64>, EpochMs, &str, &str) {
        (
            self.patient_id.is_none(),
            self.patient_id,
            self.at_ms,
            &self.reading_id,
            &self.code,
        )
    }

    fn example(&self) -> AlertExample {
        AlertExample {
            reading_id: self.reading_id.clone(),
            at_ms: self.at_ms,
            timestamp: format_ms(self.at_ms),
            code: self.code.clone(),
            severity: self.severity,
            value: self.value,
            message: self.message.clone(),
        }
    }
}

/// Runs `base` (the active version; `None` when none is active) and `candidate` over
/// `readings` and compares their alerts on readings in `period` (see the module docs for
/// when two alerts are the same). Readings before the period only warm the windows: load
/// the rule set's `lookback_ms()` before `period.from_ms`. The two versions run on two
/// threads; `examples_per_patient` bounds each patient's added and removed examples.
pub fn diff(
    base: Option<(Arc<CompiledRule>, &BTreeMap<String, ParamValue>)>,
    candidate: (Arc<CompiledRule>, &BTreeMap<String, ParamValue>),
    readings: &[Reading],
    period: Period,
    examples_per_patient: usize,
) -> Result<BacktestDiff, BacktestError> {
    let prepared = Prepared::new(readings, period)?;
    // Parameters are checked before any work, naming the side they are wrong for.
    let base = base
        .map(|(rule, params)| {
            ActiveRule::new(rule, params)
                .map_err(|e| BacktestError::Params(format!("active version: {e}")))
        })
        .transpose()?;
    let candidate = ActiveRule::new(candidate.0, candidate.1)
        .map_err(|e| BacktestError::Params(format!("candidate version: {e}")))?;

    let (base, candidate) = std::thread::scope(|s| {
        let prepared = &prepared;
        let base = base.map(|active| {
            std::thread::Builder::new()
                .name("backtest-base".into())
                .spawn_scoped(s, move || side(active, prepared))
        });
        let candidate = side(candidate, prepared);
        let base = match base {
            None => Ok(None),
            Some(Err(e)) => Err(BacktestError::Io(e)),
            Some(Ok(handle)) => match handle.join() {
                Ok(result) => result.map(Some),
                Err(panic) => std::panic::resume_unwind(panic),
            },
        };
        (base, candidate)
    });
    let (candidate_run, candidate_hits) = candidate?;
    let (base_run, base_hits) = match base? {
        Some((run, hits)) => (Some(run), hits),
        None => (None, Vec::new()),
    };
    Ok(compare(
        period,
        base_run,
        base_hits,
        candidate_run,
        candidate_hits,
        examples_per_patient,
    ))
}

/// One version's run, its alerts as hits in merge order, one per (reading id, code): a rule
/// that returns the same code twice for a reading has one alert stored (the ids are equal).
fn side(
    active: ActiveRule,
    prepared: &Prepared<'_>,
) -> Result<(PeriodRun, Vec<Hit>), BacktestError> {
    let (run, mut hits) =
        run_prepared(active, prepared, |alerts| alerts.into_iter().map(Hit::from))?;
    hits.sort_unstable_by(Hit::cmp_key);
    hits.dedup_by(|a, b| a.cmp_key(b) == Ordering::Equal);
    Ok((run, hits))
}

/// Merges two versions' hits (each in merge order) into the diff.
fn compare(
    period: Period,
    base_run: Option<PeriodRun>,
    base: Vec<Hit>,
    candidate_run: PeriodRun,
    candidate: Vec<Hit>,
    examples: usize,
) -> BacktestDiff {
    let mut out = BacktestDiff {
        period,
        base: base_run.as_ref().map(|r| r.rule.clone()),
        candidate: candidate_run.rule.clone(),
        readings_evaluated: candidate_run.readings,
        lookback_readings: candidate_run.lookback_readings,
        duplicates: candidate_run.duplicates,
        base_alerts: base.len() as u64,
        candidate_alerts: candidate.len() as u64,
        added: 0,
        removed: 0,
        unchanged: 0,
        severity_changed: 0,
        base_faults: base_run.map(|r| r.faults).unwrap_or_default(),
        candidate_faults: candidate_run.faults,
        patients: Vec::new(),
    };
    let patient = |patient_id| PatientDiff {
        patient_id,
        added: 0,
        removed: 0,
        unchanged: 0,
        severity_changed: 0,
        added_examples: Vec::new(),
        removed_examples: Vec::new(),
    };
    let (mut b, mut c) = (base.iter().peekable(), candidate.iter().peekable());
    loop {
        let step = match (b.peek(), c.peek()) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(x), Some(y)) => x.cmp_key(y),
        };
        let (old, new) = match step {
            Ordering::Less => (b.next(), None),
            Ordering::Greater => (None, c.next()),
            Ordering::Equal => (b.next(), c.next()),
        };
        let id = old.or(new).expect("one side has a hit").patient_id;
        if out.patients.last().is_none_or(|p| p.patient_id != id) {
            out.patients.push(patient(id));
        }
        let p = out.patients.last_mut().expect("just ensured");
        match (old, new) {
            (Some(old), Some(new)) => {
                p.unchanged += 1;
                if old.severity != new.severity {
                    p.severity_changed += 1;
                }
            }
            (Some(old), None) => {
                p.removed += 1;
                if p.removed_examples.len() < examples {
                    p.removed_examples.push(old.example());
                }
            }
            (None, Some(new)) => {
                p.added += 1;
                if p.added_examples.len() < examples {
                    p.added_examples.push(new.example());
                }
            }
            (None, None) => unreachable!("a step takes at least one hit"),
        }
    }
    for p in &out.patients {
        out.added += p.added;
        out.removed += p.removed;
        out.unchanged += p.unchanged;
        out.severity_changed += p.severity_changed;
    }
    out
}
