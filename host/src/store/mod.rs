//! The OLTP store interface: readings, alerts and their lifecycle, rules and rule versions,
//! faults and dead letters. SQLite is the embedded default, MySQL / MariaDB (`mysql`) the
//! production engine; both implement the same [`Store`] trait and run the same test suite
//! (`tests/it/store.rs`, `tests/it/mariadb.rs`).
//!
//! Every write is idempotent: replaying a batch changes nothing.

pub mod accounts;
pub mod alerts;
pub mod directory;
pub mod history;
pub mod ingest;
pub mod mysql;
pub mod ops;
pub mod rows;
pub mod rules;
pub mod sql;
pub mod sqlite;

use crate::model::{Alert, EpochMs, ParamValue, Reading, ReadingKind, RuleInfo};
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
    /// Who uploaded it (the audit actor), when known.
    pub uploaded_by: Option<String>,
}

/// A rule's current configuration: which version runs, whether it is on, with what params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    pub name: String,
    pub active_version: String,
    pub enabled: bool,
    pub params: BTreeMap<String, ParamValue>,
    pub updated_at_ms: EpochMs,
    /// A candidate version running in shadow beside the active one: evaluated on the live
    /// stream, its alerts recorded apart (`ShadowAlerts`) and never notified.
    #[serde(default)]
    pub shadow: Option<ShadowState>,
    /// Which patients the rule (and its shadow) evaluates; every patient by default.
    #[serde(default)]
    pub scope: RuleScope,
}

/// The readings a rule evaluates. A scoped rule sees the glucose readings of its patients
/// and the telemetry of their devices; nothing else reaches it. Profiles and devices are
/// resolved against the directory whenever the rule set is built, and the admin rebuilds
/// it after every patient or device change, so a patient given a profile is covered from
/// the next batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleScope {
    /// Every patient and device, known to the directory or not.
    /// (A struct variant, so that stray fields are refused like in the others.)
    All {},
    /// Patients whose directory profile is one of these (exact, case-sensitive).
    Profiles { profiles: Vec<String> },
    /// These patients.
    Patients { patients: Vec<u64> },
}

impl Default for RuleScope {
    fn default() -> Self {
        RuleScope::All {}
    }
}

impl RuleScope {
    pub fn is_all(&self) -> bool {
        matches!(self, RuleScope::All {})
    }
}

/// A version in shadow and its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowState {
    pub version: String,
    pub params: BTreeMap<String, ParamValue>,
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

/// Ingest and catch-up: what the pipeline and the storage feeds need. The admin holds none
/// of it: it cannot write reading batches.
pub trait IngestStore: Send + Sync + 'static {
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

    /// The readings of these patients (glucose) and devices (telemetry) with event time in
    /// (`since_ms`, `until_ms`], in no particular order.
    fn subject_readings<'a>(
        &'a self,
        patients: &'a [u64],
        devices: &'a [u64],
        since_ms: EpochMs,
        until_ms: EpochMs,
    ) -> BoxFuture<'a, Result<Vec<Reading>, StoreError>>;

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

    /// A source's recorded upstream position (its own JSON) under `key` (at most 64 ASCII
    /// bytes), e.g. an Event Hubs partition's last durable offset and sequence number. Kept
    /// in the sink cursors' table; keys start with `src:` so they never meet a sink's name.
    fn source_checkpoint<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>>;

    fn put_source_checkpoint<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// Retention: the only deletes of raw data. The admin holds none of it.
pub trait RetentionStore: Send + Sync + 'static {
    /// Deletes raw readings and telemetry with event time before `before_ms`, in bounded
    /// chunks so writers are never locked out for long. Alerts stay. With `kept_by`, only
    /// rows received before that cursor (per stream) go: what a downstream copy (the archive)
    /// has not confirmed yet stays.
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
}

pub use accounts::AccountStore;
pub use alerts::AlertStore;
pub use directory::DirectoryStore;
pub use history::HistoryStore;
pub use ops::OpsStore;
pub use rules::RuleStore;

/// What the admin API may do with the store: rules, the directory, alerts and their
/// lifecycle, accounts and audit, operations and reading history, and nothing else.
pub trait AdminStore:
    RuleStore + DirectoryStore + AlertStore + AccountStore + OpsStore + HistoryStore
{
}
impl<T: RuleStore + DirectoryStore + AlertStore + AccountStore + OpsStore + HistoryStore> AdminStore
    for T
{
}

/// Every role: what the host as a whole opens. Parts of the host are handed the narrower
/// role they need (`Arc<dyn AdminStore>` for the admin API).
pub trait Store: IngestStore + RetentionStore + AdminStore {}
impl<T: IngestStore + RetentionStore + AdminStore> Store for T {}

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

/// Every role trait, for code that calls store methods on a concrete engine.
pub mod prelude {
    pub use super::{
        AccountStore, AdminStore, AlertStore, DirectoryStore, HistoryStore, IngestStore, OpsStore,
        RetentionStore, RuleStore, Store,
    };
}
