//! Example rule `device-health`: alert on device telemetry (low battery, disconnection, error codes).
//!
//! Kinds: device only. Unlike the glucose rules, one reading can raise
//! several alerts, one per distinct problem, because each needs its own fix:
//!
//! - battery reported and below `min_battery_pct` (default 15) → `low-battery`,
//!   `warning`, value = the battery percentage (strict: exactly 15 is fine);
//! - connectivity `disconnected` → `disconnected`, `warning`;
//! - any error code → `device-error`, `warning`, the codes in the message.

use glucoguard_sdk::{
    Alert, Connectivity, ParamSpec, Params, Reading, ReadingKind, Rule, RuleInfo, Severity,
    Windows, export_rule,
};

/// Default of `min_battery_pct`.
pub const MIN_BATTERY_PCT: f64 = 15.0;

/// The rule, exported as the component's `rule` interface.
pub struct DeviceHealth;

impl Rule for DeviceHealth {
    fn describe() -> RuleInfo {
        RuleInfo {
            name: "device-health".into(),
            version: "1.0.0".into(),
            description: "Alerts on low battery, disconnection and device error codes.".into(),
            kinds: vec![ReadingKind::Device],
            windows: vec![],
            params: vec![
                ParamSpec::float(
                    "min_battery_pct",
                    "Alert when the battery is below this (%)",
                    MIN_BATTERY_PCT,
                )
                .bounds(0.0, 100.0),
            ],
        }
    }

    fn evaluate(
        params: &Params<'_>,
        batch: &[Reading],
        _windows: &Windows<'_>,
    ) -> Result<Vec<Alert>, String> {
        Ok(evaluate_batch(params.float("min_battery_pct")?, batch))
    }
}

export_rule!(DeviceHealth);

/// The rule's logic; see the crate docs.
pub fn evaluate_batch(min_battery_pct: f64, batch: &[Reading]) -> Vec<Alert> {
    let mut alerts = Vec::new();
    for (i, reading) in batch.iter().enumerate() {
        let Some(status) = reading.device() else {
            continue;
        };
        if let Some(pct) = status.battery_pct
            && pct < min_battery_pct
        {
            let message = format!("Device battery at {pct:.0}% (below {min_battery_pct:.0}%)");
            alerts.push(Alert::new(i, "low-battery", Severity::Warning, message).with_value(pct));
        }
        if status.connectivity == Connectivity::Disconnected {
            alerts.push(Alert::new(
                i,
                "disconnected",
                Severity::Warning,
                "Device is disconnected",
            ));
        }
        if !status.error_codes.is_empty() {
            let message = format!(
                "Device reports error code(s): {}",
                status.error_codes.join(", ")
            );
            alerts.push(Alert::new(i, "device-error", Severity::Warning, message));
        }
    }
    alerts
}

#[cfg(test)]
mod tests {
    use super::*;
    use glucoguard_sdk::ParamValue;
    use glucoguard_sdk::testing::{check_info, device, device_status, evaluate, glucose};

    fn codes(batch: &[Reading]) -> Vec<String> {
        evaluate_batch(MIN_BATTERY_PCT, batch)
            .into_iter()
            .map(|a| format!("{}:{}", a.index, a.code))
            .collect()
    }

    #[test]
    fn describe_is_valid() {
        assert_eq!(check_info(&DeviceHealth::describe()), Ok(()));
    }

    #[test]
    fn battery_threshold_is_strict_and_absent_battery_is_fine() {
        let batch = [
            device(
                1,
                0,
                device_status(Some(15.0), Connectivity::Connected, &[]),
            ),
            device(1, 1, device_status(Some(14.9), Connectivity::Poor, &[])),
            device(1, 2, device_status(None, Connectivity::Unknown, &[])),
        ];
        assert_eq!(codes(&batch), vec!["1:low-battery"]);
    }

    #[test]
    fn one_alert_per_problem() {
        let batch = [device(
            2,
            0,
            device_status(Some(5.0), Connectivity::Disconnected, &["E12", "E40"]),
        )];
        assert_eq!(
            codes(&batch),
            vec!["0:low-battery", "0:disconnected", "0:device-error"]
        );
        let alerts = evaluate_batch(MIN_BATTERY_PCT, &batch);
        assert!(alerts[2].message.contains("E12, E40"));
    }

    #[test]
    fn glucose_readings_are_ignored_and_params_override() {
        assert!(codes(&[glucose(1, 0, 40.0)]).is_empty());
        let batch = [device(
            1,
            0,
            device_status(Some(30.0), Connectivity::Connected, &[]),
        )];
        assert!(evaluate::<DeviceHealth>(&[], &batch).unwrap().is_empty());
        let alerts =
            evaluate::<DeviceHealth>(&[("min_battery_pct", ParamValue::Float(50.0))], &batch)
                .unwrap();
        assert_eq!(alerts[0].value, Some(30.0));
    }
}
