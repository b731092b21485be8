//! `glucoguard-sim`: command-line front end of the simulator — stream readings, print dimension data, summarise profiles.

use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Duration, SubsecRound, Utc};
use clap::{Args, Parser, Subcommand};
use glucoguard_simulator::stats::glucose_stats;
use glucoguard_simulator::{
    Cadence, HttpPublisher, JsonLinesPublisher, Model, MqttPublisher, Pacing, Profile, Publisher,
    Scenario, SimConfig, Simulator, dimensions_with_profiles, parse_duration, stream,
};

/// Synthetic glucose readings and device telemetry for GlucoGuard, seeded and reproducible.
#[derive(Debug, Parser)]
#[command(name = "glucoguard-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Stream readings and telemetry as JSON lines (stdout or a file), to an HTTP endpoint or
    /// to an MQTT broker.
    Stream(StreamArgs),
    /// Print the dimension data (patients, devices, subscribers, …) as JSON.
    Dims(DimsArgs),
    /// Summarise each patient's glucose (mean, CV, time in/below/above range) as a table.
    Stats(SimArgs),
    /// Write the dimension data into the host's store through its admin API, so readings
    /// reference real rows (e.g. `--url http://127.0.0.1:8080/api/dimensions`).
    Seed(SeedArgs),
}

#[derive(Debug, Args)]
struct SeedArgs {
    #[command(flatten)]
    dims: DimsArgs,
    /// The host's dimensions endpoint.
    #[arg(long, default_value = "http://127.0.0.1:8080/api/dimensions")]
    url: String,
}

#[derive(Debug, Args)]
struct SimArgs {
    /// Number of patients (ids 1..=N).
    #[arg(long, default_value_t = 5)]
    patients: usize,
    /// Seed of every random stream.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Start of event time: RFC 3339 (e.g. 2026-11-28T00:00:00Z) or `now`.
    #[arg(long, default_value = "2026-01-05T00:00:00Z", value_parser = parse_start)]
    start: DateTime<Utc>,
    /// Simulated duration, e.g. 14d, 36h, 2h30m.
    #[arg(long, default_value = "1d", value_parser = parse_duration)]
    duration: Duration,
    /// Value model: physiological or prototype.
    #[arg(long, default_value = "physiological")]
    model: Model,
    /// Reading cadence: cgm (every 5 min) or meter (a few fingersticks a day).
    #[arg(long, default_value = "cgm")]
    cadence: Cadence,
    /// Profiles assigned round-robin (comma-separated or repeated); default all five.
    #[arg(long = "profile", value_delimiter = ',')]
    profiles: Vec<Profile>,
    /// Leave out device telemetry.
    #[arg(long)]
    no_telemetry: bool,
    /// Scenario, repeatable: name[:patient=ID,at=RFC3339|OFFSET,for=DURATION], e.g. night-hypo:patient=2,at=1d2h.
    #[arg(long = "scenario")]
    scenarios: Vec<Scenario>,
}

impl SimArgs {
    fn config(&self) -> anyhow::Result<SimConfig> {
        let config = SimConfig {
            seed: self.seed,
            patients: self.patients,
            start: self.start,
            duration: self.duration,
            model: self.model,
            cadence: self.cadence,
            profiles: (!self.profiles.is_empty()).then(|| self.profiles.clone()),
            telemetry: !self.no_telemetry,
            scenarios: self.scenarios.clone(),
        };
        config.validate()?;
        Ok(config)
    }
}

#[derive(Debug, Args)]
struct StreamArgs {
    #[command(flatten)]
    sim: SimArgs,
    /// Replay this many times faster than real time (60 = an hour a minute).
    #[arg(long, group = "pacing")]
    accel: Option<f64>,
    /// Replay in real time.
    #[arg(long, group = "pacing")]
    realtime: bool,
    /// As fast as possible (the default).
    #[arg(long, group = "pacing")]
    fast: bool,
    /// A fixed number of events per second.
    #[arg(long, group = "pacing")]
    rate: Option<f64>,
    /// Output file for JSON lines; `-` is stdout (the default).
    #[arg(long, conflicts_with_all = ["http", "mqtt"])]
    out: Option<String>,
    /// POST batches as JSON arrays to this URL (e.g. http://127.0.0.1:8080/api/ingest).
    #[arg(long, conflicts_with = "mqtt")]
    http: Option<String>,
    /// Publish each event at QoS 1 to an MQTT broker: mqtt://HOST:PORT[?prefix=P&client_id=C]
    /// (topics P/glucose/<patient_id> and P/device/<device_id>; prefix default `glucoguard`).
    /// Ends once the broker acknowledged every message.
    #[arg(long)]
    mqtt: Option<String>,
    /// Events per batch.
    #[arg(long, default_value_t = 100)]
    batch_size: usize,
    /// Show a progress bar on stderr.
    #[arg(long)]
    progress: bool,
}

