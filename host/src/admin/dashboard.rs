//! The dashboard's JSON API: what the web UI's charts draw, the way the international
//! consensus on CGM reporting reads a patient's glucose (Battelino et al., Diabetes Care
//! 2019): the patient list with time in ranges, CV, GMI and data sufficiency; per patient the
//! readings with the 2-day moving average and the target band, the ambulatory glucose
//! profile (AGP), the metrics and the live value with its trend; daily means compared
//! across patients.
//!
//! - **Sources.** Everything but `latest` reads the DuckDB analytics copy
//!   ([`crate::analytics`]); its queries block, so they run on `spawn_blocking`, each on its
//!   own connection (they never hold up the sink). `latest` reads the OLTP store, which holds
//!   a reading as soon as it is acknowledged, while DuckDB is fed after that and may lag.
//!   Without `[analytics]` every route answers 503 with code `analytics_off`.
//! - **Who sees what.** The routes are for staff. A clinician sees only the patients they
//!   follow; any other patient — and a deleted or unknown one — is a 404, never a 403
//!   (whether a patient exists is itself health data), as everywhere in the API.
//! - **Periods.** `days=N` is `[now − N days, now)` in event time; the daily comparison
//!   covers whole days of the viewer (`utc_offset_min`), today included. The numbers are
//!   always over the readings present: data sufficiency says how many of the expected
//!   5-minute readings that is, and GMI is withheld below the consensus's 70 %.
//! - **Parameters** are checked and a bad one is a 400 in the API's error shape; unknown
//!   ones are refused too, so a misspelt `day=30` is not silently the default.
//! - Nothing here logs patient data.

use super::api::principal_sees;
use super::auth::{Access, Principal, STAFF};
use super::{AdminState, ApiError};
use crate::analytics::{Analytics, AnalyticsError, CgmMetrics};
use crate::model::dims::Patient;
use crate::model::{Body, EpochMs, now_ms};
use crate::store::directory::{ListQuery, PatientRecord, Visible};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::routing::{MethodRouter, get};
use axum::{Extension, Json};
use chrono::{DateTime, NaiveDate};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

const MIN_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

/// The consensus target range, mg/dL (the band drawn behind the readings; `in_range_pct`
/// counts 70 ≤ mg/dL ≤ 180).
pub const TARGET_LOW_MG_DL: u32 = 70;
pub const TARGET_HIGH_MG_DL: u32 = 180;
/// The sensor interval data sufficiency is measured against: a CGM reading every 5 minutes.
pub const EXPECTED_INTERVAL_SECS: u32 = 300;

/// `days` of the list, the AGP and the metrics: the consensus's 14 days by default.
const DEFAULT_DAYS: u32 = 14;
/// The longest period any dashboard query covers.
const MAX_DAYS: u32 = 90;
/// The series and the daily comparison show a month by default.
const DEFAULT_MONTH_DAYS: u32 = 30;
/// Patients one daily comparison may name (lines a chart can still tell apart).
const MAX_COMPARED: usize = 12;
const DEFAULT_AGP_BIN_MINUTES: u32 = 15;
/// AGP bin widths on offer: divisors of a day, from the sensor's interval to an hour.
const AGP_BIN_MINUTES: [u32; 6] = [5, 10, 15, 20, 30, 60];
/// Real time zones run from UTC−12:00 to UTC+14:00.
const MIN_OFFSET_MIN: i32 = -12 * 60;
const MAX_OFFSET_MIN: i32 = 14 * 60;
/// The trend is the rate over the readings of the last 15 minutes up to the newest one.
const TREND_WINDOW_MS: i64 = 15 * MIN_MS;
/// How far back `latest` looks, widening only while it lacks what it needs: one hour holds
/// everything for a sensor that is sending; a silent one may take a month.
const LATEST_LOOKBACKS_MS: [i64; 3] = [3_600_000, DAY_MS, 30 * DAY_MS];
/// Directory rows per page while listing every visible patient (the store's maximum).
const DIRECTORY_PAGE: u32 = 500;

type Api<T> = Result<Json<T>, ApiError>;

