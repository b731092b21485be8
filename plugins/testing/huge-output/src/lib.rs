//! Sandbox test guest `huge-output`: returns 10 000 alerts with 1 KiB messages per reading (about 10 MiB per reading), so the host's output bound must stop it.

use glucoguard_sdk::{
    Alert, Params, Reading, ReadingKind, Rule, RuleInfo, Severity, Windows, export_rule,
};

/// Alerts returned per reading.
pub const ALERTS_PER_READING: usize = 10_000;
/// Length of each alert message.
pub const MESSAGE_BYTES: usize = 1024;

/// The rule, exported as the component's `rule` interface.
pub struct HugeOutput;

impl Rule for HugeOutput {
    fn describe() -> RuleInfo {
        RuleInfo {
            name: "huge-output".into(),
            version: "0.1.0".into(),
            description: "Test guest: 10 000 alerts of 1 KiB per reading.".into(),
            kinds: vec![ReadingKind::Glucose],
            windows: vec![],
            params: vec![],
        }
    }

    fn evaluate(_: &Params<'_>, batch: &[Reading], _: &Windows<'_>) -> Result<Vec<Alert>, String> {
        Ok(evaluate_batch(batch))
    }
}

export_rule!(HugeOutput);

/// [`ALERTS_PER_READING`] alerts with [`MESSAGE_BYTES`]-byte messages for every reading.
pub fn evaluate_batch(batch: &[Reading]) -> Vec<Alert> {
    let message = "x".repeat(MESSAGE_BYTES);
    let mut alerts = Vec::with_capacity(batch.len() * ALERTS_PER_READING);
    for i in 0..batch.len() {
        for _ in 0..ALERTS_PER_READING {
            alerts.push(Alert::new(
                i,
                "huge-output",
                Severity::Info,
                message.clone(),
            ));
        }
    }
    alerts
}

#[cfg(test)]
mod tests {
    use super::*;
    use glucoguard_sdk::testing::{check_info, glucose_series};

    #[test]
    fn describe_is_valid() {
        assert_eq!(check_info(&HugeOutput::describe()), Ok(()));
    }

    #[test]
    fn ten_thousand_one_kib_alerts_per_reading() {
        let alerts = evaluate_batch(&glucose_series(&[(1, 0, 100.0), (1, 1, 100.0)]));
        assert_eq!(alerts.len(), 2 * ALERTS_PER_READING);
        assert!(alerts.iter().all(|a| a.message.len() == MESSAGE_BYTES));
    }
}
