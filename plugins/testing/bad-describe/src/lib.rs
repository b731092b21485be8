//! Sandbox test guest `bad-describe`: declares a parameter whose default lies outside its own bounds and a window of 0 s, so the host must refuse to load it.

use glucoguard_sdk::{
    Alert, ParamSpec, Params, Reading, ReadingKind, Rule, RuleInfo, WindowSpec, Windows,
    export_rule,
};

/// The rule, exported as the component's `rule` interface.
pub struct BadDescribe;

impl Rule for BadDescribe {
    fn describe() -> RuleInfo {
        RuleInfo {
            name: "bad-describe".into(),
            version: "0.1.0".into(),
            description: "Test guest: invalid declarations.".into(),
            kinds: vec![ReadingKind::Glucose],
            windows: vec![WindowSpec::new("empty", 0)],
            params: vec![
                ParamSpec::float("high_mg_dl", "Default 700 outside bounds 40..=600", 700.0)
                    .bounds(40.0, 600.0),
            ],
        }
    }

    fn evaluate(_: &Params<'_>, _: &[Reading], _: &Windows<'_>) -> Result<Vec<Alert>, String> {
        Ok(Vec::new())
    }
}

export_rule!(BadDescribe);

#[cfg(test)]
mod tests {
    use super::*;
    use glucoguard_sdk::testing::check_info;

    #[test]
    fn describe_is_rejected_for_both_faults() {
        let info = BadDescribe::describe();
        assert!(check_info(&info).unwrap_err().contains("lasts 0 s"));
        let mut without_window = info.clone();
        without_window.windows.clear();
        assert!(
            check_info(&without_window)
                .unwrap_err()
                .contains("outside its bounds")
        );
    }
}
