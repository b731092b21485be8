//! `cargo xtask …`: the project's scripts in Rust. CI calls the same commands a developer runs.
//!
//! - `build-plugins`: build every rule guest in `plugins/` for wasm32-wasip2 (installs the
//!   target with rustup when missing) and print where they are.
//! - `build-web`: bundle the web admin's scripts and styles (`web/src/app.js`,
//!   `web/styles/app.css`) with esbuild into `web/dist/app.js` and `web/dist/app.css`, which
//!   the host embeds; runs `npm ci` first when `node_modules` has no esbuild. Every command
//!   below that builds the host runs it first.
//! - `demo [ARGS…]`: build the web bundle and the plugins, then run `glucoguard demo` with the
//!   default rule, serving the web admin on 127.0.0.1:8080 (`--serve ADDR` elsewhere,
//!   `--no-serve` for the terminal-only demo).
//! - `backfill [ARGS…]`: the same in a release build at full speed, e.g.
//!   `cargo xtask backfill --patients 100 --duration 30d --db glucoguard.db`.
//! - `build-testkit`: build `testkit/` (its own workspace: the local Event Hubs endpoint
//!   `glucoguard-testkit`) into `<target>/testkit` and print the binary's path.
//! - `test`: build the web bundle and the plugins, run the plugin unit tests natively and the
//!   testkit's tests (its own workspace and target dir; the Python client test needs
//!   `pip install azure-eventhub==5.15.1`), then the whole workspace test suite
//!   (cargo-nextest when installed, else cargo test), then the browser tests.
//! - `browser-test [FILTER…]`: build the web bundle, the plugins and the `glucoguard` binary,
//!   then run the browser tests (`node web/tests/run.mjs`: headless Chromium through
//!   playwright-core; FILTER keeps the test files whose name contains it). Screenshots land in
//!   `target/browser-screenshots/`.
//! - `bench`: build the web bundle and the plugins and run every benchmark; each prints the tables `BENCHMARKS.md` quotes (copy them there by hand: figures are not rewritten automatically).
//! - `lint`: rustfmt check and clippy with warnings denied.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::Command;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    match task.as_str() {
        "build-plugins" => {
            build_plugins().map(|dir| println!("plugins built in {}", dir.display()))
        }
        "build-web" => build_web().map(|_| ()),
        "build-testkit" => build_testkit().map(|bin| println!("{}", bin.display())),
        "demo" => demo(&demo_args(&rest), "demo", false),
        "backfill" => demo(&rest, "backfill", true),
        "test" => test(&rest),
        "browser-test" => browser_test(&rest),
        "bench" => bench(&rest),
        "lint" => lint(),
        _ => {
            eprintln!(
                "usage: cargo xtask <build-plugins | build-web | build-testkit | demo [ARGS…] | test [ARGS…] | browser-test [FILTER…] | bench | lint>"
            );
            std::process::exit(2);
        }
    }
}

