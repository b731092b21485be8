//! The value models: the physiological model (daily routine, meals, dawn phenomenon, exercise, alcohol, nocturnal lows,
//! slow drift, CGM sensor noise and compression lows) and the original prototype's sine-plus-noise formula.

use std::collections::VecDeque;
use std::f64::consts::PI;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::config::Profile;
use crate::time::{DAY, HOUR, MINUTE, day_of, hour_of_day, weekday};
use crate::{GLUCOSE_MAX_MG_DL, GLUCOSE_MIN_MG_DL};

/// Per-profile parameters of the physiological model. Amplitudes in mg/dL, times in minutes.
#[derive(Debug, Clone)]
pub(crate) struct Params {
    /// Fasting baseline.
    base: f64,
    /// Day-to-day shift of the baseline (SD).
    day_sd: f64,
    /// Slow mean-reverting drift (SD and time constant).
    drift_sd: f64,
    drift_tau_min: f64,
    /// Height of the dawn-phenomenon rise around 06:30.
    dawn: f64,
    /// Meal excursion: mean and SD of the peak rise, minutes to peak, SD of meal times.
    meal_amp: f64,
    meal_amp_sd: f64,
    meal_peak_min: f64,
    meal_time_sd_min: f64,
    skip_breakfast: f64,
    /// Fraction of a meal's rise that comes back as a later dip (insulin mismatch, reactive low).
    undershoot: f64,
    snacks_per_day: f64,
    snack_amp: f64,
    /// Exercise: chance per weekday / weekend day, and the dip.
    exercise_weekday: f64,
    exercise_weekend: f64,
    exercise_amp: f64,
    /// Nights out: chance per weeknight / Friday-Saturday night, the rise from drinks and the delayed alcohol low.
    party_weeknight: f64,
    party_weekend: f64,
    drinks_amp: f64,
    alcohol_low: f64,
    /// Nocturnal low: chance per night and depth of the dip.
    night_low_prob: f64,
    night_low_amp: f64,
    /// Chance per night of a CGM compression low (lying on the sensor).
    compression_prob: f64,
    /// Chance of a work day on weekdays.
    works: f64,
    /// CGM error: AR(1) relative error (stationary SD, 5-minute autocorrelation) plus white noise in mg/dL.
    sensor_rel_sd: f64,
    sensor_phi: f64,
    sensor_white_sd: f64,
}

