//! Example rule `low-glucose`: alert on hypoglycaemia at the consensus levels (level 1 below 70 mg/dL, level 2 below 54 mg/dL).
//!
//! One alert per low reading, naming the lower level it reaches:
//!
//! - below `very_low_mg_dl` (default 54, level 2) → `low-level-2`, `critical`;
//! - otherwise below `low_mg_dl` (default 70, level 1) → `low-level-1`, `warning`.
//!
//! Strict comparisons: exactly 70 or exactly 54 is not below the level.

use glucoguard_sdk::{
    Alert, ParamSpec, Params, Reading, ReadingKind, Rule, RuleInfo, Severity, Windows, export_rule,
};

/// Default of `low_mg_dl` (level 1).
pub const LOW_MG_DL: f64 = 70.0;
/// Default of `very_low_mg_dl` (level 2).
pub const VERY_LOW_MG_DL: f64 = 54.0;

/// The rule, exported as the component's `rule` interface.
pub struct LowGlucose;

impl Rule for LowGlucose {
    fn describe() -> RuleInfo {
        RuleInfo {
            name: "low-glucose".into(),
            version: "1.0.0".into(),
            description:
                "Alerts on level 1 (below 70 mg/dL) and level 2 (below 54 mg/dL) hypoglycaemia."
                    .into(),
            kinds: vec![ReadingKind::Glucose],
            windows: vec![],
            params: vec![
                ParamSpec::float("low_mg_dl", "Level 1: alert below this (mg/dL)", LOW_MG_DL)
                    .bounds(40.0, 120.0),
                ParamSpec::float(
                    "very_low_mg_dl",
                    "Level 2: critical below this (mg/dL)",
                    VERY_LOW_MG_DL,
                )
                .bounds(30.0, 100.0),
            ],
        }
    }

    fn evaluate(
        params: &Params<'_>,
        batch: &[Reading],
        _windows: &Windows<'_>,
    ) -> Result<Vec<Alert>, String> {
        let low = params.float("low_mg_dl")?;
        let very_low = params.float("very_low_mg_dl")?;
        Ok(evaluate_batch(low, very_low, batch))
    }
}

export_rule!(LowGlucose);

/// The rule's logic; see the crate docs.
pub fn evaluate_batch(low_mg_dl: f64, very_low_mg_dl: f64, batch: &[Reading]) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for (i, reading) in batch.iter().enumerate() {
        let Some(mg_dl) = reading.glucose() else {
            continue;
        };
        let alert = if mg_dl < very_low_mg_dl {
            let message = format!(
                "Glucose {mg_dl:.1} mg/dL is below {very_low_mg_dl:.1} mg/dL (level 2 hypoglycaemia)"
            );
            Alert::new(i, "low-level-2", Severity::Critical, message)
        } else if mg_dl < low_mg_dl {
            let message = format!(
                "Glucose {mg_dl:.1} mg/dL is below {low_mg_dl:.1} mg/dL (level 1 hypoglycaemia)"
            );
            Alert::new(i, "low-level-1", Severity::Warning, message)
        } else {
            continue;
        };
        alerts.push(alert.with_value(mg_dl));
    }
    alerts
}

#[cfg(test)]
mod tests {
    use super::*;
    use glucoguard_sdk::ParamValue;
    use glucoguard_sdk::testing::{check_info, evaluate_series, glucose_series};

    fn codes(values: &[f64]) -> Vec<String> {
        let series: Vec<_> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| (1, i as i64 * 300_000, v))
            .collect();
        evaluate_batch(LOW_MG_DL, VERY_LOW_MG_DL, &glucose_series(&series))
            .into_iter()
            .map(|a| format!("{}:{}", a.index, a.code))
            .collect()
    }

    #[test]
    fn describe_is_valid() {
        assert_eq!(check_info(&LowGlucose::describe()), Ok(()));
    }

    #[test]
    fn levels_are_strict() {
        assert_eq!(
            codes(&[70.0, 69.99, 54.0, 53.99, 120.0]),
            vec!["1:low-level-1", "2:low-level-1", "3:low-level-2"]
        );
    }

    #[test]
    fn level_2_is_critical_and_params_override() {
        let alerts = evaluate_series::<LowGlucose>(&[], &[(7, 0, 40.0)]).unwrap();
        assert_eq!(
            (alerts[0].severity, alerts[0].value),
            (Severity::Critical, Some(40.0))
        );
        let higher = [("low_mg_dl", ParamValue::Float(80.0))];
        assert_eq!(
            evaluate_series::<LowGlucose>(&higher, &[(7, 0, 75.0)])
                .unwrap()
                .len(),
            1
        );
    }
}
