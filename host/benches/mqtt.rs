//! MQTT source benchmark (issue 12): the same simulated readings through the embedded source
//! and through Mosquitto (127.0.0.1:1883, QoS 1, the host's MQTT source with manual acks) into
//! the whole pipeline with the default rule on SQLite, in one run. Two phases per source:
//!
//! - throughput: every reading of the first stream offered as fast as the producer may, with
//!   at most `WINDOW` readings published and not yet durable (Mosquitto drops QoS 1 messages
//!   beyond `max_queued_messages`, 1000 by default, when a client falls behind), timed from
//!   the first publish to the last acknowledgement;
//! - latency: a second stream paced at `PACED_PER_SEC` readings/s; each notified alert's
//!   latency is from its reading's publish to the alert reaching the live feed (after the
//!   store commit).
//!
//! Before printing it checks that every reading landed exactly once and that both runs
//! stored the same alerts. `cargo bench -p glucoguard --bench mqtt --profile dev` (the
//! figures in BENCHMARKS.md are from the dev profile).

use glucoguard::app;
use glucoguard::sources::SourceConfig;
use glucoguard::sources::mqtt::MqttSourceConfig;
use glucoguard::store::AlertStatus;
use glucoguard_simulator::{Event, MqttPublisher, MqttTarget, Publisher, SimConfig, Simulator};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BROKER_HOST: &str = "127.0.0.1";
const BROKER_PORT: u16 = 1883;
/// Readings published and not yet durable, at most.
const WINDOW: u64 = 800;
const PACED_PER_SEC: u64 = 200;
const CHUNK: usize = 20;

fn events(seed: u64, patients: usize, hours: i64) -> Vec<Event> {
    let mut e: Vec<Event> = Simulator::new(SimConfig {
        seed,
        patients,
        duration: chrono::Duration::hours(hours),
        ..SimConfig::default()
    })
    .collect();
    e.sort_by_key(|e| e.timestamp());
    e
}

fn host_id(e: &Event) -> String {
    glucoguard::model::parse::parse_reading(e.to_json_line().as_bytes())
        .unwrap()
        .id
}

/// Where readings go: a source's counters say how many are durable.
trait Feed {
    fn send(&mut self, events: &[Event]);
    fn flush(&mut self) {}
    fn durable(&self) -> u64;
}

struct EmbeddedFeed {
    rt: tokio::runtime::Handle,
    source: glucoguard::sources::EmbeddedSource,
    acked: Arc<std::sync::atomic::AtomicU64>,
}

impl Feed for EmbeddedFeed {
    fn send(&mut self, events: &[Event]) {
        for e in events {
            let acked = self.acked.clone();
            let ack = glucoguard::sources::Ack::new(move || {
                acked.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            });
            let payload = e.to_json_line().into_bytes();
            self.rt
                .block_on(self.source.send_with_ack(payload, ack))
                .unwrap();
        }
    }
    fn durable(&self) -> u64 {
        self.acked.load(std::sync::atomic::Ordering::Acquire)
    }
}

struct MqttFeed {
    publisher: MqttPublisher,
    source: glucoguard::sources::SourceControl,
}

impl Feed for MqttFeed {
    fn send(&mut self, events: &[Event]) {
        self.publisher.publish(events).unwrap();
    }
    fn flush(&mut self) {
        self.publisher.flush().unwrap();
    }
    fn durable(&self) -> u64 {
        self.source.status().acknowledged
    }
}

/// Publish instants by host reading id, for the latency phase.
type Sent = Arc<Mutex<HashMap<String, Instant>>>;

