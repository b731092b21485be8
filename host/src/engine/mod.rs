//! The rule engine: compiles Wasm rule components once, runs them sandboxed over batches of
//! readings with the windows the host computes, and contains every fault a rule can raise.
//!
//! Only this module names wasmtime types; callers see `model` types. A [`RuleSet`] is the
//! unit of atomic swap: the pipeline replaces it between batches, never during one.

mod bindings;
pub mod history;
pub mod params;
pub mod sandbox;
pub mod upload;

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
    /// Faulted readings a rule must have in its recent window before it can be quarantined
    /// (a reading the rule faults on alone is a dead letter and counts once).
    pub quarantine_after_faults: u32,
    /// The recent window of evaluated readings the quarantine decision looks at.
    pub quarantine_window_readings: u32,
    /// Share of the window's readings that must have faulted for a quarantine: a rule that
    /// fails on most readings is faulty; one that fails on a few has poison inputs.
    pub quarantine_fault_ratio: f64,
    /// Faulty calls one batch may cost a rule while its poison readings are isolated; the
    /// readings still unresolved then are dead letters ("not evaluated") and count as faulted.
    pub max_faulty_calls_per_batch: u32,
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
            quarantine_window_readings: 100,
            quarantine_fault_ratio: 0.5,
            max_faulty_calls_per_batch: 32,
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

/// Longest fault detail kept (it is stored with every fault and poison reading).
const MAX_FAULT_DETAIL_BYTES: usize = 2048;

impl Fault {
    fn new(kind: FaultKind, detail: impl Into<String>) -> Self {
        let mut detail = detail.into();
        if detail.len() > MAX_FAULT_DETAIL_BYTES {
            let mut cut = MAX_FAULT_DETAIL_BYTES;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
            detail.push('…');
        }
        Fault { kind, detail }
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
    recent: RecentOutcomes,
    quarantined: Option<String>,
    metrics: RuleMetrics,
    /// The subjects this rule evaluates; every reading of a kind it wants when `None`.
    scope: Option<Arc<crate::model::ScopeMembers>>,
}

/// The outcome of a rule's most recent evaluated readings, by batch, for the quarantine
/// decision: at most about `window` readings (the oldest batches fall out).
#[derive(Debug, Default)]
struct RecentOutcomes {
    batches: std::collections::VecDeque<(u32, u32)>,
    readings: u64,
    faulted: u64,
}

impl RecentOutcomes {
    fn record(&mut self, evaluated: u32, faulted: u32, window: u32) {
        self.batches.push_back((evaluated, faulted));
        self.readings += u64::from(evaluated);
        self.faulted += u64::from(faulted);
        while self.batches.len() > 1
            && self.readings - u64::from(self.batches[0].0) >= u64::from(window)
        {
            let (e, f) = self.batches.pop_front().expect("non-empty");
            self.readings -= u64::from(e);
            self.faulted -= u64::from(f);
        }
    }

    fn totals(&self) -> (u64, u64) {
        (self.readings, self.faulted)
    }
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
        Ok(Self::with_params(compiled, params))
    }

    /// Enables a compiled rule with parameters already resolved by [`params::resolve`].
    pub fn with_params(compiled: Arc<CompiledRule>, params: Vec<ParamValue>) -> Self {
        let wit_params = params.iter().copied().map(bindings::param_to_wit).collect();
        ActiveRule {
            compiled,
            params,
            wit_params,
            live: None,
            recent: RecentOutcomes::default(),
            quarantined: None,
            metrics: RuleMetrics::default(),
            scope: None,
        }
    }

    /// Limits the rule to a scope's members (`None`: every subject). Counters, state and
    /// quarantine are kept: a scope change is not a new rule.
    pub fn with_scope(mut self, scope: Option<Arc<crate::model::ScopeMembers>>) -> Self {
        self.scope = scope;
        self
    }

    pub fn scope(&self) -> Option<&crate::model::ScopeMembers> {
        self.scope.as_deref()
    }

