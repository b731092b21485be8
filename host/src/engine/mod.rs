//! The rule engine: compiles Wasm rule components once, runs them sandboxed over batches of
//! readings with the windows the host computes, and contains every fault a rule can raise.
//!
//! Only this module names wasmtime types; callers see `model` types. A [`RuleSet`] is the
//! unit of atomic swap: the pipeline replaces it between batches, never during one.

mod bindings;
pub mod history;
pub mod params;
pub mod sandbox;

use crate::model::{
    Alert, DeadLetter, FaultKind, ParamValue, Reading, RuleFault, RuleInfo, RuleRef, now_ms,
};
use bindings::{RulePlugin, RulePluginPre, wit};
use history::History;
use sandbox::HostState;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

/// Engine limits and policies. Units are in the names.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineConfig {
    /// Linear memory cap per rule instance.
    pub max_memory_bytes: usize,
    /// Wall-clock budget of one `evaluate` call (one batch), enforced by epoch interruption.
    pub call_timeout_ms: u64,
    /// Epoch tick; the deadline is rounded up to whole ticks.
    pub epoch_tick_ms: u64,
    /// Turn the epoch deadline off (benchmarks only: a looping rule would hang the host).
    pub epoch_deadline: bool,
    /// Alerts a rule may return per reading of a batch before its output is refused.
    pub max_alerts_per_reading: usize,
    /// Bytes of alert text (codes + messages) a call may return.
    pub max_output_bytes: usize,
    /// Consecutive faulty calls after which a rule version is quarantined.
    pub quarantine_after_faults: u32,
    /// Log lines a rule may emit per call; the rest are dropped.
    pub max_log_lines_per_call: u32,
    /// Pooled instance slots (0 = allocate on demand instead of pooling).
    pub pooled_instances: u32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_memory_bytes: 64 << 20,
            call_timeout_ms: 500,
            epoch_tick_ms: 5,
            epoch_deadline: true,
            max_alerts_per_reading: 8,
            max_output_bytes: 1 << 20,
            quarantine_after_faults: 3,
            max_log_lines_per_call: 16,
            pooled_instances: 64,
        }
    }
}

/// Why a rule could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a valid Wasm component (build it for wasm32-wasip2): {0}")]
    NotAComponent(String),
    #[error("imports forbidden interfaces: {}", .0.join(", "))]
    ForbiddenImports(Vec<String>),
    #[error("cannot be linked: {0}")]
    Link(String),
    #[error("failed while describing itself: {0}")]
    Describe(String),
    #[error("invalid description: {0}")]
    InvalidInfo(String),
}

#[derive(Debug, thiserror::Error)]
#[error("engine setup failed: {0}")]
pub struct EngineSetupError(String);

/// The shared wasmtime engine and linker; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.inner.config)
            .finish()
    }
}

