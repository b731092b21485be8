//! Issue 9's measurements of the core path, three parts, each against a baseline measured in
//! the same run and each checking that what it timed is correct:
//!
//! 1. `durability`: the SQLite store with `synchronous = FULL` (the default,
//!    [`SqliteStore::open`]) against `NORMAL` (`durable_on_power_loss = false`) at batch sizes
//!    1, 100 and 1000: simulated glucose readings plus the `high-reading` alerts the default
//!    rule raises on them, written batch after batch through `Store::write_batch`; rows/s and
//!    FULL / NORMAL per batch size; the row counts are checked with `counts()`.
//! 2. `memory`: live heap bytes per monitored patient at 10 000 and 100 000 patients, counted
//!    by this binary's global allocator (requested bytes of live Rust allocations; SQLite's own
//!    page cache is not Rust heap and is not counted). First the per-patient state alone (the
//!    `History` windows filled as the pipeline fills them, and a copy of the pipeline's
//!    suppression map filled by the same rule decisions and the same eviction), then the whole
//!    host (`app::start` on SQLite with the default rule, fed through the embedded source).
//!    Patients send a 5-minute CGM reading for 2 hours of event time, past the 70 minutes of
//!    retention (rule lookback 10 min + lateness 3600 s), so the state is in steady state. The
//!    marginal figure (difference between the two sizes over the patient difference) is
//!    reported against issue 9's goal of 512 bytes per patient.
//! 3. `latency`: reading → alert decided, through HTTP ingest (`POST /api/ingest`, one reading
//!    per request, keep-alive connections) on the embedded default (SQLite FULL, default rule),
//!    at 1 000 and 10 000 readings/s offered (open loop: each reading has its send time),
//!    measured from the client writing the request to the alert arriving on the live feed.
//!    Every reading alerts (150 mg/dL, a patient of its own, so nothing is suppressed); alerts
//!    are matched to readings by the producer's reading id and every one must arrive. Baseline:
//!    the same measurement at 1 000/s.
//!
//! `cargo bench -p glucoguard --bench core -- memory` (or `durability`, `latency`) runs one
//! part; no argument runs all three (about two minutes). `GLUCOGUARD_BENCH_SECS`
//! sets the seconds per durability run (default 2); each latency rate runs twice that.
//!
//! The counting allocator adds two atomic additions to every allocation of this binary, in
//! every part; ratios within a part pay it on both sides.

