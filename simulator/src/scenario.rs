//! Named scenarios layered on top of the models (`night-hypo`, `missed-insulin`, `sensor-failure`, `device-silent`,
//! `late-burst`): each targets one patient and one time window, and they compose.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};

use crate::config::ParseError;
use crate::duration::{format_duration, parse_duration};
use crate::time::{DAY, HOUR};

/// What a scenario does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScenarioKind {
    /// A nocturnal hypoglycaemia: glucose falls to about 48 mg/dL and recovers. Default 02:00, 2h30m.
    NightHypo,
    /// A missed bolus: glucose climbs to about 320 mg/dL, stays, then is corrected. Default 12:00, 6h.
    MissedInsulin,
    /// A failing sensor: a flat line, then implausible jumps, then no readings, with sensor error codes in the
    /// telemetry. Default 14:00, 3h.
    SensorFailure,
    /// The device and its gateway go quiet: no readings and no telemetry, nothing uploaded later. Default 09:00, 6h.
    DeviceSilent,
    /// A disconnection, then every reading from it uploaded at once after reconnecting, out of order. Default 16:00, 2h.
    LateBurst,
}

impl ScenarioKind {
    /// Every scenario kind.
    pub const ALL: [ScenarioKind; 5] = [
        ScenarioKind::NightHypo,
        ScenarioKind::MissedInsulin,
        ScenarioKind::SensorFailure,
        ScenarioKind::DeviceSilent,
        ScenarioKind::LateBurst,
    ];

    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ScenarioKind::NightHypo => "night-hypo",
            ScenarioKind::MissedInsulin => "missed-insulin",
            ScenarioKind::SensorFailure => "sensor-failure",
            ScenarioKind::DeviceSilent => "device-silent",
            ScenarioKind::LateBurst => "late-burst",
        }
    }

    /// Default start as seconds after midnight (UTC, taken as the patient's local time).
    pub fn default_time_of_day_secs(self) -> i64 {
        match self {
            ScenarioKind::NightHypo => 2 * HOUR,
            ScenarioKind::MissedInsulin => 12 * HOUR,
            ScenarioKind::SensorFailure => 14 * HOUR,
            ScenarioKind::DeviceSilent => 9 * HOUR,
            ScenarioKind::LateBurst => 16 * HOUR,
        }
    }

    /// Default length.
    pub fn default_duration(self) -> Duration {
        match self {
            ScenarioKind::NightHypo => Duration::minutes(150),
            ScenarioKind::MissedInsulin => Duration::hours(6),
            ScenarioKind::SensorFailure => Duration::hours(3),
            ScenarioKind::DeviceSilent => Duration::hours(6),
            ScenarioKind::LateBurst => Duration::hours(2),
        }
    }
}

impl fmt::Display for ScenarioKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ScenarioKind {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim().to_ascii_lowercase();
        ScenarioKind::ALL
            .into_iter()
            .find(|k| k.as_str() == name)
            .ok_or_else(|| ParseError::Unknown {
                kind: "scenario",
                value: s.to_string(),
                expected: "night-hypo missed-insulin sensor-failure device-silent late-burst",
            })
    }
}

/// When a scenario starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScenarioTime {
    /// At this instant.
    At(DateTime<Utc>),
    /// This long after the simulation start.
    AfterStart(Duration),
}

/// A scenario aimed at one patient and one window.
///
/// Text form (for `--scenario` and [`FromStr`]): `name[:key=value,…]` with keys `patient` (id, default 1),
/// `at` (RFC 3339 instant, or an offset from the start such as `1d2h` / `+26h`) and `for` (a duration such as `90m`).
/// Without `at`, the scenario starts at its kind's default time of day, on the first day where that is at least one hour
/// after the simulation start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// What happens.
    pub kind: ScenarioKind,
    /// The patient it happens to.
    pub patient_id: u64,
    /// When it starts; `None` for the kind's default.
    pub at: Option<ScenarioTime>,
    /// How long it lasts; `None` for the kind's default.
    pub duration: Option<Duration>,
}

impl Scenario {
    /// A scenario of this kind for patient 1 at the default time.
    pub fn new(kind: ScenarioKind) -> Self {
        Scenario {
            kind,
            patient_id: 1,
            at: None,
            duration: None,
        }
    }

    /// Targets another patient.
    pub fn for_patient(mut self, patient_id: u64) -> Self {
        self.patient_id = patient_id;
        self
    }

    /// Starts at a given time.
    pub fn starting(mut self, at: ScenarioTime) -> Self {
        self.at = Some(at);
        self
    }

    /// Lasts this long.
    pub fn lasting(mut self, duration: Duration) -> Self {
        self.duration = Some(duration);
        self
    }