struct EngineInner {
    engine: wasmtime::Engine,
    linker: Linker<HostState>,
    config: EngineConfig,
    deadline_ticks: u64,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl Engine {
    pub fn new(config: EngineConfig) -> Result<Self, EngineSetupError> {
        let err = |e: wasmtime::Error| EngineSetupError(format!("{e:#}"));
        let mut c = Config::new();
        c.wasm_component_model(true)
            .concurrency_support(false)
            .epoch_interruption(config.epoch_deadline)
            .max_wasm_stack(1 << 20);
        if config.pooled_instances > 0 {
            let mut pool = PoolingAllocationConfig::default();
            let n = config.pooled_instances;
            pool.total_component_instances(n)
                .total_core_instances(n * 4)
                .total_memories(n * 2)
                .total_tables(n * 4)
                .max_memory_size(config.max_memory_bytes);
            c.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = wasmtime::Engine::new(&c).map_err(err)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(err)?;
        RulePlugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(err)?;

        let stop_ticker = Arc::new(AtomicBool::new(false));
        let tick = Duration::from_millis(config.epoch_tick_ms.max(1));
        if config.epoch_deadline {
            let (engine, stop) = (engine.clone(), stop_ticker.clone());
            std::thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| EngineSetupError(e.to_string()))?;
        }
        let deadline_ticks = config.call_timeout_ms.div_ceil(config.epoch_tick_ms.max(1)) + 1;
        Ok(Engine {
            inner: Arc::new(EngineInner {
                engine,
                linker,
                config,
                deadline_ticks,
                stop_ticker,
            }),
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    /// Compiles and checks a rule: it must be a component, import only allowed interfaces,
    /// link against this host, and describe itself validly. The result is reusable.
    pub fn load(&self, wasm: &[u8]) -> Result<Arc<CompiledRule>, LoadError> {
        let component = Component::new(&self.inner.engine, wasm)
            .map_err(|e| LoadError::NotAComponent(format!("{e:#}")))?;
        let forbidden: Vec<String> = component
            .component_type()
            .imports(&self.inner.engine)
            .map(|(name, _)| name.to_owned())
            .filter(|name| !sandbox::import_allowed(name))
            .collect();
        if !forbidden.is_empty() {
            return Err(LoadError::ForbiddenImports(forbidden));
        }
        let pre = self
            .inner
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let pre = RulePluginPre::new(pre).map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let mut live = self
            .instantiate(&pre, "(loading)".into())
            .map_err(|f| LoadError::Describe(f.detail))?;
        live.store.set_epoch_deadline(self.inner.deadline_ticks);
        let raw = live
            .plugin
            .glucoguard_rules_rule()
            .call_describe(&mut live.store)
            .map_err(|e| LoadError::Describe(format!("{e:#}")))?;
        let info = bindings::info_from_wit(raw);
        params::validate_info(&info).map_err(LoadError::InvalidInfo)?;
        let sha256 = hex::encode(Sha256::digest(wasm));
        Ok(Arc::new(CompiledRule {
            info,
            sha256,
            pre,
            engine: self.clone(),
        }))
    }

    fn instantiate(&self, pre: &RulePluginPre<HostState>, rule: Arc<str>) -> Result<Live, Fault> {
        let cfg = &self.inner.config;
        let mut store = Store::new(
            &self.inner.engine,
            HostState::new(rule, cfg.max_memory_bytes, cfg.max_log_lines_per_call),
        );
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(self.inner.deadline_ticks);
        let plugin = pre
            .instantiate(&mut store)
            .map_err(|e| Fault::new(FaultKind::Trap, format!("instantiate: {e:#}")))?;
        Ok(Live { store, plugin })
    }
}

/// A compiled, checked rule version; instantiated per [`ActiveRule`].
pub struct CompiledRule {
    info: RuleInfo,
    sha256: String,
    pre: RulePluginPre<HostState>,
    engine: Engine,
}

impl std::fmt::Debug for CompiledRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledRule")
            .field("info", &self.info)
            .field("sha256", &self.sha256)
            .finish()
    }
}

impl CompiledRule {
    pub fn info(&self) -> &RuleInfo {
        &self.info
    }
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
    pub fn rule_ref(&self) -> RuleRef {
        self.info.rule_ref()
    }
}

struct Live {
    store: Store<HostState>,
    plugin: RulePlugin,
}

#[derive(Debug, Clone)]
struct Fault {
    kind: FaultKind,
    detail: String,
}

impl Fault {
    fn new(kind: FaultKind, detail: impl Into<String>) -> Self {
        Fault {
            kind,
            detail: detail.into(),
        }
    }
}

/// Counters per rule version, for the admin UI and logs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RuleMetrics {
    pub readings: u64,
    pub alerts: u64,
    pub batches: u64,
    pub calls: u64,
    pub errors: BTreeMap<String, u64>,
    pub eval_nanos: u64,
}

impl RuleMetrics {
    pub fn total_errors(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// A rule version enabled with concrete parameters, holding its live instance.
pub struct ActiveRule {
    compiled: Arc<CompiledRule>,
    params: Vec<ParamValue>,
    wit_params: Vec<wit::ParamValue>,
    live: Option<Live>,
    consecutive_faults: u32,
    quarantined: Option<String>,
    metrics: RuleMetrics,
}

impl std::fmt::Debug for ActiveRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActiveRule")
            .field("rule", &self.compiled.rule_ref())
            .field("params", &self.params)
            .field("quarantined", &self.quarantined)
            .finish()
    }
}

impl ActiveRule {
    /// Enables a compiled rule with parameter overrides (validated against its declaration).
    pub fn new(
        compiled: Arc<CompiledRule>,
        overrides: &BTreeMap<String, ParamValue>,
    ) -> Result<Self, String> {
        let params = params::resolve(&compiled.info, overrides)?;
        let wit_params = params.iter().copied().map(bindings::param_to_wit).collect();
        Ok(ActiveRule {
            compiled,
            params,
            wit_params,
            live: None,
            consecutive_faults: 0,
            quarantined: None,
            metrics: RuleMetrics::default(),
        })
    }

