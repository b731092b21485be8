//! The store contract, written once against `dyn Store` and run against every implementation:
//! SQLite here, MySQL/MariaDB in `mariadb.rs` (one test there per `pub(crate)` suite function).

use crate::support::*;
use glucoguard::model::dims::{
    Device, DeviceModel, Dimensions, Manufacturer, Patient, Subscriber, Subscription,
};
use glucoguard::model::{Alert, DeadLetter, FaultKind, ReadingKind, RuleFault, RuleRef};
use glucoguard::store::prelude::*;
use glucoguard::store::sqlite::SqliteStore;
use glucoguard::store::{AlertStatus, Cursor, Purged, RuleState, Store, StoreError, WriteBatch};
use std::collections::BTreeMap;
use std::sync::Arc;

async fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("t.db")).await.unwrap();
    (Arc::new(s), dir)
}

fn alert(reading: &str, at_ms: i64) -> Alert {
    test_alert(reading, at_ms, 120.0)
}

fn sample_batch() -> WriteBatch {
    let device = glucoguard::model::parse::parse_reading(
        br#"{"reading_id":"d1","device_id":5,"timestamp":"2026-11-19T10:00:00Z","battery_level":40,"connectivity_status":"Connected","error_codes":["E7"]}"#,
    )
    .unwrap();
    WriteBatch {
        readings: vec![
            glucose("g1", 1, T0, 120.0),
            glucose("g2", 1, T0 + MIN, 130.0),
            device,
        ],
        alerts: vec![
            (alert("g1", T0), AlertStatus::Open),
            (alert("g2", T0 + MIN), AlertStatus::Suppressed),
        ],
        dead_letters: vec![DeadLetter {
            origin: "t".into(),
            reason: "bad".into(),
            payload: "{".into(),
            received_at_ms: 1,
        }],
        faults: vec![RuleFault {
            rule: RuleRef {
                name: "r".into(),
                version: "1".into(),
            },
            kind: FaultKind::Trap,
            detail: "x".into(),
            at_ms: 2,
        }],
        quarantined: vec![],
        // A shadow version's alert: stored apart (written twice by the replay test, kept once).
        shadow_alerts: vec![alert("g1", T0)],
        received_at_ms: 10,
    }
}

pub(crate) async fn writes_are_idempotent(store: Arc<dyn Store>) {
    let b = sample_batch();
    store.write_batch(&b).await.unwrap();
    let first = store.counts().await.unwrap();
    assert_eq!(
        (
            first.glucose_readings,
            first.device_readings,
            first.alerts,
            first.dead_letters
        ),
        (2, 1, 2, 1)
    );
    store.write_batch(&b).await.unwrap();
    let second = store.counts().await.unwrap();
    assert_eq!(
        (
            second.glucose_readings,
            second.device_readings,
            second.alerts,
            second.dead_letters
        ),
        (2, 1, 2, 1),
        "a replayed batch adds no rows"
    );
    let shadow = &b.shadow_alerts[0];
    assert_eq!(
        store.shadow_alerts(&shadow.rule, 10).await.unwrap(),
        vec![shadow.clone()],
        "a shadow alert is kept apart, once"
    );
    let alerts = store.alerts(10).await.unwrap();
    let statuses: BTreeMap<String, AlertStatus> = alerts
        .iter()
        .map(|(a, s)| (a.reading_id.clone(), *s))
        .collect();
    assert_eq!(statuses["g1"], AlertStatus::Open);
    assert_eq!(statuses["g2"], AlertStatus::Suppressed);
    assert_eq!(
        alerts.iter().find(|(a, _)| a.reading_id == "g1").unwrap().0,
        alert("g1", T0)
    );
    assert_eq!(store.dead_letters(10).await.unwrap()[0].reason, "bad");
    assert_eq!(
        store.rule_faults(10).await.unwrap()[0].kind,
        FaultKind::Trap
    );
}

