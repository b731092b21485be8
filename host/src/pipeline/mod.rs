//! The pipeline: the only place that wires sources, engine, store and notifiers together.
//!
//! Items are micro-batched (by size and by a short wait), validated (invalid ones become dead
//! letters), recorded in the per-subject history, evaluated by the current rule set, written to
//! the store in one transaction (retrying with backoff: the queue fills and producers wait, so
//! nothing is dropped), handed to notifiers, and only then acknowledged to their source.
//! Rule-set changes are applied between batches, so no batch sees half a rule set.

pub mod feed;
pub mod rules;

use crate::engine::history::History;
use crate::engine::{Evaluation, RuleMetrics, RuleSet};
use crate::model::{
    Alert, DeadLetter, EpochMs, Reading, ReadingKind, RuleRef, Severity, SubjectKey, now_ms, parse,
};
use crate::sinks::{Notifier, StorageSink};
use crate::sources::Ack;
use crate::sources::{EmbeddedSource, SourceControl, SourceItem, SourceStatus};
use crate::store::{AlertStatus, Store, WriteBatch, WriteOutcome};
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
    /// How far ahead of its receive time a reading's timestamp may be; further ahead it is a
    /// dead letter (a far-future reading would push every later real one out of its window).
    pub max_future_skew_secs: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            max_batch: 1024,
            max_wait_ms: 20,
            queue_capacity: 4096,
            suppress_secs: 900,
            lateness_secs: 3600,
            max_future_skew_secs: 300,
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
    /// Readings whose id was already stored (or seen) with other content: dead letters.
    pub conflicts: u64,
    /// Readings handed to rules, summed over the rules (a reading two rules evaluate counts
    /// twice): a reading evaluated twice by one rule set would show here.
    pub rule_readings: u64,
    pub store_retries: u64,
    pub sink_retries: u64,
    /// Subjects whose window was reloaded from the store because they came from a stream
    /// this host had just started to read (a partition taken over).
    pub window_refreshes: u64,
    pub rules: Vec<RuleStatus>,
    /// Subjects (patients, devices) whose recent readings the windows hold.
    pub history_subjects: usize,
    /// Readings the windows hold, over all subjects.
    pub history_readings: usize,
    /// Enabled rules whose active version is quarantined and therefore not running.
    pub quarantined: Vec<QuarantinedRule>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuarantinedRule {
    pub rule: RuleRef,
    pub reason: String,
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

/// Marks the pipeline dead when `run` ends, however it ends (a panic unwinds through it).
struct AliveGuard(Arc<std::sync::atomic::AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, std::sync::atomic::Ordering::Release);
    }
}

/// What `/health` reports of the pipeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineHealth {
    /// The pipeline task is running (false once it stopped or panicked).
    pub alive: bool,
    /// Items waiting in the input queue.
    pub queued_items: usize,
    /// Capacity of the input queue.
    pub queue_capacity: usize,
    /// Age of the oldest batch whose items are not yet acknowledged (durable everywhere).
    pub oldest_unacked_age_ms: Option<u64>,
    /// Batches processed but not yet acknowledged.
    pub unacked_batches: usize,
}

/// Batches taken from the queue and not yet acknowledged: receive time → receive time.
type Unacked = Arc<std::sync::Mutex<std::collections::BTreeMap<EpochMs, EpochMs>>>;

/// Steers a running pipeline: feeds it, changes its rules, watches it, stops it.
#[derive(Clone)]
pub struct PipelineHandle {
    input: mpsc::Sender<SourceItem>,
    commands: mpsc::Sender<Command>,
    stats: watch::Receiver<PipelineStats>,
    manager: Arc<RuleManager>,
    storage: Vec<Arc<dyn StorageSink>>,
    alive: Arc<std::sync::atomic::AtomicBool>,
    unacked: Unacked,
    feeds: Vec<Arc<std::sync::Mutex<feed::FeedStatus>>>,
    /// The configured sources feeding this pipeline, stopped first on shutdown.
    sources: Arc<std::sync::Mutex<Vec<SourceControl>>>,
}

