//! The JSON admin API's handlers: sessions, rules and their lifecycle, the directory, alerts
//! and their lifecycle, operations, accounts, tokens and the audit log. Each handler gets the
//! caller's [`Principal`] from the guard (which already checked the route's role) and
//! narrows what it reads to the patients that principal may see; every change goes to the
//! store with an audit entry naming the principal.

use super::auth::{self, ADMIN, Principal, STAFF};
use super::{AdminState, ApiError};
use crate::model::RuleRef;
use crate::model::dims::{Patient, Subscriber};
use crate::store::accounts::{AuditFilter, Role};
use crate::store::alerts::{AlertAction, AlertFilter};
use crate::store::directory::{DeviceRecord, ListQuery, Visible};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use axum::{Extension, Json};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;

type Api<T> = Result<Json<T>, ApiError>;

/// The routes this module serves, with their access rules.
pub(super) fn routes() -> Vec<(
    Method,
    &'static str,
    super::auth::Access,
    MethodRouter<AdminState>,
)> {
    vec![
        // Rules: staff read, admins change.
        (Method::GET, "/api/rules", STAFF, get(rules)),
        (
            Method::GET,
            "/api/rules/{name}/versions",
            STAFF,
            get(rule_versions),
        ),
        (
            Method::POST,
            "/api/rules",
            ADMIN,
            post(upload_rule).layer(DefaultBodyLimit::max(
                crate::engine::upload::MAX_UPLOAD_BYTES + 1024,
            )),
        ),
        (
            Method::POST,
            "/api/rules/{name}/enable",
            ADMIN,
            post(enable_rule),
        ),
        (
            Method::POST,
            "/api/rules/{name}/disable",
            ADMIN,
            post(disable_rule),
        ),
        (
            Method::POST,
            "/api/rules/{name}/rollback",
            ADMIN,
            post(rollback_rule),
        ),
        (
            Method::PUT,
            "/api/rules/{name}/params",
            ADMIN,
            put(set_params),
        ),
        (
            Method::PUT,
            "/api/rules/{name}/scope",
            ADMIN,
            put(set_scope),
        ),
        (
            Method::POST,
            "/api/rules/{name}/backtest",
            ADMIN,
            post(backtest_rule),
        ),
        (
            Method::POST,
            "/api/rules/{name}/shadow",
            ADMIN,
            post(start_shadow),
        ),
        (
            Method::DELETE,
            "/api/rules/{name}/shadow",
            ADMIN,
            delete(stop_shadow),
        ),
        (
            Method::GET,
            "/api/rules/{name}/versions/{version}/shadow-alerts",
            ADMIN,
            get(shadow_alerts),
        ),
        (
            Method::POST,
            "/api/rules/{name}/versions/{version}/release",
            ADMIN,
            post(release_rule),
        ),
        // Directory.
        (Method::GET, "/api/patients", STAFF, get(patients)),
        (Method::POST, "/api/patients", ADMIN, post(create_patient)),
        (Method::GET, "/api/patients/{id}", STAFF, get(patient)),
        (
            Method::PUT,
            "/api/patients/{id}",
            ADMIN,
            put(update_patient),
        ),
        (
            Method::DELETE,
            "/api/patients/{id}",
            ADMIN,
            delete(delete_patient),
        ),
        (
            Method::GET,
            "/api/patients/{id}/followers",
            STAFF,
            get(followers),
        ),
        (Method::GET, "/api/devices", STAFF, get(devices)),
        (Method::POST, "/api/devices", ADMIN, post(create_device)),
        (Method::GET, "/api/devices/{id}", STAFF, get(device)),
        (Method::PUT, "/api/devices/{id}", ADMIN, put(update_device)),
        (
            Method::DELETE,
            "/api/devices/{id}",
            ADMIN,
            delete(delete_device),
        ),
        (Method::GET, "/api/subscribers", ADMIN, get(subscribers)),
        (
            Method::POST,
            "/api/subscribers",
            ADMIN,
            post(create_subscriber),
        ),
        (Method::GET, "/api/subscribers/{id}", ADMIN, get(subscriber)),
        (
            Method::PUT,
            "/api/subscribers/{id}",
            ADMIN,
            put(update_subscriber),
        ),
        (
            Method::DELETE,
            "/api/subscribers/{id}",
            ADMIN,
            delete(delete_subscriber),
        ),
        (Method::POST, "/api/subscriptions", ADMIN, post(subscribe)),
        (
            Method::DELETE,
            "/api/subscriptions/{subscriber}/{patient}",
            ADMIN,
            delete(unsubscribe),
        ),
        // Alerts.
        (Method::GET, "/api/alerts", STAFF, get(alerts)),
        (Method::GET, "/api/alerts/live", STAFF, get(live_alerts)),
        (Method::GET, "/api/alerts/{id}", STAFF, get(alert)),
        (
            Method::POST,
            "/api/alerts/{id}/acknowledge",
            STAFF,
            post(acknowledge),
        ),
        (
            Method::POST,
            "/api/alerts/{id}/resolve",
            STAFF,
            post(resolve),
        ),
        (Method::POST, "/api/alerts/{id}/note", STAFF, post(note)),
        // Operations.
        (Method::GET, "/api/dead-letters", ADMIN, get(dead_letters)),
        (
            Method::POST,
            "/api/dead-letters/{fingerprint}/replay",
            ADMIN,
            post(replay_dead_letter),
        ),
        (Method::GET, "/api/rule-faults", ADMIN, get(rule_faults)),
        // Accounts, tokens, audit.
        (Method::GET, "/api/users", ADMIN, get(users)),
        (Method::POST, "/api/users", ADMIN, post(create_user)),
        (Method::PUT, "/api/users/{name}", ADMIN, put(update_user)),
        (Method::GET, "/api/tokens", ADMIN, get(tokens)),
        (Method::POST, "/api/tokens", ADMIN, post(create_token)),
        (
            Method::DELETE,
            "/api/tokens/{id}",
            ADMIN,
            delete(revoke_token),
        ),
        (Method::GET, "/api/audit", ADMIN, get(audit_log)),
    ]
}

