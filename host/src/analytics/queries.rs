//! The dashboard's queries over the analytics tables, each returning typed rows.
//!
//! Periods are `[from_ms, to_ms)` in event time (UTC); values are mg/dL. Every query is
//! blocking and opens its own connection, so it never waits for the sink.
//!
//! Days and times of day are UTC unless a query takes a `utc_offset_min`: then event times
//! are shifted by that many minutes before they are cut into days or time-of-day bins, so a
//! viewer sees their own midnight (the offset in force for the period; a DST change inside
//! it moves the readings after it by the hour).

use super::{Analytics, AnalyticsError};
use crate::model::EpochMs;
use chrono::NaiveDate;
use serde::Serialize;

const DAY_MS: i64 = 86_400_000;
/// The dashboard's moving-average window: two days.
pub const MOVING_AVERAGE_MS: i64 = 2 * DAY_MS;
/// Largest `utc_offset_min` magnitude a query takes: anything under a day (real zones span
/// UTC−12 to UTC+14).
const MAX_OFFSET_MIN: i32 = 1439;

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

/// One patient's readings on one day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DailyAverage {
    pub patient_id: u64,
    /// The day (UTC, or local at the query's offset), serialised `YYYY-MM-DD`.
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
    /// Glucose management indicator: 3.31 + 0.02392 × mean mg/dL. Computed whenever there
    /// is a mean; whether it may be *shown* is [`CgmMetrics::gmi_reportable`].
    pub gmi_pct: Option<f64>,
}

impl CgmMetrics {
    /// Data sufficiency below which the consensus says not to report GMI: 70 % of the
    /// expected readings (Battelino et al. 2019: "≥ 70 % of data from 14 days").
    pub const GMI_MIN_SUFFICIENCY_PCT: u64 = 70;

    /// Readings a sensor reporting every `interval_secs` produces in `[from_ms, to_ms)`:
    /// `⌊period / interval⌋`, 0 for an empty period (the `expected` of the metrics).
    pub fn expected_readings(from_ms: EpochMs, to_ms: EpochMs, interval_secs: u32) -> u64 {
        if to_ms > from_ms && interval_secs > 0 {
            ((to_ms - from_ms) / (i64::from(interval_secs) * 1000)) as u64
        } else {
            0
        }
    }

    /// The metrics of a period without readings, against `expected` readings.
    pub fn without_readings(expected: u64) -> CgmMetrics {
        Tally::default().metrics(expected)
    }

    /// Whether GMI may be reported: at least [`GMI_MIN_SUFFICIENCY_PCT`] of the expected
    /// readings are present (the boundary included). Decided on the integer counts, so
    /// exactly 70 % is never lost to rounding; nothing expected means nothing to report.
    ///
    /// [`GMI_MIN_SUFFICIENCY_PCT`]: Self::GMI_MIN_SUFFICIENCY_PCT
    pub fn gmi_reportable(&self) -> bool {
        self.mean_mg_dl.is_some()
            && self.expected > 0
            && u128::from(self.count) * 100
                >= u128::from(self.expected) * u128::from(Self::GMI_MIN_SUFFICIENCY_PCT)
    }
}

/// One patient's period at a glance: the consensus metrics and the newest reading in it,
/// from one grouped query over every patient ([`Analytics::patient_overviews`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PatientOverview {
    pub patient_id: u64,
    /// The newest reading in the period (by time, then id).
    pub last_at_ms: EpochMs,
    pub last_mg_dl: f64,
    pub metrics: CgmMetrics,
}

/// The counts behind [`CgmMetrics`], as [`TALLY_COLUMNS`] selects them.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    count: u64,
    mean: Option<f64>,
    sd: Option<f64>,
    in_range: u64,
    below_70: u64,
    below_54: u64,
    above_180: u64,
    above_250: u64,
}

