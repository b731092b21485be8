//! The checks an uploaded rule must pass before anything is stored, each with a refusal a
//! user can act on: size, the Wasm header (component, not a core module), the import
//! allow-list, the rule's self-description, and a dry run over built-in sample readings.
//!
//! The admin API calls [`check_upload`] and stores the bytes only once it returns `Ok`, so a
//! refused upload leaves nothing behind: nothing here touches the store. The dry run goes
//! through the same engine path as the pipeline ([`ActiveRule`], [`RuleSet::evaluate`],
//! [`History`]), so a rule that would trap, loop or misbehave on its first real batch is
//! refused at the door instead of being quarantined later.

use super::history::History;
use super::{ActiveRule, CompiledRule, Engine, LoadError, RuleSet};
use crate::model::{
    Alert, Body, Connectivity, DeviceTelemetry, FaultKind, Glucose, ParamValue, Reading,
    ReadingKind,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The largest rule file accepted: 8 MiB.
///
/// A rule built with the SDK for `wasm32-wasip2` is 50–100 KiB, so this leaves ample room for
/// debug info or a rule written in another language with its own runtime linked in. Two costs
/// bound it from above: the host compiles every version at upload and again at every start
/// (wasmtime is built without its compilation cache), and compile time grows with size; and
/// the store writes the bytes in one statement, where MariaDB's default `max_allowed_packet`
/// is 16 MiB — a 16 MiB limit would let through files the MySQL store then cannot write. An
/// HTTP layer should cap the request body near this too, so it never buffers more than it
/// may accept.
pub const MAX_UPLOAD_BYTES: usize = 8 << 20;

/// Example alerts kept in a [`DryRun`]: enough for a UI to show what the rule says.
pub const MAX_EXAMPLE_ALERTS: usize = 5;

/// The magic bytes every binary Wasm file starts with.
const WASM_MAGIC: [u8; 4] = *b"\0asm";
/// Version bytes after the magic of a core module (version 1).
const CORE_MODULE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
/// Version and layer bytes after the magic of a component (version 0x0d, layer 1).
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];

/// Why an upload was refused. `Display` is the message for the user; [`code`](Self::code)
/// is a stable machine string for the HTTP layer's `{error, code}` answer (400, or 413 for
/// `too_large`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UploadRefusal {
    #[error("the file is empty: upload the .wasm component your rule build produced")]
    Empty,
    #[error(
        "the file is {size} bytes, over the limit of {limit} bytes: build the rule in release \
         mode, stripped and optimised for size (`strip = true`, `opt-level = \"s\"`)"
    )]
    TooLarge { size: usize, limit: usize },
    /// The bytes do not start with the Wasm magic: not a binary WebAssembly file at all.
    #[error(
        "the file is not WebAssembly ({what}): upload the binary .wasm component built for \
         wasm32-wasip2"
    )]
    NotWasm { what: String },
    #[error(
        "the file is a core module, not a component; build for wasm32-wasip2 / use \
         `wasm-tools component new`"
    )]
    CoreModule,
    /// The header says component but wasmtime cannot compile it (truncated, invalid, or an
    /// encoding this host does not understand).
    #[error("the file is not a valid Wasm component: {0}")]
    InvalidComponent(String),
    #[error(
        "the rule imports interfaces it may not use: {}; a rule may import only the \
         `glucoguard:rules` host interface and the WASI cli (environment, exit, stdio), \
         clocks, random and i/o interfaces (no filesystem, sockets or HTTP)",
        .0.join(", ")
    )]
    ForbiddenImports(Vec<String>),
    #[error(
        "the rule does not fit this host's rule contract `glucoguard:rules@1.0.0` (a missing \
         `rule` export or an import this host does not provide): {0}; build it against \
         wit/rules.wit, e.g. with the GlucoGuard SDK"
    )]
    Incompatible(String),
    #[error(
        "the rule failed while describing itself (its `describe` export trapped or did not \
         return): {0}"
    )]
    DescribeFailed(String),
    #[error("the rule describes itself badly: {0}")]
    BadDescribe(String),
    #[error(
        "the rule failed its dry run on the built-in sample readings: `{kind}` ({hint}) on \
         sample reading {reading}: {detail}",
        kind = .kind.as_str(),
        hint = fault_hint(*.kind),
        reading = .reading_id.as_deref().unwrap_or("(unknown)")
    )]
    DryRunFailed {
        kind: FaultKind,
        detail: String,
        /// The sample reading it faulted on, when the engine isolated one.
        reading_id: Option<String>,
    },
}

