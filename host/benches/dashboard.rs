//! Dashboard benchmark: the server time of each dashboard route and of each web admin page
//! with 100 patients × 30 days of 5-minute CGM readings (about 864 000) in DuckDB, against
//! baselines measured in the same run.
//!
//! A host is started on a temporary SQLite store and DuckDB file (`app::start`, as
//! `glucoguard run` does, without a listener). The directory gets the patients; DuckDB gets
//! the simulator's readings through `Analytics::append_batch` (the path the sink takes); the
//! store gets their last day, which `latest` reads. Then each route is called through the
//! admin router in-process with an admin token (authentication, the directory, the query,
//! JSON: everything but the socket), `GLUCOGUARD_BENCH_ROUNDS` times (default 50), rounds
//! interleaved so noise spreads over all of them, and p50/p99 are printed per route beside:
//!
//! - the DuckDB query alone, called the way the route calls it;
//! - baseline 1: `SELECT count(*)` over one patient's readings in the same DuckDB file;
//! - baseline 2: `GET /api/me` through the same router (authentication and JSON only).
//!
//! Pages (`/web/…`) are timed the same way: the handler, its store and DuckDB reads and the
//! askama rendering, for the whole HTML answer. The charts' data is fetched by the browser
//! from the routes above, so a patient's page time plus its routes is what a viewer waits for
//! on the server. Each page is checked to name what it must show (every patient in the list,
//! the patient's chart hooks, the compared patients) before timing.
//!
//! Before timing, each answer is checked against the loaded readings: the list over 31 days
//! counts every reading of every patient, the series of one patient has all its readings,
//! the AGP's and the metrics' counts are the readings in the periods they report, and the
//! daily means equal a mean computed here.
//!
//! `cargo bench -p glucoguard --bench dashboard`. Knobs: `GLUCOGUARD_BENCH_PATIENTS` (100),
//! `GLUCOGUARD_BENCH_DAYS` (30), `GLUCOGUARD_BENCH_ROUNDS` (50).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use glucoguard::admin::{AdminState, auth, router};
use glucoguard::analytics::Analytics;
use glucoguard::model::batch::WriteBatch;
use glucoguard::model::{Body as ReadingBody, EpochMs, Reading, parse};
use glucoguard::store::accounts::{Audit, Role};
use glucoguard::store::prelude::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;

const DAY_MS: i64 = 86_400_000;
/// The patient whose series, AGP, metrics and latest value are timed.
const ONE: u64 = 7;
/// The patients the daily comparison compares.
const COMPARED: [u64; 5] = [1, 2, 3, 4, 5];
/// Readings per DuckDB append while loading.
const LOAD_BATCH: usize = 50_000;

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// The simulator's readings (five profiles round-robin, CGM cadence) for `days` up to `end`.
fn simulated(patients: usize, days: i64, end: EpochMs) -> Vec<Reading> {
    let start = chrono::DateTime::from_timestamp_millis(end - days * DAY_MS).unwrap();
    glucoguard_simulator::Simulator::new(glucoguard_simulator::SimConfig {
        seed: 11,
        patients,
        start,
        duration: chrono::Duration::days(days),
        telemetry: false,
        ..glucoguard_simulator::SimConfig::default()
    })
    .map(|e| parse::parse_reading(e.to_json_line().as_bytes()).expect("simulated is valid"))
    .collect()
}

fn patient_of(r: &Reading) -> (u64, f64) {
    match &r.body {
        ReadingBody::Glucose(g) => (g.patient_id, g.mg_dl),
        ReadingBody::Device(_) => unreachable!("glucose only"),
    }
}

/// One patient's readings (time, mg/dL) in `[from, to)`.
fn of_patient(
    readings: &[Reading],
    patient: u64,
    from: EpochMs,
    to: EpochMs,
) -> Vec<(EpochMs, f64)> {
    readings
        .iter()
        .filter(|r| (from..to).contains(&r.at_ms))
        .filter_map(|r| {
            let (p, v) = patient_of(r);
            (p == patient).then_some((r.at_ms, v))
        })
        .collect()
}

