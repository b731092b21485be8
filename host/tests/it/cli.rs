//! The `glucoguard` binary: `backtest` and `rules inspect` as a user runs them.

use crate::support::*;
use std::process::Command;

fn glucoguard() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_glucoguard"));
    c.env("RUST_BACKTRACE", "0").env("GLUCOGUARD_LOG", "warn");
    c
}

#[test]
fn backtest_writes_one_alert_per_line_naming_the_given_reading_ids() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    // Out of order, an integer reading_id, a prototype timestamp, one bad line.
    let lines = [
        r#"{"reading_id":3,"patient_id":1,"device_id":9,"glucose_level":100,"timestamp":"2026-11-28 10:10:00"}"#,
        r#"{"reading_id":"first","patient_id":1,"device_id":9,"glucose_level":113,"timestamp":"2026-11-28T10:00:00Z"}"#,
        r#"{"reading_id":"late","patient_id":1,"device_id":9,"glucose_level":100,"timestamp":"2026-11-28T10:05:00Z"}"#,
        "oops",
    ];
    std::fs::write(&input, lines.join("\n")).unwrap();
    let out = glucoguard()
        .args(["backtest", "--rule"])
        .arg(plugin_path("glucoguard_default_rule"))
        .args(["--params", "avg_high_mg_dl=104", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("4 lines, 3 readings, 0 duplicates, 1 invalid"),
        "{stdout}"
    );
    assert!(
        stdout.contains("invalid line 4: malformed JSON"),
        "{stdout}"
    );
    let alerts: Vec<serde_json::Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&str> = alerts
        .iter()
        .map(|a| a["reading_id"].as_str().unwrap())
        .collect();
    // first: 113 > 104; late: (113+100)/2 = 106.5 > 104; 3: (100+100)/2 = 100 (first is exactly 10 min older).
    assert_eq!(ids, vec!["first", "late"]);
    assert_eq!(alerts[1]["code"], "high-average");
    assert_eq!(alerts[1]["value"], 106.5);
}

#[test]
fn backtest_rejects_unknown_parameters_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, glucose_json("a", 1, T0, 100.0)).unwrap();
    let out = glucoguard()
        .args(["backtest", "--rule"])
        .arg(plugin_path("glucoguard_default_rule"))
        .args(["--params", "nope=1", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(dir.path().join("o"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no parameter \"nope\""));
}

#[test]
fn rules_inspect_prints_the_declaration_or_the_rejection() {
    let out = glucoguard()
        .args(["rules", "inspect"])
        .arg(plugin_path("glucoguard_default_rule"))
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(s.contains("default-glucose@1.0.0"), "{s}");
    assert!(s.contains("window avg-10m: 600 s"), "{s}");
    assert!(s.contains("param high_mg_dl: Float = 115 [40, 600]"), "{s}");
    assert!(s.contains("param avg_high_mg_dl: Float = 105"), "{s}");

    let out = glucoguard()
        .args(["rules", "inspect"])
        .arg(plugin_path("forbidden_import"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("imports forbidden interfaces") && e.contains("wasi:filesystem"),
        "{e}"
    );
}