/// The routes this module serves, with their access rules.
pub(super) fn routes() -> Vec<(Method, &'static str, Access, MethodRouter<AdminState>)> {
    vec![
        (
            Method::GET,
            "/api/dashboard/patients",
            STAFF,
            get(patient_list),
        ),
        (
            Method::GET,
            "/api/dashboard/patients/{id}/series",
            STAFF,
            get(series),
        ),
        (
            Method::GET,
            "/api/dashboard/patients/{id}/agp",
            STAFF,
            get(agp),
        ),
        (
            Method::GET,
            "/api/dashboard/patients/{id}/metrics",
            STAFF,
            get(metrics),
        ),
        (
            Method::GET,
            "/api/dashboard/patients/{id}/latest",
            STAFF,
            get(latest),
        ),
        (Method::GET, "/api/dashboard/daily", STAFF, get(daily)),
    ]
}

// ---- responses ----

/// Consensus metrics as the dashboard shows them: GMI only when the data suffice
/// ([`CgmMetrics::gmi_reportable`]), else `gmi_pct: null` and `gmi_shown: false`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShownMetrics {
    #[serde(flatten)]
    pub metrics: CgmMetrics,
    pub gmi_shown: bool,
}

impl ShownMetrics {
    /// Applies the GMI gate: the one place the dashboard decides whether GMI is shown.
    pub fn gated(mut metrics: CgmMetrics) -> ShownMetrics {
        let gmi_shown = metrics.gmi_reportable();
        if !gmi_shown {
            metrics.gmi_pct = None;
        }
        ShownMetrics { metrics, gmi_shown }
    }
}

/// One row of `GET /api/dashboard/patients`.
#[derive(Debug, Serialize)]
pub struct PatientRow {
    pub patient_id: u64,
    /// The name the directory shows for the patient.
    pub alias: String,
    pub profile: Option<String>,
    /// The newest reading in the period (none in it: `null`).
    pub last_reading_ms: Option<EpochMs>,
    pub last_mg_dl: Option<f64>,
    pub metrics: ShownMetrics,
}

/// `GET /api/dashboard/patients/{id}/series`, columnar: one index per reading, in (time, id)
/// order, as a chart library takes it.
#[derive(Debug, Serialize)]
pub struct Series {
    pub patient_id: u64,
    pub from_ms: EpochMs,
    pub to_ms: EpochMs,
    pub t: Vec<EpochMs>,
    pub mg_dl: Vec<f64>,
    /// The mean of the patient's readings in `(t − 48 h, t]`, earlier readings included.
    pub ma_2d: Vec<f64>,
    pub target_low: u32,
    pub target_high: u32,
}

/// `GET /api/dashboard/patients/{id}/agp`, columnar: one index per time-of-day bin that has
/// readings; `minute` is the bin's start after the viewer's midnight.
#[derive(Debug, Serialize)]
pub struct Agp {
    pub patient_id: u64,
    pub from_ms: EpochMs,
    pub to_ms: EpochMs,
    pub bin_minutes: u32,
    pub minute: Vec<u32>,
    pub count: Vec<u64>,
    pub p5: Vec<f64>,
    pub p25: Vec<f64>,
    pub p50: Vec<f64>,
    pub p75: Vec<f64>,
    pub p95: Vec<f64>,
}

/// `GET /api/dashboard/patients/{id}/metrics`.
#[derive(Debug, Serialize)]
pub struct PeriodMetrics {
    pub patient_id: u64,
    pub from_ms: EpochMs,
    pub to_ms: EpochMs,
    #[serde(flatten)]
    pub metrics: ShownMetrics,
}

/// The usual CGM trend arrows, from the rate of change in mg/dL per minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trend {
    /// More than 2 mg/dL/min up.
    RisingFast,
    /// More than 1, at most 2 up.
    Rising,
    /// Within ±1.
    Flat,
    /// More than 1, at most 2 down.
    Falling,
    /// More than 2 down.
    FallingFast,
}

impl Trend {
    pub fn of_rate(mg_dl_per_min: f64) -> Trend {
        match mg_dl_per_min {
            r if r > 2.0 => Trend::RisingFast,
            r if r > 1.0 => Trend::Rising,
            r if r >= -1.0 => Trend::Flat,
            r if r >= -2.0 => Trend::Falling,
            _ => Trend::FallingFast,
        }
    }
}

