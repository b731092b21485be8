//! Backtesting: run one rule over a file of readings with exact event-time semantics,
//! whatever the file's order, and write one JSON alert per line.
//!
//! The whole file is loaded into a history that keeps everything, so every reading sees
//! exactly the readings in its window; evaluation then goes in event-time order.

use crate::engine::history::{History, id_hash};
use crate::engine::{ActiveRule, CompiledRule, RuleSet};
use crate::model::{Alert, ParamValue, Reading, format_ms, parse};
use serde::Serialize;
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
    // Event-time order; ties keep file order so output is deterministic. Sorting keys and
    // then moving each reading once is cheaper than sorting the (large) readings themselves.
    let mut order: Vec<(i64, u32)> = readings
        .iter()
        .enumerate()
        .map(|(i, r)| (r.at_ms, i as u32))
        .collect();
    order.sort_unstable();
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
    let mut history = History::new(None);
    let mut inserted = 0;
    for (n, chunk) in readings.chunks(BATCH).enumerate() {
        // The history holds everything up to this chunk's last time, equal times included:
        // every reading sees exactly its window, and lookups stay near the newest points.
        let phase = Instant::now();
        let last = chunk[chunk.len() - 1].at_ms;
        let mut upto = (n * BATCH + chunk.len()).max(inserted);
        while upto < readings.len() && readings[upto].at_ms == last {
            upto += 1;
        }
        for r in &readings[inserted..upto] {
            if let Some(v) = r.window_value() {
                history.insert_hashed(r.subject(), r.at_ms, id_hash(&r.id), v);
            }
        }
        inserted = upto;
        summary.history_secs += phase.elapsed().as_secs_f64();
        let phase = Instant::now();
        let eval = set.evaluate(chunk, &history);
        summary.evaluate_secs += phase.elapsed().as_secs_f64();
        let phase = Instant::now();
        summary.faults += eval.faults.len() as u64;
        summary.poison += eval.poison.len() as u64;
        for a in &eval.alerts {
            write_alert(&mut w, a)?;
        }
        summary.alerts += eval.alerts.len() as u64;
        summary.write_secs += phase.elapsed().as_secs_f64();
    }
    let phase = Instant::now();
    w.flush()?;
    summary.write_secs += phase.elapsed().as_secs_f64();
    summary.elapsed_secs = started.elapsed().as_secs_f64();
    summary.readings_per_sec = summary.lines as f64 / summary.elapsed_secs.max(1e-9);
    Ok(summary)
}

/// Drops repeats of the same reading (same subject, time and id) from time-sorted readings.
/// Repeats share a timestamp, so only readings of one time are compared with each other.
fn dedup_same_time(readings: &mut Vec<Reading>) {
    let mut seen: Vec<(crate::model::SubjectKey, u64)> = Vec::new();
    let mut group_at = None;
    readings.retain(|r| {
        if group_at != Some(r.at_ms) {
            group_at = Some(r.at_ms);
            seen.clear();
        }
        let key = (r.subject(), id_hash(&r.id));
        if seen.contains(&key) {
            false
        } else {
            seen.push(key);
            true
        }
    });
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
