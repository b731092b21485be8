//! Operations (admins): throughput counters, the input queue and unacknowledged batches
//! (how far the host lags its sources), each sink's backlog, dead letters with replay, rule
//! faults; and the audit log.

use super::directory::{Cell, TablePage};
use super::{Layout, Page, Route, iso, render};
use crate::admin::AdminState;
use crate::admin::api::{self, LimitQuery};
use crate::admin::auth::{Access, Principal};
use crate::store::accounts::AuditFilter;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::Method;
use axum::routing::get;
use axum::{Extension, Json};

pub(super) fn routes(admin: Access) -> Vec<Route> {
    vec![
        (Method::GET, "/web/ops", admin, get(ops)),
        (Method::GET, "/web/audit", admin, get(audit)),
    ]
}

struct SinkRow {
    name: String,
    pending_rows: u64,
    failures: u64,
    last_error: String,
    confirmed: String,
    unconfirmed_groups: usize,
    caught_up: String,
}

struct Letter {
    fingerprint: String,
    origin: String,
    reason: String,
    payload: String,
    received: String,
}

#[derive(Template)]
#[template(path = "ops.html")]
struct OpsPage {
    layout: Layout,
    health: crate::pipeline::PipelineHealth,
    stats: crate::pipeline::PipelineStats,
    sinks: Vec<SinkRow>,
    letters: Vec<Letter>,
    faults: Vec<Vec<Cell>>,
}

async fn ops(State(s): State<AdminState>, Extension(p): Extension<Principal>) -> Page {
    let feeds = s.pipeline.feeds();
    let sinks = s
        .pipeline
        .sinks()
        .into_iter()
        .map(|st| {
            let feed = feeds.iter().find(|f| f.sink == st.name);
            SinkRow {
                name: st.name.to_owned(),
                pending_rows: st.pending_rows,
                failures: st.failures + feed.map_or(0, |f| f.failures),
                last_error: st
                    .last_error
                    .clone()
                    .or_else(|| feed.and_then(|f| f.last_error.clone()))
                    .unwrap_or_default(),
                confirmed: feed
                    .filter(|f| f.confirmed_received_at_ms > 0)
                    .map(|f| iso(f.confirmed_received_at_ms))
                    .unwrap_or_default(),
                unconfirmed_groups: feed.map_or(0, |f| f.unconfirmed_groups),
                caught_up: match feed {
                    Some(f) if f.caught_up => "yes".to_owned(),
                    Some(_) => "catching up".to_owned(),
                    None => "in the write path".to_owned(),
                },
            }
        })
        .collect();
    let Json(letters) =
        api::dead_letters(State(s.clone()), Query(LimitQuery { limit: Some(100) })).await?;
    let letters = letters
        .iter()
        .map(|d| {
            let text = |k: &str| d[k].as_str().unwrap_or_default().to_owned();
            Letter {
                fingerprint: text("fingerprint"),
                origin: text("origin"),
                reason: text("reason"),
                payload: text("payload").chars().take(400).collect(),
                received: iso(d["received_at_ms"].as_i64().unwrap_or_default()),
            }
        })
        .collect();
    let Json(faults) =
        api::rule_faults(State(s.clone()), Query(LimitQuery { limit: Some(100) })).await?;
    let faults = faults
        .iter()
        .map(|f| {
            vec![
                Cell::text(iso(f.at_ms)),
                Cell::link(f.rule.to_string(), format!("/web/rules/{}", f.rule.name)),
                Cell::text(
                    serde_json::to_value(f.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                ),
                Cell::text(&f.detail),
            ]
        })
        .collect();
    Ok(render(OpsPage {
        layout: Layout::new(&p, "Operations", "ops"),
        health: s.pipeline.health(),
        stats: s.pipeline.stats(),
        sinks,
        letters,
        faults,
    }))
}

async fn audit(State(s): State<AdminState>, Extension(p): Extension<Principal>) -> Page {
    let Json(log) = api::audit_log(
        State(s),
        Query(AuditFilter {
            limit: Some(200),
            ..AuditFilter::default()
        }),
    )
    .await?;
    let rows = log
        .iter()
        .map(|r| {
            let e = &r.entry;
            vec![
                Cell::text(iso(r.at_ms)),
                Cell::text(&e.actor),
                Cell::text(&e.action),
                Cell::text(&e.target),
                Cell::text(e.reason.clone().unwrap_or_default()),
            ]
        })
        .collect();
    Ok(render(TablePage {
        layout: Layout::new(&p, "Audit log", "audit"),
        intro: "Every change, newest first: who, when, what. Nobody can edit it through the API.",
        table_id: "audit-table",
        base: "/web/audit",
        search: false,
        columns: vec!["When", "Who", "What", "On", "Reason"],
        rows,
        paging: None,
        form: None,
    }))
}
