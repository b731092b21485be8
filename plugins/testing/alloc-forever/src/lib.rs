//! Sandbox test guest `alloc-forever`: a valid rule whose `evaluate` allocates (and touches) 1 MiB after 1 MiB until the host's memory cap makes the allocation fail, which aborts (a trap).

use glucoguard_sdk::{Alert, Params, Reading, ReadingKind, Rule, RuleInfo, Windows, export_rule};

/// Size of each allocation.
const CHUNK_BYTES: usize = 1 << 20;

/// The rule, exported as the component's `rule` interface.
pub struct AllocForever;

impl Rule for AllocForever {
    fn describe() -> RuleInfo {
        RuleInfo {
            name: "alloc-forever".into(),
            version: "0.1.0".into(),
            description: "Test guest: evaluate allocates without bound.".into(),
            kinds: vec![ReadingKind::Glucose],
            windows: vec![],
            params: vec![],
        }
    }

    fn evaluate(_: &Params<'_>, _: &[Reading], _: &Windows<'_>) -> Result<Vec<Alert>, String> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // Not zeroed: every page is written, so the memory is really used.
            let chunk = vec![0xA5_u8; CHUNK_BYTES];
            hoard.push(std::hint::black_box(chunk));
        }
    }
}

export_rule!(AllocForever);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_is_valid() {
        assert_eq!(
            glucoguard_sdk::testing::check_info(&AllocForever::describe()),
            Ok(())
        );
    }
}
