//! The MQTT source against the real Mosquitto on 127.0.0.1:1883 (no broker mock): QoS 1
//! delivery into the store with the default rule's alerts, dead letters for bad payloads, an
//! ordered shutdown that acknowledges exactly what is stored, and the real binary SIGKILLed
//! mid-stream getting every unacknowledged message again.
//!
//! Every test uses its own topic prefix and client ids (random suffix), so tests run in
//! parallel on one broker without crossing. Mosquitto keeps at most 1000 queued messages per
//! offline session by default (`max_queued_messages`), so a stream published while a host
//! may be down stays below that.

use crate::support::{self, rule};
use glucoguard::app;
use glucoguard::sources::SourceConfig;
use glucoguard::sources::mqtt::MqttSourceConfig;
use glucoguard::store::prelude::*;
use glucoguard::store::sqlite::SqliteStore;
use glucoguard::store::{AlertStatus, Cursor};
use glucoguard_simulator::{Event, MqttPublisher, MqttTarget, Publisher, SimConfig, Simulator};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

const BROKER: &str = "127.0.0.1:1883";

/// Fails loudly, naming the command that starts it, when Mosquitto is not there.
pub fn require_broker() {
    let addr: std::net::SocketAddr = BROKER.parse().unwrap();
    if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
        panic!(
            "Mosquitto is not reachable on 127.0.0.1:1883: start it with 'mosquitto -d -c /etc/mosquitto/mosquitto.conf'"
        );
    }
}

/// A fresh name for this test's topics and clients.
pub fn unique(tag: &str) -> String {
    format!("gg-test-{tag}-{:016x}", rand::random::<u64>())
}

/// The host's MQTT source for topic prefix `prefix`, client id `<prefix>-host`, a short
/// session expiry (the broker forgets test sessions soon) and quick reconnects.
pub fn source(prefix: &str) -> MqttSourceConfig {
    let mut c = MqttSourceConfig::new(
        &format!("mqtt://{BROKER}"),
        &format!("{prefix}-host"),
        prefix,
    )
    .unwrap();
    c.session_expiry_secs = 600;
    c.reconnect_max = Duration::from_secs(1);
    c
}

/// A publisher on `prefix` with its own client id.
pub fn publisher(prefix: &str, tag: &str) -> MqttPublisher {
    let (host, port) = BROKER.split_once(':').unwrap();
    MqttPublisher::to_target(MqttTarget {
        host: host.to_owned(),
        port: port.parse().unwrap(),
        prefix: prefix.to_owned(),
        client_id: format!("{prefix}-pub-{tag}"),
    })
    .expect("the publisher connects to Mosquitto")
}

/// Simulated readings and telemetry in event-time order (per-patient order is what MQTT
/// keeps per topic, and then windows are those of the embedded run).
pub fn simulated(seed: u64, patients: usize, hours: i64) -> Vec<Event> {
    let mut events: Vec<Event> = Simulator::new(SimConfig {
        seed,
        patients,
        duration: chrono::Duration::hours(hours),
        ..SimConfig::default()
    })
    .collect();
    events.sort_by_key(|e| e.timestamp());
    events
}

pub(crate) fn ids_of(events: &[Event]) -> BTreeSet<String> {
    events
        .iter()
        .map(|e| {
            glucoguard::model::parse::parse_reading(e.to_json_line().as_bytes())
                .unwrap()
                .id
        })
        .collect()
}

