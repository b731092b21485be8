//! Sandbox test guest `trap-on-poison`: alerts on readings above 115 mg/dL like a simple rule, but panics (a trap) when any glucose reading is exactly 333.0 mg/dL, so the host can show a poison reading is isolated.

use glucoguard_sdk::{
    Alert, Params, Reading, ReadingKind, Rule, RuleInfo, Severity, Windows, export_rule,
};

/// The reading value that makes the rule panic.
pub const POISON_MG_DL: f64 = 333.0;
/// Readings above this raise `high-reading`.
pub const HIGH_MG_DL: f64 = 115.0;

/// The rule, exported as the component's `rule` interface.
pub struct TrapOnPoison;

impl Rule for TrapOnPoison {
    fn describe() -> RuleInfo {
        RuleInfo {
            name: "trap-on-poison".into(),
            version: "0.1.0".into(),
            description: "Test guest: alerts above 115 mg/dL, traps on a 333.0 mg/dL reading."
                .into(),
            kinds: vec![ReadingKind::Glucose],
            windows: vec![],
            params: vec![],
        }
    }

    fn evaluate(_: &Params<'_>, batch: &[Reading], _: &Windows<'_>) -> Result<Vec<Alert>, String> {
        Ok(evaluate_batch(batch))
    }
}

export_rule!(TrapOnPoison);

/// `high-reading` (warning, value = reading) for every glucose reading above
/// 115 mg/dL.
///
/// # Panics
/// When any glucose reading is exactly [`POISON_MG_DL`].
pub fn evaluate_batch(batch: &[Reading]) -> Vec<Alert> {
    let poisoned = batch.iter().any(|r| r.glucose() == Some(POISON_MG_DL));
    assert!(
        !poisoned,
        "poison reading of {POISON_MG_DL} mg/dL in the batch"
    );
    batch
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let mg_dl = r.glucose().filter(|&v| v > HIGH_MG_DL)?;
            let message = format!("Glucose {mg_dl:.1} mg/dL is above {HIGH_MG_DL:.1} mg/dL");
            Some(Alert::new(i, "high-reading", Severity::Warning, message).with_value(mg_dl))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use glucoguard_sdk::testing::{check_info, glucose_series};

    #[test]
    fn describe_is_valid() {
        assert_eq!(check_info(&TrapOnPoison::describe()), Ok(()));
    }

    #[test]
    fn alerts_above_115_without_poison() {
        let alerts = evaluate_batch(&glucose_series(&[
            (1, 0, 115.0),
            (1, 1, 115.5),
            (2, 0, 332.9),
        ]));
        assert_eq!(
            alerts.iter().map(|a| a.index).collect::<Vec<_>>(),
            vec![1, 2]
        );
    }

    #[test]
    #[should_panic(expected = "poison reading")]
    fn panics_on_poison() {
        evaluate_batch(&glucose_series(&[(1, 0, 100.0), (2, 0, 333.0)]));
    }
}