impl UploadRefusal {
    /// The stable machine code of this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            UploadRefusal::Empty => "empty_file",
            UploadRefusal::TooLarge { .. } => "too_large",
            UploadRefusal::NotWasm { .. }
            | UploadRefusal::CoreModule
            | UploadRefusal::InvalidComponent(_) => "not_a_component",
            UploadRefusal::ForbiddenImports(_) => "forbidden_imports",
            UploadRefusal::Incompatible(_) => "incompatible_contract",
            UploadRefusal::DescribeFailed(_) | UploadRefusal::BadDescribe(_) => "bad_describe",
            UploadRefusal::DryRunFailed { .. } => "dry_run_failed",
        }
    }
}

impl From<LoadError> for UploadRefusal {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::NotAComponent(d) => UploadRefusal::InvalidComponent(d),
            LoadError::ForbiddenImports(names) => UploadRefusal::ForbiddenImports(names),
            LoadError::Link(d) => UploadRefusal::Incompatible(d),
            LoadError::Describe(d) => UploadRefusal::DescribeFailed(d),
            LoadError::InvalidInfo(d) => UploadRefusal::BadDescribe(d),
        }
    }
}

/// What the user is told a fault kind means, so the refusal says what to fix.
fn fault_hint(kind: FaultKind) -> &'static str {
    match kind {
        FaultKind::Trap => "it trapped: a panic, an unreachable instruction or a bad memory access",
        FaultKind::Timeout => "it ran past the per-call deadline",
        FaultKind::MemoryLimit => "it needed more memory than a rule instance may have",
        FaultKind::OutputLimit => "it returned too many alerts or too much alert text",
        FaultKind::InvalidOutput => "it returned an alert the host cannot accept",
        FaultKind::RuleError => "its `evaluate` returned an error",
    }
}

/// An upload that passed every check: the compiled rule, ready to store and enable, and what
/// its dry run did.
#[derive(Debug, Clone)]
pub struct Checked {
    pub rule: Arc<CompiledRule>,
    pub dry_run: DryRun,
}

/// What a rule did on the built-in sample readings with its default parameters, for the UI.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DryRun {
    /// Readings in the built-in sample set.
    pub sample_readings: usize,
    /// Sample readings of the kinds the rule declares (those it was handed).
    pub readings_evaluated: u64,
    /// `evaluate` calls made.
    pub calls: u64,
    pub alerts: u64,
    pub alerts_by_code: BTreeMap<String, u64>,
    /// A few alerts, the first of each code before further ones, in evaluation order.
    pub examples: Vec<Alert>,
    /// The declared defaults the rule was run with.
    pub params: BTreeMap<String, ParamValue>,
}

/// [`check_upload_with_limit`] with [`MAX_UPLOAD_BYTES`].
pub fn check_upload(engine: &Engine, wasm: &[u8]) -> Result<Checked, UploadRefusal> {
    check_upload_with_limit(engine, wasm, MAX_UPLOAD_BYTES)
}

/// Checks an uploaded rule, cheapest step first, and refuses at the first that fails: size,
/// header, compile and imports, description (all through [`Engine::load`]), then the dry run.
///
/// Blocking: it compiles the component and runs it (a looping rule costs a couple of call
/// deadlines), so an async caller runs it with `spawn_blocking`.
pub fn check_upload_with_limit(
    engine: &Engine,
    wasm: &[u8],
    max_bytes: usize,
) -> Result<Checked, UploadRefusal> {
    let checked = check_inner(engine, wasm, max_bytes);
    // Codes only: a refusal's detail may carry the rule's output, which stays out of logs.
    match &checked {
        Ok(c) => {
            let rule = c.rule.rule_ref();
            tracing::debug!(rule = %rule, alerts = c.dry_run.alerts, "rule upload passed its checks");
        }
        Err(r) => tracing::debug!(code = r.code(), bytes = wasm.len(), "rule upload refused"),
    }
    checked
}

fn check_inner(engine: &Engine, wasm: &[u8], max_bytes: usize) -> Result<Checked, UploadRefusal> {
    if wasm.is_empty() {
        return Err(UploadRefusal::Empty);
    }
    if wasm.len() > max_bytes {
        return Err(UploadRefusal::TooLarge {
            size: wasm.len(),
            limit: max_bytes,
        });
    }
    check_header(wasm)?;
    let rule = engine.load(wasm)?;
    let dry_run = dry_run(&rule)?;
    Ok(Checked { rule, dry_run })
}

