//! Example rule `rate-of-change`: alert when glucose falls or rises faster than a limit, using the host-supplied `previous` reading.
//!
//! The rate is `(value - previous.value) / minutes between them`. Strict
//! comparisons: a fall of exactly `max_fall_mg_dl_per_min` raises nothing.
//!
//! - falling faster than `max_fall_mg_dl_per_min` (default 2.0) → `falling-fast`,
//!   `critical` when the reading is already below 70 mg/dL, else `warning`;
//! - rising faster than `max_rise_mg_dl_per_min` (default 3.0) → `rising-fast`, `warning`.
//!
//! The alert's value is the rate in mg/dL per minute (negative when falling).
//! A reading without `previous`, or whose previous reading is more than
//! `max_gap_min` minutes older (default 15), is not judged: a rate over a long
//! gap says little about the current trend.

use glucoguard_sdk::{
    Alert, ParamSpec, Params, Reading, ReadingKind, Rule, RuleInfo, Severity, Windows, export_rule,
};

/// Below this a fast fall is critical (the level 1 hypoglycaemia threshold).
pub const LOW_MG_DL: f64 = 70.0;

/// The rule, exported as the component's `rule` interface.
pub struct RateOfChange;

/// The thresholds of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_fall_mg_dl_per_min: f64,
    pub max_rise_mg_dl_per_min: f64,
    pub max_gap_min: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_fall_mg_dl_per_min: 2.0,
            max_rise_mg_dl_per_min: 3.0,
            max_gap_min: 15,
        }
    }
}

impl Rule for RateOfChange {
    fn describe() -> RuleInfo {
        let defaults = Limits::default();
        RuleInfo {
            name: "rate-of-change".into(),
            version: "1.0.0".into(),
            description: "Alerts when glucose falls or rises faster than the configured mg/dL per minute."
                .into(),
            kinds: vec![ReadingKind::Glucose],
            windows: vec![],
            params: vec![
                ParamSpec::float(
                    "max_fall_mg_dl_per_min",
                    "Alert when glucose falls faster than this (mg/dL per minute)",
                    defaults.max_fall_mg_dl_per_min,
                )
                .bounds(0.1, 20.0),
                ParamSpec::float(
                    "max_rise_mg_dl_per_min",
                    "Alert when glucose rises faster than this (mg/dL per minute)",
                    defaults.max_rise_mg_dl_per_min,
                )
                .bounds(0.1, 20.0),
                ParamSpec::integer(
                    "max_gap_min",
                    "Compare with the previous reading only when it is at most this many minutes older",
                    defaults.max_gap_min,
                )
                .bounds(1.0, 120.0),
            ],
        }
    }

    fn evaluate(
        params: &Params<'_>,
        batch: &[Reading],
        _windows: &Windows<'_>,
    ) -> Result<Vec<Alert>, String> {
        let limits = Limits {
            max_fall_mg_dl_per_min: params.float("max_fall_mg_dl_per_min")?,
            max_rise_mg_dl_per_min: params.float("max_rise_mg_dl_per_min")?,
            max_gap_min: params.integer("max_gap_min")?,
        };
        Ok(evaluate_batch(&limits, batch))
    }
}

export_rule!(RateOfChange);

/// The rule's logic; see the crate docs.
pub fn evaluate_batch(limits: &Limits, batch: &[Reading]) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for (i, reading) in batch.iter().enumerate() {
        let (Some(mg_dl), Some(previous)) = (reading.glucose(), reading.previous) else {
            continue;
        };
        let gap_ms = reading.at_ms.saturating_sub(previous.at_ms);
        if gap_ms <= 0 || gap_ms > limits.max_gap_min.saturating_mul(60_000) {
            continue;
        }
        let minutes = gap_ms as f64 / 60_000.0;
        let rate = (mg_dl - previous.value) / minutes;
        if -rate > limits.max_fall_mg_dl_per_min {
            let severity = if mg_dl < LOW_MG_DL {
                Severity::Critical
            } else {
                Severity::Warning
            };
            let message = format!(
                "Glucose falling {:.1} mg/dL per minute ({:.1} → {mg_dl:.1} mg/dL in {minutes:.1} min)",
                -rate, previous.value
            );
            alerts.push(Alert::new(i, "falling-fast", severity, message).with_value(rate));
        } else if rate > limits.max_rise_mg_dl_per_min {
            let message = format!(
                "Glucose rising {rate:.1} mg/dL per minute ({:.1} → {mg_dl:.1} mg/dL in {minutes:.1} min)",
                previous.value
            );
            alerts.push(Alert::new(i, "rising-fast", Severity::Warning, message).with_value(rate));
        }
    }
    alerts
}

#[cfg(test)]
mod tests {
    use super::*;
    use glucoguard_sdk::ParamValue;
    use glucoguard_sdk::testing::{check_info, evaluate_series, glucose_series};

    const MIN: i64 = 60_000;

    fn codes(series: &[(u64, i64, f64)]) -> Vec<(u32, String, Severity)> {
        evaluate_batch(&Limits::default(), &glucose_series(series))
            .into_iter()
            .map(|a| (a.index, a.code, a.severity))
            .collect()
    }

    #[test]
    fn describe_is_valid() {
        assert_eq!(check_info(&RateOfChange::describe()), Ok(()));
    }

    #[test]
    fn fall_of_exactly_the_limit_does_not_alert() {
        assert!(codes(&[(1, 0, 120.0), (1, 5 * MIN, 110.0)]).is_empty());
        assert_eq!(
            codes(&[(1, 0, 120.0), (1, 5 * MIN, 109.9)]),
            vec![(1, "falling-fast".to_owned(), Severity::Warning)]
        );
    }

    #[test]
    fn fast_fall_below_70_is_critical() {
        assert_eq!(
            codes(&[(1, 0, 90.0), (1, 5 * MIN, 65.0)])[0].2,
            Severity::Critical
        );
    }

    #[test]
    fn rise_of_exactly_the_limit_does_not_alert() {
        assert!(codes(&[(1, 0, 100.0), (1, 5 * MIN, 115.0)]).is_empty());
        assert_eq!(
            codes(&[(1, 0, 100.0), (1, 5 * MIN, 115.1)])[0].1,
            "rising-fast"
        );
    }

    #[test]
    fn no_previous_long_gap_or_other_subject_is_not_judged() {
        assert!(codes(&[(1, 0, 200.0)]).is_empty());
        assert!(codes(&[(1, 0, 200.0), (1, 16 * MIN, 100.0)]).is_empty());
        assert_eq!(codes(&[(1, 0, 200.0), (1, 15 * MIN, 100.0)]).len(), 1);
        assert!(codes(&[(2, 0, 200.0), (1, MIN, 100.0)]).is_empty());
        // Equal timestamps are never each other's previous reading.
        assert!(codes(&[(1, MIN, 200.0), (1, MIN, 100.0)]).is_empty());
    }

    #[test]
    fn value_is_the_rate_and_params_override() {
        let series = [(1, 0, 100.0), (1, 2 * MIN, 96.0)];
        let alerts = evaluate_series::<RateOfChange>(&[], &series).unwrap();
        assert!(alerts.is_empty()); // -2.0 per minute exactly
        let strict = [("max_fall_mg_dl_per_min", ParamValue::Float(1.5))];
        let alerts = evaluate_series::<RateOfChange>(&strict, &series).unwrap();
        assert_eq!(alerts[0].value, Some(-2.0));
        let short_gap = [("max_gap_min", ParamValue::Integer(1))];
        assert!(
            evaluate_series::<RateOfChange>(&short_gap, &series)
                .unwrap()
                .is_empty()
        );
    }
}
