//! The dashboard's queries over the analytics tables, each returning typed rows.
//!
//! Periods are `[from_ms, to_ms)` in event time (UTC); values are mg/dL. Every query is
//! blocking and opens its own connection, so it never waits for the sink.

use super::{Analytics, AnalyticsError};
use crate::model::EpochMs;
use chrono::NaiveDate;
use serde::Serialize;

const DAY_MS: i64 = 86_400_000;
/// The dashboard's moving-average window: two days.
pub const MOVING_AVERAGE_MS: i64 = 2 * DAY_MS;

/// One reading with the mean of the patient's readings in `(at − 48 h, at]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesPoint {
    pub reading_id: String,
    pub at_ms: EpochMs,
    pub mg_dl: f64,
    pub moving_avg_2d: f64,
    /// Readings the moving average is over (the reading itself included).
    pub window_count: u64,
}

/// One patient's readings in a period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatientSummary {
    pub patient_id: u64,
    pub count: u64,
    pub mean_mg_dl: f64,
    pub min_mg_dl: f64,
    pub max_mg_dl: f64,
}

/// One patient's readings on one UTC day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DailyAverage {
    pub patient_id: u64,
    /// The UTC day (serialised `YYYY-MM-DD`).
    pub day: NaiveDate,
    pub count: u64,
    pub mean_mg_dl: f64,
}

/// International consensus CGM metrics (Battelino et al., Diabetes Care 2019) over a period.
/// Percentages are shares of the readings present, 0–100. Ranges nest as in the consensus
/// report: `below_70_pct` includes `below_54_pct`, `above_180_pct` includes `above_250_pct`,
/// and the five bands below 54, 54–69.9, 70–180, 180.1–250 and above 250 sum to 100.
/// With no readings every value is `None`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CgmMetrics {
    pub count: u64,
    /// Readings a sensor at the expected interval would have produced: `⌊period / interval⌋`.
    pub expected: u64,
    /// `min(count / expected, 1) × 100`; `None` when nothing was expected.
    pub data_sufficiency_pct: Option<f64>,
    /// Time in range: 70 ≤ mg/dL ≤ 180.
    pub in_range_pct: Option<f64>,
    /// mg/dL < 70.
    pub below_70_pct: Option<f64>,
    /// mg/dL < 54.
    pub below_54_pct: Option<f64>,
    /// mg/dL > 180.
    pub above_180_pct: Option<f64>,
    /// mg/dL > 250.
    pub above_250_pct: Option<f64>,
    pub mean_mg_dl: Option<f64>,
    /// Sample standard deviation (n − 1); `None` under two readings.
    pub sd_mg_dl: Option<f64>,
    /// Coefficient of variation: sample SD / mean × 100.
    pub cv_pct: Option<f64>,
    /// Glucose management indicator: 3.31 + 0.02392 × mean mg/dL.
    pub gmi_pct: Option<f64>,
}

/// One time-of-day bin of the ambulatory glucose profile. Percentiles interpolate linearly
/// between the two nearest readings (`quantile_cont`: position `(n − 1) × p`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgpBin {
    /// Start of the bin in minutes after UTC midnight.
    pub start_minute: u32,
    pub count: u64,
    pub p5: f64,
    pub p25: f64,
    pub p50: f64,
    pub p75: f64,
    pub p95: f64,
}

