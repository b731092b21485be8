//! [`AnalyticsSink`]: the pipeline's storage sink into the DuckDB analytics database, with
//! group commit.
//!
//! A DuckDB commit has a fixed cost (staging, the dedupe anti-join, the WAL sync: tens of
//! milliseconds) whatever the batch size, so committing each pipeline batch on its own would
//! cap the sink, and the pipeline behind it, at a few dozen batches a second. Instead `write`
//! queues the batch and returns; one committer task takes everything queued, appends it in
//! one transaction and then completes every batch's [`Durable`]. Under load the queue grows
//! while a commit runs, so the next commit carries more batches: the cost per batch falls as
//! the rate rises. The queue is bounded in rows; a full queue makes `write` wait
//! (backpressure). A failed commit keeps its batches queued, in order, and is retried with
//! backoff: nothing is acknowledged that is not committed, and nothing is dropped.

use super::{Analytics, AnalyticsError, Table};
use crate::model::batch::WriteBatch;
use crate::sinks::{BoxFuture, Durable, SinkError, SinkStatus, StorageSink, lock, wait_drained};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

const NAME: &str = "duckdb";

/// Rows the queue holds before `write` waits, by default.
pub const DEFAULT_MAX_QUEUED_ROWS: usize = 100_000;

/// How long `flush` waits for the queue to drain before it reports the rows left.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(120);
const RETRY_INITIAL: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Counters of the sink, for stats pages and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnalyticsSinkStats {
    /// Rows queued or being committed.
    pub queued_rows: u64,
    /// Transactions committed.
    pub commits: u64,
    /// Batches whose `Durable` completed.
    pub batches_completed: u64,
    /// Rows new to DuckDB (replayed ids are not counted).
    pub rows_added: u64,
    /// Failed commits (each is retried).
    pub failures: u64,
    /// The most recent failure, while commits keep failing.
    pub last_error: Option<String>,
}

/// Appends every batch's readings, telemetry and alerts to [`Analytics`], deduplicated,
/// group-committed (module docs), and completes a batch once the DuckDB transaction holding
/// it committed (DuckDB's WAL makes a commit durable). Dead letters, faults and quarantines
/// stay in the OLTP store only. Create it inside a tokio runtime: it spawns the committer,
/// which stops when the sink is dropped.
pub struct AnalyticsSink {
    inner: Arc<Inner>,
    committer: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for AnalyticsSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnalyticsSink")
            .field("analytics", &self.inner.analytics)
            .finish_non_exhaustive()
    }
}

impl Drop for AnalyticsSink {
    fn drop(&mut self) {
        self.committer.abort();
    }
}

struct Inner {
    analytics: Analytics,
    queue: Mutex<Queue>,
    /// Rows the queue may still take; a batch holds its share until it is committed.
    space: Arc<Semaphore>,
    max_queued_rows: usize,
    /// Wakes the committer (a batch was queued).
    wake: Notify,
    /// Signalled after every commit attempt, successful or not.
    progress: Notify,
    commits: AtomicU64,
    batches_completed: AtomicU64,
    rows_added: AtomicU64,
    failures: AtomicU64,
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Queued>,
    /// Batches taken by the committer and not yet committed or put back.
    in_flight: usize,
    rows: u64,
    last_error: Option<String>,
}

/// One accepted batch: the rows DuckDB keeps and what completes when they are committed.
struct Queued {
    rows: WriteBatch,
    durable: Durable,
    permit: OwnedSemaphorePermit,
}

fn row_count(b: &WriteBatch) -> usize {
    b.readings.len() + b.alerts.len()
}

impl AnalyticsSink {
    pub fn new(analytics: Analytics) -> Self {
        AnalyticsSink::with_max_queued_rows(analytics, DEFAULT_MAX_QUEUED_ROWS)
    }