/// Polls `done` every 10 ms; panics with `what` and the last state after `limit`.
pub(crate) async fn wait_for<T: std::fmt::Debug>(
    limit: Duration,
    what: &str,
    mut probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let started = Instant::now();
    loop {
        let v = probe();
        if done(&v) {
            return v;
        }
        assert!(
            started.elapsed() < limit,
            "{what} within {limit:?}; last seen: {v:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until the host's MQTT source is connected and subscribed.
async fn wait_subscribed(app: &app::App) {
    wait_for(
        Duration::from_secs(20),
        "the MQTT source connects and subscribes",
        || app.sources[0].status(),
        |s| s.taking_input,
    )
    .await;
}

/// Every reading id in the store with how often it is listed (both kinds).
pub(crate) async fn listed_reading_ids(store: &dyn glucoguard::store::Store) -> Vec<String> {
    let mut ids = Vec::new();
    for kind in [
        glucoguard::model::ReadingKind::Glucose,
        glucoguard::model::ReadingKind::Device,
    ] {
        let mut after = Cursor::default();
        loop {
            let page = store.readings_since(kind, &after, 500).await.unwrap();
            let Some(last) = page.last() else { break };
            after = last.cursor(&last.item.id);
            ids.extend(page.into_iter().map(|r| r.item.id));
        }
    }
    ids
}

/// Each id once, and exactly the sent ones.
pub(crate) fn check_exactly_once(listed: &[String], sent: &BTreeSet<String>) {
    let distinct: BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(
        distinct.len(),
        listed.len(),
        "a reading is stored more than once"
    );
    let missing: Vec<&String> = sent.difference(&distinct).take(5).collect();
    let extra: Vec<&String> = distinct.difference(sent).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} sent readings are not stored (e.g. {missing:?}); {} stored ones were not sent (e.g. {extra:?})",
        sent.difference(&distinct).count(),
        distinct.difference(sent).count()
    );
}

/// (alert id, notified) of every stored alert.
pub(crate) async fn alerts_of(store: &dyn glucoguard::store::Store) -> BTreeSet<(String, bool)> {
    store
        .alerts(1_000_000)
        .await
        .unwrap()
        .into_iter()
        .map(|(a, s)| (a.id, s != AlertStatus::Suppressed))
        .collect()
}

/// The same events through the embedded source of a host on its own store: the reference.
pub(crate) async fn embedded_alerts(events: &[Event], dir: &Path) -> BTreeSet<(String, bool)> {
    let cfg = support::sqlite_host_config(
        &dir.join("embedded.db"),
        256,
        vec![rule("glucoguard_default_rule", &[])],
    );
    let app = app::start(&cfg).await.unwrap();
    support::send_all(&app, events.iter().map(|e| e.to_json_line())).await;
    let alerts = alerts_of(app.store.as_ref()).await;
    support::stop(app).await;
    alerts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_readings_at_qos1_are_stored_and_alert() {
    require_broker();
    let prefix = unique("qos1");
    let dir = tempfile::tempdir().unwrap();
    let events = simulated(12, 3, 8);
    let sent = ids_of(&events);
    let reference = embedded_alerts(&events, dir.path()).await;
    assert!(
        reference.iter().filter(|(_, n)| *n).count() > 5,
        "the stream raises alerts with the default rule: {}",
        reference.len()
    );

    let mut cfg = support::sqlite_host_config(
        &dir.path().join("mqtt.db"),
        256,
        vec![rule("glucoguard_default_rule", &[])],
    );
    cfg.sources = vec![SourceConfig::Mqtt(source(&prefix))];
    let app = app::start(&cfg).await.unwrap();
    let mut live = app.live.subscribe();
    wait_subscribed(&app).await;

    let to_publish = events.clone();
    let p = prefix.clone();
    tokio::task::spawn_blocking(move || {
        let mut publisher = publisher(&p, "sim");
        for batch in to_publish.chunks(100) {
            publisher.publish(batch)?;
        }
        publisher.flush()
    })
    .await
    .unwrap()
    .expect("the broker acknowledges every reading");

    let n = events.len() as u64;
    let status = wait_for(
        Duration::from_secs(60),
        "every published reading is acknowledged by the pipeline",
        || app.sources[0].status(),
        |s| s.acknowledged >= n,
    )
    .await;
    assert_eq!(status.received, n, "{status:?}");
    let counts = app.store.counts().await.unwrap();
    assert_eq!(counts.dead_letters, 0);
    check_exactly_once(&listed_reading_ids(app.store.as_ref()).await, &sent);
    let stored = alerts_of(app.store.as_ref()).await;
    assert_eq!(
        stored, reference,
        "the alerts (and which are notified) equal those of the same readings through the embedded source"
    );
    // Every notified alert reached the live feed.
    let mut notified = BTreeSet::new();
    while let Ok(a) = live.try_recv() {
        notified.insert(a.id);
    }
    let expected: BTreeSet<String> = stored
        .iter()
        .filter(|(_, n)| *n)
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(notified, expected, "live feed vs stored notified alerts");
    support::stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_mqtt_payloads_go_to_dead_letters_and_the_stream_goes_on() {
    require_broker();
    let prefix = unique("bad");
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = support::sqlite_host_config(
        &dir.path().join("g.db"),
        64,
        vec![rule("glucoguard_default_rule", &[])],
    );
    cfg.sources = vec![SourceConfig::Mqtt(source(&prefix))];
    let app = app::start(&cfg).await.unwrap();
    wait_subscribed(&app).await;

    let topic = format!("{prefix}/glucose/7");
    let good = |i: i64| {
        support::glucose_json(&format!("m{i}"), 7, support::T0 + i * support::MIN, 100.0)
            .into_bytes()
    };
    let mut oversized = serde_json::json!({
        "reading_id": "big", "patient_id": 7, "device_id": 1007, "glucose_level": 100.0,
        "timestamp": glucoguard::model::format_ms(support::T0), "location": "home",
    });
    oversized["padding"] = serde_json::Value::String("x".repeat(20 * 1024));
    let oversized = oversized.to_string().into_bytes();
    let oversized_len = oversized.len();
    let payloads: Vec<Vec<u8>> = vec![
        good(0),
        b"{not json".to_vec(),
        good(1),
        br#"{"patient_id": 7, "device_id": 1007, "glucose_level": "high", "timestamp": "2026-11-18T11:10:00Z"}"#.to_vec(),
        good(2),
        oversized,
        good(3),
    ];
    let n = payloads.len() as u64;
    let t = topic.clone();
    let p = prefix.clone();
    tokio::task::spawn_blocking(move || {
        let mut publisher = publisher(&p, "bad");
        for payload in payloads {
            publisher.publish_payload(&t, payload)?;
        }
        publisher.flush()
    })
    .await
    .unwrap()
    .expect("the broker acknowledges every payload");

    wait_for(
        Duration::from_secs(30),
        "every payload, good or bad, is acknowledged by the pipeline",
        || app.sources[0].status(),
        |s| s.acknowledged >= n,
    )
    .await;
    let counts = app.store.counts().await.unwrap();
    assert_eq!(
        (counts.glucose_readings, counts.dead_letters),
        (4, 3),
        "the good readings around the bad ones are stored, each bad one is a dead letter"
    );
    let mut dead = app.store.dead_letters(10).await.unwrap();
    dead.sort_by_key(|d| d.payload.len());
    let origin = format!("mqtt:{topic}");
    assert!(dead.iter().all(|d| d.origin == origin), "{dead:?}");
    assert!(
        dead[0].reason.starts_with("malformed JSON") && dead[0].payload == "{not json",
        "{:?}",
        dead[0]
    );
    assert!(
        dead[1].reason.contains("`glucose_level` must be a number"),
        "{:?}",
        dead[1]
    );
    assert_eq!(
        dead[2].reason,
        format!("payload of {oversized_len} bytes exceeds the limit of 16384 bytes")
    );
    assert_eq!(
        dead[2].payload.len(),
        16 * 1024,
        "the oversized payload is kept up to the limit"
    );
    let status = app.sources[0].status();
    support::stop(app).await;
    assert_eq!(status.received, n, "{status:?}");
}

/// An ordered shutdown in the middle of a stream: the source stops taking messages, the
/// pipeline makes what it took durable, the source sends the PUBACKs for exactly those and
/// disconnects. A second host on the same store and client id then gets every other message
/// (none lost) and none that was stored (every stored message was acknowledged before the
/// first host left).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_shutdown_acknowledges_exactly_what_is_stored() {
    require_broker();
    let prefix = unique("stop");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let events = simulated(21, 3, 12);
    assert!(
        events.len() < 1000,
        "stays within Mosquitto's offline queue"
    );
    let sent = ids_of(&events);
    let config = || {
        let mut cfg =
            support::sqlite_host_config(&db, 16, vec![rule("glucoguard_default_rule", &[])]);
        // Small batches and a slow wait: the stream is still arriving when the host stops.
        cfg.pipeline.max_wait_ms = 5;
        cfg.sources = vec![SourceConfig::Mqtt(source(&prefix))];
        cfg
    };
    let first = app::start(&config()).await.unwrap();
    wait_subscribed(&first).await;
    let to_publish = events.clone();
    let p = prefix.clone();
    let publishing = tokio::task::spawn_blocking(move || {
        let mut publisher = publisher(&p, "stop");
        // About 500 messages a second: the host stops while they are still coming.
        for batch in to_publish.chunks(5) {
            publisher.publish(batch)?;
            std::thread::sleep(Duration::from_millis(10));
        }
        publisher.flush()
    });
    let quarter = events.len() as u64 / 4;
    wait_for(
        Duration::from_secs(30),
        "a quarter of the stream is stored",
        || first.sources[0].status(),
        |s| s.acknowledged >= quarter,
    )
    .await;
    let handle = first.handle.clone();
    let status_of = first.sources[0].control();
    tokio::time::timeout(Duration::from_secs(30), first.shutdown())
        .await
        .expect("the ordered shutdown ends")
        .expect("every part stops cleanly");
    let status = status_of.status();
    let stored_first = handle.stats().readings;
    assert!(status.finished && !status.taking_input, "{status:?}");
    assert_eq!(
        (status.acknowledged, status.acknowledged_upstream),
        (status.received, status.received),
        "every message handed over was made durable and acknowledged to the broker: {status:?}"
    );
    assert!(
        stored_first < events.len() as u64,
        "the host was to stop in the middle of the stream, yet stored all {stored_first} of {} \
         readings (was the test thread held up for a second?)",
        events.len()
    );
    publishing
        .await
        .unwrap()
        .expect("the broker acknowledges every reading");

    let second = app::start(&config()).await.unwrap();
    let rest = events.len() as u64 - stored_first;
    wait_for(
        Duration::from_secs(60),
        "the second host gets the rest of the stream",
        || {
            (
                second.handle.stats().readings,
                second.handle.stats().duplicates,
            )
        },
        |(r, _)| *r >= rest,
    )
    .await;
    // A moment for anything redelivered by mistake to show up as a duplicate.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = second.handle.stats();
    assert_eq!(
        stats.duplicates, 0,
        "a message stored by the first host came again: its PUBACK was not sent before the disconnect"
    );
    check_exactly_once(&listed_reading_ids(second.store.as_ref()).await, &sent);
    support::stop(second).await;
}

/// `glucoguard run` with an MQTT source on one SQLite file, restartable.
struct BinaryHost {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    db: std::path::PathBuf,
    log: std::path::PathBuf,
    addr: String,
}

impl BinaryHost {
    fn new(prefix: &str) -> BinaryHost {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("glucoguard.db");
        let config = dir.path().join("glucoguard.toml");
        let q = |p: &Path| serde_json::to_string(p.to_str().unwrap()).unwrap();
        std::fs::write(
            &config,
            format!(
                "[store]\nkind = \"sqlite\"\npath = {}\n\n[[rules]]\npath = {}\n\n[notify]\nconsole = false\n\n\
                 [pipeline]\nmax_wait_ms = 50\n\n\
                 [[sources]]\nkind = \"mqtt\"\nurl = \"mqtt://{BROKER}\"\nclient_id = \"{prefix}-host\"\n\
                 topic_prefix = \"{prefix}\"\nsession_expiry_secs = 600\nreconnect_max_secs = 1\n",
                q(&db),
                q(&support::plugin_path("glucoguard_default_rule")),
            ),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        BinaryHost {
            log: dir.path().join("host.log"),
            dir,
            config,
            db,
            addr: format!("127.0.0.1:{port}"),
        }
    }

    /// Starts the binary and waits until its MQTT source is subscribed (`/health`).
    fn start(&self) -> std::process::Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_glucoguard"))
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .args(["--listen", &self.addr])
            .env("GLUCOGUARD_LOG", "warn")
            .env_remove("GLUCOGUARD_CONFIG")
            .env_remove("GLUCOGUARD_LISTEN")
            .current_dir(self.dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("glucoguard starts");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "the host exited with {status} before its MQTT source subscribed\n{}",
                    self.log_tail()
                );
            }
            let subscribed = agent
                .get(&format!("http://{}/health", self.addr))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .is_some_and(|h| h["sources"][0]["taking_input"] == true);
            if subscribed {
                return child;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the host's MQTT source did not subscribe within 30 s\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "--- host stderr (last 30 lines) ---\n{}",
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }
}

#[test]
fn a_host_killed_mid_stream_gets_the_unacknowledged_messages_again() {
    require_broker();
    let prefix = unique("kill");
    let events = simulated(33, 3, 12);
    let total = events.len() as u64;
    assert!(
        total < 1000,
        "{total} messages: keep the stream within Mosquitto's default offline queue (1000)"
    );
    let sent = ids_of(&events);
    let h = BinaryHost::new(&prefix);
    let mut host = h.start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The host created and migrated the store; this connection only reads it.
    let store = rt.block_on(SqliteStore::open(&h.db)).unwrap();
    let stored = || {
        rt.block_on(store.counts())
            .map(|c| c.glucose_readings + c.device_readings)
            .unwrap()
    };
    let p = prefix.clone();
    let publishing = std::thread::spawn(move || -> anyhow::Result<()> {
        let mut publisher = publisher(&p, "kill");
        for batch in events.chunks(5) {
            publisher.publish(batch)?;
            std::thread::sleep(Duration::from_millis(20));
        }
        publisher.flush()
    });
    // SIGKILL at a fifth, two fifths, … of the stream stored, 5 to 45 ms after the commit that
    // passed the mark: while the next batch (50 ms wait) holds messages not yet durable, or
    // between a commit and its PUBACKs.
    let mut kills = Vec::new();
    let mut jitter = rand::random::<u64>();
    for k in 1..=4u64 {
        let mark = total * k / 5;
        let started = Instant::now();
        while stored() < mark {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "kill {k}: {} of {total} readings stored after 60 s (mark {mark})\n{}",
                stored(),
                h.log_tail()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        jitter = jitter.rotate_left(13) ^ 0x9E37_79B9_7F4A_7C15;
        std::thread::sleep(Duration::from_millis(5 + jitter % 40));
        host.kill().expect("SIGKILL");
        host.wait().unwrap();
        let at = stored();
        kills.push(at);
        assert!(
            at < total,
            "kill {k} came after the whole stream was stored: make the stream longer"
        );
        host = h.start();
    }
    publishing
        .join()
        .unwrap()
        .expect("the broker acknowledges every reading");
    let started = Instant::now();
    while stored() < total {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "after the kills at {kills:?}, {} of {total} readings are stored after 60 s: messages were lost\n{}",
            stored(),
            h.log_tail()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let term = std::process::Command::new("kill")
        .args(["-TERM", &host.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let started = Instant::now();
    let exit = loop {
        if let Some(s) = host.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(30) {
            host.kill().ok();
            panic!(
                "the host did not exit within 30 s of SIGTERM\n{}",
                h.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(
        exit.code(),
        Some(0),
        "SIGTERM drains and exits 0\n{}",
        h.log_tail()
    );
    let counts = rt.block_on(store.counts()).unwrap();
    assert_eq!(counts.dead_letters, 0, "valid readings became dead letters");
    check_exactly_once(&rt.block_on(listed_reading_ids(&store)), &sent);
}

/// A Mosquitto of this test's own on two free loopback ports: TLS with a password file (the
/// host's side) and plain anonymous TCP (the publisher's side). Killed when dropped.
struct PrivateBroker {
    child: std::process::Child,
    tls_port: u16,
    plain_port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PrivateBroker {
    /// Needs `mosquitto` and `mosquitto_passwd` (Debian's `mosquitto` package). Returns the
    /// broker and the CA file the host must trust.
    fn start(user: &str, password: &str) -> (PrivateBroker, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_file, cert.cert.pem()).unwrap();
        std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
        let passwd = dir.path().join("passwd");
        let made = std::process::Command::new("mosquitto_passwd")
            .args(["-b", "-c"])
            .arg(&passwd)
            .args([user, password])
            .status()
            .expect("mosquitto_passwd runs (Debian package mosquitto)");
        assert!(made.success(), "mosquitto_passwd failed");
        let (tls_port, plain_port) = (free_port(), free_port());
        let conf = dir.path().join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "user root\npersistence false\nper_listener_settings true\nlog_dest file {log}\n\
                 listener {tls_port} 127.0.0.1\ncertfile {cert}\nkeyfile {key}\n\
                 allow_anonymous false\npassword_file {passwd}\n\
                 listener {plain_port} 127.0.0.1\nallow_anonymous true\n",
                log = dir.path().join("mosquitto.log").display(),
                cert = cert_file.display(),
                key = key_file.display(),
                passwd = passwd.display(),
            ),
        )
        .unwrap();
        let child = std::process::Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto starts (Debian package mosquitto)");
        let broker = PrivateBroker {
            child,
            tls_port,
            plain_port,
            _dir: dir,
        };
        let started = Instant::now();
        for port in [tls_port, plain_port] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "the test's own mosquitto did not listen on {port} within 10 s"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        (broker, cert_file)
    }
}

/// `mqtts://` with a private CA file and credentials from the environment variables the
/// config names: readings arrive; a wrong password is refused by the broker, reported in the
/// source's status and retried, and takes no input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_with_a_private_ca_and_credentials_from_the_environment() {
    let (broker, ca) = PrivateBroker::start("gg-host", "right-password");
    let prefix = unique("tls");
    let source_with = |password: &'static str| {
        let raw: glucoguard::sources::mqtt::RawMqttSource = toml::from_str(&format!(
            "url = \"mqtts://localhost:{}\"\nclient_id = \"{prefix}-{password}\"\ntopic_prefix = \"{prefix}\"\n\
             username_env = \"GG_TEST_MQTT_USER\"\npassword_env = \"GG_TEST_MQTT_PASSWORD\"\n\
             ca_file = {}\nreconnect_max_secs = 1\n",
            broker.tls_port,
            serde_json::to_string(ca.to_str().unwrap()).unwrap(),
        ))
        .unwrap();
        let env = move |k: &str| match k {
            "GG_TEST_MQTT_USER" => Some("gg-host".to_owned()),
            "GG_TEST_MQTT_PASSWORD" => Some(password.to_owned()),
            _ => None,
        };
        MqttSourceConfig::from_raw(raw, env, Path::to_path_buf).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();

    // A server certificate the configured CA did not sign: refused by the TLS handshake.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, other.cert.pem()).unwrap();
    let mut untrusted = source_with("right-password");
    untrusted.ca_file = Some(other_ca);
    untrusted.client_id = format!("{prefix}-untrusted");
    untrusted.name = "untrusted".to_owned();
    let mut cfg = support::sqlite_host_config(&dir.path().join("untrusted.db"), 64, vec![]);
    cfg.sources = vec![SourceConfig::Mqtt(untrusted)];
    let app = app::start(&cfg).await.unwrap();
    let status = wait_for(
        Duration::from_secs(20),
        "the untrusted certificate shows in the source's status",
        || app.sources[0].status(),
        |s| s.last_error.is_some(),
    )
    .await;
    assert!(
        !status.taking_input && status.last_error.as_deref().unwrap().contains("TLS"),
        "{status:?}"
    );
    support::stop(app).await;

    // The wrong password: refused, reported, retried; nothing taken.
    let mut cfg = support::sqlite_host_config(&dir.path().join("refused.db"), 64, vec![]);
    cfg.sources = vec![SourceConfig::Mqtt(source_with("wrong-password"))];
    let app = app::start(&cfg).await.unwrap();
    let status = wait_for(
        Duration::from_secs(20),
        "the refused connection shows in the source's status",
        || app.sources[0].status(),
        |s| s.last_error.is_some(),
    )
    .await;
    let error = status.last_error.clone().unwrap();
    assert!(
        !status.taking_input && error.contains("refused") && !error.contains("wrong-password"),
        "{status:?}"
    );
    support::stop(app).await;

    // The right one, over TLS trusting only the test's CA.
    let mut cfg = support::sqlite_host_config(&dir.path().join("g.db"), 64, vec![]);
    cfg.sources = vec![SourceConfig::Mqtt(source_with("right-password"))];
    let app = app::start(&cfg).await.unwrap();
    wait_subscribed(&app).await;
    let events = simulated(44, 2, 2);
    let n = events.len() as u64;
    let sent = ids_of(&events);
    let (p, port) = (prefix.clone(), broker.plain_port);
    tokio::task::spawn_blocking(move || {
        let mut publisher = MqttPublisher::to_target(MqttTarget {
            host: "127.0.0.1".to_owned(),
            port,
            prefix: p.clone(),
            client_id: format!("{p}-pub"),
        })?;
        publisher.publish(&events)?;
        publisher.flush()
    })
    .await
    .unwrap()
    .expect("the test broker acknowledges every reading");
    wait_for(
        Duration::from_secs(30),
        "every reading arrives over TLS and is acknowledged",
        || app.sources[0].status(),
        |s| s.acknowledged >= n,
    )
    .await;
    check_exactly_once(&listed_reading_ids(app.store.as_ref()).await, &sent);
    support::stop(app).await;
}
