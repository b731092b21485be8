//! Sandbox test guest `stderr-spammer`: writes 1 MiB to stderr on every `evaluate` call, then returns no alerts, so the host must bound or discard guest stderr.

use std::io::Write;

use glucoguard_sdk::{Alert, Params, Reading, ReadingKind, Rule, RuleInfo, Windows, export_rule};

/// Bytes written to stderr per call: 1024 lines of 1 KiB.
pub const BYTES_PER_CALL: usize = 1 << 20;

/// The rule, exported as the component's `rule` interface.
pub struct StderrSpammer;

impl Rule for StderrSpammer {
    fn describe() -> RuleInfo {
        RuleInfo {
            name: "stderr-spammer".into(),
            version: "0.1.0".into(),
            description: "Test guest: 1 MiB of stderr per call.".into(),
            kinds: vec![ReadingKind::Glucose],
            windows: vec![],
            params: vec![],
        }
    }

    fn evaluate(_: &Params<'_>, _: &[Reading], _: &Windows<'_>) -> Result<Vec<Alert>, String> {
        spam(&mut std::io::stderr().lock());
        Ok(Vec::new())
    }
}

export_rule!(StderrSpammer);

/// Write [`BYTES_PER_CALL`] bytes to `out`; write errors (a closed stderr) are ignored.
pub fn spam(out: &mut impl Write) {
    let mut line = [b'x'; 1024];
    line[1023] = b'\n';
    for _ in 0..BYTES_PER_CALL / line.len() {
        if out.write_all(&line).is_err() {
            return;
        }
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_is_valid() {
        assert_eq!(
            glucoguard_sdk::testing::check_info(&StderrSpammer::describe()),
            Ok(())
        );
    }

    #[test]
    fn writes_one_mib() {
        let mut sink = Vec::new();
        spam(&mut sink);
        assert_eq!(sink.len(), BYTES_PER_CALL);
    }
}
