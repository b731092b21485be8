//! Sources: where raw readings come from. Each source feeds [`SourceItem`]s into the
//! pipeline's bounded input queue and learns through the item's [`Ack`] when every store
//! that accepts it has made it durable; only then may it commit its position.
//!
//! The configured sources (`[[sources]]`: [`SourceConfig`]) share one model: a validated
//! config whose `build` spawns the running part and returns a [`RunningSource`] — its name,
//! a way to stop it ([`SourceControl::stop`]), its task to join (the final acknowledgement or
//! checkpoint happens before it ends) and its [`SourceStatus`]. The embedded source and HTTP
//! ingest are always present and are not configured here.
//!
//! Sources never import the engine, the sinks or the store.

pub mod acks;
pub mod eventhubs;
pub mod file;
pub mod http;
pub mod mqtt;

use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// Called once when an item is durable. Dropping an unacknowledged `Ack` means "not delivered".
pub struct Ack(Option<Box<dyn FnOnce() + Send>>);

impl Ack {
    pub fn none() -> Self {
        Ack(None)
    }
    pub fn new(f: impl FnOnce() + Send + 'static) -> Self {
        Ack(Some(Box::new(f)))
    }
    pub fn ack(mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Ack(pending)"
        } else {
            "Ack(none)"
        })
    }
}

/// One raw payload as it arrived, not yet validated.
#[derive(Debug)]
pub struct SourceItem {
    pub payload: Vec<u8>,
    /// Source name, recorded with dead letters.
    pub origin: Arc<str>,
    /// 0 when the source's subjects never move between hosts. Otherwise a number that
    /// changes whenever this host starts to read the stream the item came from (an Event
    /// Hubs partition it acquired, perhaps from another host): the pipeline reloads a
    /// subject's window from the store when it sees the subject under a new number.
    pub takeover: u64,
    pub ack: Ack,
}

/// The embedded in-process source: a cloneable handle onto the pipeline's bounded queue.
/// `send` waits when the queue is full, so backpressure reaches the producer.
#[derive(Debug, Clone)]
pub struct EmbeddedSource {
    tx: mpsc::Sender<SourceItem>,
    origin: Arc<str>,
}

#[derive(Debug, thiserror::Error)]
#[error("the pipeline has stopped")]
pub struct Closed;

impl EmbeddedSource {
    pub fn new(tx: mpsc::Sender<SourceItem>, origin: &str) -> Self {
        EmbeddedSource {
            tx,
            origin: Arc::from(origin),
        }
    }

    pub async fn send(&self, payload: Vec<u8>) -> Result<(), Closed> {
        self.send_with_ack(payload, Ack::none()).await
    }

    pub async fn send_with_ack(&self, payload: Vec<u8>, ack: Ack) -> Result<(), Closed> {
        self.tx
            .send(SourceItem {
                payload,
                origin: self.origin.clone(),
                takeover: 0,
                ack,
            })
            .await
            .map_err(|_| Closed)
    }

    /// For producer threads outside the runtime (the simulator).
    pub fn blocking_send(&self, payload: Vec<u8>) -> Result<(), Closed> {
        self.tx
            .blocking_send(SourceItem {
                payload,
                origin: self.origin.clone(),
                takeover: 0,
                ack: Ack::none(),
            })
            .map_err(|_| Closed)
    }
}

/// A configured source (`[[sources]]`), validated.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// JSON lines read once from a file.
    File(file::FileSourceConfig),
    /// An MQTT 5 broker, QoS 1, persistent session, acknowledged once durable.
    Mqtt(mqtt::MqttSourceConfig),
    /// Azure Event Hubs: the glucose and device hubs, a checkpoint per partition.
    EventHubs(eventhubs::EventHubsSourceConfig),
}

pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Where a source records its positions upstream (an Event Hubs partition's last durable
/// offset and sequence number), keyed by a name the source chooses; `app` backs it with the
/// OLTP store. Values are the source's own JSON.
pub trait Checkpoints: Send + Sync {
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, String>>;
    fn save<'a>(&'a self, key: &'a str, value: &'a str) -> BoxFuture<'a, Result<(), String>>;
}

