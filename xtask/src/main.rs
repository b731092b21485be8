//! `cargo xtask …`: the project's scripts in Rust. CI calls the same commands a developer runs.
//!
//! - `build-plugins`: build every rule guest in `plugins/` for wasm32-wasip2 (installs the
//!   target with rustup when missing) and print where they are.
//! - `demo [ARGS…]`: build the plugins, then run `glucoguard demo` with the default rule.
//! - `backfill [ARGS…]`: the same in a release build at full speed, e.g.
//!   `cargo xtask backfill --patients 100 --duration 30d --db glucoguard.db`.
//! - `test`: build the plugins, run the plugin unit tests natively, then the whole workspace
//!   test suite (cargo-nextest when installed, else cargo test).
//! - `bench`: build the plugins and run every benchmark; each prints the tables `BENCHMARKS.md` quotes (copy them there by hand: figures are not rewritten automatically).
//! - `lint`: rustfmt check and clippy with warnings denied.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    match task.as_str() {
        "build-plugins" => {
            build_plugins().map(|dir| println!("plugins built in {}", dir.display()))
        }
        "demo" => demo(&rest, "demo", false),
        "backfill" => demo(&rest, "backfill", true),
        "test" => test(&rest),
        "bench" => bench(&rest),
        "lint" => lint(),
        _ => {
            eprintln!(
                "usage: cargo xtask <build-plugins | demo [ARGS…] | test [ARGS…] | bench | lint>"
            );
            std::process::exit(2);
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// The cargo target directory the workspace builds into.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

/// Where built rule components land.
fn plugin_dir() -> PathBuf {
    target_dir()
        .join("wasm-plugins")
        .join("wasm32-wasip2")
        .join("release")
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn ensure_wasm_target() -> Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match out {
        Ok(o) if String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == "wasm32-wasip2") => Ok(()),
        Ok(_) => run(Command::new("rustup").args(["target", "add", "wasm32-wasip2"]))
            .context("the wasm32-wasip2 target is missing and could not be installed: run `rustup target add wasm32-wasip2`"),
        Err(e) => bail!("rustup not found ({e}); install the target with `rustup target add wasm32-wasip2`"),
    }
}

fn build_plugins() -> Result<PathBuf> {
    ensure_wasm_target()?;
    run(Command::new(env!("CARGO"))
        .current_dir(root().join("plugins"))
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
        ])
        .env("CARGO_TARGET_DIR", target_dir().join("wasm-plugins")))?;
    let dir = plugin_dir();
    let count = std::fs::read_dir(&dir)
        .with_context(|| format!("no build output in {}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "wasm"))
        .count();
    if count == 0 {
        bail!(
            "the plugin build produced no .wasm files in {}",
            dir.display()
        );
    }
    Ok(dir)
}

fn cargo() -> Command {
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(root())
        .env("GLUCOGUARD_PLUGIN_DIR", plugin_dir());
    c
}

fn demo(args: &[String], command: &str, release: bool) -> Result<()> {
    let dir = build_plugins()?;
    let rule = dir.join("glucoguard_default_rule.wasm");
    let mut c = cargo();
    c.args([
        "run",
        "--locked",
        "--package",
        "glucoguard",
        "--bin",
        "glucoguard",
    ]);
    if release {
        c.arg("--release");
    }
    run(c.args(["--", command, "--rule"]).arg(&rule).args(args))
}

fn has_nextest() -> bool {
    Command::new(env!("CARGO"))
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn test(args: &[String]) -> Result<()> {
    build_plugins()?;
    // The rule crates' own unit tests run natively (no --target).
    run(Command::new(env!("CARGO"))
        .current_dir(root().join("plugins"))
        .args(["test", "--locked", "--workspace"])
        .env("CARGO_TARGET_DIR", target_dir().join("plugins-native")))?;
    if has_nextest() {
        // nextest does not run doctests: run them first, so the suite's summary closes the run.
        run(cargo().args(["test", "--locked", "--workspace", "--doc"]))?;
        run(cargo()
            .args([
                "nextest",
                "run",
                "--locked",
                "--workspace",
                "--no-fail-fast",
            ])
            .args(args))
    } else {
        run(cargo()
            .args(["test", "--locked", "--workspace", "--no-fail-fast"])
            .args(args))
    }
}

fn bench(args: &[String]) -> Result<()> {
    build_plugins()?;
    for (package, bench) in [
        ("glucoguard", "rules"),
        ("glucoguard", "ingest"),
        ("glucoguard", "sinks"),
        ("glucoguard", "core"),
        ("glucoguard-simulator", "generate"),
    ] {
        run(cargo()
            .args([
                "bench",
                "--locked",
                "--package",
                package,
                "--bench",
                bench,
                "--",
            ])
            .args(args))?;
    }
    Ok(())
}

fn lint() -> Result<()> {
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--locked",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}
