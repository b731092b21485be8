//! Simulation configuration: patient profiles, value model, reading cadence and the [`SimConfig`] that ties them together.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::scenario::Scenario;

/// Why a name or option given as text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// A name that is not one of the known values.
    #[error("unknown {kind} `{value}`; expected one of: {expected}")]
    Unknown {
        /// What was being parsed (profile, model, …).
        kind: &'static str,
        /// The text given.
        value: String,
        /// The accepted names.
        expected: &'static str,
    },
    /// A duration such as `14d`, `2h30m`, `90s` that does not parse.
    #[error("invalid duration `{0}`; use e.g. 14d, 36h, 2h30m, 90s")]
    Duration(String),
    /// A scenario option that does not parse.
    #[error("invalid scenario option `{option}`: {reason}")]
    ScenarioOption {
        /// The `key=value` text.
        option: String,
        /// What is wrong with it.
        reason: String,
    },
}

macro_rules! kebab_enum {
    ($ty:ident, $kind:literal, [$($variant:ident => $name:literal),+ $(,)?]) => {
        impl $ty {
            /// The kebab-case name used on the command line and in JSON.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $name),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s.trim().to_ascii_lowercase().as_str() {
                    $($name => Ok($ty::$variant),)+
                    _ => Err(ParseError::Unknown {
                        kind: $kind,
                        value: s.to_string(),
                        expected: concat!($($name, " "),+),
                    }),
                }
            }
        }
    };
}

/// A patient profile: who wears the sensor, which sets the shape of their glucose curve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// Adult with insulin-treated (mostly type 1) diabetes.
    Diabetic,
    /// Healthy, non-diabetic, trains most days.
    Athlete,
    /// Young adult with type 1 diabetes, irregular meals, alcohol on nights out.
    PartyGoer,
    /// Type 1 diabetes prone to hypoglycaemia, often at night.
    LowGlucose,
    /// Older adult with type 2 diabetes, steady and elevated.
    Elderly,
}

kebab_enum!(Profile, "profile", [
    Diabetic => "diabetic",
    Athlete => "athlete",
    PartyGoer => "party-goer",
    LowGlucose => "low-glucose",
    Elderly => "elderly",
]);

impl Profile {
    /// All profiles in round-robin order.
    pub const ALL: [Profile; 5] = [
        Profile::Diabetic,
        Profile::Athlete,
        Profile::PartyGoer,
        Profile::LowGlucose,
        Profile::Elderly,
    ];

    /// The prototype model's `(scale, offset)`: value = scale · (sin + noise) + offset.
    pub fn prototype_scale_offset(self) -> (f64, f64) {
        match self {
            Profile::Diabetic => (40.0, 130.0),
            Profile::Athlete => (20.0, 90.0),
            Profile::PartyGoer => (50.0, 130.0),
            Profile::LowGlucose => (15.0, 55.0),
            Profile::Elderly => (35.0, 145.0),
        }
    }
}

/// Which model produces glucose values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Model {
    /// The original prototype: a 4-hour sine plus Gaussian noise, scaled per profile.
    Prototype,
    /// Meals, dawn phenomenon, exercise, alcohol, nocturnal lows, sensor noise and artefacts.
    #[default]
    Physiological,
}

kebab_enum!(Model, "model", [Prototype => "prototype", Physiological => "physiological"]);

/// How often glucose is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cadence {
    /// Continuous glucose monitor: every 5 minutes with a few seconds of jitter.
    #[default]
    Cgm,
    /// Blood glucose meter: a few fingersticks a day, around meals and bedtime.
    Meter,
}

kebab_enum!(Cadence, "cadence", [Cgm => "cgm", Meter => "meter"]);

/// Everything that determines a simulation's output. The same config always yields byte-identical output.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Root of every random stream.
    pub seed: u64,
    /// Number of patients; their ids are `1..=patients`.
    pub patients: usize,
    /// Event time of the start of the simulation.
    pub start: DateTime<Utc>,
    /// How much event time to simulate.
    pub duration: Duration,
    /// Value model.
    pub model: Model,
    /// Reading cadence.
    pub cadence: Cadence,
    /// Profiles assigned round-robin by patient id; `None` (or an empty list) means all five.
    pub profiles: Option<Vec<Profile>>,
    /// Emit device telemetry (every ~15 minutes per device).
    pub telemetry: bool,
    /// Scenarios layered on top of the model.
    pub scenarios: Vec<Scenario>,
}

