//! `glucoguard demo`: simulated patients streamed through the embedded source into the
//! default rule on the embedded default store. Alerts print as they fire; at the end the
//! demo prints what landed in the SQLite file and each rule's counters.

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
}

impl DemoArgs {
    /// A backfill is the demo at full speed, quiet, with progress and dimension data.
    pub fn backfill(mut self) -> Self {
        self.fast = true;
        self.quiet = true;
        self.progress = true;
        self.dimensions = true;
        self
    }
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
    sim_config.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let config = Config {
        store: StoreConfig::sqlite(args.db.clone()),
        engine: EngineConfig::default(),
        pipeline: PipelineConfig::default(),
        file_sources: vec![],
        rules: vec![RuleConfig {
            path: args.rule.clone(),
            enabled: true,
            params: Default::default(),
        }],
        console: !args.quiet,
        listen: None,
        ..Config::default()
    };
    let app = app::start(&config).await.context("starting the host")?;
    if args.dimensions {
        let dims = simulated_dimensions(args.seed, args.patients)?;
        dims.validate().map_err(anyhow::Error::msg)?;
        let audit =
            crate::store::accounts::Audit::system("demo", "dimensions.import", "dimensions")
                .with_after(dims.summary());
        app.store.put_dimensions(&dims, &audit).await?;
    }
    let wall = std::time::Instant::now();
    let pacing = if args.fast {
        Pacing::AsFastAsPossible
    } else {
        Pacing::Accelerated(args.accel)
    };
    eprintln!(
        "demo: {} patients, {} of simulated time at {}, default rule {}; Ctrl-C stops early",
        args.patients,
        args.duration,
        if args.fast {
            "full speed".to_owned()
        } else {
            format!("×{}", args.accel)
        },
        args.rule.display()
    );

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
