//! [`ArchiveSink`]: the storage sink that buffers rows per partition and rolls them into the
//! archive, completing each batch's `Durable` once all of its rows are uploaded. See the
//! module docs (`archive/mod.rs`) for the policy.

use super::layout::{self, Partition};
use super::{ArchiveConfig, ArchiveError};
use crate::model::batch::WriteBatch;
use crate::sinks::{BoxFuture, Durable, SinkError, SinkStatus, StorageSink, lock, wait_drained};
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload, UpdateVersion};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError};

const NAME: &str = "archive";

/// Counters of one sink, for stats pages and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveStats {
    /// Rows buffered or being uploaded.
    pub buffered_rows: u64,
    /// Their estimated size.
    pub buffered_bytes: u64,
    /// Partitions with buffered rows (not counting those being uploaded).
    pub buffered_partitions: usize,
    /// Objects written.
    pub uploads: u64,
    /// Rows new to the archive in those objects.
    pub rows_added: u64,
    /// Parquet bytes written.
    pub bytes_uploaded: u64,
    /// Rolls of a partition whose rows were all archived already (a replay): nothing written.
    pub unchanged: u64,
    /// Failed rolls of a partition (each is retried).
    pub failures: u64,
    /// Conditional writes that lost a race with another writer and merged again.
    pub conflicts: u64,
    /// Batches whose `Durable` completed.
    pub batches_completed: u64,
    /// The most recent failure, if the last roll failed.
    pub last_error: Option<String>,
}

/// The archive as a storage sink. Create it inside a tokio runtime: it spawns the task that
/// rolls partitions by age, which stops when the sink is dropped.
pub struct ArchiveSink {
    inner: Arc<Inner>,
    roller: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ArchiveSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveSink")
            .field("store", &self.inner.store.to_string())
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl Drop for ArchiveSink {
    fn drop(&mut self) {
        self.roller.abort();
    }
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    cfg: ArchiveConfig,
    state: Mutex<State>,
    /// Estimated bytes the buffer may still take; a batch holds its share until its
    /// `Durable` completes.
    space: Arc<Semaphore>,
    /// Writers waiting for space: the roller then rolls everything.
    waiting: AtomicUsize,
    /// Wakes the roller early (a partition is full, a writer waits, a flush started).
    wake: Notify,
    /// Signalled after every roll, successful or not.
    progress: Notify,
    /// Whether conditional updates are still believed to work on this store.
    conditional: AtomicBool,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    uploads: AtomicU64,
    rows_added: AtomicU64,
    bytes_uploaded: AtomicU64,
    unchanged: AtomicU64,
    failures: AtomicU64,
    conflicts: AtomicU64,
    batches_completed: AtomicU64,
}

#[derive(Default)]
struct State {
    parts: BTreeMap<Partition, Part>,
    /// Partitions taken by the roller and not yet uploaded or put back.
    in_flight: usize,
    /// `flush` calls in progress: roll everything regardless of age.
    flushing: usize,
    buffered_rows: u64,
    buffered_bytes: u64,
    last_error: Option<String>,
}

/// A partition's buffered rows with the batches waiting on them.
struct Part {
    batches: Vec<Arc<WriteBatch>>,
    pending: Vec<Arc<Pending>>,
    rows: usize,
    bytes: usize,
    /// When its oldest buffered row arrived.
    since: Instant,
}

/// One written batch: completed when every partition holding its rows is uploaded.
struct Pending {
    remaining: AtomicUsize,
    durable: Mutex<Option<Durable>>,
    permit: Mutex<Option<OwnedSemaphorePermit>>,
}

impl Pending {
    /// One more of its partitions is uploaded; returns whether that was the last.
    fn uploaded(&self) -> bool {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) != 1 {
            return false;
        }
        drop(lock(&self.permit).take());
        if let Some(d) = lock(&self.durable).take() {
            d.complete();
        }
        true
    }
}

