//! The Event Hubs source (`[[sources]] kind = "eventhubs"`): consumes the glucose and device
//! hubs (`glucose_readings` and `device_readings` by default) in one consumer group, each
//! event's body one item for the pipeline with origin `eventhubs:{hub}/{partition}`.
//!
//! Two ways to share the partitions, chosen by the config:
//! - **Load-balanced** (`[sources.checkpoint_store]` set): one SDK `EventProcessor` per hub
//!   splits the partitions between every host of the consumer group, with ownership and
//!   checkpoints in Blob Storage ([`blob_store`]). A host that stops gives its partitions up
//!   at once; one that dies loses them after `ownership_expiration_secs`, and the others take
//!   them over from its last checkpoint.
//! - **Single host** (no checkpoint store): one receiver per partition on this host,
//!   positions in the OLTP store (`SinkCursors`, through [`Checkpoints`]).
//!
//! Positions: each event takes a ticket in its partition's in-order queue ([`super::acks`])
//! on arrival; its `Ack` completes it; a partition's durable position (offset, sequence
//! number) advances only over the contiguous prefix of completed events. It is recorded at
//! most every `checkpoint_interval` and once more at the end, after the pipeline drained; a
//! restart (or the partition's next owner) resumes after it. Events after the recorded
//! position that were already stored come again and are recognised as duplicates by the
//! pipeline (at least once in, exactly once in the store).
//!
//! A partition this host starts to read (at start, or taken over from another host) gets a
//! fresh takeover number on its items ([`SourceItem::takeover`]): the pipeline then reloads
//! each subject's window from the store before it evaluates that subject's first reading
//! from it, so a rolling average sees the readings another host stored.
//!
//! Backpressure: a partition task waits while the pipeline's queue is full; the receiver's
//! prefetch bounds what it holds. A receiver that fails is reopened after the last durable
//! position, with capped exponential backoff; warnings name the error, never a payload.

pub mod blob_store;

use super::acks::{InOrderAcks, Pending, Settle, Ticket};
use super::{Ack, Checkpoints, RunningSource, SourceError, SourceItem, SourceTaskSide, StatusCell};
use crate::archive::AzureBackend;
use crate::model::secret::ConnectionString;
use azure_messaging_eventhubs::models::{Checkpoint, ReceivedEventData, StartPositions};
use azure_messaging_eventhubs::processor::PartitionClient;
use azure_messaging_eventhubs::{
    CheckpointStore, ConsumerClient, EventHubsError, EventProcessor, OpenReceiverOptions,
    ProcessorStrategy, StartLocation, StartPosition,
};
use blob_store::BlobCheckpointStore;
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
    /// Share the partitions with the other hosts of the consumer group, ownership and
    /// checkpoints in this Blob container (the official blob checkpoint store's layout).
    pub checkpoint_store: Option<AzureBackend>,
    /// How often each host's processor renews its claims and balances (load-balanced only).
    #[serde(default = "default_balance_ms")]
    pub balance_interval_ms: u64,
    /// A claim not renewed for this long is free for another host to take.
    #[serde(default = "default_expiration_secs")]
    pub ownership_expiration_secs: u64,
}

fn default_balance_ms() -> u64 {
    10_000
}
fn default_expiration_secs() -> u64 {
    30
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
    /// `Some`: load-balanced through the SDK's processor, ownership and checkpoints here.
    pub balanced: Option<Balanced>,
}