pub(crate) async fn recent_readings_cover_the_lookback(store: Arc<dyn Store>) {
    let b = WriteBatch {
        readings: (0..20)
            .map(|i| glucose(&format!("g{i}"), 1, T0 + i * MIN, 100.0 + i as f64))
            .collect(),
        received_at_ms: 1,
        ..WriteBatch::default()
    };
    store.write_batch(&b).await.unwrap();
    // A reading stamped a year ahead (stored before skew checks existed) is ignored when
    // `not_after` excludes it, so it cannot move the lookback of the others.
    let ahead = WriteBatch {
        readings: vec![glucose("ahead", 1, T0 + 365 * 24 * 60 * MIN, 100.0)],
        received_at_ms: 1,
        ..WriteBatch::default()
    };
    store.write_batch(&ahead).await.unwrap();
    let recent = store.recent_readings(5 * MIN, T0 + 60 * MIN).await.unwrap();
    let ids: Vec<&str> = recent
        .iter()
        .map(|r| glucoguard::model::parse::given_reading_id(&r.id))
        .collect();
    assert_eq!(
        ids,
        vec!["g15", "g16", "g17", "g18", "g19"],
        "(newest - lookback, newest], oldest first"
    );
    assert_eq!(recent[0], b.readings[15], "readings round-trip exactly");
    let with_ahead = store.recent_readings(5 * MIN, i64::MAX).await.unwrap();
    assert_eq!(
        with_ahead.len(),
        1,
        "only the far-future reading is within 5 min of itself"
    );
}

pub(crate) async fn readings_are_found_by_id_and_new_alerts_reported_once(store: Arc<dyn Store>) {
    let mut b = WriteBatch {
        readings: vec![glucose("a", 1, T0, 150.0), glucose("b", 2, T0 + MIN, 90.0)],
        alerts: vec![(test_alert("g:1001:a", T0, 150.0), AlertStatus::Open)],
        received_at_ms: 1,
        ..WriteBatch::default()
    };
    let first = store.write_batch(&b).await.unwrap();
    assert_eq!(
        first.new_alert_ids.len(),
        1,
        "a new alert is reported as new"
    );
    let again = store.write_batch(&b).await.unwrap();
    assert!(
        again.new_alert_ids.is_empty(),
        "a replayed alert is not new"
    );
    b.alerts.push((
        test_alert("g:1002:b", T0 + MIN, 90.0),
        AlertStatus::Suppressed,
    ));
    let third = store.write_batch(&b).await.unwrap();
    assert_eq!(third.new_alert_ids.len(), 1);
    let ids = [
        b.readings[0].id.as_str(),
        "g:9:nope",
        b.readings[1].id.as_str(),
    ];
    let mut found = store.readings_by_id(&ids).await.unwrap();
    found.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(found, b.readings, "found by id, content as written");
    let notified = store.notified_alerts_since(T0 - 1).await.unwrap();
    assert_eq!(notified.len(), 1, "the suppressed alert was not notified");
    assert_eq!(notified[0].id, b.alerts[0].0.id);
    assert!(
        store.notified_alerts_since(T0).await.unwrap().is_empty(),
        "strictly after"
    );
}

pub(crate) async fn dead_letters_and_rule_faults_are_bounded_by_count_and_age(
    store: Arc<dyn Store>,
) {
    let b = WriteBatch {
        dead_letters: (1..=30)
            .map(|i| DeadLetter {
                origin: "t".into(),
                reason: format!("bad {i}"),
                payload: "x".repeat(100),
                received_at_ms: i,
            })
            .collect(),
        faults: (1..=30)
            .map(|i| RuleFault {
                rule: RuleRef {
                    name: "r".into(),
                    version: "1".into(),
                },
                kind: FaultKind::Trap,
                detail: format!("boom {i}"),
                at_ms: i,
            })
            .collect(),
        received_at_ms: 1,
        ..WriteBatch::default()
    };
    store.write_batch(&b).await.unwrap();
    // Keep the newest 10 (times 21..=30); the age bound (before 5) removes less.
    let purged = store.purge_diagnostics(10, 5).await.unwrap();
    assert_eq!((purged.dead_letters, purged.rule_faults), (20, 20));
    let left = store.dead_letters(100).await.unwrap();
    assert_eq!(left.len(), 10);
    assert!(
        left.iter().all(|d| d.received_at_ms > 20),
        "the newest stay"
    );
    // Now the age bound is the stricter one: before 26 leaves 26..=30.
    let purged = store.purge_diagnostics(10, 26).await.unwrap();
    assert_eq!((purged.dead_letters, purged.rule_faults), (5, 5));
    let c = store.counts().await.unwrap();
    assert_eq!((c.dead_letters, c.rule_faults), (5, 5));
    assert_eq!(
        store.purge_diagnostics(10, 26).await.unwrap(),
        Default::default(),
        "a second pass finds nothing"
    );
}

