//! Native test helpers: build readings, compute `previous` and window stats with the host's semantics, and run a [`Rule`] end to end.
//!
//! Semantics (the contract the host implements, restated so rule tests see
//! the same inputs the host would pass):
//!
//! - History is per kind and subject. Only glucose readings have a value; a
//!   device reading gets `previous: None` and, for each declared window,
//!   `WindowStats { count: 0, mean: NaN, min: NaN, max: NaN }` (the contract
//!   does not define aggregates over telemetry).
//! - The window of a glucose reading at `t` holds the same subject's glucose
//!   readings with timestamp in `(t - duration, t]`: the reading itself and
//!   every reading with an equal timestamp are in, a reading exactly
//!   `duration` older is out. `mean` is the sum in ascending
//!   `(at_ms, value)` order divided by `count`.
//! - `previous` is the subject's latest glucose reading strictly before `t`;
//!   a reading with an equal timestamp is never the previous one. When
//!   several readings share that latest earlier timestamp, the largest value
//!   wins (any order-independent choice would do; this one is documented).
//! - All of it depends on the set of readings, never on their order in the batch.

use std::collections::BTreeMap;

use crate::params::{type_name, value_type};
use crate::{
    Alert, Connectivity, DeviceStatus, Measurement, ParamType, ParamValue, PreviousReading,
    Reading, ReadingKind, Rule, RuleInfo, WindowSpec, WindowStats,
};

/// A glucose reading in mg/dL, without `previous`.
pub fn glucose(subject: u64, at_ms: i64, mg_dl: f64) -> Reading {
    Reading {
        subject,
        at_ms,
        measurement: Measurement::Glucose(mg_dl),
        previous: None,
    }
}

/// A device reading.
pub fn device(subject: u64, at_ms: i64, status: DeviceStatus) -> Reading {
    Reading {
        subject,
        at_ms,
        measurement: Measurement::Device(status),
        previous: None,
    }
}

/// A device status with firmware `test-1.0`.
pub fn device_status(
    battery_pct: Option<f64>,
    connectivity: Connectivity,
    error_codes: &[&str],
) -> DeviceStatus {
    DeviceStatus {
        battery_pct,
        connectivity,
        firmware: "test-1.0".to_owned(),
        error_codes: error_codes.iter().map(|code| (*code).to_owned()).collect(),
    }
}

/// Glucose readings from `(subject, at_ms, mg_dl)` triples, in the given
/// order, with `previous` filled in.
pub fn glucose_series(series: &[(u64, i64, f64)]) -> Vec<Reading> {
    let mut batch: Vec<Reading> = series
        .iter()
        .map(|&(subject, at_ms, mg_dl)| glucose(subject, at_ms, mg_dl))
        .collect();
    fill_previous(&mut batch);
    batch
}

/// One subject's glucose readings sorted by `(at_ms, value)`.
#[derive(Default)]
struct Timeline {
    at_ms: Vec<i64>,
    values: Vec<f64>,
}

fn timelines(batch: &[Reading]) -> BTreeMap<u64, Timeline> {
    let mut points: BTreeMap<u64, Vec<(i64, f64)>> = BTreeMap::new();
    for reading in batch {
        if let Some(mg_dl) = reading.glucose() {
            points
                .entry(reading.subject)
                .or_default()
                .push((reading.at_ms, mg_dl));
        }
    }
    points
        .into_iter()
        .map(|(subject, mut points)| {
            points.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
            let (at_ms, values) = points.into_iter().unzip();
            (subject, Timeline { at_ms, values })
        })
        .collect()
}

/// Set `previous` on every reading of `batch`, taking the history from the
/// batch itself.
pub fn fill_previous(batch: &mut [Reading]) {
    let timelines = timelines(batch);
    for reading in batch.iter_mut() {
        reading.previous = match (reading.kind(), timelines.get(&reading.subject)) {
            (ReadingKind::Glucose, Some(line)) => {
                let before = line.at_ms.partition_point(|&at| at < reading.at_ms);
                before.checked_sub(1).map(|i| PreviousReading {
                    value: line.values[i],
                    at_ms: line.at_ms[i],
                })
            }
            _ => None,
        };
    }
}

/// The flat window stats for `batch` (reading-major, windows in declaration
/// order), taking the history from the batch itself.
pub fn window_stats(windows: &[WindowSpec], batch: &[Reading]) -> Vec<WindowStats> {
    let timelines = timelines(batch);
    let mut flat = Vec::with_capacity(batch.len() * windows.len());
    for reading in batch {
        for window in windows {
            let line = timelines.get(&reading.subject);
            flat.push(match (reading.kind(), line) {
                (ReadingKind::Glucose, Some(line)) => stats_in(line, reading.at_ms, window),
                _ => WindowStats {
                    count: 0,
                    mean: f64::NAN,
                    min: f64::NAN,
                    max: f64::NAN,
                },
            });
        }
    }
    flat
}

