//! The long-term archive: Parquet files of readings, telemetry and alerts in an object store
//! (a local folder by default, Azure Blob Storage in production), and the restore of a period
//! back into DuckDB.
//!
//! # Layout
//!
//! One Parquet object per table and UTC hour of **event time** (`at_ms`; an alert's is its
//! reading's), hive-style so DuckDB, Spark or Synapse read the tree as one partitioned table:
//!
//! ```text
//! <prefix>/glucose_readings/date=2026-11-19/hour=10/data.parquet
//! <prefix>/device_readings/date=2026-11-19/hour=10/data.parquet
//! <prefix>/alerts/date=2026-11-19/hour=10/data.parquet
//! ```
//!
//! Columns are exactly [`crate::analytics::tables::Table::columns`] (the DuckDB analytics
//! layout), rows ordered by `(at_ms, id)`, ZSTD-compressed: a restore is
//! `INSERT … SELECT … FROM read_parquet(…)`.
//!
//! # Naming, replays and concurrent writers
//!
//! A replayed reading must not become a second row, however differently the replay is
//! batched. A name derived from the batch (a hash of its content, a sequence number) cannot
//! promise that, so the name is the partition's alone and every roll **merges**: it downloads
//! the partition's object if there is one, unions it with the buffered rows, keeps one row per
//! `id` (the row already archived wins, as in the OLTP store where a replay adds nothing; among
//! buffered rows the first buffered wins) and writes the object back. A roll whose rows are all
//! already archived writes nothing. The cost of a roll is the size of the partitions it
//! touches, which the hourly partitioning bounds (a day of one patient's CGM is 288 readings).
//!
//! Writes are conditional where the store can do it: the first object of a partition is
//! created with `If-None-Match: *` and later versions replace the one that was read
//! (`If-Match: <ETag>`), so two hosts archiving into one container never lose each other's
//! rows — a lost race simply merges again. The local folder cannot compare ETags
//! (`object_store` refuses conditional updates there), so it overwrites atomically
//! (staging file + rename) and assumes a single writer per folder, which a local folder is.
//!
//! # Rolls and acknowledgement latency
//!
//! The sink buffers rows per partition together with the [`crate::sinks::Durable`] of every
//! batch they came from. A partition is rolled (merged and uploaded) when it holds
//! `max_rows` rows or an estimated `max_bytes`, or when its oldest row has waited
//! `max_age_secs`; `flush` rolls everything. A batch's `Durable` completes once every
//! partition holding its rows is uploaded, and only then are its source items acknowledged.
//!
//! So `max_age_secs` is the trade-off: sources hold their unacknowledged items (and
//! producers see no HTTP response) for up to that long plus one upload, in exchange for fewer,
//! larger writes. The default (10 s) keeps acknowledgement latency short at the cost of
//! rewriting the current hour's object every 10 s while data flows; raise it when producers
//! tolerate a slower acknowledgement, lower it (≥ 1 s) when they do not.
//!
//! # Failures and backpressure
//!
//! A failed roll (store unreachable, refused) keeps its rows and `Durable`s, and is retried
//! with capped exponential backoff (`retry_initial_ms` … `retry_max_ms`); nothing is dropped
//! and nothing is acknowledged meanwhile. The buffer is bounded by `max_buffer_bytes`
//! (estimated): a `write` that would exceed it waits, and everything buffered is rolled at
//! once, so a long outage stops the pipeline and reaches the sources as backpressure rather
//! than growing memory. `flush` (shutdown) waits up to `flush_timeout_secs`; what is still not
//! uploaded then is simply not acknowledged, and the sources send it again.

mod config;
mod layout;
mod restore;
mod sink;

pub use config::{
    ArchiveConfig, AzureBackend, Backend, azure_store, build_store, build_store_with,
};
pub use layout::{OBJECT_NAME, Partition};
pub use restore::{Fetched, Period, RestoreReport, fetch, restore};
pub use sink::{ArchiveSink, ArchiveStats};

/// What can go wrong talking to the archive. Messages never carry a secret: `object_store`
/// redacts signed URLs, and [`redact`] removes any SAS signature left in a message.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("archive config: {0}")]
    Config(String),
    #[error("object store: {}", store_message(.0))]
    Store(#[from] object_store::Error),
    #[error("duckdb: {0}")]
    Duck(#[from] duckdb::Error),
    #[error("archive scratch files: {0}")]
    Io(#[from] std::io::Error),
    #[error("archive worker: {0}")]
    Worker(String),
}

fn store_message(e: &object_store::Error) -> String {
    redact(&e.to_string())
}

/// Removes the value of every `sig=` query parameter (a SAS signature) from a message.
pub fn redact(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(i) = rest.find("sig=") {
        out.push_str(&rest[..i + 4]);
        out.push_str("REDACTED");
        rest = &rest[i + 4..];
        let end = rest
            .find(|c: char| c == '&' || c == ' ' || c == '"' || c == '\'' || c.is_whitespace())
            .unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_removes_sas_signatures() {
        assert_eq!(
            super::redact("GET https://a.blob/c/x?sv=1&sig=abc%2Fdef&se=2 failed"),
            "GET https://a.blob/c/x?sv=1&sig=REDACTED&se=2 failed"
        );
        assert_eq!(super::redact("no secret"), "no secret");
        assert_eq!(super::redact("sig=xyz"), "sig=REDACTED");
    }
}