impl Params {
    pub(crate) fn for_profile(profile: Profile) -> Params {
        let common = Params {
            base: 130.0,
            day_sd: 10.0,
            drift_sd: 15.0,
            drift_tau_min: 90.0,
            dawn: 15.0,
            meal_amp: 60.0,
            meal_amp_sd: 20.0,
            meal_peak_min: 60.0,
            meal_time_sd_min: 30.0,
            skip_breakfast: 0.1,
            undershoot: 0.3,
            snacks_per_day: 0.8,
            snack_amp: 25.0,
            exercise_weekday: 0.1,
            exercise_weekend: 0.2,
            exercise_amp: 30.0,
            party_weeknight: 0.0,
            party_weekend: 0.0,
            drinks_amp: 0.0,
            alcohol_low: 0.0,
            night_low_prob: 0.0,
            night_low_amp: 0.0,
            compression_prob: 0.08,
            works: 0.9,
            sensor_rel_sd: 0.05,
            sensor_phi: 0.8,
            sensor_white_sd: 2.0,
        };
        match profile {
            Profile::Diabetic => Params {
                base: 147.0,
                day_sd: 12.0,
                drift_sd: 30.0,
                drift_tau_min: 100.0,
                dawn: 22.0,
                meal_amp: 90.0,
                meal_amp_sd: 25.0,
                meal_peak_min: 70.0,
                undershoot: 0.55,
                night_low_prob: 0.15,
                night_low_amp: 45.0,
                ..common
            },
            Profile::Athlete => Params {
                base: 94.0,
                day_sd: 3.0,
                drift_sd: 9.0,
                drift_tau_min: 60.0,
                dawn: 4.0,
                meal_amp: 36.0,
                meal_amp_sd: 8.0,
                meal_peak_min: 35.0,
                undershoot: 0.25,
                snacks_per_day: 1.2,
                snack_amp: 14.0,
                exercise_weekday: 0.75,
                exercise_weekend: 0.85,
                exercise_amp: 16.0,
                compression_prob: 0.05,
                sensor_rel_sd: 0.05,
                sensor_white_sd: 1.5,
                ..common
            },
            Profile::PartyGoer => Params {
                base: 165.0,
                day_sd: 18.0,
                drift_sd: 38.0,
                drift_tau_min: 90.0,
                dawn: 18.0,
                meal_amp: 105.0,
                meal_amp_sd: 35.0,
                meal_peak_min: 70.0,
                meal_time_sd_min: 60.0,
                skip_breakfast: 0.4,
                undershoot: 0.6,
                snacks_per_day: 1.5,
                snack_amp: 45.0,
                party_weeknight: 0.12,
                party_weekend: 0.8,
                drinks_amp: 70.0,
                alcohol_low: 100.0,
                ..common
            },
            Profile::LowGlucose => Params {
                base: 119.0,
                day_sd: 10.0,
                drift_sd: 26.0,
                drift_tau_min: 90.0,
                dawn: 10.0,
                meal_amp: 75.0,
                meal_amp_sd: 20.0,
                meal_peak_min: 65.0,
                undershoot: 0.5,
                snacks_per_day: 0.5,
                snack_amp: 25.0,
                night_low_prob: 0.75,
                night_low_amp: 55.0,
                ..common
            },
            Profile::Elderly => Params {
                base: 138.0,
                day_sd: 8.0,
                drift_sd: 24.0,
                drift_tau_min: 150.0,
                dawn: 15.0,
                meal_amp: 55.0,
                meal_amp_sd: 12.0,
                meal_peak_min: 95.0,
                meal_time_sd_min: 20.0,
                skip_breakfast: 0.03,
                undershoot: 0.1,
                snacks_per_day: 0.5,
                snack_amp: 20.0,
                exercise_weekday: 0.0,
                exercise_weekend: 0.0,
                compression_prob: 0.15,
                works: 0.0,
                ..common
            },
        }
    }
}

/// A smooth excursion starting at `t0`: `amp · x² · e^(2(1−x))` with `x = (t − t0) / peak`, peaking at `t0 + peak`.
#[derive(Debug, Clone, Copy)]
struct Bump {
    t0: i64,
    amp: f64,
    peak_secs: f64,
}

impl Bump {
    fn at(&self, t: i64) -> f64 {
        if t < self.t0 {
            return 0.0;
        }
        let x = (t - self.t0) as f64 / self.peak_secs;
        if x > 8.0 {
            return 0.0;
        }
        self.amp * x * x * (2.0 * (1.0 - x)).exp()
    }
}

/// What one patient does on one day, and the glucose excursions that follow from it.
#[derive(Debug, Clone)]
pub(crate) struct DayPlan {
    day: i64,
    offset: f64,
    bumps: Vec<Bump>,
    work: Option<(i64, i64)>,
    gym: Option<(i64, i64)>,
    out: Vec<(i64, i64)>,
}

impl DayPlan {
    fn location(&self, t: i64) -> Option<&'static str> {
        let inside = |span: &(i64, i64)| span.0 <= t && t < span.1;
        if self.gym.as_ref().is_some_and(inside) {
            Some("gym")
        } else if self.out.iter().any(inside) {
            Some("out")
        } else if self.work.as_ref().is_some_and(inside) {
            Some("work")
        } else {
            None
        }
    }
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    rng.sample(StandardNormal)
}

