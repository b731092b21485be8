//! The pipeline: the only place that wires sources, engine, store and notifiers together.
//!
//! Items are micro-batched (by size and by a short wait), validated (invalid ones become dead
//! letters), recorded in the per-subject history, evaluated by the current rule set, written to
//! the store in one transaction (retrying with backoff: the queue fills and producers wait, so
//! nothing is dropped), handed to notifiers, and only then acknowledged to their source.
//! Rule-set changes are applied between batches, so no batch sees half a rule set.

pub mod rules;

use crate::engine::history::History;
use crate::engine::{Evaluation, RuleMetrics, RuleSet};
use crate::model::{
    DeadLetter, EpochMs, ReadingKind, RuleRef, Severity, SubjectKey, now_ms, parse,
};
use crate::sinks::{Durable, Notifier, StorageSink};
use crate::sources::Ack;
use crate::sources::{EmbeddedSource, SourceItem};
use crate::store::{AlertStatus, Store, WriteBatch};
use rules::{RuleError, RuleManager};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument;

/// Pipeline tuning. Units are in the names.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Largest batch handed to the rules.
    pub max_batch: usize,
    /// How long a partial batch waits for more items.
    pub max_wait_ms: u64,
    /// Capacity of the input queue shared by all sources.
    pub queue_capacity: usize,
    /// Repeats of an alert for the same subject and rule within this event-time interval are
    /// stored as suppressed instead of notified, unless severity rises.
    pub suppress_secs: u64,
    /// How late (in event time) a reading may arrive and still see a complete window.
    pub lateness_secs: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            max_batch: 1024,
            max_wait_ms: 20,
            queue_capacity: 4096,
            suppress_secs: 900,
            lateness_secs: 3600,
        }
    }
}

/// Running totals, published after every batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PipelineStats {
    pub batches: u64,
    pub items: u64,
    pub readings: u64,
    pub duplicates: u64,
    pub dead_letters: u64,
    pub alerts: u64,
    pub suppressed: u64,
    pub store_retries: u64,
    pub sink_retries: u64,
    pub rules: Vec<RuleStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleStatus {
    pub rule: RuleRef,
    pub quarantined: Option<String>,
    pub metrics: RuleMetrics,
}

enum Command {
    Reload(oneshot::Sender<Result<(), RuleError>>),
    Shutdown,
}

/// Steers a running pipeline: feeds it, changes its rules, watches it, stops it.
#[derive(Clone)]
pub struct PipelineHandle {
    input: mpsc::Sender<SourceItem>,
    commands: mpsc::Sender<Command>,
    stats: watch::Receiver<PipelineStats>,
    manager: Arc<RuleManager>,
    storage: Vec<Arc<dyn StorageSink>>,
}

impl std::fmt::Debug for PipelineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipelineHandle").finish_non_exhaustive()
    }
}

impl PipelineHandle {
    /// The embedded source: an in-process producer onto the input queue.
    pub fn embedded_source(&self, origin: &str) -> EmbeddedSource {
        EmbeddedSource::new(self.input.clone(), origin)
    }

    /// Each storage sink's status, in the order batches are handed to them.
    pub fn sinks(&self) -> Vec<crate::sinks::SinkStatus> {
        self.storage.iter().map(|s| s.status()).collect()
    }

    /// The raw input queue, for sources that run as their own task.
    pub fn input(&self) -> mpsc::Sender<SourceItem> {
        self.input.clone()
    }

    pub fn stats(&self) -> PipelineStats {
        self.stats.borrow().clone()
    }

    pub fn watch_stats(&self) -> watch::Receiver<PipelineStats> {
        self.stats.clone()
    }

    pub fn rules(&self) -> &RuleManager {
        &self.manager
    }

    /// Rebuilds the rule set from the store and swaps it in between two batches; returns
    /// once the swap took effect.
    pub async fn reload_rules(&self) -> Result<(), RuleError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Reload(tx))
            .await
            .map_err(|_| RuleError::Stopped)?;
        rx.await.map_err(|_| RuleError::Stopped)?
    }

    /// Stops taking input, processes what is queued, then ends `Pipeline::run`.
    pub async fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown).await;
    }
}

/// The acknowledgements of one batch, released when every storage sink has completed its
/// part. Only completions count: a handle dropped uncompleted (by a sink that failed and was
/// retried with a fresh handle, or that never made the batch durable) releases nothing, so
/// a batch is acknowledged once and only when it is durable everywhere: at-least-once.
struct AckGroup {
    acks: std::sync::Mutex<Vec<Ack>>,
    pending: std::sync::atomic::AtomicUsize,
}

impl AckGroup {
    fn new(acks: Vec<Ack>, sinks: usize) -> Arc<Self> {
        let group = Arc::new(AckGroup {
            acks: std::sync::Mutex::new(acks),
            pending: sinks.into(),
        });
        if sinks == 0 {
            group.release();
        }
        group
    }

    fn durable(self: &Arc<Self>) -> Durable {
        let group = self.clone();
        Durable::new(move || {
            if group
                .pending
                .fetch_sub(1, std::sync::atomic::Ordering::AcqRel)
                == 1
            {
                group.release();
            }
        })
    }

