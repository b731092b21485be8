//! The dashboard's JSON API through the admin router of a real host: readings go through the
//! pipeline into SQLite and on into a DuckDB file, and every route's numbers are checked
//! against a small hand-computed data set. Also: clinicians see only the patients they
//! follow (another patient is a 404), bad parameters are a 400 in the API's error shape, a
//! host without `[analytics]` answers 503 `analytics_off`, and GMI shows from exactly 70 %
//! data sufficiency.

use crate::support::{self, glucose_json, send_all};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use glucoguard::admin::{AdminState, router};
use glucoguard::analytics::Table;
use glucoguard::app::App;
use glucoguard::store::accounts::Role;
use glucoguard::store::prelude::*;
use serde_json::{Value, json};
use std::time::Duration;
use tower::ServiceExt;

const MIN: i64 = 60_000;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

/// A host with a DuckDB analytics file, the readings below, and tokens for an admin and for
/// a clinician following patients 1 and 4.
///
/// Times are relative to `today`, the UTC midnight of the day the test runs (the routes
/// count back from now). Patients:
/// 1. Ada (followed, profile `type1`): 100 at D−5 08:00, 200 at D−5 09:00, 150 at D−4 08:00,
///    50 at D−3 08:00, 120 at D−2 23:00 (all UTC).
/// 2. Bo (not followed): 80 at D−5 10:00, 90 at D−1 12:00, 100 at D−1 13:00.
/// 3. Cy: deleted, one reading.
/// 4. Di (followed): no readings.
/// 5. Eve: live readings for `latest`: 90 half an hour ago, then 100, 106, 112, 118 every
///    5 minutes up to one minute ago.
/// 6. and 7. Fay and Gus: a steady 154 every 5 minutes up to one minute ago, 1008 and
///    1007 readings — 70 % and just under 70 % of the 1440 expected in 5 days.
struct Fixture {
    app: App,
    router: axum::Router,
    admin: String,
    clinician: String,
    today: i64,
    now: i64,
    _dir: tempfile::TempDir,
}

/// Readings of the fixture's patients: (id, patient, time, mg/dL).
fn readings(today: i64, now: i64) -> Vec<(String, u64, i64, f64)> {
    let d = |days: i64, hours: i64| today - days * DAY + hours * HOUR;
    let mut r: Vec<(String, u64, i64, f64)> = [
        ("a1", 1, d(5, 8), 100.0),
        ("a2", 1, d(5, 9), 200.0),
        ("a3", 1, d(4, 8), 150.0),
        ("a4", 1, d(3, 8), 50.0),
        ("a5", 1, d(2, 23), 120.0),
        ("b1", 2, d(5, 10), 80.0),
        ("b2", 2, d(1, 12), 90.0),
        ("b3", 2, d(1, 13), 100.0),
        ("c1", 3, d(2, 8), 300.0),
    ]
    .into_iter()
    .map(|(id, p, t, v)| (id.to_owned(), p, t, v))
    .collect();
    let last = now - MIN;
    for (i, (back, v)) in [(29, 90.0), (15, 100.0), (10, 106.0), (5, 112.0), (0, 118.0)]
        .into_iter()
        .enumerate()
    {
        r.push((format!("e{i}"), 5, last - back * MIN, v));
    }
    for (patient, n) in [(6, 1008), (7, 1007)] {
        for i in 0..n {
            r.push((
                format!("g{patient}-{i}"),
                patient,
                last - i * 5 * MIN,
                154.0,
            ));
        }
    }
    r
}

