//! The `glucoguard` command: run the service, run the demo, backtest a rule, inspect or
//! release a rule, restore the archive, apply retention.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use glucoguard::config::Config;
use glucoguard::engine::{Engine, EngineConfig, params};
use glucoguard::{app, backtest, demo, telemetry};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "glucoguard",
    version,
    about = "Real-time glucose alerting with sandboxed Wasm rules"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service from a config file until Ctrl-C or SIGTERM, then drain and stop.
    /// Exits non-zero if the pipeline stops on its own.
    Run {
        #[arg(long, env = "GLUCOGUARD_CONFIG", default_value = "glucoguard.toml")]
        config: PathBuf,
        /// HTTP listen address for ingest and the admin API (overrides the config's [http]).
        #[arg(long, env = "GLUCOGUARD_LISTEN")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Feed simulated patients through the default rule on the embedded default.
    Demo(demo::DemoArgs),
    /// Backfill simulated history into the store at full speed (the demo, quiet, with progress
    /// and dimension data): e.g. `--patients 100 --duration 30d`.
    Backfill(demo::DemoArgs),
    /// Write simulated patients, devices, subscribers and subscriptions into a SQLite store.
    Seed {
        #[arg(long, default_value_t = 10)]
        patients: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        #[arg(long, default_value = "glucoguard.db")]
        db: PathBuf,
    },
    /// Evaluate a file of readings through one rule with exact event-time semantics.
    Backtest {
        #[arg(long)]
        rule: PathBuf,
        /// Parameter overrides, `name=value`; repeatable.
        #[arg(long = "params", value_name = "NAME=VALUE")]
        params: Vec<String>,
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        output: PathBuf,
    },
    /// Work with rule components.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Accounts of the admin API (create the first admin here).
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// API tokens for automation and devices.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// The Parquet archive.
    Archive {
        #[command(subcommand)]
        command: ArchiveCommand,
    },
    /// Retention of raw readings in the OLTP store.
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
}