    pub fn info(&self) -> &RuleInfo {
        &self.compiled.info
    }
    pub fn compiled(&self) -> &Arc<CompiledRule> {
        &self.compiled
    }
    pub fn params(&self) -> &[ParamValue] {
        &self.params
    }
    pub fn metrics(&self) -> &RuleMetrics {
        &self.metrics
    }
    pub fn quarantined(&self) -> Option<&str> {
        self.quarantined.as_deref()
    }

    fn call(
        &mut self,
        batch: &[wit::Reading],
        windows: &[wit::WindowStats],
    ) -> Result<Vec<wit::Alert>, Fault> {
        let engine = self.compiled.engine.clone();
        if self.live.is_none() {
            self.live = Some(engine.instantiate(
                &self.compiled.pre,
                Arc::from(self.compiled.info.name.as_str()),
            )?);
        }
        let live = self.live.as_mut().expect("instance just ensured");
        live.store.data_mut().begin_call();
        live.store.set_epoch_deadline(engine.inner.deadline_ticks);
        self.metrics.calls += 1;
        let result = live.plugin.glucoguard_rules_rule().call_evaluate(
            &mut live.store,
            &self.wit_params,
            batch,
            windows,
        );
        let output = live.store.data().output.take();
        if let Some(out) = &output {
            tracing::debug!(rule = %self.compiled.rule_ref(), "rule output: {out}");
        }
        let with_output = |mut s: String| {
            if let Some(out) = &output {
                s.push_str(" | output: ");
                s.push_str(out);
            }
            s
        };
        match result {
            Ok(Ok(alerts)) => self.check_output(batch.len(), alerts),
            Ok(Err(msg)) => Err(Fault::new(
                FaultKind::RuleError,
                with_output(msg.chars().take(1024).collect()),
            )),
            Err(e) => {
                let memory = live.store.data().limits.denied;
                let kind = if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                    FaultKind::Timeout
                } else if memory {
                    FaultKind::MemoryLimit
                } else {
                    FaultKind::Trap
                };
                // A trapped instance refuses later calls: throw it away.
                self.live = None;
                let detail = match kind {
                    FaultKind::Timeout => format!(
                        "exceeded the {} ms call deadline",
                        engine.inner.config.call_timeout_ms
                    ),
                    FaultKind::MemoryLimit => {
                        format!(
                            "exceeded the memory cap of {} bytes: {e}",
                            engine.inner.config.max_memory_bytes
                        )
                    }
                    _ => format!("{e:#}"),
                };
                Err(Fault::new(kind, with_output(detail)))
            }
        }
    }

    fn check_output(
        &self,
        batch_len: usize,
        alerts: Vec<wit::Alert>,
    ) -> Result<Vec<wit::Alert>, Fault> {
        let cfg = &self.compiled.engine.inner.config;
        if alerts.len() > batch_len.saturating_mul(cfg.max_alerts_per_reading) {
            return Err(Fault::new(
                FaultKind::OutputLimit,
                format!(
                    "returned {} alerts for {batch_len} readings (limit {} per reading)",
                    alerts.len(),
                    cfg.max_alerts_per_reading
                ),
            ));
        }
        let bytes: usize = alerts.iter().map(|a| a.code.len() + a.message.len()).sum();
        if bytes > cfg.max_output_bytes {
            return Err(Fault::new(
                FaultKind::OutputLimit,
                format!(
                    "returned {bytes} bytes of alert text (limit {})",
                    cfg.max_output_bytes
                ),
            ));
        }
        for a in &alerts {
            if a.index as usize >= batch_len {
                return Err(Fault::new(
                    FaultKind::InvalidOutput,
                    format!(
                        "alert points at reading {} of a batch of {batch_len}",
                        a.index
                    ),
                ));
            }
            if a.code.is_empty() || a.code.len() > 64 || a.message.is_empty() {
                return Err(Fault::new(
                    FaultKind::InvalidOutput,
                    "alert code must be 1..=64 bytes and message non-empty",
                ));
            }
        }
        Ok(alerts)
    }