/// Tells a component from a core module or other bytes by the 8-byte preamble, so the user
/// hears the likely fix rather than a parser error.
fn check_header(wasm: &[u8]) -> Result<(), UploadRefusal> {
    let Some((magic, rest)) = wasm.split_first_chunk::<4>() else {
        return Err(UploadRefusal::NotWasm {
            what: format!("only {} bytes, shorter than a Wasm header", wasm.len()),
        });
    };
    if *magic != WASM_MAGIC {
        let what = if wasm.trim_ascii_start().starts_with(b"(") {
            "it looks like WebAssembly text (.wat), which is not accepted".to_owned()
        } else {
            "it does not start with the Wasm magic bytes `\\0asm`".to_owned()
        };
        return Err(UploadRefusal::NotWasm { what });
    }
    match rest.first_chunk::<4>() {
        Some(v) if *v == COMPONENT_VERSION => Ok(()),
        Some(v) if *v == CORE_MODULE_VERSION => Err(UploadRefusal::CoreModule),
        Some(v) => Err(UploadRefusal::InvalidComponent(format!(
            "unknown Wasm version/layer bytes {} (a component has 0d 00 01 00)",
            hex::encode(v)
        ))),
        None => Err(UploadRefusal::InvalidComponent(
            "the file ends inside the Wasm header".to_owned(),
        )),
    }
}

/// Runs the rule with its declared defaults over [`sample_readings`], in event-time order,
/// as the pipeline would, and refuses it on the first fault.
///
/// The first call holds one reading of each kind: a rule that faults on everything is found
/// after that call and its retry, so a looping rule costs two call deadlines, not the
/// bisection of a whole batch. The rest then goes in one batch, as the pipeline sends them.
fn dry_run(rule: &Arc<CompiledRule>) -> Result<DryRun, UploadRefusal> {
    let active = ActiveRule::new(rule.clone(), &BTreeMap::new())
        .map_err(|e| UploadRefusal::BadDescribe(format!("its default parameters: {e}")))?;
    let params = rule
        .info()
        .params
        .iter()
        .zip(active.params())
        .map(|(spec, v)| (spec.name.clone(), *v))
        .collect();
    let mut set = RuleSet::new(vec![active]);
    let readings = sample_readings();
    let mut history = History::new(None);
    for r in &readings {
        if let Some(v) = r.window_value() {
            history.insert(r.subject(), r.at_ms, &r.id, v);
        }
    }
    let first_of = |kind| readings.iter().position(|r| r.kind() == kind);
    let smoke: Vec<usize> = [
        first_of(ReadingKind::Glucose),
        first_of(ReadingKind::Device),
    ]
    .into_iter()
    .flatten()
    .collect();
    let (mut first, mut rest) = (Vec::new(), Vec::new());
    for (i, r) in readings.iter().enumerate() {
        if smoke.contains(&i) {
            first.push(r.clone());
        } else {
            rest.push(r.clone());
        }
    }

    let mut alerts = Vec::new();
    for batch in [first, rest] {
        let eval = set.evaluate(&batch, &history);
        if let Some(fault) = eval.faults.first() {
            // Faults and poison readings are recorded in step, one of each per reading.
            let reading_id = eval
                .poison
                .first()
                .and_then(|p| serde_json::from_str::<Reading>(&p.payload).ok())
                .map(|r| r.id);
            return Err(UploadRefusal::DryRunFailed {
                kind: fault.kind,
                detail: fault.detail.clone(),
                reading_id,
            });
        }
        alerts.extend(eval.alerts);
    }
    let metrics = set
        .rules()
        .first()
        .map(|r| r.metrics().clone())
        .unwrap_or_default();
    let mut alerts_by_code: BTreeMap<String, u64> = BTreeMap::new();
    for a in &alerts {
        *alerts_by_code.entry(a.code.clone()).or_default() += 1;
    }
    Ok(DryRun {
        sample_readings: readings.len(),
        readings_evaluated: metrics.readings,
        calls: metrics.calls,
        alerts: alerts.len() as u64,
        alerts_by_code,
        examples: examples(&alerts),
        params,
    })
}