impl ArchiveSink {
    /// A sink writing into `store` with the roll policy and prefix of `cfg` (its backend is
    /// not looked at: `store` is usually [`super::build_store`]`(cfg)`).
    pub fn new(store: Arc<dyn ObjectStore>, cfg: &ArchiveConfig) -> ArchiveSink {
        let buffer = cfg.max_buffer_bytes.clamp(1, u64::from(u32::MAX)) as usize;
        let inner = Arc::new(Inner {
            store,
            prefix: cfg.prefix.clone(),
            cfg: cfg.clone(),
            state: Mutex::new(State::default()),
            space: Arc::new(Semaphore::new(buffer)),
            waiting: AtomicUsize::new(0),
            wake: Notify::new(),
            progress: Notify::new(),
            conditional: AtomicBool::new(true),
            counters: Counters::default(),
        });
        let roller = tokio::spawn(roll_forever(inner.clone()));
        ArchiveSink { inner, roller }
    }

    /// Builds the store `cfg` names (secrets from the environment), checks that it answers
    /// (credentials, container), and starts a sink on it.
    pub async fn connect(cfg: &ArchiveConfig) -> Result<ArchiveSink, ArchiveError> {
        let store = super::build_store(cfg)?;
        let prefix = object_store::path::Path::from(cfg.prefix.as_str());
        store.list_with_delimiter(Some(&prefix)).await?;
        Ok(ArchiveSink::new(store, cfg))
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    pub fn stats(&self) -> ArchiveStats {
        let c = &self.inner.counters;
        let st = lock(&self.inner.state);
        ArchiveStats {
            buffered_rows: st.buffered_rows,
            buffered_bytes: st.buffered_bytes,
            buffered_partitions: st.parts.len(),
            uploads: c.uploads.load(Ordering::Relaxed),
            rows_added: c.rows_added.load(Ordering::Relaxed),
            bytes_uploaded: c.bytes_uploaded.load(Ordering::Relaxed),
            unchanged: c.unchanged.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            conflicts: c.conflicts.load(Ordering::Relaxed),
            batches_completed: c.batches_completed.load(Ordering::Relaxed),
            last_error: st.last_error.clone(),
        }
    }

    /// Buffers a batch; waits while the buffer is full. Infallible otherwise: a failed upload
    /// is retried inside the sink.
    async fn accept(&self, batch: &WriteBatch, durable: Durable) {
        let parts = layout::split(batch);
        if parts.is_empty() {
            durable.complete();
            self.inner
                .counters
                .batches_completed
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        let sized: Vec<(Partition, WriteBatch, usize, usize)> = parts
            .into_iter()
            .map(|(p, b)| {
                let bytes = layout::estimate_bytes(&b);
                let rows = layout::rows(&b);
                (p, b, rows, bytes)
            })
            .collect();
        let bytes: usize = sized.iter().map(|s| s.3).sum();
        let permit = self.inner.reserve(bytes).await;
        let pending = Arc::new(Pending {
            remaining: AtomicUsize::new(sized.len()),
            durable: Mutex::new(Some(durable)),
            permit: Mutex::new(Some(permit)),
        });
        let now = Instant::now();
        let mut full = false;
        {
            let mut st = lock(&self.inner.state);
            for (p, b, rows, bytes) in sized {
                st.buffered_rows += rows as u64;
                st.buffered_bytes += bytes as u64;
                let part = st.parts.entry(p).or_insert_with(|| Part {
                    batches: Vec::new(),
                    pending: Vec::new(),
                    rows: 0,
                    bytes: 0,
                    since: now,
                });
                part.batches.push(Arc::new(b));
                part.pending.push(pending.clone());
                part.rows += rows;
                part.bytes += bytes;
                full |= self.inner.is_full(part);
            }
        }
        if full {
            self.inner.wake.notify_one();
        }
    }
}

impl StorageSink for ArchiveSink {
    fn name(&self) -> &'static str {
        NAME
    }

    fn status(&self) -> SinkStatus {
        let s = self.stats();
        SinkStatus {
            name: NAME,
            pending_rows: s.buffered_rows,
            batches_completed: s.batches_completed,
            failures: s.failures,
            last_error: s.last_error,
        }
    }

    fn write<'a>(
        &'a self,
        batch: &'a WriteBatch,
        durable: Durable,
    ) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(async move {
            self.accept(batch, durable).await;
            Ok(())
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        Box::pin(async move {
            let inner = &self.inner;
            let _flushing = Flushing::start(inner);
            let deadline =
                tokio::time::Instant::now() + Duration::from_secs(inner.cfg.flush_timeout_secs);
            let drained = || {
                let st = lock(&inner.state);
                st.parts.is_empty() && st.in_flight == 0
            };
            if wait_drained(&inner.progress, deadline, drained, || {
                inner.wake.notify_one()
            })
            .await
            {
                return Ok(());
            }
            let st = lock(&inner.state);
            Err(SinkError {
                sink: NAME,
                message: format!(
                    "{} rows not uploaded within {} s (last error: {}); they will not be \
                     acknowledged",
                    st.buffered_rows,
                    inner.cfg.flush_timeout_secs,
                    st.last_error.as_deref().unwrap_or("none")
                ),
            })
        })
    }
}

/// Marks a flush in progress for as long as it lives.
struct Flushing<'a>(&'a Inner);

