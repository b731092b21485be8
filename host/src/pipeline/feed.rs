//! Feeding the storage sinks (analytics, archive) from the OLTP store, which is the log.
//!
//! The pipeline decides, stores and notifies alerts and acknowledges the sources as soon as
//! the OLTP commit is done; it never waits for a storage sink. One feeder task per sink pages
//! the store's three streams (glucose readings, device telemetry, alerts) in (received time,
//! id) order from the sink's cursor, hands the rows to the sink grouped by receive time (one
//! group per pipeline batch), and advances the cursor over the contiguous prefix the sink
//! reports durable. The confirmed cursor is kept in the store (`SinkCursors`), so a restart
//! resumes where the sink was and a sink that is down only falls behind: memory stays bounded
//! (one page in hand, the sink's own bounded buffer) and nothing is lost. Retention is bounded
//! by the archive's confirmed cursor.

use crate::model::batch::{AlertStatus, Cursor, FeedCursor, WriteBatch};
use crate::model::{Alert, EpochMs, ReadingKind, now_ms};
use crate::sinks::{Durable, StorageSink};
use crate::store::{Received, Store};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Rows read from the store per stream and page.
pub const PAGE_ROWS: u32 = 2_000;
/// How often a moving cursor is written to the store at most.
const PERSIST_EVERY: Duration = Duration::from_millis(250);
/// How long a feeder waits, on shutdown, for its sink to make the last rows durable.
const FINAL_WAIT: Duration = Duration::from_secs(30);

/// How far a sink has caught up, for `/health` and `/api/sinks`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FeedStatus {
    pub sink: &'static str,
    /// Receive time of the newest row the sink confirmed durable (0: none yet).
    pub confirmed_received_at_ms: EpochMs,
    /// Groups of rows handed to the sink and not yet confirmed durable.
    pub unconfirmed_groups: usize,
    /// Store reads or sink writes that failed (each retried with backoff).
    pub failures: u64,
    /// The most recent failure, while failing.
    pub last_error: Option<String>,
    /// The sink has everything the store held at its last look.
    pub caught_up: bool,
}

/// Which of the store's streams a page comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Glucose,
    Device,
    Alerts,
}

impl Stream {
    const ALL: [Stream; 3] = [Stream::Glucose, Stream::Device, Stream::Alerts];

    fn of(self, c: &FeedCursor) -> &Cursor {
        match self {
            Stream::Glucose => &c.glucose,
            Stream::Device => &c.device,
            Stream::Alerts => &c.alerts,
        }
    }

    fn of_mut(self, c: &mut FeedCursor) -> &mut Cursor {
        match self {
            Stream::Glucose => &mut c.glucose,
            Stream::Device => &mut c.device,
            Stream::Alerts => &mut c.alerts,
        }
    }
}

/// A group handed to the sink: done once the sink completed its `Durable`.
struct InFlight {
    stream: Stream,
    end: Cursor,
    done: Arc<AtomicBool>,
}

/// One sink's feeder.
pub(crate) struct Feeder {
    pub sink: Arc<dyn StorageSink>,
    pub store: Arc<dyn Store>,
    /// Bumped after every store commit: new rows may be there.
    pub commits: watch::Receiver<u64>,
    /// Set when the pipeline has drained: feed what is left, flush, stop.
    pub stop: watch::Receiver<bool>,
    pub status: Arc<Mutex<FeedStatus>>,
    pub page_rows: u32,
}

