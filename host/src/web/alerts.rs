//! Alerts: the live feed (server-sent events from `/api/alerts/live`) above the stored list
//! with filters, and one alert's page with its history and the acknowledge / resolve / note
//! forms.

use super::{Layout, Page, Route, iso, render};
use crate::admin::AdminState;
use crate::admin::api;
use crate::admin::auth::{Access, Principal};
use crate::store::alerts::{AlertEvent, AlertFilter, AlertView};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::routing::get;
use axum::{Extension, Json};

pub(super) fn routes(staff: Access) -> Vec<Route> {
    vec![
        (Method::GET, "/web/alerts", staff, get(list)),
        (Method::GET, "/web/alerts/{id}", staff, get(detail)),
    ]
}

/// An alert as a row: no patient name, the value as a number the page converts to the
/// viewer's unit.
pub(super) struct Row {
    id: String,
    patient: String,
    rule: String,
    code: String,
    severity: &'static str,
    status: &'static str,
    at: String,
    value: String,
}

impl From<&AlertView> for Row {
    fn from(v: &AlertView) -> Self {
        let a = &v.alert;
        Row {
            id: a.id.clone(),
            patient: a.patient_id.map(|p| p.to_string()).unwrap_or_default(),
            rule: a.rule.to_string(),
            code: a.code.clone(),
            severity: a.severity.as_str(),
            status: v.status.as_str(),
            at: iso(a.at_ms),
            value: a.value.map(|v| v.to_string()).unwrap_or_default(),
        }
    }
}

/// The filter form's query, as the page's inputs give it (blank fields mean "any").
#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct FilterQuery {
    patient_id: String,
    rule: String,
    severity: String,
    status: String,
    days: String,
    offset: Option<u32>,
}

#[derive(Template)]
#[template(path = "alerts.html")]
struct ListPage {
    layout: Layout,
    rows: Vec<Row>,
    patient_id: String,
    rule: String,
    severity: String,
    status: String,
    days: String,
    offset: u32,
    next: Option<u32>,
    query: String,
}

const PAGE: u32 = 100;

async fn list(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Query(q): Query<FilterQuery>,
) -> Page {
    let some = |v: &str| (!v.trim().is_empty()).then(|| v.trim().to_owned());
    let days: Option<i64> = some(&q.days).and_then(|d| d.parse().ok());
    let offset = q.offset.unwrap_or(0);
    let filter = AlertFilter {
        patient_id: some(&q.patient_id).and_then(|p| p.parse().ok()),
        rule: some(&q.rule),
        severity: some(&q.severity),
        status: some(&q.status),
        from_ms: days.map(|d| crate::model::now_ms() - d.clamp(1, 3650) * 86_400_000),
        to_ms: None,
        patients: None,
        offset: Some(offset),
        limit: Some(PAGE),
    };
    let Json(alerts) = api::alerts(State(s), Extension(p.clone()), Query(filter)).await?;
    let query = serde_urlencoded_pairs(&[
        ("patient_id", &q.patient_id),
        ("rule", &q.rule),
        ("severity", &q.severity),
        ("status", &q.status),
        ("days", &q.days),
    ]);
    Ok(render(ListPage {
        layout: Layout::new(&p, "Alerts", "alerts"),
        next: (alerts.len() as u32 == PAGE).then_some(offset + PAGE),
        rows: alerts.iter().map(Row::from).collect(),
        patient_id: q.patient_id,
        rule: q.rule,
        severity: q.severity,
        status: q.status,
        days: q.days,
        offset,
        query,
    }))
}

/// `k=v&…` of the non-blank pairs, escaped, for paging links that keep the filters.
fn serde_urlencoded_pairs(pairs: &[(&str, &String)]) -> String {
    pairs
        .iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| format!("{k}={}", super::url_escape(v.trim())))
        .collect::<Vec<_>>()
        .join("&")
}

#[derive(Template)]
#[template(path = "alert.html")]
struct DetailPage {
    layout: Layout,
    row: Row,
    message: String,
    view: AlertView,
    events: Vec<(String, AlertEvent)>,
}

async fn detail(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Page {
    let view = api::visible_alert(&s, &p, &id).await?;
    let events = s
        .store
        .alert_events(&id)
        .await
        .map_err(crate::admin::ApiError::from)?
        .into_iter()
        .map(|e| (iso(e.at_ms), e))
        .collect();
    Ok(render(DetailPage {
        layout: Layout::new(&p, format!("Alert {}", view.alert.code), "alerts"),
        row: Row::from(&view),
        message: view.alert.message.clone(),
        view,
        events,
    }))
}
