//! Rule management: uploads, enable/disable, parameters and rollback, kept in the store and
//! turned into the [`RuleSet`] the pipeline swaps in between batches.

use crate::engine::{ActiveRule, CompiledRule, Engine, RuleSet};
use crate::model::{ParamValue, RuleInfo, RuleRef, ScopeMembers, now_ms};
use crate::store::accounts::Actor;
use crate::store::{RuleScope, RuleState, Store, StoreError};
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

/// Most patients one scope may list (a longer list is a profile).
pub const MAX_SCOPE_PATIENTS: usize = 10_000;

/// Refuses scopes that cannot be what was meant: empty lists (a rule that evaluates no one
/// is disabled, and says so), blank or overlong profile names, too many patients.
fn validate_scope(scope: &RuleScope) -> Result<(), RuleError> {
    match scope {
        RuleScope::All {} => Ok(()),
        RuleScope::Profiles { profiles } => {
            if profiles.is_empty() {
                return Err(RuleError::Invalid(
                    "a profile scope names at least one profile; disable the rule to stop it"
                        .into(),
                ));
            }
            if let Some(p) = profiles
                .iter()
                .find(|p| p.trim().is_empty() || p.len() > 64)
            {
                return Err(RuleError::Invalid(format!(
                    "profile {p:?} must be 1 to 64 characters, not blank"
                )));
            }
            Ok(())
        }
        RuleScope::Patients { patients } => {
            if patients.is_empty() {
                return Err(RuleError::Invalid(
                    "a patient scope lists at least one patient; disable the rule to stop it"
                        .into(),
                ));
            }
            if patients.len() > MAX_SCOPE_PATIENTS {
                return Err(RuleError::Invalid(format!(
                    "a scope lists at most {MAX_SCOPE_PATIENTS} patients; scope by profile instead"
                )));
            }
            Ok(())
        }
    }
}

/// What a rule set will be, with every fallible step (store reads, compilation, parameter
/// validation) already done: [`RulePlan::assemble`] cannot fail, so a failed reload leaves
/// the running set as it was.
#[derive(Debug)]
pub struct RulePlan {
    wanted: Vec<Wanted>,
    /// The versions among `wanted` that run in shadow: their alerts are recorded apart and
    /// never notified.
    pub shadow: std::collections::HashSet<RuleRef>,
    /// Enabled rules whose active version is quarantined: not run, reported loudly.
    pub quarantined: Vec<(RuleRef, String)>,
}

/// One version the rule set will run, with its resolved parameters and scope.
#[derive(Debug)]
struct Wanted {
    compiled: Arc<CompiledRule>,
    params: Vec<ParamValue>,
    scope: Option<Arc<ScopeMembers>>,
}

impl RulePlan {
    /// The rule set: unchanged rules keep their instance and counters from `current` (a
    /// changed scope alone is not a change: the instance takes the new scope).
    pub fn assemble(self, mut current: Vec<ActiveRule>) -> RuleSet {
        let mut rules = Vec::with_capacity(self.wanted.len());
        for w in self.wanted {
            let rule = match current.iter().position(|r| {
                r.compiled().sha256() == w.compiled.sha256()
                    && r.params() == w.params.as_slice()
                    && r.quarantined().is_none()
            }) {
                Some(pos) => current.swap_remove(pos),
                None => ActiveRule::with_params(w.compiled, w.params),
            };
            rules.push(rule.with_scope(w.scope));
        }
        RuleSet::new(rules)
    }