/// A JSON body, or a 400 saying what is wrong with it.
fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("bad JSON body: {e}")))
}

/// A body that may be empty (then the default).
fn optional_body<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        body(bytes)
    }
}

pub(super) fn principal_sees(p: &Principal, patient: u64) -> Result<(), ApiError> {
    // Not 403: whether a patient exists is itself health data.
    if p.visible.allows(patient) {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("patient {patient}")))
    }
}

// ---- sessions ----

#[derive(Deserialize)]
struct LoginBody {
    username: String,
    password: String,
}

pub(super) async fn login(State(s): State<AdminState>, bytes: axum::body::Bytes) -> Response {
    let b: LoginBody = match body(&bytes) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    match auth::login(s.store.as_ref(), &s.throttle, &b.username, &b.password).await {
        Ok((ok, secret)) => {
            let audit = crate::store::accounts::Actor {
                id: format!("user:{}", ok.username),
                role: ok.role,
            }
            .audit("session.login", format!("user:{}", ok.username));
            if let Err(e) = s.store.append_audit(&audit).await {
                return ApiError::from(e).into_response();
            }
            (
                [(
                    header::SET_COOKIE,
                    auth::session_cookie(&secret, s.secure_cookies),
                )],
                Json(ok),
            )
                .into_response()
        }
        Err(auth::LoginError::Invalid) => {
            ApiError::Unauthenticated("wrong username or password".to_owned()).into_response()
        }
        Err(auth::LoginError::Throttled(wait)) => ApiError::TooMany(wait).into_response(),
        Err(auth::LoginError::Internal(e)) => ApiError::Internal(e).into_response(),
    }
}

pub(super) async fn logout(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
) -> Response {
    if let auth::Via::Session { session_hash, .. } = &p.via
        && let Err(e) = s.store.delete_session(session_hash).await
    {
        return ApiError::from(e).into_response();
    }
    (
        [(header::SET_COOKIE, auth::clear_cookie(s.secure_cookies))],
        StatusCode::NO_CONTENT,
    )
        .into_response()
}