    fn record_fault(&mut self, fault: &Fault, out: &mut Evaluation) {
        *self
            .metrics
            .errors
            .entry(fault.kind.as_str().to_owned())
            .or_default() += 1;
        self.consecutive_faults += 1;
        let rule = self.compiled.rule_ref();
        tracing::warn!(rule = %rule, kind = fault.kind.as_str(), consecutive = self.consecutive_faults, "rule fault");
        out.faults.push(RuleFault {
            rule: rule.clone(),
            kind: fault.kind,
            detail: fault.detail.clone(),
            at_ms: now_ms(),
        });
        let limit = self.compiled.engine.inner.config.quarantine_after_faults;
        if self.quarantined.is_none() && self.consecutive_faults >= limit {
            let reason = format!(
                "{} consecutive faults; last: {}: {}",
                self.consecutive_faults,
                fault.kind.as_str(),
                fault.detail
            );
            tracing::warn!(rule = %rule, "rule quarantined");
            self.quarantined = Some(reason.clone());
            self.live = None;
            out.quarantined.push((rule, reason));
        }
    }

    /// Evaluates the readings at `indices` of `batch`; never fails, records faults instead.
    fn evaluate(
        &mut self,
        batch: &[Reading],
        indices: &[usize],
        inputs: &RuleInputs,
        out: &mut Evaluation,
    ) {
        if self.quarantined.is_some() || indices.is_empty() {
            return;
        }
        let started = Instant::now();
        self.metrics.batches += 1;
        self.metrics.readings += indices.len() as u64;
        match self.call(&inputs.readings, &inputs.windows) {
            Ok(alerts) => {
                self.consecutive_faults = 0;
                self.push_alerts(batch, indices, alerts, out);
            }
            Err(fault) => {
                self.record_fault(&fault, out);
                // Retry once on a fresh instance: the fault may have been the instance's.
                if self.quarantined.is_none() {
                    match self.call(&inputs.readings, &inputs.windows) {
                        Ok(alerts) => {
                            self.consecutive_faults = 0;
                            self.push_alerts(batch, indices, alerts, out);
                        }
                        Err(fault) => {
                            self.record_fault(&fault, out);
                            self.isolate(batch, indices, inputs, fault, out);
                        }
                    }
                }
            }
        }
        self.metrics.eval_nanos += started.elapsed().as_nanos() as u64;
    }

    /// After a batch failed twice: evaluate its readings one at a time so the poison ones go
    /// to dead letters and the rest still get evaluated. Stops if the rule gets quarantined.
    fn isolate(
        &mut self,
        batch: &[Reading],
        indices: &[usize],
        inputs: &RuleInputs,
        last: Fault,
        out: &mut Evaluation,
    ) {
        let rule = self.compiled.rule_ref();
        let poison = |fault: &Fault, reading: &Reading| DeadLetter {
            origin: format!("rule:{rule}"),
            reason: format!(
                "rule {rule} faulted on this reading ({}): {}",
                fault.kind.as_str(),
                fault.detail
            ),
            payload: serde_json::to_string(reading).unwrap_or_default(),
            received_at_ms: now_ms(),
        };
        if indices.len() == 1 {
            out.poison.push(poison(&last, &batch[indices[0]]));
            return;
        }
        let w = inputs.windows_per_reading;
        for (pos, &i) in indices.iter().enumerate() {
            if self.quarantined.is_some() {
                break;
            }
            let one = &inputs.readings[pos..=pos];
            let wins = &inputs.windows[pos * w..(pos + 1) * w];
            match self.call(one, wins) {
                Ok(alerts) => {
                    self.consecutive_faults = 0;
                    self.push_alerts(batch, &[i], alerts, out);
                }
                Err(fault) => {
                    self.record_fault(&fault, out);
                    out.poison.push(poison(&fault, &batch[i]));
                }
            }
        }
    }

