//! `glucoguard-testkit`: runs a test tool until SIGINT or SIGTERM.
//!
//! `glucoguard-testkit eventhubs --listen 127.0.0.1:PORT --hub NAME:PARTITIONS [--hub …]
//! [--namespace NAME] [--settle-delay-ms MS]` serves a local Event Hubs endpoint and prints
//! its connection string as the first line on stdout. Logs go to stderr (`RUST_LOG`,
//! default `info`).

use std::process::ExitCode;
use std::time::Duration;

use glucoguard_testkit::eventhubs::{Config, HubConfig, Server};
use std::io::Write;

const USAGE: &str = "usage: glucoguard-testkit eventhubs --listen ADDR --hub NAME:PARTITIONS [--hub …] [--namespace NAME] [--settle-delay-ms MS]";

fn parse_eventhubs(args: &[String]) -> Result<Config, String> {
    let mut listen = None;
    let mut namespace = None;
    let mut hubs = Vec::new();
    let mut settle_delay = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (flag.as_str(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag {
            "--listen" => {
                let v = value()?;
                listen = Some(
                    v.parse()
                        .map_err(|_| format!("--listen {v:?}: not HOST:PORT"))?,
                );
            }
            "--hub" => hubs.push(value()?.parse::<HubConfig>().map_err(|e| e.to_string())?),
            "--namespace" => namespace = Some(value()?),
            "--settle-delay-ms" => {
                let v = value()?;
                settle_delay =
                    Some(Duration::from_millis(v.parse().map_err(|_| {
                        format!("--settle-delay-ms {v:?}: not a number")
                    })?));
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let mut config = Config::new(listen.ok_or("--listen is required")?);
    config.hubs = hubs;
    if let Some(namespace) = namespace {
        config.namespace = namespace;
    }
    if let Some(delay) = settle_delay {
        config.settle_delay = delay;
    }
    Ok(config)
}

async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match args.split_first() {
        Some((tool, rest)) if tool == "eventhubs" => parse_eventhubs(rest),
        _ => Err(String::new()),
    };
    let config = match config {
        Ok(config) => config,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("glucoguard-testkit: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let server = match Server::start(config).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("glucoguard-testkit: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The first line on stdout is the connection string; flushed at once, since a test or a
    // script reads it through a pipe.
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{}", server.connection_string()).is_err() || stdout.flush().is_err() {
        return ExitCode::FAILURE;
    }
    drop(stdout);
    stopped().await;
    tracing::info!("stopping");
    server.shutdown().await;
    ExitCode::SUCCESS
}
