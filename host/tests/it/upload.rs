//! The checks an uploaded rule must pass: every way a file can be wrong is refused with its
//! own code and a message naming the cause, and a good rule passes with a dry-run summary
//! whose counts match the sample readings.

use crate::support::*;
use glucoguard::engine::upload::{
    MAX_EXAMPLE_ALERTS, MAX_UPLOAD_BYTES, UploadRefusal, check_upload, check_upload_with_limit,
    sample_readings,
};
use glucoguard::model::{Body, FaultKind, Reading};
use std::collections::BTreeMap;

/// The refusal of `wasm`; panics when it was accepted.
fn refusal(wasm: &[u8]) -> UploadRefusal {
    match check_upload(&engine(), wasm) {
        Ok(c) => panic!("expected a refusal, accepted {:?}", c.rule.rule_ref()),
        Err(r) => r,
    }
}

/// The component header: `\0asm`, version 0x0d, layer 1.
const COMPONENT_HEADER: &[u8] = b"\0asm\x0d\0\x01\0";

#[test]
fn an_empty_file_is_refused() {
    let r = refusal(b"");
    assert_eq!(r.code(), "empty_file");
    assert!(r.to_string().contains("empty"), "{r}");
}

#[test]
fn random_bytes_are_not_a_component() {
    // Deterministic noise (an LCG), no Wasm magic.
    let mut x: u32 = 0x1234_5678;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (x >> 24) as u8
        })
        .collect();
    assert_ne!(&noise[..4], b"\0asm");
    let r = refusal(&noise);
    assert_eq!(r.code(), "not_a_component");
    assert!(
        r.to_string().contains("not WebAssembly") && r.to_string().contains("\\0asm"),
        "{r}"
    );
    let short = refusal(b"\0as");
    assert_eq!(short.code(), "not_a_component");
    assert!(short.to_string().contains("only 3 bytes"), "{short}");
}

#[test]
fn webassembly_text_is_refused_as_text() {
    let r = refusal(b"  (component)");
    assert_eq!(r.code(), "not_a_component");
    assert!(r.to_string().contains(".wat"), "{r}");
}

#[test]
fn a_core_module_is_refused_with_the_build_hint() {
    let r = refusal(b"\0asm\x01\0\0\0");
    assert_eq!(r, UploadRefusal::CoreModule);
    assert_eq!(r.code(), "not_a_component");
    let msg = r.to_string();
    assert!(
        msg.contains("a core module, not a component")
            && msg.contains("wasm32-wasip2")
            && msg.contains("wasm-tools component new"),
        "{msg}"
    );
}

#[test]
fn a_component_header_with_garbage_after_it_is_not_a_valid_component() {
    let mut wasm = COMPONENT_HEADER.to_vec();
    wasm.extend_from_slice(&[0xff; 32]);
    let r = refusal(&wasm);
    assert!(matches!(r, UploadRefusal::InvalidComponent(_)), "{r:?}");
    assert_eq!(r.code(), "not_a_component");
    assert!(r.to_string().contains("not a valid Wasm component"), "{r}");
}

#[test]
fn an_oversized_file_is_refused_with_its_size_and_the_limit() {
    let mut wasm = COMPONENT_HEADER.to_vec();
    wasm.resize(MAX_UPLOAD_BYTES + 1, 0);
    let r = refusal(&wasm);
    assert_eq!(
        r,
        UploadRefusal::TooLarge {
            size: MAX_UPLOAD_BYTES + 1,
            limit: MAX_UPLOAD_BYTES
        }
    );
    assert_eq!(r.code(), "too_large");
    let msg = r.to_string();
    assert!(
        msg.contains(&(MAX_UPLOAD_BYTES + 1).to_string())
            && msg.contains(&MAX_UPLOAD_BYTES.to_string()),
        "{msg}"
    );

    // A real rule over a smaller limit: the size is checked before anything is compiled.
    let good = plugin("glucoguard_default_rule");
    let limit = good.len() - 1;
    let r = check_upload_with_limit(&engine(), &good, limit).unwrap_err();
    assert_eq!(
        r,
        UploadRefusal::TooLarge {
            size: good.len(),
            limit
        }
    );
    // Exactly at the limit is accepted.
    check_upload_with_limit(&engine(), &good, good.len()).expect("at the limit");
}

#[test]
fn a_rule_importing_the_filesystem_is_refused_naming_the_imports() {
    let r = refusal(&plugin("forbidden_import"));
    assert_eq!(r.code(), "forbidden_imports");
    let UploadRefusal::ForbiddenImports(names) = &r else {
        panic!("expected ForbiddenImports, got {r:?}");
    };
    assert!(
        names.iter().any(|n| n.starts_with("wasi:filesystem/")),
        "{names:?}"
    );
    let msg = r.to_string();
    assert!(msg.contains("wasi:filesystem/"), "{msg}");
    assert!(msg.contains("no filesystem"), "{msg}");
}

