//! The layering invariants of ARCHITECTURE.md, checked on the source text so that a change
//! that breaks one fails here with the offending file named.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

fn src(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(sub)
}

/// Fails naming every file under `dir` whose code mentions one of `forbidden`.
fn assert_absent(dir: &str, forbidden: &[&str]) {
    let mut offenders = Vec::new();
    let paths = if dir.ends_with(".rs") {
        vec![src(dir)]
    } else {
        rust_files(&src(dir))
    };
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        for f in forbidden {
            if text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .any(|l| l.contains(f))
            {
                offenders.push(format!("{} mentions {f}", path.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "layering broken:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn sources_engine_and_sinks_never_import_each_other() {
    assert_absent(
        "sources",
        &[
            "crate::engine",
            "crate::sinks",
            "crate::store",
            "crate::pipeline",
        ],
    );
    assert_absent(
        "engine",
        &[
            "crate::sources",
            "crate::sinks",
            "crate::store",
            "crate::pipeline",
        ],
    );
    assert_absent(
        "sinks",
        &[
            "crate::sources",
            "crate::engine",
            "crate::store",
            "crate::pipeline",
        ],
    );
    assert_absent(
        "store",
        &[
            "crate::sources",
            "crate::engine",
            "crate::sinks",
            "crate::pipeline",
        ],
    );
    assert_absent("model.rs", &["crate::"]);
}

#[test]
fn analytics_and_archive_are_sinks_downstream_of_the_store() {
    // Analytics reads the OLTP store only to catch up; neither knows the engine, the sources
    // or the pipeline. The archive never reads the OLTP store: it holds what the store may drop.
    for dir in ["analytics", "archive"] {
        assert_absent(
            dir,
            &[
                "crate::engine",
                "crate::sources",
                "crate::pipeline",
                "wasmtime",
            ],
        );
    }
    assert_absent("archive", &["crate::store"]);
    assert_absent(
        "retention.rs",
        &["crate::engine", "crate::pipeline", "crate::sources"],
    );
}

#[test]
fn only_analytics_and_archive_name_duckdb_and_object_store() {
    for dir in [
        "sources",
        "sinks",
        "store",
        "pipeline",
        "engine",
        "model",
        "model.rs",
        "admin",
        "retention.rs",
        "backtest.rs",
        "demo.rs",
    ] {
        assert_absent(dir, &["duckdb::", "object_store::"]);
    }
}

#[test]
fn only_the_engine_names_wasmtime() {
    for dir in [
        "sources",
        "sinks",
        "store",
        "pipeline",
        "model",
        "model.rs",
        "app.rs",
        "backtest.rs",
        "config.rs",
        "main.rs",
        "demo.rs",
    ] {
        if src(dir).exists() {
            assert_absent(dir, &["wasmtime"]);
        }
    }
}

#[test]
fn the_host_never_depends_on_the_sdk_and_the_simulator_never_on_the_host() {
    let manifest =
        |p: &str| std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(p)).unwrap();
    let host = manifest("Cargo.toml");
    let deps = host.split("[dev-dependencies]").next().unwrap();
    assert!(
        !deps.contains("glucoguard-sdk") && !deps.contains("default-rule"),
        "the SDK is a dev-dependency only"
    );
    let sim = manifest("../simulator/Cargo.toml");
    assert!(
        !sim.contains("glucoguard ="),
        "the simulator depends on nothing in host"
    );
    assert!(
        !sim.contains("path = \"../host\""),
        "the simulator depends on nothing in host"
    );
}