fn stats_in(line: &Timeline, at_ms: i64, window: &WindowSpec) -> WindowStats {
    let start_exclusive = at_ms.saturating_sub(i64::from(window.duration_secs) * 1000);
    let lo = line.at_ms.partition_point(|&at| at <= start_exclusive);
    let hi = line.at_ms.partition_point(|&at| at <= at_ms);
    let values = &line.values[lo..hi];
    let (mut sum, mut min, mut max) = (0.0, f64::INFINITY, f64::NEG_INFINITY);
    for &v in values {
        sum += v;
        min = min.min(v);
        max = max.max(v);
    }
    if values.is_empty() {
        return WindowStats {
            count: 0,
            mean: f64::NAN,
            min: f64::NAN,
            max: f64::NAN,
        };
    }
    WindowStats {
        count: u32::try_from(values.len()).expect("window fits in u32"),
        mean: sum / values.len() as f64,
        min,
        max,
    }
}

/// The parameter values the host would pass: the declared defaults with
/// `overrides` applied, each checked against its declared type and bounds.
pub fn params(
    info: &RuleInfo,
    overrides: &[(&str, ParamValue)],
) -> Result<Vec<ParamValue>, String> {
    let mut values: Vec<ParamValue> = info.params.iter().map(|spec| spec.default).collect();
    for (name, value) in overrides {
        let i = info
            .params
            .iter()
            .position(|spec| spec.name == *name)
            .ok_or_else(|| format!("rule `{}` has no parameter named `{name}`", info.name))?;
        let spec = &info.params[i];
        check_value(&spec.name, spec.type_, spec.min, spec.max, value)?;
        values[i] = *value;
    }
    Ok(values)
}

fn check_value(
    name: &str,
    type_: ParamType,
    min: Option<f64>,
    max: Option<f64>,
    value: &ParamValue,
) -> Result<(), String> {
    if value_type(value) != type_ {
        return Err(format!(
            "parameter `{name}` is declared {} but the value is {}",
            type_name(type_),
            type_name(value_type(value))
        ));
    }
    let number = match *value {
        ParamValue::Float(v) if !v.is_finite() => {
            return Err(format!("parameter `{name}` must be finite, got {v}"));
        }
        ParamValue::Float(v) => v,
        ParamValue::Integer(v) => v as f64,
        ParamValue::Boolean(_) => return Ok(()),
    };
    if min.is_some_and(|min| number < min) || max.is_some_and(|max| number > max) {
        return Err(format!(
            "parameter `{name}` = {number} lies outside its bounds [{}, {}]",
            min.map_or("-inf".to_owned(), |v| v.to_string()),
            max.map_or("+inf".to_owned(), |v| v.to_string()),
        ));
    }
    Ok(())
}

/// Check what a rule says about itself: the rules a sane host applies at load.
///
/// Name lowercase with dashes, version non-empty, at least one kind and no
/// duplicate, window and parameter names non-empty and unique, windows longer
/// than 0 s, bounds only on numeric parameters with `min <= max`, and every
/// default of its declared type and within its own bounds.
pub fn check_info(info: &RuleInfo) -> Result<(), String> {
    let name_ok = !info.name.is_empty()
        && info.name.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    if !name_ok {
        return Err(format!(
            "rule name `{}` is not lowercase with dashes",
            info.name
        ));
    }
    if info.version.trim().is_empty() {
        return Err("rule version is empty".to_owned());
    }
    if info.kinds.is_empty() {
        return Err("rule declares no reading kind".to_owned());
    }
    if info
        .kinds
        .iter()
        .enumerate()
        .any(|(i, kind)| info.kinds[..i].contains(kind))
    {
        return Err("rule declares a reading kind twice".to_owned());
    }
    for (i, window) in info.windows.iter().enumerate() {
        if window.name.is_empty() || info.windows[..i].iter().any(|w| w.name == window.name) {
            return Err(format!(
                "window name `{}` is empty or repeated",
                window.name
            ));
        }
        if window.duration_secs == 0 {
            return Err(format!("window `{}` lasts 0 s", window.name));
        }
    }
    for (i, spec) in info.params.iter().enumerate() {
        if spec.name.is_empty() || info.params[..i].iter().any(|p| p.name == spec.name) {
            return Err(format!(
                "parameter name `{}` is empty or repeated",
                spec.name
            ));
        }
        let bounded = spec.min.is_some() || spec.max.is_some();
        if bounded && spec.type_ == ParamType::Boolean {
            return Err(format!("boolean parameter `{}` has bounds", spec.name));
        }
        if spec.min.is_some_and(|v| !v.is_finite()) || spec.max.is_some_and(|v| !v.is_finite()) {
            return Err(format!("parameter `{}` has a non-finite bound", spec.name));
        }
        if let (Some(min), Some(max)) = (spec.min, spec.max)
            && min > max
        {
            return Err(format!(
                "parameter `{}` has min {min} > max {max}",
                spec.name
            ));
        }
        check_value(&spec.name, spec.type_, spec.min, spec.max, &spec.default)
            .map_err(|e| format!("default invalid: {e}"))?;
    }
    Ok(())
}

