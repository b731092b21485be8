//! Sandbox test guest `non-finite-value`: alerts on every glucose reading, with the reading as the value, except that readings above 200 mg/dL get NaN and readings above 300 mg/dL get +infinity, so the host can show it refuses non-finite alert values.

use glucoguard_sdk::{
    Alert, Params, Reading, ReadingKind, Rule, RuleInfo, Severity, Windows, export_rule,
};

/// The rule, exported as the component's `rule` interface.
pub struct NonFiniteValue;

impl Rule for NonFiniteValue {
    fn describe() -> RuleInfo {
        RuleInfo {
            name: "non-finite-value".into(),
            version: "0.1.0".into(),
            description: "Test guest: NaN / infinite alert values above 200 / 300 mg/dL.".into(),
            kinds: vec![ReadingKind::Glucose],
            windows: vec![],
            params: vec![],
        }
    }

    fn evaluate(_: &Params<'_>, batch: &[Reading], _: &Windows<'_>) -> Result<Vec<Alert>, String> {
        Ok(evaluate_batch(batch))
    }
}

export_rule!(NonFiniteValue);

/// One `value` alert per glucose reading; the value is the reading, NaN above 200 mg/dL and
/// +infinity above 300 mg/dL.
pub fn evaluate_batch(batch: &[Reading]) -> Vec<Alert> {
    batch
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let mg_dl = r.glucose()?;
            let value = if mg_dl > 300.0 {
                f64::INFINITY
            } else if mg_dl > 200.0 {
                f64::NAN
            } else {
                mg_dl
            };
            Some(Alert::new(i, "value", Severity::Info, "a value").with_value(value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use glucoguard_sdk::testing::glucose_series;

    #[test]
    fn values_above_200_are_not_finite() {
        let batch = glucose_series(&[(1, 0, 150.0), (1, 300_000, 250.0), (1, 600_000, 350.0)]);
        let values: Vec<f64> = evaluate_batch(&batch)
            .iter()
            .map(|a| a.value.unwrap())
            .collect();
        assert_eq!(values[0], 150.0);
        assert!(values[1].is_nan());
        assert!(values[2].is_infinite());
    }
}