impl Feeder {
    pub(crate) async fn run(mut self) {
        let name = self.sink.name();
        let mut cursor = self.resume().await;
        let mut confirmed = cursor.clone();
        let mut persisted = cursor.clone();
        let mut last_persist = tokio::time::Instant::now();
        let mut in_flight: VecDeque<InFlight> = VecDeque::new();
        let progress = Arc::new(Notify::new());
        let mut delay = Duration::from_millis(50);
        loop {
            let stopping = *self.stop.borrow();
            // Read every stream once; remember whether any page was full.
            let mut read_any = false;
            let mut failed = false;
            for stream in Stream::ALL {
                match self.page(stream, stream.of(&cursor)).await {
                    Ok(groups) => {
                        for (end, batch) in groups {
                            read_any = true;
                            let done = Arc::new(AtomicBool::new(false));
                            let flag = done.clone();
                            let wake = progress.clone();
                            let durable = Durable::new(move || {
                                flag.store(true, Ordering::Release);
                                wake.notify_one();
                            });
                            self.write(&batch, durable).await;
                            in_flight.push_back(InFlight {
                                stream,
                                end: end.clone(),
                                done,
                            });
                            *stream.of_mut(&mut cursor) = end;
                        }
                    }
                    Err(e) => {
                        failed = true;
                        self.failed(format!("store read: {e}"));
                    }
                }
            }
            advance(&mut in_flight, &mut confirmed);
            if confirmed != persisted
                && (last_persist.elapsed() >= PERSIST_EVERY || !read_any)
                && self.persist(&confirmed).await
            {
                persisted = confirmed.clone();
                last_persist = tokio::time::Instant::now();
            }
            self.publish(&confirmed, in_flight.len(), !read_any && !failed);
            if failed {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
            delay = Duration::from_millis(50);
            if read_any {
                continue;
            }
            if stopping {
                break;
            }
            // Caught up: wait for a commit, a completion, the stop signal or a tick.
            tokio::select! {
                _ = self.commits.changed() => {}
                _ = progress.notified() => {}
                _ = self.stop.changed() => {}
                _ = tokio::time::sleep(PERSIST_EVERY) => {}
            }
        }
        // Drained: make what the sink holds durable, then record how far it got.
        if let Err(e) = self.sink.flush().await {
            self.failed(format!("flush: {e}"));
            tracing::error!(sink = name, error = %e, "sink flush failed; it resumes from its cursor on the next start");
        }
        let deadline = tokio::time::Instant::now() + FINAL_WAIT;
        loop {
            advance(&mut in_flight, &mut confirmed);
            if in_flight.is_empty() || tokio::time::Instant::now() >= deadline {
                break;
            }
            let _ = tokio::time::timeout_at(deadline, progress.notified()).await;
        }
        if confirmed != persisted {
            self.persist(&confirmed).await;
        }
        self.publish(&confirmed, in_flight.len(), in_flight.is_empty());
        tracing::info!(
            sink = name,
            unconfirmed = in_flight.len(),
            "sink feeder stopped"
        );
    }

    /// The sink's own record if it keeps one, else the cursor kept in the store, else the
    /// beginning. Retries until the store answers.
    async fn resume(&mut self) -> FeedCursor {
        let mut delay = Duration::from_millis(50);
        loop {
            let own = match self.sink.resume_cursor().await {
                Ok(c) => c,
                Err(e) => {
                    self.failed(format!("resume: {e}"));
                    None
                }
            };
            if let Some(c) = own {
                return c;
            }
            match self.store.sink_cursor(self.sink.name()).await {
                Ok(c) => return c.unwrap_or_default(),
                Err(e) => self.failed(format!("store read: {e}")),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// One page of `stream` after `from`, as groups of rows of one receive time, each with
    /// the cursor just after its last row.
    async fn page(
        &self,
        stream: Stream,
        from: &Cursor,
    ) -> Result<Vec<(Cursor, WriteBatch)>, crate::store::StoreError> {
        let n = self.page_rows.max(1);
        Ok(match stream {
            Stream::Glucose => group(
                self.store
                    .readings_since(ReadingKind::Glucose, from, n)
                    .await?,
                |r| r.id.as_str(),
                |b, r| b.readings.push(r),
            ),
            Stream::Device => group(
                self.store
                    .readings_since(ReadingKind::Device, from, n)
                    .await?,
                |r| r.id.as_str(),
                |b, r| b.readings.push(r),
            ),
            Stream::Alerts => group(
                self.store.alerts_since(from, n).await?,
                |(a, _): &(Alert, AlertStatus)| a.id.as_str(),
                |b, a| b.alerts.push(a),
            ),
        })
    }

    /// Hands a group to the sink, retrying with backoff until it accepts it: a sink that is
    /// down holds up only its own feeder.
    async fn write(&self, batch: &WriteBatch, durable: Durable) {
        let mut durable = Some(durable);
        let mut delay = Duration::from_millis(50);
        loop {
            let d = durable.take().expect("a handle per attempt");
            // A refused write drops its handle uncompleted; retry with a fresh one that
            // completes the same flag.
            let (retry, handle) = split(d);
            match self.sink.write(batch, handle).await {
                Ok(()) => return,
                Err(e) => {
                    self.failed(e.to_string());
                    tracing::warn!(sink = self.sink.name(), error = %e, retry_in_ms = delay.as_millis() as u64, "sink write failed; retrying");
                    durable = Some(retry);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn persist(&self, cursor: &FeedCursor) -> bool {
        match self.store.put_sink_cursor(self.sink.name(), cursor).await {
            Ok(()) => true,
            Err(e) => {
                self.failed(format!("store write: {e}"));
                false
            }
        }
    }

    fn failed(&self, error: String) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        s.failures += 1;
        s.last_error = Some(error);
        s.caught_up = false;
    }

    fn publish(&self, confirmed: &FeedCursor, unconfirmed: usize, caught_up: bool) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        s.confirmed_received_at_ms = Stream::ALL
            .iter()
            .map(|st| st.of(confirmed).received_at_ms)
            .max()
            .unwrap_or(0);
        s.unconfirmed_groups = unconfirmed;
        s.caught_up = caught_up && unconfirmed == 0;
        if caught_up {
            s.last_error = None;
        }
    }
}

/// Moves `confirmed` over the groups at the front that the sink completed, per stream. A
/// stream's cursor only passes a group once every earlier group of that stream is done.
fn advance(in_flight: &mut VecDeque<InFlight>, confirmed: &mut FeedCursor) {
    let mut blocked = [false; 3];
    let mut keep = VecDeque::with_capacity(in_flight.len());
    for g in in_flight.drain(..) {
        let i = g.stream as usize;
        if !blocked[i] && g.done.load(Ordering::Acquire) {
            *g.stream.of_mut(confirmed) = g.end;
        } else {
            blocked[i] = true;
            keep.push_back(g);
        }
    }
    *in_flight = keep;
}

/// Splits a `Durable` into two handles that both complete it: the first to complete wins.
fn split(d: Durable) -> (Durable, Durable) {
    let shared = Arc::new(Mutex::new(Some(d)));
    let other = shared.clone();
    let complete = move |m: &Mutex<Option<Durable>>| {
        if let Some(d) = m.lock().unwrap_or_else(|e| e.into_inner()).take() {
            d.complete();
        }
    };
    (
        Durable::new(move || complete(&shared)),
        Durable::new(move || complete(&other)),
    )
}

/// Groups consecutive rows of one receive time into batches stamped with it.
fn group<T>(
    rows: Vec<Received<T>>,
    id: impl Fn(&T) -> &str,
    mut push: impl FnMut(&mut WriteBatch, T),
) -> Vec<(Cursor, WriteBatch)> {
    let mut out: Vec<(Cursor, WriteBatch)> = Vec::new();
    for r in rows {
        let end = Cursor {
            received_at_ms: r.received_at_ms,
            id: id(&r.item).to_owned(),
        };
        match out.last_mut() {
            Some((c, b)) if b.received_at_ms == r.received_at_ms => {
                *c = end;
                push(b, r.item);
            }
            _ => {
                let mut b = WriteBatch {
                    received_at_ms: r.received_at_ms,
                    ..WriteBatch::default()
                };
                push(&mut b, r.item);
                out.push((end, b));
            }
        }
    }
    out
}

/// A commit counter the pipeline bumps; feeders watch it.
pub(crate) fn commits() -> (watch::Sender<u64>, watch::Receiver<u64>) {
    watch::channel(0)
}

/// Receive times a pipeline hands out: strictly increasing, so no batch is ever stamped
/// before one a feeder may already have read past.
#[derive(Debug, Default)]
pub(crate) struct ReceiveClock(EpochMs);

impl ReceiveClock {
    pub(crate) fn next(&mut self) -> EpochMs {
        self.0 = now_ms().max(self.0 + 1);
        self.0
    }
}
