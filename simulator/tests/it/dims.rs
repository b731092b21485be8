//! Dimension data agrees with the readings for the same seed and patient count.

use std::collections::BTreeSet;

use glucoguard_simulator::{Cadence, SimConfig, dimensions};
use serde_json::Value;

use crate::common::{config, run};

#[test]
fn ids_match_the_readings() {
    for cadence in [Cadence::Cgm, Cadence::Meter] {
        let cfg = SimConfig {
            cadence,
            ..config(12, 2, 33)
        };
        let events = run(cfg.clone());
        let dims = dimensions(33, 12);
        let patients: BTreeSet<u64> = dims.patients.iter().map(|p| p.patient_id).collect();
        let devices: BTreeSet<u64> = dims.devices.iter().map(|d| d.device_id).collect();
        for e in &events {
            assert!(patients.contains(&e.patient_id()));
            assert!(devices.contains(&e.device_id()));
            let owner = dims
                .devices
                .iter()
                .find(|d| d.device_id == e.device_id())
                .unwrap()
                .patient_id;
            assert_eq!(owner, e.patient_id());
        }
        for p in &dims.patients {
            assert_eq!(Some(p.profile), cfg.profile_of(p.patient_id));
        }
        let used: BTreeSet<u64> = events.iter().map(|e| e.patient_id()).collect();
        assert_eq!(used, patients);
    }
}

#[test]
fn serialises_with_every_table_and_referential_integrity() {
    let dims = dimensions(1, 40);
    let json: Value = serde_json::to_value(&dims).unwrap();
    for table in [
        "patients",
        "manufacturers",
        "device_models",
        "devices",
        "subscribers",
        "subscriptions",
    ] {
        assert!(
            json[table].as_array().is_some_and(|a| !a.is_empty()),
            "{table}"
        );
    }
    let p = &json["patients"][0];
    for key in [
        "patient_id",
        "first_name",
        "last_name",
        "birth_date",
        "sex",
        "email",
        "phone",
        "profile",
        "diabetes_type",
    ] {
        assert!(!p[key].is_null(), "{key}");
    }
    let roles: BTreeSet<&str> = json["subscribers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        BTreeSet::from(["app", "caregiver", "doctor", "patient"])
    );
    assert!(
        json["subscribers"][0]["telegram_chat_id"]
            .as_i64()
            .is_some()
    );
    let subscriber_ids: BTreeSet<u64> = dims.subscribers.iter().map(|s| s.subscriber_id).collect();
    for s in &dims.subscriptions {
        assert!(subscriber_ids.contains(&s.subscriber_id));
        assert!((1..=40).contains(&s.patient_id));
    }
    for d in &dims.devices {
        let model = dims
            .device_models
            .iter()
            .find(|m| m.model_id == d.model_id)
            .unwrap();
        assert!(model.firmware_versions.contains(&d.firmware_version));
        assert!(
            dims.manufacturers
                .iter()
                .any(|m| m.manufacturer_id == model.manufacturer_id)
        );
    }
}
