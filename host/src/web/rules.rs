//! Rules: the list with live counters, upload, and one rule's page (versions with rollback,
//! the parameter form from the declared schema, scope, shadow, quarantine release, and the
//! backtest of a candidate against the active version).

use super::{Layout, Page, Route, WebError, iso, render};
use crate::admin::api::{self, RuleView};
use crate::admin::auth::{Access, Principal};
use crate::admin::{AdminState, ApiError};
use crate::model::{ParamSpec, ParamType, ParamValue};
use crate::store::{RuleScope, RuleState};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::routing::{get, post};
use axum::{Extension, Json};
use std::collections::BTreeMap;

pub(super) fn routes(staff: Access, admin: Access) -> Vec<Route> {
    vec![
        (Method::GET, "/web/rules", staff, get(list)),
        (Method::GET, "/web/rules/{name}", staff, get(detail)),
        (
            Method::POST,
            "/web/rules/{name}/backtest",
            admin,
            post(backtest),
        ),
    ]
}

/// One row of the rules list.
struct Row {
    name: String,
    active: String,
    status: &'static str,
    scope: String,
    readings: u64,
    alerts: u64,
    faults: u64,
    /// Mean evaluation time per reading, in microseconds.
    eval_us: String,
    versions: usize,
    shadow: String,
}

#[derive(Template)]
#[template(path = "rules.html")]
struct ListPage {
    layout: Layout,
    rows: Vec<Row>,
}

fn status_of(v: &RuleView) -> &'static str {
    let quarantined = v.running.as_ref().is_some_and(|r| r.quarantined.is_some())
        || v.state.as_ref().is_some_and(|s| {
            v.versions
                .iter()
                .any(|ver| ver.info.version == s.active_version && ver.quarantine_reason.is_some())
        });
    match &v.state {
        _ if quarantined => "quarantined",
        Some(s) if s.enabled => "enabled",
        Some(_) => "disabled",
        None => "uploaded",
    }
}

/// A scope in words, without patient names.
pub(super) fn describe_scope(scope: &RuleScope) -> String {
    match scope {
        RuleScope::All {} => "all patients".to_owned(),
        RuleScope::Profiles { profiles } => format!("profiles: {}", profiles.join(", ")),
        RuleScope::Patients { patients } => match patients.len() {
            1 => "1 listed patient".to_owned(),
            n => format!("{n} listed patients"),
        },
    }
}

async fn list(State(s): State<AdminState>, Extension(p): Extension<Principal>) -> Page {
    let Json(views) = api::rules(State(s), Extension(p.clone())).await?;
    let rows = views
        .iter()
        .map(|v| {
            let m = v.running.as_ref().map(|r| &r.metrics);
            Row {
                name: v.name.clone(),
                active: v
                    .state
                    .as_ref()
                    .map(|s| s.active_version.clone())
                    .unwrap_or_default(),
                status: status_of(v),
                scope: v
                    .state
                    .as_ref()
                    .map(|s| describe_scope(&s.scope))
                    .unwrap_or_default(),
                readings: m.map_or(0, |m| m.readings),
                alerts: m.map_or(0, |m| m.alerts),
                faults: m.map_or(0, |m| m.total_errors()),
                eval_us: m
                    .filter(|m| m.readings > 0)
                    .map(|m| format!("{:.1}", m.eval_nanos as f64 / m.readings as f64 / 1000.0))
                    .unwrap_or_default(),
                versions: v.versions.len(),
                shadow: v
                    .state
                    .as_ref()
                    .and_then(|s| s.shadow.as_ref())
                    .map(|sh| sh.version.clone())
                    .unwrap_or_default(),
            }
        })
        .collect();
    Ok(render(ListPage {
        layout: Layout::new(&p, "Rules", "rules"),
        rows,
    }))
}

/// A parameter's form field: its schema's bounds and type, and the value in force.
pub(super) struct Field {
    name: String,
    description: String,
    input: &'static str,
    step: &'static str,
    min: String,
    max: String,
    value: String,
    checked: bool,
    default: String,
}

fn show(v: ParamValue) -> String {
    match v {
        ParamValue::Boolean(b) => b.to_string(),
        ParamValue::Integer(i) => i.to_string(),
        ParamValue::Float(f) => f.to_string(),
    }
}

/// The form fields of a parameter schema, filled with `values` where set.
pub(super) fn fields(specs: &[ParamSpec], values: &BTreeMap<String, ParamValue>) -> Vec<Field> {
    specs
        .iter()
        .map(|spec| {
            let value = values.get(&spec.name).copied().unwrap_or(spec.default);
            Field {
                name: spec.name.clone(),
                description: spec.description.clone(),
                input: match spec.ty {
                    ParamType::Boolean => "checkbox",
                    _ => "number",
                },
                step: match spec.ty {
                    ParamType::Integer => "1",
                    _ => "any",
                },
                min: spec.min.map(|m| m.to_string()).unwrap_or_default(),
                max: spec.max.map(|m| m.to_string()).unwrap_or_default(),
                checked: matches!(value, ParamValue::Boolean(true)),
                value: show(value),
                default: show(spec.default),
            }
        })
        .collect()
}

struct VersionRow {
    version: String,
    sha256: String,
    uploaded: String,
    uploaded_by: String,
    quarantine: String,
    active: bool,
    shadow: bool,
    description: String,
}

#[derive(Template)]
#[template(path = "rule.html")]
struct DetailPage {
    layout: Layout,
    name: String,
    state: Option<RuleState>,
    status: &'static str,
    scope: String,
    scope_json: String,
    versions: Vec<VersionRow>,
    /// The active version's parameters.
    params: Vec<Field>,
    /// The newest version's parameters, for the backtest's candidate.
    candidate: String,
    candidate_params: Vec<Field>,
    readings: u64,
    alerts: u64,
    faults: Vec<(String, u64)>,
}

