//! The scheduled retention job on a running store: old readings leave on its first pass and
//! on later ticks, newer readings and all alerts stay.

use crate::support::*;
use glucoguard::config::RetentionConfig;
use glucoguard::store::prelude::*;
use glucoguard::store::sqlite::SqliteStore;
use glucoguard::store::{AlertStatus, Store, WriteBatch};
use std::sync::Arc;
use std::time::Duration;

const DAY: i64 = 86_400_000;

#[tokio::test]
async fn the_retention_job_purges_old_readings_on_every_tick() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("r.db")).await.unwrap());
    let now = glucoguard::model::now_ms();
    let batch = |ids: &[(&str, i64)]| WriteBatch {
        readings: ids
            .iter()
            .map(|(id, at)| glucose(id, 1, *at, 150.0))
            .collect(),
        received_at_ms: now,
        ..WriteBatch::default()
    };
    let mut first = batch(&[("old-1", now - 40 * DAY), ("new-1", now - 5 * DAY)]);
    let rule_alert = test_alert("old-1", now - 40 * DAY, 150.0);
    first.alerts.push((rule_alert, AlertStatus::Open));
    store.write_batch(&first).await.unwrap();
    // The archive has confirmed everything received so far (received at `now`, so the
    // cursor is just after it).
    let archived = glucoguard::store::Cursor::at(now + 1);
    store
        .put_sink_cursor(
            glucoguard::retention::ARCHIVE_SINK,
            &glucoguard::store::FeedCursor::uniform(archived),
        )
        .await
        .unwrap();

    let job = glucoguard::retention::spawn(
        store.clone(),
        RetentionConfig {
            max_age: Duration::from_secs(30 * 86_400),
            every: Duration::from_millis(50),
        },
    );
    let wait_for = |glucose: u64| {
        let store = store.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(10), async {
                while store.counts().await.unwrap().glucose_readings != glucose {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("retention did not bring the store to {glucose} readings"));
        }
    };
    wait_for(1).await;
    // A late old reading arrives after the first pass: a later tick removes it.
    store
        .write_batch(&batch(&[
            ("old-2", now - 31 * DAY),
            ("new-2", now - 29 * DAY),
        ]))
        .await
        .unwrap();
    wait_for(2).await;
    job.abort();
    let left: Vec<String> = store
        .recent_readings(365 * DAY, i64::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|r| glucoguard::model::parse::given_reading_id(&r.id).to_owned())
        .collect();
    assert_eq!(left, ["new-2", "new-1"], "oldest first");
    assert_eq!(store.counts().await.unwrap().alerts, 1, "alerts stay");
}

#[tokio::test]
async fn retention_never_purges_what_the_archive_has_not_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("r.db")).await.unwrap();
    let now = glucoguard::model::now_ms();
    let at = |received_at_ms: i64, id: &str| WriteBatch {
        readings: vec![glucose(id, 1, now - 40 * DAY, 150.0)],
        received_at_ms,
        ..WriteBatch::default()
    };
    store
        .write_batch(&at(now - 2_000, "archived"))
        .await
        .unwrap();
    store
        .write_batch(&at(now - 1_000, "not-yet"))
        .await
        .unwrap();
    let max_age = Duration::from_secs(30 * 86_400);
    // No archive cursor at all: nothing is purged.
    let none = glucoguard::retention::apply(&store, max_age, now)
        .await
        .unwrap();
    assert_eq!(none.glucose_readings, 0);
    // The archive confirmed up to the first batch only.
    let cursor = glucoguard::store::Cursor::at(now - 1_500);
    store
        .put_sink_cursor(
            glucoguard::retention::ARCHIVE_SINK,
            &glucoguard::store::FeedCursor::uniform(cursor),
        )
        .await
        .unwrap();
    let purged = glucoguard::retention::apply(&store, max_age, now)
        .await
        .unwrap();
    assert_eq!(purged.glucose_readings, 1);
    let left: Vec<String> = store
        .recent_readings(365 * DAY, i64::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|r| glucoguard::model::parse::given_reading_id(&r.id).to_owned())
        .collect();
    assert_eq!(left, ["not-yet"], "the unconfirmed reading stays");
}
