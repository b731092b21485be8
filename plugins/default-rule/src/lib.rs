//! The default GlucoGuard rule `default-glucose`: alert on a reading above 115 mg/dL or a 10-minute average above 105 mg/dL.
//!
//! # Behaviour
//!
//! Parameters (float, bounds 40..=600 mg/dL each): `high_mg_dl` (default 115)
//! and `avg_high_mg_dl` (default 105). Window: `avg-10m`, 600 s, so the
//! average covers the patient's readings in `(t - 10 min, t]`, the reading
//! itself included. Kinds: glucose only.
//!
//! Both comparisons are strict: exactly 115 mg/dL, or an average of exactly
//! 105 mg/dL, raises nothing.
//!
//! **At most one alert per reading.** When a reading meets a condition, the
//! alert names the stronger one:
//!
//! - reading `> high_mg_dl` → code `high-reading`, value = the reading,
//!   severity `critical` when the reading is `>= 250` mg/dL, else `warning`.
//!   If the average is also high, the message says so. The reading itself is
//!   the stronger condition: it is the direct, current measurement, while the
//!   average lags behind it.
//! - otherwise, average `> avg_high_mg_dl` → code `high-average`, value = the
//!   average, severity `warning` (a high average under a normal current
//!   reading is a trend, never critical on its own).
//!
//! One alert per reading keeps notifications to one per event, and the host's
//! alert id (rule, version, reading) stays unique per reading.

use glucoguard_sdk::{
    Alert, ParamSpec, Params, Reading, ReadingKind, Rule, RuleInfo, Severity, WindowSpec, Windows,
    export_rule,
};

/// Default of `high_mg_dl`.
pub const HIGH_MG_DL: f64 = 115.0;
/// Default of `avg_high_mg_dl`.
pub const AVG_HIGH_MG_DL: f64 = 105.0;
/// A reading at or above this is critical.
pub const CRITICAL_MG_DL: f64 = 250.0;
/// The one window: the 10-minute average.
pub const WINDOW_SECS: u32 = 600;

/// The rule, exported as the component's `rule` interface.
pub struct DefaultRule;

impl Rule for DefaultRule {
    fn describe() -> RuleInfo {
        RuleInfo {
            name: "default-glucose".into(),
            version: "1.0.0".into(),
            description: "Alerts when a glucose reading is above high_mg_dl or the 10-minute \
                          average is above avg_high_mg_dl; one alert per reading."
                .into(),
            kinds: vec![ReadingKind::Glucose],
            windows: vec![WindowSpec::new("avg-10m", WINDOW_SECS)],
            params: vec![
                ParamSpec::float(
                    "high_mg_dl",
                    "Alert when a reading is above this (mg/dL)",
                    HIGH_MG_DL,
                )
                .bounds(40.0, 600.0),
                ParamSpec::float(
                    "avg_high_mg_dl",
                    "Alert when the 10-minute average is above this (mg/dL)",
                    AVG_HIGH_MG_DL,
                )
                .bounds(40.0, 600.0),
            ],
        }
    }

    fn evaluate(
        params: &Params<'_>,
        batch: &[Reading],
        windows: &Windows<'_>,
    ) -> Result<Vec<Alert>, String> {
        let high = params.float("high_mg_dl")?;
        let avg_high = params.float("avg_high_mg_dl")?;
        Ok(evaluate_batch(high, avg_high, batch, windows))
    }
}

export_rule!(DefaultRule);

/// The rule's logic: at most one alert per glucose reading (see the crate docs).
/// `windows` must hold the `avg-10m` stats as window 0.
pub fn evaluate_batch(
    high_mg_dl: f64,
    avg_high_mg_dl: f64,
    batch: &[Reading],
    windows: &Windows<'_>,
) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for (i, reading) in batch.iter().enumerate() {
        let Some(mg_dl) = reading.glucose() else {
            continue;
        };
        let average = windows.get(i, 0).mean;
        let average_high = average > avg_high_mg_dl;
        if mg_dl > high_mg_dl {
            let severity = if mg_dl >= CRITICAL_MG_DL {
                Severity::Critical
            } else {
                Severity::Warning
            };
            let mut message = format!("Glucose {mg_dl:.1} mg/dL is above {high_mg_dl:.1} mg/dL");
            if average_high {
                message.push_str(&format!(
                    "; 10-minute average {average:.1} mg/dL is above {avg_high_mg_dl:.1} mg/dL"
                ));
            }
            alerts.push(Alert::new(i, "high-reading", severity, message).with_value(mg_dl));
        } else if average_high {
            let message = format!(
                "10-minute average glucose {average:.1} mg/dL is above {avg_high_mg_dl:.1} mg/dL"
            );
            alerts.push(
                Alert::new(i, "high-average", Severity::Warning, message).with_value(average),
            );
        }
    }
    alerts
}

#[cfg(test)]
mod tests {
    use super::*;
    use glucoguard_sdk::ParamValue;
    use glucoguard_sdk::testing::{check_info, evaluate_series, glucose_series, window_stats};

