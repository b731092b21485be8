//! Backtesting: run one rule over readings with exact event-time semantics, whatever their
//! order — a file of JSON lines ([`run`], one JSON alert per line out), a period of stored
//! readings ([`run_period`]), or two versions compared over a period ([`diff::diff`]).
//!
//! All readings are loaded into a history that keeps everything, so every reading sees
//! exactly the readings in its window; evaluation then goes in event-time order. Every path
//! shares one replay loop, so they cannot drift apart.

pub mod diff;

use crate::engine::history::{History, id_hash};
use crate::engine::{ActiveRule, CompiledRule, Evaluation, RuleSet};
use crate::model::{
    Alert, EpochMs, FaultKind, ParamValue, Reading, RuleInfo, RuleRef, format_ms, parse,
};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

/// Readings handed to the rule per call.
pub const BATCH: usize = 1024;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub lines: u64,
    pub readings: u64,
    pub duplicates: u64,
    pub invalid: u64,
    pub alerts: u64,
    pub faults: u64,
    pub poison: u64,
    pub elapsed_secs: f64,
    pub readings_per_sec: f64,
    /// Where the time went: parsing and validating lines, ordering them into the history,
    /// evaluating, and writing alerts.
    pub parse_secs: f64,
    pub history_secs: f64,
    pub evaluate_secs: f64,
    pub write_secs: f64,
    /// First few invalid lines: (1-based line number, reason).
    pub invalid_examples: Vec<(u64, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum BacktestError {
    #[error("{0}")]
    Params(String),
    #[error("{0}")]
    Period(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// One alert as `backtest` writes it.
#[derive(Debug, Serialize)]
struct AlertLine<'a> {
    reading_id: &'a str,
    timestamp: String,
    patient_id: Option<u64>,
    device_id: u64,
    rule: &'a str,
    rule_version: &'a str,
    code: &'a str,
    severity: &'static str,
    message: &'a str,
    value: Option<f64>,
    alert_id: &'a str,
}

/// Parses JSON lines; returns the valid readings (duplicates by id and time dropped) and
/// fills the counters of `summary`.
pub fn parse_lines(input: &[u8], summary: &mut Summary) -> Vec<Reading> {
    let mut readings = Vec::with_capacity(input.len() / 120);
    for (n, line) in input.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        summary.lines += 1;
        match parse::parse_reading(line) {
            Ok(r) => readings.push(r),
            Err(e) => {
                summary.invalid += 1;
                if summary.invalid_examples.len() < 10 {
                    summary.invalid_examples.push((n as u64 + 1, e.0));
                }
            }
        }
    }
    readings
}

/// Runs `rule` with `params` over `input` (JSON lines) and writes alerts to `out`.
pub fn run(
    rule: Arc<CompiledRule>,
    params: &BTreeMap<String, ParamValue>,
    input: &[u8],
    out: &mut dyn Write,
) -> Result<Summary, BacktestError> {
    let started = Instant::now();
    let mut summary = Summary::default();
    let readings = parse_lines(input, &mut summary);
    summary.parse_secs = started.elapsed().as_secs_f64();
    let phase = Instant::now();
    // Sorting keys and then moving each reading once is cheaper than sorting the (large)
    // readings themselves.
    let order = event_time_keys(readings.iter());
    let mut slots: Vec<Option<Reading>> = readings.into_iter().map(Some).collect();
    let mut readings: Vec<Reading> = order
        .iter()
        .filter_map(|&(_, i)| slots[i as usize].take())
        .collect();
    drop(slots);
    dedup_same_time(&mut readings);
    summary.readings = readings.len() as u64;
    summary.duplicates = summary.lines - summary.invalid - summary.readings;
    summary.history_secs = phase.elapsed().as_secs_f64();

    let active = ActiveRule::new(rule, params).map_err(BacktestError::Params)?;
    let mut set = RuleSet::new(vec![active]);
    let mut w = std::io::BufWriter::with_capacity(1 << 20, out);
    let replayed = replay(&mut set, &readings, 0, |eval| {
        let phase = Instant::now();
        summary.faults += eval.faults.len() as u64;
        summary.poison += eval.poison.len() as u64;
        for a in &eval.alerts {
            write_alert(&mut w, a)?;
        }
        summary.alerts += eval.alerts.len() as u64;
        summary.write_secs += phase.elapsed().as_secs_f64();
        Ok(())
    })?;
    summary.history_secs += replayed.history_secs;
    summary.evaluate_secs += replayed.evaluate_secs;
    let phase = Instant::now();
    w.flush()?;
    summary.write_secs += phase.elapsed().as_secs_f64();
    summary.elapsed_secs = started.elapsed().as_secs_f64();
    summary.readings_per_sec = summary.lines as f64 / summary.elapsed_secs.max(1e-9);
    Ok(summary)
}

/// A half-open period of event time, `[from_ms, to_ms)`: the readings whose alerts a period
/// backtest reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    pub from_ms: EpochMs,
    pub to_ms: EpochMs,
}