/// The load-balanced mode's settings.
#[derive(Debug, Clone)]
pub struct Balanced {
    pub store: AzureBackend,
    /// The account key or SAS token, read from the variable `store` names when the config
    /// was read.
    pub secret: ConnectionString,
    pub interval: Duration,
    pub expiration: Duration,
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
            balanced: None,
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
        if raw.checkpoint_store.is_some() {
            if raw.balance_interval_ms == 0 {
                problems.push("balance_interval_ms must be positive".to_owned());
            }
            if raw.ownership_expiration_secs * 1000 <= raw.balance_interval_ms {
                problems.push(
                    "ownership_expiration_secs must be longer than balance_interval_ms (twice as long or more is advised)"
                        .to_owned(),
                );
            }
        }
        let mut secret = None;
        if let Some(store) = &raw.checkpoint_store {
            if store.account.is_empty() || store.container.is_empty() {
                problems.push("checkpoint_store: account and container must be given".to_owned());
            }
            match (&store.key_env, &store.sas_env) {
                (Some(var), None) | (None, Some(var)) => match env(var) {
                    Some(v) if !v.trim().is_empty() => secret = Some(ConnectionString::new(v)),
                    _ => problems.push(format!(
                        "checkpoint_store: environment variable {var} is not set"
                    )),
                },
                _ => problems
                    .push("checkpoint_store: give exactly one of key_env and sas_env".to_owned()),
            }
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
            balanced: raw.checkpoint_store.map(|store| Balanced {
                store,
                secret: secret.expect("checked above"),
                interval: Duration::from_millis(raw.balance_interval_ms),
                expiration: Duration::from_secs(raw.ownership_expiration_secs),
            }),
        })
    }

    /// The checkpoint key of one partition.
    pub fn checkpoint_key(&self, hub: &str, partition: &str) -> String {
        format!(
            "eventhubs:{}/{}/{hub}/{partition}",
            self.name, self.consumer_group
        )
    }

    /// Starts the source. `checkpoints` keeps the positions of the single-host mode; the
    /// load-balanced mode keeps them in its Blob container.
    pub fn build(
        &self,
        input: mpsc::Sender<SourceItem>,
        checkpoints: Arc<dyn Checkpoints>,
    ) -> Result<RunningSource, SourceError> {
        let (control, side) = super::control(&self.name, "eventhubs");
        let config = self.clone();
        let task = match &self.balanced {
            None => tokio::spawn(run_single(config, input, checkpoints, side)),
            Some(b) => {
                let blobs = crate::archive::azure_store(
                    &b.store,
                    CALL_TIMEOUT,
                    "Event Hubs checkpoint store",
                    |_| Some(b.secret.expose().to_owned()),
                )
                .map_err(|message| SourceError::Setup {
                    name: self.name.clone(),
                    message,
                })?;
                let namespace = self
                    .connection_string
                    .expose()
                    .parse::<azure_messaging_eventhubs::ConnectionString>()
                    .map_err(|_| SourceError::Setup {
                        name: self.name.clone(),
                        message: "the connection string names no namespace".to_owned(),
                    })?
                    .fully_qualified_namespace;
                let store = BlobCheckpointStore::new(blobs);
                tokio::spawn(run_balanced(config, namespace, store, input, side))
            }
        };
        Ok(RunningSource::new(control, task))
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
) -> Result<ConsumerClient, EventHubsError> {
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
/// How long the final checkpoint waits for a partition's items still in the pipeline.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);

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

/// Takeover numbers: unique per partition reader this host starts (never 0: 0 means "the
/// source's subjects never move between hosts").
fn next_takeover() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One partition reader's acknowledgement queue and durable position.
struct Partition {
    acks: Mutex<InOrderAcks<Position>>,
    durable: Mutex<Option<Position>>,
    status: Arc<StatusCell>,
    /// Signalled whenever nothing of this partition waits in the pipeline.
    settled: Notify,
}

impl Partition {
    fn new(status: Arc<StatusCell>, durable: Option<Position>) -> Arc<Self> {
        Arc::new(Partition {
            acks: Mutex::new(InOrderAcks::default()),
            durable: Mutex::new(durable),
            status,
            settled: Notify::new(),
        })
    }

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

    /// Waits (at most `limit`) until nothing of this partition waits in the pipeline.
    async fn settled_within(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let n = self.settled.notified();
            tokio::pin!(n);
            n.as_mut().enable();
            if self.acks().waiting() == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, n).await.is_err() {
                return;
            }
        }
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

/// Where a partition's durable position is recorded.
#[derive(Clone)]
enum Saver {
    /// The OLTP store (single-host mode), under the partition's key.
    Store {
        key: String,
        checkpoints: Arc<dyn Checkpoints>,
    },
    /// The Blob checkpoint store (load-balanced mode).
    Blob {
        store: BlobCheckpointStore,
        checkpoint: Checkpoint,
    },
}

impl Saver {
    async fn save(&self, p: &Position) -> Result<(), String> {
        match self {
            Saver::Store { key, checkpoints } => {
                let json = serde_json::to_string(p).expect("a position serialises");
                checkpoints.save(key, &json).await
            }
            Saver::Blob { store, checkpoint } => store
                .update_checkpoint(Checkpoint {
                    offset: Some(p.offset.clone()),
                    sequence_number: Some(p.sequence_number),
                    ..checkpoint.clone()
                })
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

/// What a partition reader leaves for the final checkpoint.
struct Final {
    partition: Arc<Partition>,
    saver: Saver,
    saved: Option<Position>,
    /// Closing the receiver, started when the reader stopped.
    receiver_close: Option<tokio::task::JoinHandle<()>>,
}

impl Final {
    async fn finish(self) -> Result<(), String> {
        // Bounded: items still in the pipeline then are not confirmed (they come again).
        self.partition.settled_within(SETTLE_LIMIT).await;
        if let Some(t) = self.receiver_close {
            let _ = t.await;
        }
        if let Some(p) = self.partition.durable()
            && Some(&p) != self.saved.as_ref()
        {
            self.saver.save(&p).await?;
        }
        Ok(())
    }
}

/// Why a reader stopped feeding.
enum Ended {
    /// The source (or the reader's generation) was asked to stop.
    Stopped,
    /// The receiver failed or ended; the reason, without payloads.
    Failed(String),
}

/// Hands one partition's events to the pipeline and records its durable position.
struct Reader {
    source: Arc<str>,
    checkpoint_interval: Duration,
    hub: String,
    id: String,
    origin: Arc<str>,
    takeover: u64,
    partition: Arc<Partition>,
    input: mpsc::Sender<SourceItem>,
    saver: Saver,
    saved: Option<Position>,
    last_save: tokio::time::Instant,
}

impl Reader {
    fn new(
        config: &EventHubsSourceConfig,
        hub: &str,
        id: &str,
        partition: Arc<Partition>,
        input: mpsc::Sender<SourceItem>,
        saver: Saver,
        saved: Option<Position>,
    ) -> Self {
        Reader {
            source: Arc::from(config.name.as_str()),
            checkpoint_interval: config.checkpoint_interval,
            hub: hub.to_owned(),
            id: id.to_owned(),
            origin: Arc::from(format!("eventhubs:{hub}/{id}")),
            takeover: next_takeover(),
            partition,
            input,
            saver,
            saved,
            last_save: tokio::time::Instant::now(),
        }
    }

    /// Feeds `events` until the stop, or until they fail or end. `after` is the last
    /// sequence number handed over.
    async fn feed(
        &mut self,
        events: impl futures_util::Stream<Item = Result<ReceivedEventData, EventHubsError>>,
        stop: &mut watch::Receiver<bool>,
        after: &mut Option<i64>,
        backoff: &mut Duration,
    ) -> Ended {
        let mut events = std::pin::pin!(events);
        let mut tick = tokio::time::interval(self.checkpoint_interval);
        loop {
            let next = tokio::select! {
                biased;
                _ = stopped(stop) => return Ended::Stopped,
                _ = tick.tick() => {
                    self.save_if_moved().await;
                    continue;
                }
                next = events.next() => next,
            };
            let event = match next {
                Some(Ok(e)) => e,
                Some(Err(e)) => return Ended::Failed(e.to_string()),
                None => return Ended::Failed("the receiver ended".to_owned()),
            };
            let (Some(seq), Some(offset)) = (event.sequence_number(), event.offset().clone())
            else {
                return Ended::Failed("an event without sequence number or offset".to_owned());
            };
            *backoff = INITIAL_BACKOFF;
            let payload = event
                .event_data()
                .body()
                .map(<[u8]>::to_vec)
                .unwrap_or_default();
            let ticket = self.partition.acks().push(Position {
                offset,
                sequence_number: seq,
            });
            let pending = Pending::new(self.partition.clone(), ticket);
            let item = SourceItem {
                payload,
                origin: self.origin.clone(),
                takeover: self.takeover,
                ack: Ack::new(move || pending.durable()),
            };
            // Waits while the queue is full; a stop meanwhile drops the item (its ticket is
            // abandoned: it comes again after the checkpoint).
            let sent = tokio::select! {
                biased;
                r = self.input.send(item) => r.is_ok(),
                _ = stopped(stop) => false,
            };
            if !sent {
                return Ended::Stopped;
            }
            self.partition
                .status
                .received
                .fetch_add(1, Ordering::AcqRel);
            *after = Some(seq);
            if self.last_save.elapsed() >= self.checkpoint_interval {
                self.save_if_moved().await;
            }
        }
    }

    async fn save_if_moved(&mut self) {
        self.last_save = tokio::time::Instant::now();
        let Some(p) = self.partition.durable() else {
            return;
        };
        if Some(&p) == self.saved.as_ref() {
            return;
        }
        match self.saver.save(&p).await {
            Ok(()) => self.saved = Some(p),
            Err(e) => {
                tracing::warn!(source = %self.source, hub = %self.hub, partition = %self.id, error = %e, "event hubs source: checkpoint not recorded; retried later")
            }
        }
    }

    fn warn_failed(&self, what: &str, e: &str, retry_in: Duration) {
        self.partition.status.set_error(Some(e.to_owned()));
        tracing::warn!(source = %self.source, hub = %self.hub, partition = %self.id, error = %e, ?retry_in, "event hubs source: {what}");
    }

    fn into_final(self, receiver_close: Option<tokio::task::JoinHandle<()>>) -> Final {
        Final {
            partition: self.partition,
            saver: self.saver,
            saved: self.saved,
            receiver_close,
        }
    }
}

/// Resolves once the source is asked to stop.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Sleeps for the backoff (doubling it up to `max`); `false` if stopped meanwhile.
async fn back_off(backoff: &mut Duration, max: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let wait = *backoff;
    *backoff = (*backoff * 2).min(max);
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = stopped(stop) => false,
    }
}

/// Joins the readers' tasks, closes the intake, lets the pipeline drain, then records each
/// reader's last position.
async fn finish_all(
    name: &str,
    side: &SourceTaskSide,
    tasks: Vec<tokio::task::JoinHandle<Vec<Final>>>,
) -> Result<(), SourceError> {
    let mut finals = Vec::new();
    for t in tasks {
        match t.await {
            Ok(f) => finals.extend(f),
            Err(e) => tracing::warn!(source = %name, error = %e, "event hubs reader task failed"),
        }
    }
    side.close_intake();
    // The pipeline drains before `finish` joins this task; then each partition's last
    // position is recorded.
    let mut failed = None;
    for f in finals {
        if let Err(e) = f.finish().await {
            failed = Some(e);
        }
    }
    match failed {
        None => Ok(()),
        Some(message) => Err(SourceError::Failed {
            name: name.to_owned(),
            message,
        }),
    }
}

// ---------------------------------------------------------------------------------------------
// Single host: a receiver per partition, positions in the OLTP store.

async fn run_single(
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
                    if !back_off(&mut backoff, config.reconnect_max, &mut side.stop.clone()).await {
                        return Ok(());
                    }
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
        let reader = Reader::new(
            &config,
            &hub,
            &id,
            Partition::new(status.clone(), resume.clone()),
            input.clone(),
            Saver::Store {
                key,
                checkpoints: checkpoints.clone(),
            },
            resume,
        );
        // Subjects never move between hosts in this mode.
        let reader = Reader {
            takeover: 0,
            ..reader
        };
        tasks.push(tokio::spawn(single_reader(
            config.clone(),
            reader,
            stop_rx.clone(),
        )));
    }
    drop(input);
    side.stopped().await;
    stop_tx.send_replace(true);
    finish_all(&config.name, &side, tasks).await
}

async fn single_reader(
    config: EventHubsSourceConfig,
    mut reader: Reader,
    mut stop: watch::Receiver<bool>,
) -> Vec<Final> {
    // After this sequence number: the last event handed over (or the checkpoint).
    let mut after: Option<i64> = reader.saved.as_ref().map(|p| p.sequence_number);
    let mut backoff = INITIAL_BACKOFF;
    loop {
        if *stop.borrow() {
            return vec![reader.into_final(None)];
        }
        let consumer = match timed("connect", open_consumer(&config, &reader.hub)).await {
            Ok(c) => c,
            Err(e) => {
                reader.warn_failed("connect failed; retrying", &e, backoff);
                if !back_off(&mut backoff, config.reconnect_max, &mut stop).await {
                    return vec![reader.into_final(None)];
                }
                continue;
            }
        };
        let start = StartPosition {
            location: match after {
                Some(seq) => StartLocation::SequenceNumber(seq),
                None => start_location(config.start),
            },
            inclusive: false,
        };
        let receiver = match timed(
            "open receiver",
            consumer.open_receiver_on_partition(
                reader.id.clone(),
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
                reader.warn_failed("cannot open the receiver; retrying", &e, backoff);
                let _ = tokio::time::timeout(Duration::from_secs(5), consumer.close()).await;
                if !back_off(&mut backoff, config.reconnect_max, &mut stop).await {
                    return vec![reader.into_final(None)];
                }
                continue;
            }
        };
        let ended = reader
            .feed(
                receiver.stream_events(),
                &mut stop,
                &mut after,
                &mut backoff,
            )
            .await;
        match ended {
            Ended::Failed(e) => {
                reader.warn_failed("receiver failed; reopening", &e, backoff);
                let _ = tokio::time::timeout(Duration::from_secs(5), receiver.close()).await;
                let _ = tokio::time::timeout(Duration::from_secs(5), consumer.close()).await;
                if !back_off(&mut backoff, config.reconnect_max, &mut stop).await {
                    return vec![reader.into_final(None)];
                }
            }
            Ended::Stopped => {
                // The receiver takes nothing more; close it in the background while the
                // pipeline drains.
                let close = tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(5), receiver.close()).await;
                    let _ = tokio::time::timeout(Duration::from_secs(5), consumer.close()).await;
                });
                return vec![reader.into_final(Some(close))];
            }
        }
    }
}