/// `GET /api/dashboard/patients/{id}/latest`: the newest stored reading; every field is
/// `null` when the patient has none within the last 30 days.
#[derive(Debug, Default, Serialize)]
pub struct Latest {
    pub patient_id: u64,
    pub at_ms: Option<EpochMs>,
    pub mg_dl: Option<f64>,
    /// Against the reading before it (none: `null`).
    pub delta_mg_dl: Option<f64>,
    /// Least-squares slope over the readings of the 15 minutes up to the newest one; `null`
    /// under two readings there.
    pub rate_mg_dl_per_min: Option<f64>,
    pub trend: Option<Trend>,
    /// Whole minutes since the reading (0 for one stamped a little ahead of this clock).
    pub minutes_ago: Option<i64>,
}

/// `GET /api/dashboard/daily`: each patient's daily means on one day axis, `null` for a day
/// without readings.
#[derive(Debug, Serialize)]
pub struct Daily {
    pub from_ms: EpochMs,
    pub to_ms: EpochMs,
    /// The viewer's days, oldest first, `YYYY-MM-DD`.
    pub days: Vec<NaiveDate>,
    /// In the order the patients were listed.
    pub series: Vec<DailySeries>,
}

#[derive(Debug, Serialize)]
pub struct DailySeries {
    pub patient_id: u64,
    pub label: String,
    pub mean: Vec<Option<f64>>,
}

// ---- query parameters ----
//
// The handlers and their parameters are shared with the server-rendered pages (`crate::web`),
// which call the same role-checked functions as the JSON API.

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct DaysQuery {
    pub(crate) days: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct SeriesQuery {
    pub(crate) from_ms: Option<EpochMs>,
    pub(crate) to_ms: Option<EpochMs>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct AgpQuery {
    pub(crate) days: Option<u32>,
    pub(crate) utc_offset_min: Option<i32>,
    pub(crate) bin_minutes: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct DailyQuery {
    /// Comma-separated patient ids.
    pub(crate) patients: Option<String>,
    pub(crate) days: Option<u32>,
    pub(crate) utc_offset_min: Option<i32>,
}

/// The query string, or a 400 in the API's error shape (axum's own rejection is plain text).
fn query<T: DeserializeOwned>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

fn patient_id(p: Result<Path<u64>, PathRejection>) -> Result<u64, ApiError> {
    p.map(|Path(id)| id)
        .map_err(|e| ApiError::BadRequest(format!("bad patient id: {}", e.body_text())))
}

/// `days`, defaulted and within 1 to [`MAX_DAYS`].
fn days(days: Option<u32>, default: u32) -> Result<i64, ApiError> {
    match days.unwrap_or(default) {
        d @ 1..=MAX_DAYS => Ok(i64::from(d)),
        d => Err(ApiError::BadRequest(format!(
            "days must be 1 to {MAX_DAYS}, not {d}"
        ))),
    }
}

fn utc_offset(min: Option<i32>) -> Result<i32, ApiError> {
    match min.unwrap_or(0) {
        m @ MIN_OFFSET_MIN..=MAX_OFFSET_MIN => Ok(m),
        m => Err(ApiError::BadRequest(format!(
            "utc_offset_min must be {MIN_OFFSET_MIN} to {MAX_OFFSET_MIN}, not {m}"
        ))),
    }
}

/// `1,2,3` → distinct ids, 1 to [`MAX_COMPARED`] of them, in the order given.
fn compared_patients(list: Option<&str>) -> Result<Vec<u64>, ApiError> {
    let list = list
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| ApiError::BadRequest("name the patients: patients=1,2,3".to_owned()))?;
    let mut ids = Vec::new();
    for part in list.split(',') {
        let id: u64 = part
            .trim()
            .parse()
            .map_err(|_| ApiError::BadRequest(format!("not a patient id: {part:?}")))?;
        if ids.contains(&id) {
            return Err(ApiError::BadRequest(format!(
                "patient {id} is listed twice"
            )));
        }
        ids.push(id);
    }
    if ids.len() > MAX_COMPARED {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_COMPARED} patients are compared at once, not {}",
            ids.len()
        )));
    }
    Ok(ids)
}

// ---- shared steps ----

/// The analytics database, or 503 `analytics_off`.
fn analytics(s: &AdminState) -> Result<Analytics, ApiError> {
    s.analytics
        .as_ref()
        .map(|sink| sink.analytics().clone())
        .ok_or_else(|| ApiError::Refused {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "analytics_off",
            message: "the dashboard reads the DuckDB analytics copy, and this host has no \
                      [analytics] section in its config"
                .to_owned(),
        })
}

