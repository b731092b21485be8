//! The OLTP store interface: readings, alerts and their lifecycle, rules and rule versions,
//! faults and dead letters. SQLite is the embedded default, MySQL / MariaDB (`mysql`) the
//! production engine; both implement the same [`Store`] trait and run the same test suite
//! (`tests/it/store.rs`, `tests/it/mariadb.rs`).
//!
//! Every write is idempotent: replaying a batch changes nothing.

pub mod mysql;
pub mod rows;
pub mod sqlite;

use crate::model::dims::Dimensions;
use crate::model::{
    Alert, DeadLetter, EpochMs, ParamValue, Reading, ReadingKind, RuleFault, RuleInfo, RuleRef,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("{0}")]
    Conflict(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// The database server cannot be reached or refuses us; the message names the host.
    #[error("{0}")]
    Unavailable(String),
}

pub use crate::model::batch::{AlertStatus, Cursor, FeedCursor, WriteBatch};

/// A stored rule version (the Wasm itself is fetched separately by hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleVersionRecord {
    pub info: RuleInfo,
    pub sha256: String,
    pub quarantine_reason: Option<String>,
    pub uploaded_at_ms: EpochMs,
}

/// A rule's current configuration: which version runs, whether it is on, with what params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    pub name: String,
    pub active_version: String,
    pub enabled: bool,
    pub params: BTreeMap<String, ParamValue>,
    pub updated_at_ms: EpochMs,
}

/// Row counts, for tests, the demo summary and the admin UI.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub patients: u64,
    pub devices: u64,
    pub subscribers: u64,
    pub subscriptions: u64,
    pub glucose_readings: u64,
    pub device_readings: u64,
    pub alerts: u64,
    pub dead_letters: u64,
    pub rule_faults: u64,
}