impl Period {
    pub fn contains(&self, at_ms: EpochMs) -> bool {
        (self.from_ms..self.to_ms).contains(&at_ms)
    }

    fn check(&self) -> Result<(), BacktestError> {
        if self.from_ms < self.to_ms {
            Ok(())
        } else {
            Err(BacktestError::Period(format!(
                "the period must start before it ends: [{}, {})",
                format_ms(self.from_ms),
                format_ms(self.to_ms)
            )))
        }
    }
}

/// In-memory readings prepared for a period backtest: event-time order, repeats dropped,
/// everything at or after the period's end left out (no window of a reading in the period
/// reaches forward), and the position where the period starts.
///
/// Both versions of a [`diff`](diff::diff) replay the same `Prepared`, so they are ordered
/// once. Readings that already are in event-time order without repeats (as a period query
/// returns them) are borrowed, not copied.
#[derive(Debug)]
pub(crate) struct Prepared<'a> {
    readings: Cow<'a, [Reading]>,
    start: usize,
    duplicates: u64,
}

impl<'a> Prepared<'a> {
    /// Prepares the readings of `readings` that lie before `period.to_ms`. Readings before
    /// `period.from_ms` only warm the windows (and `previous`): the caller loads the rules'
    /// lookback (`RuleSet::lookback_ms`) before the period for exact windows.
    pub(crate) fn new(readings: &'a [Reading], period: Period) -> Result<Self, BacktestError> {
        period.check()?;
        let sorted = readings.windows(2).all(|w| w[0].at_ms <= w[1].at_ms);
        let (readings, duplicates) = if sorted {
            let upto = readings.partition_point(|r| r.at_ms < period.to_ms);
            let readings = &readings[..upto];
            let mut repeats = Repeats::default();
            if readings.iter().any(|r| repeats.is_repeat(r)) {
                dedup_copy(readings.iter())
            } else {
                (Cow::Borrowed(readings), 0)
            }
        } else {
            dedup_copy(readings.iter().filter(|r| r.at_ms < period.to_ms))
        };
        let start = readings.partition_point(|r| r.at_ms < period.from_ms);
        Ok(Prepared {
            readings,
            start,
            duplicates,
        })
    }

    /// Readings in the period (after repeats were dropped).
    pub(crate) fn in_period(&self) -> &[Reading] {
        &self.readings[self.start..]
    }
}

/// An event-time ordered copy of `readings` without repeats, and how many repeats it dropped.
fn dedup_copy<'b>(readings: impl Iterator<Item = &'b Reading>) -> (Cow<'static, [Reading]>, u64) {
    let kept: Vec<&Reading> = readings.collect();
    let order = event_time_keys(kept.iter().copied());
    let mut ordered: Vec<Reading> = order
        .iter()
        .map(|&(_, i)| kept[i as usize].clone())
        .collect();
    dedup_same_time(&mut ordered);
    let dropped = (kept.len() - ordered.len()) as u64;
    (Cow::Owned(ordered), dropped)
}

/// What one rule did on a period's readings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeriodRun {
    /// The rule version that ran.
    pub rule: RuleRef,
    /// Alerts on readings in the period, batch after batch in event-time order (within a
    /// batch in the rule's order).
    pub alerts: Vec<Alert>,
    pub faults: FaultReport,
    /// Readings in the period, and before it (lookback), after dropping repeats.
    pub readings: u64,
    pub lookback_readings: u64,
    pub duplicates: u64,
}

/// Faults a rule raised during a backtest. A rule that faults is reported, never hidden:
/// the readings it faulted on have no alerts, so without this report a faulting candidate
/// would look like one that simply alerts less.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FaultReport {
    /// Readings the rule faulted on (each counts once, as in the streaming host).
    pub faulted_readings: u64,
    /// The same readings by fault kind (`trap`, `timeout`, …).
    pub by_kind: BTreeMap<String, u64>,
    /// Set when the rule faulted on so much of its recent input that the engine quarantined
    /// it, as the streaming host would: the reason, and how many readings of the period the
    /// rule would have wanted after that, which it did not evaluate.
    pub quarantined: Option<String>,
    pub not_evaluated: u64,
    /// The first few faulted readings in event-time order (ties by reading id).
    pub examples: Vec<FaultExample>,
}