/// Runs a blocking analytics query off the async workers.
async fn blocking<T: Send + 'static>(
    analytics: Analytics,
    query: impl FnOnce(&Analytics) -> Result<T, AnalyticsError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || query(&analytics))
        .await
        .map_err(|e| ApiError::Internal(format!("dashboard query panicked: {e}")))?
        .map_err(|e| match e {
            AnalyticsError::Invalid(m) => ApiError::BadRequest(m),
            other => ApiError::Internal(other.to_string()),
        })
}

/// The patient's live directory row, if this principal may see it; else 404.
async fn live_patient(s: &AdminState, p: &Principal, id: u64) -> Result<PatientRecord, ApiError> {
    principal_sees(p, id)?;
    s.store
        .patient(id)
        .await?
        .filter(|r| r.deleted_at_ms.is_none())
        .ok_or_else(|| ApiError::NotFound(format!("patient {id}")))
}

/// Every live directory row among `visible`, by patient id.
async fn live_patients(s: &AdminState, visible: &Visible) -> Result<Vec<PatientRecord>, ApiError> {
    let mut out = Vec::new();
    loop {
        let page = s
            .store
            .patients(
                &ListQuery {
                    offset: Some(out.len() as u32),
                    limit: Some(DIRECTORY_PAGE),
                    ..ListQuery::default()
                },
                visible,
            )
            .await?;
        let last = page.items.len() < DIRECTORY_PAGE as usize;
        out.extend(page.items);
        if last || out.len() as u64 >= page.total {
            return Ok(out);
        }
    }
}

/// How the dashboard names a patient: the directory's first and last name.
fn alias(p: &Patient) -> String {
    format!("{} {}", p.first_name.trim(), p.last_name.trim())
        .trim()
        .to_owned()
}

/// `[now − days, now)`.
fn last_days(days: i64) -> (EpochMs, EpochMs) {
    let to = now_ms();
    (to - days * DAY_MS, to)
}

// ---- handlers ----

/// `GET /api/dashboard/patients?days=14`: every visible live patient with the consensus
/// metrics of the period and the newest reading in it, by patient id; patients without
/// readings are listed too (count 0). Two reads whatever the number of patients: the
/// directory, and one grouped DuckDB scan.
pub(crate) async fn patient_list(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    q: Result<Query<DaysQuery>, QueryRejection>,
) -> Api<Vec<PatientRow>> {
    let days = days(query(q)?.days, DEFAULT_DAYS)?;
    let analytics = analytics(&s)?;
    let patients = live_patients(&s, &p.visible).await?;
    let (from_ms, to_ms) = last_days(days);
    // Everyone may be many: then DuckDB groups every patient and the directory picks.
    let only: Option<Vec<u64>> = match p.visible {
        Visible::All => None,
        Visible::Only(_) => Some(patients.iter().map(|r| r.patient.patient_id).collect()),
    };
    let overviews = blocking(analytics, move |a| {
        a.patient_overviews(only.as_deref(), from_ms, to_ms, EXPECTED_INTERVAL_SECS)
    })
    .await?;
    let mut overviews: std::collections::HashMap<u64, _> =
        overviews.into_iter().map(|o| (o.patient_id, o)).collect();
    let expected = CgmMetrics::expected_readings(from_ms, to_ms, EXPECTED_INTERVAL_SECS);
    Ok(Json(
        patients
            .into_iter()
            .map(|r| {
                let o = overviews.remove(&r.patient.patient_id);
                PatientRow {
                    patient_id: r.patient.patient_id,
                    alias: alias(&r.patient),
                    last_reading_ms: o.as_ref().map(|o| o.last_at_ms),
                    last_mg_dl: o.as_ref().map(|o| o.last_mg_dl),
                    metrics: ShownMetrics::gated(
                        o.map_or_else(|| CgmMetrics::without_readings(expected), |o| o.metrics),
                    ),
                    profile: r.patient.profile,
                }
            })
            .collect(),
    ))
}