/// Checkpoints kept in memory only (tests, and sources built without a store).
#[derive(Debug, Default)]
pub struct MemoryCheckpoints(std::sync::Mutex<std::collections::BTreeMap<String, String>>);

impl Checkpoints for MemoryCheckpoints {
    fn load<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, String>> {
        let v = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned();
        Box::pin(async move { Ok(v) })
    }
    fn save<'a>(&'a self, key: &'a str, value: &'a str) -> BoxFuture<'a, Result<(), String>> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_owned(), value.to_owned());
        Box::pin(async { Ok(()) })
    }
}

impl SourceConfig {
    /// The source's name: unique among the configured sources, shown in `/health`.
    pub fn name(&self) -> &str {
        match self {
            SourceConfig::File(c) => &c.name,
            SourceConfig::Mqtt(c) => &c.name,
            SourceConfig::EventHubs(c) => &c.name,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::File(_) => "file",
            SourceConfig::Mqtt(_) => "mqtt",
            SourceConfig::EventHubs(_) => "eventhubs",
        }
    }

    /// Starts the source on the pipeline's input queue, recording positions upstream in
    /// `checkpoints`. Must be called within the runtime.
    pub fn build(
        &self,
        input: mpsc::Sender<SourceItem>,
        checkpoints: Arc<dyn Checkpoints>,
    ) -> Result<RunningSource, SourceError> {
        match self {
            SourceConfig::File(c) => Ok(c.build(input)),
            SourceConfig::Mqtt(c) => c.build(input),
            SourceConfig::EventHubs(c) => c.build(input, checkpoints),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source {name}: cannot read {path}: {source}")]
    Read {
        name: String,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("source {name}: {message}")]
    Setup { name: String, message: String },
    #[error("source {name} did not finish within {limit:?} (stopped it)")]
    TimedOut { name: String, limit: Duration },
    #[error("source {name} failed: {message}")]
    Failed { name: String, message: String },
}

/// What a source reports about itself (`GET /health`). Counters are since the host started.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceStatus {
    pub name: String,
    pub kind: &'static str,
    /// Taking input now: a file being read; an MQTT source connected and subscribed.
    pub taking_input: bool,
    /// The source's task has ended (a file read to the end, a stopped source).
    pub finished: bool,
    /// Items handed to the pipeline.
    pub received: u64,
    /// Items the pipeline acknowledged (durable in the store).
    pub acknowledged: u64,
    /// Acknowledgements given back upstream (MQTT: PUBACKs released to the broker).
    pub acknowledged_upstream: u64,
    /// Connections made (network sources).
    pub connects: u64,
    /// The latest connection or setup problem, without payloads.
    pub last_error: Option<String>,
}

/// The live counters behind a [`SourceStatus`], shared between a source's task, the `Ack`s
/// of its items and whoever reads the status.
#[derive(Debug, Default)]
pub struct StatusCell {
    pub received: AtomicU64,
    pub acknowledged: AtomicU64,
    pub acknowledged_upstream: AtomicU64,
    pub connects: AtomicU64,
    pub taking_input: AtomicBool,
    pub finished: AtomicBool,
    last_error: std::sync::Mutex<Option<String>>,
}

impl StatusCell {
    pub fn set_error(&self, e: Option<String>) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = e;
    }
}

/// Steers a running source from outside: its name, `stop`, its status. Cloneable; the
/// pipeline handle keeps one per configured source so that `PipelineHandle::shutdown` stops
/// the sources before it closes its input.
#[derive(Debug, Clone)]
pub struct SourceControl {
    name: Arc<str>,
    kind: &'static str,
    stop: Arc<watch::Sender<bool>>,
    /// `true` while the source may still put items on the queue.
    intake: watch::Receiver<bool>,
    status: Arc<StatusCell>,
}