/// Faulted readings kept as examples in a [`FaultReport`].
pub const FAULT_EXAMPLES: usize = 10;

/// One reading a rule faulted on.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultExample {
    pub reading_id: String,
    pub at_ms: EpochMs,
    pub timestamp: String,
    pub kind: FaultKind,
    pub detail: String,
}

impl FaultReport {
    /// Takes the faults of one batch's evaluation. The engine records each faulted reading
    /// as a `RuleFault` and a dead letter holding the reading, pushed in pairs.
    fn record(&mut self, eval: &Evaluation) {
        debug_assert_eq!(eval.faults.len(), eval.poison.len());
        for (fault, poison) in eval.faults.iter().zip(&eval.poison) {
            self.faulted_readings += 1;
            *self
                .by_kind
                .entry(fault.kind.as_str().to_owned())
                .or_default() += 1;
            // The dead letter's payload is the reading as JSON; without it the fault still
            // counts, only the example is lost.
            let Ok(reading) = serde_json::from_str::<Reading>(&poison.payload) else {
                continue;
            };
            let key = (reading.at_ms, reading.id.as_str());
            let full = self.examples.len() >= FAULT_EXAMPLES;
            if full
                && self
                    .examples
                    .last()
                    .is_some_and(|e| (e.at_ms, e.reading_id.as_str()) <= key)
            {
                continue;
            }
            let pos = self
                .examples
                .partition_point(|e| (e.at_ms, e.reading_id.as_str()) < key);
            self.examples.insert(
                pos,
                FaultExample {
                    timestamp: format_ms(reading.at_ms),
                    reading_id: reading.id,
                    at_ms: reading.at_ms,
                    kind: fault.kind,
                    detail: fault.detail.clone(),
                },
            );
            self.examples.truncate(FAULT_EXAMPLES);
        }
        if let Some((_, reason)) = eval.quarantined.first() {
            self.quarantined = Some(reason.clone());
        }
    }

    /// Counts the readings of `rest` that `rule` would have evaluated had it not been
    /// quarantined.
    fn not_evaluated(&mut self, info: &RuleInfo, rest: &[Reading]) {
        self.not_evaluated += rest.iter().filter(|r| info.wants(r.kind())).count() as u64;
    }
}

/// Runs `rule` with `params` over a period of in-memory readings with exact event-time
/// semantics (the order of `readings` does not matter, repeats count once) and returns the
/// alerts on readings in `period`; readings before it only warm the windows.
pub fn run_period(
    rule: Arc<CompiledRule>,
    params: &BTreeMap<String, ParamValue>,
    readings: &[Reading],
    period: Period,
) -> Result<PeriodRun, BacktestError> {
    let prepared = Prepared::new(readings, period)?;
    let active = ActiveRule::new(rule, params).map_err(BacktestError::Params)?;
    let (run, alerts) = run_prepared(active, &prepared, |alerts| alerts)?;
    Ok(PeriodRun { alerts, ..run })
}

/// Replays `prepared` through one rule; `take` turns each batch's alerts into what the
/// caller keeps (a diff keeps a compact form, so two runs' alerts need not be held whole),
/// collected batch after batch in event-time order.
pub(crate) fn run_prepared<T, I: IntoIterator<Item = T>>(
    active: ActiveRule,
    prepared: &Prepared,
    mut take: impl FnMut(Vec<Alert>) -> I,
) -> Result<(PeriodRun, Vec<T>), BacktestError> {
    let rule = active.compiled().rule_ref();
    let mut set = RuleSet::new(vec![active]);
    let mut kept = Vec::new();
    let mut faults = FaultReport::default();
    let replayed = replay(&mut set, &prepared.readings, prepared.start, |mut eval| {
        faults.record(&eval);
        kept.extend(take(std::mem::take(&mut eval.alerts)));
        Ok(())
    })?;
    if let Some(at) = replayed.stopped_at {
        faults.not_evaluated(set.rules()[0].info(), &prepared.readings[at..]);
    }
    let run = PeriodRun {
        rule,
        alerts: Vec::new(),
        faults,
        readings: prepared.in_period().len() as u64,
        lookback_readings: prepared.start as u64,
        duplicates: prepared.duplicates,
    };
    Ok((run, kept))
}

