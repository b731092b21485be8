//! Ingest benchmark: simulated readings streamed through the embedded source into the whole
//! pipeline (validation, history, the default Wasm rule, one SQLite transaction per batch,
//! acknowledgement), against generating and serialising the same readings alone, in one run.
//!
//! `cargo xtask bench` (or `cargo bench -p glucoguard --bench ingest`).

use glucoguard::app;
use glucoguard::config::{Config, RuleConfig, StoreConfig};
use glucoguard::engine::EngineConfig;
use glucoguard::pipeline::PipelineConfig;
use glucoguard_simulator::{Event, Pacing, Publisher, SimConfig, Simulator, stream};
use std::time::Instant;

const PATIENTS: usize = 100;
const DAYS: i64 = 3;

fn sim() -> Simulator {
    Simulator::new(SimConfig {
        seed: 9,
        patients: PATIENTS,
        duration: chrono::Duration::days(DAYS),
        ..SimConfig::default()
    })
}

/// Generation and JSON serialisation only: the baseline.
struct Discard(u64);
impl Publisher for Discard {
    fn publish(&mut self, events: &[Event]) -> anyhow::Result<()> {
        for e in events {
            self.0 += e.to_json_line().len() as u64;
        }
        Ok(())
    }
}

struct Embedded(glucoguard::sources::EmbeddedSource);
impl Publisher for Embedded {
    fn publish(&mut self, events: &[Event]) -> anyhow::Result<()> {
        for e in events {
            self.0.blocking_send(e.to_json_line().into_bytes())?;
        }
        Ok(())
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let rule = glucoguard::app::built_plugin_dir().join("glucoguard_default_rule.wasm");
    assert!(
        rule.exists(),
        "{} missing: run `cargo xtask build-plugins`",
        rule.display()
    );

    let started = Instant::now();
    let base = stream(sim(), Pacing::AsFastAsPossible, &mut Discard(0), 256, false).unwrap();
    let gen_secs = started.elapsed().as_secs_f64();

    let mut rows = Vec::new();
    for max_batch in [64usize, 256, 1024] {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            store: StoreConfig::sqlite(dir.path().join("bench.db")),
            engine: EngineConfig::default(),
            pipeline: PipelineConfig {
                max_batch,
                ..PipelineConfig::default()
            },
            sources: vec![],
            rules: vec![RuleConfig {
                path: rule.clone(),
                enabled: true,
                params: Default::default(),
            }],
            console: false,
            listen: None,
            ..Config::default()
        };
        let (secs, events, stored) = rt.block_on(async {
            let app = app::start(&config).await.unwrap();
            let mut publisher = Embedded(app.handle.embedded_source("bench"));
            let started = Instant::now();
            let streamed = tokio::task::spawn_blocking(move || {
                stream(sim(), Pacing::AsFastAsPossible, &mut publisher, 256, false).unwrap()
            })
            .await
            .unwrap();
            app.handle.shutdown().await;
            app.pipeline.await.unwrap();
            let secs = started.elapsed().as_secs_f64();
            let c = app.store.counts().await.unwrap();
            (
                secs,
                streamed.events,
                c.glucose_readings + c.device_readings,
            )
        });
        assert_eq!(stored, events, "everything streamed was stored");
        rows.push((max_batch, events as f64 / secs));
    }
    let gen_rate = base.events as f64 / gen_secs;
    println!(
        "{} events ({PATIENTS} patients × {DAYS} days, glucose + telemetry)\n",
        base.events
    );
    println!("| path | events/s | × generation alone |\n|---|---:|---:|");
    println!("| simulator: generate + serialise JSON | {gen_rate:.0} | 1.00 |");
    for (batch, rate) in rows {
        println!(
            "| simulator → embedded source → pipeline (batch ≤ {batch}) → SQLite | {rate:.0} | {:.2} |",
            rate / gen_rate
        );
    }
}