impl SourceControl {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Asks the source to take no more input. Items already queued are processed and
    /// acknowledged as usual; the source ends once its last acknowledgement is given back.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Waits until the source puts nothing more on the queue (after [`Self::stop`], or
    /// because it ended); `false` if that took longer than `limit`.
    pub async fn intake_stopped(&self, limit: Duration) -> bool {
        let mut intake = self.intake.clone();
        tokio::time::timeout(limit, async {
            // An error means the source dropped its side: it sends nothing any more.
            let _ = intake.wait_for(|open| !open).await;
        })
        .await
        .is_ok()
    }

    pub fn status(&self) -> SourceStatus {
        let s = &self.status;
        SourceStatus {
            name: self.name.to_string(),
            kind: self.kind,
            taking_input: s.taking_input.load(Ordering::Acquire),
            finished: s.finished.load(Ordering::Acquire),
            received: s.received.load(Ordering::Acquire),
            acknowledged: s.acknowledged.load(Ordering::Acquire),
            acknowledged_upstream: s.acknowledged_upstream.load(Ordering::Acquire),
            connects: s.connects.load(Ordering::Acquire),
            last_error: s
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// The side of a source's control its own task holds.
#[derive(Debug)]
pub struct SourceTaskSide {
    /// Becomes `true` when the source is asked to stop.
    pub stop: watch::Receiver<bool>,
    /// Set to `false` (or dropped) once the source sends nothing more.
    pub intake: watch::Sender<bool>,
    pub status: Arc<StatusCell>,
}

impl SourceTaskSide {
    /// Resolves once the source is asked to stop (at once if it already was).
    pub async fn stopped(&mut self) {
        let _ = self.stop.wait_for(|s| *s).await;
    }

    pub fn is_stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// The source puts nothing more on the queue.
    pub fn close_intake(&self) {
        self.intake.send_replace(false);
        self.status.taking_input.store(false, Ordering::Release);
    }
}

impl Drop for SourceTaskSide {
    /// The task ended (or panicked, or was aborted): it takes nothing more.
    fn drop(&mut self) {
        self.close_intake();
        self.status.finished.store(true, Ordering::Release);
    }
}

/// A control and the task side that goes with it.
pub fn control(name: &str, kind: &'static str) -> (SourceControl, SourceTaskSide) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (intake_tx, intake_rx) = watch::channel(true);
    let status = Arc::new(StatusCell::default());
    (
        SourceControl {
            name: Arc::from(name),
            kind,
            stop: Arc::new(stop_tx),
            intake: intake_rx,
            status: status.clone(),
        },
        SourceTaskSide {
            stop: stop_rx,
            intake: intake_tx,
            status,
        },
    )
}

/// A started source: its control and its task. Joining it waits for the final
/// acknowledgement or checkpoint.
#[derive(Debug)]
pub struct RunningSource {
    control: SourceControl,
    task: JoinHandle<Result<(), SourceError>>,
}

impl RunningSource {
    pub fn new(control: SourceControl, task: JoinHandle<Result<(), SourceError>>) -> Self {
        RunningSource { control, task }
    }

    pub fn name(&self) -> &str {
        self.control.name()
    }

    pub fn kind(&self) -> &'static str {
        self.control.kind()
    }

    pub fn control(&self) -> SourceControl {
        self.control.clone()
    }

    pub fn stop(&self) {
        self.control.stop();
    }

    pub fn status(&self) -> SourceStatus {
        self.control.status()
    }

    /// The source's task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits up to `limit` for the source to end (after its final acknowledgement); a source
    /// still running then is aborted and reported. Call it after the pipeline drained, so
    /// every item the source handed over has been acknowledged.
    pub async fn finish(self, limit: Duration) -> Result<(), SourceError> {
        let name = self.control.name.to_string();
        let mut task = self.task;
        match tokio::time::timeout(limit, &mut task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(SourceError::Failed {
                name,
                message: e.to_string(),
            }),
            Err(_) => {
                task.abort();
                Err(SourceError::TimedOut { name, limit })
            }
        }
    }
}