fn start_location(start: StartAt) -> StartLocation {
    match start {
        StartAt::Earliest => StartLocation::Earliest,
        StartAt::Latest => StartLocation::Latest,
    }
}

// ---------------------------------------------------------------------------------------------
// Load-balanced: the SDK's processor per hub, ownership and checkpoints in Blob Storage.

async fn run_balanced(
    config: EventHubsSourceConfig,
    namespace: String,
    store: BlobCheckpointStore,
    input: mpsc::Sender<SourceItem>,
    mut side: SourceTaskSide,
) -> Result<(), SourceError> {
    side.status.taking_input.store(true, Ordering::Release);
    // The SDK's partition streams are boxed without `Send`: the readers run on threads of
    // their own, each a current-thread runtime (the connection's tasks stay on the main one).
    let readers = tokio_util::task::LocalPoolHandle::new(2);
    let (stop_tx, stop_rx) = watch::channel(false);
    let tasks: Vec<_> = config
        .hubs
        .iter()
        .map(|hub| {
            tokio::spawn(balance_hub(
                config.clone(),
                hub.clone(),
                namespace.clone(),
                store.clone(),
                input.clone(),
                side.status.clone(),
                readers.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    drop(input);
    side.stopped().await;
    stop_tx.send_replace(true);
    let result = finish_all(&config.name, &side, tasks).await;
    // Give the partitions up so the other hosts take them over at once.
    for hub in &config.hubs {
        match store
            .relinquish(&namespace, hub, &config.consumer_group)
            .await
        {
            Ok(n) => {
                tracing::info!(source = %config.name, hub = %hub, partitions = n, "event hubs source: ownership given up")
            }
            Err(e) => {
                tracing::warn!(source = %config.name, hub = %hub, error = %e, "event hubs source: cannot give ownership up; it expires instead")
            }
        }
    }
    result
}

/// One hub's processor, rebuilt after a failure (the SDK's `run` ends at its first failed
/// round: a checkpoint store or endpoint that does not answer). Returns the readers' finals
/// once stopped.
#[allow(clippy::too_many_arguments)]
async fn balance_hub(
    config: EventHubsSourceConfig,
    hub: String,
    namespace: String,
    store: BlobCheckpointStore,
    input: mpsc::Sender<SourceItem>,
    status: Arc<StatusCell>,
    pool: tokio_util::task::LocalPoolHandle,
    mut stop: watch::Receiver<bool>,
) -> Vec<Final> {
    let balanced = config
        .balanced
        .clone()
        .expect("balance_hub runs for a balanced source");
    let mut backoff = INITIAL_BACKOFF;
    let mut finals = Vec::new();
    loop {
        if *stop.borrow() {
            return finals;
        }
        let built = async {
            let consumer = timed("connect", open_consumer(&config, &hub)).await?;
            timed(
                "start the processor",
                EventProcessor::builder()
                    .with_load_balancing_strategy(ProcessorStrategy::Balanced)
                    .with_update_interval(to_time(balanced.interval))
                    .with_partition_expiration_duration(to_time(balanced.expiration))
                    .with_prefetch(config.prefetch)
                    .with_start_positions(StartPositions {
                        per_partition: Default::default(),
                        default: StartPosition {
                            location: start_location(config.start),
                            inclusive: false,
                        },
                    })
                    .build(
                        consumer,
                        Arc::new(store.clone()) as Arc<dyn CheckpointStore + Send + Sync>,
                    ),
            )
            .await
        }
        .await;
        let processor = match built {
            Ok(p) => p,
            Err(e) => {
                status.set_error(Some(e.clone()));
                tracing::warn!(source = %config.name, hub = %hub, error = %e, retry_in = ?backoff, "event hubs source: cannot start the processor; retrying");
                if !back_off(&mut backoff, config.reconnect_max, &mut stop).await {
                    return finals;
                }
                continue;
            }
        };
        status.connects.fetch_add(1, Ordering::AcqRel);
        status.set_error(None);
        let mut run = tokio::spawn({
            let p = processor.clone();
            async move { p.run().await }
        });
        // This generation's readers stop with the source or when the processor fails.
        let (gen_tx, gen_rx) = watch::channel(false);
        let mut readers = Vec::new();
        let failure = loop {
            tokio::select! {
                biased;
                _ = stopped(&mut stop) => break None,
                r = &mut run => break Some(match r {
                    Ok(Ok(())) => "the processor ended".to_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                }),
                next = processor.next_partition_client() => match next {
                    Ok(client) => {
                        let (config, hub, namespace, store, input, status, gen_rx) = (
                            config.clone(),
                            hub.clone(),
                            namespace.clone(),
                            store.clone(),
                            input.clone(),
                            status.clone(),
                            gen_rx.clone(),
                        );
                        readers.push(pool.spawn_pinned(move || {
                            balanced_reader(
                                config, hub, namespace, store, client, input, status, gen_rx,
                            )
                        }));
                    }
                    Err(e) => break Some(e.to_string()),
                },
            }
        };
        let _ = processor.shutdown().await;
        run.abort();
        gen_tx.send_replace(true);
        let mut ended = Vec::new();
        for r in readers {
            if let Ok(Some(f)) = r.await {
                ended.push(f);
            }
        }
        drop(processor);
        match failure {
            None => {
                finals.extend(ended);
                return finals;
            }
            Some(e) => {
                status.set_error(Some(e.clone()));
                tracing::warn!(source = %config.name, hub = %hub, error = %e, retry_in = ?backoff, "event hubs source: the processor failed; restarting it");
                // The pipeline keeps running: record these readers' positions once their
                // items are durable, and give their partitions up for the next processor.
                let store = store.clone();
                let (ns, h, group) = (
                    namespace.clone(),
                    hub.clone(),
                    config.consumer_group.clone(),
                );
                tokio::spawn(async move {
                    for f in ended {
                        let _ = f.finish().await;
                    }
                    let _ = store.relinquish(&ns, &h, &group).await;
                });
                if !back_off(&mut backoff, config.reconnect_max, &mut stop).await {
                    return finals;
                }
            }
        }
    }
}

fn to_time(d: Duration) -> azure_core::time::Duration {
    azure_core::time::Duration::try_from(d).unwrap_or(azure_core::time::Duration::MAX)
}

/// Reads one partition the processor handed this host until the source or the generation
/// stops (`Some(final)`, recorded by the caller after the drain) or the partition's receiver
/// ends — revoked because another host owns it now, or failed — when it records its own
/// position once its items are durable and closes the client, so the processor opens the
/// partition again at its next round if it is still ours (`None`).
#[allow(clippy::too_many_arguments)]
async fn balanced_reader(
    config: EventHubsSourceConfig,
    hub: String,
    namespace: String,
    store: BlobCheckpointStore,
    client: Arc<PartitionClient>,
    input: mpsc::Sender<SourceItem>,
    status: Arc<StatusCell>,
    mut stop: watch::Receiver<bool>,
) -> Option<Final> {
    let id = client.get_partition_id().to_owned();
    let saver = Saver::Blob {
        store: store.clone(),
        checkpoint: Checkpoint {
            fully_qualified_namespace: namespace.clone(),
            event_hub_name: hub.clone(),
            consumer_group: config.consumer_group.clone(),
            partition_id: id.clone(),
            offset: None,
            sequence_number: None,
        },
    };
    let mut reader = Reader::new(
        &config,
        &hub,
        &id,
        Partition::new(status, None),
        input,
        saver,
        None,
    );
    tracing::info!(source = %config.name, hub = %hub, partition = %id, "event hubs source: reading a partition");
    let mut after = None;
    let mut backoff = INITIAL_BACKOFF;
    let ended = reader
        .feed(client.stream_events(), &mut stop, &mut after, &mut backoff)
        .await;
    // Closing takes the client out of the processor's map, so a partition still ours is
    // opened again at the next round.
    match Arc::try_unwrap(client) {
        Ok(c) => {
            let _ = tokio::time::timeout(Duration::from_secs(5), c.close()).await;
        }
        Err(_) => {
            tracing::warn!("event hubs source: a partition client is still shared; not closed")
        }
    }
    match ended {
        Ended::Stopped => Some(reader.into_final(None)),
        Ended::Failed(e) => {
            tracing::info!(source = %config.name, hub = %hub, partition = %id, reason = %e, "event hubs source: partition reader ended");
            let f = reader.into_final(None);
            if let Err(e) = f.finish().await {
                tracing::warn!(source = %config.name, hub = %hub, partition = %id, error = %e, "event hubs source: checkpoint not recorded");
            }
            None
        }
    }
}