#[test]
fn a_rule_that_describes_itself_badly_is_refused_naming_each_problem() {
    let r = refusal(&plugin("bad_describe"));
    assert!(matches!(r, UploadRefusal::BadDescribe(_)), "{r:?}");
    assert_eq!(r.code(), "bad_describe");
    let msg = r.to_string();
    assert!(
        msg.contains("describes itself badly")
            && msg.contains("\"empty\" lasts 0 s")
            && msg.contains("\"high_mg_dl\" default 700")
            && msg.contains("above the maximum"),
        "{msg}"
    );
}

/// The dry-run fault of a refused upload: (kind, detail, reading id, message).
fn dry_run_fault(name: &str) -> (FaultKind, String, Option<String>, String) {
    let r = refusal(&plugin(name));
    assert_eq!(r.code(), "dry_run_failed", "{name}: {r}");
    let msg = r.to_string();
    let UploadRefusal::DryRunFailed {
        kind,
        detail,
        reading_id,
    } = r
    else {
        unreachable!("code says dry run")
    };
    (kind, detail, reading_id, msg)
}

#[test]
fn a_rule_that_traps_on_evaluate_fails_its_dry_run() {
    let (kind, _detail, reading, msg) = dry_run_fault("trap_on_evaluate");
    assert_eq!(kind, FaultKind::Trap, "{msg}");
    // The first call holds the first glucose reading and the first telemetry reading; the
    // bisection names the first of them.
    assert_eq!(reading.as_deref(), Some("g:101:sample-1-0"), "{msg}");
    assert!(
        msg.contains("failed its dry run")
            && msg.contains("`trap`")
            && msg.contains("a panic")
            && msg.contains("g:101:sample-1-0"),
        "{msg}"
    );
}

#[test]
fn a_rule_that_loops_forever_fails_its_dry_run_on_the_deadline() {
    assert_eq!(
        test_engine_config().call_timeout_ms,
        100,
        "a short deadline"
    );
    let started = std::time::Instant::now();
    let (kind, detail, reading, msg) = dry_run_fault("loop_forever");
    assert_eq!(kind, FaultKind::Timeout, "{msg}");
    assert!(detail.contains("deadline of about 100 ms"), "{detail}");
    assert!(
        msg.contains("`timeout`") && msg.contains("per-call deadline"),
        "{msg}"
    );
    assert_eq!(reading.as_deref(), Some("g:101:sample-1-0"));
    // Two calls on the one-reading first batch, not a bisection of the whole sample set.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn memory_output_and_non_finite_faults_fail_the_dry_run() {
    for (name, expected, words) in [
        ("alloc_forever", FaultKind::MemoryLimit, "memory cap"),
        ("huge_output", FaultKind::OutputLimit, "limit"),
        ("non_finite_value", FaultKind::InvalidOutput, "finite"),
    ] {
        let (kind, detail, reading, msg) = dry_run_fault(name);
        assert_eq!(kind, expected, "{name}: {msg}");
        assert!(detail.contains(words), "{name}: {detail}");
        assert!(reading.is_some(), "{name}: {msg}");
    }
    // `non-finite-value` returns NaN only above 200 mg/dL: the fault is on such a reading.
    let (_, _, reading, _) = dry_run_fault("non_finite_value");
    let reading = reading.unwrap();
    let mg_dl = sample_readings()
        .into_iter()
        .find(|r| r.id == reading)
        .and_then(|r| r.window_value())
        .unwrap();
    assert!(mg_dl > 200.0, "{reading}: {mg_dl}");
}

/// The alert codes the default rule raises on `readings`, computed naively from its
/// documented semantics (reading > 115 → `high-reading`, else the 10-minute average over
/// (t − 10 min, t] > 105 → `high-average`), independent of the engine's history.
fn default_rule_expected(readings: &[Reading]) -> BTreeMap<String, u64> {
    let glucose: Vec<(u64, i64, f64)> = readings
        .iter()
        .filter_map(|r| match &r.body {
            Body::Glucose(g) => Some((g.patient_id, r.at_ms, g.mg_dl)),
            Body::Device(_) => None,
        })
        .collect();
    let mut out = BTreeMap::new();
    for &(p, t, v) in &glucose {
        let window: Vec<f64> = glucose
            .iter()
            .filter(|&&(q, s, _)| q == p && s > t - 10 * MIN && s <= t)
            .map(|&(_, _, x)| x)
            .collect();
        let mean = window.iter().sum::<f64>() / window.len() as f64;
        let code = if v > 115.0 {
            "high-reading"
        } else if mean > 105.0 {
            "high-average"
        } else {
            continue;
        };
        *out.entry(code.to_owned()).or_default() += 1;
    }
    out
}