#[derive(Subcommand)]
enum ArchiveCommand {
    /// Load a period of the archive back into the DuckDB analytics file (rows already there
    /// are kept; nothing is duplicated). Stop a host that has the DuckDB file open first.
    Restore {
        #[arg(long, env = "GLUCOGUARD_CONFIG", default_value = "glucoguard.toml")]
        config: PathBuf,
        /// Start of the period (inclusive): YYYY-MM-DD, RFC 3339 or `YYYY-MM-DD HH:MM:SS`, UTC.
        #[arg(long)]
        from: String,
        /// End of the period (exclusive), same formats.
        #[arg(long)]
        to: String,
        /// The DuckDB file to load into; default: the config's `[analytics] path`.
        #[arg(long)]
        duckdb: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum RetentionCommand {
    /// Delete raw readings and telemetry older than the configured age from the OLTP store
    /// now (alerts stay; the archive keeps the readings).
    Apply {
        #[arg(long, env = "GLUCOGUARD_CONFIG", default_value = "glucoguard.toml")]
        config: PathBuf,
        /// Overrides `[retention] raw_readings_days`.
        #[arg(long)]
        older_than_days: Option<u32>,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Create an account. The password comes from `GLUCOGUARD_PASSWORD` or the first line
    /// of standard input, never from the command line (it would show in `ps`).
    Add {
        username: String,
        #[arg(long, default_value = "admin")]
        role: String,
        /// A clinician's subscriber row: they see the patients it follows.
        #[arg(long)]
        subscriber: Option<u64>,
        #[arg(long, env = "GLUCOGUARD_CONFIG", default_value = "glucoguard.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum TokensCommand {
    /// Issue a token and print it once (only its hash is stored).
    Add {
        #[arg(long)]
        name: String,
        /// `device` (ingest only), `clinician` (needs --user) or `admin`.
        #[arg(long, default_value = "device")]
        role: String,
        /// The account the token acts for.
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        expires_in_days: Option<u32>,
        #[arg(long, env = "GLUCOGUARD_CONFIG", default_value = "glucoguard.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Print what a rule declares, or why it is rejected.
    Inspect { wasm: PathBuf },
    /// Clear the quarantine of a stored rule version, so it can run again (a running host
    /// picks it up at its next rule reload; the rule must be enabled at that version).
    Release {
        /// The version to release, `NAME@VERSION`.
        #[arg(value_name = "NAME@VERSION")]
        rule: String,
        #[arg(long, env = "GLUCOGUARD_CONFIG", default_value = "glucoguard.toml")]
        config: PathBuf,
    },
}

fn main() -> Result<()> {
    telemetry::init();
    glucoguard::app::install_crypto_provider();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = match cli.command {
        Command::Run { config, listen } => rt.block_on(run(config, listen)),
        Command::Demo(args) => rt.block_on(demo::run(args)),
        Command::Backfill(args) => rt.block_on(demo::run(args.backfill())),
        Command::Seed { patients, seed, db } => rt.block_on(seed_dimensions(patients, seed, db)),
        Command::Backtest {
            rule,
            params,
            input,
            output,
        } => run_backtest(rule, params, input, output),
        Command::Rules {
            command: RulesCommand::Inspect { wasm },
        } => inspect(wasm),
        Command::Rules {
            command: RulesCommand::Release { rule, config },
        } => rt.block_on(release_rule(rule, config)),
        Command::Users {
            command:
                UsersCommand::Add {
                    username,
                    role,
                    subscriber,
                    config,
                },
        } => rt.block_on(add_user(username, role, subscriber, config)),
        Command::Tokens {
            command:
                TokensCommand::Add {
                    name,
                    role,
                    user,
                    expires_in_days,
                    config,
                },
        } => rt.block_on(add_token(name, role, user, expires_in_days, config)),
        Command::Retention {
            command:
                RetentionCommand::Apply {
                    config,
                    older_than_days,
                },
        } => rt.block_on(apply_retention(config, older_than_days)),
        Command::Archive {
            command:
                ArchiveCommand::Restore {
                    config,
                    from,
                    to,
                    duckdb,
                },
        } => rt.block_on(restore_archive(config, from, to, duckdb)),
    };
    // Bounded: a task stuck in blocking code must not keep an exiting process alive.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    result
}

async fn restore_archive(
    config: PathBuf,
    from: String,
    to: String,
    duckdb: Option<PathBuf>,
) -> Result<()> {
    use glucoguard::archive::{Period, fetch};
    let period = Period::parse(&from, &to).map_err(anyhow::Error::msg)?;
    let config = Config::load(&config)?;
    let Some(archive) = &config.archive else {
        bail!("the config has no [archive] section to restore from");
    };
    let Some(db) = duckdb.or_else(|| config.analytics.as_ref().map(|a| a.path.clone())) else {
        bail!("no DuckDB file: pass --duckdb PATH or set [analytics] path in the config");
    };
    let store = glucoguard::archive::build_store(archive)?;
    let fetched = fetch(store.as_ref(), archive, period).await?;
    let report = tokio::task::spawn_blocking(move || -> Result<_> {
        let analytics = glucoguard::analytics::Analytics::open(&db)
            .with_context(|| format!("cannot open {}", db.display()))?;
        let conn = analytics.connection()?;
        Ok(fetched.load_into(&conn)?)
    })
    .await??;
    println!(
        "restored {} glucose readings, {} device readings and {} alerts from {} objects ({} bytes) for [{}, {})",
        report.glucose_readings,
        report.device_readings,
        report.alerts,
        report.objects,
        report.bytes,
        glucoguard::model::format_ms(period.from_ms),
        glucoguard::model::format_ms(period.to_ms),
    );
    Ok(())
}

async fn apply_retention(config: PathBuf, older_than_days: Option<u32>) -> Result<()> {
    let config = Config::load(&config)?;
    if config.archive.is_none() {
        bail!(
            "the config has no [archive]: retention removes raw readings from the OLTP store only \
             when they remain in the archive"
        );
    }
    let max_age = match (older_than_days, config.retention) {
        (Some(0), _) => bail!("--older-than-days must be at least 1"),
        (Some(days), _) => std::time::Duration::from_secs(u64::from(days) * 86_400),
        (None, Some(r)) => r.max_age,
        (None, None) => bail!(
            "no retention age: set [retention] raw_readings_days in the config or pass --older-than-days"
        ),
    };
    let store = app::open_store(&config.store).await?;
    let now = glucoguard::model::now_ms();
    let purged = glucoguard::retention::apply(store.as_ref(), max_age, now).await?;
    println!(
        "removed {} glucose readings and {} device readings with event time before {}",
        purged.glucose_readings,
        purged.device_readings,
        glucoguard::model::format_ms(glucoguard::retention::cut_ms(now, max_age))
    );
    Ok(())
}

/// How long the HTTP server has, once the pipeline drained, to answer the requests in flight.
const HTTP_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs the host until Ctrl-C or SIGTERM, then stops the sources and the input, waits until
/// the pipeline drained (every item it took is durable and acknowledged, so waiting ingest
/// requests get their answer, and the storage sinks flushed), lets the sources give their
/// final acknowledgements and stops the HTTP server (the order of `App::shutdown`). If the pipeline stops on its own (a panic), the
/// host exits with an error instead of leaving the HTTP listener answering.
async fn run(config: PathBuf, listen: Option<std::net::SocketAddr>) -> Result<()> {
    let mut config = Config::load(&config)?;
    if listen.is_some() {
        config.listen = listen;
    }
    let mut app = app::start(&config).await?;
    if config.listen.is_some() {
        bootstrap_token(app.store.as_ref()).await?;
    }
    let mut signals = StopSignals::install()?;
    tracing::info!(
        store = app.store.kind(),
        "glucoguard running; Ctrl-C or SIGTERM drains and stops"
    );
    tokio::select! {
        signal = signals.next() => tracing::info!(signal, "stopping: draining the pipeline"),
        ended = &mut app.pipeline => return Err(pipeline_stopped(ended, "running")),
    }
    app.handle.shutdown().await;
    tokio::select! {
        ended = &mut app.pipeline => {
            if ended.is_err() {
                return Err(pipeline_stopped(ended, "draining"));
            }
        }
        signal = signals.next() => {
            tracing::warn!(
                signal,
                "second stop signal: exiting without draining; unacknowledged items will be redelivered by their sources"
            );
            bail!("stopped by a second {signal} before the pipeline drained");
        }
    }
    // The sources' final acknowledgements (an MQTT source's last PUBACKs and DISCONNECT),
    // now that every item they handed over is durable.
    tokio::select! {
        finished = app.finish_sources(app::SOURCE_FINISH_TIMEOUT) => {
            if let Err(e) = finished {
                tracing::warn!(error = %e, "stopping: a source did not finish cleanly; what it had not acknowledged is redelivered");
            }
        }
        signal = signals.next() => {
            tracing::warn!(signal, "second stop signal: exiting before the sources' final acknowledgements; they are redelivered");
            bail!("stopped by a second {signal} before the sources finished");
        }
    }
    app.finish_notifiers().await;
    if let Some(http) = app.http_server.take()
        && !http.shutdown(HTTP_DRAIN).await
    {
        tracing::warn!(
            limit_secs = HTTP_DRAIN.as_secs(),
            "http requests still open after the pipeline drained; closed them"
        );
    }
    tracing::info!("glucoguard stopped");
    Ok(())
}

/// The error (logged, and the process's exit status) when the pipeline task ended by itself.
fn pipeline_stopped(
    ended: Result<(), tokio::task::JoinError>,
    while_: &'static str,
) -> anyhow::Error {
    let reason = match ended {
        Ok(()) => "it returned without being asked to stop".to_owned(),
        Err(e) if e.is_panic() => "it panicked (the panic message is above)".to_owned(),
        Err(e) => e.to_string(),
    };
    tracing::error!(
        while_ = while_,
        reason = %reason,
        "the pipeline stopped; exiting so that a supervisor restarts the host"
    );
    anyhow::anyhow!("the pipeline stopped while {while_}: {reason}")
}

/// Ctrl-C (SIGINT) and SIGTERM: either one asks the host to drain and stop.
#[cfg(unix)]
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl StopSignals {
    fn install() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
        })
    }

    /// Waits for the next stop signal and names it.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            Some(()) = self.interrupt.recv() => "SIGINT",
            Some(()) = self.terminate.recv() => "SIGTERM",
            else => std::future::pending::<&'static str>().await,
        }
    }
}

