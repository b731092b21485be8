//! Sandbox test guest `loop-forever`: a valid rule whose `evaluate` never returns, so the host's epoch deadline must stop it.

use glucoguard_sdk::{Alert, Params, Reading, ReadingKind, Rule, RuleInfo, Windows, export_rule};

/// The rule, exported as the component's `rule` interface.
pub struct LoopForever;

impl Rule for LoopForever {
    fn describe() -> RuleInfo {
        RuleInfo {
            name: "loop-forever".into(),
            version: "0.1.0".into(),
            description: "Test guest: evaluate spins forever.".into(),
            kinds: vec![ReadingKind::Glucose],
            windows: vec![],
            params: vec![],
        }
    }

    fn evaluate(_: &Params<'_>, _: &[Reading], _: &Windows<'_>) -> Result<Vec<Alert>, String> {
        let mut spins: u64 = 0;
        loop {
            // black_box keeps the loop observable, so no optimiser can remove it.
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
    }
}

export_rule!(LoopForever);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_is_valid() {
        assert_eq!(
            glucoguard_sdk::testing::check_info(&LoopForever::describe()),
            Ok(())
        );
    }
}