    /// Whether this rule evaluates `reading`: a kind it declared, inside its scope.
    fn admits(&self, reading: &Reading) -> bool {
        self.compiled.info.wants(reading.kind())
            && self.scope.as_ref().is_none_or(|s| s.admits(reading))
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
        deadline_ticks: u64,
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
        live.store.set_epoch_deadline(deadline_ticks);
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
                        "exceeded the call deadline of about {} ms",
                        deadline_ticks.saturating_sub(1) * engine.inner.config.epoch_tick_ms.max(1)
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
            if a.value.is_some_and(|v| !v.is_finite()) {
                return Err(Fault::new(
                    FaultKind::InvalidOutput,
                    format!(
                        "alert `{}` has a value that is not a finite number",
                        a.code.chars().take(64).collect::<String>()
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

    /// Records a fault on one reading (or on readings the budget left unevaluated): counted
    /// once per reading by kind, kept as a [`RuleFault`] and the reading as a dead letter that
    /// names the rule and the fault.
    fn record_poison(&mut self, fault: &Fault, reading: &Reading, out: &mut Evaluation) {
        *self
            .metrics
            .errors
            .entry(fault.kind.as_str().to_owned())
            .or_default() += 1;
        let rule = self.compiled.rule_ref();
        out.faults.push(RuleFault {
            rule: rule.clone(),
            kind: fault.kind,
            detail: fault.detail.clone(),
            at_ms: now_ms(),
        });
        out.poison.push(DeadLetter {
            origin: format!("rule:{rule}"),
            reason: format!(
                "rule {rule} faulted on this reading ({}): {}",
                fault.kind.as_str(),
                fault.detail
            ),
            payload: serde_json::to_string(reading).unwrap_or_default(),
            received_at_ms: now_ms(),
        });
    }

    /// Feeds one batch's outcome into the rule's recent window and quarantines the version
    /// when most of the window faulted. One poison reading (or a few) never does: the window
    /// must hold `quarantine_after_faults` faulted readings and at least
    /// `quarantine_fault_ratio` of its readings must have faulted.
    fn judge(&mut self, evaluated: u32, faulted: u32, last: Option<&Fault>, out: &mut Evaluation) {
        let cfg = &self.compiled.engine.inner.config;
        self.recent
            .record(evaluated, faulted, cfg.quarantine_window_readings);
        let (seen, bad) = self.recent.totals();
        if faulted > 0 {
            tracing::warn!(rule = %self.compiled.rule_ref(), faulted, window_faulted = bad, window_readings = seen, "rule faulted on readings");
        }
        let Some(last) = last else { return };
        if self.quarantined.is_some()
            || bad < u64::from(cfg.quarantine_after_faults)
            || (bad as f64) < cfg.quarantine_fault_ratio * seen as f64
        {
            return;
        }
        let rule = self.compiled.rule_ref();
        let reason = format!(
            "faulted on {bad} of its last {seen} readings; last: {}: {}",
            last.kind.as_str(),
            last.detail
        );
        tracing::warn!(rule = %rule, faulted = bad, readings = seen, "rule quarantined");
        self.quarantined = Some(reason.clone());
        self.live = None;
        out.quarantined.push((rule, reason));
    }

    /// Evaluates the readings at `indices` of `batch`; never fails, records faults instead.
    ///
    /// A faulty call is retried once on a fresh instance (the fault may have been the
    /// instance's); if it fails again the batch is bisected, so the readings that fault on
    /// their own are found in a few calls, become dead letters and count once each, and
    /// every other reading is still evaluated. The work is bounded: sub-calls get a deadline
    /// in proportion to their share of the batch, and after `max_faulty_calls_per_batch`
    /// faulty calls the readings still unresolved are dead letters too.
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
        let n = indices.len();
        self.metrics.batches += 1;
        self.metrics.readings += n as u64;
        let full = self.compiled.engine.inner.deadline_ticks;
        let mut faulty_calls = 0u32;
        let mut last = None;
        for _attempt in 0..2 {
            match self.call(&inputs.readings, &inputs.windows, full) {
                Ok(alerts) => {
                    self.push_alerts(batch, indices, alerts, out);
                    self.judge(n as u32, 0, None, out);
                    self.metrics.eval_nanos += started.elapsed().as_nanos() as u64;
                    return;
                }
                Err(fault) => {
                    faulty_calls += 1;
                    last = Some(fault);
                }
            }
        }
        let mut last = last.expect("two faulty calls");
        let budget = self
            .compiled
            .engine
            .inner
            .config
            .max_faulty_calls_per_batch
            .max(2);
        let w = inputs.windows_per_reading;
        let mut faulted = 0u32;
        // Ranges of positions still to resolve; the batch as a whole is known to fault.
        let mut work: Vec<(usize, usize)> = Vec::new();
        if n == 1 {
            self.record_poison(&last, &batch[indices[0]], out);
            faulted += 1;
        } else {
            work.push((n / 2, n));
            work.push((0, n / 2));
        }
        while let Some((lo, hi)) = work.pop() {
            if faulty_calls >= budget {
                let fault = Fault::new(
                    last.kind,
                    format!(
                        "not evaluated: the batch cost {faulty_calls} faulty calls (limit {budget}); last: {}",
                        last.detail
                    ),
                );
                for (lo, hi) in std::iter::once((lo, hi)).chain(work.drain(..)) {
                    for &i in &indices[lo..hi] {
                        self.record_poison(&fault, &batch[i], out);
                        faulted += 1;
                    }
                }
                break;
            }
            let ticks = self.share_deadline(hi - lo, n);
            match self.call(
                &inputs.readings[lo..hi],
                &inputs.windows[lo * w..hi * w],
                ticks,
            ) {
                Ok(alerts) => self.push_alerts(batch, &indices[lo..hi], alerts, out),
                Err(fault) => {
                    faulty_calls += 1;
                    if hi - lo == 1 {
                        self.record_poison(&fault, &batch[indices[lo]], out);
                        faulted += 1;
                    } else {
                        let mid = lo + (hi - lo) / 2;
                        work.push((mid, hi));
                        work.push((lo, mid));
                    }
                    last = fault;
                }
            }
        }
        self.judge(n as u32, faulted, Some(&last), out);
        self.metrics.eval_nanos += started.elapsed().as_nanos() as u64;
    }

    /// The epoch deadline of a call over `len` of a batch's `n` readings: the batch's
    /// deadline in proportion, at least 50 ms (or the whole deadline, when shorter).
    fn share_deadline(&self, len: usize, n: usize) -> u64 {
        let inner = &self.compiled.engine.inner;
        let tick = inner.config.epoch_tick_ms.max(1);
        let floor = inner.config.call_timeout_ms.min(50).div_ceil(tick) + 1;
        let share = (inner.config.call_timeout_ms as u128 * len as u128 / n.max(1) as u128) as u64;
        (share.div_ceil(tick) + 1).clamp(floor, inner.deadline_ticks)
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
            let indices: Vec<usize> = (0..batch.len())
                .filter(|&i| rule.admits(&batch[i]))
                .collect();
            if indices.is_empty() {
                continue;
            }
            let inputs = lower_inputs(&rule.compiled.info, batch, &indices, history);
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