/// Offers `events` in chunks: `window` bounds readings not yet durable, `per_sec` paces.
fn produce(
    feed: &mut dyn Feed,
    events: &[Event],
    base: u64,
    window: u64,
    per_sec: Option<u64>,
    sent: Option<&Sent>,
) -> Duration {
    let started = Instant::now();
    let mut offered = 0u64;
    for chunk in events.chunks(CHUNK) {
        while offered + chunk.len() as u64 > window + (feed.durable() - base) {
            std::thread::sleep(Duration::from_micros(200));
        }
        if let Some(rate) = per_sec {
            let due = started + Duration::from_secs_f64(offered as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        if let Some(sent) = sent {
            let now = Instant::now();
            let mut s = sent.lock().unwrap();
            for e in chunk {
                s.insert(host_id(e), now);
            }
        }
        feed.send(chunk);
        offered += chunk.len() as u64;
    }
    feed.flush();
    let total = base + events.len() as u64;
    let limit = Instant::now() + Duration::from_secs(120);
    while feed.durable() < total {
        assert!(
            Instant::now() < limit,
            "only {} of {total} readings durable after 120 s: readings were lost",
            feed.durable()
        );
        std::thread::sleep(Duration::from_micros(200));
    }
    started.elapsed()
}

#[derive(Debug)]
struct Run {
    readings: u64,
    secs: f64,
    latencies_ms: Vec<f64>,
    alerts: BTreeSet<(String, bool)>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn run(mqtt: bool, bulk: &[Event], paced: &[Event], rt: &tokio::runtime::Runtime) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let rule = app::built_plugin_dir().join("glucoguard_default_rule.wasm");
    assert!(
        rule.exists(),
        "{} missing: run `cargo xtask build-plugins`",
        rule.display()
    );
    let mut config = glucoguard::config::Config {
        store: glucoguard::config::StoreConfig::sqlite(dir.path().join("bench.db")),
        rules: vec![glucoguard::config::RuleConfig {
            path: rule,
            enabled: true,
            params: Default::default(),
        }],
        console: false,
        listen: None,
        ..glucoguard::config::Config::default()
    };
    let prefix = format!("gg-bench-{:016x}", rand::random::<u64>());
    if mqtt {
        let mut source = MqttSourceConfig::new(
            &format!("mqtt://{BROKER_HOST}:{BROKER_PORT}"),
            &format!("{prefix}-host"),
            &prefix,
        )
        .unwrap();
        source.session_expiry_secs = 300;
        config.sources = vec![SourceConfig::Mqtt(source)];
    }
    let app = rt.block_on(app::start(&config)).unwrap();
    let sent: Sent = Arc::default();
    let notified: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let listener = {
        let mut live = app.live.subscribe();
        let notified = notified.clone();
        rt.spawn(async move {
            while let Ok(a) = live.recv().await {
                notified
                    .lock()
                    .unwrap()
                    .push((a.reading_id.clone(), Instant::now()));
            }
        })
    };
    let mut feed: Box<dyn Feed> = if mqtt {
        let control = app.sources[0].control();
        let limit = Instant::now() + Duration::from_secs(20);
        while !control.status().taking_input {
            assert!(
                Instant::now() < limit,
                "the MQTT source did not subscribe: {:?}",
                control.status()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Box::new(MqttFeed {
            publisher: MqttPublisher::to_target(MqttTarget {
                host: BROKER_HOST.to_owned(),
                port: BROKER_PORT,
                prefix: prefix.clone(),
                client_id: format!("{prefix}-pub"),
            })
            .unwrap(),
            source: control,
        })
    } else {
        Box::new(EmbeddedFeed {
            rt: rt.handle().clone(),
            source: app.handle.embedded_source("bench"),
            acked: Arc::default(),
        })
    };
    let elapsed = produce(feed.as_mut(), bulk, 0, WINDOW, None, None);
    produce(
        feed.as_mut(),
        paced,
        bulk.len() as u64,
        WINDOW,
        Some(PACED_PER_SEC),
        Some(&sent),
    );
    drop(feed);
    let store = app.store.clone();
    // Every reading landed, each once.
    let counts = rt.block_on(store.counts()).unwrap();
    let distinct: BTreeSet<String> = bulk.iter().chain(paced).map(host_id).collect();
    assert_eq!(
        counts.glucose_readings + counts.device_readings,
        distinct.len() as u64,
        "every reading stored once ({} mqtt)",
        mqtt
    );
    assert_eq!(counts.dead_letters, 0);
    let alerts: BTreeSet<(String, bool)> = rt
        .block_on(store.alerts(10_000_000))
        .unwrap()
        .into_iter()
        .map(|(a, s)| (a.id, s != AlertStatus::Suppressed))
        .collect();
    rt.block_on(app.shutdown()).unwrap();
    listener.abort();
    let sent = sent.lock().unwrap();
    let mut latencies_ms: Vec<f64> = notified
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(r, at)| {
            sent.get(r)
                .map(|t0| at.duration_since(*t0).as_secs_f64() * 1e3)
        })
        .collect();
    latencies_ms.sort_by(f64::total_cmp);
    Run {
        readings: bulk.len() as u64,
        secs: elapsed.as_secs_f64(),
        latencies_ms,
        alerts,
    }
}

fn main() {
    let addr: std::net::SocketAddr = format!("{BROKER_HOST}:{BROKER_PORT}").parse().unwrap();
    if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
        panic!(
            "Mosquitto is not reachable on 127.0.0.1:1883: start it with 'mosquitto -d -c /etc/mosquitto/mosquitto.conf'"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let bulk = events(5, 40, 24);
    let paced = events(6, 10, 6)
        .into_iter()
        .filter(|e| e.as_glucose().is_some())
        .map(|e| match e {
            // Other patients than the bulk stream's, so their windows start empty in both runs.
            Event::Glucose(mut g) => {
                g.patient_id += 1000;
                g.device_id += 1_000_000;
                Event::Glucose(g)
            }
            other => other,
        })
        .collect::<Vec<_>>();
    eprintln!(
        "{} readings (throughput), {} paced at {PACED_PER_SEC}/s (latency)",
        bulk.len(),
        paced.len()
    );
    let embedded = run(false, &bulk, &paced, &rt);
    let mqtt = run(true, &bulk, &paced, &rt);
    assert_eq!(
        embedded.alerts, mqtt.alerts,
        "the same readings stored different alerts through MQTT and the embedded source"
    );
    assert!(
        !mqtt.latencies_ms.is_empty(),
        "the paced stream raised no notified alert"
    );
    let rate = |r: &Run| r.readings as f64 / r.secs;
    println!(
        "| source | readings | readings/s | alert latency p50 | p99 | max | notified alerts timed |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, r) in [("embedded", &embedded), ("MQTT (Mosquitto, QoS 1)", &mqtt)] {
        println!(
            "| {name} | {} | {:.0} | {:.1} ms | {:.1} ms | {:.1} ms | {} |",
            r.readings,
            rate(r),
            percentile(&r.latencies_ms, 0.5),
            percentile(&r.latencies_ms, 0.99),
            r.latencies_ms.last().copied().unwrap_or(f64::NAN),
            r.latencies_ms.len()
        );
    }
    let ratio = |f: &dyn Fn(&Run) -> f64| f(&mqtt) / f(&embedded);
    println!(
        "| MQTT / embedded | | {:.2}× | {:.2}× | {:.2}× | {:.2}× | |",
        ratio(&rate),
        ratio(&|r| percentile(&r.latencies_ms, 0.5)),
        ratio(&|r| percentile(&r.latencies_ms, 0.99)),
        ratio(&|r| r.latencies_ms.last().copied().unwrap_or(f64::NAN)),
    );
    println!(
        "\n{} alerts stored by each run, identical; every reading stored once in both.",
        mqtt.alerts.len()
    );
}
