//! Standard CGM summary statistics (mean, SD, coefficient of variation, time in/below/above range), used by the tests,
//! the README's calibration table and anyone checking a profile.

use serde::Serialize;

use crate::config::Profile;

/// Summary of a series of glucose values taken at a regular cadence (so "time" is the share of readings).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GlucoseStats {
    /// Number of readings.
    pub count: usize,
    /// Mean, mg/dL.
    pub mean: f64,
    /// Standard deviation (population), mg/dL.
    pub sd: f64,
    /// Coefficient of variation, SD / mean (a fraction, 0.36 = 36%).
    pub cv: f64,
    /// Share of readings in 70..=180 mg/dL.
    pub time_in_range: f64,
    /// Share below 70 mg/dL.
    pub time_below_range: f64,
    /// Share below 54 mg/dL (level 2 hypoglycaemia).
    pub time_below_54: f64,
    /// Share above 180 mg/dL.
    pub time_above_range: f64,
    /// Share above 250 mg/dL.
    pub time_above_250: f64,
}

/// Computes [`GlucoseStats`]; an empty series gives zeros.
pub fn glucose_stats<I: IntoIterator<Item = f64>>(values: I) -> GlucoseStats {
    let values: Vec<f64> = values.into_iter().collect();
    let n = values.len();
    if n == 0 {
        return GlucoseStats {
            count: 0,
            mean: 0.0,
            sd: 0.0,
            cv: 0.0,
            time_in_range: 0.0,
            time_below_range: 0.0,
            time_below_54: 0.0,
            time_above_range: 0.0,
            time_above_250: 0.0,
        };
    }
    let nf = n as f64;
    let mean = values.iter().sum::<f64>() / nf;
    let sd = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / nf).sqrt();
    let share = |f: &dyn Fn(f64) -> bool| values.iter().filter(|&&v| f(v)).count() as f64 / nf;
    GlucoseStats {
        count: n,
        mean,
        sd,
        cv: sd / mean,
        time_in_range: share(&|v| (70.0..=180.0).contains(&v)),
        time_below_range: share(&|v| v < 70.0),
        time_below_54: share(&|v| v < 54.0),
        time_above_range: share(&|v| v > 180.0),
        time_above_250: share(&|v| v > 250.0),
    }
}

/// The band a profile's 14-day CGM statistics must fall in, from published data on a comparable population. Every
/// field is an inclusive `(low, high)` pair; shares and CV are fractions. The README cites the sources.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ReferenceRange {
    /// Mean glucose, mg/dL.
    pub mean: (f64, f64),
    /// Coefficient of variation.
    pub cv: (f64, f64),
    /// Time in 70..=180 mg/dL.
    pub time_in_range: (f64, f64),
    /// Time below 70 mg/dL.
    pub time_below_range: (f64, f64),
    /// The comparable population.
    pub population: &'static str,
}

impl ReferenceRange {
    /// The reference band for a profile.
    pub fn for_profile(profile: Profile) -> ReferenceRange {
        match profile {
            Profile::Diabetic => ReferenceRange {
                mean: (135.0, 185.0),
                cv: (0.28, 0.40),
                time_in_range: (0.50, 0.80),
                time_below_range: (0.01, 0.08),
                population: "adults with type 1 diabetes using CGM, from registry care to consensus targets",
            },
            Profile::Athlete => ReferenceRange {
                mean: (88.0, 110.0),
                cv: (0.11, 0.23),
                time_in_range: (0.93, 1.0),
                time_below_range: (0.0, 0.05),
                population: "healthy non-diabetic adults (Shah et al. 2019)",
            },
            Profile::PartyGoer => ReferenceRange {
                mean: (150.0, 200.0),
                cv: (0.33, 0.48),
                time_in_range: (0.40, 0.65),
                time_below_range: (0.02, 0.12),
                population: "young adults with type 1 diabetes and unstable glycaemia",
            },
            Profile::LowGlucose => ReferenceRange {
                mean: (100.0, 140.0),
                cv: (0.33, 0.48),
                time_in_range: (0.60, 0.85),
                time_below_range: (0.06, 0.20),
                population: "type 1 diabetes with impaired hypoglycaemia awareness",
            },
            Profile::Elderly => ReferenceRange {
                mean: (140.0, 185.0),
                cv: (0.17, 0.32),
                time_in_range: (0.55, 0.90),
                time_below_range: (0.0, 0.04),
                population: "older adults with type 2 diabetes",
            },
        }
    }

    /// The metrics of `stats` that fall outside this band, as readable messages (empty when all are inside).
    pub fn violations(&self, stats: &GlucoseStats) -> Vec<String> {
        let mut out = Vec::new();
        let mut check = |name: &str, value: f64, (low, high): (f64, f64)| {
            if !(low..=high).contains(&value) {
                out.push(format!("{name} {value:.3} outside {low}..={high}"));
            }
        };
        check("mean", stats.mean, self.mean);
        check("cv", stats.cv, self.cv);
        check("time_in_range", stats.time_in_range, self.time_in_range);
        check(
            "time_below_range",
            stats.time_below_range,
            self.time_below_range,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_series() {
        let s = glucose_stats([60.0, 100.0, 140.0, 200.0]);
        assert_eq!(s.count, 4);
        assert!((s.mean - 125.0).abs() < 1e-9);
        assert!((s.time_in_range - 0.5).abs() < 1e-9);
        assert!((s.time_below_range - 0.25).abs() < 1e-9);
        assert!((s.time_above_range - 0.25).abs() < 1e-9);
        assert!((s.cv - s.sd / 125.0).abs() < 1e-12);
        assert_eq!(glucose_stats(std::iter::empty()).count, 0);
    }
}
