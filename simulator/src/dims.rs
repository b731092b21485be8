//! Dimension data for a simulated population: patients, manufacturers, device models, devices, subscribers and
//! subscriptions. Ids match the readings produced for the same seed and patient count.

use chrono::NaiveDate;
use fake::Fake;
use fake::faker::name::en::{FirstName, LastName};
use fake::faker::phone_number::en::CellNumber;
use rand::Rng;
use serde::Serialize;

use crate::config::{Cadence, Profile, profile_for};
use crate::hardware::{DeviceAssignment, MANUFACTURERS, MODELS, patient_hardware};
use crate::rng::{Purpose, rng_for};

/// Everything that describes the population, for seeding the host's stores. Serialises as one JSON object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Dimensions {
    /// Patients, by id.
    pub patients: Vec<Patient>,
    /// Device manufacturers (fictional).
    pub manufacturers: Vec<Manufacturer>,
    /// Device models and their firmware lines.
    pub device_models: Vec<DeviceModel>,
    /// Every patient's CGM and meter.
    pub devices: Vec<Device>,
    /// Who receives alerts: the patients themselves, doctors, caregivers and the app.
    pub subscribers: Vec<Subscriber>,
    /// Which subscriber follows which patient, sorted by subscriber then patient.
    pub subscriptions: Vec<Subscription>,
}

/// Sex as recorded in the patient registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sex {
    /// Female.
    Female,
    /// Male.
    Male,
}

/// Diagnosis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiabetesType {
    /// Type 1 diabetes.
    Type1,
    /// Type 2 diabetes.
    Type2,
    /// No diabetes (athletes wearing a CGM for training).
    None,
}

/// One patient.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Patient {
    /// Id used by every reading (`1..=patients`).
    pub patient_id: u64,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Date of birth, `YYYY-MM-DD`.
    pub birth_date: NaiveDate,
    /// Sex.
    pub sex: Sex,
    /// Contact email (example.com).
    pub email: String,
    /// Contact phone.
    pub phone: String,
    /// Simulation profile.
    pub profile: Profile,
    /// Diagnosis.
    pub diabetes_type: DiabetesType,
}

/// A device manufacturer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manufacturer {
    /// Id.
    pub manufacturer_id: u64,
    /// Name.
    pub name: String,
    /// ISO 3166 country code.
    pub country: String,
}

/// A device model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceModel {
    /// Id.
    pub model_id: u64,
    /// Maker.
    pub manufacturer_id: u64,
    /// Marketing name.
    pub name: String,
    /// `cgm` or `meter`.
    pub kind: Cadence,
    /// Firmware versions released for the model, oldest first.
    pub firmware_versions: Vec<String>,
}

/// One physical device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Device {
    /// Id used by readings and telemetry.
    pub device_id: u64,
    /// Model.
    pub model_id: u64,
    /// Serial number.
    pub serial_number: String,
    /// Owner.
    pub patient_id: u64,
    /// Firmware at the start of the simulation (devices may upgrade during it).
    pub firmware_version: String,
}

/// Role of an alert subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The patient.
    Patient,
    /// A treating doctor.
    Doctor,
    /// A family member or carer.
    Caregiver,
    /// The GlucoGuard app itself.
    App,
}

/// Someone (or something) that receives alerts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Subscriber {
    /// Id.
    pub subscriber_id: u64,
    /// Display name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Placeholder Telegram chat id (numeric; replace with real chat ids when onboarding).
    pub telegram_chat_id: i64,
}

/// A subscriber following a patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Subscription {
    /// Who follows.
    pub subscriber_id: u64,
    /// Whom.
    pub patient_id: u64,
}

/// Patients per doctor.
const PATIENTS_PER_DOCTOR: usize = 25;
/// Placeholder Telegram chat ids are this plus the subscriber id.
const TELEGRAM_PLACEHOLDER_BASE: i64 = 900_000_000;

/// Dimension data for `patients` patients with the default (round-robin over all five) profile assignment.
pub fn dimensions(seed: u64, patients: usize) -> Dimensions {
    dimensions_with_profiles(seed, patients, None)
}

