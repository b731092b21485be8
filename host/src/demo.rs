//! `glucoguard demo`: simulated patients streamed through the embedded source into the
//! default rule on the embedded default store.
//!
//! With `--serve ADDR` (what `cargo xtask demo` passes) the host also serves the web admin and
//! the dashboard: the patients, devices and subscribers are seeded, a local DuckDB file feeds
//! the dashboard, a `demo` admin account gets a fresh password printed once, and the simulation
//! covers `--history` up to now (at full speed) and then goes on live, each reading at its own
//! time, until Ctrl-C. Without `--serve`, alerts print as they fire and the demo ends when the
//! simulated `--duration` has streamed; either way it prints what landed and each rule's counters.

use crate::app;
use crate::config::{Config, RuleConfig, StoreConfig};
use crate::engine::EngineConfig;
use crate::pipeline::PipelineConfig;
use crate::sources::EmbeddedSource;
use anyhow::{Context, Result};
use glucoguard_simulator::{
    Event, Pacing, Publisher, Scenario, SimConfig, Simulator, parse_duration, stream_until,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The default rule component (`cargo xtask demo` passes the freshly built one).
    #[arg(long, env = "GLUCOGUARD_DEFAULT_RULE")]
    pub rule: PathBuf,
    /// Simulated patients (profiles assigned round-robin).
    #[arg(long, default_value_t = 10)]
    pub patients: usize,
    /// Simulated time to stream, e.g. 6h, 2d.
    #[arg(long, default_value = "6h")]
    pub duration: String,
    /// Simulated seconds per wall-clock second.
    #[arg(long, default_value_t = 3600.0, conflicts_with = "fast")]
    pub accel: f64,
    /// Stream as fast as the pipeline takes it.
    #[arg(long)]
    pub fast: bool,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Named scenarios to layer on the simulation (e.g. night-hypo, missed-insulin); repeatable.
    #[arg(long)]
    pub scenario: Vec<String>,
    /// The SQLite file readings, alerts and dead letters land in.
    #[arg(long, default_value = "glucoguard-demo.db")]
    pub db: PathBuf,
    /// Do not print alerts as they fire (backfills).
    #[arg(long)]
    pub quiet: bool,
    /// Show a progress bar on stderr.
    #[arg(long)]
    pub progress: bool,
    /// Also write the simulated patients, devices and subscribers into the store first.
    #[arg(long)]
    pub dimensions: bool,
    /// Serve the web admin and the dashboard on this address (implies `--dimensions`); the
    /// simulation then runs on the wall clock: `--history` at once, then live for `--duration`,
    /// and the host keeps serving until Ctrl-C.
    #[arg(long, value_name = "ADDR")]
    pub serve: Option<std::net::SocketAddr>,
    /// With `--serve`: how much simulated history up to now to load first (e.g. 14d).
    #[arg(long, default_value = "14d", requires = "serve")]
    pub history: String,
}

impl DemoArgs {
    /// A backfill is the demo at full speed, quiet, with progress and dimension data.
    pub fn backfill(mut self) -> Self {
        self.fast = true;
        self.quiet = true;
        self.progress = true;
        self.dimensions = true;
        self.serve = None;
        self
    }
}

/// The account `--serve` logs in with.
pub const DEMO_USER: &str = "demo";

/// Creates the `demo` admin, or gives it a new password when an earlier run made it; the
/// password comes from `GLUCOGUARD_PASSWORD` or is generated, and is returned to print once.
async fn demo_account(store: &dyn crate::store::Store) -> Result<String> {
    use crate::store::accounts::{Actor, Role};
    let password = match std::env::var("GLUCOGUARD_PASSWORD") {
        Ok(p) => p,
        Err(_) => crate::admin::auth::secret(12),
    };
    let fresh = crate::admin::auth::new_user(DEMO_USER, &password, Role::Admin, None)
        .map_err(anyhow::Error::msg)?;
    match store.user_by_name(DEMO_USER).await? {
        None => {
            let audit = Actor::system("demo")
                .audit("user.create", format!("user:{DEMO_USER}"))
                .with_after(&fresh);
            store.create_user(&fresh, &audit).await?;
        }
        Some(mut user) => {
            user.password_hash = fresh.password_hash;
            user.role = Role::Admin;
            user.disabled = false;
            user.updated_at_ms = fresh.updated_at_ms;
            let audit = Actor::system("demo").audit("user.password", format!("user:{DEMO_USER}"));
            store.update_user(&user, &audit).await?;
        }
    }
    Ok(password)
}

/// Converts the simulator's dimension data to the host's (same JSON shape).
pub fn simulated_dimensions(seed: u64, patients: usize) -> Result<crate::model::dims::Dimensions> {
    let dims = glucoguard_simulator::dimensions(seed, patients);
    Ok(serde_json::from_value(serde_json::to_value(&dims)?)?)
}

/// Publishes simulator events onto the embedded source (blocking: backpressure reaches the
/// simulator when the pipeline is busy).
struct EmbeddedPublisher(EmbeddedSource);

impl Publisher for EmbeddedPublisher {
    fn publish(&mut self, events: &[Event]) -> Result<()> {
        for e in events {
            self.0.blocking_send(e.to_json_line().into_bytes())?;
        }
        Ok(())
    }
}