    /// A sink whose queue holds at most `max_queued_rows` rows (a larger batch is taken
    /// alone once the queue is empty).
    pub fn with_max_queued_rows(analytics: Analytics, max_queued_rows: usize) -> Self {
        let max_queued_rows =
            max_queued_rows.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
        let inner = Arc::new(Inner {
            analytics,
            queue: Mutex::new(Queue::default()),
            space: Arc::new(Semaphore::new(max_queued_rows)),
            max_queued_rows,
            wake: Notify::new(),
            progress: Notify::new(),
            commits: AtomicU64::new(0),
            batches_completed: AtomicU64::new(0),
            rows_added: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        });
        let committer = tokio::spawn(commit_forever(inner.clone()));
        AnalyticsSink { inner, committer }
    }

    pub fn analytics(&self) -> &Analytics {
        &self.inner.analytics
    }

    pub fn stats(&self) -> AnalyticsSinkStats {
        let i = &self.inner;
        let q = lock(&i.queue);
        AnalyticsSinkStats {
            queued_rows: q.rows,
            commits: i.commits.load(Ordering::Relaxed),
            batches_completed: i.batches_completed.load(Ordering::Relaxed),
            rows_added: i.rows_added.load(Ordering::Relaxed),
            failures: i.failures.load(Ordering::Relaxed),
            last_error: q.last_error.clone(),
        }
    }
}

impl StorageSink for AnalyticsSink {
    fn name(&self) -> &'static str {
        NAME
    }

    /// DuckDB is its own record: resume at the newest receive time it holds, per table.
    fn resume_cursor(
        &self,
    ) -> crate::sinks::BoxFuture<'_, Result<Option<crate::model::batch::FeedCursor>, SinkError>>
    {
        Box::pin(async move {
            let a = &self.inner.analytics;
            let err = |e: AnalyticsError| SinkError {
                sink: NAME,
                message: e.to_string(),
            };
            Ok(Some(crate::model::batch::FeedCursor {
                glucose: a.start_cursor(Table::GlucoseReadings).await.map_err(err)?,
                device: a.start_cursor(Table::DeviceReadings).await.map_err(err)?,
                alerts: a.start_cursor(Table::Alerts).await.map_err(err)?,
            }))
        })
    }

    fn status(&self) -> SinkStatus {
        let s = self.stats();
        SinkStatus {
            name: NAME,
            pending_rows: s.queued_rows,
            batches_completed: s.batches_completed,
            failures: s.failures,
            last_error: s.last_error,
        }
    }

    /// Queues the batch (waiting while the queue is full) and returns; its `Durable`
    /// completes after the commit that carries it.
    fn write<'a>(
        &'a self,
        batch: &'a WriteBatch,
        durable: Durable,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            let n = row_count(batch);
            if n == 0 {
                durable.complete();
                self.inner.batches_completed.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            let permits = n.min(self.inner.max_queued_rows) as u32;
            let permit = self
                .inner
                .space
                .clone()
                .acquire_many_owned(permits)
                .await
                .expect("the sink's semaphore is never closed");
            // Only what DuckDB keeps is queued.
            let rows = WriteBatch {
                readings: batch.readings.clone(),
                alerts: batch.alerts.clone(),
                received_at_ms: batch.received_at_ms,
                ..WriteBatch::default()
            };
            {
                let mut q = lock(&self.inner.queue);
                q.rows += n as u64;
                q.waiting.push_back(Queued {
                    rows,
                    durable,
                    permit,
                });
            }
            self.inner.wake.notify_one();
            Ok(())
        })
    }

    /// Waits until every queued batch is committed, then checkpoints (folds the WAL into the
    /// file). Fails, naming the last error, if the queue does not drain in time.
    fn flush(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let deadline = tokio::time::Instant::now() + FLUSH_TIMEOUT;
            let drained = || {
                let q = lock(&inner.queue);
                q.waiting.is_empty() && q.in_flight == 0
            };
            if !wait_drained(&inner.progress, deadline, drained, || {}).await {
                let q = lock(&inner.queue);
                return Err(SinkError {
                    sink: NAME,
                    message: format!(
                        "{} rows not committed within {} s (last error: {}); they will not be \
                         acknowledged",
                        q.rows,
                        FLUSH_TIMEOUT.as_secs(),
                        q.last_error.as_deref().unwrap_or("none")
                    ),
                });
            }
            let analytics = inner.analytics.clone();
            tokio::task::spawn_blocking(move || analytics.checkpoint())
                .await
                .map_err(|e| {
                    sink_error(
                        "checkpoint task failed",
                        &AnalyticsError::Worker(e.to_string()),
                    )
                })?
                .map_err(|e| sink_error("checkpoint", &e))
        })
    }
}

