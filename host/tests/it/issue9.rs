//! Regression tests for issue 9 ("no missed alert, no lost reading"), one per hole in the
//! streaming core, each through a started host on the embedded default (SQLite, embedded
//! source, real rule components). The engine-level holes (poison readings, bounded
//! isolation, non-finite values) are in `sandbox.rs`, the store-level ones in `store.rs`.

use crate::support::*;
use glucoguard::app::{self, App};
use glucoguard::config::{Config, RuleConfig};
use glucoguard::model::{Alert, ParamValue};
use glucoguard::store::prelude::*;
use glucoguard::store::{AlertStatus, RuleState};
use std::path::Path;
use std::time::Duration;

fn config(db: &Path, rules: Vec<RuleConfig>) -> Config {
    sqlite_host_config(db, 32, rules)
}

/// Every alert the live feed has received so far.
fn drain(rx: &mut tokio::sync::broadcast::Receiver<Alert>) -> Vec<Alert> {
    let mut out = Vec::new();
    while let Ok(a) = rx.try_recv() {
        out.push(a);
    }
    out
}

async fn alerts_of(app: &App, rule: &str) -> Vec<(Alert, AlertStatus)> {
    app.store
        .alerts(10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|(a, _)| a.rule.name == rule)
        .collect()
}

fn always_alerting() -> RuleConfig {
    rule("glucoguard_default_rule", &[("high_mg_dl", 40.0)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole1_a_failed_rule_reload_keeps_the_running_rules() {
    let dir = tempfile::tempdir().unwrap();
    let app = app::start(&config(&dir.path().join("g.db"), vec![always_alerting()]))
        .await
        .unwrap();
    send_all(&app, [glucose_json("a", 1, T0, 150.0)]).await;
    // The stored state now names a parameter the rule does not declare: building fails.
    let mut params = std::collections::BTreeMap::new();
    params.insert("no_such_param".to_owned(), ParamValue::Float(1.0));
    app.store
        .put_rule_state(
            &RuleState {
                name: "default-glucose".into(),
                active_version: "1.0.0".into(),
                enabled: true,
                params,
                updated_at_ms: T0,
                shadow: None,
                scope: Default::default(),
            },
            &crate::support::audit(),
        )
        .await
        .unwrap();
    let err = app.handle.reload_rules().await.unwrap_err();
    assert!(err.to_string().contains("no_such_param"), "{err}");
    assert_eq!(
        app.handle.stats().rules.len(),
        1,
        "the running set is untouched"
    );
    send_all(&app, [glucose_json("b", 1, T0 + 30 * MIN, 150.0)]).await;
    let alerted: Vec<String> = alerts_of(&app, "default-glucose")
        .await
        .into_iter()
        .map(|(a, _)| a.reading_id)
        .collect();
    assert!(
        alerted.iter().any(|id| id.ends_with(":b")),
        "the reading after the failed reload was evaluated: {alerted:?}"
    );
    stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole3_a_quarantined_version_does_not_stop_the_restart_and_can_be_released() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let rules = vec![rule("loop_forever", &[]), always_alerting()];
    let app = app::start(&config(&db, rules.clone())).await.unwrap();
    send_all(
        &app,
        (0..8).map(|i| glucose_json(&format!("q{i}"), 1, T0 + i * MIN, 150.0)),
    )
    .await;
    assert!(
        app.handle
            .stats()
            .rules
            .iter()
            .any(|r| r.quarantined.is_some()),
        "the looping rule was quarantined"
    );
    stop(app).await;

    // The same config again: it names the quarantined version. Start must succeed.
    let app = app::start(&config(&db, rules)).await.unwrap();
    let stats = app.handle.stats();
    assert_eq!(stats.quarantined.len(), 1, "{:?}", stats.quarantined);
    assert_eq!(stats.quarantined[0].rule.name, "loop-forever");
    assert_eq!(stats.rules.len(), 1, "the other rule runs");
    send_all(&app, [glucose_json("after", 1, T0 + 20 * MIN, 150.0)]).await;
    assert!(
        alerts_of(&app, "default-glucose")
            .await
            .iter()
            .any(|(a, _)| a.reading_id.ends_with(":after"))
    );
    let looping = stats.quarantined[0].rule.clone();
    app.handle
        .release_rule(&looping, &crate::support::system())
        .await
        .unwrap();
    let stats = app.handle.stats();
    assert!(stats.quarantined.is_empty(), "{:?}", stats.quarantined);
    assert_eq!(stats.rules.len(), 2, "the released version runs again");
    let again = app
        .handle
        .release_rule(&looping, &crate::support::system())
        .await
        .unwrap_err();
    assert!(again.to_string().contains("not quarantined"), "{again}");
    stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole4_a_far_future_timestamp_is_a_dead_letter_and_blinds_no_window() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    // The plain default rule: 10-minute average above 105 alerts.
    let rules = vec![rule("glucoguard_default_rule", &[])];
    let app = app::start(&config(&db, rules.clone())).await.unwrap();
    let far = glucoguard::model::parse::parse_timestamp("2099-01-01T00:00:00Z").unwrap();
    send_all(&app, [glucose_json("future", 1, far, 100.0)]).await;
    let dl = app.store.dead_letters(10).await.unwrap();
    assert_eq!(dl.len(), 1);
    assert!(
        dl[0].reason.contains("ahead of the receive time"),
        "{}",
        dl[0].reason
    );
    // The patient's real readings still see each other: 110 then 108 → average 109 > 105.
    send_all(
        &app,
        [
            glucose_json("r1", 1, T0, 110.0),
            glucose_json("r2", 1, T0 + 5 * MIN, 108.0),
        ],
    )
    .await;
    let codes: Vec<(String, String)> = alerts_of(&app, "default-glucose")
        .await
        .into_iter()
        .map(|(a, _)| {
            (
                glucoguard::model::parse::given_reading_id(&a.reading_id).to_owned(),
                a.code,
            )
        })
        .collect();
    assert!(
        codes.contains(&("r2".to_owned(), "high-average".to_owned())),
        "{codes:?}"
    );
    stop(app).await;

    // A far-future row already in the store (written before this check existed) must not
    // blind the windows rebuilt on start either.
    let store = glucoguard::store::sqlite::SqliteStore::open(&db)
        .await
        .unwrap();
    store
        .write_batch(&glucoguard::store::WriteBatch {
            readings: vec![glucose("legacy-future", 2, far, 100.0)],
            received_at_ms: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    drop(store);
    let app = app::start(&config(&db, rules)).await.unwrap();
    // r3 at T0 + 8 min sees r2 (108) from before the restart: (108 + 104) / 2 = 106 > 105.
    send_all(&app, [glucose_json("r3", 1, T0 + 8 * MIN, 104.0)]).await;
    assert!(
        alerts_of(&app, "default-glucose")
            .await
            .iter()
            .any(|(a, _)| a.reading_id.ends_with(":r3") && a.code == "high-average"),
        "the rebuilt window of patient 1 holds r2"
    );
    stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole5_an_id_beyond_the_signed_range_is_a_dead_letter_and_the_restart_works() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let rules = vec![always_alerting()];
    let app = app::start(&config(&db, rules.clone())).await.unwrap();
    let huge = r#"{"patient_id":9223372036854775808,"device_id":1,"glucose_level":150,"timestamp":"2026-11-18T11:10:00Z"}"#;
    send_all(&app, [huge.to_owned(), glucose_json("ok", 1, T0, 150.0)]).await;
    let dl = app.store.dead_letters(10).await.unwrap();
    assert_eq!(dl.len(), 1);
    assert!(
        dl[0].reason.contains("exceeds the largest id"),
        "{}",
        dl[0].reason
    );
    stop(app).await;
    let app = app::start(&config(&db, rules))
        .await
        .expect("restart rebuilds windows");
    assert_eq!(app.store.counts().await.unwrap().glucose_readings, 1);
    stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole6_reading_ids_are_scoped_by_device_and_a_reused_id_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let app = app::start(&config(&dir.path().join("g.db"), vec![always_alerting()]))
        .await
        .unwrap();
    // Patients 1 and 2 (devices 1001 and 1002) both number their readings from 1.
    send_all(
        &app,
        [
            glucose_json("1", 1, T0, 150.0),
            glucose_json("1", 2, T0, 160.0),
        ],
    )
    .await;
    let counts = app.store.counts().await.unwrap();
    assert_eq!(counts.glucose_readings, 2, "neither reading was dropped");
    let mut patients: Vec<Option<u64>> = alerts_of(&app, "default-glucose")
        .await
        .iter()
        .filter(|(a, _)| a.code == "high-reading")
        .map(|(a, _)| a.patient_id)
        .collect();
    patients.sort();
    assert_eq!(
        patients,
        vec![Some(1), Some(2)],
        "each patient's alert is its own"
    );
    // Device 1001 reuses id 1 for another reading: a conflict, kept as a dead letter.
    send_all(&app, [glucose_json("1", 1, T0 + 5 * MIN, 90.0)]).await;
    assert_eq!(app.store.counts().await.unwrap().glucose_readings, 2);
    let dl = app.store.dead_letters(10).await.unwrap();
    assert_eq!(dl.len(), 1);
    assert!(dl[0].reason.starts_with("conflict"), "{}", dl[0].reason);
    assert_eq!(
        dl[0].payload,
        glucose_json("1", 1, T0 + 5 * MIN, 90.0),
        "the raw payload is kept"
    );
    assert_eq!(app.handle.stats().conflicts, 1);
    // The same id with the same content twice in one batch is a plain duplicate.
    send_all(
        &app,
        [
            glucose_json("7", 1, T0 + 9 * MIN, 150.0),
            glucose_json("7", 1, T0 + 9 * MIN, 150.0),
        ],
    )
    .await;
    assert_eq!(app.store.counts().await.unwrap().glucose_readings, 3);
    assert_eq!(app.handle.stats().conflicts, 1);
    stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole7_a_duplicate_is_acknowledged_only_when_its_original_is_durable() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let app = app::start(&config(&db, vec![always_alerting()]))
        .await
        .unwrap();
    // Another writer holds the database: the pipeline's commit waits behind it.
    let mut lock = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut lock)
        .await
        .unwrap();
    let source = app.handle.embedded_source("test");
    let original = AckCounter::default();
    let duplicate = AckCounter::default();
    for counter in [&original, &duplicate] {
        source
            .send_with_ack(glucose_json("x", 1, T0, 150.0).into_bytes(), counter.ack())
            .await
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        while app.handle.stats().items < 2 && app.handle.health().unacked_batches == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(original.count(), 0, "not durable yet");
    assert_eq!(duplicate.count(), 0, "not before its original is durable");
    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    original.wait_for(1, Duration::from_secs(30)).await;
    duplicate.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(app.store.counts().await.unwrap().glucose_readings, 1);
    // A later copy, found in the store, is a duplicate too: acknowledged, not evaluated.
    send_all(&app, [glucose_json("x", 1, T0, 150.0)]).await;
    let stats = app.handle.stats();
    assert_eq!(stats.duplicates, 2, "{stats:?}");
    assert_eq!(stats.readings, 1, "evaluated once");
    stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole10_suppression_is_per_alert_code_so_a_fall_after_a_rise_is_notified() {
    let dir = tempfile::tempdir().unwrap();
    let app = app::start(&config(
        &dir.path().join("g.db"),
        vec![rule("glucoguard_rate_of_change", &[])],
    ))
    .await
    .unwrap();
    let mut live = app.live.subscribe();
    // +6 mg/dL per minute, then -6: rising-fast, then falling-fast, within 15 minutes.
    send_all(
        &app,
        [
            glucose_json("a", 1, T0, 100.0),
            glucose_json("b", 1, T0 + 5 * MIN, 130.0),
            glucose_json("c", 1, T0 + 10 * MIN, 100.0),
        ],
    )
    .await;
    let codes: Vec<String> = drain(&mut live).into_iter().map(|a| a.code).collect();
    assert_eq!(
        codes,
        vec!["rising-fast", "falling-fast"],
        "both directions notified"
    );
    stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole10_a_restart_or_a_replay_does_not_notify_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("g.db");
    let rules = vec![rule("glucoguard_default_rule", &[])];
    let app = app::start(&config(&db, rules.clone())).await.unwrap();
    let mut live = app.live.subscribe();
    send_all(&app, [glucose_json("a", 1, T0, 150.0)]).await;
    let first: Vec<String> = drain(&mut live).into_iter().map(|a| a.code).collect();
    assert_eq!(first, vec!["high-reading"]);
    stop(app).await;

    let app = app::start(&config(&db, rules)).await.unwrap();
    let mut live = app.live.subscribe();
    // A replay of `a` and a repeat 5 minutes later: neither is notified.
    send_all(
        &app,
        [
            glucose_json("a", 1, T0, 150.0),
            glucose_json("b", 1, T0 + 5 * MIN, 150.0),
        ],
    )
    .await;
    let again = drain(&mut live);
    assert!(
        again.is_empty(),
        "notified again after the restart: {again:?}"
    );
    let statuses: Vec<AlertStatus> = alerts_of(&app, "default-glucose")
        .await
        .into_iter()
        .filter(|(a, _)| a.reading_id.ends_with(":b"))
        .map(|(_, s)| s)
        .collect();
    assert_eq!(statuses, vec![AlertStatus::Suppressed]);
    // A higher severity still gets through: 250 mg/dL is critical for the default rule.
    send_all(&app, [glucose_json("c", 1, T0 + 7 * MIN, 260.0)]).await;
    let rose: Vec<String> = drain(&mut live).into_iter().map(|a| a.code).collect();
    assert!(rose.contains(&"high-reading".to_owned()), "{rose:?}");
    stop(app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hole12_idle_patients_leave_the_windows() {
    let dir = tempfile::tempdir().unwrap();
    let app = app::start(&config(&dir.path().join("g.db"), vec![always_alerting()]))
        .await
        .unwrap();
    send_all(
        &app,
        (1..=50).map(|p| glucose_json(&format!("p{p}"), p, T0, 120.0)),
    )
    .await;
    assert_eq!(app.handle.stats().history_subjects, 50);
    // Three hours later only patient 1 is still sending: the other 49 are idle for longer
    // than lookback + lateness and are forgotten.
    send_all(&app, [glucose_json("later", 1, T0 + 180 * MIN, 120.0)]).await;
    let stats = app.handle.stats();
    assert_eq!(
        stats.history_subjects, 1,
        "{} subjects held",
        stats.history_subjects
    );
    assert_eq!(stats.history_readings, 1);
    stop(app).await;
}
