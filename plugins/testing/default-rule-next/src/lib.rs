//! Test guest: version 1.1.0 of `default-glucose`. Same parameters and codes as 1.0.0; the
//! reading threshold defaults to 110 mg/dL instead of 115, so a backtest against 1.0.0 adds
//! the `high-reading` alerts of readings in (110, 115] (or turns their `high-average` alert
//! into a `high-reading` one).

use glucoguard_sdk::{
    Alert, ParamSpec, Params, Reading, ReadingKind, Rule, RuleInfo, Severity, WindowSpec, Windows,
    export_rule,
};

/// Default of `high_mg_dl` in this version.
pub const HIGH_MG_DL: f64 = 110.0;
/// Default of `avg_high_mg_dl` (unchanged).
pub const AVG_HIGH_MG_DL: f64 = 105.0;

pub struct DefaultRuleNext;

impl Rule for DefaultRuleNext {
    fn describe() -> RuleInfo {
        RuleInfo {
            name: "default-glucose".into(),
            version: "1.1.0".into(),
            description: "default-glucose with a 110 mg/dL reading threshold".into(),
            kinds: vec![ReadingKind::Glucose],
            windows: vec![WindowSpec::new("avg-10m", 600)],
            params: vec![
                ParamSpec::float("high_mg_dl", "Alert above this reading (mg/dL)", HIGH_MG_DL)
                    .bounds(40.0, 600.0),
                ParamSpec::float(
                    "avg_high_mg_dl",
                    "Alert above this 10-minute average (mg/dL)",
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
        let mut alerts = Vec::new();
        for (i, reading) in batch.iter().enumerate() {
            let Some(mg_dl) = reading.glucose() else {
                continue;
            };
            let average = windows.get(i, 0).mean;
            if mg_dl > high {
                alerts.push(
                    Alert::new(
                        i,
                        "high-reading",
                        Severity::Warning,
                        format!("above {high:.0}"),
                    )
                    .with_value(mg_dl),
                );
            } else if average > avg_high {
                alerts.push(
                    Alert::new(
                        i,
                        "high-average",
                        Severity::Warning,
                        format!("average above {avg_high:.0}"),
                    )
                    .with_value(average),
                );
            }
        }
        Ok(alerts)
    }
}

export_rule!(DefaultRuleNext);