async fn issue(app: &App, role: Role, user: Option<String>) -> String {
    support::issue(app, role, user).await.1
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let config = glucoguard::config::Config {
        analytics: Some(glucoguard::config::AnalyticsConfig {
            path: dir.path().join("analytics.duckdb"),
        }),
        ..support::sqlite_host_config(&dir.path().join("g.db"), 256, vec![])
    };
    let app = glucoguard::app::start(&config).await.unwrap();
    support::put_dimensions(
        &app,
        json!({
        "patients": [
            {"patient_id": 1, "first_name": "Ada", "last_name": "Followed", "profile": "type1"},
            {"patient_id": 2, "first_name": "Bo", "last_name": "Other"},
            {"patient_id": 3, "first_name": "Cy", "last_name": "Deleted"},
            {"patient_id": 4, "first_name": "Di", "last_name": "Quiet"},
            {"patient_id": 5, "first_name": "Eve", "last_name": "Live"},
            {"patient_id": 6, "first_name": "Fay", "last_name": "Seventy"},
            {"patient_id": 7, "first_name": "Gus", "last_name": "Under"}
        ],
        "subscribers": [{"subscriber_id": 10, "name": "Dr Who", "role": "doctor"}],
        "subscriptions": [
            {"subscriber_id": 10, "patient_id": 1},
            {"subscriber_id": 10, "patient_id": 4}
        ]
        }),
    )
    .await;
    app.store
        .delete_patient(3, &support::audit())
        .await
        .unwrap();
    let user = support::clinician(&app, 10).await;
    let admin = issue(&app, Role::Admin, None).await;
    let clinician = issue(&app, Role::Clinician, Some(user.user_id.clone())).await;

    let now = glucoguard::model::now_ms();
    let today = now - now % DAY;
    let rows = readings(today, now);
    send_all(
        &app,
        rows.iter()
            .map(|(id, p, t, v)| glucose_json(id, *p, *t, *v)),
    )
    .await;
    // Acknowledged once in SQLite; DuckDB is fed from there right after.
    let analytics = app.analytics.clone().expect("analytics configured");
    tokio::time::timeout(Duration::from_secs(60), async {
        while analytics.analytics().count(Table::GlucoseReadings).unwrap() < rows.len() as u64 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("DuckDB holds every reading");

    let store: std::sync::Arc<dyn AdminStore> = app.store.clone();
    let state = AdminState::new(store, app.handle.clone(), false).with_analytics(analytics);
    let router = router(state, app.handle.embedded_source("test"));
    Fixture {
        app,
        router,
        admin,
        clinician,
        today,
        now,
        _dir: dir,
    }
}

async fn get(router: &axum::Router, token: &str, path: &str) -> (StatusCode, Value) {
    let resp = router
        .clone()
        .oneshot(
            Request::get(path)
                .header("authorization", support::bearer(token))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
        panic!(
            "{path}: {status} is not JSON: {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, json)
}

/// GET as `token`, expecting 200.
async fn ok(router: &axum::Router, token: &str, path: &str) -> Value {
    let (status, json) = get(router, token, path).await;
    assert_eq!(status, StatusCode::OK, "{path}: {json}");
    json
}

fn close(actual: &Value, expected: f64) {
    let a = actual
        .as_f64()
        .unwrap_or_else(|| panic!("{actual} is not a number"));
    assert!((a - expected).abs() < 1e-9, "{a} is not {expected}");
}

fn numbers(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// The five consensus bands of a metrics object, summed.
fn bands_sum(m: &Value) -> f64 {
    let f = |k: &str| m[k].as_f64().unwrap();
    f("below_54_pct")
        + (f("below_70_pct") - f("below_54_pct"))
        + f("in_range_pct")
        + (f("above_180_pct") - f("above_250_pct"))
        + f("above_250_pct")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_gives_the_hand_computed_numbers() {
    let f = fixture().await;
    let (r, admin) = (&f.router, f.admin.as_str());
    let d = |days: i64, hours: i64| f.today - days * DAY + hours * HOUR;

    // ---- metrics: Ada's five readings over 14 days.
    let m = ok(r, admin, "/api/dashboard/patients/1/metrics?days=14").await;
    assert_eq!(m["patient_id"], 1);
    assert_eq!(m["count"], 5);
    assert_eq!(m["expected"], 14 * 288);
    close(&m["data_sufficiency_pct"], 5.0 / 4032.0 * 100.0);
    // 100, 150, 120 in range; 50 below 54 (so below 70); 200 above 180, none above 250.
    close(&m["in_range_pct"], 60.0);
    close(&m["below_70_pct"], 20.0);
    close(&m["below_54_pct"], 20.0);
    close(&m["above_180_pct"], 20.0);
    close(&m["above_250_pct"], 0.0);
    close(&Value::from(bands_sum(&m)), 100.0);
    close(&m["mean_mg_dl"], 124.0);
    // Deviations −24, 76, 26, −74, −4: squares sum to 12 520, over n − 1 = 4.
    close(&m["sd_mg_dl"], 3130f64.sqrt());
    close(&m["cv_pct"], 3130f64.sqrt() / 124.0 * 100.0);
    // Far below 70 % of the expected readings: GMI is withheld.
    assert_eq!(
        (&m["gmi_pct"], &m["gmi_shown"]),
        (&Value::Null, &json!(false))
    );
    // The period is the last 14 days up to now.
    let (from, to) = (m["from_ms"].as_i64().unwrap(), m["to_ms"].as_i64().unwrap());
    assert_eq!(to - from, 14 * DAY);
    assert!(to >= f.now);

    // ---- series: a period that starts after the first reading, which still counts toward
    // the 2-day moving average of the second.
    let s = ok(
        r,
        admin,
        &format!(
            "/api/dashboard/patients/1/series?from_ms={}&to_ms={}",
            d(5, 8) + 30 * MIN,
            d(3, 8) + 1
        ),
    )
    .await;
    assert_eq!(s["patient_id"], 1);
    assert_eq!(s["t"], json!([d(5, 9), d(4, 8), d(3, 8)]));
    assert_eq!(numbers(&s["mg_dl"]), [200.0, 150.0, 50.0]);
    let ma = numbers(&s["ma_2d"]);
    // (100 + 200) / 2; (100 + 200 + 150) / 3; the 08:00 reading two days before is out of
    // the window (t − 48 h, t]: (200 + 150 + 50) / 3.
    close(&ma[0].into(), 150.0);
    close(&ma[1].into(), 150.0);
    close(&ma[2].into(), 400.0 / 3.0);
    assert_eq!(
        (&s["target_low"], &s["target_high"]),
        (&json!(70), &json!(180))
    );
    // By default the last 30 days: all five readings.
    let month = ok(r, admin, "/api/dashboard/patients/1/series").await;
    assert_eq!(month["t"].as_array().unwrap().len(), 5);
    assert_eq!(
        month["to_ms"].as_i64().unwrap() - month["from_ms"].as_i64().unwrap(),
        30 * DAY
    );

    // ---- AGP: by UTC time of day in 15-minute bins, then at UTC+2 in hours, where the
    // 23:00 reading wraps past midnight to 01:00.
    let a = ok(r, admin, "/api/dashboard/patients/1/agp?days=14").await;
    assert_eq!(a["bin_minutes"], 15);
    assert_eq!(a["minute"], json!([480, 540, 1380]));
    assert_eq!(a["count"], json!([3, 1, 1]));
    assert_eq!(numbers(&a["p50"]), [100.0, 200.0, 120.0]);
    let a = ok(
        r,
        admin,
        "/api/dashboard/patients/1/agp?days=14&utc_offset_min=120&bin_minutes=60",
    )
    .await;
    assert_eq!(a["minute"], json!([60, 600, 660]));
    assert_eq!(a["count"], json!([1, 3, 1]));
    // 10:00 local holds 50, 100, 150: quantile_cont at (n − 1) × p = 2p.
    let at_ten = |k: &str| a[k][1].as_f64().unwrap();
    assert_eq!(
        [
            at_ten("p5"),
            at_ten("p25"),
            at_ten("p50"),
            at_ten("p75"),
            at_ten("p95")
        ],
        [55.0, 75.0, 100.0, 125.0, 145.0]
    );
    for k in ["p5", "p25", "p50", "p75", "p95"] {
        assert_eq!(a[k][0], json!(120.0), "{k}");
        assert_eq!(a[k][2], json!(200.0), "{k}");
    }

    // ---- daily: Ada and Bo on the last 7 UTC days, one axis, null where a day has none.
    let day = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(ms)
            .unwrap()
            .date_naive()
            .to_string()
    };
    let w = ok(r, admin, "/api/dashboard/daily?patients=1,2&days=7").await;
    let axis: Vec<String> = (0..7).rev().map(|i| day(f.today - i * DAY)).collect();
    assert_eq!(w["days"], json!(axis));
    assert_eq!(w["from_ms"], f.today - 6 * DAY);
    assert_eq!(w["to_ms"], f.today + DAY);
    assert_eq!(w["series"][0]["patient_id"], 1);
    assert_eq!(w["series"][0]["label"], "Ada Followed");
    assert_eq!(
        w["series"][0]["mean"],
        json!([null, 150.0, 150.0, 50.0, 120.0, null, null])
    );
    assert_eq!(w["series"][1]["label"], "Bo Other");
    assert_eq!(
        w["series"][1]["mean"],
        json!([null, 80.0, null, null, null, 95.0, null])
    );
    // The listed order is kept; at UTC+1 the 23:00 reading belongs to the next day.
    let local_today = glucoguard::model::now_ms() + 60 * MIN;
    let local_today = local_today - local_today % DAY;
    let w = ok(
        r,
        admin,
        "/api/dashboard/daily?patients=2,1&days=7&utc_offset_min=60",
    )
    .await;
    assert_eq!(w["days"][6], day(local_today));
    assert_eq!(w["from_ms"], local_today - 6 * DAY - 60 * MIN);
    assert_eq!(w["series"][1]["patient_id"], 1);
    // Ada's mean on the UTC day D−k, indexed from the local today (D, or D+1 late at
    // night: then the axis starts a day later).
    let shift = (local_today - f.today) / DAY;
    let ada = |k: i64| w["series"][1]["mean"][(6 - k - shift) as usize].clone();
    assert_eq!(ada(5), json!(150.0));
    assert_eq!(ada(3), json!(50.0));
    assert_eq!(ada(2), Value::Null, "the 23:00 reading moved on");
    assert_eq!(ada(1), json!(120.0));

    // ---- latest: Eve's newest stored reading, its change and the 15-minute trend.
    let l = ok(r, admin, "/api/dashboard/patients/5/latest").await;
    assert_eq!(l["at_ms"], f.now - MIN);
    assert_eq!(l["mg_dl"], 118.0);
    assert_eq!(l["delta_mg_dl"], 6.0);
    // 100, 106, 112, 118 at 5-minute steps: 1.2 mg/dL/min (the half-hour-old 90 is outside).
    close(&l["rate_mg_dl_per_min"], 1.2);
    assert_eq!(l["trend"], "rising");
    let ago = l["minutes_ago"].as_i64().unwrap();
    assert!((1..=2).contains(&ago), "{ago}");
    // No reading: every field null, not a 404.
    let none = ok(r, admin, "/api/dashboard/patients/4/latest").await;
    assert_eq!(
        none,
        json!({"patient_id": 4, "at_ms": null, "mg_dl": null, "delta_mg_dl": null,
               "rate_mg_dl_per_min": null, "trend": null, "minutes_ago": null})
    );

    // ---- the list: every live patient, the deleted one left out, metrics equal to the
    // per-patient route's.
    let list = ok(r, admin, "/api/dashboard/patients?days=14").await;
    let rows = list.as_array().unwrap();
    let ids: Vec<u64> = rows
        .iter()
        .map(|p| p["patient_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 4, 5, 6, 7]);
    let ada = &rows[0];
    assert_eq!(ada["alias"], "Ada Followed");
    assert_eq!(ada["profile"], "type1");
    assert_eq!(ada["last_reading_ms"], d(2, 23));
    assert_eq!(ada["last_mg_dl"], 120.0);
    let quiet = &rows[2];
    assert_eq!(quiet["profile"], Value::Null);
    assert_eq!(
        (&quiet["last_reading_ms"], &quiet["last_mg_dl"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(quiet["metrics"]["count"], 0);
    assert_eq!(quiet["metrics"]["data_sufficiency_pct"], 0.0);
    assert_eq!(quiet["metrics"]["in_range_pct"], Value::Null);
    assert_eq!(rows[3]["last_reading_ms"], f.now - MIN);
    for row in rows {
        let id = row["patient_id"].as_u64().unwrap();
        let mut single = ok(
            r,
            admin,
            &format!("/api/dashboard/patients/{id}/metrics?days=14"),
        )
        .await;
        for k in ["patient_id", "from_ms", "to_ms"] {
            single.as_object_mut().unwrap().remove(k);
        }
        assert_eq!(row["metrics"], single, "patient {id}");
        if row["metrics"]["count"] != 0 {
            close(&Value::from(bands_sum(&row["metrics"])), 100.0);
        }
    }
    support::stop(f.app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gmi_shows_from_exactly_70_percent_data_sufficiency() {
    let f = fixture().await;
    // 5 days expect 1440 readings at 5 minutes: 1008 are exactly 70 %, 1007 just under.
    let fay = ok(
        &f.router,
        &f.admin,
        "/api/dashboard/patients/6/metrics?days=5",
    )
    .await;
    assert_eq!(
        (&fay["count"], &fay["expected"]),
        (&json!(1008), &json!(1440))
    );
    close(&fay["data_sufficiency_pct"], 70.0);
    assert_eq!(fay["gmi_shown"], true);
    close(&fay["gmi_pct"], 3.31 + 0.02392 * 154.0);
    let gus = ok(
        &f.router,
        &f.admin,
        "/api/dashboard/patients/7/metrics?days=5",
    )
    .await;
    assert_eq!(gus["count"], 1007);
    close(&gus["data_sufficiency_pct"], 1007.0 / 1440.0 * 100.0);
    assert_eq!(
        (&gus["gmi_pct"], &gus["gmi_shown"]),
        (&Value::Null, &json!(false))
    );
    close(&gus["mean_mg_dl"], 154.0);
    // The list applies the same gate.
    let list = ok(&f.router, &f.admin, "/api/dashboard/patients?days=5").await;
    let row = |id: u64| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|p| p["patient_id"] == id)
            .unwrap()["metrics"]
            .clone()
    };
    assert_eq!(row(6)["gmi_shown"], true);
    close(&row(6)["gmi_pct"], 3.31 + 0.02392 * 154.0);
    assert_eq!(
        (&row(7)["gmi_shown"], &row(7)["gmi_pct"]),
        (&json!(false), &Value::Null)
    );
    support::stop(f.app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clinician_sees_only_the_patients_they_follow() {
    let f = fixture().await;
    let (r, c) = (&f.router, f.clinician.as_str());
    let list = ok(r, c, "/api/dashboard/patients").await;
    let ids: Vec<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["patient_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 4]);
    for route in ["series", "agp", "metrics", "latest"] {
        for other in [2, 3, 99] {
            let (status, body) =
                get(r, c, &format!("/api/dashboard/patients/{other}/{route}")).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{route} of {other}: {body}");
            assert_eq!(body["code"], "not_found");
        }
        ok(r, c, &format!("/api/dashboard/patients/1/{route}")).await;
        // The admin sees the other patient, but no deleted or unknown one either.
        ok(r, &f.admin, &format!("/api/dashboard/patients/2/{route}")).await;
        for gone in [3, 99] {
            let (status, _) = get(
                r,
                &f.admin,
                &format!("/api/dashboard/patients/{gone}/{route}"),
            )
            .await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{route} of {gone}");
        }
    }
    let (status, _) = get(r, c, "/api/dashboard/daily?patients=1,2").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "one patient not followed");
    let mine = ok(r, c, "/api/dashboard/daily?patients=4,1").await;
    assert_eq!(mine["series"][0]["mean"].as_array().unwrap().len(), 30);
    assert!(
        mine["series"][0]["mean"]
            .as_array()
            .unwrap()
            .iter()
            .all(Value::is_null)
    );
    let (status, _) = get(r, &f.admin, "/api/dashboard/daily?patients=1,3").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a deleted patient");
    support::stop(f.app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_are_refused_and_a_host_without_analytics_answers_503() {
    let f = fixture().await;
    let now = glucoguard::model::now_ms();
    let thirteen: Vec<String> = (1..=13).map(|i| i.to_string()).collect();
    let bad = [
        "/api/dashboard/patients?days=0".to_owned(),
        "/api/dashboard/patients?days=91".to_owned(),
        "/api/dashboard/patients?days=two".to_owned(),
        "/api/dashboard/patients?day=14".to_owned(),
        "/api/dashboard/patients/1/metrics?days=-1".to_owned(),
        "/api/dashboard/patients/x/metrics".to_owned(),
        "/api/dashboard/patients/1/agp?utc_offset_min=900".to_owned(),
        "/api/dashboard/patients/1/agp?bin_minutes=7".to_owned(),
        "/api/dashboard/patients/1/agp?days=100".to_owned(),
        format!("/api/dashboard/patients/1/series?from_ms={now}&to_ms={now}"),
        format!(
            "/api/dashboard/patients/1/series?from_ms={}&to_ms={now}",
            now - 91 * DAY
        ),
        "/api/dashboard/patients/1/series?from_ms=soon".to_owned(),
        "/api/dashboard/patients/1/latest?since=1".to_owned(),
        "/api/dashboard/daily".to_owned(),
        "/api/dashboard/daily?patients=".to_owned(),
        "/api/dashboard/daily?patients=1,x".to_owned(),
        "/api/dashboard/daily?patients=1,1".to_owned(),
        format!("/api/dashboard/daily?patients={}", thirteen.join(",")),
        "/api/dashboard/daily?patients=1&utc_offset_min=-780".to_owned(),
    ];
    for path in &bad {
        let (status, body) = get(&f.router, &f.admin, path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["code"], "bad_request", "{path}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{path}"
        );
    }
    // URL-encoded commas, as a browser's URLSearchParams sends them, are fine.
    ok(&f.router, &f.admin, "/api/dashboard/daily?patients=1%2C2").await;

    // The same host's admin without the analytics sink: what `app` builds when the config
    // has no `[analytics]`.
    let store: std::sync::Arc<dyn AdminStore> = f.app.store.clone();
    let off = router(
        AdminState::new(store, f.app.handle.clone(), false),
        f.app.handle.embedded_source("test"),
    );
    for path in [
        "/api/dashboard/patients",
        "/api/dashboard/patients/1/series",
        "/api/dashboard/patients/1/agp",
        "/api/dashboard/patients/1/metrics",
        "/api/dashboard/patients/1/latest",
        "/api/dashboard/daily?patients=1",
        // Nothing is revealed about patients either.
        "/api/dashboard/patients/2/metrics",
    ] {
        for token in [&f.admin, &f.clinician] {
            let (status, body) = get(&off, token, path).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}: {body}");
            assert_eq!(body["code"], "analytics_off", "{path}");
        }
    }
    support::stop(f.app).await;
}