fn root() -> PathBuf {
    // `cargo run` sets it for the process: the checkout this run is for. The compile-time
    // value is only a fallback, since Cargo reuses one xtask binary for every checkout that
    // shares a target directory (a fresh clone would otherwise work in an older one).
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest
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

/// Where the testkit (its own workspace, with its own lock file and the Event Hubs clients'
/// pins) builds, apart from the host's target dir.
fn testkit_target_dir() -> PathBuf {
    target_dir().join("testkit")
}

fn testkit_cargo() -> Command {
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(root().join("testkit"))
        .env("CARGO_TARGET_DIR", testkit_target_dir());
    c
}

/// Builds `glucoguard-testkit` and returns the binary's path.
fn build_testkit() -> Result<PathBuf> {
    run(testkit_cargo().args(["build", "--locked", "--bin", "glucoguard-testkit"]))?;
    let bin = testkit_target_dir().join("debug").join(format!(
        "glucoguard-testkit{}",
        std::env::consts::EXE_SUFFIX
    ));
    if !bin.exists() {
        bail!("the testkit build produced no {}", bin.display());
    }
    Ok(bin)
}

/// The web bundle esbuild writes and the host embeds.
fn web_dist() -> PathBuf {
    root().join("web").join("dist")
}

/// A tool npm installed into `node_modules/.bin`.
fn node_bin(name: &str) -> PathBuf {
    let file = if cfg!(windows) {
        format!("{name}.cmd")
    } else {
        name.to_owned()
    };
    root().join("node_modules").join(".bin").join(file)
}

/// Bundles the web admin with esbuild from `node_modules` (installed from the lockfile with
/// `npm ci` when esbuild is missing; esbuild's binary is the optional dependency
/// `@esbuild/<platform>`, so never install with `--omit=optional`). Minified, no source maps,
/// and `web/dist` is emptied first so nothing stale is embedded.
fn build_web() -> Result<PathBuf> {
    let esbuild = node_bin("esbuild");
    if !esbuild.exists() {
        run(Command::new("npm")
            .current_dir(root())
            .args(["ci", "--no-audit", "--no-fund"]))
        .context("installing the web build tools failed (Node.js and npm are needed: `apt-get install nodejs npm`)")?;
    }
    let dist = web_dist();
    if dist.exists() {
        std::fs::remove_dir_all(&dist)
            .with_context(|| format!("cannot empty {}", dist.display()))?;
    }
    run(Command::new(&esbuild).current_dir(root()).args([
        "web/src/app.js",
        "web/styles/app.css",
        "--bundle",
        "--minify",
        "--target=es2022",
        "--outdir=web/dist",
        "--entry-names=[name]",
        "--log-level=warning",
    ]))?;
    for name in ["app.js", "app.css"] {
        let path = dist.join(name);
        let len = std::fs::metadata(&path)
            .with_context(|| format!("esbuild did not write {}", path.display()))?
            .len();
        println!("{}: {:.1} KiB", path.display(), len as f64 / 1024.0);
    }
    Ok(dist)
}

fn cargo() -> Command {
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(root())
        .env("GLUCOGUARD_PLUGIN_DIR", plugin_dir());
    c
}

/// `cargo xtask demo` serves the admin on 127.0.0.1:8080 unless told otherwise: `--serve ADDR`
/// picks the address, `--no-serve` streams to the terminal only.
fn demo_args(args: &[String]) -> Vec<String> {
    let mut out: Vec<String> = args
        .iter()
        .filter(|a| *a != "--no-serve")
        .cloned()
        .collect();
    let asked = args
        .iter()
        .any(|a| a == "--no-serve" || a == "--serve" || a.starts_with("--serve="));
    if !asked && !args.iter().any(|a| a == "--help" || a == "-h") {
        out.extend(["--serve".to_owned(), "127.0.0.1:8080".to_owned()]);
    }
    out
}

fn demo(args: &[String], command: &str, release: bool) -> Result<()> {
    build_web()?;
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
    build_web()?;
    build_plugins()?;
    // The rule crates' own unit tests run natively (no --target).
    run(Command::new(env!("CARGO"))
        .current_dir(root().join("plugins"))
        .args(["test", "--locked", "--workspace"])
        .env("CARGO_TARGET_DIR", target_dir().join("plugins-native")))?;
    // The testkit: its own workspace and target dir (the Event Hubs endpoint and the real
    // Rust and Python clients against it).
    // Reported at the end with the rest, so one run shows every failure.
    let testkit = run(testkit_cargo().args(["test", "--locked", "--no-fail-fast"]));
    if testkit.is_err() {
        // The host's Event Hubs tests need its binary: build it even when a test failed.
        build_testkit()?;
    }
    let workspace = if has_nextest() {
        // nextest does not run doctests: run them first, so the suite's summary closes the run.
        run(cargo().args(["test", "--locked", "--workspace", "--doc"])).and_then(|()| {
            run(cargo()
                .args([
                    "nextest",
                    "run",
                    "--locked",
                    "--workspace",
                    "--no-fail-fast",
                ])
                .args(args))
        })
    } else {
        run(cargo()
            .args(["test", "--locked", "--workspace", "--no-fail-fast"])
            .args(args))
    };
    // The browser tests run even when a cargo test failed, so one run reports both.
    let browser = run_browser_tests(&[]);
    testkit.and(workspace).and(browser)
}

/// `browser-test`: everything the browser tests need, then the tests.
fn browser_test(filters: &[String]) -> Result<()> {
    build_web()?;
    build_plugins()?;
    run_browser_tests(filters)
}

/// Builds the `glucoguard` binary (embedding the current web bundle) and runs
/// `node web/tests/run.mjs` against it; the test harness finds it through `GLUCOGUARD_BIN`
/// and the rule components through `GLUCOGUARD_PLUGIN_DIR`.
fn run_browser_tests(filters: &[String]) -> Result<()> {
    run(cargo().args([
        "build",
        "--locked",
        "--package",
        "glucoguard",
        "--bin",
        "glucoguard",
    ]))?;
    let bin = target_dir()
        .join("debug")
        .join(format!("glucoguard{}", std::env::consts::EXE_SUFFIX));
    run(Command::new("node")
        .current_dir(root())
        .arg("web/tests/run.mjs")
        .args(filters)
        .env("GLUCOGUARD_BIN", &bin)
        .env("GLUCOGUARD_PLUGIN_DIR", plugin_dir()))
}

fn bench(args: &[String]) -> Result<()> {
    build_web()?;
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
    // Clippy compiles the host, which embeds the bundle.
    build_web()?;
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