    /// The scope each planned version runs under (`None`: every patient).
    pub fn scopes(&self) -> impl Iterator<Item = (RuleRef, Option<&ScopeMembers>)> {
        self.wanted
            .iter()
            .map(|w| (w.compiled.rule_ref(), w.scope.as_deref()))
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
    pub async fn upload(&self, wasm: &[u8], by: &Actor) -> Result<RuleInfo, RuleError> {
        let rule = self.compile(wasm)?;
        self.store_version(&rule, wasm, by).await?;
        Ok(rule.info().clone())
    }

    /// Stores a version already compiled and checked (the admin upload runs its own checks
    /// first), audited as `rule.upload`.
    pub async fn store_version(
        &self,
        rule: &Arc<CompiledRule>,
        wasm: &[u8],
        by: &Actor,
    ) -> Result<(), RuleError> {
        self.compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(rule.sha256().to_owned(), rule.clone());
        let audit = by
            .audit("rule.upload", format!("rule:{}", rule.rule_ref()))
            .with_after(serde_json::json!({ "sha256": rule.sha256(), "bytes": wasm.len(), "info": rule.info() }));
        self.store
            .put_rule_version(rule.info(), rule.sha256(), wasm, &audit)
            .await?;
        Ok(())
    }

    /// Stores a rule state, audited with what it was before.
    async fn put_state(
        &self,
        state: &RuleState,
        before: Option<&RuleState>,
        action: &str,
        by: &Actor,
    ) -> Result<(), RuleError> {
        let audit = by
            .audit(action, format!("rule:{}", state.name))
            .with_before(before)
            .with_after(state);
        self.store.put_rule_state(state, &audit).await?;
        Ok(())
    }

    /// Makes `version` (or the newest uploaded) the active one of `name`, enabled, with params.
    pub async fn enable(
        &self,
        name: &str,
        version: Option<&str>,
        params: Option<BTreeMap<String, ParamValue>>,
        by: &Actor,
    ) -> Result<RuleState, RuleError> {
        self.activate(name, version, params, "rule.enable", by)
            .await
    }

    async fn activate(
        &self,
        name: &str,
        version: Option<&str>,
        params: Option<BTreeMap<String, ParamValue>>,
        action: &str,
        by: &Actor,
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
            .or_else(|| current.as_ref().map(|c| c.params.clone()))
            .unwrap_or_default();
        crate::engine::params::resolve(&chosen.info, &params).map_err(RuleError::Invalid)?;
        let state = RuleState {
            name: name.to_owned(),
            active_version: chosen.info.version.clone(),
            enabled: true,
            params,
            updated_at_ms: now_ms(),
            // Enabling the version in shadow ends its shadow; another shadow keeps running.
            shadow: current
                .as_ref()
                .and_then(|c| c.shadow.clone())
                .filter(|sh| sh.version != chosen.info.version),
            scope: current
                .as_ref()
                .map(|c| c.scope.clone())
                .unwrap_or_default(),
        };
        // A restart re-registers the config's rules: what is already so is not rewritten
        // (nor audited again).
        if let Some(c) = &current
            && c.enabled
            && c.active_version == state.active_version
            && c.params == state.params
        {
            return Ok(c.clone());
        }
        self.put_state(&state, current.as_ref(), action, by).await?;
        Ok(state)
    }

    pub async fn disable(&self, name: &str, by: &Actor) -> Result<RuleState, RuleError> {
        let before = self.state_of(name).await?;
        if !before.enabled {
            return Ok(before);
        }
        let mut state = before.clone();
        state.enabled = false;
        state.updated_at_ms = now_ms();
        self.put_state(&state, Some(&before), "rule.disable", by)
            .await?;
        Ok(state)
    }

    /// Activates the version uploaded before the active one, keeping parameters that still
    /// validate against it.
    pub async fn rollback(&self, name: &str, by: &Actor) -> Result<RuleState, RuleError> {
        let state = self.state_of(name).await?;
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
        self.activate(
            name,
            Some(&previous.info.version),
            Some(state.params),
            "rule.rollback",
            by,
        )
        .await
    }

    /// Activates a named earlier (or any uploaded) version of `name`, keeping the current
    /// parameters when they still validate against it.
    pub async fn rollback_to(
        &self,
        name: &str,
        version: &str,
        by: &Actor,
    ) -> Result<RuleState, RuleError> {
        let current = self.state_of(name).await?;
        self.activate(
            name,
            Some(version),
            Some(current.params),
            "rule.rollback",
            by,
        )
        .await
    }

    /// Runs `version` of `name` in shadow beside the active version, with `params` (its
    /// declared defaults when `None`): it sees the live stream, and what it would raise is
    /// recorded apart and notified to no one.
    pub async fn shadow(
        &self,
        name: &str,
        version: &str,
        params: Option<BTreeMap<String, ParamValue>>,
        by: &Actor,
    ) -> Result<RuleState, RuleError> {
        let current = self
            .store
            .rule_states()
            .await?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                RuleError::Invalid(format!("no rule named {name}: enable a version first"))
            })?;
        if current.active_version == version && current.enabled {
            return Err(RuleError::Invalid(format!(
                "{name}@{version} is the active version; shadow another one"
            )));
        }
        let versions = self.store.rule_versions().await?;
        let v = versions
            .iter()
            .find(|v| v.info.name == name && v.info.version == version)
            .ok_or_else(|| RuleError::Invalid(format!("no uploaded version {name}@{version}")))?;
        if let Some(reason) = &v.quarantine_reason {
            return Err(RuleError::Quarantined {
                rule: v.info.rule_ref(),
                reason: reason.clone(),
            });
        }
        let params = params.unwrap_or_default();
        crate::engine::params::resolve(&v.info, &params).map_err(RuleError::Invalid)?;
        let mut state = current.clone();
        state.shadow = Some(crate::store::ShadowState {
            version: version.to_owned(),
            params,
        });
        state.updated_at_ms = now_ms();
        self.put_state(&state, Some(&current), "rule.shadow", by)
            .await?;
        Ok(state)
    }

    /// Stops the shadow of `name`, if any.
    pub async fn stop_shadow(&self, name: &str, by: &Actor) -> Result<RuleState, RuleError> {
        let current = self.state_of(name).await?;
        if current.shadow.is_none() {
            return Ok(current);
        }
        let mut state = current.clone();
        state.shadow = None;
        state.updated_at_ms = now_ms();
        self.put_state(&state, Some(&current), "rule.shadow_stop", by)
            .await?;
        Ok(state)
    }

    /// Changes the parameters of the active version (validated against its schema).
    pub async fn set_params(
        &self,
        name: &str,
        params: BTreeMap<String, ParamValue>,
        by: &Actor,
    ) -> Result<RuleState, RuleError> {
        let current = self.state_of(name).await?;
        let versions = self.store.rule_versions().await?;
        let v = versions
            .iter()
            .find(|v| v.info.name == name && v.info.version == current.active_version)
            .ok_or_else(|| RuleError::Invalid(format!("active version of {name} is missing")))?;
        crate::engine::params::resolve(&v.info, &params).map_err(RuleError::Invalid)?;
        let mut state = current.clone();
        state.params = params;
        state.updated_at_ms = now_ms();
        self.put_state(&state, Some(&current), "rule.params", by)
            .await?;
        Ok(state)
    }

    /// Limits rule `name` (and its shadow) to a scope: every patient, patients of some
    /// profiles, or listed patients, each of whom must be in the directory. Audited with
    /// the scope it replaces.
    pub async fn set_scope(
        &self,
        name: &str,
        scope: RuleScope,
        by: &Actor,
    ) -> Result<RuleState, RuleError> {
        validate_scope(&scope)?;
        if let RuleScope::Patients { patients } = &scope {
            for &id in patients {
                let live = self
                    .store
                    .patient(id)
                    .await?
                    .is_some_and(|p| p.deleted_at_ms.is_none());
                if !live {
                    return Err(RuleError::Invalid(format!(
                        "patient {id} is not in the directory; a scope lists registered patients"
                    )));
                }
            }
        }
        let current = self.state_of(name).await?;
        if current.scope == scope {
            return Ok(current);
        }
        let mut state = current.clone();
        state.scope = scope;
        state.updated_at_ms = now_ms();
        self.put_state(&state, Some(&current), "rule.scope", by)
            .await?;
        Ok(state)
    }

    /// Builds the rule set the store describes: enabled rules at their active version,
    /// skipping quarantined versions. Unchanged rules keep their instance and counters.
    pub async fn build(&self, current: Vec<ActiveRule>) -> Result<RuleSet, RuleError> {
        Ok(self.plan().await?.assemble(current))
    }

    /// Clears the quarantine of a version (it runs again once enabled and reloaded).
    pub async fn release(&self, rule: &RuleRef, by: &Actor) -> Result<(), RuleError> {
        let versions = self.store.rule_versions().await?;
        let v = versions
            .iter()
            .find(|v| v.info.name == rule.name && v.info.version == rule.version)
            .ok_or_else(|| RuleError::Invalid(format!("no uploaded version {rule}")))?;
        if v.quarantine_reason.is_none() {
            return Err(RuleError::Invalid(format!("{rule} is not quarantined")));
        }
        let audit = by
            .audit("rule.release", format!("rule:{rule}"))
            .with_before(serde_json::json!({ "quarantine_reason": v.quarantine_reason }));
        self.store.release_quarantine(rule, &audit).await?;
        tracing::warn!(rule = %rule, "rule quarantine released");
        Ok(())
    }

    /// The stored state of rule `name`.
    async fn state_of(&self, name: &str) -> Result<RuleState, RuleError> {
        self.store
            .rule_states()
            .await?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| RuleError::Invalid(format!("no rule named {name}")))
    }

    /// A stored version by name and version, compiled (cached).
    pub async fn compiled_rule(&self, rule: &RuleRef) -> Result<Arc<CompiledRule>, RuleError> {
        let versions = self.store.rule_versions().await?;
        let v = versions
            .iter()
            .find(|v| v.info.name == rule.name && v.info.version == rule.version)
            .ok_or_else(|| RuleError::Invalid(format!("no uploaded version {rule}")))?;
        self.compiled_version(rule, &v.sha256).await
    }

    /// A stored version, compiled once (cached by SHA-256).
    async fn compiled_version(
        &self,
        rule: &RuleRef,
        sha256: &str,
    ) -> Result<Arc<CompiledRule>, RuleError> {
        let cached = self
            .compiled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(sha256)
            .cloned();
        match cached {
            Some(c) => Ok(c),
            None => {
                let wasm = self.store.rule_wasm(rule).await?;
                self.compile(&wasm)
            }
        }
    }

    /// Everything `build` needs that can fail: the store's rule state, compiled versions and
    /// validated parameters.
    pub async fn plan(&self) -> Result<RulePlan, RuleError> {
        let states = self.store.rule_states().await?;
        let versions = self.store.rule_versions().await?;
        let mut plan = RulePlan {
            wanted: Vec::new(),
            shadow: Default::default(),
            quarantined: Vec::new(),
        };
        // A rule and its shadow share one resolved scope (so do rules with equal scopes).
        let mut scopes: Vec<(RuleScope, Option<Arc<ScopeMembers>>)> = Vec::new();
        // Shadows run whether or not the active version is enabled (trying a candidate
        // before ever enabling the rule is the point).
        for s in &states {
            let Some(sh) = &s.shadow else { continue };
            let Some(v) = versions
                .iter()
                .find(|v| v.info.name == s.name && v.info.version == sh.version)
            else {
                continue;
            };
            if v.quarantine_reason.is_some() {
                plan.quarantined.push((
                    v.info.rule_ref(),
                    v.quarantine_reason.clone().unwrap_or_default(),
                ));
                continue;
            }
            let compiled = self.compiled_version(&v.info.rule_ref(), &v.sha256).await?;
            let params =
                crate::engine::params::resolve(compiled.info(), &sh.params).map_err(|e| {
                    RuleError::Invalid(format!("{}@{} (shadow): {e}", s.name, sh.version))
                })?;
            plan.shadow.insert(v.info.rule_ref());
            plan.wanted.push(Wanted {
                compiled,
                params,
                scope: self.members(&s.scope, &mut scopes).await?,
            });
        }
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
            let compiled = self.compiled_version(&v.info.rule_ref(), &v.sha256).await?;
            let params = crate::engine::params::resolve(compiled.info(), &s.params)
                .map_err(|e| RuleError::Invalid(format!("{}@{}: {e}", s.name, s.active_version)))?;
            plan.wanted.push(Wanted {
                compiled,
                params,
                scope: self.members(&s.scope, &mut scopes).await?,
            });
        }
        Ok(plan)
    }

    /// A scope's members, resolved once per plan for each distinct scope.
    async fn members(
        &self,
        scope: &RuleScope,
        resolved: &mut Vec<(RuleScope, Option<Arc<ScopeMembers>>)>,
    ) -> Result<Option<Arc<ScopeMembers>>, RuleError> {
        if let Some((_, m)) = resolved.iter().find(|(s, _)| s == scope) {
            return Ok(m.clone());
        }
        let m = self.store.scope_members(scope).await?.map(Arc::new);
        resolved.push((scope.clone(), m.clone()));
        Ok(m)
    }
}
