//! HTTP ingest and the admin API over a real socket: the simulator's HTTP publisher streams
//! into `POST /api/ingest`; invalid items are reported and dead-lettered; dimension data
//! arrives through `POST /api/dimensions`; `/health` and `/ready` say when the host is down.

use crate::support::*;
use glucoguard::app;
use glucoguard::config::Config;
use glucoguard::pipeline::PipelineConfig;
use glucoguard_simulator::{HttpPublisher, Pacing, SimConfig, Simulator, stream};
use std::time::Duration;

fn config(db: &std::path::Path) -> Config {
    Config {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        ..sqlite_host_config(
            db,
            PipelineConfig::default().max_batch,
            vec![rule("glucoguard_default_rule", &[])],
        )
    }
}

fn post(token: &str, url: &str, body: &str) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut resp = agent
        .post(url)
        .header("Content-Type", "application/json")
        .header("Authorization", &crate::support::bearer(token))
        .send(body)
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_streams_over_http_and_every_reading_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let app = app::start(&config(&dir.path().join("g.db"))).await.unwrap();
    let token = crate::support::token(&app).await;
    let base = format!("http://{}", app.http.unwrap());
    let sim = SimConfig {
        patients: 4,
        duration: chrono::Duration::hours(12),
        ..SimConfig::default()
    };
    let url = format!("{base}/api/ingest");
    let publisher_token = token.clone();
    let streamed = tokio::task::spawn_blocking(move || {
        let mut publisher = HttpPublisher::new(url).with_bearer(Some(publisher_token));
        stream(
            Simulator::new(sim),
            Pacing::AsFastAsPossible,
            &mut publisher,
            200,
            false,
        )
        .unwrap()
    })
    .await
    .unwrap();
    // Each request returns only once its items are durable, so the counts are final here.
    let counts = app.store.counts().await.unwrap();
    assert_eq!(counts.glucose_readings, streamed.glucose_readings);
    assert_eq!(counts.device_readings, streamed.device_telemetry);
    assert_eq!(counts.dead_letters, 0);
    assert!(counts.alerts > 0);

    let (status, body) = tokio::task::spawn_blocking(move || {
        let stats = ureq::get(&format!("{base}/api/stats"))
            .header("Authorization", &crate::support::bearer(&token))
            .call()
            .unwrap()
            .body_mut()
            .read_to_string()
            .unwrap();
        (
            200,
            serde_json::from_str::<serde_json::Value>(&stats).unwrap(),
        )
    })
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["readings"], streamed.events);
    assert_eq!(body["rules"][0]["rule"]["name"], "default-glucose");
    app.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_items_are_reported_per_item_and_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let app = app::start(&config(&dir.path().join("g.db"))).await.unwrap();
    let token = crate::support::token(&app).await;
    let url = format!("http://{}/api/ingest", app.http.unwrap());
    let batch = format!(
        "[{}, {{\"patient_id\": 1, \"glucose_level\": 90}}, {}, \"just a string\"]",
        glucose_json("ok-1", 1, T0, 100.0),
        glucose_json("ok-2", 1, T0 + MIN, 101.0)
    );
    let (u, b) = (url.clone(), batch.clone());
    let (status, body) = tokio::task::spawn_blocking({
        let t = token.clone();
        move || post(&t, &u, &b)
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["received"], 4);
    assert_eq!(body["accepted"], 2);
    assert_eq!(body["rejected"][0]["index"], 1);
    assert!(
        body["rejected"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("missing field `timestamp`"),
        "{body}"
    );
    assert_eq!(body["rejected"][1]["index"], 3);

    let u = url.clone();
    let (status, body) = tokio::task::spawn_blocking({
        let t = token.clone();
        move || post(&t, &u, "{oops")
    })
    .await
    .unwrap();
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("malformed JSON"),
        "{body}"
    );

    let counts = app.store.counts().await.unwrap();
    assert_eq!(counts.glucose_readings, 2);
    assert_eq!(
        counts.dead_letters, 3,
        "two bad items and the unparseable body, each kept"
    );
    let dl = app.store.dead_letters(10).await.unwrap();
    assert!(
        dl.iter()
            .any(|d| d.payload == "{oops" && d.origin == "http")
    );
    app.handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dimension_data_from_the_simulator_lands_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let app = app::start(&config(&dir.path().join("g.db"))).await.unwrap();
    let token = crate::support::token(&app).await;
    let url = format!("http://{}/api/dimensions", app.http.unwrap());
    let dims = glucoguard_simulator::dimensions(42, 12);
    let body = serde_json::to_string(&dims).unwrap();
    let (u, b) = (url.clone(), body.clone());
    let (status, counts) = tokio::task::spawn_blocking({
        let t = token.clone();
        move || post(&t, &u, &b)
    })
    .await
    .unwrap();
    assert_eq!(status, 200, "{counts}");
    assert_eq!(counts["patients"], 12);
    assert_eq!(counts["devices"], dims.devices.len());
    assert_eq!(counts["subscribers"], dims.subscribers.len());
    assert_eq!(counts["subscriptions"], dims.subscriptions.len());
    // Idempotent: the same document again changes no counts.
    let (u, b) = (url.clone(), body);
    let (_, again) = tokio::task::spawn_blocking({
        let t = token.clone();
        move || post(&t, &u, &b)
    })
    .await
    .unwrap();
    assert_eq!(again, counts);
    // A document with a dangling reference is refused with the reason.
    let mut bad: serde_json::Value = serde_json::to_value(&dims).unwrap();
    bad["devices"][0]["patient_id"] = serde_json::json!(999);
    let (status, err) = tokio::task::spawn_blocking({
        let t = token.clone();
        move || post(&t, &url, &bad.to_string())
    })
    .await
    .unwrap();
    assert_eq!(status, 400);
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("unknown patient 999"),
        "{err}"
    );
    app.handle.shutdown().await;
}

fn get(url: &str) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut resp = agent.get(url).call().unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_ready_answer_503_once_the_pipeline_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let app = app::start(&config(&dir.path().join("g.db"))).await.unwrap();
    let base = format!("http://{}", app.http.unwrap());
    let b = base.clone();
    let (health, ready) = tokio::task::spawn_blocking(move || {
        (get(&format!("{b}/health")), get(&format!("{b}/ready")))
    })
    .await
    .unwrap();
    assert_eq!(health.0, 200, "{}", health.1);
    assert_eq!(health.1["pipeline"]["alive"], true);
    assert_eq!(health.1["pipeline"]["queued_items"], 0);
    assert_eq!(
        ready,
        (200, serde_json::json!({ "ready": true, "reasons": [] }))
    );

    // The HTTP listener outlives the pipeline here (as it would after a crash).
    app.handle.shutdown().await;
    tokio::time::timeout(Duration::from_secs(30), app.pipeline)
        .await
        .expect("drains")
        .unwrap();
    let (health, ready) = tokio::task::spawn_blocking(move || {
        (
            get(&format!("{base}/health")),
            get(&format!("{base}/ready")),
        )
    })
    .await
    .unwrap();
    assert_eq!(health.0, 503, "{}", health.1);
    assert_eq!(health.1["healthy"], false);
    assert_eq!(health.1["pipeline"]["alive"], false);
    assert_eq!(health.1["store"]["reachable"], true);
    assert_eq!(ready.0, 503, "{}", ready.1);
    assert_eq!(ready.1["ready"], false);
    assert!(
        ready.1["reasons"][0]
            .as_str()
            .unwrap()
            .contains("the pipeline is not running"),
        "{}",
        ready.1
    );
}