/// Dimension data for a simulation that assigns `profiles` round-robin (as [`crate::SimConfig::profiles`] does).
pub fn dimensions_with_profiles(
    seed: u64,
    patients: usize,
    profiles: Option<&[Profile]>,
) -> Dimensions {
    let manufacturers = MANUFACTURERS
        .iter()
        .map(|m| Manufacturer {
            manufacturer_id: m.id,
            name: m.name.to_string(),
            country: m.country.to_string(),
        })
        .collect();
    let device_models = MODELS
        .iter()
        .map(|m| DeviceModel {
            model_id: m.id,
            manufacturer_id: m.manufacturer_id,
            name: m.name.to_string(),
            kind: m.kind,
            firmware_versions: m.firmware.iter().map(|f| f.to_string()).collect(),
        })
        .collect();

    let doctors = patients.div_ceil(PATIENTS_PER_DOCTOR).max(1) as u64;
    let mut subscribers: Vec<Subscriber> = (1..=doctors)
        .map(|id| {
            let mut rng = rng_for(seed, u64::MAX - id, Purpose::Person);
            let first: String = FirstName().fake_with_rng(&mut rng);
            let last: String = LastName().fake_with_rng(&mut rng);
            subscriber(id, format!("Dr. {first} {last}"), Role::Doctor)
        })
        .collect();
    let app_id = doctors + 1;
    subscribers.push(subscriber(app_id, "GlucoGuard app".to_string(), Role::App));

    let mut out_patients = Vec::with_capacity(patients);
    let mut devices = Vec::with_capacity(2 * patients);
    let mut subscriptions = Vec::with_capacity(4 * patients);
    let mut next_subscriber = app_id + 1;
    for patient_id in 1..=patients as u64 {
        let profile = profile_for(profiles, patient_id);
        let mut rng = rng_for(seed, patient_id, Purpose::Person);
        let patient = person(patient_id, profile, &mut rng);

        let hw = patient_hardware(seed, patient_id);
        devices.push(device(&hw.cgm, patient_id));
        devices.push(device(&hw.meter, patient_id));

        subscriptions.push(Subscription {
            subscriber_id: (patient_id - 1) % doctors + 1,
            patient_id,
        });
        subscriptions.push(Subscription {
            subscriber_id: app_id,
            patient_id,
        });
        let own = next_subscriber;
        next_subscriber += 1;
        subscribers.push(subscriber(
            own,
            format!("{} {}", patient.first_name, patient.last_name),
            Role::Patient,
        ));
        subscriptions.push(Subscription {
            subscriber_id: own,
            patient_id,
        });
        let needs_carer =
            matches!(profile, Profile::Elderly | Profile::LowGlucose) || rng.random::<f64>() < 0.25;
        if needs_carer {
            let first: String = FirstName().fake_with_rng(&mut rng);
            let carer = next_subscriber;
            next_subscriber += 1;
            subscribers.push(subscriber(
                carer,
                format!("{first} {}", patient.last_name),
                Role::Caregiver,
            ));
            subscriptions.push(Subscription {
                subscriber_id: carer,
                patient_id,
            });
        }
        out_patients.push(patient);
    }
    subscriptions.sort_unstable();
    Dimensions {
        patients: out_patients,
        manufacturers,
        device_models,
        devices,
        subscribers,
        subscriptions,
    }
}

fn subscriber(id: u64, name: String, role: Role) -> Subscriber {
    Subscriber {
        subscriber_id: id,
        name,
        role,
        telegram_chat_id: TELEGRAM_PLACEHOLDER_BASE + id as i64,
    }
}

fn device(d: &DeviceAssignment, patient_id: u64) -> Device {
    Device {
        device_id: d.device_id,
        model_id: d.model().id,
        serial_number: d.serial.clone(),
        patient_id,
        firmware_version: d.model().firmware[d.firmware_index].to_string(),
    }
}

fn person(patient_id: u64, profile: Profile, rng: &mut rand_chacha::ChaCha8Rng) -> Patient {
    let first_name: String = FirstName().fake_with_rng(rng);
    let last_name: String = LastName().fake_with_rng(rng);
    let sex = if rng.random::<bool>() {
        Sex::Female
    } else {
        Sex::Male
    };
    // Ages on 2026-01-01, fixed so the data does not change with the wall clock.
    let (min_age, max_age) = match profile {
        Profile::Diabetic => (25, 65),
        Profile::Athlete => (20, 40),
        Profile::PartyGoer => (19, 30),
        Profile::LowGlucose => (20, 60),
        Profile::Elderly => (66, 88),
    };
    let age: i32 = rng.random_range(min_age..=max_age);
    let birth_date =
        NaiveDate::from_yo_opt(2025 - age, rng.random_range(1..=365)).unwrap_or_default();
    let diabetes_type = match profile {
        Profile::Athlete => DiabetesType::None,
        Profile::Elderly => DiabetesType::Type2,
        Profile::Diabetic if rng.random::<f64>() < 0.3 => DiabetesType::Type2,
        _ => DiabetesType::Type1,
    };
    let email_name = |s: &str| {
        s.chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase()
    };
    let email = format!(
        "{}.{}.{patient_id}@example.com",
        email_name(&first_name),
        email_name(&last_name)
    );
    let phone: String = CellNumber().fake_with_rng(rng);
    Patient {
        patient_id,
        first_name,
        last_name,
        birth_date,
        sex,
        email,
        phone,
        profile,
        diabetes_type,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_roles() {
        let d = dimensions(5, 30);
        assert_eq!(d.patients.len(), 30);
        assert_eq!(d.devices.len(), 60);
        assert_eq!(d.patients[0].patient_id, 1);
        assert_eq!(d.patients[1].profile, Profile::Athlete);
        assert_eq!(d.patients[1].diabetes_type, DiabetesType::None);
        let doctors = d
            .subscribers
            .iter()
            .filter(|s| s.role == Role::Doctor)
            .count();
        assert_eq!(doctors, 2);
        assert_eq!(
            d.subscribers
                .iter()
                .filter(|s| s.role == Role::Patient)
                .count(),
            30
        );
        // Every patient is followed by a doctor, the app and themselves.
        for p in &d.patients {
            let followers: Vec<_> = d
                .subscriptions
                .iter()
                .filter(|s| s.patient_id == p.patient_id)
                .collect();
            assert!(followers.len() >= 3, "{}", p.patient_id);
        }
        let mut ids: Vec<_> = d.subscribers.iter().map(|s| s.subscriber_id).collect();
        ids.dedup();
        assert_eq!(ids.len(), d.subscribers.len());
        assert!(
            d.patients
                .iter()
                .all(|p| p.email.ends_with("@example.com") && !p.first_name.is_empty())
        );
        assert_eq!(dimensions(5, 30), d);
        assert_ne!(dimensions(6, 30), d);
    }
}