/// The first alert of each code, then further ones, up to [`MAX_EXAMPLE_ALERTS`], in
/// evaluation order: a UI shows every kind of alert the rule raises before repeats.
fn examples(alerts: &[Alert]) -> Vec<Alert> {
    let mut picked: Vec<usize> = Vec::new();
    for (i, a) in alerts.iter().enumerate() {
        if picked.len() == MAX_EXAMPLE_ALERTS {
            break;
        }
        if !picked.iter().any(|&j| alerts[j].code == a.code) {
            picked.push(i);
        }
    }
    for i in 0..alerts.len() {
        if picked.len() == MAX_EXAMPLE_ALERTS {
            break;
        }
        if !picked.contains(&i) {
            picked.push(i);
        }
    }
    picked.sort_unstable();
    picked.into_iter().map(|i| alerts[i].clone()).collect()
}

/// Start of the sample readings: 2026-03-01T06:00:00Z.
pub const SAMPLE_T0_MS: i64 = 1_772_344_800_000;
const MINUTE_MS: i64 = 60_000;

/// The fixed sample readings of the dry run, in event-time order (ties by id).
///
/// Four synthetic patients and two devices, no real data:
/// - patient 1: in range and steady, every 5 min for an hour (96–102 mg/dL);
/// - patient 2: rising from 100 to 270 mg/dL every 5 min (over 115, fast rises, and three
///   readings ≥ 250);
/// - patient 3: falling from 180 to 48 mg/dL every 5 min (fast falls, below 70 and 54);
/// - patient 4: every minute for 20 min around 96–115 mg/dL, so 10-minute windows hold ten
///   readings and the average crosses 105 while no reading exceeds 115;
/// - device telemetry: one healthy device, one whose battery runs low and that disconnects
///   with an error code.
///
/// Glucose readings come from a device per patient (`100 + patient`); ids are scoped like
/// the parser's (`g:<device>:<id>` / `d:<device>:<id>`).
pub fn sample_readings() -> Vec<Reading> {
    const SERIES: [(u64, i64, &[f64]); 4] = [
        (
            1,
            5,
            &[
                96.0, 98.0, 101.0, 99.0, 97.0, 100.0, 102.0, 99.0, 98.0, 101.0, 100.0, 97.0, 99.0,
            ],
        ),
        (
            2,
            5,
            &[
                100.0, 104.0, 110.0, 118.0, 130.0, 148.0, 170.0, 195.0, 225.0, 255.0, 270.0, 262.0,
            ],
        ),
        (
            3,
            5,
            &[
                180.0, 172.0, 160.0, 142.0, 120.0, 100.0, 84.0, 72.0, 64.0, 56.0, 50.0, 48.0,
            ],
        ),
        (
            4,
            1,
            &[
                96.0, 98.0, 101.0, 104.0, 107.0, 110.0, 112.0, 113.0, 114.0, 115.0, 114.0, 113.0,
                112.0, 111.0, 110.0, 109.0, 108.0, 107.0, 106.0, 104.0,
            ],
        ),
    ];
    let mut readings = Vec::new();
    for (patient, step_min, values) in SERIES {
        let device_id = 100 + patient;
        for (n, &mg_dl) in values.iter().enumerate() {
            readings.push(Reading {
                id: format!("g:{device_id}:sample-{patient}-{n}"),
                at_ms: SAMPLE_T0_MS + n as i64 * step_min * MINUTE_MS,
                body: Body::Glucose(Glucose {
                    patient_id: patient,
                    device_id,
                    mg_dl,
                    location: Some("sample".to_owned()),
                }),
            });
        }
    }
    let device =
        |device_id: u64, n: u32, at_min: i64, battery: f64, conn, errors: &[&str]| Reading {
            id: format!("d:{device_id}:sample-{n}"),
            at_ms: SAMPLE_T0_MS + at_min * MINUTE_MS,
            body: Body::Device(DeviceTelemetry {
                device_id,
                battery_pct: Some(battery),
                firmware_version: Some("2.4.1".to_owned()),
                connectivity: conn,
                error_codes: errors.iter().map(|&e| e.to_owned()).collect(),
            }),
        };
    readings.push(device(101, 0, 2, 85.0, Connectivity::Connected, &[]));
    readings.push(device(102, 0, 3, 14.0, Connectivity::Poor, &[]));
    readings.push(device(
        102,
        1,
        13,
        9.0,
        Connectivity::Disconnected,
        &["E-SENSOR"],
    ));
    readings.sort_by(|a, b| (a.at_ms, &a.id).cmp(&(b.at_ms, &b.id)));
    readings
}
