//! Shared test helpers: locating built rule components, building engines and readings.

use glucoguard::engine::{ActiveRule, CompiledRule, Engine, EngineConfig};
use glucoguard::model::ParamValue;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use glucoguard::app::built_plugin_dir as plugin_dir;

/// Counts the acknowledgements of items sent through an embedded source.
#[derive(Clone, Default)]
pub struct AckCounter(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl AckCounter {
    /// An `Ack` that counts itself here when the item is durable.
    pub fn ack(&self) -> glucoguard::sources::Ack {
        let n = self.0.clone();
        glucoguard::sources::Ack::new(move || {
            n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })
    }

    pub fn count(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until `n` items are acknowledged; panics after `limit`.
    pub async fn wait_for(&self, n: u64, limit: std::time::Duration) {
        tokio::time::timeout(limit, async {
            while self.count() < n {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "only {} of {n} items acknowledged within {limit:?}",
                self.count()
            )
        });
    }
}

/// The bytes of a built rule component, e.g. `glucoguard_default_rule`.
pub fn plugin(name: &str) -> Vec<u8> {
    let path = plugin_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "rule component {} is missing ({e}). Build the guests first: `cargo xtask build-plugins` \
             (needs `rustup target add wasm32-wasip2`), or run the suite with `cargo xtask test`.",
            path.display()
        )
    })
}

pub fn plugin_path(name: &str) -> PathBuf {
    let p = plugin_dir().join(format!("{name}.wasm"));
    plugin(name);
    p
}

/// Engine limits small enough that misbehaving guests are caught quickly in tests.
pub fn test_engine_config() -> EngineConfig {
    EngineConfig {
        call_timeout_ms: 100,
        max_memory_bytes: 16 << 20,
        pooled_instances: 16,
        ..EngineConfig::default()
    }
}

pub fn engine() -> Engine {
    Engine::new(test_engine_config()).expect("engine")
}

pub fn load(engine: &Engine, name: &str) -> Arc<CompiledRule> {
    engine
        .load(&plugin(name))
        .unwrap_or_else(|e| panic!("{name} should load: {e}"))
}

pub fn active(engine: &Engine, name: &str, params: &[(&str, f64)]) -> ActiveRule {
    let overrides: BTreeMap<String, ParamValue> = params
        .iter()
        .map(|(k, v)| ((*k).to_owned(), ParamValue::Float(*v)))
        .collect();
    ActiveRule::new(load(engine, name), &overrides).expect("params valid")
}

pub const T0: i64 = 1_795_000_000_000; // 2026-11-18T11:06:40Z
pub const MIN: i64 = 60_000;

/// A glucose reading as producers send it.
pub fn glucose_json(id: &str, patient: u64, at_ms: i64, mg_dl: f64) -> String {
    serde_json::json!({
        "reading_id": id,
        "patient_id": patient,
        "device_id": 1000 + patient,
        "glucose_level": mg_dl,
        "timestamp": glucoguard::model::format_ms(at_ms),
        "location": "home",
    })
    .to_string()
}

pub fn glucose(id: &str, patient: u64, at_ms: i64, mg_dl: f64) -> glucoguard::model::Reading {
    glucoguard::model::parse::parse_reading(glucose_json(id, patient, at_ms, mg_dl).as_bytes())
        .unwrap()
}

/// Shuts a started host down in order (sources, pipeline drain, sinks, the sources' final
/// acknowledgements) and waits for it.
pub async fn stop(app: glucoguard::app::App) {
    tokio::time::timeout(std::time::Duration::from_secs(30), app.shutdown())
        .await
        .expect("drains")
        .unwrap();
}

/// A glucose alert of rule `r` version 1 (code `c`, patient 1, device 1001) on `reading`,
/// with the id the engine would derive.
pub fn test_alert(reading: &str, at_ms: i64, value: f64) -> glucoguard::model::Alert {
    use glucoguard::model::{Alert, ReadingKind, RuleRef, Severity};
    let rule = RuleRef {
        name: "r".into(),
        version: "1".into(),
    };
    Alert {
        id: Alert::derive_id(&rule, reading, "c", at_ms),
        rule,
        reading_id: reading.into(),
        patient_id: Some(1),
        device_id: 1001,
        kind: ReadingKind::Glucose,
        at_ms,
        code: "c".into(),
        severity: Severity::Warning,
        message: "m".into(),
        value: Some(value),
    }
}

/// A rule component from the plugin dir, enabled, with float parameters.
pub fn rule(name: &str, params: &[(&str, f64)]) -> glucoguard::config::RuleConfig {
    glucoguard::config::RuleConfig {
        path: plugin_path(name),
        enabled: true,
        params: params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), ParamValue::Float(*v)))
            .collect(),
    }
}