/// `GET /api/dashboard/patients/{id}/series?from_ms=&to_ms=`: the readings of
/// `[from_ms, to_ms)` (default: the last 30 days; at most 90 days) with the 2-day moving
/// average.
pub(crate) async fn series(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    id: Result<Path<u64>, PathRejection>,
    q: Result<Query<SeriesQuery>, QueryRejection>,
) -> Api<Series> {
    let id = patient_id(id)?;
    let q = query(q)?;
    let month = i64::from(DEFAULT_MONTH_DAYS) * DAY_MS;
    let (from_ms, to_ms) = match (q.from_ms, q.to_ms) {
        (Some(f), Some(t)) => (f, t),
        (Some(f), None) => (f, now_ms()),
        (None, Some(t)) => (t.saturating_sub(month), t),
        (None, None) => last_days(i64::from(DEFAULT_MONTH_DAYS)),
    };
    if to_ms <= from_ms {
        return Err(ApiError::BadRequest(
            "to_ms must be after from_ms".to_owned(),
        ));
    }
    if to_ms - from_ms > i64::from(MAX_DAYS) * DAY_MS {
        return Err(ApiError::BadRequest(format!(
            "a series covers at most {MAX_DAYS} days"
        )));
    }
    let analytics = analytics(&s)?;
    live_patient(&s, &p, id).await?;
    let points = blocking(analytics, move |a| a.patient_series(id, from_ms, to_ms)).await?;
    Ok(Json(Series {
        patient_id: id,
        from_ms,
        to_ms,
        t: points.iter().map(|pt| pt.at_ms).collect(),
        mg_dl: points.iter().map(|pt| pt.mg_dl).collect(),
        ma_2d: points.iter().map(|pt| pt.moving_avg_2d).collect(),
        target_low: TARGET_LOW_MG_DL,
        target_high: TARGET_HIGH_MG_DL,
    }))
}

/// `GET /api/dashboard/patients/{id}/agp?days=14&utc_offset_min=0&bin_minutes=15`: the
/// 5/25/50/75/95th percentiles by the viewer's time of day.
pub(crate) async fn agp(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    id: Result<Path<u64>, PathRejection>,
    q: Result<Query<AgpQuery>, QueryRejection>,
) -> Api<Agp> {
    let id = patient_id(id)?;
    let q = query(q)?;
    let days = days(q.days, DEFAULT_DAYS)?;
    let offset = utc_offset(q.utc_offset_min)?;
    let bin_minutes = q.bin_minutes.unwrap_or(DEFAULT_AGP_BIN_MINUTES);
    if !AGP_BIN_MINUTES.contains(&bin_minutes) {
        return Err(ApiError::BadRequest(format!(
            "bin_minutes must be one of {AGP_BIN_MINUTES:?}, not {bin_minutes}"
        )));
    }
    let analytics = analytics(&s)?;
    live_patient(&s, &p, id).await?;
    let (from_ms, to_ms) = last_days(days);
    let bins = blocking(analytics, move |a| {
        a.agp_with_offset(id, from_ms, to_ms, bin_minutes, offset)
    })
    .await?;
    let column =
        |f: fn(&crate::analytics::AgpBin) -> f64| -> Vec<f64> { bins.iter().map(f).collect() };
    Ok(Json(Agp {
        patient_id: id,
        from_ms,
        to_ms,
        bin_minutes,
        minute: bins.iter().map(|b| b.start_minute).collect(),
        count: bins.iter().map(|b| b.count).collect(),
        p5: column(|b| b.p5),
        p25: column(|b| b.p25),
        p50: column(|b| b.p50),
        p75: column(|b| b.p75),
        p95: column(|b| b.p95),
    }))
}

/// `GET /api/dashboard/patients/{id}/metrics?days=14`: the consensus metrics, GMI gated.
pub(crate) async fn metrics(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    id: Result<Path<u64>, PathRejection>,
    q: Result<Query<DaysQuery>, QueryRejection>,
) -> Api<PeriodMetrics> {
    let id = patient_id(id)?;
    let days = days(query(q)?.days, DEFAULT_DAYS)?;
    let analytics = analytics(&s)?;
    live_patient(&s, &p, id).await?;
    let (from_ms, to_ms) = last_days(days);
    let m = blocking(analytics, move |a| {
        a.cgm_metrics(id, from_ms, to_ms, EXPECTED_INTERVAL_SECS)
    })
    .await?;
    Ok(Json(PeriodMetrics {
        patient_id: id,
        from_ms,
        to_ms,
        metrics: ShownMetrics::gated(m),
    }))
}

