//! Upload test guest `trap-on-evaluate`: passes every load-time check (a component, allowed imports only, a valid description) but panics (a trap for the host) on every `evaluate` call, so only the upload's dry run can catch it.

use glucoguard_sdk::{Alert, Params, Reading, ReadingKind, Rule, RuleInfo, Windows, export_rule};

/// The panic message, so the host's tests can find it in the fault detail when the guest is
/// built with panic messages kept.
pub const PANIC_MESSAGE: &str = "trap-on-evaluate always panics in evaluate";

/// The rule, exported as the component's `rule` interface.
pub struct TrapOnEvaluate;

impl Rule for TrapOnEvaluate {
    fn describe() -> RuleInfo {
        RuleInfo {
            name: "trap-on-evaluate".into(),
            version: "0.1.0".into(),
            description: "Test guest: a valid description, but every evaluate call panics.".into(),
            kinds: vec![ReadingKind::Glucose, ReadingKind::Device],
            windows: vec![],
            params: vec![],
        }
    }

    fn evaluate(_: &Params<'_>, batch: &[Reading], _: &Windows<'_>) -> Result<Vec<Alert>, String> {
        evaluate_batch(batch)
    }
}

export_rule!(TrapOnEvaluate);

/// The rule's logic: there is none.
///
/// # Panics
/// Always, whatever the batch (an empty one included).
pub fn evaluate_batch(batch: &[Reading]) -> Result<Vec<Alert>, String> {
    panic!("{PANIC_MESSAGE} (batch of {} readings)", batch.len());
}

#[cfg(test)]
mod tests {
    use super::*;
    use glucoguard_sdk::testing::{check_info, glucose_series};

    #[test]
    fn describe_is_valid() {
        assert_eq!(check_info(&TrapOnEvaluate::describe()), Ok(()));
    }

    #[test]
    #[should_panic(expected = "always panics")]
    fn panics_on_any_batch() {
        let _ = evaluate_batch(&glucose_series(&[(1, 0, 100.0)]));
    }

    #[test]
    #[should_panic(expected = "always panics")]
    fn panics_on_an_empty_batch() {
        let _ = evaluate_batch(&[]);
    }
}
