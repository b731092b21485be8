//! Publishers: where streamed events go. JSON lines to a writer (stdout or a file), a JSON array per batch over HTTP
//! (the host's `POST /api/ingest`), one MQTT message per event at QoS 1 (the host's MQTT source), or an in-memory
//! collector; Event Hubs implements the same trait later.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::event::Event;

/// A destination for batches of events. `publish` is called with batches in emission order; `flush` at the end of a
/// stream (and whenever the caller needs everything durable). Partitioned transports key by [`Event::partition_key`].
pub trait Publisher {
    /// Sends one batch. An error stops the stream.
    fn publish(&mut self, events: &[Event]) -> anyhow::Result<()>;

    /// Makes everything published so far durable or delivered.
    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

impl<P: Publisher + ?Sized> Publisher for &mut P {
    fn publish(&mut self, events: &[Event]) -> anyhow::Result<()> {
        (**self).publish(events)
    }
    fn flush(&mut self) -> anyhow::Result<()> {
        (**self).flush()
    }
}

impl<P: Publisher + ?Sized> Publisher for Box<P> {
    fn publish(&mut self, events: &[Event]) -> anyhow::Result<()> {
        (**self).publish(events)
    }
    fn flush(&mut self) -> anyhow::Result<()> {
        (**self).flush()
    }
}

/// Writes one JSON object per line.
#[derive(Debug)]
pub struct JsonLinesPublisher<W: Write> {
    out: BufWriter<W>,
}

impl<W: Write> JsonLinesPublisher<W> {
    /// Wraps a writer (buffered internally).
    pub fn new(writer: W) -> Self {
        JsonLinesPublisher {
            out: BufWriter::with_capacity(64 * 1024, writer),
        }
    }

    /// Flushes and returns the writer.
    pub fn into_inner(self) -> anyhow::Result<W> {
        self.out
            .into_inner()
            .map_err(|e| anyhow::anyhow!("flushing JSON lines: {}", e.error()))
    }
}

impl JsonLinesPublisher<Box<dyn Write + Send>> {
    /// Writes to standard output.
    pub fn stdout() -> Self {
        JsonLinesPublisher::new(Box::new(io::stdout()))
    }

    /// Creates (or truncates) a file.
    pub fn create(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let path = path.as_ref();
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(JsonLinesPublisher::new(Box::new(file)))
    }

    /// `-` means standard output, anything else a file path.
    pub fn to_path_or_stdout(target: &str) -> anyhow::Result<Self> {
        if target == "-" {
            Ok(Self::stdout())
        } else {
            Self::create(target)
        }
    }
}

impl<W: Write> Publisher for JsonLinesPublisher<W> {
    fn publish(&mut self, events: &[Event]) -> anyhow::Result<()> {
        for event in events {
            event
                .write_json_line(&mut self.out)
                .context("writing JSON lines")?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.out.flush().context("flushing JSON lines")
    }
}

/// Keeps every event in memory (tests, in-process demos).
#[derive(Debug, Default)]
pub struct CollectPublisher {
    /// Everything published, in order.
    pub events: Vec<Event>,
    /// Size of each batch received.
    pub batch_sizes: Vec<usize>,
}

impl Publisher for CollectPublisher {
    fn publish(&mut self, events: &[Event]) -> anyhow::Result<()> {
        self.batch_sizes.push(events.len());
        self.events.extend_from_slice(events);
        Ok(())
    }
}

/// Limits for [`HttpPublisher`].
#[derive(Debug, Clone, PartialEq)]
pub struct HttpConfig {
    /// Attempts per request, including the first (at least 1).
    pub max_attempts: u32,
    /// Wait before the first retry; doubles after each failure.
    pub initial_backoff: Duration,
    /// Upper bound of the wait between retries.
    pub max_backoff: Duration,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Largest number of events in one request; bigger batches are split.
    pub max_events_per_request: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            max_events_per_request: 1000,
        }
    }
}

