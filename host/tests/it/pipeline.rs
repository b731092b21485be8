//! The pipeline end to end on the embedded default: SQLite store, embedded source, real rules.

use crate::support::*;
use glucoguard::app;
use glucoguard::config::{Config, RuleConfig};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

fn config(db: &Path, rules: Vec<RuleConfig>) -> Config {
    sqlite_host_config(db, 32, rules)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_inputs_land_in_dead_letters_with_reasons_and_the_stream_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let app = app::start(&config(
        &dir.path().join("g.db"),
        vec![rule("glucoguard_default_rule", &[])],
    ))
    .await
    .unwrap();
    let oversized = format!("{{\"pad\":\"{}\"}}", "x".repeat(20_000));
    send_all(
        &app,
        vec![
            glucose_json("ok1", 1, T0, 100.0),
            "{not json".to_owned(),
            r#"{"patient_id":1,"device_id":2,"glucose_level":"high","timestamp":"2026-11-19T10:00:00Z"}"#.to_owned(),
            r#"{"patient_id":1,"device_id":2,"glucose_level":5000,"timestamp":"2026-11-19T10:00:00Z"}"#.to_owned(),
            r#"{"patient_id":1,"device_id":2,"glucose_level":100}"#.to_owned(),
            oversized,
            glucose_json("ok2", 1, T0 + MIN, 101.0),
        ],
    )
    .await;
    let counts = app.store.counts().await.unwrap();
    assert_eq!(counts.glucose_readings, 2);
    assert_eq!(counts.dead_letters, 5);
    let reasons: Vec<String> = app
        .store
        .dead_letters(10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.reason)
        .collect();
    for expected in [
        "malformed JSON",
        "must be a number",
        "plausible range",
        "missing field `timestamp`",
        "exceeds the limit",
    ] {
        assert!(
            reasons.iter().any(|r| r.contains(expected)),
            "no dead letter says {expected:?}: {reasons:?}"
        );
    }
    let dl = app.store.dead_letters(10).await.unwrap();
    assert!(
        dl.iter()
            .any(|d| d.payload == "{not json" && d.origin == "test"),
        "raw payload kept"
    );
    stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_the_same_readings_adds_no_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let readings: Vec<String> = (0..200)
        .map(|i| {
            glucose_json(
                &format!("r{i}"),
                i % 4,
                T0 + i as i64 * MIN,
                90.0 + (i % 50) as f64,
            )
        })
        .collect();
    let app = app::start(&config(&db, vec![rule("glucoguard_default_rule", &[])]))
        .await
        .unwrap();
    send_all(&app, readings.clone()).await;
    let first = app.store.counts().await.unwrap();
    assert_eq!(first.glucose_readings, 200);
    assert!(first.alerts > 20, "the data alerts: {first:?}");
    send_all(&app, readings.clone()).await;
    assert_eq!(
        app.store.counts().await.unwrap(),
        first,
        "replay in the same run"
    );
    // Every copy is found in the store: acknowledged, not evaluated again.
    assert_eq!(app.handle.stats().duplicates, 200);
    stop(app).await;
    // And after a restart, where the windows come back from the store.
    let app = app::start(&config(&db, vec![rule("glucoguard_default_rule", &[])]))
        .await
        .unwrap();
    send_all(&app, readings).await;
    assert_eq!(
        app.store.counts().await.unwrap(),
        first,
        "replay after restart"
    );
    stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_rebuilds_windows_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let app = app::start(&config(&db, vec![rule("glucoguard_default_rule", &[])]))
        .await
        .unwrap();
    send_all(&app, [glucose_json("a", 7, T0, 113.0)]).await;
    stop(app).await;

    let app = app::start(&config(&db, vec![rule("glucoguard_default_rule", &[])]))
        .await
        .unwrap();
    // Alone, 100 mg/dL raises nothing; with `a` from before the restart the 10-minute
    // average is 106.5 and it must alert.
    send_all(&app, [glucose_json("b", 7, T0 + 5 * MIN, 100.0)]).await;
    let alerts = app.store.alerts(10).await.unwrap();
    let b = alerts
        .iter()
        .find(|(a, _)| a.reading_id.ends_with(":b"))
        .expect("b alerted: the window survived the restart");
    assert_eq!(b.0.code, "high-average");
    assert_eq!(b.0.value, Some(106.5));
    stop(app).await;
}

