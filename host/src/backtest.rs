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
    let mut readings = parse_lines(input, &mut summary);
    // Event-time order; ties keep file order so output is deterministic.
    readings.sort_by_key(|r| r.at_ms);
    let mut history = History::new(None);
    readings.retain(|r| match r.window_value() {
        Some(v) => history.insert_hashed(r.subject(), r.at_ms, id_hash(&r.id), v),
        None => true,
    });
    summary.readings = readings.len() as u64;
    summary.duplicates = summary.lines - summary.invalid - summary.readings;

    let active = ActiveRule::new(rule, params).map_err(BacktestError::Params)?;
    let mut set = RuleSet::new(vec![active]);
    let mut w = std::io::BufWriter::with_capacity(1 << 16, out);
    for chunk in readings.chunks(BATCH) {
        let eval = set.evaluate(chunk, &history);
        summary.faults += eval.faults.len() as u64;
        summary.poison += eval.poison.len() as u64;
        for a in &eval.alerts {
            write_alert(&mut w, a)?;
        }
        summary.alerts += eval.alerts.len() as u64;
    }
    w.flush()?;
    summary.elapsed_secs = started.elapsed().as_secs_f64();
    summary.readings_per_sec = summary.lines as f64 / summary.elapsed_secs.max(1e-9);
    Ok(summary)
}

fn write_alert(w: &mut impl Write, a: &Alert) -> std::io::Result<()> {
    let line = AlertLine {
        reading_id: &a.reading_id,
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