pub(crate) async fn sink_cursors_round_trip(store: Arc<dyn Store>) {
    assert_eq!(store.sink_cursor("archive").await.unwrap(), None);
    let mut c = glucoguard::store::FeedCursor {
        glucose: Cursor {
            received_at_ms: 5,
            id: "g:1:a".into(),
        },
        ..Default::default()
    };
    store.put_sink_cursor("archive", &c).await.unwrap();
    c.alerts = Cursor::at(9);
    store.put_sink_cursor("archive", &c).await.unwrap();
    assert_eq!(store.sink_cursor("archive").await.unwrap(), Some(c));
    assert_eq!(store.sink_cursor("duckdb").await.unwrap(), None, "per sink");
    // Sources' upstream positions live beside them, under their own keys.
    let key = "src:eventhubs:$Default/$Default/glucose_readings/3";
    assert_eq!(store.source_checkpoint(key).await.unwrap(), None);
    store
        .put_source_checkpoint(key, r#"{"offset":"10","sequence_number":1}"#)
        .await
        .unwrap();
    store
        .put_source_checkpoint(key, r#"{"offset":"20","sequence_number":2}"#)
        .await
        .unwrap();
    assert_eq!(
        store.source_checkpoint(key).await.unwrap().as_deref(),
        Some(r#"{"offset":"20","sequence_number":2}"#)
    );
    assert_eq!(
        store
            .sink_cursor("archive")
            .await
            .unwrap()
            .map(|c| c.alerts),
        Some(Cursor::at(9))
    );
}

pub(crate) async fn a_retried_batch_stores_its_rule_faults_once(store: Arc<dyn Store>) {
    let fault = glucoguard::model::RuleFault {
        rule: glucoguard::model::RuleRef {
            name: "r".into(),
            version: "1".into(),
        },
        kind: FaultKind::Trap,
        detail: "boom".into(),
        at_ms: T0,
    };
    let b = WriteBatch {
        faults: vec![fault.clone(), fault],
        received_at_ms: 7,
        ..WriteBatch::default()
    };
    store.write_batch(&b).await.unwrap();
    store.write_batch(&b).await.unwrap();
    assert_eq!(
        store.counts().await.unwrap().rule_faults,
        2,
        "two faults of one batch are two rows; the retry adds none"
    );
}

pub(crate) async fn rule_versions_are_immutable(store: Arc<dyn Store>) {
    let engine = engine();
    let rule = load(&engine, "glucoguard_default_rule");
    store
        .put_rule_version(
            rule.info(),
            rule.sha256(),
            b"bytes",
            &crate::support::audit(),
        )
        .await
        .unwrap();
    store
        .put_rule_version(
            rule.info(),
            rule.sha256(),
            b"bytes",
            &crate::support::audit(),
        )
        .await
        .unwrap();
    let err = store
        .put_rule_version(rule.info(), "other-sha", b"other", &crate::support::audit())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err}");
    assert_eq!(store.rule_wasm(&rule.rule_ref()).await.unwrap(), b"bytes");
    let versions = store.rule_versions().await.unwrap();
    assert_eq!(versions.len(), 1);
    assert_eq!(&versions[0].info, rule.info());
    let state = RuleState {
        name: rule.info().name.clone(),
        active_version: rule.info().version.clone(),
        enabled: true,
        params: BTreeMap::from([(
            "high_mg_dl".into(),
            glucoguard::model::ParamValue::Float(120.0),
        )]),
        updated_at_ms: 5,
        shadow: None,
        scope: Default::default(),
    };
    store
        .put_rule_state(&state, &crate::support::audit())
        .await
        .unwrap();
    store
        .put_rule_state(
            &RuleState {
                enabled: false,
                ..state.clone()
            },
            &crate::support::audit(),
        )
        .await
        .unwrap();
    assert_eq!(
        store.rule_states().await.unwrap(),
        vec![RuleState {
            enabled: false,
            ..state
        }]
    );
    let q = WriteBatch {
        quarantined: vec![(rule.rule_ref(), "too many traps".into())],
        ..WriteBatch::default()
    };
    store.write_batch(&q).await.unwrap();
    assert_eq!(
        store.rule_versions().await.unwrap()[0]
            .quarantine_reason
            .as_deref(),
        Some("too many traps")
    );
    store
        .release_quarantine(&rule.rule_ref(), &crate::support::audit())
        .await
        .unwrap();
    assert_eq!(
        store.rule_versions().await.unwrap()[0].quarantine_reason,
        None
    );
}

fn dimensions(first_name: &str, role: &str) -> Dimensions {
    Dimensions {
        patients: (1..=2)
            .map(|id| Patient {
                patient_id: id,
                first_name: first_name.into(),
                last_name: "Doe".into(),
                birth_date: Some("1970-01-01".into()),
                sex: None,
                email: Some(format!("p{id}@example.org")),
                phone: None,
                profile: Some("stable".into()),
                diabetes_type: Some("type1".into()),
            })
            .collect(),
        manufacturers: vec![Manufacturer {
            manufacturer_id: 1,
            name: "Acme".into(),
            country: Some("NL".into()),
        }],
        device_models: vec![DeviceModel {
            model_id: 7,
            manufacturer_id: 1,
            name: "G7".into(),
            kind: "cgm".into(),
            firmware_versions: vec!["1.0".into()],
        }],
        devices: (1..=2)
            .map(|id| Device {
                device_id: 1000 + id,
                model_id: 7,
                serial_number: format!("SN{id}"),
                patient_id: id,
                firmware_version: Some("1.0".into()),
            })
            .collect(),
        subscribers: vec![
            Subscriber {
                subscriber_id: 1,
                name: "Dr. Who".into(),
                role: role.into(),
                telegram_chat_id: Some(-100_123),
                email: None,
            },
            Subscriber {
                subscriber_id: 2,
                name: "Carer".into(),
                role: "caregiver".into(),
                telegram_chat_id: None,
                email: Some("c@example.org".into()),
            },
        ],
        subscriptions: vec![
            Subscription {
                subscriber_id: 1,
                patient_id: 1,
            },
            Subscription {
                subscriber_id: 1,
                patient_id: 2,
            },
            Subscription {
                subscriber_id: 2,
                patient_id: 2,
            },
        ],
    }
}

/// Dimension rows are upserted: a repeat updates in place, and a batch with a bad row (a role
/// the schema refuses) leaves nothing behind.
pub(crate) async fn dimensions_are_upserted_in_one_transaction(store: Arc<dyn Store>) {
    let shape =
        |c: glucoguard::store::Counts| (c.patients, c.devices, c.subscribers, c.subscriptions);
    store
        .put_dimensions(&dimensions("Ann", "doctor"), &crate::support::audit())
        .await
        .unwrap();
    assert_eq!(shape(store.counts().await.unwrap()), (2, 2, 2, 3));
    store
        .put_dimensions(&dimensions("Ann", "doctor"), &crate::support::audit())
        .await
        .unwrap();
    assert_eq!(
        shape(store.counts().await.unwrap()),
        (2, 2, 2, 3),
        "a repeat adds no rows"
    );

    let mut more = dimensions("Anna", "doctor");
    more.patients.push(Patient {
        patient_id: 3,
        first_name: "Bo".into(),
        last_name: "Li".into(),
        birth_date: None,
        sex: None,
        email: None,
        phone: None,
        profile: None,
        diabetes_type: None,
    });
    more.subscriptions.push(Subscription {
        subscriber_id: 2,
        patient_id: 3,
    });
    store
        .put_dimensions(&more, &crate::support::audit())
        .await
        .unwrap();
    assert_eq!(
        shape(store.counts().await.unwrap()),
        (3, 2, 2, 4),
        "updates in place, adds the new"
    );

    let mut bad = dimensions("X", "hacker");
    bad.patients[0].patient_id = 9;
    bad.subscriptions.clear();
    assert!(
        store
            .put_dimensions(&bad, &crate::support::audit())
            .await
            .is_err(),
        "role `hacker` is refused"
    );
    assert_eq!(
        shape(store.counts().await.unwrap()),
        (3, 2, 2, 4),
        "nothing of the refused batch was written"
    );
}

/// A batch larger than any engine's statement limits (bound variables, packet size) is written
/// whole, in one transaction, and replaying it adds nothing.
pub(crate) async fn large_batches_are_written_whole(store: Arc<dyn Store>) {
    const N: i64 = 12_000;
    let readings: Vec<_> = (0..N)
        .map(|i| {
            glucose(
                &format!("big{i}"),
                (i % 50) as u64,
                T0 + i * 1000,
                100.0 + (i % 40) as f64,
            )
        })
        .collect();
    let b = WriteBatch {
        alerts: readings
            .iter()
            .map(|r| (alert(&r.id, r.at_ms), AlertStatus::Open))
            .collect(),
        readings,
        // 400 payloads of ~40 KiB: 16 MiB, more than one statement may carry.
        dead_letters: (0..400)
            .map(|i| DeadLetter {
                origin: "big".into(),
                reason: format!("reason {i}"),
                payload: format!("{i}:{}", "x".repeat(40_000)),
                received_at_ms: 3,
            })
            .collect(),
        received_at_ms: 3,
        ..WriteBatch::default()
    };
    store.write_batch(&b).await.unwrap();
    store.write_batch(&b).await.unwrap();
    let c = store.counts().await.unwrap();
    assert_eq!(
        (c.glucose_readings, c.alerts, c.dead_letters),
        (N as u64, N as u64, 400)
    );
    assert_eq!(store.alerts(u32::MAX).await.unwrap().len(), N as usize);
    let recent = store.recent_readings(N * 1000, i64::MAX).await.unwrap();
    assert_eq!(recent.len(), N as usize);
    assert_eq!(recent.last().unwrap(), b.readings.last().unwrap());
}

/// Ids are compared byte for byte, as producers mean them: `abc`, `ABC` and `ábc` are three
/// readings (a case- or accent-insensitive key would merge them).
pub(crate) async fn ids_compare_exactly(store: Arc<dyn Store>) {
    let ids = ["abc", "ABC", "ábc", "abc-1"];
    let b = WriteBatch {
        readings: ids
            .iter()
            .enumerate()
            .map(|(i, id)| glucose(id, 1, T0 + i as i64 * MIN, 120.0))
            .collect(),
        alerts: ids
            .iter()
            .enumerate()
            .map(|(i, id)| (alert(id, T0 + i as i64 * MIN), AlertStatus::Open))
            .collect(),
        received_at_ms: 1,
        ..WriteBatch::default()
    };
    store.write_batch(&b).await.unwrap();
    let c = store.counts().await.unwrap();
    assert_eq!((c.glucose_readings, c.alerts), (4, 4));
    let mut stored: Vec<String> = store
        .recent_readings(MIN * 10, i64::MAX)
        .await
        .unwrap()
        .into_iter()
        .map(|r| glucoguard::model::parse::given_reading_id(&r.id).to_owned())
        .collect();
    stored.sort();
    let mut expected: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(stored, expected);
}

/// Catch-up pages walk (received time, id) order without gaps or repeats, whatever the page
/// size, and start strictly after their cursor.
pub(crate) async fn pages_since_a_cursor_cover_every_row_once(store: Arc<dyn Store>) {
    // Three batches received at 100, 100 (a replay-like second batch at the same time) and 200.
    let batch = |ids: &[&str], received_at_ms: i64| WriteBatch {
        readings: ids
            .iter()
            .enumerate()
            .map(|(i, id)| glucose(id, 1, T0 + i as i64 * MIN, 100.0 + i as f64))
            .collect(),
        alerts: ids
            .iter()
            .map(|id| (alert(id, T0), AlertStatus::Open))
            .collect(),
        received_at_ms,
        ..WriteBatch::default()
    };
    store
        .write_batch(&batch(&["b", "d", "a"], 100))
        .await
        .unwrap();
    store.write_batch(&batch(&["c"], 100)).await.unwrap();
    store.write_batch(&batch(&["e", "f"], 200)).await.unwrap();
    // A replay keeps the first receive time: "a" stays at 100.
    store.write_batch(&batch(&["a"], 300)).await.unwrap();

    for page in [1, 2, 4, 100] {
        let mut cursor = Cursor::default();
        let mut seen = Vec::new();
        loop {
            let rows = store
                .readings_since(ReadingKind::Glucose, &cursor, page)
                .await
                .unwrap();
            assert!(rows.len() <= page as usize);
            let Some(last) = rows.last() else { break };
            cursor = last.cursor(&last.item.id);
            seen.extend(rows.iter().map(|r| {
                (
                    r.received_at_ms,
                    glucoguard::model::parse::given_reading_id(&r.item.id).to_owned(),
                )
            }));
        }
        let expected: Vec<(i64, String)> = [
            (100, "a"),
            (100, "b"),
            (100, "c"),
            (100, "d"),
            (200, "e"),
            (200, "f"),
        ]
        .into_iter()
        .map(|(t, id)| (t, id.to_owned()))
        .collect();
        assert_eq!(seen, expected, "page size {page}");
    }
    let from_200 = store
        .readings_since(ReadingKind::Glucose, &Cursor::at(200), 10)
        .await
        .unwrap();
    assert_eq!(
        from_200
            .iter()
            .map(|r| glucoguard::model::parse::given_reading_id(&r.item.id))
            .collect::<Vec<_>>(),
        ["e", "f"]
    );
    assert_eq!(
        from_200[0].item,
        glucose("e", 1, T0, 100.0),
        "rows round-trip"
    );

    let alerts = store.alerts_since(&Cursor::at(100), 100).await.unwrap();
    assert_eq!(
        alerts.len(),
        6,
        "one alert per reading, the replay added none"
    );
    assert!(
        alerts.windows(2).all(
            |w| (w[0].received_at_ms, &w[0].item.0.id) < (w[1].received_at_ms, &w[1].item.0.id)
        )
    );
    let rest = store
        .alerts_since(&alerts[3].cursor(&alerts[3].item.0.id), 100)
        .await
        .unwrap();
    assert_eq!(rest, alerts[4..].to_vec());
    assert!(
        store
            .readings_since(ReadingKind::Device, &Cursor::default(), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Retention deletes readings and telemetry older than the cut, in chunks, and keeps alerts
/// and everything newer.
pub(crate) async fn retention_purges_only_old_readings(store: Arc<dyn Store>) {
    // 25 000 old glucose readings (more than two purge chunks) and 10 new ones.
    let old: Vec<_> = (0..25_000)
        .map(|i| glucose(&format!("old{i}"), 1 + i % 7, T0 + i as i64, 100.0))
        .collect();
    let cut = T0 + 30_000;
    let new: Vec<_> = (0..10)
        .map(|i| glucose(&format!("new{i}"), 1, cut + i, 100.0))
        .collect();
    let device = |id: &str, at: &str| {
        glucoguard::model::parse::parse_reading(
            format!(
                r#"{{"reading_id":"{id}","device_id":5,"timestamp":"{at}","battery_level":40,"connectivity_status":"Connected"}}"#
            )
            .as_bytes(),
        )
        .unwrap()
    };
    let mut readings = old;
    readings.extend(new);
    readings.push(device("dev-old", "2026-11-01T00:00:00Z"));
    readings.push(device("dev-new", "2026-12-30T00:00:00Z"));
    store
        .write_batch(&WriteBatch {
            alerts: vec![(alert("old0", T0), AlertStatus::Open)],
            readings,
            received_at_ms: 1,
            ..WriteBatch::default()
        })
        .await
        .unwrap();
    let before = store.counts().await.unwrap();
    assert_eq!(
        (before.glucose_readings, before.device_readings),
        (25_010, 2)
    );
    // Bounded by a downstream cursor that has confirmed nothing received at 1 or later.
    let unconfirmed = glucoguard::store::FeedCursor::uniform(Cursor::at(1));
    assert_eq!(
        store
            .purge_readings_before(cut, Some(&unconfirmed))
            .await
            .unwrap(),
        Purged::default(),
        "nothing the archive has not confirmed is purged"
    );
    let purged = store.purge_readings_before(cut, None).await.unwrap();
    assert_eq!(
        purged,
        Purged {
            glucose_readings: 25_000,
            device_readings: 1
        }
    );
    let counts = store.counts().await.unwrap();
    assert_eq!(
        (
            counts.glucose_readings,
            counts.device_readings,
            counts.alerts
        ),
        (10, 1, 1),
        "newer readings and all alerts stay"
    );
    assert_eq!(
        store.purge_readings_before(cut, None).await.unwrap(),
        Purged::default(),
        "a second pass finds nothing"
    );
}

#[tokio::test]
async fn sqlite_writes_are_idempotent() {
    let (s, _d) = sqlite().await;
    writes_are_idempotent(s).await;
}

#[tokio::test]
async fn sqlite_recent_readings_cover_the_lookback() {
    let (s, _d) = sqlite().await;
    recent_readings_cover_the_lookback(s).await;
}

#[tokio::test]
async fn sqlite_rule_versions_are_immutable() {
    let (s, _d) = sqlite().await;
    rule_versions_are_immutable(s).await;
}

#[tokio::test]
async fn sqlite_dimensions_are_upserted_in_one_transaction() {
    let (s, _d) = sqlite().await;
    dimensions_are_upserted_in_one_transaction(s).await;
}

#[tokio::test]
async fn sqlite_large_batches_are_written_whole() {
    let (s, _d) = sqlite().await;
    large_batches_are_written_whole(s).await;
}

#[tokio::test]
async fn sqlite_readings_are_found_by_id_and_new_alerts_reported_once() {
    let (s, _d) = sqlite().await;
    readings_are_found_by_id_and_new_alerts_reported_once(s).await;
}

#[tokio::test]
async fn sqlite_dead_letters_and_rule_faults_are_bounded_by_count_and_age() {
    let (s, _d) = sqlite().await;
    dead_letters_and_rule_faults_are_bounded_by_count_and_age(s).await;
}

#[tokio::test]
async fn sqlite_sink_cursors_round_trip() {
    let (s, _d) = sqlite().await;
    sink_cursors_round_trip(s).await;
}

#[tokio::test]
async fn sqlite_a_retried_batch_stores_its_rule_faults_once() {
    let (s, _d) = sqlite().await;
    a_retried_batch_stores_its_rule_faults_once(s).await;
}

#[tokio::test]
async fn sqlite_ids_compare_exactly() {
    let (s, _d) = sqlite().await;
    ids_compare_exactly(s).await;
}

#[tokio::test]
async fn sqlite_reopen_keeps_data_and_migrations_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    let s = SqliteStore::open(&path).await.unwrap();
    s.write_batch(&sample_batch()).await.unwrap();
    drop(s);
    let s = SqliteStore::open(&path).await.unwrap();
    assert_eq!(s.counts().await.unwrap().glucose_readings, 2);
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _glucoguard_migrations")
        .fetch_one(s.pool())
        .await
        .unwrap();
    assert_eq!(
        applied as usize,
        glucoguard::store::sqlite::MIGRATIONS.len()
    );
}

#[tokio::test]
async fn sqlite_pages_since_a_cursor_cover_every_row_once() {
    let (s, _d) = sqlite().await;
    pages_since_a_cursor_cover_every_row_once(s).await;
}

#[tokio::test]
async fn sqlite_retention_purges_only_old_readings() {
    let (s, _d) = sqlite().await;
    retention_purges_only_old_readings(s).await;
}