    const MIN: i64 = 60_000;
    const T: i64 = 1_700_000_000_000;

    /// Alerts of `evaluate_batch` with the default thresholds, as (index, code, severity).
    fn run(series: &[(u64, i64, f64)]) -> Vec<(u32, String, Severity)> {
        let batch = glucose_series(series);
        let flat = window_stats(&DefaultRule::describe().windows, &batch);
        let windows = Windows::new(&flat, 1, batch.len()).unwrap();
        evaluate_batch(HIGH_MG_DL, AVG_HIGH_MG_DL, &batch, &windows)
            .into_iter()
            .map(|a| (a.index, a.code, a.severity))
            .collect()
    }

    fn codes(series: &[(u64, i64, f64)]) -> Vec<String> {
        run(series).into_iter().map(|(_, code, _)| code).collect()
    }

    #[test]
    fn describe_is_valid() {
        let info = DefaultRule::describe();
        assert_eq!(check_info(&info), Ok(()));
        assert_eq!(info.name, "default-glucose");
        assert_eq!(info.version, "1.0.0");
        assert_eq!(info.windows, vec![WindowSpec::new("avg-10m", 600)]);
    }

    #[test]
    fn exactly_115_does_not_alert_115_01_does() {
        // A lone reading: the average is the reading itself, so above 105 it is `high-average`.
        assert_eq!(codes(&[(1, T, 115.0)]), vec!["high-average"]);
        assert_eq!(codes(&[(1, T, 115.01)]), vec!["high-reading"]);
        // With a low history the average stays at or below 105: only the reading counts.
        assert_eq!(
            codes(&[(1, T - MIN, 95.0), (1, T, 115.0)]),
            Vec::<String>::new()
        );
        assert_eq!(
            codes(&[(1, T - MIN, 94.99), (1, T, 115.01)]),
            vec!["high-reading"]
        );
    }

    #[test]
    fn average_exactly_105_does_not_alert_105_01_does() {
        assert!(codes(&[(1, T - MIN, 100.0), (1, T, 110.0)]).is_empty());
        assert_eq!(codes(&[(1, T, 105.0)]), Vec::<String>::new());
        let alerts = run(&[(1, T - MIN, 100.02), (1, T, 110.0)]);
        assert_eq!(
            alerts,
            vec![(1, "high-average".to_owned(), Severity::Warning)]
        );
    }

    #[test]
    fn severity_is_critical_from_250() {
        assert_eq!(run(&[(1, T, 249.99)])[0].2, Severity::Warning);
        assert_eq!(run(&[(1, T, 250.0)])[0].2, Severity::Critical);
    }

    #[test]
    fn both_conditions_give_one_high_reading_alert_naming_the_average() {
        let batch = glucose_series(&[(1, T - MIN, 140.0), (1, T, 120.0)]);
        let flat = window_stats(&DefaultRule::describe().windows, &batch);
        let windows = Windows::new(&flat, 1, 2).unwrap();
        let alerts = evaluate_batch(HIGH_MG_DL, AVG_HIGH_MG_DL, &batch, &windows);
        assert_eq!(alerts.len(), 2);
        assert!(alerts.iter().all(|a| a.code == "high-reading"));
        assert_eq!(alerts[1].value, Some(120.0));
        assert!(
            alerts[1].message.contains("average 130.0"),
            "{}",
            alerts[1].message
        );
    }

    #[test]
    fn average_window_is_ten_minutes_exclusive_of_its_start() {
        // 200 exactly 10 min before is outside the window; 1 ms later it is inside.
        assert_eq!(
            codes(&[(1, T - 10 * MIN, 200.0), (1, T, 100.0)]),
            vec!["high-reading"]
        );
        assert_eq!(
            run(&[(1, T - 10 * MIN + 1, 200.0), (1, T, 100.0)])[1].1,
            "high-average".to_owned()
        );
        // Another patient's readings never count.
        assert_eq!(run(&[(2, T - MIN, 300.0), (1, T, 100.0)]).len(), 1);
    }

    #[test]
    fn runs_end_to_end_with_param_overrides() {
        let series = [(1, T - MIN, 100.0), (1, T, 112.0)];
        assert_eq!(
            evaluate_series::<DefaultRule>(&[], &series).unwrap().len(),
            1
        );
        let raised = [
            ("high_mg_dl", ParamValue::Float(111.0)),
            ("avg_high_mg_dl", ParamValue::Float(200.0)),
        ];
        let alerts = evaluate_series::<DefaultRule>(&raised, &series).unwrap();
        assert_eq!(alerts.len(), 1);
        assert_eq!(
            (alerts[0].index, alerts[0].code.as_str()),
            (1, "high-reading")
        );
        assert!(
            evaluate_series::<DefaultRule>(&[("high_mg_dl", ParamValue::Float(20.0))], &series)
                .is_err()
        );
    }
}
