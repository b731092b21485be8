//! The Event Hubs source (`[[sources]] kind = "eventhubs"`): consumes the glucose and device
//! hubs (`glucose_readings` and `device_readings` by default) in one consumer group, one
//! partition receiver per partition (no load balancing between hosts yet: one host per
//! consumer group), each event's body one item for the pipeline with origin
//! `eventhubs:{hub}/{partition}`.
//!
//! Positions: each event takes a ticket in its partition's in-order queue ([`super::acks`])
//! on arrival; its `Ack` completes it; a partition's durable position (offset, sequence
//! number) advances only over the contiguous prefix of completed events. The position is
//! recorded through [`Checkpoints`] (the OLTP store, wired by `app`) at most every
//! `checkpoint_interval` and once more at the end, after the pipeline drained; a restart
//! resumes after it. Events after the recorded position that were already stored come
//! again after a crash and are recognised as duplicates by the pipeline (at least once in,
//! exactly once in the store).
//!
//! Backpressure: a partition task waits while the pipeline's queue is full; the receiver's
//! prefetch bounds what it holds. A receiver that fails is reopened after the last event it
//! handed over, with capped exponential backoff; warnings name the error, never a payload.

use super::acks::{InOrderAcks, Pending, Settle, Ticket};
use super::{Ack, Checkpoints, RunningSource, SourceError, SourceItem, SourceTaskSide, StatusCell};
use crate::model::secret::ConnectionString;
use azure_messaging_eventhubs::{
    ConsumerClient, OpenReceiverOptions, StartLocation, StartPosition,
};
use futures_util::StreamExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};

/// `[[sources]] kind = "eventhubs"`, as written.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEventHubsSource {
    /// Default: `eventhubs:<consumer group>`.
    pub name: Option<String>,
    /// The environment variable holding the namespace's connection string.
    pub connection_string_env: String,
    /// Where to connect instead of the namespace's address (`amqp://127.0.0.1:PORT` for a
    /// local endpoint); default: the namespace over TLS.
    pub endpoint: Option<String>,
    #[serde(default = "default_glucose_hub")]
    pub glucose_hub: String,
    #[serde(default = "default_device_hub")]
    pub device_hub: String,
    #[serde(default = "default_group")]
    pub consumer_group: String,
    /// `earliest` or `latest`: where a partition without a checkpoint starts.
    #[serde(default = "default_start")]
    pub start: String,
    #[serde(default = "default_checkpoint_ms")]
    pub checkpoint_interval_ms: u64,
    /// Events a receiver asks for ahead.
    #[serde(default = "default_prefetch")]
    pub prefetch: u32,
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_secs: u64,
}

fn default_glucose_hub() -> String {
    "glucose_readings".to_owned()
}
fn default_device_hub() -> String {
    "device_readings".to_owned()
}
fn default_group() -> String {
    "$Default".to_owned()
}
fn default_start() -> String {
    "earliest".to_owned()
}
fn default_checkpoint_ms() -> u64 {
    1000
}
fn default_prefetch() -> u32 {
    300
}
fn default_reconnect_max() -> u64 {
    30
}

/// Where a partition without a checkpoint starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
}

/// A validated Event Hubs source.
#[derive(Debug, Clone)]
pub struct EventHubsSourceConfig {
    pub name: String,
    pub connection_string: ConnectionString,
    pub endpoint: Option<String>,
    /// The hubs consumed (glucose, device).
    pub hubs: Vec<String>,
    pub consumer_group: String,
    pub start: StartAt,
    pub checkpoint_interval: Duration,
    pub prefetch: u32,
    pub reconnect_max: Duration,
}

impl EventHubsSourceConfig {
    /// The defaults: both hubs, `$Default`, from the earliest event.
    pub fn new(connection_string: &str, endpoint: Option<&str>) -> Self {
        EventHubsSourceConfig {
            name: format!("eventhubs:{}", default_group()),
            connection_string: ConnectionString::new(connection_string),
            endpoint: endpoint.map(str::to_owned),
            hubs: vec![default_glucose_hub(), default_device_hub()],
            consumer_group: default_group(),
            start: StartAt::Earliest,
            checkpoint_interval: Duration::from_millis(default_checkpoint_ms()),
            prefetch: default_prefetch(),
            reconnect_max: Duration::from_secs(default_reconnect_max()),
        }
    }

