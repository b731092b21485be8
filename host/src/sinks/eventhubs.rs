//! The alerts hub notifier (`[notify.eventhubs]`): every alert that passed suppression is
//! published to an Azure Event Hub (`alerts` by default) as one event whose body is the
//! alert as JSON — its `id` included, so consumers drop the copies that at-least-once
//! delivery may bring — with the patient id as partition key (the device id for device
//! alerts), so one patient's alerts stay in order on one partition.
//!
//! `notify` only puts the alerts on a bounded queue and returns: one task takes what is
//! queued, groups it by partition key into `ProducerClient` batches and sends them, retrying
//! a failed send (and a failed connect) with capped exponential backoff until it succeeds, so
//! a slow or unreachable hub never holds up the pipeline. When the queue is full the newest
//! alerts are not queued: they are counted and logged at warn (without patient data); the
//! store keeps them. When the pipeline drops the notifier, the task sends what is queued and
//! closes the producer ([`EventHubsNotifier::finished`]).
//!
//! Only `sinks::eventhubs` and `sources::eventhubs` name the Azure SDK
//! (`tests/it/architecture.rs`).

use super::Notifier;
use crate::model::Alert;
use crate::model::secret::ConnectionString;
use azure_messaging_eventhubs::models::EventData;
use azure_messaging_eventhubs::{EventDataBatchOptions, ProducerClient};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// `[notify.eventhubs]`, as written. The connection string is a secret: the config names
/// the environment variable that holds it.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEventHubsNotify {
    /// The variable holding `Endpoint=sb://…;SharedAccessKeyName=…;SharedAccessKey=…`.
    pub connection_string_env: String,
    #[serde(default = "default_hub")]
    pub hub: String,
    /// Where to connect instead of the namespace's own address, e.g. `amqp://127.0.0.1:5672`
    /// for a local endpoint (plain TCP); the namespace in the connection string still names
    /// the service. Default: the namespace over TLS (`amqps`, port 5671).
    pub endpoint: Option<String>,
    /// Alerts waiting for the hub at most; beyond that new alerts are not published.
    #[serde(default = "default_queue")]
    pub queue_capacity: usize,
    /// Upper bound of the wait between retries.
    #[serde(default = "default_retry_max")]
    pub retry_max_secs: u64,
}

fn default_hub() -> String {
    "alerts".to_owned()
}
fn default_queue() -> usize {
    100_000
}
fn default_retry_max() -> u64 {
    30
}

/// A validated `[notify.eventhubs]`.
#[derive(Debug, Clone)]
pub struct EventHubsNotifyConfig {
    pub connection_string: ConnectionString,
    pub hub: String,
    pub endpoint: Option<String>,
    pub queue_capacity: usize,
    pub retry_max: Duration,
}

impl EventHubsNotifyConfig {
    pub fn new(connection_string: &str, hub: &str, endpoint: Option<&str>) -> Self {
        EventHubsNotifyConfig {
            connection_string: ConnectionString::new(connection_string),
            hub: hub.to_owned(),
            endpoint: endpoint.map(str::to_owned),
            queue_capacity: default_queue(),
            retry_max: Duration::from_secs(default_retry_max()),
        }
    }

    /// Validates: `env` reads the connection string's variable.
    pub fn from_raw(
        raw: RawEventHubsNotify,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let conn = ConnectionString::from_env(
            &raw.connection_string_env,
            raw.endpoint.as_deref(),
            &env,
            &mut problems,
        );
        if raw.hub.is_empty() {
            problems.push("hub must not be empty".to_owned());
        }
        if raw.queue_capacity == 0 {
            problems.push("queue_capacity must be positive".to_owned());
        }
        if raw.retry_max_secs == 0 {
            problems.push("retry_max_secs must be positive".to_owned());
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(EventHubsNotifyConfig {
            connection_string: conn,
            hub: raw.hub,
            endpoint: raw.endpoint,
            queue_capacity: raw.queue_capacity,
            retry_max: Duration::from_secs(raw.retry_max_secs),
        })
    }
}

/// Counters of the alerts hub notifier.
#[derive(Debug, Default)]
pub struct EventHubsNotifyStats {
    /// Alerts the hub accepted.
    pub published: AtomicU64,
    /// Alerts not queued because the queue was full.
    pub dropped: AtomicU64,
    /// Failed connects or sends (each retried).
    pub failures: AtomicU64,
}

/// Publishes alerts to an Event Hub from its own task (see the module).
pub struct EventHubsNotifier {
    tx: mpsc::Sender<Alert>,
    stats: Arc<EventHubsNotifyStats>,
}

impl std::fmt::Debug for EventHubsNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventHubsNotifier").finish_non_exhaustive()
    }
}

/// The partition key of an alert: its patient id, or its device id for device alerts.
pub fn partition_key(a: &Alert) -> String {
    match a.patient_id {
        Some(p) => p.to_string(),
        None => a.device_id.to_string(),
    }
}

/// Most alerts in one send (a batch is also cut at the link's size limit).
const MAX_ALERTS_PER_ROUND: usize = 1024;