/// Ctrl-C only, where there are no Unix signals.
#[cfg(not(unix))]
struct StopSignals;

#[cfg(not(unix))]
impl StopSignals {
    fn install() -> Result<Self> {
        Ok(StopSignals)
    }

    async fn next(&mut self) -> &'static str {
        match tokio::signal::ctrl_c().await {
            Ok(()) => "Ctrl-C",
            Err(_) => std::future::pending::<&'static str>().await,
        }
    }
}

/// A host that nobody can administer yet (no account, no live token) prints one admin token
/// on stderr, valid for 24 hours, so its first operator can get in over HTTP; it is never
/// printed again (the store keeps only its hash). `glucoguard users add` is the lasting way.
async fn bootstrap_token(store: &dyn glucoguard::store::Store) -> Result<()> {
    let now = glucoguard::model::now_ms();
    let live = store
        .tokens()
        .await?
        .iter()
        .any(|t| t.revoked_at_ms.is_none() && t.expires_at_ms.is_none_or(|e| e > now));
    if live || !store.users().await?.is_empty() {
        return Ok(());
    }
    let (record, token) = glucoguard::admin::auth::new_token(
        "bootstrap",
        glucoguard::store::accounts::Role::Admin,
        None,
        "system:run",
        Some(now + 24 * 3_600_000),
    );
    let audit = glucoguard::store::accounts::Actor::system("run")
        .audit("token.create", format!("token:{}", record.token_id))
        .with_after(&record);
    store.create_token(&record, &audit).await?;
    eprintln!(
        "no accounts yet: a one-time admin token, valid for 24 h (shown once):\n  {token}\n\
         create an administrator with `glucoguard users add NAME --role admin`, then revoke it \
         (DELETE /api/tokens/{})",
        record.token_id
    );
    Ok(())
}