/// POSTs each batch as a JSON array (`Content-Type: application/json`) to a URL, e.g. the host's `/api/ingest`.
///
/// Retries connection failures, timeouts, 408, 429 and 5xx with exponential backoff, up to
/// [`HttpConfig::max_attempts`]; any other non-2xx status fails at once. Plain `http://` only (no TLS stack).
#[derive(Debug)]
pub struct HttpPublisher {
    agent: ureq::Agent,
    url: String,
    config: HttpConfig,
    requests: u64,
    retries: u64,
    /// Sent as `Authorization: Bearer …` (the host's ingest and admin need a token).
    bearer: Option<String>,
}

impl HttpPublisher {
    /// A publisher with the default limits.
    pub fn new(url: impl Into<String>) -> Self {
        Self::with_config(url, HttpConfig::default())
    }

    /// A publisher with explicit limits.
    pub fn with_config(url: impl Into<String>, config: HttpConfig) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(config.request_timeout))
            .build()
            .into();
        HttpPublisher {
            agent,
            url: url.into(),
            config,
            requests: 0,
            retries: 0,
            bearer: None,
        }
    }

    /// Authenticates every request with this API token (`gg_…`), when given.
    pub fn with_bearer(mut self, token: Option<String>) -> Self {
        self.bearer = token.filter(|t| !t.is_empty());
        self
    }

    /// Successful requests so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// Retries so far.
    pub fn retries(&self) -> u64 {
        self.retries
    }

    /// POSTs one JSON document (e.g. dimension data to the host's `/api/dimensions`) with the
    /// same retry policy as reading batches.
    pub fn post_document(&mut self, body: &[u8]) -> anyhow::Result<()> {
        self.post(body, 0)
    }

    fn post(&mut self, body: &[u8], events: usize) -> anyhow::Result<()> {
        let attempts = self.config.max_attempts.max(1);
        let mut backoff = self.config.initial_backoff;
        let mut last_error = String::new();
        for attempt in 1..=attempts {
            if attempt > 1 {
                self.retries += 1;
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(self.config.max_backoff);
            }
            let mut request = self
                .agent
                .post(&self.url)
                .header("Content-Type", "application/json");
            if let Some(token) = &self.bearer {
                request = request.header("Authorization", &format!("Bearer {token}"));
            }
            let result = request.send(body);
            match result {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    if (200..300).contains(&status) {
                        self.requests += 1;
                        return Ok(());
                    }
                    let text = response.body_mut().read_to_string().unwrap_or_default();
                    let snippet: String = text.chars().take(300).collect();
                    let retryable = status == 408 || status == 429 || status >= 500;
                    if !retryable {
                        bail!(
                            "POST {} rejected {events} events with HTTP {status}: {snippet}",
                            self.url
                        );
                    }
                    last_error = format!("HTTP {status}: {snippet}");
                }
                Err(e) => last_error = e.to_string(),
            }
        }
        bail!(
            "POST {} failed after {attempts} attempts: {last_error}",
            self.url
        )
    }
}

impl Publisher for HttpPublisher {
    fn publish(&mut self, events: &[Event]) -> anyhow::Result<()> {
        for chunk in events.chunks(self.config.max_events_per_request.max(1)) {
            let body = serde_json::to_vec(chunk).context("serialising batch")?;
            self.post(&body, chunk.len())?;
        }
        Ok(())
    }
}

/// Where [`MqttPublisher`] connects and how it names topics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttTarget {
    pub host: String,
    pub port: u16,
    /// Topics are `{prefix}/glucose/{patient_id}` and `{prefix}/device/{device_id}`.
    pub prefix: String,
    pub client_id: String,
}