/// The aggregates a [`Tally`] is read from, in its field order: one definition of the
/// consensus ranges for the per-patient and the grouped query.
const TALLY_COLUMNS: &str = "count(*), avg(mg_dl), stddev_samp(mg_dl), \
     count(*) FILTER (WHERE mg_dl >= 70 AND mg_dl <= 180), \
     count(*) FILTER (WHERE mg_dl < 70), \
     count(*) FILTER (WHERE mg_dl < 54), \
     count(*) FILTER (WHERE mg_dl > 180), \
     count(*) FILTER (WHERE mg_dl > 250)";

impl Tally {
    /// Reads the [`TALLY_COLUMNS`] starting at column `first`.
    fn read(r: &duckdb::Row<'_>, first: usize) -> duckdb::Result<Tally> {
        Ok(Tally {
            count: r.get(first)?,
            mean: r.get(first + 1)?,
            sd: r.get(first + 2)?,
            in_range: r.get(first + 3)?,
            below_70: r.get(first + 4)?,
            below_54: r.get(first + 5)?,
            above_180: r.get(first + 6)?,
            above_250: r.get(first + 7)?,
        })
    }

    fn metrics(self, expected: u64) -> CgmMetrics {
        let count = self.count;
        let pct = |n: u64| (count > 0).then(|| n as f64 / count as f64 * 100.0);
        CgmMetrics {
            count,
            expected,
            data_sufficiency_pct: (expected > 0)
                .then(|| (count as f64 / expected as f64).min(1.0) * 100.0),
            in_range_pct: pct(self.in_range),
            below_70_pct: pct(self.below_70),
            below_54_pct: pct(self.below_54),
            above_180_pct: pct(self.above_180),
            above_250_pct: pct(self.above_250),
            mean_mg_dl: self.mean,
            sd_mg_dl: self.sd,
            cv_pct: match (self.sd, self.mean) {
                (Some(sd), Some(mean)) if mean != 0.0 => Some(sd / mean * 100.0),
                _ => None,
            },
            gmi_pct: self.mean.map(|m| 3.31 + 0.02392 * m),
        }
    }
}

fn check_interval(expected_interval_secs: u32) -> Result<(), AnalyticsError> {
    if expected_interval_secs == 0 {
        return Err(AnalyticsError::Invalid(
            "expected_interval_secs must be positive".into(),
        ));
    }
    Ok(())
}

fn check_offset(utc_offset_min: i32) -> Result<i64, AnalyticsError> {
    if utc_offset_min.abs() > MAX_OFFSET_MIN {
        return Err(AnalyticsError::Invalid(format!(
            "utc_offset_min must be within ±{MAX_OFFSET_MIN}, not {utc_offset_min}"
        )));
    }
    Ok(i64::from(utc_offset_min) * 60_000)
}

/// `AND patient_id IN (…)` for a list of ids (integers only, so safe to inline), or nothing.
fn patient_filter(patients: &[u64]) -> String {
    if patients.is_empty() {
        return String::new();
    }
    let ids: Vec<String> = patients.iter().map(u64::to_string).collect();
    format!("AND patient_id IN ({})", ids.join(", "))
}

/// SQL for the milliseconds since midnight of `at_ms` shifted by `offset_ms` (non-negative
/// for times before 1970 too).
fn time_of_day_sql(offset_ms: i64) -> String {
    format!("((((at_ms + {offset_ms}) % {DAY_MS}) + {DAY_MS}) % {DAY_MS})")
}