    fn release(&self) {
        let acks = std::mem::take(&mut *self.acks.lock().unwrap_or_else(|e| e.into_inner()));
        for ack in acks {
            ack.ack();
        }
    }
}

/// Everything the pipeline runs with.
pub struct Pipeline {
    config: PipelineConfig,
    store: Arc<dyn Store>,
    manager: Arc<RuleManager>,
    notifiers: Vec<Arc<dyn Notifier>>,
    storage: Vec<Arc<dyn StorageSink>>,
    rules: RuleSet,
    history: History,
    input: mpsc::Receiver<SourceItem>,
    commands: mpsc::Receiver<Command>,
    stats_tx: watch::Sender<PipelineStats>,
    stats: PipelineStats,
    last_notified: HashMap<(SubjectKey, String), (EpochMs, Severity)>,
}

impl Pipeline {
    /// Builds the pipeline: loads the enabled rules from the store and rebuilds the windows
    /// from stored readings, so a restart does not reset them.
    pub async fn new(
        config: PipelineConfig,
        store: Arc<dyn Store>,
        manager: Arc<RuleManager>,
        notifiers: Vec<Arc<dyn Notifier>>,
        storage: Vec<Arc<dyn StorageSink>>,
    ) -> Result<(Pipeline, PipelineHandle), RuleError> {
        let rules = manager.build(Vec::new()).await?;
        let (input_tx, input) = mpsc::channel(config.queue_capacity.max(1));
        let (commands_tx, commands) = mpsc::channel(16);
        let (stats_tx, stats_rx) = watch::channel(PipelineStats::default());
        let mut p = Pipeline {
            config,
            store,
            manager: manager.clone(),
            notifiers,
            storage,
            rules,
            history: History::new(Some(0)),
            input,
            commands,
            stats_tx,
            stats: PipelineStats::default(),
            last_notified: HashMap::new(),
        };
        p.rebuild_history().await?;
        p.publish_stats();
        let handle = PipelineHandle {
            input: input_tx,
            commands: commands_tx,
            stats: stats_rx,
            manager,
            storage: p.storage.clone(),
        };
        Ok((p, handle))
    }

    fn retention_ms(&self) -> EpochMs {
        self.rules.lookback_ms() + (self.config.lateness_secs as i64) * 1000
    }

    async fn rebuild_history(&mut self) -> Result<(), RuleError> {
        let keep = self.retention_ms();
        let mut history = History::new(Some(keep));
        let readings = self.store.recent_readings(keep).await?;
        for r in &readings {
            if let Some(v) = r.window_value() {
                history.insert(r.subject(), r.at_ms, &r.id, v);
            }
        }
        tracing::info!(
            readings = history.len(),
            retention_ms = keep,
            "windows rebuilt from the store"
        );
        self.history = history;
        Ok(())
    }

    /// Runs until every input sender is dropped and the queue is drained.
    pub async fn run(mut self) {
        let mut buf = Vec::with_capacity(self.config.max_batch);
        loop {
            tokio::select! {
                biased;
                Some(cmd) = self.commands.recv() => self.apply(cmd).await,
                n = self.input.recv_many(&mut buf, self.config.max_batch) => {
                    if n == 0 {
                        break;
                    }
                    self.fill(&mut buf).await;
                    let items = std::mem::take(&mut buf);
                    let span = tracing::debug_span!("batch", items = items.len());
                    self.process(items).instrument(span).await;
                }
            }
        }
        self.flush_sinks().await;
        tracing::info!(
            batches = self.stats.batches,
            readings = self.stats.readings,
            "pipeline drained and stopped"
        );
    }

    /// Makes what every storage sink accepted durable (an archive uploads its open files), so
    /// the last batches are acknowledged before the pipeline stops. Each sink retries within
    /// its own bounded flush; one that still fails keeps its batches unacknowledged, and the
    /// sources send them again.
    async fn flush_sinks(&mut self) {
        for sink in self.storage.clone() {
            if let Err(e) = sink.flush().await {
                self.stats.sink_retries += 1;
                tracing::error!(
                    sink = sink.name(),
                    error = %e,
                    "sink flush failed; its unacknowledged items will be redelivered"
                );
            }
        }
        self.publish_stats();
    }