use glucoguard::app;
use glucoguard::config::{Config, RuleConfig, StoreConfig};
use glucoguard::engine::EngineConfig;
use glucoguard::engine::history::{History, id_hash};
use glucoguard::model::batch::{AlertStatus, WriteBatch};
use glucoguard::model::{
    Alert, Body, EpochMs, Reading, ReadingKind, RuleRef, Severity, SubjectKey, format_ms, now_ms,
    parse,
};
use glucoguard::pipeline::PipelineConfig;
use glucoguard::sources::Ack;
use glucoguard::store::sqlite::{SqliteOptions, SqliteStore};
use glucoguard::store::{OpsStore as _, Store};
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Counts every allocation of this binary (the workspace forbids `unsafe`, which a
/// hand-written `GlobalAlloc` needs; `stats_alloc` is a dev-dependency for this alone).
#[global_allocator]
static HEAP: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const MIN_MS: EpochMs = 60_000;
/// The default rule's thresholds, lookback and the pipeline's defaults.
const HIGH_MG_DL: f64 = 115.0;
const AVG_HIGH_MG_DL: f64 = 105.0;
const LOOKBACK_MS: EpochMs = 10 * MIN_MS;
const SUPPRESS_MS: EpochMs = 900_000;
const RULE: &str = "default-glucose";

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn default_rule() -> PathBuf {
    let rule = app::built_plugin_dir().join("glucoguard_default_rule.wasm");
    assert!(
        rule.exists(),
        "{} missing: run `cargo xtask build-plugins`",
        rule.display()
    );
    rule
}

fn host_config(db: &Path, options: SqliteOptions, rule: &Path) -> Config {
    Config {
        store: StoreConfig::Sqlite {
            path: db.to_owned(),
            options,
        },
        engine: EngineConfig::default(),
        pipeline: PipelineConfig::default(),
        sources: vec![],
        rules: vec![RuleConfig {
            path: rule.to_owned(),
            enabled: true,
            params: Default::default(),
        }],
        console: false,
        listen: None,
        ..Config::default()
    }
}

/// A glucose reading as a producer sends it.
fn reading_json(reading_id: &str, patient: u64, at_ms: EpochMs, mg_dl: f64) -> Vec<u8> {
    format!(
        r#"{{"reading_id":"{reading_id}","patient_id":{patient},"device_id":{},"glucose_level":{mg_dl:.1},"timestamp":"{}","location":"home"}}"#,
        1_000_000 + patient,
        format_ms(at_ms)
    )
    .into_bytes()
}

// ---------------------------------------------------------------------------------------------
// 1. Durability: synchronous = FULL vs NORMAL

/// The alert the default rule's `high-reading` condition raises on `r`, if any.
fn high_reading_alert(r: &Reading) -> Option<Alert> {
    let Body::Glucose(g) = &r.body else {
        return None;
    };
    if g.mg_dl <= HIGH_MG_DL {
        return None;
    }
    let rule = RuleRef {
        name: RULE.into(),
        version: "1.0.0".into(),
    };
    Some(Alert {
        id: Alert::derive_id(&rule, &r.id, "high-reading", r.at_ms),
        rule,
        reading_id: r.id.clone(),
        patient_id: Some(g.patient_id),
        device_id: g.device_id,
        kind: ReadingKind::Glucose,
        at_ms: r.at_ms,
        code: "high-reading".into(),
        severity: if g.mg_dl >= 250.0 {
            Severity::Critical
        } else {
            Severity::Warning
        },
        message: format!(
            "Glucose {:.1} mg/dL is above {HIGH_MG_DL:.1} mg/dL",
            g.mg_dl
        ),
        value: Some(g.mg_dl),
    })
}

/// Writes batches of `size` readings (with their alerts) for about `secs` seconds, one
/// `write_batch` after the other as the pipeline does. (readings, alerts, seconds).
async fn write_for(
    store: &dyn Store,
    pool: &[(Reading, Option<Alert>)],
    size: usize,
    secs: f64,
) -> (u64, u64, f64) {
    let (mut readings, mut alerts) = (0u64, 0u64);
    let started = Instant::now();
    for (i, chunk) in pool.chunks(size).enumerate() {
        let batch = WriteBatch {
            readings: chunk.iter().map(|(r, _)| r.clone()).collect(),
            alerts: chunk
                .iter()
                .filter_map(|(_, a)| a.clone().map(|a| (a, AlertStatus::Open)))
                .collect(),
            received_at_ms: 1_800_000_000_000 + i as i64,
            ..WriteBatch::default()
        };
        store.write_batch(&batch).await.unwrap();
        readings += batch.readings.len() as u64;
        alerts += batch.alerts.len() as u64;
        if started.elapsed().as_secs_f64() >= secs {
            break;
        }
    }
    (readings, alerts, started.elapsed().as_secs_f64())
}

/// Median time of `fdatasync` after a 4 KiB append in the directory the stores use: what one
/// FULL commit pays at least, and what makes this machine's ratios transferable or not.
fn fsync_median_us() -> f64 {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut f = std::fs::File::create(dir.path().join("fsync")).unwrap();
    let page = [7u8; 4096];
    let times: Vec<f64> = (0..200)
        .map(|_| {
            f.write_all(&page).unwrap();
            let t = Instant::now();
            f.sync_data().unwrap();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    median(times)
}

fn durability(rt: &tokio::runtime::Runtime) {
    const BATCH_SIZES: [usize; 3] = [1, 100, 1000];
    const ROUNDS: usize = 3;
    let secs: f64 = env_or("GLUCOGUARD_BENCH_SECS", 2.0);
    // Enough for the fastest configuration to run `secs` at batch 1000.
    let pool: Vec<(Reading, Option<Alert>)> =
        glucoguard_simulator::Simulator::new(glucoguard_simulator::SimConfig {
            seed: 9,
            patients: 200,
            duration: chrono::Duration::days(30),
            telemetry: false,
            ..glucoguard_simulator::SimConfig::default()
        })
        .take((secs * 120_000.0) as usize)
        .map(|e| {
            let r = parse::parse_reading(e.to_json_line().as_bytes()).unwrap();
            let a = high_reading_alert(&r);
            (r, a)
        })
        .collect();
    let alert_share = pool.iter().filter(|(_, a)| a.is_some()).count() as f64 / pool.len() as f64;
    let fsync_us = fsync_median_us();
    let modes = [("FULL", true), ("NORMAL", false)];
    // rows/s per (batch size, mode), one per round.
    let mut rates = vec![vec![Vec::new(); modes.len()]; BATCH_SIZES.len()];
    for round in 0..ROUNDS {
        for (b, &size) in BATCH_SIZES.iter().enumerate() {
            for k in 0..modes.len() {
                // Alternate which mode goes first.
                let m = (k + round) % modes.len();
                let (name, durable_on_power_loss) = modes[m];
                let dir = tempfile::tempdir().unwrap();
                let (readings, alerts, elapsed, counts) = rt.block_on(async {
                    let path = dir.path().join("d.db");
                    let store = if durable_on_power_loss {
                        SqliteStore::open(&path).await.unwrap()
                    } else {
                        SqliteStore::open_with(
                            &path,
                            SqliteOptions {
                                durable_on_power_loss: false,
                            },
                        )
                        .await
                        .unwrap()
                    };
                    let (r, a, s) = write_for(&store, &pool, size, secs).await;
                    (r, a, s, store.counts().await.unwrap())
                });
                assert_eq!(
                    (counts.glucose_readings, counts.alerts),
                    (readings, alerts),
                    "every row written landed ({name}, batch {size})"
                );
                let rate = (readings + alerts) as f64 / elapsed;
                eprintln!(
                    "durability round {round} {name:<6} batch {size:>4}: {rate:>9.0} rows/s ({readings} readings + {alerts} alerts in {elapsed:.2} s)"
                );
                rates[b][m].push(rate);
            }
        }
    }
    println!(
        "\n### SQLite durability: synchronous = FULL (default) vs NORMAL ({secs} s per run, median of {ROUNDS} interleaved rounds)\n"
    );
    println!(
        "Rows = glucose readings + the `high-reading` alerts of the default rule on them ({:.1} % of readings), one `write_batch` after another. One `fdatasync` of a 4 KiB append takes {fsync_us:.0} µs (median) on this disk.\n",
        alert_share * 100.0
    );
    println!("| batch | FULL rows/s | NORMAL rows/s (baseline) | FULL / NORMAL |");
    println!("|---:|---:|---:|---:|");
    for (b, &size) in BATCH_SIZES.iter().enumerate() {
        let full = median(rates[b][0].clone());
        let normal = median(rates[b][1].clone());
        println!(
            "| {size} | {full:.0} | {normal:.0} | {:.2} |",
            full / normal
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Memory per monitored patient

/// Waits until no thread allocates or frees for a while (stores and runtimes of earlier parts
/// finish closing in the background), so a difference of live bytes is this part's own.
fn quiesce() {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = HEAP.stats();
    let mut quiet = 0;
    while quiet < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        let now = HEAP.stats();
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }
}

/// Live heap: (requested bytes, allocations).
fn live_heap() -> (i64, i64) {
    let s = HEAP.stats();
    (
        s.bytes_allocated as i64 - s.bytes_deallocated as i64,
        s.allocations as i64 - s.deallocations as i64,
    )
}

const SLOT_MS: EpochMs = 5 * MIN_MS;
/// 2 hours of 5-minute readings.
const SLOTS: i64 = 24;
/// What the pipeline keeps behind each patient's newest reading: the default rule's lookback
/// plus the default lateness (3600 s).
const RETENTION_MS: EpochMs = LOOKBACK_MS + 3_600_000;
/// Readings a patient's window holds in steady state: those in (newest − retention, newest].
const HELD: usize = (RETENTION_MS / SLOT_MS) as usize;

/// Event time of patient `p`'s reading in `slot`: each patient on its own exact 5-minute
/// cadence, patients spread over the first 5 minutes of the slot. `t0` is 3 hours ago, so
/// nothing is ahead of the receive time.
fn slot_at(t0: EpochMs, p: u64, slot: i64) -> EpochMs {
    t0 + slot * SLOT_MS + (p % 300) as i64 * 1000
}

/// A fixed mix of patients (by id modulo 4): in range (no alert), always high (`high-reading`),
/// swinging around the threshold with a one-hour period (both codes and quiet spells), and
/// slightly raised (`high-average` only).
fn slot_value(p: u64, slot: i64) -> f64 {
    let phase = std::f64::consts::TAU * ((slot + (p % 12) as i64) as f64 / 12.0);
    match p % 4 {
        0 => 95.0 + 5.0 * phase.sin(),
        1 => 150.0 + 20.0 * phase.sin(),
        2 => 115.0 + 25.0 * phase.sin(),
        _ => 108.0 + 3.0 * phase.sin(),
    }
}

fn glucose_subject(p: u64) -> SubjectKey {
    SubjectKey {
        kind: ReadingKind::Glucose,
        id: p,
    }
}

/// The pipeline's suppression key (`pipeline::SuppressKey`, private there): the subject and a
/// hash of rule name and alert code. Keep in step with `pipeline::suppress_key`; the whole-host
/// row of the table is the check that this copy still costs what the pipeline's map costs.
type SuppressKey = (SubjectKey, u64);

fn suppress_key(subject: SubjectKey, rule: &str, code: &str) -> SuppressKey {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (rule, code).hash(&mut h);
    (subject, h.finish())
}

struct ModelFootprint {
    history_bytes: i64,
    history_allocs: i64,
    suppression_bytes: i64,
    suppression_allocs: i64,
    suppression_entries: usize,
    alerting_share: f64,
}

/// The per-patient state alone: `History` filled in arrival order with the pipeline's
/// retention, and the suppression map the pipeline keeps, driven by the default rule's decision
/// on each reading (reading > 115 → `high-reading`; else 10-minute average > 105 →
/// `high-average`) and evicted as the pipeline evicts (entries older than twice the
/// suppression interval, idle subjects), here once per 5-minute slot (the pipeline sweeps
/// whenever its watermark moved a minute).
fn model_footprint(n: u64, t0: EpochMs) -> ModelFootprint {
    quiesce();
    let base = live_heap();
    let mut history = History::new(Some(RETENTION_MS));
    let mut suppression: HashMap<SuppressKey, (EpochMs, Severity)> = HashMap::new();
    let (mut alerts, mut readings) = (0u64, 0u64);
    let mut watermark = EpochMs::MIN;
    for slot in 0..SLOTS {
        for p in 1..=n {
            let at = slot_at(t0, p, slot);
            let v = slot_value(p, slot);
            let subject = glucose_subject(p);
            // The scoped id the parser gives a producer's `reading_id`.
            let id = format!("g:{}:m{p}-{slot}", 1_000_000 + p);
            // As the pipeline does: the batch goes in untrimmed, is evaluated, then trimmed
            // (one reading per patient per batch here, so the same as trimming at once).
            assert!(history.insert_untrimmed(subject, at, id_hash(&id), v));
            watermark = watermark.max(at);
            readings += 1;
            let decision = if v > HIGH_MG_DL {
                Some(("high-reading", Severity::Warning))
            } else if history.window(subject, at, LOOKBACK_MS).mean > AVG_HIGH_MG_DL {
                Some(("high-average", Severity::Warning))
            } else {
                None
            };
            history.trim(subject);
            let Some((code, severity)) = decision else {
                continue;
            };
            alerts += 1;
            let key = suppress_key(subject, RULE, code);
            let suppressed = matches!(suppression.get(&key),
                Some(&(last, sev)) if (at - last).abs() < SUPPRESS_MS && severity <= sev);
            if !suppressed {
                let entry = suppression.entry(key).or_insert((at, severity));
                if at >= entry.0 || severity > entry.1 {
                    *entry = (at.max(entry.0), severity.max(entry.1));
                }
            }
        }
        // Every slot moves the watermark 5 minutes: the pipeline sweeps at least every minute.
        history.evict_idle(watermark - RETENTION_MS);
        suppression.retain(|_, (at, _)| *at > watermark - 2 * SUPPRESS_MS);
        suppression.shrink_to(suppression.len() * 2);
    }
    assert_eq!(history.subjects(), n as usize, "every patient is held");
    assert_eq!(history.len(), n as usize * HELD, "each holds 70 minutes");
    let newest = slot_at(t0, 1, SLOTS - 1);
    assert_eq!(
        history
            .window(glucose_subject(1), newest, LOOKBACK_MS)
            .count,
        2
    );
    let full = live_heap();
    let suppression_entries = suppression.len();
    drop(suppression);
    let without_suppression = live_heap();
    drop(history);
    let end = live_heap();
    assert!(
        (end.0 - base.0).abs() < 64 << 10,
        "everything measured was freed, and nothing else allocated meanwhile: {} B left",
        end.0 - base.0
    );
    ModelFootprint {
        history_bytes: without_suppression.0 - base.0,
        history_allocs: without_suppression.1 - base.1,
        suppression_bytes: full.0 - without_suppression.0,
        suppression_allocs: full.1 - without_suppression.1,
        suppression_entries,
        alerting_share: alerts as f64 / readings as f64,
    }
}

/// `History` bytes per patient when each patient's `backlog` readings (a device catching up
/// after an outage) arrive in one batch before the 2 hours of live readings: the pipeline
/// inserts a whole batch before trimming; the trim gives the space back.
fn backlog_footprint(n: u64, t0: EpochMs, backlog: i64) -> (i64, usize) {
    quiesce();
    let base = live_heap();
    let mut history = History::new(Some(RETENTION_MS));
    for p in 1..=n {
        let subject = glucose_subject(p);
        for k in 0..backlog {
            let at = slot_at(t0, p, k - backlog);
            assert!(history.insert_untrimmed(subject, at, id_hash(&format!("b{p}-{k}")), 100.0));
        }
        history.trim(subject);
    }
    for slot in 0..SLOTS {
        for p in 1..=n {
            let subject = glucose_subject(p);
            let at = slot_at(t0, p, slot);
            assert!(history.insert_untrimmed(subject, at, id_hash(&format!("m{p}-{slot}")), 100.0));
            history.trim(subject);
        }
    }
    assert_eq!(
        history.len(),
        n as usize * HELD,
        "each holds 70 minutes again"
    );
    let bytes = live_heap().0 - base.0;
    let held = history.len();
    drop(history);
    (bytes, held)
}

struct HostFootprint {
    started_bytes: i64,
    fed_bytes: i64,
    fed_allocs: i64,
    feed_secs: f64,
}

/// The whole host on SQLite with the default rule, fed `n` patients' 2 hours of readings
/// through the embedded source; live heap once every reading is acknowledged (durable), the
/// host still running. SQLite runs with `synchronous = NORMAL` here only to shorten the feed:
/// it changes no Rust heap.
async fn host_footprint(n: u64, t0: EpochMs, rule: &Path) -> HostFootprint {
    let dir = tempfile::tempdir().unwrap();
    let config = host_config(
        &dir.path().join("m.db"),
        SqliteOptions {
            durable_on_power_loss: false,
        },
        rule,
    );
    quiesce();
    let before = live_heap();
    let app = app::start(&config).await.unwrap();
    // The host runs on the runtime's workers; this thread only waits (and reads counters).
    quiesce();
    let started = live_heap();
    let source = app.handle.embedded_source("bench");
    let acked = Arc::new(AtomicU64::new(0));
    let total = n * SLOTS as u64;
    let feed = Instant::now();
    for slot in 0..SLOTS {
        for p in 1..=n {
            let payload = reading_json(
                &format!("m{p}-{slot}"),
                p,
                slot_at(t0, p, slot),
                slot_value(p, slot),
            );
            let acked = acked.clone();
            source
                .send_with_ack(
                    payload,
                    Ack::new(move || {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }),
                )
                .await
                .unwrap();
        }
    }
    tokio::time::timeout(Duration::from_secs(600), async {
        while acked.load(Ordering::SeqCst) < total {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("every reading acknowledged");
    let feed_secs = feed.elapsed().as_secs_f64();
    // Let the last batch's stats publish and transient buffers go.
    quiesce();
    let fed = live_heap();
    let stats = app.handle.stats();
    assert_eq!(stats.readings, total, "every reading evaluated");
    assert_eq!(stats.dead_letters, 0, "no reading rejected");
    assert_eq!(stats.history_subjects, n as usize, "every patient held");
    assert_eq!(
        stats.history_readings,
        n as usize * HELD,
        "each patient's 70 minutes held"
    );
    let counts = app.store.counts().await.unwrap();
    assert_eq!(counts.glucose_readings, total, "every reading stored");
    assert_eq!(counts.alerts, stats.alerts, "every alert stored");
    drop(source);
    app.handle.shutdown().await;
    app.pipeline.await.unwrap();
    HostFootprint {
        started_bytes: started.0 - before.0,
        fed_bytes: fed.0 - started.0,
        fed_allocs: fed.1 - started.1,
        feed_secs,
    }
}

fn memory(rt: &tokio::runtime::Runtime) {
    const SIZES: [u64; 2] = [10_000, 100_000];
    const GOAL: f64 = 512.0;
    let rule = default_rule();
    let t0 = now_ms() - 3 * 60 * MIN_MS;
    let models: Vec<ModelFootprint> = SIZES.iter().map(|&n| model_footprint(n, t0)).collect();
    for (n, m) in SIZES.iter().zip(&models) {
        eprintln!(
            "memory model {n:>6} patients: history {} B ({} allocations), suppression {} B ({} entries, {} allocations), {:.1} % of readings alert",
            m.history_bytes,
            m.history_allocs,
            m.suppression_bytes,
            m.suppression_entries,
            m.suppression_allocs,
            m.alerting_share * 100.0
        );
    }
    const BACKLOG: i64 = 96; // 8 hours of 5-minute readings
    let (backlog_bytes, _) = backlog_footprint(SIZES[0], t0, BACKLOG);
    eprintln!(
        "memory model {:>6} patients after an {BACKLOG}-reading backlog each: history {backlog_bytes} B",
        SIZES[0]
    );
    let hosts: Vec<HostFootprint> = SIZES
        .iter()
        .map(|&n| {
            let h = rt.block_on(host_footprint(n, t0, &rule));
            eprintln!(
                "memory host  {n:>6} patients: {} B live after start, +{} B ({} allocations) after the feed ({:.0} readings/s fed)",
                h.started_bytes,
                h.fed_bytes,
                h.fed_allocs,
                (n * SLOTS as u64) as f64 / h.feed_secs
            );
            h
        })
        .collect();

    let per = |bytes: i64, n: u64| bytes as f64 / n as f64;
    let dn = (SIZES[1] - SIZES[0]) as f64;
    let marginal = |a: i64, b: i64| (b - a) as f64 / dn;
    println!(
        "\n### Live heap per monitored patient (requested bytes of live Rust allocations; goal {GOAL:.0} B)\n"
    );
    println!(
        "Each patient: one 5-minute CGM reading for 2 h of event time (steady state: {HELD} readings held in 70 min of retention); {:.1} % of readings alert with the default rule. Marginal = (bytes at {} − bytes at {}) / {} patients.\n",
        models[1].alerting_share * 100.0,
        SIZES[1],
        SIZES[0],
        SIZES[1] - SIZES[0]
    );
    println!(
        "| state | B/patient at {} | B/patient at {} | marginal B/patient | allocations/patient | × goal (marginal / {GOAL:.0}) |",
        SIZES[0], SIZES[1]
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let row = |name: &str, a: i64, b: i64, allocs: i64| {
        let m = marginal(a, b);
        println!(
            "| {name} | {:.0} | {:.0} | {m:.0} | {:.2} | {:.2} |",
            per(a, SIZES[0]),
            per(b, SIZES[1]),
            allocs as f64 / SIZES[1] as f64,
            m / GOAL
        );
    };
    row(
        "`History` windows",
        models[0].history_bytes,
        models[1].history_bytes,
        models[1].history_allocs,
    );
    row(
        &format!(
            "suppression map ({:.2} entries/patient)",
            models[1].suppression_entries as f64 / SIZES[1] as f64
        ),
        models[0].suppression_bytes,
        models[1].suppression_bytes,
        models[1].suppression_allocs,
    );
    row(
        "both (the per-patient state alone)",
        models[0].history_bytes + models[0].suppression_bytes,
        models[1].history_bytes + models[1].suppression_bytes,
        models[1].history_allocs + models[1].suppression_allocs,
    );
    row(
        "whole host after the feed (vs just started)",
        hosts[0].fed_bytes,
        hosts[1].fed_bytes,
        hosts[1].fed_allocs,
    );
    println!(
        "\nIf each patient's {BACKLOG} readings of backlog (8 h) first arrive in one batch, `History` holds {:.0} B/patient at {} patients after the same 2 h of live readings ({:.2}× the steady state above): the whole batch goes in before the trim, which then gives the space back.",
        per(backlog_bytes, SIZES[0]),
        SIZES[0],
        backlog_bytes as f64 / models[0].history_bytes as f64
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Reading → alert latency through HTTP ingest

/// One offered-load run's shared state: nanoseconds since `base` per reading (0 = not yet).
struct Load {
    base: Instant,
    start: Instant,
    rate: f64,
    total: usize,
    next: AtomicUsize,
    sent: Vec<AtomicU64>,
    answered: Vec<AtomicU64>,
    alerted: Vec<AtomicU64>,
    /// How late each send was against its schedule.
    behind: Vec<AtomicU64>,
    alerts: AtomicUsize,
    lagged: AtomicU64,
    unexpected: AtomicU64,
    bad_answers: AtomicU64,
    run: usize,
    /// `Authorization` header value for ingest.
    auth: String,
}

impl Load {
    fn ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
    fn reading_id(&self, j: usize) -> String {
        format!("lat{}-{j}", self.run)
    }
    fn index_of(&self, given: &str) -> Option<usize> {
        given
            .strip_prefix(&format!("lat{}-", self.run))?
            .parse()
            .ok()
            .filter(|&j| j < self.total)
    }
}

/// Finds `\r\n\r\n` in `buf`.
fn header_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// One keep-alive connection: takes the next reading, waits for its scheduled time, posts it
/// and reads the answer.
async fn client(mut stream: tokio::net::TcpStream, load: Arc<Load>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let j = load.next.fetch_add(1, Ordering::SeqCst);
        if j >= load.total {
            return;
        }
        let due = load.start + Duration::from_secs_f64(j as f64 / load.rate);
        tokio::time::sleep_until(due.into()).await;
        let patient = (load.run * 10_000_000 + j + 1) as u64;
        let body = reading_json(&load.reading_id(j), patient, now_ms() - 1000, 150.0);
        let mut request = format!(
            "POST /api/ingest HTTP/1.1\r\nhost: bench\r\nauthorization: {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            load.auth,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        let now = load.ns();
        load.sent[j].store(now, Ordering::SeqCst);
        load.behind[j].store(
            Instant::now().saturating_duration_since(due).as_nanos() as u64,
            Ordering::SeqCst,
        );
        stream.write_all(&request).await.unwrap();
        // The answer: status line and headers, then `content-length` bytes of JSON.
        buf.clear();
        let (head, length) = loop {
            let k = stream.read(&mut chunk).await.unwrap();
            assert!(k > 0, "the server closed a keep-alive connection");
            buf.extend_from_slice(&chunk[..k]);
            if let Some(end) = header_end(&buf) {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse().unwrap())
                    .expect("answers carry content-length");
                break (end, length);
            }
        };
        while buf.len() < head + length {
            let k = stream.read(&mut chunk).await.unwrap();
            assert!(k > 0, "the server closed a keep-alive connection");
            buf.extend_from_slice(&chunk[..k]);
        }
        load.answered[j].store(load.ns(), Ordering::SeqCst);
        let ok = buf.starts_with(b"HTTP/1.1 200")
            && std::str::from_utf8(&buf[head..head + length])
                .is_ok_and(|b| b.contains(r#""accepted":1"#));
        if !ok {
            load.bad_answers.fetch_add(1, Ordering::SeqCst);
        }
    }
}

struct LatencyRun {
    offered: f64,
    achieved: f64,
    measured: usize,
    connections: usize,
    alert_ms: Vec<f64>,
    answer_ms: Vec<f64>,
    behind_p99_ms: f64,
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn latency_run(
    host_rt: &tokio::runtime::Runtime,
    client_rt: &tokio::runtime::Runtime,
    rule: &Path,
    run: usize,
    rate: f64,
    secs: f64,
) -> LatencyRun {
    const WARMUP_SECS: f64 = 0.5;
    let dir = tempfile::tempdir().unwrap();
    let mut config = host_config(&dir.path().join("l.db"), SqliteOptions::default(), rule);
    config.listen = Some("127.0.0.1:0".parse().unwrap());
    let app = host_rt.block_on(app::start(&config)).unwrap();
    let addr = app.http.unwrap();
    let warmup = (rate * WARMUP_SECS) as usize;
    let total = warmup + (rate * secs) as usize;
    // Enough connections to keep the offered rate while each request waits ~150 ms for its
    // batch to be durable.
    let connections = ((rate * 0.15) as usize).clamp(32, 2000);
    let streams: Vec<tokio::net::TcpStream> = client_rt.block_on(async {
        let mut v = Vec::with_capacity(connections);
        for _ in 0..connections {
            let s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.set_nodelay(true).unwrap();
            v.push(s);
        }
        v
    });
    let atomics = || (0..total).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
    let base = Instant::now();
    let (record, token) = glucoguard::admin::auth::new_token(
        "bench",
        glucoguard::store::accounts::Role::Device,
        None,
        "system:bench",
        None,
    );
    host_rt
        .block_on(app.store.create_token(
            &record,
            &glucoguard::store::accounts::Audit::system("bench", "token.create", "bench"),
        ))
        .unwrap();
    let load = Arc::new(Load {
        base,
        start: base + Duration::from_millis(100),
        rate,
        total,
        next: AtomicUsize::new(0),
        sent: atomics(),
        answered: atomics(),
        alerted: atomics(),
        behind: atomics(),
        alerts: AtomicUsize::new(0),
        lagged: AtomicU64::new(0),
        unexpected: AtomicU64::new(0),
        bad_answers: AtomicU64::new(0),
        run,
        auth: format!("Bearer {token}"),
    });
    // The live feed on a thread of its own, so its clock is not held up by the clients.
    let mut feed = app.live.subscribe();
    let receiver = {
        let load = load.clone();
        std::thread::spawn(move || {
            use tokio::sync::broadcast::error::RecvError;
            loop {
                match feed.blocking_recv() {
                    Ok(alert) => {
                        let at = load.ns();
                        let j = load.index_of(parse::given_reading_id(&alert.reading_id));
                        match j {
                            Some(j)
                                if alert.rule.name == RULE
                                    && alert.code == "high-reading"
                                    && load.alerted[j]
                                        .compare_exchange(0, at, Ordering::SeqCst, Ordering::SeqCst)
                                        .is_ok() =>
                            {
                                load.alerts.fetch_add(1, Ordering::SeqCst);
                            }
                            _ => {
                                load.unexpected.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        load.lagged.fetch_add(n, Ordering::SeqCst);
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        })
    };
    client_rt.block_on(async {
        let tasks: Vec<_> = streams
            .into_iter()
            .map(|s| tokio::spawn(client(s, load.clone())))
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while load.alerts.load(Ordering::SeqCst) < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let app::App {
        handle,
        store,
        live,
        pipeline,
        http_server,
        ..
    } = app;
    host_rt.block_on(async {
        handle.shutdown().await;
        if let Some(server) = http_server {
            server.shutdown(Duration::from_secs(5)).await;
        }
        pipeline.await.unwrap();
        let c = store.counts().await.unwrap();
        assert_eq!(c.glucose_readings as usize, total, "every reading stored");
        assert_eq!(c.alerts as usize, total, "every reading's alert stored");
    });
    // The feed closes once its last sender (the pipeline's notifier, this handle) is gone.
    drop(live);
    drop(handle);
    receiver.join().unwrap();
    assert_eq!(
        load.bad_answers.load(Ordering::SeqCst),
        0,
        "every request answered 200, accepted 1"
    );
    assert_eq!(
        load.lagged.load(Ordering::SeqCst),
        0,
        "the live feed lost no alert"
    );
    assert_eq!(
        load.unexpected.load(Ordering::SeqCst),
        0,
        "no foreign or repeated alert"
    );
    assert_eq!(
        load.alerts.load(Ordering::SeqCst),
        total,
        "every reading's alert arrived"
    );
    let at = |v: &[AtomicU64], j: usize| v[j].load(Ordering::SeqCst) as f64;
    let mut alert_ms: Vec<f64> = (warmup..total)
        .map(|j| (at(&load.alerted, j) - at(&load.sent, j)) / 1e6)
        .collect();
    let mut answer_ms: Vec<f64> = (warmup..total)
        .map(|j| (at(&load.answered, j) - at(&load.sent, j)) / 1e6)
        .collect();
    let mut behind: Vec<f64> = (warmup..total).map(|j| at(&load.behind, j) / 1e6).collect();
    alert_ms.sort_by(f64::total_cmp);
    answer_ms.sort_by(f64::total_cmp);
    behind.sort_by(f64::total_cmp);
    let span = (at(&load.sent, total - 1) - at(&load.sent, warmup)) / 1e9;
    LatencyRun {
        offered: rate,
        achieved: (total - warmup - 1) as f64 / span,
        measured: total - warmup,
        connections,
        alert_ms,
        answer_ms,
        behind_p99_ms: percentile(&behind, 0.99),
    }
}

fn latency(host_rt: &tokio::runtime::Runtime) {
    const SPARK_ANCHOR_MS: f64 = 1600.0;
    let secs: f64 = 2.0 * env_or("GLUCOGUARD_BENCH_SECS", 2.0);
    let rule = default_rule();
    // The clients run on a runtime of their own, beside the host's.
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let runs: Vec<LatencyRun> = [1_000.0, 10_000.0]
        .into_iter()
        .enumerate()
        .map(|(run, rate)| {
            let r = latency_run(host_rt, &client_rt, &rule, run, rate, secs);
            eprintln!(
                "latency {rate:>6.0}/s offered: {:.0}/s sent over {} connections, alert p50 {:.1} ms p99 {:.1} ms max {:.1} ms; answer p50 {:.1} ms; sends behind schedule p99 {:.1} ms",
                r.achieved,
                r.connections,
                percentile(&r.alert_ms, 0.5),
                percentile(&r.alert_ms, 0.99),
                percentile(&r.alert_ms, 1.0),
                percentile(&r.answer_ms, 0.5),
                r.behind_p99_ms
            );
            r
        })
        .collect();
    let (base50, base99) = (
        percentile(&runs[0].alert_ms, 0.5),
        percentile(&runs[0].alert_ms, 0.99),
    );
    println!(
        "\n### Reading → alert decided through HTTP ingest (SQLite FULL, default rule; {secs} s per rate after 0.5 s warm-up)\n"
    );
    println!(
        "From the client writing `POST /api/ingest` (one reading, keep-alive) to the alert on the live feed; every reading alerts and every alert arrived. Baseline: 1 000 readings/s.\n"
    );
    println!(
        "| offered readings/s | sent/s | readings | connections | alert p50 ms | p99 ms | max ms | HTTP answer p50 / p99 ms | sends late p99 ms | p50 × baseline | p99 × baseline |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|");
    for r in &runs {
        let (p50, p99) = (percentile(&r.alert_ms, 0.5), percentile(&r.alert_ms, 0.99));
        println!(
            "| {:.0} | {:.0} | {} | {} | {p50:.1} | {p99:.1} | {:.1} | {:.1} / {:.1} | {:.1} | {:.2} | {:.2} |",
            r.offered,
            r.achieved,
            r.measured,
            r.connections,
            percentile(&r.alert_ms, 1.0),
            percentile(&r.answer_ms, 0.5),
            percentile(&r.answer_ms, 0.99),
            r.behind_p99_ms,
            p50 / base50,
            p99 / base99
        );
    }
    println!(
        "\nReference, not measured here: the seed's Spark streaming anchor, about {SPARK_ANCHOR_MS:.0} ms median; the 1 000/s median above is {:.3} of it.",
        base50 / SPARK_ANCHOR_MS
    );
}

fn main() {
    // `cargo bench` passes `--bench`; anything else selects a part.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let only = args.first().map(String::as_str);
    if let Some(part) = only
        && !["durability", "memory", "latency"].contains(&part)
    {
        // `cargo xtask bench PART` hands every bench the same argument.
        eprintln!("core bench: no part {part:?} (parts: durability, memory, latency)");
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    if only.is_none() || only == Some("durability") {
        durability(&rt);
    }
    if only.is_none() || only == Some("memory") {
        memory(&rt);
    }
    if only.is_none() || only == Some("latency") {
        latency(&rt);
    }
    eprintln!("core bench: {:.0} s", started.elapsed().as_secs_f64());
}