/// One time-of-day bin of the ambulatory glucose profile. Percentiles interpolate linearly
/// between the two nearest readings (`quantile_cont`: position `(n − 1) × p`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgpBin {
    /// Start of the bin in minutes after midnight (UTC, or local at the query's offset).
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
        self.daily_averages_with_offset(patients, from_ms, to_ms, 0)
    }

    /// As [`daily_averages`](Self::daily_averages), with days cut at the viewer's midnight:
    /// event times are shifted by `utc_offset_min` (within ±1439) before they are cut.
    pub fn daily_averages_with_offset(
        &self,
        patients: &[u64],
        from_ms: EpochMs,
        to_ms: EpochMs,
        utc_offset_min: i32,
    ) -> Result<Vec<DailyAverage>, AnalyticsError> {
        let offset_ms = check_offset(utc_offset_min)?;
        let filter = patient_filter(patients);
        let conn = self.connection()?;
        // `day_ms` is the local midnight as if it were UTC: its date is the local date.
        let mut stmt = conn.prepare(&format!(
            "SELECT patient_id, at_ms + {offset_ms} - {tod} AS day_ms, count(*), avg(mg_dl) \
             FROM glucose_readings WHERE at_ms >= $1 AND at_ms < $2 {filter} \
             GROUP BY ALL ORDER BY patient_id, day_ms",
            tod = time_of_day_sql(offset_ms),
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
        check_interval(expected_interval_secs)?;
        let conn = self.connection()?;
        let tally = conn.query_row(
            &format!(
                "SELECT {TALLY_COLUMNS} FROM glucose_readings \
                 WHERE patient_id = $1 AND at_ms >= $2 AND at_ms < $3"
            ),
            duckdb::params![patient, from_ms, to_ms],
            |r| Tally::read(r, 0),
        )?;
        Ok(tally.metrics(CgmMetrics::expected_readings(
            from_ms,
            to_ms,
            expected_interval_secs,
        )))
    }

    /// [`cgm_metrics`](Self::cgm_metrics) and the newest reading of every patient with
    /// readings in `[from_ms, to_ms)` — of the listed `patients`, or of all when `None` —
    /// in one grouped scan, by patient id. Patients without readings in the period are
    /// absent (their metrics are [`CgmMetrics::without_readings`]).
    pub fn patient_overviews(
        &self,
        patients: Option<&[u64]>,
        from_ms: EpochMs,
        to_ms: EpochMs,
        expected_interval_secs: u32,
    ) -> Result<Vec<PatientOverview>, AnalyticsError> {
        check_interval(expected_interval_secs)?;
        let filter = match patients {
            None => String::new(),
            Some([]) => return Ok(Vec::new()),
            Some(ids) => patient_filter(ids),
        };
        let expected = CgmMetrics::expected_readings(from_ms, to_ms, expected_interval_secs);
        let conn = self.connection()?;
        // The newest reading by (time, id), as the series orders them: a struct compares
        // field by field.
        let mut stmt = conn.prepare(&format!(
            "SELECT patient_id, max(at_ms), arg_max(mg_dl, (at_ms, id)), {TALLY_COLUMNS} \
             FROM glucose_readings WHERE at_ms >= $1 AND at_ms < $2 {filter} \
             GROUP BY patient_id ORDER BY patient_id"
        ))?;
        let rows = stmt.query_map(duckdb::params![from_ms, to_ms], |r| {
            Ok(PatientOverview {
                patient_id: r.get(0)?,
                last_at_ms: r.get(1)?,
                last_mg_dl: r.get(2)?,
                metrics: Tally::read(r, 3)?.metrics(expected),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
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
        self.agp_with_offset(patient, from_ms, to_ms, bin_minutes, 0)
    }

    /// As [`agp`](Self::agp), folded onto the viewer's day: each event time is shifted by
    /// `utc_offset_min` (within ±1439) before it is binned, so bin 0 starts at local
    /// midnight. The period itself stays `[from_ms, to_ms)` in event time.
    pub fn agp_with_offset(
        &self,
        patient: u64,
        from_ms: EpochMs,
        to_ms: EpochMs,
        bin_minutes: u32,
        utc_offset_min: i32,
    ) -> Result<Vec<AgpBin>, AnalyticsError> {
        if bin_minutes == 0 || bin_minutes > 1440 {
            return Err(AnalyticsError::Invalid(format!(
                "bin_minutes must be 1 to 1440, not {bin_minutes}"
            )));
        }
        let offset_ms = check_offset(utc_offset_min)?;
        let bin_ms = i64::from(bin_minutes) * 60_000;
        let conn = self.connection()?;
        let mut stmt = conn.prepare(&format!(
            "SELECT bin, n, q[1], q[2], q[3], q[4], q[5] FROM ( \
                 SELECT {tod} // {bin_ms} AS bin, \
                        count(*) AS n, \
                        quantile_cont(mg_dl, [0.05, 0.25, 0.5, 0.75, 0.95]) AS q \
                 FROM glucose_readings \
                 WHERE patient_id = $1 AND at_ms >= $2 AND at_ms < $3 \
                 GROUP BY bin) \
             ORDER BY bin",
            tod = time_of_day_sql(offset_ms),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::batch::WriteBatch;
    use crate::model::{Body, Glucose, Reading};

    const MIN: i64 = 60_000;
    /// 2026-11-18T00:00:00Z.
    const DAY0: i64 = 1_794_960_000_000;

    fn reading(id: &str, patient: u64, at_ms: EpochMs, mg_dl: f64) -> Reading {
        Reading {
            id: id.into(),
            at_ms,
            body: Body::Glucose(Glucose {
                patient_id: patient,
                device_id: 1000 + patient,
                mg_dl,
                location: None,
            }),
        }
    }

    fn loaded(rows: &[(&str, u64, EpochMs, f64)]) -> Analytics {
        let a = Analytics::open(":memory:").unwrap();
        a.append_batch(&WriteBatch {
            readings: rows
                .iter()
                .map(|&(id, p, at, v)| reading(id, p, at, v))
                .collect(),
            received_at_ms: 1,
            ..WriteBatch::default()
        })
        .unwrap();
        a
    }

    #[test]
    fn the_grouped_metrics_agree_with_the_per_patient_query() {
        // Patient 1 spans every band, patient 2 has one reading, patient 3 two readings with
        // the same newest time (the larger id wins), patient 4 only readings outside the
        // period, patient 5 one reading exactly at the period's end (excluded).
        let mut rows: Vec<(String, u64, EpochMs, f64)> =
            [40.0, 60.0, 70.0, 180.0, 181.0, 250.0, 251.0, 120.0]
                .iter()
                .enumerate()
                .map(|(i, &v)| (format!("a{i}"), 1, DAY0 + i as i64 * 5 * MIN, v))
                .collect();
        rows.push(("b".into(), 2, DAY0 + 3 * MIN, 99.0));
        rows.push(("c1".into(), 3, DAY0 + 10 * MIN, 150.0));
        rows.push(("c3".into(), 3, DAY0 + 20 * MIN, 210.0));
        rows.push(("c2".into(), 3, DAY0 + 20 * MIN, 90.0));
        rows.push(("d".into(), 4, DAY0 - 1, 100.0));
        rows.push(("e".into(), 5, DAY0 + 60 * MIN, 100.0));
        let refs: Vec<_> = rows
            .iter()
            .map(|(id, p, t, v)| (id.as_str(), *p, *t, *v))
            .collect();
        let a = loaded(&refs);
        let (from, to) = (DAY0, DAY0 + 60 * MIN);
        let all = a.patient_overviews(None, from, to, 300).unwrap();
        let ids: Vec<u64> = all.iter().map(|o| o.patient_id).collect();
        assert_eq!(ids, [1, 2, 3]);
        for o in &all {
            assert_eq!(
                o.metrics,
                a.cgm_metrics(o.patient_id, from, to, 300).unwrap()
            );
        }
        assert_eq!(
            (all[0].last_at_ms, all[0].last_mg_dl),
            (DAY0 + 35 * MIN, 120.0)
        );
        assert_eq!(
            (all[1].last_at_ms, all[1].last_mg_dl),
            (DAY0 + 3 * MIN, 99.0)
        );
        assert_eq!(
            (all[2].last_at_ms, all[2].last_mg_dl),
            (DAY0 + 20 * MIN, 210.0)
        );
        let bands = &all[0].metrics;
        assert_eq!(bands.count, 8);
        assert_eq!(bands.expected, 12);
        // The listed patients only; none listed means none, not all.
        let some = a
            .patient_overviews(Some(&[3, 2, 4]), from, to, 300)
            .unwrap();
        assert_eq!(some, all[1..].to_vec());
        assert!(
            a.patient_overviews(Some(&[]), from, to, 300)
                .unwrap()
                .is_empty()
        );
        assert!(a.patient_overviews(None, from, to, 0).is_err());
        // A patient without readings gets what the per-patient query answers for them.
        assert_eq!(
            CgmMetrics::without_readings(12),
            a.cgm_metrics(4, from, to, 300).unwrap()
        );
    }

    fn with(count: u64, expected: u64) -> CgmMetrics {
        CgmMetrics {
            count,
            mean_mg_dl: (count > 0).then_some(150.0),
            ..CgmMetrics::without_readings(expected)
        }
    }

    #[test]
    fn gmi_is_reportable_from_exactly_70_percent_of_the_expected_readings() {
        assert!(with(7, 10).gmi_reportable());
        assert!(!with(6, 10).gmi_reportable());
        // 14 days at 5 minutes: 4032 expected, 70 % is 2822.4 readings.
        assert!(with(2823, 4032).gmi_reportable());
        assert!(!with(2822, 4032).gmi_reportable());
        // 5 days: 1440 expected, 1008 is exactly 70 %.
        assert!(with(1008, 1440).gmi_reportable());
        assert!(!with(1007, 1440).gmi_reportable());
        assert!(with(2000, 1440).gmi_reportable(), "more than expected");
        assert!(!with(0, 0).gmi_reportable());
        assert!(!with(0, 10).gmi_reportable());
    }

    #[test]
    fn the_offset_folds_the_agp_onto_the_viewers_day() {
        let a = loaded(&[
            ("a", 1, DAY0 + 30 * MIN, 100.0),              // 00:30 UTC
            ("b", 1, DAY0 + 23 * 60 * MIN, 200.0),         // 23:00 UTC
            ("c", 1, DAY0 + 1440 * MIN + 45 * MIN, 120.0), // 00:45 UTC the next day
        ]);
        let (from, to) = (DAY0, DAY0 + 2 * 1440 * MIN);
        let at = |off| {
            a.agp_with_offset(1, from, to, 60, off)
                .unwrap()
                .iter()
                .map(|b| (b.start_minute, b.count, b.p50))
                .collect::<Vec<_>>()
        };
        assert_eq!(at(0), [(0, 2, 110.0), (23 * 60, 1, 200.0)]);
        assert_eq!(
            at(0),
            a.agp(1, from, to, 60)
                .unwrap()
                .iter()
                .map(|b| (b.start_minute, b.count, b.p50))
                .collect::<Vec<_>>()
        );
        // UTC+2: 02:30, 01:00 (the 23:00 reading wraps past midnight), 02:45.
        assert_eq!(at(120), [(60, 1, 200.0), (120, 2, 110.0)]);
        // UTC−1: 23:30 and 23:45 the evening before, 22:00.
        assert_eq!(at(-60), [(22 * 60, 1, 200.0), (23 * 60, 2, 110.0)]);
        assert!(a.agp_with_offset(1, from, to, 60, 1440).is_err());
    }

    #[test]
    fn the_offset_moves_readings_across_midnight_into_the_viewers_day() {
        let a = loaded(&[
            ("a", 1, DAY0 - 30 * MIN, 100.0), // 23:30 UTC on the 17th
            ("b", 1, DAY0 + 30 * MIN, 200.0), // 00:30 UTC on the 18th
        ]);
        let days = |off| {
            a.daily_averages_with_offset(&[1], DAY0 - 1440 * MIN, DAY0 + 1440 * MIN, off)
                .unwrap()
                .iter()
                .map(|d| (d.day.to_string(), d.count, d.mean_mg_dl))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            days(0),
            [
                ("2026-11-17".into(), 1, 100.0),
                ("2026-11-18".into(), 1, 200.0)
            ]
        );
        assert_eq!(days(60), [("2026-11-18".to_owned(), 2, 150.0)]);
        assert_eq!(days(-60), [("2026-11-17".to_owned(), 2, 150.0)]);
        assert_eq!(
            a.daily_averages(&[1], DAY0 - 1440 * MIN, DAY0 + 1440 * MIN)
                .unwrap(),
            a.daily_averages_with_offset(&[1], DAY0 - 1440 * MIN, DAY0 + 1440 * MIN, 0)
                .unwrap()
        );
    }
}