/// Run rule `R` on `batch` as the host would: check its [`RuleInfo`], apply
/// `overrides` to the defaults, compute the window stats from the batch
/// itself, evaluate, and check the alerts (index in range, code and message
/// not empty). `previous` is taken as given; see [`fill_previous`].
pub fn evaluate<R: Rule>(
    overrides: &[(&str, ParamValue)],
    batch: &[Reading],
) -> Result<Vec<Alert>, String> {
    let info = R::describe();
    check_info(&info)?;
    if let Some(reading) = batch.iter().find(|r| !info.kinds.contains(&r.kind())) {
        return Err(format!(
            "the batch holds a {:?} reading but rule `{}` only accepts {:?}; the host never passes it",
            reading.kind(),
            info.name,
            info.kinds
        ));
    }
    let values = params(&info, overrides)?;
    let windows = window_stats(&info.windows, batch);
    let alerts = crate::__private::evaluate::<R>(&info, &values, batch, &windows)?;
    for alert in &alerts {
        if alert.index as usize >= batch.len() {
            return Err(format!(
                "alert index {} outside a batch of {}",
                alert.index,
                batch.len()
            ));
        }
        if alert.code.is_empty() || alert.message.is_empty() {
            return Err(format!(
                "alert on reading {} has an empty code or message",
                alert.index
            ));
        }
    }
    Ok(alerts)
}