    /// The `[from, to)` window in event time for a simulation starting at `sim_start`.
    pub fn window(&self, sim_start: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        let from = match self.at {
            Some(ScenarioTime::At(t)) => t,
            Some(ScenarioTime::AfterStart(d)) => sim_start + d,
            None => {
                let earliest = sim_start.timestamp() + HOUR;
                let tod = self.kind.default_time_of_day_secs();
                let mut t = earliest.div_euclid(DAY) * DAY + tod;
                if t < earliest {
                    t += DAY;
                }
                crate::time::to_datetime(t)
            }
        };
        let len = self
            .duration
            .unwrap_or_else(|| self.kind.default_duration())
            .max(Duration::minutes(1));
        (from, from + len)
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.as_str())?;
        let mut opts = Vec::new();
        if self.patient_id != 1 {
            opts.push(format!("patient={}", self.patient_id));
        }
        match self.at {
            Some(ScenarioTime::At(t)) => opts.push(format!(
                "at={}",
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )),
            Some(ScenarioTime::AfterStart(d)) => opts.push(format!("at=+{}", format_duration(d))),
            None => {}
        }
        if let Some(d) = self.duration {
            opts.push(format!("for={}", format_duration(d)));
        }
        if !opts.is_empty() {
            write!(f, ":{}", opts.join(","))?;
        }
        Ok(())
    }
}

impl FromStr for Scenario {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, options) = match s.split_once(':') {
            Some((n, o)) => (n, Some(o)),
            None => (s, None),
        };
        let mut scenario = Scenario::new(name.parse()?);
        for option in options
            .into_iter()
            .flat_map(|o| o.split(','))
            .filter(|o| !o.trim().is_empty())
        {
            let bad = |reason: &str| ParseError::ScenarioOption {
                option: option.to_string(),
                reason: reason.to_string(),
            };
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| bad("expected key=value"))?;
            let value = value.trim();
            match key.trim() {
                "patient" => {
                    let id: u64 = value
                        .parse()
                        .map_err(|_| bad("patient must be a positive integer id"))?;
                    if id == 0 {
                        return Err(bad("patient ids start at 1"));
                    }
                    scenario.patient_id = id;
                }
                "at" => {
                    scenario.at = Some(if let Ok(t) = DateTime::parse_from_rfc3339(value) {
                        ScenarioTime::At(t.with_timezone(&Utc))
                    } else {
                        let offset = parse_duration(value.trim_start_matches('+'))
                            .map_err(|_| bad("at must be an RFC 3339 time or an offset from the start like 1d2h"))?;
                        ScenarioTime::AfterStart(offset)
                    });
                }
                "for" | "duration" => {
                    let d = parse_duration(value)
                        .map_err(|_| bad("for must be a duration like 90m or 3h"))?;
                    if d < Duration::minutes(1) {
                        return Err(bad("a scenario lasts at least one minute"));
                    }
                    scenario.duration = Some(d);
                }
                _ => return Err(bad("known keys are patient, at, for")),
            }
        }
        Ok(scenario)
    }
}

/// The phase of a `sensor-failure` window at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SensorPhase {
    /// First 40%: the sensor repeats the same value.
    Flat,
    /// Next 30%: implausible jumps.
    Erratic,
    /// Last 30%: no readings at all.
    Gap,
}

impl SensorPhase {
    pub(crate) fn error_code(self) -> &'static str {
        match self {
            SensorPhase::Flat => "E302",
            SensorPhase::Erratic => "E301",
            SensorPhase::Gap => "E303",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    kind: ScenarioKind,
    from: i64,
    to: i64,
}

impl Window {
    fn contains(&self, t: i64) -> bool {
        self.from <= t && t < self.to
    }