/// The body of a 200 answer to `GET path` as `token`.
async fn fetch(router: &axum::Router, token: &str, path: &str) -> axum::body::Bytes {
    let resp = router
        .clone()
        .oneshot(
            Request::get(path)
                .header("authorization", format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 256 << 20)
        .await
        .unwrap();
    assert_eq!(
        status,
        StatusCode::OK,
        "{path}: {}",
        String::from_utf8_lossy(&bytes)
    );
    bytes
}

async fn get(router: &axum::Router, token: &str, path: &str) -> Value {
    serde_json::from_slice(&fetch(router, token, path).await).unwrap()
}

/// One timed thing: a route through the router, or a blocking call on the analytics file.
enum Probe {
    Route(String),
    Query(Box<dyn Fn(&Analytics) -> usize + Send + Sync>),
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let patients: usize = env_or("GLUCOGUARD_BENCH_PATIENTS", 100);
    let days: i64 = env_or("GLUCOGUARD_BENCH_DAYS", 30);
    let rounds: usize = env_or::<usize>("GLUCOGUARD_BENCH_ROUNDS", 50).max(1);
    assert!(
        patients as u64 >= ONE && days >= 2,
        "the bench needs patient {ONE} and two days"
    );

    // ---- the host
    let dir = tempfile::tempdir().unwrap();
    let config = glucoguard::config::Config {
        store: glucoguard::config::StoreConfig::sqlite(dir.path().join("g.db")),
        analytics: Some(glucoguard::config::AnalyticsConfig {
            path: dir.path().join("analytics.duckdb"),
        }),
        sources: vec![],
        rules: vec![],
        console: false,
        listen: None,
        ..glucoguard::config::Config::default()
    };
    let app = glucoguard::app::start(&config).await.unwrap();
    let audit = Audit::system("bench", "bench.seed", "bench");
    let dims = glucoguard::model::dims::Dimensions {
        patients: (1..=patients as u64)
            .map(|id| glucoguard::model::dims::Patient {
                patient_id: id,
                first_name: format!("P{id}"),
                last_name: "Bench".to_owned(),
                birth_date: None,
                sex: None,
                email: None,
                phone: None,
                profile: Some(["type1", "type2", "gestational"][id as usize % 3].to_owned()),
                diabetes_type: None,
            })
            .collect(),
        ..Default::default()
    };
    app.store.put_dimensions(&dims, &audit).await.unwrap();
    let (record, token) = auth::new_token("bench", Role::Admin, None, "system:bench", None);
    app.store.create_token(&record, &audit).await.unwrap();

    // ---- the readings, up to a minute ago
    let end = glucoguard::model::now_ms() / 60_000 * 60_000 - 60_000;
    let started = Instant::now();
    let readings = simulated(patients, days, end);
    eprintln!(
        "simulated {} readings ({patients} patients × {days} days) in {:.1} s",
        readings.len(),
        started.elapsed().as_secs_f64()
    );
    let analytics_sink = app.analytics.clone().expect("analytics configured");
    let analytics = analytics_sink.analytics().clone();
    let started = Instant::now();
    let mut loaded = 0;
    for chunk in readings.chunks(LOAD_BATCH) {
        let a = analytics.clone();
        let batch = WriteBatch {
            readings: chunk.to_vec(),
            received_at_ms: 1,
            ..WriteBatch::default()
        };
        loaded += tokio::task::spawn_blocking(move || a.append_batch(&batch))
            .await
            .unwrap()
            .unwrap()
            .glucose_readings;
    }
    assert_eq!(
        loaded,
        readings.len() as u64,
        "every reading is new to DuckDB"
    );
    let a = analytics.clone();
    tokio::task::spawn_blocking(move || a.checkpoint())
        .await
        .unwrap()
        .unwrap();
    // The last day in the OLTP store too, for `latest`.
    let last_day: Vec<Reading> = readings
        .iter()
        .filter(|r| r.at_ms >= end - DAY_MS)
        .cloned()
        .collect();
    let mut received_at_ms = 0;
    for chunk in last_day.chunks(5_000) {
        // Receive times increase strictly, as the pipeline stamps them.
        received_at_ms = glucoguard::model::now_ms().max(received_at_ms + 1);
        app.store
            .write_batch(&WriteBatch {
                readings: chunk.to_vec(),
                received_at_ms,
                ..WriteBatch::default()
            })
            .await
            .unwrap();
    }
    eprintln!(
        "loaded DuckDB ({loaded}) and the store ({}) in {:.1} s",
        last_day.len(),
        started.elapsed().as_secs_f64()
    );
    // The feeder copies the store's rows to DuckDB (all duplicates): let it finish first.
    let caught_up = Instant::now();
    while !app
        .handle
        .feeds()
        .iter()
        .all(|f| f.caught_up && f.confirmed_received_at_ms >= received_at_ms)
    {
        assert!(
            caught_up.elapsed() < Duration::from_secs(300),
            "feeder caught up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        analytics
            .count(glucoguard::analytics::Table::GlucoseReadings)
            .unwrap(),
        loaded,
        "the feeder added nothing"
    );

    let store: Arc<dyn AdminStore> = app.store.clone();
    let state = AdminState::new(store, app.handle.clone(), false).with_analytics(analytics_sink);
    let router = router(state, app.handle.embedded_source("bench"));
    let compared = COMPARED
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let series_path = format!(
        "/api/dashboard/patients/{ONE}/series?from_ms={}&to_ms={}",
        end - days * DAY_MS,
        end + 1
    );

    // ---- correctness, against the loaded readings
    let per_patient: BTreeMap<u64, u64> = readings.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(patient_of(r).0).or_default() += 1;
        m
    });
    let list = get(
        &router,
        &token,
        &format!("/api/dashboard/patients?days={}", days + 1),
    )
    .await;
    let listed: BTreeMap<u64, u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["patient_id"].as_u64().unwrap(),
                p["metrics"]["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed.len(), patients, "one row per patient");
    assert_eq!(
        listed
            .iter()
            .filter(|(_, n)| **n > 0)
            .collect::<BTreeMap<_, _>>(),
        per_patient.iter().collect::<BTreeMap<_, _>>(),
        "the list counts every reading of every patient"
    );
    let series = get(&router, &token, &series_path).await;
    assert_eq!(
        series["t"].as_array().unwrap().len() as u64,
        per_patient[&ONE],
        "the series has all of the patient's readings"
    );
    let agp = get(
        &router,
        &token,
        &format!("/api/dashboard/patients/{ONE}/agp?days=14"),
    )
    .await;
    let period = |v: &Value| (v["from_ms"].as_i64().unwrap(), v["to_ms"].as_i64().unwrap());
    let (from, to) = period(&agp);
    let binned: u64 = agp["count"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .sum();
    assert_eq!(
        binned,
        of_patient(&readings, ONE, from, to).len() as u64,
        "AGP counts"
    );
    let metrics = get(
        &router,
        &token,
        &format!("/api/dashboard/patients/{ONE}/metrics?days=14"),
    )
    .await;
    let (from, to) = period(&metrics);
    let in_period = of_patient(&readings, ONE, from, to);
    assert_eq!(
        metrics["count"].as_u64().unwrap(),
        in_period.len() as u64,
        "metrics count"
    );
    let mean = in_period.iter().map(|(_, v)| v).sum::<f64>() / in_period.len() as f64;
    assert!(
        (metrics["mean_mg_dl"].as_f64().unwrap() - mean).abs() < 1e-6,
        "metrics mean"
    );
    let daily = get(
        &router,
        &token,
        &format!("/api/dashboard/daily?patients={compared}&days={days}"),
    )
    .await;
    let (from, _) = period(&daily);
    for (i, &p) in COMPARED.iter().enumerate() {
        let means = daily["series"][i]["mean"].as_array().unwrap();
        assert_eq!(means.len() as i64, days);
        // Yesterday (UTC) is a whole day of readings: its mean, computed here.
        let yesterday = from + (days - 2) * DAY_MS;
        let day = of_patient(&readings, p, yesterday, yesterday + DAY_MS);
        let expected = day.iter().map(|(_, v)| v).sum::<f64>() / day.len() as f64;
        let got = means[days as usize - 2].as_f64().expect("a mean yesterday");
        assert!(
            (got - expected).abs() < 1e-6,
            "patient {p}: {got} vs {expected}"
        );
    }
    let latest = get(
        &router,
        &token,
        &format!("/api/dashboard/patients/{ONE}/latest"),
    )
    .await;
    let newest = of_patient(&readings, ONE, 0, EpochMs::MAX)
        .last()
        .copied()
        .unwrap();
    assert_eq!(latest["at_ms"].as_i64().unwrap(), newest.0, "latest");
    let page = |path: String| {
        let router = router.clone();
        let token = token.clone();
        async move { String::from_utf8(fetch(&router, &token, &path).await.to_vec()).unwrap() }
    };
    let list_page = page("/web/dashboard".to_owned()).await;
    for id in 1..=patients as u64 {
        assert!(
            list_page.contains(&format!("href=\"/web/patients/{id}\"")),
            "the list page links patient {id}"
        );
    }
    let patient_page = page(format!("/web/patients/{ONE}")).await;
    for hook in [
        "data-chart=\"series\"",
        "data-chart=\"agp\"",
        "id=\"tir-bar\"",
    ] {
        assert!(patient_page.contains(hook), "the patient page has {hook}");
    }
    let compare_page = page(format!("/web/compare?patients={compared}")).await;
    assert!(
        compare_page.contains(&format!("patients={}", compared.replace(',', "%2C"))),
        "the compare page asks for the chosen patients"
    );
    eprintln!("answers checked against the loaded readings, pages against the directory");

    // ---- timing
    let (two_weeks, month) = (end - 14 * DAY_MS, end - days * DAY_MS);
    let day_from = {
        let today = end - end % DAY_MS;
        today - (days - 1) * DAY_MS
    };
    let probes: Vec<(&str, Probe)> = vec![
        (
            "baseline: DuckDB count(*) of one patient's readings",
            Probe::Query(Box::new(|a: &Analytics| {
                let n: i64 = a
                    .connection()
                    .unwrap()
                    .query_row(
                        "SELECT count(*) FROM glucose_readings WHERE patient_id = 7",
                        [],
                        |r| r.get(0),
                    )
                    .unwrap();
                n as usize
            })),
        ),
        (
            "baseline: GET /api/me (router, token check, JSON)",
            Probe::Route("/api/me".to_owned()),
        ),
        (
            "GET /api/dashboard/patients?days=14",
            Probe::Route("/api/dashboard/patients?days=14".to_owned()),
        ),
        (
            "  its query: patient_overviews, all patients, 14 days",
            Probe::Query(Box::new(move |a: &Analytics| {
                a.patient_overviews(None, two_weeks, end, 300)
                    .unwrap()
                    .len()
            })),
        ),
        (
            "GET …/{id}/series (30 days)",
            Probe::Route(series_path.clone()),
        ),
        (
            "  its query: patient_series, 30 days",
            Probe::Query(Box::new(move |a: &Analytics| {
                a.patient_series(ONE, month, end + 1).unwrap().len()
            })),
        ),
        (
            "GET …/{id}/agp?days=14",
            Probe::Route(format!("/api/dashboard/patients/{ONE}/agp?days=14")),
        ),
        (
            "  its query: agp_with_offset, 14 days, 15-min bins",
            Probe::Query(Box::new(move |a: &Analytics| {
                a.agp_with_offset(ONE, two_weeks, end, 15, 0).unwrap().len()
            })),
        ),
        (
            "GET …/{id}/metrics?days=14",
            Probe::Route(format!("/api/dashboard/patients/{ONE}/metrics?days=14")),
        ),
        (
            "  its query: cgm_metrics, 14 days",
            Probe::Query(Box::new(move |a: &Analytics| {
                a.cgm_metrics(ONE, two_weeks, end, 300).unwrap().count as usize
            })),
        ),
        (
            "GET /api/dashboard/daily (5 patients, 30 days)",
            Probe::Route(format!(
                "/api/dashboard/daily?patients={compared}&days={days}"
            )),
        ),
        (
            "  its query: daily_averages_with_offset, 5 patients",
            Probe::Query(Box::new(move |a: &Analytics| {
                a.daily_averages_with_offset(&COMPARED, day_from, day_from + days * DAY_MS, 0)
                    .unwrap()
                    .len()
            })),
        ),
        (
            "GET …/{id}/latest (OLTP store)",
            Probe::Route(format!("/api/dashboard/patients/{ONE}/latest")),
        ),
        (
            "page: /web/dashboard (patient list)",
            Probe::Route("/web/dashboard".to_owned()),
        ),
        (
            "page: /web/dashboard sorted by time below 70",
            Probe::Route("/web/dashboard?sort=below_70&dir=desc".to_owned()),
        ),
        (
            "page: /web/patients/{id} (without its charts' data)",
            Probe::Route(format!("/web/patients/{ONE}")),
        ),
        (
            "page: /web/compare (5 patients)",
            Probe::Route(format!("/web/compare?patients={compared}")),
        ),
        (
            "page: /web/patients (directory)",
            Probe::Route("/web/patients".to_owned()),
        ),
        ("page: /web/rules", Probe::Route("/web/rules".to_owned())),
        ("page: /web/alerts", Probe::Route("/web/alerts".to_owned())),
        ("page: /web/ops", Probe::Route("/web/ops".to_owned())),
        ("page: /web/audit", Probe::Route("/web/audit".to_owned())),
    ];
    let mut times = vec![Vec::with_capacity(rounds); probes.len()];
    let mut out_sizes = vec![0usize; probes.len()];
    // Round 0 warms caches up and is not counted.
    for round in 0..=rounds {
        for (i, (_, probe)) in probes.iter().enumerate() {
            let (elapsed, size) = match probe {
                Probe::Route(path) => {
                    let started = Instant::now();
                    let body = fetch(&router, &token, path).await;
                    (started.elapsed(), body.len())
                }
                // On this worker, as a blocking call: the query, not a thread hand-off.
                Probe::Query(q) => tokio::task::block_in_place(|| {
                    let started = Instant::now();
                    let n = q(&analytics);
                    (started.elapsed(), n)
                }),
            };
            if round > 0 {
                times[i].push(elapsed.as_secs_f64() * 1e3);
            }
            out_sizes[i] = size;
        }
    }
    for t in &mut times {
        t.sort_by(f64::total_cmp);
    }
    let base = percentile(&times[0], 0.5);
    println!(
        "\n### Dashboard with {patients} patients × {days} days ({loaded} readings), {rounds} rounds\n"
    );
    println!(
        "| route or query | out (body, or rows / readings counted) | p50 ms | p99 ms | p50 × count(*) baseline |\n|---|---:|---:|---:|---:|"
    );
    for (i, (name, probe)) in probes.iter().enumerate() {
        let (p50, p99) = (percentile(&times[i], 0.5), percentile(&times[i], 0.99));
        let out = match probe {
            Probe::Route(_) => format!("{} B", out_sizes[i]),
            Probe::Query(_) => format!("n = {}", out_sizes[i]),
        };
        println!(
            "| {name} | {out} | {p50:.2} | {p99:.2} | {:.1} |",
            p50 / base
        );
    }
    app.handle.shutdown().await;
    tokio::time::timeout(Duration::from_secs(60), app.pipeline)
        .await
        .expect("drains")
        .unwrap();
}