fn around(rng: &mut ChaCha8Rng, at: i64, sd_min: f64) -> i64 {
    at + (normal(rng) * sd_min * MINUTE as f64).round() as i64
}

/// Plans days in order (routine from one random stream, amplitudes from another) and keeps the last two.
#[derive(Debug)]
pub(crate) struct Planner {
    profile: Profile,
    params: Params,
    routine_rng: ChaCha8Rng,
    physio_rng: ChaCha8Rng,
    days: VecDeque<DayPlan>,
}

impl Planner {
    pub(crate) fn new(
        profile: Profile,
        routine_rng: ChaCha8Rng,
        physio_rng: ChaCha8Rng,
    ) -> Planner {
        Planner {
            profile,
            params: Params::for_profile(profile),
            routine_rng,
            physio_rng,
            days: VecDeque::new(),
        }
    }

    /// Makes sure the plans for the day containing `t` and the day before exist. Times must not go backwards by more
    /// than a day.
    fn ensure(&mut self, t: i64) {
        let day = day_of(t);
        if self.days.back().is_some_and(|p| p.day >= day) {
            return;
        }
        let mut next = self.days.back().map_or(day - 1, |p| p.day + 1);
        if next < day - 1 {
            // Only yesterday and today matter; skip straight there.
            next = day - 1;
        }
        while next <= day {
            let plan = self.plan_day(next);
            self.days.push_back(plan);
            next += 1;
        }
        while self.days.len() > 2 {
            self.days.pop_front();
        }
    }