/// Sends one payload stamped with a takeover number through the pipeline's input and waits
/// until it is durable.
async fn send_taken_over(app: &app::App, payload: String, takeover: u64) {
    let acked = AckCounter::default();
    app.handle
        .input()
        .send(glucoguard::sources::SourceItem {
            payload: payload.into_bytes(),
            origin: Arc::from("eventhubs:glucose_readings/0"),
            takeover,
            ack: acked.ack(),
        })
        .await
        .unwrap();
    acked.wait_for(1, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_over_subjects_window_is_reloaded_with_what_another_host_stored() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let app = app::start(&config(&db, vec![rule("glucoguard_default_rule", &[])]))
        .await
        .unwrap();
    // Another host, reading the partition before this one, stored `a` after this host
    // started (so its start-up rebuild could not see it).
    let other_host = glucoguard::model::batch::WriteBatch {
        readings: vec![glucose("a", 7, T0, 113.0)],
        received_at_ms: glucoguard::model::now_ms(),
        ..Default::default()
    };
    app.store.write_batch(&other_host).await.unwrap();
    // This host takes the partition over: alone, 100 mg/dL raises nothing; with `a` the
    // 10-minute average is 106.5 and it must alert.
    send_taken_over(&app, glucose_json("b", 7, T0 + 5 * MIN, 100.0), 41).await;
    let alerts = app.store.alerts(10).await.unwrap();
    let b = alerts
        .iter()
        .find(|(a, _)| a.reading_id.ends_with(":b"))
        .expect("b alerted: the window was reloaded from the store on the takeover");
    assert_eq!(b.0.code, "high-average");
    assert_eq!(b.0.value, Some(106.5));
    assert_eq!(app.handle.stats().window_refreshes, 1);
    // The next reading under the same number does not reload again.
    send_taken_over(&app, glucose_json("c", 7, T0 + 10 * MIN, 90.0), 41).await;
    assert_eq!(app.handle.stats().window_refreshes, 1);
    // Without a takeover number (a source whose subjects never move) nothing is reloaded.
    app.store
        .write_batch(&glucoguard::model::batch::WriteBatch {
            readings: vec![glucose("d", 8, T0, 113.0)],
            received_at_ms: glucoguard::model::now_ms(),
            ..Default::default()
        })
        .await
        .unwrap();
    send_taken_over(&app, glucose_json("e", 8, T0 + 5 * MIN, 100.0), 0).await;
    let alerts = app.store.alerts(10).await.unwrap();
    assert!(
        !alerts.iter().any(|(a, _)| a.reading_id.ends_with(":e")),
        "a stream that never moves between hosts keeps its own windows"
    );
    assert_eq!(app.handle.stats().window_refreshes, 1);
    stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_swap_under_a_running_stream_evaluates_every_reading_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    // Old set: the default rule alerting on everything. New set: trap-on-poison (alerts
    // above 115 — every reading here is 200). Each reading must get exactly one alert.
    let app = app::start(&config(
        &dir.path().join("g.db"),
        vec![rule("glucoguard_default_rule", &[("high_mg_dl", 40.0)])],
    ))
    .await
    .unwrap();
    let trap = app
        .handle
        .rules()
        .upload(&plugin("trap_on_poison"), &crate::support::system())
        .await
        .unwrap();
    const N: usize = 3000;
    let source = app.handle.embedded_source("swap");
    let acked = AckCounter::default();
    let send_range = |range: std::ops::Range<usize>| {
        let (source, acked) = (source.clone(), acked.clone());
        tokio::spawn(async move {
            for i in range {
                let p = glucose_json(
                    &format!("s{i}"),
                    (i % 10) as u64,
                    T0 + i as i64 * 1000,
                    200.0,
                );
                source
                    .send_with_ack(p.into_bytes(), acked.ack())
                    .await
                    .unwrap();
            }
        })
    };
    let wait_acked = |n: u64| acked.wait_for(n, Duration::from_secs(60));
    // A third goes through the old set; a third streams while the swap happens; the last third
    // is sent after the swap returned, so both sets certainly serve part of the stream.
    send_range(0..N / 3).await.unwrap();
    wait_acked((N / 3) as u64).await;
    let during = send_range(N / 3..2 * N / 3);
    app.handle
        .rules()
        .disable("default-glucose", &crate::support::system())
        .await
        .unwrap();
    app.handle
        .rules()
        .enable(
            &trap.name,
            None,
            Some(BTreeMap::new()),
            &crate::support::system(),
        )
        .await
        .unwrap();
    app.handle.reload_rules().await.unwrap();
    during.await.unwrap();
    send_range(2 * N / 3..N).await.unwrap();
    wait_acked(N as u64).await;

    // One rule in each set: every reading was handed to exactly one rule, once.
    assert_eq!(
        app.handle.stats().rule_readings,
        N as u64,
        "no reading evaluated twice or skipped"
    );
    let alerts = app.store.alerts(10 * N as u32).await.unwrap();
    let mut per_reading: HashMap<&str, Vec<&str>> = HashMap::new();
    for (a, _) in &alerts {
        per_reading
            .entry(a.reading_id.as_str())
            .or_default()
            .push(a.rule.name.as_str());
    }
    assert_eq!(per_reading.len(), N, "every reading evaluated");
    let twice: Vec<_> = per_reading
        .iter()
        .filter(|(_, v)| v.len() != 1)
        .take(5)
        .collect();
    assert!(
        twice.is_empty(),
        "each reading evaluated by exactly one rule set: {twice:?}"
    );
    let old = per_reading
        .values()
        .filter(|v| v[0] == "default-glucose")
        .count();
    assert!(
        old > 0 && old < N,
        "both rule sets served part of the stream (old: {old})"
    );
    stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_faulty_rule_is_quarantined_in_the_store_while_the_stream_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let app = app::start(&config(
        &dir.path().join("g.db"),
        vec![
            rule("loop_forever", &[]),
            rule("glucoguard_default_rule", &[("high_mg_dl", 40.0)]),
        ],
    ))
    .await
    .unwrap();
    send_all(
        &app,
        (0..40).map(|i| glucose_json(&format!("q{i}"), 1, T0 + i * MIN, 150.0)),
    )
    .await;
    let versions = app.store.rule_versions().await.unwrap();
    let looping = versions
        .iter()
        .find(|v| v.info.name == "loop-forever")
        .unwrap();
    assert!(
        looping
            .quarantine_reason
            .as_deref()
            .unwrap_or("")
            .contains("timeout"),
        "{looping:?}"
    );
    assert_eq!(app.store.counts().await.unwrap().glucose_readings, 40);
    let default_alerts = app
        .store
        .alerts(100)
        .await
        .unwrap()
        .iter()
        .filter(|(a, _)| a.rule.name == "default-glucose")
        .count();
    assert_eq!(default_alerts, 40, "the other rule saw every reading");
    assert!(app.store.rule_faults(10).await.unwrap().len() >= 3);
    // A quarantined version is not enabled again until released.
    let err = app
        .handle
        .rules()
        .enable("loop-forever", None, None, &crate::support::system())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("quarantined"), "{err}");
    stop(app).await;
}