#[derive(Debug, Args)]
struct DimsArgs {
    /// Number of patients.
    #[arg(long, default_value_t = 5)]
    patients: usize,
    /// Seed (use the same as for `stream`).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Profiles assigned round-robin, as for `stream`.
    #[arg(long = "profile", value_delimiter = ',')]
    profiles: Vec<Profile>,
}

fn parse_start(s: &str) -> Result<DateTime<Utc>, String> {
    if s.eq_ignore_ascii_case("now") {
        return Ok(Utc::now().trunc_subsecs(0));
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("expected an RFC 3339 time like 2026-11-28T00:00:00Z or `now`: {e}"))
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`glucoguard-sim stream | head`) is a normal way to stop.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("glucoguard-sim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Stream(args) => run_stream(args),
        Command::Dims(args) => {
            let profiles = (!args.profiles.is_empty()).then_some(args.profiles.as_slice());
            let dims = dimensions_with_profiles(args.seed, args.patients, profiles);
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            serde_json::to_writer_pretty(&mut out, &dims)?;
            use std::io::Write;
            writeln!(out)?;
            Ok(())
        }
        Command::Stats(args) => run_stats(args),
        Command::Seed(args) => {
            let profiles =
                (!args.dims.profiles.is_empty()).then_some(args.dims.profiles.as_slice());
            let dims = dimensions_with_profiles(args.dims.seed, args.dims.patients, profiles);
            let body = serde_json::to_vec(&dims)?;
            glucoguard_simulator::HttpPublisher::new(args.url.clone())
                .with_bearer(std::env::var(TOKEN_ENV).ok())
                .post_document(&body)?;
            eprintln!(
                "seeded {} patients, {} devices, {} subscribers into {}",
                dims.patients.len(),
                dims.devices.len(),
                dims.subscribers.len(),
                args.url
            );
            Ok(())
        }
    }
}

/// The environment variable holding the host's API token for `--http` / `seed` (an env
/// variable, not a flag: arguments show in `ps`).
const TOKEN_ENV: &str = "GLUCOGUARD_TOKEN";

fn run_stream(args: StreamArgs) -> anyhow::Result<()> {
    let config = args.sim.config()?;
    let pacing = match (args.accel, args.realtime, args.rate) {
        (Some(f), _, _) => Pacing::Accelerated(f),
        (_, true, _) => Pacing::Realtime,
        (_, _, Some(r)) => Pacing::Rate(r),
        _ => Pacing::AsFastAsPossible,
    };
    let _ = args.fast;
    let mut publisher: Box<dyn Publisher> = match (&args.mqtt, &args.http, &args.out) {
        (Some(url), _, _) => Box::new(MqttPublisher::connect(url)?),
        (None, Some(url), _) => {
            Box::new(HttpPublisher::new(url.clone()).with_bearer(std::env::var(TOKEN_ENV).ok()))
        }
        (None, None, Some(path)) => Box::new(JsonLinesPublisher::to_path_or_stdout(path)?),
        (None, None, None) => Box::new(JsonLinesPublisher::stdout()),
    };
    let stats = stream(
        Simulator::new(config),
        pacing,
        &mut publisher,
        args.batch_size,
        args.progress,
    )
    .context("streaming")?;
    if args.progress {
        eprintln!(
            "{} events ({} glucose, {} telemetry, {} late) in {:.2?}, {:.0} events/s",
            stats.events,
            stats.glucose_readings,
            stats.device_telemetry,
            stats.late_events,
            stats.elapsed,
            stats.events_per_sec()
        );
    }
    Ok(())
}

fn run_stats(args: SimArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let mut values: Vec<Vec<f64>> = vec![Vec::new(); config.patients];
    for event in Simulator::new(config.clone()) {
        if let Some(r) = event.as_glucose() {
            values[(r.patient_id - 1) as usize].push(r.glucose_level);
        }
    }
    println!(
        "{:>7}  {:<11}  {:>6}  {:>6}  {:>5}  {:>6}  {:>6}  {:>6}  {:>6}",
        "patient", "profile", "n", "mean", "CV%", "TIR%", "TBR%", "<54%", "TAR%"
    );
    for (i, v) in values.into_iter().enumerate() {
        let s = glucose_stats(v);
        let id = i as u64 + 1;
        let profile = config
            .profile_of(id)
            .map(|p| p.to_string())
            .unwrap_or_default();
        println!(
            "{id:>7}  {profile:<11}  {:>6}  {:>6.1}  {:>5.1}  {:>6.1}  {:>6.1}  {:>6.1}  {:>6.1}",
            s.count,
            s.mean,
            100.0 * s.cv,
            100.0 * s.time_in_range,
            100.0 * s.time_below_range,
            100.0 * s.time_below_54,
            100.0 * s.time_above_range
        );
    }
    Ok(())
}