impl Default for SimConfig {
    /// One patient of each profile, one day from Monday 2026-01-05 00:00 UTC, physiological model, CGM, telemetry on.
    fn default() -> Self {
        SimConfig {
            seed: 42,
            patients: 5,
            start: Utc
                .with_ymd_and_hms(2026, 1, 5, 0, 0, 0)
                .single()
                .unwrap_or_default(),
            duration: Duration::days(1),
            model: Model::Physiological,
            cadence: Cadence::Cgm,
            profiles: None,
            telemetry: true,
            scenarios: Vec::new(),
        }
    }
}

impl SimConfig {
    /// The profile of patient `patient_id` (ids start at 1), or `None` for an id outside `1..=patients`.
    pub fn profile_of(&self, patient_id: u64) -> Option<Profile> {
        if patient_id == 0 || patient_id > self.patients as u64 {
            return None;
        }
        Some(profile_for(self.profiles.as_deref(), patient_id))
    }

    /// Patient ids in this simulation.
    pub fn patient_ids(&self) -> impl Iterator<Item = u64> + use<> {
        1..=self.patients as u64
    }

    /// The end of the simulated event time.
    pub fn end(&self) -> DateTime<Utc> {
        self.start + self.duration
    }

    /// Rejects configurations that would silently do nothing useful: no patients, a non-positive duration, or a
    /// scenario aimed at a patient that does not exist.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.patients == 0 {
            return Err(ConfigError::NoPatients);
        }
        if self.duration <= Duration::zero() {
            return Err(ConfigError::EmptyDuration);
        }
        if let Some(s) = self
            .scenarios
            .iter()
            .find(|s| s.patient_id == 0 || s.patient_id > self.patients as u64)
        {
            return Err(ConfigError::ScenarioPatient {
                scenario: s.to_string(),
                patients: self.patients,
            });
        }
        Ok(())
    }
}

/// Why a [`SimConfig`] is rejected by [`SimConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `patients` is zero.
    #[error("the simulation needs at least one patient")]
    NoPatients,
    /// `duration` is zero or negative.
    #[error("the simulation duration must be positive")]
    EmptyDuration,
    /// A scenario names a patient outside `1..=patients`.
    #[error("scenario `{scenario}` targets a patient outside 1..={patients}")]
    ScenarioPatient {
        /// The scenario, as text.
        scenario: String,
        /// The number of patients.
        patients: usize,
    },
}

/// Round-robin profile assignment shared by the simulator and the dimension data.
pub(crate) fn profile_for(profiles: Option<&[Profile]>, patient_id: u64) -> Profile {
    let list: &[Profile] = match profiles {
        Some(list) if !list.is_empty() => list,
        _ => &Profile::ALL,
    };
    list[((patient_id.max(1) - 1) % list.len() as u64) as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in Profile::ALL {
            assert_eq!(p.to_string().parse::<Profile>().unwrap(), p);
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{p}\""));
        }
        assert_eq!("party-goer".parse::<Profile>().unwrap(), Profile::PartyGoer);
        assert_eq!(
            "Low-Glucose".parse::<Profile>().unwrap(),
            Profile::LowGlucose
        );
        assert!("partygoer".parse::<Profile>().is_err());
        assert_eq!("prototype".parse::<Model>().unwrap(), Model::Prototype);
        assert_eq!("meter".parse::<Cadence>().unwrap(), Cadence::Meter);
        let err = "bogus".parse::<Cadence>().unwrap_err().to_string();
        assert!(err.contains("cgm") && err.contains("meter"), "{err}");
    }

    #[test]
    fn round_robin_profiles() {
        let cfg = SimConfig {
            patients: 7,
            ..SimConfig::default()
        };
        let got: Vec<_> = cfg
            .patient_ids()
            .map(|id| cfg.profile_of(id).unwrap())
            .collect();
        assert_eq!(got[0], Profile::Diabetic);
        assert_eq!(got[4], Profile::Elderly);
        assert_eq!(got[5], Profile::Diabetic);
        assert_eq!(cfg.profile_of(0), None);
        assert_eq!(cfg.profile_of(8), None);
        let only = SimConfig {
            profiles: Some(vec![Profile::Athlete]),
            ..cfg
        };
        assert!(
            only.patient_ids()
                .all(|id| only.profile_of(id) == Some(Profile::Athlete))
        );
    }
}