/// `GET /api/dashboard/patients/{id}/latest`: the newest reading the store holds, live.
pub(crate) async fn latest(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    id: Result<Path<u64>, PathRejection>,
    q: Result<Query<std::collections::BTreeMap<String, String>>, QueryRejection>,
) -> Api<Latest> {
    let id = patient_id(id)?;
    if let Some(name) = query(q)?.keys().next() {
        return Err(ApiError::BadRequest(format!(
            "latest takes no parameters, not {name:?}"
        )));
    }
    analytics(&s)?;
    live_patient(&s, &p, id).await?;
    let now = now_ms();
    let mut readings = Vec::new();
    for lookback in LATEST_LOOKBACKS_MS {
        let from = now - lookback;
        // Newer than any stored reading can be (the pipeline refuses far-future ones).
        readings = s
            .store
            .glucose_between(from, EpochMs::MAX, Some(std::slice::from_ref(&id)))
            .await?
            .into_iter()
            .filter_map(|r| match r.body {
                Body::Glucose(g) => Some((r.at_ms, g.mg_dl)),
                Body::Device(_) => None,
            })
            .collect::<Vec<_>>();
        // Enough when the window holds the reading before the newest and reaches back over
        // the whole trend window.
        if let [.., _, (newest, _)] = readings[..]
            && from <= newest - TREND_WINDOW_MS
        {
            break;
        }
    }
    Ok(Json(latest_of(id, &readings, now)))
}

/// What `latest` answers from the patient's readings in (time, id) order, at `now`.
fn latest_of(patient_id: u64, readings: &[(EpochMs, f64)], now: EpochMs) -> Latest {
    let Some(&(at_ms, mg_dl)) = readings.last() else {
        return Latest {
            patient_id,
            ..Latest::default()
        };
    };
    let before = &readings[..readings.len() - 1];
    let recent: Vec<(EpochMs, f64)> = readings
        .iter()
        .copied()
        .filter(|&(t, _)| t >= at_ms - TREND_WINDOW_MS)
        .collect();
    let rate = slope_per_min(&recent);
    Latest {
        patient_id,
        at_ms: Some(at_ms),
        mg_dl: Some(mg_dl),
        delta_mg_dl: before.last().map(|&(_, prev)| mg_dl - prev),
        rate_mg_dl_per_min: rate,
        trend: rate.map(Trend::of_rate),
        minutes_ago: Some((now - at_ms).max(0) / MIN_MS),
    }
}

