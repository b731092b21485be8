//! Rule management: uploads, enable/disable, parameters and rollback, kept in the store and
//! turned into the [`RuleSet`] the pipeline swaps in between batches.

use crate::engine::{ActiveRule, CompiledRule, Engine, RuleSet};
use crate::model::{ParamValue, RuleInfo, RuleRef, now_ms};
use crate::store::{RuleState, Store, StoreError};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("rule rejected: {0}")]
    Load(#[from] crate::engine::LoadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "{rule} is quarantined ({reason}); release it first (`glucoguard rules release {rule}`)"
    )]
    Quarantined { rule: RuleRef, reason: String },
    #[error("the pipeline has stopped")]
    Stopped,
}

/// What a rule set will be, with every fallible step (store reads, compilation, parameter
/// validation) already done: [`RulePlan::assemble`] cannot fail, so a failed reload leaves
/// the running set as it was.
#[derive(Debug)]
pub struct RulePlan {
    wanted: Vec<(Arc<CompiledRule>, Vec<ParamValue>)>,
    /// Enabled rules whose active version is quarantined: not run, reported loudly.
    pub quarantined: Vec<(RuleRef, String)>,
}

impl RulePlan {
    /// The rule set: unchanged rules keep their instance and counters from `current`.
    pub fn assemble(self, mut current: Vec<ActiveRule>) -> RuleSet {
        let mut rules = Vec::with_capacity(self.wanted.len());
        for (compiled, params) in self.wanted {
            if let Some(pos) = current.iter().position(|r| {
                r.compiled().sha256() == compiled.sha256()
                    && r.params() == params.as_slice()
                    && r.quarantined().is_none()
            }) {
                rules.push(current.swap_remove(pos));
            } else {
                rules.push(ActiveRule::with_params(compiled, params));
            }
        }
        RuleSet::new(rules)
    }
}

/// Compiles rule versions once (cached by SHA-256) and builds rule sets from the store.
pub struct RuleManager {
    engine: Engine,
    store: Arc<dyn Store>,
    compiled: Mutex<HashMap<String, Arc<CompiledRule>>>,
}

impl RuleManager {
    pub fn new(engine: Engine, store: Arc<dyn Store>) -> Self {
        RuleManager {
            engine,
            store,
            compiled: Mutex::new(HashMap::new()),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn compile(&self, wasm: &[u8]) -> Result<Arc<CompiledRule>, RuleError> {
        let rule = self.engine.load(wasm)?;
        self.compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(rule.sha256().to_owned(), rule.clone());
        Ok(rule)
    }

    /// Checks and stores a new rule version without enabling it.
    pub async fn upload(&self, wasm: &[u8]) -> Result<RuleInfo, RuleError> {
        let rule = self.compile(wasm)?;
        self.store
            .put_rule_version(rule.info(), rule.sha256(), wasm)
            .await?;
        Ok(rule.info().clone())
    }

    /// Makes `version` (or the newest uploaded) the active one of `name`, enabled, with params.
    pub async fn enable(
        &self,
        name: &str,
        version: Option<&str>,
        params: Option<BTreeMap<String, ParamValue>>,
    ) -> Result<RuleState, RuleError> {
        let versions = self.store.rule_versions().await?;
        let mine: Vec<_> = versions.iter().filter(|v| v.info.name == name).collect();
        let chosen = match version {
            Some(v) => mine.iter().find(|r| r.info.version == v),
            None => mine.last(),
        }
        .ok_or_else(|| {
            RuleError::Invalid(format!(
                "no uploaded version {} of rule {name}",
                version.unwrap_or("(any)")
            ))
        })?;
        if let Some(reason) = &chosen.quarantine_reason {
            return Err(RuleError::Quarantined {
                rule: chosen.info.rule_ref(),
                reason: reason.clone(),
            });
        }
        let current = self
            .store
            .rule_states()
            .await?
            .into_iter()
            .find(|s| s.name == name);
        let params = params
            .or_else(|| current.map(|c| c.params))
            .unwrap_or_default();
        crate::engine::params::resolve(&chosen.info, &params).map_err(RuleError::Invalid)?;
        let state = RuleState {
            name: name.to_owned(),
            active_version: chosen.info.version.clone(),
            enabled: true,
            params,
            updated_at_ms: now_ms(),
        };
        self.store.put_rule_state(&state).await?;
        Ok(state)
    }

    pub async fn disable(&self, name: &str) -> Result<RuleState, RuleError> {
        let mut state = self
            .store
            .rule_states()
            .await?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| RuleError::Invalid(format!("no rule named {name}")))?;
        state.enabled = false;
        state.updated_at_ms = now_ms();
        self.store.put_rule_state(&state).await?;
        Ok(state)
    }

    /// Activates the version uploaded before the active one, keeping parameters that still
    /// validate against it.
    pub async fn rollback(&self, name: &str) -> Result<RuleState, RuleError> {
        let state = self
            .store
            .rule_states()
            .await?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| RuleError::Invalid(format!("no rule named {name}")))?;
        let versions = self.store.rule_versions().await?;
        let mine: Vec<_> = versions.iter().filter(|v| v.info.name == name).collect();
        let pos = mine
            .iter()
            .position(|v| v.info.version == state.active_version)
            .ok_or_else(|| RuleError::Invalid(format!("active version of {name} is missing")))?;
        let previous = pos.checked_sub(1).map(|i| mine[i]).ok_or_else(|| {
            RuleError::Invalid(format!(
                "{name}@{} has no earlier version",
                state.active_version
            ))
        })?;
        self.enable(name, Some(&previous.info.version), Some(state.params))
            .await
    }

