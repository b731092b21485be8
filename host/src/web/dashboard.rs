//! The glucose dashboard (from DuckDB, through the dashboard API): the patient list a
//! clinician sorts by risk, one patient's page (live value and trend, readings with the
//! 2-day moving average, the AGP, the consensus time-in-range bar and metrics, who follows
//! them), and daily averages compared across patients.

use super::{Layout, Page, Route, WebError, iso, render};
use crate::admin::auth::{Access, Principal};
use crate::admin::dashboard::{self, DaysQuery, Latest, PatientRow, ShownMetrics};
use crate::admin::{AdminState, ApiError, api};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::routing::get;
use axum::{Extension, Json};

pub(super) fn routes(staff: Access) -> Vec<Route> {
    vec![
        (Method::GET, "/web/dashboard", staff, get(list)),
        (Method::GET, "/web/patients/{id}", staff, get(patient)),
        (Method::GET, "/web/patients/{id}/latest", staff, get(latest)),
        (Method::GET, "/web/compare", staff, get(compare)),
    ]
}

/// The list's sort keys: the riskiest first by default (most time below 54 mg/dL).
const SORTS: [(&str, &str); 8] = [
    ("below_54", "Below 54"),
    ("below_70", "Below 70"),
    ("in_range", "In range"),
    ("above_180", "Above 180"),
    ("cv", "CV"),
    ("gmi", "GMI"),
    ("sufficiency", "Data"),
    ("last", "Last reading"),
];

#[derive(serde::Deserialize, Default)]
#[serde(default)]
struct ListQuery {
    sort: String,
    /// `asc` or `desc` (the default: highest first, except time in range, lowest first).
    dir: String,
}

fn key(row: &PatientRow, sort: &str) -> Option<f64> {
    let m = &row.metrics.metrics;
    match sort {
        "below_70" => m.below_70_pct,
        "in_range" => m.in_range_pct,
        "above_180" => m.above_180_pct,
        "cv" => m.cv_pct,
        "gmi" => m.gmi_pct,
        "sufficiency" => m.data_sufficiency_pct,
        "last" => row.last_reading_ms.map(|t| t as f64),
        _ => m.below_54_pct,
    }
}

/// Sorts rows by `sort`; rows without the value (no readings) always come last.
fn sort_rows(rows: &mut [PatientRow], sort: &str, descending: bool) {
    rows.sort_by(|a, b| match (key(a, sort), key(b, sort)) {
        (Some(x), Some(y)) => {
            let o = x.total_cmp(&y);
            let o = if descending { o.reverse() } else { o };
            o.then(a.patient_id.cmp(&b.patient_id))
        }
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.patient_id.cmp(&b.patient_id),
    });
}

fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_default()
}

struct Row {
    id: u64,
    alias: String,
    profile: String,
    below_54: String,
    below_70: String,
    in_range: String,
    above_180: String,
    cv: String,
    gmi: String,
    sufficiency: String,
    last: String,
    last_mg_dl: String,
}

struct SortLink {
    key: &'static str,
    label: &'static str,
    href: String,
    /// `ascending`, `descending` or `none`, for `aria-sort`.
    aria: &'static str,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct ListPage {
    layout: Layout,
    rows: Vec<Row>,
    sorts: Vec<SortLink>,
}