async fn detail(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> Page {
    let Json(views) = api::rules(State(s), Extension(p.clone())).await?;
    let view = views
        .into_iter()
        .find(|v| v.name == name)
        .ok_or_else(|| WebError(ApiError::NotFound(format!("rule {name}"))))?;
    let status = status_of(&view);
    let state = view.state.clone();
    let active = state.as_ref().map(|s| s.active_version.as_str());
    let shadow = state
        .as_ref()
        .and_then(|s| s.shadow.as_ref())
        .map(|s| s.version.as_str());
    let versions = view
        .versions
        .iter()
        .rev()
        .map(|v| VersionRow {
            version: v.info.version.clone(),
            sha256: v.sha256.chars().take(12).collect(),
            uploaded: iso(v.uploaded_at_ms),
            uploaded_by: v.uploaded_by.clone().unwrap_or_default(),
            quarantine: v.quarantine_reason.clone().unwrap_or_default(),
            active: Some(v.info.version.as_str()) == active,
            shadow: Some(v.info.version.as_str()) == shadow,
            description: v.info.description.clone(),
        })
        .collect();
    let active_info = view
        .versions
        .iter()
        .find(|v| Some(v.info.version.as_str()) == active)
        .map(|v| &v.info);
    let params = match (active_info, &state) {
        (Some(info), Some(st)) => fields(&info.params, &st.params),
        _ => Vec::new(),
    };
    // The candidate offered first: the newest version that is not the active one.
    let newest = view
        .versions
        .iter()
        .rev()
        .find(|v| Some(v.info.version.as_str()) != active)
        .or(view.versions.last());
    let (candidate, candidate_params) = match newest {
        Some(v) => (
            v.info.version.clone(),
            fields(&v.info.params, &BTreeMap::new()),
        ),
        None => (String::new(), Vec::new()),
    };
    let metrics = view
        .running
        .as_ref()
        .map(|r| r.metrics.clone())
        .unwrap_or_default();
    Ok(render(DetailPage {
        layout: Layout::new(&p, format!("Rule {name}"), "rules"),
        scope: state
            .as_ref()
            .map(|s| describe_scope(&s.scope))
            .unwrap_or_else(|| "all patients".to_owned()),
        scope_json: state
            .as_ref()
            .map(|s| serde_json::to_string(&s.scope).unwrap_or_default())
            .unwrap_or_else(|| r#"{"kind":"all"}"#.to_owned()),
        name,
        state,
        status,
        versions,
        params,
        candidate,
        candidate_params,
        readings: metrics.readings,
        alerts: metrics.alerts,
        faults: metrics.errors.into_iter().collect(),
    }))
}

// ---- backtest ----

#[derive(Template)]
#[template(path = "_backtest.html")]
struct BacktestPartial {
    diff: crate::backtest::diff::BacktestDiff,
    /// The patient whose readings are charted with both versions' alerts (the one with the
    /// most changes), and the chart's source and markers.
    chart: Option<Chart>,
}

struct Chart {
    patient_id: u64,
    src: String,
    markers: String,
}

/// `POST /web/rules/{name}/backtest` (form fields `version`, `days`, `param.<name>`): runs the
/// JSON API's backtest and answers the diff as a fragment for the rule page.
async fn backtest(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    axum::Form(form): axum::Form<Vec<(String, String)>>,
) -> Page {
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.trim());
    let version = get("version")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| WebError(ApiError::BadRequest("choose a candidate version".into())))?
        .to_owned();
    let days: i64 = get("days")
        .unwrap_or("7")
        .parse()
        .map_err(|_| WebError(ApiError::BadRequest("days must be a whole number".into())))?;
    let mut params = serde_json::Map::new();
    for (k, v) in &form {
        if let Some(param) = k.strip_prefix("param.") {
            let value: serde_json::Value = match v.trim() {
                "on" | "true" => serde_json::Value::Bool(true),
                "false" => serde_json::Value::Bool(false),
                n => serde_json::from_str(n).map_err(|_| {
                    WebError(ApiError::BadRequest(format!(
                        "{param}: {n:?} is not a number"
                    )))
                })?,
            };
            params.insert(param.to_owned(), value);
        }
    }
    let to_ms = crate::model::now_ms();
    let from_ms = to_ms - days.clamp(1, 92) * 86_400_000;
    let body = serde_json::json!({
        "version": version, "params": params, "from_ms": from_ms, "to_ms": to_ms, "examples": 10,
    });
    let Json(diff) = api::backtest_rule(
        State(s),
        Extension(p),
        Path(name.clone()),
        axum::body::Bytes::from(body.to_string()),
    )
    .await?;
    let chart = diff
        .patients
        .iter()
        .filter(|d| d.added + d.removed > 0)
        .max_by_key(|d| d.added + d.removed)
        .and_then(|d| {
            let patient_id = d.patient_id?;
            let markers: Vec<serde_json::Value> =
                d.added_examples
                    .iter()
                    .map(|e| serde_json::json!({"t": e.at_ms, "kind": "added", "label": e.code}))
                    .chain(d.removed_examples.iter().map(
                        |e| serde_json::json!({"t": e.at_ms, "kind": "removed", "label": e.code}),
                    ))
                    .collect();
            Some(Chart {
                patient_id,
                src: format!(
                    "/api/dashboard/patients/{patient_id}/series?from_ms={from_ms}&to_ms={to_ms}"
                ),
                markers: serde_json::Value::Array(markers).to_string(),
            })
        });
    Ok(render(BacktestPartial { diff, chart }))
}