/// A storage sink that keeps batches in memory, refuses the first `fail_first` writes, and
/// completes each batch only when the test says so: enough to watch acknowledgements.
#[derive(Default)]
pub(crate) struct HeldSink {
    pub(crate) fail_first: std::sync::atomic::AtomicUsize,
    pub(crate) refused: AtomicU64,
    /// Each held batch's `Durable` with its reading count.
    pub(crate) held: std::sync::Mutex<Vec<(glucoguard::sinks::Durable, u64)>>,
    pub(crate) completed: AtomicU64,
    pub(crate) readings: AtomicU64,
    pub(crate) flushes: AtomicU64,
}

impl HeldSink {
    /// Completes every held batch.
    pub(crate) fn release(&self) {
        for (d, _) in std::mem::take(&mut *self.held.lock().unwrap()) {
            d.complete();
            self.completed.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl glucoguard::sinks::StorageSink for HeldSink {
    fn name(&self) -> &'static str {
        "held"
    }
    fn status(&self) -> glucoguard::sinks::SinkStatus {
        glucoguard::sinks::SinkStatus {
            name: "held",
            pending_rows: self.held.lock().unwrap().iter().map(|(_, n)| n).sum(),
            batches_completed: self.completed.load(Ordering::SeqCst),
            failures: self.refused.load(Ordering::SeqCst),
            last_error: None,
        }
    }
    fn write<'a>(
        &'a self,
        batch: &'a glucoguard::store::WriteBatch,
        durable: glucoguard::sinks::Durable,
    ) -> glucoguard::sinks::BoxFuture<'a, Result<(), glucoguard::sinks::SinkError>> {
        Box::pin(async move {
            if self.fail_first.load(Ordering::SeqCst) > 0 {
                self.fail_first.fetch_sub(1, Ordering::SeqCst);
                self.refused.fetch_add(1, Ordering::SeqCst);
                return Err(glucoguard::sinks::SinkError {
                    sink: "held",
                    message: "not now".into(),
                });
            }
            let n = batch.readings.len() as u64;
            self.readings.fetch_add(n, Ordering::SeqCst);
            self.held.lock().unwrap().push((durable, n));
            Ok(())
        })
    }
    /// Flushing makes everything held durable, like an archive uploading its open files.
    fn flush(&self) -> glucoguard::sinks::BoxFuture<'_, Result<(), glucoguard::sinks::SinkError>> {
        Box::pin(async {
            self.flushes.fetch_add(1, Ordering::SeqCst);
            self.release();
            Ok(())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_storage_sinks_and_records_how_far_they_got() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let sink = Arc::new(HeldSink::default());
    let app = app::start_with(&config(&db, vec![]), vec![sink.clone()])
        .await
        .unwrap();
    send_all(
        &app,
        (0..5).map(|i| glucose_json(&format!("f{i}"), 1, T0 + i * MIN, 100.0)),
    )
    .await;
    tokio::time::timeout(Duration::from_secs(30), async {
        while sink.readings.load(Ordering::SeqCst) < 5 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the sink took every reading from the store");
    assert_eq!(sink.flushes.load(Ordering::SeqCst), 0);
    let store = app.store.clone();
    assert_eq!(
        store.sink_cursor("held").await.unwrap().map(|c| c.glucose),
        None,
        "held, not durable in the sink: no cursor recorded"
    );
    stop(app).await;
    assert_eq!(
        sink.flushes.load(Ordering::SeqCst),
        1,
        "flushed once, on shutdown"
    );
    let cursor = store.sink_cursor("held").await.unwrap().expect("recorded");
    assert!(
        cursor.glucose.id.ends_with(":f4"),
        "up to the last reading: {cursor:?}"
    );
    // A restart resumes after it: the sink is handed nothing again.
    let again = Arc::new(HeldSink::default());
    let app = app::start_with(&config(&db, vec![]), vec![again.clone()])
        .await
        .unwrap();
    wait_caught_up(&app, Duration::from_secs(10)).await;
    assert_eq!(again.readings.load(Ordering::SeqCst), 0);
    stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_storage_sink_never_delays_alerts_and_catches_up_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Arc::new(HeldSink {
        fail_first: 1_000_000.into(),
        ..HeldSink::default()
    });
    // A second, healthy sink is not held back by the first.
    let healthy = Arc::new(HeldSink::default());
    let app = app::start_with(
        &config(
            &dir.path().join("g.db"),
            vec![rule("glucoguard_default_rule", &[("high_mg_dl", 40.0)])],
        ),
        vec![sink.clone(), healthy.clone()],
    )
    .await
    .unwrap();
    let mut live = app.live.subscribe();
    // The sink refuses every write: the items are still acknowledged and every alert is
    // stored and notified.
    send_all(
        &app,
        (0..10).map(|i| glucose_json(&format!("h{i}"), 1, T0 + i * MIN, 100.0)),
    )
    .await;
    let mut notified = 0;
    while live.try_recv().is_ok() {
        notified += 1;
    }
    assert!(notified >= 1, "alerts notified while the sink is down");
    assert_eq!(app.store.counts().await.unwrap().glucose_readings, 10);
    assert_eq!(sink.readings.load(Ordering::SeqCst), 0);
    tokio::time::timeout(Duration::from_secs(10), async {
        while healthy.readings.load(Ordering::SeqCst) < 10 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the healthy sink got every reading while the other one refused");
    healthy.release();
    tokio::time::timeout(Duration::from_secs(10), async {
        while sink.refused.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the feeder keeps retrying");
    let feed = &app.handle.feeds()[0];
    assert!(!feed.caught_up && feed.failures >= 1, "{feed:?}");
    assert_eq!(app.handle.feeds()[1].failures, 0);
    assert!(
        feed.last_error.as_deref().unwrap_or("").contains("not now"),
        "{feed:?}"
    );
    // The sink comes back: it gets every reading and alert from the store, once.
    sink.fail_first.store(0, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(30), async {
        while sink.readings.load(Ordering::SeqCst) < 10 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the sink caught up from the store");
    // Complete what the sink holds until the feeder has confirmed everything (the alerts
    // stream may still be on its way).
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            sink.release();
            healthy.release();
            if app.handle.feeds().iter().all(|f| f.caught_up) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the feeder confirmed everything");
    assert_eq!(
        sink.readings.load(Ordering::SeqCst),
        10,
        "each reading once"
    );
    let status = app.handle.sinks();
    assert_eq!(status[0].pending_rows, 0);
    stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_lines_file_source_is_read_to_the_end_and_every_line_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    let mut lines: Vec<String> = (0..500)
        .map(|i| glucose_json(&format!("f{i}"), i % 5, T0 + i as i64 * MIN, 120.0))
        .collect();
    lines.insert(250, "not a reading".to_owned());
    lines.insert(100, String::new()); // blank lines are skipped, not dead-lettered
    std::fs::write(&input, lines.join("\n")).unwrap();
    let mut cfg = config(
        &dir.path().join("g.db"),
        vec![rule("glucoguard_default_rule", &[])],
    );
    cfg.sources = vec![glucoguard::sources::SourceConfig::File(
        glucoguard::sources::file::FileSourceConfig::new(input),
    )];
    let app = app::start(&cfg).await.unwrap();
    let reader = &app.sources[0];
    tokio::time::timeout(Duration::from_secs(30), async {
        while !reader.is_finished() || {
            let s = reader.status();
            s.acknowledged < s.received
        } {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the file is read and every line acknowledged");
    let status = reader.status();
    assert_eq!((status.received, status.acknowledged), (501, 501));
    assert!(status.finished && !status.taking_input, "{status:?}");
    let counts = app.store.counts().await.unwrap();
    assert_eq!((counts.glucose_readings, counts.dead_letters), (500, 1));
    let dl = app.store.dead_letters(1).await.unwrap();
    assert!(
        dl[0].origin.starts_with("file:") && dl[0].payload == "not a reading",
        "{dl:?}"
    );
    stop(app).await;
}