/// A host on the SQLite file `db` with `rules`, the test engine limits and quick batches (at
/// most `max_batch` items, 2 ms wait); no console, no file source, no HTTP listener.
pub fn sqlite_host_config(
    db: &Path,
    max_batch: usize,
    rules: Vec<glucoguard::config::RuleConfig>,
) -> glucoguard::config::Config {
    glucoguard::config::Config {
        store: glucoguard::config::StoreConfig::sqlite(db),
        engine: test_engine_config(),
        pipeline: glucoguard::pipeline::PipelineConfig {
            max_batch,
            max_wait_ms: 2,
            ..glucoguard::pipeline::PipelineConfig::default()
        },
        sources: vec![],
        rules,
        console: false,
        listen: None,
        ..glucoguard::config::Config::default()
    }
}

/// Waits until every storage sink of a started host has confirmed everything the store held
/// (the sinks are fed from the store, after the items were acknowledged); panics after `limit`.
pub async fn wait_caught_up(app: &glucoguard::app::App, limit: std::time::Duration) {
    let started = std::time::Instant::now();
    loop {
        let feeds = app.handle.feeds();
        if feeds.iter().all(|f| f.caught_up) {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "storage sinks not caught up within {limit:?}: {feeds:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// Sends payloads through a started host's embedded source and waits until every one is
/// acknowledged (stored).
pub async fn send_all(app: &glucoguard::app::App, payloads: impl IntoIterator<Item = String>) {
    let source = app.handle.embedded_source("test");
    let acked = AckCounter::default();
    let mut sent = 0;
    for p in payloads {
        source
            .send_with_ack(p.into_bytes(), acked.ack())
            .await
            .unwrap();
        sent += 1;
    }
    acked
        .wait_for(sent, std::time::Duration::from_secs(30))
        .await;
}

/// Sends one payload at a time, each after the one before is acknowledged: arrival order is
/// the order given and every reading is evaluated before the next arrives.
pub async fn send_each(app: &glucoguard::app::App, lines: &[String]) {
    let source = app.handle.embedded_source("t");
    for l in lines {
        let acked = AckCounter::default();
        source
            .send_with_ack(l.clone().into_bytes(), acked.ack())
            .await
            .unwrap();
        acked.wait_for(1, std::time::Duration::from_secs(30)).await;
    }
}

/// An audit entry for changes tests make directly in the store.
pub fn audit() -> glucoguard::store::accounts::Audit {
    glucoguard::store::accounts::Audit::system("test", "test.change", "test")
}

/// The host itself, for changes tests make through the rule manager or pipeline handle.
pub fn system() -> glucoguard::store::accounts::Actor {
    glucoguard::store::accounts::Actor::system("test")
}

/// An admin API token issued straight into a running app's store, and the header that
/// carries it.
pub async fn token(app: &glucoguard::app::App) -> String {
    token_in(app.store.as_ref()).await
}

pub async fn token_in(store: &dyn glucoguard::store::AdminStore) -> String {
    issue_in(store, glucoguard::store::accounts::Role::Admin, None)
        .await
        .1
}

/// A token of `role` (acting for `user` when given) issued straight into a running app's
/// store: its id and the token.
pub async fn issue(
    app: &glucoguard::app::App,
    role: glucoguard::store::accounts::Role,
    user: Option<String>,
) -> (String, String) {
    issue_in(app.store.as_ref(), role, user).await
}

async fn issue_in(
    store: &dyn glucoguard::store::AdminStore,
    role: glucoguard::store::accounts::Role,
    user: Option<String>,
) -> (String, String) {
    let (record, token) =
        glucoguard::admin::auth::new_token("test", role, user, "system:test", None);
    store.create_token(&record, &audit()).await.unwrap();
    (record.token_id, token)
}

/// The directory from its JSON import shape, written straight into the store.
pub async fn put_dimensions(app: &glucoguard::app::App, dims: serde_json::Value) {
    let dims: glucoguard::model::dims::Dimensions = serde_json::from_value(dims).unwrap();
    app.store.put_dimensions(&dims, &audit()).await.unwrap();
}

/// The clinician account `doc` acting for subscriber `subscriber_id`.
pub async fn clinician(
    app: &glucoguard::app::App,
    subscriber_id: u64,
) -> glucoguard::store::accounts::User {
    use glucoguard::store::accounts::Role;
    let user = glucoguard::admin::auth::new_user(
        "doc",
        "a long enough password",
        Role::Clinician,
        Some(subscriber_id),
    )
    .unwrap();
    app.store.create_user(&user, &audit()).await.unwrap();
    user
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// A token for a host run as a process, issued with `glucoguard tokens add` on its config.
pub fn cli_token(config: &std::path::Path) -> String {
    cli_token_with(config, &[])
}

/// As [`cli_token`], with environment variables the config refers to (a store URL).
pub fn cli_token_with(config: &std::path::Path, env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_glucoguard"))
        .args([
            "tokens", "add", "--name", "test", "--role", "admin", "--config",
        ])
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "glucoguard tokens add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