#[test]
fn the_sample_readings_cover_what_rules_look_at() {
    let readings = sample_readings();
    assert!(
        readings
            .windows(2)
            .all(|w| (w[0].at_ms, &w[0].id) < (w[1].at_ms, &w[1].id)),
        "event-time order, ids unique"
    );
    let glucose: Vec<f64> = readings
        .iter()
        .filter_map(|r| match &r.body {
            Body::Glucose(g) => Some(g.mg_dl),
            Body::Device(_) => None,
        })
        .collect();
    assert_eq!((readings.len(), glucose.len()), (60, 57));
    assert!(glucose.iter().any(|&v| v < 54.0), "very low");
    assert!(
        glucose.iter().any(|&v| (70.0..=180.0).contains(&v)),
        "in range"
    );
    assert!(glucose.iter().any(|&v| v > 115.0), "over 115");
    assert!(glucose.iter().any(|&v| v >= 250.0), "critical");
    // Patient 4 is read every minute for 20 minutes: full 10-minute windows.
    let p4 = readings
        .iter()
        .filter(|r| matches!(&r.body, Body::Glucose(g) if g.patient_id == 4))
        .count();
    assert_eq!(p4, 20);
}

#[test]
fn the_default_rule_passes_with_a_dry_run_summary() {
    let checked = check_upload(&engine(), &plugin("glucoguard_default_rule")).expect("accepted");
    assert_eq!(checked.rule.info().name, "default-glucose");
    let d = &checked.dry_run;

    let expected = default_rule_expected(&sample_readings());
    // Pinned by hand from the sample series as well: patient 2 has 9 readings over 115 and
    // one high average (110 after 104); patient 3 has 5 and one (100 after 120); patient 4
    // never exceeds 115 but its average is over 105 from minute 7 on (13 readings).
    assert_eq!(
        expected,
        BTreeMap::from([("high-average".into(), 15), ("high-reading".into(), 14)])
    );
    assert_eq!(d.alerts_by_code, expected);
    assert_eq!(d.alerts, 29);
    assert_eq!(d.sample_readings, 60);
    assert_eq!(d.readings_evaluated, 57, "glucose only");
    assert_eq!(d.calls, 2, "the one-reading first batch, then the rest");
    assert_eq!(
        d.params,
        BTreeMap::from([
            (
                "avg_high_mg_dl".into(),
                glucoguard::model::ParamValue::Float(105.0)
            ),
            (
                "high_mg_dl".into(),
                glucoguard::model::ParamValue::Float(115.0)
            ),
        ])
    );

    // Examples: the first of each code (patient 3's first reading; patient 4's average at
    // minute 7), then the next alerts, in evaluation (event-time) order.
    let examples: Vec<(&str, &str)> = d
        .examples
        .iter()
        .map(|a| (a.reading_id.as_str(), a.code.as_str()))
        .collect();
    assert_eq!(d.examples.len(), MAX_EXAMPLE_ALERTS);
    assert_eq!(
        examples,
        [
            ("g:103:sample-3-0", "high-reading"),
            ("g:103:sample-3-1", "high-reading"),
            ("g:104:sample-4-7", "high-average"),
            ("g:104:sample-4-8", "high-average"),
            ("g:104:sample-4-9", "high-average"),
        ]
    );
    assert!(d.examples.iter().all(|a| a.rule.name == "default-glucose"));
}

#[test]
fn the_shipped_example_rules_pass_and_see_their_kinds() {
    for (name, code) in [
        ("glucoguard_rate_of_change", "rising-fast"),
        ("glucoguard_low_glucose", "low-level-2"),
        ("glucoguard_device_health", "low-battery"),
    ] {
        let checked = check_upload(&engine(), &plugin(name))
            .unwrap_or_else(|e| panic!("{name} refused: {e} ({})", e.code()));
        let d = &checked.dry_run;
        assert!(d.readings_evaluated > 0, "{name}: {d:?}");
        assert!(
            d.alerts_by_code.keys().any(|c| c.contains(code)),
            "{name}: {:?}",
            d.alerts_by_code
        );
    }
}

#[test]
fn a_rule_that_writes_to_stderr_and_raises_nothing_still_passes() {
    let checked = check_upload(&engine(), &plugin("stderr_spammer")).expect("accepted");
    assert_eq!(checked.dry_run.alerts, 0);
    assert!(checked.dry_run.examples.is_empty());
    assert_eq!(checked.dry_run.readings_evaluated, 57);
}