    pub fn from_raw(
        raw: RawEventHubsSource,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let conn = ConnectionString::from_env(
            &raw.connection_string_env,
            raw.endpoint.as_deref(),
            &env,
            &mut problems,
        );
        if raw.glucose_hub.is_empty() || raw.device_hub.is_empty() {
            problems.push("glucose_hub and device_hub must not be empty".to_owned());
        }
        if raw.glucose_hub == raw.device_hub {
            problems.push("glucose_hub and device_hub must differ".to_owned());
        }
        if raw.consumer_group.is_empty() {
            problems.push("consumer_group must not be empty".to_owned());
        }
        let start = match raw.start.as_str() {
            "earliest" => StartAt::Earliest,
            "latest" => StartAt::Latest,
            other => {
                problems.push(format!(
                    "start {other:?}: must be \"earliest\" or \"latest\""
                ));
                StartAt::Earliest
            }
        };
        if raw.checkpoint_interval_ms == 0 || raw.prefetch == 0 || raw.reconnect_max_secs == 0 {
            problems.push(
                "checkpoint_interval_ms, prefetch and reconnect_max_secs must be positive"
                    .to_owned(),
            );
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(EventHubsSourceConfig {
            name: raw
                .name
                .unwrap_or_else(|| format!("eventhubs:{}", raw.consumer_group)),
            connection_string: conn,
            endpoint: raw.endpoint,
            hubs: vec![raw.glucose_hub, raw.device_hub],
            consumer_group: raw.consumer_group,
            start,
            checkpoint_interval: Duration::from_millis(raw.checkpoint_interval_ms),
            prefetch: raw.prefetch,
            reconnect_max: Duration::from_secs(raw.reconnect_max_secs),
        })
    }

    /// The checkpoint key of one partition.
    pub fn checkpoint_key(&self, hub: &str, partition: &str) -> String {
        format!(
            "eventhubs:{}/{}/{hub}/{partition}",
            self.name, self.consumer_group
        )
    }

    pub fn build(
        &self,
        input: mpsc::Sender<SourceItem>,
        checkpoints: Arc<dyn Checkpoints>,
    ) -> RunningSource {
        let (control, side) = super::control(&self.name, "eventhubs");
        let config = self.clone();
        let task = tokio::spawn(run(config, input, checkpoints, side));
        RunningSource::new(control, task)
    }
}

/// A durable position in a partition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    pub offset: String,
    pub sequence_number: i64,
}

async fn open_consumer(
    config: &EventHubsSourceConfig,
    hub: &str,
) -> Result<ConsumerClient, azure_messaging_eventhubs::EventHubsError> {
    let mut b = ConsumerClient::builder().with_consumer_group(config.consumer_group.clone());
    if let Some(e) = &config.endpoint {
        b = b.with_custom_endpoint(e.clone());
    }
    b.open_with_connection_string(config.connection_string.expose(), Some(hub))
        .await
}

/// How long one client call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);

async fn timed<T, E: std::fmt::Display>(
    what: &str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(CALL_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: timed out after {CALL_TIMEOUT:?}")),
    }
}

/// One partition's acknowledgement queue and durable position.
struct Partition {
    acks: Mutex<InOrderAcks<Position>>,
    durable: Mutex<Option<Position>>,
    status: Arc<StatusCell>,
    /// Signalled whenever nothing of this partition waits in the pipeline.
    settled: Notify,
}

impl Partition {
    fn acks(&self) -> MutexGuard<'_, InOrderAcks<Position>> {
        self.acks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn settle(&self, ticket: Ticket, durable: bool) {
        let mut q = self.acks();
        let changed = if durable {
            q.complete(ticket)
        } else {
            q.abandon(ticket)
        };
        if changed {
            let mut last = None;
            let n = q.release(|p| {
                last = Some(p.clone());
                true
            });
            if let Some(p) = last {
                *self.durable.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
                self.status
                    .acknowledged_upstream
                    .fetch_add(n as u64, Ordering::AcqRel);
            }
        }
        if q.waiting() == 0 {
            self.settled.notify_waiters();
        }
    }