impl MqttTarget {
    /// `mqtt://HOST[:PORT][?prefix=P&client_id=C]` (plain TCP; defaults: port 1883, prefix
    /// `glucoguard`, client id `glucoguard-sim-<pid>`).
    pub fn parse(url: &str) -> anyhow::Result<MqttTarget> {
        let rest = url
            .strip_prefix("mqtt://")
            .with_context(|| format!("{url}: expected mqtt://HOST[:PORT][?prefix=…]"))?;
        let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
        let authority = authority.trim_end_matches('/');
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .ok()
                    .filter(|&p| p > 0)
                    .with_context(|| format!("{url}: port {p:?} is not within 1..=65535"))?,
            ),
            None => (authority, 1883),
        };
        if host.is_empty() {
            bail!("{url}: no host");
        }
        let mut target = MqttTarget {
            host: host.to_owned(),
            port,
            prefix: "glucoguard".to_owned(),
            client_id: format!("glucoguard-sim-{}", std::process::id()),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("prefix", v)) if !v.is_empty() && !v.contains(['+', '#']) => {
                    target.prefix = v.trim_end_matches('/').to_owned();
                }
                Some(("client_id", v)) if !v.is_empty() => target.client_id = v.to_owned(),
                _ => bail!(
                    "{url}: unknown or empty query parameter {pair:?} (prefix=…, client_id=…)"
                ),
            }
        }
        Ok(target)
    }

    /// The topic an event goes to.
    pub fn topic(&self, event: &Event) -> String {
        match event {
            Event::Glucose(r) => format!("{}/glucose/{}", self.prefix, r.patient_id),
            Event::Device(d) => format!("{}/device/{}", self.prefix, d.device_id),
        }
    }
}

/// What the MQTT connection thread has seen.
#[derive(Debug, Default)]
struct MqttAcks {
    /// PUBACKs received.
    acked: u64,
    /// PUBACKs with a failure reason (the broker refused the message).
    refused: u64,
    /// The connection failed: the stream stops (nothing is retried behind the caller's back).
    error: Option<String>,
}

/// Publishes each event as one JSON reading at QoS 1 to its topic (MQTT 5, plain TCP) and
/// counts the broker's PUBACKs: [`Publisher::flush`] returns once every message published so
/// far is acknowledged by the broker (delivered to it), or fails.
pub struct MqttPublisher {
    target: MqttTarget,
    client: rumqttc::v5::Client,
    published: u64,
    acks: std::sync::Arc<(std::sync::Mutex<MqttAcks>, std::sync::Condvar)>,
    connection: Option<std::thread::JoinHandle<()>>,
    /// How long `flush` waits for the outstanding PUBACKs.
    pub flush_timeout: Duration,
}

impl std::fmt::Debug for MqttPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttPublisher")
            .field("target", &self.target)
            .field("published", &self.published)
            .finish_non_exhaustive()
    }
}

impl MqttPublisher {
    /// Connects (in a background thread that drives the connection) to `url`
    /// (`mqtt://HOST[:PORT][?prefix=…&client_id=…]`).
    pub fn connect(url: &str) -> anyhow::Result<Self> {
        Self::to_target(MqttTarget::parse(url)?)
    }

    pub fn to_target(target: MqttTarget) -> anyhow::Result<Self> {
        use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
        use rumqttc::v5::{Event as MqttEvent, MqttOptions};
        let mut options =
            MqttOptions::new(target.client_id.clone(), target.host.clone(), target.port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_start(true)
            // Readings carry up to 16 KiB and tests send larger ones on purpose.
            .set_max_packet_size(Some(1 << 20));
        let (client, mut connection) = rumqttc::v5::Client::new(options, 64);
        let acks = std::sync::Arc::new((
            std::sync::Mutex::new(MqttAcks::default()),
            std::sync::Condvar::new(),
        ));
        let shared = acks.clone();
        let (connected_tx, connected_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let thread = std::thread::Builder::new()
            .name("mqtt-publisher".into())
            .spawn(move || {
                let mut connected = Some(connected_tx);
                for event in connection.iter() {
                    let (lock, changed) = &*shared;
                    match event {
                        Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                            if let Some(tx) = connected.take() {
                                let _ = tx.send(Ok(()));
                            }
                        }
                        Ok(MqttEvent::Incoming(Packet::PubAck(ack))) => {
                            let mut a = lock.lock().unwrap_or_else(|e| e.into_inner());
                            a.acked += 1;
                            if !matches!(
                                ack.reason,
                                PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                            ) {
                                a.refused += 1;
                            }
                            changed.notify_all();
                        }
                        Ok(MqttEvent::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                        Ok(_) => {}
                        Err(e) => {
                            if let Some(tx) = connected.take() {
                                let _ = tx.send(Err(e.to_string()));
                            }
                            let mut a = lock.lock().unwrap_or_else(|e| e.into_inner());
                            a.error = Some(e.to_string());
                            changed.notify_all();
                            break;
                        }
                    }
                }
            })
            .context("starting the MQTT connection thread")?;
        match connected_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => bail!(
                "cannot connect to mqtt://{}:{}: {e}",
                target.host,
                target.port
            ),
            Err(_) => bail!(
                "no answer from mqtt://{}:{} within 10 s",
                target.host,
                target.port
            ),
        }
        Ok(MqttPublisher {
            target,
            client,
            published: 0,
            acks,
            connection: Some(thread),
            flush_timeout: Duration::from_secs(60),
        })
    }

    pub fn target(&self) -> &MqttTarget {
        &self.target
    }

    /// Messages published so far.
    pub fn published(&self) -> u64 {
        self.published
    }

    fn check(&self) -> anyhow::Result<()> {
        let a = self.acks.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = &a.error {
            bail!(
                "mqtt connection to {}:{} failed: {e}",
                self.target.host,
                self.target.port
            );
        }
        if a.refused > 0 {
            bail!("the broker refused {} messages", a.refused);
        }
        Ok(())
    }

    /// Publishes any bytes at QoS 1 (e.g. a malformed payload in a test).
    pub fn publish_payload(&mut self, topic: &str, payload: Vec<u8>) -> anyhow::Result<()> {
        self.check()?;
        self.client
            .publish(
                topic,
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                payload,
            )
            .with_context(|| format!("publishing to {topic}"))?;
        self.published += 1;
        Ok(())
    }
}

impl Publisher for MqttPublisher {
    fn publish(&mut self, events: &[Event]) -> anyhow::Result<()> {
        for event in events {
            let topic = self.target.topic(event);
            self.publish_payload(&topic, event.to_json_line().into_bytes())?;
        }
        Ok(())
    }