    /// 0 → 1 → 0 over the window: a smooth ramp in over the first 30%, a plateau, a ramp out over the last 20%.
    fn envelope(&self, t: i64) -> f64 {
        if !self.contains(t) {
            return 0.0;
        }
        let u = (t - self.from) as f64 / (self.to - self.from) as f64;
        smoothstep(u / 0.3).min(smoothstep((1.0 - u) / 0.2))
    }
}

fn smoothstep(x: f64) -> f64 {
    let x = x.clamp(0.0, 1.0);
    x * x * (3.0 - 2.0 * x)
}

/// Glucose a `night-hypo` pulls towards, mg/dL.
pub(crate) const NIGHT_HYPO_TARGET: f64 = 48.0;
/// Glucose a `missed-insulin` pushes towards, mg/dL.
pub(crate) const MISSED_INSULIN_TARGET: f64 = 320.0;

/// The scenario windows that apply to one patient, resolved to internal seconds.
#[derive(Debug, Clone, Default)]
pub(crate) struct PatientScenarios {
    windows: Vec<Window>,
}

impl PatientScenarios {
    pub(crate) fn for_patient(
        scenarios: &[Scenario],
        patient_id: u64,
        sim_start: DateTime<Utc>,
    ) -> Self {
        let windows = scenarios
            .iter()
            .filter(|s| s.patient_id == patient_id)
            .map(|s| {
                let (from, to) = s.window(sim_start);
                Window {
                    kind: s.kind,
                    from: from.timestamp(),
                    to: to.timestamp(),
                }
            })
            .collect();
        PatientScenarios { windows }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    fn of(&self, kind: ScenarioKind) -> impl Iterator<Item = &Window> {
        self.windows.iter().filter(move |w| w.kind == kind)
    }

    /// Nothing is emitted at `t` (`device-silent`).
    pub(crate) fn silent(&self, t: i64) -> bool {
        self.of(ScenarioKind::DeviceSilent).any(|w| w.contains(t))
    }

    /// The device is forced offline for the block `[from, to)` (`late-burst`).
    pub(crate) fn forced_offline(&self, from: i64, to: i64) -> bool {
        self.of(ScenarioKind::LateBurst)
            .any(|w| w.from < to && from < w.to)
    }

    pub(crate) fn sensor_phase(&self, t: i64) -> Option<SensorPhase> {
        self.of(ScenarioKind::SensorFailure)
            .find(|w| w.contains(t))
            .map(|w| {
                let u = (t - w.from) as f64 / (w.to - w.from) as f64;
                if u < 0.4 {
                    SensorPhase::Flat
                } else if u < 0.7 {
                    SensorPhase::Erratic
                } else {
                    SensorPhase::Gap
                }
            })
    }

    /// Applies `night-hypo` and `missed-insulin`: blends the true glucose towards the scenario's target.
    pub(crate) fn adjust_glucose(&self, t: i64, value: f64) -> f64 {
        let mut v = value;
        for w in &self.windows {
            let target = match w.kind {
                ScenarioKind::NightHypo => NIGHT_HYPO_TARGET,
                ScenarioKind::MissedInsulin => MISSED_INSULIN_TARGET,
                _ => continue,
            };
            let e = w.envelope(t);
            if e > 0.0 {
                v += e * (target - v);
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::MINUTE;
    use chrono::TimeZone;

    #[test]
    fn parse_and_display_round_trip() {
        for text in [
            "night-hypo",
            "missed-insulin:patient=3",
            "late-burst:patient=2,at=+1d4h,for=1h30m",
            "sensor-failure:at=2026-01-06T14:00:00Z,for=3h",
            "device-silent:for=6h",
        ] {
            let s: Scenario = text.parse().unwrap();
            assert_eq!(s.to_string(), text);
        }
        let s: Scenario = "late-burst:patient=2,at=26h".parse().unwrap();
        assert_eq!(s.at, Some(ScenarioTime::AfterStart(Duration::hours(26))));
        assert!("nap".parse::<Scenario>().is_err());
        assert!("night-hypo:patient=0".parse::<Scenario>().is_err());
        assert!("night-hypo:when=3".parse::<Scenario>().is_err());
        assert!("night-hypo:at=yesterday".parse::<Scenario>().is_err());
    }

    #[test]
    fn default_window_is_first_matching_time_of_day_after_an_hour() {
        let start = Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).unwrap();
        let (from, to) = Scenario::new(ScenarioKind::NightHypo).window(start);
        assert_eq!(from, Utc.with_ymd_and_hms(2026, 1, 5, 2, 0, 0).unwrap());
        assert_eq!(to - from, Duration::minutes(150));
        let late_start = Utc.with_ymd_and_hms(2026, 1, 5, 1, 30, 0).unwrap();
        let (from, _) = Scenario::new(ScenarioKind::NightHypo).window(late_start);
        assert_eq!(from, Utc.with_ymd_and_hms(2026, 1, 6, 2, 0, 0).unwrap());
    }

    #[test]
    fn envelope_and_phases() {
        let start = Utc.with_ymd_and_hms(2026, 1, 5, 0, 0, 0).unwrap();
        let list = [
            Scenario::new(ScenarioKind::NightHypo),
            Scenario::new(ScenarioKind::SensorFailure),
            Scenario::new(ScenarioKind::MissedInsulin).for_patient(2),
        ];
        let p1 = PatientScenarios::for_patient(&list, 1, start);
        let t0 = start.timestamp();
        let mid_hypo = t0 + 2 * HOUR + 75 * MINUTE;
        assert!((p1.adjust_glucose(mid_hypo, 150.0) - NIGHT_HYPO_TARGET).abs() < 1e-9);
        assert_eq!(p1.adjust_glucose(t0 + 12 * HOUR, 150.0), 150.0);
        assert_eq!(p1.sensor_phase(t0 + 14 * HOUR), Some(SensorPhase::Flat));
        assert_eq!(
            p1.sensor_phase(t0 + 15 * HOUR + 30 * MINUTE),
            Some(SensorPhase::Erratic)
        );
        assert_eq!(
            p1.sensor_phase(t0 + 16 * HOUR + 30 * MINUTE),
            Some(SensorPhase::Gap)
        );
        assert_eq!(p1.sensor_phase(t0 + 17 * HOUR), None);
        let p2 = PatientScenarios::for_patient(&list, 2, start);
        assert!((p2.adjust_glucose(t0 + 15 * HOUR, 150.0) - MISSED_INSULIN_TARGET).abs() < 1e-9);
    }
}