    /// Tops a partial batch up until it is full or `max_wait_ms` passed.
    async fn fill(&mut self, buf: &mut Vec<SourceItem>) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.config.max_wait_ms);
        while buf.len() < self.config.max_batch {
            let room = self.config.max_batch - buf.len();
            match tokio::time::timeout_at(deadline, self.input.recv_many(buf, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    async fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::Reload(reply) => {
                let current = std::mem::take(&mut self.rules).into_rules();
                let result = match self.manager.build(current).await {
                    Ok(set) => {
                        let widened = set.lookback_ms() > self.rules.lookback_ms();
                        self.rules = set;
                        if widened {
                            self.rebuild_history().await
                        } else {
                            Ok(())
                        }
                    }
                    Err(e) => Err(e),
                };
                if result.is_err() {
                    // Keep serving with what the store describes, minus what failed to build.
                    tracing::warn!(
                        "rule reload failed; continuing with the rules that loaded before"
                    );
                }
                self.history.set_retention_ms(Some(self.retention_ms()));
                self.publish_stats();
                let _ = reply.send(result);
            }
            Command::Shutdown => {
                tracing::info!("shutdown requested; draining the input queue");
                self.input.close();
            }
        }
    }

    async fn process(&mut self, items: Vec<SourceItem>) {
        let received_at_ms = now_ms();
        let mut readings = Vec::with_capacity(items.len());
        let mut dead_letters = Vec::new();
        let mut acks = Vec::with_capacity(items.len());
        for item in items {
            match parse::parse_reading(&item.payload) {
                Ok(r) => {
                    let fresh = match r.window_value() {
                        Some(v) => self.history.insert(r.subject(), r.at_ms, &r.id, v),
                        None => true,
                    };
                    if fresh {
                        readings.push(r);
                    } else {
                        self.stats.duplicates += 1;
                    }
                }
                Err(reason) => {
                    let payload = String::from_utf8_lossy(
                        &item.payload[..item.payload.len().min(parse::MAX_PAYLOAD_BYTES)],
                    )
                    .into_owned();
                    dead_letters.push(DeadLetter {
                        origin: item.origin.to_string(),
                        reason: reason.0,
                        payload,
                        received_at_ms,
                    });
                }
            }
            acks.push(item.ack);
        }
        let rules = &mut self.rules;
        let history = &self.history;
        let eval: Evaluation = tokio::task::block_in_place(|| rules.evaluate(&readings, history));
        dead_letters.extend(eval.poison);

        let mut alerts = Vec::with_capacity(eval.alerts.len());
        let mut notify = Vec::new();
        for a in eval.alerts {
            let subject = SubjectKey {
                kind: a.kind,
                id: if a.kind == ReadingKind::Glucose {
                    a.patient_id.unwrap_or(a.device_id)
                } else {
                    a.device_id
                },
            };
            let key = (subject, a.rule.name.clone());
            let suppress_ms = self.config.suppress_secs as i64 * 1000;
            let status = match self.last_notified.get(&key) {
                Some(&(at, sev)) if (a.at_ms - at).abs() < suppress_ms && a.severity <= sev => {
                    AlertStatus::Suppressed
                }
                _ => {
                    self.last_notified.insert(key, (a.at_ms, a.severity));
                    AlertStatus::Open
                }
            };
            if status == AlertStatus::Open {
                notify.push(a.clone());
            } else {
                self.stats.suppressed += 1;
            }
            alerts.push((a, status));
        }

        self.stats.batches += 1;
        self.stats.items += acks.len() as u64;
        self.stats.readings += readings.len() as u64;
        self.stats.dead_letters += dead_letters.len() as u64;
        self.stats.alerts += alerts.len() as u64;
        let batch = WriteBatch {
            readings,
            alerts,
            dead_letters,
            faults: eval.faults,
            quarantined: eval.quarantined,
            received_at_ms,
        };
        if !batch.is_empty() {
            self.write_durably(&batch).await;
        }
        for n in &self.notifiers {
            n.notify(&notify);
        }
        // The items are acknowledged when the store (done above) and every storage sink
        // have made the batch durable.
        let group = AckGroup::new(acks, self.storage.len());
        for sink in self.storage.clone() {
            self.write_to_sink(sink, &batch, &group).await;
        }
        drop(group);
        self.publish_stats();
    }

    /// Hands the batch to a storage sink, retrying with capped backoff until it accepts it.
    async fn write_to_sink(
        &mut self,
        sink: Arc<dyn StorageSink>,
        batch: &WriteBatch,
        group: &Arc<AckGroup>,
    ) {
        let mut delay = Duration::from_millis(50);
        loop {
            match sink.write(batch, group.durable()).await {
                Ok(()) => return,
                Err(e) => {
                    self.stats.sink_retries += 1;
                    tracing::warn!(sink = sink.name(), error = %e, retry_in_ms = delay.as_millis() as u64, "sink write failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Retries a store write with capped exponential backoff until it succeeds. While it
    /// retries the input queue fills and producers wait: backpressure, not loss.
    async fn write_durably(&mut self, batch: &WriteBatch) {
        let mut delay = Duration::from_millis(50);
        loop {
            match self.store.write_batch(batch).await {
                Ok(()) => return,
                Err(e) => {
                    self.stats.store_retries += 1;
                    tracing::warn!(store = self.store.kind(), error = %e, retry_in_ms = delay.as_millis() as u64, "store write failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn publish_stats(&mut self) {
        self.stats.rules = self
            .rules
            .rules()
            .iter()
            .map(|r| RuleStatus {
                rule: r.info().rule_ref(),
                quarantined: r.quarantined().map(str::to_owned),
                metrics: r.metrics().clone(),
            })
            .collect();
        self.stats_tx.send_replace(self.stats.clone());
    }
}