    /// Builds the rule set the store describes: enabled rules at their active version,
    /// skipping quarantined versions. Unchanged rules keep their instance and counters.
    pub async fn build(&self, current: Vec<ActiveRule>) -> Result<RuleSet, RuleError> {
        Ok(self.plan().await?.assemble(current))
    }

    /// Clears the quarantine of a version (it runs again once enabled and reloaded).
    pub async fn release(&self, rule: &RuleRef) -> Result<(), RuleError> {
        let versions = self.store.rule_versions().await?;
        let v = versions
            .iter()
            .find(|v| v.info.name == rule.name && v.info.version == rule.version)
            .ok_or_else(|| RuleError::Invalid(format!("no uploaded version {rule}")))?;
        if v.quarantine_reason.is_none() {
            return Err(RuleError::Invalid(format!("{rule} is not quarantined")));
        }
        self.store.release_quarantine(rule).await?;
        tracing::warn!(rule = %rule, "rule quarantine released");
        Ok(())
    }

    /// Everything `build` needs that can fail: the store's rule state, compiled versions and
    /// validated parameters.
    pub async fn plan(&self) -> Result<RulePlan, RuleError> {
        let states = self.store.rule_states().await?;
        let versions = self.store.rule_versions().await?;
        let mut plan = RulePlan {
            wanted: Vec::new(),
            quarantined: Vec::new(),
        };
        for s in states.iter().filter(|s| s.enabled) {
            let Some(v) = versions
                .iter()
                .find(|v| v.info.name == s.name && v.info.version == s.active_version)
            else {
                continue;
            };
            if let Some(reason) = &v.quarantine_reason {
                plan.quarantined.push((v.info.rule_ref(), reason.clone()));
                continue;
            }
            let cached = self
                .compiled
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&v.sha256)
                .cloned();
            let compiled = match cached {
                Some(c) => c,
                None => {
                    let wasm = self
                        .store
                        .rule_wasm(&RuleRef {
                            name: s.name.clone(),
                            version: s.active_version.clone(),
                        })
                        .await?;
                    self.compile(&wasm)?
                }
            };
            let params = crate::engine::params::resolve(compiled.info(), &s.params)
                .map_err(|e| RuleError::Invalid(format!("{}@{}: {e}", s.name, s.active_version)))?;
            plan.wanted.push((compiled, params));
        }
        Ok(plan)
    }
}