    fn push_alerts(
        &mut self,
        batch: &[Reading],
        indices: &[usize],
        alerts: Vec<wit::Alert>,
        out: &mut Evaluation,
    ) {
        let rule = self.compiled.rule_ref();
        self.metrics.alerts += alerts.len() as u64;
        for a in alerts {
            let reading = &batch[indices[a.index as usize]];
            out.alerts.push(Alert {
                id: Alert::derive_id(&rule, &reading.id, &a.code, reading.at_ms),
                rule: rule.clone(),
                reading_id: reading.id.clone(),
                patient_id: reading.patient_id(),
                device_id: reading.device_id(),
                kind: reading.kind(),
                at_ms: reading.at_ms,
                code: a.code,
                severity: bindings::severity_from_wit(a.severity),
                message: a.message,
                value: a.value,
            });
        }
    }
}

/// What the host hands one rule for one batch, already lowered to WIT types.
struct RuleInputs {
    readings: Vec<wit::Reading>,
    windows: Vec<wit::WindowStats>,
    windows_per_reading: usize,
}

/// Everything one batch produced.
#[derive(Debug, Default)]
pub struct Evaluation {
    pub alerts: Vec<Alert>,
    pub faults: Vec<RuleFault>,
    /// Readings a rule faulted on alone; they were still evaluated by every other rule.
    pub poison: Vec<DeadLetter>,
    pub quarantined: Vec<(RuleRef, String)>,
}

/// The enabled rules; swapped as a whole between batches.
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<ActiveRule>,
}

impl RuleSet {
    pub fn new(rules: Vec<ActiveRule>) -> Self {
        RuleSet { rules }
    }

    pub fn rules(&self) -> &[ActiveRule] {
        &self.rules
    }

    pub fn rules_mut(&mut self) -> &mut [ActiveRule] {
        &mut self.rules
    }

    pub fn into_rules(self) -> Vec<ActiveRule> {
        self.rules
    }

    /// The history a host must keep for these rules: the longest declared window.
    pub fn lookback_ms(&self) -> i64 {
        self.rules
            .iter()
            .map(|r| r.info().lookback_ms())
            .max()
            .unwrap_or(0)
    }

    /// Evaluates a batch through every enabled, unquarantined rule. The batch's readings
    /// must already be in `history` (so readings of one batch see each other by event time).
    pub fn evaluate(&mut self, batch: &[Reading], history: &History) -> Evaluation {
        let mut out = Evaluation::default();
        for rule in &mut self.rules {
            if rule.quarantined.is_some() {
                continue;
            }
            let info = &rule.compiled.info;
            let indices: Vec<usize> = (0..batch.len())
                .filter(|&i| info.wants(batch[i].kind()))
                .collect();
            if indices.is_empty() {
                continue;
            }
            let inputs = lower_inputs(info, batch, &indices, history);
            rule.evaluate(batch, &indices, &inputs, &mut out);
        }
        out
    }
}

fn lower_inputs(
    info: &RuleInfo,
    batch: &[Reading],
    indices: &[usize],
    history: &History,
) -> RuleInputs {
    let w = info.windows.len();
    let durations: Vec<i64> = info
        .windows
        .iter()
        .map(|s| i64::from(s.duration_secs) * 1000)
        .collect();
    let mut readings = Vec::with_capacity(indices.len());
    let mut stats = Vec::with_capacity(indices.len() * w);
    for &i in indices {
        let r = &batch[i];
        let previous = history.lookup(r.subject(), r.at_ms, &durations, &mut stats);
        readings.push(bindings::reading_to_wit(r, previous));
    }
    let windows = stats.into_iter().map(bindings::stats_to_wit).collect();
    RuleInputs {
        readings,
        windows,
        windows_per_reading: w,
    }
}