impl Analytics {
    /// Each of the patient's readings in `[from_ms, to_ms)`, in (time, id) order, with its
    /// 2-day moving average: the mean over the patient's readings in `(t − 48 h, t]`, the
    /// reading and equal timestamps included, one exactly 48 h older excluded. Readings
    /// before `from_ms` count toward the averages of the period's first 48 hours.
    pub fn patient_series(
        &self,
        patient: u64,
        from_ms: EpochMs,
        to_ms: EpochMs,
    ) -> Result<Vec<SeriesPoint>, AnalyticsError> {
        let conn = self.connection()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT id, at_ms, mg_dl, avg_2d, n_2d FROM ( \
                 SELECT id, at_ms, mg_dl, avg(mg_dl) OVER w AS avg_2d, count(*) OVER w AS n_2d \
                 FROM glucose_readings \
                 WHERE patient_id = $1 AND at_ms >= $2 AND at_ms < $3 \
                 WINDOW w AS (ORDER BY at_ms RANGE BETWEEN {} PRECEDING AND CURRENT ROW)) \
             WHERE at_ms >= $4 \
             ORDER BY at_ms, id",
            MOVING_AVERAGE_MS - 1
        ))?;
        let window_from = from_ms.saturating_sub(MOVING_AVERAGE_MS - 1);
        let rows = stmt.query_map(duckdb::params![patient, window_from, to_ms, from_ms], |r| {
            Ok(SeriesPoint {
                reading_id: r.get(0)?,
                at_ms: r.get(1)?,
                mg_dl: r.get(2)?,
                moving_avg_2d: r.get(3)?,
                window_count: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Per patient with readings in `[from_ms, to_ms)`: count, mean, min and max, by patient id.
    pub fn patient_summaries(
        &self,
        from_ms: EpochMs,
        to_ms: EpochMs,
    ) -> Result<Vec<PatientSummary>, AnalyticsError> {
        let conn = self.connection()?;
        let mut stmt = conn.prepare(
            "SELECT patient_id, count(*), avg(mg_dl), min(mg_dl), max(mg_dl) \
             FROM glucose_readings WHERE at_ms >= $1 AND at_ms < $2 \
             GROUP BY patient_id ORDER BY patient_id",
        )?;
        let rows = stmt.query_map(duckdb::params![from_ms, to_ms], |r| {
            Ok(PatientSummary {
                patient_id: r.get(0)?,
                count: r.get(1)?,
                mean_mg_dl: r.get(2)?,
                min_mg_dl: r.get(3)?,
                max_mg_dl: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Per patient (`patients`, or all when empty) and UTC day: the mean and count of the
    /// readings in `[from_ms, to_ms)`, by patient then day. Days without readings are absent.
    pub fn daily_averages(
        &self,
        patients: &[u64],
        from_ms: EpochMs,
        to_ms: EpochMs,
    ) -> Result<Vec<DailyAverage>, AnalyticsError> {
        // Integers only, so the list is safe to inline.
        let filter = if patients.is_empty() {
            String::new()
        } else {
            let ids: Vec<String> = patients.iter().map(u64::to_string).collect();
            format!("AND patient_id IN ({})", ids.join(", "))
        };
        let conn = self.connection()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT patient_id, at_ms - (((at_ms % {DAY_MS}) + {DAY_MS}) % {DAY_MS}) AS day_ms, \
                    count(*), avg(mg_dl) \
             FROM glucose_readings WHERE at_ms >= $1 AND at_ms < $2 {filter} \
             GROUP BY ALL ORDER BY patient_id, day_ms"
        ))?;
        let rows = stmt.query_map(duckdb::params![from_ms, to_ms], |r| {
            let day_ms: i64 = r.get(1)?;
            Ok((r.get(0)?, day_ms, r.get(2)?, r.get(3)?))
        })?;
        rows.map(|row| {
            let (patient_id, day_ms, count, mean_mg_dl) = row?;
            let day = chrono::DateTime::from_timestamp_millis(day_ms)
                .ok_or_else(|| AnalyticsError::Invalid(format!("day {day_ms} ms out of range")))?
                .date_naive();
            Ok(DailyAverage {
                patient_id,
                day,
                count,
                mean_mg_dl,
            })
        })
        .collect()
    }

    /// Consensus CGM metrics of one patient over `[from_ms, to_ms)`, with data sufficiency
    /// against a sensor reporting every `expected_interval_secs`.
    pub fn cgm_metrics(
        &self,
        patient: u64,
        from_ms: EpochMs,
        to_ms: EpochMs,
        expected_interval_secs: u32,
    ) -> Result<CgmMetrics, AnalyticsError> {
        if expected_interval_secs == 0 {
            return Err(AnalyticsError::Invalid(
                "expected_interval_secs must be positive".into(),
            ));
        }
        let conn = self.connection()?;
        let (count, mean, sd, in_range, below_70, below_54, above_180, above_250): (
            u64,
            Option<f64>,
            Option<f64>,
            u64,
            u64,
            u64,
            u64,
            u64,
        ) = conn.query_row(
            "SELECT count(*), avg(mg_dl), stddev_samp(mg_dl), \
                    count(*) FILTER (WHERE mg_dl >= 70 AND mg_dl <= 180), \
                    count(*) FILTER (WHERE mg_dl < 70), \
                    count(*) FILTER (WHERE mg_dl < 54), \
                    count(*) FILTER (WHERE mg_dl > 180), \
                    count(*) FILTER (WHERE mg_dl > 250) \
             FROM glucose_readings WHERE patient_id = $1 AND at_ms >= $2 AND at_ms < $3",
            duckdb::params![patient, from_ms, to_ms],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                ))
            },
        )?;
        let expected = if to_ms > from_ms {
            ((to_ms - from_ms) / (i64::from(expected_interval_secs) * 1000)) as u64
        } else {
            0
        };
        let pct = |n: u64| (count > 0).then(|| n as f64 / count as f64 * 100.0);
        Ok(CgmMetrics {
            count,
            expected,
            data_sufficiency_pct: (expected > 0)
                .then(|| (count as f64 / expected as f64).min(1.0) * 100.0),
            in_range_pct: pct(in_range),
            below_70_pct: pct(below_70),
            below_54_pct: pct(below_54),
            above_180_pct: pct(above_180),
            above_250_pct: pct(above_250),
            mean_mg_dl: mean,
            sd_mg_dl: sd,
            cv_pct: match (sd, mean) {
                (Some(sd), Some(mean)) if mean != 0.0 => Some(sd / mean * 100.0),
                _ => None,
            },
            gmi_pct: mean.map(|m| 3.31 + 0.02392 * m),
        })
    }

    /// The ambulatory glucose profile of one patient over `[from_ms, to_ms)`: the readings of
    /// every day folded onto one UTC day, cut into `bin_minutes` bins (the last one shorter
    /// when `bin_minutes` does not divide 1440), with the 5th, 25th, 50th, 75th and 95th
    /// percentiles and the count of each bin that has readings, by time of day.
    pub fn agp(
        &self,
        patient: u64,
        from_ms: EpochMs,
        to_ms: EpochMs,
        bin_minutes: u32,
    ) -> Result<Vec<AgpBin>, AnalyticsError> {
        if bin_minutes == 0 || bin_minutes > 1440 {
            return Err(AnalyticsError::Invalid(format!(
                "bin_minutes must be 1 to 1440, not {bin_minutes}"
            )));
        }
        let bin_ms = i64::from(bin_minutes) * 60_000;
        let conn = self.connection()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT bin, n, q[1], q[2], q[3], q[4], q[5] FROM ( \
                 SELECT (((at_ms % {DAY_MS}) + {DAY_MS}) % {DAY_MS}) // {bin_ms} AS bin, \
                        count(*) AS n, \
                        quantile_cont(mg_dl, [0.05, 0.25, 0.5, 0.75, 0.95]) AS q \
                 FROM glucose_readings \
                 WHERE patient_id = $1 AND at_ms >= $2 AND at_ms < $3 \
                 GROUP BY bin) \
             ORDER BY bin"
        ))?;
        let rows = stmt.query_map(duckdb::params![patient, from_ms, to_ms], |r| {
            let bin: u32 = r.get(0)?;
            Ok(AgpBin {
                start_minute: bin * bin_minutes,
                count: r.get(1)?,
                p5: r.get(2)?,
                p25: r.get(3)?,
                p50: r.get(4)?,
                p75: r.get(5)?,
                p95: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