/// How long `shutdown` waits for each source to stop putting items on the queue.
const SOURCE_STOP_TIMEOUT: Duration = Duration::from_secs(5);

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

    /// Each storage sink's status.
    pub fn sinks(&self) -> Vec<crate::sinks::SinkStatus> {
        self.storage.iter().map(|s| s.status()).collect()
    }

    /// How far each storage sink has caught up with the store.
    pub fn feeds(&self) -> Vec<feed::FeedStatus> {
        self.feeds
            .iter()
            .map(|f| f.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }

    /// The raw input queue, for sources that run as their own task.
    pub fn input(&self) -> mpsc::Sender<SourceItem> {
        self.input.clone()
    }

    pub fn stats(&self) -> PipelineStats {
        self.stats.borrow().clone()
    }

    /// Liveness and backlog, for `/health` and `/ready`.
    pub fn health(&self) -> PipelineHealth {
        let unacked = self.unacked.lock().unwrap_or_else(|e| e.into_inner());
        let oldest = unacked.values().next().copied();
        PipelineHealth {
            alive: self.alive.load(std::sync::atomic::Ordering::Acquire),
            queued_items: self.input.max_capacity() - self.input.capacity(),
            queue_capacity: self.input.max_capacity(),
            oldest_unacked_age_ms: oldest.map(|t| (now_ms() - t).max(0) as u64),
            unacked_batches: unacked.len(),
        }
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

    /// Clears a version's quarantine and reloads the rules, so it runs again if it is the
    /// enabled version of its rule (`glucoguard rules release` does the same offline).
    pub async fn release_rule(
        &self,
        rule: &RuleRef,
        by: &crate::store::accounts::Actor,
    ) -> Result<(), RuleError> {
        self.manager.release(rule, by).await?;
        self.reload_rules().await
    }

    /// Registers a running source, so that `shutdown` stops it first and `/health` shows it.
    pub fn attach_source(&self, source: SourceControl) {
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(source);
    }

    /// The attached sources' status.
    pub fn sources(&self) -> Vec<SourceStatus> {
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(SourceControl::status)
            .collect()
    }

    /// The first steps of an ordered shutdown: stops every attached source (each waits until
    /// it puts nothing more on the queue, bounded), then closes the input; the pipeline then
    /// processes what is queued, lets the storage sinks flush and ends `Pipeline::run`. The
    /// sources give their final acknowledgements once their items are durable; join them
    /// after the pipeline (`App::shutdown` does it all in order).
    pub async fn shutdown(&self) {
        let sources: Vec<SourceControl> = self
            .sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for s in &sources {
            s.stop();
        }
        for s in &sources {
            if !s.intake_stopped(SOURCE_STOP_TIMEOUT).await {
                tracing::warn!(
                    source = s.name(),
                    limit_ms = SOURCE_STOP_TIMEOUT.as_millis() as u64,
                    "a source did not stop taking input in time; closing the pipeline's input anyway (what it still sends is not acknowledged and comes again)"
                );
            }
        }
        let _ = self.commands.send(Command::Shutdown).await;
    }
}

/// Suppression state: the last notified alert per (subject, rule, code).
/// (subject, hash of rule name and alert code): 24 bytes a key instead of two strings, since
/// the map holds an entry per monitored patient and code.
type SuppressKey = (SubjectKey, u64);

/// Everything the pipeline runs with.
pub struct Pipeline {
    config: PipelineConfig,
    store: Arc<dyn Store>,
    manager: Arc<RuleManager>,
    notifiers: Vec<Arc<dyn Notifier>>,
    storage: Vec<Arc<dyn StorageSink>>,
    rules: RuleSet,
    /// Versions running in shadow: their alerts are stored apart and never notified.
    shadow: std::collections::HashSet<RuleRef>,
    history: History,
    /// The takeover number each subject's window was last refreshed under (subjects of
    /// sources whose subjects can move between hosts only; see [`SourceItem::takeover`]).
    takeovers: HashMap<crate::model::SubjectKey, u64>,
    input: mpsc::Receiver<SourceItem>,
    commands: mpsc::Receiver<Command>,
    stats_tx: watch::Sender<PipelineStats>,
    stats: PipelineStats,
    last_notified: HashMap<SuppressKey, (EpochMs, Severity)>,
    alive: Arc<std::sync::atomic::AtomicBool>,
    clock: feed::ReceiveClock,
    commits: watch::Sender<u64>,
    feeds: Vec<Arc<std::sync::Mutex<feed::FeedStatus>>>,
    unacked: Unacked,
    /// Newest event time seen (never further ahead than the allowed skew): what idle
    /// subjects and old suppression entries are measured against.
    watermark_ms: Option<EpochMs>,
    evicted_at_ms: EpochMs,
}

/// How far the watermark moves between two sweeps of idle state.
const EVICT_EVERY_MS: EpochMs = 60_000;

impl Pipeline {
    /// Builds the pipeline: loads the enabled rules from the store and rebuilds the windows
    /// and the suppression state from stored readings and alerts, so a restart resets
    /// neither.
    pub async fn new(
        config: PipelineConfig,
        store: Arc<dyn Store>,
        manager: Arc<RuleManager>,
        notifiers: Vec<Arc<dyn Notifier>>,
        storage: Vec<Arc<dyn StorageSink>>,
    ) -> Result<(Pipeline, PipelineHandle), RuleError> {
        let plan = manager.plan().await?;
        let quarantined = plan.quarantined.clone();
        let shadow = plan.shadow.clone();
        let rules = plan.assemble(Vec::new());
        // The reasons may quote a rule's output (patient data): they are in `/api/stats`, not
        // in the log.
        for (rule, _) in &quarantined {
            tracing::warn!(rule = %rule, "enabled rule is quarantined and does not run; release it with `glucoguard rules release {rule}` (the reason is in /api/stats)");
        }
        let (input_tx, input) = mpsc::channel(config.queue_capacity.max(1));
        let (commands_tx, commands) = mpsc::channel(16);
        let (stats_tx, stats_rx) = watch::channel(PipelineStats::default());
        let alive = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let unacked = Unacked::default();
        let mut p = Pipeline {
            config,
            store,
            manager: manager.clone(),
            notifiers,
            storage,
            rules,
            shadow,
            history: History::new(Some(0)),
            takeovers: HashMap::new(),
            input,
            commands,
            stats_tx,
            stats: PipelineStats {
                quarantined: quarantined
                    .into_iter()
                    .map(|(rule, reason)| QuarantinedRule { rule, reason })
                    .collect(),
                ..PipelineStats::default()
            },
            last_notified: HashMap::new(),
            alive: alive.clone(),
            clock: feed::ReceiveClock::default(),
            commits: feed::commits().0,
            feeds: Vec::new(),
            unacked: unacked.clone(),
            watermark_ms: None,
            evicted_at_ms: EpochMs::MIN,
        };
        p.rebuild_history().await?;
        p.rebuild_suppression().await?;
        p.feeds = p
            .storage
            .iter()
            .map(|s| {
                Arc::new(std::sync::Mutex::new(feed::FeedStatus {
                    sink: s.name(),
                    ..feed::FeedStatus::default()
                }))
            })
            .collect();
        p.publish_stats();
        let handle = PipelineHandle {
            input: input_tx,
            commands: commands_tx,
            stats: stats_rx,
            manager,
            storage: p.storage.clone(),
            alive,
            unacked,
            feeds: p.feeds.clone(),
            sources: Arc::default(),
        };
        Ok((p, handle))
    }

    fn retention_ms(&self) -> EpochMs {
        self.rules.lookback_ms() + (self.config.lateness_secs as i64) * 1000
    }

    fn skew_ms(&self) -> EpochMs {
        self.config.max_future_skew_secs as i64 * 1000
    }

    /// Rebuilds every subject's window from the store: per subject, the readings within the
    /// retention behind that subject's own newest one, for the subjects active within the
    /// retention of the newest reading. Stored timestamps further ahead than the allowed
    /// skew are ignored, so one bad clock cannot blind the others.
    async fn rebuild_history(&mut self) -> Result<(), RuleError> {
        let keep = self.retention_ms();
        let mut history = History::new(Some(keep));
        let readings = self
            .store
            .recent_readings(2 * keep, now_ms() + self.skew_ms())
            .await?;
        let mut newest = None;
        for r in &readings {
            if let Some(v) = r.window_value() {
                history.insert(r.subject(), r.at_ms, &r.id, v);
            }
            newest = newest.max(Some(r.at_ms));
        }
        if let Some(t) = newest {
            history.evict_idle(t - keep);
        }
        self.watermark_ms = self.watermark_ms.max(newest);
        tracing::info!(
            readings = history.len(),
            subjects = history.subjects(),
            retention_ms = keep,
            "windows rebuilt from the store"
        );
        self.history = history;
        Ok(())
    }

    /// Rebuilds the suppression state from the alerts notified within the suppression
    /// interval of the newest reading, so a restart or a replay does not notify again.
    async fn rebuild_suppression(&mut self) -> Result<(), RuleError> {
        let Some(watermark) = self.watermark_ms else {
            return Ok(());
        };
        let since = watermark - 2 * self.suppress_ms();
        let alerts = self.store.notified_alerts_since(since).await?;
        for a in &alerts {
            let key = suppress_key(a);
            let entry = self
                .last_notified
                .entry(key)
                .or_insert((a.at_ms, a.severity));
            if a.at_ms >= entry.0 {
                *entry = (a.at_ms, a.severity.max(entry.1));
            }
        }
        tracing::info!(
            entries = self.last_notified.len(),
            "suppression state rebuilt from the store"
        );
        Ok(())
    }

    fn suppress_ms(&self) -> EpochMs {
        self.config.suppress_secs as i64 * 1000
    }

    /// Runs until every input sender is dropped and the queue is drained.
    pub async fn run(mut self) {
        let _alive = AliveGuard(self.alive.clone());
        let (stop_tx, stop_rx) = watch::channel(false);
        let feeders: Vec<_> = self
            .storage
            .iter()
            .zip(&self.feeds)
            .map(|(sink, status)| {
                tokio::spawn(
                    feed::Feeder {
                        sink: sink.clone(),
                        store: self.store.clone(),
                        commits: self.commits.subscribe(),
                        stop: stop_rx.clone(),
                        status: status.clone(),
                        page_rows: feed::PAGE_ROWS,
                    }
                    .run(),
                )
            })
            .collect();
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
        // Every item is stored and acknowledged; let the sinks take the rest from the store.
        let _ = stop_tx.send(true);
        for f in feeders {
            if let Err(e) = f.await {
                tracing::error!(error = %e, "a sink feeder failed; the sink resumes from its cursor on the next start");
            }
        }
        self.publish_stats();
        tracing::info!(
            batches = self.stats.batches,
            readings = self.stats.readings,
            "pipeline drained and stopped"
        );
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
                let result = self.reload().await;
                if let Err(e) = &result {
                    tracing::warn!(error = %e, "rule reload failed; the running rules are unchanged");
                }
                self.publish_stats();
                let _ = reply.send(result);
            }
            Command::Shutdown => {
                tracing::info!("shutdown requested; draining the input queue");
                self.input.close();
            }
        }
    }

    /// Swaps in the rule set the store describes. Every fallible step happens before the
    /// running set is touched, so a failed reload changes nothing.
    async fn reload(&mut self) -> Result<(), RuleError> {
        let plan = self.manager.plan().await?;
        let before = self.rules.lookback_ms();
        self.stats.quarantined = plan
            .quarantined
            .iter()
            .map(|(rule, reason)| QuarantinedRule {
                rule: rule.clone(),
                reason: reason.clone(),
            })
            .collect();
        let current = std::mem::take(&mut self.rules).into_rules();
        self.shadow = plan.shadow.clone();
        self.rules = plan.assemble(current);
        self.history.set_retention_ms(Some(self.retention_ms()));
        if self.rules.lookback_ms() > before {
            self.rebuild_history().await?;
        }
        Ok(())
    }

    /// The subjects of this batch that arrive under a takeover number their window was not
    /// refreshed under: another host may have stored readings of theirs since this host last
    /// saw them.
    fn moved_subjects(
        &self,
        parsed: &[(Reading, SourceItem)],
    ) -> HashMap<crate::model::SubjectKey, u64> {
        let mut moved = HashMap::new();
        for (r, item) in parsed {
            if item.takeover == 0 {
                continue;
            }
            let subject = r.subject();
            if self.takeovers.get(&subject) != Some(&item.takeover) {
                moved.insert(subject, item.takeover);
            }
        }
        moved
    }

    /// Loads the stored readings of the moved subjects within the retention before their
    /// readings in this batch into their windows, then records the takeover numbers. What a
    /// partition's new reader gets starts after a checkpoint, and everything before a
    /// checkpoint is durable, so the store holds every reading of the subject before this
    /// batch's. A failed read is retried with the subject's next batch.
    async fn refresh_windows(
        &mut self,
        moved: HashMap<crate::model::SubjectKey, u64>,
        readings: &[Reading],
    ) {
        use crate::model::ReadingKind;
        let keep = self.retention_ms();
        let (mut since, mut until) = (EpochMs::MAX, EpochMs::MIN);
        for r in readings {
            if moved.contains_key(&r.subject()) {
                since = since.min(r.at_ms - keep);
                until = until.max(r.at_ms);
            }
        }
        if since > until {
            // Only duplicates and dead letters of these subjects: nothing to evaluate yet.
            return;
        }
        let ids = |kind: ReadingKind| -> Vec<u64> {
            moved
                .keys()
                .filter(|k| k.kind == kind)
                .map(|k| k.id)
                .collect()
        };
        let (patients, devices) = (ids(ReadingKind::Glucose), ids(ReadingKind::Device));
        match self
            .store
            .subject_readings(&patients, &devices, since, until)
            .await
        {
            Ok(stored) => {
                for r in &stored {
                    if let Some(v) = r.window_value() {
                        self.history.insert_untrimmed(
                            r.subject(),
                            r.at_ms,
                            crate::engine::history::id_hash(&r.id),
                            v,
                        );
                    }
                }
                self.stats.window_refreshes += moved.len() as u64;
                self.takeovers.extend(moved);
            }
            Err(e) => {
                tracing::warn!(store = self.store.kind(), error = %e, subjects = moved.len(), "cannot refresh the windows of taken-over subjects; retried with their next readings");
            }
        }
    }

    /// Sorts a batch's parsed readings into those to evaluate and the rest. A copy of a
    /// reading already stored, or already in this batch, is a duplicate: acknowledged with
    /// the batch (so never before its original is durable), not evaluated again. A reading
    /// whose id is taken by other content is a conflict (dead letter). Readings with derived
    /// ids (`h-…`, content hashes) cannot conflict and are not looked up: a copy older than
    /// the windows is evaluated again to the same alert ids, which the store ignores and
    /// which are therefore not notified again.
    async fn classify(
        &mut self,
        parsed: Vec<(Reading, SourceItem)>,
        received_at_ms: EpochMs,
        acks: &mut Vec<Ack>,
        dead_letters: &mut Vec<DeadLetter>,
    ) -> Vec<Reading> {
        let scoped: Vec<&str> = parsed
            .iter()
            .map(|(r, _)| r.id.as_str())
            .filter(|id| !id.starts_with("h-"))
            .collect();
        let stored: HashMap<String, Reading> = if scoped.is_empty() {
            HashMap::new()
        } else {
            let mut delay = Duration::from_millis(50);
            loop {
                match self.store.readings_by_id(&scoped).await {
                    Ok(rows) => break rows.into_iter().map(|r| (r.id.clone(), r)).collect(),
                    Err(e) => {
                        self.stats.store_retries += 1;
                        tracing::warn!(store = self.store.kind(), error = %e, retry_in_ms = delay.as_millis() as u64, "store lookup failed; retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                }
            }
        };
        let mut fresh: Vec<Reading> = Vec::with_capacity(parsed.len());
        let mut in_batch: HashMap<String, usize> = HashMap::with_capacity(parsed.len());
        for (r, item) in parsed {
            let SourceItem {
                payload,
                origin,
                ack,
                ..
            } = item;
            let earlier = in_batch
                .get(&r.id)
                .map(|&i| &fresh[i])
                .or_else(|| stored.get(&r.id));
            if let Some(earlier) = earlier
                && !earlier.same_content(&r)
            {
                self.stats.conflicts += 1;
                dead_letters.push(DeadLetter {
                    origin: origin.to_string(),
                    reason: format!(
                        "conflict: reading_id {:?} of device {} is already taken by a reading with other content (at {})",
                        parse::given_reading_id(&r.id),
                        r.device_id(),
                        crate::model::format_ms(earlier.at_ms)
                    ),
                    payload: String::from_utf8_lossy(&payload).into_owned(),
                    received_at_ms,
                });
                acks.push(ack);
                continue;
            }
            if in_batch.contains_key(&r.id) {
                self.stats.duplicates += 1;
                acks.push(ack);
                continue;
            }
            if stored.contains_key(&r.id) {
                // Stored before, so durable and already evaluated (and fed to the sinks
                // from the store): acknowledged with this batch, not evaluated again.
                self.stats.duplicates += 1;
                acks.push(ack);
                continue;
            }
            in_batch.insert(r.id.clone(), fresh.len());
            fresh.push(r);
            acks.push(ack);
        }
        fresh
    }

    async fn process(&mut self, items: Vec<SourceItem>) {
        let received_at_ms = self.clock.next();
        // Taken and not yet acknowledged, until the commit below (for `/health`).
        self.unacked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(received_at_ms, received_at_ms);
        self.stats.items += items.len() as u64;
        let skew_ms = self.skew_ms();
        let mut parsed = Vec::with_capacity(items.len());
        let mut dead_letters = Vec::new();
        let mut acks = Vec::with_capacity(items.len());
        for item in items {
            let result = parse::parse_reading(&item.payload).and_then(|r| {
                if r.at_ms > received_at_ms + skew_ms {
                    Err(parse::Invalid(format!(
                        "`timestamp` is {} s ahead of the receive time (limit: max_future_skew_secs = {})",
                        (r.at_ms - received_at_ms) / 1000,
                        self.config.max_future_skew_secs
                    )))
                } else {
                    Ok(r)
                }
            });
            match result {
                Ok(r) => parsed.push((r, item)),
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
                    acks.push(item.ack);
                }
            }
        }
        let moved = self.moved_subjects(&parsed);
        let readings = self
            .classify(parsed, received_at_ms, &mut acks, &mut dead_letters)
            .await;
        if !moved.is_empty() {
            self.refresh_windows(moved, &readings).await;
        }
        // The whole batch goes into the windows before any of it is evaluated, and is trimmed
        // to the retention only afterwards, so a batch spanning more than the retention (a
        // backfill, a replay after an outage) still sees its own readings.
        for r in &readings {
            if let Some(v) = r.window_value() {
                self.history.insert_untrimmed(
                    r.subject(),
                    r.at_ms,
                    crate::engine::history::id_hash(&r.id),
                    v,
                );
            }
            self.watermark_ms = self.watermark_ms.max(Some(r.at_ms));
        }
        let rules = &mut self.rules;
        let history = &self.history;
        let seen =
            |rules: &RuleSet| -> u64 { rules.rules().iter().map(|r| r.metrics().readings).sum() };
        let before = seen(rules);
        let eval: Evaluation = tokio::task::block_in_place(|| rules.evaluate(&readings, history));
        self.stats.rule_readings += seen(&self.rules) - before;
        for r in &readings {
            self.history.trim(r.subject());
        }
        dead_letters.extend(eval.poison);

        let suppress_ms = self.suppress_ms();
        let mut alerts = Vec::with_capacity(eval.alerts.len());
        let (shadow_alerts, live): (Vec<_>, Vec<_>) = eval
            .alerts
            .into_iter()
            .partition(|a| self.shadow.contains(&a.rule));
        for a in live {
            let key = suppress_key(&a);
            let status = match self.last_notified.get(&key) {
                Some(&(at, sev)) if (a.at_ms - at).abs() < suppress_ms && a.severity <= sev => {
                    AlertStatus::Suppressed
                }
                _ => {
                    // Keep the newest notification per key: a replayed old alert must not
                    // move the state back in time.
                    let entry = self
                        .last_notified
                        .entry(key)
                        .or_insert((a.at_ms, a.severity));
                    if a.at_ms >= entry.0 || a.severity > entry.1 {
                        *entry = (a.at_ms.max(entry.0), a.severity.max(entry.1));
                    }
                    AlertStatus::Open
                }
            };
            if status == AlertStatus::Suppressed {
                self.stats.suppressed += 1;
            }
            alerts.push((a, status));
        }

        self.stats.batches += 1;
        self.stats.readings += readings.len() as u64;
        self.stats.dead_letters += dead_letters.len() as u64;
        self.stats.alerts += alerts.len() as u64;
        let batch = WriteBatch {
            readings,
            alerts,
            dead_letters,
            faults: eval.faults,
            quarantined: eval.quarantined,
            shadow_alerts,
            received_at_ms,
        };
        let outcome = if batch.is_empty() {
            WriteOutcome::default()
        } else {
            self.write_durably(&batch).await
        };
        // Only alerts stored for the first time are notified: a replayed reading's alert
        // (same id) was notified, or suppressed, when it was first stored.
        let notify: Vec<crate::model::Alert> = batch
            .alerts
            .iter()
            .filter(|(a, s)| *s == AlertStatus::Open && outcome.new_alert_ids.contains(&a.id))
            .map(|(a, _)| a.clone())
            .collect();
        for n in &self.notifiers {
            n.notify(&notify);
        }
        // The counters include this batch before anyone can see it acknowledged, so a caller
        // who saw its items acknowledged reads stats that count them.
        self.publish_stats();
        // Durable in the store, which is the log the storage sinks are fed from: the items
        // are acknowledged now, and the feeders are told there is more to copy.
        for ack in acks {
            ack.ack();
        }
        self.unacked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&received_at_ms);
        self.commits.send_modify(|n| *n += 1);
        self.evict_idle();
        self.publish_stats();
    }

    /// Bounds the state kept per subject: forgets subjects idle for longer than the
    /// retention and suppression entries older than the suppression interval, measured
    /// against the newest event time seen.
    fn evict_idle(&mut self) {
        let Some(watermark) = self.watermark_ms else {
            return;
        };
        if watermark.saturating_sub(self.evicted_at_ms) < EVICT_EVERY_MS {
            return;
        }
        self.evicted_at_ms = watermark;
        let subjects = self.history.evict_idle(watermark - self.retention_ms());
        let history = &self.history;
        self.takeovers.retain(|k, _| history.holds(*k));
        let horizon = watermark - 2 * self.suppress_ms();
        let before = self.last_notified.len();
        self.last_notified.retain(|_, (at, _)| *at > horizon);
        self.last_notified.shrink_to(self.last_notified.len() * 2);
        if subjects > 0 || before > self.last_notified.len() {
            tracing::debug!(
                subjects,
                suppression_entries = before - self.last_notified.len(),
                "idle state evicted"
            );
        }
    }

    /// Retries a store write with capped exponential backoff until it succeeds. While it
    /// retries the input queue fills and producers wait: backpressure, not loss.
    async fn write_durably(&mut self, batch: &WriteBatch) -> WriteOutcome {
        let mut delay = Duration::from_millis(50);
        loop {
            match self.store.write_batch(batch).await {
                Ok(outcome) => return outcome,
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
        self.stats.sink_retries = self
            .feeds
            .iter()
            .map(|f| f.lock().unwrap_or_else(|e| e.into_inner()).failures)
            .sum();
        self.stats.history_subjects = self.history.subjects();
        self.stats.history_readings = self.history.len();
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

/// Alerts are suppressed per subject (the patient for glucose, the device for telemetry),
/// rule and alert code: a rising alert never hides a falling one.
fn suppress_key(a: &Alert) -> SuppressKey {
    use std::hash::{Hash, Hasher};
    let subject = SubjectKey {
        kind: a.kind,
        id: if a.kind == ReadingKind::Glucose {
            a.patient_id.unwrap_or(a.device_id)
        } else {
            a.device_id
        },
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (a.rule.name.as_str(), a.code.as_str()).hash(&mut h);
    (subject, h.finish())
}
