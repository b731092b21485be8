//! Sinks: where a batch goes after the OLTP store made it durable.
//!
//! - Storage sinks ([`StorageSink`]: analytics, archive) take each batch and report, through
//!   the batch's [`Durable`] handle, when their copy is durable; a source item is acknowledged
//!   only when the store and every storage sink have. A sink may complete later (an archive
//!   completes when the file holding the batch is uploaded). A failed `write` is retried by the
//!   pipeline with backoff: storage blocks, so backpressure reaches the sources.
//! - Notifiers ([`Notifier`]) get the alerts that passed suppression and must never block.
//!
//! Sinks never import the engine, the sources, the store or the pipeline.

use crate::model::batch::WriteBatch;
use crate::model::{Alert, format_ms};
use std::future::Future;
use std::pin::Pin;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Completion of one batch in one storage sink. `complete` once the batch is durable there;
/// dropping it uncompleted means "not delivered", and the batch is never acknowledged
/// (delivery is at-least-once, so the source will send it again).
pub struct Durable(Option<Box<dyn FnOnce() + Send>>);

impl Durable {
    pub fn new(f: impl FnOnce() + Send + 'static) -> Self {
        Durable(Some(Box::new(f)))
    }
    /// A handle that completes nothing (tests, one-off writes).
    pub fn noop() -> Self {
        Durable(None)
    }
    pub fn complete(mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Durable")
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{sink}: {message}")]
pub struct SinkError {
    pub sink: &'static str,
    pub message: String,
}

/// How a storage sink fares, for `GET /api/sinks`: what it holds that is not yet durable
/// and whether it is failing (a sink retries internally, so this is where a stuck archive or
/// analytics database shows).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SinkStatus {
    pub name: &'static str,
    /// Rows accepted and not yet durable in the sink.
    pub pending_rows: u64,
    /// Batches whose `Durable` the sink completed.
    pub batches_completed: u64,
    /// Failed attempts so far (each retried).
    pub failures: u64,
    /// The most recent failure, while the sink keeps failing.
    pub last_error: Option<String>,
}

/// Locks a sink's state; a poisoned lock only means a panic elsewhere, and every sink state
/// here stays consistent between its statements, so the state is used as it is.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The flush of a sink that completes batches from a background task: waits until
/// `drained()` holds, checking again after every `progress` signal and calling `nudge` (to
/// wake the task) before each wait. `false` if `deadline` passes first.
pub(crate) async fn wait_drained(
    progress: &tokio::sync::Notify,
    deadline: tokio::time::Instant,
    mut drained: impl FnMut() -> bool,
    mut nudge: impl FnMut(),
) -> bool {
    loop {
        let signalled = progress.notified();
        tokio::pin!(signalled);
        // Registered before the check, so a signal between the check and the wait counts.
        signalled.as_mut().enable();
        if drained() {
            return true;
        }
        nudge();
        if tokio::time::timeout_at(deadline, signalled).await.is_err() {
            return false;
        }
    }
}

pub trait StorageSink: Send + Sync {
    fn name(&self) -> &'static str;
    /// A snapshot of the sink's counters.
    fn status(&self) -> SinkStatus;
    /// Accepts a batch. On `Ok` the sink owns `durable` and completes it when the batch is
    /// durable in it (now or later); on `Err` the pipeline retries the same batch.
    fn write<'a>(
        &'a self,
        batch: &'a WriteBatch,
        durable: Durable,
    ) -> BoxFuture<'a, Result<(), SinkError>>;
    /// Makes everything accepted so far durable (called on shutdown, after the last batch).
    fn flush(&self) -> BoxFuture<'_, Result<(), SinkError>>;
}
use std::io::Write;
use tokio::sync::broadcast;

pub trait Notifier: Send + Sync {
    fn name(&self) -> &'static str;
    /// Alerts that passed suppression, in batch order.
    fn notify(&self, alerts: &[Alert]);
}

/// Prints alerts to stdout, one line each: the demo's and a developer's live view.
#[derive(Debug, Default)]
pub struct ConsoleNotifier;

impl Notifier for ConsoleNotifier {
    fn name(&self) -> &'static str {
        "console"
    }
    fn notify(&self, alerts: &[Alert]) {
        let mut out = std::io::stdout().lock();
        for a in alerts {
            let who = a
                .patient_id
                .map(|p| format!("patient {p}"))
                .unwrap_or_else(|| format!("device {}", a.device_id));
            let _ = writeln!(
                out,
                "ALERT {} {:<8} {who:<12} {} {}: {}",
                format_ms(a.at_ms),
                a.severity.as_str(),
                a.rule,
                a.code,
                a.message
            );
        }
    }
}

/// Fan-out of alerts to live subscribers (admin UI, tests). Lagging receivers lose the
/// oldest alerts, never block the pipeline.
#[derive(Debug, Clone)]
pub struct LiveFeed {
    tx: broadcast::Sender<Alert>,
}

impl LiveFeed {
    pub fn new(capacity: usize) -> Self {
        LiveFeed {
            tx: broadcast::channel(capacity).0,
        }
    }
    pub fn subscribe(&self) -> broadcast::Receiver<Alert> {
        self.tx.subscribe()
    }
}

impl Notifier for LiveFeed {
    fn name(&self) -> &'static str {
        "live"
    }
    fn notify(&self, alerts: &[Alert]) {
        for a in alerts {
            let _ = self.tx.send(a.clone());
        }
    }
}