async fn list(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Page {
    let Json(mut rows) = dashboard::patient_list(
        State(s),
        Extension(p.clone()),
        Ok(Query(DaysQuery { days: Some(14) })),
    )
    .await?;
    let sort = SORTS
        .iter()
        .find(|(k, _)| *k == q.sort)
        .map_or("below_54", |(k, _)| k);
    let descending = match q.dir.as_str() {
        "asc" => false,
        "desc" => true,
        _ => sort != "in_range",
    };
    sort_rows(&mut rows, sort, descending);
    let sorts = SORTS
        .iter()
        .map(|&(k, label)| {
            let current = k == sort;
            let next_dir = if current && descending { "asc" } else { "desc" };
            SortLink {
                key: k,
                label,
                href: format!("/web/dashboard?sort={k}&dir={next_dir}"),
                aria: match (current, descending) {
                    (false, _) => "none",
                    (true, true) => "descending",
                    (true, false) => "ascending",
                },
            }
        })
        .collect();
    let rows = rows
        .into_iter()
        .map(|r| {
            let m = &r.metrics.metrics;
            Row {
                id: r.patient_id,
                profile: r.profile.clone().unwrap_or_default(),
                below_54: pct(m.below_54_pct),
                below_70: pct(m.below_70_pct),
                in_range: pct(m.in_range_pct),
                above_180: pct(m.above_180_pct),
                cv: pct(m.cv_pct),
                gmi: pct(m.gmi_pct),
                sufficiency: pct(m.data_sufficiency_pct),
                last: r.last_reading_ms.map(iso).unwrap_or_default(),
                last_mg_dl: r.last_mg_dl.map(|v| v.to_string()).unwrap_or_default(),
                alias: r.alias,
            }
        })
        .collect();
    Ok(render(ListPage {
        layout: Layout::new(&p, "Dashboard", "dashboard"),
        rows,
        sorts,
    }))
}

/// The consensus's five bands, lowest first, as widths of one bar.
struct Band {
    class: &'static str,
    label: &'static str,
    pct: f64,
}

fn bands(m: &ShownMetrics) -> Vec<Band> {
    let m = &m.metrics;
    let (Some(b54), Some(b70), Some(tir), Some(a180), Some(a250)) = (
        m.below_54_pct,
        m.below_70_pct,
        m.in_range_pct,
        m.above_180_pct,
        m.above_250_pct,
    ) else {
        return Vec::new();
    };
    vec![
        Band {
            class: "very-low",
            label: "below 54",
            pct: b54,
        },
        Band {
            class: "low",
            label: "54–69",
            pct: b70 - b54,
        },
        Band {
            class: "in-range",
            label: "70–180",
            pct: tir,
        },
        Band {
            class: "high",
            label: "181–250",
            pct: a180 - a250,
        },
        Band {
            class: "very-high",
            label: "above 250",
            pct: a250,
        },
    ]
}

#[derive(Template)]
#[template(path = "_latest.html")]
struct LatestPartial {
    id: u64,
    latest: Latest,
}

impl LatestPartial {
    fn arrow(&self) -> &'static str {
        use dashboard::Trend::*;
        match self.latest.trend {
            Some(RisingFast) => "⇈",
            Some(Rising) => "↗",
            Some(Flat) => "→",
            Some(Falling) => "↘",
            Some(FallingFast) => "⇊",
            None => "",
        }
    }
    fn trend(&self) -> &'static str {
        use dashboard::Trend::*;
        match self.latest.trend {
            Some(RisingFast) => "rising fast",
            Some(Rising) => "rising",
            Some(Flat) => "steady",
            Some(Falling) => "falling",
            Some(FallingFast) => "falling fast",
            None => "unknown",
        }
    }
    fn at(&self) -> String {
        self.latest.at_ms.map(iso).unwrap_or_default()
    }
    fn value(&self) -> String {
        self.latest.mg_dl.map(|v| v.to_string()).unwrap_or_default()
    }
    fn delta(&self) -> String {
        self.latest
            .delta_mg_dl
            .map(|d| format!("{d:+}"))
            .unwrap_or_default()
    }
}

async fn latest_of(s: &AdminState, p: &Principal, id: u64) -> Result<LatestPartial, WebError> {
    let Json(latest) = dashboard::latest(
        State(s.clone()),
        Extension(p.clone()),
        Ok(Path(id)),
        Ok(Query(Default::default())),
    )
    .await?;
    Ok(LatestPartial { id, latest })
}

/// `GET /web/patients/{id}/latest`: the live value block, which the page refreshes.
async fn latest(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<u64>,
) -> Page {
    Ok(render(latest_of(&s, &p, id).await?))
}