    fn durable(&self) -> Option<Position> {
        self.durable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Settle for Partition {
    fn settle(&self, ticket: Ticket, durable: bool) {
        Partition::settle(self, ticket, durable)
    }
    fn status(&self) -> &StatusCell {
        &self.status
    }
}

async fn run(
    config: EventHubsSourceConfig,
    input: mpsc::Sender<SourceItem>,
    checkpoints: Arc<dyn Checkpoints>,
    mut side: SourceTaskSide,
) -> Result<(), SourceError> {
    let status = side.status.clone();
    // Every partition of every hub, found with retries (a namespace still coming up).
    let mut parts: Vec<(String, String)> = Vec::new();
    for hub in &config.hubs {
        let mut backoff = INITIAL_BACKOFF;
        loop {
            if side.is_stopped() {
                return Ok(());
            }
            let found = async {
                let c = timed("connect", open_consumer(&config, hub)).await?;
                let props = timed("hub properties", c.get_eventhub_properties()).await;
                let _ = tokio::time::timeout(Duration::from_secs(5), c.close()).await;
                props
            }
            .await;
            match found {
                Ok(p) => {
                    parts.extend(p.partition_ids.into_iter().map(|id| (hub.clone(), id)));
                    break;
                }
                Err(e) => {
                    status.set_error(Some(e.clone()));
                    tracing::warn!(source = %config.name, hub = %hub, error = %e, retry_in = ?backoff, "event hubs source: cannot read the hub; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = side.stopped() => return Ok(()),
                    }
                    backoff = (backoff * 2).min(config.reconnect_max);
                }
            }
        }
    }
    status.connects.fetch_add(1, Ordering::AcqRel);
    status.set_error(None);
    status.taking_input.store(true, Ordering::Release);

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for (hub, id) in parts {
        let partition = Arc::new(Partition {
            acks: Mutex::new(InOrderAcks::default()),
            durable: Mutex::new(None),
            status: status.clone(),
            settled: Notify::new(),
        });
        let key = config.checkpoint_key(&hub, &id);
        let resume = match checkpoints.load(&key).await {
            Ok(Some(json)) => match serde_json::from_str::<Position>(&json) {
                Ok(p) => Some(p),
                Err(e) => {
                    return Err(SourceError::Setup {
                        name: config.name.clone(),
                        message: format!("checkpoint {key} is unreadable: {e}"),
                    });
                }
            },
            Ok(None) => None,
            Err(e) => {
                return Err(SourceError::Setup {
                    name: config.name.clone(),
                    message: format!("cannot read checkpoint {key}: {e}"),
                });
            }
        };
        *partition.durable.lock().unwrap_or_else(|e| e.into_inner()) = resume.clone();
        tasks.push(tokio::spawn(partition_task(
            config.clone(),
            hub,
            id,
            key,
            resume,
            partition,
            input.clone(),
            checkpoints.clone(),
            stop_rx.clone(),
        )));
    }
    drop(input);
    side.stopped().await;
    stop_tx.send_replace(true);
    // Each partition task stops feeding first; the intake is closed once all have.
    let mut finals = Vec::new();
    for t in tasks {
        match t.await {
            Ok(f) => finals.push(f),
            Err(e) => {
                tracing::warn!(source = %config.name, error = %e, "event hubs partition task failed")
            }
        }
    }
    side.close_intake();
    // The pipeline drains before `finish` joins this task; then each partition's last
    // position is recorded.
    let mut failed = None;
    for f in finals {
        if let Err(e) = f.finish(&*checkpoints).await {
            failed = Some(e);
        }
    }
    match failed {
        None => Ok(()),
        Some(message) => Err(SourceError::Failed {
            name: config.name.clone(),
            message,
        }),
    }
}

/// What a partition task leaves for the final checkpoint.
struct Final {
    key: String,
    partition: Arc<Partition>,
    saved: Option<Position>,
    receiver_close: Option<tokio::task::JoinHandle<()>>,
}

impl Final {
    async fn finish(self, checkpoints: &dyn Checkpoints) -> Result<(), String> {
        // Bounded: items still in the pipeline then are not confirmed (they come again).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let n = self.partition.settled.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.partition.acks().waiting() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, n).await.is_err() {
                break;
            }
        }
        if let Some(t) = self.receiver_close {
            let _ = t.await;
        }
        if let Some(p) = self.partition.durable()
            && Some(&p) != self.saved.as_ref()
        {
            let json = serde_json::to_string(&p).expect("a position serialises");
            checkpoints.save(&self.key, &json).await?;
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
async fn partition_task(
    config: EventHubsSourceConfig,
    hub: String,
    id: String,
    key: String,
    resume: Option<Position>,
    partition: Arc<Partition>,
    input: mpsc::Sender<SourceItem>,
    checkpoints: Arc<dyn Checkpoints>,
    mut stop: watch::Receiver<bool>,
) -> Final {
    let origin: Arc<str> = Arc::from(format!("eventhubs:{hub}/{id}"));
    // After this sequence number: the last event handed over (or the checkpoint).
    let mut after: Option<i64> = resume.as_ref().map(|p| p.sequence_number);
    let mut saved = resume;
    let mut backoff = INITIAL_BACKOFF;
    let mut last_save = tokio::time::Instant::now();
    'connect: loop {
        if *stop.borrow() {
            break;
        }
        let consumer = match timed("connect", open_consumer(&config, &hub)).await {
            Ok(c) => c,
            Err(e) => {
                partition.status.set_error(Some(e.clone()));
                tracing::warn!(source = %config.name, hub = %hub, partition = %id, error = %e, retry_in = ?backoff, "event hubs source: connect failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopped(&mut stop) => break 'connect,
                }
                backoff = (backoff * 2).min(config.reconnect_max);
                continue;
            }
        };
        let start = match after {
            Some(seq) => StartPosition {
                location: StartLocation::SequenceNumber(seq),
                inclusive: false,
            },
            None => StartPosition {
                location: match config.start {
                    StartAt::Earliest => StartLocation::Earliest,
                    StartAt::Latest => StartLocation::Latest,
                },
                inclusive: false,
            },
        };
        let receiver = match timed(
            "open receiver",
            consumer.open_receiver_on_partition(
                id.clone(),
                Some(OpenReceiverOptions {
                    start_position: Some(start),
                    prefetch: Some(config.prefetch),
                    ..Default::default()
                }),
            ),
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                partition.status.set_error(Some(e.clone()));
                tracing::warn!(source = %config.name, hub = %hub, partition = %id, error = %e, retry_in = ?backoff, "event hubs source: cannot open the receiver; retrying");
                let _ = tokio::time::timeout(Duration::from_secs(5), consumer.close()).await;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopped(&mut stop) => break 'connect,
                }
                backoff = (backoff * 2).min(config.reconnect_max);
                continue;
            }
        };
        let mut failed = None;
        {
            let mut events = receiver.stream_events();
            let mut tick = tokio::time::interval(config.checkpoint_interval);
            loop {
                let next = tokio::select! {
                    biased;
                    _ = stopped(&mut stop) => break,
                    _ = tick.tick() => {
                        save_if_moved(&config, &key, &partition, &mut saved, &*checkpoints).await;
                        continue;
                    }
                    next = events.next() => next,
                };
                let event = match next {
                    Some(Ok(e)) => e,
                    Some(Err(e)) => {
                        failed = Some(e.to_string());
                        break;
                    }
                    None => {
                        failed = Some("the receiver ended".to_owned());
                        break;
                    }
                };
                let (Some(seq), Some(offset)) = (event.sequence_number(), event.offset().clone())
                else {
                    failed = Some("an event without sequence number or offset".to_owned());
                    break;
                };
                backoff = INITIAL_BACKOFF;
                let payload = event
                    .event_data()
                    .body()
                    .map(<[u8]>::to_vec)
                    .unwrap_or_default();
                let ticket = partition.acks().push(Position {
                    offset,
                    sequence_number: seq,
                });
                let pending = Pending::new(partition.clone(), ticket);
                let item = SourceItem {
                    payload,
                    origin: origin.clone(),
                    ack: Ack::new(move || pending.durable()),
                };
                // Waits while the queue is full; a stop meanwhile drops the item (its ticket
                // is abandoned: it comes again after the checkpoint).
                let sent = tokio::select! {
                    biased;
                    r = input.send(item) => r.is_ok(),
                    _ = stopped(&mut stop) => false,
                };
                if !sent {
                    break;
                }
                partition.status.received.fetch_add(1, Ordering::AcqRel);
                after = Some(seq);
                if last_save.elapsed() >= config.checkpoint_interval {
                    last_save = tokio::time::Instant::now();
                    save_if_moved(&config, &key, &partition, &mut saved, &*checkpoints).await;
                }
            }
        }
        if let Some(e) = failed {
            partition.status.set_error(Some(e.clone()));
            tracing::warn!(source = %config.name, hub = %hub, partition = %id, error = %e, retry_in = ?backoff, "event hubs source: receiver failed; reopening");
            let _ = tokio::time::timeout(Duration::from_secs(5), receiver.close()).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), consumer.close()).await;
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stopped(&mut stop) => break 'connect,
            }
            backoff = (backoff * 2).min(config.reconnect_max);
            continue;
        }
        // Stopped: the receiver takes nothing more; close it in the background while the
        // pipeline drains.
        let close = tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(5), receiver.close()).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), consumer.close()).await;
        });
        return Final {
            key,
            partition,
            saved,
            receiver_close: Some(close),
        };
    }
    Final {
        key,
        partition,
        saved,
        receiver_close: None,
    }
}

/// Resolves once the source is asked to stop.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn save_if_moved(
    config: &EventHubsSourceConfig,
    key: &str,
    partition: &Partition,
    saved: &mut Option<Position>,
    checkpoints: &dyn Checkpoints,
) {
    let Some(p) = partition.durable() else {
        return;
    };
    if Some(&p) == saved.as_ref() {
        return;
    }
    let json = serde_json::to_string(&p).expect("a position serialises");
    match checkpoints.save(key, &json).await {
        Ok(()) => *saved = Some(p),
        Err(e) => {
            tracing::warn!(source = %config.name, error = %e, "event hubs source: checkpoint not recorded; retried later")
        }
    }
}