    fn plan_day(&mut self, day: i64) -> DayPlan {
        let p = &self.params;
        let r = &mut self.routine_rng;
        let d0 = day * DAY;
        let wd = weekday(day);
        let weekend = wd >= 5;
        let friday_or_saturday = wd == 4 || wd == 5;

        let work = (!weekend && r.random::<f64>() < p.works).then(|| {
            (
                around(r, d0 + 8 * HOUR + 30 * MINUTE, 30.0),
                around(r, d0 + 17 * HOUR, 45.0),
            )
        });
        let breakfast_at = if weekend {
            9 * HOUR
        } else {
            7 * HOUR + 30 * MINUTE
        };
        let dinner_at = if self.profile == Profile::PartyGoer {
            20 * HOUR
        } else {
            19 * HOUR
        };
        let mut meals = Vec::with_capacity(3);
        if r.random::<f64>() >= p.skip_breakfast {
            meals.push(around(r, d0 + breakfast_at, p.meal_time_sd_min));
        }
        meals.push(around(r, d0 + 12 * HOUR + 30 * MINUTE, p.meal_time_sd_min));
        let dinner = around(r, d0 + dinner_at, p.meal_time_sd_min);
        meals.push(dinner);
        let mut out = Vec::new();
        if r.random::<f64>() < 0.12 {
            out.push((dinner - 30 * MINUTE, dinner + 90 * MINUTE));
        }
        let mut snacks = Vec::new();
        for _ in 0..3 {
            if r.random::<f64>() < p.snacks_per_day / 3.0 {
                snacks.push(d0 + 10 * HOUR + r.random_range(0..12 * HOUR));
            }
        }
        let exercise_chance = if weekend {
            p.exercise_weekend
        } else {
            p.exercise_weekday
        };
        let gym = (r.random::<f64>() < exercise_chance).then(|| {
            let start = if weekend {
                around(r, d0 + 9 * HOUR + 30 * MINUTE, 60.0)
            } else if work.is_some() {
                around(r, d0 + 17 * HOUR + 45 * MINUTE, 30.0)
            } else {
                around(r, d0 + 10 * HOUR, 60.0)
            };
            (start, start + r.random_range(45..=90) * MINUTE)
        });
        let party_chance = if friday_or_saturday {
            p.party_weekend
        } else {
            p.party_weeknight
        };
        let party = (r.random::<f64>() < party_chance).then(|| {
            (
                around(r, d0 + 22 * HOUR, 45.0),
                around(r, d0 + DAY + 2 * HOUR + 30 * MINUTE, 60.0),
            )
        });
        if let Some(span) = party {
            out.push(span);
        }
        let night_low = (r.random::<f64>() < p.night_low_prob)
            .then(|| d0 + 30 * MINUTE + r.random_range(0..150 * MINUTE));

        // Amplitudes.
        let g = &mut self.physio_rng;
        let peak = p.meal_peak_min * MINUTE as f64;
        let offset = normal(g) * p.day_sd;
        let mut bumps = Vec::with_capacity(12);
        for (i, &t) in meals.iter().enumerate() {
            let size = if i + 1 == meals.len() { 1.1 } else { 1.0 };
            let amp = (p.meal_amp + normal(g) * p.meal_amp_sd).max(0.25 * p.meal_amp) * size;
            bumps.push(Bump {
                t0: t,
                amp,
                peak_secs: peak,
            });
            if p.undershoot > 0.0 {
                let dip = p.undershoot * amp * g.random_range(0.6..1.4);
                bumps.push(Bump {
                    t0: t + (1.3 * peak) as i64,
                    amp: -dip,
                    peak_secs: 1.4 * peak,
                });
            }
        }
        for &t in &snacks {
            bumps.push(Bump {
                t0: t,
                amp: p.snack_amp * g.random_range(0.5..1.5),
                peak_secs: 0.8 * peak,
            });
        }
        if let Some((from, to)) = gym {
            let amp = p.exercise_amp * g.random_range(0.7..1.3);
            bumps.push(Bump {
                t0: from,
                amp: -amp,
                peak_secs: 0.6 * (to - from) as f64,
            });
        }
        if let Some((from, to)) = party {
            bumps.push(Bump {
                t0: from + 30 * MINUTE,
                amp: p.drinks_amp * g.random_range(0.6..1.4),
                peak_secs: 75.0 * 60.0,
            });
            bumps.push(Bump {
                t0: to,
                amp: p.snack_amp * g.random_range(0.5..1.5),
                peak_secs: 0.8 * peak,
            });
            let low = p.alcohol_low * g.random_range(0.7..1.3);
            bumps.push(Bump {
                t0: to + HOUR,
                amp: -low,
                peak_secs: 150.0 * 60.0,
            });
        }
        if let Some(t) = night_low {
            bumps.push(Bump {
                t0: t,
                amp: -p.night_low_amp * g.random_range(0.7..1.3),
                peak_secs: 80.0 * 60.0,
            });
        }
        DayPlan {
            day,
            offset,
            bumps,
            work,
            gym,
            out,
        }
    }

    /// Where the patient is at `t`: `gym`, `out`, `work` or `home`.
    pub(crate) fn location(&mut self, t: i64) -> &'static str {
        self.ensure(t);
        self.days
            .iter()
            .rev()
            .find_map(|p| p.location(t))
            .unwrap_or("home")
    }
}

/// The physiological model's true (blood) glucose for one patient.
#[derive(Debug)]
pub(crate) struct Physiology {
    drift: f64,
    drift_step: Option<i64>,
    drift_rng: ChaCha8Rng,
}

/// Step of the slow drift process.
const DRIFT_STEP: i64 = 5 * MINUTE;

impl Physiology {
    pub(crate) fn new(drift_rng: ChaCha8Rng) -> Physiology {
        Physiology {
            drift: 0.0,
            drift_step: None,
            drift_rng,
        }
    }