/// Event-time order of readings as (time, position) keys; ties keep input order, so the
/// order (and a file backtest's output) is deterministic.
fn event_time_keys<'a>(readings: impl Iterator<Item = &'a Reading>) -> Vec<(EpochMs, u32)> {
    let mut order: Vec<(EpochMs, u32)> = readings
        .enumerate()
        .map(|(i, r)| (r.at_ms, i as u32))
        .collect();
    order.sort_unstable();
    order
}

/// Where a replay spent its time, and where it stopped early.
struct Replayed {
    history_secs: f64,
    evaluate_secs: f64,
    /// The first reading not evaluated because every rule of the set was quarantined.
    stopped_at: Option<usize>,
}

/// The core of every backtest: evaluates `readings[start..]` (event-time order, repeats
/// dropped) through `set` in batches of [`BATCH`], with a history that keeps everything, and
/// hands each batch's evaluation to `each`. `readings[..start]` only warm the windows.
fn replay(
    set: &mut RuleSet,
    readings: &[Reading],
    start: usize,
    mut each: impl FnMut(Evaluation) -> Result<(), BacktestError>,
) -> Result<Replayed, BacktestError> {
    let mut out = Replayed {
        history_secs: 0.0,
        evaluate_secs: 0.0,
        stopped_at: None,
    };
    let mut history = History::new(None);
    let phase = Instant::now();
    for r in &readings[..start] {
        if let Some(v) = r.window_value() {
            history.insert_hashed(r.subject(), r.at_ms, id_hash(&r.id), v);
        }
    }
    out.history_secs += phase.elapsed().as_secs_f64();
    let mut inserted = start;
    for (n, chunk) in readings[start..].chunks(BATCH).enumerate() {
        let first = start + n * BATCH;
        if !set.rules().is_empty() && set.rules().iter().all(|r| r.quarantined().is_some()) {
            // Nothing would evaluate the rest; the caller reports it as not evaluated.
            out.stopped_at = Some(first);
            break;
        }
        // The history holds everything up to this chunk's last time, equal times included:
        // every reading sees exactly its window, and lookups stay near the newest points.
        let phase = Instant::now();
        let last = chunk[chunk.len() - 1].at_ms;
        let mut upto = (first + chunk.len()).max(inserted);
        while upto < readings.len() && readings[upto].at_ms == last {
            upto += 1;
        }
        for r in &readings[inserted..upto] {
            if let Some(v) = r.window_value() {
                history.insert_hashed(r.subject(), r.at_ms, id_hash(&r.id), v);
            }
        }
        inserted = upto;
        out.history_secs += phase.elapsed().as_secs_f64();
        let phase = Instant::now();
        let eval = set.evaluate(chunk, &history);
        out.evaluate_secs += phase.elapsed().as_secs_f64();
        each(eval)?;
    }
    Ok(out)
}

/// Drops repeats of the same reading (same subject, time and id) from time-sorted readings.
fn dedup_same_time(readings: &mut Vec<Reading>) {
    let mut repeats = Repeats::default();
    readings.retain(|r| !repeats.is_repeat(r));
}

/// Tells repeats of a reading (same subject, time and id) in time-sorted readings. Repeats
/// share a timestamp, so only readings of one time are compared with each other.
#[derive(Default)]
struct Repeats {
    seen: Vec<(crate::model::SubjectKey, u64)>,
    group_at: Option<EpochMs>,
}

impl Repeats {
    fn is_repeat(&mut self, r: &Reading) -> bool {
        if self.group_at != Some(r.at_ms) {
            self.group_at = Some(r.at_ms);
            self.seen.clear();
        }
        let key = (r.subject(), id_hash(&r.id));
        if self.seen.contains(&key) {
            true
        } else {
            self.seen.push(key);
            false
        }
    }
}

fn write_alert(w: &mut impl Write, a: &Alert) -> std::io::Result<()> {
    let line = AlertLine {
        reading_id: crate::model::parse::given_reading_id(&a.reading_id),
        timestamp: format_ms(a.at_ms),
        patient_id: a.patient_id,
        device_id: a.device_id,
        rule: &a.rule.name,
        rule_version: &a.rule.version,
        code: &a.code,
        severity: a.severity.as_str(),
        message: &a.message,
        value: a.value,
        alert_id: &a.id,
    };
    serde_json::to_writer(&mut *w, &line)?;
    w.write_all(b"\n")
}