    /// Waits until the broker acknowledged every message published so far.
    fn flush(&mut self) -> anyhow::Result<()> {
        let (lock, changed) = &*self.acks;
        let deadline = std::time::Instant::now() + self.flush_timeout;
        let mut a = lock.lock().unwrap_or_else(|e| e.into_inner());
        while a.acked < self.published && a.error.is_none() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                bail!(
                    "the broker acknowledged {} of {} messages within {:?}",
                    a.acked,
                    self.published,
                    self.flush_timeout
                );
            }
            a = changed
                .wait_timeout(a, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(a);
        self.check()
    }
}

impl Drop for MqttPublisher {
    /// Disconnects cleanly (after what was queued) and ends the connection thread.
    fn drop(&mut self) {
        let _ = self.client.disconnect();
        if let Some(t) = self.connection.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod mqtt_tests {
    use super::*;

    #[test]
    fn mqtt_urls_and_topics() {
        let t = MqttTarget::parse("mqtt://127.0.0.1:1884?prefix=site/a&client_id=sim-1").unwrap();
        assert_eq!(
            (
                t.host.as_str(),
                t.port,
                t.prefix.as_str(),
                t.client_id.as_str()
            ),
            ("127.0.0.1", 1884, "site/a", "sim-1")
        );
        let d = MqttTarget::parse("mqtt://broker").unwrap();
        assert_eq!((d.port, d.prefix.as_str()), (1883, "glucoguard"));
        for bad in [
            "http://h",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h?prefix=a/#",
            "mqtt://h?x=1",
        ] {
            assert!(MqttTarget::parse(bad).is_err(), "{bad}");
        }
        let at = chrono::DateTime::parse_from_rfc3339("2026-11-28T10:05:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let g = Event::Glucose(crate::event::GlucoseReading {
            reading_id: "g-3-1".into(),
            patient_id: 3,
            device_id: 100_003,
            glucose_level: 120.0,
            timestamp: at,
            location: "home".into(),
            emitted_at: at,
        });
        assert_eq!(t.topic(&g), "site/a/glucose/3");
        let dev = Event::Device(crate::event::DeviceTelemetry {
            reading_id: "d-100003-1".into(),
            device_id: 100_003,
            timestamp: at,
            battery_level: 80.0,
            firmware_version: "1.0".into(),
            connectivity_status: crate::event::ConnectivityStatus::Connected,
            error_codes: vec![],
            patient_id: 3,
            emitted_at: at,
        });
        assert_eq!(t.topic(&dev), "site/a/device/100003");
    }
}
