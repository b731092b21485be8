//! The `glucoguard-sim` binary: stream, dims and stats end to end.

use std::process::Command;

use serde_json::Value;

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_glucoguard-sim"))
}

#[test]
fn stream_writes_json_lines_deterministically() {
    let args = [
        "stream",
        "--patients",
        "3",
        "--seed",
        "9",
        "--duration",
        "6h",
        "--scenario",
        "late-burst:patient=2,at=2h,for=1h",
        "--fast",
    ];
    let a = sim().args(args).output().unwrap();
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    let b = sim().args(args).output().unwrap();
    assert_eq!(a.stdout, b.stdout);
    let text = String::from_utf8(a.stdout).unwrap();
    assert!(text.lines().count() > 200);
    for line in text.lines() {
        serde_json::from_str::<Value>(line).unwrap();
    }
    assert!(text.contains("\"connectivity_status\":\"Disconnected\""));
}

#[test]
fn stream_to_a_file_with_the_prototype_model_and_meter() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("readings.jsonl");
    let out = sim()
        .args([
            "stream",
            "--patients",
            "2",
            "--duration",
            "2d",
            "--model",
            "prototype",
            "--cadence",
            "meter",
            "--out",
        ])
        .arg(&path)
        .args([
            "--start",
            "2026-11-28T00:00:00Z",
            "--no-telemetry",
            "--rate",
            "100000",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let n = text.lines().count();
    assert!((6..=20).contains(&n), "{n}");
    assert!(
        text.lines()
            .all(|l| l.contains("\"glucose_level\"") && l.contains("2026-11-"))
    );
}

#[test]
fn dims_prints_json() {
    let out = sim()
        .args(["dims", "--patients", "4", "--seed", "3"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["patients"].as_array().unwrap().len(), 4);
    assert_eq!(v["devices"].as_array().unwrap().len(), 8);
}

#[test]
fn stats_prints_a_row_per_patient() {
    let out = sim()
        .args(["stats", "--patients", "5", "--duration", "2d"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 6);
    assert!(text.contains("party-goer"));
}

#[test]
fn bad_input_fails_with_a_clear_message() {
    for (args, needle) in [
        (vec!["stream", "--scenario", "nap"], "unknown scenario"),
        (
            vec![
                "stream",
                "--patients",
                "2",
                "--scenario",
                "night-hypo:patient=5",
            ],
            "outside 1..=2",
        ),
        (
            vec!["stream", "--duration", "fortnight"],
            "invalid duration",
        ),
        (vec!["stream", "--model", "magic"], "unknown model"),
        (
            vec!["stream", "--fast", "--realtime"],
            "cannot be used with",
        ),
    ] {
        let out = sim().args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}