pub trait Store: Send + Sync + 'static {
    /// Engine name for logs and errors, e.g. `sqlite`.
    fn kind(&self) -> &'static str;

    /// Makes a batch durable atomically; rows already present are left as they are. The
    /// outcome names the alerts this write stored for the first time (so a replayed alert is
    /// never notified again).
    fn write_batch<'a>(
        &'a self,
        batch: &'a WriteBatch,
    ) -> BoxFuture<'a, Result<WriteOutcome, StoreError>>;

    /// Readings with event time in (newest − lookback, newest], oldest first, for rebuilding
    /// windows on start, where `newest` is the newest stored reading's time not after
    /// `not_after_ms` (readings stored from a skewed clock further ahead are ignored).
    fn recent_readings(
        &self,
        lookback_ms: EpochMs,
        not_after_ms: EpochMs,
    ) -> BoxFuture<'_, Result<Vec<Reading>, StoreError>>;

    /// The stored readings (glucose or telemetry) with these ids, in no particular order:
    /// how the pipeline tells a duplicate (same content) from a conflict (same id, other
    /// content) before it evaluates a batch.
    fn readings_by_id<'a>(
        &'a self,
        ids: &'a [&'a str],
    ) -> BoxFuture<'a, Result<Vec<Reading>, StoreError>>;

    /// Alerts with event time after `since_ms` that were notified (any status but
    /// suppressed), oldest first: the suppression state a restart rebuilds.
    fn notified_alerts_since(
        &self,
        since_ms: EpochMs,
    ) -> BoxFuture<'_, Result<Vec<Alert>, StoreError>>;

    /// Stores a rule version. The same name and version with other bytes is a conflict:
    /// released versions are immutable.
    fn put_rule_version<'a>(
        &'a self,
        info: &'a RuleInfo,
        sha256: &'a str,
        wasm: &'a [u8],
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    fn rule_versions(&self) -> BoxFuture<'_, Result<Vec<RuleVersionRecord>, StoreError>>;

    fn rule_wasm<'a>(&'a self, rule: &'a RuleRef) -> BoxFuture<'a, Result<Vec<u8>, StoreError>>;

    fn put_rule_state<'a>(&'a self, state: &'a RuleState) -> BoxFuture<'a, Result<(), StoreError>>;

    fn rule_states(&self) -> BoxFuture<'_, Result<Vec<RuleState>, StoreError>>;

    /// Clears a version's quarantine so it can be enabled again.
    fn release_quarantine<'a>(&'a self, rule: &'a RuleRef)
    -> BoxFuture<'a, Result<(), StoreError>>;

    fn counts(&self) -> BoxFuture<'_, Result<Counts, StoreError>>;

    /// Upserts dimension rows (patients, manufacturers, devices, subscribers, subscriptions)
    /// in one transaction; rows already present are updated, never duplicated.
    fn put_dimensions<'a>(&'a self, dims: &'a Dimensions) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Newest first.
    fn dead_letters(&self, limit: u32) -> BoxFuture<'_, Result<Vec<DeadLetter>, StoreError>>;

    /// Newest first, with their lifecycle status.
    fn alerts(&self, limit: u32) -> BoxFuture<'_, Result<Vec<(Alert, AlertStatus)>, StoreError>>;

    /// Newest first.
    fn rule_faults(&self, limit: u32) -> BoxFuture<'_, Result<Vec<RuleFault>, StoreError>>;

    /// Up to `limit` readings of `kind` strictly after `after` in (received time, id) order:
    /// the pages downstream copies (analytics) catch up with.
    fn readings_since<'a>(
        &'a self,
        kind: ReadingKind,
        after: &'a Cursor,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<Received<Reading>>, StoreError>>;

    /// Up to `limit` alerts strictly after `after` in (creation time, id) order, with their
    /// lifecycle status.
    fn alerts_since<'a>(
        &'a self,
        after: &'a Cursor,
        limit: u32,
    ) -> BoxFuture<'a, Result<AlertPage, StoreError>>;

    /// Retention: deletes raw readings and telemetry with event time before `before_ms`, in
    /// bounded chunks so writers are never locked out for long. Alerts stay. With `kept_by`,
    /// only rows received before that cursor (per stream) go: what a downstream copy (the
    /// archive) has not confirmed yet stays.
    fn purge_readings_before<'a>(
        &'a self,
        before_ms: EpochMs,
        kept_by: Option<&'a FeedCursor>,
    ) -> BoxFuture<'a, Result<Purged, StoreError>>;

    /// Bounds the diagnostics tables: deletes dead letters and rule faults older than
    /// `before_ms`, and beyond the newest `keep_rows` of each.
    fn purge_diagnostics(
        &self,
        keep_rows: u64,
        before_ms: EpochMs,
    ) -> BoxFuture<'_, Result<PurgedDiagnostics, StoreError>>;

    /// How far a storage sink has confirmed copying the store, if it ever did.
    fn sink_cursor<'a>(
        &'a self,
        sink: &'a str,
    ) -> BoxFuture<'a, Result<Option<FeedCursor>, StoreError>>;

    /// Records how far a storage sink has confirmed copying the store.
    fn put_sink_cursor<'a>(
        &'a self,
        sink: &'a str,
        cursor: &'a FeedCursor,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// A round trip to the database (`SELECT 1`), for `/health` and `/ready`.
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// A stored row with the time the host received it, which orders catch-up paging.
#[derive(Debug, Clone, PartialEq)]
pub struct Received<T> {
    pub item: T,
    pub received_at_ms: EpochMs,
}

impl<T> Received<T> {
    /// The cursor just after this row, where the next page starts.
    pub fn cursor(&self, id: &str) -> Cursor {
        Cursor {
            received_at_ms: self.received_at_ms,
            id: id.to_owned(),
        }
    }
}

/// A catch-up page of alerts with their lifecycle status and creation time.
pub type AlertPage = Vec<Received<(Alert, AlertStatus)>>;

/// What a retention pass removed from the OLTP store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purged {
    pub glucose_readings: u64,
    pub device_readings: u64,
}

/// What one `write_batch` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteOutcome {
    /// Ids of the batch's alerts that were not stored before this write.
    pub new_alert_ids: std::collections::HashSet<String>,
}

/// What one diagnostics purge removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgedDiagnostics {
    pub dead_letters: u64,
    pub rule_faults: u64,
}

/// One schema migration: applied once, in order, recorded in `_glucoguard_migrations`.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}