#[derive(Template)]
#[template(path = "patient.html")]
struct PatientPage {
    layout: Layout,
    id: u64,
    profile: String,
    /// The live value block, rendered by its own template (the page refreshes it alone).
    latest_html: String,
    metrics: ShownMetrics,
    bands: Vec<Band>,
    followers: Vec<u64>,
}

impl PatientPage {
    fn mean(&self) -> String {
        self.metrics
            .metrics
            .mean_mg_dl
            .map(|v| format!("{v:.1}"))
            .unwrap_or_default()
    }
    fn gmi(&self) -> String {
        pct(self.metrics.metrics.gmi_pct)
    }
    fn cv(&self) -> String {
        pct(self.metrics.metrics.cv_pct)
    }
    fn sufficiency(&self) -> String {
        pct(self.metrics.metrics.data_sufficiency_pct)
    }
}

async fn patient(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<u64>,
) -> Page {
    let Json(record) = api::patient(State(s.clone()), Extension(p.clone()), Path(id)).await?;
    if record.deleted_at_ms.is_some() {
        return Err(WebError(ApiError::NotFound(format!("patient {id}"))));
    }
    let latest_html = latest_of(&s, &p, id)
        .await?
        .render()
        .map_err(|e| WebError(ApiError::Internal(format!("template: {e}"))))?;
    let Json(period) = dashboard::metrics(
        State(s.clone()),
        Extension(p.clone()),
        Ok(Path(id)),
        Ok(Query(DaysQuery { days: Some(14) })),
    )
    .await?;
    let Json(followers) = api::followers(State(s.clone()), Extension(p.clone()), Path(id)).await?;
    let name = format!("{} {}", record.patient.first_name, record.patient.last_name);
    Ok(render(PatientPage {
        layout: Layout::new(&p, name, "dashboard"),
        id,
        profile: record.patient.profile.unwrap_or_default(),
        latest_html,
        bands: bands(&period.metrics),
        metrics: period.metrics,
        followers,
    }))
}

#[derive(Template)]
#[template(path = "compare.html")]
struct ComparePage {
    layout: Layout,
    patients: String,
}

/// `GET /web/compare?patients=1,2,3` (or `?patient=1&patient=2` from the list's form).
async fn compare(Extension(p): Extension<Principal>, uri: axum::http::Uri) -> Page {
    let pairs: Vec<(String, String)> =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&uri)
            .map(|q| q.0)
            .unwrap_or_default();
    let mut ids: Vec<String> = Vec::new();
    for (k, v) in pairs {
        if k == "patient" || k == "patients" {
            ids.extend(
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty()),
            );
        }
    }
    if ids.is_empty() {
        return Err(WebError(ApiError::BadRequest(
            "choose patients to compare on the dashboard".to_owned(),
        )));
    }
    // The chart's query checks every id (a number, visible to this user, at most twelve).
    Ok(render(ComparePage {
        layout: Layout::new(&p, "Daily averages compared", "dashboard"),
        patients: super::url_escape(&ids.join(",")),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::CgmMetrics;

    fn row(id: u64, below_54: Option<f64>) -> PatientRow {
        let mut m = CgmMetrics::without_readings(288);
        m.below_54_pct = below_54;
        PatientRow {
            patient_id: id,
            alias: String::new(),
            profile: None,
            last_reading_ms: None,
            last_mg_dl: None,
            metrics: ShownMetrics::gated(m),
        }
    }

    #[test]
    fn the_riskiest_patients_sort_first_and_patients_without_data_last() {
        let mut rows = vec![
            row(1, Some(1.0)),
            row(2, None),
            row(3, Some(7.5)),
            row(4, Some(1.0)),
        ];
        sort_rows(&mut rows, "below_54", true);
        let ids: Vec<u64> = rows.iter().map(|r| r.patient_id).collect();
        assert_eq!(ids, [3, 1, 4, 2]);
        sort_rows(&mut rows, "below_54", false);
        let ids: Vec<u64> = rows.iter().map(|r| r.patient_id).collect();
        assert_eq!(ids, [1, 4, 3, 2], "ascending keeps the empty row last too");
    }
}
