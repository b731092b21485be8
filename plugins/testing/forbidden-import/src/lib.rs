//! Sandbox test guest `forbidden-import`: reads a file with `std::fs`, so the component imports `wasi:filesystem/*`, which a plain rule never does.
//!
//! A host that refuses such imports never loads it. A host that links them
//! with no preopened directory sees the read fail and gets no alerts; if the
//! read ever succeeds, every reading raises `sandbox-breach`.

use glucoguard_sdk::{
    Alert, LogLevel, Params, Reading, ReadingKind, Rule, RuleInfo, Severity, Windows, export_rule,
    log,
};

/// The file the guest tries to read.
pub const TARGET_PATH: &str = "/etc/passwd";

/// The rule, exported as the component's `rule` interface.
pub struct ForbiddenImport;

impl Rule for ForbiddenImport {
    fn describe() -> RuleInfo {
        RuleInfo {
            name: "forbidden-import".into(),
            version: "0.1.0".into(),
            description: "Test guest: tries to read /etc/passwd.".into(),
            kinds: vec![ReadingKind::Glucose],
            windows: vec![],
            params: vec![],
        }
    }

    fn evaluate(_: &Params<'_>, batch: &[Reading], _: &Windows<'_>) -> Result<Vec<Alert>, String> {
        match std::fs::read_to_string(TARGET_PATH) {
            Ok(content) => Ok((0..batch.len())
                .map(|i| {
                    let message = format!("read {} bytes from {TARGET_PATH}", content.len());
                    Alert::new(i, "sandbox-breach", Severity::Critical, message)
                })
                .collect()),
            Err(e) => {
                log(
                    LogLevel::Info,
                    &format!("reading {TARGET_PATH} failed as it should: {e}"),
                );
                Ok(Vec::new())
            }
        }
    }
}

export_rule!(ForbiddenImport);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_is_valid() {
        assert_eq!(
            glucoguard_sdk::testing::check_info(&ForbiddenImport::describe()),
            Ok(())
        );
    }
}