    /// True glucose at `t` (mg/dL, clamped to 40..=400). Calls must come in non-decreasing `t`.
    pub(crate) fn glucose(&mut self, planner: &mut Planner, t: i64) -> f64 {
        planner.ensure(t);
        let p = &planner.params;
        let step = t.div_euclid(DRIFT_STEP);
        match self.drift_step {
            None => self.drift = normal(&mut self.drift_rng) * p.drift_sd,
            Some(last) => {
                let a = (-(DRIFT_STEP as f64) / (p.drift_tau_min * MINUTE as f64)).exp();
                let innovation = (1.0 - a * a).sqrt() * p.drift_sd;
                // Long gaps (never more than a day in practice) are walked step by step to keep the process exact.
                for _ in last..step {
                    self.drift = a * self.drift + innovation * normal(&mut self.drift_rng);
                }
            }
        }
        self.drift_step = Some(step.max(self.drift_step.unwrap_or(step)));

        let today = planner.days.back().map_or(0.0, |d| d.offset);
        let yesterday = if planner.days.len() > 1 {
            planner.days[0].offset
        } else {
            today
        };
        let blend = (hour_of_day(t) / 6.0).min(1.0);
        let offset = yesterday + (today - yesterday) * blend;
        let h = hour_of_day(t);
        let dawn = p.dawn * (-(h - 6.5).powi(2) / (2.0 * 1.2 * 1.2)).exp();
        let excursions: f64 = planner
            .days
            .iter()
            .flat_map(|d| d.bumps.iter())
            .map(|b| b.at(t))
            .sum();
        (p.base + offset + self.drift + dawn + excursions)
            .clamp(GLUCOSE_MIN_MG_DL, GLUCOSE_MAX_MG_DL)
    }
}

/// CGM sensor error: autocorrelated (AR(1)) relative error, white noise, and occasional compression lows at night.
#[derive(Debug)]
pub(crate) struct CgmSensor {
    rng: ChaCha8Rng,
    rel_sd: f64,
    phi: f64,
    white_sd: f64,
    compression_prob: f64,
    error: f64,
    last_t: Option<i64>,
    planned_day: Option<i64>,
    compression: Option<(i64, i64, f64)>,
}

impl CgmSensor {
    pub(crate) fn new(profile: Profile, rng: ChaCha8Rng) -> CgmSensor {
        let p = Params::for_profile(profile);
        CgmSensor {
            rng,
            rel_sd: p.sensor_rel_sd,
            phi: p.sensor_phi,
            white_sd: p.sensor_white_sd,
            compression_prob: p.compression_prob,
            error: 0.0,
            last_t: None,
            planned_day: None,
            compression: None,
        }
    }

    /// The sensor's reading of `glucose` at `t` (calls in non-decreasing `t`).
    pub(crate) fn read(&mut self, t: i64, glucose: f64) -> f64 {
        match self.last_t {
            None => self.error = normal(&mut self.rng) * self.rel_sd,
            Some(last) => {
                let a = self.phi.powf((t - last).max(0) as f64 / DRIFT_STEP as f64);
                self.error =
                    a * self.error + (1.0 - a * a).sqrt() * self.rel_sd * normal(&mut self.rng);
            }
        }
        self.last_t = Some(t);
        let day = day_of(t);
        if self.planned_day != Some(day) {
            self.planned_day = Some(day);
            self.compression = (self.rng.random::<f64>() < self.compression_prob).then(|| {
                let from = day * DAY + 30 * MINUTE + self.rng.random_range(0..270 * MINUTE);
                let len = self.rng.random_range(20..=50) * MINUTE;
                (from, from + len, self.rng.random_range(0.3..0.45))
            });
        }
        let mut value = glucose * (1.0 + self.error) + normal(&mut self.rng) * self.white_sd;
        if let Some((from, to, depth)) = self.compression
            && from <= t
            && t < to
        {
            let u = (t - from) as f64 / (to - from) as f64;
            value *= 1.0 - depth * (PI * u).sin();
        }
        value.clamp(GLUCOSE_MIN_MG_DL, GLUCOSE_MAX_MG_DL)
    }

    /// True when `t` falls in tonight's compression low (for tests and diagnostics).
    #[cfg(test)]
    pub(crate) fn in_compression(&self, t: i64) -> bool {
        self.compression
            .is_some_and(|(from, to, _)| from <= t && t < to)
    }
}