impl<'a> Flushing<'a> {
    fn start(inner: &'a Inner) -> Self {
        lock(&inner.state).flushing += 1;
        inner.wake.notify_one();
        Flushing(inner)
    }
}

impl Drop for Flushing<'_> {
    fn drop(&mut self) {
        lock(&self.0.state).flushing -= 1;
    }
}

/// Counts a writer waiting for buffer space for as long as it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Inner {
    fn is_full(&self, part: &Part) -> bool {
        part.rows >= self.cfg.max_rows || part.bytes as u64 >= self.cfg.max_bytes
    }

    /// Takes `bytes` of buffer space (at most the whole buffer), waiting while it is full.
    async fn reserve(&self, bytes: usize) -> OwnedSemaphorePermit {
        let n = bytes.clamp(1, self.cfg.max_buffer_bytes as usize) as u32;
        match self.space.clone().try_acquire_many_owned(n) {
            Ok(p) => p,
            Err(TryAcquireError::NoPermits) => {
                self.waiting.fetch_add(1, Ordering::AcqRel);
                let _waiting = Waiting(&self.waiting);
                self.wake.notify_one();
                tracing::debug!(bytes, "archive buffer full; write waits for an upload");
                self.space
                    .clone()
                    .acquire_many_owned(n)
                    .await
                    .expect("the archive's semaphore is never closed")
            }
            Err(TryAcquireError::Closed) => unreachable!("the archive's semaphore is never closed"),
        }
    }

    /// Removes the partitions due for a roll: full, old, or all of them when a flush or a
    /// waiting writer asks.
    fn take_due(&self) -> Vec<(Partition, Part)> {
        let mut st = lock(&self.state);
        let everything = st.flushing > 0 || self.waiting.load(Ordering::Acquire) > 0;
        let max_age = self.cfg.max_age();
        let now = Instant::now();
        let due: Vec<Partition> = st
            .parts
            .iter()
            .filter(|(_, p)| {
                everything || self.is_full(p) || now.duration_since(p.since) >= max_age
            })
            .map(|(k, _)| *k)
            .collect();
        let taken: Vec<(Partition, Part)> = due
            .into_iter()
            .filter_map(|k| st.parts.remove(&k).map(|p| (k, p)))
            .collect();
        st.in_flight += taken.len();
        taken
    }

    /// How long until the oldest buffered partition is due by age (at most a second, so a
    /// changed clock or a missed wake-up costs little).
    fn until_next_due(&self) -> Duration {
        let st = lock(&self.state);
        let max_age = self.cfg.max_age();
        st.parts
            .values()
            .map(|p| (p.since + max_age).saturating_duration_since(Instant::now()))
            .min()
            .unwrap_or(Duration::MAX)
            .clamp(Duration::from_millis(5), Duration::from_secs(1))
    }

    /// A failed partition goes back in front of anything buffered for it since.
    fn put_back(&self, key: Partition, mut part: Part) {
        let mut st = lock(&self.state);
        st.in_flight -= 1;
        if let Some(newer) = st.parts.remove(&key) {
            part.batches.extend(newer.batches);
            part.pending.extend(newer.pending);
            part.rows += newer.rows;
            part.bytes += newer.bytes;
        }
        st.parts.insert(key, part);
    }

    fn uploaded(&self, part: Part) {
        {
            let mut st = lock(&self.state);
            st.in_flight -= 1;
            st.buffered_rows -= part.rows as u64;
            st.buffered_bytes -= part.bytes as u64;
            st.last_error = None;
        }
        let completed = part.pending.iter().filter(|p| p.uploaded()).count();
        self.counters
            .batches_completed
            .fetch_add(completed as u64, Ordering::Relaxed);
    }

    /// Merges a partition's buffered rows into its object and writes it back, conditionally
    /// where the store can.
    async fn roll(&self, key: Partition, part: &Part) -> Result<(), ArchiveError> {
        let path = key.object_path(&self.prefix);
        let mut conflicts = 0;
        loop {
            let (existing, version) = match self.store.get(&path).await {
                Ok(got) => {
                    let version = UpdateVersion {
                        e_tag: got.meta.e_tag.clone(),
                        version: got.meta.version.clone(),
                    };
                    (Some(got.bytes().await?), Some(version))
                }
                Err(object_store::Error::NotFound { .. }) => (None, None),
                Err(e) => return Err(e.into()),
            };
            let batches = part.batches.clone();
            let table = key.table;
            let merged = tokio::task::spawn_blocking(move || {
                layout::merge(table, existing.as_deref(), &batches)
            })
            .await
            .map_err(|e| ArchiveError::Worker(e.to_string()))??;
            if !merged.changed {
                self.counters.unchanged.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            let conditional = self.conditional.load(Ordering::Relaxed);
            let mode = match version {
                None => PutMode::Create,
                Some(v) if conditional && (v.e_tag.is_some() || v.version.is_some()) => {
                    PutMode::Update(v)
                }
                Some(_) => PutMode::Overwrite,
            };
            let updating = matches!(mode, PutMode::Update(_));
            let size = merged.bytes.len() as u64;
            let started = Instant::now();
            match self
                .store
                .put_opts(
                    &path,
                    PutPayload::from(merged.bytes),
                    PutOptions::from(mode),
                )
                .await
            {
                Ok(_) => {
                    let c = &self.counters;
                    c.uploads.fetch_add(1, Ordering::Relaxed);
                    c.rows_added.fetch_add(merged.added, Ordering::Relaxed);
                    c.bytes_uploaded.fetch_add(size, Ordering::Relaxed);
                    tracing::debug!(object = %path, rows = merged.rows, added = merged.added, bytes = size, put_ms = started.elapsed().as_millis() as u64, "archive object written");
                    return Ok(());
                }
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) if conflicts < 20 => {
                    conflicts += 1;
                    self.counters.conflicts.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(object = %path, "archive object changed by another writer; merging again");
                }
                Err(
                    object_store::Error::NotImplemented | object_store::Error::NotSupported { .. },
                ) if updating => {
                    self.conditional.store(false, Ordering::Relaxed);
                    tracing::info!(store = %self.store, "the archive store cannot update conditionally; overwriting (single writer assumed)");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// The roller: takes due partitions, uploads them one by one, and backs off after a failure
/// (keeping everything) until the store answers again.
async fn roll_forever(inner: Arc<Inner>) {
    let initial = Duration::from_millis(inner.cfg.retry_initial_ms);
    let max = Duration::from_millis(inner.cfg.retry_max_ms);
    let mut backoff = initial;
    loop {
        let due = inner.take_due();
        if due.is_empty() {
            tokio::select! {
                () = inner.wake.notified() => {}
                () = tokio::time::sleep(inner.until_next_due()) => {}
            }
            continue;
        }
        let started = Instant::now();
        let n = due.len();
        let mut failed: Option<ArchiveError> = None;
        for (key, part) in due {
            if failed.is_some() {
                inner.put_back(key, part);
                continue;
            }
            match inner.roll(key, &part).await {
                Ok(()) => inner.uploaded(part),
                Err(e) => {
                    inner.counters.failures.fetch_add(1, Ordering::Relaxed);
                    lock(&inner.state).last_error = Some(e.to_string());
                    inner.put_back(key, part);
                    failed = Some(e);
                }
            }
        }
        inner.progress.notify_waiters();
        match failed {
            None => {
                tracing::debug!(
                    partitions = n,
                    ms = started.elapsed().as_millis() as u64,
                    "archive roll done"
                );
                backoff = initial;
            }
            Some(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "archive upload failed; keeping the rows and retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max);
            }
        }
    }
}