pub async fn run(args: DemoArgs) -> Result<()> {
    let duration =
        parse_duration(&args.duration).map_err(|e| anyhow::anyhow!("--duration: {e}"))?;
    let scenarios = args
        .scenario
        .iter()
        .map(|s| {
            s.parse::<Scenario>()
                .map_err(|e| anyhow::anyhow!("--scenario {s}: {e}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let sim_config = SimConfig {
        seed: args.seed,
        patients: args.patients,
        duration,
        scenarios,
        ..SimConfig::default()
    };
    let mut sim_config = sim_config;
    if args.serve.is_some() {
        // History up to now, then `--duration` live; the start on a 5-minute boundary.
        let history =
            parse_duration(&args.history).map_err(|e| anyhow::anyhow!("--history: {e}"))?;
        let now = chrono::Utc::now().timestamp();
        let start = now - history.num_seconds();
        sim_config.start = chrono::DateTime::from_timestamp(start - start.rem_euclid(300), 0)
            .context("--history reaches before 1970")?;
        sim_config.duration = history + duration;
    }
    sim_config.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = StoreConfig::sqlite(args.db.clone());
    let password = match args.serve {
        Some(_) => Some(demo_account(&*app::open_store(&store).await?).await?),
        None => None,
    };
    let config = Config {
        store,
        engine: EngineConfig::default(),
        pipeline: PipelineConfig::default(),
        sources: vec![],
        rules: vec![RuleConfig {
            path: args.rule.clone(),
            enabled: true,
            params: Default::default(),
        }],
        // Serving, the alerts are on the web page, and a backfilled history would flood the terminal.
        console: !args.quiet && args.serve.is_none(),
        listen: args.serve,
        analytics: args.serve.map(|_| crate::config::AnalyticsConfig {
            path: args.db.with_extension("duckdb"),
        }),
        ..Config::default()
    };
    let app = app::start(&config).await.context("starting the host")?;
    if args.dimensions || args.serve.is_some() {
        let dims = simulated_dimensions(args.seed, args.patients)?;
        dims.validate().map_err(anyhow::Error::msg)?;
        let audit =
            crate::store::accounts::Audit::system("demo", "dimensions.import", "dimensions")
                .with_after(dims.summary());
        app.store.put_dimensions(&dims, &audit).await?;
    }
    let wall = std::time::Instant::now();
    let pacing = if args.serve.is_some() {
        Pacing::WallClock
    } else if args.fast {
        Pacing::AsFastAsPossible
    } else {
        Pacing::Accelerated(args.accel)
    };
    // The bound address (`--serve 127.0.0.1:0` picks a free port).
    match (app.http, &password) {
        (Some(addr), Some(password)) => eprintln!(
            "demo: {} patients, {} of history, then live for {}; default rule {}\n\
             \n  open http://{addr}/web and log in as {DEMO_USER} with password {password}\n\
             \nCtrl-C stops",
            args.patients,
            args.history,
            args.duration,
            args.rule.display()
        ),
        _ => eprintln!(
            "demo: {} patients, {} of simulated time at {}, default rule {}; Ctrl-C stops early",
            args.patients,
            args.duration,
            if args.fast {
                "full speed".to_owned()
            } else {
                format!("×{}", args.accel)
            },
            args.rule.display()
        ),
    }

    let stop = Arc::new(AtomicBool::new(false));
    let progress = args.progress;
    let producer = {
        let stop = stop.clone();
        let mut publisher = EmbeddedPublisher(app.handle.embedded_source("simulator"));
        tokio::task::spawn_blocking(move || {
            stream_until(
                Simulator::new(sim_config),
                pacing,
                &mut publisher,
                256,
                progress,
                &stop,
            )
        })
    };
    let ctrl_c = {
        let stop = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Ordering::Relaxed);
            }
        })
    };
    let streamed = producer.await?.context("simulator")?;
    if args.serve.is_some() && !stop.load(Ordering::Relaxed) {
        eprintln!("demo: the simulation has ended; still serving until Ctrl-C");
        // The Ctrl-C task sets the flag; poll it rather than racing a second signal handler.
        while !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    ctrl_c.abort();
    app.handle.shutdown().await;
    let stats_rx = app.handle.watch_stats();
    app.pipeline.await?;
    let stats = stats_rx.borrow().clone();
    let counts = app.store.counts().await?;

    let secs = wall.elapsed().as_secs_f64();
    println!(
        "\nstreamed {} events ({} glucose, {} telemetry, {} late); stored in {:.1} s ({:.0} events/s end to end)",
        streamed.events,
        streamed.glucose_readings,
        streamed.device_telemetry,
        streamed.late_events,
        secs,
        streamed.events as f64 / secs.max(1e-9)
    );
    println!(
        "pipeline: {} batches, {} readings, {} duplicates, {} dead letters, {} alerts ({} suppressed repeats)",
        stats.batches,
        stats.readings,
        stats.duplicates,
        stats.dead_letters,
        stats.alerts,
        stats.suppressed
    );
    for r in &stats.rules {
        let m = &r.metrics;
        let avg_us = if m.batches > 0 {
            m.eval_nanos as f64 / m.batches as f64 / 1000.0
        } else {
            0.0
        };
        println!(
            "rule {}: {} readings, {} alerts, {} batches, {} errors, {:.1} µs per batch{}",
            r.rule,
            m.readings,
            m.alerts,
            m.batches,
            m.total_errors(),
            avg_us,
            r.quarantined
                .as_deref()
                .map(|q| format!(", QUARANTINED: {q}"))
                .unwrap_or_default()
        );
    }
    println!(
        "{}: {} patients, {} devices, {} glucose readings, {} device readings, {} alerts, {} dead letters, {} rule faults",
        args.db.display(),
        counts.patients,
        counts.devices,
        counts.glucose_readings,
        counts.device_readings,
        counts.alerts,
        counts.dead_letters,
        counts.rule_faults
    );
    Ok(())
}
