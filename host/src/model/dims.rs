//! Dimension data: patients, manufacturers, device models, devices, subscribers and who
//! follows whom. The JSON shape is the one `glucoguard-sim dims` prints, so simulated
//! populations and real imports travel the same way.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Dimensions {
    pub patients: Vec<Patient>,
    pub manufacturers: Vec<Manufacturer>,
    pub device_models: Vec<DeviceModel>,
    pub devices: Vec<Device>,
    pub subscribers: Vec<Subscriber>,
    pub subscriptions: Vec<Subscription>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Patient {
    pub patient_id: u64,
    pub first_name: String,
    pub last_name: String,
    #[serde(default)]
    pub birth_date: Option<String>,
    #[serde(default)]
    pub sex: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub diabetes_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manufacturer {
    pub manufacturer_id: u64,
    pub name: String,
    #[serde(default)]
    pub country: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceModel {
    pub model_id: u64,
    pub manufacturer_id: u64,
    pub name: String,
    /// `cgm` or `meter`.
    pub kind: String,
    #[serde(default)]
    pub firmware_versions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    pub device_id: u64,
    pub model_id: u64,
    pub serial_number: String,
    pub patient_id: u64,
    #[serde(default)]
    pub firmware_version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscriber {
    pub subscriber_id: u64,
    pub name: String,
    /// `patient`, `doctor`, `caregiver` or `app`.
    pub role: String,
    #[serde(default)]
    pub telegram_chat_id: Option<i64>,
    #[serde(default)]
    pub email: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    pub subscriber_id: u64,
    pub patient_id: u64,
}

impl Dimensions {
    /// How many rows of each kind: what an import's audit entry records (never names).
    pub fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "patients": self.patients.len(),
            "manufacturers": self.manufacturers.len(),
            "device_models": self.device_models.len(),
            "devices": self.devices.len(),
            "subscribers": self.subscribers.len(),
            "subscriptions": self.subscriptions.len(),
        })
    }

    /// Checks references and enumerations before anything is written.
    pub fn validate(&self) -> Result<(), String> {
        use std::collections::HashSet;
        let patients: HashSet<u64> = self.patients.iter().map(|p| p.patient_id).collect();
        let makers: HashSet<u64> = self
            .manufacturers
            .iter()
            .map(|m| m.manufacturer_id)
            .collect();
        let models: HashSet<u64> = self.device_models.iter().map(|m| m.model_id).collect();
        let subscribers: HashSet<u64> = self.subscribers.iter().map(|s| s.subscriber_id).collect();
        let mut problems = Vec::new();
        for m in &self.device_models {
            if !makers.contains(&m.manufacturer_id) {
                problems.push(format!(
                    "device model {} names unknown manufacturer {}",
                    m.model_id, m.manufacturer_id
                ));
            }
        }
        for d in &self.devices {
            if !models.contains(&d.model_id) {
                problems.push(format!(
                    "device {} names unknown model {}",
                    d.device_id, d.model_id
                ));
            }
            if !patients.contains(&d.patient_id) {
                problems.push(format!(
                    "device {} names unknown patient {}",
                    d.device_id, d.patient_id
                ));
            }
        }
        for s in &self.subscribers {
            if !["patient", "doctor", "caregiver", "app"].contains(&s.role.as_str()) {
                problems.push(format!(
                    "subscriber {} has unknown role {:?}",
                    s.subscriber_id, s.role
                ));
            }
        }
        for s in &self.subscriptions {
            if !subscribers.contains(&s.subscriber_id) || !patients.contains(&s.patient_id) {
                problems.push(format!(
                    "subscription {}→{} names an unknown row",
                    s.subscriber_id, s.patient_id
                ));
            }
        }
        problems.truncate(10);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}