pub(super) async fn me(Extension(p): Extension<Principal>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "actor": p.actor.id,
        "role": p.role(),
        "username": p.user.as_ref().map(|u| u.username.clone()),
        "glucose_unit": p.user.as_ref().and_then(|u| u.glucose_unit).unwrap_or_default(),
        "patients": match &p.visible { Visible::All => None, Visible::Only(ids) => Some(ids.clone()) },
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreferencesBody {
    glucose_unit: crate::store::accounts::GlucoseUnit,
}

/// `PUT /api/me/preferences`: the caller's own display preferences (the glucose unit), kept
/// with their account so every browser they sign in from shows the same. Tokens that act for
/// no account have none.
pub(super) async fn put_preferences(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    bytes: axum::body::Bytes,
) -> Api<serde_json::Value> {
    let b: PreferencesBody = body(&bytes)?;
    let Some(before) = p.user.clone() else {
        return Err(ApiError::BadRequest(
            "preferences belong to an account; this token acts for none".to_owned(),
        ));
    };
    let mut user = before.clone();
    user.glucose_unit = Some(b.glucose_unit);
    user.updated_at_ms = crate::model::now_ms();
    let audit = p
        .actor
        .audit("user.preferences", format!("user:{}", user.username))
        .with_before(serde_json::json!({ "glucose_unit": before.glucose_unit }))
        .with_after(serde_json::json!({ "glucose_unit": user.glucose_unit }));
    s.store.update_user(&user, &audit).await?;
    Ok(Json(serde_json::json!({ "glucose_unit": b.glucose_unit })))
}

// ---- rules ----

/// A rule with its state, versions and live counters.
#[derive(serde::Serialize)]
pub(crate) struct RuleView {
    pub name: String,
    pub state: Option<crate::store::RuleState>,
    pub versions: Vec<crate::store::RuleVersionRecord>,
    pub running: Option<crate::pipeline::RuleStatus>,
}

pub(crate) async fn rules(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
) -> Api<Vec<RuleView>> {
    let mut states = s.store.rule_states().await?;
    // A clinician sees a scope's patients only where they follow them: who else a rule
    // watches is not theirs to know.
    for st in &mut states {
        if let crate::store::RuleScope::Patients { patients } = &mut st.scope {
            patients.retain(|&id| p.visible.allows(id));
        }
    }
    let versions = s.store.rule_versions().await?;
    let stats = s.pipeline.stats();
    let mut names: Vec<String> = versions.iter().map(|v| v.info.name.clone()).collect();
    names.dedup();
    Ok(Json(
        names
            .into_iter()
            .map(|name| RuleView {
                state: states.iter().find(|st| st.name == name).cloned(),
                versions: versions
                    .iter()
                    .filter(|v| v.info.name == name)
                    .cloned()
                    .collect(),
                running: stats.rules.iter().find(|r| r.rule.name == name).cloned(),
                name,
            })
            .collect(),
    ))
}

async fn rule_versions(
    State(s): State<AdminState>,
    Path(name): Path<String>,
) -> Api<Vec<crate::store::RuleVersionRecord>> {
    let v: Vec<_> = s
        .store
        .rule_versions()
        .await?
        .into_iter()
        .filter(|v| v.info.name == name)
        .collect();
    if v.is_empty() {
        return Err(ApiError::NotFound(format!("rule {name}")));
    }
    Ok(Json(v))
}

/// `POST /api/rules`: the body is the `.wasm` itself. Checked (size, component, imports,
/// self-description, dry run) before anything is stored.
async fn upload_rule(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    bytes: axum::body::Bytes,
) -> Response {
    let engine = s.pipeline.rules().engine().clone();
    let wasm = bytes.to_vec();
    let checked = match tokio::task::spawn_blocking(move || {
        let r = crate::engine::upload::check_upload(&engine, &wasm);
        (r, wasm)
    })
    .await
    {
        Ok((Ok(c), wasm)) => (c, wasm),
        Ok((Err(refusal), _)) => {
            let status = if refusal.code() == "too_large" {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::BAD_REQUEST
            };
            return ApiError::Refused {
                status,
                code: refusal.code(),
                message: refusal.to_string(),
            }
            .into_response();
        }
        Err(e) => return ApiError::Internal(format!("upload check panicked: {e}")).into_response(),
    };
    let (checked, wasm) = checked;
    if let Err(e) = s
        .pipeline
        .rules()
        .store_version(&checked.rule, &wasm, &p.actor)
        .await
    {
        return ApiError::from(e).into_response();
    }
    (
        StatusCode::CREATED,
        Json(serde_json::json!({
            "rule": checked.rule.rule_ref(),
            "sha256": checked.rule.sha256(),
            "info": checked.rule.info(),
            "dry_run": checked.dry_run,
        })),
    )
        .into_response()
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct EnableBody {
    version: Option<String>,
    params: Option<BTreeMap<String, crate::model::ParamValue>>,
}

/// Applies a rule change and swaps the running set; a reload failure is reported (the
/// stored state stays, and the running set is unchanged).
pub(super) async fn reload_after(s: &AdminState) -> Result<(), ApiError> {
    s.pipeline.reload_rules().await.map_err(ApiError::from)
}

async fn enable_rule(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> Api<crate::store::RuleState> {
    let b: EnableBody = optional_body(&bytes)?;
    let state = s
        .pipeline
        .rules()
        .enable(&name, b.version.as_deref(), b.params, &p.actor)
        .await?;
    reload_after(&s).await?;
    Ok(Json(state))
}

async fn disable_rule(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> Api<crate::store::RuleState> {
    let state = s.pipeline.rules().disable(&name, &p.actor).await?;
    reload_after(&s).await?;
    Ok(Json(state))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct RollbackBody {
    /// The version to go back to; the one before the active version when absent.
    version: Option<String>,
}

async fn rollback_rule(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> Api<crate::store::RuleState> {
    let b: RollbackBody = optional_body(&bytes)?;
    let state = match b.version {
        Some(v) => s.pipeline.rules().rollback_to(&name, &v, &p.actor).await?,
        None => s.pipeline.rules().rollback(&name, &p.actor).await?,
    };
    reload_after(&s).await?;
    Ok(Json(state))
}

async fn set_params(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> Api<crate::store::RuleState> {
    let params: BTreeMap<String, crate::model::ParamValue> = body(&bytes)?;
    let state = s
        .pipeline
        .rules()
        .set_params(&name, params, &p.actor)
        .await?;
    reload_after(&s).await?;
    Ok(Json(state))
}

/// `PUT /api/rules/{name}/scope`: `{"kind":"all"}`, `{"kind":"profiles","profiles":[…]}`
/// or `{"kind":"patients","patients":[…]}`; the rule and its shadow run under it from the
/// next batch.
async fn set_scope(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> Api<crate::store::RuleState> {
    let scope: crate::store::RuleScope = body(&bytes)?;
    let state = s.pipeline.rules().set_scope(&name, scope, &p.actor).await?;
    reload_after(&s).await?;
    Ok(Json(state))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BacktestBody {
    /// The candidate version.
    version: String,
    /// Candidate parameters (its declared defaults when absent).
    #[serde(default)]
    params: Option<BTreeMap<String, crate::model::ParamValue>>,
    from_ms: i64,
    to_ms: i64,
    /// Only these patients (all when absent).
    #[serde(default)]
    patients: Option<Vec<u64>>,
    /// Added and removed examples per patient.
    #[serde(default)]
    examples: Option<usize>,
}

/// Longest period one backtest may cover.
const MAX_BACKTEST_DAYS: i64 = 92;

/// `POST /api/rules/{name}/backtest`: what enabling a candidate version (with candidate
/// parameters) would change over a stored period, against the active version: alerts added
/// and removed per patient, with counts and examples (`backtest::diff`). Glucose history
/// only (device telemetry is not replayed here).
pub(crate) async fn backtest_rule(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> Api<crate::backtest::diff::BacktestDiff> {
    let b: BacktestBody = body(&bytes)?;
    if b.to_ms <= b.from_ms {
        return Err(ApiError::BadRequest(
            "to_ms must be after from_ms".to_owned(),
        ));
    }
    if b.to_ms - b.from_ms > MAX_BACKTEST_DAYS * 86_400_000 {
        return Err(ApiError::BadRequest(format!(
            "a backtest covers at most {MAX_BACKTEST_DAYS} days"
        )));
    }
    let manager = s.pipeline.rules();
    let candidate = manager
        .compiled_rule(&RuleRef {
            name: name.clone(),
            version: b.version.clone(),
        })
        .await?;
    let candidate_params = b.params.unwrap_or_default();
    let state = s
        .store
        .rule_states()
        .await?
        .into_iter()
        .find(|st| st.name == name && st.enabled);
    let base = match &state {
        Some(st) => Some((
            manager
                .compiled_rule(&RuleRef {
                    name: name.clone(),
                    version: st.active_version.clone(),
                })
                .await?,
            st.params.clone(),
        )),
        None => None,
    };
    let lookback = |rule: &std::sync::Arc<crate::engine::CompiledRule>, params| {
        crate::engine::ActiveRule::new(rule.clone(), params)
            .map(|r| crate::engine::RuleSet::new(vec![r]).lookback_ms())
            .map_err(ApiError::BadRequest)
    };
    let mut lookback_ms = lookback(&candidate, &candidate_params)?;
    if let Some((rule, params)) = &base {
        lookback_ms = lookback_ms.max(lookback(rule, params)?);
    }
    let readings = s
        .store
        .glucose_between(b.from_ms - lookback_ms, b.to_ms, b.patients.as_deref())
        .await?;
    let period = crate::backtest::Period {
        from_ms: b.from_ms,
        to_ms: b.to_ms,
    };
    let examples = b.examples.unwrap_or(5).min(100);
    let audit = p
        .actor
        .audit("rule.backtest", format!("rule:{name}@{}", b.version))
        .with_after(serde_json::json!({
            "from_ms": b.from_ms, "to_ms": b.to_ms, "readings": readings.len(),
            "params": &candidate_params,
        }));
    let result = tokio::task::spawn_blocking(move || {
        crate::backtest::diff::diff(
            base.as_ref().map(|(r, params)| (r.clone(), params)),
            (candidate, &candidate_params),
            &readings,
            period,
            examples,
        )
    })
    .await
    .map_err(|e| ApiError::Internal(format!("backtest panicked: {e}")))?
    .map_err(|e| match e {
        crate::backtest::BacktestError::Io(io) => ApiError::Internal(io.to_string()),
        other => ApiError::BadRequest(other.to_string()),
    })?;
    s.store.append_audit(&audit).await?;
    Ok(Json(result))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShadowBody {
    version: String,
    #[serde(default)]
    params: Option<BTreeMap<String, crate::model::ParamValue>>,
}

async fn start_shadow(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> Api<crate::store::RuleState> {
    let b: ShadowBody = body(&bytes)?;
    let state = s
        .pipeline
        .rules()
        .shadow(&name, &b.version, b.params, &p.actor)
        .await?;
    reload_after(&s).await?;
    Ok(Json(state))
}

async fn stop_shadow(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> Api<crate::store::RuleState> {
    let state = s.pipeline.rules().stop_shadow(&name, &p.actor).await?;
    reload_after(&s).await?;
    Ok(Json(state))
}

/// What a version in shadow would have raised (admins only: it spans every patient).
async fn shadow_alerts(
    State(s): State<AdminState>,
    Path((name, version)): Path<(String, String)>,
    Query(q): Query<LimitQuery>,
) -> Api<Vec<crate::model::Alert>> {
    Ok(Json(
        s.store
            .shadow_alerts(&RuleRef { name, version }, q.limit.unwrap_or(100).min(1000))
            .await?,
    ))
}

async fn release_rule(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Path((name, version)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    s.pipeline
        .release_rule(&RuleRef { name, version }, &p.actor)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- directory ----

pub(crate) async fn patients(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Api<crate::store::directory::Page<crate::store::directory::PatientRecord>> {
    Ok(Json(s.store.patients(&q, &p.visible).await?))
}

pub(crate) async fn patient(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<u64>,
) -> Api<crate::store::directory::PatientRecord> {
    principal_sees(&p, id)?;
    s.store
        .patient(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("patient {id}")))
}

fn check_patient(p: &Patient) -> Result<(), ApiError> {
    if p.patient_id == 0 || p.patient_id > crate::model::parse::MAX_ID {
        return Err(ApiError::BadRequest(format!(
            "patient_id must be in 1..={}",
            crate::model::parse::MAX_ID
        )));
    }
    if p.first_name.trim().is_empty() || p.last_name.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "first_name and last_name are required".to_owned(),
        ));
    }
    Ok(())
}

async fn create_patient(
    State(s): State<AdminState>,
    Extension(pr): Extension<Principal>,
    bytes: axum::body::Bytes,
) -> Result<(StatusCode, Json<Patient>), ApiError> {
    let p: Patient = body(&bytes)?;
    check_patient(&p)?;
    // Names stay out of the audit log's `after`: it records what changed, by id.
    let audit = pr
        .actor
        .audit("patient.create", format!("patient:{}", p.patient_id));
    s.store.put_patient(&p, true, &audit).await?;
    // Scoped rules follow the directory: re-resolve them before answering.
    reload_after(&s).await?;
    Ok((StatusCode::CREATED, Json(p)))
}

async fn update_patient(
    State(s): State<AdminState>,
    Extension(pr): Extension<Principal>,
    Path(id): Path<u64>,
    bytes: axum::body::Bytes,
) -> Api<Patient> {
    let mut p: Patient = body(&bytes)?;
    if p.patient_id != id && p.patient_id != 0 {
        return Err(ApiError::BadRequest(format!(
            "the body's patient_id {} is not the path's {id}",
            p.patient_id
        )));
    }
    p.patient_id = id;
    check_patient(&p)?;
    let before = s.store.patient(id).await?;
    let changed: Vec<String> = before
        .as_ref()
        .map(|b| changed_fields(&b.patient, &p))
        .unwrap_or_default();
    let audit = pr
        .actor
        .audit("patient.update", format!("patient:{id}"))
        .with_after(serde_json::json!({ "changed": changed }));
    s.store.put_patient(&p, false, &audit).await?;
    // Scoped rules follow the directory: re-resolve them before answering.
    reload_after(&s).await?;
    Ok(Json(p))
}

/// The names of the fields that differ between two serialisable values (what an audit entry
/// of a change to personal data records, without the values).
fn changed_fields<T: serde::Serialize>(a: &T, b: &T) -> Vec<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(a), serde_json::to_value(b))
    else {
        return Vec::new();
    };
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .collect()
}

async fn delete_patient(
    State(s): State<AdminState>,
    Extension(pr): Extension<Principal>,
    Path(id): Path<u64>,
) -> Result<StatusCode, ApiError> {
    let audit = pr.actor.audit("patient.delete", format!("patient:{id}"));
    s.store.delete_patient(id, &audit).await?;
    // Scoped rules follow the directory: re-resolve them before answering.
    reload_after(&s).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn followers(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<u64>,
) -> Api<Vec<u64>> {
    principal_sees(&p, id)?;
    Ok(Json(s.store.followers(id).await?))
}

pub(crate) async fn devices(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Api<crate::store::directory::Page<DeviceRecord>> {
    Ok(Json(s.store.devices(&q, &p.visible).await?))
}

async fn device(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<u64>,
) -> Api<DeviceRecord> {
    let d = s
        .store
        .device(id)
        .await?
        .filter(|d| p.visible.allows(d.patient_id))
        .ok_or_else(|| ApiError::NotFound(format!("device {id}")))?;
    Ok(Json(d))
}

fn check_device(d: &DeviceRecord) -> Result<(), ApiError> {
    if d.device_id == 0 || d.device_id > crate::model::parse::MAX_ID {
        return Err(ApiError::BadRequest("device_id out of range".to_owned()));
    }
    if let Some(t) = &d.device_type
        && !["cgm", "meter"].contains(&t.as_str())
    {
        return Err(ApiError::BadRequest(format!(
            "device_type must be cgm or meter, not {t:?}"
        )));
    }
    Ok(())
}

async fn create_device(
    State(s): State<AdminState>,
    Extension(pr): Extension<Principal>,
    bytes: axum::body::Bytes,
) -> Result<(StatusCode, Json<DeviceRecord>), ApiError> {
    let d: DeviceRecord = body(&bytes)?;
    check_device(&d)?;
    let audit = pr
        .actor
        .audit("device.create", format!("device:{}", d.device_id))
        .with_after(&d);
    s.store.put_device(&d, true, &audit).await?;
    // Scoped rules follow the directory: re-resolve them before answering.
    reload_after(&s).await?;
    Ok((StatusCode::CREATED, Json(d)))
}

async fn update_device(
    State(s): State<AdminState>,
    Extension(pr): Extension<Principal>,
    Path(id): Path<u64>,
    bytes: axum::body::Bytes,
) -> Api<DeviceRecord> {
    let mut d: DeviceRecord = body(&bytes)?;
    d.device_id = id;
    check_device(&d)?;
    let before = s.store.device(id).await?;
    let audit = pr
        .actor
        .audit("device.update", format!("device:{id}"))
        .with_before(before)
        .with_after(&d);
    s.store.put_device(&d, false, &audit).await?;
    // Scoped rules follow the directory: re-resolve them before answering.
    reload_after(&s).await?;
    Ok(Json(d))
}

async fn delete_device(
    State(s): State<AdminState>,
    Extension(pr): Extension<Principal>,
    Path(id): Path<u64>,
) -> Result<StatusCode, ApiError> {
    let audit = pr.actor.audit("device.delete", format!("device:{id}"));
    s.store.delete_device(id, &audit).await?;
    // Scoped rules follow the directory: re-resolve them before answering.
    reload_after(&s).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn subscribers(
    State(s): State<AdminState>,
    Query(q): Query<ListQuery>,
) -> Api<crate::store::directory::Page<crate::store::directory::SubscriberRecord>> {
    Ok(Json(s.store.subscribers(&q).await?))
}

async fn subscriber(
    State(s): State<AdminState>,
    Path(id): Path<u64>,
) -> Api<crate::store::directory::SubscriberRecord> {
    s.store
        .subscriber(id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("subscriber {id}")))
}

fn check_subscriber(sub: &Subscriber) -> Result<(), ApiError> {
    if sub.subscriber_id == 0 || sub.subscriber_id > crate::model::parse::MAX_ID {
        return Err(ApiError::BadRequest(
            "subscriber_id out of range".to_owned(),
        ));
    }
    if !["patient", "doctor", "caregiver", "app"].contains(&sub.role.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "role must be patient, doctor, caregiver or app, not {:?}",
            sub.role
        )));
    }
    if sub.name.trim().is_empty() {
        return Err(ApiError::BadRequest("name is required".to_owned()));
    }
    Ok(())
}

async fn create_subscriber(
    State(s): State<AdminState>,
    Extension(pr): Extension<Principal>,
    bytes: axum::body::Bytes,
) -> Result<(StatusCode, Json<Subscriber>), ApiError> {
    let sub: Subscriber = body(&bytes)?;
    check_subscriber(&sub)?;
    let audit = pr.actor.audit(
        "subscriber.create",
        format!("subscriber:{}", sub.subscriber_id),
    );
    s.store.put_subscriber(&sub, true, &audit).await?;
    Ok((StatusCode::CREATED, Json(sub)))
}

async fn update_subscriber(
    State(s): State<AdminState>,
    Extension(pr): Extension<Principal>,
    Path(id): Path<u64>,
    bytes: axum::body::Bytes,
) -> Api<Subscriber> {
    let mut sub: Subscriber = body(&bytes)?;
    sub.subscriber_id = id;
    check_subscriber(&sub)?;
    let before = s.store.subscriber(id).await?;
    let changed = before
        .as_ref()
        .map(|b| changed_fields(&b.subscriber, &sub))
        .unwrap_or_default();
    let audit = pr
        .actor
        .audit("subscriber.update", format!("subscriber:{id}"))
        .with_after(serde_json::json!({ "changed": changed }));
    s.store.put_subscriber(&sub, false, &audit).await?;
    Ok(Json(sub))
}

async fn delete_subscriber(
    State(s): State<AdminState>,
    Extension(pr): Extension<Principal>,
    Path(id): Path<u64>,
) -> Result<StatusCode, ApiError> {
    let audit = pr
        .actor
        .audit("subscriber.delete", format!("subscriber:{id}"));
    s.store.delete_subscriber(id, &audit).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscriptionBody {
    subscriber_id: u64,
    patient_id: u64,
}

async fn subscribe(
    State(s): State<AdminState>,
    Extension(pr): Extension<Principal>,
    bytes: axum::body::Bytes,
) -> Result<StatusCode, ApiError> {
    let b: SubscriptionBody = body(&bytes)?;
    let audit = pr.actor.audit(
        "subscription.create",
        format!("subscription:{}:{}", b.subscriber_id, b.patient_id),
    );
    s.store
        .subscribe(b.subscriber_id, b.patient_id, &audit)
        .await?;
    Ok(StatusCode::CREATED)
}

async fn unsubscribe(
    State(s): State<AdminState>,
    Extension(pr): Extension<Principal>,
    Path((subscriber, patient)): Path<(u64, u64)>,
) -> Result<StatusCode, ApiError> {
    let audit = pr.actor.audit(
        "subscription.delete",
        format!("subscription:{subscriber}:{patient}"),
    );
    s.store.unsubscribe(subscriber, patient, &audit).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- alerts ----

pub(crate) async fn alerts(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Query(mut f): Query<AlertFilter>,
) -> Api<Vec<crate::store::alerts::AlertView>> {
    f.patients = match &p.visible {
        Visible::All => None,
        Visible::Only(ids) => Some(ids.clone()),
    };
    Ok(Json(s.store.list_alerts(&f).await?))
}

/// The alert, if this principal may see its patient (alerts on telemetry without a patient
/// are for admins).
pub(crate) async fn visible_alert(
    s: &AdminState,
    p: &Principal,
    id: &str,
) -> Result<crate::store::alerts::AlertView, ApiError> {
    s.store
        .alert(id)
        .await?
        .filter(|a| match (&p.visible, a.alert.patient_id) {
            (Visible::All, _) => true,
            (v, Some(patient)) => v.allows(patient),
            (_, None) => false,
        })
        .ok_or_else(|| ApiError::NotFound(format!("alert {id}")))
}

pub(crate) async fn alert(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Api<serde_json::Value> {
    let view = visible_alert(&s, &p, &id).await?;
    let events = s.store.alert_events(&id).await?;
    Ok(Json(serde_json::json!({ "alert": view, "events": events })))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct NoteBody {
    note: Option<String>,
}

async fn act(
    s: AdminState,
    p: Principal,
    id: String,
    action: AlertAction,
    bytes: &[u8],
) -> Api<crate::store::alerts::AlertView> {
    let b: NoteBody = optional_body(bytes)?;
    if action == AlertAction::Note && b.note.as_deref().is_none_or(|n| n.trim().is_empty()) {
        return Err(ApiError::BadRequest("a note needs text".to_owned()));
    }
    if b.note.as_ref().is_some_and(|n| n.len() > 4096) {
        return Err(ApiError::BadRequest(
            "a note has at most 4096 bytes".to_owned(),
        ));
    }
    visible_alert(&s, &p, &id).await?;
    let audit = p
        .actor
        .audit(&format!("alert.{}", action.as_str()), format!("alert:{id}"))
        .with_reason(b.note.clone());
    Ok(Json(
        s.store
            .act_on_alert(&id, action, b.note.as_deref(), &audit)
            .await?,
    ))
}

async fn acknowledge(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Api<crate::store::alerts::AlertView> {
    act(s, p, id, AlertAction::Acknowledge, &bytes).await
}

async fn resolve(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Api<crate::store::alerts::AlertView> {
    act(s, p, id, AlertAction::Resolve, &bytes).await
}

async fn note(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
    bytes: axum::body::Bytes,
) -> Api<crate::store::alerts::AlertView> {
    act(s, p, id, AlertAction::Note, &bytes).await
}

/// `GET /api/alerts/live`: alerts as server-sent events (`event: alert`, the alert as JSON)
/// as they are stored and notified, only those of patients the caller may see; `event:
/// lagged` says how many a slow reader missed (they are in `GET /api/alerts`).
async fn live_alerts(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
) -> Result<Response, ApiError> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let live = s
        .live
        .as_ref()
        .ok_or_else(|| ApiError::Unavailable("this host has no live feed".to_owned()))?;
    let rx = live.subscribe();
    let visible = p.visible.clone();
    let stream = futures_util::stream::unfold((rx, visible), |(mut rx, visible)| async move {
        loop {
            match rx.recv().await {
                Ok(a) => {
                    let allowed = match (&visible, a.patient_id) {
                        (Visible::All, _) => true,
                        (v, Some(patient)) => v.allows(patient),
                        (_, None) => false,
                    };
                    if !allowed {
                        continue;
                    }
                    let event = Event::default()
                        .event("alert")
                        .id(a.id.clone())
                        .json_data(&a)
                        .unwrap_or_else(|_| Event::default().event("error"));
                    return Some((Ok::<_, std::convert::Infallible>(event), (rx, visible)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    let event = Event::default().event("lagged").data(n.to_string());
                    return Some((Ok(event), (rx, visible)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

// ---- operations ----

/// `POST /api/dead-letters/{fingerprint}/replay`: after a fix (a rule released, dimension rows
/// added, a producer's bug understood), puts a dead letter's payload through the pipeline
/// again. A payload that still does not parse stays, with the reason; one that parses goes
/// to the pipeline, which stores it (or dead-letters it again, with the new reason, under
/// origin `replay`), and the original is removed once that is durable.
async fn replay_dead_letter(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Path(fingerprint): Path<String>,
) -> Api<serde_json::Value> {
    let letter = s
        .store
        .dead_letter(&fingerprint)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("dead letter {fingerprint}")))?;
    if let Err(e) = crate::model::parse::parse_reading(letter.payload.as_bytes()) {
        return Err(ApiError::Conflict(format!(
            "the payload still does not parse: {}",
            e.0
        )));
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    s.pipeline
        .embedded_source("replay")
        .send_with_ack(
            letter.payload.clone().into_bytes(),
            crate::sources::Ack::new(move || {
                let _ = tx.send(());
            }),
        )
        .await
        .map_err(|_| ApiError::Unavailable("the pipeline takes no input".to_owned()))?;
    tokio::time::timeout(std::time::Duration::from_secs(30), rx)
        .await
        .map_err(|_| {
            ApiError::Unavailable("queued, not yet durable; replaying again is safe".to_owned())
        })?
        .map_err(|_| ApiError::Unavailable("the pipeline stopped".to_owned()))?;
    let audit = p
        .actor
        .audit("dead_letter.replay", format!("dead_letter:{fingerprint}"))
        .with_before(serde_json::json!({ "origin": letter.origin, "reason": letter.reason }));
    s.store.delete_dead_letter(&fingerprint, &audit).await?;
    Ok(Json(serde_json::json!({ "replayed": fingerprint })))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct LimitQuery {
    pub limit: Option<u32>,
}

pub(crate) async fn dead_letters(
    State(s): State<AdminState>,
    Query(q): Query<LimitQuery>,
) -> Api<Vec<serde_json::Value>> {
    let letters = s
        .store
        .dead_letters(q.limit.unwrap_or(100).min(1000))
        .await?;
    Ok(Json(
        letters
            .into_iter()
            .map(|d| {
                serde_json::json!({
                    "fingerprint": d.fingerprint(),
                    "origin": d.origin,
                    "reason": d.reason,
                    "payload": d.payload,
                    "received_at_ms": d.received_at_ms,
                })
            })
            .collect(),
    ))
}

pub(crate) async fn rule_faults(
    State(s): State<AdminState>,
    Query(q): Query<LimitQuery>,
) -> Api<Vec<crate::model::RuleFault>> {
    Ok(Json(
        s.store
            .rule_faults(q.limit.unwrap_or(100).min(1000))
            .await?,
    ))
}

// ---- accounts, tokens, audit ----

async fn users(State(s): State<AdminState>) -> Api<Vec<crate::store::accounts::User>> {
    Ok(Json(s.store.users().await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUserBody {
    username: String,
    password: String,
    role: Role,
    #[serde(default)]
    subscriber_id: Option<u64>,
}

async fn create_user(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    bytes: axum::body::Bytes,
) -> Result<(StatusCode, Json<crate::store::accounts::User>), ApiError> {
    let b: NewUserBody = body(&bytes)?;
    if let Some(sub) = b.subscriber_id
        && s.store.subscriber(sub).await?.is_none()
    {
        return Err(ApiError::NotFound(format!("subscriber {sub}")));
    }
    let user = auth::new_user(&b.username, &b.password, b.role, b.subscriber_id)
        .map_err(ApiError::BadRequest)?;
    let audit = p
        .actor
        .audit("user.create", format!("user:{}", user.username))
        .with_after(&user);
    s.store.create_user(&user, &audit).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct UpdateUserBody {
    role: Option<Role>,
    password: Option<String>,
    disabled: Option<bool>,
    /// `Some(None)` is not expressible in JSON without a wrapper: 0 clears it.
    subscriber_id: Option<u64>,
}

async fn update_user(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    bytes: axum::body::Bytes,
) -> Api<crate::store::accounts::User> {
    let b: UpdateUserBody = body(&bytes)?;
    let name = auth::normalize_username(&name).map_err(ApiError::BadRequest)?;
    let before = s
        .store
        .user_by_name(&name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("user {name}")))?;
    let mut user = before.clone();
    if let Some(role) = b.role {
        if role == Role::Device {
            return Err(ApiError::BadRequest(
                "devices use API tokens, not accounts".to_owned(),
            ));
        }
        user.role = role;
    }
    if let Some(d) = b.disabled {
        user.disabled = d;
    }
    if let Some(sub) = b.subscriber_id {
        user.subscriber_id = (sub != 0).then_some(sub);
    }
    if let Some(pw) = &b.password {
        auth::check_password_policy(pw).map_err(ApiError::BadRequest)?;
        user.password_hash = auth::hash_password(pw).map_err(ApiError::Internal)?;
    }
    user.updated_at_ms = crate::model::now_ms();
    let audit = p
        .actor
        .audit("user.update", format!("user:{name}"))
        .with_before(&before)
        .with_after(serde_json::json!({
            "role": user.role, "disabled": user.disabled, "subscriber_id": user.subscriber_id,
            "password_changed": b.password.is_some(),
        }));
    s.store.update_user(&user, &audit).await?;
    // A disabled account, a changed password or a changed role ends its sessions.
    if b.password.is_some() || user.disabled || user.role != before.role {
        s.store.delete_sessions_of(&user.user_id).await?;
    }
    Ok(Json(user))
}

async fn tokens(State(s): State<AdminState>) -> Api<Vec<crate::store::accounts::ApiToken>> {
    Ok(Json(s.store.tokens().await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTokenBody {
    name: String,
    role: Role,
    /// The user the token acts for (a clinician's token sees that clinician's patients).
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    expires_in_days: Option<u32>,
}

async fn create_token(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    bytes: axum::body::Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let b: NewTokenBody = body(&bytes)?;
    if b.name.trim().is_empty() || b.name.len() > 200 {
        return Err(ApiError::BadRequest(
            "a token needs a name of 1 to 200 bytes".to_owned(),
        ));
    }
    let user = match &b.username {
        Some(n) => Some(
            s.store
                .user_by_name(&auth::normalize_username(n).map_err(ApiError::BadRequest)?)
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("user {n}")))?,
        ),
        None => None,
    };
    if b.role == Role::Clinician && user.is_none() {
        return Err(ApiError::BadRequest(
            "a clinician token acts for a clinician: name the username".to_owned(),
        ));
    }
    let expires = b
        .expires_in_days
        .map(|d| crate::model::now_ms() + i64::from(d) * 86_400_000);
    let (record, secret) = auth::new_token(
        &b.name,
        b.role,
        user.map(|u| u.user_id),
        &p.actor.id,
        expires,
    );
    let audit = p
        .actor
        .audit("token.create", format!("token:{}", record.token_id))
        .with_after(&record);
    s.store.create_token(&record, &audit).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "token": secret, "record": record,
            "note": "shown once: store it now; only its hash is kept" })),
    ))
}

async fn revoke_token(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let audit = p.actor.audit("token.revoke", format!("token:{id}"));
    s.store.revoke_token(&id, &audit).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn audit_log(
    State(s): State<AdminState>,
    Query(f): Query<AuditFilter>,
) -> Api<Vec<crate::store::accounts::AuditRecord>> {
    Ok(Json(s.store.audit_log(&f).await?))
}