fn sink_error(what: &str, e: &AnalyticsError) -> SinkError {
    SinkError {
        sink: NAME,
        message: format!("{what}: {e}"),
    }
}

impl Inner {
    fn take_all(&self) -> Vec<Queued> {
        let mut q = lock(&self.queue);
        let taken: Vec<Queued> = q.waiting.drain(..).collect();
        q.in_flight = taken.len();
        taken
    }

    /// A failed commit's batches go back in front of anything queued since, in order.
    fn put_back(&self, taken: Vec<Queued>, error: String) {
        let mut q = lock(&self.queue);
        q.in_flight = 0;
        for item in taken.into_iter().rev() {
            q.waiting.push_front(item);
        }
        q.last_error = Some(error);
    }

    fn committed(&self, taken: Vec<Queued>) {
        let rows: u64 = taken.iter().map(|t| row_count(&t.rows) as u64).sum();
        {
            let mut q = lock(&self.queue);
            q.in_flight = 0;
            q.rows -= rows;
            q.last_error = None;
        }
        let n = taken.len() as u64;
        for item in taken {
            item.durable.complete();
        }
        self.batches_completed.fetch_add(n, Ordering::Relaxed);
    }
}

/// The committer: takes everything queued, commits it in one transaction, completes it;
/// after a failure keeps it all and retries with capped backoff.
async fn commit_forever(inner: Arc<Inner>) {
    let mut backoff = RETRY_INITIAL;
    loop {
        let taken = inner.take_all();
        if taken.is_empty() {
            inner.wake.notified().await;
            continue;
        }
        // The rows cross into the blocking task by value and come back with the result, so a
        // failed commit still has them.
        let (rows, tails): (Vec<WriteBatch>, Vec<(Durable, OwnedSemaphorePermit)>) = taken
            .into_iter()
            .map(|q| (q.rows, (q.durable, q.permit)))
            .unzip();
        let analytics = inner.analytics.clone();
        let batches = rows.len();
        let queued: u64 = rows.iter().map(|b| row_count(b) as u64).sum();
        let task = tokio::task::spawn_blocking(move || {
            let result = analytics.append_batches(&rows);
            (rows, result)
        });
        let failure = match task.await {
            Ok((rows, Ok(added))) => {
                inner.commits.fetch_add(1, Ordering::Relaxed);
                inner.rows_added.fetch_add(
                    added.glucose_readings + added.device_readings + added.alerts,
                    Ordering::Relaxed,
                );
                tracing::debug!(
                    sink = NAME,
                    batches,
                    glucose = added.glucose_readings,
                    device = added.device_readings,
                    alerts = added.alerts,
                    "batches committed"
                );
                inner.committed(rejoin(rows, tails));
                None
            }
            Ok((rows, Err(e))) => {
                let message = format!("committing {batches} batches: {e}");
                inner.put_back(rejoin(rows, tails), message.clone());
                Some(message)
            }
            Err(e) => {
                // The blocking task panicked and took the rows with it: they cannot be
                // committed, so their batches are never acknowledged and their sources
                // redeliver them.
                let message = format!("committing {batches} batches: task failed: {e}");
                drop(tails);
                let mut q = lock(&inner.queue);
                q.in_flight = 0;
                q.rows = q.rows.saturating_sub(queued);
                q.last_error = Some(message.clone());
                Some(message)
            }
        };
        inner.progress.notify_waiters();
        match failure {
            None => backoff = RETRY_INITIAL,
            Some(message) => {
                inner.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(sink = NAME, error = %message, retry_in_ms = backoff.as_millis() as u64, "analytics commit failed; keeping the batches and retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
}

fn rejoin(rows: Vec<WriteBatch>, tails: Vec<(Durable, OwnedSemaphorePermit)>) -> Vec<Queued> {
    rows.into_iter()
        .zip(tails)
        .map(|(rows, (durable, permit))| Queued {
            rows,
            durable,
            permit,
        })
        .collect()
}