impl EventHubsNotifier {
    /// Starts the publishing task (connecting lazily, with retries). Must be called within
    /// the runtime. The returned handle ends once the notifier was dropped and everything
    /// queued was sent.
    pub fn start(config: EventHubsNotifyConfig) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(config.queue_capacity);
        let stats = Arc::new(EventHubsNotifyStats::default());
        let task = tokio::spawn(publish(config, rx, stats.clone()));
        (EventHubsNotifier { tx, stats }, task)
    }

    pub fn stats(&self) -> Arc<EventHubsNotifyStats> {
        self.stats.clone()
    }
}

impl Notifier for EventHubsNotifier {
    fn name(&self) -> &'static str {
        "eventhubs"
    }

    fn notify(&self, alerts: &[Alert]) {
        for a in alerts {
            if self.tx.try_send(a.clone()).is_err() {
                let n = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n == 1 || n.is_power_of_two() {
                    tracing::warn!(
                        dropped = n,
                        "alerts hub queue full: alert not published (it is in the store)"
                    );
                }
            }
        }
    }
}

async fn connect(
    config: &EventHubsNotifyConfig,
) -> Result<ProducerClient, azure_messaging_eventhubs::EventHubsError> {
    let mut b = ProducerClient::builder();
    if let Some(e) = &config.endpoint {
        b = b.with_custom_endpoint(e.clone());
    }
    b.open_with_connection_string(config.connection_string.expose(), Some(&config.hub))
        .await
}

/// How long one connect or send may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

async fn publish(
    config: EventHubsNotifyConfig,
    mut rx: mpsc::Receiver<Alert>,
    stats: Arc<EventHubsNotifyStats>,
) {
    let mut producer: Option<ProducerClient> = None;
    let mut pending: Vec<Alert> = Vec::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        if pending.is_empty() {
            match rx.recv().await {
                Some(a) => pending.push(a),
                None => break,
            }
        }
        while pending.len() < MAX_ALERTS_PER_ROUND {
            match rx.try_recv() {
                Ok(a) => pending.push(a),
                Err(_) => break,
            }
        }
        if producer.is_none() {
            match tokio::time::timeout(CALL_TIMEOUT, connect(&config)).await {
                Ok(Ok(p)) => producer = Some(p),
                Ok(Err(e)) => {
                    fail(&stats, &config, "connect", &e.to_string(), &mut backoff).await;
                    continue;
                }
                Err(_) => {
                    fail(&stats, &config, "connect", "timed out", &mut backoff).await;
                    continue;
                }
            }
        }
        let p = producer.as_ref().expect("connected above");
        match tokio::time::timeout(CALL_TIMEOUT, send_all(p, &pending)).await {
            Ok(Ok(())) => {
                stats
                    .published
                    .fetch_add(pending.len() as u64, Ordering::Relaxed);
                pending.clear();
                backoff = Duration::from_millis(100);
            }
            Ok(Err(e)) => {
                // The alerts are sent again (a batch sent before the failure too: consumers
                // dedupe by alert id). A fresh connection, in case this one is broken.
                if let Some(p) = producer.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(5), p.close()).await;
                }
                fail(&stats, &config, "send", &e, &mut backoff).await;
            }
            Err(_) => {
                producer = None;
                fail(&stats, &config, "send", "timed out", &mut backoff).await;
            }
        }
    }
    if let Some(p) = producer {
        let _ = tokio::time::timeout(Duration::from_secs(5), p.close()).await;
    }
}

async fn fail(
    stats: &EventHubsNotifyStats,
    config: &EventHubsNotifyConfig,
    what: &str,
    error: &str,
    backoff: &mut Duration,
) {
    stats.failures.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(hub = %config.hub, error = %error, retry_in = ?*backoff, "alerts hub: {what} failed; retrying");
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(config.retry_max);
}

/// Sends `alerts` grouped by partition key, one batch per key (more where a batch fills).
async fn send_all(p: &ProducerClient, alerts: &[Alert]) -> Result<(), String> {
    let mut by_key: BTreeMap<String, Vec<&Alert>> = BTreeMap::new();
    for a in alerts {
        by_key.entry(partition_key(a)).or_default().push(a);
    }
    for (key, group) in by_key {
        let mut rest: &[&Alert] = &group;
        while !rest.is_empty() {
            let batch = p
                .create_batch(Some(EventDataBatchOptions {
                    partition_key: Some(key.clone()),
                    ..Default::default()
                }))
                .await
                .map_err(|e| e.to_string())?;
            let mut taken = 0;
            for a in rest {
                let body = serde_json::to_vec(a).map_err(|e| e.to_string())?;
                let event = EventData::builder().with_body(body).build();
                match batch.try_add_event_data(event, None) {
                    Ok(true) => taken += 1,
                    Ok(false) => break,
                    Err(e) => return Err(e.to_string()),
                }
            }
            if taken == 0 {
                return Err("an alert does not fit in an empty batch".to_owned());
            }
            p.send_batch(batch, None).await.map_err(|e| e.to_string())?;
            rest = &rest[taken..];
        }
    }
    Ok(())
}