/// The least-squares slope of mg/dL over time, per minute; `None` under two distinct times.
fn slope_per_min(points: &[(EpochMs, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    // Minutes after the first point, so the sums stay small.
    let t0 = points[0].0;
    let xs: Vec<f64> = points
        .iter()
        .map(|&(t, _)| (t - t0) as f64 / MIN_MS as f64)
        .collect();
    let mean_x = xs.iter().sum::<f64>() / n;
    let mean_y = points.iter().map(|&(_, v)| v).sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (x, &(_, y)) in xs.iter().zip(points) {
        sxy += (x - mean_x) * (y - mean_y);
        sxx += (x - mean_x) * (x - mean_x);
    }
    (sxx > 0.0).then(|| sxy / sxx)
}

/// `GET /api/dashboard/daily?patients=1,2,3&days=30&utc_offset_min=0`: the daily means of up
/// to 12 patients on the viewer's last `days` days, today included. Every listed patient
/// must be one the caller sees (else 404).
pub(crate) async fn daily(
    State(s): State<AdminState>,
    Extension(p): Extension<Principal>,
    q: Result<Query<DailyQuery>, QueryRejection>,
) -> Api<Daily> {
    let q = query(q)?;
    let ids = compared_patients(q.patients.as_deref())?;
    let days = days(q.days, DEFAULT_MONTH_DAYS)?;
    let offset = utc_offset(q.utc_offset_min)?;
    let analytics = analytics(&s)?;
    for &id in &ids {
        principal_sees(&p, id)?;
    }
    let records = live_patients(&s, &Visible::Only(ids.clone())).await?;
    let mut labels = Vec::with_capacity(ids.len());
    for &id in &ids {
        let r = records
            .iter()
            .find(|r| r.patient.patient_id == id)
            .ok_or_else(|| ApiError::NotFound(format!("patient {id}")))?;
        labels.push(alias(&r.patient));
    }
    let axis = DayAxis::ending_today(now_ms(), offset, days)?;
    let (from_ms, to_ms) = (axis.start_ms(), axis.end_ms());
    let queried = ids.clone();
    let rows = blocking(analytics, move |a| {
        a.daily_averages_with_offset(&queried, from_ms, to_ms, offset)
    })
    .await?;
    let mut series: Vec<DailySeries> = ids
        .iter()
        .zip(labels)
        .map(|(&patient_id, label)| DailySeries {
            patient_id,
            label,
            mean: vec![None; axis.len()],
        })
        .collect();
    for row in rows {
        if let (Some(line), Some(i)) = (
            series.iter_mut().find(|l| l.patient_id == row.patient_id),
            axis.index(row.day),
        ) {
            line.mean[i] = Some(row.mean_mg_dl);
        }
    }
    Ok(Json(Daily {
        from_ms,
        to_ms,
        days: axis.days(),
        series,
    }))
}

/// The viewer's last `days` days, today (at `utc_offset_min`) the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DayAxis {
    first: NaiveDate,
    days: i64,
    offset_ms: i64,
}

impl DayAxis {
    fn ending_today(now: EpochMs, utc_offset_min: i32, days: i64) -> Result<DayAxis, ApiError> {
        let offset_ms = i64::from(utc_offset_min) * MIN_MS;
        let today = DateTime::from_timestamp_millis(now + offset_ms)
            .ok_or_else(|| ApiError::Internal("the clock is out of range".to_owned()))?
            .date_naive();
        Ok(DayAxis {
            first: today - chrono::Duration::days(days - 1),
            days,
            offset_ms,
        })
    }

    fn len(&self) -> usize {
        self.days as usize
    }

    /// Event time of the first day's local midnight.
    fn start_ms(&self) -> EpochMs {
        self.first
            .and_time(chrono::NaiveTime::MIN)
            .and_utc()
            .timestamp_millis()
            - self.offset_ms
    }

    /// Event time of the local midnight after the last day.
    fn end_ms(&self) -> EpochMs {
        self.start_ms() + self.days * DAY_MS
    }

    fn index(&self, day: NaiveDate) -> Option<usize> {
        let i = (day - self.first).num_days();
        (0..self.days).contains(&i).then_some(i as usize)
    }

    fn days(&self) -> Vec<NaiveDate> {
        (0..self.days)
            .map(|i| self.first + chrono::Duration::days(i))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trend_arrows_follow_the_rate_with_the_usual_cut_offs() {
        let cases = [
            (3.0, Trend::RisingFast),
            (2.0001, Trend::RisingFast),
            (2.0, Trend::Rising),
            (1.0001, Trend::Rising),
            (1.0, Trend::Flat),
            (0.0, Trend::Flat),
            (-1.0, Trend::Flat),
            (-1.0001, Trend::Falling),
            (-2.0, Trend::Falling),
            (-2.0001, Trend::FallingFast),
            (-9.0, Trend::FallingFast),
        ];
        for (rate, trend) in cases {
            assert_eq!(Trend::of_rate(rate), trend, "{rate}");
        }
        assert_eq!(
            serde_json::to_value(Trend::FallingFast).unwrap(),
            "falling_fast"
        );
    }

    #[test]
    fn latest_takes_the_delta_from_the_reading_before_and_the_rate_from_15_minutes() {
        let t = 1_800_000_000_000;
        // 40 minutes ago a stray reading; then 5-minute readings rising 10 mg/dL each.
        let readings = [
            (t - 40 * MIN_MS, 300.0),
            (t - 15 * MIN_MS, 100.0),
            (t - 10 * MIN_MS, 110.0),
            (t - 5 * MIN_MS, 120.0),
            (t, 130.0),
        ];
        let l = latest_of(7, &readings, t + 7 * MIN_MS + 59_000);
        assert_eq!(
            (l.at_ms, l.mg_dl, l.delta_mg_dl),
            (Some(t), Some(130.0), Some(10.0))
        );
        assert!((l.rate_mg_dl_per_min.unwrap() - 2.0).abs() < 1e-12);
        assert_eq!(l.trend, Some(Trend::Rising));
        assert_eq!(l.minutes_ago, Some(7));
        // One reading: a value, no delta, no trend.
        let one = latest_of(7, &readings[..1], t);
        assert_eq!((one.delta_mg_dl, one.trend), (None, None));
        assert_eq!(one.minutes_ago, Some(40));
        // The previous reading outside the trend window still gives the delta.
        let two = latest_of(7, &readings[..2], t);
        assert_eq!(
            (two.delta_mg_dl, two.rate_mg_dl_per_min),
            (Some(-200.0), None)
        );
        // Stamped ahead of the clock: 0 minutes ago.
        assert_eq!(latest_of(7, &readings, t - 30_000).minutes_ago, Some(0));
        // Nothing: every field null.
        let none = serde_json::to_value(latest_of(7, &[], t)).unwrap();
        assert_eq!(
            none,
            serde_json::json!({"patient_id": 7, "at_ms": null, "mg_dl": null,
                "delta_mg_dl": null, "rate_mg_dl_per_min": null, "trend": null,
                "minutes_ago": null})
        );
    }

    #[test]
    fn the_slope_is_least_squares_and_needs_two_times() {
        let t = 1_800_000_000_000;
        assert_eq!(slope_per_min(&[]), None);
        assert_eq!(slope_per_min(&[(t, 1.0)]), None);
        assert_eq!(slope_per_min(&[(t, 1.0), (t, 5.0)]), None);
        // A fall of 3 mg/dL/min (100, 97, 94, 91) with the second reading 1 high: the first
        // and last readings alone would still say −3; every reading counts.
        let s = slope_per_min(&[
            (t, 100.0),
            (t + MIN_MS, 98.0),
            (t + 2 * MIN_MS, 94.0),
            (t + 3 * MIN_MS, 91.0),
        ])
        .unwrap();
        // x̄ = 1.5, ȳ = 95.75; Σ(x−x̄)(y−ȳ) = −15.5, Σ(x−x̄)² = 5 → −3.1.
        assert!((s + 3.1).abs() < 1e-12, "{s}");
    }

    #[test]
    fn the_day_axis_ends_on_the_viewers_today() {
        // 2026-11-18T23:30:00Z: still the 18th in UTC, already the 19th at UTC+1.
        let now = 1_794_960_000_000 + 23 * 3_600_000 + 30 * MIN_MS;
        let utc = DayAxis::ending_today(now, 0, 3).unwrap();
        let days: Vec<String> = utc.days().iter().map(|d| d.to_string()).collect();
        assert_eq!(days, ["2026-11-16", "2026-11-17", "2026-11-18"]);
        assert_eq!(utc.start_ms(), 1_794_960_000_000 - 2 * DAY_MS);
        assert_eq!(utc.end_ms(), 1_794_960_000_000 + DAY_MS);
        let plus_one = DayAxis::ending_today(now, 60, 3).unwrap();
        assert_eq!(plus_one.days().last().unwrap().to_string(), "2026-11-19");
        // Local midnight of the 17th at UTC+1 is 23:00 UTC on the 16th.
        assert_eq!(
            plus_one.start_ms(),
            1_794_960_000_000 - DAY_MS - 60 * MIN_MS
        );
        assert_eq!(plus_one.index(plus_one.first), Some(0));
        assert_eq!(
            plus_one.index(plus_one.first - chrono::Duration::days(1)),
            None
        );
        assert_eq!(
            plus_one.index(plus_one.first + chrono::Duration::days(3)),
            None
        );
    }

    #[test]
    fn compared_patients_are_distinct_ids_and_at_most_twelve() {
        assert_eq!(compared_patients(Some("3, 1,2")).unwrap(), [3, 1, 2]);
        for bad in [
            None,
            Some(""),
            Some("1,,2"),
            Some("1,x"),
            Some("-1"),
            Some("1,1"),
        ] {
            assert!(compared_patients(bad).is_err(), "{bad:?}");
        }
        let thirteen: Vec<String> = (1..=13).map(|i| i.to_string()).collect();
        assert!(compared_patients(Some(thirteen.join(",").as_str())).is_err());
        assert_eq!(
            compared_patients(Some(thirteen[..12].join(",").as_str()))
                .unwrap()
                .len(),
            12
        );
    }

    #[test]
    fn gmi_is_shown_from_70_percent_and_hidden_below() {
        let m = |count| CgmMetrics {
            count,
            mean_mg_dl: Some(154.0),
            gmi_pct: Some(3.31 + 0.02392 * 154.0),
            ..CgmMetrics::without_readings(1440)
        };
        let shown = ShownMetrics::gated(m(1008));
        assert!(shown.gmi_shown);
        assert_eq!(shown.metrics.gmi_pct, m(1008).gmi_pct);
        let hidden = ShownMetrics::gated(m(1007));
        assert!(!hidden.gmi_shown);
        let json = serde_json::to_value(&hidden).unwrap();
        assert_eq!(json["gmi_pct"], serde_json::Value::Null);
        assert_eq!(json["gmi_shown"], false);
        assert_eq!(json["mean_mg_dl"], 154.0, "the rest stays");
    }
}