fn parse_role(role: &str) -> Result<glucoguard::store::accounts::Role> {
    glucoguard::store::accounts::Role::parse(role)
        .ok_or_else(|| anyhow::anyhow!("{role:?} is not a role: admin, clinician or device"))
}

/// `glucoguard users add NAME`: creates an account, e.g. the first admin.
async fn add_user(
    username: String,
    role: String,
    subscriber: Option<u64>,
    config: PathBuf,
) -> Result<()> {
    let role = parse_role(&role)?;
    let password = match std::env::var("GLUCOGUARD_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            eprintln!("password (one line on standard input):");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    let user = glucoguard::admin::auth::new_user(&username, &password, role, subscriber)
        .map_err(anyhow::Error::msg)?;
    let config = Config::load(&config)?;
    let store = app::open_store(&config.store).await?;
    let audit = glucoguard::store::accounts::Actor::system("cli")
        .audit("user.create", format!("user:{}", user.username))
        .with_after(&user);
    store.create_user(&user, &audit).await?;
    println!("created {} user {}", role.as_str(), user.username);
    Ok(())
}

/// `glucoguard tokens add --name N --role device`: prints a new token once.
async fn add_token(
    name: String,
    role: String,
    user: Option<String>,
    expires_in_days: Option<u32>,
    config: PathBuf,
) -> Result<()> {
    let role = parse_role(&role)?;
    let config = Config::load(&config)?;
    let store = app::open_store(&config.store).await?;
    let user_id = match &user {
        Some(u) => Some(
            store
                .user_by_name(&u.to_lowercase())
                .await?
                .ok_or_else(|| anyhow::anyhow!("no user {u}"))?
                .user_id,
        ),
        None if role == glucoguard::store::accounts::Role::Clinician => {
            bail!("a clinician token acts for a clinician: pass --user")
        }
        None => None,
    };
    let expires = expires_in_days.map(|d| glucoguard::model::now_ms() + i64::from(d) * 86_400_000);
    let (record, token) =
        glucoguard::admin::auth::new_token(&name, role, user_id, "system:cli", expires);
    let audit = glucoguard::store::accounts::Actor::system("cli")
        .audit("token.create", format!("token:{}", record.token_id))
        .with_after(&record);
    store.create_token(&record, &audit).await?;
    println!("{token}");
    eprintln!(
        "token {} ({} role): shown once, store it now",
        record.token_id,
        role.as_str()
    );
    Ok(())
}

/// `glucoguard rules release NAME@VERSION`: clears the version's quarantine in the store.
async fn release_rule(rule: String, config: PathBuf) -> Result<()> {
    let Some((name, version)) = rule
        .split_once('@')
        .filter(|(n, v)| !n.is_empty() && !v.is_empty())
    else {
        bail!("{rule:?} is not NAME@VERSION, e.g. default-glucose@1.0.0");
    };
    let rule = glucoguard::model::RuleRef {
        name: name.to_owned(),
        version: version.to_owned(),
    };
    let config = Config::load(&config)?;
    let store = app::open_store(&config.store).await?;
    let versions = store.rule_versions().await?;
    let Some(stored) = versions
        .iter()
        .find(|v| v.info.name == rule.name && v.info.version == rule.version)
    else {
        let known: Vec<&str> = versions
            .iter()
            .filter(|v| v.info.name == rule.name)
            .map(|v| v.info.version.as_str())
            .collect();
        if known.is_empty() {
            bail!("{rule} is not in the store: no version of {name} was uploaded");
        }
        bail!(
            "{rule} is not in the store; stored versions of {name}: {}",
            known.join(", ")
        );
    };
    let Some(reason) = &stored.quarantine_reason else {
        bail!("{rule} is not quarantined; nothing to release");
    };
    let audit = glucoguard::store::accounts::Actor::system("cli")
        .audit("rule.release", format!("rule:{rule}"))
        .with_before(serde_json::json!({ "quarantine_reason": reason }));
    store.release_quarantine(&rule, &audit).await?;
    tracing::warn!(rule = %rule, "rule quarantine released");
    // The reason's tail quotes the fault (a trap message, the rule's output), which may carry
    // patient data: the terminal gets its summary, `/api/stats` and the store the whole.
    let summary = reason.split("; last:").next().unwrap_or(reason);
    println!(
        "released {rule} from quarantine (it had {summary}); it runs again where it \
         is the enabled version, from a host's next start or rule reload"
    );
    Ok(())
}

async fn seed_dimensions(patients: usize, seed: u64, db: PathBuf) -> Result<()> {
    let dims = demo::simulated_dimensions(seed, patients)?;
    dims.validate().map_err(anyhow::Error::msg)?;
    let store = app::open_store(&glucoguard::config::StoreConfig::sqlite(db.clone())).await?;
    let audit =
        glucoguard::store::accounts::Audit::system("cli", "dimensions.import", "dimensions")
            .with_after(dims.summary());
    store.put_dimensions(&dims, &audit).await?;
    let c = store.counts().await?;
    println!(
        "{}: {} patients, {} devices, {} subscribers, {} subscriptions",
        db.display(),
        c.patients,
        c.devices,
        c.subscribers,
        c.subscriptions
    );
    Ok(())
}

fn load_rule(path: &PathBuf) -> Result<std::sync::Arc<glucoguard::engine::CompiledRule>> {
    let wasm = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let engine = Engine::new(EngineConfig::default())?;
    engine
        .load(&wasm)
        .with_context(|| format!("{} was rejected", path.display()))
}

fn run_backtest(
    rule: PathBuf,
    assignments: Vec<String>,
    input: PathBuf,
    output: PathBuf,
) -> Result<()> {
    let rule = load_rule(&rule)?;
    let mut overrides = BTreeMap::new();
    for a in &assignments {
        let (k, v) = params::parse_assignment(rule.info(), a).map_err(anyhow::Error::msg)?;
        overrides.insert(k, v);
    }
    let data = std::fs::read(&input).with_context(|| format!("cannot read {}", input.display()))?;
    let mut out = std::fs::File::create(&output)
        .with_context(|| format!("cannot create {}", output.display()))?;
    let s = backtest::run(rule.clone(), &overrides, &data, &mut out)?;
    println!(
        "backtest {}: {} lines, {} readings, {} duplicates, {} invalid, {} alerts, {} faults in {:.3} s ({:.0} readings/s) -> {}",
        rule.rule_ref(),
        s.lines,
        s.readings,
        s.duplicates,
        s.invalid,
        s.alerts,
        s.faults,
        s.elapsed_secs,
        s.readings_per_sec,
        output.display()
    );
    for (line, reason) in &s.invalid_examples {
        println!("  invalid line {line}: {reason}");
    }
    if s.faults > 0 {
        bail!(
            "the rule faulted {} times; {} readings could not be evaluated",
            s.faults,
            s.poison
        );
    }
    Ok(())
}

fn inspect(path: PathBuf) -> Result<()> {
    let rule = load_rule(&path)?;
    let i = rule.info();
    println!("{}@{}  sha256 {}", i.name, i.version, rule.sha256());
    println!("  {}", i.description);
    let kinds: Vec<&str> = i.kinds.iter().map(|k| k.as_str()).collect();
    println!("  kinds: {}", kinds.join(", "));
    for w in &i.windows {
        println!("  window {}: {} s", w.name, w.duration_secs);
    }
    for p in &i.params {
        let bounds = match (p.min, p.max) {
            (Some(lo), Some(hi)) => format!(" [{lo}, {hi}]"),
            (Some(lo), None) => format!(" [{lo}, ∞)"),
            (None, Some(hi)) => format!(" (-∞, {hi}]"),
            (None, None) => String::new(),
        };
        println!(
            "  param {}: {:?} = {}{bounds}  {}",
            p.name, p.ty, p.default, p.description
        );
    }
    Ok(())
}