/// Run rule `R` on glucose readings given as `(subject, at_ms, mg_dl)` in one
/// batch, with `previous` and windows computed from the series, in any order.
/// Alert indexes point into `series`.
pub fn evaluate_series<R: Rule>(
    overrides: &[(&str, ParamValue)],
    series: &[(u64, i64, f64)],
) -> Result<Vec<Alert>, String> {
    evaluate::<R>(overrides, &glucose_series(series))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ParamSpec, Params, Severity, Windows};

    const MIN: i64 = 60_000;

    fn ten_minutes() -> Vec<WindowSpec> {
        vec![WindowSpec::new("avg-10m", 600)]
    }

    #[test]
    fn window_includes_equal_timestamps_and_excludes_exactly_duration_older() {
        let t = 1_000 * MIN;
        let batch = glucose_series(&[
            (1, t - 10 * MIN, 1000.0), // exactly 600 s older: out
            (1, t - 10 * MIN + 1, 100.0),
            (1, t, 110.0),
            (1, t, 120.0),     // same timestamp: in for both
            (2, t, 500.0),     // other subject: out
            (1, t + 1, 900.0), // later: out
        ]);
        let flat = window_stats(&ten_minutes(), &batch);
        assert_eq!(
            flat[2],
            WindowStats {
                count: 3,
                mean: 110.0,
                min: 100.0,
                max: 120.0
            }
        );
        assert_eq!(flat[3], flat[2]);
        assert_eq!(
            flat[0],
            WindowStats {
                count: 1,
                mean: 1000.0,
                min: 1000.0,
                max: 1000.0
            }
        );
        assert_eq!(flat[4].count, 1);
        assert_eq!(flat[5].count, 3); // (t + 1 - 600 s, t + 1]: the reading at t - 600 s + 1 is exactly 600 s older
    }

    #[test]
    fn previous_is_strictly_earlier_and_ties_pick_the_largest_value() {
        let batch = glucose_series(&[
            (1, 3 * MIN, 130.0),
            (1, 2 * MIN, 90.0),
            (1, MIN, 100.0),
            (1, 2 * MIN, 95.0),
            (1, MIN, 80.0),
        ]);
        assert_eq!(
            batch[0].previous,
            Some(PreviousReading {
                value: 95.0,
                at_ms: 2 * MIN
            })
        );
        assert_eq!(
            batch[1].previous,
            Some(PreviousReading {
                value: 100.0,
                at_ms: MIN
            })
        );
        assert_eq!(batch[2].previous, None);
        assert_eq!(batch[4].previous, None);
    }

    #[test]
    fn results_do_not_depend_on_input_order() {
        let series: Vec<(u64, i64, f64)> = (0..40)
            .map(|i: i64| {
                (
                    (i % 3) as u64,
                    (i * 7919 % 37) * 20_000,
                    80.0 + (i * 31 % 53) as f64,
                )
            })
            .collect();
        let forward = glucose_series(&series);
        let stats = window_stats(&ten_minutes(), &forward);
        let mut reversed_series = series.clone();
        reversed_series.reverse();
        let reversed = glucose_series(&reversed_series);
        let reversed_stats = window_stats(&ten_minutes(), &reversed);
        let n = series.len();
        for i in 0..n {
            assert_eq!(forward[i], reversed[n - 1 - i]);
            assert_eq!(stats[i], reversed_stats[n - 1 - i]);
        }
    }

    #[test]
    fn device_readings_have_no_history() {
        let status = device_status(Some(50.0), Connectivity::Connected, &[]);
        let mut batch = vec![device(1, MIN, status.clone()), device(1, 2 * MIN, status)];
        fill_previous(&mut batch);
        assert_eq!(batch[1].previous, None);
        let flat = window_stats(&ten_minutes(), &batch);
        assert_eq!(flat[1].count, 0);
    }

    #[test]
    fn params_apply_overrides_and_check_types_and_bounds() {
        let info = RuleInfo {
            name: "t".into(),
            version: "1.0.0".into(),
            description: String::new(),
            kinds: vec![ReadingKind::Glucose],
            windows: vec![],
            params: vec![
                ParamSpec::float("high", "", 115.0).bounds(40.0, 600.0),
                ParamSpec::integer("gap", "", 15).bounds(1.0, 60.0),
            ],
        };
        assert_eq!(
            params(&info, &[("gap", ParamValue::Integer(60))]),
            Ok(vec![ParamValue::Float(115.0), ParamValue::Integer(60)])
        );
        assert!(params(&info, &[("high", ParamValue::Float(600.01))]).is_err());
        assert!(params(&info, &[("high", ParamValue::Integer(100))]).is_err());
        assert!(params(&info, &[("nope", ParamValue::Float(1.0))]).is_err());
        assert!(params(&info, &[("high", ParamValue::Float(f64::NAN))]).is_err());
    }

    #[test]
    fn check_info_rejects_bad_declarations() {
        let good = RuleInfo {
            name: "my-rule-2".into(),
            version: "1.0.0".into(),
            description: String::new(),
            kinds: vec![ReadingKind::Glucose],
            windows: ten_minutes(),
            params: vec![ParamSpec::float("high", "", 115.0).bounds(40.0, 600.0)],
        };
        assert_eq!(check_info(&good), Ok(()));
        let with = |f: &dyn Fn(&mut RuleInfo)| {
            let mut info = good.clone();
            f(&mut info);
            check_info(&info)
        };
        assert!(with(&|i| i.name = "My_Rule".into()).is_err());
        assert!(with(&|i| i.name = "rule-".into()).is_err());
        assert!(with(&|i| i.kinds.clear()).is_err());
        assert!(with(&|i| i.windows[0].duration_secs = 0).is_err());
        assert!(with(&|i| i.params[0].default = ParamValue::Float(700.0)).is_err());
        assert!(with(&|i| i.params[0].min = Some(700.0)).is_err());
        assert!(with(&|i| i.params.push(ParamSpec::boolean("high", "", true))).is_err());
    }

    struct Above100;

    impl Rule for Above100 {
        fn describe() -> RuleInfo {
            RuleInfo {
                name: "above-100".into(),
                version: "0.1.0".into(),
                description: "test".into(),
                kinds: vec![ReadingKind::Glucose],
                windows: ten_minutes(),
                params: vec![ParamSpec::float("limit", "", 100.0).bounds(0.0, 1000.0)],
            }
        }

        fn evaluate(
            params: &Params<'_>,
            batch: &[Reading],
            windows: &Windows<'_>,
        ) -> Result<Vec<Alert>, String> {
            let limit = params.float("limit")?;
            Ok(batch
                .iter()
                .enumerate()
                .filter(|(i, _)| windows.get(*i, 0).max > limit)
                .map(|(i, _)| Alert::new(i, "window-max", Severity::Info, "max above limit"))
                .collect())
        }
    }

    #[test]
    fn evaluate_series_runs_a_rule_with_overrides() {
        let series = [
            (1, 0, 90.0),
            (1, MIN, 105.0),
            (1, 11 * MIN, 99.0),
            (2, MIN, 50.0),
        ];
        let indexes = |alerts: Vec<Alert>| alerts.iter().map(|a| a.index).collect::<Vec<_>>();
        assert_eq!(
            indexes(evaluate_series::<Above100>(&[], &series).unwrap()),
            vec![1]
        );
        let lower = [("limit", ParamValue::Float(60.0))];
        assert_eq!(
            indexes(evaluate_series::<Above100>(&lower, &series).unwrap()),
            vec![0, 1, 2]
        );
        let status = device_status(None, Connectivity::Unknown, &[]);
        assert!(evaluate::<Above100>(&[], &[device(1, 0, status)]).is_err());
    }
}