/// Fingerstick meter error: independent, about 4% relative (well inside ISO 15197's ±15%).
pub(crate) fn meter_reading(rng: &mut ChaCha8Rng, glucose: f64) -> f64 {
    (glucose * (1.0 + 0.04 * normal(rng))).clamp(GLUCOSE_MIN_MG_DL, GLUCOSE_MAX_MG_DL)
}

/// The prototype model: `scale · (sin(2π · 0.25 · h) + N(0, 0.3)) + offset`, `h` = hours since the simulation start
/// (a 4-hour period). Not clamped, exactly as the prototype computed it.
pub(crate) fn prototype_value(
    profile: Profile,
    hours_since_start: f64,
    rng: &mut ChaCha8Rng,
) -> f64 {
    let (scale, offset) = profile.prototype_scale_offset();
    let noise = 0.3 * normal(rng);
    scale * ((2.0 * PI * 0.25 * hours_since_start).sin() + noise) + offset
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Purpose, rng_for};

    fn planner(profile: Profile) -> Planner {
        Planner::new(
            profile,
            rng_for(1, 1, Purpose::Routine),
            rng_for(1, 1, Purpose::Physiology),
        )
    }

    #[test]
    fn bump_peaks_at_peak_time() {
        let b = Bump {
            t0: 1000,
            amp: 50.0,
            peak_secs: 3600.0,
        };
        assert_eq!(b.at(999), 0.0);
        assert!((b.at(4600) - 50.0).abs() < 1e-9);
        assert!(b.at(4000) < 50.0 && b.at(6000) < 50.0);
        assert_eq!(b.at(1000 + 9 * 3600), 0.0);
    }

    #[test]
    fn meals_raise_glucose_after_eating() {
        // Averaged over many days, glucose an hour after lunch is well above glucose before breakfast.
        let mut pl = planner(Profile::Diabetic);
        let mut phys = Physiology::new(rng_for(1, 1, Purpose::Sensor));
        let (mut pre, mut post) = (0.0, 0.0);
        let day0 = 20_458;
        for d in 0..60 {
            let base = (day0 + d) * DAY;
            pre += phys.glucose(&mut pl, base + 5 * HOUR);
            post += phys.glucose(&mut pl, base + 13 * HOUR + 40 * MINUTE);
        }
        assert!(post / 60.0 > pre / 60.0 + 30.0, "pre {pre} post {post}");
    }

    #[test]
    fn athletes_go_to_the_gym_and_elderly_do_not_work() {
        let mut a = planner(Profile::Athlete);
        let mut e = planner(Profile::Elderly);
        let day0 = 20_458;
        let mut gym = 0;
        let mut work = 0;
        for d in 0..14 {
            for m in (0..DAY).step_by(300) {
                let t = (day0 + d) * DAY + m;
                gym += (a.location(t) == "gym") as u32;
                work += (e.location(t) == "work") as u32;
            }
        }
        assert!(gym > 50, "{gym}");
        assert_eq!(work, 0);
    }

    #[test]
    fn compression_lows_pull_readings_down() {
        let mut s = CgmSensor::new(Profile::Elderly, rng_for(3, 3, Purpose::Sensor));
        let mut seen = false;
        for i in 0..(60 * 288) {
            let t = 20_458 * DAY + i * 300;
            let v = s.read(t, 150.0);
            if s.in_compression(t) && v < 110.0 {
                seen = true;
            }
        }
        assert!(seen);
    }

    #[test]
    fn prototype_formula() {
        let mut rng = rng_for(1, 1, Purpose::Prototype);
        // At h = 1 the sine is at its maximum (period 4 h).
        let n = 2000;
        let mean: f64 = (0..n)
            .map(|_| prototype_value(Profile::Athlete, 1.0, &mut rng))
            .sum::<f64>()
            / n as f64;
        assert!((mean - 110.0).abs() < 1.0, "{mean}");
    }
}
